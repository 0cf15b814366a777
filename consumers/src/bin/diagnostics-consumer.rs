//! diagnostics-consumer: workflow progress, agent health and stuck workflows.

use std::sync::Arc;

use anyhow::Context;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use opal_consumers::RuntimeArgs;
use opal_consumers::StateReader;
use opal_consumers::apps::clock::SystemClock;
use opal_consumers::apps::diagnostics::{
    DiagnosticsGauges, DiagnosticsHandler, DiagnosticsSettings, namespace, summary,
};
use opal_consumers::serve::{ConsumerSpec, run_consumer};

/// mimalloc instead of glibc's malloc: the event path allocates per event
/// (README, Performance).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "diagnostics-consumer",
    version,
    about = "Workflow and agent diagnostics"
)]
struct Cli {
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Sliding window for agent health, in seconds.
    #[arg(long, env = "OPAL_DIAG_WINDOW_SECS", default_value_t = 900)]
    window_secs: i64,
    /// p95 latency (ms) above which an agent is "slow".
    #[arg(long, env = "OPAL_DIAG_SLOW_P95_MS", default_value_t = 5000.0)]
    slow_p95_ms: f64,
    /// Failure rate at which an agent is "failing".
    #[arg(long, env = "OPAL_DIAG_FAILING_RATE", default_value_t = 0.5)]
    failing_rate: f64,
}

#[derive(Clone)]
struct App {
    state: StateReader,
    ns: String,
    settings: Arc<DiagnosticsSettings>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let settings = DiagnosticsSettings {
        window_ms: cli.window_secs * 1000,
        slow_p95_ms: cli.slow_p95_ms,
        failing_rate: cli.failing_rate,
        ..DiagnosticsSettings::default()
    };
    let ns = namespace(&cli.runtime.topic_prefix);
    let handler = DiagnosticsHandler {
        settings: settings.clone(),
        ns: ns.clone(),
    };
    let spec = ConsumerSpec {
        default_group: "opal-diagnostics",
        default_port: 9101,
    };
    run_consumer(handler, cli.runtime, spec, |runtime, supervisor| {
        let gauges = DiagnosticsGauges::register(&runtime.metrics().registry)
            .context("register the diagnostics gauges")?;
        supervisor.spawn(
            "diagnostics-gauges",
            gauges.refresh(
                runtime.state(),
                ns.clone(),
                settings.clone(),
                &SystemClock,
                supervisor.cancelled(),
            ),
        );
        let app = App {
            state: runtime.state(),
            ns,
            settings: Arc::new(settings),
        };
        Ok(Router::new()
            .route(
                "/summary",
                get(|State(app): State<App>| async move {
                    match summary(&app.state, &app.ns, &SystemClock, &app.settings).await {
                        Ok(s) => Ok(Json(s)),
                        Err(e) => Err(opal_consumers::health::state_unavailable(e)),
                    }
                }),
            )
            .with_state(app))
    })
    .await
}
