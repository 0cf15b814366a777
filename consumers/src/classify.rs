//! The one place that decides what a failure means for an event. Every error
//! path of a batch carries its typed error here; retry, dead-letter and pause
//! decisions read the class, nothing else.

use opal_producers::PublishError;
use opal_schemas::CodecError;

use crate::dependency::Dependency;
use crate::handler::HandlerError;
use crate::idempotency::Refused;

/// What the runtime does with a failed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Cannot be decoded: dead-letter at once.
    Undecodable,
    /// Breaks a business rule: dead-letter at once.
    Invalid,
    /// Retry with backoff, then dead-letter.
    Transient,
    /// An event the handler emitted was refused by the broker for good (too
    /// large, not authorised, unknown topic): dead-letter the input at once.
    EmitRejected,
    /// The dead-letter topic refused the record for good: it is logged with
    /// its coordinates and counted, and stays in its source topic.
    DeadLetterRefused,
    /// Pause and retry until the dependency returns; never dead-letter.
    DependencyDown(Dependency),
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
            FailureClass::EmitRejected => "opal.EmitRejected",
            FailureClass::DeadLetterRefused => "opal.DeadLetterRefused",
            FailureClass::DependencyDown(_) => "opal.DependencyDown",
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
    /// A Redis round trip of the runtime (leases, applying effects) failed as a whole.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis refused one of this event's own state commands (`WRONGTYPE`, a
    /// value that is not a number, `OOM`); nothing of the event was applied.
    #[error("redis refused the event's state change: {0}")]
    StateCommand(String),
    /// Publishing an event the handler emitted failed.
    #[error("emitting an event: {0}")]
    Emit(#[source] PublishError),
    /// Writing the record to the dead-letter topic failed.
    #[error("dead-letter topic {topic}: {source}")]
    DeadLetter {
        topic: String,
        #[source]
        source: PublishError,
    },
}

impl From<Refused> for ProcessingError {
    fn from(refused: Refused) -> Self {
        ProcessingError::StateCommand(refused.0)
    }
}

/// Decides the class of `error`.
pub fn classify(error: &ProcessingError) -> FailureClass {
    match error {
        ProcessingError::Decode(e) if e.is_undecodable() => FailureClass::Undecodable,
        ProcessingError::Decode(e) if e.is_dependency_down() => {
            FailureClass::DependencyDown(Dependency::Registry)
        }
        // Registry refusals other than "down" (e.g. a 4xx on lookup) will not fix themselves.
        ProcessingError::Decode(_) => FailureClass::Undecodable,
        ProcessingError::Validation(_) => FailureClass::Invalid,
        ProcessingError::Handler(e) => match e {
            HandlerError::Invalid(_) => FailureClass::Invalid,
            HandlerError::Transient(_) => FailureClass::Transient,
            HandlerError::NotYet(_) => FailureClass::NotYet,
            HandlerError::DependencyDown(dependency, _) => {
                FailureClass::DependencyDown(*dependency)
            }
            HandlerError::Redis(e) => redis_class(e),
        },
        ProcessingError::Redis(e) => redis_class(e),
        ProcessingError::StateCommand(_) => FailureClass::Transient,
        ProcessingError::Emit(e) => publish_class(e, FailureClass::EmitRejected),
        ProcessingError::DeadLetter { source, .. } => {
            publish_class(source, FailureClass::DeadLetterRefused)
        }
    }
}

/// Connection-level failures (refused, reset, timeout, loading, cluster down)
/// mean Redis is down; a command Redis refuses (`WRONGTYPE`, a script error,
/// `OOM`) is about this data and may succeed on a retry.
fn redis_class(e: &redis::RedisError) -> FailureClass {
    if redis_is_down(e) || redis_refuses_credentials(e) {
        FailureClass::DependencyDown(Dependency::Redis)
    } else {
        FailureClass::Transient
    }
}

/// A publish that may succeed later waits for its dependency; one refused
/// for good takes `refused`.
fn publish_class(e: &PublishError, refused: FailureClass) -> FailureClass {
    match e {
        PublishError::Registry(codec) if codec.is_dependency_down() => {
            FailureClass::DependencyDown(Dependency::Registry)
        }
        e if e.is_retriable() => FailureClass::DependencyDown(Dependency::Kafka),
        _ => refused,
    }
}

/// Whether Redis refuses our credentials: a wrong password (`WRONGPASS`), none
/// where one is required (`NOAUTH`), or an ACL user without the rights
/// (`NOPERM`). A configuration error: at start-up the consumer stops with it;
/// met later (the password changed under a running consumer) it pauses the
/// batch like an outage, since no retry of the event can succeed and
/// dead-lettering would punish the event for our settings.
pub fn redis_refuses_credentials(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
}

/// Whether a Redis error means Redis cannot be reached (as opposed to a command it refused).
pub fn redis_is_down(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || matches!(
            e.code(),
            Some("LOADING" | "BUSY" | "MASTERDOWN" | "TRYAGAIN" | "CLUSTERDOWN")
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode;

    fn server_error(code: &str, detail: &str) -> redis::RedisError {
        // The reply Redis sends, parsed as the client parses it.
        let reply = format!("-{code} {detail}\r\n");
        redis::parse_redis_value(reply.as_bytes())
            .expect("a reply")
            .extract_error()
            .expect_err("an error reply")
    }

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
                FailureClass::DependencyDown(Dependency::Registry),
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
                ProcessingError::Handler(HandlerError::DependencyDown(
                    Dependency::Kafka,
                    "x".into(),
                )),
                FailureClass::DependencyDown(Dependency::Kafka),
            ),
            (
                ProcessingError::Redis(redis::RedisError::from(std::io::Error::from(
                    std::io::ErrorKind::ConnectionRefused,
                ))),
                FailureClass::DependencyDown(Dependency::Redis),
            ),
            (
                ProcessingError::Redis(server_error("LOADING", "Redis is loading the dataset")),
                FailureClass::DependencyDown(Dependency::Redis),
            ),
            (
                ProcessingError::Handler(HandlerError::Redis(server_error(
                    "WRONGTYPE",
                    "Operation against a key holding the wrong kind of value",
                ))),
                FailureClass::Transient,
            ),
            (
                ProcessingError::Redis(server_error(
                    "OOM",
                    "command not allowed when used memory > 'maxmemory'",
                )),
                FailureClass::Transient,
            ),
            (
                ProcessingError::Redis(server_error("NOAUTH", "Authentication required.")),
                FailureClass::DependencyDown(Dependency::Redis),
            ),
            (
                ProcessingError::Handler(HandlerError::Redis(server_error(
                    "WRONGPASS",
                    "invalid username-password pair or user is disabled.",
                ))),
                FailureClass::DependencyDown(Dependency::Redis),
            ),
            (
                ProcessingError::StateCommand("WRONGTYPE ...".into()),
                FailureClass::Transient,
            ),
            (
                ProcessingError::Emit(PublishError::BrokerRejected(KafkaError::MessageProduction(
                    RDKafkaErrorCode::MessageSizeTooLarge,
                ))),
                FailureClass::EmitRejected,
            ),
            (
                ProcessingError::Emit(PublishError::BrokerRetriable(
                    KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
                )),
                FailureClass::DependencyDown(Dependency::Kafka),
            ),
            (
                ProcessingError::DeadLetter {
                    topic: "g.dlq".into(),
                    source: PublishError::BrokerRejected(KafkaError::MessageProduction(
                        RDKafkaErrorCode::MessageSizeTooLarge,
                    )),
                },
                FailureClass::DeadLetterRefused,
            ),
            (
                ProcessingError::DeadLetter {
                    topic: "g.dlq".into(),
                    source: PublishError::BrokerRetriable(KafkaError::MessageProduction(
                        RDKafkaErrorCode::BrokerTransportFailure,
                    )),
                },
                FailureClass::DependencyDown(Dependency::Kafka),
            ),
        ];
        for (error, class) in cases {
            assert_eq!(classify(&error), class, "{error}");
        }
    }
}

/// What the runtime does with an error from polling Kafka (not an event's
/// failure: no record is in hand).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollFailure {
    /// librdkafka reconnects and retries by itself: log and poll again.
    Transient,
    /// The client raised a fatal error and can never consume again (e.g. a
    /// static member fenced by the coordinator after a broker restart,
    /// `FencedInstanceId`): the consumer stops and exits non-zero so that its
    /// supervisor starts a fresh instance, which takes its partitions back
    /// and finds what it already applied marked done.
    Fatal(String),
}

/// Decides from the client's fatal error, if it has one (`Client::fatal_error`).
pub fn classify_poll(fatal: Option<(rdkafka::types::RDKafkaErrorCode, String)>) -> PollFailure {
    match fatal {
        Some((code, reason)) => PollFailure::Fatal(format!("{code:?}: {reason}")),
        None => PollFailure::Transient,
    }
}
