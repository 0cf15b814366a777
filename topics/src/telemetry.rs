//! Logging set-up shared by the binaries: one flag group, one subscriber.

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The log flags of every opal binary (opal-registry keeps its own: that
/// crate stays free of the Kafka client's dependencies).
#[derive(Debug, Clone, Default, Args)]
pub struct LogArgs {
    /// Log output format: text, or json for log shippers (`RUST_LOG` filters).
    #[arg(
        id = "log_format",
        long = "log-format",
        env = "OPAL_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub format: LogFormat,
}

impl LogArgs {
    /// Installs the tracing subscriber for these flags.
    pub fn init(&self) {
        init_tracing(self.format);
    }
}

/// Installs the tracing subscriber: `RUST_LOG` filters (default `info`), logs go to stderr.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
