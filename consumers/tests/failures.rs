//! Every failure decided in one place (`classify`), tried on the real stack:
//! a state key of the wrong type costs only its own event (retried, then
//! dead-lettered, readiness untouched), an emitted event the broker refuses
//! for good dead-letters its input with a class that says so, and a consumer
//! whose dead-letter topic is missing refuses to start, naming it.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use opal_consumers::dlq::headers;
use opal_consumers::health::Health;
use opal_consumers::metrics::ConsumerMetrics;
use opal_schemas::EventType;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;

/// Dead letters the consumer has written (the broker acknowledged them).
fn dead_lettered(metrics: &ConsumerMetrics, env: &Env) -> u64 {
    metrics
        .consumed
        .with_label_values(&[
            "counting",
            &env.topic(EventType::KnowledgeUpserted),
            "dead_lettered",
        ])
        .get()
}

/// Waits until `done`, asserting all the while that the consumer stays ready
/// and reports each dependency up: nothing about one event is an outage.
async fn wait_ready_throughout(
    health: &Health,
    metrics: &ConsumerMetrics,
    what: &str,
    mut done: impl AsyncFnMut() -> bool,
) -> usize {
    // The health checks report every dependency once at start.
    wait_until(TIMEOUT, "the first health check", || async {
        metrics.dependency_up.with_label_values(&["redis"]).get() == 1
    })
    .await;
    let deadline = Instant::now() + TIMEOUT;
    let mut samples = 0;
    while !done().await {
        assert!(health.ready(), "readiness stayed true: {}", health.report());
        for dependency in ["kafka", "redis", "registry"] {
            assert_eq!(
                metrics.dependency_up.with_label_values(&[dependency]).get(),
                1,
                "opal_dependency_up{{dependency=\"{dependency}\"}} stayed 1"
            );
        }
        samples += 1;
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    samples
}

#[tokio::test]
async fn a_state_key_of_the_wrong_type_dead_letters_only_its_event_and_readiness_holds() {
    let env = Env::new().await;
    let ids = publish_knowledge(&env, 10, "policy").await;
    let mut redis = redis().await;
    // One event's counter holds a hash: Redis refuses its INCR (WRONGTYPE).
    let poisoned = ids[3].clone();
    let poisoned_key = format!("{}:count:{poisoned}", env.count_prefix);
    redis::cmd("HSET")
        .arg(&poisoned_key)
        .arg("planted")
        .arg("by the test")
        .query_async::<()>(&mut redis)
        .await
        .expect("HSET");

    let (cancel, task, health, metrics) = start_observed(&env, None).await;
    let total_key = env.total_key();
    let samples =
        wait_ready_throughout(&health, &metrics, "9 applied, 1 dead letter", async || {
            get_count(&mut redis.clone(), &total_key).await >= 9
                && dead_lettered(&metrics, &env) >= 1
        })
        .await;
    cancel.cancel();
    task.await.expect("stopped");
    assert!(
        samples > 0,
        "readiness was sampled while the event was retried"
    );

    let applied = counts(&mut redis, &env.count_prefix, &ids).await;
    for (id, count) in ids.iter().zip(&applied) {
        if *id != poisoned {
            assert_eq!(*count, 1, "{id} applied once");
        }
    }
    assert_eq!(
        get_count(&mut redis, &env.total_key()).await,
        9,
        "the others, and only they"
    );
    let planted: Option<String> = redis::cmd("HGET")
        .arg(&poisoned_key)
        .arg("planted")
        .query_async(&mut redis)
        .await
        .expect("HGET");
    assert_eq!(
        planted.as_deref(),
        Some("by the test"),
        "the bad key is left as it was"
    );

    let dead = read_all(&env.kafka(), &env.dlq(), 1).await;
    assert_eq!(dead.len(), 1, "one dead letter");
    let record = &dead[0];
    assert_eq!(
        header(record, "opal-event-id").as_deref(),
        Some(poisoned.as_str())
    );
    assert_eq!(
        header(record, headers::EXCEPTION_FQCN).as_deref(),
        Some("opal.TransientExhausted")
    );
    assert!(
        header(record, headers::EXCEPTION_MESSAGE).is_some_and(|m| m.contains("WRONGTYPE")),
        "{:?}",
        header(record, headers::EXCEPTION_MESSAGE)
    );
    assert_eq!(
        header(record, headers::ATTEMPTS).as_deref(),
        Some(env.args.retry_attempts.to_string().as_str()),
        "retried up to the budget first"
    );
}

#[tokio::test]
async fn an_emitted_event_the_broker_refuses_for_good_dead_letters_its_input() {
    let env = Env::new().await;
    // decision.degraded takes no record over 64 bytes: the emitted one is larger.
    let degraded = env.topic(EventType::DecisionDegraded);
    let admin: AdminClient<DefaultClientContext> = env
        .kafka()
        .client_config()
        .expect("config")
        .create()
        .expect("admin");
    let altered =
        admin
            .alter_configs(
                &[AlterConfig::new(ResourceSpecifier::Topic(&degraded))
                    .set("max.message.bytes", "64")],
                &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
            )
            .await
            .expect("alter configs");
    assert!(altered.iter().all(Result::is_ok), "{altered:?}");
    let mut ids = publish_knowledge(&env, 3, "policy").await;
    let emitting = publish_knowledge(&env, 1, "emit-degraded").await;
    ids.extend(publish_knowledge(&env, 3, "policy").await);

    let mut redis = redis().await;
    let (cancel, task, health, metrics) = start_observed(&env, None).await;
    let total_key = env.total_key();
    wait_ready_throughout(&health, &metrics, "6 applied, 1 dead letter", async || {
        get_count(&mut redis.clone(), &total_key).await >= 6 && dead_lettered(&metrics, &env) >= 1
    })
    .await;
    cancel.cancel();
    task.await.expect("stopped");

    assert_eq!(
        counts(&mut redis, &env.count_prefix, &ids).await,
        vec![1; 6]
    );
    assert_eq!(
        counts(&mut redis, &env.count_prefix, &emitting).await,
        vec![0],
        "the input whose emit was refused is not applied"
    );
    let dead = read_all(&env.kafka(), &env.dlq(), 1).await;
    assert_eq!(dead.len(), 1);
    let record = &dead[0];
    assert_eq!(
        header(record, "opal-event-id").as_deref(),
        Some(emitting[0].as_str())
    );
    assert_eq!(
        header(record, headers::EXCEPTION_FQCN).as_deref(),
        Some("opal.EmitRejected")
    );
    assert!(
        header(record, headers::EXCEPTION_MESSAGE)
            .is_some_and(|m| m.contains("too large") || m.contains("MessageSizeTooLarge")),
        "{:?}",
        header(record, headers::EXCEPTION_MESSAGE)
    );
    assert_eq!(
        header(record, headers::ATTEMPTS).as_deref(),
        Some("1"),
        "not retried"
    );
}

#[tokio::test]
async fn a_consumer_whose_dead_letter_topic_is_missing_exits_non_zero_naming_it() {
    let env = Env::new().await;
    let group = opal_e2e::unique("no-dlq-group");
    let missing = opal_topics::dlq_topic(&env.prefix, &group);
    let output = Command::new(env!("CARGO_BIN_EXE_opal-counting-consumer"))
        .args(["--inputs", "knowledge.upserted"])
        .env("KAFKA_BROKERS", opal_e2e::brokers())
        .env("SCHEMA_REGISTRY_URL", opal_e2e::registry_url())
        .env("REDIS_URL", &env.args.redis.url)
        .env("OPAL_TOPIC_PREFIX", &env.prefix)
        .env("OPAL_CONSUMER_GROUP", &group)
        .env("OPAL_HTTP_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run the consumer");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("missing topic(s) {missing}")),
        "names the missing DLQ: {stderr}"
    );
}
