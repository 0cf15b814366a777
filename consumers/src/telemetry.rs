//! The runtime's telemetry events, in one place: each is one struct whose
//! `emit` writes the log line and bumps the counter together, so the two
//! never drift apart (as Vector's `internal_events`).

use tracing::{debug, error, info, warn};

use crate::classify::FailureClass;
use crate::dependency::Dependency;
use crate::durability::{REQUIRED, RedisPersistence};
use crate::metrics::ConsumerMetrics;

/// A record was written to the dead-letter topic (the broker acknowledged it).
pub struct DeadLettered<'a> {
    pub consumer: &'a str,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub class: FailureClass,
    pub attempts: u32,
    pub error: &'a str,
}

impl DeadLettered<'_> {
    pub fn emit(&self, metrics: &ConsumerMetrics) {
        warn!(
            topic = self.topic,
            partition = self.partition,
            offset = self.offset,
            class = self.class.dlq_name(),
            attempts = self.attempts,
            error = self.error,
            "dead-lettered"
        );
        metrics
            .consumed
            .with_label_values(&[self.consumer, self.topic, "dead_lettered"])
            .inc();
        metrics
            .dead_letters
            .with_label_values(&[self.consumer, self.class.dlq_name()])
            .inc();
    }
}

/// The dead-letter topic refused a record for good: it cannot be parked
/// there, so it is logged with its coordinates (it stays in its source topic)
/// and counted, and the consumer goes on.
pub struct DeadLetterRefused<'a> {
    pub consumer: &'a str,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub class: FailureClass,
    pub error: &'a str,
}

impl DeadLetterRefused<'_> {
    pub fn emit(&self, metrics: &ConsumerMetrics) {
        error!(
            topic = self.topic,
            partition = self.partition,
            offset = self.offset,
            class = self.class.dlq_name(),
            error = self.error,
            "the dead-letter topic refused this record for good; it is left in its source topic"
        );
        metrics
            .dead_letters_refused
            .with_label_values(&[self.consumer])
            .inc();
    }
}

/// A rebalance revoked partitions while a batch was being collected: the
/// records already taken from them are dropped, not processed, because the
/// revoke-time commit did not cover them and their next owner reads them again.
pub struct RevokedRecordsDropped {
    pub dropped: usize,
}

impl RevokedRecordsDropped {
    pub fn emit(&self, metrics: &ConsumerMetrics) {
        info!(
            dropped = self.dropped,
            "partitions revoked while a batch was being collected: their records are left to the next owner"
        );
        metrics.revoked_records_dropped.inc_by(self.dropped as u64);
    }
}

/// A dependency stopped answering: consumption pauses.
pub struct DependencyDown<'a> {
    pub dependency: Dependency,
    pub error: &'a dyn std::fmt::Display,
    /// Consecutive failed attempts; the log line is written on the first and
    /// every 20th, the gauge is set every time.
    pub attempt: u32,
}

impl DependencyDown<'_> {
    pub fn emit(&self, metrics: &ConsumerMetrics) {
        if self.attempt == 1 || self.attempt.is_multiple_of(20) {
            warn!(
                dependency = self.dependency.name(),
                error = %self.error,
                attempt = self.attempt,
                "dependency down: consumption paused, nothing is dead-lettered"
            );
        }
        metrics
            .dependency_up
            .with_label_values(&[self.dependency.name()])
            .set(0);
    }
}

/// A dependency that was down answers again.
pub struct DependencyBack {
    pub dependency: Dependency,
}

impl DependencyBack {
    pub fn emit(&self, metrics: &ConsumerMetrics) {
        info!(dependency = self.dependency.name(), "dependency is back");
        metrics
            .dependency_up
            .with_label_values(&[self.dependency.name()])
            .set(1);
    }
}

/// An offset could not be stored (its partition was revoked meanwhile): the
/// record will be delivered again, to whoever owns the partition now.
pub struct OffsetStoreFailed<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub error: &'a dyn std::fmt::Display,
}

impl OffsetStoreFailed<'_> {
    pub fn emit(&self, metrics: &ConsumerMetrics) {
        debug!(
            topic = self.topic,
            partition = self.partition,
            offset = self.offset,
            error = %self.error,
            "offset not stored (partition revoked?)"
        );
        metrics.offset_store_failures.inc();
    }
}

/// A commit of stored offsets failed: the records since the last good commit
/// will be delivered again (and recognised as duplicates).
pub struct CommitFailed<'a> {
    /// When: "revoke" or "shutdown".
    pub during: &'static str,
    pub error: &'a dyn std::fmt::Display,
}

impl CommitFailed<'_> {
    pub fn emit(&self, metrics: &ConsumerMetrics) {
        warn!(
            during = self.during,
            error = %self.error,
            "offset commit failed: records since the last commit will be redelivered"
        );
        metrics
            .commit_failures
            .with_label_values(&[self.during])
            .inc();
    }
}

/// Redis's persistence was observed (at start-up, and whenever it changes):
/// a warning when done-marks would not survive a Redis crash.
pub struct RedisPersistenceObserved<'a> {
    pub persistence: &'a RedisPersistence,
}

impl RedisPersistenceObserved<'_> {
    pub fn emit(&self) {
        let observed = self.persistence.report()["observed"].to_string();
        match self.persistence.durable() {
            Some(true) => info!(
                observed,
                "redis persistence keeps done-marks through a crash"
            ),
            Some(false) => warn!(
                observed,
                required = REQUIRED,
                "redis persistence can lose done-marks in a crash: events would be applied twice"
            ),
            None => warn!(
                observed,
                required = REQUIRED,
                "redis persistence unknown; exactly-once through a Redis crash needs the required setting"
            ),
        }
    }
}

/// The Kafka client raised a fatal error: the consumer stops and exits
/// non-zero for its supervisor to start a fresh instance.
pub struct KafkaFatal<'a> {
    pub error: &'a str,
}

impl KafkaFatal<'_> {
    pub fn emit(&self) {
        error!(
            error = self.error,
            "fatal Kafka client error: stopping so that a fresh instance takes over"
        );
    }
}

/// Shutdown left leased events unsettled: this instance gave their leases
/// back, so their next owner need not wait for them to expire.
pub struct LeasesReleased {
    /// Unsettled events of the abandoned batches.
    pub events: usize,
    /// Of those, the ones this instance held the lease of.
    pub released: u64,
}

impl LeasesReleased {
    pub fn emit(&self) {
        info!(
            events = self.events,
            released = self.released,
            "leases of unsettled events given back"
        );
    }
}

/// The leases of unsettled events could not be given back (Redis is down or
/// slow): they expire on their own, and the events' next owner waits for that.
pub struct LeasesNotReleased<'a> {
    pub events: usize,
    pub lease_ms: u64,
    pub error: &'a dyn std::fmt::Display,
}

impl LeasesNotReleased<'_> {
    pub fn emit(&self) {
        warn!(
            events = self.events,
            expire_in_ms = self.lease_ms,
            error = %self.error,
            "leases of unsettled events not given back; they expire on their own"
        );
    }
}
