//! The dependency probes behind readiness and `opal_dependency_up`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use opal_schemas::Codec;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio_util::sync::CancellationToken;

use crate::config::RuntimeArgs;
use crate::dependency::Dependency;
use crate::durability::RedisPersistence;
use crate::handler::StateReader;
use crate::health::Health;
use crate::metrics::ConsumerMetrics;
use crate::telemetry::RedisPersistenceObserved;

/// Every two seconds: is each dependency answering? Feeds readiness and
/// `opal_dependency_up`, independently of traffic. Kafka is asked for one
/// topic's metadata through one long-lived client: a full metadata request
/// every few seconds is a real load on a broker with many topics.
pub(super) async fn health_checks(
    args: RuntimeArgs,
    probe_topic: String,
    codec: Arc<Codec>,
    state: StateReader,
    health: Arc<Health>,
    metrics: ConsumerMetrics,
    cancel: CancellationToken,
) {
    let probe: Option<Arc<BaseConsumer>> = args
        .kafka
        .client_config()
        .ok()
        .and_then(|c| c.create().ok())
        .map(Arc::new);
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut connection = state.connection();
        let redis_ok = tokio::time::timeout(
            Duration::from_secs(2),
            redis::cmd("PING").query_async::<String>(&mut connection),
        )
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
        if redis_ok {
            let persistence = RedisPersistence::observe(&mut connection).await;
            if health.observed_redis_persistence(persistence.clone()) {
                RedisPersistenceObserved {
                    persistence: &persistence,
                }
                .emit();
            }
        }
        let registry_ok = codec.registry().ping().await.is_ok();
        let kafka_ok = match &probe {
            Some(probe) => {
                let (probe, topic) = (probe.clone(), probe_topic.clone());
                tokio::task::spawn_blocking(move || {
                    probe
                        .fetch_metadata(Some(&topic), Duration::from_secs(2))
                        .is_ok()
                })
                .await
                .unwrap_or(false)
            }
            None => false,
        };
        for (dependency, ok) in [
            (Dependency::Redis, redis_ok),
            (Dependency::Registry, registry_ok),
            (Dependency::Kafka, kafka_ok),
        ] {
            metrics
                .dependency_up
                .with_label_values(&[dependency.name()])
                .set(i64::from(ok));
            // Down is also set by the runtime when its own call fails. The
            // checker's flags only feed readiness: pausing and resuming are
            // the runtime's (see `Runtime::dependency_back`).
            health.flag(dependency).store(ok, Ordering::Relaxed);
        }
    }
}
