//! `GET /`: a small live page for people. It connects to `/ws`, subscribes
//! with the patterns and filter typed in, and lists events as they arrive,
//! newest first. One static file, compiled in.

use axum::Router;
use axum::response::Html;
use axum::routing::get;

const INDEX: &str = include_str!("index.html");

pub fn router() -> Router {
    Router::new().route("/", get(|| async { Html(INDEX) }))
}
