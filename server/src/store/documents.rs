//! Documents: batches of changes (on top of the transaction engine in `txn.rs`) and reads.

use bigpeer_schema::{Delta, Doc, DocId, Op, SchemaError, Value};
use sqlx::Row;

use super::txn::{TxnInfo, Working};
use super::{Store, StoreError};

/// One change in a write batch.
#[derive(Debug, Clone)]
pub enum Change {
    /// A local write (DQL, HTTP): operations stamped by the store's clock.
    Ops {
        collection: String,
        id: DocId,
        ops: Vec<Op>,
    },
    /// A remote write (a peer's delta): merged as is.
    Delta {
        collection: String,
        id: DocId,
        delta: Delta,
    },
    /// Replace the document's state by joining a full remote state (same as a delta from the
    /// empty version vector).
    State {
        collection: String,
        id: DocId,
        state: Doc,
    },
}

impl Change {
    fn target(&self) -> (&str, &DocId) {
        match self {
            Change::Ops { collection, id, .. }
            | Change::Delta { collection, id, .. }
            | Change::State { collection, id, .. } => (collection, id),
        }
    }
}

/// What happened to one change of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The document changed; it got this sequence number.
    Changed { seq: i64 },
    /// The change was already incorporated (or had no effect): nothing was written.
    Unchanged,
    /// A delta whose base this store does not have; the sender must resend against our state.
    Refused,
}

/// The result of a committed batch.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The transaction id: the largest sequence number the batch took, or the current one when
    /// nothing changed. Monotonic in commit order.
    pub txn: i64,
    /// One outcome per change, in the order of the batch.
    pub outcomes: Vec<Outcome>,
}

/// A page of the change feed (see [`Store::changes_page`]).
#[derive(Debug, Clone, Default)]
pub struct ChangePage {
    /// The readable documents, in sequence order.
    pub docs: Vec<StoredDoc>,
    /// Rows read, readable or not (a full page: there may be more).
    pub read: usize,
    /// The largest sequence number read, readable or not (the cursor when none).
    pub last: i64,
}

/// A stored document as read from Postgres.
#[derive(Debug, Clone)]
pub struct StoredDoc {
    pub collection: String,
    pub id: DocId,
    /// The materialised JSON with `_id`; `None` when deleted.
    pub value: Option<Value>,
    pub state: Doc,
    pub deleted: bool,
    pub seq: i64,
    pub txn: i64,
    /// The size of the stored CRDT state, in bytes.
    pub bytes: usize,
}

impl Store {
    /// Applies a batch of changes atomically in one transaction of its own: either every change
    /// is applied (or reported unchanged / refused) and committed, or nothing is written.
    pub async fn apply(&self, batch: Vec<Change>) -> Result<Committed, StoreError> {
        let targets = batch_targets(&batch);
        let (outcomes, info) = self
            .transact(targets, move |w| {
                run_batch(w, &batch).map(|o| (o, batch.clone()))
            })
            .await?;
        Ok(committed(outcomes, &info))
    }

    /// Reads one document (also when deleted).
    pub async fn get(&self, collection: &str, id: &DocId) -> Result<Option<StoredDoc>, StoreError> {
        let row = sqlx::query(
            "SELECT collection, id, value::text, meta, deleted, seq, txn FROM documents \
             WHERE collection = $1 AND id = $2",
        )
        .bind(collection)
        .bind(id.key())
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| stored_doc(&r)).transpose()
    }

    /// The documents changed after `cursor`, in change-sequence order, at most `limit`.
    ///
    /// The feed holds the latest change per document. Because sequence numbers are taken under
    /// the `seq_counter` row lock, a reader that saw sequence `n` will never later see a commit
    /// with a sequence below `n`: moving the cursor to the last row returned skips nothing.
    /// Rows that cannot be read are left out (see [`Store::changes_page`]).
    pub async fn changes_since(
        &self,
        cursor: i64,
        limit: i64,
    ) -> Result<Vec<StoredDoc>, StoreError> {
        Ok(self.changes_page(cursor, limit).await?.docs)
    }

    /// [`Store::changes_since`] with what a follower needs to move on past rows that cannot be
    /// read (an undecodable state or id, a value no JSON reader takes): those are logged,
    /// counted and left out, and the page says how far it read.
    pub async fn changes_page(&self, cursor: i64, limit: i64) -> Result<ChangePage, StoreError> {
        let rows = sqlx::query(
            "SELECT collection, id, value::text, meta, deleted, seq, txn FROM documents \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(cursor)
        .bind(limit.max(0))
        .fetch_all(self.pool())
        .await?;
        let mut page = ChangePage {
            docs: Vec::with_capacity(rows.len()),
            read: rows.len(),
            last: cursor,
        };
        for r in &rows {
            let seq: i64 = r.try_get(5)?;
            page.last = page.last.max(seq);
            match stored_doc(r) {
                Ok(doc) => page.docs.push(doc),
                Err(e @ (StoreError::Schema(_) | StoreError::Database(sqlx::Error::Decode(_)))) => {
                    let collection: String = r.try_get(0)?;
                    let key: Vec<u8> = r.try_get(1)?;
                    self.skipped_row("change feed", &collection, &key, seq, &e);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(page)
    }

    /// The newest committed transaction id (0 before the first write).
    pub async fn committed_txn(&self) -> Result<i64, StoreError> {
        let t: i64 = self
            .retry_read(|| async {
                Ok(sqlx::query_scalar("SELECT v FROM seq_counter WHERE id = 0")
                    .fetch_one(self.pool())
                    .await?)
            })
            .await?;
        self.saw_txn(t);
        Ok(t)
    }
}

pub(crate) fn batch_targets(batch: &[Change]) -> Vec<(String, DocId)> {
    batch
        .iter()
        .map(|c| {
            let (coll, id) = c.target();
            (coll.to_owned(), id.clone())
        })
        .collect()
}

/// Applies a batch inside a job: one outcome per change.
pub(crate) fn run_batch(w: &mut Working<'_>, batch: &[Change]) -> Result<Vec<Outcome>, StoreError> {
    batch
        .iter()
        .map(|c| match c {
            Change::Ops {
                collection,
                id,
                ops,
            } => {
                w.apply_ops(collection, id, ops)?;
                Ok(Outcome::Changed { seq: 0 })
            }
            Change::Delta {
                collection,
                id,
                delta,
            } => w.apply_delta(collection, id, delta),
            Change::State {
                collection,
                id,
                state,
            } => w.join_state(collection, id, state),
        })
        .collect()
}

/// Fills in the sequence numbers of a committed batch.
pub(crate) fn committed(
    (outcomes, batch): (Vec<Outcome>, Vec<Change>),
    info: &TxnInfo,
) -> Committed {
    let outcomes = outcomes
        .into_iter()
        .zip(&batch)
        .map(|(o, c)| match o {
            Outcome::Changed { .. } => {
                let (coll, id) = c.target();
                info.seq_of(coll, id)
                    .map_or(Outcome::Unchanged, |seq| Outcome::Changed { seq })
            }
            other => other,
        })
        .collect();
    Committed {
        txn: info.txn,
        outcomes,
    }
}

/// A document's JSON with `_id` (`None`: deleted): [`Doc::materialize_with_id`].
pub fn materialize_with_id(doc: &Doc, id: &DocId) -> Option<Value> {
    doc.materialize_with_id(id)
}

pub(crate) fn corrupt_row(collection: &str, id: &DocId, e: SchemaError) -> StoreError {
    match e {
        SchemaError::Corrupt(m) => StoreError::Schema(SchemaError::Corrupt(format!(
            "document {id} in collection \"{collection}\": {m}"
        ))),
        other => StoreError::Schema(other),
    }
}

fn stored_doc(r: &sqlx::postgres::PgRow) -> Result<StoredDoc, StoreError> {
    let collection: String = r.try_get(0)?;
    let key: Vec<u8> = r.try_get(1)?;
    let id = DocId::from_key(&key)?;
    let value: Option<String> = r.try_get(2)?;
    let value = value.map(|v| Value::parse_json(&v)).transpose()?;
    let meta: Vec<u8> = r.try_get(3)?;
    let state = Doc::decode(&meta).map_err(|e| corrupt_row(&collection, &id, e))?;
    Ok(StoredDoc {
        bytes: meta.len(),
        collection,
        id,
        value,
        state,
        deleted: r.try_get(4)?,
        seq: r.try_get(5)?,
        txn: r.try_get(6)?,
    })
}
