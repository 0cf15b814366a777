//! Recommendations: applies each client's preferences to the latest decision's
//! recommendations and keeps the personalised top-N as a read model.
//!
//! Keys (`opal:reco:`): `raw:<client>` the latest decision's recommendations,
//! `prefs:<client>` the latest preferences, `ranked:<client>` the top-N.

use opal_schemas::{Event, EventType, Recommendation};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use crate::handler::{Effects, Handler, HandlerError, Source, StateOp, StateReader};

/// The Redis namespace of this consumer's state: topic prefix, then `opal:reco:`.
pub fn namespace(topic_prefix: &str) -> String {
    format!("{topic_prefix}opal:reco:")
}
/// Score multiplier for a preferred category.
pub const PREFERRED_BOOST: f64 = 1.5;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Preferences {
    pub preferred_categories: Vec<String>,
    pub excluded_categories: Vec<String>,
    pub min_confidence: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ranked {
    pub recommendation_id: String,
    pub category: String,
    pub text: String,
    pub confidence: f64,
    pub impact_score: f64,
    pub score: f64,
    pub preferred: bool,
}

/// The ranking rules: drop excluded categories and low confidence, score by
/// confidence × impact, boost preferred categories, keep the best `top_n`.
pub fn rank(recommendations: &[Recommendation], prefs: &Preferences, top_n: usize) -> Vec<Ranked> {
    let mut ranked: Vec<Ranked> = recommendations
        .iter()
        .filter(|r| !prefs.excluded_categories.contains(&r.category))
        .filter(|r| r.confidence >= prefs.min_confidence)
        .map(|r| {
            let preferred = prefs.preferred_categories.contains(&r.category);
            let base = r.confidence * r.impact_score.max(0.0);
            Ranked {
                recommendation_id: r.recommendation_id.clone(),
                category: r.category.clone(),
                text: r.text.clone(),
                confidence: r.confidence,
                impact_score: r.impact_score,
                score: if preferred {
                    base * PREFERRED_BOOST
                } else {
                    base
                },
                preferred,
            }
        })
        .collect();
    ranked.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.recommendation_id.cmp(&b.recommendation_id))
    });
    ranked.truncate(top_n);
    ranked
}

/// The read model served on `GET /recommendations/{client}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientRecommendations {
    pub client_name: String,
    pub decision_id: Option<String>,
    pub preferences: Preferences,
    pub recommendations: Vec<Ranked>,
}

pub struct RecommendationsHandler {
    pub top_n: usize,
    /// From [`namespace`].
    pub ns: String,
}

fn key(ns: &str, kind: &str, client: &str) -> String {
    format!("{ns}{kind}:{client}")
}

#[derive(Serialize, Deserialize)]
struct Raw {
    decision_id: String,
    recommendations: Vec<Recommendation>,
}

impl Handler for RecommendationsHandler {
    fn name(&self) -> &str {
        "recommendations"
    }

    fn inputs(&self) -> Vec<EventType> {
        vec![
            EventType::DecisionGenerated,
            EventType::UserPreferencesUpdated,
        ]
    }

    /// A preference update re-ranks what is stored: it reads state (guarded).
    fn reads_own_state(&self) -> bool {
        true
    }

    async fn handle(
        &self,
        event: &Event,
        _source: &Source,
        state: &StateReader,
    ) -> Result<Effects, HandlerError> {
        // A decision and a preference update of one client come on different
        // topics and are handled concurrently: each writes only its own input
        // and ranks with the other's current value, guarded on that value, so
        // the ranked model is always rank(latest decision, latest preferences),
        // whatever order the two topics are read in.
        let (client, own_key, other_key) = match event {
            Event::DecisionGenerated(d) => (&d.client_name, "raw", "prefs"),
            Event::UserPreferencesUpdated(p) => (&p.client_name, "prefs", "raw"),
            _ => return Ok(Effects::none()),
        };
        let (own_key, other_key) = (
            key(&self.ns, own_key, client),
            key(&self.ns, other_key, client),
        );
        let other: Option<String> = state.connection().get(&other_key).await?;
        let (raw, prefs, own_value) = match event {
            Event::DecisionGenerated(d) => {
                let raw = Raw {
                    decision_id: d.decision_id.clone(),
                    recommendations: d.recommendations.clone(),
                };
                let prefs: Preferences = other
                    .as_deref()
                    .and_then(|p| serde_json::from_str(p).ok())
                    .unwrap_or_default();
                let own_value = to_json(&raw)?;
                (Some(raw), prefs, own_value)
            }
            Event::UserPreferencesUpdated(p) => {
                let prefs = Preferences {
                    preferred_categories: p.preferred_categories.clone(),
                    excluded_categories: p.excluded_categories.clone(),
                    min_confidence: p.min_confidence,
                };
                let raw = other
                    .as_deref()
                    .and_then(|r| serde_json::from_str::<Raw>(r).ok());
                let own_value = to_json(&prefs)?;
                (raw, prefs, own_value)
            }
            _ => return Ok(Effects::none()),
        };
        let mut effects = Effects::none()
            .op(StateOp::expect(&other_key, other.as_deref()))
            .op(StateOp::cmd("SET").arg(&own_key).arg(&own_value))
            .op(StateOp::cmd("SADD")
                .arg(format!("{}clients", self.ns))
                .arg(client));
        if let Some(raw) = raw {
            let model = ClientRecommendations {
                client_name: client.clone(),
                decision_id: Some(raw.decision_id.clone()),
                recommendations: rank(&raw.recommendations, &prefs, self.top_n),
                preferences: prefs,
            };
            effects.push(
                StateOp::cmd("SET")
                    .arg(key(&self.ns, "ranked", client))
                    .arg(to_json(&model)?),
            );
        }
        Ok(effects)
    }
}

pub(crate) fn to_json<T: Serialize>(value: &T) -> Result<String, HandlerError> {
    serde_json::to_string(value).map_err(|e| HandlerError::Invalid(e.to_string()))
}

/// The stored read model of `client`, if any.
pub async fn read_model(
    state: &StateReader,
    ns: &str,
    client: &str,
) -> Result<Option<ClientRecommendations>, redis::RedisError> {
    let raw: Option<String> = state.connection().get(key(ns, "ranked", client)).await?;
    Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, category: &str, confidence: f64, impact: f64) -> Recommendation {
        Recommendation {
            recommendation_id: id.into(),
            category: category.into(),
            text: format!("do {id}"),
            confidence,
            impact_score: impact,
        }
    }

    #[test]
    fn excluded_and_low_confidence_are_dropped_preferred_boosted() {
        let recs = vec![
            rec("a", "pricing", 0.9, 1.0),
            rec("b", "support", 0.6, 1.0),
            rec("c", "growth", 0.3, 1.0),
            rec("d", "support", 0.8, 0.5),
        ];
        let prefs = Preferences {
            preferred_categories: vec!["support".into()],
            excluded_categories: vec!["pricing".into()],
            min_confidence: 0.4,
        };
        let ranked = rank(&recs, &prefs, 10);
        let ids: Vec<&str> = ranked
            .iter()
            .map(|r| r.recommendation_id.as_str())
            .collect();
        assert_eq!(
            ids,
            ["b", "d"],
            "pricing excluded, growth below 0.4; b = 0.6·1.5 beats d = 0.4·1.5"
        );
        assert!((ranked[0].score - 0.9).abs() < 1e-12);
        assert!(ranked.iter().all(|r| r.preferred));
    }

    #[test]
    fn without_preferences_it_is_confidence_times_impact_top_n() {
        let recs: Vec<_> = (0..15)
            .map(|i| rec(&format!("r{i:02}"), "x", 0.5 + i as f64 / 100.0, 1.0))
            .collect();
        let ranked = rank(&recs, &Preferences::default(), 10);
        assert_eq!(ranked.len(), 10);
        assert_eq!(ranked[0].recommendation_id, "r14");
        assert!(ranked.windows(2).all(|w| w[0].score >= w[1].score));
    }
}
