//! Runs one consumer runtime per webhook route, under the process's root
//! cancellation token, and keeps them in line with the routes in force: a
//! reload starts the new routes, drains and stops the removed ones, and
//! restarts a changed one (drained first: its offsets are committed, so the
//! restarted route continues exactly where it stopped). A route runtime that
//! fails stops the process (exit non-zero), as any consumer's failure does.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use opal_consumers::runtime::RunEnd;
use opal_consumers::{Runtime, RuntimeArgs};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::handler::WebhookRouteHandler;
use super::route_group;
use super::runtime_metrics::RouteRegistries;
use crate::metrics::GatewayMetrics;
use crate::routes::{Route, Sink};
use crate::table::RouteTable;
use crate::webhook::{Batcher, WebhookSender};

pub struct RouteSupervisor {
    /// The gateway's settings; each route's runtime gets a copy with its
    /// own group and its route's attempts and backoff.
    pub args: RuntimeArgs,
    /// The gateway's own group: route groups are `<base>.<route>`.
    pub base_group: String,
    pub table: RouteTable,
    pub metrics: GatewayMetrics,
    pub registries: RouteRegistries,
    pub cancel: CancellationToken,
}

struct Running {
    route: Arc<Route>,
    generation: u64,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// A route runtime's end: its route, its generation, how it ended.
type Ended = (String, u64, anyhow::Result<RunEnd>);

impl RouteSupervisor {
    /// Runs until the root token is cancelled, then waits for every route
    /// runtime to drain.
    pub async fn run(self) -> anyhow::Result<()> {
        let mut changes = self.table.subscribe();
        let (ended_tx, mut ended) = mpsc::unbounded_channel::<Ended>();
        let mut running: HashMap<String, Running> = HashMap::new();
        let mut generation = 0;
        let outcome = loop {
            let routes = changes.borrow_and_update().clone();
            let wanted: Vec<Arc<Route>> = routes
                .routes
                .iter()
                .filter(|r| matches!(r.sink, Sink::Webhook(_)))
                .cloned()
                .collect();
            if let Err(e) = self
                .reconcile(&wanted, &mut running, &mut generation, &ended_tx)
                .await
            {
                break Err(e);
            }
            tokio::select! {
                _ = self.cancel.cancelled() => break Ok(()),
                changed = changes.changed() => if changed.is_err() { break Ok(()) },
                Some((name, generation, result)) = ended.recv() => {
                    let current = running.get(&name).is_some_and(|r| r.generation == generation);
                    if current && !self.cancel.is_cancelled() {
                        break Err(match result {
                            Err(e) => e.context(format!("route {name}")),
                            Ok(_) => anyhow::anyhow!("route {name}: its runtime ended unexpectedly"),
                        });
                    }
                }
            }
        };
        self.cancel.cancel();
        for (name, r) in running.drain() {
            r.cancel.cancel();
            let _ = r.task.await;
            self.registries.remove(&name);
        }
        outcome
    }

    async fn reconcile(
        &self,
        wanted: &[Arc<Route>],
        running: &mut HashMap<String, Running>,
        generation: &mut u64,
        ended: &mpsc::UnboundedSender<Ended>,
    ) -> anyhow::Result<()> {
        let stale: Vec<String> = running
            .iter()
            .filter(|(name, r)| !wanted.iter().any(|w| &w.name == *name && **w == *r.route))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some(r) = running.remove(&name) {
                info!(route = %name, "stopping route (removed or changed)");
                r.cancel.cancel();
                let _ = r.task.await;
                self.registries.remove(&name);
                self.metrics.route_paused.with_label_values(&[&name]).set(0);
            }
        }
        for route in wanted {
            if running.contains_key(&route.name) {
                continue;
            }
            *generation += 1;
            let started = self
                .start(route.clone(), *generation, ended.clone())
                .await?;
            running.insert(route.name.clone(), started);
        }
        Ok(())
    }

    async fn start(
        &self,
        route: Arc<Route>,
        generation: u64,
        ended: mpsc::UnboundedSender<Ended>,
    ) -> anyhow::Result<Running> {
        let Sink::Webhook(config) = &route.sink else {
            anyhow::bail!("route {} is not a webhook route", route.name);
        };
        let group = route_group(&self.base_group, &route.name);
        let mut args = self.args.clone();
        args.group = Some(group.clone());
        args.group_instance_id = args
            .group_instance_id
            .as_ref()
            .map(|id| format!("{id}.{}", route.name));
        args.retry_attempts = config.attempts;
        args.retry_base_ms = config.backoff_base_ms;
        args.retry_max_ms = config.backoff_max_ms;
        // The lease stays the runtime's: a longer one would hold a crashed
        // instance's events back that long; a POST outliving it only risks a
        // duplicate delivery, which at-least-once allows.
        let topics: Vec<String> = route
            .selector
            .event_types()
            .iter()
            .map(|t| format!("{}{}", args.topic_prefix, t.topic()))
            .collect();
        // Its start position was fixed before the route entered the table
        // (start-up or reload: see [`super::start`]).
        self.metrics.touch_route(&route.name, "webhook");
        let cancel = self.cancel.child_token();
        let sender = Arc::new(
            WebhookSender::new(config.clone())
                .map_err(|e| anyhow::anyhow!("route {}: {e}", route.name))?,
        );
        let batcher = (config.batch_size > 1).then(|| Batcher::spawn(sender.clone()));
        let handler = WebhookRouteHandler::new(
            route.clone(),
            config.clone(),
            sender,
            batcher,
            self.metrics.clone(),
        );
        let runtime = Runtime::new(handler, args, &group, cancel.clone())
            .await
            .with_context(|| format!("route {}", route.name))?;
        self.registries
            .insert(&route.name, runtime.metrics().registry.clone());
        info!(route = %route.name, group = %group, topics = ?topics, "route started");
        let name = route.name.clone();
        let task = tokio::spawn(async move {
            let result = runtime.run().await;
            if let Ok(RunEnd::DrainTimedOut) = result {
                warn!(route = %name, "route stopped after the drain timeout: its batch in hand will be delivered again");
            }
            let _ = ended.send((name, generation, result));
        });
        Ok(Running {
            route,
            generation,
            cancel,
            task,
        })
    }
}
