//! opal-schemas: Avro event schemas, typed events and the Confluent wire-format codec.
//!
//! Filled by the schemas issue; the workspace issue only lays the crate down.
