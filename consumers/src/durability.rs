//! Whether Redis keeps the done-marks through a crash.
//!
//! Exactly-once rests on a done-mark, once acknowledged, never being lost: an
//! event whose mark vanished in a Redis crash is applied a second time when
//! it is redelivered. Only append-only persistence with an fsync per write
//! (`appendonly yes`, `appendfsync always`) guarantees that; `everysec` loses
//! up to a second of writes on kill -9 or power loss, `no` and snapshots more.
//! The runtime cannot enforce it (a managed Redis may refuse `CONFIG`), so it
//! observes the setting and names it in `/health/ready` and in a warning.

use redis::aio::ConnectionLike;

/// The setting a production Redis needs, as `/health/ready` and the README name it.
pub const REQUIRED: &str = "appendonly yes, appendfsync always";

/// What Redis says about its persistence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisPersistence {
    Observed {
        appendonly: String,
        appendfsync: String,
    },
    /// `CONFIG GET` was refused (managed services often disable it).
    Unknown { reason: String },
}

impl RedisPersistence {
    /// Asks Redis with one `CONFIG GET` (a pattern: naming two parameters
    /// needs Redis 7).
    pub async fn observe(connection: &mut impl ConnectionLike) -> RedisPersistence {
        let answer: redis::RedisResult<std::collections::HashMap<String, String>> =
            redis::cmd("CONFIG")
                .arg("GET")
                .arg("append*")
                .query_async(connection)
                .await;
        match answer {
            Ok(mut settings) => match (
                settings.remove("appendonly"),
                settings.remove("appendfsync"),
            ) {
                (Some(appendonly), Some(appendfsync)) => RedisPersistence::Observed {
                    appendonly,
                    appendfsync,
                },
                _ => RedisPersistence::Unknown {
                    reason: "CONFIG GET did not name appendonly and appendfsync".into(),
                },
            },
            Err(e) => RedisPersistence::Unknown {
                reason: format!("CONFIG GET refused: {}", kind_name(&e)),
            },
        }
    }

    /// Whether acknowledged done-marks survive a crash of Redis.
    pub fn durable(&self) -> Option<bool> {
        match self {
            RedisPersistence::Observed {
                appendonly,
                appendfsync,
            } => Some(appendonly == "yes" && appendfsync == "always"),
            RedisPersistence::Unknown { .. } => None,
        }
    }

    /// The `/health/ready` entry.
    pub fn report(&self) -> serde_json::Value {
        let observed = match self {
            RedisPersistence::Observed {
                appendonly,
                appendfsync,
            } => {
                format!("appendonly {appendonly}, appendfsync {appendfsync}")
            }
            RedisPersistence::Unknown { reason } => format!("unknown ({reason})"),
        };
        serde_json::json!({
            "observed": observed,
            "required": REQUIRED,
            "durable": self.durable(),
        })
    }
}

/// The error's kind or code only: a refused `CONFIG` needs no more, and a
/// message could carry more than health output should.
fn kind_name(e: &redis::RedisError) -> String {
    e.code()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{:?}", e.kind()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(appendonly: &str, appendfsync: &str) -> RedisPersistence {
        RedisPersistence::Observed {
            appendonly: appendonly.into(),
            appendfsync: appendfsync.into(),
        }
    }

    #[test]
    fn only_an_fsync_per_write_is_durable() {
        assert_eq!(observed("yes", "always").durable(), Some(true));
        assert_eq!(observed("yes", "everysec").durable(), Some(false));
        assert_eq!(observed("no", "always").durable(), Some(false));
        let unknown = RedisPersistence::Unknown { reason: "x".into() };
        assert_eq!(unknown.durable(), None);
        assert_eq!(observed("yes", "everysec").report()["required"], REQUIRED);
    }
}
