//! Dependency outages mid-consumption, seen as an operator sees them, over
//! HTTP: while Redis, the registry (a record written with a schema id the
//! consumer has not seen yet) or the broker is down, `/health/ready` answers
//! 503 with a JSON body naming it and `/health/live` still answers 200;
//! consumption pauses, nothing is dead-lettered, and once the dependency is
//! back readiness returns to 200 and every event is applied exactly once.
//! Each dependency is the test's own, so stopping it harms no other test.

mod common;

use std::time::Duration;

use common::*;
use opal_schemas::EventType;
use serde_json::Value;

/// `GET /health/ready` of the consumer on `port`: its status and JSON body.
async fn ready(port: u16) -> Option<(u16, Value)> {
    let (status, body) = http_get(port, "/health/ready").await?;
    Some((status, serde_json::from_str(&body).ok()?))
}

/// Waits until readiness answers `status` with `dependency` reported as `state`.
async fn readiness_becomes(port: u16, status: u16, dependency: &str, state: &str) -> Value {
    let what = format!("/health/ready {status} with {dependency} {state}");
    wait_until(Duration::from_secs(90), &what, || async move {
        ready(port)
            .await
            .is_some_and(|(s, body)| s == status && body["checks"][dependency] == state)
    })
    .await;
    ready(port).await.expect("readiness").1
}

/// Dead letters the consumer on `port` has written.
async fn dead_lettered(port: u16) -> f64 {
    let text = http_get(port, "/metrics").await.expect("metrics").1;
    metric(
        &text,
        "opal_events_consumed_total",
        &[("outcome", "dead_lettered")],
    )
}

/// What every outage test checks while the dependency is down: 503 with a
/// JSON body naming it, the process still live, nothing dead-lettered.
async fn while_down(port: u16, dependency: &str) {
    let body = readiness_becomes(port, 503, dependency, "down").await;
    assert_eq!(body["ready"], false, "{body}");
    let (live, _) = http_get(port, "/health/live").await.expect("live");
    assert_eq!(live, 200, "the process is alive while {dependency} is down");
    assert_eq!(
        dead_lettered(port).await,
        0.0,
        "nothing dead-lettered for an outage"
    );
}

/// After the dependency returned: 200, every event applied once, no dead letter.
async fn after_return(env: &Env, port: u16, dependency: &str, ids: &[String], redis_url: &str) {
    let body = readiness_becomes(port, 200, dependency, "up").await;
    assert_eq!(body["ready"], true, "{body}");
    assert_eq!(body["paused"], false, "{body}");
    wait_until(Duration::from_secs(120), "every event applied", || async {
        get_count(&mut redis_at(redis_url).await, &env.total_key()).await >= ids.len() as i64
    })
    .await;
    assert_eq!(
        counts(&mut redis_at(redis_url).await, &env.count_prefix, ids).await,
        vec![1; ids.len()],
        "nothing lost, nothing applied twice"
    );
    assert_eq!(dead_lettered(port).await, 0.0);
}

#[tokio::test]
async fn redis_down_answers_503_naming_it_and_200_once_it_is_back() {
    let env = Env::new().await;
    let dir = std::env::temp_dir().join(opal_e2e::unique("opal-redis"));
    let port = free_port();
    let redis_server = PrivateRedis::start(port, &dir);
    redis_server.answering().await;
    let url = redis_server.url();
    let mut ids = publish_knowledge(&env, 100, "policy").await;
    let http = free_port();
    let _consumer = env.spawn_counting_with(http, &[("REDIS_URL", url.as_str())]);
    readiness_becomes(http, 200, "redis", "up").await;

    let (port, dir) = redis_server.stop();
    ids.extend(publish_knowledge(&env, 100, "policy").await);
    while_down(http, "redis").await;
    let _back = PrivateRedis::start(port, &dir);
    after_return(&env, http, "redis", &ids, &url).await;
}

#[tokio::test]
async fn the_registry_down_with_a_new_schema_id_arriving_answers_503_and_nothing_is_lost() {
    let dir = std::env::temp_dir().join(opal_e2e::unique("opal-registry"));
    let mut registry = PrivateRegistry::start(free_port(), &dir);
    registry.answering().await;
    let env = Env::on(&opal_e2e::brokers(), &registry.url()).await;
    let mut ids = publish_events(&env, EventType::AgentCompleted, 50).await;
    let http = free_port();
    let _consumer = env.spawn_counting_for("agent.completed", http, &[]);
    wait_until(TIMEOUT, "the first 50 applied", || async {
        get_count(&mut redis().await, &env.total_key()).await >= 50
    })
    .await;

    // agent.completed's version 1, under a subject of its own: an id this
    // consumer has never fetched, so decoding it needs the registry.
    let v1 = include_str!("../../schemas/avro/history/agent_completed.v1.avsc");
    let v1_id = env
        .publisher
        .codec()
        .registry()
        .register(&format!("{}history-agent-completed-value", env.prefix), v1)
        .await
        .expect("register v1");
    let fixture = include_bytes!("../../schemas/fixtures/agent_completed.v1.bin");
    let record = [&[0u8][..], &v1_id.to_be_bytes()[..], &fixture[5..]].concat();
    let v1_event_id = env
        .publisher
        .codec()
        .decode(&record)
        .await
        .expect("the v1 record decodes while the registry is up")
        .event
        .envelope()
        .event_id
        .clone();

    registry.stop();
    produce_raw_to(&env, EventType::AgentCompleted, "wf-v1", Some(&record)).await;
    ids.push(v1_event_id);
    while_down(http, "registry").await;
    registry.restart();
    after_return(&env, http, "registry", &ids, &opal_e2e::redis_url()).await;
}

#[tokio::test]
async fn the_broker_down_answers_503_naming_it_and_consumption_resumes_when_it_is_back() {
    let broker = opal_e2e::PrivateBroker::start();
    let env = Env::on(&broker.brokers(), &opal_e2e::registry_url()).await;
    let mut ids = publish_knowledge(&env, 100, "policy").await;
    let http = free_port();
    let _consumer = env.spawn_counting(http);
    wait_for_total(&env, 100, TIMEOUT).await;

    broker.stop();
    while_down(http, "kafka").await;
    broker.start_again();
    let body = readiness_becomes(http, 200, "kafka", "up").await;
    assert_eq!(body["ready"], true, "{body}");
    // Consumption goes on where it stopped.
    ids.extend(publish_knowledge(&env, 100, "policy").await);
    after_return(&env, http, "kafka", &ids, &opal_e2e::redis_url()).await;
}
