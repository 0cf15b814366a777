//! The consumer as a process: SIGTERM drains and commits; kill -9 at random
//! moments and a rebalance between two instances leave every event applied
//! exactly once.

mod common;

use std::process::Child;
use std::time::Duration;

use common::*;
use rand::Rng;

/// These tests each push thousands of events through one SQLite-backed broker;
/// run together they starve its group coordinator, so they take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
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
    let _turn = turn();
    let env = Env::new().await;
    let ids = publish_knowledge(&env, 2000, "policy").await;
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
        done_before < 2000,
        "stopped mid-run ({done_before} of 2000), or the test proves nothing"
    );

    let port = free_port();
    let mut second = env.spawn_counting(port);
    wait_for_total(&env, 2000, Duration::from_secs(180)).await;
    let metrics = http_get(port, "/metrics").await.expect("metrics").1;
    signal(&second.0, "TERM");
    assert_eq!(wait_exit(&mut second.0, Duration::from_secs(20)), Some(0));

    let mut connection = redis().await;
    assert_eq!(
        counts(&mut connection, &env.count_prefix, &ids).await,
        vec![1; 2000],
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
        2000 - done_before,
        "the restart processed exactly the rest"
    );
    assert_eq!(
        duplicates, 0.0,
        "offsets were committed at shutdown: the restart re-read nothing"
    );
}

/// Events in the crash run. The issue asks for 20 000; the suite uses 5 000
/// because at 20 000 Tansu's SQLite engine stalls (request timeouts) and the run
/// times out. `OPAL_CRASH_TEST_EVENTS=20000` with `OPAL_KAFKA_STORAGE=memory://tansu/`
/// runs the full size (passes).
fn crash_events() -> usize {
    std::env::var("OPAL_CRASH_TEST_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5_000)
}

/// The consumer restarts under the same `OPAL_GROUP_INSTANCE_ID` (static
/// membership), as a replica in a StatefulSet or under systemd does, so the
/// restarted process takes its partitions back at once. (Without it, Tansu 0.6.0
/// keeps a member killed with -9 as the group's leader and the restarted consumer
/// is assigned nothing for minutes; Apache Kafka reassigns after
/// `session.timeout.ms`.) `OPAL_CRASH_TEST_EVENTS=20000` for the size.
#[tokio::test]
async fn kill_9_at_random_moments_leaves_every_effect_applied_exactly_once() {
    let _turn = turn();
    let env = Env::new().await;
    let n = crash_events();
    let ids = publish_knowledge(&env, n, "policy").await;
    let mut rng = rand::rng();
    let instance = format!("{}crash-replica-0", env.prefix);
    let static_member = [("OPAL_GROUP_INSTANCE_ID", instance.as_str())];
    let mut child = env.spawn_counting_with(free_port(), &static_member);
    let mut kills = 0;
    while kills < 5 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(700..2500))).await;
        let done = total(&env).await;
        if done >= n as i64 {
            break;
        }
        child.0.kill().expect("kill -9");
        let _ = child.0.wait();
        kills += 1;
        child = env.spawn_counting_with(free_port(), &static_member);
    }
    wait_for_total(&env, n as i64, Duration::from_secs(300)).await;
    signal(&child.0, "TERM");
    let _ = wait_exit(&mut child.0, Duration::from_secs(20));
    assert!(kills >= 3, "only {kills} kills landed mid-run");
    let applied = counts(&mut redis().await, &env.count_prefix, &ids).await;
    let missing = applied.iter().filter(|c| **c == 0).count();
    let repeated = applied.iter().filter(|c| **c > 1).count();
    assert_eq!(
        (missing, repeated),
        (0, 0),
        "after {kills} kill -9s: every event exactly once"
    );
    assert_eq!(total(&env).await, n as i64);
}

#[tokio::test]
async fn two_instances_with_a_rebalance_mid_run_apply_each_event_once() {
    let _turn = turn();
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
