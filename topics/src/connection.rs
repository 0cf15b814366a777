//! Kafka connection settings shared by every binary, turned into an rdkafka
//! `ClientConfig` in one place.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use rdkafka::ClientConfig;
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;
use rdkafka::types::RDKafkaErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("invalid --kafka-option '{0}': expected key=value")]
    MalformedOption(String),
    #[error(
        "--kafka-option {0} conflicts with a setting opal derives itself; use the dedicated flag"
    )]
    ConflictingOption(String),
    #[error("KAFKA_PASSWORD is set but KAFKA_USERNAME is not")]
    PasswordWithoutUser,
    #[error("cannot create a Kafka client: {0}")]
    Client(#[source] rdkafka::error::KafkaError),
    /// The brokers answered but refused the credentials or the TLS handshake:
    /// retrying will not help, so this is reported at once.
    #[error(
        "Kafka at {brokers} refused the connection: {reason} (check KAFKA_USERNAME, KAFKA_PASSWORD, KAFKA_SASL_MECHANISM and KAFKA_SSL_CA_LOCATION)"
    )]
    Refused { brokers: String, reason: String },
    #[error("broker metadata from {brokers} not available within {timeout:?}: {source}")]
    Unreachable {
        brokers: String,
        timeout: Duration,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("metadata task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// How to reach the Kafka cluster. Credentials switch on SASL_SSL.
#[derive(Clone, Args)]
pub struct KafkaArgs {
    /// Bootstrap brokers, comma-separated host:port.
    #[arg(
        long = "brokers",
        env = "KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,

    /// SASL username; setting it switches the connection to SASL_SSL.
    #[arg(id = "kafka_username", long = "kafka-username", env = "KAFKA_USERNAME")]
    pub username: Option<String>,

    /// SASL password.
    #[arg(
        long = "kafka-password",
        env = "KAFKA_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,

    /// SASL mechanism used with credentials.
    #[arg(
        long = "kafka-sasl-mechanism",
        env = "KAFKA_SASL_MECHANISM",
        default_value = "SCRAM-SHA-512"
    )]
    pub sasl_mechanism: String,

    /// CA certificate (PEM) used to verify the brokers' TLS certificates.
    #[arg(long = "kafka-ssl-ca-location", env = "KAFKA_SSL_CA_LOCATION")]
    pub ssl_ca_location: Option<String>,

    /// Extra librdkafka setting as key=value; may be repeated.
    #[arg(long = "kafka-option", value_name = "KEY=VALUE")]
    pub options: Vec<String>,
}

impl std::fmt::Debug for KafkaArgs {
    // The password never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaArgs")
            .field("brokers", &self.brokers)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("ssl_ca_location", &self.ssl_ca_location)
            .field("options", &self.options)
            .finish()
    }
}

/// Settings opal derives from the typed flags; the raw pass-through may not override them.
const DERIVED_KEYS: [&str; 6] = [
    "bootstrap.servers",
    "security.protocol",
    "sasl.mechanism",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
];

impl KafkaArgs {
    /// Settings for the local stack (tests and examples).
    pub fn local(brokers: impl Into<String>) -> Self {
        KafkaArgs {
            brokers: brokers.into(),
            username: None,
            password: None,
            sasl_mechanism: "SCRAM-SHA-512".to_owned(),
            ssl_ca_location: None,
            options: Vec::new(),
        }
    }

    /// The rdkafka configuration every opal client starts from.
    pub fn client_config(&self) -> Result<ClientConfig, ConnectionError> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        match (&self.username, &self.password) {
            (Some(user), password) => {
                config
                    .set("security.protocol", "SASL_SSL")
                    .set("sasl.mechanism", &self.sasl_mechanism)
                    .set("sasl.username", user)
                    .set("sasl.password", password.as_deref().unwrap_or(""));
            }
            (None, Some(_)) => return Err(ConnectionError::PasswordWithoutUser),
            (None, None) => {}
        }
        if let Some(ca) = &self.ssl_ca_location {
            if self.username.is_none() {
                config.set("security.protocol", "SSL");
            }
            config.set("ssl.ca.location", ca);
        }
        for option in &self.options {
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| ConnectionError::MalformedOption(option.clone()))?;
            let key = key.trim();
            if DERIVED_KEYS.contains(&key) {
                return Err(ConnectionError::ConflictingOption(key.to_owned()));
            }
            config.set(key, value.trim());
        }
        Ok(config)
    }

    /// Fetches cluster metadata: (broker count, topic names). Runs the blocking
    /// librdkafka call off the async workers.
    pub async fn fetch_metadata(
        &self,
        timeout: Duration,
    ) -> Result<(usize, Vec<String>), ConnectionError> {
        let metadata = self.cluster_metadata(timeout).await?;
        let topics = metadata
            .topics()
            .iter()
            .map(|t| t.name().to_owned())
            .collect();
        Ok((metadata.brokers().len(), topics))
    }

    /// Metadata of every broker and topic, fetched off the async workers.
    /// Wrong credentials or an untrusted certificate fail at once
    /// ([`ConnectionError::Refused`]), not when the timeout runs out.
    pub async fn cluster_metadata(&self, timeout: Duration) -> Result<Metadata, ConnectionError> {
        let context = RefusalWatch::default();
        let consumer: BaseConsumer<RefusalWatch> = self
            .client_config()?
            .create_with_context(context.clone())
            .map_err(ConnectionError::Client)?;
        let brokers = self.brokers.clone();
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + timeout;
            loop {
                // Short requests, so a refusal reported meanwhile ends the wait.
                let left = deadline.saturating_duration_since(Instant::now());
                match consumer.fetch_metadata(None, left.min(Duration::from_millis(500))) {
                    Ok(metadata) => return Ok(metadata),
                    Err(source) => {
                        // A consumer hands librdkafka's global errors back from poll.
                        while let Some(Err(error)) = consumer.poll(Duration::ZERO) {
                            if is_refusal(&error) {
                                let reason = context.refusal().unwrap_or_else(|| error.to_string());
                                return Err(ConnectionError::Refused { brokers, reason });
                            }
                        }
                        if Instant::now() >= deadline {
                            return Err(ConnectionError::Unreachable {
                                brokers,
                                timeout,
                                source,
                            });
                        }
                    }
                }
            }
        })
        .await?
    }

    /// Which of `partitions` (topic, partition) their leader does not serve
    /// yet: right after CreateTopics the metadata may name a partition's
    /// leader before that broker has taken the partition on, and it answers
    /// "not leader" to reads meanwhile. Asked with ListOffsets.
    pub async fn not_yet_served(
        &self,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<(String, i32)>, ConnectionError> {
        let consumer: BaseConsumer = self
            .client_config()?
            .create()
            .map_err(ConnectionError::Client)?;
        Ok(tokio::task::spawn_blocking(move || {
            partitions
                .into_iter()
                .filter(|(topic, partition)| {
                    consumer
                        .fetch_watermarks(topic, *partition, Duration::from_secs(2))
                        .is_err()
                })
                .collect()
        })
        .await?)
    }
}

/// A client context that keeps librdkafka's own words for the last error it
/// logged, so a refusal (wrong credentials, untrusted certificate) is reported
/// with its reason; librdkafka only logs these and keeps retrying.
#[derive(Clone, Default)]
pub struct RefusalWatch {
    last_error: Arc<Mutex<Option<String>>>,
}

impl RefusalWatch {
    /// librdkafka's last error-level log line, the reason behind a refusal.
    pub fn refusal(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Whether a global librdkafka error means the brokers refuse our
/// credentials or our TLS settings: retrying cannot succeed.
pub fn is_refusal(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::SSL
        )
    )
}

impl ClientContext for RefusalWatch {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if matches!(
            level,
            RDKafkaLogLevel::Emerg
                | RDKafkaLogLevel::Alert
                | RDKafkaLogLevel::Critical
                | RDKafkaLogLevel::Error
        ) {
            *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(log_message.to_owned());
        }
        DefaultClientContext.log(level, fac, log_message);
    }
}

impl ConsumerContext for RefusalWatch {}

/// The partition ids of `topic`; empty when it does not exist. Blocking.
pub fn topic_partitions<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, rdkafka::error::KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    Ok(metadata
        .topics()
        .first()
        .filter(|t| t.error().is_none())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default())
}

/// How to reach the Schema Registry.
#[derive(Clone, Args)]
pub struct RegistryArgs {
    /// Schema Registry URL (credentials in it, `http://user:password@host`,
    /// are sent as basic auth).
    #[arg(
        id = "schema_registry_url",
        long = "schema-registry-url",
        env = "SCHEMA_REGISTRY_URL",
        default_value = "http://127.0.0.1:8081",
        hide_env_values = true
    )]
    pub url: String,

    /// Schema Registry basic-auth user.
    #[arg(
        id = "schema_registry_username",
        long = "schema-registry-username",
        env = "SCHEMA_REGISTRY_USERNAME"
    )]
    pub username: Option<String>,

    /// Schema Registry basic-auth password.
    #[arg(
        id = "schema_registry_password",
        long = "schema-registry-password",
        env = "SCHEMA_REGISTRY_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
}

impl std::fmt::Debug for RegistryArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryArgs")
            .field("url", &opal_schemas::redact_url_password(&self.url))
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl RegistryArgs {
    pub fn client(
        &self,
        timeout: Duration,
    ) -> Result<opal_schemas::RegistryClient, opal_schemas::RegistryError> {
        opal_schemas::RegistryClient::new(opal_schemas::RegistryConfig {
            url: self.url.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
            timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_switch_on_sasl_ssl() {
        let mut args = KafkaArgs::local("b:9092");
        args.username = Some("svc".into());
        args.password = Some("pw".into());
        let config = args.client_config().expect("config");
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert!(
            !format!("{args:?}").contains("pw"),
            "password redacted in Debug"
        );
    }

    #[test]
    fn plain_without_credentials() {
        let config = KafkaArgs::local("b:9092").client_config().expect("config");
        assert_eq!(config.get("security.protocol"), None);
        assert_eq!(config.get("bootstrap.servers"), Some("b:9092"));
    }

    #[test]
    fn raw_options_pass_through_but_cannot_override_derived_ones() {
        let mut args = KafkaArgs::local("b:9092");
        args.options = vec!["socket.timeout.ms=5000".into()];
        assert_eq!(
            args.client_config().expect("ok").get("socket.timeout.ms"),
            Some("5000")
        );
        args.options = vec!["bootstrap.servers=elsewhere:9092".into()];
        assert!(matches!(
            args.client_config(),
            Err(ConnectionError::ConflictingOption(_))
        ));
        args.options = vec!["no-equals".into()];
        assert!(matches!(
            args.client_config(),
            Err(ConnectionError::MalformedOption(_))
        ));
    }

    #[test]
    fn password_without_user_is_refused() {
        let mut args = KafkaArgs::local("b:9092");
        args.password = Some("pw".into());
        assert!(matches!(
            args.client_config(),
            Err(ConnectionError::PasswordWithoutUser)
        ));
    }
}
