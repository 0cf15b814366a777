//! Reloading the routes file on SIGHUP. The new file is parsed in full and
//! its dead-letter topics created and its new routes' groups placed at the
//! end of their topics before anything changes; a file that fails
//! either is refused (logged with its line and reason, counted, shown on
//! `/health/routes`) and the routes running stay as they are.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use opal_consumers::RuntimeArgs;
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::delivery::place_new_groups;
use crate::metrics::GatewayMetrics;
use crate::provision::{ensure_dlqs, groups};
use crate::routes;
use crate::table::RouteTable;

/// The last reload's outcome, for `/health/routes`.
#[derive(Debug, Clone, Serialize)]
pub struct LastReload {
    pub outcome: &'static str,
    /// Why it was refused (never a secret: see [`crate::WebhookSecret`]).
    pub error: Option<String>,
    /// When, milliseconds since the epoch.
    pub at: i64,
}

#[derive(Clone, Default)]
pub struct ReloadStatus(Arc<Mutex<Option<LastReload>>>);

impl ReloadStatus {
    pub fn last(&self) -> Option<LastReload> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, last: LastReload) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(last);
    }
}

pub struct Reloader {
    pub path: PathBuf,
    pub args: RuntimeArgs,
    pub base_group: String,
    pub table: RouteTable,
    pub metrics: GatewayMetrics,
    pub status: ReloadStatus,
}

impl Reloader {
    /// Reloads at each SIGHUP until `cancel`.
    pub async fn on_sighup(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let mut hangups = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = hangups.recv() => {
                    let _ = self.reload().await;
                }
            }
        }
    }

    /// Reads the file again and puts it in force, or refuses it.
    pub async fn reload(&self) -> Result<usize, String> {
        let outcome = self.try_reload().await;
        let (label, error) = match &outcome {
            Ok(n) => {
                info!(routes = n, path = %self.path.display(), "routes reloaded");
                ("applied", None)
            }
            Err(reason) => {
                error!(reason = %reason, "routes file refused; the running routes stay");
                ("refused", Some(reason.clone()))
            }
        };
        self.metrics.reloads.with_label_values(&[label]).inc();
        self.status.set(LastReload {
            outcome: label,
            error,
            at: opal_schemas::now_millis(),
        });
        outcome
    }

    async fn try_reload(&self) -> Result<usize, String> {
        let routes = routes::load(&self.path).map_err(|e| e.to_string())?;
        ensure_dlqs(&self.args, &groups(&self.base_group, &routes))
            .await
            .map_err(|e| format!("{e:#}"))?;
        // A new route starts where the file was applied, not where its
        // runtime happens to start.
        place_new_groups(&self.args, &self.base_group, &routes)
            .await
            .map_err(|e| format!("start positions: {e:#}"))?;
        let n = routes.len();
        self.table.replace(routes);
        Ok(n)
    }
}
