//! A small client for the Confluent Schema Registry REST API.
//!
//! Hand-written over reqwest rather than schema_registry_converter's client
//! because provisioning needs what that client does not expose: verbose
//! compatibility answers, per-subject config, and errors that tell "registry
//! down" (retry, pause) from "schema id unknown" (dead-letter) by type.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;

use crate::secret::redact_url_password;

/// How to reach the registry. Credentials are never printed.
#[derive(Clone)]
pub struct RegistryConfig {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub timeout: Duration,
}

impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("url", &redact_url_password(&self.url))
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl RegistryConfig {
    pub fn new(url: impl Into<String>) -> Self {
        RegistryConfig {
            url: url.into(),
            username: None,
            password: None,
            timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Connection refused, timeout or a 5xx: worth retrying, never worth caching.
    #[error("schema registry at {url} unavailable: {reason}")]
    Unavailable { url: String, reason: String },
    #[error("schema registry refused the credentials (HTTP {status})")]
    Unauthorized { status: u16 },
    /// A 4xx with Confluent's error code (40401 subject, 40402 version, 40403 schema, 409, 422xx).
    #[error("schema registry answered {status} (error {code}): {message}")]
    Rejected {
        status: u16,
        code: u32,
        message: String,
    },
    #[error("schema registry sent an unexpected answer: {0}")]
    Protocol(String),
}

impl RegistryError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, RegistryError::Unavailable { .. })
    }

    /// Confluent's error code, when the registry gave one.
    pub fn code(&self) -> Option<u32> {
        match self {
            RegistryError::Rejected { code, .. } => Some(*code),
            _ => None,
        }
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// One version of a subject.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema: String,
}

#[derive(Debug, Clone)]
pub struct RegistryClient {
    config: RegistryConfig,
    base: String,
    /// `base` as printed: credentials in the URL are redacted.
    shown: String,
    http: reqwest::Client,
}

const MEDIA: &str = "application/vnd.schemaregistry.v1+json";

impl RegistryClient {
    pub fn new(config: RegistryConfig) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(3)))
            .build()
            .map_err(|e| RegistryError::Protocol(format!("cannot build HTTP client: {e}")))?;
        let base = config.url.trim_end_matches('/').to_owned();
        let shown = redact_url_password(&base);
        Ok(RegistryClient {
            config,
            base,
            shown,
            http,
        })
    }

    /// The registry's URL as it may be printed (any password redacted).
    pub fn url(&self) -> &str {
        &self.shown
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("Accept", MEDIA);
        if let Some(user) = &self.config.username {
            request = request.basic_auth(user, self.config.password.as_deref());
        }
        if let Some(body) = body {
            request = request.header("Content-Type", MEDIA).body(body.to_string());
        }
        let unavailable = |reason: String| RegistryError::Unavailable {
            url: self.shown.clone(),
            reason,
        };
        let response = request
            .send()
            .await
            .map_err(|e| unavailable(without_url(&e)))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| unavailable(without_url(&e)))?;
        if status.is_success() {
            return serde_json::from_str(&text)
                .map_err(|e| RegistryError::Protocol(format!("{path}: {e}")));
        }
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(unavailable(format!("HTTP {status}: {}", truncate(&text))));
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(RegistryError::Unauthorized {
                status: status.as_u16(),
            });
        }
        #[derive(Deserialize)]
        struct ErrorBody {
            error_code: u32,
            message: String,
        }
        let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(e) => (e.error_code, e.message),
            Err(_) => (u32::from(status.as_u16()), truncate(&text)),
        };
        Err(RegistryError::Rejected {
            status: status.as_u16(),
            code,
            message,
        })
    }

    /// The schema text registered under `id`.
    pub async fn schema_by_id(&self, id: u32) -> Result<String> {
        let body = self
            .call(reqwest::Method::GET, &format!("/schemas/ids/{id}"), None)
            .await?;
        body["schema"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| RegistryError::Protocol(format!("no schema in answer for id {id}")))
    }

    /// The version of `subject` holding `schema`, if registered there.
    pub async fn lookup(&self, subject: &str, schema: &str) -> Result<Option<SubjectVersion>> {
        let path = format!("/subjects/{}", encode(subject));
        match self
            .call(
                reqwest::Method::POST,
                &path,
                Some(json!({ "schema": schema })),
            )
            .await
        {
            Ok(body) => parse(body).map(Some),
            Err(e) if matches!(e.code(), Some(40401 | 40403)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Registers `schema` under `subject`, returning its id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32> {
        let path = format!("/subjects/{}/versions", encode(subject));
        let body = self
            .call(
                reqwest::Method::POST,
                &path,
                Some(json!({ "schema": schema })),
            )
            .await?;
        body["id"]
            .as_u64()
            .map(|id| id as u32)
            .ok_or_else(|| RegistryError::Protocol("no id in registration answer".to_owned()))
    }

    /// Why `schema` is incompatible with `subject` under its configured level;
    /// empty when compatible or when the subject does not exist yet.
    pub async fn incompatibilities(&self, subject: &str, schema: &str) -> Result<Vec<String>> {
        let path = format!(
            "/compatibility/subjects/{}/versions?verbose=true",
            encode(subject)
        );
        match self
            .call(
                reqwest::Method::POST,
                &path,
                Some(json!({ "schema": schema })),
            )
            .await
        {
            Ok(body) if body["is_compatible"].as_bool() == Some(true) => Ok(Vec::new()),
            Ok(body) => {
                let mut messages: Vec<String> = body["messages"]
                    .as_array()
                    .map(|m| {
                        m.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                if messages.is_empty() {
                    messages.push("incompatible (the registry gave no details)".to_owned());
                }
                Ok(messages)
            }
            Err(e) if e.code() == Some(40401) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The subject's own compatibility level, if it has one.
    pub async fn subject_compatibility(&self, subject: &str) -> Result<Option<String>> {
        let path = format!("/config/{}", encode(subject));
        match self.call(reqwest::Method::GET, &path, None).await {
            Ok(body) => Ok(body["compatibilityLevel"].as_str().map(str::to_owned)),
            Err(e) if matches!(e.code(), Some(40401 | 40408)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn set_subject_compatibility(&self, subject: &str, level: &str) -> Result<()> {
        let path = format!("/config/{}", encode(subject));
        self.call(
            reqwest::Method::PUT,
            &path,
            Some(json!({ "compatibility": level })),
        )
        .await?;
        Ok(())
    }

    pub async fn subjects(&self) -> Result<Vec<String>> {
        let body = self.call(reqwest::Method::GET, "/subjects", None).await?;
        serde_json::from_value(body).map_err(|e| RegistryError::Protocol(e.to_string()))
    }

    pub async fn versions(&self, subject: &str) -> Result<Vec<u32>> {
        let path = format!("/subjects/{}/versions", encode(subject));
        let body = self.call(reqwest::Method::GET, &path, None).await?;
        serde_json::from_value(body).map_err(|e| RegistryError::Protocol(e.to_string()))
    }

    pub async fn version(&self, subject: &str, version: &str) -> Result<SubjectVersion> {
        let path = format!("/subjects/{}/versions/{version}", encode(subject));
        parse(self.call(reqwest::Method::GET, &path, None).await?)
    }

    /// Cheap reachability check (`GET /subjects`).
    pub async fn ping(&self) -> Result<()> {
        self.call(reqwest::Method::GET, "/subjects", None)
            .await
            .map(|_| ())
    }
}

fn parse(body: serde_json::Value) -> Result<SubjectVersion> {
    serde_json::from_value(body).map_err(|e| RegistryError::Protocol(e.to_string()))
}

fn truncate(text: &str) -> String {
    text.chars().take(200).collect()
}

/// A reqwest error's text without the URL, which may carry credentials.
fn without_url(e: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut deepest = e.to_string();
    while let Some(s) = source {
        deepest = s.to_string();
        source = s.source();
    }
    if e.is_timeout() {
        format!("timed out ({deepest})")
    } else {
        deepest
    }
}

/// Percent-encodes a subject for use in a path segment.
fn encode(subject: &str) -> String {
    let mut out = String::with_capacity(subject.len());
    for b in subject.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
