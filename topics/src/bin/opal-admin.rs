//! opal-admin: provisioning and inspection of the cluster.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use opal_topics::KafkaArgs;
use opal_topics::telemetry::{LogFormat, init_tracing};

#[derive(Debug, Parser)]
#[command(
    name = "opal-admin",
    version,
    about = "Provision and inspect the OPAL Kafka cluster"
)]
struct Cli {
    #[command(flatten)]
    kafka: KafkaArgs,

    /// Log output format.
    #[arg(
        long,
        env = "OPAL_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check that the brokers answer a metadata request.
    Ping {
        /// How long to wait for metadata.
        #[arg(long, default_value = "5s", value_parser = humantime_secs)]
        timeout: Duration,
    },
}

fn humantime_secs(raw: &str) -> Result<Duration, String> {
    let (number, unit) = raw.split_at(raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{raw}' is not a duration like 5s or 500ms"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("'{raw}' is not a duration like 5s or 500ms")),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("opal-admin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Ping { timeout } => {
            let (brokers, topics) = cli
                .kafka
                .fetch_metadata(timeout)
                .await
                .context("kafka is not answering")?;
            println!(
                "kafka: ok at {} ({brokers} broker(s), {} topic(s))",
                cli.kafka.brokers,
                topics.len()
            );
            Ok(())
        }
    }
}
