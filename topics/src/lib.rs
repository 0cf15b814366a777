//! opal-topics: Kafka connection settings, the topic catalog, environment
//! profiles and provisioning (the `opal-admin` binary).

pub mod connection;
pub mod telemetry;

pub use connection::{ConnectionError, KafkaArgs};
