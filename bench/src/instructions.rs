//! Instructions per event: one phase of the benchmark (raw or opal, publish
//! or consume) on a fixed number of events, run under `valgrind
//! --tool=callgrind` by `scripts/bench-instructions.sh`. Wall-clock figures
//! swing several-fold on a shared 2-core machine; instruction counts do not.
//!
//! The script runs each phase at two event counts and divides the difference
//! in instructions by the difference in events, so start-up (connecting,
//! metadata, the group join, registry lookups) cancels out. The consume
//! phases read a topic `prepare` filled natively beforehand, holding exactly
//! the phase's events: librdkafka prefetches whole fetches, so a topic with
//! more would be read past the count.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use opal_consumers::RuntimeArgs;
use opal_producers::perf::{self, PerfOptions};
use opal_producers::{PublishMetrics, Publisher, PublisherConfig, WireRecord};
use opal_schemas::Environment;
use opal_schemas::samples::default_example;
use tokio_util::sync::CancellationToken;

use crate::pipeline::{self, NoopHandler};
use crate::raw;
use crate::recorder::Recorder;
use crate::run::{EVENT_TYPE, RunOptions, pipeline_group, provision};

/// What one instrumented process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    /// Creates the topics under the prefix and fills the raw and the opal
    /// topic with the events (run natively, outside valgrind).
    Prepare,
    /// Plain rdkafka sends the pre-encoded record with the publisher's four headers.
    RawPublish,
    /// The same without headers (the baseline before #16's report).
    RawPublishBare,
    /// Plain rdkafka sends the record with the four headers through one
    /// delivery callback (a `ThreadedProducer`) instead of a future per record.
    RawPublishCallback,
    /// The typed publisher sends the events.
    Publish,
    /// Plain rdkafka reads the raw topic (`prepare` first).
    RawConsume,
    /// The runtime with a no-op handler reads the opal topic (`prepare` first).
    Pipeline,
}

/// Consume phases run 50-100x slower under callgrind than natively.
const CONSUME_LIMIT: Duration = Duration::from_secs(1800);

fn options(records: u64) -> PerfOptions {
    PerfOptions {
        event_type: EVENT_TYPE,
        num_records: records,
        throughput: None,
        show_progress: false,
    }
}

fn publisher(stack: &RunOptions, prefix: &str) -> anyhow::Result<Publisher> {
    Ok(Publisher::new(
        PublisherConfig {
            kafka: stack.kafka.clone(),
            registry: stack.registry.clone(),
            environment: Environment::Development,
            source_system: "opal-bench".to_owned(),
            topic_prefix: prefix.to_owned(),
            auto_register: false,
            delivery_timeout_ms: 600_000,
        },
        PublishMetrics::new(&prometheus::Registry::new())?,
    )?)
}

/// The record the raw producer sends: what the publisher would, same payload and headers.
async fn raw_record(publisher: &Publisher) -> anyhow::Result<WireRecord> {
    Ok(publisher.sample_record(default_example(EVENT_TYPE)).await?)
}

/// Runs `phase` on `events` events under `prefix` (topics named as `opal-bench run` names them).
pub async fn run(
    stack: &RunOptions,
    phase: Phase,
    prefix: &str,
    events: u64,
) -> anyhow::Result<()> {
    let raw_topic = format!("{prefix}raw.{}", EVENT_TYPE.topic());
    match phase {
        Phase::Prepare => {
            provision(stack, prefix, 1).await?;
            if events == 0 {
                return Ok(());
            }
            let publisher = publisher(stack, prefix)?;
            let record = raw_record(&publisher).await?;
            let producer = perf::raw_producer(&stack.kafka.client_config()?)?;
            let raw = perf::run_raw(&producer, &raw_topic, &record, &options(events)).await?;
            let opal = perf::run_typed(&publisher, &options(events)).await;
            anyhow::ensure!(
                raw.errors == 0 && opal.errors == 0,
                "prepare: produce errors: raw {}, opal {}",
                raw.errors,
                opal.errors
            );
        }
        Phase::RawPublish | Phase::RawPublishBare => {
            let publisher = publisher(stack, prefix)?;
            let mut record = raw_record(&publisher).await?;
            if phase == Phase::RawPublishBare {
                record = record.bare();
            }
            let producer = perf::raw_producer(&stack.kafka.client_config()?)?;
            let sent = perf::run_raw(&producer, &raw_topic, &record, &options(events)).await?;
            anyhow::ensure!(sent.errors == 0, "raw publish: {} errors", sent.errors);
        }
        Phase::RawPublishCallback => {
            let publisher = publisher(stack, prefix)?;
            let record = raw_record(&publisher).await?;
            let failed = raw::publish_with_one_callback(&stack.kafka, &raw_topic, &record, events)?;
            anyhow::ensure!(failed == 0, "raw publish (one callback): {failed} errors");
        }
        Phase::Publish => {
            let publisher = publisher(stack, prefix)?;
            // The type's registry lookup first, as the raw phases make theirs
            // building their record: a run pushes all its publishes before the
            // lookup answers, so each would wait on it (two polls and a
            // semaphore each: ~1 400 instructions per event on the sending
            // thread, measured, that the difference of two runs does not cancel).
            publisher.check(default_example(EVENT_TYPE)).await?;
            let sent = perf::run_typed(&publisher, &options(events)).await;
            anyhow::ensure!(sent.errors == 0, "publish: {} errors", sent.errors);
        }
        Phase::RawConsume => {
            let recorder = Arc::new(Recorder::default());
            let cancel = CancellationToken::new();
            let task = tokio::spawn({
                let (kafka, group) = (stack.kafka.clone(), format!("{prefix}raw-consumer"));
                let (recorder, cancel) = (recorder.clone(), cancel.clone());
                async move { raw::consume(&kafka, &group, &raw_topic, recorder, cancel).await }
            });
            recorder
                .wait_for(events, CONSUME_LIMIT)
                .await
                .context("raw consume")?;
            cancel.cancel();
            task.await??;
        }
        Phase::Pipeline => {
            let recorder = Arc::new(Recorder::default());
            let cancel = CancellationToken::new();
            let mut args =
                RuntimeArgs::local(&stack.kafka.brokers, &stack.registry.url, &stack.redis.url);
            args.kafka = stack.kafka.clone();
            args.registry = stack.registry.clone();
            args.topic_prefix = prefix.to_owned();
            let handler = NoopHandler {
                recorder: recorder.clone(),
                input: EVENT_TYPE,
            };
            let pipeline =
                pipeline::start(args, &pipeline_group(prefix), handler, cancel.clone()).await?;
            recorder
                .wait_for(events, CONSUME_LIMIT)
                .await
                .context("pipeline consume")?;
            cancel.cancel();
            pipeline.task.await??;
        }
    }
    Ok(())
}
