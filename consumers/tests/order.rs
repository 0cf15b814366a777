//! A partition's events are applied in the order they were produced, whatever
//! happens on the way: poison pills dead-lettered between them, an event
//! retried after transient failures, an event that parks its partition while
//! it waits, an event whose lease another instance still holds, and a
//! rebalance that takes a partition from an instance holding a batch of it
//! taken ahead. The counting consumer appends each applied event's sequence number to a list
//! per key (atomically with its done-mark), and the lists must equal the
//! produced order.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use opal_consumers::counting::CountingHandler;
use opal_consumers::{Effects, Handler, HandlerError, Runtime, Source, StateReader};
use opal_schemas::{Event, EventType};
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const KEYS: [&str; 4] = ["order-a", "order-b", "order-c", "order-d"];
const PER_KEY: usize = 25;

/// The drill each (key, sequence) gets; the rest are plain.
fn kind(key: &str, seq: usize) -> &'static str {
    match (key, seq) {
        ("order-a", 5) => "fail-transient-2",
        ("order-b", 7) => "wait-3",
        ("order-c", 3) => "reject",
        _ => "policy",
    }
}

fn event(env: &Env, key: &str, seq: usize) -> Event {
    let mut e = opal_schemas::samples::default_example(EventType::KnowledgeUpserted);
    *e.envelope_mut() = env.publisher.new_envelope(None);
    if let Event::KnowledgeUpserted(k) = &mut e {
        k.knowledge_id = key.to_owned();
        k.content_hash = format!("{seq:03}");
        k.kind = kind(key, seq).to_owned();
    }
    e
}

/// Makes another instance (a crashed one, say) hold `event_id`'s lease for
/// `ms`; returns the lease's key.
async fn hold_lease(
    env: &Env,
    redis: &mut redis::aio::MultiplexedConnection,
    event_id: &str,
    ms: u64,
) -> String {
    let key = env.idempotency_key(event_id);
    redis::cmd("SET")
        .arg(&key)
        .arg("lease:another-instance")
        .arg("PX")
        .arg(ms)
        .query_async::<()>(redis)
        .await
        .expect("hold the lease");
    key
}

/// The sequence numbers the counting consumer applied for `key`, in order.
async fn applied_order(
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

async fn publish_in_order(env: &Env, events: &[(usize, Event)]) {
    let events: Vec<Event> = events.iter().map(|(_, e)| e.clone()).collect();
    for delivery in env.publisher.publish_batch(events).await {
        delivery.expect("published");
    }
}

#[tokio::test]
async fn each_keys_events_apply_in_produced_order_through_pills_retries_parking_and_a_held_lease() {
    apply_in_produced_order(None).await;
}

/// The same with batches of three records over a backlog: every batch is
/// full, so the next one is always taken ahead, decoded and leased while one
/// settles, and a parked partition's records taken ahead must be let go.
#[tokio::test]
async fn each_keys_events_apply_in_produced_order_when_batches_are_taken_ahead() {
    apply_in_produced_order(Some(3)).await;
}

async fn apply_in_produced_order(max_batch: Option<usize>) {
    let mut env = Env::new().await;
    if let Some(max_batch) = max_batch {
        env.args.max_batch = max_batch;
    }
    let mut redis = redis().await;
    let all: Vec<(usize, Event)> = (0..PER_KEY)
        .flat_map(|seq| KEYS.iter().map(move |key| (seq, *key)))
        .map(|(seq, key)| (seq, event(&env, key, seq)))
        .collect();
    // Another instance (a crashed one, say) holds the lease of order-d's 10th
    // event for 3 s: the rest of its partition must wait for it.
    let held = all
        .iter()
        .find(|(seq, e)| *seq == 10 && e.key() == "order-d")
        .map(|(_, e)| e.envelope().event_id.clone())
        .expect("held event");
    hold_lease(&env, &mut redis, &held, 3000).await;

    // In order per key, with poison pills on the same keys between the two halves.
    let (first, second) = all.split_at(all.len() / 2);
    publish_in_order(&env, first).await;
    for key in KEYS {
        produce_raw(&env, key, Some(b"not an opal event")).await;
    }
    publish_in_order(&env, second).await;

    let (cancel, task, _) = start(&env, None).await;
    let applied = (KEYS.len() * PER_KEY - 1) as i64; // all but the rejected one
    wait_for_total(&env, applied, Duration::from_secs(120)).await;
    settled(&env).await;
    cancel.cancel();
    task.await.expect("stopped");

    let mut got = BTreeMap::new();
    let mut expected = BTreeMap::new();
    for key in KEYS {
        got.insert(key, applied_order(&env, &mut redis, key).await);
        expected.insert(
            key,
            (0..PER_KEY)
                .filter(|seq| kind(key, *seq) != "reject")
                .map(|seq| format!("{seq:03}"))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(
        got, expected,
        "each key's events applied once each, in produced order"
    );
    assert_eq!(get_count(&mut redis, &env.total_key()).await, applied);
    let dead = read_all(&env.kafka(), &env.dlq(), KEYS.len() + 1).await;
    assert_eq!(
        dead.len(),
        KEYS.len() + 1,
        "the four pills and the rejection"
    );
}

/// Shutdown while a batch waits (here for a lease another instance holds)
/// abandons it unsettled; the batch taken ahead behind it (same partition,
/// already leased) must not be processed then, or its stored offsets would
/// pass the abandoned event and the shutdown commit would skip it for good.
/// Its lease is given back, so the next instance need not wait it out.
#[tokio::test]
async fn shutdown_while_a_batch_waits_processes_nothing_taken_ahead_behind_it() {
    let mut env = Env::new().await;
    let mut redis = redis().await;
    // One record per batch: behind the waiting event, the next is always taken ahead.
    env.args.max_batch = 1;
    // Longer than the shutdown takes: a lease left behind is still there after it.
    env.args.lease_ms = 120_000;
    let key = "ahead-a";
    let events: Vec<(usize, Event)> = (0..4).map(|seq| (seq, event(&env, key, seq))).collect();
    // The second event waits: the first one fetches the schema, so the event
    // taken ahead behind the waiting one decodes at once and is leased.
    let held = hold_lease(&env, &mut redis, &events[1].1.envelope().event_id, 120_000).await;
    let ahead = env.idempotency_key(&events[2].1.envelope().event_id);
    publish_in_order(&env, &events).await;

    let (cancel, task, _) = start(&env, None).await;
    wait_until(
        TIMEOUT,
        "the event behind the waiting one leased ahead",
        || {
            let mut redis = redis.clone();
            let ahead = ahead.clone();
            async move {
                let lease: Option<String> = redis::cmd("GET")
                    .arg(&ahead)
                    .query_async(&mut redis)
                    .await
                    .expect("GET");
                lease.is_some_and(|l| l.starts_with("lease:") && l != "lease:another-instance")
            }
        },
    )
    .await;
    cancel.cancel();
    task.await.expect("stopped");
    assert_eq!(
        get_count(&mut redis, &env.total_key()).await,
        1,
        "nothing behind the abandoned event was applied"
    );
    let leases: (Option<String>, Option<String>) = redis::pipe()
        .get(&held)
        .get(&ahead)
        .query_async(&mut redis)
        .await
        .expect("GET the leases");
    assert_eq!(
        leases,
        (Some("lease:another-instance".to_owned()), None),
        "(the other instance's lease, the lease of the event taken ahead)"
    );

    // The other instance is gone; the next run starts at the abandoned event.
    let _: () = redis::cmd("DEL")
        .arg(&held)
        .query_async(&mut redis)
        .await
        .expect("DEL");
    let (cancel, task, _) = start(&env, None).await;
    wait_for_total(&env, 4, Duration::from_secs(60)).await;
    settled(&env).await;
    cancel.cancel();
    task.await.expect("stopped");
    assert_eq!(
        applied_order(&env, &mut redis, key).await,
        ["000", "001", "002", "003"]
    );
}

/// Events the test holds in the handler, by sequence number, each once.
#[derive(Default)]
struct Holds {
    seqs: Mutex<BTreeSet<usize>>,
    reached: Notify,
    release: Notify,
}

impl Holds {
    fn add(&self, seq: usize) {
        self.seqs.lock().expect("holds").insert(seq);
    }
}

/// The counting handler, holding the events in `holds` until the test lets
/// each go: the batch in hand cannot settle meanwhile, and the run loop,
/// waiting for it, does not poll the client, so a rebalance waits too.
struct Holding {
    inner: CountingHandler,
    holds: Arc<Holds>,
}

impl Handler for Holding {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn inputs(&self) -> Vec<EventType> {
        self.inner.inputs()
    }

    async fn handle(
        &self,
        event: &Event,
        source: &Source,
        state: &StateReader,
    ) -> Result<Effects, HandlerError> {
        if let Event::KnowledgeUpserted(k) = event
            && let Ok(seq) = k.content_hash.parse::<usize>()
            && self.holds.seqs.lock().expect("holds").remove(&seq)
        {
            self.holds.reached.notify_one();
            self.holds.release.notified().await;
        }
        self.inner.handle(event, source, state).await
    }
}

/// The state of `env`'s group as the broker reports it (`Stable`, `PreparingRebalance`, ...).
fn group_state(env: &Env) -> String {
    let client: BaseConsumer = env
        .kafka()
        .client_config()
        .expect("config")
        .create()
        .expect("client");
    let groups = client
        .fetch_group_list(Some(&env.group), TIMEOUT)
        .expect("describe the group");
    groups
        .groups()
        .first()
        .map(|g| g.state().to_owned())
        .unwrap_or_default()
}

/// The positions in `ids` whose idempotency key holds a lease (not a done-mark).
async fn leased(
    env: &Env,
    redis: &mut redis::aio::MultiplexedConnection,
    ids: &[String],
) -> Vec<usize> {
    let keys: Vec<String> = ids.iter().map(|id| env.idempotency_key(id)).collect();
    let values: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&keys)
        .query_async(redis)
        .await
        .expect("MGET");
    (0..values.len())
        .filter(|i| {
            values[*i]
                .as_deref()
                .is_some_and(|v| v.starts_with("lease:"))
        })
        .collect()
}

/// The heartbeat of the instances in the rebalance test. The broker cannot
/// tell a member that its group is rebalancing but in a heartbeat's answer,
/// and nothing outside the member shows when it has heard: the test gives it
/// ten heartbeats once the broker reports the group rebalancing.
const HEARTBEAT: Duration = Duration::from_millis(100);

/// A consumer instance running in this test, as `start` runs one, with its
/// own handler and static member id.
async fn instance<H: Handler>(
    env: &Env,
    handler: H,
    member: &'static str,
    max_batch: usize,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<()>,
    opal_consumers::metrics::ConsumerMetrics,
) {
    let mut args = env.args.clone();
    args.group_instance_id = Some(format!("{}-{member}", env.group));
    args.max_batch = max_batch;
    // An instance learns that its group is rebalancing from a heartbeat's
    // answer; see `HEARTBEAT`.
    args.kafka
        .options
        .push(format!("heartbeat.interval.ms={}", HEARTBEAT.as_millis()));
    let cancel = CancellationToken::new();
    let runtime = Runtime::new(handler, args, "unused", cancel.clone())
        .await
        .expect("runtime");
    let metrics = runtime.metrics();
    let task = tokio::spawn(async move {
        assert_eq!(
            runtime.run().await.expect("run"),
            opal_consumers::runtime::RunEnd::Drained,
            "{member}: stopped within the drain timeout"
        );
    });
    (cancel, task, metrics)
}

/// A rebalance that reaches an instance while it holds a batch taken ahead.
/// That batch was leased before the revocation and is settled after it
/// (see `collect.rs`); the partition's next owner starts from the offsets
/// committed at the revocation, so it meets the batch's events leased, and
/// must wait for them, not apply what follows them first.
///
/// Made deterministic step by step:
/// - every event is on one partition, which the range assignor gives the
///   second member (static ids sort "a" before "b"; the protocol is eager, so
///   the first member has all its partitions revoked first);
/// - the first instance is held on an event of its second batch until the
///   group is rebalancing and it has heard so (see `HEARTBEAT`): it cannot
///   poll meanwhile, so the revocation comes at its next poll, the
///   look-ahead's, with the batch ahead leased;
/// - it is held again on the first event of that batch until the second
///   instance has met the leases (its lease round trips).
#[tokio::test]
async fn a_rebalance_while_a_batch_is_taken_ahead_applies_each_event_once_in_order() {
    let mut env = Env::new().await;
    let mut redis = redis().await;
    let max_batch = 20;
    // Longer than the test: a lease held across the holds never expires.
    env.args.lease_ms = 120_000;
    // crc32("ahead-0") % 3 == 2: librdkafka's default partitioner puts it on
    // partition 2 of 3, the one range assignment gives the second member.
    let key = "ahead-0";
    let events: Vec<Event> = (0..240)
        .map(|seq| {
            let mut e = event(&env, key, seq);
            if let Event::KnowledgeUpserted(k) = &mut e {
                k.kind = "policy".to_owned();
            }
            e
        })
        .collect();
    let ids: Vec<String> = events
        .iter()
        .map(|e| e.envelope().event_id.clone())
        .collect();
    let partitions: BTreeSet<i32> = env
        .publisher
        .publish_batch(events)
        .await
        .into_iter()
        .map(|d| d.expect("published").partition)
        .collect();
    assert_eq!(
        partitions,
        BTreeSet::from([2]),
        "every event on partition 2"
    );

    // Event `max_batch` is in the second batch or later: the schema is
    // cached by then, so the batch taken ahead decodes and is leased.
    let holds = Arc::new(Holds::default());
    holds.add(max_batch);
    let handler = Holding {
        inner: CountingHandler::new(env.count_prefix.clone(), vec![EventType::KnowledgeUpserted]),
        holds: holds.clone(),
    };
    let (cancel_a, task_a, _) = instance(&env, handler, "a", max_batch).await;
    tokio::time::timeout(TIMEOUT, holds.reached.notified())
        .await
        .expect("the first held event reached");
    // A batch is taken ahead only behind a full one: leases on more than one
    // batch's worth of events are the batch in hand's and the one ahead's.
    let deadline = std::time::Instant::now() + TIMEOUT;
    let first_leased = loop {
        let leased = leased(&env, &mut redis, &ids).await;
        if leased.len() > max_batch {
            break leased[0];
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for a batch taken ahead and leased: {leased:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ahead = first_leased + max_batch;
    holds.add(ahead);

    let (cancel_b, task_b, metrics_b) = instance(
        &env,
        CountingHandler::new(env.count_prefix.clone(), vec![EventType::KnowledgeUpserted]),
        "b",
        // Its first batch holds the held events and what follows them.
        5 * max_batch,
    )
    .await;
    wait_until(TIMEOUT, "the group rebalancing", || {
        let state = group_state(&env);
        async move { state == "PreparingRebalance" }
    })
    .await;
    tokio::time::sleep(HEARTBEAT * 10).await;
    holds.release.notify_one();

    tokio::time::timeout(TIMEOUT, holds.reached.notified())
        .await
        .expect("the first event of the batch ahead reached, after the revocation");
    // Two lease rounds: the second instance owns the partition, met the
    // leases, waited and asked again.
    wait_until(TIMEOUT, "the second instance meeting the leases", || {
        let trips = metrics_b.redis_round_trips.get();
        async move { trips >= 2 }
    })
    .await;
    // Asserted once both instances have stopped: a test that fails while an
    // instance is held mid-rebalance cannot drop it (librdkafka's close waits
    // for the rebalance), and would hang instead of failing.
    let applied_while_held = get_count(&mut redis, &env.total_key()).await;
    holds.release.notify_one();

    wait_for_total(&env, ids.len() as i64, Duration::from_secs(120)).await;
    settled(&env).await;
    cancel_a.cancel();
    cancel_b.cancel();
    task_a.await.expect("first instance");
    task_b.await.expect("second instance");

    assert_eq!(
        applied_while_held, ahead as i64,
        "nothing behind the batch held ahead applied while it was held"
    );

    assert_eq!(
        counts(&mut redis, &env.count_prefix, &ids).await,
        vec![1; ids.len()],
        "every event applied exactly once"
    );
    assert_eq!(
        applied_order(&env, &mut redis, key).await,
        (0..ids.len())
            .map(|seq| format!("{seq:03}"))
            .collect::<Vec<_>>(),
        "in produced order"
    );
    assert_eq!(dlq_records(&env).await, 0, "nothing dead-lettered");
}
