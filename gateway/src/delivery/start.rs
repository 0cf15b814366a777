//! Where a new webhook route starts reading. The runtime starts a group
//! without committed offsets at the beginning of its topics; a route added
//! to a running system should not receive days of history, so by default
//! (`start = "latest"`) a topic the route's group has never committed on is
//! first placed at its end. A group that has offsets keeps them (a restart,
//! a changed route: nothing is skipped).

use std::time::Duration;

use opal_topics::KafkaArgs;
use opal_topics::offsets::{ResetError, ResetTo, reset_offsets};
use tracing::info;

const TIMEOUT: Duration = Duration::from_secs(15);

/// Places `group` at the end of each of `topics` it has no offsets on.
pub async fn start_new_group_at_end(
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
        info!(group, topic, "new route: starting at the end of the topic");
    }
    Ok(())
}
