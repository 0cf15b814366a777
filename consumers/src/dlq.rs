//! Dead-letter topics: `<group>.dlq`, the original key and value bytes
//! unchanged, headers in Spring Kafka's dialect (values as UTF-8 text).

use std::time::Duration;

use opal_producers::PublishError;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::classify::FailureClass;

pub mod headers {
    pub const ORIGINAL_TOPIC: &str = "kafka_dlt-original-topic";
    pub const ORIGINAL_PARTITION: &str = "kafka_dlt-original-partition";
    pub const ORIGINAL_OFFSET: &str = "kafka_dlt-original-offset";
    pub const ORIGINAL_TIMESTAMP: &str = "kafka_dlt-original-timestamp";
    pub const ORIGINAL_CONSUMER_GROUP: &str = "kafka_dlt-original-consumer-group";
    pub const EXCEPTION_FQCN: &str = "kafka_dlt-exception-fqcn";
    pub const EXCEPTION_MESSAGE: &str = "kafka_dlt-exception-message";
    pub const ATTEMPTS: &str = "opal-dlq-attempts";
    pub const FAILED_AT: &str = "opal-dlq-failed-at";
    /// Set by `opal-dlq replay` on the republished record.
    pub const REPLAY_COUNT: &str = "opal-replay-count";
}

/// A record that goes to the DLQ, and why.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub message: OwnedMessage,
    pub class: FailureClass,
    pub error: String,
    pub attempts: u32,
}

/// A header's value as text, if present.
pub fn header_text(message: &impl Message, name: &str) -> Option<String> {
    message
        .headers()
        .and_then(|h| h.iter().find(|x| x.key == name))
        .and_then(|x| x.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

pub struct DlqWriter {
    producer: FutureProducer,
    topic: String,
    group: String,
}

impl DlqWriter {
    pub fn new(
        client_config: &ClientConfig,
        topic: String,
        group: String,
    ) -> Result<Self, KafkaError> {
        let mut config = client_config.clone();
        config.set("enable.idempotence", "true").set("acks", "all");
        Ok(DlqWriter {
            producer: config.create()?,
            topic,
            group,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Writes `dead` to the DLQ and waits for the broker's acknowledgement;
    /// a failure is classified as every delivery error is.
    pub async fn send(&self, dead: &DeadLetter) -> Result<(), PublishError> {
        let m = &dead.message;
        let partition = m.partition().to_string();
        let offset = m.offset().to_string();
        let timestamp = m
            .timestamp()
            .to_millis()
            .map(|t| t.to_string())
            .unwrap_or_default();
        let attempts = dead.attempts.to_string();
        let failed_at = opal_schemas::now_millis().to_string();
        // Spring truncates nothing, but a header of megabytes helps nobody.
        let message: String = dead.error.chars().take(2000).collect();
        let mut out = OwnedHeaders::new();
        if let Some(original) = m.headers() {
            for h in original
                .iter()
                .filter(|h| !h.key.starts_with("kafka_dlt-") && !h.key.starts_with("opal-dlq-"))
            {
                out = out.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        let out = out
            .insert(Header {
                key: headers::ORIGINAL_TOPIC,
                value: Some(m.topic()),
            })
            .insert(Header {
                key: headers::ORIGINAL_PARTITION,
                value: Some(&partition),
            })
            .insert(Header {
                key: headers::ORIGINAL_OFFSET,
                value: Some(&offset),
            })
            .insert(Header {
                key: headers::ORIGINAL_TIMESTAMP,
                value: Some(&timestamp),
            })
            .insert(Header {
                key: headers::ORIGINAL_CONSUMER_GROUP,
                value: Some(&self.group),
            })
            .insert(Header {
                key: headers::EXCEPTION_FQCN,
                value: Some(dead.class.dlq_name()),
            })
            .insert(Header {
                key: headers::EXCEPTION_MESSAGE,
                value: Some(&message),
            })
            .insert(Header {
                key: headers::ATTEMPTS,
                value: Some(&attempts),
            })
            .insert(Header {
                key: headers::FAILED_AT,
                value: Some(&failed_at),
            });
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(out);
        if let Some(key) = m.key() {
            record = record.key(key);
        }
        if let Some(value) = m.payload() {
            record = record.payload(value);
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(e, _)| PublishError::from_kafka(e, false))
    }

    pub fn flush(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
    }
}
