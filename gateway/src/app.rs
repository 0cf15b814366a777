//! The `opal-gateway` process: its flags, and start-up in order (routes
//! file, dead-letter topics, the groups' start positions, then the consumer runtime with the route
//! runtimes, the reload signal and the push side as named tasks).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use opal_consumers::RuntimeArgs;
use opal_consumers::serve::{ConsumerSpec, EXIT_FAILED, run_consumer};

use crate::delivery::{LiveHandler, RouteRegistries, RouteSupervisor, place_new_groups};
use crate::live::LiveFeed;
use crate::metrics::GatewayMetrics;
use crate::provision::{ensure_dlqs, groups};
use crate::reload::{ReloadStatus, Reloader};
use crate::table::RouteTable;
use crate::ws::WsArgs;

/// The gateway's group when `--group` does not say.
pub const DEFAULT_GROUP: &str = "opal-gateway";
pub const DEFAULT_PORT: u16 = 9200;

#[derive(Debug, Parser)]
#[command(
    name = "opal-gateway",
    version,
    about = "Pushes OPAL events to webhooks and WebSocket clients by declarative routes"
)]
pub struct Cli {
    #[command(flatten)]
    pub runtime: RuntimeArgs,

    /// The routes file (TOML); read again on SIGHUP.
    #[arg(long, env = "OPAL_GATEWAY_ROUTES")]
    pub routes: PathBuf,

    /// Events the live feed holds for the WebSocket side before it falls behind.
    #[arg(long, env = "OPAL_GATEWAY_LIVE_BUFFER", default_value_t = 65_536)]
    pub live_buffer: usize,

    #[command(flatten)]
    pub ws: WsArgs,
}

/// Runs the gateway until SIGTERM/SIGINT or a failure; the exit code says how it ended.
pub async fn run(cli: Cli) -> ExitCode {
    // Before anything connects: a bad routes file stops start-up with its line.
    let routes = match crate::routes::load(&cli.routes) {
        Ok(routes) => routes,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let base_group = cli
        .runtime
        .group
        .clone()
        .unwrap_or_else(|| DEFAULT_GROUP.to_owned());
    if let Err(e) = ensure_dlqs(&cli.runtime, &groups(&base_group, &routes)).await {
        eprintln!("error: {e:#}");
        return ExitCode::from(EXIT_FAILED);
    }
    // Before the HTTP server answers ready: an event published once the
    // gateway is ready is delivered, whenever the groups' runtimes start.
    if let Err(e) = place_new_groups(&cli.runtime, &base_group, &routes).await {
        eprintln!("error: start positions: {e:#}");
        return ExitCode::from(EXIT_FAILED);
    }
    let table = RouteTable::new(routes);
    let feed = LiveFeed::new(cli.live_buffer.max(1));
    let spec = ConsumerSpec {
        default_group: DEFAULT_GROUP,
        default_port: DEFAULT_PORT,
    };
    let args = cli.runtime.clone();
    let args_for_runtime = cli.runtime.clone();
    let handler = LiveHandler::new(feed.clone());
    let extend = move |runtime: &opal_consumers::Runtime<LiveHandler>,
                       supervisor: &opal_consumers::supervisor::Supervisor|
          -> anyhow::Result<axum::Router> {
        let registry = runtime.metrics().registry;
        let metrics = GatewayMetrics::new(&registry)?;
        let registries = RouteRegistries::default();
        registry.register(Box::new(registries.clone()))?;
        let routes = RouteSupervisor {
            args: args.clone(),
            base_group: base_group.clone(),
            table: table.clone(),
            metrics: metrics.clone(),
            registries,
            cancel: supervisor.cancelled(),
        };
        supervisor.spawn("routes", routes.run());
        let status = ReloadStatus::default();
        let reloader = Reloader {
            path: cli.routes.clone(),
            args: args.clone(),
            base_group: base_group.clone(),
            table: table.clone(),
            metrics,
            status: status.clone(),
        };
        supervisor.spawn("reload", reloader.on_sighup(supervisor.cancelled()));
        let push = crate::ws::start(
            &args,
            &feed,
            table.clone(),
            &cli.ws.settings(),
            &registry,
            supervisor,
        )?;
        Ok(push.merge(crate::status::router(table.clone(), status)))
    };
    run_consumer(handler, args_for_runtime, spec, extend).await
}
