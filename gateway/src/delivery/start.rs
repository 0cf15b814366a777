//! Where the gateway's groups start reading. The runtime starts a group
//! without committed offsets at the beginning of its topics
//! (`auto.offset.reset=earliest`). The live feed must not push the topics'
//! whole history as "live" on a first deployment (history is what `from`
//! and `/replay` are for), so the gateway's own group is first placed at the
//! end of every event topic it has never committed on; nor should a webhook
//! route added to a running system receive days of history, so by default
//! (`start = "latest"`) a topic a group has never committed on is first
//! placed at its end, by committing its end offsets. A group that has
//! offsets keeps them (a restart, a changed route: nothing is skipped).
//!
//! This happens before the group's runtime starts and before the gateway
//! answers ready (or a reload is applied), not through
//! `auto.offset.reset=latest`: that would resolve "the end" only when the
//! runtime first fetches, after readiness, and skip the events published in
//! between.

use std::time::Duration;

use opal_consumers::RuntimeArgs;
use opal_schemas::EventType;
use opal_topics::KafkaArgs;
use opal_topics::offsets::{ResetError, ResetTo, reset_offsets};
use tracing::info;

use super::route_group;
use crate::routes::{Route, Sink};
use crate::webhook::config::Start;

const TIMEOUT: Duration = Duration::from_secs(15);

/// The groups to place at the end and their topics: the gateway's own group
/// (every event topic) and each webhook route starting at `latest`.
pub fn start_positions(
    args: &RuntimeArgs,
    base_group: &str,
    routes: &[Route],
) -> Vec<(String, Vec<String>)> {
    let topic = |t: &EventType| format!("{}{}", args.topic_prefix, t.topic());
    let mut groups = vec![(
        base_group.to_owned(),
        EventType::ALL.iter().map(topic).collect(),
    )];
    groups.extend(routes.iter().filter_map(|route| match &route.sink {
        Sink::Webhook(config) if config.start == Start::Latest => Some((
            route_group(base_group, &route.name),
            route.selector.event_types().iter().map(topic).collect(),
        )),
        _ => None,
    }));
    groups
}

/// Places every group of [`start_positions`] that has no offsets at the end
/// of its topics.
pub async fn place_new_groups(
    args: &RuntimeArgs,
    base_group: &str,
    routes: &[Route],
) -> anyhow::Result<()> {
    for (group, topics) in start_positions(args, base_group, routes) {
        start_new_group_at_end(&args.kafka, &group, &topics).await?;
    }
    Ok(())
}

/// Places `group` at the end of each of `topics` it has no offsets on.
async fn start_new_group_at_end(
    kafka: &KafkaArgs,
    group: &str,
    topics: &[String],
) -> anyhow::Result<()> {
    for topic in topics {
        let (kafka, group, topic) = (kafka.clone(), group.to_owned(), topic.clone());
        tokio::task::spawn_blocking(move || place(&kafka, &group, &topic))
            .await
            .map_err(|e| anyhow::anyhow!("start offsets: {e}"))??;
    }
    Ok(())
}

fn place(kafka: &KafkaArgs, group: &str, topic: &str) -> anyhow::Result<()> {
    let plan = match reset_offsets(kafka, group, topic, ResetTo::Latest, true, TIMEOUT) {
        Ok(plan) => plan,
        // Members: the group is not new (a previous instance still leaving).
        Err(ResetError::GroupActive { .. }) => return Ok(()),
        Err(e) => return Err(anyhow::anyhow!("group {group} on {topic}: {e}")),
    };
    if plan.iter().all(|p| p.current.is_none()) {
        reset_offsets(kafka, group, topic, ResetTo::Latest, false, TIMEOUT)
            .map_err(|e| anyhow::anyhow!("group {group} on {topic}: {e}"))?;
        info!(group, topic, "new group: starting at the end of the topic");
    }
    Ok(())
}
