//! Running one consumer as a process: tracing, signals, HTTP, the runtime.

use anyhow::Context;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::config::RuntimeArgs;
use crate::handler::Handler;
use crate::health;
use crate::runtime::Runtime;

/// What a consumer binary declares about itself.
pub struct ConsumerSpec {
    pub default_group: &'static str,
    pub default_port: u16,
}

/// Runs `handler` until SIGTERM/SIGINT; `routes` adds the consumer's own HTTP
/// endpoints, built from the runtime (state reader, handler).
pub async fn run_consumer<H: Handler>(
    handler: H,
    args: RuntimeArgs,
    spec: ConsumerSpec,
    routes: impl FnOnce(&Runtime<H>) -> Router,
) -> anyhow::Result<()> {
    opal_topics::telemetry::init_tracing(args.log_format);
    let cancel = CancellationToken::new();
    crate::shutdown::install(cancel.clone());
    let listen = args
        .http_listen
        .clone()
        .unwrap_or_else(|| format!("127.0.0.1:{}", spec.default_port));
    let runtime = Runtime::new(handler, args, spec.default_group, cancel.clone()).await?;
    let app = health::router(runtime.health(), runtime.metrics(), routes(&runtime));
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(listen = %listener.local_addr()?, group = runtime.group(), "http listening");
    let http_cancel = cancel.clone();
    let http = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(http_cancel.cancelled_owned())
            .await;
    });
    let result = runtime.run().await;
    cancel.cancel();
    let _ = http.await;
    tracing::info!("stopped");
    result
}
