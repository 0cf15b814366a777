//! The dead-letter step of a batch: each record that settled as dead goes to
//! the dead-letter topic, confirmed by the broker before any offset moves.

use futures::future::join_all;
use rdkafka::message::Message;
use tracing::debug;

use crate::classify::{FailureClass, ProcessingError, classify};
use crate::dlq::DeadLetter;
use crate::handler::Handler;
use crate::telemetry::{DeadLetterRefused, DeadLettered};

use super::Runtime;
use super::batch::{Abandoned, Item, Outcome};

impl<H: Handler> Runtime<H> {
    pub(super) fn dead(
        &self,
        item: &Item<'_>,
        class: FailureClass,
        error: String,
        attempts: u32,
    ) -> Outcome {
        debug!(
            topic = item.message.topic(),
            partition = item.message.partition(),
            offset = item.message.offset(),
            class = class.dlq_name(),
            error = %error,
            "to the dead-letter topic"
        );
        Outcome::Dead(DeadLetter {
            message: item.message.detach(),
            class,
            error,
            attempts,
        })
    }

    /// Step 4: the batch's dead letters, confirmed by the broker before offsets move.
    pub(super) async fn dead_letter(&self, items: &[Item<'_>]) -> Result<(), Abandoned> {
        let mut attempt = 0;
        let mut sent = vec![false; items.len()];
        let mut waited_on = None;
        loop {
            let open: Vec<usize> = (0..items.len())
                .filter(|i| !sent[*i] && matches!(items[*i].outcome, Some(Outcome::Dead(_))))
                .collect();
            if open.is_empty() {
                break;
            }
            let results = join_all(open.iter().map(|i| async move {
                match &items[*i].outcome {
                    Some(Outcome::Dead(dead)) => Some((dead, self.dlq.send(dead).await)),
                    _ => None,
                }
            }))
            .await;
            let mut down = None;
            for (i, result) in open.into_iter().zip(results) {
                let Some((dead, result)) = result else {
                    continue;
                };
                let m = &dead.message;
                let error = match result {
                    Ok(()) => {
                        sent[i] = true;
                        DeadLettered {
                            consumer: self.handler.name(),
                            topic: m.topic(),
                            partition: m.partition(),
                            offset: m.offset(),
                            class: dead.class,
                            attempts: dead.attempts,
                            error: &dead.error,
                        }
                        .emit(&self.metrics);
                        continue;
                    }
                    Err(source) => ProcessingError::DeadLetter {
                        topic: self.dlq.topic().to_owned(),
                        source,
                    },
                };
                match classify(&error) {
                    FailureClass::DependencyDown(dependency) => down = Some((dependency, error)),
                    class => {
                        sent[i] = true;
                        DeadLetterRefused {
                            consumer: self.handler.name(),
                            topic: m.topic(),
                            partition: m.partition(),
                            offset: m.offset(),
                            class,
                            error: &error.to_string(),
                        }
                        .emit(&self.metrics);
                    }
                }
            }
            match down {
                None => break,
                Some((dependency, e)) => {
                    attempt += 1;
                    waited_on = Some(dependency);
                    self.wait_for(dependency, &e, attempt).await?;
                }
            }
        }
        if let Some(dependency) = waited_on {
            self.dependency_back(dependency);
        }
        Ok(())
    }
}
