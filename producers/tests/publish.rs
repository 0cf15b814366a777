//! The publisher and the opal-producer CLI against the real local stack, each
//! test under its own topic prefix (provisioned with opal-admin's library).

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use opal_e2e::provision::{provisioned_prefix, publisher};
use opal_e2e::{brokers, registry_url, unique};
use opal_producers::error::PublishError;
use opal_producers::publisher::headers;
use opal_producers::{Delivery, PublishMetrics, Publisher, PublisherConfig};
use opal_schemas::samples::{current_version, default_example};
use opal_schemas::{Environment, Event, EventType, now_millis};
use opal_topics::KafkaArgs;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Headers, Message, OwnedMessage};

const TIMEOUT: Duration = Duration::from_secs(20);

async fn provisioned() -> (PublisherConfig, String) {
    provisioned_prefix("p", &brokers(), &registry_url()).await
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

/// What was written, read back from the delivery's topic, partition and
/// offset and decoded through the registry: never only the returned Delivery.
async fn read_back(publisher: &Publisher, delivery: &Delivery) -> (OwnedMessage, Event) {
    let reader: StreamConsumer = KafkaArgs::local(brokers())
        .client_config()
        .expect("config")
        .set("group.id", unique("publish-test-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let message = opal_producers::suite::read_at(&reader, delivery, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (message.topic(), message.partition(), message.offset()),
        (delivery.topic.as_str(), delivery.partition, delivery.offset)
    );
    let decoded = publisher
        .codec()
        .decode(message.payload().expect("a value"))
        .await
        .expect("decode what was written");
    assert_eq!(decoded.schema_id, delivery.schema_id);
    (message, decoded.event)
}

/// A header of a record read back, as text.
fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The envelope as written to Kafka: a given correlation id is kept (record
/// and header), a missing one is generated; the event id is a fresh UUID; the
/// time is filled at publish unless given; `source_system` comes from the
/// config unless given; the environment and schema version are always ours.
#[tokio::test]
async fn the_written_envelope_keeps_what_was_given_and_fills_the_rest() {
    let (mut config, prefix) = provisioned().await;
    // Neither is the default, so what is written can only come from this config.
    config.source_system = unique("publish-test-source");
    config.environment = Environment::Staging;
    let publisher = publisher(&config);

    // 1. Only a correlation id given.
    let correlation_id = unique("corr");
    let mut given = default_example(EventType::WorkflowCompleted);
    let envelope = given.envelope_mut();
    envelope.event_id.clear();
    envelope.correlation_id = correlation_id.clone();
    envelope.timestamp = 0;
    envelope.source_system.clear();
    envelope.environment = Environment::Development;
    envelope.schema_version = 0;
    let before = now_millis();
    let delivery = publisher.publish(given.clone()).await.expect("publish");
    let after = now_millis();
    assert_eq!(delivery.topic, format!("{prefix}opal.workflow.completed"));
    let (message, written) = read_back(&publisher, &delivery).await;
    let envelope = written.envelope().clone();
    assert!(
        uuid::Uuid::parse_str(&envelope.event_id).is_ok(),
        "generated UUID event id: {envelope:?}"
    );
    assert_eq!(envelope.event_id, delivery.event_id);
    assert_eq!(
        envelope.correlation_id, correlation_id,
        "the given correlation id is kept"
    );
    assert!(
        (before..=after).contains(&envelope.timestamp),
        "timestamp filled at publish: {before} <= {} <= {after}",
        envelope.timestamp
    );
    assert_eq!(envelope.source_system, config.source_system);
    assert_eq!(envelope.environment, Environment::Staging);
    assert_eq!(
        envelope.schema_version,
        current_version(EventType::WorkflowCompleted)
    );
    assert_eq!(
        header(&message, headers::CORRELATION_ID).as_deref(),
        Some(correlation_id.as_str())
    );
    assert_eq!(
        header(&message, headers::EVENT_ID).as_deref(),
        Some(delivery.event_id.as_str())
    );
    let mut expected = given;
    *expected.envelope_mut() = envelope;
    assert_eq!(written, expected, "the rest of the event as given");

    // 2. Time and source given, no correlation id.
    let mut given = default_example(EventType::FeedbackSubmitted);
    let envelope = given.envelope_mut();
    envelope.event_id.clear();
    envelope.correlation_id.clear();
    envelope.timestamp = 1_767_225_600_000;
    envelope.source_system = "billing-service".into();
    envelope.environment = Environment::Production;
    let delivery = publisher.publish(given.clone()).await.expect("publish");
    let (message, written) = read_back(&publisher, &delivery).await;
    let envelope = written.envelope().clone();
    assert!(
        uuid::Uuid::parse_str(&envelope.correlation_id).is_ok()
            && envelope.correlation_id != envelope.event_id,
        "a missing correlation id is generated: {envelope:?}"
    );
    assert_eq!(
        header(&message, headers::CORRELATION_ID).as_deref(),
        Some(envelope.correlation_id.as_str())
    );
    assert_eq!(
        envelope.timestamp, 1_767_225_600_000,
        "a given time is kept"
    );
    assert_eq!(
        envelope.source_system, "billing-service",
        "a given source is kept"
    );
    assert_eq!(
        envelope.environment,
        Environment::Staging,
        "the publisher's environment is stamped on every event"
    );
    let mut expected = given;
    *expected.envelope_mut() = envelope;
    assert_eq!(written, expected, "the rest of the event as given");
}

/// Publishes `events` (one key) as one batch and checks that every one was
/// delivered, to one partition, at offsets in the order given.
async fn published_in_order(publisher: &Publisher, events: Vec<Event>) -> Vec<Delivery> {
    let deliveries: Vec<Delivery> = publisher
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
    deliveries
}

#[tokio::test]
async fn batches_keep_per_key_order_and_get_fresh_event_ids() {
    let (config, _) = provisioned().await;
    let publisher = publisher(&config);
    let single = publisher
        .publish(default_example(EventType::WorkflowCompleted))
        .await
        .expect("publish");

    // One key, many events, one batch: offsets follow the order given.
    let events: Vec<Event> = (0..50)
        .map(|_| {
            let mut e = default_example(EventType::WorkflowCompleted);
            e.envelope_mut().event_id.clear();
            e
        })
        .collect();
    let deliveries = published_in_order(&publisher, events).await;
    let ids: std::collections::HashSet<&str> =
        deliveries.iter().map(|d| d.event_id.as_str()).collect();
    assert_eq!(ids.len(), deliveries.len(), "one id per event");
    assert!(
        deliveries
            .iter()
            .all(|d| d.event_id != single.event_id && uuid::Uuid::parse_str(&d.event_id).is_ok()),
        "fresh ids"
    );
}

/// librdkafka's queue holds one record here (`queue.buffering.max.messages=1`;
/// a record counts until its delivery report), so every send of a batch but
/// the first finds it full: each waits for room instead of failing, all are
/// delivered, and a batch keeps its order.
#[tokio::test]
async fn sends_into_a_full_client_queue_wait_for_room() {
    let (mut config, _) = provisioned().await;
    config
        .kafka
        .options
        .push("queue.buffering.max.messages=1".to_owned());
    let publisher = publisher(&config);
    let events: Vec<Event> = (0..20)
        .map(|_| default_example(EventType::WorkflowCompleted))
        .collect();
    let deliveries = published_in_order(&publisher, events).await;
    let single = publisher
        .publish(default_example(EventType::WorkflowCompleted))
        .await
        .expect("a single publish after the batch");
    assert!(single.offset > deliveries[19].offset);
}

/// A real fatal producer error. With `enable.gapless.guarantee` (a librdkafka
/// setting, reachable through `--kafka-option`), a batch the broker refuses
/// for good would leave a gap in the idempotent sequence, so librdkafka
/// raises the fatal error `_GAPLESS_GUARANTEE` and that producer instance
/// refuses every later send. The broker refuses the batch because the
/// record is larger than its topic's `max.message.bytes`.
#[tokio::test]
async fn a_fatal_producer_error_is_reported_and_the_next_publish_goes_out_on_a_rebuilt_producer() {
    let (mut config, prefix) = provisioned().await;
    let topic = format!("{prefix}opal.knowledge.upserted");
    let admin: AdminClient<DefaultClientContext> = config
        .kafka
        .client_config()
        .expect("config")
        .create()
        .expect("admin");
    let small_records_only = AlterConfig::new(ResourceSpecifier::Topic(&topic))
        .set("cleanup.policy", "delete")
        .set("min.insync.replicas", "1")
        .set("max.message.bytes", "2048");
    let altered = admin
        .alter_configs(
            &[small_records_only],
            &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
        )
        .await
        .expect("alter configs");
    assert!(altered.iter().all(Result::is_ok), "{altered:?}");
    let event = |tag: String| {
        let mut e = default_example(EventType::KnowledgeUpserted);
        e.envelope_mut().event_id.clear();
        if let Event::KnowledgeUpserted(k) = &mut e {
            k.tags = vec![tag];
        }
        e
    };
    let oversized = event("x".repeat(8192));

    // Control: without the guarantee the same refusal is not fatal.
    match publisher(&config).publish(oversized.clone()).await {
        Err(PublishError::BrokerRejected(e)) => assert_eq!(
            e.rdkafka_error_code(),
            Some(RDKafkaErrorCode::MessageSizeTooLarge),
            "{e}"
        ),
        other => panic!("expected BrokerRejected, got {other:?}"),
    }

    config
        .kafka
        .options
        .push("enable.gapless.guarantee=true".into());
    let metrics = PublishMetrics::new(&prometheus::Registry::new()).expect("metrics");
    let publisher = Publisher::new(config.clone(), metrics.clone()).expect("publisher");
    let err = publisher.publish(oversized).await.expect_err("refused");
    assert!(matches!(err, PublishError::BrokerFatal(_)), "{err:?}");
    assert!(err.is_retriable(), "a fatal error is worth retrying: {err}");
    assert_eq!(
        metrics
            .errors
            .with_label_values(&[&topic, "broker_fatal"])
            .get(),
        1
    );

    // A producer with a fatal error refuses every send: this one goes out
    // only because the publisher rebuilt it. Same topic, same key.
    let delivery = publisher
        .publish(event("pricing".into()))
        .await
        .expect("published on the rebuilt producer");
    let (_, written) = read_back(&publisher, &delivery).await;
    assert_eq!(written.envelope().event_id, delivery.event_id);
    assert_eq!(
        metrics.published.with_label_values(&[&topic]).get(),
        1,
        "counted once"
    );
    assert_eq!(
        total_records(&topic),
        1,
        "neither refused record was written"
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
