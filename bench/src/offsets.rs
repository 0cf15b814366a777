//! Where a throughput round's records start: each partition's end offset
//! before the round produces, committed as a fresh group's position so the
//! group's consumer reads that round's records and no earlier ones.

use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Each partition's end offset of `topics` now.
pub fn end_offsets(config: &ClientConfig, topics: &[&str]) -> anyhow::Result<TopicPartitionList> {
    let consumer: BaseConsumer = config.create()?;
    let mut offsets = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), TIMEOUT)
            .with_context(|| format!("metadata of {topic}"))?;
        let partitions = metadata
            .topics()
            .first()
            .map(|t| t.partitions().len())
            .unwrap_or_default();
        anyhow::ensure!(partitions > 0, "topic {topic} has no partitions");
        for partition in 0..partitions as i32 {
            let (_, high) = consumer
                .fetch_watermarks(topic, partition, TIMEOUT)
                .with_context(|| format!("end offset of {topic}/{partition}"))?;
            offsets.add_partition_offset(topic, partition, Offset::Offset(high))?;
        }
    }
    Ok(offsets)
}

/// Commits `offsets` for `group` (which has no members yet), so its first
/// consumer starts there.
pub fn start_group_at(
    config: &ClientConfig,
    group: &str,
    offsets: &TopicPartitionList,
) -> anyhow::Result<()> {
    let mut config = config.clone();
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = config.create()?;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match consumer.commit(offsets, CommitMode::Sync) {
            Ok(()) => return Ok(()),
            // A new client has not found the group's coordinator yet, or the
            // broker is still loading the group: polling lets it catch up.
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, group, "start offsets not committed yet; retrying");
                let _ = consumer.poll(Duration::from_millis(100));
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("commit the start offsets of group {group}"));
            }
        }
    }
}
