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

/// Counts delivery reports in one callback: what a producer without a
/// future per record pays for them (#16's "one delivery callback" lever).
#[derive(Default)]
pub struct DeliveryCounter {
    delivered: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
}

impl rdkafka::ClientContext for DeliveryCounter {}

impl rdkafka::producer::ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, report: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        let counter = if report.is_ok() {
            &self.delivered
        } else {
            &self.failed
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Sends `records` copies of `record` (its payload and headers, keys spread
/// as the perf run spreads them) through a `ThreadedProducer` whose delivery
/// reports all go to one callback, and waits for every report. Returns the
/// number of failed deliveries.
pub fn publish_with_one_callback(
    kafka: &KafkaArgs,
    topic: &str,
    record: &opal_producers::WireRecord,
    records: u64,
) -> anyhow::Result<u64> {
    use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    let mut config = kafka.client_config()?;
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5");
    let producer: ThreadedProducer<DeliveryCounter> =
        config.create_with_context(DeliveryCounter::default())?;
    let keys: Vec<String> = (0..1024).map(|i| format!("key-{i}")).collect();
    for i in 0..records {
        let mut next = BaseRecord::to(topic)
            .key(&keys[(i % 1024) as usize])
            .payload(&record.payload);
        if let Some(headers) = record.kafka_headers() {
            next = next.headers(headers);
        }
        loop {
            match producer.send(next) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    next = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
    producer.flush(Duration::from_secs(60))?;
    let context = producer.context();
    let (delivered, failed) = (
        context.delivered.load(Ordering::Relaxed),
        context.failed.load(Ordering::Relaxed),
    );
    anyhow::ensure!(
        delivered + failed == records,
        "{delivered} delivered and {failed} failed of {records}"
    );
    Ok(failed)
}
