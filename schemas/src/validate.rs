//! Business rules an event must satisfy beyond its schema's types.
//!
//! Producers refuse an invalid event before it reaches Kafka; consumers send
//! one that arrives anyway to the DLQ as *invalid*.

use std::fmt::Display;

use crate::catalog::Event;
use crate::events::Envelope;

/// The first rule an event breaks, naming the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("field '{field}': {reason}")]
pub struct ValidationError {
    pub field: String,
    pub reason: String,
}

/// Field names are `impl Display` so that a computed one
/// (`format_args!("recommendations[{i}].category")`) is formatted only when
/// the rule fails, not on every valid event.
fn fail(field: impl Display, reason: impl Into<String>) -> Result<(), ValidationError> {
    Err(ValidationError {
        field: field.to_string(),
        reason: reason.into(),
    })
}

fn non_empty(field: impl Display, value: &str) -> Result<(), ValidationError> {
    // Stops at the first character that is not whitespace; `trim` would
    // scan from both ends (~50 instructions per field, four per publish).
    if value.chars().all(char::is_whitespace) {
        fail(field, "must not be empty")
    } else {
        Ok(())
    }
}

fn unit_interval(field: impl Display, value: f64) -> Result<(), ValidationError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        fail(field, format!("{value} is outside 0..1"))
    }
}

fn non_negative(field: impl Display, value: i64) -> Result<(), ValidationError> {
    if value >= 0 {
        Ok(())
    } else {
        fail(field, format!("{value} is negative"))
    }
}

fn envelope(e: &Envelope) -> Result<(), ValidationError> {
    if uuid::Uuid::parse_str(&e.event_id).is_err() {
        return fail("event_id", format!("'{}' is not a UUID", e.event_id));
    }
    non_empty("correlation_id", &e.correlation_id)?;
    non_empty("source_system", &e.source_system)?;
    if e.schema_version < 1 {
        return fail("schema_version", "must be at least 1");
    }
    non_negative("timestamp", e.timestamp)
}

/// Checks every rule of `event`.
pub fn validate(event: &Event) -> Result<(), ValidationError> {
    envelope(event.envelope())?;
    match event {
        Event::WorkflowStarted(e) => {
            non_empty("workflow_id", &e.workflow_id)?;
            non_empty("client_name", &e.client_name)?;
            if let Some(ms) = e.estimated_duration_ms {
                non_negative("estimated_duration_ms", ms)?;
            }
        }
        Event::AgentCompleted(e) => {
            non_empty("workflow_id", &e.workflow_id)?;
            non_empty("agent_id", &e.agent_id)?;
            non_negative("offset", e.offset.into())?;
            non_negative("processing_time_ms", e.processing_time_ms)?;
            unit_interval("agent_data.confidence_score", e.agent_data.confidence_score)?;
        }
        Event::WorkflowCompleted(e) => {
            non_empty("workflow_id", &e.workflow_id)?;
            non_negative("total_duration_ms", e.total_duration_ms)?;
            non_negative("agents_failed", e.agents_failed.into())?;
            if e.agents_failed > e.agents_total {
                return fail("agents_failed", "exceeds agents_total");
            }
        }
        Event::DecisionGenerated(e) => {
            non_empty("decision_id", &e.decision_id)?;
            non_empty("client_name", &e.client_name)?;
            for (i, r) in e.recommendations.iter().enumerate() {
                non_empty(format_args!("recommendations[{i}].category"), &r.category)?;
                unit_interval(
                    format_args!("recommendations[{i}].confidence"),
                    r.confidence,
                )?;
            }
        }
        Event::KnowledgeUpserted(e) => non_empty("knowledge_id", &e.knowledge_id)?,
        Event::DecisionDegraded(e) => {
            non_empty("scope", &e.scope)?;
            non_negative("sample_size", e.sample_size)?;
            if e.window_start > e.window_end {
                return fail("window_start", "is after window_end");
            }
        }
        Event::UserPreferencesUpdated(e) => {
            non_empty("client_name", &e.client_name)?;
            unit_interval("min_confidence", e.min_confidence)?;
        }
        Event::FeedbackSubmitted(e) => {
            non_empty("client_name", &e.client_name)?;
            non_empty("decision_id", &e.decision_id)?;
            if !(1..=5).contains(&e.rating) {
                return fail("rating", format!("{} is outside 1..5", e.rating));
            }
        }
        Event::ForecastGenerated(e) => {
            non_empty("series", &e.series)?;
            if e.bucket_ms <= 0 {
                return fail("bucket_ms", "must be positive");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::EventType;
    use crate::samples::default_example;

    #[test]
    fn every_example_is_valid() {
        for t in EventType::ALL {
            assert_eq!(validate(&default_example(t)), Ok(()), "{t}");
        }
    }

    #[test]
    fn broken_rules_name_the_field() {
        let mut event = default_example(EventType::FeedbackSubmitted);
        if let Event::FeedbackSubmitted(e) = &mut event {
            e.rating = 9;
        }
        assert_eq!(validate(&event).expect_err("invalid").field, "rating");
        let mut event = default_example(EventType::AgentCompleted);
        event.envelope_mut().event_id = "not-a-uuid".into();
        assert_eq!(validate(&event).expect_err("invalid").field, "event_id");
        let mut event = default_example(EventType::DecisionGenerated);
        if let Event::DecisionGenerated(e) = &mut event {
            e.recommendations[1].confidence = 1.5;
        }
        assert_eq!(
            validate(&event).expect_err("invalid").field,
            "recommendations[1].confidence"
        );
    }

    #[test]
    fn blank_is_empty_and_padding_is_not() {
        let with_category = |category: &str| {
            let mut event = default_example(EventType::DecisionGenerated);
            if let Event::DecisionGenerated(e) = &mut event {
                e.recommendations[0].category = category.to_owned();
            }
            validate(&event)
        };
        for blank in ["", " ", "\t\n", "\u{3000}"] {
            let error = with_category(blank).expect_err("blank");
            assert_eq!(
                (error.field.as_str(), error.reason.as_str()),
                ("recommendations[0].category", "must not be empty"),
                "{blank:?}"
            );
        }
        assert_eq!(with_category(" pricing "), Ok(()));
    }
}
