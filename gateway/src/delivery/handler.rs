//! The handler of one webhook route: POST the event, and tell the runtime
//! what the answer means (see the module above for the rules).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use opal_consumers::{Effects, Handler, HandlerError, Source, StateReader};
use opal_schemas::{Event, EventType};
use tracing::warn;

use crate::metrics::GatewayMetrics;
use crate::routes::Route;
use crate::webhook::sender::Message;
use crate::webhook::{Batcher, SendError, WebhookConfig, WebhookSender};

pub struct WebhookRouteHandler {
    /// `gateway.<route>`: the runtime's metric label and log name.
    name: String,
    route: Arc<Route>,
    config: WebhookConfig,
    sender: Arc<WebhookSender>,
    /// Present when the route batches.
    batcher: Option<Batcher>,
    metrics: GatewayMetrics,
    /// Since when the receiver cannot be reached (None: it can).
    down_since: Mutex<Option<Instant>>,
    /// Failed attempts per event id, to count the event as failed when its
    /// last attempt fails (the runtime dead-letters it then).
    failures: Mutex<HashMap<String, u32>>,
}

impl WebhookRouteHandler {
    /// `batcher` must send through `sender` (see [`Batcher::spawn`]).
    pub fn new(
        route: Arc<Route>,
        config: WebhookConfig,
        sender: Arc<WebhookSender>,
        batcher: Option<Batcher>,
        metrics: GatewayMetrics,
    ) -> Self {
        WebhookRouteHandler {
            name: format!("gateway.{}", route.name),
            route,
            config,
            sender,
            batcher,
            metrics,
            down_since: Mutex::new(None),
            failures: Mutex::new(HashMap::new()),
        }
    }

    async fn post(&self, event: &Event) -> Result<(), SendError> {
        match &self.batcher {
            Some(batcher) => batcher.submit(event.clone()).await,
            None => self.sender.send_once(&Message::of(&[event])).await,
        }
    }

    fn route(&self) -> &str {
        &self.route.name
    }

    fn set_down(&self, down: bool) -> Option<Instant> {
        let mut since = self.down_since.lock().unwrap_or_else(|p| p.into_inner());
        let gauge = self.metrics.route_paused.with_label_values(&[self.route()]);
        if down {
            gauge.set(1);
            Some(*since.get_or_insert_with(Instant::now))
        } else {
            gauge.set(0);
            *since = None;
            None
        }
    }

    /// Counts a failed attempt of `event_id`; true when it was the last one.
    fn last_attempt(&self, event_id: &str) -> bool {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(event_id.to_owned()).or_insert(0);
        *n += 1;
        let last = *n >= self.config.attempts;
        if last {
            failures.remove(event_id);
        }
        last
    }

    fn forget(&self, event_id: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(event_id);
    }
}

impl Handler for WebhookRouteHandler {
    fn name(&self) -> &str {
        &self.name
    }

    fn inputs(&self) -> Vec<EventType> {
        self.route.selector.event_types().to_vec()
    }

    // Done-marks are written once per poll batch (the runtime's default):
    // marking each event as its POST answers would cost a Redis write, and
    // with `appendfsync always` an fsync, per event (measured: ~60 events/s).
    // A crash therefore re-delivers at most the unfinished poll batch.

    async fn handle(
        &self,
        event: &Event,
        _source: &Source,
        _state: &StateReader,
    ) -> Result<Effects, HandlerError> {
        if !self.route.selector.matches_event(event) {
            return Ok(Effects::none());
        }
        let id = &event.envelope().event_id;
        match self.post(event).await {
            Ok(()) => {
                self.set_down(false);
                self.forget(id);
                self.metrics
                    .delivered(self.route(), "webhook", event.envelope().timestamp);
                Ok(Effects::none())
            }
            Err(SendError::Unreachable(reason)) => {
                self.metrics
                    .webhook_failures
                    .with_label_values(&[self.route(), "unreachable"])
                    .inc();
                let since = self.set_down(true).unwrap_or_else(Instant::now);
                if since.elapsed() < self.config.max_pause() {
                    // Park: tried again shortly, no attempt spent.
                    return Err(HandlerError::NotYet(format!(
                        "route {}: {reason}",
                        self.route()
                    )));
                }
                warn!(
                    route = self.route(),
                    "receiver down for longer than max_pause_secs: spending attempts"
                );
                self.failed(id, reason)
            }
            Err(e) => {
                self.set_down(false);
                self.metrics
                    .webhook_failures
                    .with_label_values(&[self.route(), "failed"])
                    .inc();
                self.failed(id, e.to_string())
            }
        }
    }
}

impl WebhookRouteHandler {
    fn failed(&self, id: &str, reason: String) -> Result<Effects, HandlerError> {
        if self.last_attempt(id) {
            self.metrics
                .failed
                .with_label_values(&[self.route(), "webhook"])
                .inc();
        }
        Err(HandlerError::Transient(format!(
            "route {}: {reason}",
            self.route()
        )))
    }
}
