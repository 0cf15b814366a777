//! opal-producer: publish events, measure the producer, run the producer test suite.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use opal_producers::perf::{self, PerfOptions};
use opal_producers::{PublishMetrics, Publisher, PublisherConfig, input, suite};
use opal_schemas::EventType;
use opal_schemas::samples::default_example;
use opal_topics::telemetry::LogArgs;

/// mimalloc instead of glibc's malloc: the event path allocates per event
/// (README, Performance).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "opal-producer",
    version,
    about = "Publish OPAL events and test the publish path"
)]
struct Cli {
    #[command(flatten)]
    publisher: PublisherConfig,

    #[command(flatten)]
    log: LogArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate and publish events read as JSON (one object or JSON lines).
    Publish {
        /// Event type: workflow.started, agent.completed, ... (or its topic name).
        event_type: EventType,
        /// Read from this file instead of standard input.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Print an example event of a type as JSON (a starting point for `publish`).
    Example { event_type: EventType },
    /// Measure throughput and latency, like kafka-producer-perf-test.
    Perf {
        #[arg(long)]
        event_type: EventType,
        #[arg(long)]
        num_records: u64,
        /// Records per second; -1 or absent for as fast as possible.
        #[arg(long, allow_negative_numbers = true)]
        throughput: Option<f64>,
        /// Send pre-encoded bytes of the same size through plain rdkafka instead.
        #[arg(long, conflicts_with = "compare")]
        raw: bool,
        /// Run typed and raw in one run and print the ratio.
        #[arg(long)]
        compare: bool,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// The producer test suite: every event type round-trips; invalid events are refused.
    Test {
        /// How long to wait for each read-back.
        #[arg(long, default_value_t = 15)]
        timeout_secs: u64,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Broker metadata and registry reachability, one line each.
    Health,
    /// Publish realistic traffic: workflows, agents, decisions, preferences, feedback.
    Simulate {
        #[arg(long, default_value_t = 60)]
        workflows: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, value_enum, default_value = "all")]
        phase: opal_producers::simulate::Phase,
        /// Event time of the first workflow (ms since the epoch); defaults to
        /// now minus the scenario's span, so the scenario ends about now.
        #[arg(long)]
        start_ms: Option<i64>,
        /// Event-time gap between workflow starts, in milliseconds.
        #[arg(long, default_value_t = 30_000)]
        spacing_ms: i64,
    },
    /// Print the events of a topic as JSON lines (decoded through the registry).
    Read {
        event_type: EventType,
        /// Stop after this many.
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    cli.log.init();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("opal-producer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn publisher(config: &PublisherConfig) -> anyhow::Result<Publisher> {
    let metrics = PublishMetrics::new(&prometheus::Registry::new())?;
    Ok(Publisher::new(config.clone(), metrics)?)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Example { event_type } => {
            // Without envelope fields: `publish` fills them (fresh event id, now, ...).
            let mut json = default_example(event_type).to_json();
            if let Some(object) = json.as_object_mut() {
                for key in opal_schemas::events::ENVELOPE_FIELDS {
                    object.remove(key);
                }
            }
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        Command::Publish { event_type, file } => {
            let text = match &file {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
                None => {
                    let mut text = String::new();
                    std::io::stdin()
                        .read_to_string(&mut text)
                        .context("cannot read standard input")?;
                    text
                }
            };
            let events = match input::parse_events(event_type, &text) {
                Ok(events) => events,
                Err(e) => {
                    eprintln!("opal-producer: {e}; nothing was published");
                    return Ok(ExitCode::from(2));
                }
            };
            let publisher = publisher(&cli.publisher)?;
            // Everything that can refuse before Kafka (rules, schema lookup) is checked for all first.
            for (i, event) in events.iter().enumerate() {
                if let Err(e) = publisher.check(event.clone()).await {
                    eprintln!(
                        "opal-producer: record {}: {e}; nothing was published",
                        i + 1
                    );
                    return Ok(ExitCode::from(2));
                }
            }
            // Unreachable brokers or refused credentials end here, before
            // anything is queued: a clear error, not a delivery timeout.
            cli.publisher
                .kafka
                .cluster_metadata(Duration::from_secs(30))
                .await
                .context("nothing was published")?;
            let mut failed = false;
            for result in publisher.publish_batch(events).await {
                match result {
                    Ok(d) => println!(
                        "{}/{}@{} event_id={} schema_id={}",
                        d.topic, d.partition, d.offset, d.event_id, d.schema_id
                    ),
                    Err(e) => {
                        failed = true;
                        eprintln!("opal-producer: {e}");
                    }
                }
            }
            publisher.flush(Duration::from_secs(10))?;
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Perf {
            event_type,
            num_records,
            throughput,
            raw,
            compare,
            output,
        } => {
            let options = PerfOptions {
                event_type,
                num_records,
                throughput: throughput.filter(|t| *t > 0.0),
                show_progress: matches!(output, Output::Text),
            };
            let publisher = publisher(&cli.publisher)?;
            let topic = publisher.topic(event_type);
            let mut results = Vec::new();
            if !raw {
                results.push(perf::run_typed(&publisher, &options).await);
            }
            if raw || compare {
                let record = publisher.sample_record(default_example(event_type)).await?;
                let producer = perf::raw_producer(&cli.publisher.kafka.client_config()?)?;
                results.push(perf::run_raw(&producer, &topic, &record, &options).await?);
            }
            let ratio = (results.len() == 2 && results[1].records_per_sec > 0.0)
                .then(|| results[0].records_per_sec / results[1].records_per_sec);
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({ "results": results, "typed_to_raw_ratio": ratio })
                    )?
                ),
                Output::Text => {
                    for r in &results {
                        println!("{}", r.summary());
                    }
                    if let Some(ratio) = ratio {
                        println!("typed/raw throughput ratio: {ratio:.2}");
                    }
                }
            }
            if results.iter().any(|r| r.errors > 0) {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Test {
            timeout_secs,
            output,
        } => {
            let publisher = publisher(&cli.publisher)?;
            let rows = suite::run(
                &publisher,
                &cli.publisher.kafka,
                Duration::from_secs(timeout_secs),
            )
            .await;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                Output::Text => print!("{}", suite::render(&rows)),
            }
            if rows.iter().any(|r| !r.passed) {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Simulate {
            workflows,
            seed,
            phase,
            start_ms,
            spacing_ms,
        } => {
            use opal_producers::simulate::{Scenario, generate};
            let span = workflows as i64 * spacing_ms;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as i64;
            let scenario = Scenario {
                workflows,
                seed,
                start_ms: start_ms.unwrap_or(now - span),
                spacing_ms,
            };
            let events = generate(&scenario, phase);
            let publisher = publisher(&cli.publisher)?;
            let mut counts = std::collections::BTreeMap::new();
            for chunk in events.chunks(1000) {
                for (event, result) in chunk
                    .iter()
                    .zip(publisher.publish_batch(chunk.to_vec()).await)
                {
                    result.with_context(|| format!("publishing {}", event.event_type()))?;
                    *counts.entry(event.event_type().name()).or_insert(0) += 1;
                }
            }
            publisher.flush(Duration::from_secs(10))?;
            let total: usize = counts.values().sum();
            println!("simulated {workflows} workflows (seed {seed}, {phase:?}): {total} events");
            for (name, n) in counts {
                println!("  {name:<26} {n}");
            }
        }
        Command::Read { event_type, max } => {
            let publisher = publisher(&cli.publisher)?;
            let topic = publisher.topic(event_type);
            let mut config = cli.publisher.kafka.client_config()?;
            config
                .set(
                    "group.id",
                    format!("opal-producer-read-{}", uuid::Uuid::new_v4().simple()),
                )
                .set("auto.offset.reset", "earliest")
                .set("enable.auto.commit", "false");
            let consumer: rdkafka::consumer::StreamConsumer = config.create()?;
            rdkafka::consumer::Consumer::subscribe(&consumer, &[&topic])?;
            let mut seen = 0;
            while seen < max {
                let Ok(message) =
                    tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await
                else {
                    break;
                };
                let message = message?;
                let Some(payload) = rdkafka::Message::payload(&message) else {
                    continue;
                };
                match publisher.codec().decode(payload).await {
                    Ok(d) => println!("{}", d.event.to_json()),
                    Err(e) => eprintln!("offset {}: {e}", rdkafka::Message::offset(&message)),
                }
                seen += 1;
            }
        }
        Command::Health => {
            let mut healthy = true;
            match cli
                .publisher
                .kafka
                .fetch_metadata(Duration::from_secs(5))
                .await
            {
                Ok((brokers, topics)) => println!(
                    "kafka: ok at {} ({brokers} broker(s), {} topic(s))",
                    cli.publisher.kafka.brokers,
                    topics.len()
                ),
                Err(e) => {
                    healthy = false;
                    println!("kafka: DOWN: {e}");
                }
            }
            let registry = cli.publisher.registry.client(Duration::from_secs(5))?;
            match registry.subjects().await {
                Ok(subjects) => println!(
                    "registry: ok at {} ({} subject(s))",
                    registry.url(),
                    subjects.len()
                ),
                Err(e) => {
                    healthy = false;
                    println!("registry: DOWN: {e}");
                }
            }
            if !healthy {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
