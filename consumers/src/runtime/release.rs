//! Giving back the leases of events this instance will not process. When
//! shutdown comes while a batch waits (a dependency down, a back-off) or the
//! drain timeout runs out, that batch and the one taken ahead behind it are
//! left unsettled for the partitions' next owner. It would find their events
//! leased by this instance and wait out the lease (`lease_ms`, 15 s by
//! default); given back, they are its at once.

use std::time::Duration;

use crate::handler::Handler;
use crate::telemetry::{LeasesNotReleased, LeasesReleased};

use super::Runtime;
use super::batch::{Item, Outcome};

/// How long shutdown waits for Redis to take the leases back: when it is
/// the dependency that is down, they are left to expire.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

impl<H: Handler> Runtime<H> {
    /// Gives back the leases this instance holds on the unsettled events of
    /// `batches`. One Redis round trip; it deletes only keys holding this
    /// instance's token, so events it never leased, leased elsewhere or
    /// already done are left as they are.
    pub(super) async fn release_leases(&self, batches: &[&[Item<'_>]]) {
        let ids: Vec<&str> = batches
            .iter()
            .flat_map(|items| items.iter())
            .filter(|item| !matches!(item.outcome, Some(Outcome::Processed | Outcome::Duplicate)))
            .filter_map(Item::event_id)
            .collect();
        if ids.is_empty() {
            return;
        }
        self.metrics.redis_round_trips.inc();
        match tokio::time::timeout(RELEASE_TIMEOUT, self.idempotency.release(&ids)).await {
            Ok(Ok(released)) => LeasesReleased {
                events: ids.len(),
                released,
            }
            .emit(),
            Ok(Err(e)) => LeasesNotReleased {
                events: ids.len(),
                lease_ms: self.args.lease_ms,
                error: &e,
            }
            .emit(),
            Err(_) => LeasesNotReleased {
                events: ids.len(),
                lease_ms: self.args.lease_ms,
                error: &format_args!("Redis did not answer within {RELEASE_TIMEOUT:?}"),
            }
            .emit(),
        }
    }
}
