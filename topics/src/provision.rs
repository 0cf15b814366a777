//! Comparing a cluster and a registry with the catalog (`check`) and making them
//! match it (`init`).
//!
//! Everything that can refuse (broker, registry, every schema's compatibility)
//! is asked before anything is changed, so a refusal leaves nothing half-applied.

use std::collections::BTreeMap;
use std::time::Duration;

use opal_schemas::{EventType, RegistryClient, RegistryError};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic,
    ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use serde::Serialize;

use crate::catalog::TopicSpec;
use crate::connection::{ConnectionError, KafkaArgs};

/// Compatibility level every subject is set to.
pub const SUBJECT_COMPATIBILITY: &str = "BACKWARD";

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error("kafka admin request failed: {0}")]
    Admin(#[source] KafkaError),
    #[error("schema registry: {0}")]
    Registry(#[from] RegistryError),
    #[error(
        "{count} local schema(s) are incompatible with the registry; nothing was changed:\n{details}"
    )]
    IncompatibleSchemas { count: usize, details: String },
    /// The profile asks for more replicas than the cluster has brokers.
    #[error(
        "this environment's topics need replication factor {needed}, but the cluster has {brokers} broker(s); nothing was changed (the development profile needs one broker)"
    )]
    TooFewBrokers { needed: i32, brokers: usize },
    #[error("cannot {action} topic {topic}: {reason}")]
    Topic {
        action: &'static str,
        topic: String,
        reason: String,
    },
}

pub type Result<T, E = ProvisionError> = std::result::Result<T, E>;

/// One way the cluster or registry differs from the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Drift {
    MissingTopic {
        topic: String,
    },
    Partitions {
        topic: String,
        expected: i32,
        actual: i32,
    },
    Replication {
        topic: String,
        expected: i32,
        actual: i32,
    },
    Config {
        topic: String,
        key: String,
        expected: String,
        actual: Option<String>,
    },
    SchemaNotRegistered {
        subject: String,
    },
    SchemaIncompatible {
        subject: String,
        reasons: Vec<String>,
    },
    SubjectCompatibility {
        subject: String,
        expected: String,
        actual: Option<String>,
    },
}

impl Drift {
    /// (kind, resource, expected, actual) for the drift table.
    pub fn row(&self) -> [String; 4] {
        let s = |x: &str| x.to_owned();
        match self {
            Drift::MissingTopic { topic } => {
                [s("missing topic"), topic.clone(), s("exists"), s("absent")]
            }
            Drift::Partitions {
                topic,
                expected,
                actual,
            } => [
                s("partitions"),
                topic.clone(),
                expected.to_string(),
                actual.to_string(),
            ],
            Drift::Replication {
                topic,
                expected,
                actual,
            } => [
                s("replication"),
                topic.clone(),
                expected.to_string(),
                actual.to_string(),
            ],
            Drift::Config {
                topic,
                key,
                expected,
                actual,
            } => [
                s("config"),
                format!("{topic} {key}"),
                expected.clone(),
                actual.clone().unwrap_or_else(|| s("(unset)")),
            ],
            Drift::SchemaNotRegistered { subject } => [
                s("schema not registered"),
                subject.clone(),
                s("registered"),
                s("absent"),
            ],
            Drift::SchemaIncompatible { subject, reasons } => [
                s("schema incompatible"),
                subject.clone(),
                s("compatible"),
                reasons.join("; "),
            ],
            Drift::SubjectCompatibility {
                subject,
                expected,
                actual,
            } => [
                s("subject compatibility"),
                subject.clone(),
                expected.clone(),
                actual.clone().unwrap_or_else(|| s("(global default)")),
            ],
        }
    }
}

/// A topic as it exists in the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ObservedTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
    /// Every config the broker reports for the topic.
    pub configs: BTreeMap<String, String>,
    /// The configs set on the topic itself (not inherited from the broker):
    /// AlterConfigs replaces this whole set, so a change must resend them.
    #[serde(skip)]
    pub overrides: BTreeMap<String, String>,
}

/// The cluster and registry being provisioned.
pub struct Target {
    kafka: KafkaArgs,
    admin: AdminClient<DefaultClientContext>,
    registry: RegistryClient,
    timeout: Duration,
}

/// What `init` did.
#[derive(Debug, Default, Serialize)]
pub struct InitReport {
    pub changes: Vec<String>,
    /// Drift init will not repair by itself (shrinking, replication, partitions without the flag).
    pub left_alone: Vec<String>,
}

impl Target {
    pub fn new(kafka: KafkaArgs, registry: RegistryClient, timeout: Duration) -> Result<Self> {
        let admin = kafka
            .client_config()?
            .create()
            .map_err(ConnectionError::Client)?;
        Ok(Target {
            kafka,
            admin,
            registry,
            timeout,
        })
    }

    fn options(&self) -> AdminOptions {
        AdminOptions::new()
            .operation_timeout(Some(self.timeout))
            .request_timeout(Some(self.timeout))
    }

    /// Every topic in the cluster whose name is in `names` (all topics when None), with configs.
    pub async fn observe(
        &self,
        names: Option<&[String]>,
    ) -> Result<BTreeMap<String, ObservedTopic>> {
        let metadata = self.kafka.cluster_metadata(self.timeout).await?;
        let mut topics: BTreeMap<String, ObservedTopic> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| {
                let observed = ObservedTopic {
                    name: t.name().to_owned(),
                    partitions: t.partitions().len() as i32,
                    replication_factor: t
                        .partitions()
                        .iter()
                        .map(|p| p.replicas().len() as i32)
                        .min()
                        .unwrap_or(0),
                    configs: BTreeMap::new(),
                    overrides: BTreeMap::new(),
                };
                (observed.name.clone(), observed)
            })
            .collect();
        if let Some(names) = names {
            topics.retain(|name, _| names.contains(name));
        }
        if topics.is_empty() {
            return Ok(topics);
        }
        let specifiers: Vec<ResourceSpecifier<'_>> =
            topics.keys().map(|n| ResourceSpecifier::Topic(n)).collect();
        let described = self
            .admin
            .describe_configs(&specifiers, &self.options())
            .await
            .map_err(ProvisionError::Admin)?;
        let names: Vec<String> = topics.keys().cloned().collect();
        for (name, result) in names.iter().zip(described) {
            let resource = result.map_err(|code| ProvisionError::Topic {
                action: "describe configs of",
                topic: name.clone(),
                reason: code.to_string(),
            })?;
            if let Some(topic) = topics.get_mut(name) {
                for entry in resource.entries {
                    let Some(value) = entry.value else { continue };
                    if entry.source == ConfigSource::DynamicTopic {
                        topic.overrides.insert(entry.name.clone(), value.clone());
                    }
                    topic.configs.insert(entry.name, value);
                }
            }
        }
        Ok(topics)
    }

    /// Where the cluster and registry differ from `plan`.
    pub async fn check(&self, plan: &[TopicSpec]) -> Result<Vec<Drift>> {
        let names: Vec<String> = plan.iter().map(|t| t.name.clone()).collect();
        let observed = self.observe(Some(&names)).await?;
        let mut drift = topic_drift(plan, &observed);
        for spec in plan {
            if let Some(event_type) = spec.event_type {
                drift.extend(self.schema_drift(&spec.subject(), event_type).await?);
            }
        }
        Ok(drift)
    }

    async fn schema_drift(&self, subject: &str, event_type: EventType) -> Result<Vec<Drift>> {
        let mut drift = Vec::new();
        let schema = event_type.schema_json();
        if self.registry.lookup(subject, schema).await?.is_none() {
            let reasons = self.registry.incompatibilities(subject, schema).await?;
            drift.push(if reasons.is_empty() {
                Drift::SchemaNotRegistered {
                    subject: subject.to_owned(),
                }
            } else {
                Drift::SchemaIncompatible {
                    subject: subject.to_owned(),
                    reasons,
                }
            });
        }
        let level = self.registry.subject_compatibility(subject).await?;
        if level.as_deref() != Some(SUBJECT_COMPATIBILITY) {
            drift.push(Drift::SubjectCompatibility {
                subject: subject.to_owned(),
                expected: SUBJECT_COMPATIBILITY.to_owned(),
                actual: level,
            });
        }
        Ok(drift)
    }

    /// Makes the cluster and registry match `plan`. Never deletes; raises
    /// partitions only with `increase_partitions`.
    pub async fn init(&self, plan: &[TopicSpec], increase_partitions: bool) -> Result<InitReport> {
        // 1. Everything that can refuse, before any change.
        let needed = plan.iter().map(|t| t.replication_factor).max().unwrap_or(1);
        let brokers = self
            .kafka
            .cluster_metadata(self.timeout)
            .await?
            .brokers()
            .len();
        if needed as usize > brokers {
            return Err(ProvisionError::TooFewBrokers { needed, brokers });
        }
        let names: Vec<String> = plan.iter().map(|t| t.name.clone()).collect();
        let observed = self.observe(Some(&names)).await?;
        self.registry.ping().await?;
        let mut unregistered = Vec::new();
        let mut refusals = Vec::new();
        for spec in plan {
            let Some(event_type) = spec.event_type else {
                continue;
            };
            let subject = spec.subject();
            if self
                .registry
                .lookup(&subject, event_type.schema_json())
                .await?
                .is_some()
            {
                continue;
            }
            let reasons = self
                .registry
                .incompatibilities(&subject, event_type.schema_json())
                .await?;
            if reasons.is_empty() {
                unregistered.push((subject, event_type));
            } else {
                refusals.push(format!("  {subject}: {}", reasons.join("; ")));
            }
        }
        if !refusals.is_empty() {
            return Err(ProvisionError::IncompatibleSchemas {
                count: refusals.len(),
                details: refusals.join("\n"),
            });
        }

        // 2. Topics.
        let mut report = InitReport::default();
        let missing: Vec<&TopicSpec> = plan
            .iter()
            .filter(|t| !observed.contains_key(&t.name))
            .collect();
        if !missing.is_empty() {
            let new_topics: Vec<NewTopic<'_>> = missing
                .iter()
                .map(|t| {
                    t.configs.iter().fold(
                        NewTopic::new(
                            &t.name,
                            t.partitions,
                            TopicReplication::Fixed(t.replication_factor),
                        ),
                        |topic, (k, v)| topic.set(k, v),
                    )
                })
                .collect();
            let results = self
                .admin
                .create_topics(&new_topics, &self.options())
                .await
                .map_err(ProvisionError::Admin)?;
            for (spec, result) in missing.iter().zip(results) {
                result.map_err(|(topic, code)| ProvisionError::Topic {
                    action: "create",
                    topic,
                    reason: code.to_string(),
                })?;
                report.changes.push(format!(
                    "created topic {} ({} partitions, replication {})",
                    spec.name, spec.partitions, spec.replication_factor
                ));
            }
            let created: Vec<&str> = missing.iter().map(|t| t.name.as_str()).collect();
            self.wait_until_led(&created).await?;
        }
        for drift in topic_drift(plan, &observed) {
            match drift {
                Drift::Partitions { topic, expected, actual } if actual < expected && increase_partitions => {
                    let grow = [NewPartitions::new(&topic, expected as usize)];
                    let results = self.admin.create_partitions(&grow, &self.options()).await.map_err(ProvisionError::Admin)?;
                    for result in results {
                        result.map_err(|(topic, code)| ProvisionError::Topic { action: "add partitions to", topic, reason: code.to_string() })?;
                    }
                    report.changes.push(format!("raised partitions of {topic} from {actual} to {expected}"));
                }
                Drift::Partitions { topic, expected, actual } if actual < expected => report.left_alone.push(format!(
                    "{topic} has {actual} partitions, the catalog says {expected}: rerun with --increase-partitions (it changes key → partition mapping)"
                )),
                Drift::Partitions { topic, expected, actual } => report.left_alone.push(format!(
                    "{topic} has {actual} partitions, more than the catalog's {expected}: partitions are never removed"
                )),
                Drift::Replication { topic, expected, actual } => report.left_alone.push(format!(
                    "{topic} has replication {actual}, the catalog says {expected}: change it with a partition reassignment"
                )),
                Drift::Config { .. } | Drift::MissingTopic { .. } => {}
                Drift::SchemaNotRegistered { .. } | Drift::SchemaIncompatible { .. } | Drift::SubjectCompatibility { .. } => {}
            }
        }
        self.apply_configs(plan, &observed, &mut report).await?;

        // 3. Schemas, then each subject's compatibility level.
        for (subject, event_type) in unregistered {
            let id = self
                .registry
                .register(&subject, event_type.schema_json())
                .await?;
            report
                .changes
                .push(format!("registered {subject} (schema id {id})"));
        }
        for spec in plan.iter().filter(|t| t.event_type.is_some()) {
            let subject = spec.subject();
            if self
                .registry
                .subject_compatibility(&subject)
                .await?
                .as_deref()
                != Some(SUBJECT_COMPATIBILITY)
            {
                self.registry
                    .set_subject_compatibility(&subject, SUBJECT_COMPATIBILITY)
                    .await?;
                report.changes.push(format!(
                    "set {subject} compatibility to {SUBJECT_COMPATIBILITY}"
                ));
            }
        }
        Ok(report)
    }

    /// Waits until every partition of `topics` has a leader in the brokers'
    /// metadata and that leader serves it: CreateTopics returns once the
    /// controller has the topic, and the brokers learn of it a moment later,
    /// so a client that comes right after `init` could otherwise meet
    /// "unknown topic" or "not leader".
    async fn wait_until_led(&self, topics: &[&str]) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let metadata = self.kafka.cluster_metadata(self.timeout).await?;
            let mut waiting: Vec<&str> = topics
                .iter()
                .copied()
                .filter(|name| {
                    !metadata.topics().iter().any(|t| {
                        t.name() == *name
                            && t.error().is_none()
                            && !t.partitions().is_empty()
                            && t.partitions()
                                .iter()
                                .all(|p| p.leader() >= 0 && p.error().is_none())
                    })
                })
                .collect();
            if waiting.is_empty() {
                let partitions: Vec<(String, i32)> = metadata
                    .topics()
                    .iter()
                    .filter(|t| topics.contains(&t.name()))
                    .flat_map(|t| t.partitions().iter().map(|p| (t.name().to_owned(), p.id())))
                    .collect();
                let unserved = self.kafka.not_yet_served(partitions).await?;
                if unserved.is_empty() {
                    return Ok(());
                }
                waiting = topics
                    .iter()
                    .copied()
                    .filter(|name| unserved.iter().any(|(t, _)| t == name))
                    .collect();
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ProvisionError::Topic {
                    action: "wait for leaders of",
                    topic: waiting.join(", "),
                    reason: format!("no leader for every partition within {:?}", self.timeout),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sets the managed configs of existing topics that differ from the plan.
    async fn apply_configs(
        &self,
        plan: &[TopicSpec],
        observed: &BTreeMap<String, ObservedTopic>,
        report: &mut InitReport,
    ) -> Result<()> {
        for spec in plan {
            let Some(current) = observed.get(&spec.name) else {
                continue;
            };
            let differing: Vec<(&String, &String)> = spec
                .configs
                .iter()
                .filter(|(k, v)| current.configs.get(*k) != Some(*v))
                .collect();
            if differing.is_empty() {
                continue;
            }
            // AlterConfigs replaces a topic's dynamic configs as a whole: send
            // the topic's other overrides unchanged beside the catalog's keys.
            // (rdkafka does not expose IncrementalAlterConfigs.)
            let mut wanted = current.overrides.clone();
            wanted.extend(spec.configs.iter().map(|(k, v)| (k.clone(), v.clone())));
            let alter = wanted.iter().fold(
                AlterConfig::new(ResourceSpecifier::Topic(&spec.name)),
                |a, (k, v)| a.set(k, v),
            );
            let results = self
                .admin
                .alter_configs(&[alter], &self.options())
                .await
                .map_err(ProvisionError::Admin)?;
            for result in results {
                result.map_err(|(_, code)| ProvisionError::Topic {
                    action: "configure",
                    topic: spec.name.clone(),
                    reason: code.to_string(),
                })?;
            }
            for (k, v) in differing {
                report.changes.push(format!("set {} {k}={v}", spec.name));
            }
        }
        Ok(())
    }

    /// Subjects with their versions and ids.
    pub async fn subjects(&self) -> Result<Vec<(String, Vec<(u32, u32)>)>> {
        let mut out = Vec::new();
        for subject in self.registry.subjects().await? {
            let mut versions = Vec::new();
            for version in self.registry.versions(&subject).await? {
                let v = self
                    .registry
                    .version(&subject, &version.to_string())
                    .await?;
                versions.push((v.version, v.id));
            }
            out.push((subject, versions));
        }
        Ok(out)
    }
}

/// Topic-level drift between `plan` and what was observed.
pub fn topic_drift(plan: &[TopicSpec], observed: &BTreeMap<String, ObservedTopic>) -> Vec<Drift> {
    let mut drift = Vec::new();
    for spec in plan {
        let Some(actual) = observed.get(&spec.name) else {
            drift.push(Drift::MissingTopic {
                topic: spec.name.clone(),
            });
            continue;
        };
        if actual.partitions != spec.partitions {
            drift.push(Drift::Partitions {
                topic: spec.name.clone(),
                expected: spec.partitions,
                actual: actual.partitions,
            });
        }
        if actual.replication_factor != spec.replication_factor {
            drift.push(Drift::Replication {
                topic: spec.name.clone(),
                expected: spec.replication_factor,
                actual: actual.replication_factor,
            });
        }
        for (key, expected) in &spec.configs {
            let value = actual.configs.get(key);
            if value != Some(expected) {
                drift.push(Drift::Config {
                    topic: spec.name.clone(),
                    key: key.clone(),
                    expected: expected.clone(),
                    actual: value.cloned(),
                });
            }
        }
    }
    drift
}
