//! The consumer runtime: Kafka in, decoded events to the handler, effects
//! applied exactly once through Redis, failures retried, dead-lettered or
//! waited out, offsets stored only once every event before them is settled.
//!
//! A poll batch goes through four steps: decode and validate every record;
//! lease every event (one Redis round trip); handle them, partitions
//! concurrently and each partition in order, then publish emitted events and
//! apply state with the done-marks (one more round trip); dead-letter what
//! failed. Only then are the batch's offsets stored, so a stored offset never
//! passes an unsettled event. A batch whose events the handler may handle
//! before their leases (pure handlers: effects out, nothing else) is handled
//! first and leased, applied and marked in one round trip instead
//! ([`unleased`]). Every failure is classified in [`crate::classify`]: a
//! dependency that is down pauses the batch where it stands until it returns
//! (nothing is dead-lettered for it); a transient failure costs the event one
//! retry; the rest dead-letter it. An event waiting for another input (a join)
//! parks its partition: the partition is paused and rewound to that event and
//! resumed a moment later, while the others go on. Under a backlog (a full
//! batch) the next batch is taken before this one starts and is decoded and
//! leased while this one waits for Redis; it is handled only once this one is
//! settled. Under a deeper backlog (that one full too) its lease goes out
//! first, and the batch behind it is taken and decoded while this one's apply
//! is in Redis, so Redis always has the next round trip waiting. Batches that
//! may settle unleased are not leased ahead: once this batch's call went out,
//! the batch ahead and the one behind it are handled and their calls sent
//! behind it, chained so that none applies past an event a call before it
//! left unsettled, and left in flight across batches, so Redis goes from one
//! batch to the next without waiting for this instance ([`unleased`]). The
//! batch ahead is leased ahead as before if this one waits after its first
//! round.
//!
//! One concept per file: [`context`] (librdkafka callbacks), [`member`] (the
//! consumer's librdkafka settings), [`collect`] (taking a batch, revocations
//! meanwhile), [`batch`] (the batch state machine), [`decode`] (its records
//! decoded and validated), [`handle`] (one partition's events through the
//! handler), [`emit`] (emitted events and their derived ids),
//! [`unleased`] (batches settled in one round trip),
//! [`dead_letters`], [`park`] (partitions waiting for another input),
//! [`connect`] (Redis at start-up), [`waits`] (pausing for a dependency),
//! [`release`] (leases given back at shutdown), [`topics`] (start-up checks
//! and partition counts), [`health_checks`] (the dependency probes behind
//! readiness).

mod batch;
mod collect;
mod connect;
mod context;
mod dead_letters;
mod decode;
mod emit;
mod handle;
mod health_checks;
mod member;
mod park;
mod release;
mod topics;
mod unleased;
mod waits;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use opal_producers::{Publisher, PublisherConfig};
use opal_schemas::Codec;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::types::RDKafkaErrorCode;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::classify::{PollFailure, classify_poll};
use crate::config::RuntimeArgs;
use crate::dlq::DlqWriter;
use crate::handler::{Handler, StateReader};
use crate::health::Health;
use crate::idempotency::Idempotency;
use crate::metrics::ConsumerMetrics;
use crate::telemetry::{CommitFailed, KafkaFatal};

use batch::{Abandoned, Item};
use collect::{Collected, RevocationWatch};
use unleased::{Ahead, CallAhead, FirstRound, FirstRoundSignal, SentAhead};

pub use context::RuntimeContext;
pub use emit::derived_event_id;

use connect::connect_redis;
use health_checks::health_checks;
use member::member_config;
use topics::check_topics;

pub struct Runtime<H: Handler> {
    /// The business logic: decoded events in, effects out.
    handler: Arc<H>,
    /// Retries, timeouts, batch size, prefix: every setting of the run.
    args: RuntimeArgs,
    /// The consumer group: offsets, the DLQ name and the idempotency keys are its.
    group: String,
    /// The input topics (prefix included).
    topics: Vec<String>,
    /// The group member; shared with parked partitions' resume timers.
    consumer: Arc<StreamConsumer<RuntimeContext>>,
    /// Decodes through the registry; shared with the health checks' ping.
    codec: Arc<Codec>,
    /// Leases and atomic apply-and-mark in Redis.
    idempotency: Idempotency,
    /// Handlers' reads of their state.
    state: StateReader,
    /// Publishes what handlers emit (ids derived from the input's).
    publisher: Publisher,
    /// Writes dead letters to `<group>.dlq`.
    dlq: DlqWriter,
    metrics: ConsumerMetrics,
    /// What `/health/ready` reports.
    health: Arc<Health>,
    /// The root token: shutdown, or a failed task of the process.
    cancel: CancellationToken,
    /// Partition counts of the input topics, from metadata (see [`Source`]).
    partition_counts: Mutex<HashMap<String, i32>>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// The batch in hand finished, offsets were committed, producers flushed.
    Drained,
    /// Shutdown came and the batch in hand did not finish within the drain
    /// timeout: its offsets were not stored, so its records will be delivered
    /// again (and recognised as duplicates where they were applied).
    DrainTimedOut,
}

impl<H: Handler> Runtime<H> {
    /// Connects to Redis, Kafka and the registry; fails with a clear message if
    /// the configuration is unusable.
    pub async fn new(
        handler: H,
        args: RuntimeArgs,
        default_group: &str,
        cancel: CancellationToken,
    ) -> anyhow::Result<Self> {
        args.validate().map_err(anyhow::Error::msg)?;
        let group = args
            .group
            .clone()
            .unwrap_or_else(|| default_group.to_owned());
        let metrics = ConsumerMetrics::new().context("metrics")?;
        let health = Health::new();
        let registry = args
            .registry
            .client(Duration::from_secs(5))
            .context("schema registry client")?;
        let codec = Arc::new(Codec::new(registry));

        let connection = connect_redis(&args.redis.url).await?;
        let idempotency = Idempotency::new(
            connection.clone(),
            &args.topic_prefix,
            &group,
            Duration::from_secs(args.idempotency_ttl_secs),
            Duration::from_millis(args.lease_ms),
        );

        let kafka = args.kafka.client_config()?;
        let consumer_config = member_config(&kafka, &args, &group);
        let context = RuntimeContext {
            name: handler.name().to_owned(),
            metrics: metrics.clone(),
            health: health.clone(),
            revocations: Default::default(),
            revoked: Default::default(),
        };
        let consumer: StreamConsumer<RuntimeContext> = consumer_config
            .create_with_context(context)
            .context("cannot create the Kafka consumer")?;
        let topics: Vec<String> = handler
            .inputs()
            .iter()
            .map(|t| format!("{}{}", args.topic_prefix, t.topic()))
            .collect();
        let dlq_topic = opal_topics::dlq_topic(&args.topic_prefix, &group);
        let partition_counts = check_topics(&args, &topics, &dlq_topic).await?;

        let publisher_config = PublisherConfig {
            kafka: args.kafka.clone(),
            registry: args.registry.clone(),
            environment: args.environment,
            source_system: format!("opal-{}", handler.name()),
            topic_prefix: args.topic_prefix.clone(),
            auto_register: false,
            delivery_timeout_ms: 30_000,
        };
        let publisher =
            Publisher::with_codec(publisher_config, codec.clone(), metrics.publish.clone())?;
        let dlq = DlqWriter::new(&kafka, dlq_topic, group.clone())?;
        Ok(Runtime {
            handler: Arc::new(handler),
            args,
            group,
            topics,
            consumer: Arc::new(consumer),
            codec,
            idempotency,
            state: StateReader::new(connection),
            publisher,
            dlq,
            metrics,
            health,
            cancel,
            partition_counts: Mutex::new(partition_counts),
        })
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    pub fn metrics(&self) -> ConsumerMetrics {
        self.metrics.clone()
    }

    pub fn state(&self) -> StateReader {
        self.state.clone()
    }

    pub fn handler(&self) -> Arc<H> {
        self.handler.clone()
    }

    /// Classifies an error from polling; logs a transient one.
    fn poll_failed(&self, error: &rdkafka::error::KafkaError) -> PollFailure {
        let failure = classify_poll(self.consumer.client().fatal_error());
        if failure == PollFailure::Transient {
            warn!(error = %error, "kafka error while polling");
        }
        failure
    }

    /// Consumes until cancelled, then finishes the batch in hand (within the
    /// drain timeout), commits and flushes. Ends with an error when the Kafka
    /// client raised a fatal error (see [`PollFailure::Fatal`]).
    pub async fn run(self) -> anyhow::Result<RunEnd> {
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        self.consumer.subscribe(&topics).context("subscribe")?;
        info!(group = %self.group, topics = ?self.topics, "consuming");
        let checker = tokio::spawn(health_checks(
            self.args.clone(),
            self.topics.first().cloned().unwrap_or_default(),
            self.codec.clone(),
            self.state.clone(),
            self.health.clone(),
            self.metrics.clone(),
            self.cancel.clone(),
        ));
        let mut end = RunEnd::Drained;
        let mut fatal = None;
        let batch_wait = Duration::from_micros(self.args.batch_wait_us);
        // A batch taken ahead and prepared while the last one settled.
        let mut ahead: Vec<Item<'_>> = Vec::new();
        // Records taken behind `ahead` while the batch before it settled (a
        // deep backlog), decoded, not leased: they come next, before anything
        // a later poll takes. Only a park, shutdown or a fatal client error
        // drops them.
        let mut behind: Vec<Item<'_>> = Vec::new();
        // The unleased calls of `ahead` and `behind` sent while the batch
        // before them was in Redis (`unleased.rs`), in flight or answered.
        let mut ahead_sent: Option<SentAhead> = None;
        let mut behind_sent: Option<SentAhead> = None;
        // The last batch's first round was an unleased call that settled
        // every event: the call of the batch after it, chained to it, applies.
        let mut chain_intact = false;
        // The client failed for good while `behind` was being taken: the
        // batch ahead (leased, or settling unleased) is processed first.
        let mut fatal_behind = None;
        // The drain timeout runs once from shutdown, across the batch in
        // hand and the one taken ahead.
        let drain_deadline = OnceLock::new();
        loop {
            let stopping = self.cancel.is_cancelled();
            if stopping {
                // Only the batch ahead is finished: what was taken behind it
                // was never stored, and is fetched again by the next owner.
                behind.clear();
                behind_sent = None;
            }
            if let Some(reason) = fatal_behind.take() {
                behind.clear();
                behind_sent = None;
                fatal = Some(reason);
            }
            if stopping && ahead.is_empty() {
                break;
            }
            // Records stay borrowed from the client (no copy) until their batch is done.
            let mut fresh = Vec::new();
            if ahead.is_empty() {
                // Everything taken ahead was parked: what was taken behind it
                // comes first, as if just collected (it was never leased).
                fresh = behind.drain(..).map(Item::into_message).collect();
                behind_sent = None;
            }
            // A batch taken ahead is processed as it was taken (and leased):
            // more records would need a lease round trip of their own. On
            // shutdown it is finished, and nothing more is taken.
            if ahead.is_empty() && fresh.is_empty() && fatal.is_none() {
                let first = tokio::select! {
                    _ = self.cancel.cancelled() => break,
                    message = self.consumer.recv() => message,
                };
                match first {
                    Ok(m) => fresh.push(m),
                    Err(e) => match self.poll_failed(&e) {
                        PollFailure::Transient => continue,
                        PollFailure::Fatal(reason) => {
                            fatal = Some(reason);
                            break;
                        }
                    },
                }
            }
            let mut watch = RevocationWatch::start(self.consumer.context());
            if ahead.is_empty()
                && fatal.is_none()
                && let Collected::Fatal(reason) =
                    self.collect(&mut fresh, None, &mut watch, batch_wait).await
            {
                fatal = Some(reason);
            }
            // A full batch means a backlog: take the next one now (unless it
            // was taken behind the last), and decode and lease it while this
            // one settles.
            let mut next: Vec<Item<'_>> = std::mem::take(&mut behind);
            let mut next_sent = behind_sent.take();
            let mut taken = Vec::new();
            if next.is_empty()
                && !stopping
                && fatal.is_none()
                && ahead.len() + fresh.len() >= self.args.max_batch
                && let Collected::Fatal(reason) = self
                    .collect(&mut taken, Some(&mut fresh), &mut watch, Duration::ZERO)
                    .await
            {
                fatal = Some(reason);
                taken.clear();
            }
            next.extend(taken.into_iter().map(Item::new));
            let (mut batch, batch_sent): (Vec<Item<'_>>, _) = if ahead.is_empty() {
                (fresh.into_iter().map(Item::new).collect(), None)
            } else {
                (std::mem::take(&mut ahead), ahead_sent.take())
            };
            if batch.is_empty() {
                ahead = next;
                ahead_sent = next_sent;
                if fatal.is_some() {
                    break;
                }
                continue;
            }
            self.metrics.batches.inc();
            let started = Instant::now();
            // On shutdown the batch in hand still finishes, within the drain timeout.
            let drain = async {
                self.cancel.cancelled().await;
                let deadline = *drain_deadline
                    .get_or_init(|| tokio::time::Instant::now() + self.args.drain_timeout());
                tokio::time::sleep_until(deadline).await;
            };
            // A deep backlog (the batch ahead full too): the one behind it is
            // taken and decoded while this one waits for Redis, so the next
            // round trips go out at once. Only while this batch is unsettled,
            // i.e. before it parks a partition: what it parks is then dropped
            // from `behind` as from `next`, taken before the rewind.
            let take_behind = !stopping && fatal.is_none() && next.len() >= self.args.max_batch;
            let settled = AtomicBool::new(false);
            let first_round = FirstRoundSignal::new();
            let mut taken_behind: Vec<Item<'_>> = Vec::new();
            let mut sent_behind: Option<SentAhead> = None;
            let process = async {
                let sent = batch_sent.map(|sent| (sent, chain_intact));
                let processed = self
                    .process_batch(&mut batch, started, &first_round, sent)
                    .await;
                settled.store(true, Ordering::Relaxed);
                // Settled without a settle round (nothing decoded), or abandoned.
                first_round.set(FirstRound::Settled);
                processed
            };
            let prepare = async {
                // Decoded now and leased while this batch waits for Redis;
                // a batch that may settle unleased is leased only if this
                // one waits after its first round (see `unleased.rs`).
                self.decode_ahead(&mut next);
                let unleased = self.settles_unleased(next.iter());
                if !unleased {
                    self.lease_ahead(&mut next).await;
                }
                if take_behind && !settled.load(Ordering::Relaxed) && !self.cancel.is_cancelled() {
                    // A revocation during this poll drops only what this poll
                    // took (see `collect`); `next` is leased by now or is
                    // settled unleased, which no other owner's work can pass.
                    let mut watch = RevocationWatch::start(self.consumer.context());
                    let mut messages = Vec::new();
                    let collected = self
                        .collect(&mut messages, None, &mut watch, Duration::ZERO)
                        .await;
                    match collected {
                        Collected::Done => {
                            taken_behind = messages.into_iter().map(Item::new).collect();
                            self.decode_ahead(&mut taken_behind);
                        }
                        Collected::Fatal(reason) => fatal_behind = Some(reason),
                    }
                }
                if unleased {
                    match first_round.ahead().await {
                        Ahead::Lease => self.lease_ahead(&mut next).await,
                        Ahead::SendAfter(chain) => {
                            // The batch ahead's call behind this one's, and
                            // the batch behind's behind that: left in flight.
                            let call_next = match next_sent {
                                Some(_) => None,
                                None => self.call_ahead(&next, chain).await,
                            };
                            let next_chain = next_sent
                                .as_ref()
                                .map(SentAhead::chain)
                                .or(call_next.as_ref().map(CallAhead::chain));
                            let call_behind = match next_chain {
                                Some(after) => self.call_ahead(&taken_behind, after).await,
                                None => None,
                            };
                            let fresh_next = call_next.is_some();
                            let mut sent = self
                                .send_in_order(call_next.into_iter().chain(call_behind).collect())
                                .into_iter();
                            if fresh_next {
                                next_sent = sent.next();
                            }
                            sent_behind = sent.next();
                            // This batch waits after all: the batch ahead's
                            // call applied nothing, and it is leased as before.
                            if first_round.waits().await {
                                self.lease_ahead(&mut next).await;
                            }
                        }
                        Ahead::Wait => {}
                    }
                }
            };
            tokio::select! {
                ((), processed) = futures::future::join(prepare, process) => match processed {
                    Ok(parked) => {
                        // A parked partition was rewound: what was taken ahead
                        // from it comes again after the parked record.
                        // (Their calls sent ahead, chained behind this
                        // batch's, which left events unsettled, applied nothing.)
                        if !parked.is_empty() {
                            let unparked = |item: &Item<'_>| {
                                let m = &item.message;
                                !parked.contains(&(m.topic().to_owned(), m.partition()))
                            };
                            let (n, b) = (next.len(), taken_behind.len());
                            next.retain(unparked);
                            taken_behind.retain(unparked);
                            // (The call behind goes with the one it is chained to.)
                            if next.len() != n {
                                next_sent = None;
                            }
                            if next_sent.is_none() || taken_behind.len() != b {
                                sent_behind = None;
                            }
                        }
                        chain_intact = first_round.chain_intact();
                        ahead = next;
                        ahead_sent = next_sent;
                        behind = taken_behind;
                        behind_sent = sent_behind;
                    }
                    // Abandoned (shutdown came while the batch waited): what
                    // was taken after it is not processed either, or its
                    // offsets would pass the batch's unsettled records.
                    Err(Abandoned) => self.release_leases(&[&batch, &next]).await,
                },
                _ = drain => {
                    warn!("drain timeout: the unfinished batch is left uncommitted and will be redelivered");
                    self.release_leases(&[&batch, &next]).await;
                    end = RunEnd::DrainTimedOut;
                    break;
                }
            }
            if fatal.is_some() {
                break;
            }
        }
        if let Some(reason) = fatal {
            // The client can neither consume nor commit again: stop everything
            // (the checker and the HTTP server share the token) and leave the
            // uncommitted records to the next instance, which finds them done.
            KafkaFatal { error: &reason }.emit();
            self.cancel.cancel();
            if let Err(e) = self.publisher.flush(Duration::from_secs(5)) {
                warn!(error = %e, "emitted events not all acknowledged at exit");
            }
            self.dlq.flush(Duration::from_secs(5));
            let _ = checker.await;
            anyhow::bail!("fatal Kafka consumer error, the consumer must be restarted: {reason}");
        }
        info!("stopping: committing offsets and flushing producers");
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last commit is not a failure.
            if e.rdkafka_error_code() != Some(RDKafkaErrorCode::NoOffset) {
                CommitFailed {
                    during: "shutdown",
                    error: &e,
                }
                .emit(&self.metrics);
            }
        }
        if let Err(e) = self.publisher.flush(Duration::from_secs(5)) {
            warn!(error = %e, "emitted events not all acknowledged at shutdown");
        }
        self.dlq.flush(Duration::from_secs(5));
        // The checker stops on the same token.
        let _ = checker.await;
        info!("offsets committed, producers flushed; closing the consumer");
        Ok(end)
    }
}
