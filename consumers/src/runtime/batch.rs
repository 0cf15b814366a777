//! The batch state machine: decode, settle (lease, handle, emit, apply; or
//! handle, then lease and apply at once: `unleased.rs`),
//! dead-letter, then store offsets; parked partitions are rewound. Every
//! failure on the way is classified by [`classify`]; a dependency that is
//! down makes the batch wait where it stands, a transient failure costs the
//! event one retry, anything else settles it as a dead letter. The
//! decode step is in `decode.rs`, the dead-letter step in `dead_letters.rs`,
//! the rewinding of parked partitions in `park.rs`.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use futures::future::join_all;
use opal_schemas::Event;
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Message};
use tracing::debug;

use crate::classify::{FailureClass, ProcessingError, classify};
use crate::dependency::Dependency;
use crate::dlq::DeadLetter;
use crate::handler::{Effects, Handler};
use crate::idempotency::{Applied, Chain, Lease, Refused};

use super::unleased::SentAhead;
use crate::telemetry::OffsetStoreFailed;

use super::Runtime;
use super::handle::{Handled, PartitionEvent};
use super::unleased::{FirstRound, FirstRoundSignal};

/// What became of one record of a batch.
pub(super) enum Outcome {
    Processed,
    Duplicate,
    Dead(DeadLetter),
    /// Waiting for another input: not settled, its offset not stored, redelivered.
    Parked,
}

pub(super) struct Item<'c> {
    /// The record as read, borrowed from the client (copied only for the
    /// DLQ); its bytes go to the DLQ unchanged if it fails.
    pub(super) message: BorrowedMessage<'c>,
    /// The decoded, valid event; None until decoded, or if it could not be.
    pub(super) event: Option<Event>,
    /// How it settled; None while it is still pending.
    pub(super) outcome: Option<Outcome>,
    /// Retries spent on transient failures (of the handler, of its state
    /// change); it is dead-lettered once `retry_attempts` attempts failed.
    retries: u32,
    /// The lease taken while the batch before settled (see
    /// [`Runtime::lease_ahead`]); the first settle round uses it instead of
    /// asking Redis again.
    lease: Option<Lease>,
}

impl<'c> Item<'c> {
    pub(super) fn new(message: BorrowedMessage<'c>) -> Self {
        Item {
            message,
            event: None,
            outcome: None,
            retries: 0,
            lease: None,
        }
    }

    /// The record, its decoding dropped: for records taken but not leased
    /// that go back to being collected.
    pub(super) fn into_message(self) -> BorrowedMessage<'c> {
        self.message
    }

    /// Whether it holds a lease taken ahead, not used yet.
    pub(super) fn has_lease(&self) -> bool {
        self.lease.is_some()
    }

    /// The decoded event's id (its idempotency key); None until decoded.
    pub(super) fn event_id(&self) -> Option<&str> {
        Some(self.event.as_ref()?.envelope().event_id.as_str())
    }
}

/// One topic's settled records in a batch, for the metrics.
#[derive(Default)]
struct Counts {
    processed: u64,
    duplicate: u64,
    retried: u64,
    /// Every settled record (the processing-time histogram).
    settled: u64,
}

/// The batch could not finish: shutdown came while it was waiting.
pub(super) struct Abandoned;

/// What one settle round left to do before the next.
#[derive(Default)]
pub(super) struct Round {
    /// A dependency is down: wait for it.
    down: Option<ProcessingError>,
    /// Events failed transiently and will be handled again: back off first.
    retry: bool,
    /// Another instance holds a lease, or a guard or lease check refused an
    /// apply: wait a little for it.
    waiting: bool,
}

impl<H: Handler> Runtime<H> {
    /// Decodes (`decode.rs`), settles and dead-letters `items`, then stores their offsets.
    /// Returns the partitions it parked (rewound): records of theirs taken
    /// ahead must come again after the parked one, so the caller drops them.
    /// `Err(Abandoned)` when shutdown came while it waited: nothing stored.
    pub(super) async fn process_batch(
        &self,
        items: &mut [Item<'_>],
        started: Instant,
        first_round: &FirstRoundSignal,
        sent_ahead: Option<(SentAhead, bool)>,
    ) -> Result<HashSet<(String, i32)>, Abandoned> {
        self.decode(items).await?;
        self.settle(items, first_round, sent_ahead).await?;
        self.dead_letter(items).await?;
        let mut last: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        // Counted per topic and resolved to metric handles once per batch.
        let mut counts: BTreeMap<&str, Counts> = BTreeMap::new();
        for item in items.iter() {
            let m = &item.message;
            let topic = m.topic();
            let counts = counts.entry(topic).or_default();
            match &item.outcome {
                Some(Outcome::Processed) => counts.processed += 1,
                Some(Outcome::Duplicate) => counts.duplicate += 1,
                // Counted when the broker acknowledged it (`DeadLettered`).
                Some(Outcome::Dead(_)) => {}
                Some(Outcome::Parked) | None => continue,
            }
            counts.retried += u64::from(item.retries);
            counts.settled += 1;
            let entry = last.entry((topic, m.partition())).or_insert(m.offset());
            *entry = (*entry).max(m.offset());
        }
        let elapsed = started.elapsed().as_secs_f64();
        for (topic, counts) in counts {
            let name = self.handler.name();
            for (outcome, n) in [
                ("processed", counts.processed),
                ("duplicate", counts.duplicate),
                ("retried", counts.retried),
            ] {
                if n > 0 {
                    let labels = [name, topic, outcome];
                    self.metrics.consumed.with_label_values(&labels).inc_by(n);
                }
            }
            let processing = self.metrics.processing.with_label_values(&[name, topic]);
            for _ in 0..counts.settled {
                processing.observe(elapsed);
            }
        }
        for ((topic, partition), offset) in last {
            if let Err(e) = self.consumer.store_offset(topic, partition, offset) {
                OffsetStoreFailed {
                    topic,
                    partition,
                    offset,
                    error: &e,
                }
                .emit(&self.metrics);
            }
        }
        let parked = self.park(items);
        self.health.event_processed();
        self.metrics
            .last_event_unixtime
            .set(opal_schemas::now_millis() as f64 / 1000.0);
        Ok(parked)
    }

    /// Leases a batch taken ahead while the batch before it settles (a
    /// backlog): the decoded events, in one round trip, sent while the other
    /// batch waits for Redis. Nothing is handled: that waits until the batch
    /// before is settled, so each partition's events still apply in order. A
    /// failed lease is left to the batch's own first round, which meets the
    /// failure again.
    pub(super) async fn lease_ahead(&self, items: &mut [Item<'_>]) {
        let (indices, ids): (Vec<usize>, Vec<&str>) = items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| Some((i, item.event_id()?)))
            .unzip();
        if ids.is_empty() {
            return;
        }
        self.metrics.redis_round_trips.inc();
        if let Ok(leases) = self.idempotency.lease(&ids).await {
            for (i, lease) in indices.into_iter().zip(leases) {
                items[i].lease = Some(lease);
            }
        }
    }

    /// Steps 2 and 3: lease, handle, emit and apply, until every decoded event
    /// is settled; the first round unleased where it may (`unleased.rs`).
    /// Tells `first_round` whether events are left after the first round.
    /// `sent_ahead`: the batch's call sent while the batch before was in
    /// Redis, and whether that batch's call settled every event.
    async fn settle(
        &self,
        items: &mut [Item<'_>],
        first_round: &FirstRoundSignal,
        mut sent_ahead: Option<(SentAhead, bool)>,
    ) -> Result<(), Abandoned> {
        let mut attempt = 0;
        let mut first = true;
        // The dependency the last round waited for: a round without it down
        // means it answers again.
        let mut waited_on = None;
        loop {
            let pending: Vec<usize> = (0..items.len())
                .filter(|i| items[*i].event.is_some() && items[*i].outcome.is_none())
                .collect();
            if pending.is_empty() {
                first_round.set(FirstRound::Settled);
                return Ok(());
            }
            let mut round = Round::default();
            let unleased = first
                && match sent_ahead.take() {
                    Some((sent, chain_intact)) => {
                        self.record_sent_ahead(
                            items,
                            &pending,
                            sent,
                            chain_intact,
                            first_round,
                            &mut round,
                        )
                        .await;
                        true
                    }
                    None => {
                        self.settles_unleased(pending.iter().map(|i| &items[*i]))
                            && self
                                .settle_unleased(items, &pending, first_round, &mut round)
                                .await
                    }
                };
            if !unleased {
                self.settle_round(items, &pending, &mut round).await;
            }
            if first {
                // Told before this batch waits, so the batch ahead is leased meanwhile.
                let left = pending.iter().any(|i| items[*i].outcome.is_none());
                first_round.set(if left {
                    FirstRound::Waiting
                } else {
                    FirstRound::Settled
                });
                first = false;
            }
            if let Some(e) = round.down {
                attempt += 1;
                let dependency = match classify(&e) {
                    FailureClass::DependencyDown(dependency) => dependency,
                    _ => Dependency::Kafka,
                };
                waited_on = Some(dependency);
                self.wait_for(dependency, &e, attempt).await?;
                continue;
            }
            if let Some(dependency) = waited_on.take() {
                self.dependency_back(dependency);
            }
            attempt = 0;
            if round.retry {
                let spent = pending.iter().map(|i| items[*i].retries).max().unwrap_or(1);
                self.back_off(self.args.backoff(spent.max(1))).await?;
            } else if round.waiting {
                // Another instance holds a lease (a rebalance race): wait for it to finish or expire.
                self.pause_for(self.args.backoff(4)).await?;
            }
        }
    }

    /// One round of settling the `pending` events: lease them, handle each
    /// partition's in order, emit and apply. Records in `round` what stops it.
    async fn settle_round(&self, items: &mut [Item<'_>], pending: &[usize], round: &mut Round) {
        // Leases taken ahead (a prepared batch's first round) are used once.
        let mut leases: Vec<Option<Lease>> =
            pending.iter().map(|i| items[*i].lease.take()).collect();
        let ids: Vec<&str> = pending
            .iter()
            .zip(&leases)
            .filter(|(_, lease)| lease.is_none())
            .filter_map(|(i, _)| items[*i].event_id())
            .collect();
        if !ids.is_empty() {
            self.metrics.redis_round_trips.inc();
            match self.idempotency.lease(&ids).await {
                Ok(fresh) => {
                    self.dependency_back(Dependency::Redis);
                    let mut fresh = fresh.into_iter();
                    for lease in leases.iter_mut().filter(|lease| lease.is_none()) {
                        *lease = fresh.next();
                    }
                }
                Err(e) => {
                    self.all_failed(items, pending, ProcessingError::Redis(e), round);
                    return;
                }
            }
        }
        let leases = leases
            .into_iter()
            .map(|lease| lease.unwrap_or(Lease::HeldElsewhere));
        let mut duplicates = Vec::new();
        let handled = {
            // Events and records are lent to the handling, not copied; the
            // items are updated once it is done.
            let items: &[Item<'_>] = items;
            let mut by_partition: BTreeMap<(&str, i32), Vec<PartitionEvent<'_>>> = BTreeMap::new();
            // An event held elsewhere (a crashed or revoked instance's lease) holds
            // back the rest of its partition: handling the events after it first
            // would apply them out of order.
            let mut held: Vec<(&str, i32)> = Vec::new();
            for (i, lease) in pending.iter().copied().zip(leases) {
                let item = &items[i];
                let m = &item.message;
                let partition = (m.topic(), m.partition());
                match (lease, &item.event) {
                    (Lease::Done, _) => duplicates.push(i),
                    (Lease::HeldElsewhere, _) => {
                        round.waiting = true;
                        held.push(partition);
                    }
                    (Lease::Acquired, _) if held.contains(&partition) => {}
                    (Lease::Acquired, Some(event)) => by_partition
                        .entry(partition)
                        .or_default()
                        .push(PartitionEvent {
                            index: i,
                            event,
                            topic: partition.0,
                            partition: partition.1,
                            offset: m.offset(),
                            spent: item.retries,
                        }),
                    (Lease::Acquired, None) => {}
                }
            }
            join_all(
                by_partition
                    .into_values()
                    .map(|events| self.handle_partition(events)),
            )
            .await
        };
        for i in duplicates {
            items[i].outcome = Some(Outcome::Duplicate);
        }

        let mut to_commit: Vec<(usize, Effects)> = Vec::with_capacity(pending.len());
        let mut parked = Vec::new();
        for (i, result, spent) in handled.into_iter().flatten() {
            items[i].retries = spent;
            match result {
                Handled::Effects(effects) => to_commit.push((i, effects)),
                Handled::Committed(applied) => self.record_applied(&mut items[i], applied, round),
                Handled::Dead(class, error, attempts) => {
                    items[i].outcome = Some(self.dead(&items[i], class, error, attempts))
                }
                Handled::Down(e) => round.down = Some(e),
                Handled::Retry(_) => round.retry = true,
                Handled::Parked(e) => {
                    debug!(error = %e, "waiting for another input; parking the partition");
                    parked.push(i);
                }
            }
        }
        // A parked event and everything after it in its partition stay
        // unsettled, whatever they came to meanwhile (a record that failed to
        // decode, a duplicate): the partition is rewound to the parked event,
        // so they come again, and no offset may pass it.
        for i in parked {
            let (topic, partition, offset) = {
                let m = &items[i].message;
                (m.topic().to_owned(), m.partition(), m.offset())
            };
            for item in items.iter_mut() {
                let m = &item.message;
                if m.topic() == topic && m.partition() == partition && m.offset() >= offset {
                    item.outcome = Some(Outcome::Parked);
                }
            }
        }
        if to_commit.is_empty() {
            return;
        }
        let committed = {
            let refs: Vec<(&Event, &Effects)> = to_commit
                .iter()
                .filter_map(|(i, f)| items[*i].event.as_ref().map(|e| (e, f)))
                .collect();
            self.commit_effects(&refs).await
        };
        let indices: Vec<usize> = to_commit.iter().map(|(i, _)| *i).collect();
        self.record_committed(items, &indices, committed, round);
    }

    /// Records what committing the events at `indices` (in that order) came to.
    pub(super) fn record_committed(
        &self,
        items: &mut [Item<'_>],
        indices: &[usize],
        committed: Result<Vec<Result<Applied, ProcessingError>>, ProcessingError>,
        round: &mut Round,
    ) {
        match committed {
            Ok(results) => {
                for (i, result) in indices.iter().zip(results) {
                    match result {
                        Ok(applied) => self.record_applied(&mut items[*i], applied, round),
                        Err(e) => self.failed(&mut items[*i], e, round),
                    }
                }
            }
            Err(e) => self.all_failed(items, indices, e, round),
        }
    }

    /// An event's apply failed with `error`: a dependency down makes the
    /// round wait; otherwise the event spends a retry or is dead-lettered.
    pub(super) fn failed(&self, item: &mut Item<'_>, error: ProcessingError, round: &mut Round) {
        match classify(&error) {
            FailureClass::DependencyDown(_) => {
                round.down.get_or_insert(error);
            }
            class => self.failed_with(item, class, &error, round),
        }
    }

    /// A round trip for the events at `indices` failed as a whole.
    pub(super) fn all_failed(
        &self,
        items: &mut [Item<'_>],
        indices: &[usize],
        error: ProcessingError,
        round: &mut Round,
    ) {
        match classify(&error) {
            FailureClass::DependencyDown(_) => {
                round.down.get_or_insert(error);
            }
            class => {
                for i in indices {
                    self.failed_with(&mut items[*i], class, &error, round);
                }
            }
        }
    }

    /// A transient failure spends one of the event's retries (dead-lettered
    /// when none is left); any other class dead-letters it at once.
    fn failed_with(
        &self,
        item: &mut Item<'_>,
        class: FailureClass,
        error: &ProcessingError,
        round: &mut Round,
    ) {
        if class == FailureClass::Transient && self.spend_retry(&mut item.retries) {
            round.retry = true;
        } else {
            let attempts = item.retries + 1;
            item.outcome = Some(self.dead(item, class, error.to_string(), attempts));
        }
    }

    pub(super) fn record_applied(&self, item: &mut Item<'_>, applied: Applied, round: &mut Round) {
        match applied {
            Applied::Applied => item.outcome = Some(Outcome::Processed),
            Applied::AlreadyDone => item.outcome = Some(Outcome::Duplicate),
            Applied::LeaseLost => round.waiting = true,
            Applied::Conflict => {
                self.metrics.state_conflicts.inc();
                round.waiting = true;
            }
            // An earlier event was refused; it retries, this one comes along.
            Applied::Deferred => {}
        }
    }

    /// Publishes each event's emitted events (deterministic ids), then applies
    /// the state and done-marks of those whose emits all went out, in one
    /// Redis round trip. `Err` when the step failed as a whole; per event, the
    /// broker's permanent refusal of an emit or Redis's refusal of a state command.
    pub(super) async fn commit_effects(
        &self,
        items: &[(&Event, &Effects)],
    ) -> Result<Vec<Result<Applied, ProcessingError>>, ProcessingError> {
        self.commit(items, None).await
    }

    /// [`Runtime::commit_effects`], leased or (`unleased`: this call's place
    /// in the chain and the call it must follow, see `unleased.rs`) not.
    pub(super) async fn commit(
        &self,
        items: &[(&Event, &Effects)],
        unleased: Option<(Chain, Option<Chain>)>,
    ) -> Result<Vec<Result<Applied, ProcessingError>>, ProcessingError> {
        let mut failures: Vec<Option<ProcessingError>> = items.iter().map(|_| None).collect();
        let (owners, emits): (Vec<usize>, Vec<Event>) = items
            .iter()
            .enumerate()
            .flat_map(|(k, (input, effects))| {
                self.prepare_emits(input, effects)
                    .into_iter()
                    .map(move |event| (k, event))
            })
            .unzip();
        if !emits.is_empty() {
            for (k, result) in owners
                .into_iter()
                .zip(self.publisher.publish_batch(emits).await)
            {
                let Err(e) = result else { continue };
                let error = ProcessingError::Emit(e);
                if matches!(classify(&error), FailureClass::DependencyDown(_)) {
                    return Err(error);
                }
                failures[k].get_or_insert(error);
            }
        }
        let applies: Vec<(&str, &Effects)> = items
            .iter()
            .zip(&failures)
            .filter(|(_, failure)| failure.is_none())
            .map(|((e, f), _)| (e.envelope().event_id.as_str(), *f))
            .collect();
        self.metrics.redis_round_trips.inc();
        let applied = match unleased {
            Some((this, after)) => {
                self.idempotency
                    .apply_unleased_after(&applies, this, after)
                    .await?
            }
            None => self.idempotency.apply(&applies).await?,
        };
        Ok(answers(failures, applied))
    }
}

/// Each event's result: its failure before the apply, else the apply
/// script's answer for it, in order (an event the script did not answer lost
/// its lease: nothing of it is known applied).
pub(super) fn answers(
    failures: Vec<Option<ProcessingError>>,
    applied: Vec<Result<Applied, Refused>>,
) -> Vec<Result<Applied, ProcessingError>> {
    let mut applied = applied.into_iter();
    failures
        .into_iter()
        .map(|failure| match failure {
            Some(e) => Err(e),
            None => match applied.next() {
                Some(answer) => answer.map_err(ProcessingError::from),
                None => Ok(Applied::LeaseLost),
            },
        })
        .collect()
}
