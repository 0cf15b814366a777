//! `opal-bench run` measures one broker; `opal-bench report` merges runs and the
//! codec microbenchmarks into bench/results/latest.json and prints the tables.
//! `scripts/bench.sh` runs both against the local Apache Kafka broker.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use opal_bench::{gateway, instructions, report, run};

/// mimalloc instead of glibc's malloc: the event path allocates per event
/// (strings of the typed events, futures), and glibc spends several hundred
/// instructions per allocation and free (README, Performance).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "opal-bench",
    about = "opal producer and consumer pipeline vs plain rdkafka"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One run against one broker; writes its result as JSON.
    Run(Box<RunArgs>),
    /// One phase on a fixed number of events, for `valgrind --tool=callgrind`
    /// (scripts/bench-instructions.sh runs it).
    Instructions(Box<InstructionsArgs>),
    /// opal-gateway to one WebSocket client and one webhook receiver:
    /// events/s and delivery latency; writes its result as JSON.
    Gateway {
        #[command(flatten)]
        options: Box<gateway::GatewayOptions>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Merges run files and criterion's codec estimates; prints markdown.
    Report {
        /// Run files from `opal-bench run`, in the order to show them.
        runs: Vec<PathBuf>,
        /// scripts/bench-instructions.sh's output, for the instructions table.
        #[arg(long)]
        instructions: Option<PathBuf>,
        #[arg(long, default_value = "target/criterion")]
        criterion_dir: PathBuf,
        #[arg(long, default_value = "bench/results/latest.json")]
        out: PathBuf,
    },
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    options: run::RunOptions,
    /// Where to write the run's result (JSON).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct InstructionsArgs {
    #[command(flatten)]
    stack: run::RunOptions,
    #[arg(long, value_enum)]
    phase: instructions::Phase,
    /// Topic prefix of the phase (`prepare` creates and fills its topics);
    /// the phase's event count is `--events`.
    #[arg(long)]
    prefix: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    opal_topics::telemetry::init_tracing(opal_topics::telemetry::LogFormat::Text);
    match Cli::parse().command {
        Command::Run(args) => {
            let RunArgs { options, out } = *args;
            let result = run::run(&options).await?;
            std::fs::write(&out, serde_json::to_string_pretty(&result)?)
                .with_context(|| format!("write {}", out.display()))?;
            println!("{}", serde_json::to_string_pretty(&result)?);
        }
        Command::Gateway { options, out } => {
            let result = gateway::run(&options).await?;
            std::fs::write(&out, serde_json::to_string_pretty(&result)?)
                .with_context(|| format!("write {}", out.display()))?;
            println!("{}", gateway::table(&result));
        }
        Command::Instructions(args) => {
            let InstructionsArgs {
                stack,
                phase,
                prefix,
            } = *args;
            instructions::run(&stack, phase, &prefix, stack.events).await?;
        }
        Command::Report {
            runs,
            instructions,
            criterion_dir,
            out,
        } => {
            anyhow::ensure!(!runs.is_empty(), "name at least one run file");
            let latest = report::latest(&runs, instructions.as_deref(), &criterion_dir)?;
            std::fs::write(&out, serde_json::to_string_pretty(&latest)? + "\n")
                .with_context(|| format!("write {}", out.display()))?;
            print!("{}", report::markdown(&latest));
        }
    }
    Ok(())
}
