//! `opal-dlq` on the real stack: list and show dead letters, replay them to
//! their original topic (groups dedupe by event id), park those that hit the
//! replay cap, and replay only a class of error or only what failed since a
//! point in time.

mod common;

use std::process::Command;

use common::*;
use opal_consumers::dlq::headers;

/// Runs `opal-dlq ARGS --group <env's group>` and returns its output.
fn dlq_cli(env: &Env, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_opal-dlq"))
        .args(args)
        .args(["--group", &env.group])
        .env("KAFKA_BROKERS", opal_e2e::brokers())
        .env("SCHEMA_REGISTRY_URL", opal_e2e::registry_url())
        .env("OPAL_TOPIC_PREFIX", &env.prefix)
        .env("RUST_LOG", "error")
        .output()
        .expect("run opal-dlq");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "opal-dlq {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn dlq_replay_round_trip_with_the_replay_cap() {
    let env = Env::new().await;
    let recovers = publish_knowledge(&env, 1, "fail-transient-4").await;
    let rejected = publish_knowledge(&env, 1, "reject").await;
    let (cancel, task, _) = start(&env, None).await;
    settled(&env).await;

    let listed = dlq_cli(&env, &["list"]);
    assert!(
        listed.contains("2 dead letter(s)")
            && listed.contains("opal.Invalid")
            && listed.contains("opal.TransientExhausted"),
        "{listed}"
    );
    let shown = dlq_cli(&env, &["show"]);
    assert!(
        shown.contains(&rejected[0]) && shown.contains("drill: rejected"),
        "decoded value and reason: {shown}"
    );

    let dry = dlq_cli(&env, &["replay", "--dry-run", "--max-replays", "1"]);
    assert!(dry.contains("dry run: 2 replayed, 0 parked"), "{dry}");
    assert_eq!(
        read_all(&env.kafka(), &env.dlq(), 2).await.len(),
        2,
        "a dry run changes nothing"
    );

    let first = dlq_cli(&env, &["replay", "--max-replays", "1", "--rate", "50"]);
    assert!(first.contains("2 replayed, 0 parked"), "{first}");
    let mut redis = redis().await;
    wait_until(
        TIMEOUT,
        "the recovering event processed after replay",
        || {
            let mut r = redis.clone();
            let key = format!("{}:count:{}", env.count_prefix, recovers[0]);
            async move { get_count(&mut r, &key).await == 1 }
        },
    )
    .await;
    settled(&env).await;
    let dead = read_all(&env.kafka(), &env.dlq(), 3).await;
    assert_eq!(dead.len(), 3, "the rejected event came back once");
    assert_eq!(
        header(&dead[2], headers::REPLAY_COUNT).as_deref(),
        Some("1")
    );

    // Second replay: only the new dead letter is considered, and it hit the cap.
    let second = dlq_cli(&env, &["replay", "--max-replays", "1"]);
    assert!(second.contains("0 replayed, 1 parked"), "{second}");
    let parked = read_all(&env.kafka(), &format!("{}.parked", env.dlq()), 1).await;
    assert_eq!(
        header(&parked[0], "opal-event-id").as_deref(),
        Some(rejected[0].as_str())
    );
    assert_eq!(
        header(&parked[0], headers::EXCEPTION_FQCN).as_deref(),
        Some("opal.Invalid"),
        "parked with its reason"
    );
    cancel.cancel();
    task.await.expect("stopped");
    assert_eq!(
        get_count(
            &mut redis,
            &format!("{}:count:{}", env.count_prefix, recovers[0])
        )
        .await,
        1
    );
    assert_eq!(
        get_count(
            &mut redis,
            &format!("{}:count:{}", env.count_prefix, rejected[0])
        )
        .await,
        0
    );
}

#[tokio::test]
async fn replay_takes_only_the_error_class_and_the_time_it_is_given() {
    let env = Env::new().await;
    let rejected = publish_knowledge(&env, 1, "reject").await;
    let exhausted = publish_knowledge(&env, 1, "fail-always").await;
    let (cancel, task, _) = start(&env, None).await;
    settled(&env).await;
    assert_eq!(dlq_records(&env).await, 2);

    let by_class = dlq_cli(
        &env,
        &["replay", "--dry-run", "--error-class", "opal.Invalid"],
    );
    assert!(
        by_class.contains("dry run: 1 replayed, 0 parked, 1 skipped"),
        "{by_class}"
    );
    assert!(
        by_class.contains("skip") && by_class.contains("other error class"),
        "{by_class}"
    );

    // What fails from now on is newer than `since`; what failed before is not.
    let since = opal_schemas::now_millis();
    let later = publish_knowledge(&env, 1, "reject").await;
    settled(&env).await;
    assert_eq!(dlq_records(&env).await, 3);
    let by_time = dlq_cli(
        &env,
        &["replay", "--dry-run", "--since", &since.to_string()],
    );
    assert!(
        by_time.contains("dry run: 1 replayed, 0 parked, 2 skipped"),
        "{by_time}"
    );
    assert!(by_time.contains("failed before --since"), "{by_time}");

    // For real: only the two rejections come back (and are rejected again).
    let replayed = dlq_cli(&env, &["replay", "--error-class", "opal.Invalid"]);
    assert!(
        replayed.contains("2 replayed, 0 parked, 1 skipped"),
        "{replayed}"
    );
    settled(&env).await;
    cancel.cancel();
    task.await.expect("stopped");
    let dead = read_all(&env.kafka(), &env.dlq(), 5).await;
    let ids: Vec<Option<String>> = dead.iter().map(|m| header(m, "opal-event-id")).collect();
    let times = |id: &String| ids.iter().filter(|i| i.as_ref() == Some(id)).count();
    assert_eq!(
        (times(&rejected[0]), times(&later[0]), times(&exhausted[0])),
        (2, 2, 1),
        "the two rejections came back once each; the exhausted one was not replayed"
    );
}
