//! The typed events: one struct per topic, each carrying the envelope.
//!
//! Field names and types mirror `schemas/avro/*.avsc` exactly; `tests/drift.rs`
//! fails if the two disagree.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Deployment environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Development,
    Staging,
    Production,
}

impl Environment {
    pub const ALL: [Environment; 3] = [
        Environment::Development,
        Environment::Staging,
        Environment::Production,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Development => "development",
            Environment::Staging => "staging",
            Environment::Production => "production",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Environment {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Environment::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| {
                format!("unknown environment '{s}': expected development, staging or production")
            })
    }
}

/// The envelope's field names, in schema order.
pub const ENVELOPE_FIELDS: [&str; 6] = [
    "event_id",
    "correlation_id",
    "schema_version",
    "timestamp",
    "source_system",
    "environment",
];

/// Fields every event carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub event_id: String,
    pub correlation_id: String,
    pub schema_version: i32,
    /// Event time, milliseconds since the epoch.
    pub timestamp: i64,
    pub source_system: String,
    pub environment: Environment,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowStarted {
    #[serde(flatten)]
    pub envelope: Envelope,
    pub workflow_id: String,
    pub session_id: String,
    pub client_name: String,
    pub workflow_name: String,
    pub preferences: BTreeMap<String, String>,
    pub estimated_duration_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionStatus {
    Success,
    Failure,
    Timeout,
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentData {
    pub recommendations: Vec<String>,
    pub confidence_score: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentCompleted {
    #[serde(flatten)]
    pub envelope: Envelope,
    pub workflow_id: String,
    pub agent_id: String,
    /// The agent's position in the workflow.
    pub offset: i32,
    pub execution_status: ExecutionStatus,
    pub processing_time_ms: i64,
    pub agent_data: AgentData,
    pub error: Option<String>,
    /// Added in schema version 2; absent (None) in data written with version 1.
    #[serde(default)]
    pub model_version: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkflowStatus {
    Success,
    Failure,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowCompleted {
    #[serde(flatten)]
    pub envelope: Envelope,
    pub workflow_id: String,
    pub client_name: String,
    pub status: WorkflowStatus,
    pub total_duration_ms: i64,
    pub agents_total: i32,
    pub agents_failed: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    pub recommendation_id: String,
    pub category: String,
    pub text: String,
    pub confidence: f64,
    pub impact_score: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionGenerated {
    #[serde(flatten)]
    pub envelope: Envelope,
    pub decision_id: String,
    pub workflow_id: String,
    pub client_name: String,
    pub model_version: String,
    pub recommendations: Vec<Recommendation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnowledgeUpserted {
    #[serde(flatten)]
    pub envelope: Envelope,
    pub knowledge_id: String,
    pub client_name: String,
    pub kind: String,
    pub content_hash: String,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionDegraded {
    #[serde(flatten)]
    pub envelope: Envelope,
    pub scope: String,
    pub client_name: Option<String>,
    pub metric: String,
    pub observed: f64,
    pub threshold: f64,
    pub window_start: i64,
    pub window_end: i64,
    pub sample_size: i64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserPreferencesUpdated {
    #[serde(flatten)]
    pub envelope: Envelope,
    pub client_name: String,
    pub preferred_categories: Vec<String>,
    pub excluded_categories: Vec<String>,
    pub min_confidence: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackSubmitted {
    #[serde(flatten)]
    pub envelope: Envelope,
    pub feedback_id: String,
    pub decision_id: String,
    pub recommendation_id: String,
    pub client_name: String,
    /// 1 (worst) to 5 (best).
    pub rating: i32,
    pub accepted: bool,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecastPoint {
    pub timestamp: i64,
    pub value: f64,
    pub lower: f64,
    pub upper: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecastGenerated {
    #[serde(flatten)]
    pub envelope: Envelope,
    pub forecast_id: String,
    pub series: String,
    pub model: String,
    pub bucket_ms: i64,
    pub generated_at: i64,
    pub points: Vec<ForecastPoint>,
    pub mae: Option<f64>,
}
