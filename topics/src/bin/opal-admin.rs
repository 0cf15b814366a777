//! opal-admin: provisioning and inspection of the cluster and the registry.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use opal_schemas::Environment;
use opal_topics::provision::{Drift, Target};
use opal_topics::telemetry::{LogFormat, init_tracing};
use opal_topics::{Catalog, KafkaArgs, RegistryArgs};

#[derive(Debug, Parser)]
#[command(
    name = "opal-admin",
    version,
    about = "Provision and inspect the OPAL Kafka cluster and schemas"
)]
struct Cli {
    #[command(flatten)]
    kafka: KafkaArgs,

    #[command(flatten)]
    registry: RegistryArgs,

    /// Log output format.
    #[arg(
        long,
        env = "OPAL_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,

    /// How long to wait for the broker and the registry per request.
    #[arg(long, default_value = "10s", value_parser = parse_duration, global = true)]
    timeout: Duration,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct CatalogArgs {
    /// Environment whose sizing applies.
    #[arg(long = "env", env = "OPAL_ENV", default_value = "development", value_parser = parse_env)]
    env: Environment,

    /// Prefix for every topic name (and so every subject), to keep environments apart.
    #[arg(long, env = "OPAL_TOPIC_PREFIX", default_value = "")]
    topic_prefix: String,

    /// Topic catalog to use instead of the bundled topics.toml.
    #[arg(long, env = "OPAL_TOPIC_CATALOG")]
    catalog: Option<PathBuf>,
}

impl CatalogArgs {
    fn plan(&self) -> anyhow::Result<Vec<opal_topics::TopicSpec>> {
        let catalog = match &self.catalog {
            Some(path) => Catalog::load(path)?,
            None => Catalog::bundled()?,
        };
        Ok(catalog.plan(self.env, &self.topic_prefix))
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check that the brokers answer a metadata request.
    Ping,
    /// Create missing topics, apply configs, register schemas (after a dry run of all).
    Init {
        #[command(flatten)]
        catalog: CatalogArgs,
        /// Raise partition counts below the catalog's (changes key → partition mapping).
        #[arg(long)]
        increase_partitions: bool,
    },
    /// Report drift from the catalog; exit 1 if there is any.
    Check {
        #[command(flatten)]
        catalog: CatalogArgs,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Topics with partitions and configs, subjects with versions and ids.
    Describe {
        /// Only topics whose name starts with this.
        #[arg(long, env = "OPAL_TOPIC_PREFIX", default_value = "")]
        topic_prefix: String,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
}

fn parse_env(raw: &str) -> Result<Environment, String> {
    raw.parse()
}

fn parse_duration(raw: &str) -> Result<Duration, String> {
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let bad = || format!("'{raw}' is not a duration like 5s, 500ms or 2m");
    let n: u64 = number.parse().map_err(|_| bad())?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(bad()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("opal-admin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let registry = cli.registry.client(cli.timeout)?;
    let target = || Target::new(cli.kafka.clone(), registry.clone(), cli.timeout);
    match cli.command {
        Command::Ping => {
            let (brokers, topics) = cli
                .kafka
                .fetch_metadata(cli.timeout)
                .await
                .context("kafka is not answering")?;
            println!(
                "kafka: ok at {} ({brokers} broker(s), {} topic(s))",
                cli.kafka.brokers,
                topics.len()
            );
        }
        Command::Init {
            catalog,
            increase_partitions,
        } => {
            let plan = catalog.plan()?;
            let report = target()?.init(&plan, increase_partitions).await?;
            for change in &report.changes {
                println!("{change}");
            }
            for note in &report.left_alone {
                println!("left alone: {note}");
            }
            if report.changes.is_empty() {
                let schemas = plan.iter().filter(|t| t.event_type.is_some()).count();
                println!(
                    "nothing to change: {} topics and {schemas} schemas already match the catalog ({})",
                    plan.len(),
                    catalog.env
                );
            }
        }
        Command::Check { catalog, output } => {
            let drift = target()?.check(&catalog.plan()?).await?;
            print_drift(&drift, output)?;
            if !drift.is_empty() {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Describe {
            topic_prefix,
            output,
        } => {
            let target = target()?;
            let mut topics = target.observe(None).await?;
            topics.retain(|name, _| name.starts_with(&topic_prefix));
            let subjects = target.subjects().await?;
            let subjects: Vec<_> = subjects
                .into_iter()
                .filter(|(s, _)| s.starts_with(&topic_prefix))
                .collect();
            match output {
                Output::Json => {
                    let subjects: Vec<_> = subjects
                        .iter()
                        .map(|(s, v)| serde_json::json!({"subject": s, "versions": v.iter().map(|(v, id)| serde_json::json!({"version": v, "id": id})).collect::<Vec<_>>()}))
                        .collect();
                    println!(
                        "{}",
                        serde_json::to_string_pretty(
                            &serde_json::json!({"topics": topics.values().collect::<Vec<_>>(), "subjects": subjects})
                        )?
                    );
                }
                Output::Text => {
                    println!("TOPICS");
                    for t in topics.values() {
                        let shown: Vec<String> =
                            ["cleanup.policy", "retention.ms", "min.insync.replicas"]
                                .iter()
                                .filter_map(|k| t.configs.get(*k).map(|v| format!("{k}={v}")))
                                .collect();
                        println!(
                            "  {:<44} partitions={:<3} replication={} {}",
                            t.name,
                            t.partitions,
                            t.replication_factor,
                            shown.join(" ")
                        );
                    }
                    println!("SUBJECTS");
                    for (subject, versions) in &subjects {
                        let shown: Vec<String> = versions
                            .iter()
                            .map(|(v, id)| format!("v{v}=id{id}"))
                            .collect();
                        println!("  {subject:<50} {}", shown.join(" "));
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_drift(drift: &[Drift], output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "drift": drift, "clean": drift.is_empty() })
            )?
        ),
        Output::Text if drift.is_empty() => {
            println!("no drift: the cluster and registry match the catalog")
        }
        Output::Text => {
            let rows: Vec<[String; 4]> = drift.iter().map(Drift::row).collect();
            let header = ["DRIFT", "RESOURCE", "EXPECTED", "ACTUAL"].map(str::to_owned);
            let widths: Vec<usize> = (0..4)
                .map(|i| {
                    rows.iter()
                        .chain([&header])
                        .map(|r| r[i].len())
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            for row in [&header].into_iter().chain(rows.iter()) {
                println!(
                    "{:<w0$}  {:<w1$}  {:<w2$}  {}",
                    row[0],
                    row[1],
                    row[2],
                    row[3],
                    w0 = widths[0],
                    w1 = widths[1],
                    w2 = widths[2]
                );
            }
            println!("{} difference(s) from the catalog", drift.len());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
