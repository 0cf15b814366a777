//! A fresh topic prefix on the stack under test, with every event topic and
//! schema provisioned as `kafka-init` does, and a publisher for it.

use std::time::Duration;

use opal_producers::{PublishMetrics, Publisher, PublisherConfig};
use opal_schemas::Environment;
use opal_topics::Catalog;
use opal_topics::provision::Target;

use crate::unique;

const TIMEOUT: Duration = Duration::from_secs(60);

/// Provisions `<tag>-<uuid>.` on `brokers` and `registry_url`; returns the
/// publisher settings for it (prefix set) and the prefix.
pub async fn provisioned_prefix(
    tag: &str,
    brokers: &str,
    registry_url: &str,
) -> (PublisherConfig, String) {
    let prefix = format!("{}.", unique(tag));
    let mut config = PublisherConfig::local(brokers, registry_url);
    config.topic_prefix = prefix.clone();
    let plan = Catalog::bundled()
        .expect("catalog")
        .plan(Environment::Development, &prefix);
    let registry = config.registry.client(TIMEOUT).expect("registry client");
    let target = Target::new(config.kafka.clone(), registry, TIMEOUT).expect("target");
    target.init(&plan, false).await.expect("kafka-init");
    (config, prefix)
}

/// A publisher with metrics of its own (not the process's registry).
pub fn publisher(config: &PublisherConfig) -> Publisher {
    let metrics = PublishMetrics::new(&prometheus::Registry::new()).expect("metrics");
    Publisher::new(config.clone(), metrics).expect("publisher")
}
