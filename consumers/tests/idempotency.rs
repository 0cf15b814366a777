//! The lease → apply protocol of `Idempotency` against a real Redis, with two
//! instances of one group (two tokens) racing on the same events, as two
//! consumers do around a rebalance. Events without state changes take the
//! apply script's one-call path (the lease swapped for the done-mark), events
//! with state changes the checked path; both must answer the same.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use opal_consumers::idempotency::{Applied, Idempotency, Lease, Refused};
use opal_consumers::{Effects, StateOp};
use opal_e2e::unique;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

async fn connection(url: &str) -> ConnectionManager {
    redis::Client::open(url)
        .unwrap()
        .get_connection_manager()
        .await
        .expect("redis (scripts/dev-stack.sh up)")
}

/// Two instances of one consumer group: each has its own lease token.
async fn two_instances(prefix: &str) -> (Idempotency, Idempotency, ConnectionManager) {
    two_instances_at(&opal_e2e::redis_url(), prefix).await
}

async fn two_instances_at(
    url: &str,
    prefix: &str,
) -> (Idempotency, Idempotency, ConnectionManager) {
    let connection = connection(url).await;
    let instance = || {
        Idempotency::new(
            connection.clone(),
            prefix,
            "group",
            Duration::from_secs(600),
            Duration::from_secs(30),
        )
    };
    (instance(), instance(), connection)
}

fn key(prefix: &str, id: &str) -> String {
    format!("{prefix}opal:idempotency:group:{id}")
}

async fn applied(
    instance: &Idempotency,
    items: &[(&str, &Effects)],
) -> Vec<Result<Applied, Refused>> {
    instance.apply(items).await.expect("apply")
}

#[tokio::test]
async fn an_event_without_state_changes_is_applied_once_by_the_lease_holder_only() {
    let prefix = unique("idem-noop.");
    let (a, b, mut redis) = two_instances(&prefix).await;
    let none = Effects::none();

    assert_eq!(a.lease(&["e1"]).await.unwrap(), vec![Lease::Acquired]);
    assert_eq!(b.lease(&["e1"]).await.unwrap(), vec![Lease::HeldElsewhere]);
    // B never held the lease: its apply changes nothing, and A's lease stands.
    assert_eq!(
        applied(&b, &[("e1", &none)]).await,
        vec![Ok(Applied::LeaseLost)]
    );
    let ttl: i64 = redis.pttl(key(&prefix, "e1")).await.unwrap();
    assert!(ttl > 0, "A's lease still expires (pttl {ttl})");
    assert_eq!(b.lease(&["e1"]).await.unwrap(), vec![Lease::HeldElsewhere]);

    assert_eq!(
        applied(&a, &[("e1", &none)]).await,
        vec![Ok(Applied::Applied)]
    );
    let mark: String = redis.get(key(&prefix, "e1")).await.unwrap();
    assert_eq!(mark, "done");
    let ttl: i64 = redis.ttl(key(&prefix, "e1")).await.unwrap();
    assert!(
        ttl > 30,
        "the done-mark lives for the done TTL, not the lease's (ttl {ttl} s)"
    );

    // Afterwards both see a duplicate, and a second apply changes nothing.
    assert_eq!(b.lease(&["e1"]).await.unwrap(), vec![Lease::Done]);
    assert_eq!(
        applied(&b, &[("e1", &none)]).await,
        vec![Ok(Applied::AlreadyDone)]
    );
    assert_eq!(
        applied(&a, &[("e1", &none)]).await,
        vec![Ok(Applied::AlreadyDone)]
    );
}

#[tokio::test]
async fn an_apply_without_a_lease_creates_nothing() {
    let prefix = unique("idem-nolease.");
    let (a, b, mut redis) = two_instances(&prefix).await;

    assert_eq!(
        applied(&a, &[("e1", &Effects::none())]).await,
        vec![Ok(Applied::LeaseLost)]
    );
    let exists: bool = redis.exists(key(&prefix, "e1")).await.unwrap();
    assert!(!exists, "no done-mark for an event nobody leased");
    assert_eq!(b.lease(&["e1"]).await.unwrap(), vec![Lease::Acquired]);
}

/// Release gives back only this instance's leases: an event another
/// instance holds or one already done is left as it is.
#[tokio::test]
async fn release_gives_back_only_the_instances_own_leases() {
    let prefix = unique("idem-release.");
    let (a, b, mut redis) = two_instances(&prefix).await;
    assert_eq!(
        a.lease(&["mine", "done"]).await.unwrap(),
        vec![Lease::Acquired, Lease::Acquired]
    );
    assert_eq!(
        applied(&a, &[("done", &Effects::none())]).await,
        vec![Ok(Applied::Applied)]
    );
    assert_eq!(b.lease(&["theirs"]).await.unwrap(), vec![Lease::Acquired]);

    let released = a
        .release(&["mine", "done", "theirs", "never-leased"])
        .await
        .unwrap();
    assert_eq!(released, 1, "only the lease A held of an unsettled event");
    // The event is free for the next owner at once, not after the lease time.
    assert_eq!(b.lease(&["mine"]).await.unwrap(), vec![Lease::Acquired]);
    assert_eq!(a.lease(&["done"]).await.unwrap(), vec![Lease::Done]);
    assert_eq!(
        a.lease(&["theirs"]).await.unwrap(),
        vec![Lease::HeldElsewhere]
    );
    let exists: bool = redis.exists(key(&prefix, "never-leased")).await.unwrap();
    assert!(!exists);
}

#[tokio::test]
async fn a_batch_mixing_events_with_and_without_state_changes_applies_each() {
    let prefix = unique("idem-mixed.");
    let (a, _, mut redis) = two_instances(&prefix).await;
    let counter = format!("{prefix}counter");
    let none = Effects::none();
    let incr = Effects::none().op(StateOp::cmd("INCRBY").arg(&counter).arg(5));

    assert_eq!(
        a.lease(&["e1", "e2", "e3"]).await.unwrap(),
        vec![Lease::Acquired; 3]
    );
    assert_eq!(
        applied(&a, &[("e1", &none), ("e2", &incr), ("e3", &none)]).await,
        vec![Ok(Applied::Applied); 3]
    );
    let total: i64 = redis.get(&counter).await.unwrap();
    assert_eq!(total, 5);
    for id in ["e1", "e2", "e3"] {
        let mark: String = redis.get(key(&prefix, id)).await.unwrap();
        assert_eq!(mark, "done", "{id}");
    }
}

/// Only events with state changes carry arguments (their position in the
/// batch, then their commands), so each must find its own commands wherever
/// it sits: first, last, next to another one, after events without any.
#[tokio::test]
async fn state_changes_reach_their_own_event_wherever_it_sits_in_the_batch() {
    let prefix = unique("idem-positions.");
    let (a, _, mut redis) = two_instances(&prefix).await;
    let (counter, names) = (format!("{prefix}counter"), format!("{prefix}names"));
    let none = Effects::none();
    let changes = |id: &str, by: i64| {
        Effects::none()
            .op(StateOp::cmd("INCRBY").arg(&counter).arg(by))
            .op(StateOp::cmd("HSET").arg(&names).arg(id).arg(by))
    };
    let (e1, e3, e4, e7) = (
        changes("e1", 1),
        changes("e3", 10),
        changes("e4", 100),
        changes("e7", 1000),
    );
    let items = [
        ("e1", &e1),
        ("e2", &none),
        ("e3", &e3),
        ("e4", &e4),
        ("e5", &none),
        ("e6", &none),
        ("e7", &e7),
    ];
    let ids: Vec<&str> = items.iter().map(|(id, _)| *id).collect();

    assert_eq!(a.lease(&ids).await.unwrap(), vec![Lease::Acquired; 7]);
    assert_eq!(applied(&a, &items).await, vec![Ok(Applied::Applied); 7]);
    let total: i64 = redis.get(&counter).await.unwrap();
    assert_eq!(total, 1111);
    let written: std::collections::BTreeMap<String, i64> = redis.hgetall(&names).await.unwrap();
    let expected = [("e1", 1), ("e3", 10), ("e4", 100), ("e7", 1000)]
        .map(|(id, by)| (id.to_owned(), by))
        .into();
    assert_eq!(written, expected);
    for id in ids {
        let mark: String = redis.get(key(&prefix, id)).await.unwrap();
        assert_eq!(mark, "done", "{id}");
    }
}

#[tokio::test]
async fn after_a_refused_event_the_rest_of_the_batch_waits_with_its_leases_kept() {
    let prefix = unique("idem-refused.");
    let (a, b, mut redis) = two_instances(&prefix).await;
    let text = format!("{prefix}text");
    let _: () = redis.set(&text, "not a hash").await.unwrap();
    let wrong_type = Effects::none().op(StateOp::cmd("HINCRBY").arg(&text).arg("f").arg(1));
    let none = Effects::none();

    assert_eq!(
        a.lease(&["e1", "e2"]).await.unwrap(),
        vec![Lease::Acquired; 2]
    );
    let outcome = applied(&a, &[("e1", &wrong_type), ("e2", &none)]).await;
    assert!(
        matches!(&outcome[0], Err(Refused(reason)) if reason.contains("WRONGTYPE")),
        "{outcome:?}"
    );
    assert_eq!(outcome[1], Ok(Applied::Deferred));
    // e2 is still A's: B cannot take it, and A applies it on the next try.
    assert_eq!(b.lease(&["e2"]).await.unwrap(), vec![Lease::HeldElsewhere]);
    assert_eq!(
        applied(&a, &[("e2", &none)]).await,
        vec![Ok(Applied::Applied)]
    );
}

/// An event handled before its lease: the apply takes the lease and marks it
/// done in one step, with and without state changes, and once only.
#[tokio::test]
async fn an_unleased_apply_marks_and_applies_each_free_event_once() {
    let prefix = unique("idem-unleased.");
    let (a, b, mut redis) = two_instances(&prefix).await;
    let counter = format!("{prefix}counter");
    let none = Effects::none();
    let incr = Effects::none().op(StateOp::cmd("INCRBY").arg(&counter).arg(5));
    let items = [("e1", &none), ("e2", &incr), ("e3", &none)];

    assert_eq!(
        a.apply_unleased(&items).await.unwrap(),
        vec![Ok(Applied::Applied); 3]
    );
    let total: i64 = redis.get(&counter).await.unwrap();
    assert_eq!(total, 5);
    for id in ["e1", "e2", "e3"] {
        let mark: String = redis.get(key(&prefix, id)).await.unwrap();
        assert_eq!(mark, "done", "{id}");
        let ttl: i64 = redis.ttl(key(&prefix, id)).await.unwrap();
        assert!(
            ttl > 30,
            "{id}'s done-mark lives for the done TTL (ttl {ttl} s)"
        );
    }
    // Whoever comes next, unleased or leased, finds duplicates and applies nothing.
    assert_eq!(
        b.apply_unleased(&items).await.unwrap(),
        vec![Ok(Applied::AlreadyDone); 3]
    );
    assert_eq!(
        b.lease(&["e1", "e2", "e3"]).await.unwrap(),
        vec![Lease::Done; 3]
    );
    let total: i64 = redis.get(&counter).await.unwrap();
    assert_eq!(total, 5, "applied once");

    // An event whose lease this instance holds (leased in an earlier round) is its own.
    assert_eq!(
        a.lease(&["e4", "e5"]).await.unwrap(),
        vec![Lease::Acquired; 2]
    );
    assert_eq!(
        a.apply_unleased(&[("e4", &none), ("e5", &incr)])
            .await
            .unwrap(),
        vec![Ok(Applied::Applied); 2]
    );
    let total: i64 = redis.get(&counter).await.unwrap();
    assert_eq!(total, 10);
}

/// Another instance's lease is respected, and to keep each partition's order
/// nothing after the held event is applied (nor leased): those go the leased
/// way once the holder is done.
#[tokio::test]
async fn an_unleased_apply_stops_at_another_instances_lease() {
    for held_has_changes in [false, true] {
        let prefix = unique("idem-unleased-held.");
        let (a, b, mut redis) = two_instances(&prefix).await;
        let counter = format!("{prefix}counter");
        let none = Effects::none();
        let incr = Effects::none().op(StateOp::cmd("INCRBY").arg(&counter).arg(1));
        let held = if held_has_changes { &incr } else { &none };
        assert_eq!(b.lease(&["e2"]).await.unwrap(), vec![Lease::Acquired]);

        let outcome = a
            .apply_unleased(&[("e1", &incr), ("e2", held), ("e3", &none), ("e4", &incr)])
            .await
            .unwrap();
        assert_eq!(
            outcome,
            vec![
                Ok(Applied::Applied),
                Ok(Applied::LeaseLost),
                Ok(Applied::Deferred),
                Ok(Applied::Deferred)
            ],
            "held event with state changes: {held_has_changes}"
        );
        let total: i64 = redis.get(&counter).await.unwrap();
        assert_eq!(total, 1, "only e1 applied");
        let ttl: i64 = redis.pttl(key(&prefix, "e2")).await.unwrap();
        assert!(ttl > 0, "B's lease stands (pttl {ttl})");
        for id in ["e3", "e4"] {
            let exists: bool = redis.exists(key(&prefix, id)).await.unwrap();
            assert!(!exists, "{id} is neither leased nor marked");
        }
        assert_eq!(
            applied(&b, &[("e2", held)]).await,
            vec![Ok(Applied::Applied)]
        );
        assert_eq!(
            a.apply_unleased(&[("e2", held), ("e3", &none), ("e4", &incr)])
                .await
                .unwrap(),
            vec![
                Ok(Applied::AlreadyDone),
                Ok(Applied::Applied),
                Ok(Applied::Applied)
            ]
        );
        let total: i64 = redis.get(&counter).await.unwrap();
        assert_eq!(total, if held_has_changes { 3 } else { 2 });
    }
}

/// A refused command stops an unleased apply as it stops a leased one: the
/// event's earlier commands are undone, nothing after it is applied (an
/// event already done still answers so), and no key is left behind.
#[tokio::test]
async fn an_unleased_apply_stops_at_a_refused_command_and_leaves_no_key() {
    let prefix = unique("idem-unleased-refused.");
    let (a, _, mut redis) = two_instances(&prefix).await;
    let (text, counter) = (format!("{prefix}text"), format!("{prefix}counter"));
    let _: () = redis.set(&text, "not a hash").await.unwrap();
    let refused = Effects::none()
        .op(StateOp::cmd("INCRBY").arg(&counter).arg(1))
        .op(StateOp::cmd("HINCRBY").arg(&text).arg("f").arg(1));
    let none = Effects::none();
    assert_eq!(
        a.apply_unleased(&[("e3", &none)]).await.unwrap(),
        vec![Ok(Applied::Applied)]
    );

    let outcome = a
        .apply_unleased(&[("e1", &refused), ("e2", &none), ("e3", &none)])
        .await
        .unwrap();
    assert!(
        matches!(&outcome[0], Err(Refused(reason)) if reason.contains("WRONGTYPE")),
        "{outcome:?}"
    );
    assert_eq!(
        outcome[1..],
        [Ok(Applied::Deferred), Ok(Applied::AlreadyDone)]
    );
    let exists: bool = redis.exists(&counter).await.unwrap();
    assert!(!exists, "e1's first command undone");
    for id in ["e1", "e2"] {
        let exists: bool = redis.exists(key(&prefix, id)).await.unwrap();
        assert!(!exists, "{id} is neither leased nor marked");
    }
}

/// A call chained after another (sent before that one answered) applies
/// only if that one ran first and settled every event: behind a call that
/// stopped at another instance's lease, or one that has not run, nothing
/// is applied or marked, and so no partition's events pass the stop.
#[tokio::test]
async fn a_chained_unleased_apply_applies_only_behind_a_call_that_settled_everything() {
    let prefix = unique("idem-unleased-chain.");
    let (a, b, mut redis) = two_instances(&prefix).await;
    let counter = format!("{prefix}counter");
    let none = Effects::none();
    let incr = Effects::none().op(StateOp::cmd("INCRBY").arg(&counter).arg(1));

    // Behind a call that settled everything: applied.
    let first = a.next_chain();
    let second = a.next_chain();
    assert_eq!(
        a.apply_unleased_after(&[("e1", &incr)], first, None)
            .await
            .unwrap(),
        vec![Ok(Applied::Applied)]
    );
    assert_eq!(
        a.apply_unleased_after(&[("e2", &incr), ("e3", &none)], second, Some(first))
            .await
            .unwrap(),
        vec![Ok(Applied::Applied); 2]
    );

    // Behind a call that stopped at B's lease: nothing, not even an event
    // of another partition; and so on down the chain.
    assert_eq!(b.lease(&["e5"]).await.unwrap(), vec![Lease::Acquired]);
    let (stops, behind, further) = (a.next_chain(), a.next_chain(), a.next_chain());
    assert_eq!(
        a.apply_unleased_after(&[("e4", &incr), ("e5", &none)], stops, Some(second))
            .await
            .unwrap(),
        vec![Ok(Applied::Applied), Ok(Applied::LeaseLost)]
    );
    // (A guard that would fail does not make it a conflict: it was not run.)
    let guarded = Effects::none().op(StateOp::expect(&counter, Some("0")));
    let chained = [
        ("e6", &incr),
        ("e3", &none),
        ("e5", &none),
        ("e9", &guarded),
    ];
    assert_eq!(
        a.apply_unleased_after(&chained, behind, Some(stops))
            .await
            .unwrap(),
        vec![
            Ok(Applied::Deferred),
            Ok(Applied::AlreadyDone),
            Ok(Applied::LeaseLost),
            Ok(Applied::Deferred)
        ]
    );
    assert_eq!(
        a.apply_unleased_after(&[("e7", &none)], further, Some(behind))
            .await
            .unwrap(),
        vec![Ok(Applied::Deferred)]
    );
    for id in ["e6", "e7", "e9"] {
        let exists: bool = redis.exists(key(&prefix, id)).await.unwrap();
        assert!(!exists, "{id} is neither leased nor marked");
    }
    let total: i64 = redis.get(&counter).await.unwrap();
    assert_eq!(total, 3, "e1, e2 and e4 applied");

    // Behind a call that has not run (its answer would come later): nothing.
    let (later, early) = (a.next_chain(), a.next_chain());
    assert_eq!(
        a.apply_unleased_after(&[("e8", &incr)], early, Some(later))
            .await
            .unwrap(),
        vec![Ok(Applied::Deferred)]
    );
    // A new chain starts behind nothing, and the next links to it.
    assert_eq!(
        a.apply_unleased_after(&[("e6", &incr)], later, None)
            .await
            .unwrap(),
        vec![Ok(Applied::Applied)]
    );
    let next = a.next_chain();
    assert_eq!(
        a.apply_unleased_after(&[("e7", &none), ("e8", &incr)], next, Some(later))
            .await
            .unwrap(),
        vec![Ok(Applied::Applied); 2]
    );
    let total: i64 = redis.get(&counter).await.unwrap();
    assert_eq!(total, 5, "e6 and e8 applied once each");
}

/// A partition changes hands while its last owner's calls are in flight.
/// A settled events 0-4 (its committed offset is 5), then sent two chained
/// calls, 5-9 and 10-14, which reach Redis after B (the new owner, starting
/// at offset 5) sent its own two, 5-11 and 12-14: the four arrive in every
/// order (sending in order is not what keeps this safe: a reload after
/// `NOSCRIPT` can reorder them). B then settles what is left the leased
/// way, as its runtime does with deferred events. Every event applies
/// exactly once and in produced order, whatever the order of arrival: no
/// call applies past an event that the call before it in its chain left
/// unsettled (without the chain check, B's second call, arriving first,
/// applies 12-14 before 5-11).
#[tokio::test]
async fn calls_in_flight_across_a_rebalance_apply_each_event_once_in_order_in_any_arrival_order() {
    // Events with state changes append their sequence number to a list (the
    // order they applied in); the odd ones take the no-state path.
    let effects = |prefix: &str, seq: usize| {
        if seq.is_multiple_of(2) {
            Effects::none().op(StateOp::cmd("RPUSH")
                .arg(format!("{prefix}applied"))
                .arg(seq))
        } else {
            Effects::none()
        }
    };
    // (instance, first event, last event): A's two calls, then B's two.
    let calls = [(0, 5, 9), (0, 10, 14), (1, 5, 11), (1, 12, 14)];
    for order in permutations(calls.len()) {
        let prefix = unique("idem-rebalance-in-flight.");
        let (a, b, mut redis) = two_instances(&prefix).await;
        let ids: Vec<String> = (0..15).map(|seq| format!("e{seq}")).collect();
        let all: Vec<Effects> = (0..15).map(|seq| effects(&prefix, seq)).collect();
        let items = |from: usize, to: usize| -> Vec<(&str, &Effects)> {
            (from..=to)
                .map(|seq| (ids[seq].as_str(), &all[seq]))
                .collect()
        };
        let mut applied_by: Vec<usize> = vec![0; 15];
        let mut count = |from: usize, answers: &[Result<Applied, Refused>]| {
            for (seq, answer) in (from..).zip(answers) {
                if *answer == Ok(Applied::Applied) {
                    applied_by[seq] += 1;
                }
            }
        };

        // A's settled batch: the chain its calls in flight hang on.
        let settled = a.next_chain();
        let answers = a
            .apply_unleased_after(&items(0, 4), settled, None)
            .await
            .unwrap();
        count(0, &answers);
        let (a1, a2) = (a.next_chain(), a.next_chain());
        let (b1, b2) = (b.next_chain(), b.next_chain());
        let chains = [
            (a1, Some(settled)),
            (a2, Some(a1)),
            (b1, None),
            (b2, Some(b1)),
        ];
        for &k in &order {
            let (instance, from, to) = calls[k];
            let instance = if instance == 0 { &a } else { &b };
            let (this, after) = chains[k];
            let answers = instance
                .apply_unleased_after(&items(from, to), this, after)
                .await
                .unwrap();
            count(from, &answers);
        }
        // B settles whatever was deferred, in order, under its leases.
        let rest: Vec<&str> = ids[5..].iter().map(String::as_str).collect();
        let leases = b.lease(&rest).await.unwrap();
        let mut acquired = Vec::new();
        for (seq, lease) in (5..).zip(&leases) {
            match lease {
                Lease::Acquired => acquired.push((ids[seq].as_str(), &all[seq])),
                Lease::Done => {}
                Lease::HeldElsewhere => panic!("{order:?}: e{seq} left leased"),
            }
        }
        let answers = applied(&b, &acquired).await;
        assert_eq!(
            answers,
            vec![Ok(Applied::Applied); acquired.len()],
            "{order:?}: B's leased pass"
        );
        for ((id, _), answer) in acquired.iter().zip(&answers) {
            if *answer == Ok(Applied::Applied) {
                let seq: usize = id[1..].parse().unwrap();
                applied_by[seq] += 1;
            }
        }

        assert_eq!(
            applied_by,
            vec![1; 15],
            "{order:?}: each event applied once"
        );
        let list: Vec<usize> = redis
            .lrange(format!("{prefix}applied"), 0, -1)
            .await
            .unwrap();
        assert_eq!(
            list,
            (0..15usize)
                .filter(|seq| seq.is_multiple_of(2))
                .collect::<Vec<_>>(),
            "{order:?}: the state changes in produced order"
        );
    }
}

/// Every order of `0..n`.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut all = Vec::new();
    for rest in permutations(n - 1) {
        for at in 0..=rest.len() {
            let mut order = rest.clone();
            order.insert(at, n - 1);
            all.push(order);
        }
    }
    all
}

#[tokio::test]
async fn a_redis_crash_loses_the_leases_and_keeps_the_done_marks() {
    let prefix = unique("idem-crash.");
    let dir = std::env::temp_dir().join(unique("opal-redis-crash"));
    let port = common::free_port();
    let server = common::PrivateRedis::start(port, &dir);
    server.answering().await;
    let url = server.url();
    let (a, _, _) = two_instances_at(&url, &prefix).await;
    let counter = format!("{prefix}counter");
    let incr = Effects::none().op(StateOp::cmd("INCRBY").arg(&counter).arg(5));
    let none = Effects::none();

    assert_eq!(
        a.lease(&["e1", "e2", "e3"]).await.unwrap(),
        vec![Lease::Acquired; 3]
    );
    assert_eq!(
        applied(&a, &[("e1", &none), ("e2", &incr)]).await,
        vec![Ok(Applied::Applied); 2]
    );
    // kill -9 (the drop), then Redis rebuilds itself from its append-only file.
    drop(server);
    let server = common::PrivateRedis::start(port, &dir);
    server.answering().await;
    let (b, _, mut redis) = two_instances_at(&url, &prefix).await;

    for id in ["e1", "e2"] {
        let mark: String = redis.get(key(&prefix, id)).await.unwrap();
        assert_eq!(mark, "done", "{id}'s done-mark survives the crash");
        let ttl: i64 = redis.ttl(key(&prefix, id)).await.unwrap();
        assert!(ttl > 30, "{id} keeps its done TTL (ttl {ttl} s)");
    }
    let total: i64 = redis.get(&counter).await.unwrap();
    assert_eq!(total, 5, "e2's effect survives the crash, once");
    let exists: bool = redis.exists(key(&prefix, "e3")).await.unwrap();
    assert!(
        !exists,
        "e3's lease was never written to the append-only file"
    );
    // The lost lease is lost as to expiry: its holder's apply changes nothing,
    // and the event goes to whoever leases it next.
    // (A's connection reconnects on the first command after the crash, which fails.)
    let mut after_crash = None;
    for _ in 0..100 {
        if let Ok(outcome) = a.apply(&[("e3", &incr)]).await {
            after_crash = Some(outcome);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(after_crash, Some(vec![Ok(Applied::LeaseLost)]));
    assert_eq!(
        b.lease(&["e1", "e2", "e3"]).await.unwrap(),
        vec![Lease::Done, Lease::Done, Lease::Acquired]
    );
    assert_eq!(
        applied(&b, &[("e3", &incr)]).await,
        vec![Ok(Applied::Applied)]
    );
    let total: i64 = redis.get(&counter).await.unwrap();
    assert_eq!(total, 10);
    let _ = std::fs::remove_dir_all(&dir);
}
