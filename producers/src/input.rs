//! JSON input for `opal-producer publish`: one object, or JSON lines. Envelope
//! fields may be left out (the publisher fills them); anything else that does
//! not fit the event's type is an error naming the record and the field.

use std::collections::BTreeSet;

use opal_schemas::{Event, EventType, validate};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("record {record} (line {line}): {message}")]
pub struct InputError {
    /// 1-based position of the record in the input.
    pub record: usize,
    pub line: usize,
    pub message: String,
}

/// Envelope fields a caller may omit, with the placeholder the publisher replaces.
fn envelope_defaults() -> [(&'static str, Value); 6] {
    [
        ("event_id", Value::from("")),
        ("correlation_id", Value::from("")),
        ("schema_version", Value::from(1)),
        ("timestamp", Value::from(0)),
        ("source_system", Value::from("")),
        ("environment", Value::from("development")),
    ]
}

/// Top-level field names the event's schema has.
fn known_fields(event_type: EventType) -> BTreeSet<String> {
    let schema: Value = serde_json::from_str(event_type.schema_json()).unwrap_or_default();
    schema["fields"]
        .as_array()
        .map(|fields| {
            fields
                .iter()
                .filter_map(|f| f["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Parses every record of `text` as `event_type`. All or nothing: the first bad
/// record fails the whole input.
pub fn parse_events(event_type: EventType, text: &str) -> Result<Vec<Event>, InputError> {
    let known = known_fields(event_type);
    let mut events = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    loop {
        let offset = stream.byte_offset();
        let rest = &text[offset..];
        let start = offset + (rest.len() - rest.trim_start().len());
        let line = text[..start].matches('\n').count() + 1;
        let record = events.len() + 1;
        let fail = |message: String| InputError {
            record,
            line,
            message,
        };
        let value = match stream.next() {
            None => break,
            Some(Ok(value)) => value,
            Some(Err(e)) => return Err(fail(format!("not valid JSON: {e}"))),
        };
        let Value::Object(mut object) = value else {
            return Err(fail("expected a JSON object".to_owned()));
        };
        if let Some(unknown) = object.keys().find(|k| !known.contains(*k)) {
            return Err(fail(format!(
                "field '{unknown}': not a field of {event_type}"
            )));
        }
        fill_defaults(&mut object);
        let event =
            Event::from_json(event_type, Value::Object(object)).map_err(|e| fail(e.to_string()))?;
        let mut checked = event.clone();
        // Validate as the publisher will see it: placeholders replaced.
        let envelope = checked.envelope_mut();
        if envelope.event_id.is_empty() {
            envelope.event_id = uuid::Uuid::nil().to_string();
        }
        for placeholder in [&mut envelope.correlation_id, &mut envelope.source_system] {
            if placeholder.is_empty() {
                *placeholder = "-".to_owned();
            }
        }
        validate(&checked).map_err(|e| fail(e.to_string()))?;
        events.push(event);
    }
    if events.is_empty() {
        return Err(InputError {
            record: 0,
            line: 1,
            message: "no JSON object in the input".to_owned(),
        });
    }
    Ok(events)
}

fn fill_defaults(object: &mut Map<String, Value>) {
    for (key, value) in envelope_defaults() {
        object.entry(key).or_insert(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_schemas::samples::default_example;

    fn example_json(event_type: EventType) -> Value {
        default_example(event_type).to_json()
    }

    #[test]
    fn a_single_object_and_json_lines_both_parse() {
        let one = example_json(EventType::FeedbackSubmitted).to_string();
        assert_eq!(
            parse_events(EventType::FeedbackSubmitted, &one)
                .expect("one")
                .len(),
            1
        );
        let lines = format!("{one}\n{one}\n\n{one}\n");
        assert_eq!(
            parse_events(EventType::FeedbackSubmitted, &lines)
                .expect("lines")
                .len(),
            3
        );
    }

    #[test]
    fn envelope_fields_may_be_left_out() {
        let mut json = example_json(EventType::WorkflowStarted);
        for key in opal_schemas::events::ENVELOPE_FIELDS {
            json.as_object_mut().expect("object").remove(key);
        }
        let events = parse_events(EventType::WorkflowStarted, &json.to_string()).expect("parses");
        assert_eq!(
            events[0].envelope().event_id,
            "",
            "left for the publisher to fill"
        );
    }

    #[test]
    fn errors_name_the_record_and_the_field() {
        let good = example_json(EventType::AgentCompleted).to_string();
        let mut bad = example_json(EventType::AgentCompleted);
        bad["agent_data"]["confidence_score"] = Value::from("high");
        let input = format!("{good}\n{bad}\n");
        let err = parse_events(EventType::AgentCompleted, &input).expect_err("bad type");
        assert_eq!((err.record, err.line), (2, 2));
        assert!(err.message.contains("agent_data.confidence_score"), "{err}");

        let mut missing = example_json(EventType::AgentCompleted);
        missing.as_object_mut().expect("object").remove("agent_id");
        let err =
            parse_events(EventType::AgentCompleted, &missing.to_string()).expect_err("missing");
        assert!(err.message.contains("agent_id"), "{err}");

        let mut typo = example_json(EventType::FeedbackSubmitted);
        typo["coment"] = Value::from("x");
        let err =
            parse_events(EventType::FeedbackSubmitted, &typo.to_string()).expect_err("unknown");
        assert!(err.message.contains("'coment'"), "{err}");

        let mut invalid = example_json(EventType::FeedbackSubmitted);
        invalid["rating"] = Value::from(9);
        let err =
            parse_events(EventType::FeedbackSubmitted, &invalid.to_string()).expect_err("rule");
        assert!(err.message.contains("'rating'"), "{err}");

        let err = parse_events(EventType::FeedbackSubmitted, "{\"rating\": ").expect_err("json");
        assert!(err.message.contains("not valid JSON"), "{err}");
    }
}
