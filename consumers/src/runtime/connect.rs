//! Connecting to Redis at start-up, where a refusal of our credentials is a
//! configuration error to report at once, not an outage to wait out.

use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::classify::redis_refuses_credentials;

/// Connects to Redis at `url` and sends one PING: a connection without the
/// password Redis requires opens fine and fails only on its first command,
/// which would otherwise be the first event's.
pub(super) async fn connect_redis(url: &str) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(url).context("REDIS_URL is not a Redis URL")?;
    // Host and port only: the URL itself may carry the password.
    let at = client.get_connection_info().addr().to_string();
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(1));
    let connected = async {
        let mut connection = client.get_connection_manager_with_config(config).await?;
        redis::cmd("PING")
            .query_async::<()>(&mut connection)
            .await?;
        Ok::<_, redis::RedisError>(connection)
    };
    connected.await.map_err(|e| {
        if redis_refuses_credentials(&e) {
            anyhow::anyhow!(
                "Redis at {at} refused the credentials in REDIS_URL ({e}); give them as \
                 redis://:PASSWORD@host:port, or redis://USER:PASSWORD@host:port for an ACL user"
            )
        } else {
            anyhow::Error::new(e).context(format!("cannot connect to Redis at {at} (REDIS_URL)"))
        }
    })
}
