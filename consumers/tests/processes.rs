//! The consumer as a process: SIGTERM drains and commits; kill -9 at random
//! moments and a rebalance between two instances leave every event applied
//! exactly once.

mod common;

use std::process::Child;
use std::time::Duration;

use common::*;
use opal_e2e::unique;
use rand::Rng;

/// These tests each run consumer processes over tens of thousands of events;
/// they take turns so that each gets the CI machine's two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn turn() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<i32> {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("consumer did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn total(env: &Env) -> i64 {
    get_count(&mut redis().await, &env.total_key()).await
}

#[tokio::test]
async fn sigterm_mid_run_exits_zero_with_offsets_committed() {
    stop_mid_run_with("TERM").await;
}

#[tokio::test]
async fn sigint_mid_run_exits_zero_with_offsets_committed() {
    stop_mid_run_with("INT").await;
}

/// One consumer stopped by `sig` mid-run drains, commits and exits 0; a
/// second one processes exactly the rest, re-reading nothing.
async fn stop_mid_run_with(sig: &str) {
    let _turn = turn().await;
    let env = Env::new().await;
    // Long enough that the signal lands mid-run on a fast broker.
    const N: usize = 20_000;
    let ids = publish_knowledge(&env, N, "policy").await;
    let port = free_port();
    let mut first = env.spawn_counting(port);
    wait_for_total(&env, 200, Duration::from_secs(120)).await;
    signal(&first.0, sig);
    assert_eq!(
        wait_exit(&mut first.0, Duration::from_secs(20)),
        Some(0),
        "graceful exit code"
    );
    let done_before = total(&env).await;
    assert!(
        done_before < N as i64,
        "stopped mid-run ({done_before} of {N}), or the test proves nothing"
    );

    let port = free_port();
    let mut second = env.spawn_counting(port);
    wait_for_total(&env, N as i64, Duration::from_secs(300)).await;
    let metrics = http_get(port, "/metrics").await.expect("metrics").1;
    signal(&second.0, "TERM");
    assert_eq!(wait_exit(&mut second.0, Duration::from_secs(20)), Some(0));

    let mut connection = redis().await;
    assert_eq!(
        counts(&mut connection, &env.count_prefix, &ids).await,
        vec![1; N],
        "nothing lost or repeated"
    );
    let topic = env.topic(opal_schemas::EventType::KnowledgeUpserted);
    let labels = |outcome| {
        [
            ("consumer", "counting"),
            ("topic", topic.as_str()),
            ("outcome", outcome),
        ]
    };
    let duplicates = metric(&metrics, "opal_events_consumed_total", &labels("duplicate"));
    let processed = metric(&metrics, "opal_events_consumed_total", &labels("processed"));
    assert_eq!(
        processed as i64,
        N as i64 - done_before,
        "the restart processed exactly the rest"
    );
    assert_eq!(
        duplicates, 0.0,
        "offsets were committed at shutdown: the restart re-read nothing"
    );
}

/// Events in each crash run (the size; `OPAL_CRASH_TEST_EVENTS` overrides).
fn crash_events() -> usize {
    std::env::var("OPAL_CRASH_TEST_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000)
}

/// Kills in each crash run.
const KILLS: usize = 5;

/// Publishes `crash_events()` events, runs one counting consumer, kills it
/// with -9 at `KILLS` random points of its progress (each chosen as a number
/// of applied events, so every kill lands mid-run whatever the machine's
/// speed), restarts it each time with `extra_env`, and asserts every event
/// was applied exactly once and the last instance stops cleanly.
async fn crash_run(extra_env: &[(&str, &str)]) {
    let _turn = turn().await;
    let env = Env::new().await;
    let n = crash_events();
    let ids = publish_knowledge(&env, n, "policy").await;
    let mut rng = rand::rng();
    // Up to 70%: the last kill leaves three full batches (6 000 of 20 000
    // events) to go, as a batch applies its events at once.
    let mut kill_points: Vec<i64> = (0..KILLS)
        .map(|_| rng.random_range(n as i64 / 20..n as i64 * 7 / 10))
        .collect();
    kill_points.sort_unstable();
    let mut child = env.spawn_counting_with(free_port(), extra_env);
    let mut killed_at = Vec::new();
    for point in kill_points {
        wait_for_total(&env, point, Duration::from_secs(300)).await;
        child.0.kill().expect("kill -9");
        let _ = child.0.wait();
        killed_at.push(total(&env).await);
        child = env.spawn_counting_with(free_port(), extra_env);
    }
    assert!(
        killed_at.iter().all(|done| *done < n as i64),
        "every kill landed before the end: applied at each kill {killed_at:?} of {n}"
    );
    wait_for_total(&env, n as i64, Duration::from_secs(600)).await;
    signal(&child.0, "TERM");
    assert_eq!(
        wait_exit(&mut child.0, Duration::from_secs(30)),
        Some(0),
        "the last instance stops cleanly"
    );
    let applied = counts(&mut redis().await, &env.count_prefix, &ids).await;
    let missing = applied.iter().filter(|c| **c == 0).count();
    let repeated = applied.iter().filter(|c| **c > 1).count();
    assert_eq!(
        (missing, repeated),
        (0, 0),
        "after kill -9 at {killed_at:?} of {n} applied: every event exactly once"
    );
    assert_eq!(total(&env).await, n as i64);
}

/// The consumer restarts under the same `OPAL_GROUP_INSTANCE_ID` (static
/// membership), as a replica in a StatefulSet or under systemd does: the
/// restarted process takes its partitions back at once.
#[tokio::test]
async fn kill_9_at_random_moments_with_static_membership_applies_every_event_exactly_once() {
    let instance = unique("crash-replica");
    crash_run(&[("OPAL_GROUP_INSTANCE_ID", instance.as_str())]).await;
}

/// A plain member: the restarted process joins as a new member and gets the
/// partitions once the broker has expired the killed one (its session
/// timeout, shortened here so five kills take under a minute).
#[tokio::test]
async fn kill_9_at_random_moments_without_static_membership_applies_every_event_exactly_once() {
    crash_run(&[
        ("OPAL_SESSION_TIMEOUT_MS", "10000"),
        ("OPAL_DRAIN_TIMEOUT_MS", "5000"),
    ])
    .await;
}

/// Publishes `chunks` chunks of `size` knowledge events, `pause` apart, so
/// the stream lasts while instances join; returns their ids.
async fn publish_paced(env: &Env, chunks: usize, size: usize, pause: Duration) -> Vec<String> {
    let mut ids = Vec::with_capacity(chunks * size);
    for _ in 0..chunks {
        ids.extend(publish_knowledge(env, size, "policy").await);
        tokio::time::sleep(pause).await;
    }
    ids
}

/// An instance's events by outcome, from its /metrics.
async fn outcomes(port: u16, env: &Env, outcome: &str) -> f64 {
    let text = http_get(port, "/metrics").await.expect("metrics").1;
    metric(
        &text,
        "opal_events_consumed_total",
        &[
            (
                "topic",
                env.topic(opal_schemas::EventType::KnowledgeUpserted)
                    .as_str(),
            ),
            ("outcome", outcome),
        ],
    )
}

#[tokio::test]
async fn two_instances_with_a_rebalance_mid_run_share_the_work_and_apply_each_event_once() {
    let _turn = turn().await;
    let env = Env::new().await;
    let mut ids = publish_knowledge(&env, 2_000, "policy").await;
    let (port_a, port_b) = (free_port(), free_port());
    let mut a = env.spawn_counting(port_a);
    wait_for_total(&env, 500, Duration::from_secs(120)).await;
    let mut b = env.spawn_counting(port_b);
    // Traffic goes on while b joins (a rebalance) and after it.
    ids.extend(publish_paced(&env, 30, 500, Duration::from_millis(300)).await);
    wait_for_total(&env, ids.len() as i64, Duration::from_secs(240)).await;
    settled(&env).await;

    let (by_a, by_b) = (
        outcomes(port_a, &env, "processed").await,
        outcomes(port_b, &env, "processed").await,
    );
    assert!(
        by_a > 0.0 && by_b > 0.0,
        "the rebalance gave b partitions and both processed events: a {by_a}, b {by_b}"
    );
    assert_eq!(
        by_a + by_b,
        ids.len() as f64,
        "every event processed by one of them"
    );
    let redelivered =
        outcomes(port_a, &env, "duplicate").await + outcomes(port_b, &env, "duplicate").await;
    assert_eq!(
        redelivered, 0.0,
        "a committed what it had done before its partitions moved: nothing came twice"
    );
    for child in [&mut a, &mut b] {
        signal(&child.0, "TERM");
        assert_eq!(wait_exit(&mut child.0, Duration::from_secs(30)), Some(0));
    }
    let applied = counts(&mut redis().await, &env.count_prefix, &ids).await;
    assert_eq!(
        applied.iter().filter(|c| **c != 1).count(),
        0,
        "each event applied exactly once"
    );
}

/// Settings under which a batch of `fail-transient-8` events spends many
/// seconds in retry backoff: a drain that outlasts a short drain timeout.
const SLOW: [(&str, &str); 3] = [
    ("OPAL_RETRY_BASE_MS", "3000"),
    ("OPAL_RETRY_MAX_MS", "3000"),
    ("OPAL_RETRY_ATTEMPTS", "10"),
];

/// Waits until the consumer on `port` has a batch in hand.
async fn batch_in_hand(port: u16) {
    wait_until(TIMEOUT, "a batch in hand", || async move {
        http_get(port, "/metrics")
            .await
            .is_some_and(|(_, m)| metric(&m, "opal_consumer_batches_total", &[]) >= 1.0)
    })
    .await;
}

#[tokio::test]
async fn a_drain_longer_than_the_drain_timeout_exits_3_and_its_records_come_again() {
    let _turn = turn().await;
    let env = Env::new().await;
    let ids = publish_knowledge(&env, 3, "fail-transient-8").await;
    let port = free_port();
    let mut slow = SLOW.to_vec();
    slow.push(("OPAL_DRAIN_TIMEOUT_MS", "2000"));
    // Longer than the test: a lease left behind would still be there.
    slow.push(("OPAL_LEASE_MS", "120000"));
    let mut child = env.spawn_counting_with(port, &slow);
    batch_in_hand(port).await;
    signal(&child.0, "TERM");
    assert_eq!(
        wait_exit(&mut child.0, Duration::from_secs(30)),
        Some(3),
        "the drain timeout cut the batch short (exit code 3)"
    );
    assert_eq!(
        total(&env).await,
        0,
        "nothing of the unfinished batch was applied"
    );
    // Their leases were given back on the way out: the next instance need
    // not wait for them to expire.
    let mut redis = redis().await;
    for id in &ids {
        let lease: Option<String> = redis::cmd("GET")
            .arg(env.idempotency_key(id))
            .query_async(&mut redis)
            .await
            .expect("GET");
        assert_eq!(lease, None, "the lease of {id}");
    }
    // Its offsets were not stored: the next instance gets the records again
    // (with the same retry budget: the drill fails 8 times first).
    let mut next = env.spawn_counting_with(free_port(), &[("OPAL_RETRY_ATTEMPTS", "10")]);
    wait_for_total(&env, 3, Duration::from_secs(120)).await;
    signal(&next.0, "TERM");
    assert_eq!(wait_exit(&mut next.0, Duration::from_secs(30)), Some(0));
    assert_eq!(
        counts(&mut redis, &env.count_prefix, &ids).await,
        vec![1; 3]
    );
}

#[tokio::test]
async fn a_second_signal_exits_at_once_with_130() {
    let _turn = turn().await;
    let env = Env::new().await;
    publish_knowledge(&env, 3, "fail-transient-8").await;
    let port = free_port();
    let mut slow = SLOW.to_vec();
    slow.push(("OPAL_DRAIN_TIMEOUT_MS", "20000"));
    let mut child = env.spawn_counting_with(port, &slow);
    batch_in_hand(port).await;
    signal(&child.0, "TERM");
    // The first signal took effect once the HTTP server stops answering.
    wait_until(TIMEOUT, "the drain under way", || async move {
        http_get(port, "/health/live").await.is_none()
    })
    .await;
    signal(&child.0, "INT");
    assert_eq!(
        wait_exit(&mut child.0, Duration::from_secs(15)),
        Some(130),
        "the second signal ended the drain (the drain alone would take over 20 s)"
    );
}

#[tokio::test]
async fn every_emitted_event_is_published_by_the_time_the_consumer_exits() {
    let _turn = turn().await;
    let env = Env::new().await;
    let n = 300;
    publish_knowledge(&env, n, "emit-degraded").await;
    let mut child = env.spawn_counting(free_port());
    wait_for_total(&env, n as i64, Duration::from_secs(120)).await;
    signal(&child.0, "TERM");
    assert_eq!(wait_exit(&mut child.0, Duration::from_secs(30)), Some(0));
    // The consumer has exited: nothing more can arrive, so the count is exact.
    let emitted = read_all(
        &env.kafka(),
        &env.topic(opal_schemas::EventType::DecisionDegraded),
        n,
    )
    .await;
    let ids: std::collections::BTreeSet<String> = emitted
        .iter()
        .filter_map(|m| header(m, "opal-event-id"))
        .collect();
    assert_eq!(
        (emitted.len(), ids.len()),
        (n, n),
        "one emitted event per input, each once"
    );
}

/// A static member fenced by another with the same `group.instance.id` (as
/// librdkafka reports after some broker restarts, seen in the soak) can never
/// consume or commit again: the consumer exits 1 for its supervisor to start
/// a fresh instance, instead of polling a dead client while reporting ready.
#[tokio::test]
async fn a_fenced_static_member_exits_1_instead_of_stalling() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let _turn = turn().await;
    let env = Env::new().await;
    publish_knowledge(&env, 10, "policy").await;
    let instance = unique("fenced");
    let mut member = env.spawn_counting_with(
        free_port(),
        &[("OPAL_GROUP_INSTANCE_ID", instance.as_str())],
    );
    wait_for_total(&env, 10, TIMEOUT).await;

    // Another member joins under the same instance id and takes it over.
    let usurper: BaseConsumer = env
        .kafka()
        .client_config()
        .expect("config")
        .set("group.id", &env.group)
        .set("group.instance.id", &instance)
        .set("enable.auto.commit", "false")
        .create()
        .expect("usurper");
    usurper
        .subscribe(&[&env.topic(opal_schemas::EventType::KnowledgeUpserted)])
        .expect("subscribe");
    let code = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            let _ = usurper.poll(Duration::from_millis(100));
            if let Ok(Some(status)) = member.0.try_wait() {
                return status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the fenced consumer is still running"
            );
        }
    })
    .await
    .expect("waiting");
    assert_eq!(code, Some(1), "a fatal Kafka client error exits 1");
}
