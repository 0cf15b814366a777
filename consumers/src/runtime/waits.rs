//! A dependency that is down pauses consumption until it returns.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use tracing::{info, warn};

use crate::classify::ProcessingError;
use crate::handler::{Handler, HandlerError};

use super::Runtime;
use super::batch::Abandoned;

impl<H: Handler> Runtime<H> {
    /// Marks `dependency` down, pauses consumption and waits a backoff (or shutdown).
    pub(super) async fn wait_for(
        &self,
        dependency: &str,
        error: &ProcessingError,
        attempt: u32,
    ) -> Result<(), Abandoned> {
        if attempt == 1 || attempt.is_multiple_of(20) {
            warn!(dependency, error = %error, attempt, "dependency down: consumption paused, nothing is dead-lettered");
        }
        if let Some(f) = self.dependency_flag(dependency) {
            f.store(false, Ordering::Relaxed)
        }
        self.metrics
            .dependency_up
            .with_label_values(&[dependency])
            .set(0);
        self.pause_for(
            self.args
                .backoff(attempt.min(6))
                .max(Duration::from_millis(200)),
        )
        .await
    }

    pub(super) async fn pause_for(&self, delay: Duration) -> Result<(), Abandoned> {
        if !self.health.paused.swap(true, Ordering::Relaxed)
            && let Ok(assignment) = self.consumer.assignment()
        {
            self.health
                .paused_partitions
                .store(assignment.count() as i64, Ordering::Relaxed);
            let _ = self.consumer.pause(&assignment);
        }
        tokio::select! {
            _ = self.cancel.cancelled() => Err(Abandoned),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }

    pub(super) fn dependency_back(&self, dependency: &str) {
        if let Some(flag) = self.dependency_flag(dependency)
            && !flag.swap(true, Ordering::Relaxed)
        {
            info!(dependency, "dependency is back");
            self.metrics
                .dependency_up
                .with_label_values(&[dependency])
                .set(1);
        }
        if self.health.paused.load(Ordering::Relaxed)
            && self.health.redis_up.load(Ordering::Relaxed)
            && self.health.registry_up.load(Ordering::Relaxed)
            && self.health.kafka_up.load(Ordering::Relaxed)
        {
            if let Ok(assignment) = self.consumer.assignment() {
                let _ = self.consumer.resume(&assignment);
            }
            self.health.paused.store(false, Ordering::Relaxed);
            self.health.paused_partitions.store(0, Ordering::Relaxed);
            info!("consumption resumed");
        }
    }

    pub(super) fn dependency_flag(
        &self,
        dependency: &str,
    ) -> Option<&std::sync::atomic::AtomicBool> {
        match dependency {
            "redis" => Some(&self.health.redis_up),
            "registry" => Some(&self.health.registry_up),
            "kafka" => Some(&self.health.kafka_up),
            _ => None,
        }
    }
}

pub(super) fn dependency_of(error: &ProcessingError) -> &'static str {
    match error {
        ProcessingError::Redis(_) => "redis",
        ProcessingError::Decode(_) => "registry",
        ProcessingError::Kafka(_) => "kafka",
        ProcessingError::Handler(HandlerError::DependencyDown(m)) if m.starts_with("redis") => {
            "redis"
        }
        _ => "kafka",
    }
}
