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
use crate::app::AppState;
use crate::service::{Access, ServiceError};

/// Ditto's default and maximum page of `/store/find`.
pub const DEFAULT_FIND_LIMIT: u64 = 1000;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Asc,
    Desc,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sort {
    pub property: String,
    pub direction: Direction,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FindRequest {
    pub collection: String,
    pub query: String,
    #[serde(default)]
    pub args: BTreeMap<String, Value>,
    #[serde(default)]
    pub limit: Option<u64>,
    #[serde(default)]
    pub offset: Option<u64>,
    #[serde(default)]
    pub sort: Vec<Sort>,
    #[serde(default)]
    pub serialized_as: Option<String>,
    #[serde(default)]
    pub format_attachment: Option<bool>,
    #[serde(default)]
    pub describe: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FindByIdRequest {
    pub collection: String,
    pub id: Value,
    #[serde(default)]
    pub serialized_as: Option<String>,
    #[serde(default)]
    pub format_attachment: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountRequest {
    pub collection: String,
    pub query: String,
    #[serde(default)]
    pub args: BTreeMap<String, Value>,
}

/// The legacy error body: `{"message", "code"}`.
pub(super) fn error(status: StatusCode, code: &str, message: String) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "message": message, "code": code }))
}

fn service_error(state: &AppState, e: &ServiceError) -> HttpResponse {
    state.metrics.error(e.code());
    error(super::store::status_of(e), e.code(), e.to_string())
}

pub(super) async fn access(req: &HttpRequest, state: &AppState) -> Result<Access, HttpResponse> {
    match admit(req, state).await {
        Ok(a) => Ok(a),
        Err(Refusal::Error(e)) => Err(service_error(state, &e)),
        Err(Refusal::RateLimited(secs)) => {
            state.metrics.error("request/rate-limited");
            Err(HttpResponse::TooManyRequests()
                .insert_header(("Retry-After", secs.to_string()))
                .json(serde_json::json!({"message": format!("too many requests: retry in {secs} s"), "code": "request/rate-limited"})))
        }
    }
}

fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn path(property: &str) -> String {
    property.split('.').map(ident).collect::<Vec<_>>().join(".")
}

fn unsupported(what: &str) -> HttpResponse {
    error(
        StatusCode::BAD_REQUEST,
        "query/unsupported",
        format!("{what} is not supported"),
    )
}

/// `{"id": <_id>, "fields": {...without _id}}`.
fn document(item: Value) -> serde_json::Value {
    match item {
        Value::Object(mut o) => {
            let id = o.remove("_id").unwrap_or(Value::Null);
            serde_json::json!({ "id": id.to_json(), "fields": Value::Object(o).to_json() })
        }
        other => serde_json::json!({ "id": null, "fields": other.to_json() }),
    }
}

/// The refusal of a serialisation other than `latestValues`.
fn refuse_serialization(serialized_as: &Option<String>) -> Option<HttpResponse> {
    match serialized_as.as_deref() {
        None | Some("latestValues") => None,
        Some(other) => Some(unsupported(&format!("serializedAs {other:?}"))),
    }
}

async fn find(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<FindRequest>,
) -> HttpResponse {
    let access = match access(&req, &state).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let body = body.into_inner();
    if let Some(resp) = refuse_serialization(&body.serialized_as) {
        return resp;
    }
    if body.describe == Some(true) {
        return unsupported("describe");
    }
    let filter = match bigpeer_dql::legacy::to_dql(&body.query) {
        Ok(f) => f,
        Err(e) => return service_error(&state, &ServiceError::Dql(e)),
    };
    let mut statement = format!("SELECT * FROM {} WHERE {filter}", ident(&body.collection));
    if !body.sort.is_empty() {
        let keys: Vec<String> = body
            .sort
            .iter()
            .map(|s| {
                format!(
                    "{} {}",
                    path(&s.property),
                    if matches!(s.direction, Direction::Desc) {
                        "DESC"
                    } else {
                        "ASC"
                    }
                )
            })
            .collect();
        statement.push_str(&format!(" ORDER BY {}", keys.join(", ")));
    }
    statement.push_str(&format!(
        " LIMIT {}",
        body.limit
            .unwrap_or(DEFAULT_FIND_LIMIT)
            .min(DEFAULT_FIND_LIMIT)
    ));
    if let Some(o) = body.offset {
        statement.push_str(&format!(" OFFSET {o}"));
    }
    match state
        .executor
        .execute_as(&statement, &body.args, &access)
        .await
    {
        Ok(r) => HttpResponse::Ok().json(serde_json::json!({
            "documents": r.items.into_iter().map(document).collect::<Vec<_>>(),
            "txnId": r.txn,
        })),
        Err(e) => service_error(&state, &e),
    }
}

async fn find_by_id(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<FindByIdRequest>,
) -> HttpResponse {
    let access = match access(&req, &state).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let body = body.into_inner();
    if let Some(resp) = refuse_serialization(&body.serialized_as) {
        return resp;
    }
    if let Err(e) = DocId::new(body.id.clone()) {
        return error(StatusCode::BAD_REQUEST, e.code(), e.to_string());
    }
    let statement = format!("SELECT * FROM {} WHERE _id = :id", ident(&body.collection));
    let args = BTreeMap::from([("id".to_owned(), body.id.clone())]);
    match state.executor.execute_as(&statement, &args, &access).await {
        Ok(r) => match r.items.into_iter().next() {
            Some(item) => {
                let mut doc = document(item);
                if let Some(o) = doc.as_object_mut() {
                    o.insert("txnId".into(), r.txn.into());
                }
                HttpResponse::Ok().json(doc)
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

async fn count(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<CountRequest>,
) -> HttpResponse {
    let access = match access(&req, &state).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let body = body.into_inner();
    let filter = match bigpeer_dql::legacy::to_dql(&body.query) {
        Ok(f) => f,
        Err(e) => return service_error(&state, &ServiceError::Dql(e)),
    };
    let statement = format!(
        "SELECT COUNT(*) AS n FROM {} WHERE {filter}",
        ident(&body.collection)
    );
    match state
        .executor
        .execute_as(&statement, &body.args, &access)
        .await
    {
        Ok(r) => {
            let n = r
                .items
                .first()
                .and_then(|i| i.get_path(&["n"]))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            HttpResponse::Ok().json(serde_json::json!({ "count": n, "txnId": r.txn }))
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
