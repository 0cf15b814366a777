//! The WebSocket hub: who is connected, what each one subscribed to, and a
//! bounded buffer per client. The consumer hands every event to
//! [`Hub::publish`] (from the live feed, see [`super::fanout`]), which never waits: a client whose buffer is full is
//! closed as a slow client (and counted), so one stalled reader slows neither
//! the others nor the consumer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::frames::{Close, Outgoing};
use super::metrics::WsMetrics;
use crate::live::LiveEvent;
use crate::selector::Selector;

/// What a client asked for.
#[derive(Debug, Clone)]
pub enum Interest {
    /// The events of a route of the routes file (a `websocket` route).
    Route(String),
    /// Patterns and a filter of the client's own.
    Own(Arc<Selector>),
}

impl Interest {
    /// The route label for metrics: the route's name, or `-` for an own selector.
    pub fn label(&self) -> &str {
        match self {
            Interest::Route(name) => name,
            Interest::Own(_) => "-",
        }
    }
}

/// Why the hub closed a client; read by its connection task when kicked.
#[derive(Debug, Default)]
pub struct Kick {
    token: CancellationToken,
    reason: OnceLock<Close>,
}

impl Kick {
    /// Closes the client with `close` (the first reason given wins).
    pub fn kick(&self, close: Close) {
        let _ = self.reason.set(close);
        self.token.cancel();
    }

    pub async fn kicked(&self) -> &Close {
        self.token.cancelled().await;
        self.reason.get().unwrap_or(&Close::GOING_AWAY)
    }
}

struct Client {
    interest: Interest,
    tx: mpsc::Sender<Arc<Outgoing>>,
    kick: Arc<Kick>,
}

/// One registered client, as its connection task holds it: unregisters on drop.
pub struct Registration {
    pub id: u64,
    pub events: mpsc::Receiver<Arc<Outgoing>>,
    pub kick: Arc<Kick>,
    hub: Arc<Hub>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.unregister(self.id);
    }
}

pub struct Hub {
    clients: RwLock<HashMap<u64, Client>>,
    next_id: AtomicU64,
    /// Events a client may have waiting before it counts as slow.
    buffer: usize,
    metrics: WsMetrics,
    /// Serialises kicks so a client is counted dropped once.
    kicking: Mutex<()>,
}

impl Hub {
    pub fn new(buffer: usize, metrics: WsMetrics) -> Arc<Hub> {
        Arc::new(Hub {
            clients: RwLock::default(),
            next_id: AtomicU64::new(1),
            buffer: buffer.max(1),
            metrics,
            kicking: Mutex::new(()),
        })
    }

    pub fn buffer(&self) -> usize {
        self.buffer
    }

    pub fn metrics(&self) -> &WsMetrics {
        &self.metrics
    }

    /// Adds a client: from now on every event it is interested in reaches its
    /// buffer (this is the seam a `from` catch-up starts after).
    pub fn register(self: &Arc<Self>, interest: Interest) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, events) = mpsc::channel(self.buffer);
        let kick = Arc::new(Kick::default());
        let label = interest.label().to_owned();
        self.write().insert(
            id,
            Client {
                interest,
                tx,
                kick: kick.clone(),
            },
        );
        self.metrics.connected.with_label_values(&[&label]).inc();
        Registration {
            id,
            events,
            kick,
            hub: self.clone(),
        }
    }

    fn unregister(&self, id: u64) {
        if let Some(client) = self.write().remove(&id) {
            self.metrics
                .connected
                .with_label_values(&[client.interest.label()])
                .dec();
        }
    }

    /// How many clients of route `route` are connected (a route's fallback
    /// webhook is used while there are none).
    pub fn route_clients(&self, route: &str) -> usize {
        self.read()
            .values()
            .filter(|c| matches!(&c.interest, Interest::Route(r) if r == route))
            .count()
    }

    /// Hands a feed event to every interested client without waiting:
    /// `routes` are the `websocket` routes it matched; clients with their own
    /// selector are matched here. The message is built once, and only if some
    /// client wants it. Returns the matched routes that had a client.
    pub fn publish<'r>(&self, event: &LiveEvent, routes: &[&'r str]) -> Vec<&'r str> {
        let mut outgoing: Option<Arc<Outgoing>> = None;
        let mut served = Vec::new();
        let mut slow = Vec::new();
        {
            let clients = self.read();
            for (id, client) in clients.iter() {
                let wanted = match &client.interest {
                    Interest::Route(name) => match routes.iter().find(|r| **r == name.as_str()) {
                        Some(route) => {
                            if !served.contains(route) {
                                served.push(*route);
                            }
                            true
                        }
                        None => false,
                    },
                    Interest::Own(selector) => selector.matches(event.event_type, &event.json),
                };
                if !wanted {
                    continue;
                }
                let message = outgoing.get_or_insert_with(|| {
                    Arc::new(Outgoing::new(
                        &event.event,
                        &event.json,
                        Arc::from(event.topic.as_str()),
                        event.partition,
                        event.offset,
                        false,
                    ))
                });
                if self.offer(client, message.clone()) {
                    slow.push(*id);
                }
            }
        }
        for id in slow {
            self.kick_slow(id);
        }
        served
    }

    /// Sends a replayed event (`POST /replay` to a websocket route) to the
    /// route's clients, same rule for a full buffer; returns how many got it.
    pub fn publish_to_route(&self, message: &Arc<Outgoing>, route: &str) -> usize {
        let mut delivered = 0;
        let mut slow = Vec::new();
        {
            let clients = self.read();
            for (id, client) in clients.iter() {
                if !matches!(&client.interest, Interest::Route(r) if r == route) {
                    continue;
                }
                if self.offer(client, message.clone()) {
                    slow.push(*id);
                } else {
                    delivered += 1;
                }
            }
        }
        for id in slow {
            self.kick_slow(id);
        }
        delivered
    }

    /// Puts `message` in the client's buffer; true if the buffer is full.
    fn offer(&self, client: &Client, message: Arc<Outgoing>) -> bool {
        match client.tx.try_send(message) {
            Ok(()) => false,
            Err(mpsc::error::TrySendError::Full(_)) => true,
            // Its connection is ending; unregistering is on its way.
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn kick_slow(&self, id: u64) {
        let _once = self.kicking.lock().unwrap_or_else(|e| e.into_inner());
        let Some(client) = self.write().remove(&id) else {
            return;
        };
        let label = client.interest.label().to_owned();
        self.metrics.connected.with_label_values(&[&label]).dec();
        self.metrics
            .dropped_clients
            .with_label_values(&[&label, "slow"])
            .inc();
        tracing::warn!(
            client = id,
            route = %label,
            buffer = self.buffer,
            "websocket client too slow: its buffer is full, closing it"
        );
        client.kick.kick(Close::slow(self.buffer));
    }

    /// Closes every client (shutdown).
    pub fn close_all(&self, close: Close) {
        for client in self.read().values() {
            client.kick.kick(close.clone());
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u64, Client>> {
        self.clients.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u64, Client>> {
        self.clients.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_schemas::EventType;
    use opal_schemas::samples::default_example;

    fn live(offset: i64) -> LiveEvent {
        let event = default_example(EventType::DecisionGenerated);
        LiveEvent {
            event_type: event.event_type(),
            json: crate::event_json(&event),
            event,
            topic: "opal.decision.generated".to_owned(),
            partition: 0,
            offset,
        }
    }

    fn own(patterns: serde_json::Value) -> Interest {
        let selector: Selector =
            serde_json::from_value(serde_json::json!({ "patterns": patterns })).expect("selector");
        Interest::Own(Arc::new(selector))
    }

    #[tokio::test]
    async fn a_full_buffer_closes_its_client_only_and_publishing_never_waits() {
        let metrics = WsMetrics::new(&prometheus::Registry::new()).expect("metrics");
        let hub = Hub::new(2, metrics.clone());
        let stalled = hub.register(own(serde_json::json!(["decision.*"])));
        let mut reading = hub.register(own(serde_json::json!(["#"])));
        let other = hub.register(own(serde_json::json!(["workflow.*"])));
        for offset in 0..5 {
            hub.publish(&live(offset), &[]);
            let got = reading.events.recv().await.expect("an event");
            assert_eq!(got.offset, offset);
        }
        // The third event found the stalled client's buffer (2) full.
        let close = tokio::time::timeout(std::time::Duration::from_secs(1), stalled.kick.kicked())
            .await
            .expect("kicked");
        assert_eq!(close.code, super::super::frames::code::TRY_AGAIN_LATER);
        assert_eq!(
            metrics
                .dropped_clients
                .with_label_values(&["-", "slow"])
                .get(),
            1
        );
        assert_eq!(metrics.connected.with_label_values(&["-"]).get(), 2);
        assert!(other.events.is_empty(), "not its patterns");
    }

    #[tokio::test]
    async fn route_clients_get_the_routes_they_subscribed_to() {
        let hub = Hub::new(
            8,
            WsMetrics::new(&prometheus::Registry::new()).expect("metrics"),
        );
        let mut ui = hub.register(Interest::Route("ui".to_owned()));
        let served = hub.publish(&live(1), &["ui", "alerts"]);
        assert_eq!(served, ["ui"], "alerts has no client: its fallback applies");
        assert_eq!(ui.events.recv().await.expect("event").offset, 1);
        assert!(hub.publish(&live(2), &["alerts"]).is_empty());
        assert!(ui.events.is_empty());
    }
}
