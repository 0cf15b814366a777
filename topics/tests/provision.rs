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
