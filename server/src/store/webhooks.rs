//! Webhook registrations as stored (`sql/0011_webhooks.sql`): the queries behind the admin API's
//! `/api/v4/admin/webhooks` and `bigpeer webhooks`.

use sqlx::Row;

use super::{Store, StoreError};

/// One stored webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRow {
    pub id: String,
    pub url: String,
    /// `None`: every collection.
    pub collections: Option<Vec<String>>,
    /// A DQL expression; `None`: every document.
    pub filter: Option<String>,
    pub description: String,
    /// `whsec_...`.
    pub secret: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    /// Every change at or below this position is delivered, dead-lettered or older than the
    /// webhook.
    pub position: i64,
    pub consecutive_failures: i32,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
}

/// A webhook to store.
#[derive(Debug, Clone, Copy)]
pub struct NewWebhookRow<'a> {
    pub id: &'a str,
    pub url: &'a str,
    pub collections: Option<&'a [String]>,
    pub filter: Option<&'a str>,
    pub description: &'a str,
    pub secret: &'a str,
}

/// Changes to a webhook; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct WebhookPatch {
    pub url: Option<String>,
    /// `Some(None)`: every collection.
    pub collections: Option<Option<Vec<String>>>,
    /// `Some(None)`: every document.
    pub filter: Option<Option<String>>,
    pub description: Option<String>,
    /// Enabling a webhook clears its failure count and the reason it was disabled.
    pub enabled: Option<bool>,
}

const SELECT_WEBHOOK: &str = "SELECT id, url, collections, filter, description, secret, enabled, \
     disabled_reason, position, consecutive_failures, extract(epoch FROM created_at)::int8, \
     extract(epoch FROM updated_at)::int8 FROM webhooks";

fn webhook_row(r: &sqlx::postgres::PgRow) -> Result<WebhookRow, StoreError> {
    Ok(WebhookRow {
        id: r.try_get(0)?,
        url: r.try_get(1)?,
        collections: r.try_get(2)?,
        filter: r.try_get(3)?,
        description: r.try_get(4)?,
        secret: r.try_get(5)?,
        enabled: r.try_get(6)?,
        disabled_reason: r.try_get(7)?,
        position: r.try_get(8)?,
        consecutive_failures: r.try_get(9)?,
        created_at: r.try_get(10)?,
        updated_at: r.try_get(11)?,
    })
}

impl Store {
    /// Stores a new webhook, which starts at the current end of the change sequence (it gets
    /// the changes committed from now on).
    pub async fn insert_webhook(&self, w: NewWebhookRow<'_>) -> Result<WebhookRow, StoreError> {
        let sql = format!(
            "WITH new AS (INSERT INTO webhooks (id, url, collections, filter, description, secret, position) \
             VALUES ($1, $2, $3, $4, $5, $6, (SELECT v FROM seq_counter WHERE id = 0)) RETURNING *) \
             {}",
            SELECT_WEBHOOK.replace("FROM webhooks", "FROM new")
        );
        // Constant text; every value is a bound parameter.
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(w.id)
            .bind(w.url)
            .bind(w.collections)
            .bind(w.filter)
            .bind(w.description)
            .bind(w.secret)
            .fetch_one(&self.pool)
            .await?;
        webhook_row(&row)
    }

    /// Every webhook, oldest first.
    pub async fn list_webhooks(&self) -> Result<Vec<WebhookRow>, StoreError> {
        let sql = format!("{SELECT_WEBHOOK} ORDER BY created_at, id");
        // Constant text.
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(webhook_row).collect()
    }

    /// One webhook.
    pub async fn webhook(&self, id: &str) -> Result<Option<WebhookRow>, StoreError> {
        let sql = format!("{SELECT_WEBHOOK} WHERE id = $1");
        // Constant text; the id is a bound parameter.
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(webhook_row).transpose()
    }

    /// Applies `patch`; the webhook as it is now, or `None` when there is no such webhook.
    pub async fn update_webhook(
        &self,
        id: &str,
        patch: &WebhookPatch,
    ) -> Result<Option<WebhookRow>, StoreError> {
        let sql = format!(
            "WITH changed AS (UPDATE webhooks SET \
               url = coalesce($2, url), \
               collections = CASE WHEN $3 THEN $4 ELSE collections END, \
               filter = CASE WHEN $5 THEN $6 ELSE filter END, \
               description = coalesce($7, description), \
               enabled = coalesce($8, enabled), \
               disabled_reason = CASE WHEN $8 THEN NULL ELSE disabled_reason END, \
               consecutive_failures = CASE WHEN $8 THEN 0 ELSE consecutive_failures END, \
               updated_at = now() \
             WHERE id = $1 RETURNING *) {}",
            SELECT_WEBHOOK.replace("FROM webhooks", "FROM changed")
        );
        // Constant text; every value is a bound parameter.
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(patch.url.as_deref())
            .bind(patch.collections.is_some())
            .bind(patch.collections.clone().flatten())
            .bind(patch.filter.is_some())
            .bind(patch.filter.clone().flatten())
            .bind(patch.description.as_deref())
            .bind(patch.enabled)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(webhook_row).transpose()
    }

    /// Deletes a webhook and its deliveries; `false` when there is no such webhook.
    pub async fn delete_webhook(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM webhooks WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
