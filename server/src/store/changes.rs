//! The durable change log (`changes`, `sql/0010_change_log.sql`): one row per committed change
//! of a document's JSON, written by the writing transaction itself (`txn.rs`,
//! `WRITE_CHANGES`), read back in sequence order, and pruned past the retention.
//!
//! Readers page by sequence number (`seq > cursor ORDER BY seq`). Commits take their numbers
//! under the `seq_counter` row lock, so a reader never sees a row commit later with a lower
//! number than one it has read: moving the cursor to the last row read skips nothing.

use std::time::Duration;

use bigpeer_schema::{DocId, Value};
use sqlx::Row;

use super::{Store, StoreError};

/// What a change did to a document's JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeMethod {
    /// The document did not exist, or was deleted, before.
    Upsert,
    /// The document existed before and still does; its JSON changed.
    Update,
    /// The document was deleted (a tombstone, synced to small peers).
    Remove,
    /// The document's row was removed without a tombstone (EVICT): small peers keep their
    /// copies, and a later push may bring the document back (as an `Upsert`).
    Evict,
}

impl ChangeMethod {
    /// The name stored in the log and sent in events.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeMethod::Upsert => "upsert",
            ChangeMethod::Update => "update",
            ChangeMethod::Remove => "remove",
            ChangeMethod::Evict => "evict",
        }
    }

    fn parse(s: &str) -> Option<ChangeMethod> {
        Some(match s {
            "upsert" => ChangeMethod::Upsert,
            "update" => ChangeMethod::Update,
            "remove" => ChangeMethod::Remove,
            "evict" => ChangeMethod::Evict,
            _ => return None,
        })
    }
}

/// One committed change, as logged.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRow {
    /// The change's position in the commit-ordered sequence (unique).
    pub seq: i64,
    /// The transaction id (shared by the changes of one transaction).
    pub txn: i64,
    pub collection: String,
    pub id: DocId,
    pub method: ChangeMethod,
    /// The JSON (with `_id`) before; `None` when the document did not exist or was deleted.
    pub old_value: Option<Value>,
    /// The JSON (with `_id`) after; `None` when removed or evicted.
    pub new_value: Option<Value>,
    /// When it committed, in microseconds since the Unix epoch (Postgres' clock).
    pub committed_at_us: i64,
}

/// A page of the change log after a cursor.
#[derive(Debug, Clone, Default)]
pub struct ChangeLogPage {
    /// The readable rows, in sequence order (a row that does not read is logged, counted and
    /// left out).
    pub rows: Vec<ChangeRow>,
    /// Rows read, readable or not (a full page: there may be more).
    pub read: usize,
    /// Where the next page starts: the last row read, or, when the page is not full, the
    /// newest committed sequence number in the page's snapshot (everything up to it has been
    /// covered).
    pub next: i64,
    /// Events with `seq <= pruned_through` may be missing (pruned, or older than the log): a
    /// cursor below it cannot be served.
    pub pruned_through: i64,
}

const PAGE_ALL: &str = "SELECT h.pruned_through, (SELECT v FROM seq_counter WHERE id = 0), \
     r.seq, r.txn, r.collection, r.id, r.method, r.old_value::text, r.new_value::text, \
     (extract(epoch FROM r.committed_at) * 1000000)::int8 \
     FROM changes_horizon h LEFT JOIN LATERAL \
       (SELECT * FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2) AS r ON true \
     WHERE h.id = 0 ORDER BY r.seq";

const PAGE_COLLECTION: &str = "SELECT h.pruned_through, (SELECT v FROM seq_counter WHERE id = 0), \
     r.seq, r.txn, r.collection, r.id, r.method, r.old_value::text, r.new_value::text, \
     (extract(epoch FROM r.committed_at) * 1000000)::int8 \
     FROM changes_horizon h LEFT JOIN LATERAL \
       (SELECT * FROM changes WHERE collection = $3 AND seq > $1 ORDER BY seq LIMIT $2) AS r ON true \
     WHERE h.id = 0 ORDER BY r.seq";

/// Deletes the oldest rows committed before the cutoff (`$1` seconds ago), at most `$2`, and
/// moves the horizon past them, in one statement (so a reader sees both or neither). Only one
/// process prunes at a time (a transaction-scoped advisory lock; the others skip). A clock that
/// stepped back may leave an old row after a newer one: everything up to the newest expired row
/// of the batch goes.
const PRUNE: &str = "WITH k AS (SELECT pg_try_advisory_xact_lock(7451535467313856361) AS ok), \
     cut AS (SELECT max(x.seq) AS s FROM \
       (SELECT seq, committed_at FROM changes ORDER BY seq LIMIT $2) AS x, k \
       WHERE k.ok AND x.committed_at < clock_timestamp() - $1 * interval '1 second'), \
     d AS (DELETE FROM changes WHERE seq <= (SELECT s FROM cut) RETURNING 1), \
     h AS (UPDATE changes_horizon SET pruned_through = GREATEST(pruned_through, (SELECT s FROM cut)) \
       WHERE id = 0 AND (SELECT s FROM cut) IS NOT NULL RETURNING 1) \
     SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM h)";

impl Store {
    /// The logged changes after `after` (of `collection` only, when given), in sequence order,
    /// at most `limit`, with the prune horizon read in the same snapshot.
    pub async fn change_log_page(
        &self,
        after: i64,
        collection: Option<&str>,
        limit: i64,
    ) -> Result<ChangeLogPage, StoreError> {
        let limit = limit.max(1);
        let rows = self
            .retry_read(|| async {
                let q = match collection {
                    Some(c) => sqlx::query(PAGE_COLLECTION).bind(after).bind(limit).bind(c),
                    None => sqlx::query(PAGE_ALL).bind(after).bind(limit),
                };
                Ok(q.fetch_all(self.pool()).await?)
            })
            .await?;
        self.page_from_rows(&rows, after, limit)
    }

    /// [`Store::change_log_page`] of every collection, read on `conn` (a lease's connection, so
    /// that a lease holds one connection only).
    pub(super) async fn change_log_page_on(
        &self,
        conn: &mut sqlx::PgConnection,
        after: i64,
        limit: i64,
    ) -> Result<ChangeLogPage, StoreError> {
        let limit = limit.max(1);
        let rows = sqlx::query(PAGE_ALL)
            .bind(after)
            .bind(limit)
            .fetch_all(conn)
            .await?;
        self.page_from_rows(&rows, after, limit)
    }

    /// The database's sequence space (`seq_counter.epoch`), read on `conn`.
    pub(super) async fn epoch_on(conn: &mut sqlx::PgConnection) -> Result<String, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT epoch FROM seq_counter WHERE id = 0")
                .fetch_one(conn)
                .await?,
        )
    }

    /// A page from the rows of `PAGE_ALL` or `PAGE_COLLECTION` read after `after`.
    pub(super) fn page_from_rows(
        &self,
        rows: &[sqlx::postgres::PgRow],
        after: i64,
        limit: i64,
    ) -> Result<ChangeLogPage, StoreError> {
        let mut page = ChangeLogPage {
            next: after,
            ..ChangeLogPage::default()
        };
        let mut head = after;
        for r in rows {
            page.pruned_through = r.try_get(0)?;
            head = r.try_get(1)?;
            let Some(seq) = r.try_get::<Option<i64>, _>(2)? else {
                continue; // the horizon alone: no row after the cursor
            };
            page.read += 1;
            page.next = page.next.max(seq);
            match change_row(r, seq) {
                Ok(row) => page.rows.push(row),
                Err(e @ (StoreError::Schema(_) | StoreError::Database(sqlx::Error::Decode(_)))) => {
                    let collection: String = r.try_get(4)?;
                    let key: Vec<u8> = r.try_get(5)?;
                    self.skipped_row("change log", &collection, &key, seq, &e);
                }
                Err(e) => return Err(e),
            }
        }
        if (page.read as i64) < limit {
            page.next = page.next.max(head);
        }
        Ok(page)
    }

    /// Deletes the changes committed more than `retention` ago and moves the horizon past them;
    /// returns how many it deleted. Safe to call from several processes at once (one prunes,
    /// the others return 0).
    pub async fn prune_changes(&self, retention: Duration) -> Result<u64, StoreError> {
        const BATCH: i64 = 10_000;
        let mut total = 0u64;
        loop {
            let (deleted, _moved): (i64, i64) = sqlx::query_as(PRUNE)
                .bind(retention.as_secs_f64())
                .bind(BATCH)
                .fetch_one(self.pool())
                .await?;
            total += u64::try_from(deleted).unwrap_or(0);
            if deleted < BATCH {
                return Ok(total);
            }
        }
    }
}

fn change_row(r: &sqlx::postgres::PgRow, seq: i64) -> Result<ChangeRow, StoreError> {
    let key: Vec<u8> = r.try_get(5)?;
    let method: String = r.try_get(6)?;
    let json = |i: usize| -> Result<Option<Value>, StoreError> {
        let text: Option<String> = r.try_get(i)?;
        Ok(text.map(|t| Value::parse_json(&t)).transpose()?)
    };
    Ok(ChangeRow {
        seq,
        txn: r.try_get(3)?,
        collection: r.try_get(4)?,
        id: DocId::from_key(&key)?,
        method: ChangeMethod::parse(&method)
            .ok_or(StoreError::Internal("unknown change method"))?,
        old_value: json(7)?,
        new_value: json(8)?,
        committed_at_us: r.try_get(9)?,
    })
}
