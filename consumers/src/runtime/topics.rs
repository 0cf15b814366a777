//! The input topics: checked at start-up, partition counts for [`Source`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::Consumer;
use tracing::warn;

use crate::config::RuntimeArgs;
use crate::handler::Handler;

use super::Runtime;

/// How long start-up waits for the brokers' metadata.
const STARTUP_METADATA_TIMEOUT: Duration = Duration::from_secs(30);

/// How long start-up waits for missing topics to appear: a topic created a
/// moment ago (kafka-init just finished) may not be in every broker's
/// metadata yet.
const MISSING_TOPIC_GRACE: Duration = Duration::from_secs(5);

/// Start-up check: the brokers answer and accept our credentials, and every
/// input topic and the dead-letter topic exist (a missing DLQ would otherwise
/// stall the consumer at its first dead letter). Returns the input topics'
/// partition counts, fetched before the group forms (a metadata request made
/// while the consumer joins can time out).
pub(super) async fn check_topics(
    args: &RuntimeArgs,
    inputs: &[String],
    dlq: &str,
) -> anyhow::Result<HashMap<String, i32>> {
    let grace_ends = Instant::now() + MISSING_TOPIC_GRACE;
    loop {
        let metadata = args
            .kafka
            .cluster_metadata(STARTUP_METADATA_TIMEOUT)
            .await
            .context("cannot start without Kafka")?;
        let partitions: HashMap<String, i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| (t.name().to_owned(), t.partitions().len() as i32))
            .collect();
        let missing: Vec<&str> = inputs
            .iter()
            .map(String::as_str)
            .chain([dlq])
            .filter(|t| !partitions.contains_key(*t))
            .collect();
        if missing.is_empty() {
            return Ok(partitions
                .into_iter()
                .filter(|(name, _)| inputs.contains(name))
                .collect());
        }
        if Instant::now() >= grace_ends {
            anyhow::bail!(
                "missing topic(s) {}: create them with scripts/kafka-init.sh (same OPAL_TOPIC_PREFIX; a consumer group's DLQ comes from topics/topics.toml)",
                missing.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

impl<H: Handler> Runtime<H> {
    /// The partition count of `topic` from metadata, fetched once and again
    /// when a partition beyond it shows up; 0 while the broker cannot say.
    pub(super) async fn partition_count(&self, topic: &str, partition: i32) -> i32 {
        let known = self
            .partition_counts
            .lock()
            .ok()
            .and_then(|c| c.get(topic).copied());
        if let Some(count) = known.filter(|c| partition < *c) {
            return count;
        }
        let consumer = self.consumer.clone();
        let name = topic.to_owned();
        let fetched = tokio::task::spawn_blocking(move || {
            consumer
                .fetch_metadata(Some(&name), Duration::from_secs(5))
                .ok()
                .and_then(|m| m.topics().first().map(|t| t.partitions().len() as i32))
        })
        .await
        .ok()
        .flatten()
        .filter(|count| *count > 0);
        match fetched {
            Some(count) => {
                if let Ok(mut counts) = self.partition_counts.lock() {
                    counts.insert(topic.to_owned(), count);
                }
                count
            }
            None => {
                warn!(topic, "partition count unknown: topic metadata unavailable");
                0
            }
        }
    }
}
