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
//! Under a backlog the batches taken ahead settle the same way while the
//! batch in hand is still in Redis ([`Runtime::call_ahead`]): once that
//! batch's call went out, the batch ahead is handled and its call sent
//! behind it, and the batch behind that one too, each left in flight, so
//! Redis goes from one batch to the next without waiting for this instance
//! in between. Each such call is chained ([`Chain`]) to the one before it:
//! it applies nothing unless that call settled every event (another
//! instance's lease, a refused command or a failed guard stop a call), so
//! no partition's events pass one left unsettled; what it leaves goes the
//! leased way in its own batch's turn. The batch taken ahead is leased ahead
//! instead when it cannot settle unleased, or when the batch in hand waits
//! after its first round ([`FirstRound`]) before its call went out.

use opal_schemas::Event;
use rdkafka::Message;
use tokio::sync::watch;

use futures::FutureExt;
use futures::future::BoxFuture;
use redis::RedisError;
use tokio::sync::oneshot;

use crate::classify::ProcessingError;
use crate::handler::{Effects, Handler, Source};
use crate::idempotency::{Applied, Chain, Refused};

use super::Runtime;
use super::batch::{Item, Round, answers};

/// How the batch in hand came out of its first settle round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FirstRound {
    Pending,
    /// Settled, or nothing left to settle: no lease ahead is needed.
    Settled,
    /// Events are still pending (held elsewhere, retrying, waiting for a dependency).
    Waiting,
}

/// What the batch taken ahead does while the batch in hand settles.
pub(super) enum Ahead {
    /// Take its leases (the batch in hand waits).
    Lease,
    /// Send its unleased call, chained behind the batch in hand's.
    SendAfter(Chain),
    /// Nothing: it settles in its own turn.
    Wait,
}

#[derive(Clone, Copy)]
struct Progress {
    outcome: FirstRound,
    /// The batch in hand's unleased call, once it went out (or, settled
    /// ahead, once it settled every event).
    sent: Option<Chain>,
}

/// The batch in hand tells the batch taken ahead how its first round went.
pub(super) struct FirstRoundSignal(watch::Sender<Progress>);

impl FirstRoundSignal {
    pub(super) fn new() -> Self {
        FirstRoundSignal(watch::Sender::new(Progress {
            outcome: FirstRound::Pending,
            sent: None,
        }))
    }

    /// Records the first round's outcome; later calls change nothing.
    pub(super) fn set(&self, outcome: FirstRound) {
        self.0.send_if_modified(|now| {
            let first = now.outcome == FirstRound::Pending;
            if first {
                now.outcome = outcome;
            }
            first
        });
    }

    /// Records that the first round's unleased call, `chain`, is going out.
    fn sent(&self, chain: Chain) {
        self.0.send_if_modified(|now| {
            let first = now.outcome == FirstRound::Pending && now.sent.is_none();
            if first {
                now.sent = Some(chain);
            }
            first
        });
    }

    /// Waits until the first round's call went out or the round ended, and
    /// says what the batch taken ahead does meanwhile.
    pub(super) async fn ahead(&self) -> Ahead {
        let mut progress = self.0.subscribe();
        let Ok(now) = progress
            .wait_for(|p| p.sent.is_some() || p.outcome != FirstRound::Pending)
            .await
        else {
            // The sender lives as long as this borrow of it.
            return Ahead::Wait;
        };
        match (now.outcome, now.sent) {
            (FirstRound::Waiting, _) => Ahead::Lease,
            (_, Some(chain)) => Ahead::SendAfter(chain),
            _ => Ahead::Wait,
        }
    }

    /// Waits for the first round's outcome: true if the batch waits.
    pub(super) async fn waits(&self) -> bool {
        let mut progress = self.0.subscribe();
        match progress
            .wait_for(|p| p.outcome != FirstRound::Pending)
            .await
        {
            Ok(now) => now.outcome == FirstRound::Waiting,
            // The sender lives as long as this borrow of it.
            Err(_) => false,
        }
    }

    /// Whether the first round was an unleased call that settled every
    /// event: a call chained behind it applies.
    pub(super) fn chain_intact(&self) -> bool {
        let now = *self.0.borrow();
        now.outcome == FirstRound::Settled && now.sent.is_some()
    }
}

/// What an apply call answers: one result per event, in order.
type Reply = Result<Vec<Result<Applied, Refused>>, RedisError>;

/// A batch's unleased call, sent while the batch before it was in Redis.
pub(super) struct SentAhead {
    chain: Chain,
    /// Its answer, one per item of the batch, in order.
    reply: oneshot::Receiver<Reply>,
}

impl SentAhead {
    pub(super) fn chain(&self) -> Chain {
        self.chain
    }
}

/// A batch's unleased call, built and not sent yet ([`Runtime::send_in_order`]).
pub(super) struct CallAhead {
    chain: Chain,
    call: BoxFuture<'static, Reply>,
}

impl CallAhead {
    pub(super) fn chain(&self) -> Chain {
        self.chain
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
        first_round: &FirstRoundSignal,
        round: &mut Round,
    ) -> bool {
        let Some(effects) = self.handle_unleased(items, pending).await else {
            return false;
        };
        let this = self.idempotency.next_chain();
        first_round.sent(this);
        let committed = self
            .commit_unleased(items, pending, &effects, this, None)
            .await;
        self.record_committed(items, pending, committed, round);
        true
    }

    /// Handles `items`, a batch taken ahead, and builds their unleased call
    /// chained behind call `after`, to be sent and left in flight for the
    /// batch's first round. None if the batch may not settle unleased, holds
    /// a record still to be decoded (it may precede the others of its
    /// partition), or the handler answered anything but effects without
    /// emits: the batch then settles in its own turn.
    pub(super) async fn call_ahead(&self, items: &[Item<'_>], after: Chain) -> Option<CallAhead> {
        if items.is_empty()
            || !items.iter().all(|item| item.event.is_some())
            || !self.settles_unleased(items.iter())
        {
            return None;
        }
        let all: Vec<usize> = (0..items.len()).collect();
        let effects = self.handle_unleased(items, &all).await?;
        let applies: Vec<(&str, &Effects)> = items
            .iter()
            .zip(&effects)
            .filter_map(|(item, f)| Some((item.event_id()?, f)))
            .collect();
        let chain = self.idempotency.next_chain();
        let call = self
            .idempotency
            .apply_unleased_after(&applies, chain, Some(after))
            .boxed();
        Some(CallAhead { chain, call })
    }

    /// Sends `calls` in their order, each behind the one before on the
    /// connection (one task polls them in turn: tasks of their own could
    /// send them out of order, and a call that arrives before the one it is
    /// chained to applies nothing), and leaves them in flight.
    pub(super) fn send_in_order(&self, calls: Vec<CallAhead>) -> Vec<SentAhead> {
        if calls.is_empty() {
            return Vec::new();
        }
        self.metrics.redis_round_trips.inc_by(calls.len() as u64);
        let (sends, sent): (Vec<_>, Vec<_>) = calls
            .into_iter()
            .map(|CallAhead { chain, call }| {
                let (answer, reply) = oneshot::channel();
                let send = async move {
                    // Nobody waits any more if the batch was dropped (shutdown).
                    let _ = answer.send(call.await);
                };
                (send, SentAhead { chain, reply })
            })
            .unzip();
        // `join_all` polls them in order, so each is sent in order.
        tokio::spawn(futures::future::join_all(sends));
        sent
    }

    /// The first round of a batch whose call was sent ahead: records what it
    /// came to. With `chain_intact` (the batch before settled every event by
    /// its call) the batch behind is chained after it at once; otherwise only
    /// if it settled every event.
    pub(super) async fn record_sent_ahead(
        &self,
        items: &mut [Item<'_>],
        pending: &[usize],
        sent: SentAhead,
        chain_intact: bool,
        first_round: &FirstRoundSignal,
        round: &mut Round,
    ) {
        if chain_intact {
            first_round.sent(sent.chain);
        }
        let committed = match sent.reply.await {
            Ok(applied) => applied
                .map(|applied| answers(pending.iter().map(|_| None).collect(), applied))
                .map_err(ProcessingError::Redis),
            // The call's task ended without an answer (the runtime is shutting
            // down): nothing known, the next round handles them again.
            Err(_) => return,
        };
        self.record_committed(items, pending, committed, round);
        if pending.iter().all(|i| items[*i].outcome.is_some()) {
            first_round.sent(sent.chain);
        }
    }

    /// Handles the events at `indices` before their leases, each partition's
    /// in order: their effects, or None if the handler answered anything but
    /// effects without emits for one of them.
    async fn handle_unleased(&self, items: &[Item<'_>], indices: &[usize]) -> Option<Vec<Effects>> {
        let mut handled = Vec::with_capacity(indices.len());
        // One `Source` per run of a partition's events, its offset moved along.
        let mut source: Option<Source> = None;
        for i in indices {
            let item = &items[*i];
            let event = item.event.as_ref()?;
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
                Ok(effects) if effects.emits().is_empty() => handled.push(effects),
                _ => return None,
            }
        }
        Some(handled)
    }

    /// Applies the `effects` of the events at `indices` unleased, as call
    /// `this` of the chain, behind call `after` if given.
    async fn commit_unleased(
        &self,
        items: &[Item<'_>],
        indices: &[usize],
        effects: &[Effects],
        this: Chain,
        after: Option<Chain>,
    ) -> Result<Vec<Result<Applied, ProcessingError>>, ProcessingError> {
        let refs: Vec<(&Event, &Effects)> = indices
            .iter()
            .zip(effects)
            .filter_map(|(i, f)| Some((items[*i].event.as_ref()?, f)))
            .collect();
        self.commit(&refs, Some((this, after))).await
    }
}
