//! forecast-consumer: Holt linear forecasts of demand and agent latency.

use anyhow::Context;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use opal_consumers::RuntimeArgs;
use opal_consumers::StateReader;
use opal_consumers::apps::forecasts::{ForecastHandler, ForecastSettings, latest, namespace};
use opal_consumers::serve::{ConsumerSpec, run_consumer};

/// mimalloc instead of glibc's malloc: the event path allocates per event
/// (README, Performance).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "forecast-consumer", version, about = "Event-time forecasts")]
struct Cli {
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Bucket width, in seconds.
    #[arg(long, env = "OPAL_FORECAST_BUCKET_SECS", default_value_t = 300)]
    bucket_secs: i64,
    /// Allowed lateness behind the largest event time seen on the same partition, in seconds.
    #[arg(long, env = "OPAL_FORECAST_LATENESS_SECS", default_value_t = 60)]
    lateness_secs: i64,
    /// Holt level smoothing.
    #[arg(long, env = "OPAL_FORECAST_ALPHA", default_value_t = 0.5)]
    alpha: f64,
    /// Holt trend smoothing.
    #[arg(long, env = "OPAL_FORECAST_BETA", default_value_t = 0.3)]
    beta: f64,
    /// Buckets forecast ahead.
    #[arg(long, env = "OPAL_FORECAST_HORIZON", default_value_t = 12)]
    horizon: usize,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let settings = ForecastSettings {
        bucket_ms: cli.bucket_secs * 1000,
        lateness_ms: cli.lateness_secs * 1000,
        alpha: cli.alpha,
        beta: cli.beta,
        horizon: cli.horizon,
    };
    let late_events = match prometheus::IntCounter::new(
        "opal_forecast_late_events_total",
        "Events behind the watermark, dropped",
    ) {
        Ok(counter) => counter,
        Err(e) => {
            eprintln!("error: the late-events counter: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let ns = namespace(&cli.runtime.topic_prefix);
    let handler = ForecastHandler {
        settings,
        ns: ns.clone(),
        late_events: late_events.clone(),
    };
    let spec = ConsumerSpec {
        default_group: "opal-forecasts",
        default_port: 9104,
    };
    run_consumer(handler, cli.runtime, spec, |runtime, _| {
        runtime
            .metrics()
            .registry
            .register(Box::new(late_events))
            .context("register opal_forecast_late_events_total")?;
        Ok(Router::new()
            .route(
                "/forecasts/{series}",
                get(|State((state, ns)): State<(StateReader, String)>, Path(series): Path<String>| async move {
                    match latest(&state, &ns, &series).await {
                        Ok(Some(f)) => Ok(Json(f)),
                        Ok(None) => Err((StatusCode::NOT_FOUND, Json(serde_json::json!({"error": "no forecast yet", "series": series})))),
                        Err(e) => Err(opal_consumers::health::state_unavailable(e)),
                    }
                }),
            )
            .with_state((runtime.state(), ns)))
    })
    .await
}
