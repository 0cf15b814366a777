//! Moving a consumer group's committed offsets: replay from a point in time.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::connection::KafkaArgs;

/// Where to move the group to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    Earliest,
    Latest,
    /// The first offset whose timestamp is at or after this (ms since the epoch).
    Datetime(i64),
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PartitionReset {
    pub partition: i32,
    pub current: Option<i64>,
    pub target: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error(
        "group {group} has {members} active member(s); stop its consumers before moving its offsets"
    )]
    GroupActive { group: String, members: usize },
    #[error("cannot describe group {group}, so its offsets were left alone: {source}")]
    CannotDescribeGroup {
        group: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("topic {0} does not exist")]
    NoSuchTopic(String),
    #[error(transparent)]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Connection(#[from] crate::connection::ConnectionError),
}

/// Computes (and unless `dry_run`, commits) the group's new offsets for `topic`.
/// Refuses while the group has members (DescribeGroups, as
/// `kafka-consumer-groups --reset-offsets` does): a running member would
/// overwrite the new offsets with its own at its next commit.
pub fn reset_offsets(
    kafka: &KafkaArgs,
    group: &str,
    topic: &str,
    to: ResetTo,
    dry_run: bool,
    timeout: Duration,
) -> Result<Vec<PartitionReset>, ResetError> {
    let mut config = kafka.client_config()?;
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = config.create()?;
    let groups = consumer
        .fetch_group_list(Some(group), timeout)
        .map_err(|source| ResetError::CannotDescribeGroup {
            group: group.to_owned(),
            source,
        })?;
    let members: usize = groups
        .groups()
        .iter()
        .filter(|g| g.name() == group)
        .map(|g| g.members().len())
        .sum();
    if members > 0 {
        return Err(ResetError::GroupActive {
            group: group.to_owned(),
            members,
        });
    }
    let partitions = crate::connection::topic_partitions(&consumer, topic, timeout)?;
    if partitions.is_empty() {
        return Err(ResetError::NoSuchTopic(topic.to_owned()));
    }
    let mut wanted = TopicPartitionList::new();
    for p in &partitions {
        wanted.add_partition(topic, *p);
    }
    let committed = consumer.committed_offsets(wanted, timeout)?;
    let by_time = match to {
        ResetTo::Datetime(ms) => {
            let mut query = TopicPartitionList::new();
            for p in &partitions {
                query.add_partition_offset(topic, *p, Offset::Offset(ms))?;
            }
            Some(consumer.offsets_for_times(query, timeout)?)
        }
        _ => None,
    };
    let mut plan = Vec::new();
    let mut commit = TopicPartitionList::new();
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        let target = match to {
            ResetTo::Earliest => low,
            ResetTo::Latest => high,
            ResetTo::Datetime(_) => match by_time
                .as_ref()
                .and_then(|t| t.find_partition(topic, p))
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) if o >= 0 => o,
                // No record at or after the time: start at the end.
                _ => high,
            },
        };
        let current = match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        };
        plan.push(PartitionReset {
            partition: p,
            current,
            target,
        });
        commit.add_partition_offset(topic, p, Offset::Offset(target))?;
    }
    if !dry_run {
        consumer.commit(&commit, CommitMode::Sync)?;
    }
    Ok(plan)
}
