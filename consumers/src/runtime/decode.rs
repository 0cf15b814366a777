//! Step 1 of a batch: decoding and validating its records, through the
//! registry when a writer schema is new; and the look-ahead's decoding of a
//! batch taken ahead, which never waits for the registry.

use futures::future::join_all;
use opal_schemas::{CodecError, Decoded, Event, validate};
use rdkafka::message::Message;

use crate::classify::{FailureClass, ProcessingError, classify};
use crate::dependency::Dependency;
use crate::handler::Handler;

use super::Runtime;
use super::batch::{Abandoned, Item};

/// A decoded record's event if it is valid, else why not: the one rule for
/// the batch's decode step and for the look-ahead's ([`Runtime::prepare`]).
fn checked(decoded: Result<Decoded, CodecError>) -> Result<Event, ProcessingError> {
    let event = decoded.map_err(ProcessingError::Decode)?.event;
    validate(&event).map_err(ProcessingError::Validation)?;
    Ok(event)
}

impl<H: Handler> Runtime<H> {
    /// Decodes the records of a batch taken ahead that decode without the
    /// registry and are not decoded yet; the rest wait for the batch's own
    /// decode step. In one go, without yielding: a batch beside it has just
    /// sent its Redis command, which takes longer than this, and a yield
    /// lets the task move to another thread (its allocations then freed
    /// across threads cost more than the yield saves).
    pub(super) fn decode_ahead(&self, items: &mut [Item<'_>]) {
        for item in items.iter_mut().filter(|item| item.event.is_none()) {
            let payload = item.message.payload().unwrap_or_default();
            // A record that fails here fails again in `decode`, which settles it.
            if let Some(Ok(event)) = self.codec.decode_cached(payload).map(checked) {
                item.event = Some(event);
            }
        }
    }

    /// Step 1: decode and validate every record; undecodable and invalid ones are settled as dead.
    pub(super) async fn decode(&self, items: &mut [Item<'_>]) -> Result<(), Abandoned> {
        let mut attempt = 0;
        loop {
            let open: Vec<usize> = (0..items.len())
                .filter(|i| items[*i].event.is_none() && items[*i].outcome.is_none())
                .collect();
            if open.is_empty() {
                return Ok(());
            }
            // Records whose writer schema is known decode at once; the rest
            // wait for the registry (one fetch per schema id).
            let mut decoded = Vec::with_capacity(open.len());
            let mut unknown = Vec::new();
            for i in open {
                let payload = items[i].message.payload().unwrap_or_default();
                match self.codec.decode_cached(payload) {
                    Some(result) => decoded.push((i, result)),
                    None => unknown.push(i),
                }
            }
            let fetched = join_all(unknown.iter().map(|i| {
                let payload = items[*i].message.payload().unwrap_or_default();
                self.codec.decode(payload)
            }))
            .await;
            decoded.extend(unknown.into_iter().zip(fetched));
            let mut down = None;
            for (i, result) in decoded {
                let error = match checked(result) {
                    Ok(event) => {
                        items[i].event = Some(event);
                        continue;
                    }
                    Err(e) => e,
                };
                match classify(&error) {
                    FailureClass::DependencyDown(dependency) => down = Some((dependency, error)),
                    class => {
                        items[i].outcome = Some(self.dead(&items[i], class, error.to_string(), 1))
                    }
                }
            }
            match down {
                None => {
                    self.dependency_back(Dependency::Registry);
                    return Ok(());
                }
                Some((dependency, e)) => {
                    attempt += 1;
                    self.wait_for(dependency, &e, attempt).await?;
                }
            }
        }
    }
}
