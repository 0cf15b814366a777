//! Command-line and environment configuration of the server.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A Confluent-compatible Schema Registry (AVRO) for local runs and tests.
#[derive(Debug, Clone, Parser)]
#[command(name = "opal-registry", version)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "OPAL_REGISTRY_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: String,

    /// Directory holding the registry's snapshot; created if missing.
    #[arg(
        long,
        env = "OPAL_REGISTRY_DATA_DIR",
        default_value = "opal-registry-data"
    )]
    pub data_dir: PathBuf,

    /// Keep everything in memory only: nothing survives a restart.
    #[arg(long, env = "OPAL_REGISTRY_IN_MEMORY", conflicts_with = "data_dir")]
    pub in_memory: bool,

    /// Require HTTP basic auth with these credentials, given as `user:password`.
    #[arg(long, env = "OPAL_REGISTRY_BASIC_AUTH", hide_env_values = true)]
    pub basic_auth: Option<String>,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "OPAL_REGISTRY_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Log output format.
    #[arg(long, env = "OPAL_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}
