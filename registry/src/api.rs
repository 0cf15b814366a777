//! The HTTP API: Confluent's paths, bodies, content types and error shapes.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::compat::CompatibilityLevel;
use crate::config::{Config, LogFormat};
use crate::error::{RegistryError, Result};
use crate::openapi;
use crate::store::{ParsedSchema, Store, VersionSelector};

const V1_JSON: &str = "application/vnd.schemaregistry.v1+json";
const SR_JSON: &str = "application/vnd.schemaregistry+json";
const PLAIN_JSON: &str = "application/json";
/// Request bodies Confluent accepts; responses use the first three.
const ACCEPTED_BODY_TYPES: [&str; 4] = [V1_JSON, SR_JSON, PLAIN_JSON, "application/octet-stream"];

/// Credentials required by the server, from `user:password`.
#[derive(Clone)]
pub struct BasicAuth {
    expected_header: String,
}

impl BasicAuth {
    pub fn parse(user_colon_password: &str) -> anyhow::Result<Self> {
        if !user_colon_password.contains(':') {
            anyhow::bail!("basic auth must be given as user:password");
        }
        let encoded = base64::engine::general_purpose::STANDARD.encode(user_colon_password);
        Ok(BasicAuth {
            expected_header: format!("Basic {encoded}"),
        })
    }
}

// Never print the credentials.
impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BasicAuth(<redacted>)")
    }
}

pub(crate) type Shared = Arc<Store>;

/// The registry's routes over `store`, and its OpenAPI document at `/openapi.json`.
pub fn router(store: Arc<Store>, auth: Option<BasicAuth>, max_body_bytes: usize) -> Router {
    let document = openapi::document(auth.is_some());
    let api = routes()
        .into_iter()
        .fold(Router::new(), |router, (path, methods)| {
            router.route(path, methods)
        })
        .fallback(|| async { RegistryError::http(StatusCode::NOT_FOUND, "HTTP 404 Not Found") })
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(auth, authenticate))
        .layer(middleware::from_fn(negotiate))
        .with_state(store);
    // After the auth and negotiation layers: the document is served without
    // credentials (it holds no data, and tools read it before they have any),
    // always as application/json.
    api.route(
        openapi::PATH,
        get(move || async move { ([(header::CONTENT_TYPE, PLAIN_JSON)], document.clone()) })
            .fallback(method_not_allowed),
    )
    .layer(middleware::from_fn(log))
}

async fn method_not_allowed() -> RegistryError {
    RegistryError::http(
        StatusCode::METHOD_NOT_ALLOWED,
        "HTTP 405 Method Not Allowed",
    )
}

/// Every API route; openapi.json describes exactly these (a unit test checks).
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<Shared>)> {
    vec![
        ("/", get(|| async { Json(json!({})) })),
        ("/schemas/types", get(|| async { Json(json!(["AVRO"])) })),
        ("/schemas/ids/{id}", get(schema_by_id)),
        ("/schemas/ids/{id}/schema", get(raw_schema_by_id)),
        ("/schemas/ids/{id}/versions", get(id_versions)),
        ("/subjects", get(list_subjects)),
        ("/subjects/{subject}", post(lookup).delete(delete_subject)),
        (
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        ),
        (
            "/subjects/{subject}/versions/{version}",
            get(get_version).delete(delete_version),
        ),
        (
            "/subjects/{subject}/versions/{version}/schema",
            get(raw_version_schema),
        ),
        (
            "/subjects/{subject}/versions/{version}/referencedby",
            get(referenced_by),
        ),
        (
            "/compatibility/subjects/{subject}/versions",
            post(compat_all),
        ),
        (
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compat_version),
        ),
        ("/config", get(get_global_config).put(put_global_config)),
        (
            "/config/{subject}",
            get(get_subject_config)
                .put(put_subject_config)
                .delete(delete_subject_config),
        ),
        ("/mode", get(mode)),
        ("/mode/{subject}", get(mode)),
    ]
}

/// Binds `listen` and serves `app` in the background; returns the bound address.
pub async fn spawn(listen: &str, app: Router) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "server stopped");
        }
    });
    Ok((addr, handle))
}

/// Runs the server described by `config` until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    init_tracing(config.log_format);
    let store = if config.in_memory {
        Store::in_memory()
    } else {
        Store::open(&config.data_dir)?
    };
    let auth = config
        .basic_auth
        .as_deref()
        .map(BasicAuth::parse)
        .transpose()?;
    let app = router(Arc::new(store), auth.clone(), config.max_body_bytes);
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        data_dir = %config.data_dir.display(),
        in_memory = config.in_memory,
        basic_auth = auth.is_some(),
        "opal-registry listening"
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("opal-registry stopped");
    Ok(())
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

// ---- middleware ----

async fn authenticate(
    State(auth): State<Option<BasicAuth>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(auth) = auth {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given != Some(auth.expected_header.as_str()) {
            let mut response =
                RegistryError::http(StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"opal-registry\""),
            );
            return response;
        }
    }
    next.run(request).await
}

/// Answers JSON in the media type the client asked for.
async fn negotiate(request: Request, next: Next) -> Response {
    let answer_type = response_type(request.headers());
    let mut response = next.run(request).await;
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(answer_type));
    }
    response
}

async fn log(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    tracing::info!(
        %method,
        path,
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}

fn response_type(headers: &HeaderMap) -> &'static str {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    [V1_JSON, SR_JSON, PLAIN_JSON]
        .into_iter()
        .find(|t| accept.split(',').any(|part| part.trim().starts_with(t)))
        .unwrap_or(V1_JSON)
}

// ---- extractors that answer in Confluent's error shape ----

/// A JSON body in one of the accepted media types.
struct SrJson<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for SrJson<T> {
    type Rejection = RegistryError;

    async fn from_request(req: Request, state: &S) -> Result<Self> {
        if let Some(content_type) = req.headers().get(header::CONTENT_TYPE) {
            let content_type = content_type.to_str().unwrap_or("");
            let essence = content_type.split(';').next().unwrap_or("").trim();
            if !ACCEPTED_BODY_TYPES
                .iter()
                .any(|t| t.eq_ignore_ascii_case(essence))
            {
                return Err(RegistryError::http(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!("HTTP 415 Unsupported Media Type: {content_type}"),
                ));
            }
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| RegistryError::http(rejection.status(), rejection.body_text()))?;
        serde_json::from_slice(&bytes).map(SrJson).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Data => RegistryError::http(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("Unprocessable request body: {e}"),
                ),
                _ => RegistryError::http(
                    StatusCode::BAD_REQUEST,
                    format!("Malformed JSON request body: {e}"),
                ),
            }
        })
    }
}

/// Query parameters; a malformed one is a 400, not a panic.
struct Params<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Params<T> {
    type Rejection = RegistryError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Params(q))
            .map_err(|r| RegistryError::http(StatusCode::BAD_REQUEST, r.body_text()))
    }
}

/// Path parameters; one that does not parse (e.g. a non-numeric id) is a 404.
struct PathOf<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathOf<T> {
    type Rejection = RegistryError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| PathOf(p))
            .map_err(|_| RegistryError::http(StatusCode::NOT_FOUND, "HTTP 404 Not Found"))
    }
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Flags {
    #[serde(deserialize_with = "lenient_bool")]
    deleted: bool,
    #[serde(deserialize_with = "lenient_bool")]
    permanent: bool,
    #[serde(deserialize_with = "lenient_bool")]
    verbose: bool,
    #[serde(deserialize_with = "lenient_bool")]
    default_to_global: bool,
    subject: Option<String>,
}

/// Booleans as Confluent's server reads them: case-insensitive `true`/`false`
/// (Python clients send `True`/`False`).
fn lenient_bool<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    let raw = String::deserialize(deserializer)?;
    match raw.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" | "" => Ok(false),
        _ => Err(serde::de::Error::custom(format!(
            "'{raw}' is not true or false"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaRequest {
    #[serde(default)]
    schema: String,
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Value>,
}

impl SchemaRequest {
    fn parse(&self) -> Result<ParsedSchema> {
        if let Some(kind) = &self.schema_type
            && !kind.eq_ignore_ascii_case("AVRO")
        {
            return Err(RegistryError::InvalidSchema(format!(
                "schema type {kind} is not supported: opal-registry stores AVRO schemas only"
            )));
        }
        if !self.references.is_empty() {
            return Err(RegistryError::InvalidSchema(
                "schema references are not supported by opal-registry".to_owned(),
            ));
        }
        ParsedSchema::parse(&self.schema)
    }
}

#[derive(Deserialize)]
struct ConfigRequest {
    compatibility: String,
}

fn raw_json(text: String) -> Response {
    ([(header::CONTENT_TYPE, PLAIN_JSON)], Body::from(text)).into_response()
}

// ---- handlers ----

async fn schema_by_id(
    State(store): State<Shared>,
    PathOf(id): PathOf<u32>,
    Params(flags): Params<Flags>,
) -> Result<Json<Value>> {
    let schema = store.schema_by_id(id)?;
    if let Some(subject) = flags.subject
        && !store
            .id_usages(id, true)?
            .iter()
            .any(|(s, _)| *s == subject)
    {
        return Err(RegistryError::SchemaNotFound(format!(
            "Schema {id} not found under subject '{subject}'"
        )));
    }
    Ok(Json(json!({ "schema": schema })))
}

async fn raw_schema_by_id(
    State(store): State<Shared>,
    PathOf(id): PathOf<u32>,
) -> Result<Response> {
    Ok(raw_json(store.schema_by_id(id)?))
}

async fn id_versions(
    State(store): State<Shared>,
    PathOf(id): PathOf<u32>,
    Params(flags): Params<Flags>,
) -> Result<Json<Value>> {
    let usages = store.id_usages(id, flags.deleted)?;
    Ok(Json(
        usages
            .into_iter()
            .map(|(subject, version)| json!({"subject": subject, "version": version}))
            .collect(),
    ))
}

async fn list_subjects(
    State(store): State<Shared>,
    Params(flags): Params<Flags>,
) -> Json<Vec<String>> {
    Json(store.subjects(flags.deleted))
}

async fn list_versions(
    State(store): State<Shared>,
    PathOf(subject): PathOf<String>,
    Params(flags): Params<Flags>,
) -> Result<Json<Vec<u32>>> {
    Ok(Json(store.versions(&subject, flags.deleted)?))
}

async fn register(
    State(store): State<Shared>,
    PathOf(subject): PathOf<String>,
    SrJson(request): SrJson<SchemaRequest>,
) -> Result<Json<Value>> {
    let schema = request.parse()?;
    let id = store.register(&subject, &schema)?;
    tracing::info!(subject, id, "schema registered");
    Ok(Json(json!({ "id": id })))
}

async fn lookup(
    State(store): State<Shared>,
    PathOf(subject): PathOf<String>,
    Params(flags): Params<Flags>,
    SrJson(request): SrJson<SchemaRequest>,
) -> Result<Json<Value>> {
    let found = store.lookup(&subject, &request.parse()?, flags.deleted)?;
    Ok(Json(json!(found)))
}

async fn delete_subject(
    State(store): State<Shared>,
    PathOf(subject): PathOf<String>,
    Params(flags): Params<Flags>,
) -> Result<Json<Vec<u32>>> {
    Ok(Json(store.delete_subject(&subject, flags.permanent)?))
}

async fn get_version(
    State(store): State<Shared>,
    PathOf((subject, version)): PathOf<(String, String)>,
    Params(flags): Params<Flags>,
) -> Result<Json<Value>> {
    let selector = VersionSelector::parse(&version)?;
    Ok(Json(json!(store.version(
        &subject,
        selector,
        flags.deleted
    )?)))
}

async fn raw_version_schema(
    State(store): State<Shared>,
    PathOf((subject, version)): PathOf<(String, String)>,
    Params(flags): Params<Flags>,
) -> Result<Response> {
    let selector = VersionSelector::parse(&version)?;
    Ok(raw_json(
        store.version(&subject, selector, flags.deleted)?.schema,
    ))
}

/// No schema references are stored, so nothing refers to any version.
async fn referenced_by(
    State(store): State<Shared>,
    PathOf((subject, version)): PathOf<(String, String)>,
) -> Result<Json<Vec<u32>>> {
    store.version(&subject, VersionSelector::parse(&version)?, false)?;
    Ok(Json(Vec::new()))
}

async fn delete_version(
    State(store): State<Shared>,
    PathOf((subject, version)): PathOf<(String, String)>,
    Params(flags): Params<Flags>,
) -> Result<Json<u32>> {
    let selector = VersionSelector::parse(&version)?;
    Ok(Json(store.delete_version(
        &subject,
        selector,
        flags.permanent,
    )?))
}

fn compatibility_answer(messages: Vec<String>, verbose: bool) -> Json<Value> {
    let mut body = json!({ "is_compatible": messages.is_empty() });
    if verbose {
        body["messages"] = json!(messages);
    }
    Json(body)
}

async fn compat_all(
    State(store): State<Shared>,
    PathOf(subject): PathOf<String>,
    Params(flags): Params<Flags>,
    SrJson(request): SrJson<SchemaRequest>,
) -> Result<Json<Value>> {
    let messages = store.test_compatibility(&subject, None, &request.parse()?)?;
    Ok(compatibility_answer(messages, flags.verbose))
}

async fn compat_version(
    State(store): State<Shared>,
    PathOf((subject, version)): PathOf<(String, String)>,
    Params(flags): Params<Flags>,
    SrJson(request): SrJson<SchemaRequest>,
) -> Result<Json<Value>> {
    let selector = VersionSelector::parse(&version)?;
    let messages = store.test_compatibility(&subject, Some(selector), &request.parse()?)?;
    Ok(compatibility_answer(messages, flags.verbose))
}

async fn get_global_config(State(store): State<Shared>) -> Json<Value> {
    Json(json!({ "compatibilityLevel": store.global_compatibility() }))
}

async fn put_global_config(
    State(store): State<Shared>,
    SrJson(request): SrJson<ConfigRequest>,
) -> Result<Json<Value>> {
    let level: CompatibilityLevel = request.compatibility.parse()?;
    store.set_global_compatibility(level)?;
    Ok(Json(json!({ "compatibility": level })))
}

async fn get_subject_config(
    State(store): State<Shared>,
    PathOf(subject): PathOf<String>,
    Params(flags): Params<Flags>,
) -> Result<Json<Value>> {
    let level = store.subject_compatibility(&subject, flags.default_to_global)?;
    Ok(Json(json!({ "compatibilityLevel": level })))
}

async fn put_subject_config(
    State(store): State<Shared>,
    PathOf(subject): PathOf<String>,
    SrJson(request): SrJson<ConfigRequest>,
) -> Result<Json<Value>> {
    let level: CompatibilityLevel = request.compatibility.parse()?;
    store.set_subject_compatibility(&subject, level)?;
    Ok(Json(json!({ "compatibility": level })))
}

async fn delete_subject_config(
    State(store): State<Shared>,
    PathOf(subject): PathOf<String>,
) -> Result<Json<Value>> {
    let previous = store.delete_subject_compatibility(&subject)?;
    Ok(Json(json!({ "compatibilityLevel": previous })))
}

/// Imports and read-only modes are not implemented; the registry is always writable.
async fn mode() -> Json<Value> {
    Json(json!({ "mode": "READWRITE" }))
}
