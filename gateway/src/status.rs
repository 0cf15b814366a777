//! `GET /health/routes`: the routes in force (name, sink, patterns; a
//! webhook's URL without any password, never its secret) and the last
//! reload's outcome.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};

use crate::reload::ReloadStatus;
use crate::routes::Sink;
use crate::table::RouteTable;

pub fn router(table: RouteTable, status: ReloadStatus) -> Router {
    Router::new()
        .route("/health/routes", get(routes))
        .with_state((table, status))
}

async fn routes(State((table, status)): State<(RouteTable, ReloadStatus)>) -> axum::Json<Value> {
    let routes: Vec<Value> = table
        .current()
        .routes
        .iter()
        .map(|r| {
            let url = match &r.sink {
                Sink::Webhook(w) => Some(opal_schemas::redact_url_password(&w.url)),
                Sink::WebSocket(ws) => ws
                    .fallback_webhook
                    .as_ref()
                    .map(|w| opal_schemas::redact_url_password(&w.url)),
            };
            json!({
                "name": r.name,
                "sink": r.sink.kind(),
                "selector": r.selector,
                "url": url,
            })
        })
        .collect();
    axum::Json(json!({"routes": routes, "last_reload": status.last()}))
}
