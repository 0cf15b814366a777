//! opal-producers: the typed event publisher, and the library behind the
//! `opal-producer` CLI (JSON input, perf runs, the producer test suite).

mod buffers;
pub mod config;
pub mod error;
pub mod input;
pub mod metrics;
pub mod perf;
pub mod publisher;
mod record;
pub mod simulate;
pub mod suite;

pub use config::PublisherConfig;
pub use error::PublishError;
pub use metrics::PublishMetrics;
pub use publisher::{Delivery, Publisher};
pub use record::WireRecord;
