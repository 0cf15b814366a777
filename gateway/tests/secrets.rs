//! A webhook secret, and a token in a webhook URL, never reach the gateway's
//! output: every log line at debug level through deliveries, failures, dead
//! letters, a refused reload and shutdown, nor `/health/routes`.

#![allow(clippy::unwrap_used)]

mod webhook_support;
mod ws_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use opal_e2e::{brokers, redis_url, registry_url};
use opal_schemas::EventType;
use webhook_support::*;
use ws_support::{Stack, free_port};

const LONG: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread")]
async fn no_webhook_secret_or_url_token_appears_in_any_output() {
    let stack = Stack::new().await;
    let ok = Hook::start().await;
    let failing = Hook::start().await;
    failing.answer(500);
    let secret = secret();
    let token = format!("tok{}", uuid::Uuid::new_v4().simple());
    let routes = [
        webhook_route(
            "ok",
            r#"["decision.degraded"]"#,
            None,
            &format!("{}?token={token}", ok.url()),
            &secret,
            "",
        ),
        webhook_route(
            "failing",
            r#"["decision.degraded"]"#,
            None,
            &format!("{}?token={token}", failing.url()),
            &secret,
            "attempts = 2\nbackoff_base_ms = 10\nbackoff_max_ms = 20",
        ),
    ]
    .concat();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.toml");
    std::fs::write(&file, &routes).unwrap();
    let log = dir.path().join("gateway.log");
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_opal-gateway"))
        .arg("--routes")
        .arg(&file)
        .env("KAFKA_BROKERS", brokers())
        .env("SCHEMA_REGISTRY_URL", registry_url())
        .env("REDIS_URL", redis_url())
        .env("OPAL_TOPIC_PREFIX", &stack.prefix)
        .env("OPAL_CONSUMER_GROUP", &stack.group)
        .env("OPAL_HTTP_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.path().join("stdout.log")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let health = format!("http://127.0.0.1:{port}/health/routes");
    until("the gateway answers", LONG, async || {
        reqwest::get(&health).await.is_ok()
    })
    .await;

    let ids = stack
        .publish(EventType::DecisionDegraded, 5, 5, "scope")
        .await;
    ok.wait_for_all(&ids, LONG).await;
    let dlq = format!("{}{}.failing.dlq", stack.prefix, stack.group);
    let dead = read_topic(&dlq, 5, LONG).await;
    let shown_in_dlq: String = dead
        .iter()
        .filter_map(|m| header(m, "kafka_dlt-exception-message"))
        .collect();
    assert!(shown_in_dlq.contains("HTTP 500"), "{shown_in_dlq}");

    // A refused reload, its reason logged and shown.
    std::fs::write(&file, routes.replace("attempts = 2", "attempts = 0")).unwrap();
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    let mut shown = String::new();
    until("the reload is refused", LONG, async || {
        shown = reqwest::get(&health).await.unwrap().text().await.unwrap();
        shown.contains("refused")
    })
    .await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());

    let output = std::fs::read_to_string(&log).unwrap()
        + &std::fs::read_to_string(dir.path().join("stdout.log")).unwrap();
    assert!(
        output.contains("routes file refused"),
        "the log was captured"
    );
    let key = &secret["whsec_".len()..];
    for (what, text) in [
        ("the log", &output),
        ("/health/routes", &shown),
        ("the DLQ headers", &shown_in_dlq),
    ] {
        assert!(!text.contains(key), "{what} shows the webhook secret");
        assert!(!text.contains(&token), "{what} shows the URL's token");
    }
}
