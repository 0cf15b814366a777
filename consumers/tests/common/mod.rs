//! Shared set-up for the runtime tests: a provisioned prefix, a publisher,
//! readers for topics and Redis, and child consumer processes.

#![allow(dead_code, unreachable_pub)]

pub mod apps;

use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use opal_consumers::counting::CountingHandler;
use opal_consumers::{Runtime, RuntimeArgs};
// Re-exported for the tests' `use common::*`; not every test binary uses them.
#[allow(unused_imports)]
pub use opal_e2e::probe::{free_port, metric};
use opal_e2e::provision::{provisioned_prefix, publisher};
use opal_e2e::{brokers, redis_url, registry_url, unique};
use opal_producers::Publisher;
use opal_topics::KafkaArgs;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use tokio_util::sync::CancellationToken;

pub const TIMEOUT: Duration = Duration::from_secs(60);

pub struct Env {
    pub prefix: String,
    pub group: String,
    pub count_prefix: String,
    pub args: RuntimeArgs,
    pub publisher: Publisher,
}

impl Env {
    /// A fresh prefix with topics and schemas provisioned, and a DLQ for a
    /// fresh group, on the stack under test.
    pub async fn new() -> Env {
        Env::on(&brokers(), &registry_url()).await
    }

    /// The Redis key of `event_id`'s lease and done-mark for this group.
    pub fn idempotency_key(&self, event_id: &str) -> String {
        format!("{}opal:idempotency:{}:{event_id}", self.prefix, self.group)
    }

    /// As [`Env::new`], on the given broker and registry (a test's own).
    pub async fn on(brokers: &str, registry_url: &str) -> Env {
        let (config, prefix) = provisioned_prefix("c", brokers, registry_url).await;
        let group = unique("opal-test-group");
        create_dlq(&config.kafka, &prefix, &group).await;
        let mut args = RuntimeArgs::local(brokers, registry_url, &redis_url());
        args.topic_prefix = prefix.clone();
        args.group = Some(group.clone());
        args.retry_base_ms = 10;
        args.retry_max_ms = 50;
        args.retry_attempts = 3;
        args.lease_ms = 2_000;
        let publisher = publisher(&config);
        let count_prefix = format!("opal:test:{}", unique("count"));
        Env {
            prefix,
            group,
            count_prefix,
            args,
            publisher,
        }
    }

    /// Creates the dead-letter topic of another consumer group under this
    /// prefix (consumers refuse to start without their DLQ).
    pub async fn create_dlq(&self, group: &str) {
        create_dlq(&self.args.kafka, &self.prefix, group).await;
    }

    pub fn topic(&self, event_type: opal_schemas::EventType) -> String {
        format!("{}{}", self.prefix, event_type.topic())
    }

    /// The counting consumer's key for all events it applied.
    pub fn total_key(&self) -> String {
        format!("{}:total", self.count_prefix)
    }

    pub fn dlq(&self) -> String {
        opal_topics::dlq_topic(&self.prefix, &self.group)
    }

    pub fn kafka(&self) -> KafkaArgs {
        self.args.kafka.clone()
    }

    /// Starts `opal-counting-consumer` for this environment (killed when dropped).
    pub fn spawn_counting(&self, http_port: u16) -> Process {
        self.spawn_counting_with(http_port, &[])
    }

    /// As `spawn_counting`, with extra environment variables (they win over
    /// the test defaults below).
    pub fn spawn_counting_with(&self, http_port: u16, extra_env: &[(&str, &str)]) -> Process {
        self.spawn_counting_for("knowledge.upserted", http_port, extra_env)
    }

    /// As `spawn_counting_with`, consuming `inputs` (comma-separated event types).
    pub fn spawn_counting_for(
        &self,
        inputs: &str,
        http_port: u16,
        extra_env: &[(&str, &str)],
    ) -> Process {
        Process(
            self.counting_command(inputs, http_port, extra_env)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn opal-counting-consumer"),
        )
    }

    /// The `opal-counting-consumer` command of `spawn_counting_for`, for a
    /// test that runs it itself (to read its output).
    pub fn counting_command(
        &self,
        inputs: &str,
        http_port: u16,
        extra_env: &[(&str, &str)],
    ) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_opal-counting-consumer"));
        command
            .args(["--inputs", inputs, "--count-prefix", &self.count_prefix])
            .env("KAFKA_BROKERS", &self.args.kafka.brokers)
            .env("SCHEMA_REGISTRY_URL", &self.args.registry.url)
            .env("REDIS_URL", &self.args.redis.url)
            .env("OPAL_TOPIC_PREFIX", &self.prefix)
            .env("OPAL_CONSUMER_GROUP", &self.group)
            .env("OPAL_HTTP_LISTEN", format!("127.0.0.1:{http_port}"))
            .env("OPAL_LEASE_MS", "2000")
            .env("OPAL_RETRY_BASE_MS", "10")
            .env(
                "RUST_LOG",
                std::env::var("OPAL_TEST_CONSUMER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env("RUST_BACKTRACE", "0")
            .envs(extra_env.iter().copied())
            .stdin(Stdio::null());
        command
    }
}

/// Creates `group`'s dead-letter topic under `prefix`.
async fn create_dlq(kafka: &KafkaArgs, prefix: &str, group: &str) {
    let admin: AdminClient<DefaultClientContext> = kafka
        .client_config()
        .expect("config")
        .create()
        .expect("admin");
    let dlq = opal_topics::dlq_topic(prefix, group);
    let created = admin
        .create_topics(
            &[NewTopic::new(&dlq, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
        )
        .await
        .expect("create dlq");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
}

/// The counting consumer's runtime, running in this process for `env`
/// (Redis at `redis_url` if given): its stop token, its task (which asserts a
/// clean drain), its readiness and its metrics.
pub async fn start_observed(
    env: &Env,
    redis_url: Option<&str>,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<()>,
    std::sync::Arc<opal_consumers::health::Health>,
    opal_consumers::metrics::ConsumerMetrics,
) {
    let mut args = env.args.clone();
    if let Some(url) = redis_url {
        args.redis.url = url.to_owned();
    }
    let handler = CountingHandler::new(
        env.count_prefix.clone(),
        vec![opal_schemas::EventType::KnowledgeUpserted],
    );
    let cancel = CancellationToken::new();
    let runtime = Runtime::new(handler, args, "unused", cancel.clone())
        .await
        .expect("runtime");
    let (health, metrics) = (runtime.health(), runtime.metrics());
    let task = tokio::spawn(async move {
        assert_eq!(
            runtime.run().await.expect("run"),
            opal_consumers::runtime::RunEnd::Drained,
            "stopped within the drain timeout"
        );
    });
    (cancel, task, health, metrics)
}

/// As [`start_observed`], without the metrics.
pub async fn start(
    env: &Env,
    redis_url: Option<&str>,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<()>,
    std::sync::Arc<opal_consumers::health::Health>,
) {
    let (cancel, task, health, _) = start_observed(env, redis_url).await;
    (cancel, task, health)
}

/// A private redis-server on its own port and directory, so stopping it harms nobody.
pub struct PrivateRedis {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
    /// What `requirepass` it was started with.
    password: Option<String>,
}

impl PrivateRedis {
    pub fn start(port: u16, dir: &std::path::Path) -> PrivateRedis {
        PrivateRedis::launch(port, dir, None)
    }

    /// As [`PrivateRedis::start`], requiring `password` (`requirepass`); its
    /// [`PrivateRedis::url`] carries it.
    pub fn start_with_password(port: u16, dir: &std::path::Path, password: &str) -> PrivateRedis {
        PrivateRedis::launch(port, dir, Some(password))
    }

    fn launch(port: u16, dir: &std::path::Path, password: Option<&str>) -> PrivateRedis {
        std::fs::create_dir_all(dir).expect("dir");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(dir)
            .args(password.map(|p| ["--requirepass", p]).into_iter().flatten())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package)");
        PrivateRedis {
            child,
            port,
            dir: dir.to_owned(),
            password: password.map(str::to_owned),
        }
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Waits until it answers.
    pub async fn answering(&self) {
        let url = self.url();
        wait_until(TIMEOUT, "the private redis", || async {
            redis::Client::open(url.as_str())
                .expect("url")
                .get_multiplexed_async_connection()
                .await
                .is_ok()
        })
        .await;
    }

    pub fn stop(mut self) -> (u16, std::path::PathBuf) {
        signal(&self.child, "TERM");
        let _ = self.child.wait();
        (self.port, self.dir.clone())
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private opal-registry on its own port and directory, so stopping it
/// harms nobody; `start` again on the same directory keeps what it held.
pub struct PrivateRegistry {
    child: Option<Child>,
    port: u16,
    dir: std::path::PathBuf,
}

impl PrivateRegistry {
    pub fn start(port: u16, dir: &std::path::Path) -> PrivateRegistry {
        let mut registry = PrivateRegistry {
            child: None,
            port,
            dir: dir.to_owned(),
        };
        registry.run();
        registry
    }

    fn run(&mut self) {
        let child = Command::new(opal_e2e::workspace_bin("opal-registry"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(&self.dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("opal-registry");
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until it answers.
    pub async fn answering(&self) {
        let url = format!("{}/subjects", self.url());
        wait_until(TIMEOUT, "the private registry", || {
            let url = url.clone();
            async move {
                reqwest::get(&url)
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "TERM");
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }
}

impl Drop for PrivateRegistry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Produces `value` under `key` to `env`'s knowledge topic, bypassing the publisher.
pub async fn produce_raw(env: &Env, key: &str, value: Option<&[u8]>) {
    produce_raw_to(env, opal_schemas::EventType::KnowledgeUpserted, key, value).await;
}

/// Produces `value` under `key` to `env`'s topic of `event_type`, bypassing the publisher.
pub async fn produce_raw_to(
    env: &Env,
    event_type: opal_schemas::EventType,
    key: &str,
    value: Option<&[u8]>,
) {
    let producer: rdkafka::producer::FutureProducer = env
        .kafka()
        .client_config()
        .expect("config")
        .create()
        .expect("producer");
    let topic = env.topic(event_type);
    let mut record: rdkafka::producer::FutureRecord<'_, str, [u8]> =
        rdkafka::producer::FutureRecord::to(&topic).key(key);
    if let Some(v) = value {
        record = record.payload(v);
    }
    producer.send(record, TIMEOUT).await.expect("raw produce");
}

/// A child process that cannot outlive a failed test.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Publishes `n` examples of `event_type` with fresh envelopes, returning their ids.
pub async fn publish_events(
    env: &Env,
    event_type: opal_schemas::EventType,
    n: usize,
) -> Vec<String> {
    let events: Vec<_> = (0..n)
        .map(|_| {
            let mut e = opal_schemas::samples::default_example(event_type);
            *e.envelope_mut() = env.publisher.new_envelope(None);
            e
        })
        .collect();
    env.publisher
        .publish_batch(events)
        .await
        .into_iter()
        .map(|d| d.expect("published").event_id)
        .collect()
}

/// Publishes `n` knowledge events whose `kind` is `kind`, returning their ids.
pub async fn publish_knowledge(env: &Env, n: usize, kind: &str) -> Vec<String> {
    let events: Vec<_> = (0..n)
        .map(|i| {
            let mut e =
                opal_schemas::samples::default_example(opal_schemas::EventType::KnowledgeUpserted);
            *e.envelope_mut() = env.publisher.new_envelope(None);
            if let opal_schemas::Event::KnowledgeUpserted(k) = &mut e {
                k.kind = kind.to_owned();
                k.knowledge_id = format!("kb-{i}");
            }
            e
        })
        .collect();
    let mut ids = Vec::with_capacity(n);
    for chunk in events.chunks(2000) {
        for d in env.publisher.publish_batch(chunk.to_vec()).await {
            ids.push(d.expect("published").event_id);
        }
    }
    ids
}

pub async fn redis() -> redis::aio::MultiplexedConnection {
    redis_at(&redis_url()).await
}

pub async fn redis_at(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis")
}

pub async fn get_count(connection: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("GET")
        .arg(key)
        .query_async::<Option<i64>>(connection)
        .await
        .expect("GET")
        .unwrap_or(0)
}

/// The sequence numbers (`content_hash`es) the counting consumer applied for
/// knowledge key `key`, in order.
pub async fn applied_order(
    env: &Env,
    redis: &mut redis::aio::MultiplexedConnection,
    key: &str,
) -> Vec<String> {
    redis::cmd("LRANGE")
        .arg(format!("{}:order:{key}", env.count_prefix))
        .arg(0)
        .arg(-1)
        .query_async(redis)
        .await
        .expect("LRANGE")
}

/// Every event's counter, in the order of `ids`.
pub async fn counts(
    connection: &mut redis::aio::MultiplexedConnection,
    count_prefix: &str,
    ids: &[String],
) -> Vec<i64> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(1000) {
        let keys: Vec<String> = chunk
            .iter()
            .map(|id| format!("{count_prefix}:count:{id}"))
            .collect();
        let values: Vec<Option<i64>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(connection)
            .await
            .expect("MGET");
        out.extend(values.into_iter().map(|v| v.unwrap_or(0)));
    }
    out
}

/// Polls `check` until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits up to `within` until the counting consumer has applied at least
/// `at_least` events. Looks every 2 ms, not `wait_until`'s 100 ms: tests act
/// at the point they waited for (a kill, a signal) and need the run to be
/// there still; at full speed a consumer applies a 2 000-event batch every few
/// ms, and a 100 ms look once let it finish a 20 000-event run before the kill.
pub async fn wait_for_total(env: &Env, at_least: i64, within: Duration) {
    let key = env.total_key();
    let mut connection = redis().await;
    let deadline = Instant::now() + within;
    while get_count(&mut connection, &key).await < at_least {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {at_least} events applied"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Every record of `topic` from the beginning up to its end as it stands once
/// at least `at_least` have arrived (each partition read to its high
/// watermark, not "until quiet"), so a count over it is exact for what the
/// topic holds; waits up to `TIMEOUT` for the first `at_least`.
pub async fn read_all(kafka: &KafkaArgs, topic: &str, at_least: usize) -> Vec<OwnedMessage> {
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: StreamConsumer = kafka
        .client_config()
        .expect("config")
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let metadata = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .expect("metadata");
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions())
        .map(|p| p.id())
        .collect();
    assert!(!partitions.is_empty(), "{topic} has no partitions");
    let mut assignment = TopicPartitionList::new();
    for p in &partitions {
        assignment
            .add_partition_offset(topic, *p, Offset::Beginning)
            .expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    let mut out: Vec<OwnedMessage> = Vec::new();
    let mut next: std::collections::BTreeMap<i32, i64> = std::collections::BTreeMap::new();
    let mut ends: Option<std::collections::BTreeMap<i32, i64>> = None;
    loop {
        if out.len() >= at_least && ends.is_none() {
            ends = Some(
                partitions
                    .iter()
                    .map(|p| {
                        let (_, high) = consumer
                            .fetch_watermarks(topic, *p, TIMEOUT)
                            .expect("watermarks");
                        (*p, high)
                    })
                    .collect(),
            );
        }
        if let Some(ends) = &ends
            && ends
                .iter()
                .all(|(p, high)| next.get(p).copied().unwrap_or(0) >= *high)
        {
            return out;
        }
        match tokio::time::timeout(TIMEOUT, consumer.recv()).await {
            Ok(Ok(m)) => {
                next.insert(m.partition(), m.offset() + 1);
                out.push(m.detach());
            }
            Ok(Err(e)) => panic!("reading {topic}: {e}"),
            Err(_) => panic!("only {} of {at_least} records in {topic}", out.len()),
        }
    }
}

/// Waits until `env`'s group has committed every record of its knowledge
/// topic: everything it will dead-letter has been written by then.
pub async fn settled(env: &Env) {
    let topics = [env.topic(opal_schemas::EventType::KnowledgeUpserted)];
    wait_until(TIMEOUT, "the group's lag at 0", || {
        let (kafka, group, topics) = (env.kafka(), env.group.clone(), topics.clone());
        async move { group_lag(&kafka, &group, &topics) == 0 }
    })
    .await;
}

/// How many records `env`'s dead-letter topic holds (its one partition's high watermark).
pub async fn dlq_records(env: &Env) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = env.kafka().client_config().expect("c").create().expect("c");
    let dlq = env.dlq();
    let (_, high) = consumer
        .fetch_watermarks(&dlq, 0, TIMEOUT)
        .expect("watermarks");
    high
}

/// How many records of `topics` `group` has not committed yet (0 = caught up).
/// The broker may not answer for a moment (`NotCoordinator` while the group's
/// coordinator loads or moves): asked again, a few times, before failing.
pub fn group_lag(kafka: &KafkaArgs, group: &str, topics: &[String]) -> i64 {
    use rdkafka::consumer::BaseConsumer;
    let consumer: BaseConsumer = kafka
        .client_config()
        .expect("config")
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("lag reader");
    let mut attempts = 0;
    loop {
        match lag_of(&consumer, topics) {
            Ok(lag) => return lag,
            Err(e) if attempts < 10 => {
                attempts += 1;
                eprintln!("group lag of {group}: {e}; asking again");
                std::thread::sleep(Duration::from_millis(300));
            }
            Err(e) => panic!("group lag of {group}: {e}"),
        }
    }
}

fn lag_of(
    consumer: &rdkafka::consumer::BaseConsumer,
    topics: &[String],
) -> rdkafka::error::KafkaResult<i64> {
    use rdkafka::{Offset, TopicPartitionList};
    let timeout = Duration::from_secs(5);
    let mut lag = 0;
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        let mut tpl = TopicPartitionList::new();
        for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
            tpl.add_partition(topic, p.id());
        }
        let committed = consumer.committed_offsets(tpl, timeout)?;
        for element in committed.elements() {
            let (low, high) = consumer.fetch_watermarks(topic, element.partition(), timeout)?;
            lag += match element.offset() {
                Offset::Offset(o) => high - o,
                _ => high - low,
            };
        }
    }
    Ok(lag)
}

pub fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    opal_consumers::dlq::header_text(message, name)
}

pub fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let url = format!("http://127.0.0.1:{port}{path}");
    let response = reqwest::get(&url).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

pub fn message_bytes(m: &OwnedMessage) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    (m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec))
}
