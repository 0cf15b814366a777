//! What can be checked of the Docker deployment without a Docker engine:
//! docker-compose.yml, the Dockerfile, the Prometheus configuration and alert
//! rules (with promtool) and the Grafana provisioning. That the dashboard's and
//! alerts' metrics are really exported is checked against live consumers in
//! `consumers/tests/apps.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use opal_e2e::monitoring::{SYNTHETIC, alert_expressions, dashboard_expressions, metric_names};
use serde_yaml_ng::Value;

/// The image every OPAL service runs (built by the Dockerfile).
const OPAL_IMAGE: &str = "opal-pipeline:local";

/// Variables read by libraries rather than by the binaries' flags.
const LIBRARY_ENV: [&str; 1] = ["RUST_LOG"];

fn root() -> PathBuf {
    opal_e2e::repo_root()
}

fn compose() -> Value {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).expect("read compose");
    let mut doc: Value = serde_yaml_ng::from_str(&text).expect("docker-compose.yml is YAML");
    // Compose applies `<<: *anchor` merges, including merges inside merged
    // mappings; one pass of apply_merge leaves those, so repeat until none is left.
    for _ in 0..5 {
        doc.apply_merge().expect("merge keys");
    }
    assert!(
        !serde_yaml_ng::to_string(&doc).expect("YAML").contains("<<"),
        "unresolved merge keys"
    );
    doc
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
    let mut mounts = 0;
    for (name, service) in services(&doc) {
        for volume in strings(&service["volumes"]) {
            let source = volume.split(':').next().expect("source");
            if source.starts_with('.') || source.starts_with('/') {
                let path = root().join(source);
                assert!(
                    path.exists(),
                    "{name} mounts {source}, which does not exist"
                );
                mounts += 1;
            } else {
                assert!(
                    doc["volumes"].get(source).is_some(),
                    "{name} uses volume {source}, which is not declared"
                );
            }
        }
    }
    assert!(
        mounts >= 4,
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
    // `docker compose up` must work without a .env file.
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).expect("compose");
    for piece in text.split("${").skip(1) {
        let inner = piece.split('}').next().expect("closing brace");
        assert!(
            inner.contains(":-"),
            "${{{inner}}} has no default (write ${{{inner}:-…}})"
        );
    }
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
        strings(&grafana["volumes"])
            .iter()
            .any(|v| v.split(':').nth(1) == Some(path)),
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
    let doc = compose();
    for (name, service) in services(&doc) {
        if service["image"].as_str() == Some(OPAL_IMAGE) {
            let binary = strings(&service["command"])[0].clone();
            assert!(
                dockerfile.contains(&format!("target/release/{binary}")),
                "{name} runs {binary}, which the Dockerfile does not copy"
            );
        }
    }
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
