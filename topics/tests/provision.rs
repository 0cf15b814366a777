//! kafka-init against the real local stack, each test under its own random prefix.

use std::process::Command;
use std::time::Duration;

use opal_schemas::Environment;
use opal_topics::provision::{Drift, Target};
use opal_topics::{Catalog, KafkaArgs, RegistryArgs, TopicSpec};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;

const TIMEOUT: Duration = Duration::from_secs(20);

fn kafka() -> KafkaArgs {
    KafkaArgs::local(std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into()))
}

fn registry() -> RegistryArgs {
    RegistryArgs {
        url: std::env::var("SCHEMA_REGISTRY_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:8081".into()),
        username: None,
        password: None,
    }
}

fn prefix() -> String {
    format!("t{}.", uuid_like())
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_nanos();
    format!("{:x}{:x}", nanos, std::process::id())
}

fn setup() -> (Target, Vec<TopicSpec>, String) {
    let prefix = prefix();
    let plan = Catalog::bundled()
        .expect("catalog")
        .plan(Environment::Development, &prefix);
    let target = Target::new(
        kafka(),
        registry().client(TIMEOUT).expect("client"),
        TIMEOUT,
    )
    .expect("target");
    (target, plan, prefix)
}

fn admin() -> AdminClient<DefaultClientContext> {
    kafka()
        .client_config()
        .expect("config")
        .create()
        .expect("admin")
}

#[tokio::test]
async fn init_is_idempotent_and_check_is_clean_after_it() {
    let (target, plan, _) = setup();
    let before = target.check(&plan).await.expect("check");
    assert_eq!(
        before
            .iter()
            .filter(|d| matches!(d, Drift::MissingTopic { .. }))
            .count(),
        13
    );
    assert_eq!(
        before
            .iter()
            .filter(|d| matches!(d, Drift::SchemaNotRegistered { .. }))
            .count(),
        9
    );

    let first = target.init(&plan, false).await.expect("init");
    assert_eq!(
        first
            .changes
            .iter()
            .filter(|c| c.starts_with("created topic"))
            .count(),
        13
    );
    assert_eq!(
        first
            .changes
            .iter()
            .filter(|c| c.starts_with("registered"))
            .count(),
        9
    );
    let second = target.init(&plan, false).await.expect("init again");
    assert!(
        second.changes.is_empty(),
        "second init changed: {:?}",
        second.changes
    );
    assert!(second.left_alone.is_empty(), "{:?}", second.left_alone);
    assert_eq!(
        target.check(&plan).await.expect("check"),
        Vec::<Drift>::new()
    );

    let observed = target
        .observe(Some(
            &plan.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
        ))
        .await
        .expect("observe");
    let prefs = plan
        .iter()
        .find(|t| t.name.ends_with("opal.user.preferences.updated"))
        .expect("prefs");
    assert_eq!(observed[&prefs.name].configs["cleanup.policy"], "compact");
    assert_eq!(observed[&prefs.name].partitions, 3);
}

/// A deleted topic and a topic whose config was changed by hand: `check`
/// reports both, `init` recreates the one and applies the catalog's config to
/// the other, keeping the topic's other overrides, and `check` is then clean.
#[tokio::test]
async fn init_repairs_a_deleted_topic_and_config_drift_and_check_reports_them_first() {
    let (target, plan, _) = setup();
    target.init(&plan, false).await.expect("init");
    let changed = &plan[0];
    let deleted = &plan[2];
    let hand_set =
        rdkafka::admin::AlterConfig::new(rdkafka::admin::ResourceSpecifier::Topic(&changed.name))
            .set("cleanup.policy", "delete")
            .set("min.insync.replicas", "1")
            .set("retention.ms", "1000")
            // Not managed by the catalog: init must leave it as it is.
            .set("segment.ms", "3600000");
    let altered = admin()
        .alter_configs(
            &[hand_set],
            &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
        )
        .await
        .expect("alter configs");
    assert!(altered.iter().all(Result::is_ok), "{altered:?}");
    let removed = admin()
        .delete_topics(
            &[&deleted.name],
            &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
        )
        .await
        .expect("delete topic");
    assert!(removed.iter().all(Result::is_ok), "{removed:?}");
    // Deletion completes asynchronously: wait until the brokers' metadata no
    // longer lists the topic.
    let deadline = std::time::Instant::now() + TIMEOUT;
    while target
        .observe(Some(std::slice::from_ref(&deleted.name)))
        .await
        .expect("observe")
        .contains_key(&deleted.name)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{} still listed",
            deleted.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let drift = target.check(&plan).await.expect("check");
    assert!(
        drift.contains(&Drift::MissingTopic {
            topic: deleted.name.clone()
        }),
        "{drift:?}"
    );
    assert!(
        drift.iter().any(|d| matches!(d, Drift::Config { topic, key, actual, .. }
            if *topic == changed.name && key == "retention.ms" && actual.as_deref() == Some("1000"))),
        "{drift:?}"
    );

    // The broker may still hold the deleted topic for a moment (its metadata
    // propagates asynchronously): creating it again answers "already exists".
    let mut repaired = None;
    for _ in 0..50 {
        match target.init(&plan, false).await {
            Ok(report) => {
                repaired = Some(report);
                break;
            }
            Err(e) if e.to_string().contains("already exists") => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("init: {e}"),
        }
    }
    let repaired = repaired.expect("init once the deletion completed");
    let expected_retention = &changed.configs["retention.ms"];
    assert!(
        repaired.changes.contains(&format!(
            "created topic {} (3 partitions, replication 1)",
            deleted.name
        )) && repaired.changes.contains(&format!(
            "set {} retention.ms={expected_retention}",
            changed.name
        )),
        "{repaired:?}"
    );
    assert!(repaired.left_alone.is_empty(), "{repaired:?}");
    assert_eq!(
        target.check(&plan).await.expect("check"),
        Vec::<Drift>::new()
    );
    let observed = target
        .observe(Some(std::slice::from_ref(&changed.name)))
        .await
        .expect("observe");
    assert_eq!(
        observed[&changed.name]
            .overrides
            .get("segment.ms")
            .map(String::as_str),
        Some("3600000"),
        "an override outside the catalog is kept"
    );
}

#[tokio::test]
async fn an_incompatible_local_schema_is_refused_before_anything_changes() {
    let (target, plan, prefix) = setup();
    // The registry already holds a version our local schema cannot read (workflow_id was a long).
    let subject = format!("{prefix}opal.workflow.started-value");
    let old = r#"{"type":"record","name":"WorkflowStarted","namespace":"opal.events","fields":[{"name":"workflow_id","type":"long"}]}"#;
    let client = registry().client(TIMEOUT).expect("client");
    client
        .register(&subject, old)
        .await
        .expect("register the old version");

    let err = target
        .init(&plan, false)
        .await
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains(&subject) && err.contains("nothing was changed"),
        "{err}"
    );
    let names: Vec<String> = plan.iter().map(|t| t.name.clone()).collect();
    assert!(
        target
            .observe(Some(&names))
            .await
            .expect("observe")
            .is_empty(),
        "no topic was created"
    );
    let subjects = client.subjects().await.expect("subjects");
    assert_eq!(
        subjects.iter().filter(|s| s.starts_with(&prefix)).count(),
        1,
        "nothing else registered"
    );

    let drift = target.check(&plan).await.expect("check");
    assert!(
        drift
            .iter()
            .any(|d| matches!(d, Drift::SchemaIncompatible { subject: s, .. } if *s == subject)),
        "{drift:?}"
    );
}

fn admin_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_opal-admin"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run opal-admin")
}

#[test]
fn cli_check_exits_one_on_drift_and_reports_json() {
    let prefix = prefix();
    let out = admin_cli(&["check", "--topic-prefix", &prefix, "--output", "json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["clean"], false);
    assert!(
        json["drift"]
            .as_array()
            .expect("drift")
            .iter()
            .any(|d| d["kind"] == "missing_topic")
    );

    let out = admin_cli(&["init", "--topic-prefix", &prefix]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = admin_cli(&["init", "--topic-prefix", &prefix]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to change"));
    assert_eq!(
        admin_cli(&["check", "--topic-prefix", &prefix])
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn cli_bad_input_is_one_clear_line_and_non_zero() {
    let out = admin_cli(&["init", "--env", "qa"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown environment 'qa'"));

    let out = admin_cli(&["init", "--catalog", "/nonexistent/topics.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read topic catalog /nonexistent/topics.toml"),
        "{stderr}"
    );

    let out = admin_cli(&[
        "--brokers",
        "127.0.0.1:1",
        "--timeout",
        "2s",
        "init",
        "--topic-prefix",
        "never.",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("127.0.0.1:1"), "names the broker: {stderr}");
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.starts_with("opal-admin:"))
            .count(),
        1,
        "{stderr}"
    );
}

/// Creates `name` by hand (as an operator or an older catalog would have),
/// with `partitions` partitions and replication 1.
async fn create_by_hand(name: &str, partitions: i32) {
    let created = admin()
        .create_topics(
            &[rdkafka::admin::NewTopic::new(
                name,
                partitions,
                rdkafka::admin::TopicReplication::Fixed(1),
            )],
            &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
        )
        .await
        .expect("create topic");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
}

/// Partition count of `name` in the brokers' metadata (None if absent).
async fn partitions(target: &Target, name: &str) -> Option<i32> {
    target
        .observe(Some(&[name.to_owned()]))
        .await
        .expect("observe")
        .get(name)
        .map(|t| t.partitions)
}

fn partition_drift(drift: &[Drift]) -> Vec<&Drift> {
    drift
        .iter()
        .filter(|d| matches!(d, Drift::Partitions { .. }))
        .collect()
}

/// A topic with fewer partitions than the catalog: `init` reports it and
/// leaves it alone (raising changes key → partition mapping) unless told to
/// raise it; `check` reports the drift until then and not after.
#[tokio::test]
async fn fewer_partitions_than_the_catalog_are_raised_only_with_increase_partitions() {
    let (target, plan, _) = setup();
    let short = &plan[1];
    assert_eq!(short.partitions, 3, "development sizing");
    create_by_hand(&short.name, 1).await;
    let expected_drift = Drift::Partitions {
        topic: short.name.clone(),
        expected: 3,
        actual: 1,
    };
    let before = target.check(&plan).await.expect("check");
    assert_eq!(partition_drift(&before), [&expected_drift], "{before:?}");

    let without = target.init(&plan, false).await.expect("init");
    assert_eq!(
        without.left_alone,
        [format!(
            "{} has 1 partitions, the catalog says 3: rerun with --increase-partitions (it changes key → partition mapping)",
            short.name
        )]
    );
    assert!(
        !without.changes.iter().any(|c| c.contains("partitions of")),
        "{without:?}"
    );
    assert_eq!(
        partitions(&target, &short.name).await,
        Some(1),
        "left alone"
    );
    assert_eq!(
        target.check(&plan).await.expect("check"),
        std::slice::from_ref(&expected_drift),
        "the only drift left is the partition count"
    );

    let with = target
        .init(&plan, true)
        .await
        .expect("init --increase-partitions");
    assert_eq!(
        with.changes,
        [format!("raised partitions of {} from 1 to 3", short.name)]
    );
    assert!(with.left_alone.is_empty(), "{with:?}");
    assert_eq!(partitions(&target, &short.name).await, Some(3), "raised");
    assert_eq!(
        target.check(&plan).await.expect("check"),
        Vec::<Drift>::new()
    );
    let again = target.init(&plan, true).await.expect("init again");
    assert!(
        again.changes.is_empty() && again.left_alone.is_empty(),
        "{again:?}"
    );
}

/// A topic with more partitions than the catalog is never shrunk (Kafka
/// cannot remove partitions; deleting and recreating would lose its
/// records), with or without `--increase-partitions`; `check` keeps
/// reporting it.
#[tokio::test]
async fn more_partitions_than_the_catalog_are_never_removed() {
    let (target, plan, _) = setup();
    let wide = &plan[4];
    create_by_hand(&wide.name, 5).await;
    let expected_drift = Drift::Partitions {
        topic: wide.name.clone(),
        expected: 3,
        actual: 5,
    };
    let note = format!(
        "{} has 5 partitions, more than the catalog's 3: partitions are never removed",
        wide.name
    );
    assert_eq!(
        partition_drift(&target.check(&plan).await.expect("check")),
        [&expected_drift]
    );
    for increase_partitions in [false, true] {
        let report = target.init(&plan, increase_partitions).await.expect("init");
        assert_eq!(report.left_alone, std::slice::from_ref(&note), "{report:?}");
        assert!(
            !report.changes.iter().any(|c| c.contains("partitions of")),
            "{report:?}"
        );
        assert_eq!(partitions(&target, &wide.name).await, Some(5), "not shrunk");
        assert_eq!(
            target.check(&plan).await.expect("check"),
            std::slice::from_ref(&expected_drift)
        );
    }
}

/// `init` never deletes: a topic under the same prefix that the catalog does
/// not name, a subject outside the catalog, and a version of a catalog
/// subject that is not ours all survive `init`, with and without
/// `--increase-partitions`, and are no drift for `check`.
#[tokio::test]
async fn init_never_deletes_topics_subjects_or_versions_outside_the_catalog() {
    let (target, plan, prefix) = setup();
    let client = registry().client(TIMEOUT).expect("client");
    let retired_topic = format!("{prefix}opal.workflow.retired");
    let retired_dlq = format!("{prefix}opal-retired.dlq");
    create_by_hand(&retired_topic, 2).await;
    create_by_hand(&retired_dlq, 1).await;
    let retired_subject = format!("{retired_topic}-value");
    let retired_schema = r#"{"type":"record","name":"WorkflowRetired","namespace":"opal.events","fields":[{"name":"workflow_id","type":"string"}]}"#;
    let retired_id = client
        .register(&retired_subject, retired_schema)
        .await
        .expect("register");

    target.init(&plan, false).await.expect("init");

    // A second version of a catalog subject, registered after init: ours
    // plus an optional field (BACKWARD-compatible with ours).
    let started = plan
        .iter()
        .find(|t| t.name.ends_with("opal.workflow.started"))
        .expect("workflow.started");
    let subject = started.subject();
    let mut newer: serde_json::Value =
        serde_json::from_str(opal_schemas::EventType::WorkflowStarted.schema_json())
            .expect("schema json");
    newer["fields"]
        .as_array_mut()
        .expect("fields")
        .push(serde_json::json!({"name": "retired_note", "type": ["null", "string"], "default": null, "doc": "added by another writer"}));
    let newer_id = client
        .register(&subject, &newer.to_string())
        .await
        .expect("register a newer version");
    let versions_before = target.subjects().await.expect("subjects");
    let ours = |versions: &[(String, Vec<(u32, u32)>)], subject: &str| {
        versions
            .iter()
            .find(|(s, _)| s == subject)
            .map(|(_, v)| v.clone())
    };
    let started_versions = ours(&versions_before, &subject).expect("subject");
    assert_eq!(started_versions.len(), 2, "{started_versions:?}");
    assert_eq!(started_versions[1], (2, newer_id));

    for increase_partitions in [false, true] {
        let report = target.init(&plan, increase_partitions).await.expect("init");
        assert!(
            report.changes.is_empty() && report.left_alone.is_empty(),
            "{report:?}"
        );
        let after = target.subjects().await.expect("subjects");
        assert_eq!(
            ours(&after, &subject),
            Some(started_versions.clone()),
            "the extra version stays"
        );
        assert_eq!(
            ours(&after, &retired_subject).map(|v| v.iter().map(|(_, id)| *id).collect::<Vec<_>>()),
            Some(vec![retired_id]),
            "a subject outside the catalog stays"
        );
        assert_eq!(
            partitions(&target, &retired_topic).await,
            Some(2),
            "a topic outside the catalog stays"
        );
        assert_eq!(partitions(&target, &retired_dlq).await, Some(1));
    }
    assert_eq!(
        target.check(&plan).await.expect("check"),
        Vec::<Drift>::new()
    );
}
