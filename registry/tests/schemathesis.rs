//! Property-based API test: schemathesis (PyPI; scripts/test.sh installs a pinned
//! version and exports its executable as OPAL_SCHEMATHESIS_BIN) generates requests
//! for every operation of the `/openapi.json` a private `opal-registry` serves, valid
//! and invalid ones, and checks every answer: no 5xx, and status code, content type,
//! headers and body as the document says.
//!
//! Schemathesis picks a random seed and prints it; OPAL_SCHEMATHESIS_SEED replays one.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Registry, locked};
use serde_json::Value;

/// Examples per operation and phase: the run stays well under a minute on 2 cores.
const MAX_EXAMPLES: &str = "20";
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance";

fn schemathesis_bin() -> PathBuf {
    let path = std::env::var_os("OPAL_SCHEMATHESIS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "OPAL_SCHEMATHESIS_BIN is not set: this test runs schemathesis against the \
                 registry. Run scripts/test.sh (it installs schemathesis from PyPI and exports \
                 OPAL_SCHEMATHESIS_BIN), or `pip install schemathesis==4.32.5` and export \
                 OPAL_SCHEMATHESIS_BIN=$(command -v schemathesis)"
            )
        });
    assert!(
        path.is_file(),
        "OPAL_SCHEMATHESIS_BIN={} is not a file",
        path.display()
    );
    path
}

/// Operations in the served document, for checking that the run tested them all;
/// but for `GET /openapi.json` itself, which schemathesis reads and does not test.
async fn operations(base: &str) -> usize {
    let doc: Value = reqwest::get(format!("{base}/openapi.json"))
        .await
        .and_then(|r| r.error_for_status())
        .expect("GET /openapi.json")
        .json()
        .await
        .expect("openapi.json is JSON");
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .filter(|(path, _)| *path != "/openapi.json")
        .map(|(_, item)| item.as_object().expect("path item").len())
        .sum()
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_nonconforming_response() {
    let bin = schemathesis_bin();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Registry::start(&dir.path().join("data"));
    let expected_operations = operations(&server.base).await;

    let mut command = Command::new(&bin);
    command
        .arg("run")
        .arg(format!("{}/openapi.json", server.base))
        .args(["--checks", CHECKS])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--workers", "1"])
        // A hang guard per request, never a verdict.
        .args(["--request-timeout", "60"])
        // Its hypothesis database and any report stay in the temp dir.
        .current_dir(dir.path())
        .env("NO_COLOR", "1");
    if let Some(seed) = std::env::var_os("OPAL_SCHEMATHESIS_SEED") {
        command.arg("--seed").arg(seed);
    }
    // Blocking is fine: the registry is another process and nothing else runs here.
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis failed ({}):\n{stdout}\n{stderr}\nregistry stderr:\n{}",
        output.status,
        locked(&server.stderr)
    );
    // A run that tested nothing would pass too: every operation must have been tested.
    let tested = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("Tested: "))
        .and_then(|n| n.trim().parse::<usize>().ok());
    assert_eq!(
        tested,
        Some(expected_operations),
        "operations tested by schemathesis:\n{stdout}"
    );
    let summary = stdout
        .lines()
        .filter(|l| l.contains("generated") || l.contains("Seed:"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ");
    eprintln!("schemathesis: {expected_operations} operations; {summary}");
    server.kill();
}
