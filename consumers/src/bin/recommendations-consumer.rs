//! recommendations-consumer: personalised top-N recommendations per client.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use opal_consumers::RuntimeArgs;
use opal_consumers::StateReader;
use opal_consumers::apps::recommendations::{RecommendationsHandler, namespace, read_model};
use opal_consumers::serve::{ConsumerSpec, run_consumer};

/// mimalloc instead of glibc's malloc: the event path allocates per event
/// (README, Performance).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "recommendations-consumer",
    version,
    about = "Personalised recommendations read model"
)]
struct Cli {
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// How many recommendations to keep per client.
    #[arg(long, env = "OPAL_RECO_TOP_N", default_value_t = 10)]
    top_n: usize,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let ns = namespace(&cli.runtime.topic_prefix);
    let handler = RecommendationsHandler {
        top_n: cli.top_n,
        ns: ns.clone(),
    };
    let spec = ConsumerSpec {
        default_group: "opal-recommendations",
        default_port: 9102,
    };
    run_consumer(handler, cli.runtime, spec, |runtime, _| {
        Ok(Router::new()
            .route(
                "/recommendations/{client}",
                get(|State((state, ns)): State<(StateReader, String)>, Path(client): Path<String>| async move {
                    match read_model(&state, &ns, &client).await {
                        Ok(Some(model)) => Ok(Json(serde_json::to_value(model).unwrap_or_default())),
                        Ok(None) => Err((StatusCode::NOT_FOUND, Json(serde_json::json!({"error": "unknown client", "client": client})))),
                        Err(e) => Err(opal_consumers::health::state_unavailable(e)),
                    }
                }),
            )
            .with_state((runtime.state(), ns)))
    })
    .await
}
