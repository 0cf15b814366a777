//! Publish errors, classified once: the `reason` label and retry decisions read this.

use opal_schemas::{CodecError, EventType, ValidationError};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The event breaks a business rule; names the field.
    #[error("invalid {event_type}: {source}")]
    Invalid {
        event_type: EventType,
        #[source]
        source: ValidationError,
    },
    /// The registry is down, refuses us, or lacks our schema.
    #[error("schema registry: {0}")]
    Registry(#[source] CodecError),
    /// Worth retrying: timeouts, broker unavailable, queue full.
    #[error("broker (retriable): {0}")]
    BrokerRetriable(#[source] KafkaError),
    /// The broker refused this message for good (too large, not authorised, unknown topic).
    #[error("broker refused the message: {0}")]
    BrokerRejected(#[source] KafkaError),
    /// The producer hit a fatal error (idempotence state); it has been rebuilt.
    #[error("producer fatal error (producer rebuilt): {0}")]
    BrokerFatal(#[source] KafkaError),
    #[error("cannot create the producer: {0}")]
    Setup(String),
}

impl PublishError {
    /// The bounded `reason` label of `opal_publish_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            PublishError::Invalid { .. } => "invalid",
            PublishError::Registry(_) => "registry",
            PublishError::BrokerRetriable(_) => "broker_retriable",
            PublishError::BrokerRejected(_) => "broker_rejected",
            PublishError::BrokerFatal(_) => "broker_fatal",
            PublishError::Setup(_) => "setup",
        }
    }

    /// Whether the same publish may succeed later.
    pub fn is_retriable(&self) -> bool {
        match self {
            PublishError::BrokerRetriable(_) | PublishError::BrokerFatal(_) => true,
            PublishError::Registry(e) => e.is_dependency_down(),
            _ => false,
        }
    }

    /// Classifies a delivery error; `fatal` says whether the producer reported
    /// a fatal error. The one place a Kafka delivery error is judged
    /// (the consumers' dead-letter writer uses it too).
    pub fn from_kafka(error: KafkaError, fatal: bool) -> Self {
        if fatal {
            return PublishError::BrokerFatal(error);
        }
        use RDKafkaErrorCode::*;
        match error.rdkafka_error_code() {
            Some(
                MessageSizeTooLarge
                | InvalidMessageSize
                | TopicAuthorizationFailed
                | ClusterAuthorizationFailed
                | UnknownTopic
                | UnknownTopicOrPartition
                | InvalidMessage
                | InvalidRecord
                | PolicyViolation,
            ) => PublishError::BrokerRejected(error),
            _ => PublishError::BrokerRetriable(error),
        }
    }
}
