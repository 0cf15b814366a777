//! From the live feed to the hub: for each event, the `websocket` routes it
//! matches (the routes in force at that moment), then [`Hub::publish`]; a
//! matched route with no client connected sends it to its fallback webhook
//! instead, if it names one. If this task falls behind the feed's capacity
//! the clients have a gap they cannot see: every client is closed and told.

use std::sync::Arc;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::fallback::Fallbacks;
use super::frames::Close;
use super::hub::Hub;
use crate::live::LiveEvent;
use crate::routes::Sink;
use crate::table::RouteTable;

pub async fn run(
    hub: Arc<Hub>,
    mut feed: broadcast::Receiver<Arc<LiveEvent>>,
    routes: RouteTable,
    fallbacks: Arc<Fallbacks>,
    cancel: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => break,
            event = feed.recv() => event,
        };
        match event {
            Ok(event) => fan_out(&hub, &event, &routes, &fallbacks),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "websocket fan-out fell behind the live feed: closing every client"
                );
                hub.close_all(Close::fell_behind(missed));
            }
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
    hub.close_all(Close::GOING_AWAY);
}

fn fan_out(hub: &Hub, event: &LiveEvent, routes: &RouteTable, fallbacks: &Fallbacks) {
    let table = routes.current();
    let matched: Vec<&str> = table
        .routes
        .iter()
        .filter(|r| matches!(r.sink, Sink::WebSocket(_)))
        .filter(|r| r.selector.matches(event.event_type, &event.json))
        .map(|r| r.name.as_str())
        .collect();
    let served = hub.publish(event, &matched);
    for name in matched.iter().filter(|name| !served.contains(name)) {
        if let Some(route) = table.get(name)
            && let Sink::WebSocket(ws) = &route.sink
            && let Some(webhook) = &ws.fallback_webhook
        {
            fallbacks.offer(name, webhook, &event.event);
        }
    }
}
