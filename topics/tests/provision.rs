//! kafka-init against the real local stack, each test under its own random prefix.

use std::process::Command;
use std::time::Duration;

use opal_schemas::Environment;
use opal_topics::provision::{Drift, Target};
use opal_topics::{Catalog, KafkaArgs, RegistryArgs, TopicSpec};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
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

/// Tansu 0.6.0's DeleteTopics on SQLite deletes *every* topic of the cluster
/// (its `topic_delete_by.sql` filters on the cluster only), so this test never
/// deletes: the "deleted" topic is one that init was not allowed to create.
#[tokio::test]
async fn check_catches_a_missing_topic_and_a_changed_config() {
    let (target, plan, _) = setup();
    // A topic that exists with another retention than the catalog's.
    let changed = &plan[0];
    let created = admin()
        .create_topics(
            &[NewTopic::new(
                &changed.name,
                changed.partitions,
                TopicReplication::Fixed(1),
            )
            .set("cleanup.policy", "delete")
            .set("min.insync.replicas", "1")
            .set("retention.ms", "1000")],
            &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
        )
        .await
        .expect("create");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let missing = plan[2].clone();
    let without_missing: Vec<TopicSpec> = plan
        .iter()
        .filter(|t| t.name != missing.name)
        .cloned()
        .collect();
    let report = target.init(&without_missing, false).await.expect("init");

    let drift = target.check(&plan).await.expect("check");
    assert!(
        drift.contains(&Drift::MissingTopic {
            topic: missing.name.clone()
        }),
        "{drift:?}"
    );
    let retention_drift = drift.iter().any(|d| {
        matches!(d, Drift::Config { topic, key, actual, .. }
        if *topic == changed.name && key == "retention.ms" && actual.as_deref() == Some("1000"))
    });
    let repaired_config = report.changes.iter().any(|c| c.contains("retention.ms"));
    assert!(
        retention_drift != repaired_config,
        "the config is either repaired or still reported: {drift:?} {report:?}"
    );
    if !repaired_config {
        // Tansu has no AlterConfigs: init says so instead of pretending.
        assert!(
            report
                .left_alone
                .iter()
                .any(|n| n.contains(&changed.name) && n.contains("retention.ms=")),
            "{report:?}"
        );
    }

    let repaired = target
        .init(&plan, false)
        .await
        .expect("init creates the missing topic");
    assert!(
        repaired.changes.contains(&format!(
            "created topic {} (3 partitions, replication 1)",
            missing.name
        )),
        "{repaired:?}"
    );
    let left: Vec<Drift> = target.check(&plan).await.expect("check");
    assert!(
        left.iter()
            .all(|d| matches!(d, Drift::Config { topic, .. } if *topic == changed.name)),
        "{left:?}"
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
