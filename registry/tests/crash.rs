//! Crash safety of writes: the `opal-registry` binary is killed with SIGKILL in the
//! middle of a burst of concurrent registrations, restarted on the same data
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

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const V1: &str = "application/vnd.schemaregistry.v1+json";
/// Hang guard for one HTTP call or for the server to come up; never a verdict.
const HANG_GUARD: Duration = Duration::from_secs(120);
/// Concurrent clients, each with its own connection pool.
const CLIENTS: usize = 8;
/// Subjects per round; each gets three versions, every fifth also an alias subject.
const SUBJECTS: usize = 30;
const VERSIONS: usize = 3;
/// One round per entry: a restart, then a burst killed after this many
/// acknowledgements (of 192 requests: 96 registrations, each sent twice). Several
/// rounds: each kill lands at another point of a write.
const KILL_AFTER: [usize; 5] = [30, 65, 96, 128, 160];

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The registry binary, run as a child process on `127.0.0.1:0`.
struct Registry {
    child: Arc<Mutex<Child>>,
    base: String,
    stderr: Arc<Mutex<String>>,
}

impl Registry {
    fn start(data_dir: &Path) -> Registry {
        let mut child = Command::new(env!("CARGO_BIN_EXE_opal-registry"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info")
            .env_remove("OPAL_REGISTRY_IN_MEMORY")
            .env_remove("OPAL_REGISTRY_BASIC_AUTH")
            .env_remove("OPAL_REGISTRY_MAX_BODY_BYTES")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn opal-registry");
        let stdout = child.stdout.take().expect("stdout");
        let stderr_pipe = child.stderr.take().expect("stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let stderr = Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
                    locked(&stderr).push_str(&line);
                    locked(&stderr).push('\n');
                }
            });
        }
        // The log goes to stdout: read the bound address from the "listening" line,
        // then keep draining so the server never blocks on a full pipe.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if event["fields"]["message"] == "opal-registry listening"
                    && let (Some(tx), Some(addr)) = (tx.take(), event["fields"]["listen"].as_str())
                {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let child = Arc::new(Mutex::new(child));
        let addr = match rx.recv_timeout(HANG_GUARD) {
            Ok(addr) => addr,
            Err(e) => {
                let status = {
                    let mut child = locked(&child);
                    let _ = child.kill();
                    child.wait()
                };
                panic!(
                    "opal-registry on {} did not start ({e}): {status:?}\nstderr:\n{}",
                    data_dir.display(),
                    locked(&stderr)
                );
            }
        };
        Registry {
            child,
            base: format!("http://{addr}"),
            stderr,
        }
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reap.
    fn kill(&self) {
        let mut child = locked(&self.child);
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let mut child = locked(&self.child);
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn http_client() -> Client {
    Client::builder()
        .timeout(HANG_GUARD)
        .build()
        .expect("http client")
}

async fn call(
    http: &Client,
    method: &str,
    url: String,
    body: Option<Value>,
) -> reqwest::Result<(StatusCode, Value)> {
    let mut req = http
        .request(method.parse().expect("method"), url)
        .header("Accept", V1);
    if let Some(body) = body {
        req = req.header("Content-Type", V1).body(body.to_string());
    }
    let resp = req.send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// Calls that must succeed at the transport level (the server is up).
async fn must(
    http: &Client,
    method: &str,
    url: String,
    body: Option<Value>,
) -> (StatusCode, Value) {
    call(http, method, url.clone(), body)
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Item {
    subject: String,
    /// Minified JSON, as the registry stores it.
    schema: String,
}

/// Short: the subject, the record's full name and its field count.
impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&describe(&self.subject, &self.schema))
    }
}

fn describe(subject: &str, schema: &str) -> String {
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
struct Ack {
    item: Item,
    id: u64,
    version: Option<u64>,
}

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

#[derive(Default)]
struct BurstOutcome {
    acks: Vec<Ack>,
    /// Anything but a 200 or, after the kill, a transport error.
    unexpected: Vec<String>,
    /// Reads of the snapshot file during the burst, and the torn ones.
    snapshot_reads: usize,
    torn_snapshots: Vec<String>,
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
    kill_after: usize,
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
        if self.acked.fetch_add(1, Ordering::SeqCst) + 1 == self.kill_after {
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

/// Runs `items` through `CLIENTS` concurrent clients and SIGKILLs the server
/// when the `kill_after`th acknowledgement arrives, watching the snapshot file
/// in `data_dir` throughout.
async fn burst(
    server: &Registry,
    data_dir: &Path,
    items: Vec<Item>,
    kill_after: usize,
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
    // Stops the watcher too, if the burst ended without a kill.
    let ended_killed = shared.killed.swap(true, Ordering::SeqCst);
    (outcome.snapshot_reads, outcome.torn_snapshots) = watcher.join().expect("watcher");
    assert!(
        ended_killed,
        "the burst ended before {kill_after} acknowledgements"
    );
    // Reap the killed process so the next start is a true restart.
    let status = locked(&server.child).wait().expect("reap");
    assert!(!status.success(), "killed, not exited: {status:?}");
    outcome
}

/// Everything the restarted registry holds, checked for internal consistency:
/// subject → versions (1..=n, contiguous) → (id, schema).
async fn check_consistent(
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
async fn check_acknowledged(
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
        let outcome = burst(&server, &data, items, kill_after).await;
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
            "round {round}: killed after {} of {requests} registrations acknowledged; \
             {} reads of the snapshot, all whole",
            outcome.acks.len(),
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
