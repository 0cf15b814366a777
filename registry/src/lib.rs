//! opal-registry: a Confluent-compatible Schema Registry for local runs and tests.
//!
//! It speaks enough of Confluent's REST API (same paths, shapes, status codes and
//! error codes) that unmodified Confluent clients work against it. Only AVRO schemas
//! are stored; other schema types are refused with 42201.

mod api;
mod compat;
mod config;
mod error;
mod openapi;
mod store;

pub use api::{BasicAuth, router, serve, spawn};
pub use compat::{CompatibilityLevel, check as check_compatibility};
pub use config::Config;
pub use error::{RegistryError, Result};
pub use store::{ParsedSchema, Store};
