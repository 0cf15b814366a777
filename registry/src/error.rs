//! Errors in Confluent's shape: an HTTP status plus `{"error_code", "message"}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// Every failure the API can answer with. The message texts follow Confluent's.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    #[error("Version {0} not found.")]
    VersionNotFound(String),
    #[error("{0}")]
    SchemaNotFound(String),
    #[error("Subject '{0}' was soft deleted.Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    #[error("Subject '{0}' Version {1} was soft deleted.Set permanent=true to delete permanently")]
    VersionSoftDeleted(String, u32),
    #[error("Subject '{0}' Version {1} was not deleted first before being permanently deleted")]
    VersionNotSoftDeleted(String, u32),
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectCompatibilityNotConfigured(String),
    #[error(
        "Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]",
        .messages.join(", ")
    )]
    Incompatible {
        subject: String,
        messages: Vec<String>,
    },
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    #[error(
        "The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
    )]
    InvalidVersion(String),
    #[error(
        "Invalid compatibility level '{0}'. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive"
    )]
    InvalidCompatibilityLevel(String),
    #[error("Error in the backend data store - {0}")]
    Store(String),
    #[error("{1}")]
    Http(StatusCode, String),
}

impl RegistryError {
    /// Confluent's (status, error_code) for this error.
    pub fn codes(&self) -> (StatusCode, u32) {
        use RegistryError::*;
        match self {
            SubjectNotFound(_) => (StatusCode::NOT_FOUND, 40401),
            VersionNotFound(_) => (StatusCode::NOT_FOUND, 40402),
            SchemaNotFound(_) => (StatusCode::NOT_FOUND, 40403),
            SubjectSoftDeleted(_) => (StatusCode::NOT_FOUND, 40404),
            SubjectNotSoftDeleted(_) => (StatusCode::NOT_FOUND, 40405),
            VersionSoftDeleted(..) => (StatusCode::NOT_FOUND, 40406),
            VersionNotSoftDeleted(..) => (StatusCode::NOT_FOUND, 40407),
            SubjectCompatibilityNotConfigured(_) => (StatusCode::NOT_FOUND, 40408),
            Incompatible { .. } => (StatusCode::CONFLICT, 409),
            InvalidSchema(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42201),
            InvalidVersion(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42202),
            InvalidCompatibilityLevel(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42203),
            Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, 50001),
            Http(status, _) => (*status, u32::from(status.as_u16())),
        }
    }

    pub(crate) fn http(status: StatusCode, message: impl Into<String>) -> Self {
        RegistryError::Http(status, message.into())
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (status, error_code) = self.codes();
        if status.is_server_error() {
            tracing::error!(error_code, error = %self, "request failed");
        } else {
            tracing::debug!(error_code, error = %self, "request refused");
        }
        let body = serde_json::json!({ "error_code": error_code, "message": self.to_string() });
        (status, axum::Json(body)).into_response()
    }
}
