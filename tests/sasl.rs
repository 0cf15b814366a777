//! SASL_SSL for real: the local broker's second listener (SCRAM-SHA-512 over
//! TLS, with the stack's own CA; `OPAL_KAFKA_SASL=1 scripts/dev-stack.sh up`,
//! as scripts/test.sh runs it) carries `opal-admin init`, `opal-producer
//! publish` and a consumer; a wrong password fails at once with a clear error
//! and a non-zero exit; and the password appears in no output of any of them
//! at debug level, nor in their `/health` answers.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use opal_e2e::{registry_url, unique, workspace_bin};

/// The SASL_SSL listener and its credentials, as `scripts/dev-stack.sh env` names them.
struct Sasl {
    brokers: String,
    username: String,
    password: String,
    ca: PathBuf,
}

fn sasl() -> Sasl {
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
    Sasl {
        brokers,
        username: read("username"),
        password: read("password"),
        ca: dir.join("ca.crt"),
    }
}

/// `binary` set up for the SASL_SSL listener with `password`, logging at debug.
fn over_sasl(binary: &str, sasl: &Sasl, password: &str, prefix: &str) -> Command {
    let mut command = Command::new(workspace_bin(binary));
    command
        .env("KAFKA_BROKERS", &sasl.brokers)
        .env("KAFKA_USERNAME", &sasl.username)
        .env("KAFKA_PASSWORD", password)
        .env("KAFKA_SSL_CA_LOCATION", &sasl.ca)
        .env("SCHEMA_REGISTRY_URL", registry_url())
        .env("OPAL_TOPIC_PREFIX", prefix)
        .env("RUST_LOG", "debug")
        .env("RUST_BACKTRACE", "0");
    command
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `command` to its end (a guard against hanging, not a time limit on the result).
fn finish(mut command: Command) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.wait_with_output().expect("wait")
}

fn example_file(dir: &tempfile::TempDir) -> PathBuf {
    let out = Command::new(workspace_bin("opal-producer"))
        .args(["example", "workflow.started"])
        .output()
        .expect("example");
    assert!(out.status.success(), "{}", text(&out));
    let path = dir.path().join("workflow.json");
    std::fs::write(&path, &out.stdout).expect("write example");
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

/// A GET on the local HTTP server: (status, body).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
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

fn processed(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("opal_events_consumed_total{") && l.contains("outcome=\"processed\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn init_publish_and_consume_over_sasl_ssl_without_the_password_in_any_output() {
    let sasl = sasl();
    let prefix = format!("{}.", unique("sasl"));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut outputs = Vec::new();

    let mut init = over_sasl("opal-admin", &sasl, &sasl.password, &prefix);
    init.arg("init");
    let out = finish(init);
    assert!(out.status.success(), "init over SASL_SSL: {}", text(&out));
    assert!(text(&out).contains("created topic"), "{}", text(&out));
    outputs.push(("opal-admin init", text(&out)));

    let mut publish = over_sasl("opal-producer", &sasl, &sasl.password, &prefix);
    publish
        .args(["publish", "workflow.started", "--file"])
        .arg(example_file(&dir));
    let out = finish(publish);
    assert!(
        out.status.success(),
        "publish over SASL_SSL: {}",
        text(&out)
    );
    outputs.push(("opal-producer publish", text(&out)));

    let port = free_port();
    let log = dir.path().join("consumer.log");
    let mut consumer = over_sasl("diagnostics-consumer", &sasl, &sasl.password, &prefix);
    consumer
        .env("OPAL_HTTP_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(std::fs::File::create(dir.path().join("consumer.out")).expect("out"))
        .stderr(std::fs::File::create(&log).expect("log"));
    let mut child = consumer.spawn().expect("spawn the consumer");
    let deadline = Instant::now() + Duration::from_secs(120);
    let metrics = loop {
        if let Some((200, metrics)) = http_get(port, "/metrics")
            && processed(&metrics) >= 1.0
        {
            break metrics;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the consumer exited ({status}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the consumer processed nothing over SASL_SSL: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let (status, ready) = http_get(port, "/health/ready").expect("ready");
    assert_eq!(status, 200, "{ready}");
    let (_, live) = http_get(port, "/health/live").expect("live");
    let (_, summary) = http_get(port, "/summary").expect("summary");
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill")
            .success()
    );
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "the consumer stops cleanly");
    let consumer_log = std::fs::read_to_string(&log).expect("log")
        + &std::fs::read_to_string(dir.path().join("consumer.out")).expect("out");
    assert!(
        consumer_log.contains("DEBUG"),
        "the consumer logged at debug level, so the check below covers it: {consumer_log}"
    );
    outputs.push(("consumer log", consumer_log));
    outputs.push(("/health/ready", ready));
    outputs.push(("/health/live", live));
    outputs.push(("/metrics", metrics));
    outputs.push(("/summary", summary));

    for (what, output) in &outputs {
        assert!(
            !output.contains(&sasl.password),
            "the password appears in {what}"
        );
    }
}

#[test]
fn a_wrong_password_fails_at_once_with_a_clear_error_and_a_non_zero_exit() {
    let sasl = sasl();
    let prefix = format!("{}.", unique("sasl-wrong"));
    let wrong = format!("wrong-{}", unique("pw"));
    let dir = tempfile::tempdir().expect("tempdir");
    // Topics and schemas exist, so each command gets as far as Kafka.
    let mut init = over_sasl("opal-admin", &sasl, &sasl.password, &prefix);
    init.arg("init");
    let out = finish(init);
    assert!(out.status.success(), "{}", text(&out));

    // A timeout far beyond the test's patience: the error must be the refusal, not the wait.
    let mut init = over_sasl("opal-admin", &sasl, &wrong, &prefix);
    init.args(["--timeout", "600s", "init"]);
    let mut publish = over_sasl("opal-producer", &sasl, &wrong, &prefix);
    publish
        .args(["publish", "workflow.started", "--file"])
        .arg(example_file(&dir));
    let mut consumer = over_sasl("diagnostics-consumer", &sasl, &wrong, &prefix);
    consumer.env("OPAL_HTTP_LISTEN", format!("127.0.0.1:{}", free_port()));

    for (what, command) in [
        ("opal-admin init", init),
        ("opal-producer publish", publish),
        ("diagnostics-consumer", consumer),
    ] {
        let out = finish(command);
        let all = text(&out);
        assert!(
            !out.status.success(),
            "{what} succeeded with a wrong password"
        );
        assert!(
            all.contains(&format!("Kafka at {} refused the connection", sasl.brokers))
                && all.contains("Authentication failed"),
            "{what} names the refusal: {all}"
        );
        assert!(!all.contains(&wrong), "{what} printed the password");
    }
}
