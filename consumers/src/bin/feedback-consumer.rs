//! feedback-consumer: acceptance per category and client, degraded alerts, and
//! category exclusions after repeated rejections.

use clap::Parser;
use opal_consumers::RuntimeArgs;
use opal_consumers::apps::clock::SystemClock;
use opal_consumers::apps::feedback::{FeedbackHandler, FeedbackSettings, namespace};
use opal_consumers::serve::{ConsumerSpec, run_consumer};

/// mimalloc instead of glibc's malloc: the event path allocates per event
/// (README, Performance).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "feedback-consumer", version, about = "The feedback loop")]
struct Cli {
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Tumbling window, in seconds.
    #[arg(long, env = "OPAL_FEEDBACK_WINDOW_SECS", default_value_t = 3600)]
    window_secs: i64,
    /// Acceptance below this raises opal.decision.degraded.
    #[arg(long, env = "OPAL_FEEDBACK_THRESHOLD", default_value_t = 0.3)]
    threshold: f64,
    /// Samples a window needs before it can alert.
    #[arg(long, env = "OPAL_FEEDBACK_MIN_SAMPLES", default_value_t = 20)]
    min_samples: i64,
    /// Consecutive rejections of a category by a client that exclude it.
    #[arg(long, env = "OPAL_FEEDBACK_REJECTIONS", default_value_t = 5)]
    rejections: i64,
    /// How long a decision is kept for joining feedback to it, in seconds.
    #[arg(long, env = "OPAL_FEEDBACK_JOIN_TTL_SECS", default_value_t = 3600)]
    join_ttl_secs: i64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let settings = FeedbackSettings {
        window_ms: cli.window_secs * 1000,
        threshold: cli.threshold,
        min_samples: cli.min_samples,
        rejections_to_exclude: cli.rejections,
        join_ttl_ms: cli.join_ttl_secs * 1000,
    };
    let ns = namespace(&cli.runtime.topic_prefix);
    let handler = FeedbackHandler {
        settings,
        clock: Box::new(SystemClock),
        ns,
    };
    let spec = ConsumerSpec {
        default_group: "opal-feedback",
        default_port: 9103,
    };
    run_consumer(handler, cli.runtime, spec, |_, _| Ok(axum::Router::new())).await
}
