//! Liveness and readiness probes.
//!
//! - `GET /healthz`: 200 `{"status":"ok"}` whenever the process serves HTTP.
//! - `GET /readyz`: 200 `{"status":"ok"}` when Postgres answers and every migration this build
//!   knows is applied (with `"unreadableRows": n` when stored rows are known that cannot be
//!   read: readers skip them, so the server stays ready); otherwise 503 `{"status":"unavailable","code":...,"message":...,"hint":...}`.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::Serialize;

use crate::state::AppState;

/// A readiness probe must answer quickly, even when Postgres does not.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz));
}

/// `{"status": "ok"}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"status": "ok"}))]
pub struct Healthy {
    /// Always `ok`.
    #[schema(schema_with = ok_schema)]
    pub status: &'static str,
    /// `/readyz` only, when there are some: stored document rows that cannot be read (an
    /// undecodable state or id). Readers skip them (logged with their collection and id, and
    /// counted in `bigpeer_unreadable_rows_skipped_total`); EVICT them or restore them from a
    /// backup.
    #[serde(rename = "unreadableRows", skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 1)]
    pub unreadable_rows: Option<usize>,
}

fn ok_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(["ok"]))
        .build()
}

/// Why the server is not ready.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "status": "unavailable", "code": "store/not-migrated",
    "message": "the database lacks migrations that this build needs",
    "hint": "run `bigpeer migrate`, or start `bigpeer serve` without --no-migrate"
}))]
pub struct Unavailable {
    /// Always `unavailable`.
    #[schema(schema_with = unavailable_schema)]
    pub status: &'static str,
    /// The stable error code (`store/not-migrated`, `store/unavailable`, `store/timeout`, ...).
    pub code: String,
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

fn unavailable_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(["unavailable"]))
        .build()
}

/// Liveness: the process serves HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "healthz",
    security(()),
    responses((status = 200, description = "The process runs.", body = Healthy)),
)]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Healthy {
        status: "ok",
        unreadable_rows: None,
    })
}

/// Readiness: Postgres answers and every migration is applied.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "readyz",
    security(()),
    responses(
        (status = 200, description = "Ready to serve requests.", body = Healthy),
        (status = 503, description = "Not ready: Postgres does not answer (in time), or \
            migrations are missing.", body = Unavailable),
    ),
)]
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.store.known_down() {
        return unavailable(
            "store/unavailable",
            "Postgres is unreachable".to_string(),
            "check that Postgres runs and accepts connections",
        );
    }
    match tokio::time::timeout(READY_TIMEOUT, state.store.ready()).await {
        Ok(Ok(true)) => HttpResponse::Ok().json(Healthy {
            status: "ok",
            unreadable_rows: Some(state.store.unreadable_rows().1).filter(|n| *n > 0),
        }),
        Ok(Ok(false)) => unavailable(
            "store/not-migrated",
            "the database lacks migrations that this build needs".to_string(),
            "run `bigpeer migrate`, or start `bigpeer serve` without --no-migrate",
        ),
        Ok(Err(err)) => {
            tracing::warn!(code = err.code(), error = %err, "readiness check failed");
            unavailable(
                err.code(),
                err.to_string(),
                "check that Postgres runs and accepts connections",
            )
        }
        Err(_) => unavailable(
            "store/timeout",
            format!(
                "the database did not answer within {}s",
                READY_TIMEOUT.as_secs()
            ),
            "check that Postgres runs and is not overloaded",
        ),
    }
}

fn unavailable(code: &str, message: String, hint: &str) -> HttpResponse {
    HttpResponse::ServiceUnavailable().json(Unavailable {
        status: "unavailable",
        code: code.to_owned(),
        message,
        hint: hint.to_owned(),
    })
}
