//! The Confluent wire format: magic byte 0, a 4-byte big-endian schema id, then
//! the Avro binary body.
//!
//! Writer schemas are fetched and parsed once per schema id and kept; whether
//! they need resolving against our reader schema is decided once too, so the
//! common case (writer == reader) decodes without per-message resolution.
//! Registry errors are never cached: the next message asks again.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use tokio::sync::OnceCell;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;

use crate::catalog::{Event, EventType, value_subject};
use crate::registry::{RegistryClient, RegistryError};

const MAGIC: u8 = 0;
const HEADER_LEN: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Not the Confluent wire format at all (too short, wrong magic byte).
    #[error("not Confluent wire format: {0}")]
    NotWireFormat(String),
    /// The registry does not know the schema id in the header.
    #[error("schema id {0} is not in the schema registry")]
    UnknownSchemaId(u32),
    /// Avro of a schema that is none of our events.
    #[error("schema id {schema_id} is '{name}', which is not an OPAL event")]
    ForeignSchema { schema_id: u32, name: String },
    /// The body does not decode with its writer schema, or does not resolve to ours.
    #[error("corrupt Avro body (schema id {schema_id}): {reason}")]
    CorruptAvro { schema_id: u32, reason: String },
    #[error(
        "subject '{0}' has no registered version of our schema; run kafka-init (opal-admin init)"
    )]
    SchemaNotRegistered(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl CodecError {
    /// The bytes can never decode: dead-letter them, don't retry.
    pub fn is_undecodable(&self) -> bool {
        matches!(
            self,
            CodecError::NotWireFormat(_)
                | CodecError::UnknownSchemaId(_)
                | CodecError::ForeignSchema { .. }
                | CodecError::CorruptAvro { .. }
        )
    }

    /// The registry could not be asked: pause and retry.
    pub fn is_dependency_down(&self) -> bool {
        matches!(self, CodecError::Registry(e) if e.is_retriable() || matches!(e, RegistryError::Unauthorized { .. }))
    }
}

pub type Result<T, E = CodecError> = std::result::Result<T, E>;

/// Splits wire-format bytes into (schema id, Avro body).
pub fn split_wire_format(bytes: &[u8]) -> Result<(u32, &[u8])> {
    if bytes.len() < HEADER_LEN {
        return Err(CodecError::NotWireFormat(format!(
            "{} byte(s), the header alone is {HEADER_LEN}",
            bytes.len()
        )));
    }
    if bytes[0] != MAGIC {
        return Err(CodecError::NotWireFormat(format!(
            "magic byte is {:#04x}, expected 0x00",
            bytes[0]
        )));
    }
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    Ok((id, &bytes[HEADER_LEN..]))
}

/// Our current (reader) schema for each event type, parsed once per process.
pub fn reader_schema(event_type: EventType) -> &'static Schema {
    static READERS: OnceLock<HashMap<EventType, Schema>> = OnceLock::new();
    let readers = READERS.get_or_init(|| {
        EventType::ALL
            .into_iter()
            .map(|t| {
                // The .avsc files are compiled in and checked by tests; failing here is a build defect.
                #[allow(clippy::expect_used)]
                let schema = Schema::parse_str(t.schema_json()).expect("bundled schema parses");
                (t, schema)
            })
            .collect()
    });
    &readers[&event_type]
}

/// A writer schema as the decoder uses it: parsed, tied to one of our event
/// types, and whether it needs resolving against our reader schema. Building
/// and decoding need no registry (the codec fetches the text; tests and fuzzing
/// pass it directly).
#[derive(Debug)]
pub struct WriterSchema {
    schema_id: u32,
    schema: Schema,
    event_type: EventType,
    /// False when the writer schema is our reader schema: no resolution
    /// step, and the body is read straight into the typed event.
    resolve: bool,
}

impl WriterSchema {
    /// Parses the schema text registered under `schema_id`.
    pub fn parse(schema_id: u32, text: &str) -> Result<Self> {
        let schema = Schema::parse_str(text).map_err(|e| CodecError::CorruptAvro {
            schema_id,
            reason: format!("writer schema does not parse: {e}"),
        })?;
        let name = match &schema {
            Schema::Record(record) => record.name.fullname(None),
            other => format!("{other:?}").chars().take(40).collect(),
        };
        let event_type =
            EventType::from_full_name(&name).ok_or_else(|| CodecError::ForeignSchema {
                schema_id,
                name: name.clone(),
            })?;
        let reader = reader_schema(event_type);
        // Equal parsing canonical forms read the same bytes the same way.
        let resolve = schema.canonical_form() != reader.canonical_form();
        Ok(WriterSchema {
            schema_id,
            resolve,
            schema,
            event_type,
        })
    }

    pub fn event_type(&self) -> EventType {
        self.event_type
    }

    /// Decodes an Avro body (the bytes after the wire-format header) written
    /// with this schema into our typed event.
    pub fn decode(&self, body: &[u8]) -> Result<Decoded> {
        let schema_id = self.schema_id;
        let corrupt = |reason: String| CodecError::CorruptAvro { schema_id, reason };
        if !self.resolve {
            let event = crate::decode::read_body(self.event_type, body).map_err(corrupt)?;
            return Ok(Decoded { event, schema_id });
        }
        let reader = reader_schema(self.event_type);
        let mut cursor = body;
        // An older writer schema: generic read resolved to our reader schema
        // (defaults, promotions), then serde from the Value.
        let value = GenericDatumReader::builder(&self.schema)
            .maybe_reader_schema(self.resolve.then_some(reader))
            .build()
            .and_then(|datum| datum.read_value(&mut cursor))
            .map_err(|e| corrupt(e.to_string()))?;
        if !cursor.is_empty() {
            return Err(corrupt(format!(
                "{} byte(s) left over after the record",
                cursor.len()
            )));
        }
        let event =
            Event::from_avro(self.event_type, &value).map_err(|e| corrupt(e.to_string()))?;
        Ok(Decoded { event, schema_id })
    }
}

/// A decoded event with the id of the schema it was written with.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub event: Event,
    pub schema_id: u32,
}

/// Encoder and decoder for every event type, sharing one registry client and caches.
pub struct Codec {
    registry: RegistryClient,
    /// One cell per schema id: concurrent first decodes wait for one fetch
    /// instead of each asking the registry. A failed fetch leaves the cell empty.
    writers: RwLock<HashMap<u32, Arc<OnceCell<Arc<WriterSchema>>>>>,
    /// Our schema's id per subject, for encoding; same single-flight cells.
    ids: RwLock<HashMap<String, Arc<OnceCell<u32>>>>,
    auto_register: bool,
}

impl Codec {
    pub fn new(registry: RegistryClient) -> Self {
        Codec {
            registry,
            writers: RwLock::default(),
            ids: RwLock::default(),
            auto_register: false,
        }
    }

    /// Register our schema on first use when the subject lacks it (as Confluent
    /// serializers do by default); otherwise encoding requires kafka-init first.
    pub fn with_auto_register(mut self, auto_register: bool) -> Self {
        self.auto_register = auto_register;
        self
    }

    pub fn registry(&self) -> &RegistryClient {
        &self.registry
    }

    /// The id of our current schema for `event_type` under `topic`'s value subject.
    pub async fn schema_id(&self, event_type: EventType, topic: &str) -> Result<u32> {
        let subject = value_subject(topic);
        let cell = cell(&self.ids, &subject);
        if let Some(id) = cell.get() {
            return Ok(*id);
        }
        let schema = event_type.schema_json();
        let id = cell
            .get_or_try_init(|| async {
                match self.registry.lookup(&subject, schema).await? {
                    Some(found) => Ok(found.id),
                    None if self.auto_register => {
                        Ok(self.registry.register(&subject, schema).await?)
                    }
                    None => Err(CodecError::SchemaNotRegistered(subject.clone())),
                }
            })
            .await?;
        Ok(*id)
    }

    /// Encodes `event` for `topic`: wire-format bytes and the schema id used.
    pub async fn encode(&self, event: &Event, topic: &str) -> Result<(Vec<u8>, u32)> {
        let id = self.schema_id(event.event_type(), topic).await?;
        Ok((encode_with_id(event, id), id))
    }

    /// Decodes wire-format bytes into a typed event.
    pub async fn decode(&self, bytes: &[u8]) -> Result<Decoded> {
        let (schema_id, body) = split_wire_format(bytes)?;
        self.writer(schema_id).await?.decode(body)
    }

    /// Decodes without waiting when the writer schema is already known (the
    /// common case: no future per record); `None` when it must be fetched
    /// first (use [`Codec::decode`]).
    pub fn decode_cached(&self, bytes: &[u8]) -> Option<Result<Decoded>> {
        let (schema_id, body) = match split_wire_format(bytes) {
            Ok(split) => split,
            Err(e) => return Some(Err(e)),
        };
        let writer = self
            .writers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&schema_id)
            .and_then(|cell| cell.get().cloned())?;
        Some(writer.decode(body))
    }

    async fn writer(&self, schema_id: u32) -> Result<Arc<WriterSchema>> {
        let cell = cell(&self.writers, &schema_id);
        if let Some(writer) = cell.get() {
            return Ok(writer.clone());
        }
        cell.get_or_try_init(|| self.fetch_writer(schema_id))
            .await
            .cloned()
    }

    async fn fetch_writer(&self, schema_id: u32) -> Result<Arc<WriterSchema>> {
        let text = match self.registry.schema_by_id(schema_id).await {
            Ok(text) => text,
            Err(e) if matches!(e.code(), Some(40403)) => {
                return Err(CodecError::UnknownSchemaId(schema_id));
            }
            Err(e) => return Err(e.into()),
        };
        WriterSchema::parse(schema_id, &text).map(Arc::new)
    }
}

/// Encodes `event` with our schema into wire format under `schema_id`.
/// Cannot fail: every `Event` value has a body under its own schema (a test
/// compares the bytes with apache-avro's for every event type).
pub fn encode_with_id(event: &Event, schema_id: u32) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(256);
    encode_into(event, schema_id, &mut bytes);
    bytes
}

/// Appends `event`'s wire format under `schema_id` to `out`, so a caller can
/// reuse one buffer.
pub fn encode_into(event: &Event, schema_id: u32, out: &mut Vec<u8>) {
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    crate::encode::write_body(event, out);
}

/// The cache cell for `key`, created empty on first use.
fn cell<K: std::hash::Hash + Eq + Clone, V>(
    map: &RwLock<HashMap<K, Arc<OnceCell<V>>>>,
    key: &K,
) -> Arc<OnceCell<V>> {
    if let Some(cell) = map.read().unwrap_or_else(|p| p.into_inner()).get(key) {
        return cell.clone();
    }
    map.write()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key.clone())
        .or_default()
        .clone()
}
