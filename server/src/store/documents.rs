//! Writing and reading documents.
//!
//! A write batch is applied in one transaction:
//! 1. lock the target rows in a stable order (`FOR UPDATE`, sorted by collection and id, so
//!    concurrent batches cannot deadlock);
//! 2. merge in Rust: local operations are stamped by this store's hybrid logical clock, remote
//!    deltas are joined (refused per document when their base is not dominated);
//! 3. as the last statements before commit, take sequence numbers from the single
//!    `seq_counter` row (its lock is held until commit, so commit order equals sequence order)
//!    and upsert the changed rows;
//! 4. commit; `NOTIFY bigpeer_changes` is delivered at commit.
//!
//! Re-applying a delta that is already incorporated changes nothing and takes no sequence number,
//! which makes retries and duplicate deliveries idempotent.

use std::collections::BTreeMap;

use bigpeer_schema::{Delta, Doc, DocId, Op, SchemaError, Value};
use sqlx::Row;

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
}

struct Pending {
    collection: String,
    id: DocId,
    key: Vec<u8>,
    doc: Doc,
    /// Encoded state as read (None when the row did not exist).
    original: Option<Vec<u8>>,
}

impl Store {
    /// Applies a batch of changes in one transaction. Either every change is applied (or
    /// reported unchanged / refused) and committed, or nothing is written.
    pub async fn apply(&self, batch: Vec<Change>) -> Result<Committed, StoreError> {
        let mut tx = self.pool().begin().await?;

        // 1. Lock and load the targets in a stable order.
        let mut targets: BTreeMap<(String, Vec<u8>), DocId> = BTreeMap::new();
        for c in &batch {
            let (coll, id) = c.target();
            targets
                .entry((coll.to_owned(), id.key()))
                .or_insert_with(|| id.clone());
        }
        // Rows that do not exist yet cannot be locked with FOR UPDATE, so two writers creating
        // the same document would both merge into an empty state and the second would overwrite
        // the first. A transaction-scoped advisory lock per target, taken in ascending order
        // (no deadlocks), serialises writers of the same document whether or not it exists.
        let mut locks: Vec<i64> = targets.keys().map(|(c, k)| lock_key(c, k)).collect();
        locks.sort_unstable();
        locks.dedup();
        sqlx::query("SELECT pg_advisory_xact_lock(k) FROM unnest($1::int8[]) AS k")
            .bind(&locks)
            .execute(&mut *tx)
            .await?;
        let colls: Vec<String> = targets.keys().map(|(c, _)| c.clone()).collect();
        let keys: Vec<Vec<u8>> = targets.keys().map(|(_, k)| k.clone()).collect();
        let rows = sqlx::query(
            "SELECT d.collection, d.id, d.meta FROM documents d \
             JOIN unnest($1::text[], $2::bytea[]) AS t(collection, id) \
               ON d.collection = t.collection AND d.id = t.id \
             ORDER BY d.collection, d.id FOR UPDATE OF d",
        )
        .bind(&colls)
        .bind(&keys)
        .fetch_all(&mut *tx)
        .await?;
        let mut loaded: BTreeMap<(String, Vec<u8>), Vec<u8>> = BTreeMap::new();
        for row in rows {
            let coll: String = row.try_get(0)?;
            let key: Vec<u8> = row.try_get(1)?;
            let meta: Vec<u8> = row.try_get(2)?;
            loaded.insert((coll, key), meta);
        }
        let mut pending: BTreeMap<(String, Vec<u8>), Pending> = BTreeMap::new();
        for ((coll, key), id) in targets {
            let original = loaded.remove(&(coll.clone(), key.clone()));
            let doc = match &original {
                Some(bytes) => Doc::decode(bytes).map_err(|e| corrupt_row(&coll, &id, e))?,
                None => Doc::new(),
            };
            pending.insert(
                (coll.clone(), key.clone()),
                Pending {
                    collection: coll,
                    id,
                    key,
                    doc,
                    original,
                },
            );
        }

        // 2. Merge in Rust.
        let mut outcomes = Vec::with_capacity(batch.len());
        for change in &batch {
            let (coll, id) = change.target();
            let Some(p) = pending.get_mut(&(coll.to_owned(), id.key())) else {
                outcomes.push(Outcome::Unchanged);
                continue;
            };
            let outcome = match change {
                Change::Ops { ops, .. } => {
                    let stamp = self.stamp_after(p.doc.vv.max_hlc());
                    p.doc.apply(ops, stamp)?;
                    Outcome::Changed { seq: 0 }
                }
                Change::Delta { delta, .. } => {
                    self.observe(delta.state.vv.max_hlc());
                    match p.doc.apply_delta(delta) {
                        Ok(()) => Outcome::Changed { seq: 0 },
                        Err(SchemaError::BaseNotDominated) => Outcome::Refused,
                        Err(e) => return Err(e.into()),
                    }
                }
                Change::State { state, .. } => {
                    self.observe(state.vv.max_hlc());
                    p.doc.join(state);
                    Outcome::Changed { seq: 0 }
                }
            };
            outcomes.push(outcome);
        }

        // 3. Find what really changed, take sequence numbers, write.
        let mut changed: Vec<(&Pending, Vec<u8>)> = Vec::new();
        for p in pending.values() {
            if p.original.is_none() && p.doc == Doc::default() {
                // Nothing was written to a document that did not exist (a refused delta).
                continue;
            }
            let encoded = p.doc.encode();
            if p.original.as_deref() != Some(encoded.as_slice()) {
                changed.push((p, encoded));
            }
        }
        let txn = if changed.is_empty() {
            sqlx::query_scalar::<_, i64>("SELECT v FROM seq_counter WHERE id = 0")
                .fetch_one(&mut *tx)
                .await?
        } else {
            let n = changed.len() as i64;
            let mut colls = Vec::with_capacity(changed.len());
            let mut keys = Vec::with_capacity(changed.len());
            let mut values: Vec<Option<String>> = Vec::with_capacity(changed.len());
            let mut metas = Vec::with_capacity(changed.len());
            let mut deleted = Vec::with_capacity(changed.len());
            for (p, encoded) in &changed {
                let value = materialize_with_id(&p.doc, &p.id);
                colls.push(p.collection.clone());
                keys.push(p.key.clone());
                deleted.push(value.is_none());
                values.push(value.map(|v| v.to_json_string()));
                metas.push(encoded.clone());
            }
            // One statement, the last before commit: take `n` numbers from the counter row (its
            // lock is held until commit), write the rows numbered in batch order, and queue the
            // notification (delivered at commit). One round trip while the lock is held.
            let last: i64 = sqlx::query_scalar(
                "WITH c AS (UPDATE seq_counter SET v = v + $6 WHERE id = 0 RETURNING v),                  w AS (                    INSERT INTO documents (collection, id, value, meta, deleted, seq, txn, updated_at)                    SELECT t.c, t.i, t.v::jsonb, t.m, t.d, c.v - $6 + t.o, c.v, now()                    FROM unnest($1::text[], $2::bytea[], $3::text[], $4::bytea[], $5::bool[])                      WITH ORDINALITY AS t(c, i, v, m, d, o) CROSS JOIN c                    ON CONFLICT (collection, id) DO UPDATE SET value = EXCLUDED.value,                      meta = EXCLUDED.meta, deleted = EXCLUDED.deleted, seq = EXCLUDED.seq,                      txn = EXCLUDED.txn, updated_at = EXCLUDED.updated_at                    RETURNING 1),                  note AS (SELECT pg_notify('bigpeer_changes', c.v::text) FROM c)                  SELECT c.v FROM c WHERE (SELECT count(*) FROM w) = $6 AND (SELECT count(*) FROM note) = 1",
            )
            .bind(&colls)
            .bind(&keys)
            .bind(&values)
            .bind(&metas)
            .bind(&deleted)
            .bind(n)
            .fetch_one(&mut *tx)
            .await?;
            let first = last - n + 1;
            // Report the sequence number each changed document got.
            let seq_of: BTreeMap<(String, Vec<u8>), i64> = changed
                .iter()
                .enumerate()
                .map(|(i, (p, _))| ((p.collection.clone(), p.key.clone()), first + i as i64))
                .collect();
            for (outcome, change) in outcomes.iter_mut().zip(&batch) {
                if let Outcome::Changed { seq } = outcome {
                    let (coll, id) = change.target();
                    match seq_of.get(&(coll.to_owned(), id.key())) {
                        Some(s) => *seq = *s,
                        None => *outcome = Outcome::Unchanged,
                    }
                }
            }
            last
        };
        if changed.is_empty() {
            for o in &mut outcomes {
                if matches!(o, Outcome::Changed { .. }) {
                    *o = Outcome::Unchanged;
                }
            }
        }
        tx.commit().await?;
        Ok(Committed { txn, outcomes })
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
    pub async fn changes_since(
        &self,
        cursor: i64,
        limit: i64,
    ) -> Result<Vec<StoredDoc>, StoreError> {
        let rows = sqlx::query(
            "SELECT collection, id, value::text, meta, deleted, seq, txn FROM documents \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(cursor)
        .bind(limit.max(0))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(stored_doc).collect()
    }

    /// The newest committed transaction id (0 before the first write).
    pub async fn committed_txn(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT v FROM seq_counter WHERE id = 0")
            .fetch_one(self.pool())
            .await?)
    }
}

/// A stable 64-bit lock key for a document (FNV-1a; the same in every process and version, so
/// that several bigpeer processes on one database agree).
fn lock_key(collection: &str, key: &[u8]) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in collection
        .as_bytes()
        .iter()
        .chain([0xff].iter())
        .chain(key.iter())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// The materialised JSON of a document with its `_id`, or `None` when deleted.
pub fn materialize_with_id(doc: &Doc, id: &DocId) -> Option<Value> {
    match doc.materialize()? {
        Value::Object(mut o) => {
            o.insert("_id".to_owned(), id.value().clone());
            Some(Value::Object(o))
        }
        _ => None,
    }
}

fn corrupt_row(collection: &str, id: &DocId, e: SchemaError) -> StoreError {
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
        collection,
        id,
        value,
        state,
        deleted: r.try_get(4)?,
        seq: r.try_get(5)?,
        txn: r.try_get(6)?,
    })
}
