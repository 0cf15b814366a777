//! opal-counting-consumer: counts every event exactly once (runtime drills and smoke tests).

use clap::Parser;
use opal_consumers::RuntimeArgs;
use opal_consumers::counting::CountingHandler;
use opal_consumers::serve::{ConsumerSpec, run_consumer};
use opal_schemas::EventType;

/// mimalloc instead of glibc's malloc: the event path allocates per event
/// (README, Performance).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "opal-counting-consumer",
    version,
    about = "Counts every event exactly once in Redis"
)]
struct Cli {
    #[command(flatten)]
    runtime: RuntimeArgs,

    /// Redis key prefix of the counters.
    #[arg(long, env = "OPAL_COUNT_PREFIX", default_value = "opal:counting")]
    count_prefix: String,

    /// Event types to consume (comma-separated); all when absent.
    #[arg(long, value_delimiter = ',')]
    inputs: Vec<EventType>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let inputs = if cli.inputs.is_empty() {
        EventType::ALL.to_vec()
    } else {
        cli.inputs
    };
    let handler = CountingHandler::new(cli.count_prefix, inputs);
    let spec = ConsumerSpec {
        default_group: "opal-counting",
        default_port: 9190,
    };
    run_consumer(handler, cli.runtime, spec, |_, _| Ok(axum::Router::new())).await
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
