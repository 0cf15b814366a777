//! Redis with AUTH (`requirepass`): a consumer given the password in
//! `REDIS_URL` applies its events there; a wrong or a missing password stops
//! it at start-up with an error naming Redis's refusal (a configuration
//! error, not an outage to wait out), and never prints the password.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use opal_e2e::unique;

fn private_redis(password: &str) -> PrivateRedis {
    let dir = std::env::temp_dir().join(unique("opal-redis-auth"));
    PrivateRedis::start_with_password(free_port(), &dir, password)
}

/// Runs the counting consumer of `env` with `redis_url` and expects it to stop
/// by itself; the guard only keeps a consumer that waits forever from hanging
/// the suite.
fn run_to_exit(env: &Env, redis_url: &str) -> Output {
    let mut child = env
        .counting_command(
            "knowledge.upserted",
            free_port(),
            &[("REDIS_URL", redis_url)],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn opal-counting-consumer");
    let guard = Instant::now() + TIMEOUT;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > guard {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "the consumer kept running instead of refusing to start: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().expect("output")
}

#[tokio::test]
async fn a_consumer_applies_its_events_in_a_redis_that_requires_a_password() {
    let password = unique("redis-pw");
    let redis_server = private_redis(&password);
    redis_server.answering().await;
    let url = redis_server.url();
    assert!(url.contains(&password), "{url}");
    let env = Env::new().await;
    let _consumer = env.spawn_counting_with(free_port(), &[("REDIS_URL", url.as_str())]);

    let ids = publish_knowledge(&env, 20, "auth").await;
    let mut connection = redis_at(&url).await;
    let key = env.total_key();
    wait_until(TIMEOUT, "20 events applied in the private redis", || {
        let mut r = connection.clone();
        let key = key.clone();
        async move { get_count(&mut r, &key).await >= 20 }
    })
    .await;
    assert_eq!(
        counts(&mut connection, &env.count_prefix, &ids).await,
        vec![1; 20],
        "each event applied once, in the Redis behind the password"
    );
}

#[tokio::test]
async fn a_wrong_or_missing_redis_password_stops_the_consumer_at_start_up() {
    let password = unique("redis-pw");
    let redis_server = private_redis(&password);
    redis_server.answering().await;
    let env = Env::new().await;
    let wrong = unique("wrong-pw");
    let port = redis_server
        .url()
        .rsplit(':')
        .next()
        .expect("port")
        .to_owned();

    for (case, url) in [
        (
            "a wrong password",
            format!("redis://:{wrong}@127.0.0.1:{port}"),
        ),
        ("no password", format!("redis://127.0.0.1:{port}")),
    ] {
        let output = run_to_exit(&env, &url);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{case}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "Redis at 127.0.0.1:{port} refused the credentials in REDIS_URL"
            )),
            "{case}: the error names Redis's refusal: {stderr}"
        );
        for secret in [&wrong, &password] {
            assert!(
                !stderr.contains(secret.as_str()),
                "{case}: a password is printed: {stderr}"
            );
        }
    }
}
