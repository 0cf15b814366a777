//! The producer test suite (`opal-producer test`): proves the publish path of an
//! environment end to end. Publishes one valid event of every type, reads each
//! back from its topic, decodes it through the registry, compares every field,
//! the key, the headers and the schema id, and checks that an invalid event is
//! refused before it reaches Kafka.

use std::time::Duration;

use opal_schemas::samples::default_example;
use opal_schemas::{Event, EventType};
use opal_topics::KafkaArgs;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::error::PublishError;
use crate::publisher::{Delivery, Publisher, headers};

#[derive(Debug, Clone, Serialize)]
pub struct CheckRow {
    pub check: String,
    pub passed: bool,
    pub detail: String,
}

impl CheckRow {
    fn new(check: impl Into<String>, outcome: Result<String, String>) -> Self {
        let (passed, detail) = match outcome {
            Ok(detail) => (true, detail),
            Err(detail) => (false, detail),
        };
        CheckRow {
            check: check.into(),
            passed,
            detail,
        }
    }
}

/// Runs every check; never stops early except when a dependency is down.
pub async fn run(publisher: &Publisher, kafka: &KafkaArgs, timeout: Duration) -> Vec<CheckRow> {
    let mut rows = Vec::new();
    let broker = kafka
        .fetch_metadata(timeout)
        .await
        .map(|(brokers, _)| format!("{} ({brokers} broker(s))", kafka.brokers))
        .map_err(|e| e.to_string());
    rows.push(CheckRow::new("broker reachable", broker));
    let registry = publisher.codec().registry();
    let reachable = registry
        .ping()
        .await
        .map(|()| registry.url().to_owned())
        .map_err(|e| e.to_string());
    rows.push(CheckRow::new("registry reachable", reachable));
    if rows.iter().any(|r| !r.passed) {
        rows.push(CheckRow::new(
            "round trips",
            Err("skipped: a dependency is unreachable".to_owned()),
        ));
        return rows;
    }

    let reader = match reader(kafka) {
        Ok(reader) => reader,
        Err(e) => {
            rows.push(CheckRow::new("read-back consumer", Err(e)));
            return rows;
        }
    };
    for event_type in EventType::ALL {
        let outcome = round_trip(publisher, &reader, event_type, timeout).await;
        rows.push(CheckRow::new(format!("round trip {event_type}"), outcome));
    }
    rows.push(CheckRow::new(
        "invalid event refused",
        invalid_refused(publisher, kafka, timeout).await,
    ));
    rows
}

fn reader(kafka: &KafkaArgs) -> Result<StreamConsumer, String> {
    let mut config = kafka.client_config().map_err(|e| e.to_string())?;
    config
        .set(
            "group.id",
            format!("opal-producer-test-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| format!("cannot create the read-back consumer: {e}"))
}

async fn round_trip(
    publisher: &Publisher,
    reader: &StreamConsumer,
    event_type: EventType,
    timeout: Duration,
) -> Result<String, String> {
    let mut sent = default_example(event_type);
    *sent.envelope_mut() = publisher.new_envelope(None);
    publisher.fill_envelope(&mut sent);
    let delivery = publisher
        .publish(sent.clone())
        .await
        .map_err(|e| format!("publish: {e}"))?;
    let message = read_at(reader, &delivery, timeout).await?;
    let check = |ok: bool, what: String| if ok { Ok(()) } else { Err(what) };
    check(
        message.key() == Some(sent.key().as_bytes()),
        format!("key is not '{}'", sent.key()),
    )?;
    let header = |name: &str| {
        message
            .headers()
            .and_then(|h| h.iter().find(|x| x.key == name))
            .and_then(|x| x.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    check(
        header(headers::EVENT_ID).as_deref() == Some(&sent.envelope().event_id),
        "event id header".into(),
    )?;
    check(
        header(headers::CORRELATION_ID).as_deref() == Some(&sent.envelope().correlation_id),
        "correlation id header".into(),
    )?;
    check(
        header(headers::EVENT_TYPE).as_deref() == Some(event_type.name()),
        "event type header".into(),
    )?;
    check(
        header(headers::SCHEMA_ID) == Some(delivery.schema_id.to_string()),
        "schema id header".into(),
    )?;
    let payload = message.payload().ok_or("record has no value")?;
    let decoded = publisher
        .codec()
        .decode(payload)
        .await
        .map_err(|e| format!("decode: {e}"))?;
    check(
        decoded.schema_id == delivery.schema_id,
        format!(
            "wire schema id {} ≠ {}",
            decoded.schema_id, delivery.schema_id
        ),
    )?;
    let registered = publisher
        .codec()
        .schema_id(event_type, &delivery.topic)
        .await
        .map_err(|e| e.to_string())?;
    check(
        registered == delivery.schema_id,
        format!("registry has id {registered} for our schema"),
    )?;
    if decoded.event != sent {
        return Err(first_difference(&sent, &decoded.event));
    }
    Ok(format!(
        "{}/{}@{} schema id {}",
        delivery.topic, delivery.partition, delivery.offset, delivery.schema_id
    ))
}

/// The first field whose value differs, for a readable failure.
fn first_difference(sent: &Event, got: &Event) -> String {
    let (a, b) = (sent.to_json(), got.to_json());
    if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
        for (k, v) in a {
            if b.get(k) != Some(v) {
                return format!(
                    "field '{k}': sent {v}, read back {}",
                    b.get(k).cloned().unwrap_or_default()
                );
            }
        }
    }
    "read back a different event".to_owned()
}

/// The record at `delivery`'s topic, partition and offset, read with
/// `reader` (which it assigns there): what was really written.
pub async fn read_at(
    reader: &StreamConsumer,
    delivery: &Delivery,
    timeout: Duration,
) -> Result<rdkafka::message::OwnedMessage, String> {
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(
            &delivery.topic,
            delivery.partition,
            Offset::Offset(delivery.offset),
        )
        .map_err(|e| e.to_string())?;
    reader
        .assign(&assignment)
        .map_err(|e| format!("assign: {e}"))?;
    let message = tokio::time::timeout(timeout, reader.recv())
        .await
        .map_err(|_| {
            format!(
                "nothing read back from {}/{}@{} within {timeout:?}",
                delivery.topic, delivery.partition, delivery.offset
            )
        })?
        .map_err(|e| format!("consume: {e}"))?;
    if message.offset() != delivery.offset {
        return Err(format!(
            "read offset {} instead of {}",
            message.offset(),
            delivery.offset
        ));
    }
    Ok(message.detach())
}

async fn invalid_refused(
    publisher: &Publisher,
    kafka: &KafkaArgs,
    timeout: Duration,
) -> Result<String, String> {
    let topic = publisher.topic(EventType::FeedbackSubmitted);
    let before = watermarks(kafka, &topic, timeout).await?;
    let mut event = default_example(EventType::FeedbackSubmitted);
    *event.envelope_mut() = publisher.new_envelope(None);
    if let Event::FeedbackSubmitted(e) = &mut event {
        e.rating = 9;
    }
    match publisher.publish(event).await {
        Err(PublishError::Invalid { source, .. }) if source.field == "rating" => {}
        Err(other) => return Err(format!("refused for the wrong reason: {other}")),
        Ok(d) => {
            return Err(format!(
                "published to {}/{}@{}",
                d.topic, d.partition, d.offset
            ));
        }
    }
    let after = watermarks(kafka, &topic, timeout).await?;
    if before != after {
        return Err(format!(
            "{topic} grew while refusing: {before:?} → {after:?}"
        ));
    }
    Ok("rating 9 refused naming 'rating'; nothing written".to_owned())
}

/// High watermark of every partition of `topic`.
async fn watermarks(kafka: &KafkaArgs, topic: &str, timeout: Duration) -> Result<Vec<i64>, String> {
    let consumer: BaseConsumer = kafka
        .client_config()
        .map_err(|e| e.to_string())?
        .create()
        .map_err(|e| e.to_string())?;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let metadata = consumer
            .fetch_metadata(Some(&topic), timeout)
            .map_err(|e| e.to_string())?;
        let partitions = metadata
            .topics()
            .first()
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        (0..partitions as i32)
            .map(|p| {
                consumer
                    .fetch_watermarks(&topic, p, timeout)
                    .map(|(_, high)| high)
                    .map_err(|e| e.to_string())
            })
            .collect()
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The pass/fail table and its closing count.
pub fn render(rows: &[CheckRow]) -> String {
    let width = rows.iter().map(|r| r.check.len()).max().unwrap_or(5).max(5);
    let mut out = format!("{:<width$}  RESULT  DETAIL\n", "CHECK");
    for r in rows {
        out.push_str(&format!(
            "{:<width$}  {:<6}  {}\n",
            r.check,
            if r.passed { "PASS" } else { "FAIL" },
            r.detail
        ));
    }
    let passed = rows.iter().filter(|r| r.passed).count();
    out.push_str(&format!(
        "producer suite: {passed} passed, {} failed\n",
        rows.len() - passed
    ));
    out
}
