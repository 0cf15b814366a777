//! Batches settled in one Redis round trip. When the handler may handle every
//! pending event before holding its lease ([`Handler::handles_before_lease`]),
//! a batch's first round handles them all, then leases, applies and marks them
//! at once ([`crate::idempotency::Idempotency::apply_unleased`]) instead of a
//! lease round trip before the handler and an apply after it. Whatever does
//! not settle that way goes the leased way in the batch's next round: a
//! batch whose handler answered anything but effects without emits (a
//! failure, a wait, an emit: those need the lease held while they happen),
//! and events the apply left (another instance's lease, a refused command,
//! the events behind either).
//!
//! The batch taken ahead under a backlog is leased ahead only when it cannot
//! settle unleased, or when the batch in hand waits after its first round
//! ([`FirstRound`]): a lease taken ahead would only cost this path its round
//! trip, while a batch that waits (a held lease) keeps Redis busy as before.

use opal_schemas::Event;
use rdkafka::Message;
use tokio::sync::watch;

use crate::handler::{Effects, Handler, Source};

use super::Runtime;
use super::batch::{Item, Round};

/// How the batch in hand came out of its first settle round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FirstRound {
    Pending,
    /// Settled, or nothing left to settle: no lease ahead is needed.
    Settled,
    /// Events are still pending (held elsewhere, retrying, waiting for a dependency).
    Waiting,
}

/// The batch in hand tells the batch taken ahead how its first round went.
pub(super) struct FirstRoundSignal(watch::Sender<FirstRound>);

impl FirstRoundSignal {
    pub(super) fn new() -> Self {
        FirstRoundSignal(watch::Sender::new(FirstRound::Pending))
    }

    /// Records the first round's outcome; later calls change nothing.
    pub(super) fn set(&self, outcome: FirstRound) {
        self.0.send_if_modified(|now| {
            let first = *now == FirstRound::Pending;
            if first {
                *now = outcome;
            }
            first
        });
    }

    /// Waits for the first round's outcome: true if the batch waits.
    pub(super) async fn waits(&self) -> bool {
        let mut outcome = self.0.subscribe();
        match outcome.wait_for(|o| *o != FirstRound::Pending).await {
            Ok(o) => *o == FirstRound::Waiting,
            // The sender lives as long as this borrow of it.
            Err(_) => false,
        }
    }
}

impl<H: Handler> Runtime<H> {
    /// Whether the decoded events among `items` may settle unleased: the
    /// handler may handle each before its lease, and none holds a lease
    /// taken ahead (that batch goes the leased way with it).
    pub(super) fn settles_unleased<'i, 'c: 'i>(
        &self,
        mut items: impl Iterator<Item = &'i Item<'c>>,
    ) -> bool {
        !self.handler.reads_own_state()
            && items.all(|item| {
                !item.has_lease()
                    && item
                        .event
                        .as_ref()
                        .is_none_or(|event| self.handler.handles_before_lease(event))
            })
    }

    /// A first round without leases for the events at `pending` (see the
    /// module docs). Returns false, having settled nothing, when a handler
    /// answered anything but effects without emits: the round goes the
    /// leased way then.
    pub(super) async fn settle_unleased(
        &self,
        items: &mut [Item<'_>],
        pending: &[usize],
        round: &mut Round,
    ) -> bool {
        let mut handled: Vec<(&Event, Effects)> = Vec::with_capacity(pending.len());
        // One `Source` per run of a partition's events, its offset moved along.
        let mut source: Option<Source> = None;
        for i in pending {
            let item = &items[*i];
            let Some(event) = item.event.as_ref() else {
                return false;
            };
            let m = &item.message;
            let (topic, partition) = (m.topic(), m.partition());
            let source = match &mut source {
                Some(s) if s.partition == partition && s.topic == topic => s,
                _ => source.insert(Source {
                    topic: topic.to_owned(),
                    partition,
                    offset: 0,
                    partitions: self.partition_count(topic, partition).await,
                }),
            };
            source.offset = m.offset();
            match self.handler.handle(event, source, &self.state).await {
                Ok(effects) if effects.emits().is_empty() => handled.push((event, effects)),
                _ => return false,
            }
        }
        let committed = {
            let refs: Vec<(&Event, &Effects)> = handled.iter().map(|(e, f)| (*e, f)).collect();
            self.commit(&refs, true).await
        };
        self.record_committed(items, pending, committed, round);
        true
    }
}
