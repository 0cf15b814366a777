//! `opal-dlq`: inspect and replay a consumer group's dead letters.
//!
//! Replay republishes the original key and value bytes to the original topic
//! with an incremented `opal-replay-count` header; groups dedupe by event id, so
//! replaying is safe. A record replayed more than `max_replays` times is parked
//! in `<dlq>.parked` instead. The replayer remembers how far it got in its own
//! consumer group (`<group>.dlq-replayer`), so a second replay does not resend.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::Serialize;

use crate::dlq::{header_text, headers};

/// Reads every record of `topic` up to its current end. With `group`, starts
/// from that group's committed offsets (earliest if none) instead of the beginning.
pub fn read_to_end(
    config: &ClientConfig,
    topic: &str,
    group: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<(BaseConsumer, Vec<OwnedMessage>)> {
    let mut config = config.clone();
    config
        .set(
            "group.id",
            group
                .map(str::to_owned)
                .unwrap_or_else(|| format!("opal-dlq-reader-{}", uuid::Uuid::new_v4().simple())),
        )
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = config.create()?;
    let partitions = opal_topics::connection::topic_partitions(&consumer, topic, timeout)?;
    anyhow::ensure!(!partitions.is_empty(), "topic {topic} does not exist");
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    let mut wanted = TopicPartitionList::new();
    for p in &partitions {
        wanted.add_partition(topic, *p);
    }
    let committed = if group.is_some() {
        Some(consumer.committed_offsets(wanted, timeout)?)
    } else {
        None
    };
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        let start = committed
            .as_ref()
            .and_then(|c| c.find_partition(topic, p))
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .unwrap_or(low);
        if start < high {
            ends.insert(p, high);
            assignment.add_partition_offset(topic, p, Offset::Offset(start))?;
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return Ok((consumer, out));
    }
    consumer.assign(&assignment)?;
    let deadline = std::time::Instant::now() + timeout.max(Duration::from_secs(10));
    while !ends.is_empty() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "timed out reading {topic}"
        );
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                if ends
                    .get(&m.partition())
                    .is_some_and(|end| m.offset() + 1 >= *end)
                {
                    ends.remove(&m.partition());
                }
                out.push(m.detach());
            }
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    Ok((consumer, out))
}

/// Counts of dead letters by error class, with first and last failure times.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClassSummary {
    pub error_class: String,
    pub count: usize,
    pub first_failed_at: Option<i64>,
    pub last_failed_at: Option<i64>,
}

pub fn summarise(records: &[OwnedMessage]) -> Vec<ClassSummary> {
    let mut classes: BTreeMap<String, ClassSummary> = BTreeMap::new();
    for m in records {
        let class =
            header_text(m, headers::EXCEPTION_FQCN).unwrap_or_else(|| "(unknown)".to_owned());
        let at = header_text(m, headers::FAILED_AT).and_then(|t| t.parse::<i64>().ok());
        let entry = classes.entry(class.clone()).or_insert(ClassSummary {
            error_class: class,
            count: 0,
            first_failed_at: None,
            last_failed_at: None,
        });
        entry.count += 1;
        if let Some(at) = at {
            entry.first_failed_at = Some(entry.first_failed_at.map_or(at, |f| f.min(at)));
            entry.last_failed_at = Some(entry.last_failed_at.map_or(at, |l| l.max(at)));
        }
    }
    classes.into_values().collect()
}

/// What replay does with a dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ReplayAction {
    Replay { topic: String, replay_count: u32 },
    Park { topic: String, replay_count: u32 },
    Skip { reason: String },
}

#[derive(Debug, Clone)]
pub struct ReplayFilter {
    pub error_class: Option<String>,
    /// Only dead letters that failed at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    pub max_replays: u32,
}

/// Decides what to do with one dead letter.
pub fn plan(m: &OwnedMessage, filter: &ReplayFilter, parked_topic: &str) -> ReplayAction {
    if let Some(class) = &filter.error_class
        && header_text(m, headers::EXCEPTION_FQCN).as_deref() != Some(class.as_str())
    {
        return ReplayAction::Skip {
            reason: "other error class".into(),
        };
    }
    if let Some(since) = filter.since_ms {
        let at = header_text(m, headers::FAILED_AT)
            .and_then(|t| t.parse::<i64>().ok())
            .unwrap_or(0);
        if at < since {
            return ReplayAction::Skip {
                reason: "failed before --since".into(),
            };
        }
    }
    let Some(topic) = header_text(m, headers::ORIGINAL_TOPIC) else {
        return ReplayAction::Skip {
            reason: "no original-topic header".into(),
        };
    };
    let replayed = header_text(m, headers::REPLAY_COUNT)
        .and_then(|c| c.parse::<u32>().ok())
        .unwrap_or(0);
    if replayed >= filter.max_replays {
        ReplayAction::Park {
            topic: parked_topic.to_owned(),
            replay_count: replayed,
        }
    } else {
        ReplayAction::Replay {
            topic,
            replay_count: replayed + 1,
        }
    }
}

/// Sends `m`'s key and value to `topic`, keeping its non-DLQ headers and setting the replay count.
pub async fn republish(
    producer: &FutureProducer,
    m: &OwnedMessage,
    topic: &str,
    replay_count: u32,
    keep_dlq_headers: bool,
) -> anyhow::Result<()> {
    let count = replay_count.to_string();
    let mut out = OwnedHeaders::new();
    if let Some(original) = m.headers() {
        for h in original.iter().filter(|h| h.key != headers::REPLAY_COUNT) {
            let dlq_header = h.key.starts_with("kafka_dlt-") || h.key.starts_with("opal-dlq-");
            if keep_dlq_headers || !dlq_header {
                out = out.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
    }
    let out = out.insert(Header {
        key: headers::REPLAY_COUNT,
        value: Some(&count),
    });
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(out);
    if let Some(k) = m.key() {
        record = record.key(k);
    }
    if let Some(v) = m.payload() {
        record = record.payload(v);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| anyhow::anyhow!("send to {topic}: {e}"))?;
    Ok(())
}

/// Commits the replayer's progress past `records`.
pub fn commit_progress(
    consumer: &BaseConsumer,
    topic: &str,
    records: &[OwnedMessage],
) -> anyhow::Result<()> {
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for m in records {
        let e = next.entry(m.partition()).or_insert(0);
        *e = (*e).max(m.offset() + 1);
    }
    if next.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for (p, o) in next {
        tpl.add_partition_offset(topic, p, Offset::Offset(o))?;
    }
    consumer.commit(&tpl, CommitMode::Sync)?;
    Ok(())
}
