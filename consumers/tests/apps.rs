//! The four consumers end to end, as processes on the real local stack: the
//! closed loop (feedback → preferences updated → recommendations re-ranked)
//! seen through the HTTP endpoints, diagnostics flagging a failing agent and a
//! stuck workflow, a forecast after buckets close, and a degraded alert.

mod common;

use std::time::Duration;

use common::apps::*;
use common::*;
use opal_producers::simulate::{Phase, Scenario};
use opal_schemas::EventType;

/// How long the views may take to settle after a phase.
const SETTLE: Duration = Duration::from_secs(180);

fn categories(model: &serde_json::Value) -> Vec<String> {
    model["recommendations"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["category"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn the_loop_closes_and_every_consumer_serves_its_view() {
    let env = apps_env().await;
    let group = |name: &str| format!("{}{name}", env.prefix);
    let (diag, reco, feedback, forecast) = (free_port(), free_port(), free_port(), free_port());
    let _consumers = [
        spawn(
            &env,
            env!("CARGO_BIN_EXE_diagnostics-consumer"),
            diag,
            &[("OPAL_CONSUMER_GROUP", &group("diag"))],
        ),
        spawn(
            &env,
            env!("CARGO_BIN_EXE_recommendations-consumer"),
            reco,
            &[("OPAL_CONSUMER_GROUP", &group("reco"))],
        ),
        spawn(
            &env,
            env!("CARGO_BIN_EXE_feedback-consumer"),
            feedback,
            &[
                ("OPAL_CONSUMER_GROUP", &group("fb")),
                ("OPAL_FEEDBACK_MIN_SAMPLES", "5"),
            ],
        ),
        spawn(
            &env,
            env!("CARGO_BIN_EXE_forecast-consumer"),
            forecast,
            &[
                ("OPAL_CONSUMER_GROUP", &group("fc")),
                ("OPAL_FORECAST_BUCKET_SECS", "60"),
                ("OPAL_FORECAST_LATENESS_SECS", "120"),
            ],
        ),
    ];
    let now = opal_consumers::apps::clock::Clock::now_ms(&opal_consumers::apps::clock::SystemClock);
    let scenario = Scenario {
        workflows: 30,
        seed: 1234,
        start_ms: now - 30 * 20_000 - 300_000,
        spacing_ms: 20_000,
    };

    publish(&env, &scenario, Phase::Decisions).await;
    wait_until(
        Duration::from_secs(120),
        "acme's recommendations",
        || async {
            get_json(reco, "/recommendations/acme")
                .await
                .is_some_and(|(s, m)| s == 200 && categories(&m).contains(&"pricing".to_owned()))
        },
    )
    .await;
    let (status, unknown) = get_json(reco, "/recommendations/nobody")
        .await
        .expect("answer");
    assert_eq!(status, 404, "{unknown}");
    assert_eq!(unknown["error"], "unknown client");

    publish(&env, &scenario, Phase::Feedback).await;
    wait_until(
        Duration::from_secs(120),
        "pricing excluded for acme (the closed loop)",
        || async {
            get_json(reco, "/recommendations/acme")
                .await
                .is_some_and(|(_, m)| {
                    !categories(&m).is_empty() && !categories(&m).contains(&"pricing".to_owned())
                })
        },
    )
    .await;
    let (_, acme) = get_json(reco, "/recommendations/acme").await.expect("acme");
    assert!(
        acme["preferences"]["excluded_categories"]
            .as_array()
            .expect("excluded")
            .iter()
            .any(|c| c == "pricing"),
        "{acme}"
    );

    wait_until(
        Duration::from_secs(60),
        "diagnostics to flag the failing agent and a stuck workflow",
        || async {
            get_json(diag, "/summary").await.is_some_and(|(_, s)| {
                let flaky = s["agents"]
                    .as_array()
                    .and_then(|a| a.iter().find(|x| x["agent_id"] == "flaky-agent").cloned());
                flaky.is_some_and(|f| f["status"] == "failing")
                    && s["workflows_stuck"].as_u64().unwrap_or(0) >= 1
            })
        },
    )
    .await;
    let (_, summary) = get_json(diag, "/summary").await.expect("summary");
    assert!(
        summary["total_events"].as_i64().unwrap_or(0) > 100,
        "{summary}"
    );
    let slow = summary["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .find(|a| a["agent_id"] == "slow-agent")
        .cloned()
        .expect("slow");
    assert_eq!(slow["status"], "slow", "{summary}");

    wait_until(
        Duration::from_secs(60),
        "a forecast for acme's demand",
        || async {
            get_json(forecast, "/forecasts/demand:acme")
                .await
                .is_some_and(|(s, f)| {
                    s == 200 && f["points"].as_array().is_some_and(|p| p.len() == 12)
                })
        },
    )
    .await;
    let (_, f) = get_json(forecast, "/forecasts/demand:acme")
        .await
        .expect("forecast");
    let point = |field: &str| f["points"][0][field].as_f64().expect("a number");
    assert!(
        point("lower") <= point("value") && point("value") <= point("upper"),
        "{f}"
    );
    let forecasts = emitted(&env, EventType::ForecastGenerated).await;
    let acme = forecasts
        .iter()
        .find(|(id, _)| id.starts_with("demand:acme@"))
        .map(|(_, f)| f)
        .expect("a forecast.generated for demand:acme on the topic");
    assert_eq!(acme["points"].as_array().map(Vec::len), Some(12), "{acme}");

    let degraded = emitted(&env, EventType::DecisionDegraded).await;
    assert!(
        degraded.values().any(|d| d["client_name"] == "acme"
            && d["scope"] == "pricing"
            && d["metric"] == "acceptance_rate"
            && d["observed"].as_f64() < d["threshold"].as_f64()
            && d["sample_size"].as_i64() >= Some(5)),
        "acme's pricing acceptance fell below the threshold: {degraded:?}"
    );
    // The gauges are refreshed from Redis every 5 s.
    wait_until(
        Duration::from_secs(30),
        "opal_diagnostics_workflows_stuck >= 1",
        || async {
            http_get(diag, "/metrics")
                .await
                .is_some_and(|(_, m)| metric(&m, "opal_diagnostics_workflows_stuck", &[]) >= 1.0)
        },
    )
    .await;

    // Every metric the Grafana dashboard and the Prometheus alert rules in
    // deploy/ query is one these running consumers export.
    let mut exported = std::collections::BTreeSet::new();
    for port in [diag, reco, feedback, forecast] {
        let text = http_get(port, "/metrics").await.expect("metrics").1;
        exported.extend(opal_e2e::monitoring::exported_names(&text));
    }
    let root = opal_e2e::repo_root();
    let queries = opal_e2e::monitoring::alert_expressions(&root)
        .into_iter()
        .chain(opal_e2e::monitoring::dashboard_expressions(&root));
    let mut missing = Vec::new();
    for (source, expr) in queries {
        for name in opal_e2e::monitoring::metric_names(&expr) {
            if !exported.contains(&name)
                && !opal_e2e::monitoring::SYNTHETIC.contains(&name.as_str())
            {
                missing.push(format!("{source}: {name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "queried but not exported: {missing:?}\nexported: {exported:?}"
    );

    // Kafka's own kafka-consumer-groups, as a witness independent of our code:
    // each group is a live member of every partition of its inputs and has
    // committed up to the end of each (lag 0, or an empty partition).
    let inputs = [
        (
            "diag",
            vec![
                EventType::WorkflowStarted,
                EventType::AgentCompleted,
                EventType::WorkflowCompleted,
            ],
        ),
        (
            "reco",
            vec![
                EventType::DecisionGenerated,
                EventType::UserPreferencesUpdated,
            ],
        ),
        (
            "fb",
            vec![EventType::FeedbackSubmitted, EventType::DecisionGenerated],
        ),
        (
            "fc",
            vec![EventType::WorkflowStarted, EventType::AgentCompleted],
        ),
    ];
    let groups: Vec<String> = inputs.iter().map(|(name, _)| group(name)).collect();
    let names: Vec<&str> = groups.iter().map(String::as_str).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let rows = loop {
        let rows = opal_e2e::describe_groups(&names);
        let expected_rows: usize = inputs.iter().map(|(_, topics)| topics.len() * 3).sum();
        if rows.len() == expected_rows && rows.iter().all(opal_e2e::GroupRow::caught_up) {
            break rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kafka-consumer-groups does not show every group at lag 0: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    for ((name, topics), group) in inputs.iter().zip(&groups) {
        for topic in topics {
            let topic = env.topic(*topic);
            let partitions: Vec<&opal_e2e::GroupRow> = rows
                .iter()
                .filter(|r| r.group == *group && r.topic == topic)
                .collect();
            assert_eq!(partitions.len(), 3, "{name}: {topic}: {rows:#?}");
            assert!(
                partitions.iter().all(|r| r.consumer_id != "-"),
                "{name}: a live member holds every partition of {topic}: {rows:#?}"
            );
        }
    }
}

/// Each consumer is killed with -9 mid-stream and restarted under the same
/// `OPAL_GROUP_INSTANCE_ID` (static membership, see `processes.rs`), and the
/// views and emitted events must equal those of a run without restarts. After
/// the restarts the feedback consumer may see feedback before the decisions it
/// joins to; that feedback parks its partition instead of being dead-lettered.
///
/// The forecasts take part because their watermarks are per partition: what
/// is dropped as late and what each bucket holds do not depend on how the
/// partitions interleave after a restart.
#[tokio::test]
async fn restarting_each_consumer_mid_stream_changes_nothing() {
    let now = opal_consumers::apps::clock::Clock::now_ms(&opal_consumers::apps::clock::SystemClock);
    let scenario = Scenario {
        workflows: 60,
        seed: 777,
        start_ms: now - 60 * 20_000,
        spacing_ms: 20_000,
    };

    // The control run: no restarts.
    let control = apps_env().await;
    let control_ports = [free_port(), free_port(), free_port(), free_port()];
    let running = start_all(&control, control_ports);
    publish(&control, &scenario, Phase::Decisions).await;
    views_settled(&control, control_ports, false, SETTLE).await;
    publish(&control, &scenario, Phase::Feedback).await;
    let expected = views_settled(&control, control_ports, true, SETTLE).await;
    drop(running);
    for series in ["demand:acme", "latency:slow-agent"] {
        assert!(
            expected[format!("forecast:{series}")]["points"]
                .as_array()
                .is_some_and(|p| !p.is_empty()),
            "the control run forecasts {series}: {expected}"
        );
    }

    // The same traffic, with every consumer killed -9 mid-stream and restarted.
    let crashed = apps_env().await;
    eprintln!(
        "control run under prefix {}, restarted run under {}",
        control.prefix, crashed.prefix
    );
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let mut running = start_all(&crashed, ports);
    // The traffic is paced, and each consumer is killed as soon as it has
    // processed something: the kills land while records are still
    // uncommitted, however fast the broker and the consumers are.
    let kill_each_once_under_way = async {
        for (port, process) in ports.into_iter().zip(running.iter_mut()) {
            wait_until(
                Duration::from_secs(60),
                "the consumer under way",
                || async move { consumed(port).await > 0 },
            )
            .await;
            process.0.kill().expect("kill -9");
            let _ = process.0.wait();
        }
        total_lag(&crashed).await
    };
    let ((), lag_at_kill) = tokio::join!(
        publish_paced(&crashed, &scenario, Phase::Decisions),
        kill_each_once_under_way
    );
    eprintln!("killed with {lag_at_kill} records uncommitted across the four groups");
    assert!(lag_at_kill > 0, "the kill came mid-stream");
    let _restarted = start_all(&crashed, ports);
    views_settled(&crashed, ports, false, SETTLE).await;
    publish(&crashed, &scenario, Phase::Feedback).await;
    let got = views_settled(&crashed, ports, true, SETTLE).await;

    assert_same_as_control(&crashed, &got, &control, &expected).await;
}
