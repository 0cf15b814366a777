//! opal-bench: how close the opal producer and consumer pipeline run to plain
//! rdkafka and to Kafka's own perf tools, measured in one run on one broker.
//!
//! - [`kafka_perf`]: Kafka's own kafka-*-perf-test tools, a second baseline.
//! - [`recorder`]: counts arrivals and their end-to-end latencies.
//! - [`raw`]: the baseline consumer (plain rdkafka: read and commit, no decode).
//! - [`pipeline`]: the opal runtime with a no-op handler.
//! - [`run`]: one benchmark run against one broker: produce, consume, latency.
//! - [`offsets`]: where a throughput round starts, for its fresh consumer groups.
//! - [`rounds`]: the throughput rounds' rates, their median, the consumers a round leaves.
//! - [`redis_cost`]: Redis's CPU per event, and per key of bare `SET`s (the floor).
//! - [`instructions`]: one phase on a fixed count, for callgrind's instruction counts.
//! - [`gateway`]: opal-gateway to a WebSocket client and a webhook: events/s and latency.
//! - [`report`]: merges runs and codec microbenchmarks into `latest.json` and a table.

pub mod gateway;
pub mod instructions;
pub mod kafka_perf;
pub mod offsets;
pub mod pipeline;
pub mod raw;
pub mod recorder;
pub mod redis_cost;
pub mod report;
pub mod rounds;
pub mod run;
