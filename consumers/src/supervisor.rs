//! Named tasks under one root cancellation token (as Arroyo's shutdown
//! guard): the HTTP server and each consumer's own background work run as
//! tasks that end when the token is cancelled. A task that fails, or ends
//! while the others still run, cancels the token, so the whole process stops
//! (draining as on SIGTERM) and exits non-zero.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::error;

pub struct Supervisor {
    /// The root token: cancelled by a signal or by a failing task.
    cancel: CancellationToken,
    /// Every spawned task, awaited before the process exits.
    tracker: TaskTracker,
    /// The first task that failed, and why.
    failure: Arc<Mutex<Option<String>>>,
}

impl Supervisor {
    pub fn new(cancel: CancellationToken) -> Self {
        Supervisor {
            cancel,
            tracker: TaskTracker::new(),
            failure: Arc::new(Mutex::new(None)),
        }
    }

    /// The root token, for tasks to stop on.
    pub fn cancelled(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Runs `task` as `name`. It must end once the root token is cancelled;
    /// an error, or an end before that, cancels everything.
    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        let failure = self.failure.clone();
        self.tracker.spawn(async move {
            let reason = match task.await {
                Err(e) => format!("task {name} failed: {e:#}"),
                Ok(()) if !cancel.is_cancelled() => format!("task {name} ended unexpectedly"),
                Ok(()) => return,
            };
            error!(task = name, reason = %reason, "stopping the process");
            failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(reason);
            cancel.cancel();
        });
    }

    /// Waits for every task to end; the first failure, if any.
    pub async fn wait(self) -> Option<String> {
        self.tracker.close();
        self.tracker.wait().await;
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}
