//! opal-producers: the typed event publisher.
//!
//! Filled by the producers issue; the workspace issue only lays the crate down.
