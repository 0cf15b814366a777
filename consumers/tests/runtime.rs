//! The consumer runtime in process, against the real local stack: poison pills,
//! retries, dead letters, and Redis going away mid-run.

mod common;

use std::time::Duration;

use common::*;
use opal_consumers::dlq::headers;
use opal_schemas::codec::encode_with_id;
use opal_schemas::samples::default_example;
use opal_schemas::{Event, EventType};

#[tokio::test]
async fn poison_pills_go_to_the_dlq_with_headers_and_good_events_around_them_are_processed() {
    let env = Env::new().await;
    let mut good = publish_knowledge(&env, 5, "policy").await;
    let topic = env.topic(EventType::KnowledgeUpserted);
    let schema_id = env
        .publisher
        .codec()
        .schema_id(EventType::KnowledgeUpserted, &topic)
        .await
        .expect("id");
    let valid = encode_with_id(&default_example(EventType::KnowledgeUpserted), schema_id);
    let registry = env.publisher.codec().registry();
    let foreign = r#"{"type":"record","name":"Stranger","namespace":"elsewhere","fields":[{"name":"x","type":"long"}]}"#;
    let foreign_id = registry
        .register(&opal_e2e::unique("foreign"), foreign)
        .await
        .expect("register");
    let mut invalid_event = default_example(EventType::KnowledgeUpserted);
    if let Event::KnowledgeUpserted(k) = &mut invalid_event {
        k.knowledge_id = String::new();
    }
    let invalid = encode_with_id(&invalid_event, schema_id);

    let pills: Vec<(&str, Option<Vec<u8>>, &str)> = vec![
        ("empty", None, "opal.Undecodable"),
        (
            "magic",
            Some([&[7u8][..], &valid[1..]].concat()),
            "opal.Undecodable",
        ),
        (
            "unknown-id",
            Some([&[0u8, 0x7f, 0xff, 0xff, 0xf0][..], &valid[5..]].concat()),
            "opal.Undecodable",
        ),
        (
            "truncated",
            Some(valid[..valid.len() / 2].to_vec()),
            "opal.Undecodable",
        ),
        (
            "foreign",
            Some([&[0u8][..], &foreign_id.to_be_bytes()[..], &[8u8][..]].concat()),
            "opal.Undecodable",
        ),
        ("invalid", Some(invalid.clone()), "opal.Invalid"),
    ];
    for (key, value, _) in &pills {
        produce_raw(&env, key, value.as_deref()).await;
    }
    good.extend(publish_knowledge(&env, 5, "policy").await);
    let rejected = publish_knowledge(&env, 1, "reject").await;

    let (cancel, task, _) = start(&env, None).await;
    let mut redis = redis().await;
    wait_for_total(&env, 10, TIMEOUT).await;
    settled(&env).await;
    cancel.cancel();
    task.await.expect("runtime stopped");
    let dead = read_all(&env.kafka(), &env.dlq(), 7).await;
    let source = read_all(&env.kafka(), &topic, 17).await;

    assert_eq!(
        counts(&mut redis, &env.count_prefix, &good).await,
        vec![1; 10],
        "good events processed once"
    );
    assert_eq!(get_count(&mut redis, &env.total_key()).await, 10);
    assert_eq!(dead.len(), 7, "six pills and the handler's rejection");
    for (key, value, class) in &pills {
        let record = dead
            .iter()
            .find(|m| rdkafka::Message::key(*m) == Some(key.as_bytes()))
            .unwrap_or_else(|| panic!("{key} not in the DLQ"));
        assert_eq!(
            message_bytes(record),
            (Some(key.as_bytes().to_vec()), value.clone()),
            "{key}: bytes unchanged"
        );
        assert_eq!(
            header(record, headers::EXCEPTION_FQCN).as_deref(),
            Some(*class),
            "{key}"
        );
        assert_eq!(
            header(record, headers::ORIGINAL_TOPIC).as_deref(),
            Some(topic.as_str())
        );
        assert_eq!(
            header(record, headers::ORIGINAL_CONSUMER_GROUP).as_deref(),
            Some(env.group.as_str())
        );
        // The coordinates are the original record's own, as read from its topic.
        let original = source
            .iter()
            .find(|m| rdkafka::Message::key(*m) == Some(key.as_bytes()))
            .unwrap_or_else(|| panic!("{key} not in {topic}"));
        let timestamp = rdkafka::Message::timestamp(original)
            .to_millis()
            .expect("timestamp");
        for (h, value) in [
            (
                headers::ORIGINAL_PARTITION,
                rdkafka::Message::partition(original).to_string(),
            ),
            (
                headers::ORIGINAL_OFFSET,
                rdkafka::Message::offset(original).to_string(),
            ),
            (headers::ORIGINAL_TIMESTAMP, timestamp.to_string()),
        ] {
            assert_eq!(
                header(record, h).as_deref(),
                Some(value.as_str()),
                "{key}: {h}"
            );
        }
        for h in [headers::EXCEPTION_MESSAGE, headers::FAILED_AT] {
            assert!(
                header(record, h).is_some_and(|v| !v.is_empty()),
                "{key}: header {h}"
            );
        }
        assert_eq!(header(record, headers::ATTEMPTS).as_deref(), Some("1"));
    }
    let by_handler = dead
        .iter()
        .find(|m| header(m, "opal-event-id").as_deref() == Some(rejected[0].as_str()))
        .expect("rejection");
    assert_eq!(
        header(by_handler, headers::EXCEPTION_FQCN).as_deref(),
        Some("opal.Invalid")
    );

    // Kafka's own kafka-console-consumer, as a witness independent of our
    // reader: the dead letter keyed "magic" carries the kafka_dlt-* headers.
    let magic = source
        .iter()
        .find(|m| rdkafka::Message::key(*m) == Some(&b"magic"[..]))
        .expect("magic");
    let brokers = opal_e2e::brokers();
    let dlq = env.dlq();
    let printed = opal_e2e::kafka_tool(
        "kafka-console-consumer",
        &[
            "--bootstrap-server",
            &brokers,
            "--topic",
            &dlq,
            "--from-beginning",
            "--max-messages",
            "7",
            "--timeout-ms",
            "60000",
            "--property",
            "print.headers=true",
            "--property",
            "print.key=true",
            "--property",
            "print.value=false",
        ],
    );
    let line = printed
        .lines()
        .find(|l| l.ends_with("\tmagic"))
        .unwrap_or_else(|| panic!("no dead letter keyed magic in:\n{printed}"));
    for expected in [
        format!("kafka_dlt-original-topic:{topic}"),
        format!(
            "kafka_dlt-original-offset:{}",
            rdkafka::Message::offset(magic)
        ),
        format!(
            "kafka_dlt-original-partition:{}",
            rdkafka::Message::partition(magic)
        ),
        "kafka_dlt-exception-fqcn:opal.Undecodable".to_owned(),
        format!("kafka_dlt-original-consumer-group:{}", env.group),
    ] {
        assert!(line.contains(&expected), "{expected} in {line}");
    }
}

#[tokio::test]
async fn transient_errors_are_retried_and_persistent_ones_dead_lettered_after_n_attempts() {
    let env = Env::new().await;
    let recovering = publish_knowledge(&env, 3, "fail-transient-2").await;
    let failing = publish_knowledge(&env, 1, "fail-always").await;
    let after = publish_knowledge(&env, 2, "policy").await;
    let (cancel, task, _) = start(&env, None).await;
    let mut redis = redis().await;
    wait_for_total(&env, 5, TIMEOUT).await;
    settled(&env).await;
    cancel.cancel();
    task.await.expect("stopped");
    let dead = read_all(&env.kafka(), &env.dlq(), 1).await;
    assert_eq!(
        counts(&mut redis, &env.count_prefix, &recovering).await,
        vec![1, 1, 1],
        "processed after retries"
    );
    assert_eq!(
        counts(&mut redis, &env.count_prefix, &after).await,
        vec![1, 1],
        "order kept after the failure"
    );
    assert_eq!(
        counts(&mut redis, &env.count_prefix, &failing).await,
        vec![0]
    );
    assert_eq!(dead.len(), 1);
    assert_eq!(
        header(&dead[0], "opal-event-id").as_deref(),
        Some(failing[0].as_str())
    );
    assert_eq!(
        header(&dead[0], headers::EXCEPTION_FQCN).as_deref(),
        Some("opal.TransientExhausted")
    );
    assert_eq!(
        header(&dead[0], headers::ATTEMPTS).as_deref(),
        Some("3"),
        "retry_attempts = 3"
    );
}

#[tokio::test]
async fn redis_down_for_ten_seconds_pauses_without_dead_letters_or_losses() {
    let env = Env::new().await;
    let dir = std::env::temp_dir().join(opal_e2e::unique("opal-redis"));
    let redis_server = PrivateRedis::start(free_port(), &dir);
    redis_server.answering().await;
    let url = redis_server.url();
    let mut ids = publish_knowledge(&env, 200, "policy").await;
    let (cancel, task, health) = start(&env, Some(&url)).await;
    let total_key = env.total_key();
    wait_until(TIMEOUT, "first 200", || {
        let url = url.clone();
        let key = total_key.clone();
        async move { get_count(&mut redis_at(&url).await, &key).await >= 200 }
    })
    .await;

    let (port, dir) = redis_server.stop();
    ids.extend(publish_knowledge(&env, 200, "policy").await);
    let health_probe = health.clone();
    wait_until(
        Duration::from_secs(15),
        "readiness false while Redis is down",
        || {
            let h = health_probe.clone();
            async move { !h.ready() }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!health.ready(), "still not ready after 10 s without Redis");
    let _redis_again = PrivateRedis::start(port, &dir);

    wait_until(
        Duration::from_secs(60),
        "all 400 after Redis returns",
        || {
            let url = url.clone();
            let key = total_key.clone();
            async move {
                redis::Client::open(url.as_str())
                    .expect("u")
                    .get_multiplexed_async_connection()
                    .await
                    .is_ok()
                    && get_count(&mut redis_at(&url).await, &key).await >= 400
            }
        },
    )
    .await;
    wait_until(Duration::from_secs(15), "ready again", || {
        let h = health.clone();
        async move { h.ready() }
    })
    .await;
    cancel.cancel();
    task.await.expect("stopped");
    let mut connection = redis_at(&url).await;
    assert_eq!(
        counts(&mut connection, &env.count_prefix, &ids).await,
        vec![1; 400],
        "each exactly once"
    );
    assert_eq!(get_count(&mut connection, &total_key).await, 400);
    let dlq = dlq_records(&env).await;
    assert_eq!(dlq, 0, "nothing dead-lettered for a dependency outage");
}

/// An event waiting for another input (a join) parks its partition: it is
/// tried again after a pause, more times than the retry budget, never
/// dead-lettered, and the events after it keep their order.
#[tokio::test]
async fn waiting_events_park_their_partition_without_spending_retries() {
    let env = Env::new().await;
    let waiting = publish_knowledge(&env, 2, "wait-6").await;
    let after = publish_knowledge(&env, 3, "policy").await;
    let (cancel, task, _) = start(&env, None).await;
    let mut redis = redis().await;
    wait_for_total(&env, 5, TIMEOUT).await;
    cancel.cancel();
    task.await.expect("stopped");
    assert_eq!(
        counts(&mut redis, &env.count_prefix, &waiting).await,
        vec![1, 1],
        "applied once the wait was over, after six tries (the retry budget is three)"
    );
    assert_eq!(
        counts(&mut redis, &env.count_prefix, &after).await,
        vec![1, 1, 1]
    );
    assert_eq!(get_count(&mut redis, &env.total_key()).await, 5);
    assert_eq!(dlq_records(&env).await, 0, "waiting is never dead-lettered");
}

#[tokio::test]
async fn reset_offsets_replays_from_a_point_and_refuses_while_the_group_is_active() {
    use opal_topics::offsets::{ResetError, ResetTo, reset_offsets};
    let env = Env::new().await;
    let first = publish_knowledge(&env, 20, "policy").await;
    let (cancel, task, _) = start(&env, None).await;
    let mut redis = redis().await;
    wait_for_total(&env, 20, TIMEOUT).await;
    let topic = env.topic(EventType::KnowledgeUpserted);
    let (kafka, group, t) = (env.kafka(), env.group.clone(), topic.clone());
    let active = tokio::task::spawn_blocking(move || {
        reset_offsets(&kafka, &group, &t, ResetTo::Earliest, true, TIMEOUT)
    })
    .await
    .expect("join");
    assert!(
        matches!(active, Err(ResetError::GroupActive { members: 1, .. })),
        "refused while the consumer is a member: {active:?}"
    );
    cancel.cancel();
    task.await.expect("stopped");

    let (kafka, group, t) = (env.kafka(), env.group.clone(), topic.clone());
    let plan = tokio::task::spawn_blocking(move || {
        // The group may take a moment to empty after the consumer leaves.
        for _ in 0..20 {
            match reset_offsets(&kafka, &group, &t, ResetTo::Earliest, false, TIMEOUT) {
                Err(ResetError::GroupActive { .. }) => {
                    std::thread::sleep(Duration::from_millis(500))
                }
                other => return other,
            }
        }
        reset_offsets(&kafka, &group, &t, ResetTo::Earliest, false, TIMEOUT)
    })
    .await
    .expect("join")
    .expect("reset");
    assert_eq!(
        plan.iter().map(|p| p.target).sum::<i64>(),
        0,
        "back to the start: {plan:?}"
    );
    assert_eq!(
        plan.iter().filter_map(|p| p.current).sum::<i64>(),
        20,
        "from where the group was"
    );

    // Replaying re-delivers all 20: every one is recognised as a duplicate.
    let (cancel, task, _, metrics) = start_observed(&env, None).await;
    let duplicates = metrics
        .consumed
        .with_label_values(&["counting", &topic, "duplicate"]);
    wait_until(TIMEOUT, "all 20 redelivered as duplicates", || async {
        duplicates.get() == 20
    })
    .await;
    settled(&env).await;
    cancel.cancel();
    task.await.expect("stopped");
    assert_eq!(duplicates.get(), 20, "each came again exactly once");
    assert_eq!(
        counts(&mut redis, &env.count_prefix, &first).await,
        vec![1; 20],
        "replayed, not re-applied"
    );
}
