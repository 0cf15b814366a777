//! opal-topics: the topic catalog, environment profiles and provisioning.
//!
//! Filled by the schemas/kafka-init issue; the workspace issue only lays the crate down.
