//! `/ws`: events pushed to WebSocket clients. A client sends one `subscribe`
//! message ([`protocol`]) naming a `websocket` route or giving patterns and a
//! filter of its own, optionally with `from` (the matching events since then
//! come first, read back from Kafka, then the live stream: [`connection`]).
//! The [`hub`] gives each client a bounded buffer and closes a slow one; the
//! server's messages and close codes are in [`frames`].

pub mod connection;
pub mod fallback;
pub mod fanout;
pub mod frames;
pub mod hub;
pub mod metrics;
pub mod protocol;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::Response;
use axum::routing::get;
use serde_json::json;
use tokio_util::sync::CancellationToken;

pub use frames::{Close, Outgoing};
pub use hub::{Hub, Interest};
pub use metrics::WsMetrics;

use crate::replay::reader::HistoryReader;
use crate::routes::Sink;
use crate::selector::Selector;
use crate::table::RouteTable;

/// Largest message a client may send (a subscription is small).
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// Settings of the WebSocket side.
#[derive(Debug, Clone)]
pub struct WsSettings {
    /// Events a client may have waiting before it is closed as slow.
    pub buffer: usize,
    /// Interval of the server's pings; a client silent for two is closed.
    pub ping: Duration,
    /// Live events a client may have waiting while its `from` catch-up runs.
    pub catch_up_held: usize,
}

pub struct WsState {
    hub: Arc<Hub>,
    reader: HistoryReader,
    routes: RouteTable,
    topic_prefix: String,
    ping: Duration,
    held_max: usize,
}

impl WsState {
    pub fn new(
        hub: Arc<Hub>,
        reader: HistoryReader,
        routes: RouteTable,
        topic_prefix: String,
        settings: &WsSettings,
    ) -> Arc<WsState> {
        Arc::new(WsState {
            hub,
            reader,
            routes,
            topic_prefix,
            ping: settings.ping.max(Duration::from_millis(100)),
            held_max: settings.catch_up_held.max(1),
        })
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// What the subscribe message `text` asks for: interest, selector, `from`
    /// in milliseconds and the route's name; or why it is refused.
    fn subscription(&self, text: &str) -> Result<Subscription, String> {
        let subscribe = protocol::parse(text)?;
        let from = subscribe
            .from
            .as_ref()
            .map(protocol::When::millis)
            .transpose()?;
        match subscribe.route {
            Some(route) => {
                let selector = Arc::new(self.websocket_route(&route)?);
                Ok(Subscription {
                    interest: Interest::Route(route.clone()),
                    selector,
                    from,
                    route: Some(route),
                })
            }
            None => {
                let raw = json!({
                    "patterns": subscribe.patterns,
                    "exclude": subscribe.exclude,
                    "filter": subscribe.filter,
                });
                let selector: Selector =
                    serde_json::from_value(raw).map_err(|e| format!("bad subscription: {e}"))?;
                let selector = Arc::new(selector);
                Ok(Subscription {
                    interest: Interest::Own(selector.clone()),
                    selector,
                    from,
                    route: None,
                })
            }
        }
    }

    /// The selector of the `websocket` route `name`, or why a client cannot
    /// subscribe to it.
    fn websocket_route(&self, name: &str) -> Result<Selector, String> {
        let route = self
            .routes
            .get(name)
            .ok_or_else(|| format!("no route named '{name}' is in force"))?;
        match route.sink {
            Sink::WebSocket(_) => Ok(route.selector.clone()),
            Sink::Webhook(_) => Err(format!(
                "route '{name}' is a webhook route; subscribe to a websocket route or give patterns"
            )),
        }
    }

    /// The topics holding the event types `selector` can match.
    fn topics_for(&self, selector: &Selector) -> Vec<String> {
        selector
            .event_types()
            .iter()
            .map(|t| format!("{}{}", self.topic_prefix, t.topic()))
            .collect()
    }

    fn ping_interval(&self) -> tokio::time::Interval {
        let mut interval =
            tokio::time::interval_at(tokio::time::Instant::now() + self.ping, self.ping);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    }
}

struct Subscription {
    interest: Interest,
    selector: Arc<Selector>,
    from: Option<i64>,
    route: Option<String>,
}

/// `GET /ws` (upgraded); connections end with `shutdown`.
pub fn router(state: Arc<WsState>, shutdown: CancellationToken) -> Router {
    Router::new()
        .route("/ws", get(upgrade))
        .with_state((state, shutdown))
}

async fn upgrade(
    State((state, shutdown)): State<(Arc<WsState>, CancellationToken)>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.max_message_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| connection::serve(socket, state, shutdown))
}

/// The WebSocket side's flags (flattened into the gateway's).
#[derive(Debug, Clone, clap::Args)]
pub struct WsArgs {
    /// Events a WebSocket client may have waiting unsent; a client that lets
    /// its buffer fill is closed (1013) without slowing anyone else.
    #[arg(long, env = "OPAL_GATEWAY_WS_BUFFER", default_value_t = 1024)]
    pub ws_buffer: usize,
    /// Seconds between the server's pings; a client silent for two intervals is closed.
    #[arg(long, env = "OPAL_GATEWAY_WS_PING_SECS", default_value_t = 15)]
    pub ws_ping_secs: u64,
    /// Live events a client may have waiting while its `from` catch-up is read.
    #[arg(long, env = "OPAL_GATEWAY_WS_CATCH_UP_HELD", default_value_t = 100_000)]
    pub ws_catch_up_held: usize,
}

impl WsArgs {
    pub fn settings(&self) -> WsSettings {
        WsSettings {
            buffer: self.ws_buffer,
            ping: Duration::from_secs(self.ws_ping_secs),
            catch_up_held: self.ws_catch_up_held,
        }
    }
}

/// Why the push side could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("kafka settings: {0}")]
    Kafka(String),
    #[error("schema registry client: {0}")]
    Registry(String),
}

/// Starts the push side on the gateway's consumer: the fan-out from `feed`
/// to the WebSocket hub (a named task of `supervisor`), and returns the
/// routes `/ws`, `POST /replay` and `GET /` to merge into the HTTP server.
pub fn start(
    args: &opal_consumers::RuntimeArgs,
    feed: &crate::live::LiveFeed,
    routes: RouteTable,
    settings: &WsSettings,
    registry: &prometheus::Registry,
    supervisor: &opal_consumers::supervisor::Supervisor,
) -> Result<Router, StartError> {
    let metrics = WsMetrics::new(registry)?;
    let fallback_outcomes = metrics.fallback.clone();
    let hub = Hub::new(settings.buffer, metrics);
    let kafka = args
        .kafka
        .client_config()
        .map_err(|e| StartError::Kafka(e.to_string()))?;
    let registry_client = args
        .registry
        .client(Duration::from_secs(5))
        .map_err(|e| StartError::Registry(e.to_string()))?;
    let reader = HistoryReader::new(kafka, Arc::new(opal_schemas::Codec::new(registry_client)));
    let cancel = supervisor.cancelled();
    let fallbacks = fallback::Fallbacks::new(fallback_outcomes, cancel.clone());
    let fan_out = fanout::run(
        hub.clone(),
        feed.subscribe(),
        routes.clone(),
        fallbacks,
        cancel.clone(),
    );
    supervisor.spawn("websocket-fanout", async move {
        fan_out.await;
        Ok(())
    });
    let ws = WsState::new(
        hub.clone(),
        reader.clone(),
        routes.clone(),
        args.topic_prefix.clone(),
        settings,
    );
    let replay = crate::replay::ReplayState::new(
        reader,
        hub,
        routes,
        args.topic_prefix.clone(),
        cancel.clone(),
    );
    Ok(router(ws, cancel)
        .merge(crate::replay::router(replay))
        .merge(crate::page::router()))
}
