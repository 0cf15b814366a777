//! A partition's events are applied in the order they were produced, whatever
//! happens on the way: poison pills dead-lettered between them, an event
//! retried after transient failures, an event that parks its partition while
//! it waits, and an event whose lease another instance still holds (a
//! rebalance that takes a partition from an instance holding a batch of it
//! taken ahead is in rebalance.rs). The counting consumer appends each applied event's sequence number to a list
//! per key (atomically with its done-mark), and the lists must equal the
//! produced order.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use opal_schemas::{Event, EventType};

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

/// Events the handler may handle before their lease (every plain counting
/// event) settle in one Redis round trip per batch, over a backlog of small
/// batches, and still apply once each in produced order around a lease
/// another instance holds: the batch that meets it waits, and the events
/// behind it with it.
#[tokio::test]
async fn events_handled_before_their_lease_settle_in_one_round_trip_and_wait_behind_a_held_lease() {
    for hold in [false, true] {
        let mut env = Env::new().await;
        env.args.max_batch = 5;
        let mut redis = redis().await;
        let keys = ["unleased-a", "unleased-b"];
        let all: Vec<(usize, Event)> = (0..20)
            .flat_map(|seq| keys.iter().map(move |key| (seq, *key)))
            .map(|(seq, key)| (seq, event(&env, key, seq)))
            .collect();
        if hold {
            let held = &all[2 * 8 + 1].1;
            assert_eq!(held.key(), "unleased-b");
            // Longer than the consumer takes to start, so it is met.
            hold_lease(&env, &mut redis, &held.envelope().event_id, 8000).await;
        }
        publish_in_order(&env, &all).await;

        let (cancel, task, _, metrics) = start_observed(&env, None).await;
        wait_for_total(&env, all.len() as i64, Duration::from_secs(60)).await;
        settled(&env).await;
        cancel.cancel();
        task.await.expect("stopped");

        for key in keys {
            assert_eq!(
                applied_order(&env, &mut redis, key).await,
                (0..20).map(|seq| format!("{seq:03}")).collect::<Vec<_>>(),
                "{key}, a lease held: {hold}"
            );
        }
        assert_eq!(
            get_count(&mut redis, &env.total_key()).await,
            all.len() as i64
        );
        let (batches, round_trips) = (metrics.batches.get(), metrics.redis_round_trips.get());
        if hold {
            assert!(
                round_trips > batches,
                "the batch meeting the held lease went the leased way ({round_trips} round trips, {batches} batches)"
            );
        } else {
            assert_eq!(
                round_trips, batches,
                "one round trip per batch, the lease taken with the apply"
            );
        }
    }
}
