//! The only code that talks to Postgres: documents, the commit-ordered change sequence,
//! transaction ids and migrations (`sql/`, embedded at build time).

mod changes;
mod commits;
mod connect;
mod documents;
mod error;
mod feed;
mod group;
mod health;
mod integrity;
mod keys;
mod queries;
mod reads;
mod scan;
mod sinks;
mod sites;
mod system;
mod txn;
mod webhooks;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bigpeer_schema::{Clock, Hlc, SiteId, Stamp};

use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;

pub use changes::{ChangeLogPage, ChangeMethod, ChangeRow};
pub use connect::{check_url, diagnose_connect, ConnectDiagnosis};
pub(crate) use documents::corrupt_row;
pub use documents::{materialize_with_id, Change, ChangePage, Committed, Outcome, StoredDoc};
pub use error::{Kind, StoreError};
pub use feed::{ChangeFeed, FeedOptions};
pub use group::{GroupCommit, GroupCommitOptions};
pub use health::{is_connection_lost, Health};
pub use keys::{KeyRow, NewKeyRow};
pub use queries::Items;
pub use scan::{Page, ScanRow};
pub use sinks::SinkLease;
pub use sites::SERVER_SITE_OWNER;
pub use txn::{TxnInfo, Working, NUL_CHARACTER};
pub use webhooks::{
    AttemptOutcome, DeliveryRow, NewWebhookRow, WebhookLease, WebhookPatch, WebhookRow,
};

/// The files of the repository's `sql/` folder, embedded by `build.rs`: `(version,
/// description, SQL)` in version order.
static MIGRATIONS: &[(i64, &str, &str)] = include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// Migrations from the repository's `sql/` folder, applied at start-up. Built as sqlx's
/// `migrate!` macro builds them (same versions, descriptions and SHA-384 checksums, so databases
/// migrated by earlier builds are recognised), without sqlx's proc-macro crates.
pub static MIGRATOR: std::sync::LazyLock<sqlx::migrate::Migrator> =
    std::sync::LazyLock::new(|| {
        use sqlx::migrate::{Migration, MigrationType, Migrator};
        Migrator::with_migrations(
            MIGRATIONS
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        std::borrow::Cow::Borrowed(description),
                        MigrationType::Simple,
                        sqlx::SqlSafeStr::into_sql_str(sqlx::AssertSqlSafe(sql)),
                        sql.starts_with("-- no-transaction"),
                    )
                })
                .collect(),
        )
    });

/// Pool settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    pub connect_timeout: Duration,
    /// Postgres cancels any statement running longer (`statement_timeout`); zero: no limit.
    pub statement_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 16,
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(30),
        }
    }
}

/// A handle on the Postgres store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
    /// This store instance's hybrid logical clock. Every process gets a fresh random site id, so
    /// several bigpeer processes can write to one Postgres without sharing clock state.
    clock: Arc<Mutex<Clock>>,
    /// The newest transaction id this process knows to be committed (its own commits, the
    /// change feed, reads of the counter): a lower bound of the database's, without a query.
    seen_txn: Arc<std::sync::atomic::AtomicI64>,
    /// Read pools of the threads that asked for one ([`Store::add_thread_reads`]).
    thread_reads: Arc<reads::ThreadReads>,
    /// The document size limit in force and the rows found unreadable.
    integrity: Arc<integrity::Integrity>,
    /// Whether Postgres is known to be down, and which connections are stale.
    health: Arc<Health>,
    /// The announced commits, for read-your-writes (started on first use).
    commits: commits::Commits,
}

impl Store {
    /// Connects to Postgres (`postgres://...` URL or key/value connection string) and checks that
    /// it answers.
    pub async fn connect(url: &str, opts: &StoreOptions) -> Result<Store, StoreError> {
        let connect: PgConnectOptions = url.parse().map_err(StoreError::Connect)?;
        let timeout_ms = opts.statement_timeout.as_millis().to_string();
        let connect = connect.options([("statement_timeout", timeout_ms.as_str())]);
        let health = Health::new();
        let pool = health
            .pool_options()
            .max_connections(opts.max_connections)
            .acquire_timeout(opts.connect_timeout)
            .connect_with(connect.clone())
            .await
            .map_err(StoreError::Connect)?;
        health.start_probe(connect);
        Ok(Store {
            pool,
            clock: Arc::new(Mutex::new(Clock::new(SiteId::random()))),
            seen_txn: Arc::new(std::sync::atomic::AtomicI64::new(0)),
            thread_reads: Arc::new(reads::ThreadReads::new()),
            health,
            integrity: Arc::new(integrity::Integrity::default()),
            commits: Default::default(),
        })
    }

    /// Sets the document size limit (`document_size_hard_limit_bytes`, in bytes of the encoded
    /// CRDT state): a write that would make a document larger is refused (`document/too-large`).
    pub fn set_document_size_limit(&self, bytes: u64) {
        self.integrity
            .set_document_setting(usize::try_from(bytes).unwrap_or(usize::MAX));
    }

    /// Caps the document size limit whatever the setting says (a document must fit in a sync
    /// frame). Only ever lowers the cap.
    pub fn cap_document_size(&self, bytes: usize) {
        self.integrity.cap_document(bytes);
    }

    /// The document size limit in force, in bytes of the encoded CRDT state.
    pub fn document_size_limit(&self) -> usize {
        self.integrity.document_limit()
    }

    /// Records a row that a reader could not read and skipped (logged, counted, remembered).
    pub(crate) fn skipped_row(
        &self,
        reader: &str,
        collection: &str,
        key: &[u8],
        seq: i64,
        error: &dyn std::fmt::Display,
    ) {
        self.integrity
            .skipped(reader, collection, key, seq, &error.to_string());
    }

    /// Records a stored value that a reader could not read and skipped, when the row is not
    /// known (a query's answer): logged and counted.
    pub(crate) fn skipped_value(&self, reader: &str, error: &dyn std::fmt::Display) {
        self.integrity.skipped_unknown(reader, &error.to_string());
    }

    /// How many times readers skipped an unreadable row, and how many distinct unreadable rows
    /// are known now.
    pub fn unreadable_rows(&self) -> (u64, usize) {
        (
            self.integrity.skipped_total(),
            self.integrity.known_unreadable(),
        )
    }

    /// Postgres' health as this process sees it.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// True while Postgres is known to be down: fail at once rather than wait for a connection.
    pub fn known_down(&self) -> bool {
        self.health.is_down()
    }

    /// Runs a read (idempotent work) and, when its connection turns out to be lost, runs it
    /// once more on a fresh connection (every connection open before is dropped from the pools
    /// first).
    pub async fn retry_read<T, F, Fut>(&self, read: F) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        match read().await {
            Err(StoreError::Database(e)) if is_connection_lost(&e) => {
                tracing::debug!(error = %e, "a read lost its connection; retrying it once");
                self.health.connection_lost();
                read().await
            }
            other => other,
        }
    }

    /// Records that transaction `txn` is committed.
    pub(crate) fn saw_txn(&self, txn: i64) {
        self.seen_txn
            .fetch_max(txn, std::sync::atomic::Ordering::Relaxed);
    }

    /// The newest committed transaction id this process has seen (0: none yet), without a query.
    pub fn seen_txn(&self) -> i64 {
        self.seen_txn.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A committed transaction id without a query: the newest this process has seen (a lower
    /// bound of [`Store::committed_txn`]; asks the database when it has seen none yet).
    pub async fn known_txn(&self) -> Result<i64, StoreError> {
        match self.seen_txn.load(std::sync::atomic::Ordering::Relaxed) {
            0 => self.committed_txn().await,
            t => Ok(t),
        }
    }

    /// This store's site id.
    pub fn site(&self) -> SiteId {
        self.with_clock(|c| c.site())
    }

    fn with_clock<T>(&self, f: impl FnOnce(&mut Clock) -> T) -> T {
        // A poisoned lock only means another thread panicked while holding it; the clock itself
        // is always in a valid state, so keep using it.
        let mut guard = self.clock.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// A fresh stamp for a local write to a document whose newest clock value is `seen`: newer
    /// than everything in the document, so that the write wins its conflicts. The process's
    /// clock follows `seen` only within the drift bound; past it (a stamp from a peer's clock far
    /// ahead, written before pushes were bounded), this one stamp is placed right after `seen`.
    pub(crate) fn stamp_after(&self, seen: Hlc) -> Result<Stamp, StoreError> {
        let mut stamp = self.with_clock(|c| {
            if c.observe(seen) == bigpeer_schema::hlc::Observe::Skewed {
                tracing::warn!(hlc = %seen, "document carries a clock far in the future; not following it");
            }
            c.tick()
        });
        if stamp.hlc <= seen {
            stamp.hlc = seen
                .0
                .checked_add(1)
                .map(Hlc)
                .ok_or_else(|| StoreError::ClockExhausted)?;
        }
        Ok(stamp)
    }

    /// Advances the clock past a remote value (within the drift bound).
    pub(crate) fn observe(&self, seen: Hlc) {
        self.with_clock(|c| {
            if c.observe(seen) == bigpeer_schema::hlc::Observe::Skewed {
                tracing::warn!(hlc = %seen, "remote change carries a clock far in the future; not following it");
            }
        });
    }

    /// Applies pending migrations (idempotent; safe with several processes starting at once).
    /// Applies the migrations the database lacks; returns how many it applied.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let before = self.applied_migrations().await?;
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(StoreError::Migrate)?;
        self.backfill_shapes().await?;
        Ok(self.applied_migrations().await?.saturating_sub(before))
    }

    /// How many migrations the database records as applied (0 before the first).
    async fn applied_migrations(&self) -> Result<usize, StoreError> {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(&self.pool)
            .await?;
        if !exists {
            return Ok(0);
        }
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(&self.pool)
            .await?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Documents written before `sql/0005_documents_shape.sql` have no `shape` (their typed
    /// state, which strict-mode queries read): it is computed from their CRDT state in batches,
    /// then the pending mark is removed. Safe to repeat or to run from several processes at
    /// once: a row is only updated while its state is still the one read, and every write since
    /// the migration sets `shape` itself.
    async fn backfill_shapes(&self) -> Result<(), StoreError> {
        const BATCH: i64 = 500;
        let pending: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pending_backfills WHERE name = 'documents_shape')",
        )
        .fetch_one(&self.pool)
        .await?;
        if !pending {
            return Ok(());
        }
        let (mut after_coll, mut after_id) = (String::new(), Vec::<u8>::new());
        let mut filled = 0u64;
        loop {
            let rows: Vec<(String, Vec<u8>, Vec<u8>)> = sqlx::query_as(
                "SELECT collection, id, meta FROM documents \
                 WHERE NOT deleted AND (collection, id) > ($1, $2) \
                 ORDER BY collection, id LIMIT $3",
            )
            .bind(&after_coll)
            .bind(&after_id)
            .bind(BATCH)
            .fetch_all(&self.pool)
            .await?;
            let Some((last_coll, last_id, _)) = rows.last() else {
                break;
            };
            (after_coll, after_id) = (last_coll.clone(), last_id.clone());
            let (mut colls, mut ids, mut metas, mut shapes) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (coll, key, meta) in rows {
                // A row that does not decode keeps no shape (it cannot be read anyway); the
                // backfill goes on.
                let decoded = bigpeer_schema::DocId::from_key(&key).and_then(|id| {
                    bigpeer_schema::Doc::decode(&meta).map_err(|e| {
                        match documents::corrupt_row(&coll, &id, e) {
                            StoreError::Schema(e) => e,
                            other => bigpeer_schema::SchemaError::Corrupt(other.to_string()),
                        }
                    })
                });
                let doc = match decoded {
                    Ok(doc) => doc,
                    Err(e) => {
                        self.skipped_row("shape backfill", &coll, &key, 0, &e);
                        continue;
                    }
                };
                if let Some(shape) = doc.shape() {
                    colls.push(coll);
                    ids.push(key);
                    metas.push(meta);
                    shapes.push(shape.to_json_string());
                }
            }
            if !colls.is_empty() {
                let done = sqlx::query(
                    "UPDATE documents d SET shape = t.s::jsonb \
                     FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::text[]) AS t(c, i, m, s) \
                     WHERE d.collection = t.c AND d.id = t.i AND d.meta = t.m",
                )
                .bind(&colls)
                .bind(&ids)
                .bind(&metas)
                .bind(&shapes)
                .execute(&self.pool)
                .await?;
                filled += done.rows_affected();
            }
        }
        sqlx::query("DELETE FROM pending_backfills WHERE name = 'documents_shape'")
            .execute(&self.pool)
            .await?;
        tracing::info!(documents = filled, "typed document states backfilled");
        Ok(())
    }

    /// True when Postgres answers and every migration this build knows has been applied.
    pub async fn ready(&self) -> Result<bool, StoreError> {
        let applied: i64 =
            sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await
                .or_else(|e| match &e {
                    sqlx::Error::Database(d) if d.code().as_deref() == Some("42P01") => Ok(0),
                    _ => Err(e),
                })?;
        Ok(applied as usize >= MIGRATOR.iter().count())
    }

    /// The underlying pool: the store's own, and the server's unit tests'.
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.health.close();
        for pool in self.thread_reads.pools() {
            pool.close().await;
        }
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests;
