//! The consumer runtime: Kafka in, decoded events to the handler, effects
//! applied exactly once through Redis, failures retried, dead-lettered or
//! waited out, offsets stored only once every event before them is settled.
//!
//! A poll batch goes through four steps: decode and validate every record;
//! lease every event (one Redis round trip); handle them, partitions
//! concurrently and each partition in order, then publish emitted events and
//! apply state with the done-marks (one more round trip); dead-letter what
//! failed. Only then are the batch's offsets stored, so a stored offset never
//! passes an unsettled event. A dependency that is down pauses the batch where
//! it stands until it returns; nothing is dead-lettered for it. An event waiting
//! for another input (a join) parks its partition: the partition is paused and
//! rewound to that event and resumed a moment later, while the others go on.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::join_all;
use opal_producers::{Publisher, PublisherConfig};
use opal_schemas::{Codec, Event, EventType, validate};
use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::statistics::Statistics;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::classify::{FailureClass, ProcessingError, classify};
use crate::config::RuntimeArgs;
use crate::dlq::{DeadLetter, DlqWriter};
use crate::handler::{Effects, Handler, HandlerError, Source, StateReader};
use crate::health::Health;
use crate::idempotency::{Applied, Idempotency, Lease};
use crate::metrics::ConsumerMetrics;

/// How long a parked partition waits before its waiting event is tried again.
const PARK_FOR: Duration = Duration::from_secs(1);

/// How many times an event whose guarded state changed under it is handled
/// again at once before its partition waits for the batch's next round.
const CONFLICT_RETRIES: u32 = 5;

/// Namespace of emitted events' derived ids.
const EMIT_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6f70_616c_2d65_6d69_742d_6e73_0000_0001);

/// The event id of the `nth` event of type `event_type` with key `key` emitted
/// while `group` processed `input_id`: the same input always yields the same
/// ids, so downstream dedupes re-emits. Counting per type and key (not over all
/// emits) keeps an id on the same content when a handler, run again on fresher
/// state (a guard conflict), emits more events than before.
pub fn derived_event_id(
    group: &str,
    input_id: &str,
    event_type: EventType,
    key: &str,
    nth: usize,
) -> String {
    uuid::Uuid::new_v5(
        &EMIT_NAMESPACE,
        format!("{group}/{input_id}/{event_type}/{key}/{nth}").as_bytes(),
    )
    .to_string()
}

/// Librdkafka callbacks: lag from statistics, commits on revocation.
pub struct RuntimeContext {
    name: String,
    metrics: ConsumerMetrics,
    health: Arc<Health>,
}

impl ClientContext for RuntimeContext {
    fn stats(&self, statistics: Statistics) {
        let mut total = 0;
        for (topic, t) in &statistics.topics {
            for (id, p) in &t.partitions {
                if *id < 0 || p.consumer_lag < 0 {
                    continue;
                }
                total += p.consumer_lag;
                self.metrics
                    .lag
                    .with_label_values(&[&self.name, topic, &id.to_string()])
                    .set(p.consumer_lag);
            }
        }
        self.health.lag.store(total, Ordering::Relaxed);
    }
}

impl ConsumerContext for RuntimeContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // Batches finish before the next poll, so nothing is in flight here:
        // commit what is stored before the partitions go.
        if let Rebalance::Revoke(partitions) = rebalance {
            info!(
                count = partitions.count(),
                "partitions revoked; committing stored offsets"
            );
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                debug!(error = %e, "commit on revoke");
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            info!(count = partitions.count(), "partitions assigned");
        }
    }
}

/// What became of one record of a batch.
enum Outcome {
    Processed,
    Duplicate,
    Dead(DeadLetter),
    /// Waiting for another input: not settled, its offset not stored, redelivered.
    Parked,
}

struct Item {
    message: OwnedMessage,
    event: Option<Event>,
    outcome: Option<Outcome>,
    retries: u32,
}

/// What handling one event gave.
enum Handled {
    Effects(Effects),
    Dead(FailureClass, String, u32),
    Down(ProcessingError),
    Parked(ProcessingError),
    Committed(Applied),
}

/// The batch could not finish: shutdown came while a dependency was down.
struct Abandoned;

pub struct Runtime<H: Handler> {
    handler: Arc<H>,
    args: RuntimeArgs,
    group: String,
    topics: Vec<String>,
    consumer: Arc<StreamConsumer<RuntimeContext>>,
    codec: Arc<Codec>,
    idempotency: Idempotency,
    state: StateReader,
    publisher: Publisher,
    dlq: DlqWriter,
    metrics: ConsumerMetrics,
    health: Arc<Health>,
    cancel: CancellationToken,
    /// Partition counts of the input topics, from metadata (see [`Source`]).
    partition_counts: Mutex<HashMap<String, i32>>,
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

        let redis =
            redis::Client::open(args.redis_url.as_str()).context("REDIS_URL is not a Redis URL")?;
        let redis_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let connection = redis
            .get_connection_manager_with_config(redis_config)
            .await
            .context("cannot connect to Redis at REDIS_URL")?;
        let idempotency = Idempotency::new(
            connection.clone(),
            &group,
            Duration::from_secs(args.idempotency_ttl_secs),
            Duration::from_millis(args.lease_ms),
        );

        let kafka = args.kafka.client_config()?;
        let mut consumer_config: ClientConfig = kafka.clone();
        consumer_config
            .set("group.id", &group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", args.session_timeout_ms.to_string())
            .set("statistics.interval.ms", "5000");
        if let Some(instance) = &args.group_instance_id {
            consumer_config.set("group.instance.id", instance);
        }
        let context = RuntimeContext {
            name: handler.name().to_owned(),
            metrics: metrics.clone(),
            health: health.clone(),
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

    /// Consumes until cancelled, then finishes the batch in hand, commits and flushes.
    pub async fn run(self) -> anyhow::Result<()> {
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
        while !self.cancel.is_cancelled() {
            let first = tokio::select! {
                _ = self.cancel.cancelled() => break,
                message = self.consumer.recv() => message,
            };
            let first = match first {
                Ok(m) => m.detach(),
                Err(e) => {
                    warn!(error = %e, "kafka error while polling");
                    continue;
                }
            };
            let mut batch = vec![first];
            while batch.len() < self.args.max_batch {
                match tokio::time::timeout(Duration::from_millis(2), self.consumer.recv()).await {
                    Ok(Ok(m)) => batch.push(m.detach()),
                    Ok(Err(e)) => warn!(error = %e, "kafka error while polling"),
                    Err(_) => break,
                }
            }
            self.metrics.batches.inc();
            let started = Instant::now();
            // On shutdown the batch in hand still finishes, within the drain timeout.
            let drain = async {
                self.cancel.cancelled().await;
                tokio::time::sleep(self.args.drain_timeout()).await;
            };
            tokio::select! {
                _ = self.process_batch(batch, started) => {}
                _ = drain => warn!("drain timeout: the unfinished batch is left uncommitted and will be redelivered"),
            }
        }
        info!("stopping: committing offsets and flushing producers");
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            debug!(error = %e, "final commit");
        }
        let _ = self.publisher.flush(Duration::from_secs(5));
        self.dlq.flush(Duration::from_secs(5));
        checker.abort();
        info!("offsets committed, producers flushed; closing the consumer");
        Ok(())
    }

    async fn process_batch(&self, messages: Vec<OwnedMessage>, started: Instant) {
        let mut items: Vec<Item> = messages
            .into_iter()
            .map(|message| Item {
                message,
                event: None,
                outcome: None,
                retries: 0,
            })
            .collect();
        if self.decode(&mut items).await.is_err() || self.settle(&mut items).await.is_err() {
            return;
        }
        if self.dead_letter(&items).await.is_err() {
            return;
        }
        let mut last: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for item in &items {
            let m = &item.message;
            let outcome = match &item.outcome {
                Some(Outcome::Processed) => "processed",
                Some(Outcome::Duplicate) => "duplicate",
                Some(Outcome::Dead(_)) => "dead_lettered",
                Some(Outcome::Parked) | None => continue,
            };
            let labels = [self.handler.name(), m.topic(), outcome];
            self.metrics.consumed.with_label_values(&labels).inc();
            if item.retries > 0 {
                self.metrics
                    .consumed
                    .with_label_values(&[self.handler.name(), m.topic(), "retried"])
                    .inc_by(item.retries.into());
            }
            self.metrics
                .processing
                .with_label_values(&[self.handler.name(), m.topic()])
                .observe(started.elapsed().as_secs_f64());
            let entry = last
                .entry((m.topic().to_owned(), m.partition()))
                .or_insert(m.offset());
            *entry = (*entry).max(m.offset());
        }
        for ((topic, partition), offset) in last {
            if let Err(e) = self.consumer.store_offset(&topic, partition, offset) {
                debug!(topic, partition, offset, error = %e, "offset not stored (partition revoked?)");
            }
        }
        self.park(&items);
        self.health.event_processed();
        self.metrics
            .last_event_unixtime
            .set(crate::dlq::now_millis() as f64 / 1000.0);
    }

    /// Pauses each partition holding a parked event, rewinds it to that event
    /// and resumes it after `PARK_FOR`, so the event comes again while the
    /// other partitions (the input it waits for) keep flowing.
    fn park(&self, items: &[Item]) {
        let mut first: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for item in items {
            if matches!(item.outcome, Some(Outcome::Parked)) {
                let m = &item.message;
                let entry = first
                    .entry((m.topic().to_owned(), m.partition()))
                    .or_insert(m.offset());
                *entry = (*entry).min(m.offset());
            }
        }
        for ((topic, partition), offset) in first {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&topic, partition);
            if let Err(e) = self.consumer.pause(&tpl) {
                debug!(topic, partition, error = %e, "pause failed (partition revoked?)");
                continue;
            }
            if let Err(e) = self.consumer.seek(
                &topic,
                partition,
                rdkafka::Offset::Offset(offset),
                Duration::from_secs(5),
            ) {
                warn!(topic, partition, offset, error = %e, "could not rewind a parked partition");
            }
            let consumer = self.consumer.clone();
            tokio::spawn(async move {
                tokio::time::sleep(PARK_FOR).await;
                if let Err(e) = consumer.resume(&tpl) {
                    debug!(error = %e, "resume failed (partition revoked?)");
                }
            });
        }
    }

    /// Step 1: decode and validate every record; undecodable and invalid ones are settled as dead.
    async fn decode(&self, items: &mut [Item]) -> Result<(), Abandoned> {
        let mut attempt = 0;
        loop {
            let open: Vec<usize> = (0..items.len())
                .filter(|i| items[*i].event.is_none() && items[*i].outcome.is_none())
                .collect();
            if open.is_empty() {
                return Ok(());
            }
            let decoded = join_all(open.iter().map(|i| {
                let payload = items[*i].message.payload().unwrap_or_default().to_vec();
                let codec = self.codec.clone();
                async move { codec.decode(&payload).await }
            }))
            .await;
            let mut down = None;
            for (i, result) in open.into_iter().zip(decoded) {
                match result.map_err(ProcessingError::from) {
                    Ok(d) => match validate(&d.event) {
                        Ok(()) => items[i].event = Some(d.event),
                        Err(e) => {
                            items[i].outcome =
                                Some(self.dead(&items[i], FailureClass::Invalid, e.to_string(), 1))
                        }
                    },
                    Err(e) => match classify(&e) {
                        FailureClass::DependencyDown => down = Some(e),
                        class => {
                            items[i].outcome = Some(self.dead(&items[i], class, e.to_string(), 1))
                        }
                    },
                }
            }
            match down {
                None => {
                    self.dependency_back("registry");
                    return Ok(());
                }
                Some(e) => {
                    attempt += 1;
                    self.wait_for("registry", &e, attempt).await?;
                }
            }
        }
    }

    /// Steps 2 and 3: lease, handle, emit and apply, until every decoded event is settled.
    async fn settle(&self, items: &mut [Item]) -> Result<(), Abandoned> {
        let mut attempt = 0;
        loop {
            let pending: Vec<usize> = (0..items.len())
                .filter(|i| items[*i].event.is_some() && items[*i].outcome.is_none())
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            let ids: Vec<&str> = pending
                .iter()
                .filter_map(|i| {
                    items[*i]
                        .event
                        .as_ref()
                        .map(|e| e.envelope().event_id.as_str())
                })
                .collect();
            self.metrics.redis_round_trips.inc();
            let leases = match self.idempotency.lease(&ids).await {
                Ok(leases) => {
                    self.dependency_back("redis");
                    leases
                }
                Err(e) => {
                    attempt += 1;
                    self.wait_for("redis", &ProcessingError::Redis(e), attempt)
                        .await?;
                    continue;
                }
            };
            let mut by_partition: BTreeMap<(String, i32), Vec<usize>> = BTreeMap::new();
            let mut waiting = false;
            // An event held elsewhere (a crashed or revoked instance's lease) holds
            // back the rest of its partition: handling the events after it first
            // would apply them out of order.
            let mut held: Vec<(String, i32)> = Vec::new();
            for (i, lease) in pending.into_iter().zip(leases) {
                let m = &items[i].message;
                let partition = (m.topic().to_owned(), m.partition());
                match lease {
                    Lease::Done => items[i].outcome = Some(Outcome::Duplicate),
                    Lease::HeldElsewhere => {
                        waiting = true;
                        held.push(partition);
                    }
                    Lease::Acquired if held.contains(&partition) => {}
                    Lease::Acquired => by_partition.entry(partition).or_default().push(i),
                }
            }
            let handled = join_all(by_partition.into_values().map(|indices| {
                let events: Vec<(usize, Event, OwnedMessage)> = indices
                    .into_iter()
                    .filter_map(|i| {
                        items[i]
                            .event
                            .clone()
                            .map(|e| (i, e, items[i].message.clone()))
                    })
                    .collect();
                self.handle_partition(events)
            }))
            .await;

            let mut to_commit: Vec<(usize, Event, Effects)> = Vec::new();
            let mut down = None;
            let mut parked = Vec::new();
            for (i, event, result, retries) in handled.into_iter().flatten() {
                items[i].retries += retries;
                match result {
                    Handled::Effects(effects) => to_commit.push((i, event, effects)),
                    Handled::Committed(applied) => {
                        self.record_applied(&mut items[i], applied, &mut waiting)
                    }
                    Handled::Dead(class, error, attempts) => {
                        items[i].outcome = Some(self.dead(&items[i], class, error, attempts))
                    }
                    Handled::Down(e) => down = Some(e),
                    Handled::Parked(e) => {
                        debug!(error = %e, "waiting for another input; parking the partition");
                        parked.push(i);
                    }
                }
            }
            // A parked event and everything after it in its partition stay unsettled.
            for i in parked {
                let (topic, partition, offset) = {
                    let m = &items[i].message;
                    (m.topic().to_owned(), m.partition(), m.offset())
                };
                for item in items.iter_mut() {
                    let m = &item.message;
                    if item.outcome.is_none()
                        && m.topic() == topic
                        && m.partition() == partition
                        && m.offset() >= offset
                    {
                        item.outcome = Some(Outcome::Parked);
                    }
                }
            }
            if !to_commit.is_empty() {
                let refs: Vec<(&Event, &Effects)> =
                    to_commit.iter().map(|(_, e, f)| (e, f)).collect();
                match self.commit_effects(&refs).await {
                    Ok(applied) => {
                        for ((i, _, _), applied) in to_commit.iter().zip(applied) {
                            self.record_applied(&mut items[*i], applied, &mut waiting);
                        }
                    }
                    Err(e) => down = Some(e),
                }
            }
            if let Some(e) = down {
                attempt += 1;
                let dependency = dependency_of(&e);
                self.wait_for(dependency, &e, attempt).await?;
            } else if waiting {
                // Another instance holds a lease (a rebalance race): wait for it to finish or expire.
                attempt += 1;
                self.pause_for(self.args.backoff(attempt.min(4))).await?;
            }
        }
    }

    fn record_applied(&self, item: &mut Item, applied: Applied, waiting: &mut bool) {
        match applied {
            Applied::Applied => item.outcome = Some(Outcome::Processed),
            Applied::AlreadyDone => item.outcome = Some(Outcome::Duplicate),
            Applied::LeaseLost => *waiting = true,
            Applied::Conflict => {
                self.metrics.state_conflicts.inc();
                *waiting = true;
            }
        }
    }

    /// Handles one partition's events in order. Stops at the first dependency
    /// failure: later events stay pending so order holds.
    async fn handle_partition(
        &self,
        events: Vec<(usize, Event, OwnedMessage)>,
    ) -> Vec<(usize, Event, Handled, u32)> {
        let mut out = Vec::with_capacity(events.len());
        let Some((_, _, first)) = events.first() else {
            return out;
        };
        let partitions = self.partition_count(first.topic(), first.partition()).await;
        for (i, event, message) in events {
            let source = Source {
                topic: message.topic().to_owned(),
                partition: message.partition(),
                offset: message.offset(),
                partitions,
            };
            let span = info_span!(
                "event",
                event_id = %event.envelope().event_id,
                correlation_id = %event.envelope().correlation_id,
                topic = message.topic(),
                partition = message.partition(),
                offset = message.offset(),
            );
            let mut conflicts = 0;
            let (handled, retries) = loop {
                let (mut handled, retries) = self
                    .handle_with_retries(&event, &source)
                    .instrument(span.clone())
                    .await;
                if let (true, Handled::Effects(effects)) =
                    (self.handler.reads_own_state(), &handled)
                {
                    handled = match self.commit_effects(&[(&event, effects)]).await {
                        Ok(applied) => Handled::Committed(
                            applied.first().copied().unwrap_or(Applied::LeaseLost),
                        ),
                        Err(e) => Handled::Down(e),
                    };
                }
                // Another partition changed the state this event read: read it again.
                if matches!(handled, Handled::Committed(Applied::Conflict))
                    && conflicts < CONFLICT_RETRIES
                {
                    conflicts += 1;
                    self.metrics.state_conflicts.inc();
                    debug!(parent: &span, conflicts, "guarded state changed; handling again");
                    continue;
                }
                break (handled, retries);
            };
            let stop = matches!(
                handled,
                Handled::Down(_)
                    | Handled::Parked(_)
                    | Handled::Committed(Applied::Conflict | Applied::LeaseLost)
            );
            out.push((i, event, handled, retries));
            if stop {
                break;
            }
        }
        out
    }

    /// The partition count of `topic` from metadata, fetched once and again
    /// when a partition beyond it shows up; 0 while the broker cannot say.
    async fn partition_count(&self, topic: &str, partition: i32) -> i32 {
        let known = self
            .partition_counts
            .lock()
            .ok()
            .and_then(|c| c.get(topic).copied());
        if let Some(count) = known.filter(|c| partition < *c) {
            return count;
        }
        let consumer = self.consumer.clone();
        let name = topic.to_owned();
        let fetched = tokio::task::spawn_blocking(move || {
            consumer
                .fetch_metadata(Some(&name), Duration::from_secs(5))
                .ok()
                .and_then(|m| m.topics().first().map(|t| t.partitions().len() as i32))
        })
        .await
        .ok()
        .flatten()
        .filter(|count| *count > 0);
        match fetched {
            Some(count) => {
                if let Ok(mut counts) = self.partition_counts.lock() {
                    counts.insert(topic.to_owned(), count);
                }
                count
            }
            None => {
                warn!(topic, "partition count unknown: topic metadata unavailable");
                0
            }
        }
    }

    /// Calls the handler, retrying transient failures with backoff and jitter.
    async fn handle_with_retries(&self, event: &Event, source: &Source) -> (Handled, u32) {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match self.handler.handle(event, source, &self.state).await {
                Ok(effects) => match self.check_emits(event, &effects) {
                    Ok(()) => return (Handled::Effects(effects), attempt - 1),
                    Err(reason) => ProcessingError::Handler(HandlerError::Invalid(reason)),
                },
                Err(e) => ProcessingError::Handler(e),
            };
            match classify(&error) {
                FailureClass::Transient if attempt < self.args.retry_attempts => {
                    warn!(attempt, error = %error, "transient failure; retrying");
                    tokio::time::sleep(self.args.backoff(attempt)).await;
                }
                FailureClass::DependencyDown => return (Handled::Down(error), attempt - 1),
                FailureClass::NotYet => return (Handled::Parked(error), attempt - 1),
                class => {
                    return (
                        Handled::Dead(class, error.to_string(), attempt),
                        attempt - 1,
                    );
                }
            }
        }
    }

    /// Emitted events must be valid before anything is applied.
    fn check_emits(&self, input: &Event, effects: &Effects) -> Result<(), String> {
        for emitted in self.prepare_emits(input, effects) {
            validate(&emitted)
                .map_err(|e| format!("emitted {} is invalid: {e}", emitted.event_type()))?;
        }
        Ok(())
    }

    fn prepare_emits(&self, input: &Event, effects: &Effects) -> Vec<Event> {
        let mut seen: HashMap<(EventType, String), usize> = HashMap::new();
        effects
            .emits
            .iter()
            .map(|event| {
                let mut event = event.clone();
                let nth = seen
                    .entry((event.event_type(), event.key().to_owned()))
                    .or_insert(0);
                let id = derived_event_id(
                    &self.group,
                    &input.envelope().event_id,
                    event.event_type(),
                    event.key(),
                    *nth,
                );
                *nth += 1;
                let envelope = event.envelope_mut();
                envelope.event_id = id;
                envelope.correlation_id = input.envelope().correlation_id.clone();
                self.publisher.fill_envelope(&mut event);
                event
            })
            .collect()
    }

    /// Publishes emitted events (deterministic ids), then applies state and
    /// done-marks in one Redis round trip.
    async fn commit_effects(
        &self,
        items: &[(&Event, &Effects)],
    ) -> Result<Vec<Applied>, ProcessingError> {
        let emits: Vec<Event> = items
            .iter()
            .flat_map(|(input, effects)| self.prepare_emits(input, effects))
            .collect();
        if !emits.is_empty() {
            for result in self.publisher.publish_batch(emits).await {
                result.map_err(|e| ProcessingError::Kafka(format!("emit: {e}")))?;
            }
        }
        let applies: Vec<(&str, &Effects)> = items
            .iter()
            .map(|(e, f)| (e.envelope().event_id.as_str(), *f))
            .collect();
        self.metrics.redis_round_trips.inc();
        Ok(self.idempotency.apply(&applies).await?)
    }

    fn dead(&self, item: &Item, class: FailureClass, error: String, attempts: u32) -> Outcome {
        warn!(
            topic = item.message.topic(),
            partition = item.message.partition(),
            offset = item.message.offset(),
            class = class.dlq_name(),
            error = %error,
            "dead-lettering"
        );
        Outcome::Dead(DeadLetter {
            message: item.message.clone(),
            class,
            error,
            attempts,
        })
    }

    /// Step 4: the batch's dead letters, confirmed by the broker before offsets move.
    async fn dead_letter(&self, items: &[Item]) -> Result<(), Abandoned> {
        let mut attempt = 0;
        let mut sent = vec![false; items.len()];
        loop {
            let open: Vec<usize> = (0..items.len())
                .filter(|i| !sent[*i] && matches!(items[*i].outcome, Some(Outcome::Dead(_))))
                .collect();
            if open.is_empty() {
                return Ok(());
            }
            let results = join_all(open.iter().map(|i| async move {
                match &items[*i].outcome {
                    Some(Outcome::Dead(dead)) => self.dlq.send(dead).await,
                    _ => Ok(()),
                }
            }))
            .await;
            let mut failure = None;
            for (i, result) in open.into_iter().zip(results) {
                match result {
                    Ok(()) => sent[i] = true,
                    Err(e) => {
                        failure = Some(ProcessingError::Kafka(format!(
                            "dlq {}: {e}",
                            self.dlq.topic()
                        )))
                    }
                }
            }
            match failure {
                None => return Ok(()),
                Some(e) => {
                    attempt += 1;
                    self.wait_for("kafka", &e, attempt).await?;
                }
            }
        }
    }

    /// Marks `dependency` down, pauses consumption and waits a backoff (or shutdown).
    async fn wait_for(
        &self,
        dependency: &str,
        error: &ProcessingError,
        attempt: u32,
    ) -> Result<(), Abandoned> {
        if attempt == 1 || attempt.is_multiple_of(20) {
            warn!(dependency, error = %error, attempt, "dependency down: consumption paused, nothing is dead-lettered");
        }
        if let Some(f) = self.dependency_flag(dependency) {
            f.store(false, Ordering::Relaxed)
        }
        self.metrics
            .dependency_up
            .with_label_values(&[dependency])
            .set(0);
        self.pause_for(
            self.args
                .backoff(attempt.min(6))
                .max(Duration::from_millis(200)),
        )
        .await
    }

    async fn pause_for(&self, delay: Duration) -> Result<(), Abandoned> {
        if !self.health.paused.swap(true, Ordering::Relaxed)
            && let Ok(assignment) = self.consumer.assignment()
        {
            self.health
                .paused_partitions
                .store(assignment.count() as i64, Ordering::Relaxed);
            let _ = self.consumer.pause(&assignment);
        }
        tokio::select! {
            _ = self.cancel.cancelled() => Err(Abandoned),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }

    fn dependency_back(&self, dependency: &str) {
        if let Some(flag) = self.dependency_flag(dependency)
            && !flag.swap(true, Ordering::Relaxed)
        {
            info!(dependency, "dependency is back");
            self.metrics
                .dependency_up
                .with_label_values(&[dependency])
                .set(1);
        }
        if self.health.paused.load(Ordering::Relaxed)
            && self.health.redis_up.load(Ordering::Relaxed)
            && self.health.registry_up.load(Ordering::Relaxed)
            && self.health.kafka_up.load(Ordering::Relaxed)
        {
            if let Ok(assignment) = self.consumer.assignment() {
                let _ = self.consumer.resume(&assignment);
            }
            self.health.paused.store(false, Ordering::Relaxed);
            self.health.paused_partitions.store(0, Ordering::Relaxed);
            info!("consumption resumed");
        }
    }

    fn dependency_flag(&self, dependency: &str) -> Option<&std::sync::atomic::AtomicBool> {
        match dependency {
            "redis" => Some(&self.health.redis_up),
            "registry" => Some(&self.health.registry_up),
            "kafka" => Some(&self.health.kafka_up),
            _ => None,
        }
    }
}

/// How long start-up waits for the brokers' metadata.
const STARTUP_METADATA_TIMEOUT: Duration = Duration::from_secs(30);

/// How long start-up waits for missing topics to appear: a topic created a
/// moment ago (kafka-init just finished) may not be in every broker's
/// metadata yet.
const MISSING_TOPIC_GRACE: Duration = Duration::from_secs(5);

/// Start-up check: the brokers answer and accept our credentials, and every
/// input topic and the dead-letter topic exist (a missing DLQ would otherwise
/// stall the consumer at its first dead letter). Returns the input topics'
/// partition counts, fetched before the group forms (a metadata request made
/// while the consumer joins can time out).
async fn check_topics(
    args: &RuntimeArgs,
    inputs: &[String],
    dlq: &str,
) -> anyhow::Result<HashMap<String, i32>> {
    let grace_ends = Instant::now() + MISSING_TOPIC_GRACE;
    loop {
        let metadata = args
            .kafka
            .cluster_metadata(STARTUP_METADATA_TIMEOUT)
            .await
            .context("cannot start without Kafka")?;
        let partitions: HashMap<String, i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| (t.name().to_owned(), t.partitions().len() as i32))
            .collect();
        let missing: Vec<&str> = inputs
            .iter()
            .map(String::as_str)
            .chain([dlq])
            .filter(|t| !partitions.contains_key(*t))
            .collect();
        if missing.is_empty() {
            return Ok(partitions
                .into_iter()
                .filter(|(name, _)| inputs.contains(name))
                .collect());
        }
        if Instant::now() >= grace_ends {
            anyhow::bail!(
                "missing topic(s) {}: create them with scripts/kafka-init.sh (same OPAL_TOPIC_PREFIX; a consumer group's DLQ comes from topics/topics.toml)",
                missing.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn dependency_of(error: &ProcessingError) -> &'static str {
    match error {
        ProcessingError::Redis(_) => "redis",
        ProcessingError::Decode(_) => "registry",
        ProcessingError::Kafka(_) => "kafka",
        ProcessingError::Handler(HandlerError::DependencyDown(m)) if m.starts_with("redis") => {
            "redis"
        }
        _ => "kafka",
    }
}

/// Every two seconds: is each dependency answering? Feeds readiness and
/// `opal_dependency_up`, independently of traffic. Kafka is asked for one
/// topic's metadata through one long-lived client: a full metadata request
/// every few seconds is a real load on a broker with many topics.
async fn health_checks(
    args: RuntimeArgs,
    probe_topic: String,
    codec: Arc<Codec>,
    state: StateReader,
    health: Arc<Health>,
    metrics: ConsumerMetrics,
    cancel: CancellationToken,
) {
    let probe: Option<Arc<BaseConsumer>> = args
        .kafka
        .client_config()
        .ok()
        .and_then(|c| c.create().ok())
        .map(Arc::new);
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut connection = state.connection();
        let redis_ok = tokio::time::timeout(
            Duration::from_secs(2),
            redis::cmd("PING").query_async::<String>(&mut connection),
        )
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
        let registry_ok = codec.registry().ping().await.is_ok();
        let kafka_ok = match &probe {
            Some(probe) => {
                let (probe, topic) = (probe.clone(), probe_topic.clone());
                tokio::task::spawn_blocking(move || {
                    probe
                        .fetch_metadata(Some(&topic), Duration::from_secs(2))
                        .is_ok()
                })
                .await
                .unwrap_or(false)
            }
            None => false,
        };
        for (name, ok, flag) in [
            ("redis", redis_ok, &health.redis_up),
            ("registry", registry_ok, &health.registry_up),
            ("kafka", kafka_ok, &health.kafka_up),
        ] {
            metrics
                .dependency_up
                .with_label_values(&[name])
                .set(i64::from(ok));
            // Down is also set by the runtime on failure; the checker alone brings it back
            // only when the runtime is not paused on it (the runtime resumes itself).
            if !ok || !health.paused.load(Ordering::Relaxed) {
                flag.store(ok, Ordering::Relaxed);
            }
        }
    }
}
