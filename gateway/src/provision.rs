//! The gateway's dead-letter topics: one for its own group and one per
//! webhook route (`opal-gateway.<route>.dlq`). Routes come and go with the
//! routes file, so the catalog cannot list them: the gateway creates the ones
//! missing at start-up and before a reload is applied, sized by the catalog's
//! profile for the environment and its DLQ retention, through the same
//! provisioning code as `kafka-init` (it never deletes or changes a topic).
//! A cluster that refuses (no rights to create topics) stops start-up, or
//! refuses the reload, with the topic and the reason.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use opal_consumers::RuntimeArgs;
use opal_topics::provision::Target;
use opal_topics::{Catalog, TopicSpec, dlq_topic};
use tracing::info;

use crate::delivery::route_group;
use crate::routes::{Route, Sink};

const TIMEOUT: Duration = Duration::from_secs(30);

/// The consumer groups of the gateway: its own, then one per webhook route.
pub fn groups(base_group: &str, routes: &[Route]) -> Vec<String> {
    let mut groups = vec![base_group.to_owned()];
    groups.extend(
        routes
            .iter()
            .filter(|r| matches!(r.sink, Sink::Webhook(_)))
            .map(|r| route_group(base_group, &r.name)),
    );
    groups
}

/// Creates the DLQs of `groups` that do not exist yet.
pub async fn ensure_dlqs(args: &RuntimeArgs, groups: &[String]) -> anyhow::Result<()> {
    let catalog = Catalog::bundled().context("topic catalog")?;
    let profile = catalog.profile(args.environment);
    let plan: Vec<TopicSpec> = groups
        .iter()
        .map(|group| TopicSpec {
            name: dlq_topic(&args.topic_prefix, group),
            partitions: profile.partitions,
            replication_factor: profile.replication_factor,
            configs: BTreeMap::from([
                ("cleanup.policy".to_owned(), "delete".to_owned()),
                (
                    "min.insync.replicas".to_owned(),
                    profile.min_insync_replicas.to_string(),
                ),
                (
                    "retention.ms".to_owned(),
                    catalog.dlq.retention_ms.to_string(),
                ),
            ]),
            event_type: None,
        })
        .collect();
    let registry = args
        .registry
        .client(TIMEOUT)
        .context("schema registry client")?;
    let target = Target::new(args.kafka.clone(), registry, TIMEOUT).context("kafka admin")?;
    let report = target
        .init(&plan, false)
        .await
        .context("cannot create the gateway's dead-letter topics")?;
    for change in &report.changes {
        info!(change = %change, "dead-letter topic");
    }
    Ok(())
}
