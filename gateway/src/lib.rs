//! opal-gateway: OPAL events for services and UIs that do not speak Kafka,
//! chosen by declarative routes and pushed by webhook and WebSocket.
//!
//! Choosing events:
//! - [`pattern`]: patterns over event types (`decision.*`, `*.completed`, `#`).
//! - [`filter`]: conditions over the event's fields (eq, in, prefix, numbers, and/or/not).
//! - [`selector`]: patterns + exclude + filter; the same shape in the routes
//!   file and in a WebSocket subscription. [`Selector::matches`] takes the
//!   event's JSON ([`event_json`]), computed once per event.
//! - [`routes`]: the routes file (TOML): [`Route`] = name + selector + [`Sink`];
//!   a bad file is refused with its line. [`table`]: the routes in force
//!   ([`RouteTable`], reloadable, watchable).
//!
//! Delivering them:
//! - [`webhook`]: Standard Webhooks signing, POST, batching, rate limit
//!   ([`WebhookSender`] is also what the fallback webhook and replay use).
//! - [`live`]: the feed of every event read, for the WebSocket hub.
//! - [`ws`], [`replay`], [`page`]: `/ws`, `POST /replay`, `GET /`.
//! - [`delivery`]: webhook routes on the consumer runtime, one runtime (group
//!   `opal-gateway.<route>`, its own DLQ) per route, so a receiver that is
//!   down holds back only its own route; see the module for the rules.
//!
//! Running it:
//! - [`app`]: flags and start-up; [`provision`]: the gateway's DLQs;
//!   [`reload`]: SIGHUP; [`metrics`], [`status`]: `/metrics`, `/health/routes`.
//!
//! Every event handed to a sink is the JSON `opal-producer read` prints:
//! [`event_json`] is that function, not a second one.

pub mod app;
pub mod delivery;
pub mod filter;
pub mod live;
pub mod metrics;
pub mod page;
pub mod pattern;
pub mod provision;
pub mod reload;
pub mod replay;
pub mod routes;
pub mod selector;
pub mod status;
pub mod table;
pub mod webhook;
pub mod ws;

pub use filter::Filter;
pub use live::{LiveEvent, LiveFeed};
pub use pattern::Pattern;
pub use routes::{Route, RoutesError, Sink, WebSocketSink};
pub use selector::Selector;
pub use table::{RouteTable, Routes};
pub use webhook::{Batcher, SendError, WebhookConfig, WebhookSecret, WebhookSender};

/// The JSON form of an event: the very function `opal-producer read` prints
/// with (envelope fields and payload fields side by side).
pub fn event_json(event: &opal_schemas::Event) -> serde_json::Value {
    event.to_json()
}
