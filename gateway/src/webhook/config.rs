//! A webhook sink's settings, as written in the routes file.

use std::time::Duration;

use serde::Deserialize;

use super::secret::WebhookSecret;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where events are POSTed (http or https).
    pub url: String,
    /// `whsec_...`: the Standard Webhooks signing secret.
    pub secret: WebhookSecret,
    /// Events per POST; 1 sends one JSON object, more send a JSON array.
    #[serde(default = "one")]
    pub batch_size: usize,
    /// How long a batch waits to fill before it is sent anyway.
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
    /// How long one POST may take.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts of a failing POST (5xx, 429, timeout) before the event goes
    /// to the gateway's DLQ.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// First retry delay; doubles each retry, with jitter, up to `backoff_max_ms`.
    #[serde(default = "default_backoff_base_ms")]
    pub backoff_base_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Most POSTs per second to this receiver (none: unlimited).
    #[serde(default)]
    pub rate_per_sec: Option<f64>,
    /// How long the route waits for a receiver that cannot be reached
    /// (connection refused) before its events spend their attempts and go
    /// to the DLQ: the pause is bounded.
    #[serde(default = "default_max_pause_secs")]
    pub max_pause_secs: u64,
    /// Where a new route starts: at the end of its topics (`latest`, the
    /// default: no history) or at their beginning (`earliest`). A route that
    /// has run before always continues where it stopped.
    #[serde(default)]
    pub start: Start,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    #[default]
    Latest,
    Earliest,
}

fn one() -> usize {
    1
}
fn default_max_wait_ms() -> u64 {
    50
}
fn default_timeout_ms() -> u64 {
    5_000
}
fn default_attempts() -> u32 {
    5
}
fn default_backoff_base_ms() -> u64 {
    200
}
fn default_backoff_max_ms() -> u64 {
    10_000
}
fn default_max_pause_secs() -> u64 {
    600
}

impl WebhookConfig {
    /// A config with the defaults (tests, the fallback webhook).
    pub fn new(url: &str, secret: WebhookSecret) -> Self {
        WebhookConfig {
            url: url.to_owned(),
            secret,
            batch_size: one(),
            max_wait_ms: default_max_wait_ms(),
            timeout_ms: default_timeout_ms(),
            attempts: default_attempts(),
            backoff_base_ms: default_backoff_base_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            rate_per_sec: None,
            max_pause_secs: default_max_pause_secs(),
            start: Start::Latest,
        }
    }

    /// Refuses settings that cannot work; the reason names the setting.
    pub fn validate(&self) -> Result<(), String> {
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| format!("webhook url '{}': {e}", self.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("webhook url '{}': must be http or https", self.url));
        }
        if self.batch_size == 0 {
            return Err("batch_size must be at least 1".to_owned());
        }
        if self.attempts == 0 {
            return Err("attempts must be at least 1".to_owned());
        }
        if self.timeout_ms == 0 {
            return Err("timeout_ms must be at least 1".to_owned());
        }
        if self.backoff_base_ms > self.backoff_max_ms {
            return Err("backoff_base_ms must not exceed backoff_max_ms".to_owned());
        }
        if let Some(rate) = self.rate_per_sec
            && !(rate > 0.0 && rate.is_finite())
        {
            return Err("rate_per_sec must be a positive number".to_owned());
        }
        Ok(())
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn max_wait(&self) -> Duration {
        Duration::from_millis(self.max_wait_ms)
    }

    pub fn max_pause(&self) -> Duration {
        Duration::from_secs(self.max_pause_secs)
    }

    /// Delay before retry `attempt` (1-based): exponential from the base,
    /// capped, with jitter (half to all of it), so receivers coming back are
    /// not hit by every sender at once.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .backoff_base_ms
            .saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
        let cap = exp.min(self.backoff_max_ms).max(1);
        Duration::from_millis(rand::random_range(cap / 2..=cap))
    }
}
