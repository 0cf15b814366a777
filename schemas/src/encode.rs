//! The encode path: typed event → Avro body, by the writers of `layout`.
//!
//! apache-avro's schema-aware serializer turns every field name of our
//! flattened events into an owned `String` and hashes it (about 14 000
//! instructions per `agent.completed`); serde_avro_fast still matches every
//! field, enum symbol and union branch by name (about 5 000). The writers
//! follow each record's field list and write the bytes directly. The bytes
//! are the same as apache-avro's (a test compares them for every event type).

use crate::catalog::Event;

/// Appends `event`'s Avro body (written with our current schema) to `out`.
pub fn write_body(event: &Event, out: &mut Vec<u8>) {
    crate::layout::write_event(event, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::EventType;
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
                write_body(&event, &mut ours);
                assert_eq!(ours, apache_avro_body(&event), "{event_type:?}");
            }
        }
    }
}
