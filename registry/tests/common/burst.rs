//! A burst of concurrent registrations against a [`Registry`] process, optionally
//! SIGKILLed after the Nth acknowledgement, and the checks of what the registry
//! holds afterwards.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use super::{Registry, call, http_client, locked, must};

/// Concurrent clients, each with its own connection pool.
pub const CLIENTS: usize = 50;

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Item {
    pub subject: String,
    /// Minified JSON, as the registry stores it.
    pub schema: String,
}

/// Short: the subject, the record's full name and its field count.
impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&describe(&self.subject, &self.schema))
    }
}

pub fn describe(subject: &str, schema: &str) -> String {
    let parsed: Value = serde_json::from_str(schema).unwrap_or(Value::Null);
    format!(
        "{subject}: {}.{} with {} fields",
        parsed["namespace"].as_str().unwrap_or("?"),
        parsed["name"].as_str().unwrap_or("?"),
        parsed["fields"].as_array().map_or(0, Vec::len)
    )
}

/// A registration the server acknowledged: 200 with an id; the version is the
/// one a lookup answered right after, if the server was still alive for it.
#[derive(Debug, Clone)]
pub struct Ack {
    pub item: Item,
    pub id: u64,
    pub version: Option<u64>,
}

#[derive(Default)]
pub struct BurstOutcome {
    pub acks: Vec<Ack>,
    /// Anything but a 200 or, after the kill, a transport error.
    pub unexpected: Vec<String>,
    /// Reads of the snapshot file during the burst, and the torn ones.
    pub snapshot_reads: usize,
    pub torn_snapshots: Vec<String>,
    /// From the first request to the last answer (or the kill).
    pub elapsed: Duration,
}

/// Reads `data_dir/registry.json` until `stop`, and once more after it (so there is
/// a read however the threads were scheduled): (reads, descriptions of torn ones).
fn watch_snapshot(data_dir: &Path, stop: &AtomicBool) -> (usize, Vec<String>) {
    let path = data_dir.join("registry.json");
    let (mut reads, mut torn) = (0, Vec::new());
    loop {
        let last = stop.load(Ordering::SeqCst);
        match std::fs::read(&path) {
            Ok(bytes) => {
                reads += 1;
                if let Err(e) = serde_json::from_slice::<Value>(&bytes) {
                    torn.push(format!("{} bytes: {e}", bytes.len()));
                }
            }
            // Before the first write of a fresh data directory.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => torn.push(format!("unreadable: {e}")),
        }
        if last {
            break;
        }
        std::thread::yield_now();
    }
    (reads, torn)
}

/// What the clients of one burst share.
struct Burst {
    base: String,
    child: Arc<Mutex<Child>>,
    queue: Mutex<VecDeque<Item>>,
    acked: AtomicUsize,
    /// None: no kill, the burst runs to the end.
    kill_after: Option<usize>,
    /// Set just before the SIGKILL: from then on a transport error is the kill's.
    killed: AtomicBool,
}

impl Burst {
    /// One client: takes items off the queue until it is empty or the server is killed.
    async fn client(&self) -> BurstOutcome {
        let http = http_client();
        let mut out = BurstOutcome::default();
        while !self.killed.load(Ordering::SeqCst) {
            let Some(item) = locked(&self.queue).pop_front() else {
                break;
            };
            let url = format!("{}/subjects/{}/versions", self.base, item.subject);
            let body = json!({ "schema": item.schema });
            match call(&http, "POST", url, Some(body)).await {
                Ok((StatusCode::OK, body)) => match body["id"].as_u64() {
                    Some(id) => {
                        self.acknowledged();
                        let version = self.version_of(&http, &item, id, &mut out).await;
                        out.acks.push(Ack { item, id, version });
                    }
                    None => out.unexpected.push(format!("200 without an id: {body}")),
                },
                Ok((status, body)) => out
                    .unexpected
                    .push(format!("register {item:?}: {status} {body}")),
                Err(e) if !self.killed.load(Ordering::SeqCst) => out
                    .unexpected
                    .push(format!("register {item:?} before the kill failed: {e}")),
                // Sent to a dying server: not acknowledged, may or may not be stored.
                Err(_) => {}
            }
        }
        out
    }

    /// Counts an acknowledgement; the `kill_after`th kills the server.
    fn acknowledged(&self) {
        if Some(self.acked.fetch_add(1, Ordering::SeqCst) + 1) == self.kill_after {
            self.killed.store(true, Ordering::SeqCst);
            locked(&self.child).kill().expect("SIGKILL");
        }
    }

    /// The version an acknowledged registration got, by lookup; None if the
    /// server was killed first.
    async fn version_of(
        &self,
        http: &Client,
        item: &Item,
        id: u64,
        out: &mut BurstOutcome,
    ) -> Option<u64> {
        let url = format!("{}/subjects/{}", self.base, item.subject);
        match call(http, "POST", url, Some(json!({ "schema": item.schema }))).await {
            Ok((StatusCode::OK, found)) => {
                if found["id"].as_u64() != Some(id) {
                    out.unexpected.push(format!(
                        "lookup of {item:?}, acknowledged as id {id}: {found}"
                    ));
                }
                found["version"].as_u64()
            }
            Ok((status, body)) => {
                out.unexpected
                    .push(format!("lookup of acknowledged {item:?}: {status} {body}"));
                None
            }
            Err(e) if !self.killed.load(Ordering::SeqCst) => {
                out.unexpected
                    .push(format!("lookup of {item:?} before the kill failed: {e}"));
                None
            }
            Err(_) => None,
        }
    }
}

/// Runs `items` through `CLIENTS` concurrent clients, taking them in order off one
/// queue, and SIGKILLs the server when the `kill_after`th acknowledgement arrives
/// (with None, never), watching the snapshot file in `data_dir` throughout.
pub async fn burst(
    server: &Registry,
    data_dir: &Path,
    items: Vec<Item>,
    kill_after: Option<usize>,
) -> BurstOutcome {
    let shared = Arc::new(Burst {
        base: server.base.clone(),
        child: Arc::clone(&server.child),
        queue: Mutex::new(VecDeque::from(items)),
        acked: AtomicUsize::new(0),
        kill_after,
        killed: AtomicBool::new(false),
    });
    let watcher = {
        let (data_dir, shared) = (data_dir.to_owned(), Arc::clone(&shared));
        std::thread::spawn(move || watch_snapshot(&data_dir, &shared.killed))
    };
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move { shared.client().await })
        })
        .collect();
    let mut outcome = BurstOutcome::default();
    for task in tasks {
        let part = task.await.expect("client task");
        outcome.acks.extend(part.acks);
        outcome.unexpected.extend(part.unexpected);
    }
    outcome.elapsed = started.elapsed();
    // Stops the watcher too, if the burst ended without a kill.
    let ended_killed = shared.killed.swap(true, Ordering::SeqCst);
    (outcome.snapshot_reads, outcome.torn_snapshots) = watcher.join().expect("watcher");
    match kill_after {
        Some(kill_after) => {
            assert!(
                ended_killed,
                "the burst ended before {kill_after} acknowledgements"
            );
            // Reap the killed process so the next start is a true restart.
            let status = locked(&server.child).wait().expect("reap");
            assert!(!status.success(), "killed, not exited: {status:?}");
        }
        None => assert!(!ended_killed),
    }
    outcome
}

/// Everything the restarted registry holds, checked for internal consistency:
/// subject → versions (1..=n, contiguous) → (id, schema).
pub async fn check_consistent(
    server: &Registry,
    submitted: &BTreeSet<Item>,
) -> BTreeMap<String, Vec<(u64, String)>> {
    let http = http_client();
    let base = &server.base;
    let (status, subjects) = must(&http, "GET", format!("{base}/subjects"), None).await;
    assert_eq!(status, StatusCode::OK, "{subjects}");
    let subjects: Vec<String> = serde_json::from_value(subjects).expect("subject list");
    let mut state = BTreeMap::new();
    let mut schema_of_id: HashMap<u64, String> = HashMap::new();
    let mut id_of_schema: HashMap<String, u64> = HashMap::new();
    for subject in subjects {
        let (status, versions) = must(
            &http,
            "GET",
            format!("{base}/subjects/{subject}/versions"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{subject}: {versions}");
        let versions: Vec<u64> = serde_json::from_value(versions).expect("versions");
        let expected: Vec<u64> = (1..=versions.len() as u64).collect();
        assert_eq!(versions, expected, "{subject}: versions not contiguous");
        let mut entries = Vec::new();
        for v in versions {
            let (status, got) = must(
                &http,
                "GET",
                format!("{base}/subjects/{subject}/versions/{v}"),
                None,
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{subject} v{v}: {got}");
            assert_eq!(
                (got["subject"].as_str(), got["version"].as_u64()),
                (Some(subject.as_str()), Some(v)),
                "{got}"
            );
            let id = got["id"].as_u64().expect("id");
            let schema = got["schema"].as_str().expect("schema").to_owned();
            let item = Item {
                subject: subject.clone(),
                schema: schema.clone(),
            };
            assert!(
                submitted.contains(&item),
                "{subject} v{v} (id {id}) holds a schema never sent to it: {schema}"
            );
            let previous = schema_of_id.insert(id, schema.clone());
            assert!(
                previous.as_ref().is_none_or(|p| *p == schema),
                "id {id} names two schemas: {previous:?} and {schema}"
            );
            let previous = id_of_schema.insert(schema.clone(), id);
            assert!(
                previous.is_none_or(|p| p == id),
                "one schema under two ids, {previous:?} and {id}: {schema}"
            );
            entries.push((id, schema));
        }
        let distinct: BTreeSet<u64> = entries.iter().map(|(id, _)| *id).collect();
        assert_eq!(
            distinct.len(),
            entries.len(),
            "{subject} registers one schema twice: {:?}",
            entries.iter().map(|(id, _)| id).collect::<Vec<_>>()
        );
        state.insert(subject, entries);
    }
    for (id, schema) in &schema_of_id {
        let (status, got) = must(&http, "GET", format!("{base}/schemas/ids/{id}"), None).await;
        assert_eq!(status, StatusCode::OK, "id {id}: {got}");
        assert_eq!(got["schema"].as_str(), Some(schema.as_str()), "id {id}");
    }
    state
}

/// Every acknowledged registration is there, with the same version, id and schema.
pub async fn check_acknowledged(
    server: &Registry,
    state: &BTreeMap<String, Vec<(u64, String)>>,
    acks: &[Ack],
) {
    let http = http_client();
    let base = &server.base;
    for ack in acks {
        let Ack { item, id, version } = ack;
        let versions = state
            .get(&item.subject)
            .unwrap_or_else(|| panic!("acknowledged {ack:?} lost: subject missing"));
        let found = versions
            .iter()
            .position(|(got_id, schema)| *schema == item.schema && got_id == id);
        let Some(index) = found else {
            let held: Vec<String> = versions
                .iter()
                .map(|(id, schema)| format!("id {id}: {}", describe(&item.subject, schema)))
                .collect();
            panic!("acknowledged {ack:?} lost; the subject holds {held:?}");
        };
        if let Some(version) = version {
            assert_eq!(index as u64 + 1, *version, "{ack:?} moved version");
        }
        let (status, got) = must(
            &http,
            "POST",
            format!("{base}/subjects/{}", item.subject),
            Some(json!({ "schema": item.schema })),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "lookup {ack:?}: {got}");
        assert_eq!(got["id"].as_u64(), Some(*id), "{ack:?}: {got}");
        assert_eq!(got["version"].as_u64(), Some(index as u64 + 1), "{got}");
    }
}
