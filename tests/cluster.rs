//! The production profile on a real three-node cluster (a private one, see
//! `PrivateCluster`): `opal-admin init --env production` creates replication
//! 3 and `min.insync.replicas=2`, as Kafka's own tools read them back. Then,
//! while `opal-producer publish` runs and `opal-counting-consumer` applies
//! events, the node leading the metadata quorum (and some of the topic's
//! partitions) is killed with -9 in the middle of a publish run. With that
//! node still down, every event the producer acknowledged is in the topic,
//! read from the two survivors, once, and the consumer applied each exactly
//! once (per-event counters in Redis). The node is then started again and
//! rejoins every partition's in-sync replicas.

#[path = "cluster/counting.rs"]
mod counting;
#[path = "cluster/publishing.rs"]
mod publishing;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use counting::*;
use opal_e2e::private_cluster::{NODES, PrivateCluster};
use opal_e2e::probe::free_port;
use opal_e2e::{kafka_tool, registry_url, unique, workspace_bin};
use publishing::*;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// Publish runs, one `opal-producer publish` process each, back to back.
const RUNS: usize = 3;
/// Events per run.
const PER_RUN: usize = 1000;
const EVENTS: usize = RUNS * PER_RUN;
/// Hang guards, not expectations.
const APPLY_LIMIT: Duration = Duration::from_secs(300);
const ISR_LIMIT: Duration = Duration::from_secs(240);
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

/// The production profile's partitions per topic (`topics/topics.toml`).
const PARTITIONS: i32 = 12;
/// The consumer group: one of the catalog's, so kafka-init made its DLQ.
const GROUP: &str = "opal-feedback";

#[test]
fn killing_one_node_of_three_loses_no_acknowledged_event_and_repeats_no_effect() {
    let cluster = PrivateCluster::start();
    let brokers = cluster.brokers();
    let prefix = format!("{}.", unique("cluster"));
    let topic = format!("{prefix}opal.knowledge.upserted");
    let work = tempfile::tempdir().expect("temp dir");

    init_production(&brokers, &prefix);
    assert_production_sizing(&brokers, &prefix, &topic);

    let count_prefix = format!("opal:test:{}", unique("cluster-count"));
    let http_port = free_port();
    let consumer_log = work.path().join("consumer.log");
    let mut consumer = Process(spawn_consumer(
        &brokers,
        &prefix,
        &count_prefix,
        http_port,
        &consumer_log,
    ));

    // The node to kill: the metadata quorum's leader (the active controller),
    // which also leads some of the topic's partitions.
    let victim = quorum_leader(&brokers);
    let led = led_partitions(&topic_partitions(&brokers, &topic), victim);
    assert!(
        !led.is_empty(),
        "node {victim} leads no partition of {topic}: the kill would prove little"
    );

    let runs = write_runs(work.path());
    let state = Arc::new(Mutex::new(Publishing::default()));
    let publisher = {
        let (state, brokers, prefix) = (state.clone(), brokers.clone(), prefix.clone());
        std::thread::spawn(move || publish_all(&runs, &state, &brokers, &prefix))
    };

    // Kill once a third is acknowledged, while a publish run is in flight and
    // has begun writing to the victim's partitions (their high watermarks
    // moved), so that some of its records are still on their way.
    let watermarks: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("watermark client");
    let mut before_run = None;
    let kill = loop {
        let mut s = state.lock().expect("state");
        let in_flight = s
            .current
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        if in_flight && s.acknowledged.len() >= EVENTS / 3 {
            let committed = committed_records(&watermarks, &topic, &led);
            let before = *before_run.get_or_insert(committed);
            if committed > before {
                cluster.kill_9(victim);
                break Kill {
                    run: s.runs_done,
                    acknowledged: s.acknowledged.len(),
                    at: Instant::now(),
                };
            }
            // Watching the watermarks paces this loop; otherwise it sleeps.
            continue;
        }
        assert!(
            s.runs_done < RUNS,
            "every run finished before the kill point"
        );
        drop(s);
        std::thread::sleep(Duration::from_millis(2));
    };
    let applied_at_kill = get_count(&format!("{count_prefix}:total"));

    publisher.join().expect("publisher thread");
    let published = state.lock().expect("state");
    let publish_secs_after_kill = kill.at.elapsed().as_secs_f64();
    let (run_start, run_end) = published.times[kill.run];
    let (in_flight_secs, in_flight_after_kill) = (
        (run_end - run_start).as_secs_f64(),
        (run_end - kill.at).as_secs_f64(),
    );
    let failed: Vec<&String> = published.failures.iter().collect();
    assert!(
        failed.is_empty(),
        "with one node of three down, min.insync.replicas=2 still holds: every run must be acknowledged; failed runs: {failed:#?}"
    );
    let acknowledged = &published.acknowledged;
    assert_eq!(acknowledged.len(), EVENTS, "acknowledged events");

    // Read back with the killed node still down: only the survivors answer.
    let (in_topic, offline) = read_event_ids(&brokers, &topic);
    let mut copies: BTreeMap<&str, usize> = BTreeMap::new();
    for id in &in_topic {
        *copies.entry(id.as_str()).or_default() += 1;
    }
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !copies.contains_key(id.as_str()))
        .collect();
    let doubled = copies.values().filter(|n| **n > 1).count();
    assert_eq!(
        (lost.len(), doubled),
        (0, 0),
        "acknowledged events missing from the topic ({} of them, e.g. {:?}; partitions without a leader: {offline:?}), or written twice ({doubled})",
        lost.len(),
        lost.iter().take(5).collect::<Vec<_>>()
    );
    assert_eq!(
        in_topic.len(),
        EVENTS,
        "the topic holds what was acknowledged and nothing else"
    );

    // The consumer applied every record of the topic exactly once.
    wait_for_total(&count_prefix, in_topic.len() as i64, &consumer_log);
    let duplicates = consumed(http_port, &topic, "duplicate") as i64;
    signal(&consumer.0, "TERM");
    assert_eq!(
        wait_exit(&mut consumer.0, Duration::from_secs(60)),
        Some(0),
        "the consumer stops cleanly; log tail:\n{}",
        tail(&consumer_log)
    );
    let counts = get_counts(&count_prefix, &in_topic);
    let missing = counts.iter().filter(|c| **c == 0).count();
    let repeated = counts.iter().filter(|c| **c > 1).count();
    assert_eq!(
        (missing, repeated),
        (0, 0),
        "every event applied exactly once (missing, repeated)"
    );
    assert_eq!(
        get_count(&format!("{count_prefix}:total")),
        EVENTS as i64,
        "applied in all"
    );

    // The killed node comes back on its state and catches up.
    let restarted = Instant::now();
    cluster.start_node(victim);
    wait_for_full_isr(&brokers, &topic);
    let rejoin_secs = restarted.elapsed().as_secs_f64();
    let isr_witness = kafka_tool(
        "kafka-topics",
        &[
            "--bootstrap-server",
            &brokers,
            "--describe",
            "--topic",
            &topic,
        ],
    );
    assert_eq!(
        isr_witness
            .lines()
            .filter(|l| l.contains("Partition: "))
            .filter(|l| field(l, "Isr").split(',').count() == NODES as usize)
            .count(),
        PARTITIONS as usize,
        "kafka-topics sees three in-sync replicas everywhere:\n{isr_witness}"
    );

    println!(
        "cluster: killed node {victim} (quorum leader, led partitions {led:?}) during publish run {} of {RUNS} \
         after {} of {EVENTS} acknowledged and {applied_at_kill} applied; \
         that run took {in_flight_secs:.1} s (ended {in_flight_after_kill:.1} s after the kill), \
         publishing ended {publish_secs_after_kill:.1} s after the kill; {EVENTS} acknowledged, {} records in the topic, \
         0 lost, 0 written twice; applied: {missing} missing, {repeated} repeated, \
         {duplicates} redeliveries skipped as duplicates; node {victim} back in every ISR {rejoin_secs:.1} s after its start",
        kill.run + 1,
        kill.acknowledged,
        in_topic.len()
    );
}

/// `opal-admin init --env production` under `prefix` on the cluster.
fn init_production(brokers: &str, prefix: &str) {
    let output = Command::new(workspace_bin("opal-admin"))
        .args(["init", "--env", "production"])
        .env("KAFKA_BROKERS", brokers)
        .env("SCHEMA_REGISTRY_URL", registry_url())
        .env("OPAL_TOPIC_PREFIX", prefix)
        .env("RUST_LOG", "warn")
        .env_remove("OPAL_ENV")
        .env_remove("OPAL_TOPIC_CATALOG")
        .env_remove("KAFKA_USERNAME")
        .env_remove("KAFKA_PASSWORD")
        .output()
        .expect("run opal-admin");
    assert!(
        output.status.success(),
        "opal-admin init --env production: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Kafka's own tools see the production profile on every topic under
/// `prefix`: replication 3 with all three in sync, min.insync.replicas 2.
fn assert_production_sizing(brokers: &str, prefix: &str, topic: &str) {
    let pattern = format!("{}.*", prefix.replace('.', "\\."));
    let described = kafka_tool(
        "kafka-topics",
        &[
            "--bootstrap-server",
            brokers,
            "--describe",
            "--topic",
            &pattern,
        ],
    );
    let headers: Vec<&str> = described
        .lines()
        .filter(|l| l.starts_with("Topic: "))
        .collect();
    assert_eq!(
        headers.len(),
        13,
        "nine event topics and four DLQs:\n{described}"
    );
    for header in &headers {
        assert_eq!(field(header, "ReplicationFactor"), "3", "{header}");
        assert!(
            field(header, "Configs")
                .split(',')
                .any(|c| c == "min.insync.replicas=2"),
            "{header}"
        );
    }
    let partitions: Vec<&str> = described
        .lines()
        .filter(|l| l.contains(&format!("Topic: {topic}\tPartition: ")))
        .collect();
    assert_eq!(
        partitions.len(),
        PARTITIONS as usize,
        "production partitions of {topic}"
    );
    for line in partitions {
        assert_eq!(field(line, "Replicas").split(',').count(), 3, "{line}");
        assert_eq!(field(line, "Isr").split(',').count(), 3, "{line}");
    }
    let configs = kafka_tool(
        "kafka-configs",
        &[
            "--bootstrap-server",
            brokers,
            "--describe",
            "--entity-type",
            "topics",
            "--entity-name",
            topic,
        ],
    );
    assert!(
        configs.contains("min.insync.replicas=2"),
        "kafka-configs: {configs}"
    );
}

/// The value of `name: value` in a tab-separated line of `kafka-topics --describe`.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split('\t')
        .filter_map(|f| f.trim().split_once(": "))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

/// The node leading the KRaft metadata quorum, from `kafka-metadata-quorum`.
fn quorum_leader(brokers: &str) -> u16 {
    let status = kafka_tool(
        "kafka-metadata-quorum",
        &["--bootstrap-server", brokers, "describe", "--status"],
    );
    status
        .lines()
        .find_map(|l| l.strip_prefix("LeaderId:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no LeaderId in:\n{status}"))
}

/// One partition: (id, leader, in-sync replicas), from the cluster's metadata.
type PartitionState = (i32, i32, Vec<i32>);

fn topic_partitions(brokers: &str, topic: &str) -> Vec<PartitionState> {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("metadata client");
    let metadata = client
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .expect("metadata");
    metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions())
        .map(|p| (p.id(), p.leader(), p.isr().to_vec()))
        .collect()
}

fn led_partitions(partitions: &[PartitionState], node: u16) -> Vec<i32> {
    partitions
        .iter()
        .filter(|(_, leader, _)| *leader == i32::from(node))
        .map(|(id, _, _)| *id)
        .collect()
}

/// Waits until every partition of `topic` has all three replicas in sync.
fn wait_for_full_isr(brokers: &str, topic: &str) {
    let deadline = Instant::now() + ISR_LIMIT;
    loop {
        let partitions = topic_partitions(brokers, topic);
        if partitions.len() == PARTITIONS as usize
            && partitions
                .iter()
                .all(|(_, _, isr)| isr.len() == NODES as usize)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted node did not rejoin every ISR within {ISR_LIMIT:?}: {partitions:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
