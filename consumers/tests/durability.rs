//! `/health/ready` names Redis's persistence: exactly-once through a Redis
//! crash needs `appendonly yes` with `appendfsync always`, and an operator
//! must see when the Redis in use is weaker (it is reported, not refused).

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// Waits until readiness reports Redis's persistence as `observed`; returns the body.
async fn persistence_reported(port: u16, observed: &str) -> (u16, Value) {
    let what = format!("/health/ready naming redis persistence {observed:?}");
    wait_until(Duration::from_secs(60), &what, || async move {
        http_get(port, "/health/ready")
            .await
            .is_some_and(|(_, body)| {
                serde_json::from_str::<Value>(&body)
                    .is_ok_and(|b| b["redis_persistence"]["observed"] == observed)
            })
    })
    .await;
    let (status, body) = http_get(port, "/health/ready").await.expect("readiness");
    (status, serde_json::from_str(&body).expect("json"))
}

#[tokio::test]
async fn readiness_names_redis_persistence_and_reports_a_weaker_setting_as_not_durable() {
    let env = Env::new().await;
    let dir = std::env::temp_dir().join(opal_e2e::unique("opal-redis"));
    let redis_server = PrivateRedis::start(free_port(), &dir);
    redis_server.answering().await;
    let url = redis_server.url();
    let http = free_port();
    let _consumer = env.spawn_counting_with(http, &[("REDIS_URL", url.as_str())]);

    let (status, body) = persistence_reported(http, "appendonly yes, appendfsync always").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["redis_persistence"]["durable"], true, "{body}");
    assert_eq!(
        body["redis_persistence"]["required"], "appendonly yes, appendfsync always",
        "{body}"
    );

    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendfsync")
        .arg("everysec")
        .query_async(&mut redis_at(&url).await)
        .await
        .expect("CONFIG SET");
    let (status, body) = persistence_reported(http, "appendonly yes, appendfsync everysec").await;
    assert_eq!(body["redis_persistence"]["durable"], false, "{body}");
    assert_eq!(
        status, 200,
        "a weaker setting is reported, not a reason to stop: {body}"
    );
}
