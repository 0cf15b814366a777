//! The handler of the gateway's own consumer group: every event read goes to
//! the live feed (the WebSocket side), with its JSON computed once. It never
//! waits: a WebSocket client never slows the consumer.

use std::sync::Arc;

use opal_consumers::{Effects, Handler, HandlerError, Source, StateReader};
use opal_schemas::{Event, EventType};

use crate::live::{LiveEvent, LiveFeed};

pub struct LiveHandler {
    feed: LiveFeed,
}

impl LiveHandler {
    pub fn new(feed: LiveFeed) -> Self {
        LiveHandler { feed }
    }
}

impl Handler for LiveHandler {
    fn name(&self) -> &str {
        "gateway"
    }

    fn inputs(&self) -> Vec<EventType> {
        EventType::ALL.to_vec()
    }

    async fn handle(
        &self,
        event: &Event,
        source: &Source,
        _state: &StateReader,
    ) -> Result<Effects, HandlerError> {
        self.feed.publish(Arc::new(LiveEvent {
            event: event.clone(),
            event_type: event.event_type(),
            json: crate::event_json(event),
            topic: source.topic.clone(),
            partition: source.partition,
            offset: source.offset,
        }));
        Ok(Effects::none())
    }
}
