//! `POST /replay` on the real stack: a dry run counts the window's matching
//! events; a replay POSTs them again to the route's webhook although the
//! route delivered them already (the runtime's done-marks do not apply),
//! and nothing outside the window; bad requests are refused with a reason.

#![allow(clippy::unwrap_used)]

mod ws_support;

use std::collections::HashMap;
use std::time::Duration;

use opal_schemas::EventType;
use serde_json::{Value, json};
use ws_support::*;

async fn replay(gateway: &Gateway, request: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(gateway.url("/replay"))
        .json(&request)
        .send()
        .await
        .expect("POST /replay");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

fn counts(ids: &[String]) -> HashMap<&str, usize> {
    let mut counts = HashMap::new();
    for id in ids {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_counts_on_a_dry_run_and_delivers_the_window_again() {
    let stack = Stack::new().await;
    let receiver = Receiver::start().await;
    let routes = format!(
        "[[route]]\nname = \"hooks\"\npatterns = [\"decision.*\"]\n[route.webhook]\nurl = \"{}\"\nsecret = \"{SECRET}\"\nbackoff_base_ms = 10\nbackoff_max_ms = 50\n",
        receiver.url()
    );
    let mut gateway = stack.gateway(free_port(), &routes, &[]);
    gateway.ready().await;
    // Published right after ready: the route's group was placed at the end
    // of its topics before, so the route delivers every one (no probing).
    let from = opal_schemas::now_millis();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let generated = stack
        .publish(EventType::DecisionGenerated, 6, 3, "acme")
        .await;
    let degraded = stack
        .publish(EventType::DecisionDegraded, 4, 2, "scope")
        .await;
    // Not the route's: never counted.
    stack
        .publish(EventType::KnowledgeUpserted, 5, 5, "kb")
        .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let to = opal_schemas::now_millis();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let later = stack
        .publish(EventType::DecisionGenerated, 3, 3, "acme")
        .await;

    // Delivered live once each, and nothing else.
    let all: Vec<&String> = generated.iter().chain(&degraded).chain(&later).collect();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let live = loop {
        let ids = receiver.event_ids();
        if all.iter().all(|id| ids.contains(id)) {
            break ids.len();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "live delivery incomplete: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(live, all.len(), "each event delivered live once");

    let (status, answer) = replay(
        &gateway,
        json!({"route": "hooks", "from": from, "to": to, "dry_run": true}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["matched"], 10, "{answer}");
    assert_eq!(answer["delivered"], 0, "{answer}");
    let (_, answer) = replay(
        &gateway,
        json!({"route": "hooks", "from": from, "to": to, "patterns": ["decision.degraded"], "dry_run": true}),
    )
    .await;
    assert_eq!(answer["matched"], 4, "{answer}");
    assert_eq!(receiver.event_ids().len(), live, "a dry run sends nothing");

    let (status, answer) =
        replay(&gateway, json!({"route": "hooks", "from": from, "to": to})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["matched"], 10, "{answer}");
    assert_eq!(answer["delivered"], 10, "{answer}");
    assert_eq!(answer["failed"], 0, "{answer}");
    let ids = receiver.wait_for(live + 10).await;
    let counts = counts(&ids);
    for id in generated.iter().chain(&degraded) {
        assert_eq!(
            counts[id.as_str()],
            2,
            "{id}: live, then replayed with the same id"
        );
    }
    for id in &later {
        assert_eq!(counts[id.as_str()], 1, "{id} is after the window");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_replay_request_is_refused_with_the_reason() {
    let stack = Stack::new().await;
    let routes = format!(
        "[[route]]\nname = \"hooks\"\npatterns = [\"decision.*\"]\n[route.webhook]\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"{SECRET}\"\n"
    );
    let mut gateway = stack.gateway(free_port(), &routes, &[]);
    gateway.ready().await;
    for (request, status, says) in [
        (
            json!({"route": "nope", "from": 0}),
            404,
            "no route named 'nope'",
        ),
        (
            json!({"route": "hooks", "from": 2000, "to": 1000}),
            400,
            "must be after",
        ),
        (
            json!({"route": "hooks", "from": "last tuesday"}),
            400,
            "last tuesday",
        ),
        (
            json!({"route": "hooks", "from": 0, "patterns": ["knowledge.*"]}),
            400,
            "select none",
        ),
        (
            json!({"route": "hooks", "from": 0, "dryrun": true}),
            400,
            "dryrun",
        ),
    ] {
        let (got, answer) = replay(&gateway, request.clone()).await;
        assert_eq!(got, status, "{request}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(says),
            "{request}: {answer}"
        );
    }
}
