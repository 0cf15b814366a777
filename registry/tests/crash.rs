//! Crash safety of writes: the `opal-registry` binary is killed with SIGKILL in the
//! middle of a burst of registrations by 50 concurrent clients, restarted on the same data
//! directory, and must still hold every registration it acknowledged (same
//! subject, version, id and schema), in a consistent state.
//!
//! The kill is placed by observed progress (after the Nth acknowledgement), never
//! by a sleep; the only durations here are hang guards.
//!
//! A real kill lands at one random instant. So during every burst a watcher also
//! keeps reading the snapshot file (README: `registry.json` in the data directory)
//! and requires each read to be a complete JSON document: a SIGKILL keeps what the
//! file holds at that instant (the page cache survives a killed process), so every
//! read is what a kill at that instant would leave. Power loss, which is what the
//! fsyncs are for, is out of reach of a test.

mod common;

use std::collections::BTreeSet;

use common::burst::{Ack, CLIENTS, Item, burst, check_acknowledged, check_consistent};
use common::{Registry, http_client, locked, must};
use reqwest::StatusCode;
use serde_json::json;

/// Subjects per round; each gets three versions, every fifth also an alias subject.
const SUBJECTS: usize = 30;
const VERSIONS: usize = 3;
/// One round per entry: a restart, then a burst killed after this many
/// acknowledgements (of 192 requests: 96 registrations, each sent twice). Several
/// rounds: each kill lands at another point of a write.
const KILL_AFTER: [usize; 5] = [30, 65, 96, 128, 160];

/// Version `v` of subject `i` of `round`: a record with `v - 1` optional fields, so
/// any order of registration is BACKWARD-compatible.
fn schema_text(round: usize, i: usize, v: usize) -> String {
    let mut fields = vec![json!({"name": "id", "type": "string"})];
    for k in 1..v {
        fields.push(json!({"name": format!("f{k}"), "type": ["null", "string"], "default": null}));
    }
    let schema = json!({
        "type": "record",
        "name": format!("S{i:02}"),
        "namespace": format!("opal.crash.r{round}"),
        "doc": format!("crash-safety burst, round {round}, subject {i}"),
        "fields": fields,
    });
    serde_json::to_string(&schema).expect("schema text")
}

/// The round's requests. Each registration is sent twice, back to back, so two
/// clients race on the same (subject, schema); some schemas go to two subjects.
fn round_items(round: usize) -> Vec<Item> {
    let mut items = Vec::new();
    let mut twice = |subject: String, schema: String| {
        let item = Item { subject, schema };
        items.push(item.clone());
        items.push(item);
    };
    for v in 1..=VERSIONS {
        for i in 0..SUBJECTS {
            twice(
                format!("crash-r{round}-s{i:02}-value"),
                schema_text(round, i, v),
            );
            if v == 1 && i % 5 == 0 {
                twice(
                    format!("crash-r{round}-alias{i:02}-value"),
                    schema_text(round, i, 1),
                );
            }
        }
    }
    items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_registration_burst_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut submitted = BTreeSet::new();
    let mut acks: Vec<Ack> = Vec::new();

    for (round, kill_after) in KILL_AFTER.into_iter().enumerate() {
        let server = Registry::start(&data);
        // What the previous rounds' crashes left must hold up first.
        let state = check_consistent(&server, &submitted).await;
        check_acknowledged(&server, &state, &acks).await;

        let items = round_items(round);
        let requests = items.len();
        submitted.extend(items.iter().cloned());
        let outcome = burst(&server, &data, items, Some(kill_after)).await;
        assert!(
            outcome.unexpected.is_empty(),
            "round {round}: unexpected answers:\n{}\nstderr:\n{}",
            outcome.unexpected.join("\n"),
            locked(&server.stderr)
        );
        assert!(
            outcome.torn_snapshots.is_empty(),
            "round {round}: {} of {} reads of the snapshot during the burst found it \
             half-written, as a kill at that instant would have left it: {:?}",
            outcome.torn_snapshots.len(),
            outcome.snapshot_reads,
            &outcome.torn_snapshots[..outcome.torn_snapshots.len().min(5)]
        );
        assert!(
            outcome.snapshot_reads > 0,
            "round {round}: registrations were acknowledged but no snapshot was ever found"
        );
        assert!(
            outcome.acks.len() >= kill_after && outcome.acks.len() < requests,
            "round {round}: the kill must land inside the burst ({} of {requests} acknowledged)",
            outcome.acks.len()
        );
        eprintln!(
            "round {round}: {CLIENTS} clients, killed after {} of {requests} registrations \
             acknowledged ({} ms into the burst); {} reads of the snapshot, all whole",
            outcome.acks.len(),
            outcome.elapsed.as_millis(),
            outcome.snapshot_reads
        );
        acks.extend(outcome.acks);
    }

    // The last crash, then re-registering is idempotent and new ids never reuse old ones.
    let server = Registry::start(&data);
    let state = check_consistent(&server, &submitted).await;
    check_acknowledged(&server, &state, &acks).await;
    assert!(!acks.is_empty());

    let http = http_client();
    let base = &server.base;
    for ack in &acks {
        let (status, got) = must(
            &http,
            "POST",
            format!("{base}/subjects/{}/versions", ack.item.subject),
            Some(json!({ "schema": ack.item.schema })),
        )
        .await;
        assert_eq!(
            (status, got["id"].as_u64()),
            (StatusCode::OK, Some(ack.id)),
            "re-registering {ack:?}: {got}"
        );
    }
    let after = check_consistent(&server, &submitted).await;
    assert_eq!(after, state, "re-registering changed nothing");

    let max_id = state
        .values()
        .flatten()
        .map(|(id, _)| *id)
        .max()
        .expect("ids");
    let fresh = schema_text(99, 0, 1);
    let (status, got) = must(
        &http,
        "POST",
        format!("{base}/subjects/crash-fresh-value/versions"),
        Some(json!({ "schema": fresh })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{got}");
    let fresh_id = got["id"].as_u64().expect("id");
    assert!(
        fresh_id > max_id,
        "new id {fresh_id} reuses one <= {max_id}"
    );
    server.kill();
}
