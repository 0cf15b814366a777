//! The baseline consumer: plain rdkafka in a consumer group, storing each
//! offset after "processing" and committing as the runtime does (auto-commit of
//! stored offsets), with no decoding and no deduplication.

use std::sync::Arc;

use futures::StreamExt;
use opal_topics::KafkaArgs;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio_util::sync::CancellationToken;

use crate::recorder::Recorder;

/// Consumes `topic` until cancelled, recording each record's arrival by its
/// Kafka timestamp (set by the producer at send time); commits before returning.
pub async fn consume(
    kafka: &KafkaArgs,
    group: &str,
    topic: &str,
    recorder: Arc<Recorder>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut config = kafka.client_config()?;
    // The same consumer settings as the runtime's (consumers/src/runtime.rs).
    config
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    let consumer: StreamConsumer = config.create()?;
    consumer.subscribe(&[topic])?;
    let mut stream = consumer.stream();
    loop {
        let message = tokio::select! {
            _ = cancel.cancelled() => break,
            next = stream.next() => match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "raw consumer error");
                    continue;
                }
                None => break,
            },
        };
        let produced = message.timestamp().to_millis().unwrap_or_default();
        consumer.store_offset_from_message(&message)?;
        recorder.arrived(produced);
    }
    drop(stream);
    match consumer.commit_consumer_state(CommitMode::Sync) {
        // Auto-commit already committed everything stored.
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
