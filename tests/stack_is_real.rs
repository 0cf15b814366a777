//! The local stack's broker (Apache Kafka in KRaft mode) keeps what it stores:
//! idempotent produce, a consumer group with commits, a broker restart, and
//! the same records and committed offsets afterwards.

use std::collections::BTreeMap;
use std::time::Duration;

use opal_e2e::{brokers, dev_stack, unique};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const PARTITIONS: i32 = 3;
const RECORDS: usize = 60;
const TIMEOUT: Duration = Duration::from_secs(30);

/// (partition, offset) → (key, value)
type Seen = BTreeMap<(i32, i64), (String, String)>;

fn config() -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers());
    config
}

fn consumer(group: &str) -> StreamConsumer {
    config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .create()
        .expect("consumer")
}

/// Reads until `count` records have arrived.
async fn read(consumer: &StreamConsumer, count: usize) -> Seen {
    let mut seen = Seen::new();
    while seen.len() < count {
        let message = tokio::time::timeout(TIMEOUT, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} records arrived", seen.len()))
            .expect("consume");
        let text = |b: Option<&[u8]>| String::from_utf8(b.expect("bytes").to_vec()).expect("utf8");
        seen.insert(
            (message.partition(), message.offset()),
            (text(message.key()), text(message.payload())),
        );
    }
    seen
}

async fn committed(group: &str, topic: &str) -> BTreeMap<i32, Offset> {
    let consumer = consumer(group);
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut wanted = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            wanted.add_partition(&topic, p);
        }
        consumer
            .committed_offsets(wanted, TIMEOUT)
            .expect("committed offsets")
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset()))
            .collect()
    })
    .await
    .expect("join")
}

#[tokio::test]
async fn records_and_committed_offsets_survive_a_broker_restart() {
    let topic = unique("opal-test-stack");
    let group = unique("opal-test-group");

    let admin: AdminClient<DefaultClientContext> = config().create().expect("admin");
    let created = admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                PARTITIONS,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
        )
        .await
        .expect("create topics");
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");

    let producer: FutureProducer = config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .expect("idempotent producer");
    let mut produced = Seen::new();
    let sends: Vec<_> = (0..RECORDS)
        .map(|i| {
            let (key, value) = (format!("key-{i}"), format!("value-{i}"));
            let producer = producer.clone();
            let topic = topic.clone();
            async move {
                let delivery = producer
                    .send(FutureRecord::to(&topic).key(&key).payload(&value), TIMEOUT)
                    .await
                    .expect("delivered");
                ((delivery.partition, delivery.offset), (key, value))
            }
        })
        .collect();
    // All sends are in flight together; each resolves on its delivery report.
    for (position, record) in futures::future::join_all(sends).await {
        produced.insert(position, record);
    }
    assert_eq!(
        produced.len(),
        RECORDS,
        "every delivery report has its own position"
    );
    assert!(
        produced.keys().any(|(p, _)| *p != 0),
        "keys spread over partitions"
    );

    // A consumer group reads everything and commits its positions.
    let first = consumer(&group);
    first.subscribe(&[&topic]).expect("subscribe");
    assert_eq!(read(&first, RECORDS).await, produced);
    first
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit");
    let mut expected_commits = BTreeMap::new();
    for (partition, offset) in produced.keys() {
        let next = expected_commits
            .entry(*partition)
            .or_insert(Offset::Offset(0));
        if let Offset::Offset(n) = next {
            *n = (*n).max(offset + 1);
        }
    }
    drop(first);
    assert_eq!(committed(&group, &topic).await, expected_commits);

    dev_stack(&["restart", "kafka"]);

    // The same records, at the same positions, from a fresh group...
    let fresh = consumer(&unique("opal-test-group"));
    fresh.subscribe(&[&topic]).expect("subscribe");
    assert_eq!(
        read(&fresh, RECORDS).await,
        produced,
        "records survived the restart"
    );
    // ...and the group's commits survived too.
    assert_eq!(
        committed(&group, &topic).await,
        expected_commits,
        "commits survived the restart"
    );

    // The restarted broker takes writes again, after the old ones.
    let delivery = producer
        .send(
            FutureRecord::to(&topic)
                .key("key-0")
                .payload("after-restart"),
            TIMEOUT,
        )
        .await
        .expect("produce after restart");
    let last_before = produced
        .keys()
        .filter(|(p, _)| *p == delivery.partition)
        .map(|(_, o)| *o)
        .max()
        .unwrap_or_else(|| {
            panic!(
                "partition {} held no record before the restart, yet key-0 went there before it too: {produced:?}",
                delivery.partition
            )
        });
    assert_eq!(
        delivery.offset,
        last_before + 1,
        "offsets continue after the restart, right after the last record before it"
    );
}
