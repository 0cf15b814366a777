//! Running one consumer as a process: tracing, signals, the runtime, and the
//! HTTP server and the consumer's own background work as named tasks under
//! one root cancellation token ([`Supervisor`]).
//!
//! Exit codes: 0 after a clean drain (offsets committed, producers flushed);
//! [`EXIT_FAILED`] when start-up fails or a task fails; [`EXIT_DRAIN_TIMEOUT`]
//! when the batch in hand did not finish within the drain timeout (its records
//! will be delivered again); [`crate::shutdown::EXIT_FORCED`] when a second
//! signal cut the drain short.

use std::process::ExitCode;

use anyhow::Context;
use axum::Router;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::RuntimeArgs;
use crate::handler::Handler;
use crate::health;
use crate::runtime::{RunEnd, Runtime};
use crate::supervisor::Supervisor;

/// Start-up failed, or a task of the process failed.
pub const EXIT_FAILED: u8 = 1;
/// The batch in hand did not finish within the drain timeout.
pub const EXIT_DRAIN_TIMEOUT: u8 = 3;

/// What a consumer binary declares about itself.
pub struct ConsumerSpec {
    pub default_group: &'static str,
    pub default_port: u16,
}

/// Runs `handler` until SIGTERM/SIGINT or a failing task. `extend` adds the
/// consumer's own HTTP routes, built from the runtime (state reader,
/// handler), and may start named background tasks on the supervisor.
pub async fn run_consumer<H: Handler>(
    handler: H,
    args: RuntimeArgs,
    spec: ConsumerSpec,
    extend: impl FnOnce(&Runtime<H>, &Supervisor) -> anyhow::Result<Router>,
) -> ExitCode {
    args.log.init();
    let cancel = CancellationToken::new();
    crate::shutdown::install(cancel.clone());
    match serve(handler, args, spec, extend, cancel).await {
        Ok(RunEnd::Drained) => {
            info!("stopped");
            ExitCode::SUCCESS
        }
        Ok(RunEnd::DrainTimedOut) => {
            warn!(code = EXIT_DRAIN_TIMEOUT, "stopped after the drain timeout");
            ExitCode::from(EXIT_DRAIN_TIMEOUT)
        }
        Err(e) => {
            error!(error = %format!("{e:#}"), "stopped");
            // Also plain on stderr: the reason must show whatever RUST_LOG says.
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

async fn serve<H: Handler>(
    handler: H,
    args: RuntimeArgs,
    spec: ConsumerSpec,
    extend: impl FnOnce(&Runtime<H>, &Supervisor) -> anyhow::Result<Router>,
    cancel: CancellationToken,
) -> anyhow::Result<RunEnd> {
    let listen = args
        .http_listen
        .clone()
        .unwrap_or_else(|| format!("127.0.0.1:{}", spec.default_port));
    let runtime = Runtime::new(handler, args, spec.default_group, cancel.clone()).await?;
    let supervisor = Supervisor::new(cancel.clone());
    let routes = extend(&runtime, &supervisor)?;
    let app = health::router(runtime.health(), runtime.metrics(), routes);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    info!(listen = %listener.local_addr()?, group = runtime.group(), "http listening");
    let http_cancel = supervisor.cancelled();
    supervisor.spawn("http", async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(http_cancel.cancelled_owned())
            .await
            .context("http server")
    });
    let end = runtime.run().await;
    // The runtime is done (drained, or failed): everything else stops too.
    cancel.cancel();
    match supervisor.wait().await {
        Some(failure) => Err(anyhow::anyhow!(failure)),
        None => end,
    }
}
