//! The consuming side of `cluster.rs`: `opal-counting-consumer` as a child
//! process, its per-event counters in Redis and its /metrics.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use opal_e2e::{redis_url, registry_url, workspace_bin};

use crate::{APPLY_LIMIT, GROUP};

pub(crate) fn spawn_consumer(
    brokers: &str,
    prefix: &str,
    count_prefix: &str,
    http_port: u16,
    log: &Path,
) -> Child {
    Command::new(workspace_bin("opal-counting-consumer"))
        .args([
            "--inputs",
            "knowledge.upserted",
            "--count-prefix",
            count_prefix,
        ])
        .env("KAFKA_BROKERS", brokers)
        .env("SCHEMA_REGISTRY_URL", registry_url())
        .env("REDIS_URL", redis_url())
        .env("OPAL_TOPIC_PREFIX", prefix)
        .env("OPAL_CONSUMER_GROUP", GROUP)
        .env("OPAL_ENV", "production")
        .env("OPAL_HTTP_LISTEN", format!("127.0.0.1:{http_port}"))
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "0")
        .env_remove("OPAL_GROUP_INSTANCE_ID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(log).expect("consumer log"))
        .spawn()
        .expect("spawn opal-counting-consumer")
}

/// A child process that cannot outlive a failed test.
pub(crate) struct Process(pub(crate) Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn redis() -> redis::Connection {
    redis::Client::open(redis_url())
        .expect("redis url")
        .get_connection()
        .expect("redis")
}

pub(crate) fn get_count(key: &str) -> i64 {
    redis::cmd("GET")
        .arg(key)
        .query::<Option<i64>>(&mut redis())
        .expect("GET")
        .unwrap_or(0)
}

/// Every event's counter (`<prefix>:count:<event id>`), in the order of `ids`.
pub(crate) fn get_counts(count_prefix: &str, ids: &[String]) -> Vec<i64> {
    let mut connection = redis();
    ids.chunks(1000)
        .flat_map(|chunk| {
            let keys: Vec<String> = chunk
                .iter()
                .map(|id| format!("{count_prefix}:count:{id}"))
                .collect();
            redis::cmd("MGET")
                .arg(&keys)
                .query::<Vec<Option<i64>>>(&mut connection)
                .expect("MGET")
        })
        .map(|v| v.unwrap_or(0))
        .collect()
}

pub(crate) fn wait_for_total(count_prefix: &str, at_least: i64, log: &Path) {
    let key = format!("{count_prefix}:total");
    let deadline = Instant::now() + APPLY_LIMIT;
    loop {
        let total = get_count(&key);
        if total >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the consumer applied {total} of {at_least} within {APPLY_LIMIT:?}; log tail:\n{}",
            tail(log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `opal_events_consumed_total{outcome}` for `topic`, from the consumer's /metrics.
pub(crate) fn consumed(port: u16, topic: &str, outcome: &str) -> f64 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to /metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    answer
        .lines()
        .filter(|l| l.starts_with("opal_events_consumed_total{"))
        .filter(|l| l.contains(&format!("topic=\"{topic}\"")))
        .filter(|l| l.contains(&format!("outcome=\"{outcome}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub(crate) fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

pub(crate) fn wait_exit(child: &mut Child, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the consumer did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
