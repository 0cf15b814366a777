//! Set-up for the webhook and routes-file tests: the gateway, the stack and
//! publishing come from `ws_support` (one copy); here are a webhook receiver
//! that can go down and answer failures, the Standard Webhooks verifier
//! (the reference Python library), routes-file text and DLQ reading.

#![allow(dead_code, unused_imports, unreachable_pub, clippy::unwrap_used)]

pub mod receiver;
pub mod verifier;

use std::time::Duration;

use opal_e2e::{brokers, unique};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;

pub use receiver::Hook;
pub use verifier::verify;

/// A test secret (`whsec_` + base64 of 32 bytes).
pub fn secret() -> String {
    use base64::Engine;
    let key: [u8; 32] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// One `[[route]]` with a webhook sink; `extra` lines go into its webhook table.
pub fn webhook_route(
    name: &str,
    patterns: &str,
    filter: Option<&str>,
    url: &str,
    secret: &str,
    extra: &str,
) -> String {
    let filter = filter
        .map(|f| format!("filter = {f}\n"))
        .unwrap_or_default();
    format!(
        "[[route]]\nname = \"{name}\"\npatterns = {patterns}\n{filter}[route.webhook]\nurl = \"{url}\"\nsecret = \"{secret}\"\nstart = \"earliest\"\n{extra}\n"
    )
}

/// Every record of `topic` (waits until there are at least `at_least`).
pub async fn read_topic(topic: &str, at_least: usize, timeout: Duration) -> Vec<OwnedMessage> {
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("gw-reader"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("reader");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while out.len() < at_least {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => out.push(m.detach()),
            Ok(Err(e)) => panic!("reading {topic}: {e}"),
            Err(_) => panic!(
                "{topic}: {} of {at_least} records within {timeout:?}",
                out.len()
            ),
        }
    }
    out
}

/// A header of a record, as text.
pub fn header(m: &OwnedMessage, name: &str) -> Option<String> {
    use rdkafka::message::Headers;
    let headers = m.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Waits until `check` holds, polling; panics with `what` after `timeout`.
pub async fn until(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
