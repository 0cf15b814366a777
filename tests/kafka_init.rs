//! `scripts/kafka-init.sh` itself, run as an operator runs it, against the
//! local stack, each test under its own random `OPAL_TOPIC_PREFIX`. What it
//! did is read back with Kafka's own tool (`kafka-topics`) and the registry's
//! REST API, not with our code; the catalog is read from `topics/topics.toml`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use opal_e2e::{brokers, kafka_tool, registry_url, repo_root, unique};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// Hang guard for one run of the script (the first run may build opal-admin).
const SCRIPT_LIMIT: Duration = Duration::from_secs(900);

/// A prefix no other run uses.
fn prefix() -> String {
    format!("{}.", unique("kafka-init"))
}

/// Runs `scripts/kafka-init.sh ARGS` with `OPAL_TOPIC_PREFIX=prefix` against
/// the stack under test. Variables that would point it elsewhere are removed.
fn kafka_init(prefix: &str, args: &[&str]) -> Output {
    let mut child = Command::new(repo_root().join("scripts/kafka-init.sh"))
        .args(args)
        .env("KAFKA_BROKERS", brokers())
        .env("SCHEMA_REGISTRY_URL", registry_url())
        .env("OPAL_TOPIC_PREFIX", prefix)
        .env("RUST_BACKTRACE", "0")
        .env_remove("OPAL_ENV")
        .env_remove("OPAL_TOPIC_CATALOG")
        .env_remove("KAFKA_USERNAME")
        .env_remove("KAFKA_PASSWORD")
        .env_remove("KAFKA_SSL_CA_LOCATION")
        .env_remove("SCHEMA_REGISTRY_USERNAME")
        .env_remove("SCHEMA_REGISTRY_PASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scripts/kafka-init.sh");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            pipe.read_to_end(&mut bytes).expect("read output");
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + SCRIPT_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kafka-init.sh {args:?} did not finish within {SCRIPT_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Exit code, standard output and error of a run, for assertion messages.
fn shown(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// The topic names `topics/topics.toml` gives for `prefix`: every
/// `[[topics]]` name and `<group>.dlq` for every consumer group. Read from
/// the file as text, independently of the catalog code.
fn catalog_topics(prefix: &str) -> BTreeSet<String> {
    let catalog =
        std::fs::read_to_string(repo_root().join("topics/topics.toml")).expect("topics.toml");
    let quoted = |value: &str| -> Vec<String> {
        value
            .split('"')
            .skip(1)
            .step_by(2)
            .map(|s| s.to_owned())
            .collect()
    };
    let mut names = BTreeSet::new();
    for line in catalog.lines().map(str::trim) {
        if let Some(value) = line.strip_prefix("name = ") {
            names.extend(quoted(value).into_iter().map(|n| format!("{prefix}{n}")));
        } else if let Some(value) = line.strip_prefix("consumer_groups = ") {
            names.extend(
                quoted(value)
                    .into_iter()
                    .map(|g| format!("{prefix}{g}.dlq")),
            );
        }
    }
    assert_eq!(
        names.len(),
        13,
        "nine event topics and four DLQs: {names:?}"
    );
    names
}

/// Topics whose name starts with `prefix`, from `kafka-topics --list`.
fn listed_topics(prefix: &str) -> BTreeSet<String> {
    kafka_tool(
        "kafka-topics",
        &["--bootstrap-server", &brokers(), "--list"],
    )
    .lines()
    .filter(|name| name.starts_with(prefix))
    .map(str::to_owned)
    .collect()
}

/// One topic as `kafka-topics --describe` shows it.
#[derive(Debug)]
struct Described {
    partitions: i32,
    replication: i32,
    configs: BTreeMap<String, String>,
}

/// `kafka-topics --describe` of every topic under `prefix`.
fn described_topics(prefix: &str) -> BTreeMap<String, Described> {
    let pattern = format!("{}.*", prefix.replace('.', "\\."));
    let out = kafka_tool(
        "kafka-topics",
        &[
            "--bootstrap-server",
            &brokers(),
            "--describe",
            "--topic",
            &pattern,
        ],
    );
    out.lines()
        .filter(|line| line.starts_with("Topic: "))
        .map(|line| {
            let fields: BTreeMap<&str, &str> = line
                .split('\t')
                .filter_map(|f| f.split_once(": "))
                .collect();
            let number = |key: &str| -> i32 {
                fields
                    .get(key)
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or_else(|| panic!("no {key} in {line}"))
            };
            let configs = fields
                .get("Configs")
                .map(|c| {
                    c.split(',')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            (
                fields["Topic"].trim().to_owned(),
                Described {
                    partitions: number("PartitionCount"),
                    replication: number("ReplicationFactor"),
                    configs,
                },
            )
        })
        .collect()
}

/// Subjects under `prefix`, from the registry's REST API (`GET /subjects`).
fn registered_subjects(prefix: &str) -> BTreeSet<String> {
    let url = registry_url();
    let address = url
        .strip_prefix("http://")
        .expect("a plain http registry URL")
        .trim_end_matches('/');
    let mut stream = TcpStream::connect(address).expect("connect to the registry");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    write!(
        stream,
        "GET /subjects HTTP/1.0\r\nHost: {address}\r\nAccept: application/json\r\n\r\n"
    )
    .expect("send request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("http answer");
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{head}"
    );
    let subjects: Vec<String> = serde_json::from_str(body).expect("a JSON list of subjects");
    subjects
        .into_iter()
        .filter(|s| s.starts_with(prefix))
        .collect()
}

/// `kafka-init.sh --check --output json`: (exit code, drift entries).
fn check(prefix: &str) -> (Option<i32>, Vec<serde_json::Value>) {
    let out = kafka_init(prefix, &["--check", "--output", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "--check --output json printed no JSON ({e}):\n{}",
            shown(&out)
        )
    });
    assert_eq!(
        json["clean"].as_bool(),
        Some(json["drift"].as_array().is_some_and(Vec::is_empty)),
        "{json}"
    );
    (
        out.status.code(),
        json["drift"].as_array().expect("drift").clone(),
    )
}

/// Fresh prefix: `--check` fails naming every missing topic; the script
/// creates the catalog (as Kafka's own tool sees it: names, development
/// sizing, configs) and registers a schema per event topic; `--check` then
/// passes; a second run changes nothing.
#[test]
fn init_creates_the_catalog_and_check_passes_after_it() {
    let prefix = prefix();
    let expected = catalog_topics(&prefix);

    let (code, drift) = check(&prefix);
    assert_eq!(code, Some(1), "drift before init: {drift:?}");
    let missing: BTreeSet<String> = drift
        .iter()
        .filter(|d| d["kind"] == "missing_topic")
        .map(|d| d["topic"].as_str().expect("topic").to_owned())
        .collect();
    assert_eq!(missing, expected);
    assert!(listed_topics(&prefix).is_empty(), "--check created nothing");

    let out = kafka_init(&prefix, &[]);
    assert!(out.status.success(), "{}", shown(&out));
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("created topic"))
            .count(),
        13,
        "{stdout}"
    );

    assert_eq!(listed_topics(&prefix), expected, "kafka-topics --list");
    let described = described_topics(&prefix);
    assert_eq!(described.keys().cloned().collect::<BTreeSet<_>>(), expected);
    for (name, topic) in &described {
        assert_eq!(
            (topic.partitions, topic.replication),
            (3, 1),
            "development sizing of {name}"
        );
        let policy = if name.ends_with("opal.user.preferences.updated") {
            "compact"
        } else {
            "delete"
        };
        assert_eq!(
            topic.configs.get("cleanup.policy").map(String::as_str),
            Some(policy),
            "{name}: {topic:?}"
        );
        assert_eq!(
            topic.configs.get("min.insync.replicas").map(String::as_str),
            Some("1"),
            "{name}: {topic:?}"
        );
    }
    let subjects: BTreeSet<String> = expected
        .iter()
        .filter(|t| !t.ends_with(".dlq"))
        .map(|t| format!("{t}-value"))
        .collect();
    assert_eq!(registered_subjects(&prefix), subjects);

    let (code, drift) = check(&prefix);
    assert_eq!((code, drift), (Some(0), vec![]), "no drift after init");
    let out = kafka_init(&prefix, &["--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    assert!(text(&out.stdout).contains("no drift"), "{}", shown(&out));

    let out = kafka_init(&prefix, &[]);
    assert!(out.status.success(), "{}", shown(&out));
    assert!(
        text(&out.stdout).starts_with("nothing to change: 13 topics and 9 schemas"),
        "{}",
        shown(&out)
    );
}

/// A change made behind kafka-init's back (with Kafka's own tool) makes
/// `--check` exit 1 naming it; the script repairs it and `--check` passes.
#[test]
fn check_exits_one_after_a_change_and_zero_once_init_repaired_it() {
    let prefix = prefix();
    let out = kafka_init(&prefix, &[]);
    assert!(out.status.success(), "{}", shown(&out));
    assert_eq!(check(&prefix), (Some(0), vec![]));

    let topic = format!("{prefix}opal.feedback.submitted");
    kafka_tool(
        "kafka-configs",
        &[
            "--bootstrap-server",
            &brokers(),
            "--alter",
            "--entity-type",
            "topics",
            "--entity-name",
            &topic,
            "--add-config",
            "retention.ms=1000",
        ],
    );
    let (code, drift) = check(&prefix);
    assert_eq!(code, Some(1), "{drift:?}");
    assert_eq!(
        drift,
        [serde_json::json!({
            "kind": "config",
            "topic": topic,
            "key": "retention.ms",
            "expected": "604800000",
            "actual": "1000",
        })]
    );
    let out = kafka_init(&prefix, &["--check"]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("{topic} retention.ms")) && stdout.contains("1 difference(s)"),
        "{stdout}"
    );

    let out = kafka_init(&prefix, &[]);
    assert!(out.status.success(), "{}", shown(&out));
    assert!(
        text(&out.stdout).contains(&format!("set {topic} retention.ms=604800000")),
        "{}",
        shown(&out)
    );
    assert_eq!(
        described_topics(&prefix)[&topic]
            .configs
            .get("retention.ms")
            .map(String::as_str),
        Some("604800000"),
        "kafka-topics sees the catalog's retention again"
    );
    assert_eq!(check(&prefix), (Some(0), vec![]));
}

/// Production sizing (replication 3) on the local one-broker stack: the
/// script fails with the broker's reason naming the topic, and creates no
/// topic and registers no schema.
#[test]
fn env_production_on_a_one_broker_stack_fails_clearly_and_creates_nothing() {
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("client");
    let brokers_in_cluster = probe
        .fetch_metadata(None, Duration::from_secs(30))
        .expect("metadata")
        .brokers()
        .len();
    assert!(
        brokers_in_cluster < 3,
        "this test needs a cluster smaller than production's replication factor 3, found {brokers_in_cluster} brokers"
    );

    for env in [&["--env", "production"][..], &["--env=production"][..]] {
        let prefix = prefix();
        let out = kafka_init(&prefix, env);
        assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(
                "need replication factor 3, but the cluster has 1 broker(s); nothing was changed"
            ),
            "{}",
            shown(&out)
        );
        assert_eq!(listed_topics(&prefix), BTreeSet::new(), "no topic created");
        assert_eq!(
            registered_subjects(&prefix),
            BTreeSet::new(),
            "no schema registered"
        );
    }
}

/// Flags the script or opal-admin do not know fail before anything is done.
#[test]
fn bad_flags_exit_non_zero_and_say_what_is_wrong() {
    let prefix = prefix();
    let cases: [(&[&str], &str); 3] = [
        (&["--no-such-flag"], "--no-such-flag"),
        (&["--env", "qa"], "unknown environment 'qa'"),
        (&["--env"], "--env needs a value"),
    ];
    for (args, says) in cases {
        let out = kafka_init(&prefix, args);
        assert!(
            !out.status.success() && out.status.code().is_some(),
            "{args:?}: {}",
            shown(&out)
        );
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            shown(&out)
        );
    }
    assert_eq!(listed_topics(&prefix), BTreeSet::new(), "nothing created");
}
