//! The topic catalog (`topics.toml`) and the desired state it gives for one
//! environment and topic-name prefix.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use opal_schemas::{Environment, EventType};
use serde::Deserialize;

/// The catalog shipped with the binaries.
pub const BUNDLED: &str = include_str!("../topics.toml");

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read topic catalog {path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("topic catalog {path} is not valid: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CleanupPolicy {
    Delete,
    Compact,
}

impl CleanupPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub partitions: i32,
    pub replication_factor: i32,
    pub min_insync_replicas: i32,
    pub retention_ms: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlqSettings {
    pub retention_ms: i64,
    pub consumer_groups: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicEntry {
    pub name: String,
    pub key: String,
    pub schema: String,
    pub cleanup_policy: CleanupPolicy,
    pub retention_ms: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    environments: HashMap<String, Profile>,
    pub dlq: DlqSettings,
    pub topics: Vec<TopicEntry>,
}

/// One topic as it should exist in a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Full name, prefix included.
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
    /// The topic-level configs opal manages.
    pub configs: BTreeMap<String, String>,
    /// The event type whose schema is the topic's value schema; None for DLQs.
    pub event_type: Option<EventType>,
}

impl TopicSpec {
    /// The value subject (TopicNameStrategy).
    pub fn subject(&self) -> String {
        opal_schemas::value_subject(&self.name)
    }
}

impl Catalog {
    pub fn bundled() -> Result<Catalog, CatalogError> {
        Catalog::parse(BUNDLED, "<bundled topics.toml>")
    }

    pub fn load(path: &Path) -> Result<Catalog, CatalogError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Unreadable {
            path: shown.clone(),
            source,
        })?;
        Catalog::parse(&text, &shown)
    }

    pub fn parse(text: &str, origin: &str) -> Result<Catalog, CatalogError> {
        let invalid = |message: String| CatalogError::Invalid {
            path: origin.to_owned(),
            message,
        };
        let catalog: Catalog = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        catalog.validate().map_err(invalid)?;
        Ok(catalog)
    }

    /// Every event type appears exactly once, with the topic, key and schema the
    /// schema crate knows; every environment has a sane profile.
    fn validate(&self) -> Result<(), String> {
        for env in Environment::ALL {
            let p = self
                .environments
                .get(env.as_str())
                .ok_or(format!("environment {env} is missing"))?;
            if p.partitions < 1 || p.replication_factor < 1 || p.min_insync_replicas < 1 {
                return Err(format!(
                    "environment {env}: partitions, replication and min.insync.replicas must be ≥ 1"
                ));
            }
            if p.min_insync_replicas > p.replication_factor {
                return Err(format!(
                    "environment {env}: min_insync_replicas exceeds replication_factor"
                ));
            }
        }
        if let Some(unknown) = self
            .environments
            .keys()
            .find(|k| k.parse::<Environment>().is_err())
        {
            return Err(format!("unknown environment '{unknown}'"));
        }
        for event_type in EventType::ALL {
            let entries: Vec<_> = self
                .topics
                .iter()
                .filter(|t| t.name == event_type.topic())
                .collect();
            let [entry] = entries[..] else {
                return Err(format!(
                    "topic {} must appear exactly once",
                    event_type.topic()
                ));
            };
            if entry.key != event_type.key_field() {
                return Err(format!(
                    "topic {}: key is '{}', the event's key field is '{}'",
                    entry.name,
                    entry.key,
                    event_type.key_field()
                ));
            }
            if entry.schema != event_type.schema_file() {
                return Err(format!(
                    "topic {}: schema is '{}', expected '{}'",
                    entry.name,
                    entry.schema,
                    event_type.schema_file()
                ));
            }
        }
        if let Some(extra) = self
            .topics
            .iter()
            .find(|t| t.name.parse::<EventType>().is_err())
        {
            return Err(format!(
                "topic {} has no event type in opal-schemas",
                extra.name
            ));
        }
        Ok(())
    }

    pub fn profile(&self, env: Environment) -> &Profile {
        // validate() guarantees every environment is present.
        &self.environments[env.as_str()]
    }

    /// The desired topics for `env`, names prefixed with `prefix`: the event
    /// topics, then one DLQ per consumer group.
    pub fn plan(&self, env: Environment, prefix: &str) -> Vec<TopicSpec> {
        let profile = self.profile(env);
        let configs = |policy: CleanupPolicy, retention: Option<i64>| {
            let mut c = BTreeMap::from([
                ("cleanup.policy".to_owned(), policy.as_str().to_owned()),
                (
                    "min.insync.replicas".to_owned(),
                    profile.min_insync_replicas.to_string(),
                ),
            ]);
            if let (CleanupPolicy::Delete, Some(ms)) = (policy, retention) {
                c.insert("retention.ms".to_owned(), ms.to_string());
            }
            c
        };
        let mut plan: Vec<TopicSpec> = self
            .topics
            .iter()
            .map(|t| TopicSpec {
                name: format!("{prefix}{}", t.name),
                partitions: profile.partitions,
                replication_factor: profile.replication_factor,
                configs: configs(
                    t.cleanup_policy,
                    Some(t.retention_ms.unwrap_or(profile.retention_ms)),
                ),
                event_type: t.name.parse().ok(),
            })
            .collect();
        plan.extend(self.dlq.consumer_groups.iter().map(|group| TopicSpec {
            name: dlq_topic(prefix, group),
            partitions: profile.partitions,
            replication_factor: profile.replication_factor,
            configs: configs(CleanupPolicy::Delete, Some(self.dlq.retention_ms)),
            event_type: None,
        }));
        plan
    }
}

/// The dead-letter topic of a consumer group.
pub fn dlq_topic(prefix: &str, group: &str) -> String {
    format!("{prefix}{group}.dlq")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_catalog_is_valid_and_sized_per_environment() {
        let catalog = Catalog::bundled().expect("valid");
        for (env, partitions, rf, isr) in [
            (Environment::Development, 3, 1, "1"),
            (Environment::Staging, 6, 3, "2"),
            (Environment::Production, 12, 3, "2"),
        ] {
            let plan = catalog.plan(env, "");
            assert_eq!(plan.len(), 9 + 4);
            for t in &plan {
                assert_eq!(
                    (t.partitions, t.replication_factor),
                    (partitions, rf),
                    "{}",
                    t.name
                );
                assert_eq!(t.configs["min.insync.replicas"], isr);
            }
        }
        let plan = catalog.plan(Environment::Production, "");
        let prefs = plan
            .iter()
            .find(|t| t.name == "opal.user.preferences.updated")
            .expect("prefs");
        assert_eq!(prefs.configs["cleanup.policy"], "compact");
        assert!(!prefs.configs.contains_key("retention.ms"));
        let dlq = plan
            .iter()
            .find(|t| t.name == "opal-feedback.dlq")
            .expect("dlq");
        assert_eq!(
            dlq.configs["retention.ms"],
            (30_i64 * 24 * 3600 * 1000).to_string()
        );
        assert_eq!(dlq.event_type, None);
        let started = plan
            .iter()
            .find(|t| t.name == "opal.workflow.started")
            .expect("t");
        assert_eq!(
            started.configs["retention.ms"], "2592000000",
            "production keeps longer"
        );
    }

    #[test]
    fn prefix_applies_to_topics_dlqs_and_subjects() {
        let plan = Catalog::bundled()
            .expect("valid")
            .plan(Environment::Development, "t42.");
        assert!(plan.iter().all(|t| t.name.starts_with("t42.")));
        let started = plan
            .iter()
            .find(|t| t.event_type == Some(EventType::WorkflowStarted))
            .expect("t");
        assert_eq!(started.subject(), "t42.opal.workflow.started-value");
    }

    #[test]
    fn drifted_catalogs_are_refused_with_the_reason() {
        let broken = BUNDLED.replace("key = \"scope\"", "key = \"client_name\"");
        let err = Catalog::parse(&broken, "x.toml")
            .expect_err("wrong key")
            .to_string();
        assert!(
            err.contains("opal.decision.degraded") && err.contains("scope"),
            "{err}"
        );
        let err = Catalog::parse("not = [toml", "y.toml")
            .expect_err("syntax")
            .to_string();
        assert!(err.contains("y.toml"), "{err}");
        let missing = Catalog::load(Path::new("/nonexistent/topics.toml"))
            .expect_err("missing")
            .to_string();
        assert!(
            missing.contains("cannot read topic catalog /nonexistent/topics.toml"),
            "{missing}"
        );
    }
}
