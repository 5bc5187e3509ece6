//! The key-management API, guarded by the admin key from the configuration:
//! `POST /api/v4/admin/keys`, `GET /api/v4/admin/keys`, `DELETE /api/v4/admin/keys/{id}`.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, Plain, Problem};
use super::extract::{refuse_nul, AdminCall, Failure, NoBody, Validate};
use super::openapi::ErrorMessage;
use crate::auth::{format_rfc3339, parse_rfc3339, ApiKey, AuthError, NewKey, Permissions};
use crate::service::validate_permissions;

/// The body of `POST /api/v4/admin/keys`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({
    "name": "me",
    "permissions": {"read": {"everything": true}, "write": {"queriesByCollection": {"cars": ["true"]}}}
}))]
pub struct CreateKey {
    /// A name to recognise the key by.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Expiry as an RFC 3339 time (`2027-01-31T12:00:00Z`); absent or null: the key does not
    /// expire.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// What the key may read and write; absent: nothing.
    #[serde(default)]
    pub permissions: Permissions,
}

/// A key as the admin API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "id": "key_0123456789abcdef", "name": "me", "description": "", "prefix": "bpk_0123",
    "permissions": {"read": {"everything": true, "queriesByCollection": {}},
        "write": {"everything": true, "queriesByCollection": {}}, "remoteQuery": false},
    "createdAt": "2026-01-31T12:00:00Z", "expiresAt": null, "revokedAt": null
}))]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub description: String,
    /// The first characters of the secret, to recognise it by.
    pub prefix: String,
    pub permissions: Permissions,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; null: never.
    #[schema(required = true)]
    pub expires_at: Option<String>,
    /// RFC 3339; null: not revoked.
    #[schema(required = true)]
    pub revoked_at: Option<String>,
    /// The secret: only in the answer to the creation, never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
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

impl Validate for CreateKey {
    type Valid = NewKey;

    fn validate(self) -> Result<NewKey, Failure> {
        let permissions = serde_json::to_value(&self.permissions)
            .map(|p| bigpeer_schema::limits::json_has_nul(&p))
            .unwrap_or(false);
        refuse_nul(
            "the key",
            [self.name.as_str(), self.description.as_str()]
                .into_iter()
                .chain(self.expires_at.as_deref()),
            &Default::default(),
        )?;
        if permissions {
            return Err(Problem::Nul("the key".to_owned()).into());
        }
        let expires_at = match self.expires_at.as_deref() {
            None => None,
            Some(t) => Some(parse_rfc3339(t).ok_or_else(|| {
                Problem::from(AuthError::InvalidRequest(format!(
                    "expiresAt {t:?} is not an RFC 3339 time such as 2027-01-31T12:00:00Z"
                )))
            })?),
        };
        validate_permissions(&self.permissions).map_err(Problem::from)?;
        Ok(NewKey {
            name: self.name,
            description: self.description,
            expires_at,
            permissions: self.permissions,
        })
    }
}

/// Create an API key.
///
/// The answer holds the secret (`key`) this once only; it is stored hashed.
#[utoipa::path(
    post,
    path = "/api/v4/admin/keys",
    tag = "admin",
    operation_id = "createKey",
    security(("admin_key" = [])),
    request_body(content = CreateKey, content_type = "application/json"),
    responses(
        (status = 201, description = "The key, with its secret.", body = KeyView),
        (status = 400, description = "Bad permissions or expiry (`auth/invalid-request`), \
            text holding U+0000 (`request/nul-character`), \
            malformed JSON, wrong types or unknown fields (`request/invalid-json`).",
            body = ErrorMessage),
        (status = 401, description = "No key given (`auth/missing-credentials`).",
            body = ErrorMessage),
        (status = 403, description = "Not the admin key (`auth/forbidden`).", body = ErrorMessage,
            example = json!({"code": "auth/forbidden", "message": "this is not the admin key"})),
        (status = 404, description = "The admin API is off: the server has no admin key \
            (`admin/disabled`).", body = ErrorMessage),
        (status = 413, description = "The body is larger than 4 MiB (`request/too-large`).",
            body = ErrorMessage),
        (status = 415, description = "The body is not `application/json` \
            (`request/content-type`).", body = ErrorMessage),
        (status = 503, description = "Postgres is unavailable (`auth/backend`).",
            body = ErrorMessage),
    )
)]
async fn create(call: AdminCall<CreateKey, Plain>) -> Result<HttpResponse, ApiError<Plain>> {
    let created = call.state.keys.create(call.body).await?;
    Ok(HttpResponse::Created().json(KeyView::of(&created.key, Some(created.secret))))
}

/// List the API keys, without their secrets.
#[utoipa::path(
    get,
    path = "/api/v4/admin/keys",
    tag = "admin",
    operation_id = "listKeys",
    security(("admin_key" = [])),
    responses(
        (status = 200, description = "Every key, revoked ones too.", body = Vec<KeyView>),
        (status = 401, description = "No key given (`auth/missing-credentials`).",
            body = ErrorMessage),
        (status = 403, description = "Not the admin key (`auth/forbidden`).", body = ErrorMessage,
            example = json!({"code": "auth/forbidden", "message": "this is not the admin key"})),
        (status = 404, description = "The admin API is off: the server has no admin key \
            (`admin/disabled`).", body = ErrorMessage),
        (status = 503, description = "Postgres is unavailable (`auth/backend`).",
            body = ErrorMessage),
    )
)]
async fn list(call: AdminCall<NoBody, Plain>) -> Result<HttpResponse, ApiError<Plain>> {
    let keys = call.state.keys.list().await?;
    Ok(HttpResponse::Ok().json(
        keys.iter()
            .map(|k| KeyView::of(k, None))
            .collect::<Vec<_>>(),
    ))
}

/// Revoke an API key; it stops working within a second.
#[utoipa::path(
    delete,
    path = "/api/v4/admin/keys/{id}",
    tag = "admin",
    operation_id = "revokeKey",
    security(("admin_key" = [])),
    params(("id" = String, Path, description = "The key's id (`key_...`).")),
    responses(
        (status = 204, description = "Revoked."),
        (status = 401, description = "No key given (`auth/missing-credentials`).",
            body = ErrorMessage),
        (status = 403, description = "Not the admin key (`auth/forbidden`).", body = ErrorMessage,
            example = json!({"code": "auth/forbidden", "message": "this is not the admin key"})),
        (status = 404, description = "No such key (`auth/no-such-key`), or the admin API \
            is off (`admin/disabled`).", body = ErrorMessage),
        (status = 503, description = "Postgres is unavailable (`auth/backend`).",
            body = ErrorMessage),
    )
)]
async fn revoke(
    call: AdminCall<NoBody, Plain>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError<Plain>> {
    let no_such_key = || Problem::NoSuchKey(format!("there is no key {:?}", id.as_str()));
    // No key id holds U+0000 (and Postgres cannot compare text that does).
    if id.contains('\0') || !call.state.keys.revoke(&id).await? {
        return Err(no_such_key().into());
    }
    Ok(HttpResponse::NoContent().finish())
}

/// Registers the admin routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v4/admin/keys", web::post().to(create))
        .route("/api/v4/admin/keys", web::get().to(list))
        .route("/api/v4/admin/keys/{id}", web::delete().to(revoke));
}
