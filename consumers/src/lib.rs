//! opal-consumers: the consumer runtime every consumer binary runs on, and the
//! consumers themselves.
//!
//! - [`handler`]: what business logic implements (no Kafka in sight).
//! - [`runtime`]: Kafka in, effects out exactly once, retries, DLQ, pauses.
//! - [`classify`]: the one function that decides what a failure means;
//!   [`dependency`]: the services a consumer waits for when they are down.
//! - [`idempotency`]: Redis leases and atomic apply-and-mark;
//!   [`durability`]: whether Redis keeps them through a crash.
//! - [`dlq`]: dead-letter topics and their headers.
//! - [`health`], [`metrics`], [`telemetry`]: `/health/*`, `/metrics`, and
//!   the runtime's log-and-count events.
//! - [`serve`], [`supervisor`], [`shutdown`]: running a consumer binary
//!   (HTTP, named tasks, signals, exit codes).

pub mod apps;
pub mod classify;
pub mod config;
pub mod counting;
pub mod dependency;
pub mod dlq;
pub mod dlq_tool;
pub mod durability;
pub mod handler;
pub mod health;
pub mod idempotency;
pub mod metrics;
pub mod runtime;
pub mod serve;
pub mod shutdown;
pub mod supervisor;
pub mod telemetry;

pub use config::RuntimeArgs;
pub use dependency::Dependency;
pub use handler::{Effects, Handler, HandlerError, Source, StateOp, StateReader};
pub use runtime::Runtime;
