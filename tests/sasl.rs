//! SASL_SSL for real: the local broker's second listener (SCRAM-SHA-512 over
//! TLS, with the stack's own CA; `OPAL_KAFKA_SASL=1 scripts/dev-stack.sh up`,
//! as scripts/test.sh runs it) carries `opal-admin init`, `opal-producer
//! publish` and a consumer; a wrong password fails at once with a clear error
//! and a non-zero exit; and the password appears in no output of any of them
//! at debug level, nor in their `/health` answers.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use opal_e2e::probe::{SaslListener, free_port, http_get, output_text, processed};
use opal_e2e::{registry_url, unique, workspace_bin};

/// `binary` set up for the SASL_SSL listener with `password`, logging at debug.
fn over_sasl(binary: &str, sasl: &SaslListener, password: &str, prefix: &str) -> Command {
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
    assert!(out.status.success(), "{}", output_text(&out));
    let path = dir.path().join("workflow.json");
    std::fs::write(&path, &out.stdout).expect("write example");
    path
}

#[test]
fn init_publish_and_consume_over_sasl_ssl_without_the_password_in_any_output() {
    let sasl = SaslListener::of_stack();
    let prefix = format!("{}.", unique("sasl"));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut outputs = Vec::new();

    let mut init = over_sasl("opal-admin", &sasl, &sasl.password, &prefix);
    init.arg("init");
    let out = finish(init);
    assert!(
        out.status.success(),
        "init over SASL_SSL: {}",
        output_text(&out)
    );
    assert!(
        output_text(&out).contains("created topic"),
        "{}",
        output_text(&out)
    );
    outputs.push(("opal-admin init", output_text(&out)));

    let mut publish = over_sasl("opal-producer", &sasl, &sasl.password, &prefix);
    publish
        .args(["publish", "workflow.started", "--file"])
        .arg(example_file(&dir));
    let out = finish(publish);
    assert!(
        out.status.success(),
        "publish over SASL_SSL: {}",
        output_text(&out)
    );
    outputs.push(("opal-producer publish", output_text(&out)));

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
    let sasl = SaslListener::of_stack();
    let prefix = format!("{}.", unique("sasl-wrong"));
    let wrong = format!("wrong-{}", unique("pw"));
    let dir = tempfile::tempdir().expect("tempdir");
    // Topics and schemas exist, so each command gets as far as Kafka.
    let mut init = over_sasl("opal-admin", &sasl, &sasl.password, &prefix);
    init.arg("init");
    let out = finish(init);
    assert!(out.status.success(), "{}", output_text(&out));

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
        let all = output_text(&out);
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
