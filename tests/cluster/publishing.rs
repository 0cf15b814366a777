//! The publishing side of `cluster.rs`: `opal-producer publish` runs with
//! event ids of our own, and the topic read back to its high watermarks.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use opal_e2e::{registry_url, unique, workspace_bin};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::{METADATA_TIMEOUT, PER_RUN, RUNS, topic_partitions};

/// The publisher's progress, shared with the test's main thread.
#[derive(Default)]
pub(crate) struct Publishing {
    /// The publish run in flight.
    pub(crate) current: Option<Child>,
    pub(crate) runs_done: usize,
    /// Event ids the producer reported as acknowledged (`acks=all`).
    pub(crate) acknowledged: Vec<String>,
    /// Runs that did not exit 0, with their error output.
    pub(crate) failures: Vec<String>,
    /// When each run started and ended.
    pub(crate) times: Vec<(Instant, Instant)>,
}

/// The moment of the kill.
pub(crate) struct Kill {
    /// The run in flight (0-based).
    pub(crate) run: usize,
    /// Events acknowledged before it.
    pub(crate) acknowledged: usize,
    pub(crate) at: Instant,
}

/// Records committed (below the high watermark) in `partitions` of `topic`.
pub(crate) fn committed_records(client: &BaseConsumer, topic: &str, partitions: &[i32]) -> i64 {
    partitions
        .iter()
        .map(|p| {
            client
                .fetch_watermarks(topic, *p, METADATA_TIMEOUT)
                .map(|(_, high)| high)
                .expect("watermarks")
        })
        .sum()
}

/// Writes the runs' input files: `PER_RUN` knowledge events each, as JSON
/// lines with event ids of our own, so every event is known by its id.
pub(crate) fn write_runs(dir: &Path) -> Vec<PathBuf> {
    let example = Command::new(workspace_bin("opal-producer"))
        .args(["example", "knowledge.upserted"])
        .output()
        .expect("opal-producer example");
    assert!(example.status.success());
    let template: serde_json::Value =
        serde_json::from_slice(&example.stdout).expect("example JSON");
    (0..RUNS)
        .map(|run| {
            let path = dir.join(format!("run-{run}.jsonl"));
            let mut file = File::create(&path).expect("run file");
            for i in 0..PER_RUN {
                let mut event = template.clone();
                event["event_id"] = uuid::Uuid::new_v4().to_string().into();
                event["knowledge_id"] = format!("kb-{}", run * PER_RUN + i).into();
                writeln!(file, "{event}").expect("write run file");
            }
            path
        })
        .collect()
}

/// Runs `opal-producer publish` once per input file, back to back, recording
/// the acknowledged event ids it prints (`topic/partition@offset event_id=...`).
pub(crate) fn publish_all(
    runs: &[PathBuf],
    state: &Mutex<Publishing>,
    brokers: &str,
    prefix: &str,
) {
    for run in runs {
        let out = run.with_extension("out");
        let err = run.with_extension("err");
        let child = Command::new(workspace_bin("opal-producer"))
            .args(["publish", "knowledge.upserted", "--file"])
            .arg(run)
            .env("KAFKA_BROKERS", brokers)
            .env("SCHEMA_REGISTRY_URL", registry_url())
            .env("OPAL_TOPIC_PREFIX", prefix)
            .env("OPAL_ENV", "production")
            // A hang guard: failover takes the broker session timeout (9 s).
            .env("OPAL_DELIVERY_TIMEOUT_MS", "120000")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(File::create(&out).expect("stdout file"))
            .stderr(File::create(&err).expect("stderr file"))
            .spawn()
            .expect("spawn opal-producer");
        let started = Instant::now();
        state.lock().expect("state").current = Some(child);
        let status = loop {
            let mut s = state.lock().expect("state");
            if let Some(status) = s.current.as_mut().and_then(|c| c.try_wait().expect("wait")) {
                s.current = None;
                break status;
            }
            drop(s);
            std::thread::sleep(Duration::from_millis(10));
        };
        let printed = std::fs::read_to_string(&out).expect("stdout");
        let ids = printed
            .lines()
            .filter_map(|l| l.split_once(" event_id="))
            .map(|(_, rest)| rest.split_whitespace().next().unwrap_or("").to_owned());
        let mut s = state.lock().expect("state");
        s.acknowledged.extend(ids);
        if !status.success() {
            let error = std::fs::read_to_string(&err).unwrap_or_default();
            s.failures
                .push(format!("{}: {status}: {error}", run.display()));
        }
        s.times.push((started, Instant::now()));
        s.runs_done += 1;
    }
}

/// Every record's `opal-event-id` header, reading each partition of `topic`
/// from the beginning to its high watermark, and the partitions that could
/// not be read (no leader: no in-sync replica left).
pub(crate) fn read_event_ids(brokers: &str, topic: &str) -> (Vec<String>, Vec<i32>) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("cluster-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let partitions = topic_partitions(brokers, topic);
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    let mut offline = Vec::new();
    for (p, leader, _) in &partitions {
        if *leader < 0 {
            offline.push(*p);
            continue;
        }
        let (_, high) = consumer
            .fetch_watermarks(topic, *p, METADATA_TIMEOUT)
            .expect("watermarks");
        ends.insert(*p, high);
        assignment
            .add_partition_offset(topic, *p, Offset::Beginning)
            .expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    let total: i64 = ends.values().sum();
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut ids = Vec::with_capacity(total as usize);
    let deadline = Instant::now() + METADATA_TIMEOUT;
    let mut last_error = None;
    while ends
        .iter()
        .any(|(p, high)| next.get(p).copied().unwrap_or(0) < *high)
    {
        assert!(
            Instant::now() < deadline,
            "read {} of {total} records of {topic}; last error: {last_error:?}",
            ids.len()
        );
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                next.insert(m.partition(), m.offset() + 1);
                let id = m
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == "opal-event-id"))
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_else(|| panic!("a record without opal-event-id at {}", m.offset()));
                ids.push(id);
            }
            // The killed node's address is in the bootstrap list: librdkafka
            // reports its refused connections and goes on with the others.
            Some(Err(e)) => last_error = Some(e),
            None => {}
        }
    }
    (ids, offline)
}
