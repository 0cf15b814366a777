//! The encode path: typed event → Avro body, with `serde_avro_fast`.
//!
//! apache-avro's schema-aware serializer turns every field name of our
//! flattened events into an owned `String` and hashes it (about 14 000
//! instructions per `agent.completed`); serde_avro_fast reads the fields in
//! schema order without allocating. The bytes are the same as apache-avro's
//! (a test compares them for every event type); decoding stays on apache-avro.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Serialize;
use serde_avro_fast::Schema;
use serde_avro_fast::ser::SerializerConfig;

use crate::catalog::{Event, EventType};

/// Our bundled schema of each event type, parsed once for serde_avro_fast.
fn schema(event_type: EventType) -> &'static Schema {
    static SCHEMAS: OnceLock<HashMap<EventType, Schema>> = OnceLock::new();
    let schemas = SCHEMAS.get_or_init(|| {
        EventType::ALL
            .into_iter()
            .map(|t| {
                // The .avsc files are compiled in and checked by tests; failing here is a build defect.
                #[allow(clippy::expect_used)]
                let schema = t.schema_json().parse().expect("bundled schema parses");
                (t, schema)
            })
            .collect()
    });
    &schemas[&event_type]
}

/// The typed event inside `Event`, serialised as its own record.
struct Body<'a>(&'a Event);

impl Serialize for Body<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Event::WorkflowStarted(e) => e.serialize(serializer),
            Event::AgentCompleted(e) => e.serialize(serializer),
            Event::WorkflowCompleted(e) => e.serialize(serializer),
            Event::DecisionGenerated(e) => e.serialize(serializer),
            Event::KnowledgeUpserted(e) => e.serialize(serializer),
            Event::DecisionDegraded(e) => e.serialize(serializer),
            Event::UserPreferencesUpdated(e) => e.serialize(serializer),
            Event::FeedbackSubmitted(e) => e.serialize(serializer),
            Event::ForecastGenerated(e) => e.serialize(serializer),
        }
    }
}

/// Appends `event`'s Avro body (written with our current schema) to `out`.
/// On error `out` may hold part of a body: callers truncate it.
pub fn write_body(event: &Event, out: &mut Vec<u8>) -> Result<(), serde_avro_fast::ser::SerError> {
    let mut config = SerializerConfig::new(schema(event.event_type()));
    serde_avro_fast::to_datum(&Body(event), out, &mut config).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::reader_schema;
    use crate::samples::{default_example, example, example_envelope};
    use apache_avro::writer::datum::GenericDatumWriter;

    fn apache_avro_body(event: &Event) -> Vec<u8> {
        let writer = GenericDatumWriter::builder(reader_schema(event.event_type()))
            .build()
            .expect("writer");
        let mut out = Vec::new();
        event
            .write_avro(&writer, &mut out)
            .expect("apache-avro writes");
        out
    }

    #[test]
    fn bodies_are_byte_identical_to_apache_avro_for_every_event_type() {
        for event_type in EventType::ALL {
            let mut events = vec![
                default_example(event_type),
                example(event_type, example_envelope(1)),
            ];
            // Empty collections, absent optionals and odd strings take other branches.
            let mut sparse = default_example(event_type);
            sparse.envelope_mut().source_system = "é\u{0}".repeat(70);
            sparse.key_mut().clear();
            if let Event::AgentCompleted(e) = &mut sparse {
                e.error = Some("timed out".to_owned());
                e.model_version = None;
                e.processing_time_ms = -1;
                e.offset = i32::MIN;
                e.agent_data.recommendations.clear();
            }
            events.push(sparse);
            for event in events {
                let mut ours = Vec::new();
                write_body(&event, &mut ours).expect("serde_avro_fast writes");
                assert_eq!(ours, apache_avro_body(&event), "{event_type:?}");
            }
        }
    }
}
