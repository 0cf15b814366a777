//! Publisher configuration: flags with environment fallbacks.

use std::time::Duration;

use clap::Args;
use opal_schemas::Environment;
use opal_topics::{KafkaArgs, RegistryArgs};

#[derive(Debug, Clone, Args)]
pub struct PublisherConfig {
    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub registry: RegistryArgs,

    /// Environment stamped on every event.
    #[arg(long = "env", env = "OPAL_ENV", default_value = "development")]
    pub environment: Environment,

    /// `source_system` stamped on events that do not name one.
    #[arg(long, env = "OPAL_SOURCE_SYSTEM", default_value = "opal-producer")]
    pub source_system: String,

    /// Prefix of every topic name (must match the one kafka-init used).
    #[arg(long, env = "OPAL_TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,

    /// Register our schema when its subject lacks it, instead of failing.
    #[arg(long, env = "OPAL_AUTO_REGISTER")]
    pub auto_register: bool,

    /// How long a message may wait for its delivery report, in milliseconds.
    #[arg(long, env = "OPAL_DELIVERY_TIMEOUT_MS", default_value_t = 30_000)]
    pub delivery_timeout_ms: u64,
}

impl PublisherConfig {
    /// Settings for the local stack (tests and examples).
    pub fn local(brokers: &str, registry_url: &str) -> Self {
        PublisherConfig {
            kafka: KafkaArgs::local(brokers),
            registry: RegistryArgs {
                url: registry_url.to_owned(),
                username: None,
                password: None,
            },
            environment: Environment::Development,
            source_system: "opal-producer".to_owned(),
            topic_prefix: String::new(),
            auto_register: false,
            delivery_timeout_ms: 30_000,
        }
    }

    pub fn delivery_timeout(&self) -> Duration {
        Duration::from_millis(self.delivery_timeout_ms)
    }
}
