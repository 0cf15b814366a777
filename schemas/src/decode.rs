//! The decode fast path: an Avro body written with our current schema, read
//! straight into the typed event with `serde_avro_fast`.
//!
//! apache-avro builds a generic `Value` tree (a `String` per field name, a
//! `Vec` per record) and resolves its schema's names on every read, about
//! 35 000 instructions per `agent.completed`; this reads the fields in schema
//! order into the struct. It only serves writer schemas whose canonical form
//! is our reader schema's: an older writer schema needs Avro's resolution
//! rules (defaults, promotions, enum symbols), which stay on apache-avro.
//!
//! The typed events flatten their envelope (`#[serde(flatten)]`), which makes
//! serde buffer every field of the record before building the struct; the
//! flat mirrors below read the record's fields directly and move them into
//! the typed event (a struct literal, so a field added to an event and not
//! here fails to compile).

use std::io::BufRead;

use serde::de::DeserializeOwned;
use serde_avro_fast::Schema;
use serde_avro_fast::de::DeserializerState;
use serde_avro_fast::de::read::SliceRead;

use crate::catalog::{Event, EventType};
use crate::events::*;

/// For each event type, a struct with the envelope's fields inline, read by
/// serde as the record it is, and its conversion into the typed event.
macro_rules! flat_mirrors {
    ($( $ty:ident { $( $field:ident : $fty:ty ),* $(,)? } )*) => {
        mod flat {
            use std::collections::BTreeMap;

            use serde::Deserialize;

            use crate::events::*;

            $(
                #[derive(Deserialize)]
                pub(super) struct $ty {
                    pub event_id: String,
                    pub correlation_id: String,
                    pub schema_version: i32,
                    pub timestamp: i64,
                    pub source_system: String,
                    pub environment: Environment,
                    $( pub $field: $fty, )*
                }
            )*
        }

        $(
            impl From<flat::$ty> for $ty {
                fn from(f: flat::$ty) -> Self {
                    $ty {
                        envelope: Envelope {
                            event_id: f.event_id,
                            correlation_id: f.correlation_id,
                            schema_version: f.schema_version,
                            timestamp: f.timestamp,
                            source_system: f.source_system,
                            environment: f.environment,
                        },
                        $( $field: f.$field, )*
                    }
                }
            }
        )*

        /// Reads one body of `event_type` through its flat mirror.
        fn read_event(reader: &FastReader, event_type: EventType, body: &[u8]) -> Result<Event, String> {
            Ok(match event_type {
                $( EventType::$ty => Event::$ty(reader.read::<flat::$ty>(body)?.into()), )*
            })
        }
    };
}

flat_mirrors! {
    WorkflowStarted {
        workflow_id: String,
        session_id: String,
        client_name: String,
        workflow_name: String,
        preferences: BTreeMap<String, String>,
        estimated_duration_ms: Option<i64>,
    }
    AgentCompleted {
        workflow_id: String,
        agent_id: String,
        offset: i32,
        execution_status: ExecutionStatus,
        processing_time_ms: i64,
        agent_data: AgentData,
        error: Option<String>,
        model_version: Option<String>,
    }
    WorkflowCompleted {
        workflow_id: String,
        client_name: String,
        status: WorkflowStatus,
        total_duration_ms: i64,
        agents_total: i32,
        agents_failed: i32,
    }
    DecisionGenerated {
        decision_id: String,
        workflow_id: String,
        client_name: String,
        model_version: String,
        recommendations: Vec<Recommendation>,
    }
    KnowledgeUpserted {
        knowledge_id: String,
        client_name: String,
        kind: String,
        content_hash: String,
        tags: Vec<String>,
    }
    DecisionDegraded {
        scope: String,
        client_name: Option<String>,
        metric: String,
        observed: f64,
        threshold: f64,
        window_start: i64,
        window_end: i64,
        sample_size: i64,
        reason: String,
    }
    UserPreferencesUpdated {
        client_name: String,
        preferred_categories: Vec<String>,
        excluded_categories: Vec<String>,
        min_confidence: f64,
    }
    FeedbackSubmitted {
        feedback_id: String,
        decision_id: String,
        recommendation_id: String,
        client_name: String,
        rating: i32,
        accepted: bool,
        comment: Option<String>,
    }
    ForecastGenerated {
        forecast_id: String,
        series: String,
        model: String,
        bucket_ms: i64,
        generated_at: i64,
        points: Vec<ForecastPoint>,
        mae: Option<f64>,
    }
}

/// A writer schema equal to our reader schema, parsed for serde_avro_fast.
#[derive(Debug)]
pub(crate) struct FastReader {
    schema: Schema,
}

impl FastReader {
    /// Parses the writer schema's text; `Err` names why it cannot be used.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        text.parse()
            .map(|schema| FastReader { schema })
            .map_err(|e| e.to_string())
    }

    /// Reads one body of `event_type` (the whole body: left-over bytes are an error).
    pub(crate) fn decode(&self, event_type: EventType, body: &[u8]) -> Result<Event, String> {
        read_event(self, event_type, body)
    }

    fn read<T: DeserializeOwned>(&self, body: &[u8]) -> Result<T, String> {
        let mut state = DeserializerState::from_slice(body, &self.schema);
        let value = T::deserialize(state.deserializer()).map_err(|e| e.to_string())?;
        let mut rest: SliceRead<'_> = state.into_reader();
        let left = rest.fill_buf().map(<[u8]>::len).unwrap_or_default();
        if left > 0 {
            return Err(format!("{left} byte(s) left over after the record"));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use apache_avro::reader::datum::GenericDatumReader;

    use super::*;
    use crate::codec::{encode_with_id, reader_schema, split_wire_format};
    use crate::samples::default_example;

    /// The example with every optional field flipped (Some <-> None), so both union branches are read.
    fn flipped(event: &Event) -> Event {
        let mut json = event.to_json();
        if let Some(fields) = json.as_object_mut() {
            for (name, value) in fields.iter_mut() {
                let optional = matches!(
                    (event.event_type(), name.as_str()),
                    (EventType::AgentCompleted, "error" | "model_version")
                        | (EventType::WorkflowStarted, "estimated_duration_ms")
                        | (EventType::DecisionDegraded, "client_name")
                        | (EventType::FeedbackSubmitted, "comment")
                        | (EventType::ForecastGenerated, "mae")
                );
                if optional {
                    *value = match value {
                        serde_json::Value::Null if name == "estimated_duration_ms" => 5.into(),
                        serde_json::Value::Null if name == "mae" => 0.5.into(),
                        serde_json::Value::Null => "set".into(),
                        _ => serde_json::Value::Null,
                    };
                }
            }
        }
        Event::from_json(event.event_type(), json).expect("flipped example")
    }

    /// What apache-avro's generic path reads from `body` (the reference).
    fn apache_avro(event_type: EventType, body: &[u8]) -> Event {
        let mut cursor = body;
        let value = GenericDatumReader::builder(reader_schema(event_type))
            .build()
            .and_then(|r| r.read_value(&mut cursor))
            .expect("apache-avro reads");
        assert!(cursor.is_empty());
        Event::from_avro(event_type, &value).expect("from value")
    }

    #[test]
    fn reads_every_event_type_as_apache_avro_does() {
        for event_type in EventType::ALL {
            let fast = FastReader::parse(event_type.schema_json()).expect("parses");
            let example = default_example(event_type);
            for event in [flipped(&example), example] {
                let bytes = encode_with_id(&event, 1).expect("encodes");
                let (_, body) = split_wire_format(&bytes).expect("header");
                let read = fast.decode(event_type, body).expect("decodes");
                assert_eq!(read, apache_avro(event_type, body), "{event_type}");
                assert_eq!(read, event, "{event_type}");
            }
        }
    }

    #[test]
    fn a_truncated_or_padded_body_is_an_error() {
        let event_type = EventType::AgentCompleted;
        let fast = FastReader::parse(event_type.schema_json()).expect("parses");
        let bytes = encode_with_id(&default_example(event_type), 1).expect("encodes");
        let (_, body) = split_wire_format(&bytes).expect("header");
        assert!(fast.decode(event_type, &body[..body.len() - 3]).is_err());
        let mut padded = body.to_vec();
        padded.push(0);
        let error = fast
            .decode(event_type, &padded)
            .expect_err("left-over byte");
        assert!(error.contains("1 byte(s) left over"), "{error}");
    }
}
