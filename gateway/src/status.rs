//! `GET /health/routes`: the routes in force (name, sink, selector; a
//! webhook's origin only, since its path, query or user info often carry a
//! token; never its secret) and the last reload's outcome.

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
                Sink::Webhook(w) => Some(origin(&w.url)),
                Sink::WebSocket(ws) => ws.fallback_webhook.as_ref().map(|w| origin(&w.url)),
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

/// `scheme://host[:port]` of a webhook URL.
fn origin(url: &str) -> String {
    reqwest::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| "<invalid>".to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_origin_of_a_webhook_url_is_shown() {
        assert_eq!(
            super::origin("https://user:pw@hooks.example.com:8443/services/T0/B0/XYZ?token=abc"),
            "https://hooks.example.com:8443"
        );
    }
}
