//! One root cancellation token: SIGTERM and Ctrl-C cancel it; a second signal
//! exits at once.

use tokio_util::sync::CancellationToken;

/// Exit code when a second signal cuts the drain short.
pub const EXIT_FORCED: i32 = 130;

pub fn install(token: CancellationToken) {
    tokio::spawn(async move {
        signal().await;
        tracing::info!("shutdown requested: draining (a second signal exits at once)");
        token.cancel();
        signal().await;
        tracing::warn!("second signal: exiting without draining");
        std::process::exit(EXIT_FORCED);
    });
}

async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
