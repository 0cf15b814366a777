//! Helpers for tests against the real local stack (`scripts/dev-stack.sh`).
//!
//! Every test uses random topic and group names, so runs never collide.

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod monitoring;
pub mod private_cluster;
pub mod probe;
pub mod provision;

/// Bootstrap brokers of the stack under test.
pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// Schema Registry of the stack under test.
pub fn registry_url() -> String {
    std::env::var("SCHEMA_REGISTRY_URL").unwrap_or_else(|_| "http://127.0.0.1:8081".to_owned())
}

/// Redis of the stack under test.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A name no other test run uses: `<prefix>-<uuid>`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where cargo put this workspace's binaries (next to the running test's `deps/`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// One of the workspace's binaries, which must have been built
/// (`cargo build --workspace --bins`; scripts/test.sh does).
pub fn workspace_bin(name: &str) -> PathBuf {
    let binary = bin_dir().join(name);
    assert!(
        binary.exists(),
        "{} is not built; run `cargo build --workspace --bins` (scripts/test.sh does)",
        binary.display()
    );
    binary
}

/// Runs `scripts/dev-stack.sh <args>`, panicking with its output if it fails.
pub fn dev_stack(args: &[&str]) {
    let script = repo_root().join("scripts/dev-stack.sh");
    let output = Command::new(&script)
        .args(args)
        .output()
        .expect("run dev-stack.sh");
    assert!(
        output.status.success(),
        "dev-stack.sh {args:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// An Apache Kafka broker of a test's own (`scripts/dev-stack.sh` with its own
/// state directory and ports, no SASL listener), so stopping it harms no other
/// test. Removed with its state when dropped.
pub struct PrivateBroker {
    dir: PathBuf,
    port: u16,
    controller_port: u16,
}

impl PrivateBroker {
    /// Formats and starts a fresh broker; returns once it answers.
    pub fn start() -> PrivateBroker {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("free port")
        };
        let broker = PrivateBroker {
            dir: std::env::temp_dir().join(unique("opal-broker")),
            port: free(),
            controller_port: free(),
        };
        broker.run(&["start", "kafka"]);
        broker
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops it (SIGTERM, a controlled shutdown); its state stays.
    pub fn stop(&self) {
        self.run(&["stop", "kafka"]);
    }

    /// Starts it again on its state; returns once it answers.
    pub fn start_again(&self) {
        self.run(&["start", "kafka"]);
    }

    fn run(&self, args: &[&str]) {
        let output = Command::new(repo_root().join("scripts/dev-stack.sh"))
            .args(args)
            .env("OPAL_STACK_DIR", &self.dir)
            .env("OPAL_KAFKA_PORT", self.port.to_string())
            .env(
                "OPAL_KAFKA_CONTROLLER_PORT",
                self.controller_port.to_string(),
            )
            .env_remove("OPAL_KAFKA_SASL")
            .output()
            .expect("run dev-stack.sh");
        assert!(
            output.status.success(),
            "dev-stack.sh {args:?} for a private broker failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/dev-stack.sh"))
            .args(["down", "--clean", "kafka"])
            .env("OPAL_STACK_DIR", &self.dir)
            .env("OPAL_KAFKA_PORT", self.port.to_string())
            .env(
                "OPAL_KAFKA_CONTROLLER_PORT",
                self.controller_port.to_string(),
            )
            .output();
    }
}

/// Runs one of Apache Kafka's own CLI tools (`scripts/kafka.sh TOOL ARGS`,
/// from the same jars as the local broker) and returns its standard output,
/// panicking with its error output if it fails. Tests use them as witnesses
/// independent of our code.
pub fn kafka_tool(tool: &str, args: &[&str]) -> String {
    let script = repo_root().join("scripts/kafka.sh");
    let output = Command::new(&script)
        .arg(tool)
        .args(args)
        .output()
        .expect("run scripts/kafka.sh");
    assert!(
        output.status.success(),
        "{tool} {args:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// One row of `kafka-consumer-groups --describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRow {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    /// None where the group has committed nothing for the partition ("-").
    pub current_offset: Option<i64>,
    pub log_end_offset: i64,
    pub lag: Option<i64>,
    /// "-" when no member holds the partition.
    pub consumer_id: String,
}

impl GroupRow {
    /// The group has committed everything of this partition: lag 0, or a
    /// partition that never held a record (nothing to commit, shown as "-").
    pub fn caught_up(&self) -> bool {
        self.lag == Some(0) || (self.current_offset.is_none() && self.log_end_offset == 0)
    }
}

/// `kafka-consumer-groups --describe` of `groups`, read from Kafka's own tool.
pub fn describe_groups(groups: &[&str]) -> Vec<GroupRow> {
    let brokers = brokers();
    let mut args = vec!["--bootstrap-server", brokers.as_str(), "--describe"];
    for group in groups {
        args.extend(["--group", group]);
    }
    let number = |s: &str| s.parse::<i64>().ok();
    kafka_tool("kafka-consumer-groups", &args)
        .lines()
        .filter_map(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            if columns.len() < 7 || !groups.contains(&columns[0]) {
                return None;
            }
            Some(GroupRow {
                group: columns[0].to_owned(),
                topic: columns[1].to_owned(),
                partition: columns[2].parse().ok()?,
                current_offset: number(columns[3]),
                log_end_offset: number(columns[4])?,
                lag: number(columns[5]),
                consumer_id: columns[6].to_owned(),
            })
        })
        .collect()
}
