//! The live feed: every event the gateway's own consumer group reads, once,
//! with its JSON form computed once, for the WebSocket hub to match against
//! its clients' selectors. A broadcast channel: the consumer never waits for
//! a reader; a reader that falls more than the capacity behind learns it
//! (`RecvError::Lagged`) and decides what to do with its clients.

use std::sync::Arc;

use opal_schemas::{Event, EventType};
use serde_json::Value;
use tokio::sync::broadcast;

/// One event as read, with where it was read.
#[derive(Debug)]
pub struct LiveEvent {
    pub event: Event,
    pub event_type: EventType,
    /// [`crate::event_json`] of the event.
    pub json: Value,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Clone)]
pub struct LiveFeed {
    tx: broadcast::Sender<Arc<LiveEvent>>,
}

impl LiveFeed {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity);
        LiveFeed { tx }
    }

    pub fn publish(&self, event: Arc<LiveEvent>) {
        // No receiver (no hub yet) is not an error.
        let _ = self.tx.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.tx.subscribe()
    }
}
