//! Secrets stay secret: with a Kafka SASL password (the stack's SASL_SSL
//! listener), a registry basic-auth password (a private opal-registry that
//! requires it) and a Redis password (a private redis-server with
//! `requirepass`) set, no binary prints any of them: not in its logs at debug
//! level (librdkafka's debug contexts included), not in `--help` (clap shows
//! environment values there), not in `/health` or `/metrics`, and not in the
//! errors when a dependency refuses the credentials or cannot be reached.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use opal_e2e::probe::{SaslListener, free_port, http_get, output_text, processed};
use opal_e2e::{brokers, kafka_tool, unique, workspace_bin};

/// Every binary of the workspace.
const BINARIES: [&str; 10] = [
    "diagnostics-consumer",
    "recommendations-consumer",
    "feedback-consumer",
    "forecast-consumer",
    "opal-counting-consumer",
    "opal-dlq",
    "opal-producer",
    "opal-admin",
    "opal-registry",
    "opal-bench",
];

/// The consumers, each run until it is ready.
const CONSUMERS: [&str; 5] = [
    "diagnostics-consumer",
    "recommendations-consumer",
    "feedback-consumer",
    "forecast-consumer",
    "opal-counting-consumer",
];

const REGISTRY_USER: &str = "opal-sr";

/// The credentials of the run and where each service listens.
struct Stack {
    sasl_brokers: String,
    kafka_user: String,
    kafka_password: String,
    ca: PathBuf,
    registry_port: u16,
    registry_password: String,
    redis_port: u16,
    redis_password: String,
    prefix: String,
    /// Each process's output file goes here.
    dir: tempfile::TempDir,
}

impl Stack {
    /// The strings no output may contain.
    fn secrets(&self) -> Vec<(&'static str, String)> {
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{REGISTRY_USER}:{}", self.registry_password));
        vec![
            ("the Kafka password", self.kafka_password.clone()),
            ("the registry password", self.registry_password.clone()),
            ("the registry's basic-auth header", basic),
            ("the Redis password", self.redis_password.clone()),
        ]
    }

    fn registry_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.registry_port)
    }

    fn redis_url(&self) -> String {
        format!(
            "redis://:{}@127.0.0.1:{}",
            self.redis_password, self.redis_port
        )
    }

    /// `binary` with every credential in its environment, logging at debug.
    fn command(&self, binary: &str) -> Command {
        let mut command = Command::new(workspace_bin(binary));
        command
            .env("KAFKA_BROKERS", &self.sasl_brokers)
            .env("KAFKA_USERNAME", &self.kafka_user)
            .env("KAFKA_PASSWORD", &self.kafka_password)
            .env("KAFKA_SSL_CA_LOCATION", &self.ca)
            .env("SCHEMA_REGISTRY_URL", self.registry_url())
            .env("SCHEMA_REGISTRY_USERNAME", REGISTRY_USER)
            .env("SCHEMA_REGISTRY_PASSWORD", &self.registry_password)
            .env("REDIS_URL", self.redis_url())
            .env(
                "OPAL_REGISTRY_BASIC_AUTH",
                format!("{REGISTRY_USER}:{}", self.registry_password),
            )
            .env("OPAL_TOPIC_PREFIX", &self.prefix)
            .env("RUST_LOG", "debug")
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null());
        command
    }

    /// A process writing its output to a file of its own (read by [`Self::log`]).
    fn spawn(&self, mut command: Command, name: &str) -> Child {
        let file = std::fs::File::create(self.dir.path().join(name)).expect("log file");
        command
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"))
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).expect("read log")
    }
}

/// Runs `command` to its end (a guard against hanging, not a time limit on the result).
fn finish(mut command: Command) -> std::process::Output {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run")
}

/// Runs `command` and expects success; its output.
fn succeeds(command: Command, what: &str) -> String {
    let output = finish(command);
    let text = output_text(&output);
    assert!(output.status.success(), "{what} failed: {text}");
    text
}

/// Runs `command` and expects a failure; its output.
fn fails(command: Command, what: &str) -> String {
    let output = finish(command);
    let text = output_text(&output);
    assert!(!output.status.success(), "{what} succeeded: {text}");
    text
}

/// Kills a private server when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} never came up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_redis(port: u16, password: &str) -> Killed {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(["--requirepass", password])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (Debian's redis-server package)");
    wait_for("the private redis", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Killed(child)
}

/// The stack's SASL_SSL listener and its credentials (`scripts/dev-stack.sh env`).
fn stack() -> Stack {
    let sasl = SaslListener::of_stack();
    Stack {
        sasl_brokers: sasl.brokers,
        kafka_user: sasl.username,
        kafka_password: sasl.password,
        ca: sasl.ca,
        registry_port: free_port(),
        registry_password: unique("registry-pw"),
        redis_port: free_port(),
        redis_password: unique("redis-pw"),
        prefix: format!("{}.", unique("secrets")),
        dir: tempfile::tempdir().expect("tempdir"),
    }
}

/// `binary --help` and `binary SUBCOMMAND --help` for each of its subcommands.
fn help_texts(stack: &Stack, binary: &str) -> Vec<(String, String)> {
    let mut help = stack.command(binary);
    help.arg("--help");
    let top = succeeds(help, &format!("{binary} --help"));
    let subcommands: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect();
    let mut texts = vec![(format!("{binary} --help"), top)];
    for subcommand in subcommands {
        let mut help = stack.command(binary);
        help.args([&subcommand, "--help"]);
        let what = format!("{binary} {subcommand} --help");
        texts.push((what.clone(), succeeds(help, &what)));
    }
    texts
}

#[test]
fn no_password_appears_in_any_output_of_any_binary() {
    let stack = stack();
    let _redis = start_redis(stack.redis_port, &stack.redis_password);
    let mut registry = stack.command("opal-registry");
    registry.args([
        "--in-memory",
        "--listen",
        &format!("127.0.0.1:{}", stack.registry_port),
    ]);
    let registry = Killed(stack.spawn(registry, "opal-registry"));
    wait_for("the private registry", || {
        http_get(stack.registry_port, "/subjects").is_some()
    });
    let mut outputs: Vec<(String, String)> = Vec::new();

    // --help, with every secret in the environment clap reads.
    for binary in BINARIES {
        outputs.extend(help_texts(&stack, binary));
    }
    let consumer_help = &outputs
        .iter()
        .find(|(what, _)| what == "diagnostics-consumer --help")
        .expect("help")
        .1;
    assert!(
        consumer_help.contains("KAFKA_PASSWORD") && consumer_help.contains("REDIS_URL"),
        "the help names the variables holding secrets, so the check covers them: {consumer_help}"
    );

    // Provisioning and publishing over SASL_SSL into the authenticated registry,
    // with all of librdkafka's debug contexts on.
    let mut init = stack.command("opal-admin");
    init.args(["--kafka-option", "debug=all", "init"]);
    outputs.push(("opal-admin init".into(), succeeds(init, "opal-admin init")));
    for command in ["ping", "check", "describe"] {
        let mut admin = stack.command("opal-admin");
        admin.arg(command);
        outputs.push((
            format!("opal-admin {command}"),
            succeeds(admin, &format!("opal-admin {command}")),
        ));
    }
    // The counting consumer's dead-letter topic is not in the catalog.
    kafka_tool(
        "kafka-topics",
        &[
            "--bootstrap-server",
            &brokers(),
            "--create",
            "--topic",
            &format!("{}opal-counting.dlq", stack.prefix),
            "--partitions",
            "1",
            "--replication-factor",
            "1",
        ],
    );
    let mut simulate = stack.command("opal-producer");
    simulate.args([
        "--kafka-option",
        "debug=all",
        "simulate",
        "--workflows",
        "3",
    ]);
    outputs.push((
        "opal-producer simulate".into(),
        succeeds(simulate, "opal-producer simulate"),
    ));
    let mut health = stack.command("opal-producer");
    health.arg("health");
    outputs.push((
        "opal-producer health".into(),
        succeeds(health, "opal-producer health"),
    ));

    // Every consumer, until it is ready and has processed what was published.
    let mut running = Vec::new();
    for consumer in CONSUMERS {
        let port = free_port();
        let mut command = stack.command(consumer);
        command
            .args(["--kafka-option", "debug=all"])
            .env("OPAL_HTTP_LISTEN", format!("127.0.0.1:{port}"));
        running.push((consumer, port, stack.spawn(command, consumer)));
    }
    for (consumer, port, child) in &mut running {
        wait_for(consumer, || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{consumer} exited ({status}): {}", stack.log(consumer));
            }
            http_get(*port, "/health/ready").is_some_and(|(status, _)| status == 200)
                && http_get(*port, "/metrics").is_some_and(|(_, m)| processed(&m) >= 1.0)
        });
        for path in ["/health/live", "/health/ready", "/metrics"] {
            let (_, body) = http_get(*port, path).expect(path);
            outputs.push((format!("{consumer} {path}"), body));
        }
    }
    for (consumer, _, child) in &mut running {
        assert!(
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .expect("kill")
                .success()
        );
        let status = child.wait().expect("wait");
        let log = stack.log(consumer);
        assert_eq!(status.code(), Some(0), "{consumer} stops cleanly: {log}");
        assert!(
            log.contains("DEBUG") && log.contains("sasl.password = [redacted]"),
            "{consumer} logged at debug level, librdkafka's configuration dump too, so the \
             check covers them"
        );
        outputs.push((format!("{consumer} log"), log));
    }
    for command in ["list", "show"] {
        let mut dlq = stack.command("opal-dlq");
        dlq.args([command, "--group", "opal-diagnostics"]);
        outputs.push((
            format!("opal-dlq {command}"),
            succeeds(dlq, &format!("opal-dlq {command}")),
        ));
    }

    // Refusals and unreachable dependencies: the errors name the problem, not the secret.
    let wrong = unique("wrong-pw");
    let mut consumer = stack.command("opal-counting-consumer");
    consumer
        .env(
            "REDIS_URL",
            format!("redis://:{wrong}@127.0.0.1:{}", stack.redis_port),
        )
        .env("OPAL_HTTP_LISTEN", format!("127.0.0.1:{}", free_port()));
    let text = fails(consumer, "a consumer with a wrong Redis password");
    assert!(
        text.contains("refused the credentials in REDIS_URL"),
        "{text}"
    );
    assert!(
        !text.contains(&wrong),
        "the wrong password is printed: {text}"
    );
    outputs.push(("a wrong Redis password".into(), text));

    let mut consumer = stack.command("opal-counting-consumer");
    consumer
        .env(
            "REDIS_URL",
            format!(
                "redis://:{}@127.0.0.1:{}",
                stack.redis_password,
                free_port()
            ),
        )
        .env("OPAL_HTTP_LISTEN", format!("127.0.0.1:{}", free_port()));
    let text = fails(consumer, "a consumer whose Redis is not there");
    assert!(text.contains("cannot connect to Redis"), "{text}");
    outputs.push(("Redis unreachable".into(), text));

    let mut publish = stack.command("opal-producer");
    publish
        .args(["simulate", "--workflows", "1"])
        .env("SCHEMA_REGISTRY_PASSWORD", &wrong);
    let text = fails(publish, "publishing with a wrong registry password");
    assert!(text.contains("refused the credentials"), "{text}");
    assert!(
        !text.contains(&wrong),
        "the wrong password is printed: {text}"
    );
    outputs.push(("a wrong registry password".into(), text));

    // Credentials in the registry URL itself (reqwest sends them as basic auth).
    let in_url = |port: u16| {
        format!(
            "http://{REGISTRY_USER}:{}@127.0.0.1:{port}",
            stack.registry_password
        )
    };
    let mut health = stack.command("opal-producer");
    health
        .arg("health")
        .env("SCHEMA_REGISTRY_URL", in_url(stack.registry_port))
        .env_remove("SCHEMA_REGISTRY_USERNAME")
        .env_remove("SCHEMA_REGISTRY_PASSWORD");
    outputs.push((
        "credentials in the registry URL".into(),
        succeeds(health, "opal-producer health, credentials in the URL"),
    ));
    let mut health = stack.command("opal-producer");
    health
        .arg("health")
        .env("SCHEMA_REGISTRY_URL", in_url(free_port()));
    outputs.push((
        "an unreachable registry with credentials in its URL".into(),
        output_text(&finish(health)),
    ));
    let mut help = stack.command("opal-admin");
    help.arg("--help")
        .env("SCHEMA_REGISTRY_URL", in_url(stack.registry_port));
    outputs.push((
        "--help with credentials in the registry URL".into(),
        succeeds(help, "opal-admin --help"),
    ));

    drop(registry);
    outputs.push(("opal-registry log".into(), stack.log("opal-registry")));

    let mut leaks = Vec::new();
    for (what, output) in &outputs {
        for (secret, value) in stack.secrets() {
            if output.contains(&value) {
                leaks.push(format!("{secret} appears in {what}"));
            }
        }
    }
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
}
