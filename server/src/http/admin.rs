//! The key-management API, guarded by the admin key from the configuration:
//! `POST /api/v4/admin/keys`, `GET /api/v4/admin/keys`, `DELETE /api/v4/admin/keys/{id}`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::auth::secrets_equal;
use crate::app::AppState;
use crate::auth::{bearer, format_rfc3339, parse_rfc3339, ApiKey, AuthError, NewKey, Permissions};
use crate::service::{validate_permissions, ServiceError};

/// The body of `POST /api/v4/admin/keys`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateKey {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// RFC 3339; absent: the key does not expire.
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub permissions: Permissions,
}

/// A key as the admin API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub description: String,
    pub prefix: String,
    pub permissions: Permissions,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    /// The secret: only in the answer to the creation, never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl KeyView {
    fn of(k: &ApiKey, secret: Option<String>) -> KeyView {
        KeyView {
            id: k.id.clone(),
            name: k.name.clone(),
            description: k.description.clone(),
            prefix: k.prefix.clone(),
            permissions: k.permissions.clone(),
            created_at: format_rfc3339(k.created_at),
            expires_at: k.expires_at.map(format_rfc3339),
            revoked_at: k.revoked_at.map(format_rfc3339),
            key: secret,
        }
    }
}

fn error(status: actix_web::http::StatusCode, code: &str, message: String) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "code": code, "message": message }))
}

fn service_error(e: &ServiceError) -> HttpResponse {
    error(super::store::status_of(e), e.code(), e.to_string())
}

/// Checks the admin key: `None` when it is right, else the error response.
fn refuse_non_admin(req: &HttpRequest, state: &AppState) -> Option<HttpResponse> {
    use actix_web::http::StatusCode;
    let Some(expected) = &state.admin_key else {
        return Some(error(
            StatusCode::NOT_FOUND,
            "admin/disabled",
            "the admin API is off: start bigpeer with an admin key (--admin-key or BIGPEER_ADMIN_KEY)".into(),
        ));
    };
    let given = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    match given {
        None => Some(service_error(&ServiceError::Auth(
            AuthError::MissingCredentials,
        ))),
        Some(g) if secrets_equal(g, expected.expose()) => None,
        Some(_) => Some(error(
            StatusCode::FORBIDDEN,
            "auth/forbidden",
            "this is not the admin key".into(),
        )),
    }
}

async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<CreateKey>,
) -> HttpResponse {
    if let Some(resp) = refuse_non_admin(&req, &state) {
        return resp;
    }
    let body = body.into_inner();
    let expires_at = match body
        .expires_at
        .as_deref()
        .map(|t| parse_rfc3339(t).ok_or(t))
    {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(t)) => {
            return service_error(&ServiceError::Auth(AuthError::InvalidRequest(format!(
                "expiresAt {t:?} is not an RFC 3339 time such as 2027-01-31T12:00:00Z"
            ))))
        }
    };
    if let Err(e) = validate_permissions(&body.permissions) {
        return service_error(&e);
    }
    let new = NewKey {
        name: body.name,
        description: body.description,
        expires_at,
        permissions: body.permissions,
    };
    match state.keys.create(new).await {
        Ok(created) => {
            HttpResponse::Created().json(KeyView::of(&created.key, Some(created.secret)))
        }
        Err(e) => service_error(&ServiceError::Auth(e)),
    }
}

async fn list(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Some(resp) = refuse_non_admin(&req, &state) {
        return resp;
    }
    match state.keys.list().await {
        Ok(keys) => HttpResponse::Ok().json(
            keys.iter()
                .map(|k| KeyView::of(k, None))
                .collect::<Vec<_>>(),
        ),
        Err(e) => service_error(&ServiceError::Auth(e)),
    }
}

async fn revoke(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> HttpResponse {
    if let Some(resp) = refuse_non_admin(&req, &state) {
        return resp;
    }
    match state.keys.revoke(&id).await {
        Ok(true) => HttpResponse::NoContent().finish(),
        Ok(false) => error(
            actix_web::http::StatusCode::NOT_FOUND,
            "auth/no-such-key",
            format!("there is no key {id:?}"),
        ),
        Err(e) => service_error(&ServiceError::Auth(e)),
    }
}

/// Registers the admin routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v4/admin/keys", web::post().to(create))
        .route("/api/v4/admin/keys", web::get().to(list))
        .route("/api/v4/admin/keys/{id}", web::delete().to(revoke));
}
