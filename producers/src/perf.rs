//! `opal-producer perf`: throughput and latency of the typed path and of plain
//! rdkafka with pre-encoded bytes of the same size, in the habit of
//! kafka-producer-perf-test.

use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use opal_schemas::samples::default_example;
use opal_schemas::{Event, EventType};
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use serde::Serialize;

use crate::publisher::Publisher;
use crate::record::WireRecord;

/// Records in flight at once; past this the run waits for delivery reports.
const MAX_IN_FLIGHT: usize = 20_000;
/// Distinct keys, so records spread over partitions as real traffic does.
const KEYS: u64 = 1024;

#[derive(Debug, Clone)]
pub struct PerfOptions {
    pub event_type: EventType,
    pub num_records: u64,
    /// Records per second; None for as fast as possible.
    pub throughput: Option<f64>,
    pub show_progress: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PerfResult {
    pub mode: &'static str,
    pub records: u64,
    pub errors: u64,
    pub record_bytes: usize,
    pub elapsed_s: f64,
    pub records_per_sec: f64,
    pub mb_per_sec: f64,
    pub avg_latency_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_latency_ms: f64,
}

impl PerfResult {
    /// One line like kafka-producer-perf-test's summary.
    pub fn summary(&self) -> String {
        format!(
            "[{}] {} records sent, {:.1} records/sec ({:.2} MB/sec), {:.2} ms avg latency, {:.2} ms max latency, {:.2} ms 50th, {:.2} ms 95th, {:.2} ms 99th, {:.2} ms 99.9th; {} errors; {} bytes/record",
            self.mode,
            self.records,
            self.records_per_sec,
            self.mb_per_sec,
            self.avg_latency_ms,
            self.max_latency_ms,
            self.p50_ms,
            self.p95_ms,
            self.p99_ms,
            self.p999_ms,
            self.errors,
            self.record_bytes
        )
    }
}

/// The events of a typed run: one example of the type, cloned per record
/// with its own key, its ids and time left for the publisher to fill (as an
/// application's events arrive), so the run measures publishing rather than
/// building the example.
struct Events {
    template: Event,
    keys: Vec<String>,
}

impl Events {
    fn new(options: &PerfOptions, publisher: &Publisher) -> Self {
        let mut template = default_example(options.event_type);
        let envelope = template.envelope_mut();
        envelope.event_id.clear();
        envelope.correlation_id.clear();
        envelope.timestamp = 0;
        envelope.source_system = publisher.config().source_system.clone();
        let base = std::mem::take(template.key_mut());
        let keys = (0..KEYS).map(|i| format!("{base}-{i}")).collect();
        Events { template, keys }
    }

    fn get(&self, i: u64) -> Event {
        let mut event = self.template.clone();
        event.key_mut().clone_from(&self.keys[(i % KEYS) as usize]);
        event
    }
}

fn progress(options: &PerfOptions) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(options.num_records),
        if options.show_progress {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec})",
    ) {
        bar.set_style(style);
    }
    bar
}

/// When record `i` is due under the throughput limit.
fn due(start: Instant, i: u64, throughput: Option<f64>) -> Option<Instant> {
    throughput
        .filter(|r| *r > 0.0)
        .map(|r| start + Duration::from_secs_f64(i as f64 / r))
}

/// Sends `options.num_records` events through the typed publisher.
pub async fn run_typed(publisher: &Publisher, options: &PerfOptions) -> PerfResult {
    let events = Events::new(options, publisher);
    let mut sample = events.get(0);
    publisher.fill_envelope(&mut sample);
    let record_bytes = opal_schemas::codec::encode_with_id(&sample, 1).len();
    let bar = progress(options);
    let start = Instant::now();
    let mut latencies = Vec::with_capacity(options.num_records as usize);
    let mut errors = 0;
    let mut in_flight = FuturesUnordered::new();
    let mut first_error = None;
    for i in 0..options.num_records {
        drain(
            &mut in_flight,
            due(start, i, options.throughput),
            &mut latencies,
            &mut errors,
            &mut first_error,
            &bar,
        )
        .await;
        let event = events.get(i);
        in_flight.push(async move {
            let sent = Instant::now();
            let outcome = publisher
                .publish(event)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
            (sent.elapsed(), outcome)
        });
    }
    finish(
        &mut in_flight,
        &mut latencies,
        &mut errors,
        &mut first_error,
        &bar,
    )
    .await;
    if let Some(e) = first_error {
        tracing::warn!(error = %e, errors, "some records failed");
    }
    summarise("typed", start.elapsed(), latencies, errors, record_bytes)
}

/// A plain rdkafka producer with the publisher's delivery settings.
pub fn raw_producer(client_config: &ClientConfig) -> Result<FutureProducer, KafkaError> {
    let mut config = client_config.clone();
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5");
    config.create()
}

/// Sends the same number of pre-encoded records through plain rdkafka,
/// building each record's headers as the publisher does.
pub async fn run_raw(
    producer: &FutureProducer,
    topic: &str,
    record: &WireRecord,
    options: &PerfOptions,
) -> Result<PerfResult, KafkaError> {
    let payload = &record.payload;
    let keys: Vec<String> = (0..KEYS).map(|i| format!("key-{i}")).collect();
    let bar = progress(options);
    let start = Instant::now();
    let mut latencies = Vec::with_capacity(options.num_records as usize);
    let mut errors = 0;
    let mut first_error = None;
    let mut in_flight = FuturesUnordered::new();
    for i in 0..options.num_records {
        drain(
            &mut in_flight,
            due(start, i, options.throughput),
            &mut latencies,
            &mut errors,
            &mut first_error,
            &bar,
        )
        .await;
        let sent = Instant::now();
        let mut future_record = FutureRecord::to(topic)
            .key(&keys[(i % KEYS) as usize])
            .payload(payload);
        if let Some(headers) = record.kafka_headers() {
            future_record = future_record.headers(headers);
        }
        let delivery = loop {
            match producer.send_result(future_record) {
                Ok(delivery) => break Some(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    future_record = back;
                    producer.poll(Timeout::After(Duration::from_millis(5)));
                    tokio::task::yield_now().await;
                }
                Err(_) => break None,
            }
        };
        in_flight.push(async move {
            let outcome = match delivery {
                Some(d) => match d.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) => Err(e.to_string()),
                    Err(_) => Err("delivery canceled".to_owned()),
                },
                None => Err("enqueue failed".to_owned()),
            };
            (sent.elapsed(), outcome)
        });
    }
    finish(
        &mut in_flight,
        &mut latencies,
        &mut errors,
        &mut first_error,
        &bar,
    )
    .await;
    let _ = producer.flush(Timeout::After(Duration::from_secs(30)));
    Ok(summarise(
        "raw",
        start.elapsed(),
        latencies,
        errors,
        payload.len(),
    ))
}

type Outcome = (Duration, Result<(), String>);

/// Collects completions until there is room in flight and record `due` is due.
async fn drain<F: std::future::Future<Output = Outcome>>(
    in_flight: &mut FuturesUnordered<F>,
    due: Option<Instant>,
    latencies: &mut Vec<f64>,
    errors: &mut u64,
    first_error: &mut Option<String>,
    bar: &ProgressBar,
) {
    loop {
        let full = in_flight.len() >= MAX_IN_FLIGHT;
        let early = due.is_some_and(|d| Instant::now() < d);
        if !full && !early {
            return;
        }
        let next = match (full, due) {
            (false, Some(d)) => match tokio::time::timeout_at(d.into(), in_flight.next()).await {
                Ok(next) => next,
                Err(_) => return, // due now
            },
            _ => in_flight.next().await,
        };
        match next {
            Some(outcome) => record(outcome, latencies, errors, first_error, bar),
            None => {
                if let Some(d) = due {
                    tokio::time::sleep_until(d.into()).await;
                }
                return;
            }
        }
    }
}

async fn finish<F: std::future::Future<Output = Outcome>>(
    in_flight: &mut FuturesUnordered<F>,
    latencies: &mut Vec<f64>,
    errors: &mut u64,
    first_error: &mut Option<String>,
    bar: &ProgressBar,
) {
    while let Some(outcome) = in_flight.next().await {
        record(outcome, latencies, errors, first_error, bar);
    }
    bar.finish_and_clear();
}

fn record(
    outcome: Outcome,
    latencies: &mut Vec<f64>,
    errors: &mut u64,
    first_error: &mut Option<String>,
    bar: &ProgressBar,
) {
    let (elapsed, result) = outcome;
    match result {
        Ok(()) => latencies.push(elapsed.as_secs_f64() * 1000.0),
        Err(e) => {
            *errors += 1;
            first_error.get_or_insert(e);
        }
    }
    bar.inc(1);
}

/// The `q` quantile (nearest rank) of sorted values; 0 when there are none.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((q * sorted.len() as f64).ceil() as usize)
        .saturating_sub(1)
        .min(sorted.len() - 1)]
}

fn summarise(
    mode: &'static str,
    elapsed: Duration,
    mut latencies: Vec<f64>,
    errors: u64,
    record_bytes: usize,
) -> PerfResult {
    latencies.sort_by(f64::total_cmp);
    let records = latencies.len() as u64;
    let secs = elapsed.as_secs_f64().max(f64::EPSILON);
    let pick = |q: f64| percentile(&latencies, q);
    PerfResult {
        mode,
        records,
        errors,
        record_bytes,
        elapsed_s: secs,
        records_per_sec: records as f64 / secs,
        mb_per_sec: records as f64 * record_bytes as f64 / secs / (1024.0 * 1024.0),
        avg_latency_ms: if latencies.is_empty() {
            0.0
        } else {
            latencies.iter().sum::<f64>() / latencies.len() as f64
        },
        p50_ms: pick(0.50),
        p95_ms: pick(0.95),
        p99_ms: pick(0.99),
        p999_ms: pick(0.999),
        max_latency_ms: latencies.last().copied().unwrap_or(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_sorted_latencies() {
        let latencies: Vec<f64> = (1..=100).map(f64::from).rev().collect();
        let r = summarise("raw", Duration::from_secs(2), latencies, 3, 300);
        assert_eq!(
            (r.p50_ms, r.p95_ms, r.p99_ms, r.max_latency_ms),
            (50.0, 95.0, 99.0, 100.0)
        );
        assert_eq!(r.records, 100);
        assert_eq!(r.errors, 3);
        assert!((r.records_per_sec - 50.0).abs() < 1e-9);
        assert!((r.avg_latency_ms - 50.5).abs() < 1e-9);
    }

    #[test]
    fn pacing_spreads_records_over_time() {
        let start = Instant::now();
        assert_eq!(due(start, 10, None), None);
        assert_eq!(
            due(start, 10, Some(100.0)),
            Some(start + Duration::from_millis(100))
        );
    }
}
