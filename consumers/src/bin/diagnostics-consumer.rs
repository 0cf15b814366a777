//! diagnostics-consumer: workflow progress, agent health and stuck workflows.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use opal_consumers::RuntimeArgs;
use opal_consumers::StateReader;
use opal_consumers::apps::clock::{Clock, SystemClock};
use opal_consumers::apps::diagnostics::{
    DiagnosticsHandler, DiagnosticsSettings, namespace, summary,
};
use opal_consumers::serve::{ConsumerSpec, run_consumer};
use prometheus::{GaugeVec, IntGauge, Opts};

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
async fn main() -> anyhow::Result<()> {
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
    run_consumer(handler, cli.runtime, spec, |runtime| {
        let app = App {
            state: runtime.state(),
            ns,
            settings: Arc::new(settings),
        };
        spawn_gauges(app.clone(), &runtime.metrics().registry);
        Router::new()
            .route(
                "/summary",
                get(|State(app): State<App>| async move {
                    match summary(&app.state, &app.ns, &SystemClock, &app.settings).await {
                        Ok(s) => Ok(Json(s)),
                        Err(e) => Err(opal_consumers::health::state_unavailable(e)),
                    }
                }),
            )
            .with_state(app)
    })
    .await
}

/// Evaluates stuck workflows and agent health on a timer, as `opal_diagnostics_*`.
fn spawn_gauges(app: App, registry: &prometheus::Registry) {
    let gauges = (|| -> prometheus::Result<_> {
        let in_flight = IntGauge::new(
            "opal_diagnostics_workflows_in_flight",
            "Workflows started and not completed",
        )?;
        let stuck = IntGauge::new(
            "opal_diagnostics_workflows_stuck",
            "Workflows past their SLA without completion",
        )?;
        let failure = GaugeVec::new(
            Opts::new(
                "opal_diagnostics_agent_failure_rate",
                "Agent failure rate over the window",
            ),
            &["agent"],
        )?;
        let p95 = GaugeVec::new(
            Opts::new(
                "opal_diagnostics_agent_p95_seconds",
                "Agent p95 latency over the window",
            ),
            &["agent"],
        )?;
        let events = IntGauge::new(
            "opal_diagnostics_events_processed",
            "Events the diagnostics state holds",
        )?;
        for c in [
            Box::new(in_flight.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(stuck.clone()),
            Box::new(failure.clone()),
            Box::new(p95.clone()),
            Box::new(events.clone()),
        ] {
            registry.register(c)?;
        }
        Ok((in_flight, stuck, failure, p95, events))
    })();
    let Ok((in_flight, stuck, failure, p95, events)) = gauges else {
        tracing::warn!("diagnostics gauges could not be registered");
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            if let Ok(s) = summary(
                &app.state,
                &app.ns,
                &SystemClock as &dyn Clock,
                &app.settings,
            )
            .await
            {
                in_flight.set(s.workflows_in_flight as i64);
                stuck.set(s.workflows_stuck as i64);
                events.set(s.total_events);
                for a in &s.agents {
                    failure
                        .with_label_values(&[&a.agent_id])
                        .set(a.failure_rate);
                    p95.with_label_values(&[&a.agent_id])
                        .set(a.p95_ms.unwrap_or(0.0) / 1000.0);
                }
            }
        }
    });
}
