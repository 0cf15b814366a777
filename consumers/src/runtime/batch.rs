//! The batch state machine: decode, settle (lease, handle, emit, apply),
//! dead-letter, then store offsets; parked partitions are rewound.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::future::join_all;
use opal_schemas::{Event, validate};
use rdkafka::TopicPartitionList;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Message, OwnedMessage};
use tracing::{debug, warn};

use crate::classify::{FailureClass, ProcessingError, classify};
use crate::dlq::DeadLetter;
use crate::handler::{Effects, Handler};
use crate::idempotency::{Applied, Lease};

use super::Runtime;
use super::handle::Handled;
use super::waits::dependency_of;

/// How long a parked partition waits before its waiting event is tried again.
const PARK_FOR: Duration = Duration::from_secs(1);

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

/// The batch could not finish: shutdown came while a dependency was down.
pub(super) struct Abandoned;

impl<H: Handler> Runtime<H> {
    pub(super) async fn process_batch(&self, messages: Vec<OwnedMessage>, started: Instant) {
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

    /// Publishes emitted events (deterministic ids), then applies state and
    /// done-marks in one Redis round trip.
    pub(super) async fn commit_effects(
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
}
