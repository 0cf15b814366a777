//! (a) The consumers' decode path on arbitrary bytes: split the Confluent wire
//! format, pick the writer schema by the header's schema id, read the body with
//! it, resolve to our reader schema, build the typed event. The writers are
//! every schema we have ever shipped (current and history), numbered as the
//! golden fixtures (schemas/fixtures/*.bin, the seeds) number them; any other
//! id picks one of them too, so every writer gets arbitrary bodies.
//!
//! Beyond "no panic": an event that decodes must re-encode, and re-encoding is
//! stable (bytes compared, so NaN floats compare too).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use opal_schemas::EventType;
use opal_schemas::codec::{WriterSchema, encode_with_id, split_wire_format};

/// Writers in the fixtures' schema id order (1 = workflow_started, 2 and 3 =
/// agent_completed v1 and v2, ...).
fn writers() -> &'static [WriterSchema] {
    static WRITERS: OnceLock<Vec<WriterSchema>> = OnceLock::new();
    WRITERS.get_or_init(|| {
        let mut texts: Vec<&str> = EventType::ALL
            .into_iter()
            .map(|t| t.schema_json())
            .collect();
        texts.insert(
            1,
            include_str!("../../schemas/avro/history/agent_completed.v1.avsc"),
        );
        texts
            .into_iter()
            .zip(1..)
            .map(|(text, id)| WriterSchema::parse(id, text).expect("a shipped schema parses"))
            .collect()
    })
}

fuzz_target!(|bytes: &[u8]| {
    let Ok((id, body)) = split_wire_format(bytes) else {
        return;
    };
    let writers = writers();
    let writer = &writers[(id as usize + writers.len() - 1) % writers.len()];
    let Ok(decoded) = writer.decode(body) else {
        return;
    };
    let reader = writers
        .iter()
        .rev()
        .find(|w| w.event_type() == writer.event_type())
        .expect("the current schema is the last of its type");
    let first = encode_with_id(&decoded.event, 1);
    let (_, again) = split_wire_format(&first).expect("our own header");
    let round = reader.decode(again).expect("our own encoding decodes");
    let second = encode_with_id(&round.event, 1);
    assert_eq!(first, second, "encode/decode is not stable");
});
