//! Parking: an event whose input has not arrived yet
//! ([`FailureClass::NotYet`](crate::classify::FailureClass)) holds its
//! partition back while the others keep flowing.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use rdkafka::TopicPartitionList;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use tracing::{debug, warn};

use crate::handler::Handler;

use super::Runtime;
use super::batch::{Item, Outcome};

/// How long a parked partition waits before its waiting event is tried again.
const PARK_FOR: Duration = Duration::from_secs(1);

impl<H: Handler> Runtime<H> {
    /// Pauses each partition holding a parked event, rewinds it to that event
    /// and resumes it after `PARK_FOR`, so the event comes again while the
    /// other partitions (the input it waits for) keep flowing. Returns the
    /// parked partitions.
    pub(super) fn park(&self, items: &[Item<'_>]) -> HashSet<(String, i32)> {
        let mut first: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for item in items {
            if matches!(item.outcome, Some(Outcome::Parked)) {
                let m = &item.message;
                let entry = first
                    .entry((m.topic().to_owned(), m.partition()))
                    .or_insert(m.offset());
                *entry = (*entry).min(m.offset());
            }
        }
        let parked = first.keys().cloned().collect();
        for ((topic, partition), offset) in first {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&topic, partition);
            if let Err(e) = self.consumer.pause(&tpl) {
                debug!(topic, partition, error = %e, "pause failed (partition revoked?)");
                continue;
            }
            if let Err(e) = self.consumer.seek(
                &topic,
                partition,
                rdkafka::Offset::Offset(offset),
                Duration::from_secs(5),
            ) {
                warn!(topic, partition, offset, error = %e, "could not rewind a parked partition");
            }
            let consumer = self.consumer.clone();
            let cancel = self.cancel.clone();
            // A timer under the root token: shutdown does not wait for it.
            tokio::spawn(async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = tokio::time::sleep(PARK_FOR) => {
                        if let Err(e) = consumer.resume(&tpl) {
                            debug!(error = %e, "resume failed (partition revoked?)");
                        }
                    }
                }
            });
        }
        parked
    }
}
