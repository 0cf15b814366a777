//! The layout of every record in `avro/*.avsc`: its fields in schema order,
//! for the binary readers and writers of `binary`. The event types list the
//! envelope's fields first, as every schema does.

use crate::binary::{AvroBinary, ReadError, Reader, avro_enum, avro_record};
use crate::catalog::{Event, EventType};
use crate::events::*;

avro_enum! {
    Environment [Development, Staging, Production]
    ExecutionStatus [Success, Failure, Timeout, Skipped]
    WorkflowStatus [Success, Failure, Cancelled]
}

avro_record! {
    AgentData { recommendations, confidence_score }
    Recommendation { recommendation_id, category, text, confidence, impact_score }
    ForecastPoint { timestamp, value, lower, upper }
}

/// Each event type: the envelope's fields inline, then its own.
macro_rules! event_layouts {
    ($( $ty:ident { $( $field:ident ),* $(,)? } )*) => {
        $(
            impl AvroBinary for $ty {
                fn write(&self, out: &mut Vec<u8>) {
                    let $ty {
                        envelope: Envelope {
                            event_id,
                            correlation_id,
                            schema_version,
                            timestamp,
                            source_system,
                            environment,
                        },
                        $( $field ),*
                    } = self;
                    event_id.write(out);
                    correlation_id.write(out);
                    schema_version.write(out);
                    timestamp.write(out);
                    source_system.write(out);
                    environment.write(out);
                    $( $field.write(out); )*
                }
                fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
                    Ok($ty {
                        envelope: Envelope {
                            event_id: AvroBinary::read(r)?,
                            correlation_id: AvroBinary::read(r)?,
                            schema_version: AvroBinary::read(r)?,
                            timestamp: AvroBinary::read(r)?,
                            source_system: AvroBinary::read(r)?,
                            environment: AvroBinary::read(r)?,
                        },
                        $( $field: AvroBinary::read(r)? ),*
                    })
                }
            }
        )*

        /// Appends `event`'s body.
        pub(crate) fn write_event(event: &Event, out: &mut Vec<u8>) {
            match event {
                $( Event::$ty(e) => e.write(out), )*
            }
        }

        /// Reads one body of `event_type` (the whole body: left-over bytes are an error).
        pub(crate) fn read_event(event_type: EventType, body: &[u8]) -> Result<Event, ReadError> {
            let mut r = Reader::new(body);
            let event = match event_type {
                $( EventType::$ty => Event::$ty($ty::read(&mut r)?), )*
            };
            match r.remaining() {
                0 => Ok(event),
                left => Err(ReadError::left_over(left)),
            }
        }
    };
}

event_layouts! {
    WorkflowStarted {
        workflow_id, session_id, client_name, workflow_name, preferences, estimated_duration_ms,
    }
    AgentCompleted {
        workflow_id, agent_id, offset, execution_status, processing_time_ms, agent_data, error,
        model_version,
    }
    WorkflowCompleted {
        workflow_id, client_name, status, total_duration_ms, agents_total, agents_failed,
    }
    DecisionGenerated { decision_id, workflow_id, client_name, model_version, recommendations }
    KnowledgeUpserted { knowledge_id, client_name, kind, content_hash, tags }
    DecisionDegraded {
        scope, client_name, metric, observed, threshold, window_start, window_end, sample_size,
        reason,
    }
    UserPreferencesUpdated { client_name, preferred_categories, excluded_categories, min_confidence }
    FeedbackSubmitted {
        feedback_id, decision_id, recommendation_id, client_name, rating, accepted, comment,
    }
    ForecastGenerated { forecast_id, series, model, bucket_ms, generated_at, points, mae }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The symbols of the enum named `name` in `event_type`'s schema.
    fn symbols(event_type: EventType, name: &str) -> Vec<String> {
        fn find(node: &serde_json::Value, name: &str) -> Option<Vec<String>> {
            match node {
                serde_json::Value::Object(o)
                    if o.get("name").and_then(|n| n.as_str()) == Some(name) =>
                {
                    serde_json::from_value(o.get("symbols")?.clone()).ok()
                }
                serde_json::Value::Object(o) => o.values().find_map(|v| find(v, name)),
                serde_json::Value::Array(a) => a.iter().find_map(|v| find(v, name)),
                _ => None,
            }
        }
        let schema: serde_json::Value =
            serde_json::from_str(event_type.schema_json()).expect("json");
        find(&schema, name).unwrap_or_else(|| panic!("{name} in {event_type}"))
    }

    fn names<T: serde::Serialize>(variants: &[T]) -> Vec<String> {
        variants
            .iter()
            .map(|v| {
                serde_json::to_value(v)
                    .expect("name")
                    .as_str()
                    .expect("str")
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn enum_variants_are_in_schema_symbol_order() {
        for event_type in EventType::ALL {
            assert_eq!(
                names(Environment::SYMBOL_ORDER),
                symbols(event_type, "Environment")
            );
        }
        assert_eq!(
            names(ExecutionStatus::SYMBOL_ORDER),
            symbols(EventType::AgentCompleted, "ExecutionStatus")
        );
        assert_eq!(
            names(WorkflowStatus::SYMBOL_ORDER),
            symbols(EventType::WorkflowCompleted, "WorkflowStatus")
        );
    }

    #[test]
    fn every_enum_variant_reads_back() {
        let mut out = Vec::new();
        for v in ExecutionStatus::SYMBOL_ORDER {
            v.write(&mut out);
        }
        let mut r = Reader::new(&out);
        for v in ExecutionStatus::SYMBOL_ORDER {
            assert_eq!(ExecutionStatus::read(&mut r).expect("reads"), *v);
        }
        let past = ExecutionStatus::read(&mut Reader::new(&[8])).expect_err("index 4");
        assert!(
            past.to_string().contains("ExecutionStatus index 4"),
            "{past}"
        );
    }
}
