//! Taking a batch from the records the client has fetched, and the batch
//! taken ahead under a backlog.
//!
//! A poll can run a rebalance (librdkafka calls back inside it), so
//! collecting watches for revocations: records taken from a revoked partition
//! before the revocation are dropped, not processed, as the revoke-time
//! commit did not cover them and their next owner (this instance too, if
//! they come back) fetches them again from the committed offsets. A batch
//! already taken ahead and leased is never collected into, nor dropped from:
//! it is settled, and whoever owns its partitions next finds its events
//! leased, then done. It precedes anything taken after it from the same
//! partition, so what is dropped is always a partition's tail and no stored
//! offset passes a dropped record. Under a deep backlog the records behind
//! it are collected while the batch before it waits for Redis, once it is
//! leased (the same rule: only what that poll took is dropped).

use std::collections::HashSet;
use std::time::Duration;

use futures::FutureExt;
use rdkafka::message::{BorrowedMessage, Message};

use crate::classify::PollFailure;
use crate::handler::Handler;
use crate::telemetry::RevokedRecordsDropped;

use super::{Runtime, RuntimeContext};

/// Revocations seen since collecting began.
pub(super) struct RevocationWatch<'c> {
    context: &'c RuntimeContext,
    seen: u64,
}

impl<'c> RevocationWatch<'c> {
    pub(super) fn start(context: &'c RuntimeContext) -> Self {
        // Revocations from before this batch concern records already settled.
        context.take_revoked();
        RevocationWatch {
            context,
            seen: context.revocations(),
        }
    }

    /// The partitions revoked since the last call, if any were.
    fn revoked(&mut self) -> Option<HashSet<(String, i32)>> {
        let now = self.context.revocations();
        if now == self.seen {
            return None;
        }
        self.seen = now;
        Some(self.context.take_revoked())
    }
}

/// What a collection ended on besides a full batch or an empty client queue.
pub(super) enum Collected {
    Done,
    /// The client failed for good; the records in hand are still processed.
    Fatal(String),
}

impl<H: Handler> Runtime<H> {
    /// Adds fetched records to `batch` until it holds `max_batch` or the
    /// client has nothing more (within `wait`, when not zero). On a
    /// revocation, drops the revoked partitions' records from `batch` and
    /// from `earlier` (the records taken before it, not yet processed).
    pub(super) async fn collect<'c>(
        &'c self,
        batch: &mut Vec<BorrowedMessage<'c>>,
        mut earlier: Option<&mut Vec<BorrowedMessage<'c>>>,
        watch: &mut RevocationWatch<'_>,
        wait: Duration,
    ) -> Collected {
        while batch.len() < self.args.max_batch {
            let next = match self.consumer.recv().now_or_never() {
                Some(next) => Some(next),
                None if wait.is_zero() => None,
                None => tokio::time::timeout(wait, self.consumer.recv()).await.ok(),
            };
            if let Some(revoked) = watch.revoked() {
                let stale = |m: &BorrowedMessage<'_>| {
                    revoked.contains(&(m.topic().to_owned(), m.partition()))
                };
                let before = batch.len() + earlier.as_ref().map_or(0, |e| e.len());
                batch.retain(|item| !stale(item));
                if let Some(earlier) = earlier.as_mut() {
                    earlier.retain(|item| !stale(item));
                }
                let after = batch.len() + earlier.as_ref().map_or(0, |e| e.len());
                RevokedRecordsDropped {
                    dropped: before - after,
                }
                .emit(&self.metrics);
            }
            match next {
                Some(Ok(m)) => batch.push(m),
                Some(Err(e)) => {
                    if let PollFailure::Fatal(reason) = self.poll_failed(&e) {
                        return Collected::Fatal(reason);
                    }
                }
                None => break,
            }
        }
        Collected::Done
    }
}
