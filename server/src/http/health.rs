//! Liveness and readiness probes.
//!
//! - `GET /healthz`: 200 `{"status":"ok"}` whenever the process serves HTTP.
//! - `GET /readyz`: 200 `{"status":"ok"}` when Postgres answers and every migration this build
//!   knows is applied; otherwise 503 `{"status":"unavailable","code":...,"message":...,"hint":...}`.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::app::AppState;

/// A readiness probe must answer quickly, even when Postgres does not.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match tokio::time::timeout(READY_TIMEOUT, state.store.ready()).await {
        Ok(Ok(true)) => HttpResponse::Ok().json(json!({ "status": "ok" })),
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
    HttpResponse::ServiceUnavailable().json(json!({
        "status": "unavailable",
        "code": code,
        "message": message,
        "hint": hint,
    }))
}
