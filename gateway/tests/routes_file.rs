//! The routes file on the real gateway process: a file with an error stops
//! start-up with its line; on SIGHUP a file with an error is refused with its
//! line while the running routes keep delivering, and a corrected file is
//! applied.

#![allow(clippy::unwrap_used)]

mod webhook_support;
mod ws_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use opal_schemas::EventType;
use serde_json::Value;
use webhook_support::*;
use ws_support::{Stack, free_port};

const LONG: Duration = Duration::from_secs(90);

#[test]
fn a_routes_file_with_an_error_stops_start_up_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.toml");
    let text = "[[route]]\nname = \"ok\"\npatterns = [\"#\"]\n[route.websocket]\n\n[[route]]\nname = \"typo\"\npatterns = [\"decison.*\"]\n[route.websocket]\n";
    std::fs::write(&file, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_opal-gateway"))
        .arg("--routes")
        .arg(&file)
        // Nothing is reached before the file is read: no stack needed.
        .env("KAFKA_BROKERS", "127.0.0.1:1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 8"), "{stderr}");
    assert!(stderr.contains("decison.*"), "{stderr}");
}

async fn last_reload(gateway: &ws_support::Gateway) -> Value {
    let status: Value = reqwest::get(gateway.url("/health/routes"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    status["last_reload"].clone()
}

fn sighup(gateway: &ws_support::Gateway) {
    let status = Command::new("kill")
        .args(["-HUP", &gateway.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_refuses_a_bad_file_keeping_the_routes_and_applies_a_corrected_one() {
    let stack = Stack::new().await;
    let first = Hook::start().await;
    let second = Hook::start().await;
    let secret = secret();
    let one = webhook_route(
        "first",
        r#"["decision.degraded"]"#,
        None,
        &first.url(),
        &secret,
        "",
    );
    let mut gateway = stack.gateway(free_port(), &one, &[]);
    gateway.ready().await;
    let routes_file = gateway_routes_file(&gateway);

    // A file with an error: refused with its line, the running route stays.
    let bad = format!(
        "{one}[[route]]\nname = \"second\"\npatterns = [\"decision.degraded\"]\nfilter = {{ field = \"scope\", equals = 1 }}\n[route.websocket]\n"
    );
    let bad_line = bad.lines().position(|l| l.contains("equals")).unwrap() + 1;
    std::fs::write(&routes_file, &bad).unwrap();
    sighup(&gateway);
    until("the reload is refused", LONG, async || {
        last_reload(&gateway).await["outcome"] == "refused"
    })
    .await;
    let error = last_reload(&gateway).await["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains(&format!("line {bad_line}")), "{error}");
    assert!(error.contains("equals"), "{error}");
    assert!(!error.contains(&secret), "{error}");
    let shown = reqwest::get(gateway.url("/health/routes"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(shown.contains("\"first\""), "{shown}");
    assert!(
        !shown.contains(&secret[6..]),
        "the secret is never shown: {shown}"
    );
    let ids = stack
        .publish(EventType::DecisionDegraded, 10, 2, "scope")
        .await;
    first.wait_for_all(&ids, LONG).await;

    // The corrected file: a second webhook route, applied on the next SIGHUP.
    let good = format!(
        "{one}{}",
        webhook_route(
            "second",
            r#"["decision.degraded"]"#,
            None,
            &second.url(),
            &secret,
            ""
        )
    );
    std::fs::write(&routes_file, &good).unwrap();
    sighup(&gateway);
    until("the reload is applied", LONG, async || {
        last_reload(&gateway).await["outcome"] == "applied"
    })
    .await;
    let more = stack
        .publish(EventType::DecisionDegraded, 10, 2, "scope")
        .await;
    // `start = "earliest"`: the new route delivers what came before it too.
    second
        .wait_for_all(&[ids.clone(), more.clone()].concat(), LONG)
        .await;
    first.wait_for_all(&more, LONG).await;
    assert_eq!(
        gateway
            .metrics()
            .await
            .lines()
            .filter(|l| l.starts_with("opal_gateway_reloads_total"))
            .count(),
        2,
        "one refused, one applied"
    );

    // SIGTERM: every route runtime and the gateway's own drain, commit and exit 0.
    let status = Command::new("kill")
        .args(["-TERM", &gateway.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + LONG;
    let exit = loop {
        if let Some(exit) = gateway.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(exit.code(), Some(0), "a clean drain");
}

/// The routes file the gateway was started with (its `--routes` argument).
fn gateway_routes_file(gateway: &ws_support::Gateway) -> std::path::PathBuf {
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", gateway.child.id())).unwrap();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let at = args.iter().position(|a| a == "--routes").unwrap();
    args[at + 1].clone().into()
}

/// The compose stack's routes file (deploy/gateway/routes.toml) is one the
/// gateway accepts, with the README's routes.
#[test]
fn the_compose_stacks_routes_file_is_valid() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/gateway/routes.toml");
    let routes = opal_gateway::routes::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["assistant", "acme-decisions"]);
}
