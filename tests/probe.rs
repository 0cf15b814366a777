//! Talking to the binaries under test from outside: a free port for their
//! HTTP server, a plain GET on it, their metrics, their combined output as text, and the
//! stack's SASL_SSL listener with its credentials.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

/// A port nothing listens on at the moment.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A GET on a local HTTP server: (status, body); None while nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// Events a consumer processed, from its `/metrics` text.
pub fn processed(metrics: &str) -> f64 {
    metric(
        metrics,
        "opal_events_consumed_total",
        &[("outcome", "processed")],
    )
}

/// The sum of metric `name`'s samples carrying every label in `labels`, from Prometheus text.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A finished process's standard output then standard error.
pub fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The test stack's SASL_SSL listener (SCRAM-SHA-512) and its credentials, as
/// `scripts/dev-stack.sh env` names them.
pub struct SaslListener {
    pub brokers: String,
    pub username: String,
    pub password: String,
    /// The CA that signed the listener's certificate.
    pub ca: PathBuf,
}

impl SaslListener {
    /// From `OPAL_KAFKA_SASL_BROKERS` and `OPAL_KAFKA_SASL_DIR`; panics naming
    /// what to run when the stack has no SASL listener.
    pub fn of_stack() -> SaslListener {
        let (Ok(brokers), Ok(dir)) = (
            std::env::var("OPAL_KAFKA_SASL_BROKERS"),
            std::env::var("OPAL_KAFKA_SASL_DIR"),
        ) else {
            panic!(
                "the SASL_SSL listener is not configured: run through scripts/test.sh, or \
                 OPAL_KAFKA_SASL=1 scripts/dev-stack.sh up and eval \"$(scripts/dev-stack.sh env)\""
            );
        };
        let dir = PathBuf::from(dir);
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
                .trim()
                .to_owned()
        };
        SaslListener {
            brokers,
            username: read("username"),
            password: read("password"),
            ca: dir.join("ca.crt"),
        }
    }
}
