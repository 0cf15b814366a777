//! opal-schemas: Avro event schemas, typed events, the Confluent wire-format
//! codec and a Schema Registry client.
//!
//! - [`events`]: one Rust struct per event type, mirroring `avro/*.avsc`.
//! - [`catalog`]: event type ↔ topic, key field, schema file, subject naming.
//! - [`codec`]: wire-format encode/decode with per-schema-id caching.
//! - `decode`: the Avro body written with our current schema, read into the
//!   typed event (older writer schemas resolve in [`codec`]).
//! - [`encode`]: the Avro body of a typed event.
//! - `binary`, `layout`: Avro's binary encoding of our records, field by field.
//! - [`registry`]: the registry REST client, with typed errors.
//! - [`validate`]: business rules beyond the schema's types.
//! - [`samples`]: one realistic example of every event type.
//! - [`secret`]: credentials kept out of printed URLs.

mod binary;
pub mod catalog;
pub mod codec;
mod decode;
pub mod encode;
pub mod events;
mod layout;
pub mod registry;
pub mod samples;
pub mod secret;
pub mod validate;

pub use catalog::{Event, EventType, JsonFieldError, OpalEvent, value_subject};
pub use codec::{Codec, CodecError, Decoded};
pub use events::*;
pub use registry::{RegistryClient, RegistryConfig, RegistryError};
pub use secret::redact_url_password;
pub use validate::{ValidationError, validate};

/// Milliseconds since the Unix epoch: event time, `timestamp-millis` (one
/// clock for every crate; 0 if the system clock is before 1970).
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
