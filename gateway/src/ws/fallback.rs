//! The fallback webhook of a `websocket` route: while no client of the route
//! is connected, its events are POSTed to the webhook the route names, with
//! [`WebhookSender`]'s signing, retries and backoff. One worker per route
//! behind a bounded queue, so a slow or down receiver never holds up the
//! fan-out; a full queue drops (and counts) the event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use opal_schemas::Event;
use prometheus::IntCounterVec;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::webhook::{WebhookConfig, WebhookSender};

/// Events a route's fallback may have waiting.
pub const FALLBACK_QUEUE: usize = 10_000;

struct Worker {
    config: WebhookConfig,
    tx: mpsc::Sender<Event>,
}

/// The fallback workers, one per route, made on first use and remade when
/// a reload changes the route's webhook.
pub struct Fallbacks {
    workers: Mutex<HashMap<String, Worker>>,
    /// Outcomes by route: delivered, failed (retries spent), dropped (queue full).
    outcomes: IntCounterVec,
    cancel: CancellationToken,
}

impl Fallbacks {
    pub fn new(outcomes: IntCounterVec, cancel: CancellationToken) -> Arc<Fallbacks> {
        Arc::new(Fallbacks {
            workers: Mutex::default(),
            outcomes,
            cancel,
        })
    }

    /// Queues `event` for route `route`'s fallback webhook, without waiting.
    pub fn offer(&self, route: &str, config: &WebhookConfig, event: &Event) {
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        let current = workers
            .get(route)
            .filter(|w| w.config == *config && !w.tx.is_closed());
        let tx = match current {
            Some(worker) => worker.tx.clone(),
            None => match self.start(route, config) {
                Some(worker) => {
                    let tx = worker.tx.clone();
                    // Replacing the old worker drops its sender: it ends after its queue.
                    workers.insert(route.to_owned(), worker);
                    tx
                }
                None => return,
            },
        };
        if tx.try_send(event.clone()).is_err() {
            self.count(route, "dropped");
            tracing::warn!(
                route,
                queue = FALLBACK_QUEUE,
                "fallback webhook queue full: event dropped"
            );
        }
    }

    fn start(&self, route: &str, config: &WebhookConfig) -> Option<Worker> {
        let sender = match WebhookSender::new(config.clone()) {
            Ok(sender) => sender,
            Err(e) => {
                // The routes file was validated; this is the HTTP client failing.
                tracing::error!(route, error = %e, "cannot start the fallback webhook");
                self.count(route, "failed");
                return None;
            }
        };
        let (tx, rx) = mpsc::channel(FALLBACK_QUEUE);
        tokio::spawn(run(
            route.to_owned(),
            sender,
            rx,
            self.outcomes.clone(),
            self.cancel.clone(),
        ));
        Some(Worker {
            config: config.clone(),
            tx,
        })
    }

    fn count(&self, route: &str, outcome: &str) {
        self.outcomes.with_label_values(&[route, outcome]).inc();
    }
}

async fn run(
    route: String,
    sender: WebhookSender,
    mut rx: mpsc::Receiver<Event>,
    outcomes: IntCounterVec,
    cancel: CancellationToken,
) {
    let size = sender.config().batch_size;
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            first = rx.recv() => match first {
                Some(event) => event,
                None => return,
            },
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + sender.config().max_wait();
        while batch.len() < size {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(event)) => batch.push(event),
                Ok(None) | Err(_) => break,
            }
        }
        let events: Vec<&Event> = batch.iter().collect();
        let (outcome, n) = match sender.send(&events, &cancel).await {
            Ok(()) => ("delivered", batch.len()),
            Err(e) => {
                tracing::warn!(route = %route, events = batch.len(), error = %e, "fallback webhook failed after its retries");
                ("failed", batch.len())
            }
        };
        outcomes
            .with_label_values(&[route.as_str(), outcome])
            .inc_by(n as u64);
    }
}
