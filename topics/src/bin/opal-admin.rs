//! opal-admin: provisioning and inspection of the cluster and the registry.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use opal_schemas::Environment;
use opal_topics::provision::{Drift, Target};
use opal_topics::telemetry::LogArgs;
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

    #[command(flatten)]
    log: LogArgs,

    /// How long to wait for the broker and the registry per request.
    #[arg(long, default_value = "10s", value_parser = parse_duration, global = true)]
    timeout: Duration,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct CatalogArgs {
    /// Environment whose sizing applies.
    #[arg(long = "env", env = "OPAL_ENV", default_value = "development")]
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
    /// Move a consumer group's offsets on a topic (replay from a point in time).
    /// Refuses while the group has active members.
    ResetOffsets {
        #[arg(long)]
        group: String,
        /// Full topic name (prefix included).
        #[arg(long)]
        topic: String,
        /// First record at or after this time (RFC 3339, e.g. 2026-11-24T10:00:00Z).
        #[arg(long, group = "to", value_parser = parse_rfc3339)]
        to_datetime: Option<i64>,
        #[arg(long, group = "to")]
        to_earliest: bool,
        #[arg(long, group = "to")]
        to_latest: bool,
        /// Print the new offsets without committing them.
        #[arg(long)]
        dry_run: bool,
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

fn parse_rfc3339(raw: &str) -> Result<i64, String> {
    humantime::parse_rfc3339_weak(raw)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .ok_or_else(|| format!("'{raw}' is not an RFC 3339 time like 2026-11-24T10:00:00Z"))
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
    cli.log.init();
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
        Command::ResetOffsets {
            group,
            topic,
            to_datetime,
            to_earliest,
            to_latest,
            dry_run,
        } => {
            use opal_topics::offsets::{ResetTo, reset_offsets};
            let to = match (to_datetime, to_earliest, to_latest) {
                (Some(ms), _, _) => ResetTo::Datetime(ms),
                (None, true, _) => ResetTo::Earliest,
                (None, false, true) => ResetTo::Latest,
                _ => anyhow::bail!("say where to: --to-datetime, --to-earliest or --to-latest"),
            };
            let kafka = cli.kafka.clone();
            let timeout = cli.timeout;
            let plan = tokio::task::spawn_blocking(move || {
                reset_offsets(&kafka, &group, &topic, to, dry_run, timeout)
            })
            .await??;
            for p in &plan {
                let current = p
                    .current
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into());
                println!(
                    "partition {:>3}: {current:>10} -> {}",
                    p.partition, p.target
                );
            }
            println!(
                "{}",
                if dry_run {
                    "dry run: nothing committed"
                } else {
                    "committed"
                }
            );
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
