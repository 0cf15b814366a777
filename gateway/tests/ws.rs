//! `/ws` on the real stack: the gateway as a process, real WebSocket clients.
//! Live events per subscription, refusals, the `from` catch-up with no gap
//! and no duplicate at the seam, a client that never reads closed while the
//! others get everything, and the fallback webhook used exactly while no
//! client of the route is connected.

#![allow(clippy::unwrap_used)]

mod ws_support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use opal_schemas::EventType;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use ws_support::*;

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

fn set(ids: &[String]) -> HashSet<&str> {
    ids.iter().map(String::as_str).collect()
}

const UI_ROUTE: &str = r#"
[[route]]
name = "ui"
patterns = ["decision.*"]
[route.websocket]
"#;

#[tokio::test(flavor = "multi_thread")]
async fn each_client_gets_the_live_events_of_its_subscription_only() {
    let stack = Stack::new().await;
    let mut gateway = stack.gateway(free_port(), UI_ROUTE, &[]);
    gateway.ready().await;
    let mut by_route = gateway
        .subscribe(json!({"type": "subscribe", "route": "ui"}))
        .await;
    let mut own = gateway
        .subscribe(json!({
            "type": "subscribe",
            "patterns": ["knowledge.*", "workflow.started"],
            "filter": {"field": "knowledge_id", "prefix": "kb-keep"},
        }))
        .await;

    let decisions = stack
        .publish(EventType::DecisionGenerated, 5, 5, "acme")
        .await;
    let kept = stack
        .publish(EventType::KnowledgeUpserted, 4, 4, "kb-keep")
        .await;
    let other = stack
        .publish(EventType::KnowledgeUpserted, 4, 4, "kb-other")
        .await;
    let workflows = stack.publish(EventType::WorkflowStarted, 3, 3, "wf").await;

    let got = next_events(&mut by_route, decisions.len()).await;
    assert_eq!(
        ids(&got).into_iter().collect::<HashSet<_>>(),
        decisions.iter().cloned().collect(),
        "the route's clients get its events"
    );
    let first = got
        .iter()
        .find(|e| e["event_id"] == decisions[0].as_str())
        .unwrap();
    assert_eq!(first["event_type"], "decision.generated");
    assert_eq!(first["key"], "acme-0");
    assert_eq!(first["replayed"], false);
    assert_eq!(
        first["event"]["event_id"], first["event_id"],
        "the event as JSON, with its id"
    );

    // The filter applies to knowledge events; workflow.started has no
    // knowledge_id, so the filter leaves none of them.
    let got = next_events(&mut own, kept.len()).await;
    assert_eq!(
        ids(&got).into_iter().collect::<HashSet<_>>(),
        kept.iter().cloned().collect()
    );

    // Nothing else follows on either connection.
    let more: Vec<Value> = drain(&mut by_route, Duration::from_secs(2)).await;
    assert!(more.iter().all(|m| m["type"] != "event"), "{more:?}");
    let more = drain(&mut own, Duration::from_secs(1)).await;
    let leaked: Vec<&Value> = more.iter().filter(|m| m["type"] == "event").collect();
    assert!(
        leaked.is_empty(),
        "{leaked:?} (other {other:?}, workflows {workflows:?})"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_subscription_is_refused_with_a_reason() {
    let stack = Stack::new().await;
    let mut gateway = stack.gateway(
        free_port(),
        &format!(
            "{UI_ROUTE}\n[[route]]\nname = \"hooks\"\npatterns = [\"#\"]\n[route.webhook]\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"{SECRET}\"\n"
        ),
        &[],
    );
    gateway.ready().await;
    for (request, says) in [
        (
            json!({"type": "subscribe", "route": "nope"}),
            "no route named 'nope'",
        ),
        (
            json!({"type": "subscribe", "route": "hooks"}),
            "webhook route",
        ),
        (
            json!({"type": "subscribe", "patterns": ["decison.*"]}),
            "decison.*",
        ),
        (
            json!({"type": "subscribe", "patterns": ["#"], "from": "yesterday"}),
            "yesterday",
        ),
        (
            json!({"type": "subscribe", "patterns": ["#"], "filter": {"field": "x", "like": 1}}),
            "bad subscription",
        ),
    ] {
        let mut socket = gateway.connect().await;
        socket
            .send(Message::text(request.to_string()))
            .await
            .unwrap();
        let error = next_message(&mut socket).await;
        assert_eq!(error["type"], "error", "{error}");
        assert!(
            error["message"].as_str().unwrap().contains(says),
            "{request}: {error}"
        );
        match socket.next().await {
            Some(Ok(Message::Close(Some(close)))) => {
                assert_eq!(close.code, CloseCode::Policy, "{close:?}");
                assert!(close.reason.contains(says), "{close:?}");
            }
            other => panic!("{request}: expected a close frame, got {other:?}"),
        }
    }
}

/// Publishes feedback events in chunks until `stop` is set.
async fn publish_until(
    stack: &Stack,
    stop: tokio::sync::watch::Receiver<bool>,
    chunk: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    let mut round = 0;
    while !*stop.borrow() {
        ids.extend(
            stack
                .publish(EventType::FeedbackSubmitted, chunk, 10, "f")
                .await,
        );
        round += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(round < 10_000, "the publisher was never stopped");
    }
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn from_sends_the_history_then_the_live_stream_with_no_gap_and_no_duplicate() {
    let stack = std::sync::Arc::new(Stack::new().await);
    let mut gateway = stack.gateway(free_port(), UI_ROUTE, &[]);
    gateway.ready().await;
    let mut watcher = gateway
        .subscribe(json!({"type": "subscribe", "patterns": ["knowledge.upserted"]}))
        .await;

    let before = stack
        .publish(EventType::KnowledgeUpserted, 100, 10, "k")
        .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let from = opal_schemas::now_millis();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let history = stack
        .publish(EventType::KnowledgeUpserted, 300, 10, "k")
        .await;

    // The gateway's consumer has read every knowledge event: on those
    // partitions the seam is the high watermark itself.
    next_events(&mut watcher, before.len() + history.len()).await;
    drop(watcher);
    // Feedback events keep coming while the client subscribes, reads the
    // history and switches to the live stream: on those partitions the seam
    // falls among events in flight.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let publishing = {
        let stack = stack.clone();
        tokio::spawn(async move { publish_until(&stack, stopped, 20).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut socket = gateway
        .subscribe(json!({"type": "subscribe", "patterns": ["knowledge.upserted", "feedback.submitted"], "from": from}))
        .await;
    let mut messages = Vec::new();
    loop {
        let message = next_message(&mut socket).await;
        let done = message["type"] == "caught_up";
        messages.push(message);
        if done {
            break;
        }
    }
    // Some live events after the seam, then stop and take the rest.
    let live = next_events(&mut socket, 40).await;
    messages.extend(live);
    stop.send(true).unwrap();
    let during = publishing.await.unwrap();
    let after = stack
        .publish(EventType::KnowledgeUpserted, 50, 10, "k")
        .await;

    let expected: Vec<String> = history
        .iter()
        .chain(&during)
        .chain(&after)
        .cloned()
        .collect();
    let received_so_far = messages.iter().filter(|m| m["type"] == "event").count();
    messages.extend(next_events(&mut socket, expected.len() - received_so_far).await);
    messages.extend(drain(&mut socket, Duration::from_secs(2)).await);

    let events: Vec<&Value> = messages.iter().filter(|m| m["type"] == "event").collect();
    let received: Vec<String> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    let unique: HashSet<&String> = received.iter().collect();
    assert_eq!(unique.len(), received.len(), "no event twice");
    let before: HashSet<&String> = before.iter().collect();
    assert!(
        received.iter().all(|id| !before.contains(id)),
        "nothing from before `from`"
    );
    assert_eq!(
        unique,
        expected.iter().collect::<HashSet<_>>(),
        "every event since `from`: {} expected, {} received",
        expected.len(),
        received.len()
    );
    // In publishing order per key (one key, one partition).
    assert!(!during.is_empty());
    let position: HashMap<&String, usize> =
        expected.iter().enumerate().map(|(i, id)| (id, i)).collect();
    let mut last_by_key: HashMap<String, usize> = HashMap::new();
    for event in &events {
        let key = event["key"].as_str().unwrap().to_owned();
        let at = position[&event["event_id"].as_str().unwrap().to_owned()];
        if let Some(previous) = last_by_key.insert(key.clone(), at) {
            assert!(previous < at, "key {key}: event {at} after {previous}");
        }
    }
    // The seam was crossed: history first (replayed), then live.
    let replayed = events.iter().take_while(|e| e["replayed"] == true).count();
    assert!(
        replayed >= history.len(),
        "history first: {replayed} replayed"
    );
    assert!(
        events[replayed..].iter().all(|e| e["replayed"] == false),
        "then only live events"
    );
    let caught_up = messages.iter().find(|m| m["type"] == "caught_up").unwrap();
    assert_eq!(caught_up["events"], replayed);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_reads_is_closed_and_the_others_get_everything() {
    let stack = Stack::new().await;
    let mut gateway = stack.gateway(free_port(), UI_ROUTE, &["--ws-buffer", "512"]);
    gateway.ready().await;
    let subscribe = json!({"type": "subscribe", "patterns": ["knowledge.upserted"]});

    // A small receive window, so the kernel's buffers fill soon.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket
        .connect(format!("127.0.0.1:{}", gateway.port).parse().unwrap())
        .await
        .unwrap();
    let (mut stalled, _) = tokio_tungstenite::client_async(
        format!("ws://127.0.0.1:{}/ws", gateway.port),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .unwrap();
    stalled
        .send(Message::text(subscribe.to_string()))
        .await
        .unwrap();
    assert_eq!(next_message(&mut stalled).await["type"], "subscribed");
    let mut reader = gateway.subscribe(subscribe).await;

    // The stalled client reads nothing from here on; the other reads as
    // events come, while they are published in small batches.
    // 10 kB events: the kernel's socket buffers (up to 4 MB for the
    // server's send side) hold a few hundred, the client's buffer 512.
    const EVENTS: usize = 2000;
    let big = |e: &mut opal_schemas::Event| {
        if let opal_schemas::Event::KnowledgeUpserted(k) = e {
            k.tags = (0..100).map(|i| format!("{i:0>100}")).collect();
        }
    };
    let reading = tokio::spawn(async move { next_events(&mut reader, EVENTS).await });
    let mut published = Vec::new();
    while published.len() < EVENTS {
        published.extend(
            stack
                .publish_with(EventType::KnowledgeUpserted, 50, 10, "k", big)
                .await,
        );
    }
    let got = reading.await.unwrap();
    assert_eq!(
        ids(&got).into_iter().collect::<HashSet<_>>(),
        published.iter().cloned().collect(),
        "the reading client got every event"
    );
    let metrics = gateway.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "opal_gateway_websocket_clients_dropped_total",
            &[("reason", "slow")]
        ),
        1.0,
        "{metrics}"
    );

    // What reached the stalled client, then the close frame naming why.
    let mut events = 0;
    let close = loop {
        match tokio::time::timeout(TIMEOUT, stalled.next())
            .await
            .expect("frames")
        {
            Some(Ok(Message::Text(_))) => events += 1,
            Some(Ok(Message::Close(close))) => break close,
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?} after {events} events"),
        }
    };
    let close = close.expect("a close code");
    assert_eq!(close.code, CloseCode::Again, "{close:?}");
    assert!(close.reason.contains("slow client"), "{close:?}");
    assert!(events < published.len(), "{events} events");
}

/// A websocket route "ui" over decisions whose fallback webhook is `url`.
fn fallback_routes(url: &str) -> String {
    format!(
        "[[route]]\nname = \"ui\"\npatterns = [\"decision.*\"]\n[route.websocket]\n[route.websocket.fallback_webhook]\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fallback_webhook_gets_the_events_exactly_while_no_client_is_connected() {
    let stack = Stack::new().await;
    let receiver = Receiver::start().await;
    let routes = fallback_routes(&receiver.url());
    let mut gateway = stack.gateway(free_port(), &routes, &[]);
    gateway.ready().await;

    let alone = stack
        .publish(EventType::DecisionGenerated, 5, 5, "acme")
        .await;
    let got = receiver.wait_for(alone.len()).await;
    assert_eq!(
        set(&got),
        set(&alone),
        "no client: the fallback webhook got them"
    );

    let mut client = gateway
        .subscribe(json!({"type": "subscribe", "route": "ui"}))
        .await;
    let watched = stack
        .publish(EventType::DecisionDegraded, 5, 5, "scope")
        .await;
    let got = next_events(&mut client, watched.len()).await;
    assert_eq!(set(&ids(&got)), set(&watched));

    client.close(None).await.unwrap();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while metric(
        &gateway.metrics().await,
        "opal_gateway_websocket_clients",
        &[("route", "ui")],
    ) > 0.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the client never left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = stack
        .publish(EventType::DecisionGenerated, 5, 5, "acme")
        .await;
    let got = receiver.wait_for(alone.len() + left.len()).await;
    let expected: Vec<String> = alone.iter().chain(&left).cloned().collect();
    assert_eq!(got.len(), expected.len(), "each event once: {got:?}");
    assert_eq!(
        set(&got),
        set(&expected),
        "the events a client got never went to the fallback, the others did"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_deployment_pushes_no_history_as_live() {
    let stack = Stack::new().await;
    // On the topics before the gateway's group ever existed; one key, one
    // partition: were they read, they would come before the new ones.
    let history = stack
        .publish(EventType::DecisionGenerated, 5, 1, "acme")
        .await;
    let receiver = Receiver::start().await;
    let routes = fallback_routes(&receiver.url());
    let mut gateway = stack.gateway(free_port(), &routes, &[]);
    gateway.ready().await;
    // Published right after ready: delivered (the live group's start was
    // fixed before ready), and only they.
    let live = stack
        .publish(EventType::DecisionGenerated, 3, 1, "acme")
        .await;
    let got = receiver.wait_for(live.len()).await;
    assert!(
        !history.iter().any(|id| got.contains(id)),
        "history pushed as live: {got:?}"
    );
    assert_eq!(got, live, "the events published after ready, in order");
}
