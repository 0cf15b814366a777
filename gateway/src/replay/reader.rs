//! Reading a time window of the event topics back, outside the consumer
//! group: a fresh rdkafka consumer per read that assigns partitions itself
//! (no group join, no commit), finds each partition's first offset at `from`
//! with offsets-for-times, and reads up to an end fixed before it starts:
//! the offset at `to`, or the high watermark at the moment of the call.
//!
//! A WebSocket catch-up registers its client on the live stream first and
//! only then calls [`HistoryReader::read`]: every record below the high
//! watermark taken here is either read here or was consumed before the client
//! registered, and every record from it on reaches the live stream; the seam
//! per partition is that watermark ([`ReadPlan::ends`]), so the connection
//! drops live events below it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use opal_schemas::{Codec, Event};
use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

/// Metadata and offset look-ups; generous, they run once per read.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for a record before checking positions (a partition's
/// last offsets may be transaction markers, which are never delivered).
const IDLE: Duration = Duration::from_millis(300);

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("kafka look-up task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("the reader of this window was dropped")]
    Abandoned,
    #[error("webhook: {0}")]
    Sink(String),
}

/// Where the events of a window are: the first and the end offset (exclusive)
/// of every partition that holds some.
#[derive(Debug, Clone, Default)]
pub struct ReadPlan {
    /// (topic, partition) → (first offset, end offset).
    pub ranges: HashMap<(String, i32), (i64, i64)>,
    /// (topic, partition) → end offset, for every partition read or not: the seam.
    pub ends: HashMap<(String, i32), i64>,
}

impl ReadPlan {
    /// How many records the window spans (before decoding and matching).
    pub fn records(&self) -> i64 {
        self.ranges.values().map(|(first, end)| end - first).sum()
    }
}

/// One record read back, decoded.
#[derive(Debug)]
pub struct Record {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub event: Event,
}

/// What a read found that was not an event.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadSummary {
    pub records: u64,
    /// Records that did not decode (they are in the consumer's DLQ already).
    pub undecodable: u64,
}

/// Reads windows of the event topics.
#[derive(Clone)]
pub struct HistoryReader {
    kafka: ClientConfig,
    codec: Arc<Codec>,
}

impl HistoryReader {
    pub fn new(kafka: ClientConfig, codec: Arc<Codec>) -> HistoryReader {
        HistoryReader { kafka, codec }
    }

    fn consumer(&self) -> Result<StreamConsumer, ReadError> {
        let mut config = self.kafka.clone();
        config
            // Required by librdkafka; never joined (we assign) nor committed.
            .set(
                "group.id",
                format!("opal-gateway-reader-{}", uuid::Uuid::new_v4().simple()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false");
        Ok(config.create()?)
    }

    /// Finds the offsets of `[from_ms, to_ms)` in `topics` (`to_ms: None`:
    /// up to the high watermark now).
    pub async fn plan(
        &self,
        topics: Vec<String>,
        from_ms: i64,
        to_ms: Option<i64>,
    ) -> Result<(StreamConsumer, ReadPlan), ReadError> {
        let consumer = self.consumer()?;
        // Blocking librdkafka calls: off the async workers.
        tokio::task::spawn_blocking(move || {
            let plan = plan_blocking(&consumer, &topics, from_ms, to_ms)?;
            Ok((consumer, plan))
        })
        .await?
    }

    /// Reads what `plan` spans with `consumer` (from [`HistoryReader::plan`]),
    /// sending each decoded record to `out` in offset order per partition.
    pub async fn read(
        &self,
        consumer: StreamConsumer,
        plan: &ReadPlan,
        out: mpsc::Sender<Record>,
    ) -> Result<ReadSummary, ReadError> {
        let mut summary = ReadSummary::default();
        if plan.ranges.is_empty() {
            return Ok(summary);
        }
        let mut assignment = TopicPartitionList::new();
        for ((topic, partition), (first, _)) in &plan.ranges {
            assignment.add_partition_offset(topic, *partition, Offset::Offset(*first))?;
        }
        consumer.assign(&assignment)?;
        let mut open: HashMap<(String, i32), i64> = plan
            .ranges
            .iter()
            .map(|(tp, (_, end))| (tp.clone(), *end))
            .collect();
        let mut topics: HashMap<String, Arc<str>> = HashMap::new();
        while !open.is_empty() {
            let message = match tokio::time::timeout(IDLE, consumer.recv()).await {
                Ok(message) => message?,
                Err(_) => {
                    close_passed(&consumer, &mut open)?;
                    continue;
                }
            };
            let key = (message.topic().to_owned(), message.partition());
            let Some(end) = open.get(&key).copied() else {
                continue;
            };
            let offset = message.offset();
            if offset + 1 >= end {
                open.remove(&key);
            }
            if offset >= end {
                continue;
            }
            summary.records += 1;
            let Some(payload) = message.payload() else {
                summary.undecodable += 1;
                continue;
            };
            let event = match self.codec.decode(payload).await {
                Ok(decoded) => decoded.event,
                Err(e) => {
                    tracing::warn!(topic = %key.0, partition = key.1, offset, error = %e, "replay: record does not decode; skipped");
                    summary.undecodable += 1;
                    continue;
                }
            };
            let topic = topics
                .entry(key.0.clone())
                .or_insert_with(|| Arc::from(key.0.as_str()))
                .clone();
            let record = Record {
                topic,
                partition: key.1,
                offset,
                event,
            };
            out.send(record).await.map_err(|_| ReadError::Abandoned)?;
        }
        Ok(summary)
    }
}

/// Drops from `open` the partitions whose position reached their end.
fn close_passed(
    consumer: &StreamConsumer,
    open: &mut HashMap<(String, i32), i64>,
) -> Result<(), ReadError> {
    let positions = consumer.position()?;
    for element in positions.elements() {
        let key = (element.topic().to_owned(), element.partition());
        if let (Some(end), Offset::Offset(at)) = (open.get(&key), element.offset())
            && at >= *end
        {
            open.remove(&key);
        }
    }
    Ok(())
}

fn plan_blocking(
    consumer: &StreamConsumer,
    topics: &[String],
    from_ms: i64,
    to_ms: Option<i64>,
) -> Result<ReadPlan, ReadError> {
    let mut partitions = Vec::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), LOOKUP_TIMEOUT)?;
        for t in metadata.topics() {
            for p in t.partitions() {
                partitions.push((t.name().to_owned(), p.id()));
            }
        }
    }
    let mut plan = ReadPlan::default();
    if partitions.is_empty() {
        return Ok(plan);
    }
    let mut highs = HashMap::new();
    for (topic, partition) in &partitions {
        let (_, high) = consumer.fetch_watermarks(topic, *partition, LOOKUP_TIMEOUT)?;
        highs.insert((topic.clone(), *partition), high);
    }
    let starts = offsets_at(consumer, &partitions, from_ms)?;
    let ends = match to_ms {
        Some(to) => offsets_at(consumer, &partitions, to)?,
        None => HashMap::new(),
    };
    for tp in partitions {
        let high = highs[&tp];
        // No record at or after the time: the window ends at the watermark.
        let end = ends.get(&tp).copied().flatten().unwrap_or(high).min(high);
        plan.ends.insert(tp.clone(), end);
        if let Some(Some(first)) = starts.get(&tp).copied()
            && first < end
        {
            plan.ranges.insert(tp, (first, end));
        }
    }
    Ok(plan)
}

/// The first offset whose timestamp is at or after `at_ms`, per partition
/// (`None`: no such record yet).
fn offsets_at(
    consumer: &StreamConsumer,
    partitions: &[(String, i32)],
    at_ms: i64,
) -> Result<HashMap<(String, i32), Option<i64>>, ReadError> {
    let mut query = TopicPartitionList::new();
    for (topic, partition) in partitions {
        query.add_partition_offset(topic, *partition, Offset::Offset(at_ms))?;
    }
    let found = consumer.offsets_for_times(query, LOOKUP_TIMEOUT)?;
    Ok(found
        .elements()
        .iter()
        .map(|e| {
            let offset = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            ((e.topic().to_owned(), e.partition()), offset)
        })
        .collect())
}
