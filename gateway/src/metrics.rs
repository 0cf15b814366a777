//! The gateway's own metrics, registered in the consumer's registry (served
//! on `/metrics` beside the runtime's): deliveries per route and sink, the
//! delivery latency from event time to the receiver's answer, webhook
//! failures, and reloads.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct GatewayMetrics {
    /// Events a receiver accepted (webhook: answered 2xx), by route and sink.
    pub delivered: IntCounterVec,
    /// Events given up on after their attempts: dead-lettered, by route and sink.
    pub failed: IntCounterVec,
    /// Events not delivered and not dead-lettered, by route and sink.
    pub dropped: IntCounterVec,
    /// Event time to delivered, seconds, by route and sink.
    pub latency: HistogramVec,
    /// Failed webhook POSTs, by route and reason (`unreachable`, `failed`).
    pub webhook_failures: IntCounterVec,
    /// 1 while a route's receiver cannot be reached and the route waits for it.
    pub route_paused: IntGaugeVec,
    /// Reloads of the routes file, by outcome (`applied`, `refused`).
    pub reloads: IntCounterVec,
}

impl GatewayMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let by_route = ["route", "sink"];
        let delivered = IntCounterVec::new(
            Opts::new(
                "opal_gateway_delivered_total",
                "Events delivered (webhook: answered 2xx), by route and sink",
            ),
            &by_route,
        )?;
        let failed = IntCounterVec::new(
            Opts::new(
                "opal_gateway_failed_total",
                "Events dead-lettered after their delivery attempts, by route and sink",
            ),
            &by_route,
        )?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "opal_gateway_dropped_total",
                "Events neither delivered nor dead-lettered, by route and sink",
            ),
            &by_route,
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "opal_gateway_delivery_latency_seconds",
                "From the event's time to its delivery, by route and sink",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            &by_route,
        )?;
        let webhook_failures = IntCounterVec::new(
            Opts::new(
                "opal_gateway_webhook_failures_total",
                "Webhook POSTs that failed, by route and reason (unreachable, failed)",
            ),
            &["route", "reason"],
        )?;
        let route_paused = IntGaugeVec::new(
            Opts::new(
                "opal_gateway_route_paused",
                "1 while the route's webhook receiver cannot be reached",
            ),
            &["route"],
        )?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "opal_gateway_reloads_total",
                "Reloads of the routes file, by outcome (applied, refused)",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(delivered.clone()))?;
        registry.register(Box::new(failed.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(webhook_failures.clone()))?;
        registry.register(Box::new(route_paused.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        for outcome in ["applied", "refused"] {
            reloads.with_label_values(&[outcome]);
        }
        Ok(GatewayMetrics {
            delivered,
            failed,
            dropped,
            latency,
            webhook_failures,
            route_paused,
            reloads,
        })
    }

    /// Makes `route`'s series exist at 0 from its start, so rates and
    /// alerts see a route that has delivered nothing yet.
    pub fn touch_route(&self, route: &str, sink: &str) {
        for counter in [&self.delivered, &self.failed, &self.dropped] {
            counter.with_label_values(&[route, sink]);
        }
        if sink == "webhook" {
            for reason in ["unreachable", "failed"] {
                self.webhook_failures.with_label_values(&[route, reason]);
            }
            self.route_paused.with_label_values(&[route]).set(0);
        }
    }

    /// Counts one delivered event of `route` whose event time was `event_millis`.
    pub fn delivered(&self, route: &str, sink: &str, event_millis: i64) {
        self.delivered.with_label_values(&[route, sink]).inc();
        let age = (opal_schemas::now_millis() - event_millis).max(0) as f64 / 1000.0;
        self.latency.with_label_values(&[route, sink]).observe(age);
    }
}
