//! Liveness, readiness and metrics over HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use crate::dependency::Dependency;
use crate::durability::RedisPersistence;
use crate::metrics::ConsumerMetrics;

/// What readiness reports; shared by the runtime and its health checks.
#[derive(Default)]
pub struct Health {
    /// Whether each dependency answers: set down by the runtime when a call
    /// fails, up by the runtime or the periodic checks when it answers.
    pub kafka_up: AtomicBool,
    pub redis_up: AtomicBool,
    pub registry_up: AtomicBool,
    /// Consumption is paused because a dependency is down.
    pub paused: AtomicBool,
    /// How many partitions the pause holds (the whole assignment).
    pub paused_partitions: AtomicI64,
    /// Total lag over the assignment, from librdkafka's statistics.
    pub lag: AtomicI64,
    /// When an event was last processed.
    last_event: std::sync::Mutex<Option<Instant>>,
    /// Redis's persistence as last observed: named in readiness so an
    /// operator sees when exactly-once would not survive a Redis crash.
    redis_persistence: std::sync::Mutex<Option<RedisPersistence>>,
}

impl Health {
    pub fn new() -> Arc<Self> {
        let health = Health::default();
        for flag in [&health.kafka_up, &health.redis_up, &health.registry_up] {
            flag.store(true, Ordering::Relaxed);
        }
        Arc::new(health)
    }

    /// The up/down flag of `dependency`.
    pub fn flag(&self, dependency: Dependency) -> &AtomicBool {
        match dependency {
            Dependency::Kafka => &self.kafka_up,
            Dependency::Redis => &self.redis_up,
            Dependency::Registry => &self.registry_up,
        }
    }

    pub fn event_processed(&self) {
        *self.last_event.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Records what Redis said of its persistence; true when that changed.
    pub fn observed_redis_persistence(&self, observed: RedisPersistence) -> bool {
        let mut slot = self
            .redis_persistence
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let changed = slot.as_ref() != Some(&observed);
        *slot = Some(observed);
        changed
    }

    pub fn ready(&self) -> bool {
        Dependency::ALL
            .iter()
            .all(|d| self.flag(*d).load(Ordering::Relaxed))
            && !self.paused.load(Ordering::Relaxed)
    }

    pub fn report(&self) -> serde_json::Value {
        let checks: serde_json::Map<String, serde_json::Value> = Dependency::ALL
            .iter()
            .map(|d| {
                let up = self.flag(*d).load(Ordering::Relaxed);
                (d.name().to_owned(), json!(if up { "up" } else { "down" }))
            })
            .collect();
        let since = self
            .last_event
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed().as_secs_f64());
        let persistence = self
            .redis_persistence
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(RedisPersistence::report);
        json!({
            "ready": self.ready(),
            "checks": checks,
            "paused": self.paused.load(Ordering::Relaxed),
            "paused_partitions": self.paused_partitions.load(Ordering::Relaxed),
            "lag": self.lag.load(Ordering::Relaxed),
            "seconds_since_last_event": since,
            // Reported, not required for readiness: a managed Redis may
            // refuse CONFIG, and the consumer still works (less durably).
            "redis_persistence": persistence,
        })
    }
}

/// The answer of a read-model endpoint whose Redis state cannot be read.
pub fn state_unavailable(e: redis::RedisError) -> (StatusCode, axum::Json<serde_json::Value>) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({ "error": format!("redis: {e}") })),
    )
}

#[derive(Clone)]
struct Shared {
    health: Arc<Health>,
    metrics: ConsumerMetrics,
}

/// `/metrics`, `/health/live`, `/health/ready`, plus the consumer's own routes.
pub fn router(health: Arc<Health>, metrics: ConsumerMetrics, extra: Router) -> Router {
    let shared = Shared { health, metrics };
    Router::new()
        .route(
            "/health/live",
            get(|| async { axum::Json(json!({"status": "live"})) }),
        )
        .route(
            "/health/ready",
            get(|State(s): State<Shared>| async move {
                let status = if s.health.ready() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                (status, axum::Json(s.health.report()))
            }),
        )
        .route(
            "/metrics",
            get(|State(s): State<Shared>| async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    s.metrics.render(),
                )
                    .into_response()
            }),
        )
        .with_state(shared)
        .merge(extra)
}
