//! opal-topics: Kafka connection settings, the topic catalog, environment
//! profiles and provisioning (the `opal-admin` binary).

pub mod catalog;
pub mod connection;
pub mod offsets;
pub mod provision;
pub mod telemetry;

pub use catalog::{Catalog, TopicSpec, dlq_topic};
pub use connection::{ConnectionError, KafkaArgs, RegistryArgs};
