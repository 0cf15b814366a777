//! One partition's events through the handler, in order: transient failures
//! retried with backoff within the event's retry budget, guard conflicts
//! handled again, and a stop at the first event that cannot settle now, so
//! the events after it wait and order holds.

use opal_schemas::Event;
use tracing::{Instrument, debug, debug_span, warn};

use crate::classify::{FailureClass, ProcessingError, classify};
use crate::handler::{Effects, Handler, HandlerError, Source};
use crate::idempotency::Applied;

use super::Runtime;

/// How many times an event whose guarded state changed under it is handled
/// again at once before its partition waits for the batch's next round.
const CONFLICT_RETRIES: u32 = 5;

/// What handling one event gave.
pub(super) enum Handled {
    /// Effects to apply with the batch.
    Effects(Effects),
    /// Settled as a dead letter: its class, the error, the attempts made.
    Dead(FailureClass, String, u32),
    /// A dependency is down: the batch waits for it.
    Down(ProcessingError),
    /// Waiting for another input: its partition is parked.
    Parked(ProcessingError),
    /// Applied already (handlers that read their own state apply per event).
    Committed(Applied),
    /// A transient failure with retries left: handle it again after a backoff.
    Retry(ProcessingError),
}

/// One event of a partition, as handed to [`Runtime::handle_partition`]:
/// lent from the batch, not copied.
pub(super) struct PartitionEvent<'a> {
    /// Its index in the batch.
    pub index: usize,
    pub event: &'a Event,
    /// Where its record was read.
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// The retries it has spent so far.
    pub spent: u32,
}

impl<H: Handler> Runtime<H> {
    /// Handles one partition's events in order. Stops at the first event that
    /// cannot settle now (a dependency down, parked, a conflict, a retry to
    /// come): the events after it stay pending so order holds. Returns each
    /// handled event's index with the retries it has spent in all.
    pub(super) async fn handle_partition(
        &self,
        events: Vec<PartitionEvent<'_>>,
    ) -> Vec<(usize, Handled, u32)> {
        let mut out = Vec::with_capacity(events.len());
        let Some(first) = events.first() else {
            return out;
        };
        let partitions = self.partition_count(first.topic, first.partition).await;
        for PartitionEvent {
            index: i,
            event,
            topic,
            partition,
            offset,
            spent,
        } in events
        {
            let source = Source {
                topic: topic.to_owned(),
                partition,
                offset,
                partitions,
            };
            // Per-event spans cost their fields' formatting on every event:
            // debug level only (warnings below still carry the record's place).
            let span = debug_span!(
                "event",
                event_id = %event.envelope().event_id,
                correlation_id = %event.envelope().correlation_id,
                topic,
                partition,
                offset,
            );
            let mut conflicts = 0;
            let mut spent = spent;
            let handled = loop {
                let mut handled = self
                    .handle_with_retries(event, &source, &mut spent)
                    .instrument(span.clone())
                    .await;
                if let (true, Handled::Effects(effects)) =
                    (self.handler.reads_own_state(), &handled)
                {
                    handled = match self.commit_effects(&[(event, effects)]).await {
                        Ok(mut results) => match results.pop() {
                            Some(Ok(applied)) => Handled::Committed(applied),
                            Some(Err(e)) => self.apply_failed(e, &mut spent),
                            None => Handled::Committed(Applied::LeaseLost),
                        },
                        Err(e) => self.apply_failed(e, &mut spent),
                    };
                }
                match &handled {
                    // Another partition changed the state this event read: read it again.
                    Handled::Committed(Applied::Conflict) if conflicts < CONFLICT_RETRIES => {
                        conflicts += 1;
                        self.metrics.state_conflicts.inc();
                        debug!(parent: &span, conflicts, "guarded state changed; handling again");
                    }
                    // Redis refused its state change: on fresh state, after a backoff.
                    Handled::Retry(e) => {
                        warn!(
                            parent: &span,
                            event_id = %event.envelope().event_id,
                            topic,
                            partition,
                            offset,
                            attempt = spent,
                            error = %e,
                            "transient failure; retrying"
                        );
                        tokio::time::sleep(self.args.backoff(spent)).await;
                    }
                    _ => break handled,
                }
            };
            let stop = matches!(
                handled,
                Handled::Down(_)
                    | Handled::Parked(_)
                    | Handled::Retry(_)
                    | Handled::Committed(
                        Applied::Conflict | Applied::LeaseLost | Applied::Deferred
                    )
            );
            out.push((i, handled, spent));
            if stop {
                break;
            }
        }
        out
    }

    /// Calls the handler, retrying transient failures with backoff and jitter
    /// while the event has retries left (`spent` counts its retries across
    /// rounds; attempts = retries + 1).
    async fn handle_with_retries(
        &self,
        event: &Event,
        source: &Source,
        spent: &mut u32,
    ) -> Handled {
        loop {
            let error = match self.handler.handle(event, source, &self.state).await {
                Ok(effects) => match self.check_emits(event, &effects) {
                    Ok(()) => return Handled::Effects(effects),
                    Err(reason) => ProcessingError::Handler(HandlerError::Invalid(reason)),
                },
                Err(e) => ProcessingError::Handler(e),
            };
            match classify(&error) {
                FailureClass::Transient if self.spend_retry(spent) => {
                    warn!(
                        event_id = %event.envelope().event_id,
                        topic = source.topic,
                        partition = source.partition,
                        offset = source.offset,
                        attempt = *spent,
                        error = %error,
                        "transient failure; retrying"
                    );
                    tokio::time::sleep(self.args.backoff(*spent)).await;
                }
                FailureClass::DependencyDown(_) => return Handled::Down(error),
                FailureClass::NotYet => return Handled::Parked(error),
                class => return Handled::Dead(class, error.to_string(), *spent + 1),
            }
        }
    }

    /// The one retry-budget rule, for handler failures and state failures
    /// alike: a transient failure may be retried while the event has
    /// attempts left (`retry_attempts` in all); spends one if so.
    pub(super) fn spend_retry(&self, spent: &mut u32) -> bool {
        let left = *spent + 1 < self.args.retry_attempts;
        if left {
            *spent += 1;
        }
        left
    }

    /// What follows when applying an event's effects failed: wait for a
    /// dependency that is down, retry a transient failure while the event has
    /// retries left (`spent` counts its retries; attempts = retries + 1),
    /// dead-letter the rest.
    pub(super) fn apply_failed(&self, error: ProcessingError, spent: &mut u32) -> Handled {
        match classify(&error) {
            FailureClass::DependencyDown(_) => Handled::Down(error),
            FailureClass::Transient if self.spend_retry(spent) => Handled::Retry(error),
            class => Handled::Dead(class, error.to_string(), *spent + 1),
        }
    }
}
