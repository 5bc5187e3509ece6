//! Webhook registrations as stored (`sql/0011_webhooks.sql`): the queries behind the admin API's
//! `/api/v4/admin/webhooks` and `bigpeer webhooks`.

use sqlx::Row;

use super::{ChangeLogPage, Store, StoreError};

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

/// One request of a webhook (a batch of its events) and its attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRow {
    /// `msg_...`: the `webhook-id` header, the same on every attempt.
    pub id: String,
    pub webhook_id: String,
    /// The positions the batch covers: its first event's, and the last change it looked at.
    pub first_seq: i64,
    pub last_seq: i64,
    pub events: i32,
    /// When the batch's first change committed (unix milliseconds).
    pub first_committed_at_ms: i64,
    /// The request body, as sent on every attempt.
    pub body: Vec<u8>,
    /// `pending`, `failed` (to retry), `delivered` or `dead`.
    pub status: String,
    pub attempts: i32,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    /// Unix milliseconds.
    pub next_attempt_at_ms: i64,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

/// What became of an attempt.
#[derive(Debug, Clone)]
pub enum AttemptOutcome {
    /// The receiver answered 2xx: the webhook's position moves past the batch.
    Delivered { status: i32 },
    /// Retry after `retry_in_ms`; or, with `dead`, give up on the batch (it is dead-lettered and
    /// the position moves on). `disable`: turn the webhook off, with this reason.
    Failed {
        status: Option<i32>,
        error: String,
        retry_in_ms: i64,
        dead: bool,
        disable: Option<String>,
    },
}

const SELECT_DELIVERY: &str = "SELECT id, webhook_id, first_seq, last_seq, events, body, status, \
     attempts, last_status, last_error, (extract(epoch FROM next_attempt_at) * 1000)::int8, \
     (extract(epoch FROM created_at) * 1000)::int8, (extract(epoch FROM finished_at) * 1000)::int8, \
     (extract(epoch FROM first_committed_at) * 1000)::int8 \
     FROM webhook_deliveries";

fn delivery_row(r: &sqlx::postgres::PgRow) -> Result<DeliveryRow, StoreError> {
    Ok(DeliveryRow {
        id: r.try_get(0)?,
        webhook_id: r.try_get(1)?,
        first_seq: r.try_get(2)?,
        last_seq: r.try_get(3)?,
        events: r.try_get(4)?,
        body: r.try_get(5)?,
        status: r.try_get(6)?,
        attempts: r.try_get(7)?,
        last_status: r.try_get(8)?,
        last_error: r.try_get(9)?,
        next_attempt_at_ms: r.try_get(10)?,
        created_at_ms: r.try_get(11)?,
        finished_at_ms: r.try_get(12)?,
        first_committed_at_ms: r.try_get(13)?,
    })
}

/// A webhook that has work (a delivery due, or no open delivery and changes after its
/// position) and that no other process holds, locked.
const LEASE: &str = "SELECT w.id, w.url, w.collections, w.filter, w.description, w.secret, \
     w.enabled, w.disabled_reason, w.position, w.consecutive_failures, \
     extract(epoch FROM w.created_at)::int8, extract(epoch FROM w.updated_at)::int8 \
     FROM webhooks w WHERE w.enabled AND (\
       EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.webhook_id = w.id \
               AND d.status IN ('pending', 'failed') AND d.next_attempt_at <= now()) \
       OR (NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.webhook_id = w.id \
                       AND d.status IN ('pending', 'failed')) \
           AND EXISTS (SELECT 1 FROM changes c WHERE c.seq > w.position))) \
     ORDER BY random() LIMIT 1 FOR UPDATE OF w SKIP LOCKED";

/// A webhook this process holds for delivery: its row is locked (`FOR UPDATE`) in a transaction
/// until [`WebhookLease::commit`] (or until the lease is dropped, which rolls back, as does a
/// crash), so that no other process delivers it meanwhile.
pub struct WebhookLease {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    store: Store,
    pub webhook: WebhookRow,
    /// Its oldest open (pending or failed) delivery, if any.
    pub open: Option<DeliveryRow>,
}

impl std::fmt::Debug for WebhookLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookLease")
            .field("webhook", &self.webhook.id)
            .field("open", &self.open.as_ref().map(|d| &d.id))
            .finish()
    }
}

impl Store {
    /// Locks a webhook that has work and that no other process holds (`SKIP LOCKED`); `None`
    /// when there is none.
    pub async fn lease_webhook(&self) -> Result<Option<WebhookLease>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query(LEASE).fetch_optional(&mut *tx).await? else {
            return Ok(None);
        };
        let webhook = webhook_row(&row)?;
        let sql = format!(
            "{SELECT_DELIVERY} WHERE webhook_id = $1 AND status IN ('pending', 'failed') \
             ORDER BY first_seq, created_at LIMIT 1"
        );
        // Constant text; the id is a bound parameter.
        let open = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&webhook.id)
            .fetch_optional(&mut *tx)
            .await?
            .as_ref()
            .map(delivery_row)
            .transpose()?;
        Ok(Some(WebhookLease {
            tx,
            store: self.clone(),
            webhook,
            open,
        }))
    }

    /// A webhook's deliveries, newest first, at most `limit`; of one status when given.
    pub async fn webhook_deliveries(
        &self,
        webhook_id: &str,
        status: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let sql = format!(
            "{SELECT_DELIVERY} WHERE webhook_id = $1 AND ($2::text IS NULL OR status = $2) \
             ORDER BY first_seq DESC, created_at DESC LIMIT $3"
        );
        // Constant text; every value is a bound parameter.
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(webhook_id)
            .bind(status)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(delivery_row).collect()
    }

    /// Replays deliveries of a webhook: those given (failed, dead or delivered) are sent again
    /// (same id, same body) as soon as possible. Returns how many were found.
    pub async fn replay_deliveries(
        &self,
        webhook_id: &str,
        ids: &[String],
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now(), \
             finished_at = NULL WHERE webhook_id = $1 AND id = ANY($2)",
        )
        .bind(webhook_id)
        .bind(ids)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Replays a webhook's changes after `since`: its position goes back (never forward) to
    /// `since`. `false` when there is no such webhook.
    pub async fn replay_webhook_since(
        &self,
        webhook_id: &str,
        since: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE webhooks SET position = LEAST(position, $2), updated_at = now() WHERE id = $1",
        )
        .bind(webhook_id)
        .bind(since)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}

impl WebhookLease {
    /// [`Store::change_log_page`] of every collection, read on the lease's own connection.
    pub async fn change_log_page(
        &mut self,
        after: i64,
        limit: i64,
    ) -> Result<ChangeLogPage, StoreError> {
        self.store
            .change_log_page_on(&mut self.tx, after, limit)
            .await
    }

    /// The database's sequence space (`seq_counter.epoch`), read on the lease's connection.
    pub async fn epoch(&mut self) -> Result<String, StoreError> {
        Store::epoch_on(&mut self.tx).await
    }
    /// Stores a new pending delivery (committed with the lease).
    pub async fn create_delivery(
        &mut self,
        id: &str,
        first_seq: i64,
        last_seq: i64,
        events: i32,
        first_committed_at_us: i64,
        body: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, webhook_id, first_seq, last_seq, events, body, status, first_committed_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', to_timestamp($7 / 1000000.0))",
        )
        .bind(id)
        .bind(&self.webhook.id)
        .bind(first_seq)
        .bind(last_seq)
        .bind(events)
        .bind(body)
        .bind(first_committed_at_us as f64)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Moves the webhook's position forward to `seq` (changes it does not get).
    pub async fn advance(&mut self, seq: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE webhooks SET position = GREATEST(position, $2) WHERE id = $1")
            .bind(&self.webhook.id)
            .bind(seq)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Records an attempt of the open delivery.
    pub async fn record(&mut self, outcome: &AttemptOutcome) -> Result<(), StoreError> {
        let Some(d) = &self.open else {
            return Ok(());
        };
        match outcome {
            AttemptOutcome::Delivered { status } => {
                sqlx::query(
                    "UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1, \
                     last_status = $2, last_error = NULL, finished_at = now() WHERE id = $1",
                )
                .bind(&d.id)
                .bind(status)
                .execute(&mut *self.tx)
                .await?;
                sqlx::query(
                    "UPDATE webhooks SET position = GREATEST(position, $2), \
                     consecutive_failures = 0 WHERE id = $1",
                )
                .bind(&self.webhook.id)
                .bind(d.last_seq)
                .execute(&mut *self.tx)
                .await?;
            }
            AttemptOutcome::Failed {
                status,
                error,
                retry_in_ms,
                dead,
                disable,
            } => {
                sqlx::query(
                    "UPDATE webhook_deliveries SET status = CASE WHEN $5 THEN 'dead' ELSE 'failed' END, \
                     attempts = attempts + 1, last_status = $2, last_error = $3, \
                     next_attempt_at = now() + $4 * interval '1 millisecond', \
                     finished_at = CASE WHEN $5 THEN now() END WHERE id = $1",
                )
                .bind(&d.id)
                .bind(status)
                .bind(error)
                .bind(*retry_in_ms as f64)
                .bind(dead)
                .execute(&mut *self.tx)
                .await?;
                sqlx::query(
                    "UPDATE webhooks SET consecutive_failures = consecutive_failures + 1, \
                     position = CASE WHEN $2 THEN GREATEST(position, $3) ELSE position END, \
                     enabled = enabled AND $4::text IS NULL, \
                     disabled_reason = coalesce($4, disabled_reason) WHERE id = $1",
                )
                .bind(&self.webhook.id)
                .bind(dead)
                .bind(d.last_seq)
                .bind(disable.as_deref())
                .execute(&mut *self.tx)
                .await?;
            }
        }
        Ok(())
    }

    /// Disables the webhook, with the reason.
    pub async fn record_disabled(&mut self, reason: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE webhooks SET enabled = false, disabled_reason = $2 WHERE id = $1")
            .bind(&self.webhook.id)
            .bind(reason)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// The newest position of the change sequence (read on the lease's connection).
    pub async fn head(&mut self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT v FROM seq_counter WHERE id = 0")
            .fetch_one(&mut *self.tx)
            .await?)
    }

    /// Commits what was recorded and releases the webhook.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }
}
