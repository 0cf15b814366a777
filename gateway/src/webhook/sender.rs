//! Signing and POSTing one batch of events to a webhook, as the Standard
//! Webhooks specification says: `webhook-id`, `webhook-timestamp` (Unix
//! seconds, taken at each attempt) and `webhook-signature`
//! (`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`). The body is the event
//! in the JSON form `opal-producer read` prints ([`crate::event_json`]), or a
//! JSON array of them for a batch. `webhook-id` is the event id (a batch's is
//! derived from its events' ids), stable across retries: receivers use it as
//! their idempotency key.

use std::time::Duration;

use opal_schemas::Event;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::config::WebhookConfig;
use super::rate::RateLimit;

/// Header naming the event type (a batch: the types, comma-separated, in order).
pub const EVENT_TYPE_HEADER: &str = "opal-event-type";

/// Why a POST did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The receiver cannot be reached (connection refused, DNS): it is down.
    /// The route waits for it (bounded), spending no attempts.
    #[error("receiver unreachable: {0}")]
    Unreachable(String),
    /// The receiver answered something other than 2xx, or too late: the
    /// event spends an attempt.
    #[error("receiver failed: {0}")]
    Failed(String),
    /// Shutdown came while waiting to retry.
    #[error("cancelled")]
    Cancelled,
}

pub struct WebhookSender {
    client: reqwest::Client,
    config: WebhookConfig,
    limit: Option<RateLimit>,
}

/// One POST's body and identity.
pub struct Message {
    pub id: String,
    pub body: Vec<u8>,
    pub event_types: String,
}

impl Message {
    /// The message for `events` (one: the object; several: an array).
    pub fn of(events: &[&Event]) -> Message {
        let (id, body) = match events {
            [one] => (one.envelope().event_id.clone(), crate::event_json(one)),
            many => (
                batch_id(many),
                Value::Array(many.iter().map(|e| crate::event_json(e)).collect()),
            ),
        };
        let event_types: Vec<&str> = events.iter().map(|e| e.event_type().name()).collect();
        Message {
            id,
            body: body.to_string().into_bytes(),
            event_types: event_types.join(","),
        }
    }
}

/// A batch's id: derived from its events' ids, so the same batch sent again
/// carries the same id.
fn batch_id(events: &[&Event]) -> String {
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e.envelope().event_id.as_str())
        .collect();
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, ids.join(",").as_bytes()).to_string()
}

impl WebhookSender {
    pub fn new(config: WebhookConfig) -> Result<Self, String> {
        config.validate()?;
        let client = reqwest::Client::builder()
            // A 3xx is an answer, not a 2xx: the event is not followed elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout())
            .connect_timeout(config.timeout().min(Duration::from_secs(5)))
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        let limit = config.rate_per_sec.map(RateLimit::per_second);
        Ok(WebhookSender {
            client,
            config,
            limit,
        })
    }

    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    /// One attempt: waits for the rate limit, signs, POSTs.
    pub async fn send_once(&self, message: &Message) -> Result<(), SendError> {
        if let Some(limit) = &self.limit {
            limit.acquire().await;
        }
        let timestamp = opal_schemas::now_millis() / 1000;
        let signature = self
            .config
            .secret
            .sign(&message.id, timestamp, &message.body)
            .map_err(SendError::Failed)?;
        let response = self
            .client
            .post(&self.config.url)
            .header("content-type", "application/json")
            .header("webhook-id", &message.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .header(EVENT_TYPE_HEADER, &message.event_types)
            .body(message.body.clone())
            .send()
            .await;
        // A webhook URL often carries a token (a path or query secret): errors
        // are logged and written to DLQ headers without it.
        let response = response.map_err(reqwest::Error::without_url);
        match response {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(SendError::Failed(format!("HTTP {}", r.status()))),
            Err(e) if e.is_connect() => Err(SendError::Unreachable(error_chain(&e))),
            Err(e) if e.is_timeout() => Err(SendError::Failed(format!(
                "no answer within {} ms",
                self.config.timeout_ms
            ))),
            Err(e) => Err(SendError::Failed(error_chain(&e))),
        }
    }

    /// Sends `events` with retries: attempts and backoff from the config, an
    /// unreachable receiver counted as a failed attempt. For senders without
    /// the consumer runtime behind them (the fallback webhook, replay); the
    /// routes' own deliveries retry through the runtime instead.
    pub async fn send(
        &self,
        events: &[&Event],
        cancel: &CancellationToken,
    ) -> Result<(), SendError> {
        let message = Message::of(events);
        let mut attempt = 1;
        loop {
            match self.send_once(&message).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt >= self.config.attempts => return Err(e),
                Err(_) => {}
            }
            tokio::select! {
                _ = cancel.cancelled() => return Err(SendError::Cancelled),
                _ = tokio::time::sleep(self.config.backoff(attempt)) => {}
            }
            attempt += 1;
        }
    }
}

/// The error and its causes on one line (the URL is ours, never a secret).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::WebhookSecret;

    /// A receiver on a free port answering `status` after `delay_ms`.
    async fn receiver(status: u16, delay_ms: u64) -> String {
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || async move {
                tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
                axum::http::StatusCode::from_u16(status).unwrap_or_default()
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://127.0.0.1:{port}/hook")
    }

    fn sender(url: &str, timeout_ms: u64) -> WebhookSender {
        let secret =
            WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let mut config = WebhookConfig::new(url, secret);
        config.timeout_ms = timeout_ms;
        WebhookSender::new(config).expect("sender")
    }

    fn event() -> opal_schemas::Event {
        opal_schemas::samples::default_example(opal_schemas::EventType::DecisionDegraded)
    }

    #[tokio::test]
    async fn only_a_2xx_in_time_is_a_delivery() {
        let e = event();
        let message = Message::of(&[&e]);
        assert_eq!(
            sender(&receiver(204, 0).await, 2_000)
                .send_once(&message)
                .await,
            Ok(())
        );
        let slow = sender(&receiver(200, 3_000).await, 200)
            .send_once(&message)
            .await;
        assert_eq!(
            slow,
            Err(SendError::Failed("no answer within 200 ms".into()))
        );
        let moved = sender(&receiver(308, 0).await, 2_000)
            .send_once(&message)
            .await;
        assert!(
            matches!(&moved, Err(SendError::Failed(m)) if m.contains("308")),
            "{moved:?}"
        );
        let failing = sender(&receiver(500, 0).await, 2_000)
            .send_once(&message)
            .await;
        assert!(
            matches!(&failing, Err(SendError::Failed(m)) if m.contains("500")),
            "{failing:?}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_receiver_is_told_apart_and_its_url_token_is_not_repeated() {
        // Port 1 on loopback: nothing listens, the connection is refused.
        let secret =
            WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let sender = WebhookSender::new(WebhookConfig::new(
            "http://127.0.0.1:1/hook?token=s3cret",
            secret,
        ))
        .expect("sender");
        let event =
            opal_schemas::samples::default_example(opal_schemas::EventType::DecisionDegraded);
        let error = sender
            .send_once(&Message::of(&[&event]))
            .await
            .expect_err("refused");
        assert!(matches!(error, SendError::Unreachable(_)), "{error:?}");
        assert!(!error.to_string().contains("s3cret"), "{error}");
    }
}
