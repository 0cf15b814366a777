//! A dependency that is down pauses consumption until it returns; a
//! transient failure backs off without pausing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::consumer::Consumer;
use tracing::info;

use crate::classify::ProcessingError;
use crate::dependency::Dependency;
use crate::handler::Handler;
use crate::telemetry::{DependencyBack, DependencyDown};

use super::Runtime;
use super::batch::Abandoned;

impl<H: Handler> Runtime<H> {
    /// Marks `dependency` down, pauses consumption and waits a backoff (or shutdown).
    pub(super) async fn wait_for(
        &self,
        dependency: Dependency,
        error: &ProcessingError,
        attempt: u32,
    ) -> Result<(), Abandoned> {
        DependencyDown {
            dependency,
            error,
            attempt,
        }
        .emit(&self.metrics);
        self.dependency_flag(dependency)
            .store(false, Ordering::Relaxed);
        self.pause_for(
            self.args
                .backoff(attempt.min(6))
                .max(Duration::from_millis(200)),
        )
        .await
    }

    /// Pauses the assignment (readiness says so) and waits `delay` (or shutdown).
    pub(super) async fn pause_for(&self, delay: Duration) -> Result<(), Abandoned> {
        if !self.health.paused.swap(true, Ordering::Relaxed)
            && let Ok(assignment) = self.consumer.assignment()
        {
            self.health
                .paused_partitions
                .store(assignment.count() as i64, Ordering::Relaxed);
            let _ = self.consumer.pause(&assignment);
        }
        self.back_off(delay).await
    }

    /// Waits `delay` before a retry, without pausing or touching readiness
    /// (a transient failure is about one event, not the consumer).
    pub(super) async fn back_off(&self, delay: Duration) -> Result<(), Abandoned> {
        tokio::select! {
            _ = self.cancel.cancelled() => Err(Abandoned),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }

    /// `dependency` answered the runtime's own call again: mark it up and
    /// resume. Resuming does not wait for the other flags: the health checks
    /// set those (readiness stays 503 while one is down), and a runtime that
    /// waited for them could wait forever, since it only calls a dependency
    /// when it has records, and it has none while paused (seen in the soak:
    /// a consumer paused on Kafka stayed paused after Redis and the registry
    /// had also been restarted). If another dependency is really down, the
    /// next batch fails on it and pauses again.
    pub(super) fn dependency_back(&self, dependency: Dependency) {
        if !self
            .dependency_flag(dependency)
            .swap(true, Ordering::Relaxed)
        {
            DependencyBack { dependency }.emit(&self.metrics);
        }
        if self.health.paused.load(Ordering::Relaxed) {
            if let Ok(assignment) = self.consumer.assignment() {
                let _ = self.consumer.resume(&assignment);
            }
            self.health.paused.store(false, Ordering::Relaxed);
            self.health.paused_partitions.store(0, Ordering::Relaxed);
            info!("consumption resumed");
        }
    }

    fn dependency_flag(&self, dependency: Dependency) -> &AtomicBool {
        self.health.flag(dependency)
    }
}
