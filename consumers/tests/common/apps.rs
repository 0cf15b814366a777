//! The four OPAL consumers as processes, for the tests that run them
//! together (apps.rs, soak.rs): starting them, publishing a scenario,
//! reading their views and what they emitted, waiting for them to settle.

use std::process::{Command, Stdio};
use std::time::Duration;

use opal_producers::simulate::{Phase, Scenario, generate};
use opal_schemas::EventType;

use super::*;

pub fn spawn(env: &Env, binary: &str, port: u16, extra: &[(&str, &str)]) -> Process {
    let mut command = Command::new(binary);
    command
        .env("KAFKA_BROKERS", &env.args.kafka.brokers)
        .env("SCHEMA_REGISTRY_URL", &env.args.registry.url)
        .env("REDIS_URL", &env.args.redis.url)
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

pub async fn get_json(port: u16, path: &str) -> Option<(u16, serde_json::Value)> {
    let (status, body) = http_get(port, path).await?;
    Some((status, serde_json::from_str(&body).ok()?))
}

pub async fn publish(env: &Env, scenario: &Scenario, phase: Phase) {
    let events = generate(scenario, phase);
    for chunk in events.chunks(500) {
        for result in env.publisher.publish_batch(chunk.to_vec()).await {
            result.expect("published");
        }
    }
}

/// As `publish`, in chunks of 10 events 100 ms apart (about 4 s for the
/// decisions phase of 30 workflows).
pub async fn publish_paced(env: &Env, scenario: &Scenario, phase: Phase) {
    for chunk in generate(scenario, phase).chunks(10) {
        for result in env.publisher.publish_batch(chunk.to_vec()).await {
            result.expect("published");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The four consumers' groups under `env`'s prefix.
pub const APP_GROUPS: [&str; 4] = ["diag", "reco", "fb", "fc"];

/// A fresh environment with the dead-letter topics of the four consumers' groups.
pub async fn apps_env() -> Env {
    with_app_dlqs(Env::new().await).await
}

/// `env` with the dead-letter topics of the four consumers' groups.
pub async fn with_app_dlqs(env: Env) -> Env {
    for name in APP_GROUPS {
        env.create_dlq(&format!("{}{name}", env.prefix)).await;
    }
    env
}

/// Starts the four consumers for `env` with fixed ports and groups under its prefix.
pub fn start_all(env: &Env, ports: [u16; 4]) -> Vec<Process> {
    (0..APP_GROUPS.len())
        .map(|app| start_app(env, app, ports[app]))
        .collect()
}

/// Starts consumer number `app` of `start_all` (in `APP_GROUPS` order) on `port`.
pub fn start_app(env: &Env, app: usize, port: u16) -> Process {
    let bins = [
        (env!("CARGO_BIN_EXE_diagnostics-consumer"), vec![]),
        (env!("CARGO_BIN_EXE_recommendations-consumer"), vec![]),
        (
            env!("CARGO_BIN_EXE_feedback-consumer"),
            vec![("OPAL_FEEDBACK_MIN_SAMPLES", "5")],
        ),
        (
            env!("CARGO_BIN_EXE_forecast-consumer"),
            vec![
                ("OPAL_FORECAST_BUCKET_SECS", "60"),
                ("OPAL_FORECAST_LATENESS_SECS", "300"),
            ],
        ),
    ];
    let (bin, extra) = &bins[app];
    let group = format!("{}{}", env.prefix, APP_GROUPS[app]);
    // A restarted replica keeps its identity and takes its partitions back.
    let instance = format!("{group}-replica-0");
    let mut all: Vec<(&str, &str)> = vec![
        ("OPAL_CONSUMER_GROUP", &group),
        ("OPAL_GROUP_INSTANCE_ID", &instance),
        ("OPAL_LEASE_MS", "2000"),
        ("OPAL_SESSION_TIMEOUT_MS", "10000"),
        ("OPAL_DRAIN_TIMEOUT_MS", "5000"),
    ];
    all.extend(extra.iter().copied());
    spawn(env, bin, port, &all)
}

/// What the four consumers show at the end of a run, minus what depends on wall-clock time.
pub async fn views(ports: [u16; 4]) -> serde_json::Value {
    let [diag, reco, _, forecast] = ports;
    let mut out = serde_json::Map::new();
    if let Some((_, mut s)) = get_json(diag, "/summary").await {
        // Stuck workflows and the agents' sliding windows depend on when the
        // view is read (each run ends at its own wall-clock time).
        if let Some(o) = s.as_object_mut() {
            for field in [
                "workflows_stuck",
                "stuck_workflows",
                "workflows_in_flight",
                "agents",
            ] {
                o.remove(field);
            }
        }
        out.insert("summary".into(), s);
    }
    for client in ["acme", "globex", "initech"] {
        out.insert(
            format!("reco:{client}"),
            get_json(reco, &format!("/recommendations/{client}"))
                .await
                .map(|(_, v)| v)
                .unwrap_or_default(),
        );
    }
    for series in ["demand:acme", "latency:slow-agent"] {
        out.insert(
            format!("forecast:{series}"),
            get_json(forecast, &format!("/forecasts/{series}"))
                .await
                .map(|(_, v)| v)
                .unwrap_or_default(),
        );
    }
    serde_json::Value::Object(out)
}

/// Each of `start_all`'s consumer groups (short name) with its input topics.
pub const GROUPS: [(&str, &[EventType]); 4] = [
    (
        "diag",
        &[
            EventType::WorkflowStarted,
            EventType::AgentCompleted,
            EventType::WorkflowCompleted,
        ],
    ),
    (
        "reco",
        &[
            EventType::DecisionGenerated,
            EventType::UserPreferencesUpdated,
        ],
    ),
    (
        "fb",
        &[EventType::DecisionGenerated, EventType::FeedbackSubmitted],
    ),
    (
        "fc",
        &[EventType::WorkflowStarted, EventType::AgentCompleted],
    ),
];

/// Events a consumer has settled (processed, duplicate or dead-lettered), from its metrics.
pub async fn consumed(port: u16) -> u64 {
    let Some((_, text)) = http_get(port, "/metrics").await else {
        return 0;
    };
    text.lines()
        .filter(|l| l.starts_with("opal_events_consumed_total") && !l.contains("retried"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Records the four groups have not committed yet.
pub async fn total_lag(env: &Env) -> i64 {
    let kafka = env.kafka();
    let groups: Vec<(String, Vec<String>)> = GROUPS
        .iter()
        .map(|(name, inputs)| {
            (
                format!("{}{name}", env.prefix),
                inputs.iter().map(|t| env.topic(*t)).collect(),
            )
        })
        .collect();
    tokio::task::spawn_blocking(move || {
        groups
            .iter()
            .map(|(group, topics)| group_lag(&kafka, group, topics))
            .sum()
    })
    .await
    .expect("lag")
}

/// Waits until every group has committed everything and the views have stopped
/// changing (and, with `excluded`, show acme's exclusion), for up to `within`.
pub async fn views_settled(
    env: &Env,
    ports: [u16; 4],
    excluded: bool,
    within: Duration,
) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let mut calm = 0;
    for _ in 0..within.as_secs() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = views(ports).await;
        let has_exclusion = now["reco:acme"]["preferences"]["excluded_categories"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
        calm = if now == last
            && now["reco:acme"].is_object()
            && has_exclusion == excluded
            && total_lag(env).await == 0
        {
            calm + 1
        } else {
            0
        };
        last = now;
        if calm >= 3 {
            return last;
        }
    }
    panic!("views never settled: {last}");
}

/// The events of `event_type` on `env`'s topic, decoded, by a stable id
/// (`forecast_id` for forecasts; scope, client, metric and window for
/// degraded alerts), without their envelopes (ids and times of emission
/// differ between runs). A re-emitted event must have the same content.
pub async fn emitted(
    env: &Env,
    event_type: EventType,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mut by_id = std::collections::BTreeMap::new();
    for record in read_all(&env.kafka(), &env.topic(event_type), 1).await {
        let payload = rdkafka::Message::payload(&record).expect("a value");
        let mut json = env
            .publisher
            .codec()
            .decode(payload)
            .await
            .expect("decodes")
            .event
            .to_json();
        let object = json.as_object_mut().expect("an object");
        for field in opal_schemas::events::ENVELOPE_FIELDS {
            object.remove(field);
        }
        let id = match event_type {
            EventType::ForecastGenerated => json["forecast_id"]
                .as_str()
                .expect("forecast_id")
                .to_owned(),
            _ => format!(
                "{}/{}/{}/{}",
                json["scope"], json["client_name"], json["metric"], json["window_start"]
            ),
        };
        if let Some(earlier) = by_id.insert(id.clone(), json.clone()) {
            assert_eq!(
                earlier, json,
                "{event_type} {id} emitted twice with different content"
            );
        }
    }
    by_id
}

pub async fn distinct_emits(env: &Env) -> usize {
    let records = read_all(
        &env.kafka(),
        &env.topic(EventType::UserPreferencesUpdated),
        2,
    )
    .await;
    let mut distinct: Vec<String> = records
        .iter()
        .filter_map(|m| header(m, "opal-event-id"))
        .collect();
    distinct.sort();
    distinct.dedup();
    distinct.len()
}

/// Asserts that `run` ended as `control` did: the same views (`got` against
/// `expected`, from `views_settled`), the same forecasts and degraded alerts
/// emitted (by stable id and content) and as many distinct preference updates.
pub async fn assert_same_as_control(
    run: &Env,
    got: &serde_json::Value,
    control: &Env,
    expected: &serde_json::Value,
) {
    let differing: Vec<String> = expected
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(view, value)| got.get(view.as_str()) != Some(*value))
        .map(|(view, value)| format!("{view}:\n  this run: {}\n  control:  {value}", got[view]))
        .collect();
    assert!(
        differing.is_empty() && got == expected,
        "views as in the control run; differing:\n{}",
        differing.join("\n")
    );
    for event_type in [EventType::ForecastGenerated, EventType::DecisionDegraded] {
        assert_eq!(
            emitted(run, event_type).await,
            emitted(control, event_type).await,
            "the same {event_type} events emitted, by stable id and content"
        );
    }
    assert_eq!(
        distinct_emits(run).await,
        distinct_emits(control).await,
        "the same preference updates emitted (re-emits share ids)"
    );
}
