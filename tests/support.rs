//! Helpers for tests against the real local stack (`scripts/dev-stack.sh`).
//!
//! Every test uses random topic and group names, so runs never collide.

use std::path::PathBuf;
use std::process::Command;

pub mod monitoring;

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
