//! Taking a batch from the records the client has fetched, and the batch
//! taken ahead under a backlog.
//!
//! A poll can run a rebalance (librdkafka calls back inside it), so collecting
//! watches for revocations: records taken from a revoked partition before the
//! revocation are dropped, not processed, as the revoke-time commit did not
//! cover them and their next owner (this instance too, if they come back)
//! fetches them again from the committed offsets. A batch already taken ahead
//! is never collected into, nor dropped from: it is settled, and whoever owns
//! its partitions next finds its events leased, then done, or (a batch settling
//! unleased, which holds no leases) done, or not yet done, and then one of the
//! two applies each event once, in order, as the scripts decide each event
//! atomically. It precedes anything taken after it from the same partition, so
//! what is dropped is always a partition's tail and no stored offset passes a
//! dropped record. Under a deep backlog the records behind it are collected
//! while the batch before it waits for Redis (the same rule: only what that
//! poll took is dropped).

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaResult;
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

/// Takes what the client has already fetched, without waiting.
///
/// One poll of rdkafka's queue serves one event, and not every event is a
/// record: a rebalance (our callbacks run inside the poll), statistics, a
/// commit's result. Such a poll returns nothing and wakes the task to be
/// polled again at once; this waker notes that wake-up, and the queue is
/// polled again. Polling once (`now_or_never`) took such an event for an
/// empty queue: the batch stopped short, and a revocation queued behind it
/// waited for the next poll, which an instance holding a batch taken ahead
/// does not make before handling it (see tests/rebalance.rs).
struct PollNow {
    woken: Arc<Woken>,
    waker: Waker,
}

/// Set when a poll asks to be polled again.
#[derive(Default)]
struct Woken(AtomicBool);

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
}

impl PollNow {
    fn new() -> Self {
        let woken = Arc::new(Woken::default());
        PollNow {
            waker: Waker::from(woken.clone()),
            woken,
        }
    }

    /// The next record (or client error) already in the queue, serving the
    /// other events before it; None once the queue holds no more.
    fn next<'c>(
        &self,
        consumer: &'c StreamConsumer<RuntimeContext>,
    ) -> Option<KafkaResult<BorrowedMessage<'c>>> {
        let mut context = Context::from_waker(&self.waker);
        loop {
            self.woken.0.store(false, Ordering::Relaxed);
            let mut recv = std::pin::pin!(consumer.recv());
            match recv.as_mut().poll(&mut context) {
                Poll::Ready(next) => return Some(next),
                // An event other than a record was served: look again.
                Poll::Pending if self.woken.0.load(Ordering::Acquire) => continue,
                Poll::Pending => return None,
            }
        }
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
        let poll_now = PollNow::new();
        while batch.len() < self.args.max_batch {
            let next = match poll_now.next(&self.consumer) {
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
