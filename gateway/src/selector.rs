//! Which events a route (or a WebSocket client) wants: patterns over event
//! types, patterns to exclude, and a filter over the event's fields. The same
//! shape in the routes file (TOML) and in a WebSocket subscription (JSON):
//! `{"patterns": ["decision.*"], "exclude": ["decision.generated"],
//!   "filter": {"field": "client_name", "eq": "acme"}}`.

use opal_schemas::{Event, EventType};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::filter::Filter;
use crate::pattern::Pattern;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawSelector", into = "RawSelector")]
pub struct Selector {
    patterns: Vec<Pattern>,
    exclude: Vec<Pattern>,
    filter: Option<Filter>,
    /// The event types the patterns leave in: type matching is one lookup.
    types: Vec<EventType>,
}

impl Selector {
    pub fn new(
        patterns: Vec<Pattern>,
        exclude: Vec<Pattern>,
        filter: Option<Filter>,
    ) -> Result<Self, String> {
        if patterns.is_empty() {
            return Err("'patterns' is empty: name at least one ('#' for every event)".to_owned());
        }
        let types: Vec<EventType> = EventType::ALL
            .into_iter()
            .filter(|t| patterns.iter().any(|p| p.matches(*t)))
            .filter(|t| !exclude.iter().any(|p| p.matches(*t)))
            .collect();
        if types.is_empty() {
            return Err("'exclude' leaves no event type".to_owned());
        }
        Ok(Selector {
            patterns,
            exclude,
            filter,
            types,
        })
    }

    /// The event types selected by the patterns (excludes applied), before
    /// the filter: the topics to read.
    pub fn event_types(&self) -> &[EventType] {
        &self.types
    }

    /// Whether events of `event_type` can match at all (no JSON needed).
    pub fn wants_type(&self, event_type: EventType) -> bool {
        self.types.contains(&event_type)
    }

    pub fn has_filter(&self) -> bool {
        self.filter.is_some()
    }

    /// Whether the event matches, given its JSON form ([`crate::event_json`]),
    /// computed once per event and shared by every selector that looks at it.
    pub fn matches(&self, event_type: EventType, json: &Value) -> bool {
        self.wants_type(event_type) && self.filter.as_ref().is_none_or(|f| f.matches(json))
    }

    /// [`Selector::matches`] for an event at hand; builds its JSON only if a
    /// filter needs it.
    pub fn matches_event(&self, event: &Event) -> bool {
        let t = event.event_type();
        self.wants_type(t)
            && self
                .filter
                .as_ref()
                .is_none_or(|f| f.matches(&crate::event_json(event)))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSelector {
    patterns: Vec<Pattern>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    exclude: Vec<Pattern>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    filter: Option<Filter>,
}

impl TryFrom<RawSelector> for Selector {
    type Error = String;
    fn try_from(raw: RawSelector) -> Result<Self, String> {
        Selector::new(raw.patterns, raw.exclude, raw.filter)
    }
}

impl From<Selector> for RawSelector {
    fn from(s: Selector) -> RawSelector {
        RawSelector {
            patterns: s.patterns,
            exclude: s.exclude,
            filter: s.filter,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_schemas::samples::default_example;
    use serde_json::json;

    fn selector(json: Value) -> Selector {
        serde_json::from_value(json).expect("a valid selector")
    }

    #[test]
    fn excludes_win_over_patterns() {
        let s =
            selector(json!({"patterns": ["#"], "exclude": ["decision.*", "forecast.generated"]}));
        assert!(!s.wants_type(EventType::DecisionDegraded));
        assert!(!s.wants_type(EventType::ForecastGenerated));
        assert!(s.wants_type(EventType::WorkflowStarted));
        assert_eq!(s.event_types().len(), EventType::ALL.len() - 3);
    }

    #[test]
    fn the_filter_applies_after_the_type() {
        let event = default_example(EventType::DecisionGenerated);
        let client = event.to_json()["client_name"].clone();
        let s = selector(
            json!({"patterns": ["decision.*"], "filter": {"field": "client_name", "eq": client}}),
        );
        assert!(s.matches_event(&event));
        let other = selector(
            json!({"patterns": ["decision.*"], "filter": {"field": "client_name", "eq": "nobody"}}),
        );
        assert!(!other.matches_event(&event));
        let wrong_type = selector(json!({"patterns": ["workflow.*"]}));
        assert!(!wrong_type.matches_event(&event));
    }

    #[test]
    fn empty_or_emptied_selections_are_refused() {
        let none =
            serde_json::from_value::<Selector>(json!({"patterns": []})).expect_err("refused");
        assert!(none.to_string().contains("'patterns' is empty"), "{none}");
        let all_out = serde_json::from_value::<Selector>(
            json!({"patterns": ["decision.*"], "exclude": ["#"]}),
        )
        .expect_err("refused");
        assert!(
            all_out.to_string().contains("leaves no event type"),
            "{all_out}"
        );
    }
}
