//! Diagnostics: per-workflow progress and per-agent health over a sliding
//! window (count, failure rate, p50/p95 latency), stuck workflows (no
//! completion within 2 × `estimated_duration_ms`, or 10 minutes), served on
//! `GET /summary` and exported as `opal_diagnostics_*` metrics.
//!
//! Keys (`<topic prefix>opal:diag:`): `agent:<id>` a sorted set of samples scored by event time
//! (the window's bounded reservoir: trimmed to the window and to the newest
//! `MAX_SAMPLES`), `inflight` workflows scored by their deadline, `counters`,
//! `agents` the set of agents seen, `last_event_ms`.

use opal_schemas::events::ExecutionStatus;
use opal_schemas::{Event, EventType};
use prometheus::{GaugeVec, IntGauge, Opts};
use redis::AsyncCommands;
use serde::Serialize;

use crate::apps::clock::Clock;
use crate::handler::{Effects, Handler, HandlerError, Source, StateOp, StateReader};

/// The Redis namespace of this consumer's state: topic prefix, then `<topic prefix>opal:diag:`.
pub fn namespace(topic_prefix: &str) -> String {
    format!("{topic_prefix}opal:diag:")
}
pub const MAX_SAMPLES: i64 = 2000;
const DEFAULT_SLA_MS: i64 = 600_000;

#[derive(Debug, Clone)]
pub struct DiagnosticsSettings {
    pub window_ms: i64,
    /// An agent whose p95 exceeds this is "slow".
    pub slow_p95_ms: f64,
    /// An agent whose failure rate reaches this (with enough samples) is "failing".
    pub failing_rate: f64,
    pub min_samples: usize,
}

impl Default for DiagnosticsSettings {
    fn default() -> Self {
        DiagnosticsSettings {
            window_ms: 900_000,
            slow_p95_ms: 5_000.0,
            failing_rate: 0.5,
            min_samples: 5,
        }
    }
}

/// The SLA deadline of a workflow started at `started` (2 × estimate, or 10 min).
pub fn deadline(started: i64, estimated_duration_ms: Option<i64>) -> i64 {
    started
        + estimated_duration_ms
            .map(|e| 2 * e)
            .unwrap_or(DEFAULT_SLA_MS)
}

/// Nearest-rank quantile of sorted `values`.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentHealth {
    pub agent_id: String,
    pub count: usize,
    pub failure_rate: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub status: &'static str,
}

/// Health of one agent from its window's samples `(failed, latency_ms)`.
pub fn agent_health(
    agent_id: &str,
    samples: &[(bool, f64)],
    settings: &DiagnosticsSettings,
) -> AgentHealth {
    let count = samples.len();
    let failures = samples.iter().filter(|(failed, _)| *failed).count();
    let failure_rate = if count == 0 {
        0.0
    } else {
        failures as f64 / count as f64
    };
    let mut latencies: Vec<f64> = samples.iter().map(|(_, l)| *l).collect();
    latencies.sort_by(f64::total_cmp);
    let p95 = quantile(&latencies, 0.95);
    let status = if count >= settings.min_samples && failure_rate >= settings.failing_rate {
        "failing"
    } else if count >= settings.min_samples && p95.is_some_and(|p| p > settings.slow_p95_ms) {
        "slow"
    } else {
        "ok"
    };
    AgentHealth {
        agent_id: agent_id.to_owned(),
        count,
        failure_rate,
        p50_ms: quantile(&latencies, 0.5),
        p95_ms: p95,
        status,
    }
}

pub struct DiagnosticsHandler {
    pub settings: DiagnosticsSettings,
    /// From [`namespace`].
    pub ns: String,
}

impl Handler for DiagnosticsHandler {
    fn name(&self) -> &str {
        "diagnostics"
    }

    fn inputs(&self) -> Vec<EventType> {
        vec![
            EventType::WorkflowStarted,
            EventType::AgentCompleted,
            EventType::WorkflowCompleted,
        ]
    }

    /// Handling is pure (state commands out, nothing read, nothing emitted):
    /// a batch settles in one Redis round trip.
    fn handles_before_lease(&self, _event: &Event) -> bool {
        true
    }

    async fn handle(
        &self,
        event: &Event,
        _source: &Source,
        _state: &StateReader,
    ) -> Result<Effects, HandlerError> {
        let ts = event.envelope().timestamp;
        let ns = &self.ns;
        let counters = format!("{ns}counters");
        let mut effects = Effects::none()
            .op(StateOp::cmd("HINCRBY").arg(&counters).arg("events").arg(1))
            // Latest event time wins, whatever order partitions are handled in.
            .op(StateOp::cmd("ZADD")
                .arg(format!("{ns}last_event"))
                .arg("GT")
                .arg(ts)
                .arg("t"));
        match event {
            Event::WorkflowStarted(w) => {
                let deadline = deadline(ts, w.estimated_duration_ms);
                effects.push(StateOp::cmd("HINCRBY").arg(&counters).arg("started").arg(1));
                // A completion handled first (another topic) is remembered in `done`,
                // which the summary subtracts.
                effects.push(
                    StateOp::cmd("ZADD")
                        .arg(format!("{ns}inflight"))
                        .arg("NX")
                        .arg(deadline)
                        .arg(&w.workflow_id),
                );
                effects.push(
                    StateOp::cmd("HSET")
                        .arg(format!("{ns}wf:{}", w.workflow_id))
                        .arg("client")
                        .arg(&w.client_name),
                );
            }
            Event::AgentCompleted(a) => {
                let failed = matches!(
                    a.execution_status,
                    ExecutionStatus::Failure | ExecutionStatus::Timeout
                );
                let key = format!("{ns}agent:{}", a.agent_id);
                let member = format!(
                    "{}|{}|{}",
                    event.envelope().event_id,
                    u8::from(failed),
                    a.processing_time_ms
                );
                effects.push(StateOp::cmd("ZADD").arg(&key).arg(ts).arg(member));
                effects.push(
                    StateOp::cmd("ZREMRANGEBYSCORE")
                        .arg(&key)
                        .arg("-inf")
                        .arg(ts - self.settings.window_ms),
                );
                effects.push(
                    StateOp::cmd("ZREMRANGEBYRANK")
                        .arg(&key)
                        .arg(0)
                        .arg(-MAX_SAMPLES - 1),
                );
                effects.push(
                    StateOp::cmd("SADD")
                        .arg(format!("{ns}agents"))
                        .arg(&a.agent_id),
                );
            }
            Event::WorkflowCompleted(w) => {
                let outcome = match w.status {
                    opal_schemas::events::WorkflowStatus::Success => "completed",
                    _ => "failed",
                };
                effects.push(StateOp::cmd("HINCRBY").arg(&counters).arg(outcome).arg(1));
                effects.push(
                    StateOp::cmd("ZREM")
                        .arg(format!("{ns}inflight"))
                        .arg(&w.workflow_id),
                );
                effects.push(
                    StateOp::cmd("SADD")
                        .arg(format!("{ns}done"))
                        .arg(&w.workflow_id),
                );
            }
            _ => {}
        }
        Ok(effects)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub total_events: i64,
    pub workflows_in_flight: usize,
    pub workflows_completed: i64,
    pub workflows_failed: i64,
    pub workflows_stuck: usize,
    pub stuck_workflows: Vec<String>,
    pub agents: Vec<AgentHealth>,
    pub last_event_time: Option<i64>,
}

/// Builds the summary from Redis at `now` (the clock decides what is stuck).
pub async fn summary(
    state: &StateReader,
    ns: &str,
    clock: &dyn Clock,
    settings: &DiagnosticsSettings,
) -> Result<Summary, redis::RedisError> {
    let mut redis = state.connection();
    let now = clock.now_ms();
    let counters: std::collections::HashMap<String, i64> =
        redis.hgetall(format!("{ns}counters")).await?;
    let done: std::collections::HashSet<String> = redis.smembers(format!("{ns}done")).await?;
    let inflight: Vec<(String, f64)> = redis
        .zrange_withscores(format!("{ns}inflight"), 0, -1)
        .await?;
    let inflight: Vec<(String, f64)> = inflight
        .into_iter()
        .filter(|(w, _)| !done.contains(w))
        .collect();
    let stuck: Vec<String> = inflight
        .iter()
        .filter(|(_, d)| (*d as i64) < now)
        .map(|(w, _)| w.clone())
        .collect();
    let mut agents = Vec::new();
    let agent_ids: Vec<String> = redis.smembers(format!("{ns}agents")).await?;
    for agent in agent_ids {
        let members: Vec<String> = redis
            .zrangebyscore(
                format!("{ns}agent:{agent}"),
                now - settings.window_ms,
                "+inf",
            )
            .await?;
        let samples: Vec<(bool, f64)> = members
            .iter()
            .filter_map(|m| {
                let mut parts = m.rsplitn(3, '|');
                let latency = parts.next()?.parse::<f64>().ok()?;
                let failed = parts.next()? == "1";
                Some((failed, latency))
            })
            .collect();
        agents.push(agent_health(&agent, &samples, settings));
    }
    agents.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
    let last: Option<f64> = redis.zscore(format!("{ns}last_event"), "t").await?;
    Ok(Summary {
        total_events: counters.get("events").copied().unwrap_or(0),
        workflows_in_flight: inflight.len(),
        workflows_completed: counters.get("completed").copied().unwrap_or(0),
        workflows_failed: counters.get("failed").copied().unwrap_or(0),
        workflows_stuck: stuck.len(),
        stuck_workflows: stuck,
        agents,
        last_event_time: last.map(|t| t as i64),
    })
}

/// How often the gauges are refreshed from Redis.
const GAUGE_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// Stuck workflows and agent health as `opal_diagnostics_*` gauges,
/// refreshed from the state on a timer (a stuck workflow is stuck because
/// no event arrives, so the gauges cannot wait for one).
pub struct DiagnosticsGauges {
    in_flight: IntGauge,
    stuck: IntGauge,
    failure_rate: GaugeVec,
    p95_seconds: GaugeVec,
    events: IntGauge,
}

impl DiagnosticsGauges {
    /// Creates the gauges in `registry`.
    pub fn register(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let gauges = DiagnosticsGauges {
            in_flight: IntGauge::new(
                "opal_diagnostics_workflows_in_flight",
                "Workflows started and not completed",
            )?,
            stuck: IntGauge::new(
                "opal_diagnostics_workflows_stuck",
                "Workflows past their SLA without completion",
            )?,
            failure_rate: GaugeVec::new(
                Opts::new(
                    "opal_diagnostics_agent_failure_rate",
                    "Agent failure rate over the window",
                ),
                &["agent"],
            )?,
            p95_seconds: GaugeVec::new(
                Opts::new(
                    "opal_diagnostics_agent_p95_seconds",
                    "Agent p95 latency over the window",
                ),
                &["agent"],
            )?,
            events: IntGauge::new(
                "opal_diagnostics_events_processed",
                "Events the diagnostics state holds",
            )?,
        };
        registry.register(Box::new(gauges.in_flight.clone()))?;
        registry.register(Box::new(gauges.stuck.clone()))?;
        registry.register(Box::new(gauges.failure_rate.clone()))?;
        registry.register(Box::new(gauges.p95_seconds.clone()))?;
        registry.register(Box::new(gauges.events.clone()))?;
        Ok(gauges)
    }

    /// Refreshes the gauges from the summary every few seconds until
    /// `cancel`; a summary Redis cannot answer leaves them as they were.
    pub async fn refresh(
        self,
        state: StateReader,
        ns: String,
        settings: DiagnosticsSettings,
        clock: &dyn Clock,
        cancel: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(GAUGE_REFRESH);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            let Ok(s) = summary(&state, &ns, clock, &settings).await else {
                continue;
            };
            self.in_flight.set(s.workflows_in_flight as i64);
            self.stuck.set(s.workflows_stuck as i64);
            self.events.set(s.total_events);
            for a in &s.agents {
                self.failure_rate
                    .with_label_values(&[&a.agent_id])
                    .set(a.failure_rate);
                self.p95_seconds
                    .with_label_values(&[&a.agent_id])
                    .set(a.p95_ms.unwrap_or(0.0) / 1000.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sla_is_twice_the_estimate_or_ten_minutes() {
        assert_eq!(deadline(1_000, Some(60_000)), 121_000);
        assert_eq!(deadline(1_000, None), 601_000);
    }

    #[test]
    fn quantiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.95), Some(95.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn agents_are_ok_slow_or_failing() {
        let s = DiagnosticsSettings::default();
        let ok: Vec<_> = (0..10).map(|i| (false, 100.0 + i as f64)).collect();
        assert_eq!(agent_health("a", &ok, &s).status, "ok");
        let slow: Vec<_> = (0..10).map(|i| (false, 6_000.0 + i as f64)).collect();
        assert_eq!(agent_health("b", &slow, &s).status, "slow");
        let failing: Vec<_> = (0..10).map(|i| (i % 2 == 0, 100.0)).collect();
        let h = agent_health("c", &failing, &s);
        assert_eq!((h.status, h.failure_rate), ("failing", 0.5));
        assert_eq!(
            agent_health("d", &failing[..3], &s).status,
            "ok",
            "too few samples to judge"
        );
    }
}
