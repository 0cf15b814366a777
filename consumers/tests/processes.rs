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
    let _turn = turn().await;
    let env = Env::new().await;
    // Long enough that the signal lands mid-run on a fast broker.
    const N: usize = 20_000;
    let ids = publish_knowledge(&env, N, "policy").await;
    let port = free_port();
    let mut first = env.spawn_counting(port);
    wait_for_total(&env, 200, Duration::from_secs(120)).await;
    signal(&first.0, "TERM");
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
    let mut kill_points: Vec<i64> = (0..KILLS)
        .map(|_| rng.random_range(n as i64 / 20..n as i64 * 9 / 10))
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

#[tokio::test]
async fn two_instances_with_a_rebalance_mid_run_apply_each_event_once() {
    let _turn = turn().await;
    let env = Env::new().await;
    let ids = publish_knowledge(&env, 5_000, "policy").await;
    let mut a = env.spawn_counting(free_port());
    wait_for_total(&env, 500, Duration::from_secs(120)).await;
    let mut b = env.spawn_counting(free_port());
    wait_for_total(&env, 5_000, Duration::from_secs(240)).await;
    for child in [&mut a, &mut b] {
        signal(&child.0, "TERM");
        assert_eq!(wait_exit(&mut child.0, Duration::from_secs(30)), Some(0));
    }
    let applied = counts(&mut redis().await, &env.count_prefix, &ids).await;
    assert_eq!(
        applied.iter().filter(|c| **c != 1).count(),
        0,
        "each of 5 000 applied exactly once"
    );
}
