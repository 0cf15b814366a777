//! opal-bench: how close the opal producer and consumer pipeline run to plain
//! rdkafka on the same broker, measured in one run (issue #9).
//!
//! - [`recorder`]: counts arrivals and their end-to-end latencies.
//! - [`raw`]: the baseline consumer (plain rdkafka: read and commit, no decode).
//! - [`pipeline`]: the opal runtime with a no-op handler.
//! - [`run`]: one benchmark run against one broker: produce, consume, latency.
//! - [`report`]: merges runs and codec microbenchmarks into `latest.json` and a table.

pub mod pipeline;
pub mod raw;
pub mod recorder;
pub mod report;
pub mod run;
