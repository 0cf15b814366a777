//! Producer metrics, registered in the caller's Prometheus registry.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct PublishMetrics {
    pub published: IntCounterVec,
    pub errors: IntCounterVec,
    pub latency: HistogramVec,
}

impl PublishMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let published = IntCounterVec::new(
            Opts::new(
                "opal_events_published_total",
                "Events acknowledged by the broker",
            ),
            &["topic"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "opal_publish_errors_total",
                "Events that could not be published",
            ),
            &["topic", "reason"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "opal_publish_latency_seconds",
                "Time from publish call to delivery report",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["topic"],
        )?;
        registry.register(Box::new(published.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        Ok(PublishMetrics {
            published,
            errors,
            latency,
        })
    }
}
