//! The gateway's alert rules and dashboard (deploy/prometheus/gateway_alerts.yml,
//! deploy/grafana/gateway/) query only metrics a running gateway exports, and
//! the rules behave (`promtool test rules`).

#![allow(clippy::unwrap_used)]

mod webhook_support;
mod ws_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use opal_e2e::monitoring::{exported_names, metric_names};
use opal_schemas::EventType;
use serde_json::json;
use webhook_support::*;
use ws_support::{Stack, free_port};

fn root() -> std::path::PathBuf {
    opal_e2e::repo_root()
}

/// The `expr:` of every rule (each is one line in the file).
fn alert_expressions(root: &Path) -> Vec<String> {
    std::fs::read_to_string(root.join("deploy/prometheus/gateway_alerts.yml"))
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr: "))
        .map(str::to_owned)
        .collect()
}

fn dashboard_expressions(root: &Path) -> Vec<String> {
    let text =
        std::fs::read_to_string(root.join("deploy/grafana/gateway/opal-gateway.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn promtool_accepts_the_gateway_rules_and_they_behave() {
    let dir = root().join("deploy/prometheus");
    for args in [
        ["check", "rules", "gateway_alerts.yml"],
        ["test", "rules", "gateway_alerts_test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool is installed (scripts/test.sh installs Debian's prometheus package)");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_gateway_rules_and_dashboard_query_is_exported() {
    let stack = Stack::new().await;
    let hook = Hook::start().await;
    let routes = format!(
        "{}[[route]]\nname = \"ui\"\npatterns = [\"#\"]\n[route.websocket]\n",
        webhook_route(
            "alerts",
            r#"["decision.degraded"]"#,
            None,
            &hook.url(),
            &secret(),
            ""
        )
    );
    let mut gateway = stack.gateway(free_port(), &routes, &[]);
    gateway.ready().await;
    let _client = gateway
        .subscribe(json!({"type": "subscribe", "route": "ui"}))
        .await;
    let ids = stack
        .publish(EventType::DecisionDegraded, 3, 1, "scope")
        .await;
    hook.wait_for_all(&ids, Duration::from_secs(60)).await;

    let queries: Vec<String> = alert_expressions(&root())
        .into_iter()
        .chain(dashboard_expressions(&root()))
        .collect();
    assert!(queries.len() >= 12, "{queries:?}");
    let queried: BTreeSet<String> = queries.iter().flat_map(|q| metric_names(q)).collect();
    // Lag comes with librdkafka's statistics, every 5 s.
    let mut missing = queried.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !missing.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let exported = exported_names(&gateway.metrics().await);
        missing = queried.difference(&exported).cloned().collect();
    }
    assert!(missing.is_empty(), "queried but not exported: {missing:?}");
}
