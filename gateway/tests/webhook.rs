//! Webhook routes on the real stack: the gateway as a process, real HTTP
//! receivers, signatures judged by the Standard Webhooks reference library,
//! a receiver that goes down, one that fails forever, and a gateway killed
//! with SIGKILL mid-stream.

#![allow(clippy::unwrap_used)]

mod webhook_support;
mod ws_support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use opal_schemas::EventType;
use webhook_support::*;
use ws_support::{Stack, free_port, metric};

const LONG: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread")]
async fn matching_events_are_delivered_once_signed_as_standard_webhooks_say() {
    let stack = Stack::new().await;
    let single = Hook::start().await;
    let batched = Hook::start().await;
    let secret = secret();
    let filter = Some(r#"{ field = "scope", prefix = "match-" }"#);
    let routes = [
        webhook_route(
            "single",
            r#"["decision.*"]"#,
            filter,
            &single.url(),
            &secret,
            "",
        ),
        webhook_route(
            "batched",
            r#"["decision.*"]"#,
            filter,
            &batched.url(),
            &secret,
            "batch_size = 5\nmax_wait_ms = 200",
        ),
    ]
    .concat();
    let mut gateway = stack.gateway(free_port(), &routes, &[]);
    gateway.ready().await;

    let matching = stack
        .publish(EventType::DecisionDegraded, 20, 4, "match")
        .await;
    let filtered_out = stack
        .publish(EventType::DecisionDegraded, 10, 2, "other")
        .await;
    let other_type = stack
        .publish(EventType::DecisionGenerated, 5, 5, "match")
        .await;
    single.wait_for_all(&matching, LONG).await;
    batched.wait_for_all(&matching, LONG).await;
    // Every degraded event has been through both routes (the filtered ones too).
    until(
        "both routes consumed all 30 degraded events",
        LONG,
        async || {
            let m = gateway.metrics().await;
            ["gateway.single", "gateway.batched"].iter().all(|c| {
                metric(
                    &m,
                    "opal_events_consumed_total",
                    &[("consumer", c), ("outcome", "processed")],
                ) >= 30.0
            })
        },
    )
    .await;

    for hook in [&single, &batched] {
        let mut got = hook.event_ids();
        got.sort();
        let mut want = matching.clone();
        want.sort();
        assert_eq!(got, want, "each matching event once, nothing else");
        let verdicts = verify(&secret, &hook.requests());
        assert!(verdicts.iter().all(|v| v == "ok"), "{verdicts:?}");
    }
    let excluded: HashSet<&String> = filtered_out.iter().chain(&other_type).collect();
    assert!(single.event_ids().iter().all(|id| !excluded.contains(id)));

    // One event per POST: webhook-id is the event id (the receiver's idempotency key).
    for r in single.requests() {
        let events = r.events();
        assert_eq!(events.len(), 1);
        assert_eq!(r.webhook_id(), events[0]["event_id"].as_str().unwrap());
        assert_eq!(r.headers["opal-event-type"], "decision.degraded");
    }
    // Batches are JSON arrays of the same event JSON.
    assert!(
        batched.requests().iter().any(|r| r.events().len() > 1),
        "some batch carried several events"
    );
    assert!(batched.requests().iter().all(|r| r.events().len() <= 5));

    // The verifier is not a rubber stamp: a tampered body and a stale timestamp are refused.
    let genuine = single.requests()[0].clone();
    let mut tampered = genuine.clone();
    tampered.body = tampered.body.replacen("match-", "hacked-", 1);
    assert_ne!(tampered.body, genuine.body);
    let mut stale = genuine.clone();
    let old = opal_schemas::now_millis() / 1000 - 600;
    let signature = opal_gateway::WebhookSecret::parse(&secret)
        .unwrap()
        .sign(genuine.webhook_id(), old, genuine.body.as_bytes())
        .unwrap();
    stale
        .headers
        .insert("webhook-timestamp".into(), old.to_string());
    stale.headers.insert("webhook-signature".into(), signature);
    let verdicts = verify(&secret, &[genuine, tampered, stale]);
    assert_eq!(verdicts[0], "ok");
    assert!(
        verdicts[1].starts_with("refused") && verdicts[1].contains("signature"),
        "{}",
        verdicts[1]
    );
    assert!(
        verdicts[2].starts_with("refused") && verdicts[2].to_lowercase().contains("old"),
        "{}",
        verdicts[2]
    );

    let m = gateway.metrics().await;
    assert_eq!(
        metric(&m, "opal_gateway_delivered_total", &[("route", "single")]),
        20.0
    );
    assert!(
        metric(
            &m,
            "opal_gateway_delivery_latency_seconds_count",
            &[("route", "single")]
        ) >= 20.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_down_for_10_s_gets_everything_after_and_other_routes_keep_flowing() {
    let stack = Stack::new().await;
    let down = Hook::start().await;
    let up = Hook::start().await;
    let secret = secret();
    let routes = [
        webhook_route(
            "down",
            r#"["decision.degraded"]"#,
            None,
            &down.url(),
            &secret,
            "",
        ),
        webhook_route(
            "up",
            r#"["decision.degraded"]"#,
            None,
            &up.url(),
            &secret,
            "",
        ),
    ]
    .concat();
    let mut gateway = stack.gateway(free_port(), &routes, &[]);
    gateway.ready().await;

    down.stop().await;
    let went_down = tokio::time::Instant::now();
    let ids = stack
        .publish(EventType::DecisionDegraded, 30, 6, "scope")
        .await;
    // The other route delivers everything while its neighbour's receiver is down.
    up.wait_for_all(&ids, LONG).await;
    until("the down route reports its pause", LONG, async || {
        metric(
            &gateway.metrics().await,
            "opal_gateway_route_paused",
            &[("route", "down")],
        ) == 1.0
    })
    .await;
    assert!(down.requests().is_empty());
    tokio::time::sleep_until(went_down + Duration::from_secs(10)).await;
    down.restart().await;

    down.wait_for_all(&ids, LONG).await;
    let got: HashSet<String> = down.event_ids().into_iter().collect();
    assert_eq!(
        got,
        ids.iter().cloned().collect::<HashSet<_>>(),
        "nothing lost"
    );
    let m = gateway.metrics().await;
    assert_eq!(
        metric(&m, "opal_gateway_failed_total", &[("route", "down")]),
        0.0
    );
    assert!(
        metric(
            &m,
            "opal_gateway_webhook_failures_total",
            &[("route", "down"), ("reason", "unreachable")]
        ) >= 1.0
    );
    until("the pause is over", LONG, async || {
        metric(
            &gateway.metrics().await,
            "opal_gateway_route_paused",
            &[("route", "down")],
        ) == 0.0
    })
    .await;
    // Nothing was dead-lettered for the outage.
    let dlq = format!("{}{}.down.dlq", stack.prefix, stack.group);
    assert_eq!(topic_end(&dlq), 0, "{dlq}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_answering_500_forever_sends_the_event_to_the_gateway_dlq() {
    let stack = Stack::new().await;
    let failing = Hook::start().await;
    failing.answer(500);
    let secret = secret();
    let routes = webhook_route(
        "failing",
        r#"["decision.degraded"]"#,
        None,
        &failing.url(),
        &secret,
        "attempts = 3\nbackoff_base_ms = 50\nbackoff_max_ms = 200",
    );
    let mut gateway = stack.gateway(free_port(), &routes, &[]);
    gateway.ready().await;

    let ids = stack
        .publish(EventType::DecisionDegraded, 1, 1, "scope")
        .await;
    let dlq = format!("{}{}.failing.dlq", stack.prefix, stack.group);
    let records = read_topic(&dlq, 1, LONG).await;
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(
        header(record, "kafka_dlt-exception-fqcn").as_deref(),
        Some("opal.TransientExhausted")
    );
    assert_eq!(header(record, "opal-dlq-attempts").as_deref(), Some("3"));
    assert!(
        header(record, "kafka_dlt-exception-message")
            .unwrap()
            .contains("HTTP 500")
    );
    assert_eq!(
        header(record, "kafka_dlt-original-topic").unwrap(),
        format!("{}opal.decision.degraded", stack.prefix)
    );
    // Exactly the retry budget, each attempt with the same id.
    let requests = failing.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|r| r.webhook_id() == ids[0]));
    until("the failure is counted", LONG, async || {
        metric(
            &gateway.metrics().await,
            "opal_gateway_failed_total",
            &[("route", "failing")],
        ) == 1.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_killed_mid_stream_delivers_every_event_at_least_once_after_restart() {
    let stack = Stack::new().await;
    let hook = Hook::start().await;
    let secret = secret();
    // The route's rate limit spreads the 400 deliveries over ~8 s, so the
    // kill lands mid-stream whatever the machine's speed.
    let routes = webhook_route(
        "steady",
        r#"["decision.degraded"]"#,
        None,
        &hook.url(),
        &secret,
        "rate_per_sec = 50",
    );
    let port = free_port();
    let mut gateway = stack.gateway(port, &routes, &[]);
    gateway.ready().await;
    let ids = stack
        .publish(EventType::DecisionDegraded, 400, 20, "scope")
        .await;

    until("a hundred deliveries", LONG, async || {
        hook.requests().len() >= 100
    })
    .await;
    gateway.child.kill().unwrap(); // SIGKILL
    gateway.child.wait().unwrap();
    let before_restart = hook.requests().len();
    assert!(
        before_restart < ids.len(),
        "the kill came mid-stream ({before_restart} delivered)"
    );

    let mut gateway = stack.gateway(port, &routes, &[]);
    gateway.ready().await;
    hook.wait_for_all(&ids, LONG).await;

    let requests = hook.requests();
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for r in &requests {
        let events = r.events();
        let id = events[0]["event_id"].as_str().unwrap();
        // A duplicate is the same event under the same id: the receiver's idempotency key.
        assert_eq!(r.webhook_id(), id);
        *per_id.entry(id.to_owned()).or_default() += 1;
    }
    let want: HashSet<&String> = ids.iter().collect();
    assert_eq!(
        per_id.keys().collect::<HashSet<_>>(),
        want,
        "every event delivered, nothing else"
    );
    let duplicates: usize = per_id.values().map(|n| n - 1).sum();
    eprintln!(
        "kill -9 after {before_restart} deliveries: {} requests for {} events, {duplicates} duplicate(s)",
        requests.len(),
        ids.len()
    );
    drop(gateway);
}

/// The end offset of partition 0.. of `topic`, summed (0: empty).
fn topic_end(topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", opal_e2e::brokers())
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = metadata.topics()[0].partitions().len() as i32;
    assert!(partitions > 0, "{topic} exists");
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap()
                .1
        })
        .sum()
}
