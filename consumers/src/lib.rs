//! opal-consumers: the consumer runtime and the four stream-processing consumers.
//!
//! Filled by the consumer-runtime issue; the workspace issue only lays the crate down.
