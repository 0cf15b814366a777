//! The opal consumer pipeline under test: the runtime (decode, Redis
//! idempotency lease and done-mark, offset store and commit) with a handler
//! that does nothing but note the event's arrival.

use std::sync::Arc;

use opal_consumers::{Effects, Handler, HandlerError, Runtime, RuntimeArgs, Source, StateReader};
use opal_schemas::{Event, EventType};
use tokio_util::sync::CancellationToken;

use crate::recorder::Recorder;

pub struct NoopHandler {
    pub recorder: Arc<Recorder>,
    pub input: EventType,
}

impl Handler for NoopHandler {
    fn name(&self) -> &str {
        "bench"
    }

    fn inputs(&self) -> Vec<EventType> {
        vec![self.input]
    }

    /// Nothing to do but note the arrival: handled first, each batch then
    /// settles in one Redis round trip (the lease taken and turned into the
    /// done-mark at once). The bench has no other instance, so nothing is
    /// handled twice and each arrival is noted once.
    fn handles_before_lease(&self, _event: &Event) -> bool {
        true
    }

    async fn handle(
        &self,
        event: &Event,
        _source: &Source,
        _state: &StateReader,
    ) -> Result<Effects, HandlerError> {
        // The envelope timestamp is set when the producer builds the event.
        self.recorder.arrived(event.envelope().timestamp);
        Ok(Effects::none())
    }
}

/// A running pipeline: its task and the metrics that count Redis round trips.
pub struct Pipeline {
    pub metrics: opal_consumers::metrics::ConsumerMetrics,
    pub task: tokio::task::JoinHandle<anyhow::Result<opal_consumers::runtime::RunEnd>>,
}

/// Starts the runtime in this process for `args` (prefix and group set by the caller).
pub async fn start(
    args: RuntimeArgs,
    group: &str,
    handler: NoopHandler,
    cancel: CancellationToken,
) -> anyhow::Result<Pipeline> {
    let runtime = Runtime::new(handler, args, group, cancel).await?;
    let metrics = runtime.metrics();
    Ok(Pipeline {
        metrics,
        task: tokio::spawn(runtime.run()),
    })
}
