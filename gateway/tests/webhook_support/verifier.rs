//! The Standard Webhooks reference library (Python, from PyPI, installed by
//! scripts/test.sh; its interpreter in OPAL_STANDARDWEBHOOKS_PYTHON) judging
//! requests: "ok", or "refused: <its error>" for each.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::json;

use super::receiver::Request;

pub fn verify(secret: &str, requests: &[Request]) -> Vec<String> {
    let python = std::env::var("OPAL_STANDARDWEBHOOKS_PYTHON").expect(
        "OPAL_STANDARDWEBHOOKS_PYTHON: the Python with `standardwebhooks` installed (scripts/test.sh sets it)",
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/verify_webhooks.py");
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run the verifier");
    let mut input = String::new();
    for r in requests {
        input
            .push_str(&json!({"secret": secret, "headers": r.headers, "body": r.body}).to_string());
        input.push('\n');
    }
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write requests");
    let out = child.wait_with_output().expect("verifier output");
    assert!(out.status.success(), "verifier failed: {:?}", out.status);
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        lines.len(),
        requests.len(),
        "one verdict per request: {lines:?}"
    );
    lines
}
