//! Runtime configuration: flags with environment fallbacks, defaults that work
//! with `scripts/dev-stack.sh`.

use std::time::Duration;

use clap::Args;
use opal_schemas::Environment;
use opal_topics::telemetry::LogArgs;
use opal_topics::{KafkaArgs, RegistryArgs};

/// How to reach Redis (shared by every binary that keeps state there).
#[derive(Clone, Args)]
pub struct RedisArgs {
    /// Redis holding idempotency keys and consumer state
    /// (`redis://[:password@]host:port[/db]`).
    #[arg(
        id = "redis_url",
        long = "redis-url",
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub url: String,
}

impl std::fmt::Debug for RedisArgs {
    // The URL may carry a password: it never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisArgs")
            .field("url", &opal_schemas::redact_url_password(&self.url))
            .finish()
    }
}

#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub registry: RegistryArgs,

    #[command(flatten)]
    pub redis: RedisArgs,

    /// Consumer group; defaults to the consumer's own (opal-diagnostics, ...).
    #[arg(long, env = "OPAL_CONSUMER_GROUP")]
    pub group: Option<String>,

    /// Static group membership (`group.instance.id`), unique per replica: a
    /// replica that restarts under the same id, even after a crash, takes its
    /// partitions back at once instead of waiting for the group to expire it.
    #[arg(long, env = "OPAL_GROUP_INSTANCE_ID")]
    pub group_instance_id: Option<String>,

    /// Prefix of every topic name (must match kafka-init's).
    #[arg(long, env = "OPAL_TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,

    /// Environment stamped on emitted events.
    #[arg(long = "env", env = "OPAL_ENV", default_value = "development")]
    pub environment: Environment,

    /// HTTP address for /metrics and /health; defaults to the consumer's own port.
    #[arg(long, env = "OPAL_HTTP_LISTEN")]
    pub http_listen: Option<String>,

    /// How long an event's done-mark is kept (seconds).
    #[arg(long, env = "OPAL_IDEMPOTENCY_TTL_SECS", default_value_t = 24 * 3600)]
    pub idempotency_ttl_secs: u64,

    /// How long a processing lease lasts (milliseconds).
    #[arg(long, env = "OPAL_LEASE_MS", default_value_t = 15_000)]
    pub lease_ms: u64,

    /// First retry delay for transient handler errors (milliseconds).
    #[arg(long, env = "OPAL_RETRY_BASE_MS", default_value_t = 100)]
    pub retry_base_ms: u64,

    /// Largest retry delay (milliseconds).
    #[arg(long, env = "OPAL_RETRY_MAX_MS", default_value_t = 5_000)]
    pub retry_max_ms: u64,

    /// Attempts before a transient failure goes to the DLQ.
    #[arg(long, env = "OPAL_RETRY_ATTEMPTS", default_value_t = 5)]
    pub retry_attempts: u32,

    /// How long shutdown and revocation may spend finishing in-flight work (milliseconds).
    #[arg(long, env = "OPAL_DRAIN_TIMEOUT_MS", default_value_t = 10_000)]
    pub drain_timeout_ms: u64,

    /// Kafka session timeout (milliseconds); must exceed the drain timeout.
    #[arg(long, env = "OPAL_SESSION_TIMEOUT_MS", default_value_t = 30_000)]
    pub session_timeout_ms: u64,

    /// Most events handled per poll batch. Each batch costs two fsynced Redis
    /// writes (lease, then done-marks), so under load a big batch spreads them
    /// over more events; a batch takes only what is already fetched, so light
    /// traffic still goes through in small batches.
    #[arg(long, env = "OPAL_MAX_BATCH", default_value_t = 2000)]
    pub max_batch: usize,

    /// How long a batch being collected waits for one more record before it
    /// is processed (microseconds). 0, the default, takes only what the
    /// client has already fetched: while a batch is in Redis the next one
    /// builds up by itself, and light traffic is not held back (2 000 had
    /// cost ~5 ms of p50 at 5 000-10 000 events/s; see README "Performance").
    #[arg(long, env = "OPAL_BATCH_WAIT_US", default_value_t = 0)]
    pub batch_wait_us: u64,

    #[command(flatten)]
    pub log: LogArgs,
}

impl RuntimeArgs {
    /// Settings for the local stack (tests).
    pub fn local(brokers: &str, registry_url: &str, redis_url: &str) -> Self {
        RuntimeArgs {
            kafka: KafkaArgs::local(brokers),
            registry: RegistryArgs {
                url: registry_url.to_owned(),
                username: None,
                password: None,
            },
            redis: RedisArgs {
                url: redis_url.to_owned(),
            },
            group: None,
            group_instance_id: None,
            topic_prefix: String::new(),
            environment: Environment::Development,
            http_listen: None,
            idempotency_ttl_secs: 24 * 3600,
            lease_ms: 15_000,
            retry_base_ms: 100,
            retry_max_ms: 5_000,
            retry_attempts: 5,
            drain_timeout_ms: 10_000,
            session_timeout_ms: 30_000,
            max_batch: 2000,
            batch_wait_us: 0,
            log: LogArgs::default(),
        }
    }

    /// Refuses settings that cannot work together.
    pub fn validate(&self) -> Result<(), String> {
        if self.drain_timeout_ms >= self.session_timeout_ms {
            return Err(format!(
                "drain timeout ({} ms) must be smaller than session.timeout.ms ({} ms), or the group evicts us mid-drain",
                self.drain_timeout_ms, self.session_timeout_ms
            ));
        }
        if self.retry_attempts == 0 {
            return Err("retry attempts must be at least 1".to_owned());
        }
        if self.max_batch == 0 {
            return Err("max batch must be at least 1".to_owned());
        }
        Ok(())
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    /// Delay before retry `attempt` (1-based): exponential from the base, capped, with full jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .retry_base_ms
            .saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
        let cap = exp.min(self.retry_max_ms).max(1);
        Duration::from_millis(rand::random_range(cap / 2..=cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_password_never_reaches_debug_output() {
        let args = RedisArgs {
            url: "redis://:s3cret@redis.internal:6379/2".to_owned(),
        };
        let shown = format!("{args:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("redis://:<redacted>@redis.internal:6379/2"),
            "{shown}"
        );
        let plain = RedisArgs {
            url: "redis://127.0.0.1:6379".to_owned(),
        };
        assert!(format!("{plain:?}").contains("redis://127.0.0.1:6379"));
    }

    #[test]
    fn drain_must_fit_in_the_session_timeout() {
        let mut args = RuntimeArgs::local("b", "r", "redis://x");
        assert!(args.validate().is_ok());
        args.drain_timeout_ms = 30_000;
        assert!(
            args.validate()
                .expect_err("refused")
                .contains("session.timeout.ms")
        );
    }

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_a_cap() {
        let args = RuntimeArgs::local("b", "r", "redis://x");
        for _ in 0..100 {
            let first = args.backoff(1).as_millis();
            assert!((50..=100).contains(&first), "{first}");
            let third = args.backoff(3).as_millis();
            assert!((200..=400).contains(&third), "{third}");
            assert!(args.backoff(30).as_millis() <= 5_000);
        }
    }
}
