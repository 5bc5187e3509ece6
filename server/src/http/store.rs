//! `POST /api/v4/store/execute`: one DQL statement, Ditto's request and response shapes.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use bigpeer_schema::Value;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, Ditto};
use super::extract::Call;
use crate::service::{ExecuteResult, ServiceError};
use crate::state::AppState;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

pub use super::extract::TXN_WAIT;

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

impl super::extract::Validate for ExecuteRequest {
    type Valid = ExecuteRequest;
    fn validate(self) -> Result<ExecuteRequest, super::extract::Failure> {
        super::extract::refuse_nul(
            "the statement or its arguments",
            [self.statement.as_str()],
            self.args.as_ref().unwrap_or(&BTreeMap::new()),
        )?;
        Ok(self)
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
pub async fn execute(call: Call<ExecuteRequest, Ditto>) -> Result<HttpResponse, ApiError<Ditto>> {
    let args = call.body.args.unwrap_or_default();
    let r = execute_retrying(&call.state, &call.body.statement, &args, &call.access).await?;
    Ok(HttpResponse::Ok().json(ExecuteResponse::ok(r)))
}

/// Runs a statement; a read (SELECT, SHOW, EXPLAIN) whose connection turns out to be lost is run
/// once more, on a fresh connection (writes are not: their outcome is unknown).
pub async fn execute_retrying(
    state: &AppState,
    statement: &str,
    args: &BTreeMap<String, Value>,
    access: &crate::service::Access,
) -> Result<ExecuteResult, ServiceError> {
    match state.executor.execute_as(statement, args, access).await {
        Err(ServiceError::Store(crate::store::StoreError::Database(e)))
            if crate::store::is_connection_lost(&e) && state.executor.is_read(statement) =>
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

/// JSON bodies: at most `limit` bytes. What a body that cannot be read gets is the extractors'
/// business ([`super::extract`]), in the envelope of its route.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default().limit(limit)
}

/// Registers the store routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v4/store/execute", web::post().to(execute));
}
