//! The legacy RPC endpoints of Ditto's `/api/v4`: `/store/find`, `/store/findbyid`,
//! `/store/count`. Their queries use the legacy query language, translated to DQL
//! (`bigpeer_dql::legacy`) and run by the same executor, with the same permissions, as
//! `/store/execute`.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use bigpeer_schema::{DocId, Value};
use serde::Deserialize;

use super::error::{ApiError, Plain, Problem};
use super::extract::{refuse_nul, Call, Failure, Validate};
use super::openapi::ErrorMessage;
use super::store::execute_statement_retrying;
use bigpeer_dql::ast::Statement;

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

/// The refusal of a serialisation other than `latestValues`.
fn refuse_serialization(serialized_as: &Option<String>) -> Result<(), Failure> {
    match serialized_as.as_deref() {
        None | Some("latestValues") => Ok(()),
        Some(other) => Err(Problem::Unsupported(format!("serializedAs {other:?}")).into()),
    }
}

impl Validate for FindRequest {
    type Valid = FindRequest;
    fn validate(self) -> Result<FindRequest, Failure> {
        refuse_nul(
            "the request",
            [self.collection.as_str(), self.query.as_str()]
                .into_iter()
                .chain(self.sort.iter().map(|s| s.property.as_str())),
            &self.args,
        )?;
        refuse_serialization(&self.serialized_as)?;
        if self.describe == Some(true) {
            return Err(Problem::Unsupported("describe".to_owned()).into());
        }
        Ok(self)
    }
}

impl Validate for FindByIdRequest {
    type Valid = FindByIdRequest;
    fn validate(self) -> Result<FindByIdRequest, Failure> {
        let id = BTreeMap::from([(String::new(), self.id.clone())]);
        refuse_nul("the request", [self.collection.as_str()], &id)?;
        refuse_serialization(&self.serialized_as)?;
        if let Err(e) = DocId::new(self.id.clone()) {
            return Err(Problem::from(crate::store::StoreError::Schema(e)).into());
        }
        Ok(self)
    }
}

impl Validate for CountRequest {
    type Valid = CountRequest;
    fn validate(self) -> Result<CountRequest, Failure> {
        refuse_nul(
            "the request",
            [self.collection.as_str(), self.query.as_str()],
            &self.args,
        )?;
        Ok(self)
    }
}

/// The statement of a `/store/find`, built as a tree (`bigpeer_dql::legacy`).
fn find_statement(body: &FindRequest) -> Result<Statement, Problem> {
    let sort: Vec<(&str, bool)> = body
        .sort
        .iter()
        .map(|s| (s.property.as_str(), matches!(s.direction, Direction::Desc)))
        .collect();
    let limit = body
        .limit
        .unwrap_or(DEFAULT_FIND_LIMIT)
        .min(DEFAULT_FIND_LIMIT);
    Ok(bigpeer_dql::legacy::find_statement(
        &body.collection,
        &body.query,
        &sort,
        limit,
        body.offset,
    )?)
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
async fn find(call: Call<FindRequest, Plain>) -> Result<HttpResponse, ApiError<Plain>> {
    let statement = find_statement(&call.body)?;
    let r =
        execute_statement_retrying(&call.state, &statement, &call.body.args, &call.access).await?;
    Ok(HttpResponse::Ok().json(FindResponse {
        documents: r.items.into_iter().map(document).collect(),
        txn_id: r.txn,
    }))
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
async fn find_by_id(call: Call<FindByIdRequest, Plain>) -> Result<HttpResponse, ApiError<Plain>> {
    let body = &call.body;
    let args = BTreeMap::from([("id".to_owned(), body.id.clone())]);
    let statement = bigpeer_dql::legacy::find_by_id_statement(&body.collection);
    let r = execute_statement_retrying(&call.state, &statement, &args, &call.access).await?;
    let Some(item) = r.items.into_iter().next() else {
        return Err(Problem::NoSuchDocument(format!(
            "no document {} in collection {:?}",
            body.id, body.collection
        ))
        .into());
    };
    let doc = document(item);
    Ok(HttpResponse::Ok().json(FindByIdResponse {
        id: doc.id,
        fields: doc.fields,
        txn_id: r.txn,
    }))
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
async fn count(call: Call<CountRequest, Plain>) -> Result<HttpResponse, ApiError<Plain>> {
    let statement = bigpeer_dql::legacy::count_statement(&call.body.collection, &call.body.query)?;
    let r =
        execute_statement_retrying(&call.state, &statement, &call.body.args, &call.access).await?;
    let n = r
        .items
        .first()
        .and_then(|i| i.get_path(&["n"]))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    Ok(HttpResponse::Ok().json(CountResponse {
        count: n,
        txn_id: r.txn,
    }))
}

/// Registers the legacy routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v4/store/find", web::post().to(find))
        .route("/api/v4/store/findbyid", web::post().to(find_by_id))
        .route("/api/v4/store/count", web::post().to(count));
}
