//! The feedback loop: acceptance and mean rating per (client, category) over
//! tumbling event-time windows; `opal.decision.degraded` when acceptance falls
//! below a threshold with enough samples (once per window); and
//! `opal.user.preferences.updated` excluding a category after K consecutive
//! rejections by a client, which the recommendations consumer then applies.
//!
//! Feedback names a recommendation, not its category: the join goes through
//! `opal.decision.generated`, kept in Redis with a TTL (`opal:fb:decision:<id>`).
//! Feedback whose decision is unknown parks its partition (`NotYet`: paused,
//! rewound, tried again a moment later, no retries spent; the decision may be
//! late) and is dead-lettered as invalid once it is older than the join TTL.

use opal_schemas::events::{DecisionDegraded, Envelope, UserPreferencesUpdated};
use opal_schemas::{Event, EventType};
use redis::AsyncCommands;

use crate::apps::clock::Clock;
use crate::handler::{Effects, Handler, HandlerError, Source, StateOp, StateReader};

/// The Redis namespace of this consumer's state: topic prefix, then `opal:fb:`.
pub fn namespace(topic_prefix: &str) -> String {
    format!("{topic_prefix}opal:fb:")
}

#[derive(Debug, Clone)]
pub struct FeedbackSettings {
    pub window_ms: i64,
    pub threshold: f64,
    pub min_samples: i64,
    pub rejections_to_exclude: i64,
    pub join_ttl_ms: i64,
}

impl Default for FeedbackSettings {
    fn default() -> Self {
        FeedbackSettings {
            window_ms: 3_600_000,
            threshold: 0.3,
            min_samples: 20,
            rejections_to_exclude: 5,
            join_ttl_ms: 3_600_000,
        }
    }
}

/// Start of the tumbling window holding `ts`.
pub fn window_start(ts: i64, window_ms: i64) -> i64 {
    ts.div_euclid(window_ms) * window_ms
}

/// One window's tallies after this feedback is counted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tally {
    pub total: i64,
    pub accepted: i64,
    pub rating_sum: i64,
}

impl Tally {
    pub fn acceptance(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            self.accepted as f64 / self.total as f64
        }
    }

    pub fn mean_rating(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.rating_sum as f64 / self.total as f64
        }
    }
}

/// Whether this window should raise its (one) degraded alert now.
pub fn should_alert(tally: &Tally, settings: &FeedbackSettings, already_alerted: bool) -> bool {
    !already_alerted
        && tally.total >= settings.min_samples
        && tally.acceptance() < settings.threshold
}

/// The rejection streak after this feedback, and whether it just reached K.
pub fn streak_after(previous: i64, accepted: bool, k: i64) -> (i64, bool) {
    if accepted {
        (0, false)
    } else {
        let streak = previous + 1;
        (streak, streak == k)
    }
}

pub struct FeedbackHandler {
    pub settings: FeedbackSettings,
    pub clock: Box<dyn Clock>,
    /// From [`namespace`].
    pub ns: String,
}

impl Handler for FeedbackHandler {
    fn name(&self) -> &str {
        "feedback"
    }

    fn inputs(&self) -> Vec<EventType> {
        vec![EventType::DecisionGenerated, EventType::FeedbackSubmitted]
    }

    /// Alerts and streaks depend on the counts so far.
    fn reads_own_state(&self) -> bool {
        true
    }

    async fn handle(
        &self,
        event: &Event,
        _source: &Source,
        state: &StateReader,
    ) -> Result<Effects, HandlerError> {
        let s = &self.settings;
        let ns = &self.ns;
        match event {
            Event::DecisionGenerated(d) => {
                let key = format!("{ns}decision:{}", d.decision_id);
                let mut effects = Effects::none();
                for r in &d.recommendations {
                    effects.push(
                        StateOp::cmd("HSET")
                            .arg(&key)
                            .arg(&r.recommendation_id)
                            .arg(&r.category),
                    );
                }
                effects.push(StateOp::cmd("PEXPIRE").arg(&key).arg(s.join_ttl_ms));
                Ok(effects)
            }
            Event::FeedbackSubmitted(f) => {
                let mut redis = state.connection();
                let decision_key = format!("{ns}decision:{}", f.decision_id);
                let category: Option<String> =
                    redis.hget(&decision_key, &f.recommendation_id).await?;
                let Some(category) = category else {
                    let age = self.clock.now_ms() - f.envelope.timestamp;
                    return Err(if age > s.join_ttl_ms {
                        HandlerError::Invalid(format!(
                            "decision {} never arrived within the join TTL ({} ms)",
                            f.decision_id, s.join_ttl_ms
                        ))
                    } else {
                        HandlerError::NotYet(format!("decision {} not seen yet", f.decision_id))
                    });
                };
                let start = window_start(f.envelope.timestamp, s.window_ms);
                let window_key = format!("{ns}window:{}:{category}:{start}", f.client_name);
                let (total, accepted, rating_sum, alerted): (
                    Option<i64>,
                    Option<i64>,
                    Option<i64>,
                    Option<i64>,
                ) = redis::cmd("HMGET")
                    .arg(&window_key)
                    .arg(&["total", "accepted", "rating_sum", "alerted"])
                    .query_async(&mut redis)
                    .await?;
                let tally = Tally {
                    total: total.unwrap_or(0) + 1,
                    accepted: accepted.unwrap_or(0) + i64::from(f.accepted),
                    rating_sum: rating_sum.unwrap_or(0) + i64::from(f.rating),
                };
                let mut effects = Effects::none()
                    .op(StateOp::cmd("HINCRBY").arg(&window_key).arg("total").arg(1))
                    .op(StateOp::cmd("HINCRBY")
                        .arg(&window_key)
                        .arg("accepted")
                        .arg(i64::from(f.accepted)))
                    .op(StateOp::cmd("HINCRBY")
                        .arg(&window_key)
                        .arg("rating_sum")
                        .arg(f.rating))
                    .op(StateOp::cmd("PEXPIRE")
                        .arg(&window_key)
                        .arg(s.window_ms * 48))
                    .op(StateOp::cmd("SADD")
                        .arg(format!("{ns}windows"))
                        .arg(&window_key));
                if should_alert(&tally, s, alerted.is_some()) {
                    effects.push(StateOp::cmd("HSET").arg(&window_key).arg("alerted").arg(1));
                    effects.emit(Event::DecisionDegraded(DecisionDegraded {
                        envelope: envelope_at(f.envelope.timestamp),
                        scope: category.clone(),
                        client_name: Some(f.client_name.clone()),
                        metric: "acceptance_rate".into(),
                        observed: tally.acceptance(),
                        threshold: s.threshold,
                        window_start: start,
                        window_end: start + s.window_ms,
                        sample_size: tally.total,
                        reason: format!(
                            "acceptance {:.2} below {:.2} over {} samples (mean rating {:.2})",
                            tally.acceptance(),
                            s.threshold,
                            tally.total,
                            tally.mean_rating()
                        ),
                    }));
                }
                let streak_key = format!("{ns}streak:{}:{category}", f.client_name);
                let previous: Option<i64> = redis.get(&streak_key).await?;
                let (streak, reached) =
                    streak_after(previous.unwrap_or(0), f.accepted, s.rejections_to_exclude);
                effects.push(StateOp::cmd("SET").arg(&streak_key).arg(streak));
                if reached {
                    let excluded_key = format!("{ns}excluded:{}", f.client_name);
                    let mut excluded: Vec<String> = redis.smembers(&excluded_key).await?;
                    if !excluded.contains(&category) {
                        excluded.push(category.clone());
                        excluded.sort();
                        effects.push(StateOp::cmd("SADD").arg(&excluded_key).arg(&category));
                        effects.emit(Event::UserPreferencesUpdated(UserPreferencesUpdated {
                            envelope: envelope_at(f.envelope.timestamp),
                            client_name: f.client_name.clone(),
                            preferred_categories: Vec::new(),
                            excluded_categories: excluded,
                            min_confidence: 0.0,
                        }));
                    }
                }
                Ok(effects)
            }
            _ => Ok(Effects::none()),
        }
    }
}

/// An envelope for an emitted event at event time `ts`; the runtime fills the rest.
pub(crate) fn envelope_at(ts: i64) -> Envelope {
    Envelope {
        event_id: String::new(),
        correlation_id: String::new(),
        schema_version: 1,
        timestamp: ts,
        source_system: String::new(),
        environment: opal_schemas::Environment::Development,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_tumbling_and_aligned() {
        assert_eq!(window_start(3_600_000 * 5 + 17, 3_600_000), 3_600_000 * 5);
        assert_eq!(window_start(3_600_000 * 5, 3_600_000), 3_600_000 * 5);
        assert_eq!(window_start(3_600_000 * 5 - 1, 3_600_000), 3_600_000 * 4);
    }

    #[test]
    fn alerts_need_enough_samples_low_acceptance_and_fire_once() {
        let s = FeedbackSettings::default();
        let low = Tally {
            total: 20,
            accepted: 5,
            rating_sum: 40,
        };
        assert!(should_alert(&low, &s, false));
        assert!(!should_alert(&low, &s, true), "once per window");
        assert!(
            !should_alert(
                &Tally {
                    total: 19,
                    accepted: 0,
                    rating_sum: 19
                },
                &s,
                false
            ),
            "too few samples"
        );
        assert!(
            !should_alert(
                &Tally {
                    total: 20,
                    accepted: 6,
                    rating_sum: 60
                },
                &s,
                false
            ),
            "0.30 is not below 0.30"
        );
        assert!((low.mean_rating() - 2.0).abs() < 1e-12);
    }

    #[test]
    fn k_consecutive_rejections_exclude_once_and_an_acceptance_resets() {
        let mut streak = 0;
        let mut fired = Vec::new();
        for accepted in [false, false, true, false, false, false, false, false, false] {
            let (next, reached) = streak_after(streak, accepted, 5);
            streak = next;
            fired.push(reached);
        }
        assert_eq!(
            fired,
            [false, false, false, false, false, false, false, true, false]
        );
    }
}
