//! Emitted events: ids derived from the input's, so a re-run emits the same ids.

use std::collections::HashMap;

use opal_schemas::{Event, EventType, validate};

use crate::handler::{Effects, Handler};

use super::Runtime;

/// Namespace of emitted events' derived ids.
const EMIT_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6f70_616c_2d65_6d69_742d_6e73_0000_0001);

/// The event id of the `nth` event of type `event_type` with key `key` emitted
/// while `group` processed `input_id`: the same input always yields the same
/// ids, so downstream dedupes re-emits. Counting per type and key (not over all
/// emits) keeps an id on the same content when a handler, run again on fresher
/// state (a guard conflict), emits more events than before.
pub fn derived_event_id(
    group: &str,
    input_id: &str,
    event_type: EventType,
    key: &str,
    nth: usize,
) -> String {
    uuid::Uuid::new_v5(
        &EMIT_NAMESPACE,
        format!("{group}/{input_id}/{event_type}/{key}/{nth}").as_bytes(),
    )
    .to_string()
}

impl<H: Handler> Runtime<H> {
    /// Emitted events must be valid before anything is applied.
    pub(super) fn check_emits(&self, input: &Event, effects: &Effects) -> Result<(), String> {
        for emitted in self.prepare_emits(input, effects) {
            validate(&emitted)
                .map_err(|e| format!("emitted {} is invalid: {e}", emitted.event_type()))?;
        }
        Ok(())
    }

    pub(super) fn prepare_emits(&self, input: &Event, effects: &Effects) -> Vec<Event> {
        let mut seen: HashMap<(EventType, String), usize> = HashMap::new();
        effects
            .emits
            .iter()
            .map(|event| {
                let mut event = event.clone();
                let nth = seen
                    .entry((event.event_type(), event.key().to_owned()))
                    .or_insert(0);
                let id = derived_event_id(
                    &self.group,
                    &input.envelope().event_id,
                    event.event_type(),
                    event.key(),
                    *nth,
                );
                *nth += 1;
                let envelope = event.envelope_mut();
                envelope.event_id = id;
                envelope.correlation_id = input.envelope().correlation_id.clone();
                self.publisher.fill_envelope(&mut event);
                event
            })
            .collect()
    }
}
