//! Positions of the change data capture sinks (`sql/0012_cdc_sinks.sql`): one row per sink,
//! leased by the process that publishes (`FOR UPDATE SKIP LOCKED`), as the webhooks are.

use super::{ChangeLogPage, Store, StoreError};

/// The sink's row when it has work (changes after its position, or a prune horizon past it)
/// and no other process holds it, locked.
const LEASE: &str = "SELECT s.position FROM cdc_sinks s WHERE s.name = $1 AND (\
       EXISTS (SELECT 1 FROM changes c WHERE c.seq > s.position) \
       OR (SELECT h.pruned_through FROM changes_horizon h WHERE h.id = 0) > s.position) \
     FOR UPDATE OF s SKIP LOCKED";

/// A sink this process holds: its row is locked (`FOR UPDATE`) in a transaction until
/// [`SinkLease::commit`] (or until the lease is dropped, which rolls back, as does a crash), so
/// that no other process publishes for it meanwhile.
pub struct SinkLease {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    store: Store,
    name: String,
    /// Every change at or below it has been published (as read when leased).
    pub position: i64,
}

impl std::fmt::Debug for SinkLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkLease")
            .field("name", &self.name)
            .field("position", &self.position)
            .finish()
    }
}

impl Store {
    /// Creates the sink's row at the current end of the change sequence, unless it exists (it
    /// gets the changes committed from now on). Returns its position.
    pub async fn ensure_cdc_sink(&self, name: &str) -> Result<i64, StoreError> {
        sqlx::query(
            "INSERT INTO cdc_sinks (name, position) \
             VALUES ($1, (SELECT v FROM seq_counter WHERE id = 0)) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .execute(&self.pool)
        .await?;
        self.cdc_sink_position(name)
            .await?
            .ok_or(StoreError::Internal("the sink's row is missing"))
    }

    /// The sink's position, `None` when it was never configured.
    pub async fn cdc_sink_position(&self, name: &str) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT position FROM cdc_sinks WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Moves the sink's position back (never forward) to `seq`: the changes after it are
    /// published again. `false` when there is no such sink.
    pub async fn rewind_cdc_sink(&self, name: &str, seq: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE cdc_sinks SET position = LEAST(position, $2), updated_at = now() \
             WHERE name = $1",
        )
        .bind(name)
        .bind(seq)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Locks the sink when it has work and no other process holds it (`SKIP LOCKED`); `None`
    /// otherwise.
    pub async fn lease_cdc_sink(&self, name: &str) -> Result<Option<SinkLease>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some(position) = sqlx::query_scalar::<_, i64>(LEASE)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(SinkLease {
            tx,
            store: self.clone(),
            name: name.to_owned(),
            position,
        }))
    }
}

impl SinkLease {
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

    /// Moves the sink's position forward to `seq` (committed with the lease).
    pub async fn advance(&mut self, seq: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE cdc_sinks SET position = GREATEST(position, $2), updated_at = now() \
             WHERE name = $1",
        )
        .bind(&self.name)
        .bind(seq)
        .execute(&mut *self.tx)
        .await?;
        self.position = self.position.max(seq);
        Ok(())
    }

    /// Commits the position and lets the row go.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }
}
