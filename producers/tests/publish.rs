//! The publisher and the opal-producer CLI against the real local stack, each
//! test under its own topic prefix (provisioned with opal-admin's library).

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use opal_e2e::{brokers, registry_url, unique};
use opal_producers::error::PublishError;
use opal_producers::{PublishMetrics, Publisher, PublisherConfig};
use opal_schemas::samples::default_example;
use opal_schemas::{Environment, Event, EventType};
use opal_topics::provision::Target;
use opal_topics::{Catalog, KafkaArgs};
use rdkafka::consumer::{BaseConsumer, Consumer};

const TIMEOUT: Duration = Duration::from_secs(20);

/// A fresh prefix with every topic and schema provisioned.
async fn provisioned() -> (PublisherConfig, String) {
    let prefix = format!("{}.", unique("p"));
    let mut config = PublisherConfig::local(&brokers(), &registry_url());
    config.topic_prefix = prefix.clone();
    let plan = Catalog::bundled()
        .expect("catalog")
        .plan(Environment::Development, &prefix);
    let registry = config.registry.client(TIMEOUT).expect("client");
    let target = Target::new(config.kafka.clone(), registry, TIMEOUT).expect("target");
    target.init(&plan, false).await.expect("kafka-init");
    (config, prefix)
}

fn publisher(config: &PublisherConfig) -> Publisher {
    let metrics = PublishMetrics::new(&prometheus::Registry::new()).expect("metrics");
    Publisher::new(config.clone(), metrics).expect("publisher")
}

fn total_records(topic: &str) -> i64 {
    let consumer: BaseConsumer = KafkaArgs::local(brokers())
        .client_config()
        .expect("config")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .expect("metadata");
    let partitions = metadata.topics()[0].partitions().len() as i32;
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, TIMEOUT)
                .expect("watermarks")
                .1
        })
        .sum()
}

fn cli(config: &PublisherConfig, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_opal-producer"))
        .args(args)
        .env("KAFKA_BROKERS", &config.kafka.brokers)
        .env("SCHEMA_REGISTRY_URL", &config.registry.url)
        .env("OPAL_TOPIC_PREFIX", &config.topic_prefix)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn opal-producer");
    let mut pipe = child.stdin.take().expect("stdin");
    pipe.write_all(stdin.unwrap_or("").as_bytes())
        .expect("write stdin");
    drop(pipe);
    child.wait_with_output().expect("wait")
}

#[tokio::test]
async fn the_producer_suite_passes_for_every_event_type() {
    let (config, _) = provisioned().await;
    let publisher = publisher(&config);
    let rows = opal_producers::suite::run(&publisher, &config.kafka, TIMEOUT).await;
    let failed: Vec<_> = rows.iter().filter(|r| !r.passed).collect();
    assert!(
        failed.is_empty(),
        "{}",
        opal_producers::suite::render(&rows)
    );
    assert_eq!(
        rows.len(),
        2 + 9 + 1,
        "reachability, nine round trips, the refusal"
    );
}

#[tokio::test]
async fn the_envelope_is_filled_and_batches_keep_per_key_order() {
    let (config, prefix) = provisioned().await;
    let publisher = publisher(&config);
    let mut event = default_example(EventType::WorkflowCompleted);
    let envelope = event.envelope_mut();
    envelope.event_id.clear();
    envelope.correlation_id = "corr-123".into();
    envelope.timestamp = 0;
    envelope.source_system.clear();
    let delivery = publisher.publish(event.clone()).await.expect("publish");
    assert_eq!(delivery.topic, format!("{prefix}opal.workflow.completed"));
    assert!(
        uuid::Uuid::parse_str(&delivery.event_id).is_ok(),
        "generated UUID event id"
    );

    // One key, many events, one batch: offsets follow the order given.
    let events: Vec<Event> = (0..50)
        .map(|_| {
            let mut e = default_example(EventType::WorkflowCompleted);
            e.envelope_mut().event_id.clear();
            e
        })
        .collect();
    let deliveries: Vec<_> = publisher
        .publish_batch(events)
        .await
        .into_iter()
        .map(|d| d.expect("delivered"))
        .collect();
    assert!(
        deliveries
            .windows(2)
            .all(|w| w[0].partition == w[1].partition && w[0].offset < w[1].offset),
        "{deliveries:?}"
    );
    assert!(
        deliveries.iter().all(|d| d.event_id != delivery.event_id),
        "fresh ids"
    );
}

#[tokio::test]
async fn invalid_events_and_unregistered_schemas_are_refused_before_kafka() {
    let (config, prefix) = provisioned().await;
    let refusing = publisher(&config);
    let mut event = default_example(EventType::DecisionGenerated);
    event.envelope_mut().event_id.clear();
    if let Event::DecisionGenerated(e) = &mut event {
        e.recommendations[0].confidence = 7.0;
    }
    match refusing.publish(event).await {
        Err(PublishError::Invalid { source, .. }) => {
            assert_eq!(source.field, "recommendations[0].confidence")
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert_eq!(
        total_records(&format!("{prefix}opal.decision.generated")),
        0
    );

    // A prefix nobody provisioned: the schema is not registered, and we say so.
    let mut unprovisioned = config.clone();
    unprovisioned.topic_prefix = format!("{}.", unique("none"));
    let err = publisher(&unprovisioned)
        .publish(default_example(EventType::KnowledgeUpserted))
        .await
        .expect_err("refused");
    assert!(
        matches!(err, PublishError::Registry(_)) && err.to_string().contains("kafka-init"),
        "{err}"
    );
}

#[tokio::test]
async fn cli_publish_is_all_or_nothing_and_names_the_field() {
    let (config, prefix) = provisioned().await;
    let topic = format!("{prefix}opal.feedback.submitted");
    let example = cli(&config, &["example", "feedback.submitted"], None);
    assert!(example.status.success());
    let one: serde_json::Value = serde_json::from_slice(&example.stdout).expect("example is JSON");
    assert!(
        one.get("event_id").is_none(),
        "example leaves the envelope to publish"
    );

    let mut bad = one.clone();
    bad["accepted"] = serde_json::Value::from("yes");
    let input = format!("{one}\n{one}\n{bad}\n");
    let out = cli(&config, &["publish", "feedback.submitted"], Some(&input));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("record 3")
            && stderr.contains("'accepted'")
            && stderr.contains("nothing was published"),
        "{stderr}"
    );
    assert_eq!(
        total_records(&topic),
        0,
        "the two good records were not published either"
    );

    let out = cli(
        &config,
        &["publish", "feedback.submitted"],
        Some(&format!("{one}\n{one}\n")),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let printed = stdout
        .lines()
        .filter(|l| l.starts_with(&topic) && l.contains("event_id="))
        .count();
    assert_eq!(printed, 2, "{stdout}");
    assert_eq!(total_records(&topic), 2);
}

#[tokio::test]
async fn cli_test_passes_and_fails_when_the_registry_is_down() {
    let (config, _) = provisioned().await;
    let out = cli(&config, &["test"], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("12 passed, 0 failed"), "{stdout}");

    let mut down = config.clone();
    down.registry.url = "http://127.0.0.1:9".into();
    let out = cli(&down, &["test"], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("registry reachable"))
        .expect("row");
    assert!(
        line.contains("FAIL") && line.contains("127.0.0.1:9") && line.contains("unavailable"),
        "{line}"
    );
}

#[tokio::test]
async fn cli_perf_compare_reports_both_paths_and_their_ratio() {
    let (config, _) = provisioned().await;
    let args = [
        "perf",
        "--event-type",
        "agent.completed",
        "--num-records",
        "300",
        "--compare",
        "--output",
        "json",
    ];
    let out = cli(&config, &args, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let results = json["results"].as_array().expect("results");
    let modes: Vec<_> = results
        .iter()
        .map(|r| r["mode"].as_str().expect("mode"))
        .collect();
    assert_eq!(modes, ["typed", "raw"]);
    for r in results {
        assert_eq!(
            (r["records"].as_u64(), r["errors"].as_u64()),
            (Some(300), Some(0)),
            "{r}"
        );
        assert!(r["p99_ms"].as_f64().expect("p99") >= r["p50_ms"].as_f64().expect("p50"));
    }
    assert!(json["typed_to_raw_ratio"].as_f64().expect("ratio") > 0.0);
}
