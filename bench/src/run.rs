//! One benchmark run against one broker: the raw baseline and the opal path on
//! the same number of events of the same size, one after the other, then
//! end-to-end latency at fixed rates.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use opal_consumers::RuntimeArgs;
use opal_producers::perf::{self, PerfOptions, PerfResult};
use opal_producers::{PublishMetrics, Publisher, PublisherConfig};
use opal_schemas::samples::default_example;
use opal_schemas::{Environment, EventType};
use opal_topics::provision::Target;
use opal_topics::{Catalog, KafkaArgs, RegistryArgs, TopicSpec};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::kafka_perf::{self, KafkaPerf};
use crate::pipeline::{self, NoopHandler};
use crate::raw;
use crate::recorder::{Latency, Recorder, Throughput};

/// The event type benchmarked: the busiest topic of the spec's workload.
pub const EVENT_TYPE: EventType = EventType::AgentCompleted;

/// Events each producer sends before measuring.
const WARM_UP: u64 = 1_000;

/// What one run measures against which stack (also `opal-bench run`'s flags).
#[derive(Debug, Clone, clap::Args)]
pub struct RunOptions {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub redis: opal_consumers::config::RedisArgs,
    /// The broker, as named in the report (e.g. apache-kafka-4.4.0).
    #[arg(long)]
    pub broker: String,
    /// Kafka's CLI tools wrapper, for the kafka-*-perf-test baseline.
    #[arg(long, default_value = "scripts/kafka.sh")]
    pub kafka_tools: std::path::PathBuf,
    /// Events in the throughput phases.
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Fixed rates (events/s) of the latency phases.
    #[arg(long, value_delimiter = ',', default_value = "5000,10000,20000")]
    pub rates: Vec<u64>,
    /// Seconds of traffic per latency phase.
    #[arg(long, default_value_t = 5)]
    pub latency_secs: u64,
    /// Rounds of latency phases (each round runs every rate once): on a
    /// shared machine one phase's tail varies several-fold from run to run,
    /// so the report gives each rate's median round and the range.
    #[arg(long, default_value_t = 3)]
    pub latency_rounds: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Produce {
    pub raw: PerfResult,
    pub opal: PerfResult,
    /// opal events/s ÷ raw events/s.
    pub ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Consume {
    pub raw: Throughput,
    pub pipeline: Throughput,
    /// pipeline events/s ÷ raw events/s.
    pub ratio: f64,
    /// Redis round trips the pipeline made per poll batch, and events per batch.
    pub redis_round_trips_per_batch: f64,
    pub events_per_batch: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyRow {
    /// Target rate (events/s) and what the producer achieved.
    pub rate: u64,
    /// Which round of latency phases (0-based).
    pub round: u32,
    pub raw_produced_per_sec: f64,
    pub opal_produced_per_sec: f64,
    /// Send → broker acknowledgement p95 (ms) of each side's producer: a tail
    /// that is already here is the broker's or the producer's, not the consumer's.
    pub raw_ack_p95_ms: f64,
    pub opal_ack_p95_ms: f64,
    pub raw: Latency,
    pub pipeline: Latency,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub broker: String,
    /// librdkafka settings given to every client of the run (`--kafka-option`).
    pub kafka_options: Vec<String>,
    pub event_type: String,
    pub events: u64,
    pub record_bytes: usize,
    pub produce: Produce,
    pub consume: Consume,
    pub latency: Vec<LatencyRow>,
    /// Kafka's own perf tools on the same broker, size and count.
    pub kafka_perf: KafkaPerf,
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The pipeline's consumer group in the run under `prefix`.
pub(crate) fn pipeline_group(prefix: &str) -> String {
    format!("{prefix}pipeline")
}

/// Topics for this run (the catalog under a fresh prefix) plus the raw
/// topic, Kafka's perf tools' topic and the pipeline's DLQ, sized like the
/// benchmarked topic.
pub(crate) async fn provision(
    options: &RunOptions,
    prefix: &str,
) -> anyhow::Result<(String, String)> {
    let registry = options.registry.client(Duration::from_secs(10))?;
    let target = Target::new(options.kafka.clone(), registry, Duration::from_secs(30))?;
    let mut plan = Catalog::bundled()?.plan(Environment::Development, prefix);
    let template = plan
        .iter()
        .find(|t| t.event_type == Some(EVENT_TYPE))
        .context("the catalog has the benchmarked topic")?
        .clone();
    let raw_topic = format!("{prefix}raw.{}", EVENT_TYPE.topic());
    let perf_topic = format!("{prefix}kafka-perf.{}", EVENT_TYPE.topic());
    let pipeline_dlq = opal_topics::dlq_topic(prefix, &pipeline_group(prefix));
    for name in [&raw_topic, &perf_topic, &pipeline_dlq] {
        plan.push(TopicSpec {
            name: name.clone(),
            event_type: None,
            ..template.clone()
        });
    }
    target
        .init(&plan, false)
        .await
        .context("kafka-init for the run")?;
    Ok((raw_topic, perf_topic))
}

fn perf_options(records: u64, rate: Option<u64>) -> PerfOptions {
    PerfOptions {
        event_type: EVENT_TYPE,
        num_records: records,
        throughput: rate.map(|r| r as f64),
        show_progress: false,
    }
}

pub async fn run(options: &RunOptions) -> anyhow::Result<RunResult> {
    let prefix = format!("bench-{}.", unix_secs());
    let (raw_topic, perf_topic) = provision(options, &prefix).await?;
    eprintln!("opal-bench [{}]: topics under {prefix}", options.broker);

    let publisher = Publisher::new(
        PublisherConfig {
            kafka: options.kafka.clone(),
            registry: options.registry.clone(),
            environment: Environment::Development,
            source_system: "opal-bench".to_owned(),
            topic_prefix: prefix.clone(),
            auto_register: false,
            delivery_timeout_ms: 60_000,
        },
        PublishMetrics::new(&prometheus::Registry::new())?,
    )?;
    // The raw producer sends the records the opal producer would: the same
    // payload (schema id, size) and the same four headers.
    let record = publisher.sample_record(default_example(EVENT_TYPE)).await?;
    let record_bytes = record.payload.len();
    let raw_producer = perf::raw_producer(&options.kafka.client_config()?)?;
    let n = options.events;

    // Both producers connect, fetch metadata and get their idempotent producer
    // id before anything is measured; consumers then see WARM_UP + n events.
    perf::run_raw(
        &raw_producer,
        &raw_topic,
        &record,
        &perf_options(WARM_UP, None),
    )
    .await?;
    perf::run_typed(&publisher, &perf_options(WARM_UP, None)).await;

    eprintln!(
        "opal-bench [{}]: producing {n} raw, then {n} opal",
        options.broker
    );
    let raw_produce =
        perf::run_raw(&raw_producer, &raw_topic, &record, &perf_options(n, None)).await?;
    let opal_produce = perf::run_typed(&publisher, &perf_options(n, None)).await;
    anyhow::ensure!(
        raw_produce.errors == 0 && opal_produce.errors == 0,
        "produce errors: raw {}, opal {}",
        raw_produce.errors,
        opal_produce.errors
    );
    eprintln!(
        "opal-bench [{}]: kafka-producer-perf-test, {n} records",
        options.broker
    );
    let tools = (options.kafka_tools.clone(), options.kafka.brokers.clone());
    let kafka_produce = {
        let (tools, topic) = (tools.clone(), perf_topic.clone());
        tokio::task::spawn_blocking(move || {
            kafka_perf::produce(&tools.0, &tools.1, &topic, n, record_bytes)
        })
        .await??
    };

    let cancel = CancellationToken::new();
    let limit = Duration::from_secs(180);

    eprintln!("opal-bench [{}]: consuming raw", options.broker);
    let raw_recorder = Arc::new(Recorder::default());
    let raw_task = tokio::spawn({
        let (kafka, group, topic) = (
            options.kafka.clone(),
            format!("{prefix}raw-consumer"),
            raw_topic.clone(),
        );
        let (recorder, cancel) = (raw_recorder.clone(), cancel.clone());
        async move { raw::consume(&kafka, &group, &topic, recorder, cancel).await }
    });
    raw_recorder
        .wait_for(WARM_UP + n, limit)
        .await
        .context("raw consume")?;
    let raw_consume = raw_recorder.throughput();

    eprintln!(
        "opal-bench [{}]: kafka-consumer-perf-test, {n} records",
        options.broker
    );
    let kafka_consume = {
        let (tools, topic, group) = (
            tools.clone(),
            perf_topic.clone(),
            format!("{prefix}kafka-perf"),
        );
        tokio::task::spawn_blocking(move || {
            kafka_perf::consume(&tools.0, &tools.1, &topic, &group, n)
        })
        .await??
    };

    eprintln!(
        "opal-bench [{}]: consuming through the pipeline",
        options.broker
    );
    let pipe_recorder = Arc::new(Recorder::default());
    let mut args = RuntimeArgs::local(
        &options.kafka.brokers,
        &options.registry.url,
        &options.redis.url,
    );
    args.kafka = options.kafka.clone();
    args.registry = options.registry.clone();
    args.topic_prefix = prefix.clone();
    let pipeline = pipeline::start(
        args,
        &pipeline_group(&prefix),
        NoopHandler {
            recorder: pipe_recorder.clone(),
            input: EVENT_TYPE,
        },
        cancel.clone(),
    )
    .await?;
    pipe_recorder
        .wait_for(WARM_UP + n, limit)
        .await
        .context("pipeline consume")?;
    let pipe_consume = pipe_recorder.throughput();
    let batches = pipeline.metrics.batches.get() as f64;
    let round_trips = pipeline.metrics.redis_round_trips.get() as f64;

    let mut latency = Vec::new();
    let rounds = (0..options.latency_rounds.max(1))
        .flat_map(|round| options.rates.iter().map(move |rate| (round, *rate)));
    for (round, rate) in rounds {
        let records = rate * options.latency_secs;
        eprintln!(
            "opal-bench [{}]: latency round {round} at {rate}/s ({records} events each)",
            options.broker
        );
        raw_recorder.reset();
        let raw_sent = perf::run_raw(
            &raw_producer,
            &raw_topic,
            &record,
            &perf_options(records, Some(rate)),
        )
        .await?;
        raw_recorder
            .wait_for(records, limit)
            .await
            .context("raw latency")?;
        pipe_recorder.reset();
        let opal_sent = perf::run_typed(&publisher, &perf_options(records, Some(rate))).await;
        pipe_recorder
            .wait_for(records, limit)
            .await
            .context("pipeline latency")?;
        latency.push(LatencyRow {
            rate,
            round,
            raw_produced_per_sec: raw_sent.records_per_sec,
            opal_produced_per_sec: opal_sent.records_per_sec,
            raw_ack_p95_ms: raw_sent.p95_ms,
            opal_ack_p95_ms: opal_sent.p95_ms,
            raw: raw_recorder.latency(),
            pipeline: pipe_recorder.latency(),
        });
    }

    cancel.cancel();
    raw_task.await??;
    pipeline.task.await??;
    Ok(RunResult {
        broker: options.broker.clone(),
        kafka_options: options.kafka.options.clone(),
        event_type: EVENT_TYPE.name().to_owned(),
        events: n,
        record_bytes,
        produce: Produce {
            ratio: opal_produce.records_per_sec / raw_produce.records_per_sec,
            raw: raw_produce,
            opal: opal_produce,
        },
        consume: Consume {
            ratio: pipe_consume.events_per_sec / raw_consume.events_per_sec,
            raw: raw_consume,
            pipeline: pipe_consume,
            redis_round_trips_per_batch: round_trips / batches.max(1.0),
            events_per_batch: (WARM_UP + n) as f64 / batches.max(1.0),
        },
        latency,
        kafka_perf: KafkaPerf {
            producer: kafka_produce,
            consumer: kafka_consume,
        },
    })
}
