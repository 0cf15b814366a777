//! Arrivals of benchmark events at a consumer: how many, when the first and the
//! last came, and each one's latency from its produce time.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opal_producers::perf::percentile;
use serde::Serialize;

#[derive(Default)]
struct Arrivals {
    count: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    latencies_ms: Vec<f64>,
}

/// Shared between a consumer task and the benchmark driver.
#[derive(Default)]
pub struct Recorder {
    arrivals: Mutex<Arrivals>,
}

/// Throughput of one consume phase.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub events: u64,
    pub elapsed_s: f64,
    pub events_per_sec: f64,
}

/// Latency percentiles of one fixed-rate phase (milliseconds).
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub events: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Milliseconds since the epoch, with sub-millisecond precision.
pub fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or_default()
}

impl Recorder {
    /// One event arrived; `produced_ms` is its produce time (epoch milliseconds).
    pub fn arrived(&self, produced_ms: i64) {
        let now = Instant::now();
        let latency = now_ms() - produced_ms as f64;
        let mut a = self.arrivals.lock().unwrap_or_else(|p| p.into_inner());
        a.count += 1;
        a.first.get_or_insert(now);
        a.last = Some(now);
        a.latencies_ms.push(latency);
    }

    pub fn count(&self) -> u64 {
        self.arrivals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .count
    }

    /// Starts a new phase.
    pub fn reset(&self) {
        *self.arrivals.lock().unwrap_or_else(|p| p.into_inner()) = Arrivals::default();
    }

    /// Waits until `events` have arrived in this phase, or `limit` passes.
    pub async fn wait_for(&self, events: u64, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while self.count() < events {
            if Instant::now() > deadline {
                anyhow::bail!(
                    "only {} of {events} events arrived within {limit:?}",
                    self.count()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Events per second from the first arrival to the last.
    pub fn throughput(&self) -> Throughput {
        let a = self.arrivals.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed_s = match (a.first, a.last) {
            (Some(f), Some(l)) => (l - f).as_secs_f64().max(f64::EPSILON),
            _ => f64::EPSILON,
        };
        Throughput {
            events: a.count,
            elapsed_s,
            events_per_sec: a.count as f64 / elapsed_s,
        }
    }

    pub fn latency(&self) -> Latency {
        let mut sorted = self
            .arrivals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .latencies_ms
            .clone();
        sorted.sort_by(f64::total_cmp);
        Latency {
            events: sorted.len() as u64,
            p50_ms: percentile(&sorted, 0.50),
            p95_ms: percentile(&sorted, 0.95),
            p99_ms: percentile(&sorted, 0.99),
            max_ms: sorted.last().copied().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_measured_from_the_produce_time() {
        let r = Recorder::default();
        let now = now_ms() as i64;
        r.arrived(now - 100);
        r.arrived(now - 10);
        let l = r.latency();
        assert_eq!(l.events, 2);
        assert!(l.p50_ms >= 10.0 && l.p50_ms < 100.0, "{l:?}");
        assert!(l.max_ms >= 100.0, "{l:?}");
        r.reset();
        assert_eq!(r.count(), 0);
    }
}
