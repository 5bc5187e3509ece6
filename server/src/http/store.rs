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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    /// One DQL statement.
    pub statement: String,
    /// Values for the statement's `:name` parameters.
    #[serde(default)]
    pub args: Option<BTreeMap<String, Value>>,
}

/// The answer, success or failure (Ditto's envelope).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecuteResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<i64>,
    pub query_type: &'static str,
    pub items: Vec<Value>,
    pub mutated_document_ids: Vec<Value>,
    pub error: ErrorBody,
    pub warnings: Vec<Warning>,
    pub total_warnings_count: usize,
}

/// `{}` on success; `{code, description, ...}` on failure.
#[derive(Debug, Serialize, Default)]
pub struct ErrorBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where in the statement the error is (1-based), for DQL errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct Warning {
    #[serde(rename = "_id", skip_serializing_if = "Option::is_none")]
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
            c if c.starts_with("crdt/") || c.starts_with("document/") => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
    }
}

/// Renders a service error in the envelope.
pub fn error_response(e: &ServiceError) -> HttpResponse {
    let status = status_of(e);
    let position = match e {
        ServiceError::Dql(d) if d.line > 0 => Some((d.line, d.column)),
        _ => None,
    };
    let description = if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(error = %e, code = e.code(), "request failed");
        "internal error".to_owned()
    } else {
        e.to_string()
    };
    HttpResponse::build(status).json(ExecuteResponse::error(e.code(), description, position))
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

/// `POST /api/v4/store/execute`.
pub async fn execute(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<ExecuteRequest>,
) -> HttpResponse {
    let (store, executor) = (&state.store, &state.executor);
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
    let body = body.into_inner();
    let args = body.args.unwrap_or_default();
    match executor.execute_as(&body.statement, &args, &access).await {
        Ok(r) => HttpResponse::Ok().json(ExecuteResponse::ok(r)),
        Err(e) => {
            state.metrics.error(e.code());
            error_response(&e)
        }
    }
}

/// JSON bodies: malformed JSON, wrong types and unknown fields get the error envelope (400),
/// oversized bodies 413.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|err, _req| {
            use actix_web::error::JsonPayloadError;
            let (status, code) = match &err {
                JsonPayloadError::OverflowKnownLength { .. }
                | JsonPayloadError::Overflow { .. } => {
                    (StatusCode::PAYLOAD_TOO_LARGE, "request/too-large")
                }
                JsonPayloadError::ContentType => {
                    (StatusCode::UNSUPPORTED_MEDIA_TYPE, "request/content-type")
                }
                _ => (StatusCode::BAD_REQUEST, "request/invalid-json"),
            };
            let resp = HttpResponse::build(status).json(ExecuteResponse::error(
                code,
                err.to_string(),
                None,
            ));
            actix_web::error::InternalError::from_response(err, resp).into()
        })
}

/// Registers the store routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v4/store/execute", web::post().to(execute));
}
