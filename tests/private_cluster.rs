//! A private three-node Apache Kafka cluster (`OPAL_KAFKA_NODES=3
//! scripts/dev-stack.sh` with its own state directory and ports, no SASL
//! listener), whose nodes a test may kill with -9 and start again. Removed
//! with its state when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

use crate::{repo_root, unique};

/// Nodes in the cluster.
pub const NODES: u16 = 3;
/// dev-stack.sh gives node i every port of node 1 plus `PORT_STEP * (i - 1)`.
const PORT_STEP: u16 = 10;

pub struct PrivateCluster {
    dir: PathBuf,
    /// Node 1's broker port; its controller listens on the next one.
    base_port: u16,
}

impl PrivateCluster {
    /// Formats and starts three fresh nodes; returns once every node answers
    /// and sees all three registered.
    pub fn start() -> PrivateCluster {
        let cluster = PrivateCluster {
            dir: std::env::temp_dir().join(unique("opal-cluster")),
            base_port: free_base_port(),
        };
        cluster.run(&["start", "kafka"]);
        cluster
    }

    /// Node `node`'s (1..=3) broker address.
    pub fn node_address(&self, node: u16) -> String {
        format!("127.0.0.1:{}", self.base_port + PORT_STEP * (node - 1))
    }

    /// Every node's address: the bootstrap list clients get.
    pub fn brokers(&self) -> String {
        (1..=NODES)
            .map(|n| self.node_address(n))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills node `node` with SIGKILL: no controlled shutdown, no flush. Its
    /// state stays.
    pub fn kill_9(&self, node: u16) {
        let pid_file = self.dir.join(format!("pids/kafka-{node}.pid"));
        let pid = std::fs::read_to_string(&pid_file)
            .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()));
        let status = Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -9 {} (node {node})", pid.trim());
    }

    /// Starts node `node` again on its state; returns once it answers (a
    /// KRaft broker answers once the controller has unfenced it).
    pub fn start_node(&self, node: u16) {
        self.run(&["start", &format!("kafka-{node}")]);
    }

    fn command(&self) -> Command {
        let mut command = Command::new(repo_root().join("scripts/dev-stack.sh"));
        command
            .env("OPAL_STACK_DIR", &self.dir)
            .env("OPAL_KAFKA_NODES", NODES.to_string())
            .env("OPAL_KAFKA_PORT", self.base_port.to_string())
            .env(
                "OPAL_KAFKA_CONTROLLER_PORT",
                (self.base_port + 1).to_string(),
            )
            // Three JVMs start together on the CI machine's two cores.
            .env("OPAL_STACK_TIMEOUT", "240")
            .env_remove("OPAL_KAFKA_SASL")
            .env_remove("OPAL_KAFKA_SASL_PORT")
            .env_remove("OPAL_KAFKA_HEAP");
        command
    }

    fn run(&self, args: &[&str]) {
        let output = self
            .command()
            .args(args)
            .output()
            .expect("run dev-stack.sh");
        assert!(
            output.status.success(),
            "dev-stack.sh {args:?} for a private cluster failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = self.command().args(["down", "--clean", "kafka"]).output();
    }
}

/// A broker port for node 1 such that every node's broker and controller port
/// is free now.
fn free_base_port() -> u16 {
    let free = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
    for _ in 0..100 {
        let base = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let Some(last) = base.checked_add(PORT_STEP * (NODES - 1) + 1) else {
            continue;
        };
        let ports = (0..NODES).flat_map(|n| {
            let broker = base + PORT_STEP * n;
            [broker, broker + 1]
        });
        if last < u16::MAX && ports.into_iter().all(free) {
            return base;
        }
    }
    panic!("no free ports for three Kafka nodes on 127.0.0.1");
}
