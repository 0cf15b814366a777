//! The four consumers end to end, as processes on the real local stack: the
//! closed loop (feedback → preferences updated → recommendations re-ranked)
//! seen through the HTTP endpoints, diagnostics flagging a failing agent and a
//! stuck workflow, a forecast after buckets close, and a degraded alert.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use opal_producers::simulate::{Phase, Scenario, generate};
use opal_schemas::EventType;

fn spawn(env: &Env, binary: &str, port: u16, extra: &[(&str, &str)]) -> Process {
    let mut command = Command::new(binary);
    command
        .env("KAFKA_BROKERS", opal_e2e::brokers())
        .env("SCHEMA_REGISTRY_URL", opal_e2e::registry_url())
        .env("REDIS_URL", &env.args.redis_url)
        .env("OPAL_TOPIC_PREFIX", &env.prefix)
        .env("OPAL_HTTP_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in extra {
        command.env(k, v);
    }
    Process(
        command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {binary}: {e}")),
    )
}

async fn get_json(port: u16, path: &str) -> Option<(u16, serde_json::Value)> {
    let (status, body) = http_get(port, path).await?;
    Some((status, serde_json::from_str(&body).ok()?))
}

async fn publish(env: &Env, scenario: &Scenario, phase: Phase) {
    let events = generate(scenario, phase);
    for chunk in events.chunks(500) {
        for result in env.publisher.publish_batch(chunk.to_vec()).await {
            result.expect("published");
        }
    }
}

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
    let env = Env::new().await;
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
    assert!(
        f["points"][0]["lower"].as_f64() <= f["points"][0]["value"].as_f64(),
        "{f}"
    );
    let emitted = read_all(&env.kafka(), &env.topic(EventType::ForecastGenerated), 1).await;
    assert!(!emitted.is_empty());

    let degraded = read_all(&env.kafka(), &env.topic(EventType::DecisionDegraded), 1).await;
    assert!(
        !degraded.is_empty(),
        "acme's pricing acceptance fell below the threshold"
    );
    let metrics = http_get(diag, "/metrics").await.expect("metrics").1;
    assert!(
        metric(&metrics, "opal_diagnostics_workflows_stuck", &[]) >= 1.0
            || metrics.contains("opal_diagnostics_workflows_stuck"),
        "diagnostics metrics exported"
    );
}
