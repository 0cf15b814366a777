//! The one place that decides what a failure means for an event.

use opal_schemas::CodecError;

use crate::handler::HandlerError;

/// What the runtime does with a failed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Cannot be decoded: dead-letter at once.
    Undecodable,
    /// Breaks a business rule: dead-letter at once.
    Invalid,
    /// Retry with backoff, then dead-letter.
    Transient,
    /// Pause and retry until the dependency returns; never dead-letter.
    DependencyDown,
    /// Waiting for another input: park the partition, retry later; never dead-letter.
    NotYet,
}

impl FailureClass {
    /// The error class written in the DLQ's exception header.
    pub fn dlq_name(self) -> &'static str {
        match self {
            FailureClass::Undecodable => "opal.Undecodable",
            FailureClass::Invalid => "opal.Invalid",
            FailureClass::Transient => "opal.TransientExhausted",
            FailureClass::DependencyDown => "opal.DependencyDown",
            FailureClass::NotYet => "opal.NotYet",
        }
    }
}

/// Every failure the pipeline can meet on one event.
#[derive(Debug, thiserror::Error)]
pub enum ProcessingError {
    #[error(transparent)]
    Decode(#[from] CodecError),
    #[error("invalid event: {0}")]
    Validation(#[from] opal_schemas::ValidationError),
    #[error(transparent)]
    Handler(#[from] HandlerError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("kafka: {0}")]
    Kafka(String),
}

/// Decides the class of `error`. Retry, DLQ and pause decisions read this only.
pub fn classify(error: &ProcessingError) -> FailureClass {
    match error {
        ProcessingError::Decode(e) if e.is_undecodable() => FailureClass::Undecodable,
        ProcessingError::Decode(e) if e.is_dependency_down() => FailureClass::DependencyDown,
        // Registry refusals other than "down" (e.g. a 4xx on lookup) will not fix themselves.
        ProcessingError::Decode(_) => FailureClass::Undecodable,
        ProcessingError::Validation(_) => FailureClass::Invalid,
        ProcessingError::Handler(HandlerError::Invalid(_)) => FailureClass::Invalid,
        ProcessingError::Handler(HandlerError::Transient(_)) => FailureClass::Transient,
        ProcessingError::Handler(HandlerError::DependencyDown(_)) => FailureClass::DependencyDown,
        ProcessingError::Handler(HandlerError::NotYet(_)) => FailureClass::NotYet,
        ProcessingError::Redis(e) if redis_is_down(e) => FailureClass::DependencyDown,
        ProcessingError::Redis(_) => FailureClass::Transient,
        ProcessingError::Kafka(_) => FailureClass::DependencyDown,
    }
}

/// Whether a Redis error means Redis cannot be reached (as opposed to a bad command).
pub fn redis_is_down(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || matches!(
            e.code(),
            Some("LOADING" | "BUSY" | "MASTERDOWN" | "TRYAGAIN")
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_class() {
        let cases = [
            (
                ProcessingError::Decode(CodecError::NotWireFormat("x".into())),
                FailureClass::Undecodable,
            ),
            (
                ProcessingError::Decode(CodecError::UnknownSchemaId(9)),
                FailureClass::Undecodable,
            ),
            (
                ProcessingError::Decode(CodecError::Registry(
                    opal_schemas::RegistryError::Unavailable {
                        url: "u".into(),
                        reason: "refused".into(),
                    },
                )),
                FailureClass::DependencyDown,
            ),
            (
                ProcessingError::Validation(opal_schemas::ValidationError {
                    field: "f".into(),
                    reason: "r".into(),
                }),
                FailureClass::Invalid,
            ),
            (
                ProcessingError::Handler(HandlerError::Invalid("x".into())),
                FailureClass::Invalid,
            ),
            (
                ProcessingError::Handler(HandlerError::Transient("x".into())),
                FailureClass::Transient,
            ),
            (
                ProcessingError::Handler(HandlerError::DependencyDown("x".into())),
                FailureClass::DependencyDown,
            ),
            (
                ProcessingError::Redis(redis::RedisError::from(std::io::Error::from(
                    std::io::ErrorKind::ConnectionRefused,
                ))),
                FailureClass::DependencyDown,
            ),
            (
                ProcessingError::Kafka("broker down".into()),
                FailureClass::DependencyDown,
            ),
        ];
        for (error, class) in cases {
            assert_eq!(classify(&error), class, "{error}");
        }
    }
}
