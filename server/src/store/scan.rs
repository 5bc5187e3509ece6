//! The two reads of an initial sync: the feed's epoch, and one page of a collection in
//! change-sequence order together with the head of the sequence in the same snapshot (so that
//! "everything up to the head" is exactly what the pages covered).

use bigpeer_schema::DocId;
use sqlx::Row;

use super::{Store, StoreError};

/// One document of a page, its state as stored (the document encoding): the sender turns it
/// into a full-state delta without decoding it, and decodes it only to filter.
pub struct ScanRow {
    pub id: DocId,
    pub meta: Vec<u8>,
    pub seq: i64,
    pub deleted: bool,
}

/// A page of a collection after a sequence number.
pub struct Page {
    /// The readable rows (a row whose id does not decode is logged, counted and left out).
    pub rows: Vec<ScanRow>,
    /// How many rows the page read, readable or not (a full page: there may be more).
    pub read: usize,
    /// The largest sequence number the page read, readable or not (`after` when none).
    pub last: i64,
    /// The newest committed sequence number in the page's snapshot.
    pub head: i64,
    pub epoch: String,
}

impl Store {
    /// The current epoch of the sequence space.
    pub async fn epoch(&self) -> Result<String, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT epoch FROM seq_counter WHERE id = 0")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Documents of `collection` with `seq > after`, in sequence order, at most `limit`;
    /// tombstones only when `tombstones`.
    pub async fn scan_page(
        &self,
        collection: &str,
        after: i64,
        tombstones: bool,
        limit: i64,
    ) -> Result<Page, StoreError> {
        page(self, collection, after, tombstones, limit).await
    }
}

async fn page(
    store: &Store,
    collection: &str,
    after: i64,
    tombstones: bool,
    limit: i64,
) -> Result<Page, StoreError> {
    // The page must be one ordered range scan of `documents_collection_seq`, whatever the
    // statistics say. Before the first ANALYZE of a freshly loaded table the planner believes the
    // collection is small and reads every remaining row of it through a bitmap, then sorts them
    // for the first `limit` (about 50 ms per page of 1,000 at 100k documents, for every page);
    // with bitmap scans and sorts off, the ordered index scan is the only plan left. The rows'
    // order is restored here, so the statement needs no sort of its own.
    let mut tx = store.pool.begin().await?;
    sqlx::raw_sql(
        "SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off; SET LOCAL jit = off",
    )
    .execute(&mut *tx)
    .await?;
    let rows = sqlx::query(
        "SELECT c.v, c.epoch, d.id, d.meta, d.seq, d.deleted FROM seq_counter c \
         LEFT JOIN LATERAL ( \
           SELECT id, meta, seq, deleted FROM documents \
           WHERE collection = $1 AND seq > $2 AND ($3 OR NOT deleted) \
           ORDER BY seq LIMIT $4) d ON true \
         WHERE c.id = 0",
    )
    .bind(collection)
    .bind(after)
    .bind(tombstones)
    .bind(limit.max(1))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut page = Page {
        rows: Vec::with_capacity(rows.len()),
        read: 0,
        last: after,
        head: 0,
        epoch: String::new(),
    };
    for r in &rows {
        page.head = r.try_get(0)?;
        page.epoch = r.try_get(1)?;
        let Some(key) = r.try_get::<Option<Vec<u8>>, _>(2)? else {
            continue;
        };
        let seq: i64 = r.try_get(4)?;
        page.read += 1;
        page.last = page.last.max(seq);
        let id = match DocId::from_key(&key) {
            Ok(id) => id,
            Err(e) => {
                store.skipped_row("initial sync", collection, &key, seq, &e);
                continue;
            }
        };
        page.rows.push(ScanRow {
            id,
            meta: r.try_get(3)?,
            seq,
            deleted: r.try_get(5)?,
        });
    }
    page.rows.sort_by_key(|r| r.seq);
    Ok(page)
}
