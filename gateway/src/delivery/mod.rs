//! Delivering webhook routes on the consumer runtime.
//!
//! Each webhook route runs its own [`opal_consumers::Runtime`] in the one
//! gateway process: consumer group `opal-gateway.<route>`, its own DLQ
//! (`opal-gateway.<route>.dlq`), reading only the topics its patterns select.
//! So a route inherits every guarantee the runtime gives (offsets stored only
//! once an event is settled, retries with backoff and jitter, dead letters,
//! pauses, clean drains), and a receiver that is down holds back only its own
//! route's group: the others have their own consumers and offsets.
//!
//! The handler ([`handler`]) POSTs the event (through the route's
//! [`crate::Batcher`] when it batches) and answers the runtime:
//! 2xx: done (the offset may be stored); non-2xx or timeout: `Transient`
//! (retried with backoff, dead-lettered once the route's `attempts` are
//! spent); receiver unreachable: `NotYet` (the partition is parked and tried
//! again a second later, spending no attempt) until `max_pause_secs`, then
//! `Transient`, so the pause is bounded.
//!
//! The runtime's Redis done-marks are kept per group
//! (`opal-gateway.<route>`), written once per poll batch: after a crash the
//! events of the unfinished batch are POSTed again (at least once), those of
//! settled batches are not. `POST /replay` does not go through the runtime,
//! so they never make a replay skip an event.
//!
//! [`supervisor`] starts, stops and restarts route runtimes as reloads
//! change the routes; [`start`] places the gateway's own group and a new
//! route's group at the end of their topics (a route may say the beginning,
//! `start = "earliest"`) before they run; [`live`] is the handler of the
//! gateway's own group, which feeds the WebSocket side.

pub mod handler;
pub mod live;
pub mod runtime_metrics;
pub mod start;
pub mod supervisor;

pub use handler::WebhookRouteHandler;
pub use live::LiveHandler;
pub use runtime_metrics::RouteRegistries;
pub use start::place_new_groups;
pub use supervisor::RouteSupervisor;

/// The consumer group (and, with `.dlq`, the DLQ) of webhook route `route`.
pub fn route_group(base: &str, route: &str) -> String {
    format!("{base}.{route}")
}
