//! Librdkafka callbacks: lag from statistics, commits on revocation.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use tracing::info;

use crate::health::Health;
use crate::metrics::ConsumerMetrics;
use crate::telemetry::CommitFailed;

/// Librdkafka callbacks: lag from statistics, commits on revocation.
pub struct RuntimeContext {
    /// The consumer's name, the `consumer` label of the lag gauge.
    pub(super) name: String,
    /// Where lag from librdkafka's statistics goes.
    pub(super) metrics: ConsumerMetrics,
    /// Readiness reports the total lag.
    pub(super) health: Arc<Health>,
    /// Revocations so far, and the partitions revoked since the run loop last
    /// took them. A revocation can come while a batch is being collected
    /// (inside a poll); the run loop then drops the records it took before it
    /// from those partitions, which their next owner (this instance too, if
    /// reassigned) fetches again from the committed offsets.
    pub(super) revocations: AtomicU64,
    pub(super) revoked: Mutex<HashSet<(String, i32)>>,
}

impl RuntimeContext {
    /// How many revocations this member has seen.
    pub(super) fn revocations(&self) -> u64 {
        self.revocations.load(Ordering::Acquire)
    }

    /// The partitions revoked since the last call.
    pub(super) fn take_revoked(&self) -> HashSet<(String, i32)> {
        std::mem::take(&mut *self.revoked.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl ClientContext for RuntimeContext {
    fn stats(&self, statistics: Statistics) {
        let mut total = 0;
        for (topic, t) in &statistics.topics {
            for (id, p) in &t.partitions {
                if *id < 0 || p.consumer_lag < 0 {
                    continue;
                }
                total += p.consumer_lag;
                self.metrics
                    .lag
                    .with_label_values(&[&self.name, topic, &id.to_string()])
                    .set(p.consumer_lag);
            }
        }
        self.health.lag.store(total, Ordering::Relaxed);
    }
}

impl ConsumerContext for RuntimeContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // Commit what is stored before the partitions go: offsets are stored
        // only once their batch is settled, so this covers no unsettled record
        // even when the poll comes while a batch waits for Redis (the one
        // behind a deep backlog's batch ahead is taken then). A batch being
        // collected drops what it took before this, see `revocations`; the
        // batch in hand and the one prepared ahead are processed after, and
        // the partitions' next owner finds their events leased, then done.
        if let Rebalance::Revoke(partitions) = rebalance {
            self.revoked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(
                    partitions
                        .elements()
                        .iter()
                        .map(|e| (e.topic().to_owned(), e.partition())),
                );
            self.revocations.fetch_add(1, Ordering::AcqRel);
            info!(
                count = partitions.count(),
                "partitions revoked; committing stored offsets"
            );
            match consumer.commit_consumer_state(CommitMode::Sync) {
                // Nothing stored since the last commit.
                Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) => {}
                Err(e) => CommitFailed {
                    during: "revoke",
                    error: &e,
                }
                .emit(&self.metrics),
                Ok(()) => {}
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            info!(count = partitions.count(), "partitions assigned");
        }
    }
}
