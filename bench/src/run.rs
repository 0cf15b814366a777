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
use crate::offsets;
use crate::pipeline::{self, NoopHandler};
use crate::raw;
use crate::recorder::{Latency, Recorder, Throughput};
use crate::redis_cost;
use crate::rounds::{Consumers, RoundRates, median_of};

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
    /// Rounds of the throughput phases (raw then opal, each round): the
    /// report gives the round with the median ratio, and every round's figures.
    #[arg(long, default_value_t = 3)]
    pub throughput_rounds: u32,
    /// Seconds of traffic per latency phase.
    #[arg(long, default_value_t = 5)]
    pub latency_secs: u64,
    /// Rounds of latency phases (each round runs every rate once): on a
    /// shared machine one phase's tail varies several-fold from run to run,
    /// so the report gives each rate's median round and the range.
    #[arg(long, default_value_t = 3)]
    pub latency_rounds: u32,
    /// Seconds of traffic per rate in a warm-up round before the measured
    /// ones, kept apart in the result (`latency_warmup`) and out of the
    /// tables. The first latency phases after the throughput phases met the
    /// broker's JIT compiler (C2) busy for ~20 s on code the throughput phases
    /// had not run, which raised both sides' tails. 0 skips it.
    #[arg(long, default_value_t = 5)]
    pub latency_warmup_secs: u64,
    /// Empties the Redis at REDIS_URL (FLUSHALL, then a rewrite of its
    /// append-only file) before each throughput round's pipeline half, so
    /// every round meets an empty Redis, as a build run first on a fresh
    /// stack does: without it, later rounds met the keys of the rounds and
    /// builds before them (Redis's CPU per event rose from 5.0 to 8.6 µs over
    /// one run's three rounds). It destroys everything in that Redis:
    /// `scripts/bench.sh` passes it for the benchmark's own Redis.
    #[arg(long)]
    pub empty_redis_each_round: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Produce {
    /// The round with the median ratio.
    pub raw: PerfResult,
    pub opal: PerfResult,
    /// opal events/s ÷ raw events/s in that round.
    pub ratio: f64,
    /// Every round, in the order run.
    pub rounds: Vec<RoundRates>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Consume {
    /// The round with the median ratio.
    pub raw: Throughput,
    pub pipeline: Throughput,
    /// pipeline events/s ÷ raw events/s in that round.
    pub ratio: f64,
    /// Every round, in the order run (`opal` is the pipeline).
    pub rounds: Vec<RoundRates>,
    /// Redis round trips the pipeline made per poll batch, and events per
    /// batch, over all rounds.
    pub redis_round_trips_per_batch: f64,
    pub events_per_batch: f64,
    /// Redis's CPU (µs) per event while the pipeline read, over all rounds:
    /// what bounds the pipeline's events/s (it and Redis share the cores).
    pub redis_cpu_us_per_event: f64,
    /// The same for each round, in order: each starts from an empty Redis
    /// with `--empty-redis-each-round`, else from the keys of the rounds
    /// before.
    pub redis_cpu_us_per_event_rounds: Vec<f64>,
    /// Whether each round started from an empty Redis (`--empty-redis-each-round`).
    pub redis_emptied_each_round: bool,
    /// Redis's CPU (µs) per key for bare pipelined `SET key done EX` on the
    /// same Redis, from an empty keyspace ([`crate::redis_cost::floor`]): the
    /// least any design with a durable key per event costs it.
    pub redis_floor_us_per_key: f64,
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
    /// The warm-up round (`--latency-warmup-secs`), not in the tables.
    pub latency_warmup: Vec<LatencyRow>,
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

/// The pipeline's group in throughput round `round`: each round reads the
/// topic from the start under a group (and idempotency keys) of its own.
fn round_group(prefix: &str, round: u32) -> String {
    match round {
        0 => pipeline_group(prefix),
        _ => format!("{prefix}pipeline-{round}"),
    }
}

/// The topics a run produces to.
pub(crate) struct RunTopics {
    /// Plain rdkafka's.
    pub raw: String,
    /// The publisher's, which the pipeline reads.
    pub opal: String,
    /// Kafka's perf tools'.
    pub perf: String,
}

/// Topics for this run (the catalog under a fresh prefix) plus the raw
/// topic, Kafka's perf tools' topic and the DLQs of the pipeline's groups in
/// `rounds` throughput rounds, sized like the benchmarked topic.
pub(crate) async fn provision(
    options: &RunOptions,
    prefix: &str,
    rounds: u32,
) -> anyhow::Result<RunTopics> {
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
    let dlqs =
        (0..rounds.max(1)).map(|round| opal_topics::dlq_topic(prefix, &round_group(prefix, round)));
    for name in [raw_topic.clone(), perf_topic.clone()]
        .into_iter()
        .chain(dlqs)
    {
        plan.push(TopicSpec {
            name,
            event_type: None,
            ..template.clone()
        });
    }
    target
        .init(&plan, false)
        .await
        .context("kafka-init for the run")?;
    Ok(RunTopics {
        raw: raw_topic,
        opal: template.name,
        perf: perf_topic,
    })
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
    let rounds = options.throughput_rounds.max(1);
    let topics = provision(options, &prefix, rounds).await?;
    let (raw_topic, perf_topic) = (topics.raw.clone(), topics.perf.clone());
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
    // id before anything is measured.
    perf::run_raw(
        &raw_producer,
        &raw_topic,
        &record,
        &perf_options(WARM_UP, None),
    )
    .await?;
    perf::run_typed(&publisher, &perf_options(WARM_UP, None)).await;

    let cancel = CancellationToken::new();
    let limit = Duration::from_secs(180);
    let client_config = options.kafka.client_config()?;
    let mut args = RuntimeArgs::local(
        &options.kafka.brokers,
        &options.registry.url,
        &options.redis.url,
    );
    args.kafka = options.kafka.clone();
    args.registry = options.registry.clone();
    args.topic_prefix = prefix.clone();

    // Interleaved rounds, so a slow spell of the shared machine falls on both
    // sides. Each round produces n records per side with no consumer running,
    // then a fresh raw group and a fresh pipeline group (fresh idempotency
    // keys) read that round's records from where the round began. The last
    // round's consumers stay up for the latency phases.
    let mut produced = Vec::new();
    let mut consumed = Vec::new();
    let (mut batches, mut round_trips) = (0.0, 0.0);
    let mut redis = redis_cost::connect(&options.redis.url).await?;
    let mut redis_cpu = Vec::new();
    let (mut kafka_produce, mut kafka_consume) = (None, None);
    let mut running: Option<Consumers> = None;
    let tools = (options.kafka_tools.clone(), options.kafka.brokers.clone());
    for round in 0..rounds {
        if let Some(consumers) = running.take() {
            consumers.stop().await?;
        }
        let starts = {
            let (config, topics) = (
                client_config.clone(),
                [topics.raw.clone(), topics.opal.clone()],
            );
            tokio::task::spawn_blocking(move || {
                offsets::end_offsets(&config, &[topics[0].as_str(), topics[1].as_str()])
            })
            .await??
        };
        eprintln!(
            "opal-bench [{}]: round {round}: producing {n} raw, then {n} opal",
            options.broker
        );
        let raw = perf::run_raw(&raw_producer, &raw_topic, &record, &perf_options(n, None)).await?;
        let opal = perf::run_typed(&publisher, &perf_options(n, None)).await;
        anyhow::ensure!(
            raw.errors == 0 && opal.errors == 0,
            "produce errors: raw {}, opal {}",
            raw.errors,
            opal.errors
        );
        produced.push((raw, opal));
        if kafka_produce.is_none() {
            eprintln!(
                "opal-bench [{}]: kafka-producer-perf-test, {n} records",
                options.broker
            );
            let (tools, topic) = (tools.clone(), perf_topic.clone());
            kafka_produce = Some(
                tokio::task::spawn_blocking(move || {
                    kafka_perf::produce(&tools.0, &tools.1, &topic, n, record_bytes)
                })
                .await??,
            );
        }

        let raw_group = format!("{prefix}raw-consumer-{round}");
        let pipe_group = round_group(&prefix, round);
        {
            let (config, starts, groups) = (
                client_config.clone(),
                starts.clone(),
                [raw_group.clone(), pipe_group.clone()],
            );
            tokio::task::spawn_blocking(move || {
                groups
                    .iter()
                    .try_for_each(|group| offsets::start_group_at(&config, group, &starts))
            })
            .await??;
        }
        eprintln!(
            "opal-bench [{}]: round {round}: consuming raw, then through the pipeline",
            options.broker
        );
        let raw_recorder = Arc::new(Recorder::default());
        let raw_cancel = cancel.child_token();
        let raw_task = tokio::spawn({
            let (kafka, topic) = (options.kafka.clone(), raw_topic.clone());
            let (recorder, cancel) = (raw_recorder.clone(), raw_cancel.clone());
            async move { raw::consume(&kafka, &raw_group, &topic, recorder, cancel).await }
        });
        raw_recorder
            .wait_for(n, limit)
            .await
            .context("raw consume")?;
        let raw_consume = raw_recorder.throughput();

        if kafka_consume.is_none() {
            eprintln!(
                "opal-bench [{}]: kafka-consumer-perf-test, {n} records",
                options.broker
            );
            let (tools, topic, group) = (
                tools.clone(),
                perf_topic.clone(),
                format!("{prefix}kafka-perf"),
            );
            kafka_consume = Some(
                tokio::task::spawn_blocking(move || {
                    kafka_perf::consume(&tools.0, &tools.1, &topic, &group, n)
                })
                .await??,
            );
        }

        let pipe_recorder = Arc::new(Recorder::default());
        let pipe_cancel = cancel.child_token();
        if options.empty_redis_each_round {
            redis_cost::empty(&mut redis).await?;
        }
        let redis_cpu_before = redis_cost::cpu_seconds(&mut redis).await?;
        let pipeline = pipeline::start(
            args.clone(),
            &pipe_group,
            NoopHandler {
                recorder: pipe_recorder.clone(),
                input: EVENT_TYPE,
            },
            pipe_cancel.clone(),
        )
        .await?;
        pipe_recorder
            .wait_for(n, limit)
            .await
            .context("pipeline consume")?;
        redis_cpu
            .push((redis_cost::cpu_seconds(&mut redis).await? - redis_cpu_before) * 1e6 / n as f64);
        batches += pipeline.metrics.batches.get() as f64;
        round_trips += pipeline.metrics.redis_round_trips.get() as f64;
        consumed.push((raw_consume, pipe_recorder.throughput()));
        running = Some(Consumers {
            raw: (raw_cancel, raw_task),
            raw_recorder,
            pipeline: (pipe_cancel, pipeline.task),
            pipe_recorder,
        });
    }
    let ((raw_produce, opal_produce), produce_rounds) =
        median_of(produced, |(raw, opal)| RoundRates {
            raw: raw.records_per_sec,
            opal: opal.records_per_sec,
        });
    let ((raw_consume, pipe_consume), consume_rounds) =
        median_of(consumed, |(raw, pipeline)| RoundRates {
            raw: raw.events_per_sec,
            opal: pipeline.events_per_sec,
        });
    let consumers = running.context("at least one round")?;
    let (raw_recorder, pipe_recorder) = (
        consumers.raw_recorder.clone(),
        consumers.pipe_recorder.clone(),
    );

    // One phase: `secs` of traffic at `rate` through each side in turn.
    let phase = async |round: u32, rate: u64, secs: u64| -> anyhow::Result<LatencyRow> {
        let records = rate * secs;
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
        Ok(LatencyRow {
            rate,
            round,
            raw_produced_per_sec: raw_sent.records_per_sec,
            opal_produced_per_sec: opal_sent.records_per_sec,
            raw_ack_p95_ms: raw_sent.p95_ms,
            opal_ack_p95_ms: opal_sent.p95_ms,
            raw: raw_recorder.latency(),
            pipeline: pipe_recorder.latency(),
        })
    };
    let mut latency_warmup = Vec::new();
    if options.latency_warmup_secs > 0 {
        for rate in &options.rates {
            eprintln!(
                "opal-bench [{}]: latency warm-up at {rate}/s ({} s, not measured)",
                options.broker, options.latency_warmup_secs
            );
            latency_warmup.push(phase(0, *rate, options.latency_warmup_secs).await?);
        }
    }
    let mut latency = Vec::new();
    let latency_rounds = (0..options.latency_rounds.max(1))
        .flat_map(|round| options.rates.iter().map(move |rate| (round, *rate)));
    for (round, rate) in latency_rounds {
        eprintln!(
            "opal-bench [{}]: latency round {round} at {rate}/s ({} events each)",
            options.broker,
            rate * options.latency_secs
        );
        latency.push(phase(round, rate, options.latency_secs).await?);
    }

    consumers.stop().await?;
    // Last, so that its writes (and its append-only file) are not in the way
    // of the phases above.
    eprintln!(
        "opal-bench [{}]: Redis's floor, {n} bare SETs",
        options.broker
    );
    let redis_floor = redis_cost::floor(&options.redis.url, &format!("{prefix}floor"), n).await?;
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
            rounds: produce_rounds,
        },
        consume: Consume {
            ratio: pipe_consume.events_per_sec / raw_consume.events_per_sec,
            raw: raw_consume,
            pipeline: pipe_consume,
            rounds: consume_rounds,
            redis_round_trips_per_batch: round_trips / f64::max(batches, 1.0),
            events_per_batch: f64::from(rounds) * n as f64 / f64::max(batches, 1.0),
            redis_cpu_us_per_event: redis_cpu.iter().sum::<f64>() / redis_cpu.len().max(1) as f64,
            redis_cpu_us_per_event_rounds: redis_cpu,
            redis_emptied_each_round: options.empty_redis_each_round,
            redis_floor_us_per_key: redis_floor,
        },
        latency,
        latency_warmup,
        kafka_perf: KafkaPerf {
            producer: kafka_produce.context("kafka-producer-perf-test ran")?,
            consumer: kafka_consume.context("kafka-consumer-perf-test ran")?,
        },
    })
}
