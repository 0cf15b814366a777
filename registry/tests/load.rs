//! The registry under load: 50 concurrent clients register a mix of the same
//! schema and distinct schemas, under the same and different subjects, against
//! the `opal-registry` binary on a fresh data directory. Every registration must be
//! acknowledged, each distinct schema must get exactly one id, each subject exactly
//! one version per distinct schema sent to it (1..n, no gap, nothing doubled), and
//! every acknowledgement must read back as it was answered, also after a restart.
//! (The same burst killed with SIGKILL halfway is crash.rs.)
//!
//! The numbers printed (registrations, duration) are for the README; nothing here
//! asserts a duration.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use common::burst::{Ack, CLIENTS, Item, burst, check_acknowledged, check_consistent};
use common::{Registry, locked};
use serde_json::json;

/// A record named `name` with a string `id` and these optional fields: any two
/// such records are BACKWARD-compatible, so every order of registration is.
fn record(name: &str, optional: &[String]) -> String {
    let mut fields = vec![json!({"name": "id", "type": "string"})];
    for field in optional {
        fields.push(json!({"name": field, "type": ["null", "string"], "default": null}));
    }
    json!({"type": "record", "name": name, "namespace": "opal.load", "fields": fields}).to_string()
}

/// The workload, interleaved so that every kind of race runs at once:
/// - one schema sent by every client to one subject (one version);
/// - that schema sent by every client to a subject of its own (one id for all);
/// - 50 distinct schemas to one subject, each sent twice (50 versions, 50 ids);
/// - 50 subjects with three distinct schemas each, each sent twice.
fn workload() -> Vec<Item> {
    let item = |subject: String, schema: String| Item { subject, schema };
    let shared = record("Shared", &[]);
    let mut kinds: Vec<Vec<Item>> = vec![Vec::new(); 4];
    for k in 0..CLIENTS {
        kinds[0].push(item("load-shared-value".into(), shared.clone()));
        kinds[1].push(item(format!("load-c{k:02}-value"), shared.clone()));
        let many = record("Many", &[format!("f{k:02}")]);
        kinds[2].push(item("load-many-value".into(), many.clone()));
        kinds[2].push(item("load-many-value".into(), many));
        for v in 0..3 {
            let fields: Vec<String> = (0..v).map(|f| format!("g{f}")).collect();
            let schema = record(&format!("S{k:02}"), &fields);
            kinds[3].push(item(format!("load-s{k:02}-value"), schema.clone()));
            kinds[3].push(item(format!("load-s{k:02}-value"), schema));
        }
    }
    let longest = kinds.iter().map(Vec::len).max().unwrap_or(0);
    (0..longest)
        .flat_map(|i| kinds.iter().filter_map(move |kind| kind.get(i).cloned()))
        .collect()
}

/// Versions 1..n per subject with one version per distinct schema sent to it, one
/// id per schema, and every acknowledgement there as answered; returns the state.
async fn holds_exactly(
    server: &Registry,
    sent: &BTreeSet<Item>,
    acks: &[Ack],
) -> BTreeMap<String, Vec<(u64, String)>> {
    let state = check_consistent(server, sent).await;
    check_acknowledged(server, &state, acks).await;
    let mut expected: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for item in sent {
        expected
            .entry(item.subject.as_str())
            .or_default()
            .insert(item.schema.as_str());
    }
    let held: BTreeMap<&str, BTreeSet<&str>> = state
        .iter()
        .map(|(subject, versions)| {
            let schemas = versions.iter().map(|(_, s)| s.as_str()).collect();
            (subject.as_str(), schemas)
        })
        .collect();
    assert_eq!(held, expected, "subjects and their schemas");
    let versions: usize = state.values().map(Vec::len).sum();
    assert_eq!(versions, sent.len(), "one version per (subject, schema)");
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_get_one_id_per_schema_and_gapless_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let items = workload();
    let sent: BTreeSet<Item> = items.iter().cloned().collect();
    let registrations = items.len();

    let server = Registry::start(&data);
    let outcome = burst(&server, &data, items, None).await;
    assert!(
        outcome.unexpected.is_empty(),
        "unexpected answers:\n{}\nstderr:\n{}",
        outcome.unexpected.join("\n"),
        locked(&server.stderr)
    );
    assert!(
        outcome.torn_snapshots.is_empty(),
        "{:?}",
        outcome.torn_snapshots
    );
    assert_eq!(
        outcome.acks.len(),
        registrations,
        "every registration acknowledged"
    );

    // One id per distinct schema, across subjects, whoever sent it.
    let mut ids: HashMap<&str, BTreeSet<u64>> = HashMap::new();
    for ack in &outcome.acks {
        ids.entry(ack.item.schema.as_str())
            .or_default()
            .insert(ack.id);
    }
    let distinct_schemas: BTreeSet<&str> = sent.iter().map(|i| i.schema.as_str()).collect();
    assert_eq!(ids.len(), distinct_schemas.len());
    for (schema, got) in &ids {
        assert_eq!(
            got.len(),
            1,
            "one schema answered with ids {got:?}: {schema}"
        );
    }
    let all_ids: BTreeSet<u64> = ids.values().flatten().copied().collect();
    assert_eq!(
        all_ids.len(),
        distinct_schemas.len(),
        "two schemas share an id"
    );

    // What the registry holds, read back.
    let state = holds_exactly(&server, &sent, &outcome.acks).await;
    eprintln!(
        "{CLIENTS} clients: {registrations} registrations acknowledged in {} ms \
         ({:.0}/s, each followed by a lookup), {} distinct schemas, {} subjects, \
         {} versions; {} reads of the snapshot, all whole",
        outcome.elapsed.as_millis(),
        registrations as f64 / outcome.elapsed.as_secs_f64(),
        distinct_schemas.len(),
        state.len(),
        state.values().map(Vec::len).sum::<usize>(),
        outcome.snapshot_reads
    );

    // The snapshot alone holds all of it.
    server.kill();
    let restarted = Registry::start(&data);
    assert_eq!(
        holds_exactly(&restarted, &sent, &outcome.acks).await,
        state,
        "after a restart"
    );
    restarted.kill();
}
