//! `POST /replay`: re-delivers the events of a time window to a route's sink.
//!
//! ```json
//! {"route": "degraded-alerts", "from": "2026-11-25T20:00:00Z", "to": "2026-11-25T21:00:00Z",
//!  "patterns": ["decision.degraded"], "dry_run": true}
//! ```
//!
//! The window is read back from Kafka by [`reader::HistoryReader`] (its own
//! consumer, no group), outside the consumer runtime: the runtime's Redis
//! done-marks, which make the live path skip events already delivered, do
//! not apply, so every matching event in the window is sent again, with its
//! own event id (receivers deduplicate by it). A `webhook` route's events go
//! to its webhook (signed, with its retries); a `websocket` route's go to its
//! connected clients (marked `"replayed": true`), or to its fallback webhook
//! when none is connected. `dry_run` only counts.

pub mod reader;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use opal_schemas::Event;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::pattern::Pattern;
use crate::routes::{Route, Sink};
use crate::table::RouteTable;
use crate::webhook::{WebhookConfig, WebhookSender};
use crate::ws::{Hub, Outgoing, protocol::When};
use reader::{HistoryReader, Record};

/// Failed event ids listed in an answer (the count is always whole).
const FAILED_IDS_SHOWN: usize = 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    pub route: String,
    pub from: When,
    /// Default: now (the end of every partition when the request came).
    #[serde(default)]
    pub to: Option<When>,
    /// Narrows the route's own patterns.
    #[serde(default)]
    pub patterns: Vec<Pattern>,
    #[serde(default)]
    pub dry_run: bool,
}

pub struct ReplayState {
    reader: HistoryReader,
    hub: Arc<Hub>,
    routes: RouteTable,
    topic_prefix: String,
    cancel: CancellationToken,
}

impl ReplayState {
    pub fn new(
        reader: HistoryReader,
        hub: Arc<Hub>,
        routes: RouteTable,
        topic_prefix: String,
        cancel: CancellationToken,
    ) -> Arc<ReplayState> {
        Arc::new(ReplayState {
            reader,
            hub,
            routes,
            topic_prefix,
            cancel,
        })
    }
}

/// `POST /replay`.
pub fn router(state: Arc<ReplayState>) -> Router {
    Router::new()
        .route("/replay", post(replay))
        .with_state(state)
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn replay(
    State(state): State<Arc<ReplayState>>,
    body: Result<Json<ReplayRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let Some(route) = state.routes.get(&request.route) else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("no route named '{}' is in force", request.route),
        );
    };
    let from = match request.from.millis() {
        Ok(ms) => ms,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("from: {e}")),
    };
    let to = match request.to.as_ref().map(When::millis).transpose() {
        Ok(to) => to,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("to: {e}")),
    };
    if let Some(to) = to
        && to <= from
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("the window is empty: to ({to}) must be after from ({from})"),
        );
    }
    let topics: Vec<String> = route
        .selector
        .event_types()
        .iter()
        .filter(|t| request.patterns.is_empty() || request.patterns.iter().any(|p| p.matches(**t)))
        .map(|t| format!("{}{}", state.topic_prefix, t.topic()))
        .collect();
    if topics.is_empty() {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "patterns {:?} select none of route '{}''s event types",
                request
                    .patterns
                    .iter()
                    .map(Pattern::as_str)
                    .collect::<Vec<_>>(),
                route.name
            ),
        );
    }
    match run(&state, &route, &request, topics, from, to).await {
        Ok(answer) => (StatusCode::OK, Json(answer)).into_response(),
        Err(e) => {
            tracing::warn!(route = %route.name, error = %e, "replay failed");
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("replay failed: {e}"),
            )
        }
    }
}

/// Where a replay's events go.
enum Target {
    Count,
    Webhook(WebhookSender),
    Clients { fallback: Option<WebhookSender> },
}

#[derive(Default)]
struct Tally {
    matched: u64,
    delivered: u64,
    failed: u64,
    no_client: u64,
    failed_ids: Vec<String>,
}

async fn run(
    state: &ReplayState,
    route: &Route,
    request: &ReplayRequest,
    topics: Vec<String>,
    from: i64,
    to: Option<i64>,
) -> Result<Value, reader::ReadError> {
    let target = if request.dry_run {
        Target::Count
    } else {
        match &route.sink {
            Sink::Webhook(config) => Target::Webhook(sender(config)?),
            Sink::WebSocket(ws) => Target::Clients {
                fallback: ws.fallback_webhook.as_ref().map(sender).transpose()?,
            },
        }
    };
    let (consumer, plan) = state.reader.plan(topics, from, to).await?;
    let (tx, mut rx) = mpsc::channel::<Record>(256);
    let reading = {
        let reader = state.reader.clone();
        let plan = plan.clone();
        tokio::spawn(async move { reader.read(consumer, &plan, tx).await })
    };
    let mut tally = Tally::default();
    while let Some(record) = rx.recv().await {
        let json = crate::event_json(&record.event);
        let event_type = record.event.event_type();
        if !route.selector.matches(event_type, &json)
            || !(request.patterns.is_empty()
                || request.patterns.iter().any(|p| p.matches(event_type)))
        {
            continue;
        }
        tally.matched += 1;
        deliver(state, route, &target, &record, &json, &mut tally).await;
    }
    let summary = reading.await??;
    Ok(json!({
        "route": route.name,
        "from": from,
        "to": to,
        "dry_run": request.dry_run,
        "scanned": summary.records,
        "undecodable": summary.undecodable,
        "matched": tally.matched,
        "delivered": tally.delivered,
        "failed": tally.failed,
        "no_client": tally.no_client,
        "failed_event_ids": tally.failed_ids,
    }))
}

fn sender(config: &WebhookConfig) -> Result<WebhookSender, reader::ReadError> {
    WebhookSender::new(config.clone()).map_err(reader::ReadError::Sink)
}

async fn deliver(
    state: &ReplayState,
    route: &Route,
    target: &Target,
    record: &Record,
    json: &Value,
    tally: &mut Tally,
) {
    match target {
        Target::Count => {}
        Target::Webhook(sender) => {
            let sent = sender.send(&[&record.event], &state.cancel).await;
            tally.count(sent.is_ok(), &record.event);
        }
        Target::Clients { fallback } => {
            let message = Arc::new(Outgoing::new(
                &record.event,
                json,
                record.topic.clone(),
                record.partition,
                record.offset,
                true,
            ));
            if state.hub.publish_to_route(&message, &route.name) > 0 {
                tally.delivered += 1;
            } else if let Some(sender) = fallback {
                let sent = sender.send(&[&record.event], &state.cancel).await;
                tally.count(sent.is_ok(), &record.event);
            } else {
                tally.no_client += 1;
            }
        }
    }
}

impl Tally {
    fn count(&mut self, ok: bool, event: &Event) {
        if ok {
            self.delivered += 1;
        } else {
            self.failed += 1;
            if self.failed_ids.len() < FAILED_IDS_SHOWN {
                self.failed_ids.push(event.envelope().event_id.clone());
            }
        }
    }
}
