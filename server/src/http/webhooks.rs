//! The webhook admin API, guarded by the admin key: `POST`/`GET /api/v4/admin/webhooks`,
//! `GET`/`PATCH`/`DELETE /api/v4/admin/webhooks/{id}`.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Deserializer, Serialize};

use super::error::{ApiError, Plain};
use super::extract::{AdminCall, Failure, NoBody, Validate};
use super::openapi::ErrorMessage;
use crate::auth::format_rfc3339;
use crate::store::{DeliveryRow, WebhookPatch, WebhookRow};
use crate::webhooks::{NewWebhook, Replay, WebhookError};

/// The body of `POST /api/v4/admin/webhooks`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({
    "url": "https://hooks.example.com/bigpeer",
    "collections": ["orders"],
    "filter": "status = 'paid'",
    "description": "paid orders to billing"
}))]
pub struct CreateWebhook {
    /// Where the events are POSTed (`http://` or `https://`; loopback and private addresses
    /// only with `webhook_allow_private`).
    pub url: String,
    /// The collections whose changes it gets; absent or null: every collection.
    #[serde(default)]
    pub collections: Option<Vec<String>>,
    /// A DQL expression: only changes whose new document (or old, for a removal) matches it.
    #[serde(default)]
    pub filter: Option<String>,
    #[serde(default)]
    pub description: String,
}

impl Validate for CreateWebhook {
    type Valid = NewWebhook;

    /// The fields are checked by the registry (one place for the HTTP API and the CLI).
    fn validate(self) -> Result<NewWebhook, Failure> {
        Ok(NewWebhook {
            url: self.url,
            collections: self.collections,
            filter: self.filter,
            description: self.description,
        })
    }
}

/// `Some(value)` for a field that is present (null included), `None` for an absent one.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The body of `PATCH /api/v4/admin/webhooks/{id}`: the fields to change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"enabled": true, "collections": null}))]
pub struct UpdateWebhook {
    #[serde(default)]
    pub url: Option<String>,
    /// Null: every collection.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>)]
    pub collections: Option<Option<Vec<String>>>,
    /// Null: every document.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub filter: Option<Option<String>>,
    #[serde(default)]
    pub description: Option<String>,
    /// `true` enables a disabled webhook again (its failure count starts over).
    #[serde(default)]
    pub enabled: Option<bool>,
}

impl Validate for UpdateWebhook {
    type Valid = WebhookPatch;

    fn validate(self) -> Result<WebhookPatch, Failure> {
        Ok(WebhookPatch {
            url: self.url,
            collections: self.collections,
            filter: self.filter,
            description: self.description,
            enabled: self.enabled,
        })
    }
}

/// A webhook as the admin API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "id": "wh_0123456789abcdef", "url": "https://hooks.example.com/bigpeer",
    "collections": ["orders"], "filter": "status = 'paid'", "description": "paid orders to billing",
    "enabled": true, "disabledReason": null, "position": 1042, "consecutiveFailures": 0,
    "createdAt": "2026-12-07T12:00:00Z", "updatedAt": "2026-12-07T12:00:00Z",
    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
}))]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    /// Null: every collection.
    #[schema(required = true)]
    pub collections: Option<Vec<String>>,
    /// Null: every document.
    #[schema(required = true)]
    pub filter: Option<String>,
    pub description: String,
    pub enabled: bool,
    /// Why it was disabled (after too many failures in a row).
    #[schema(required = true)]
    pub disabled_reason: Option<String>,
    /// Every change up to this position of the change sequence is delivered or dead-lettered.
    pub position: i64,
    pub consecutive_failures: i32,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// The signing secret (`whsec_...`, Standard Webhooks): only in the answer to the
    /// creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub secret: Option<String>,
}

impl WebhookView {
    fn of(w: WebhookRow, with_secret: bool) -> WebhookView {
        WebhookView {
            secret: with_secret.then(|| w.secret.clone()),
            id: w.id,
            url: w.url,
            collections: w.collections,
            filter: w.filter,
            description: w.description,
            enabled: w.enabled,
            disabled_reason: w.disabled_reason,
            position: w.position,
            consecutive_failures: w.consecutive_failures,
            created_at: format_rfc3339(w.created_at),
            updated_at: format_rfc3339(w.updated_at),
        }
    }
}

/// An id as given in the path: one that holds U+0000 names no webhook.
fn webhook_id(id: &str) -> Result<&str, WebhookError> {
    if id.contains('\0') {
        return Err(WebhookError::NotFound(id.replace('\0', "\\0")));
    }
    Ok(id)
}

/// Register a webhook.
///
/// It gets every change committed from now on, as signed POSTs of `{"events": [...]}`. The
/// answer holds the signing secret this once only.
#[utoipa::path(
    post,
    path = "/api/v4/admin/webhooks",
    tag = "admin",
    operation_id = "createWebhook",
    security(("admin_key" = [])),
    request_body(content = CreateWebhook, content_type = "application/json"),
    responses(
        (status = 201, description = "The webhook, with its secret.", body = WebhookView),
        (status = 400, description = "A bad field (`webhooks/invalid`), a refused URL \
            (`webhooks/invalid-url`), malformed JSON, wrong types or unknown fields \
            (`request/invalid-json`).", body = ErrorMessage,
            example = json!({"code": "webhooks/invalid-url", "message": "the webhook URL points to 127.0.0.1, a loopback, private or special-purpose address (set webhook_allow_private to allow it)"})),
        (status = 401, description = "No key given (`auth/missing-credentials`).",
            body = ErrorMessage),
        (status = 403, description = "Not the admin key (`auth/forbidden`).", body = ErrorMessage),
        (status = 404, description = "The admin API is off (`admin/disabled`).",
            body = ErrorMessage),
        (status = 415, description = "The body is not `application/json` \
            (`request/content-type`).", body = ErrorMessage),
        (status = 503, description = "Postgres is unavailable.", body = ErrorMessage),
    )
)]
async fn create(call: AdminCall<CreateWebhook, Plain>) -> Result<HttpResponse, ApiError<Plain>> {
    let created = call.state.webhooks.create(call.body).await?;
    Ok(HttpResponse::Created().json(WebhookView::of(created, true)))
}

/// List the webhooks (without their secrets).
#[utoipa::path(
    get,
    path = "/api/v4/admin/webhooks",
    tag = "admin",
    operation_id = "listWebhooks",
    security(("admin_key" = [])),
    responses(
        (status = 200, description = "Every webhook, oldest first.", body = Vec<WebhookView>),
        (status = 401, description = "No key given (`auth/missing-credentials`).",
            body = ErrorMessage),
        (status = 403, description = "Not the admin key (`auth/forbidden`).", body = ErrorMessage),
        (status = 404, description = "The admin API is off (`admin/disabled`).",
            body = ErrorMessage),
        (status = 503, description = "Postgres is unavailable.", body = ErrorMessage),
    )
)]
async fn list(call: AdminCall<NoBody, Plain>) -> Result<HttpResponse, ApiError<Plain>> {
    let all = call.state.webhooks.list().await?;
    Ok(HttpResponse::Ok().json(
        all.into_iter()
            .map(|w| WebhookView::of(w, false))
            .collect::<Vec<_>>(),
    ))
}

/// Show one webhook (without its secret).
#[utoipa::path(
    get,
    path = "/api/v4/admin/webhooks/{id}",
    tag = "admin",
    operation_id = "getWebhook",
    security(("admin_key" = [])),
    params(("id" = String, Path, description = "The webhook's id (`wh_...`).")),
    responses(
        (status = 200, description = "The webhook.", body = WebhookView),
        (status = 401, description = "No key given (`auth/missing-credentials`).",
            body = ErrorMessage),
        (status = 403, description = "Not the admin key (`auth/forbidden`).", body = ErrorMessage),
        (status = 404, description = "No such webhook (`webhooks/not-found`), or the admin API \
            is off (`admin/disabled`).", body = ErrorMessage),
        (status = 503, description = "Postgres is unavailable.", body = ErrorMessage),
    )
)]
async fn get(
    call: AdminCall<NoBody, Plain>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError<Plain>> {
    let w = call.state.webhooks.get(webhook_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(WebhookView::of(w, false)))
}

/// Change a webhook: its URL, collections, filter or description, or enable it again.
#[utoipa::path(
    patch,
    path = "/api/v4/admin/webhooks/{id}",
    tag = "admin",
    operation_id = "updateWebhook",
    security(("admin_key" = [])),
    params(("id" = String, Path, description = "The webhook's id (`wh_...`).")),
    request_body(content = UpdateWebhook, content_type = "application/json"),
    responses(
        (status = 200, description = "The webhook as it is now.", body = WebhookView),
        (status = 400, description = "A bad field (`webhooks/invalid`, `webhooks/invalid-url`, \
            `request/invalid-json`).", body = ErrorMessage),
        (status = 401, description = "No key given (`auth/missing-credentials`).",
            body = ErrorMessage),
        (status = 403, description = "Not the admin key (`auth/forbidden`).", body = ErrorMessage),
        (status = 404, description = "No such webhook (`webhooks/not-found`), or the admin API \
            is off (`admin/disabled`).", body = ErrorMessage),
        (status = 415, description = "The body is not `application/json` \
            (`request/content-type`).", body = ErrorMessage),
        (status = 503, description = "Postgres is unavailable.", body = ErrorMessage),
    )
)]
async fn update(
    call: AdminCall<UpdateWebhook, Plain>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError<Plain>> {
    let id = webhook_id(&id)?.to_owned();
    let w = call.state.webhooks.update(&id, call.body).await?;
    Ok(HttpResponse::Ok().json(WebhookView::of(w, false)))
}

/// Delete a webhook and its delivery history.
#[utoipa::path(
    delete,
    path = "/api/v4/admin/webhooks/{id}",
    tag = "admin",
    operation_id = "deleteWebhook",
    security(("admin_key" = [])),
    params(("id" = String, Path, description = "The webhook's id (`wh_...`).")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 401, description = "No key given (`auth/missing-credentials`).",
            body = ErrorMessage),
        (status = 403, description = "Not the admin key (`auth/forbidden`).", body = ErrorMessage),
        (status = 404, description = "No such webhook (`webhooks/not-found`), or the admin API \
            is off (`admin/disabled`).", body = ErrorMessage),
        (status = 503, description = "Postgres is unavailable.", body = ErrorMessage),
    )
)]
async fn delete(
    call: AdminCall<NoBody, Plain>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError<Plain>> {
    call.state.webhooks.delete(webhook_id(&id)?).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A delivery (one request of a batch of events) as the admin API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "id": "msg_0123456789abcdef0123456789abcdef", "status": "failed", "firstSeq": 1043,
    "lastSeq": 1050, "events": 3, "attempts": 2, "lastStatus": 503,
    "lastError": "HTTP 503 Service Unavailable: busy", "createdAt": "2026-12-07T12:00:00Z",
    "nextAttemptAt": "2026-12-07T12:00:04Z", "finishedAt": null
}))]
pub struct DeliveryView {
    /// The `webhook-id` header of every attempt.
    pub id: String,
    /// `pending`, `failed` (to be retried), `delivered` or `dead` (given up).
    pub status: String,
    pub first_seq: i64,
    pub last_seq: i64,
    /// Events in the batch.
    pub events: i32,
    pub attempts: i32,
    /// The receiver's HTTP status at the last attempt.
    #[schema(required = true)]
    pub last_status: Option<i32>,
    #[schema(required = true)]
    pub last_error: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339: when a pending or failed delivery is attempted next.
    pub next_attempt_at: String,
    /// RFC 3339: when it was delivered or dead-lettered.
    #[schema(required = true)]
    pub finished_at: Option<String>,
}

impl DeliveryView {
    fn of(d: DeliveryRow) -> DeliveryView {
        DeliveryView {
            id: d.id,
            status: d.status,
            first_seq: d.first_seq,
            last_seq: d.last_seq,
            events: d.events,
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error,
            created_at: format_rfc3339(d.created_at_ms / 1000),
            next_attempt_at: format_rfc3339(d.next_attempt_at_ms / 1000),
            finished_at: d.finished_at_ms.map(|t| format_rfc3339(t / 1000)),
        }
    }
}

/// The query of `GET /api/v4/admin/webhooks/{id}/deliveries`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Only deliveries with this status: `pending`, `failed`, `delivered` or `dead`.
    pub status: Option<String>,
}

/// List a webhook's deliveries, newest first (at most 100).
#[utoipa::path(
    get,
    path = "/api/v4/admin/webhooks/{id}/deliveries",
    tag = "admin",
    operation_id = "listWebhookDeliveries",
    security(("admin_key" = [])),
    params(("id" = String, Path, description = "The webhook's id (`wh_...`)."), DeliveriesQuery),
    responses(
        (status = 200, description = "The deliveries.", body = Vec<DeliveryView>),
        (status = 400, description = "An unknown status (`webhooks/invalid`).", body = ErrorMessage),
        (status = 401, description = "No key given (`auth/missing-credentials`).",
            body = ErrorMessage),
        (status = 403, description = "Not the admin key (`auth/forbidden`).", body = ErrorMessage),
        (status = 404, description = "No such webhook (`webhooks/not-found`), or the admin API \
            is off (`admin/disabled`).", body = ErrorMessage),
        (status = 503, description = "Postgres is unavailable.", body = ErrorMessage),
    )
)]
async fn deliveries(
    call: AdminCall<NoBody, Plain>,
    id: web::Path<String>,
    query: web::Query<DeliveriesQuery>,
) -> Result<HttpResponse, ApiError<Plain>> {
    let status = query.status.as_deref().map(|s| s.replace('\0', ""));
    let all = call
        .state
        .webhooks
        .deliveries(webhook_id(&id)?, status.as_deref())
        .await?;
    Ok(HttpResponse::Ok().json(all.into_iter().map(DeliveryView::of).collect::<Vec<_>>()))
}

/// The body of `POST /api/v4/admin/webhooks/{id}/replay`: one of the two fields.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"since": 1000}))]
pub struct ReplayWebhook {
    /// Send every change after this position again (the webhook's position goes back to it).
    #[serde(default)]
    pub since: Option<i64>,
    /// Send these deliveries again (dead ones, say): the same bodies under the same ids.
    #[serde(default)]
    pub deliveries: Option<Vec<String>>,
}

impl Validate for ReplayWebhook {
    type Valid = Replay;

    fn validate(self) -> Result<Replay, Failure> {
        match (self.since, self.deliveries) {
            (Some(since), None) => Ok(Replay::Since(since)),
            (None, Some(ids)) => Ok(Replay::Deliveries(
                ids.into_iter().map(|i| i.replace('\0', "")).collect(),
            )),
            _ => Err(super::error::Problem::from(WebhookError::Invalid(
                "give either since or deliveries".into(),
            ))
            .into()),
        }
    }
}

/// What a replay found.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayResult {
    /// Deliveries found and queued again (0 for `since`).
    pub deliveries: u64,
}

/// Send changes to a webhook again: every change after a position, or given deliveries.
#[utoipa::path(
    post,
    path = "/api/v4/admin/webhooks/{id}/replay",
    tag = "admin",
    operation_id = "replayWebhook",
    security(("admin_key" = [])),
    params(("id" = String, Path, description = "The webhook's id (`wh_...`).")),
    request_body(content = ReplayWebhook, content_type = "application/json"),
    responses(
        (status = 202, description = "Queued.", body = ReplayResult),
        (status = 400, description = "Neither or both fields (`webhooks/invalid`), malformed \
            JSON (`request/invalid-json`).", body = ErrorMessage),
        (status = 401, description = "No key given (`auth/missing-credentials`).",
            body = ErrorMessage),
        (status = 403, description = "Not the admin key (`auth/forbidden`).", body = ErrorMessage),
        (status = 404, description = "No such webhook (`webhooks/not-found`), or the admin API \
            is off (`admin/disabled`).", body = ErrorMessage),
        (status = 415, description = "The body is not `application/json` \
            (`request/content-type`).", body = ErrorMessage),
        (status = 503, description = "Postgres is unavailable.", body = ErrorMessage),
    )
)]
async fn replay(
    call: AdminCall<ReplayWebhook, Plain>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError<Plain>> {
    let id = webhook_id(&id)?.to_owned();
    let n = call.state.webhooks.replay(&id, call.body).await?;
    Ok(HttpResponse::Accepted().json(ReplayResult { deliveries: n }))
}

/// Registers the webhook admin routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v4/admin/webhooks", web::post().to(create))
        .route("/api/v4/admin/webhooks", web::get().to(list))
        .route("/api/v4/admin/webhooks/{id}", web::get().to(get))
        .route("/api/v4/admin/webhooks/{id}", web::patch().to(update))
        .route("/api/v4/admin/webhooks/{id}", web::delete().to(delete))
        .route(
            "/api/v4/admin/webhooks/{id}/deliveries",
            web::get().to(deliveries),
        )
        .route("/api/v4/admin/webhooks/{id}/replay", web::post().to(replay));
}
