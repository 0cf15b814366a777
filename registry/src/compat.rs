//! Compatibility levels and the check that enforces them, on apache-avro's
//! schema-resolution rules (the same rules Confluent applies through Avro Java).

use std::fmt;
use std::str::FromStr;

use apache_avro::Schema;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use serde::{Deserialize, Serialize};

use crate::error::RegistryError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompatibilityLevel {
    None,
    #[default]
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl CompatibilityLevel {
    fn transitive(self) -> bool {
        matches!(
            self,
            Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive
        )
    }

    /// The new schema must read data written with the earlier one.
    fn backward(self) -> bool {
        matches!(
            self,
            Self::Backward | Self::BackwardTransitive | Self::Full | Self::FullTransitive
        )
    }

    /// The earlier schema must read data written with the new one.
    fn forward(self) -> bool {
        matches!(
            self,
            Self::Forward | Self::ForwardTransitive | Self::Full | Self::FullTransitive
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Backward => "BACKWARD",
            Self::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Self::Forward => "FORWARD",
            Self::ForwardTransitive => "FORWARD_TRANSITIVE",
            Self::Full => "FULL",
            Self::FullTransitive => "FULL_TRANSITIVE",
        }
    }
}

impl fmt::Display for CompatibilityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CompatibilityLevel {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "NONE" => Self::None,
            "BACKWARD" => Self::Backward,
            "BACKWARD_TRANSITIVE" => Self::BackwardTransitive,
            "FORWARD" => Self::Forward,
            "FORWARD_TRANSITIVE" => Self::ForwardTransitive,
            "FULL" => Self::Full,
            "FULL_TRANSITIVE" => Self::FullTransitive,
            _ => return Err(RegistryError::InvalidCompatibilityLevel(s.to_owned())),
        })
    }
}

/// Checks `candidate` against `existing` (oldest first) under `level`.
///
/// Returns the reasons it is incompatible; empty means compatible. Non-transitive
/// levels compare with the newest existing schema only, as Confluent does.
pub fn check(candidate: &Schema, existing: &[Schema], level: CompatibilityLevel) -> Vec<String> {
    let against: &[Schema] = if level.transitive() {
        existing
    } else {
        existing.last().map(std::slice::from_ref).unwrap_or(&[])
    };
    let mut messages = Vec::new();
    for (index, earlier) in against.iter().enumerate().rev() {
        let which = if level.transitive() {
            format!("version index {index}")
        } else {
            "the latest schema".to_owned()
        };
        if level.backward()
            && let Some(why) = reader_fails(earlier, candidate)
        {
            messages.push(format!(
                "BACKWARD: the new schema cannot read data written with {which}: {why}"
            ));
        }
        if level.forward()
            && let Some(why) = reader_fails(candidate, earlier)
        {
            messages.push(format!(
                "FORWARD: {which} cannot read data written with the new schema: {why}"
            ));
        }
    }
    messages
}

/// Why `reader` cannot resolve every datum written with `writer`, if it cannot.
fn reader_fails(writer: &Schema, reader: &Schema) -> Option<String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => None,
        // Partial means some writer values (e.g. an enum symbol the reader lacks)
        // would fail to resolve; Confluent refuses that too.
        Ok(Compatibility::Partial) => {
            Some("some values written with the writer schema cannot be resolved by the reader (e.g. enum symbols or union branches the reader lacks)".to_owned())
        }
        Err(e) => Some(e.to_string()),
    }
}
