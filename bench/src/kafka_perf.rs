//! Kafka's own `kafka-producer-perf-test` and `kafka-consumer-perf-test`
//! (from the local broker's jars, through `scripts/kafka.sh`) on the same
//! broker, record size and count as the rest of a run: a second baseline,
//! from the Java client, beside raw rdkafka.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use serde::Serialize;

/// `kafka-producer-perf-test`'s summary line.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProducerPerf {
    pub records: u64,
    pub records_per_sec: f64,
    pub mb_per_sec: f64,
    pub avg_latency_ms: f64,
    pub max_latency_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

/// `kafka-consumer-perf-test`'s result line.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConsumerPerf {
    pub records: u64,
    /// Records per second over the whole run, group join included.
    pub records_per_sec: f64,
    /// Records per second while fetching (the join excluded): the figure
    /// comparable with the other consumers' (first record to last).
    pub fetch_records_per_sec: f64,
    pub rebalance_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct KafkaPerf {
    pub producer: ProducerPerf,
    pub consumer: ConsumerPerf,
}

fn run_tool(kafka_sh: &Path, tool: &str, args: &[String]) -> anyhow::Result<String> {
    let output = Command::new(kafka_sh)
        .arg(tool)
        .args(args)
        .output()
        .with_context(|| format!("run {} {tool}", kafka_sh.display()))?;
    if !output.status.success() {
        bail!(
            "{tool} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Produces `records` records of `record_bytes` to `topic` with the Java
/// producer's defaults (acks=all, idempotence on), as fast as it can.
pub fn produce(
    kafka_sh: &Path,
    brokers: &str,
    topic: &str,
    records: u64,
    record_bytes: usize,
) -> anyhow::Result<ProducerPerf> {
    let args = [
        "--topic",
        topic,
        "--num-records",
        &records.to_string(),
        "--record-size",
        &record_bytes.to_string(),
        "--throughput",
        "-1",
        "--producer-props",
        &format!("bootstrap.servers={brokers}"),
    ]
    .map(str::to_owned);
    parse_producer(&run_tool(kafka_sh, "kafka-producer-perf-test", &args)?)
}

/// Consumes `records` records of `topic` in a fresh group.
pub fn consume(
    kafka_sh: &Path,
    brokers: &str,
    topic: &str,
    group: &str,
    records: u64,
) -> anyhow::Result<ConsumerPerf> {
    let args = [
        "--bootstrap-server",
        brokers,
        "--topic",
        topic,
        "--group",
        group,
        "--messages",
        &records.to_string(),
        "--timeout",
        "60000",
    ]
    .map(str::to_owned);
    parse_consumer(&run_tool(kafka_sh, "kafka-consumer-perf-test", &args)?)
}

/// The final summary: "N records sent, R records/sec (M MB/sec), A ms avg
/// latency, X ms max latency, P50 ms 50th, P95 ms 95th, P99 ms 99th, ...".
fn parse_producer(output: &str) -> anyhow::Result<ProducerPerf> {
    let line = output
        .lines()
        .rev()
        .find(|l| l.contains("records sent") && l.contains("50th"))
        .with_context(|| format!("no summary in kafka-producer-perf-test's output: {output}"))?;
    let number_before = |marker: &str| -> anyhow::Result<f64> {
        let head = line
            .split(marker)
            .next()
            .filter(|h| h.len() < line.len())
            .with_context(|| format!("'{marker}' not in: {line}"))?;
        let token = head
            .trim_end()
            .rsplit([' ', '('])
            .next()
            .unwrap_or_default();
        token
            .parse()
            .with_context(|| format!("'{token}' before '{marker}' in: {line}"))
    };
    Ok(ProducerPerf {
        records: number_before(" records sent")? as u64,
        records_per_sec: number_before(" records/sec")?,
        mb_per_sec: number_before(" MB/sec")?,
        avg_latency_ms: number_before(" ms avg latency")?,
        max_latency_ms: number_before(" ms max latency")?,
        p50_ms: number_before(" ms 50th")?,
        p95_ms: number_before(" ms 95th")?,
        p99_ms: number_before(" ms 99th")?,
    })
}

/// A CSV header and one line: start.time, end.time, data.consumed.in.MB,
/// MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms,
/// fetch.MB.sec, fetch.nMsg.sec.
fn parse_consumer(output: &str) -> anyhow::Result<ConsumerPerf> {
    let mut lines = output.lines().filter(|l| l.contains(','));
    let header: Vec<&str> = lines
        .next()
        .context("no header in kafka-consumer-perf-test's output")?
        .split(',')
        .map(str::trim)
        .collect();
    let values: Vec<&str> = lines
        .next()
        .with_context(|| format!("no result in kafka-consumer-perf-test's output: {output}"))?
        .split(',')
        .map(str::trim)
        .collect();
    let column = |name: &str| -> anyhow::Result<f64> {
        let i = header
            .iter()
            .position(|h| *h == name)
            .with_context(|| format!("no column {name} in {header:?}"))?;
        values
            .get(i)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("column {name} in {values:?}"))
    };
    Ok(ConsumerPerf {
        records: column("data.consumed.in.nMsg")? as u64,
        records_per_sec: column("nMsg.sec")?,
        fetch_records_per_sec: column("fetch.nMsg.sec")?,
        rebalance_ms: column("rebalance.time.ms")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_producer_summary() {
        let output = "82560 records sent, 16512.0 records/sec (3.05 MB/sec), 996.4 ms avg latency, 1526.0 ms max latency.\n\
            100000 records sent, 17519.271198 records/sec (3.24 MB/sec), 1125.11 ms avg latency, 1886.00 ms max latency, 1254 ms 50th, 1793 ms 95th, 1861 ms 99th, 1880 ms 99.9th.\n";
        assert_eq!(
            parse_producer(output).expect("parsed"),
            ProducerPerf {
                records: 100_000,
                records_per_sec: 17519.271198,
                mb_per_sec: 3.24,
                avg_latency_ms: 1125.11,
                max_latency_ms: 1886.0,
                p50_ms: 1254.0,
                p95_ms: 1793.0,
                p99_ms: 1861.0,
            }
        );
        assert!(parse_producer("nothing useful").is_err());
    }

    #[test]
    fn reads_the_consumer_result() {
        let output = "start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec\n\
            2026-11-25 13:50:50:821, 2026-11-25 13:50:54:537, 18.5013, 4.9788, 100000, 26910.6566, 2380, 1336, 13.8483, 74850.2994\n";
        assert_eq!(
            parse_consumer(output).expect("parsed"),
            ConsumerPerf {
                records: 100_000,
                records_per_sec: 26910.6566,
                fetch_records_per_sec: 74850.2994,
                rebalance_ms: 2380.0,
            }
        );
        assert!(parse_consumer("start.time, end.time\n").is_err());
    }
}
