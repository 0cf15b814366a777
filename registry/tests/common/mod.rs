//! Shared by the registry's process-level tests: the `opal-registry` binary run as
//! a child process on a free port, and HTTP helpers in Confluent's media type.

#![allow(dead_code, unreachable_pub)]

pub mod burst;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::Value;

pub const V1: &str = "application/vnd.schemaregistry.v1+json";
/// Hang guard for one HTTP call or for the server to come up; never a verdict.
pub const HANG_GUARD: Duration = Duration::from_secs(120);

pub fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The registry binary, run as a child process on `127.0.0.1:0`.
pub struct Registry {
    pub child: Arc<Mutex<Child>>,
    pub base: String,
    pub stderr: Arc<Mutex<String>>,
}

impl Registry {
    pub fn start(data_dir: &Path) -> Registry {
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
    pub fn kill(&self) {
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

pub fn http_client() -> Client {
    Client::builder()
        .timeout(HANG_GUARD)
        .build()
        .expect("http client")
}

pub async fn call(
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
pub async fn must(
    http: &Client,
    method: &str,
    url: String,
    body: Option<Value>,
) -> (StatusCode, Value) {
    call(http, method, url.clone(), body)
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}
