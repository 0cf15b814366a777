//! The runtime's Prometheus metrics, in one registry served on `/metrics`.

use prometheus::{
    Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

use opal_producers::PublishMetrics;

#[derive(Clone)]
pub struct ConsumerMetrics {
    pub registry: Registry,
    pub consumed: IntCounterVec,
    pub processing: HistogramVec,
    pub lag: IntGaugeVec,
    pub dependency_up: IntGaugeVec,
    pub redis_round_trips: IntCounter,
    /// Applies refused by a guard (the event is handled again).
    pub state_conflicts: IntCounter,
    /// Records written to the dead-letter topic, by class.
    pub dead_letters: IntCounterVec,
    /// Records the dead-letter topic refused for good (left in their source topic).
    pub dead_letters_refused: IntCounterVec,
    /// Offsets that could not be stored (partition revoked meanwhile).
    pub offset_store_failures: IntCounter,
    /// Failed commits of stored offsets, by when (revoke, shutdown).
    pub commit_failures: IntCounterVec,
    /// Records dropped from a batch being collected because a rebalance took
    /// their partition meanwhile (its next owner reads them again).
    pub revoked_records_dropped: IntCounter,
    pub batches: IntCounter,
    pub last_event_unixtime: Gauge,
    pub publish: PublishMetrics,
}

impl ConsumerMetrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let consumed = IntCounterVec::new(
            Opts::new(
                "opal_events_consumed_total",
                "Events consumed, by outcome (processed, duplicate, retried, dead_lettered)",
            ),
            &["consumer", "topic", "outcome"],
        )?;
        let processing = HistogramVec::new(
            HistogramOpts::new(
                "opal_event_processing_seconds",
                "Time from receiving an event to its effect being applied",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["consumer", "topic"],
        )?;
        let lag = IntGaugeVec::new(
            Opts::new(
                "opal_consumer_lag",
                "Messages between the partition's end and the group's position",
            ),
            &["consumer", "topic", "partition"],
        )?;
        let dependency_up = IntGaugeVec::new(
            Opts::new(
                "opal_dependency_up",
                "1 when the dependency answers, 0 when it does not",
            ),
            &["dependency"],
        )?;
        let redis_round_trips = IntCounter::new(
            "opal_idempotency_round_trips_total",
            "Redis round trips made for idempotency",
        )?;
        let state_conflicts = IntCounter::new(
            "opal_consumer_state_conflicts_total",
            "Applies refused because guarded state changed since the handler read it",
        )?;
        let dead_letters = IntCounterVec::new(
            Opts::new(
                "opal_dead_letters_total",
                "Records written to the dead-letter topic, by error class",
            ),
            &["consumer", "class"],
        )?;
        let dead_letters_refused = IntCounterVec::new(
            Opts::new(
                "opal_dead_letters_refused_total",
                "Records the dead-letter topic refused for good (left in their source topic)",
            ),
            &["consumer"],
        )?;
        let offset_store_failures = IntCounter::new(
            "opal_consumer_offset_store_failures_total",
            "Offsets that could not be stored (their partition was revoked meanwhile)",
        )?;
        let commit_failures = IntCounterVec::new(
            Opts::new(
                "opal_consumer_commit_failures_total",
                "Failed commits of stored offsets (the records since are redelivered)",
            ),
            &["during"],
        )?;
        let revoked_records_dropped = IntCounter::new(
            "opal_consumer_revoked_records_dropped_total",
            "Records dropped from a batch being collected because a rebalance revoked their partition (the next owner reads them again)",
        )?;
        let batches = IntCounter::new("opal_consumer_batches_total", "Poll batches processed")?;
        let last_event_unixtime = Gauge::new(
            "opal_consumer_last_event_timestamp_seconds",
            "When the last event was processed (unix time)",
        )?;
        for c in [
            Box::new(consumed.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(processing.clone()),
            Box::new(lag.clone()),
            Box::new(dependency_up.clone()),
            Box::new(redis_round_trips.clone()),
            Box::new(state_conflicts.clone()),
            Box::new(dead_letters.clone()),
            Box::new(dead_letters_refused.clone()),
            Box::new(offset_store_failures.clone()),
            Box::new(commit_failures.clone()),
            Box::new(revoked_records_dropped.clone()),
            Box::new(batches.clone()),
            Box::new(last_event_unixtime.clone()),
        ] {
            registry.register(c)?;
        }
        let publish = PublishMetrics::new(&registry)?;
        Ok(ConsumerMetrics {
            registry,
            consumed,
            processing,
            lag,
            dependency_up,
            redis_round_trips,
            state_conflicts,
            dead_letters,
            dead_letters_refused,
            offset_store_failures,
            commit_failures,
            revoked_records_dropped,
            batches,
            last_event_unixtime,
            publish,
        })
    }

    /// Prometheus text format.
    pub fn render(&self) -> String {
        let encoder = prometheus::TextEncoder::new();
        encoder
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}
