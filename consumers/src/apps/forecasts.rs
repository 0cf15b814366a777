//! Forecasts: event-time buckets of workflow demand per client and agent
//! latency per agent. Each partition of an input topic has a watermark: the
//! largest event time seen on it minus the allowed lateness; an event behind
//! its own partition's watermark is counted and dropped. The stream's
//! watermark is the slowest partition's (none until every partition has been
//! seen); when it passes a bucket's end, the bucket closes: its value updates a
//! Holt linear (level + trend) model of the series, which emits
//! `opal.forecast.generated` with the next K buckets and 80 % intervals from the
//! spread of its one-step-ahead errors, and tracks their mean absolute error.
//!
//! So what is dropped and what each bucket holds depend only on each
//! partition's order, not on how partitions interleave: a restart, a rebalance
//! or another replica gives the same forecasts. A partition that never gets an
//! event holds the stream's watermark back (as in Kafka Streams and Flink
//! without idleness).

use std::collections::HashMap;

use opal_schemas::events::{ForecastGenerated, ForecastPoint};
use opal_schemas::{Event, EventType};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use crate::apps::feedback::envelope_at;
use crate::apps::recommendations::to_json;
use crate::handler::{Effects, Handler, HandlerError, Source, StateOp, StateReader};

/// The Redis namespace of this consumer's state: topic prefix, then `opal:fc:`.
pub fn namespace(topic_prefix: &str) -> String {
    format!("{topic_prefix}opal:fc:")
}
/// z for a two-sided 80 % interval.
const Z80: f64 = 1.281_551_565_5;

#[derive(Debug, Clone)]
pub struct ForecastSettings {
    pub bucket_ms: i64,
    pub lateness_ms: i64,
    pub alpha: f64,
    pub beta: f64,
    pub horizon: usize,
}

impl Default for ForecastSettings {
    fn default() -> Self {
        ForecastSettings {
            bucket_ms: 300_000,
            lateness_ms: 60_000,
            alpha: 0.5,
            beta: 0.3,
            horizon: 12,
        }
    }
}

/// A Holt linear model of one series, with its error bookkeeping.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Holt {
    pub level: f64,
    pub trend: f64,
    /// Observations seen.
    pub n: u64,
    /// The forecast made for the next bucket, if any.
    pub next_forecast: Option<f64>,
    pub abs_error_sum: f64,
    pub sq_error_sum: f64,
    pub errors: u64,
}

impl Holt {
    /// Folds in observation `y`, scoring the previous one-step-ahead forecast first.
    pub fn update(&mut self, y: f64, alpha: f64, beta: f64) {
        if let Some(predicted) = self.next_forecast {
            let e = y - predicted;
            self.abs_error_sum += e.abs();
            self.sq_error_sum += e * e;
            self.errors += 1;
        }
        match self.n {
            0 => {
                self.level = y;
                self.trend = 0.0;
            }
            1 => {
                self.trend = y - self.level;
                self.level = y;
            }
            _ => {
                let previous_level = self.level;
                self.level = alpha * y + (1.0 - alpha) * (self.level + self.trend);
                self.trend = beta * (self.level - previous_level) + (1.0 - beta) * self.trend;
            }
        }
        self.n += 1;
        self.next_forecast = Some(self.level + self.trend);
    }

    /// Forecast `h` steps ahead (h ≥ 1).
    pub fn forecast(&self, h: usize) -> f64 {
        self.level + self.trend * h as f64
    }

    pub fn mae(&self) -> Option<f64> {
        (self.errors > 0).then(|| self.abs_error_sum / self.errors as f64)
    }

    /// Half-width of the 80 % interval `h` steps ahead: z·σ·√h from the residuals.
    pub fn half_width(&self, h: usize) -> f64 {
        if self.errors == 0 {
            return 0.0;
        }
        let sigma = (self.sq_error_sum / self.errors as f64).sqrt();
        Z80 * sigma * (h as f64).sqrt()
    }
}

/// The watermark after seeing `max_event_time`.
pub fn watermark(max_event_time: i64, lateness_ms: i64) -> i64 {
    max_event_time - lateness_ms
}

pub fn bucket_start(ts: i64, bucket_ms: i64) -> i64 {
    ts.div_euclid(bucket_ms) * bucket_ms
}

/// Whether an event at `ts` arrives too late: its bucket has closed.
pub fn is_late(ts: i64, current_watermark: i64, bucket_ms: i64) -> bool {
    bucket_start(ts, bucket_ms) + bucket_ms <= current_watermark
}

/// The series an event feeds and the value it adds (count or a latency sample).
fn observation(event: &Event) -> Option<(String, f64)> {
    match event {
        Event::WorkflowStarted(w) => Some((format!("demand:{}", w.client_name), 1.0)),
        Event::AgentCompleted(a) => Some((
            format!("latency:{}", a.agent_id),
            a.processing_time_ms as f64,
        )),
        _ => None,
    }
}

pub struct ForecastHandler {
    pub settings: ForecastSettings,
    /// From [`namespace`].
    pub ns: String,
    pub late_events: prometheus::IntCounter,
}

impl Handler for ForecastHandler {
    fn name(&self) -> &str {
        "forecasts"
    }

    fn inputs(&self) -> Vec<EventType> {
        vec![EventType::WorkflowStarted, EventType::AgentCompleted]
    }

    /// The watermark and the models are read and advanced per event.
    fn reads_own_state(&self) -> bool {
        true
    }

    async fn handle(
        &self,
        event: &Event,
        source: &Source,
        state: &StateReader,
    ) -> Result<Effects, HandlerError> {
        let s = &self.settings;
        let ns = &self.ns;
        let Some((series, value)) = observation(event) else {
            return Ok(Effects::none());
        };
        if source.partitions <= 0 {
            return Err(HandlerError::DependencyDown(
                crate::dependency::Dependency::Kafka,
                format!(
                    "partition count of {} unknown (no topic metadata)",
                    source.topic
                ),
            ));
        }
        let ts = event.envelope().timestamp;
        // One watermark per input stream (demand from workflow.started, latency
        // from agent.completed), each the slowest of its partitions' watermarks.
        let kind = series.split(':').next().unwrap_or("series");
        let max_key = format!("{ns}max:{kind}");
        let version_key = format!("{ns}version:{kind}");
        let open_key = format!("{ns}open:{kind}");
        let mut redis = state.connection();
        // Read first: the guard below then covers everything read after it.
        let version: Option<String> = redis.get(&version_key).await?;
        let mut maxes: HashMap<i32, i64> = redis.hgetall(&max_key).await?;
        maxes.retain(|partition, _| *partition < source.partitions);
        let own = maxes.get(&source.partition).copied();
        // Lateness is judged by the event's own partition: that depends only on
        // the partition's order, never on how partitions interleave.
        if let Some(own) = own
            && is_late(ts, watermark(own, s.lateness_ms), s.bucket_ms)
        {
            self.late_events.inc();
            return Ok(Effects::none());
        }
        let start = bucket_start(ts, s.bucket_ms);
        let bucket_key = format!("{ns}bucket:{series}:{start}");
        let mut effects = Effects::none()
            .op(StateOp::cmd("HINCRBYFLOAT")
                .arg(&bucket_key)
                .arg("sum")
                .arg(value))
            .op(StateOp::cmd("HINCRBY").arg(&bucket_key).arg("count").arg(1))
            .op(StateOp::cmd("ZADD")
                .arg(&open_key)
                .arg(start + s.bucket_ms)
                .arg(format!("{series}|{start}")));
        if own.is_some_and(|own| own >= ts) {
            // The watermark does not move: nothing closes.
            return Ok(effects);
        }
        // The partition's watermark moves. Every such change is applied only on
        // the state it was computed from (a guard), so the buckets closed after
        // each change are exactly those the watermark has passed, whatever the
        // interleaving of partitions or replicas.
        maxes.insert(source.partition, ts);
        effects.push(StateOp::expect(&version_key, version.as_deref()));
        effects.push(StateOp::cmd("INCR").arg(&version_key));
        effects.push(
            StateOp::cmd("HSET")
                .arg(&max_key)
                .arg(source.partition)
                .arg(ts),
        );
        // Until every partition has been seen the stream has no watermark.
        if maxes.len() < source.partitions as usize {
            return Ok(effects);
        }
        let stream_watermark = maxes
            .values()
            .map(|m| watermark(*m, s.lateness_ms))
            .min()
            .unwrap_or(i64::MIN);
        // Close every open bucket the new watermark has passed, oldest first.
        let closing: Vec<String> = redis
            .zrangebyscore(&open_key, "-inf", stream_watermark)
            .await?;
        // A series may close several buckets here: each update starts from the
        // previous one's model, not from what Redis held before this event.
        let mut models: HashMap<String, Holt> = HashMap::new();
        for member in closing {
            let Some((closed_series, closed_start)) = member.rsplit_once('|') else {
                continue;
            };
            let closed_start: i64 = closed_start.parse().unwrap_or(0);
            let key = format!("{ns}bucket:{closed_series}:{closed_start}");
            let (sum, count): (Option<f64>, Option<i64>) = redis::cmd("HMGET")
                .arg(&key)
                .arg(&["sum", "count"])
                .query_async(&mut redis)
                .await?;
            let observed = match (closed_series.starts_with("latency:"), sum, count) {
                (true, Some(sum), Some(c)) if c > 0 => sum / c as f64,
                (false, Some(sum), _) => sum,
                _ => 0.0,
            };
            let model_key = format!("{ns}model:{closed_series}");
            if !models.contains_key(closed_series) {
                let stored: Option<String> = redis.get(&model_key).await?;
                let stored = stored
                    .and_then(|m| serde_json::from_str(&m).ok())
                    .unwrap_or_default();
                models.insert(closed_series.to_owned(), stored);
            }
            let model = models.entry(closed_series.to_owned()).or_default();
            model.update(observed, s.alpha, s.beta);
            let end = closed_start + s.bucket_ms;
            let points = (1..=s.horizon)
                .map(|h| {
                    let value = model.forecast(h);
                    let half = model.half_width(h);
                    ForecastPoint {
                        timestamp: end + (h as i64 - 1) * s.bucket_ms,
                        value,
                        lower: value - half,
                        upper: value + half,
                    }
                })
                .collect();
            let forecast = ForecastGenerated {
                envelope: envelope_at(end),
                forecast_id: format!("{closed_series}@{end}"),
                series: closed_series.to_owned(),
                model: "holt-linear".into(),
                bucket_ms: s.bucket_ms,
                generated_at: end,
                points,
                mae: model.mae(),
            };
            effects.push(StateOp::cmd("SET").arg(&model_key).arg(to_json(&*model)?));
            effects.push(
                StateOp::cmd("SET")
                    .arg(format!("{ns}latest:{closed_series}"))
                    .arg(forecast_json(&forecast, observed)?),
            );
            effects.push(
                StateOp::cmd("SADD")
                    .arg(format!("{ns}series"))
                    .arg(closed_series),
            );
            effects.push(StateOp::cmd("ZREM").arg(&open_key).arg(&member));
            effects.push(StateOp::cmd("DEL").arg(&key));
            effects.emit(Event::ForecastGenerated(forecast));
        }
        Ok(effects)
    }
}

fn forecast_json(f: &ForecastGenerated, last_observed: f64) -> Result<String, HandlerError> {
    to_json(&serde_json::json!({
        "series": f.series,
        "model": f.model,
        "bucket_ms": f.bucket_ms,
        "generated_at": f.generated_at,
        "last_observed": last_observed,
        "mae": f.mae,
        "points": f.points.iter().map(|p| serde_json::json!({"timestamp": p.timestamp, "value": p.value, "lower": p.lower, "upper": p.upper})).collect::<Vec<_>>(),
    }))
}

/// The latest forecast of `series`, as served on `GET /forecasts/{series}`.
pub async fn latest(
    state: &StateReader,
    ns: &str,
    series: &str,
) -> Result<Option<serde_json::Value>, redis::RedisError> {
    let raw: Option<String> = state
        .connection()
        .get(format!("{ns}latest:{series}"))
        .await?;
    Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holt_matches_hand_computed_values() {
        // alpha 0.5, beta 0.3 on 10, 12, 13, 15:
        // after 10: l=10 t=0; after 12: t=2 l=12 (initialisation)
        // after 13: l = .5·13 + .5·(12+2) = 13.5; t = .3·1.5 + .7·2 = 1.85
        // after 15: l = .5·15 + .5·(13.5+1.85) = 15.175; t = .3·1.675 + .7·1.85 = 1.7975
        let mut m = Holt::default();
        for y in [10.0, 12.0, 13.0, 15.0] {
            m.update(y, 0.5, 0.3);
        }
        assert!((m.level - 15.175).abs() < 1e-9, "{}", m.level);
        assert!((m.trend - 1.7975).abs() < 1e-9, "{}", m.trend);
        assert!((m.forecast(2) - (15.175 + 2.0 * 1.7975)).abs() < 1e-9);
        // One-step errors: 12-10=2, 13-14=-1, 15-15.35=-0.35 → MAE = 3.35/3
        assert!((m.mae().expect("mae") - 3.35 / 3.0).abs() < 1e-9);
        let sigma = ((4.0 + 1.0 + 0.1225) / 3.0_f64).sqrt();
        assert!((m.half_width(1) - Z80 * sigma).abs() < 1e-9);
        assert!((m.half_width(4) - 2.0 * Z80 * sigma).abs() < 1e-9);
    }

    #[test]
    fn watermark_and_lateness() {
        let bucket = 300_000;
        let max = 1_000_000;
        let wm = watermark(max, 60_000);
        assert_eq!(wm, 940_000);
        // Bucket [600 000, 900 000) has closed under watermark 940 000; [900 000, …) has not.
        assert!(is_late(899_999, wm, bucket));
        assert!(!is_late(900_000, wm, bucket));
        assert!(!is_late(999_999, wm, bucket));
    }
}
