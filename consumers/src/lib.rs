//! opal-consumers: the consumer runtime every consumer binary runs on, and the
//! consumers themselves.
//!
//! - [`handler`]: what business logic implements (no Kafka in sight).
//! - [`runtime`]: Kafka in, effects out exactly once, retries, DLQ, pauses.
//! - [`classify`]: the one function that decides what a failure means.
//! - [`idempotency`]: Redis leases and atomic apply-and-mark.
//! - [`dlq`]: dead-letter topics and their headers.
//! - [`health`], [`metrics`]: `/health/*` and `/metrics`.
//! - [`serve`]: running a consumer binary (HTTP, signals, shutdown).

pub mod apps;
pub mod classify;
pub mod config;
pub mod counting;
pub mod dlq;
pub mod dlq_tool;
pub mod handler;
pub mod health;
pub mod idempotency;
pub mod metrics;
pub mod runtime;
pub mod serve;
pub mod shutdown;

pub use config::RuntimeArgs;
pub use handler::{Effects, Handler, HandlerError, Source, StateOp, StateReader};
pub use runtime::Runtime;
