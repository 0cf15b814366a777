//! One partition's events through the handler, in order: retries with
//! backoff, guard conflicts handled again, stop at the first that cannot settle.

use opal_schemas::Event;
use rdkafka::message::{Message, OwnedMessage};
use tracing::{Instrument, debug, info_span, warn};

use crate::classify::{FailureClass, ProcessingError, classify};
use crate::handler::{Effects, Handler, HandlerError, Source};
use crate::idempotency::Applied;

use super::Runtime;

/// How many times an event whose guarded state changed under it is handled
/// again at once before its partition waits for the batch's next round.
const CONFLICT_RETRIES: u32 = 5;

/// What handling one event gave.
pub(super) enum Handled {
    Effects(Effects),
    Dead(FailureClass, String, u32),
    Down(ProcessingError),
    Parked(ProcessingError),
    Committed(Applied),
}

impl<H: Handler> Runtime<H> {
    /// Handles one partition's events in order. Stops at the first dependency
    /// failure: later events stay pending so order holds.
    pub(super) async fn handle_partition(
        &self,
        events: Vec<(usize, Event, OwnedMessage)>,
    ) -> Vec<(usize, Event, Handled, u32)> {
        let mut out = Vec::with_capacity(events.len());
        let Some((_, _, first)) = events.first() else {
            return out;
        };
        let partitions = self.partition_count(first.topic(), first.partition()).await;
        for (i, event, message) in events {
            let source = Source {
                topic: message.topic().to_owned(),
                partition: message.partition(),
                offset: message.offset(),
                partitions,
            };
            let span = info_span!(
                "event",
                event_id = %event.envelope().event_id,
                correlation_id = %event.envelope().correlation_id,
                topic = message.topic(),
                partition = message.partition(),
                offset = message.offset(),
            );
            let mut conflicts = 0;
            let (handled, retries) = loop {
                let (mut handled, retries) = self
                    .handle_with_retries(&event, &source)
                    .instrument(span.clone())
                    .await;
                if let (true, Handled::Effects(effects)) =
                    (self.handler.reads_own_state(), &handled)
                {
                    handled = match self.commit_effects(&[(&event, effects)]).await {
                        Ok(applied) => Handled::Committed(
                            applied.first().copied().unwrap_or(Applied::LeaseLost),
                        ),
                        Err(e) => Handled::Down(e),
                    };
                }
                // Another partition changed the state this event read: read it again.
                if matches!(handled, Handled::Committed(Applied::Conflict))
                    && conflicts < CONFLICT_RETRIES
                {
                    conflicts += 1;
                    self.metrics.state_conflicts.inc();
                    debug!(parent: &span, conflicts, "guarded state changed; handling again");
                    continue;
                }
                break (handled, retries);
            };
            let stop = matches!(
                handled,
                Handled::Down(_)
                    | Handled::Parked(_)
                    | Handled::Committed(Applied::Conflict | Applied::LeaseLost)
            );
            out.push((i, event, handled, retries));
            if stop {
                break;
            }
        }
        out
    }

    /// Calls the handler, retrying transient failures with backoff and jitter.
    async fn handle_with_retries(&self, event: &Event, source: &Source) -> (Handled, u32) {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match self.handler.handle(event, source, &self.state).await {
                Ok(effects) => match self.check_emits(event, &effects) {
                    Ok(()) => return (Handled::Effects(effects), attempt - 1),
                    Err(reason) => ProcessingError::Handler(HandlerError::Invalid(reason)),
                },
                Err(e) => ProcessingError::Handler(e),
            };
            match classify(&error) {
                FailureClass::Transient if attempt < self.args.retry_attempts => {
                    warn!(attempt, error = %error, "transient failure; retrying");
                    tokio::time::sleep(self.args.backoff(attempt)).await;
                }
                FailureClass::DependencyDown => return (Handled::Down(error), attempt - 1),
                FailureClass::NotYet => return (Handled::Parked(error), attempt - 1),
                class => {
                    return (
                        Handled::Dead(class, error.to_string(), attempt),
                        attempt - 1,
                    );
                }
            }
        }
    }
}
