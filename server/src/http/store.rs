//! `POST /api/v4/store/execute`: one DQL statement, Ditto's request and response shapes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bigpeer_schema::Value;
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::service::{ExecuteResult, ServiceError};
use crate::store::Store;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// How long a request carrying `X-DITTO-TXN-ID` waits for that transaction before answering 404.
pub const TXN_WAIT: Duration = Duration::from_secs(2);

/// The body of `POST /api/v4/store/execute`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "statement": "INSERT INTO cars DOCUMENTS (:car)",
    "args": {"car": {"_id": "1", "color": "blue"}}
}))]
pub struct ExecuteRequest {
    /// One DQL statement (SELECT, INSERT, UPDATE, DELETE, EVICT, SHOW, ALTER SYSTEM, EXPLAIN).
    pub statement: String,
    /// Values for the statement's `:name` parameters.
    #[serde(default)]
    #[schema(schema_with = super::openapi::dql_args)]
    pub args: Option<BTreeMap<String, Value>>,
}

/// The answer, success or failure (Ditto's envelope). Errors keep the same shape with
/// `queryType` `"unknown"`, no `transactionId` and `error` saying what went wrong.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "transactionId": 1,
    "queryType": "mutation",
    "items": [],
    "mutatedDocumentIds": ["1"],
    "error": {},
    "warnings": [],
    "totalWarningsCount": 0
}))]
pub struct ExecuteResponse {
    /// The transaction the statement wrote in (or, for reads, the newest committed one). Send it
    /// as `X-DITTO-TXN-ID` on a later request to read your writes. Absent on errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 0)]
    pub transaction_id: Option<i64>,
    /// `select` for reads, `mutation` for writes, `unknown` on errors.
    #[schema(schema_with = query_type_schema)]
    pub query_type: &'static str,
    /// The documents or rows a SELECT returns; `[]` for writes and errors.
    #[schema(schema_with = super::openapi::select_items)]
    pub items: Vec<Value>,
    /// Ids of the documents a write touched (strings, numbers or objects), sorted.
    pub mutated_document_ids: Vec<Value>,
    /// `{}` on success.
    pub error: ErrorBody,
    pub warnings: Vec<Warning>,
    #[schema(minimum = 0)]
    pub total_warnings_count: usize,
}

/// `queryType`: one of `select`, `mutation`, `unknown`.
fn query_type_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(["select", "mutation", "unknown"]))
        .build()
}

/// `{}` on success; `{code, description, ...}` on failure.
#[derive(Debug, Serialize, Default, utoipa::ToSchema)]
#[schema(example = json!({
    "code": "query/invalid",
    "description": "Invalid query: `expected a statement`.",
    "line": 1,
    "column": 1
}))]
pub struct ErrorBody {
    /// The stable error code: `query/invalid`, `query/evaluation`, `query/unsupported`,
    /// `query/parameter`,
    /// `query/result-too-large`, `request/invalid-json`, `request/too-large`,
    /// `request/too-deep`, `request/too-long`, `request/nul-character`, `document/too-large`,
    /// `request/content-type`, `request/invalid-header`, `request/rate-limited`, `request/timeout`,
    /// `auth/missing-credentials`, `auth/invalid-key`, `auth/expired-key`, `auth/revoked-key`,
    /// `auth/forbidden`, `store/txn-not-available`, `store/timeout`, `store/unavailable`,
    /// `store/backend`, `document/...`, `crdt/...`, `internal`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub code: Option<String>,
    /// What went wrong, for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub description: Option<String>,
    /// Where in the statement the error is (1-based), for DQL errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 1)]
    pub line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 1)]
    pub column: Option<u32>,
}

/// A warning about one statement (at most 10 are listed; `totalWarningsCount` counts all).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Warning {
    /// The document the warning is about, when there is one.
    #[serde(rename = "_id", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Value, nullable = false)]
    pub id: Option<Value>,
    pub description: String,
}

impl ExecuteResponse {
    fn ok(r: ExecuteResult) -> ExecuteResponse {
        ExecuteResponse {
            transaction_id: Some(r.txn),
            query_type: r.query_type.as_str(),
            items: r.items,
            mutated_document_ids: r.mutated_ids,
            error: ErrorBody::default(),
            warnings: Vec::new(),
            total_warnings_count: 0,
        }
    }

    /// The error envelope: `queryType` is `"unknown"`, `error` says what went wrong.
    pub fn error(code: &str, description: String, position: Option<(u32, u32)>) -> ExecuteResponse {
        ExecuteResponse {
            transaction_id: None,
            query_type: "unknown",
            items: Vec::new(),
            mutated_document_ids: Vec::new(),
            error: ErrorBody {
                code: Some(code.to_owned()),
                description: Some(description),
                line: position.map(|p| p.0),
                column: position.map(|p| p.1),
            },
            warnings: Vec::new(),
            total_warnings_count: 0,
        }
    }
}

/// The HTTP status of a service error.
pub fn status_of(e: &ServiceError) -> StatusCode {
    match e {
        ServiceError::Dql(_) => StatusCode::BAD_REQUEST,
        ServiceError::Auth(a) => match a {
            crate::auth::AuthError::MissingCredentials
            | crate::auth::AuthError::InvalidKey
            | crate::auth::AuthError::ExpiredKey
            | crate::auth::AuthError::RevokedKey => StatusCode::UNAUTHORIZED,
            crate::auth::AuthError::Forbidden(_) => StatusCode::FORBIDDEN,
            crate::auth::AuthError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            crate::auth::AuthError::Backend(_) => StatusCode::SERVICE_UNAVAILABLE,
        },
        ServiceError::ResultTooLarge { .. } => StatusCode::BAD_REQUEST,
        ServiceError::Store(s) => match s.code() {
            "store/timeout" => StatusCode::REQUEST_TIMEOUT,
            "store/unavailable" | "store/backend" => StatusCode::SERVICE_UNAVAILABLE,
            c if c.starts_with("query/") => StatusCode::BAD_REQUEST,
            c if c.starts_with("crdt/")
                || c.starts_with("document/")
                || c.starts_with("request/") =>
            {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
    }
}

/// What a response says about a service error: its message (our own words: store errors never
/// carry the database's text), or only "internal error" for a 500. Server-side failures are
/// logged with their details.
pub fn public_description(e: &ServiceError, status: StatusCode) -> String {
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(error = ?e, code = e.code(), "request failed");
        return "internal error".to_owned();
    }
    if status.is_server_error() {
        tracing::warn!(error = ?e, code = e.code(), "request failed");
    } else if let ServiceError::Store(s) = e {
        tracing::debug!(error = ?s, code = e.code(), "statement failed on its data");
    }
    e.to_string()
}

/// Renders a service error in the envelope.
pub fn error_response(e: &ServiceError) -> HttpResponse {
    let status = status_of(e);
    let position = match e {
        ServiceError::Dql(d) if d.line > 0 => Some((d.line, d.column)),
        _ => None,
    };
    let description = public_description(e, status);
    HttpResponse::build(status).json(ExecuteResponse::error(e.code(), description, position))
}

/// The code of a request whose text holds U+0000 (`bigpeer_schema::limits`).
pub const NUL_CODE: &str = bigpeer_schema::limits::NUL_CHARACTER;

/// Whether any string or object key in `value` holds U+0000, which Postgres cannot keep in
/// `text` or `jsonb` (the one check of `bigpeer_schema::limits`).
pub fn has_nul(value: &Value) -> bool {
    bigpeer_schema::limits::has_nul(value)
}

/// [`has_nul`] for JSON.
pub fn json_has_nul(value: &serde_json::Value) -> bool {
    bigpeer_schema::limits::json_has_nul(value)
}

/// The message of a [`NUL_CODE`] error about `what`.
pub fn nul_message(what: &str) -> String {
    format!("{what} contains the NUL character (U+0000), which bigpeer cannot store")
}

/// Waits until the store has committed `txn` (read-your-writes across requests and processes).
pub async fn wait_for_txn(store: &Store, txn: i64, budget: Duration) -> Result<bool, ServiceError> {
    let deadline = Instant::now() + budget;
    let mut pause = Duration::from_millis(2);
    loop {
        if store.committed_txn().await? >= txn {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// A transaction header that is not an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadTxnHeader;

/// Reads `X-DITTO-TXN-ID`.
pub fn txn_header(req: &HttpRequest) -> Result<Option<i64>, BadTxnHeader> {
    match req.headers().get("x-ditto-txn-id") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .map(Some)
            .ok_or(BadTxnHeader),
    }
}

/// Run one DQL statement.
///
/// The statement runs as one transaction. Reads see only the documents the key may read; a
/// write touching any document outside the key's write permission writes nothing (403).
/// With `X-DITTO-TXN-ID` the request first waits (up to 2 s) until that transaction is visible.
#[utoipa::path(
    post,
    path = "/api/v4/store/execute",
    tag = "store",
    operation_id = "execute",
    security(("api_key" = [])),
    params(
        ("X-DITTO-TXN-ID" = Option<String>, Header, pattern = "^[0-9]{1,18}$",
            description = "Read your writes: run only once this transaction (the \
                `transactionId` of an earlier answer, in decimal) is visible; 404 when it is not \
                within 2 s, 400 when it is not an integer.",
            example = "1"),
    ),
    request_body(content = ExecuteRequest, content_type = "application/json",
        description = "The statement and its arguments."),
    responses(
        (status = 200, description = "The statement ran.", body = ExecuteResponse,
            examples(
                ("mutation" = (summary = "an INSERT", value = json!({
                    "transactionId": 1, "queryType": "mutation", "items": [],
                    "mutatedDocumentIds": ["1"], "error": {}, "warnings": [],
                    "totalWarningsCount": 0}))),
                ("select" = (summary = "a SELECT", value = json!({
                    "transactionId": 1, "queryType": "select",
                    "items": [{"_id": "1", "color": "blue"}], "mutatedDocumentIds": [],
                    "error": {}, "warnings": [], "totalWarningsCount": 0}))),
            )),
        (status = 400, description = "Invalid DQL (`query/invalid`, `query/unsupported`, an \
            unknown system parameter `query/parameter`), \
            text holding U+0000 (`request/nul-character`), a value, path or id nested too deep \
            (`request/too-deep`), an id or collection name too long (`request/too-long`), a \
            document over the size limit (`document/too-large`), a failing statement or bad arguments \
            (`query/evaluation`), a result over the size cap (`query/result-too-large`), malformed JSON, wrong types or unknown fields \
            (`request/invalid-json`), a bad `X-DITTO-TXN-ID` (`request/invalid-header`), an \
            invalid document or id (`document/...`, `crdt/...`).",
            body = ExecuteResponse, example = json!({
                "queryType": "unknown", "items": [], "mutatedDocumentIds": [],
                "error": {"code": "query/invalid", "description": "expected a statement",
                    "line": 1, "column": 1},
                "warnings": [], "totalWarningsCount": 0})),
        (status = 401, description = "No API key, or an unknown, expired or revoked one \
            (`auth/missing-credentials`, `auth/invalid-key`, `auth/expired-key`, \
            `auth/revoked-key`).", body = ExecuteResponse, example = json!({
                "queryType": "unknown", "items": [], "mutatedDocumentIds": [],
                "error": {"code": "auth/missing-credentials",
                    "description": "no credentials: send an API key as \"Authorization: Bearer <key>\""},
                "warnings": [], "totalWarningsCount": 0})),
        (status = 403, description = "Outside the key's permissions (`auth/forbidden`); nothing \
            was written.", body = ExecuteResponse),
        (status = 404, description = "The transaction of `X-DITTO-TXN-ID` was not reached \
            within 2 s (`store/txn-not-available`).", body = ExecuteResponse),
        (status = 408, description = "The statement ran longer than the statement timeout \
            (`store/timeout`).", body = ExecuteResponse),
        (status = 413, description = "The body is larger than 4 MiB (`request/too-large`).",
            body = ExecuteResponse),
        (status = 415, description = "The body is not `application/json` \
            (`request/content-type`).", body = ExecuteResponse),
        (status = 429, description = "Over the rate limit of the key or the client address \
            (`request/rate-limited`).", body = ExecuteResponse,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
        (status = 500, description = "An internal error (`internal`).", body = ExecuteResponse),
        (status = 503, description = "Postgres is unavailable (`store/unavailable`, \
            `store/backend`, `auth/backend`): retry with backoff.", body = ExecuteResponse),
    )
)]
pub async fn execute(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> HttpResponse {
    let store = &state.store;
    let access = match super::auth::admit(&req, &state).await {
        Ok(a) => a,
        Err(super::auth::Refusal::Error(e)) => {
            state.metrics.error(e.code());
            return error_response(&e);
        }
        Err(super::auth::Refusal::RateLimited(secs)) => {
            state.metrics.error("request/rate-limited");
            return HttpResponse::TooManyRequests()
                .insert_header(("Retry-After", secs.to_string()))
                .json(ExecuteResponse::error(
                    "request/rate-limited",
                    format!("too many requests: retry in {secs} s"),
                    None,
                ));
        }
    };
    // Only now, with the credentials checked, is the body read.
    let body: ExecuteRequest = match super::auth::json_body(&req, payload).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if body.statement.contains('\0')
        || body
            .args
            .iter()
            .flatten()
            .any(|(k, v)| k.contains('\0') || has_nul(v))
    {
        state.metrics.error(NUL_CODE);
        return HttpResponse::BadRequest().json(ExecuteResponse::error(
            NUL_CODE,
            nul_message("the statement or its arguments"),
            None,
        ));
    }
    let Ok(txn) = txn_header(&req) else {
        return HttpResponse::BadRequest().json(ExecuteResponse::error(
            "request/invalid-header",
            "X-DITTO-TXN-ID must be an integer transaction id".to_owned(),
            None,
        ));
    };
    if let Some(t) = txn {
        match wait_for_txn(store, t, TXN_WAIT).await {
            Ok(true) => {}
            Ok(false) => {
                return HttpResponse::NotFound().json(ExecuteResponse::error(
                    "store/txn-not-available",
                    format!("transaction {t} is not available yet"),
                    None,
                ))
            }
            Err(e) => return error_response(&e),
        }
    }
    let args = body.args.unwrap_or_default();
    match execute_retrying(&state, &body.statement, &args, &access).await {
        Ok(r) => HttpResponse::Ok().json(ExecuteResponse::ok(r)),
        Err(e) => {
            state.metrics.error(e.code());
            error_response(&e)
        }
    }
}

/// Runs a statement; a read (SELECT, SHOW, EXPLAIN) whose connection turns out to be lost is run
/// once more, on a fresh connection (writes are not: their outcome is unknown).
pub async fn execute_retrying(
    state: &AppState,
    statement: &str,
    args: &BTreeMap<String, Value>,
    access: &crate::service::Access,
) -> Result<ExecuteResult, ServiceError> {
    use bigpeer_dql::ast::Statement;
    match state.executor.execute_as(statement, args, access).await {
        Err(ServiceError::Store(crate::store::StoreError::Database(e)))
            if crate::store::is_connection_lost(&e)
                && matches!(
                    bigpeer_dql::parse(statement),
                    Ok(Statement::Select(_) | Statement::Show(_) | Statement::Explain(_))
                ) =>
        {
            tracing::debug!(error = %e, "a read lost its connection; retrying it once");
            state.store.health().connection_lost();
            state.executor.execute_as(statement, args, access).await
        }
        other => other,
    }
}

/// [`execute_retrying`] for a statement built as a tree (the legacy routes'): a read whose
/// connection turns out to be lost is run once more.
pub async fn execute_statement_retrying(
    state: &AppState,
    statement: &bigpeer_dql::ast::Statement,
    args: &BTreeMap<String, Value>,
    access: &crate::service::Access,
) -> Result<ExecuteResult, ServiceError> {
    use bigpeer_dql::ast::Statement;
    let run = || state.executor.execute_statement_as(statement, args, access);
    match run().await {
        Err(ServiceError::Store(crate::store::StoreError::Database(e)))
            if crate::store::is_connection_lost(&e)
                && matches!(
                    statement,
                    Statement::Select(_) | Statement::Show(_) | Statement::Explain(_)
                ) =>
        {
            tracing::debug!(error = %e, "a read lost its connection; retrying it once");
            state.store.health().connection_lost();
            run().await
        }
        other => other,
    }
}

/// JSON bodies: malformed JSON, wrong types and unknown fields get a 400, oversized bodies 413,
/// other content types 415, a body that does not arrive within `body_timeout` 408; in `/store/execute`'s envelope there, in `{code, message}` (the
/// error body of every other route) elsewhere.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|err, req| {
            use actix_web::error::JsonPayloadError;
            let (status, code) = match &err {
                JsonPayloadError::OverflowKnownLength { .. }
                | JsonPayloadError::Overflow { .. } => {
                    (StatusCode::PAYLOAD_TOO_LARGE, "request/too-large")
                }
                JsonPayloadError::ContentType => {
                    (StatusCode::UNSUPPORTED_MEDIA_TYPE, "request/content-type")
                }
                JsonPayloadError::Payload(p) if super::edge::is_body_timeout(p) => {
                    (StatusCode::REQUEST_TIMEOUT, "request/timeout")
                }
                _ => (StatusCode::BAD_REQUEST, "request/invalid-json"),
            };
            let resp = if req.path() == "/api/v4/store/execute" {
                HttpResponse::build(status).json(ExecuteResponse::error(
                    code,
                    err.to_string(),
                    None,
                ))
            } else {
                HttpResponse::build(status)
                    .json(super::openapi::ErrorMessage::new(code, err.to_string()))
            };
            actix_web::error::InternalError::from_response(err, resp).into()
        })
}

/// Registers the store routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v4/store/execute", web::post().to(execute));
}
