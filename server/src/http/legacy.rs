//! The legacy RPC endpoints of Ditto's `/api/v4`: `/store/find`, `/store/findbyid`,
//! `/store/count`. Their queries use the legacy query language, translated to DQL
//! (`bigpeer_dql::legacy`) and run by the same executor, with the same permissions, as
//! `/store/execute`.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bigpeer_schema::{DocId, Value};
use serde::Deserialize;

use super::auth::{admit, Refusal};
use super::openapi::ErrorMessage;
use crate::app::AppState;
use crate::service::{Access, ServiceError};

/// Ditto's default and maximum page of `/store/find`.
pub const DEFAULT_FIND_LIMIT: u64 = 1000;

/// Sort order.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Asc,
    Desc,
}

/// One sort key.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Sort {
    /// A field path, dot-separated (`address.city`).
    pub property: String,
    pub direction: Direction,
}

/// The body of `POST /api/v4/store/find`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({
    "collection": "cars", "query": "color == $args.color", "args": {"color": "blue"},
    "limit": 10, "sort": [{"property": "year", "direction": "desc"}]
}))]
pub struct FindRequest {
    pub collection: String,
    /// A query in the legacy query language (`color == 'blue' && year > 2000`; `true` for all).
    pub query: String,
    /// Values for `$args.name` in the query.
    #[serde(default)]
    #[schema(schema_with = super::openapi::legacy_args)]
    pub args: BTreeMap<String, Value>,
    /// At most this many documents; 1000 at most, and by default.
    #[serde(default)]
    pub limit: Option<u64>,
    #[serde(default)]
    pub offset: Option<u64>,
    #[serde(default)]
    pub sort: Vec<Sort>,
    /// Only `latestValues` (the default) is supported; anything else is a 400
    /// `query/unsupported`.
    #[serde(default)]
    pub serialized_as: Option<String>,
    #[serde(default)]
    pub format_attachment: Option<bool>,
    /// `true` is not supported (400 `query/unsupported`).
    #[serde(default)]
    pub describe: Option<bool>,
}

/// The body of `POST /api/v4/store/findbyid`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"collection": "cars", "id": "1"}))]
pub struct FindByIdRequest {
    pub collection: String,
    /// The document id (`_id`): a string, integer, boolean, array or object.
    pub id: Value,
    /// Only `latestValues` (the default) is supported.
    #[serde(default)]
    pub serialized_as: Option<String>,
    #[serde(default)]
    pub format_attachment: Option<bool>,
}

/// The body of `POST /api/v4/store/count`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"collection": "cars", "query": "color == 'blue'"}))]
pub struct CountRequest {
    pub collection: String,
    /// A query in the legacy query language.
    pub query: String,
    /// Values for `$args.name` in the query.
    #[serde(default)]
    #[schema(schema_with = super::openapi::legacy_args)]
    pub args: BTreeMap<String, Value>,
}

/// A document: its id and its other fields.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct LegacyDocument {
    /// The document id (`_id`).
    #[schema(value_type = Value)]
    pub id: serde_json::Value,
    /// Every field but `_id`.
    #[schema(schema_with = super::openapi::document_fields)]
    pub fields: serde_json::Value,
}

/// The answer of `/store/find`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"documents": [{"id": "1", "fields": {"color": "blue"}}], "txnId": 7}))]
pub struct FindResponse {
    pub documents: Vec<LegacyDocument>,
    /// The newest transaction the answer reflects.
    pub txn_id: i64,
}

/// The answer of `/store/findbyid`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"id": "1", "fields": {"color": "blue"}, "txnId": 7}))]
pub struct FindByIdResponse {
    #[schema(value_type = Value)]
    pub id: serde_json::Value,
    #[schema(schema_with = super::openapi::document_fields)]
    pub fields: serde_json::Value,
    pub txn_id: i64,
}

/// The answer of `/store/count`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"count": 3, "txnId": 7}))]
pub struct CountResponse {
    #[schema(minimum = 0)]
    pub count: i64,
    pub txn_id: i64,
}

/// The legacy error body: `{"code", "message"}`.
pub(super) fn error(status: StatusCode, code: &str, message: String) -> HttpResponse {
    HttpResponse::build(status).json(ErrorMessage::new(code, message))
}

fn service_error(state: &AppState, e: &ServiceError) -> HttpResponse {
    state.metrics.error(e.code());
    let status = super::store::status_of(e);
    error(
        status,
        e.code(),
        super::store::public_description(e, status),
    )
}

pub(super) async fn access(req: &HttpRequest, state: &AppState) -> Result<Access, HttpResponse> {
    match admit(req, state).await {
        Ok(a) => Ok(a),
        Err(Refusal::Error(e)) => Err(service_error(state, &e)),
        Err(Refusal::RateLimited(secs)) => {
            state.metrics.error("request/rate-limited");
            Err(HttpResponse::TooManyRequests()
                .insert_header(("Retry-After", secs.to_string()))
                .json(ErrorMessage::new(
                    "request/rate-limited",
                    format!("too many requests: retry in {secs} s"),
                )))
        }
    }
}

fn unsupported(what: &str) -> HttpResponse {
    error(
        StatusCode::BAD_REQUEST,
        "query/unsupported",
        format!("{what} is not supported"),
    )
}

/// `{"id": <_id>, "fields": {...without _id}}`.
fn document(item: Value) -> LegacyDocument {
    match item {
        Value::Object(mut o) => {
            let id = o.remove("_id").unwrap_or(Value::Null);
            LegacyDocument {
                id: id.to_json(),
                fields: Value::Object(o).to_json(),
            }
        }
        other => LegacyDocument {
            id: serde_json::Value::Null,
            fields: serde_json::json!({ "value": other.to_json() }),
        },
    }
}

/// Read-your-writes: with `X-DITTO-TXN-ID`, waits (bounded) until that transaction is visible.
/// `Some(answer)` when the request may not go on: a bad header (400), the transaction not
/// reached in time (404), the store unavailable.
async fn wait_for_txn_header(req: &HttpRequest, state: &AppState) -> Option<HttpResponse> {
    use super::store::{txn_header, wait_for_txn, TXN_WAIT};
    let Ok(txn) = txn_header(req) else {
        state.metrics.error("request/invalid-header");
        return Some(error(
            StatusCode::BAD_REQUEST,
            "request/invalid-header",
            "X-DITTO-TXN-ID must be an integer transaction id".into(),
        ));
    };
    let t = txn?;
    match wait_for_txn(&state.store, t, TXN_WAIT).await {
        Ok(true) => None,
        Ok(false) => {
            state.metrics.error("store/txn-not-available");
            Some(error(
                StatusCode::NOT_FOUND,
                "store/txn-not-available",
                format!("transaction {t} is not available yet"),
            ))
        }
        Err(e) => Some(service_error(state, &e)),
    }
}

fn nul_error(state: &AppState) -> HttpResponse {
    state.metrics.error(super::store::NUL_CODE);
    error(
        StatusCode::BAD_REQUEST,
        super::store::NUL_CODE,
        super::store::nul_message("the request"),
    )
}

/// The refusal of text holding U+0000, which Postgres cannot store.
fn refuse_nul<'a>(
    state: &AppState,
    texts: impl IntoIterator<Item = &'a str>,
    args: &BTreeMap<String, Value>,
) -> Option<HttpResponse> {
    let nul = texts.into_iter().any(|t| t.contains('\0'))
        || args
            .iter()
            .any(|(k, v)| k.contains('\0') || super::store::has_nul(v));
    nul.then(|| nul_error(state))
}

/// The refusal of a serialisation other than `latestValues`.
fn refuse_serialization(serialized_as: &Option<String>) -> Option<HttpResponse> {
    match serialized_as.as_deref() {
        None | Some("latestValues") => None,
        Some(other) => Some(unsupported(&format!("serializedAs {other:?}"))),
    }
}

/// Find documents with a legacy query.
///
/// Runs `SELECT * FROM collection WHERE <query>` with the sort, limit (1000 at most) and offset
/// asked for; only documents the key may read are returned.
#[utoipa::path(
    post,
    path = "/api/v4/store/find",
    tag = "legacy",
    operation_id = "find",
    security(("api_key" = [])),
    params(
        ("X-DITTO-TXN-ID" = Option<String>, Header, pattern = "^[0-9]{1,18}$",
            description = "Read your writes: run only once this transaction (a `transactionId` \
                or `txnId` of an earlier answer) is visible; 404 when it is not within 2 s, 400 \
                when it is not an integer."),
    ),
    request_body(content = FindRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The matching documents.", body = FindResponse),
        (status = 400, description = "An invalid query (`query/invalid`), text holding \
            U+0000 (`request/nul-character`), an unsupported option (`query/unsupported`), a \
            failing query (`query/evaluation`), a bad `X-DITTO-TXN-ID` \
            (`request/invalid-header`), malformed JSON, wrong types or unknown fields \
            (`request/invalid-json`).", body = ErrorMessage,
            example = json!({"code": "query/invalid", "message": "expected an expression"})),
        (status = 401, description = "No API key, or an unknown, expired or revoked one \
            (`auth/...`).", body = ErrorMessage, example = json!({
                "code": "auth/invalid-key", "message": "the API key is not valid"})),
        (status = 403, description = "Outside the key's read permission (`auth/forbidden`).",
            body = ErrorMessage),
        (status = 404, description = "The transaction of `X-DITTO-TXN-ID` was not reached \
            within 2 s (`store/txn-not-available`).", body = ErrorMessage),
        (status = 408, description = "The query ran longer than the statement timeout \
            (`store/timeout`).", body = ErrorMessage),
        (status = 413, description = "The body is larger than 4 MiB (`request/too-large`).",
            body = ErrorMessage),
        (status = 415, description = "The body is not `application/json` \
            (`request/content-type`).", body = ErrorMessage),
        (status = 429, description = "Over a rate limit (`request/rate-limited`).",
            body = ErrorMessage,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
        (status = 500, description = "An internal error (`internal`).", body = ErrorMessage),
        (status = 503, description = "Postgres is unavailable (`store/unavailable`, \
            `store/backend`): retry with backoff.", body = ErrorMessage),
    )
)]
async fn find(req: HttpRequest, state: web::Data<AppState>, payload: web::Payload) -> HttpResponse {
    let access = match access(&req, &state).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    // Only now, with the credentials checked, is the body read.
    let body: FindRequest = match super::auth::json_body(&req, payload).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if let Some(resp) = wait_for_txn_header(&req, &state).await {
        return resp;
    }
    if let Some(resp) = refuse_nul(
        &state,
        [body.collection.as_str(), body.query.as_str()]
            .into_iter()
            .chain(body.sort.iter().map(|s| s.property.as_str())),
        &body.args,
    ) {
        return resp;
    }
    if let Some(resp) = refuse_serialization(&body.serialized_as) {
        return resp;
    }
    if body.describe == Some(true) {
        return unsupported("describe");
    }
    let sort: Vec<(&str, bool)> = body
        .sort
        .iter()
        .map(|s| (s.property.as_str(), matches!(s.direction, Direction::Desc)))
        .collect();
    let limit = body
        .limit
        .unwrap_or(DEFAULT_FIND_LIMIT)
        .min(DEFAULT_FIND_LIMIT);
    let statement = match bigpeer_dql::legacy::find_statement(
        &body.collection,
        &body.query,
        &sort,
        limit,
        body.offset,
    ) {
        Ok(s) => s,
        Err(e) => return service_error(&state, &ServiceError::Dql(e)),
    };
    match super::store::execute_statement_retrying(&state, &statement, &body.args, &access).await {
        Ok(r) => HttpResponse::Ok().json(FindResponse {
            documents: r.items.into_iter().map(document).collect(),
            txn_id: r.txn,
        }),
        Err(e) => service_error(&state, &e),
    }
}

/// Find one document by its id.
#[utoipa::path(
    post,
    path = "/api/v4/store/findbyid",
    tag = "legacy",
    operation_id = "findById",
    security(("api_key" = [])),
    params(
        ("X-DITTO-TXN-ID" = Option<String>, Header, pattern = "^[0-9]{1,18}$",
            description = "Read your writes: run only once this transaction (a `transactionId` \
                or `txnId` of an earlier answer) is visible; 404 when it is not within 2 s, 400 \
                when it is not an integer."),
    ),
    request_body(content = FindByIdRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The document.", body = FindByIdResponse),
        (status = 400, description = "An invalid id (`document/...`), text holding \
            U+0000 (`request/nul-character`), an unsupported option (`query/unsupported`), a \
            bad `X-DITTO-TXN-ID` (`request/invalid-header`), malformed JSON, wrong types or \
            unknown fields (`request/invalid-json`).", body = ErrorMessage,
            example = json!({"code": "document/invalid-id",
                "message": "invalid document id: floats are not supported in document ids"})),
        (status = 401, description = "No API key, or an unknown, expired or revoked one \
            (`auth/...`).", body = ErrorMessage, example = json!({
                "code": "auth/invalid-key", "message": "the API key is not valid"})),
        (status = 403, description = "Outside the key's read permission (`auth/forbidden`).",
            body = ErrorMessage),
        (status = 404, description = "No such document, or not one the key may read \
            (`store/not-found`); or the transaction of `X-DITTO-TXN-ID` was not reached within \
            2 s (`store/txn-not-available`).", body = ErrorMessage, example = json!({
                "code": "store/not-found",
                "message": "no document \"1\" in collection \"cars\""})),
        (status = 408, description = "The query ran longer than the statement timeout \
            (`store/timeout`).", body = ErrorMessage),
        (status = 413, description = "The body is larger than 4 MiB (`request/too-large`).",
            body = ErrorMessage),
        (status = 415, description = "The body is not `application/json` \
            (`request/content-type`).", body = ErrorMessage),
        (status = 429, description = "Over a rate limit (`request/rate-limited`).",
            body = ErrorMessage,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
        (status = 500, description = "An internal error (`internal`).", body = ErrorMessage),
        (status = 503, description = "Postgres is unavailable (`store/unavailable`, \
            `store/backend`): retry with backoff.", body = ErrorMessage),
    )
)]
async fn find_by_id(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> HttpResponse {
    let access = match access(&req, &state).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    // Only now, with the credentials checked, is the body read.
    let body: FindByIdRequest = match super::auth::json_body(&req, payload).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if let Some(resp) = wait_for_txn_header(&req, &state).await {
        return resp;
    }
    if let Some(resp) = refuse_nul(&state, [body.collection.as_str()], &BTreeMap::new())
        .or_else(|| super::store::has_nul(&body.id).then(|| nul_error(&state)))
    {
        return resp;
    }
    if let Some(resp) = refuse_serialization(&body.serialized_as) {
        return resp;
    }
    if let Err(e) = DocId::new(body.id.clone()) {
        return error(StatusCode::BAD_REQUEST, e.code(), e.to_string());
    }
    let statement = bigpeer_dql::legacy::find_by_id_statement(&body.collection);
    let args = BTreeMap::from([("id".to_owned(), body.id.clone())]);
    match super::store::execute_statement_retrying(&state, &statement, &args, &access).await {
        Ok(r) => match r.items.into_iter().next() {
            Some(item) => {
                let doc = document(item);
                HttpResponse::Ok().json(FindByIdResponse {
                    id: doc.id,
                    fields: doc.fields,
                    txn_id: r.txn,
                })
            }
            None => error(
                StatusCode::NOT_FOUND,
                "store/not-found",
                format!(
                    "no document {} in collection {:?}",
                    body.id, body.collection
                ),
            ),
        },
        Err(e) => service_error(&state, &e),
    }
}

/// Count documents matching a legacy query.
#[utoipa::path(
    post,
    path = "/api/v4/store/count",
    tag = "legacy",
    operation_id = "count",
    security(("api_key" = [])),
    params(
        ("X-DITTO-TXN-ID" = Option<String>, Header, pattern = "^[0-9]{1,18}$",
            description = "Read your writes: run only once this transaction (a `transactionId` \
                or `txnId` of an earlier answer) is visible; 404 when it is not within 2 s, 400 \
                when it is not an integer."),
    ),
    request_body(content = CountRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "How many documents the key may read match.",
            body = CountResponse),
        (status = 400, description = "An invalid query (`query/invalid`), text holding \
            U+0000 (`request/nul-character`), an unsupported option (`query/unsupported`), a \
            failing query (`query/evaluation`), a bad `X-DITTO-TXN-ID` \
            (`request/invalid-header`), malformed JSON, wrong types or unknown fields \
            (`request/invalid-json`).", body = ErrorMessage,
            example = json!({"code": "query/invalid", "message": "expected an expression"})),
        (status = 401, description = "No API key, or an unknown, expired or revoked one \
            (`auth/...`).", body = ErrorMessage, example = json!({
                "code": "auth/invalid-key", "message": "the API key is not valid"})),
        (status = 403, description = "Outside the key's read permission (`auth/forbidden`).",
            body = ErrorMessage),
        (status = 404, description = "The transaction of `X-DITTO-TXN-ID` was not reached \
            within 2 s (`store/txn-not-available`).", body = ErrorMessage),
        (status = 408, description = "The query ran longer than the statement timeout \
            (`store/timeout`).", body = ErrorMessage),
        (status = 413, description = "The body is larger than 4 MiB (`request/too-large`).",
            body = ErrorMessage),
        (status = 415, description = "The body is not `application/json` \
            (`request/content-type`).", body = ErrorMessage),
        (status = 429, description = "Over a rate limit (`request/rate-limited`).",
            body = ErrorMessage,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
        (status = 500, description = "An internal error (`internal`).", body = ErrorMessage),
        (status = 503, description = "Postgres is unavailable (`store/unavailable`, \
            `store/backend`): retry with backoff.", body = ErrorMessage),
    )
)]
async fn count(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> HttpResponse {
    let access = match access(&req, &state).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    // Only now, with the credentials checked, is the body read.
    let body: CountRequest = match super::auth::json_body(&req, payload).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if let Some(resp) = wait_for_txn_header(&req, &state).await {
        return resp;
    }
    if let Some(resp) = refuse_nul(
        &state,
        [body.collection.as_str(), body.query.as_str()],
        &body.args,
    ) {
        return resp;
    }
    let statement = match bigpeer_dql::legacy::count_statement(&body.collection, &body.query) {
        Ok(s) => s,
        Err(e) => return service_error(&state, &ServiceError::Dql(e)),
    };
    match super::store::execute_statement_retrying(&state, &statement, &body.args, &access).await {
        Ok(r) => {
            let n = r
                .items
                .first()
                .and_then(|i| i.get_path(&["n"]))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            HttpResponse::Ok().json(CountResponse {
                count: n,
                txn_id: r.txn,
            })
        }
        Err(e) => service_error(&state, &e),
    }
}

/// Registers the legacy routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v4/store/find", web::post().to(find))
        .route("/api/v4/store/findbyid", web::post().to(find_by_id))
        .route("/api/v4/store/count", web::post().to(count));
}
