//! (d) `opal-producer publish`'s input handling: parse_events (JSON object or
//! JSON lines, unknown fields, the event's types, business rules), then what
//! the publisher does before Kafka (fill the envelope, validate, encode).
//! Input: one byte choosing the event type, then the text.
//!
//! Beyond "no panic": an event parse_events accepts must pass the publisher's
//! validation once filled, encode, and decode back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opal_producers::input::parse_events;
use opal_schemas::codec::{WriterSchema, encode_with_id, split_wire_format};
use opal_schemas::events::Environment;
use opal_schemas::samples::current_version;
use opal_schemas::{EventType, validate};

fuzz_target!(|bytes: &[u8]| {
    let Some((selector, text)) = bytes.split_first() else {
        return;
    };
    // publish reads the input with read_to_string: not UTF-8 is refused there.
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let event_type = EventType::ALL[usize::from(*selector) % EventType::ALL.len()];
    let Ok(events) = parse_events(event_type, text) else {
        return;
    };
    let reader = WriterSchema::parse(1, event_type.schema_json()).expect("our schema");
    for mut event in events {
        // Publisher::fill_envelope with fixed values (it needs a Kafka client).
        let envelope = event.envelope_mut();
        for (field, value) in [
            (
                &mut envelope.event_id,
                "3b241101-e2bb-4255-8caf-4136c566a962",
            ),
            (&mut envelope.correlation_id, "fuzz-correlation"),
            (&mut envelope.source_system, "fuzz"),
        ] {
            if field.is_empty() {
                *field = value.to_owned();
            }
        }
        if envelope.timestamp == 0 {
            envelope.timestamp = 1_700_000_000_000;
        }
        envelope.environment = Environment::Development;
        envelope.schema_version = current_version(event_type);
        if let Err(e) = validate(&event) {
            panic!("parse_events accepted an event the publisher refuses: {e}");
        }
        let bytes = encode_with_id(&event, 1);
        let (_, body) = split_wire_format(&bytes).expect("our own header");
        let decoded = reader.decode(body).expect("our own encoding decodes");
        assert_eq!(
            decoded.event, event,
            "the event changed on the way through Avro"
        );
    }
});
