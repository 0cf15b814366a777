//! The decode fast path: an Avro body written with our current schema, read
//! straight into the typed event by the readers of `layout`.
//!
//! apache-avro builds a generic `Value` tree (a `String` per field name, a
//! `Vec` per record) and resolves its schema's names on every read, about
//! 35 000 instructions per `agent.completed`. This path only serves writer
//! schemas whose canonical form is our reader schema's: an older writer
//! schema needs Avro's resolution rules (defaults, promotions, enum
//! symbols), which stay on apache-avro.

use crate::catalog::{Event, EventType};

/// Reads one body of `event_type` written with our current schema (the whole
/// body: left-over bytes are an error); `Err` says what is wrong.
pub(crate) fn read_body(event_type: EventType, body: &[u8]) -> Result<Event, String> {
    crate::layout::read_event(event_type, body).map_err(|e| e.to_string())
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
            let example = default_example(event_type);
            for event in [flipped(&example), example] {
                let bytes = encode_with_id(&event, 1);
                let (_, body) = split_wire_format(&bytes).expect("header");
                let read = read_body(event_type, body).expect("decodes");
                assert_eq!(read, apache_avro(event_type, body), "{event_type}");
                assert_eq!(read, event, "{event_type}");
            }
        }
    }

    #[test]
    fn a_truncated_or_padded_body_is_an_error() {
        let event_type = EventType::AgentCompleted;
        let bytes = encode_with_id(&default_example(event_type), 1);
        let (_, body) = split_wire_format(&bytes).expect("header");
        assert!(read_body(event_type, &body[..body.len() - 3]).is_err());
        let mut padded = body.to_vec();
        padded.push(0);
        let error = read_body(event_type, &padded).expect_err("left-over byte");
        assert!(error.contains("1 byte(s) left over"), "{error}");
    }
}
