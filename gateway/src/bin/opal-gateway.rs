//! opal-gateway: pushes OPAL events to webhooks and WebSocket clients by declarative routes.

use clap::Parser;

/// mimalloc instead of glibc's malloc: the event path allocates per event
/// (README, Performance).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    opal_gateway::app::run(opal_gateway::app::Cli::parse()).await
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        opal_gateway::app::Cli::command().debug_assert();
    }
}
