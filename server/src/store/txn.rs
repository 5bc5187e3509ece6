//! The write transaction engine.
//!
//! Every write runs as a *job*: the documents it may touch (its targets) and a function that
//! reads and changes them in memory ([`Working`]). One Postgres transaction runs one or several
//! jobs (group commit):
//!
//! 1. take a transaction-scoped advisory lock per target, in ascending order (no deadlocks; it
//!    also covers documents that do not exist yet, which `FOR UPDATE` cannot lock), and load the
//!    targets' CRDT states;
//! 2. run the jobs one after the other in memory: local operations are stamped by the store's
//!    hybrid logical clock, remote deltas joined. A job that fails is undone (its targets are
//!    restored) and gets its error; the others go on;
//! 3. as the last statement before commit, take sequence numbers from the `seq_counter` row
//!    (held until commit, so commit order equals sequence order), write the changed rows, remove
//!    the evicted ones, append the change log (`changes.rs`) and queue `NOTIFY bigpeer_changes`;
//! 4. commit, then hand every successful job its result and the transaction id.
//!
//! A document whose state did not change is not written and takes no sequence number, which
//! makes retried and duplicated deltas idempotent.

use std::collections::{BTreeMap, BTreeSet};

use bigpeer_schema::{limits, Delta, Doc, DocId, Op, SchemaError, Value};
use sqlx::Row;

use super::documents::{corrupt_row, materialize_with_id, Outcome};
use super::{Store, StoreError};

pub(crate) type Key = (String, Vec<u8>);

/// What a committed transaction tells its jobs.
#[derive(Debug, Clone, Default)]
pub struct TxnInfo {
    /// The transaction id: the largest sequence number taken, or the current one when nothing
    /// changed. Monotonic in commit order.
    pub txn: i64,
    /// The sequence number of every document the transaction wrote.
    pub seqs: BTreeMap<Key, i64>,
}

impl TxnInfo {
    /// The sequence number `id` got, when it was written.
    pub fn seq_of(&self, collection: &str, id: &DocId) -> Option<i64> {
        self.seqs.get(&(collection.to_owned(), id.key())).copied()
    }
}

struct Loaded {
    id: DocId,
    doc: Doc,
    /// The encoded state as read; `None` when the row did not exist.
    original: Option<Vec<u8>>,
    /// Remove the row without a tombstone (EVICT): nothing is synced.
    evict: bool,
    /// The encoding of `doc` when a checked change made it (written as it is).
    encoded: Option<Vec<u8>>,
    /// The encoded size of `doc` when known (after a checked change, or as read).
    size: Option<usize>,
    /// Why the stored row does not decode: the document can only be evicted.
    unreadable: Option<String>,
}

impl Loaded {
    /// The encoded size of the current state.
    fn size(&self) -> usize {
        self.size
            .or_else(|| self.original.as_ref().map(Vec::len))
            .unwrap_or(0)
    }
}

/// The documents one job may read and change, inside the transaction.
pub struct Working<'a> {
    store: &'a Store,
    docs: &'a mut BTreeMap<Key, Loaded>,
    allowed: &'a BTreeSet<Key>,
}

impl Working<'_> {
    /// The document, locked by this job (readable or not).
    fn locked(&mut self, collection: &str, id: &DocId) -> Result<&mut Loaded, StoreError> {
        let key = (collection.to_owned(), id.key());
        if !self.allowed.contains(&key) {
            return Err(StoreError::NotLocked {
                collection: collection.to_owned(),
                id: id.to_string(),
            });
        }
        self.docs
            .get_mut(&key)
            .ok_or_else(|| StoreError::NotLocked {
                collection: collection.to_owned(),
                id: id.to_string(),
            })
    }

    /// The document, locked by this job; an error when its stored row does not decode.
    fn slot(&mut self, collection: &str, id: &DocId) -> Result<&mut Loaded, StoreError> {
        let l = self.locked(collection, id)?;
        match &l.unreadable {
            Some(why) => Err(StoreError::Schema(SchemaError::Corrupt(why.clone()))),
            None => Ok(l),
        }
    }

    /// Whether the document's stored row does not decode (it can only be evicted).
    pub fn is_unreadable(&mut self, collection: &str, id: &DocId) -> Result<bool, StoreError> {
        Ok(self.locked(collection, id)?.unreadable.is_some())
    }

    /// The current CRDT state (empty when the document never existed).
    pub fn state(&mut self, collection: &str, id: &DocId) -> Result<&Doc, StoreError> {
        Ok(&self.slot(collection, id)?.doc)
    }

    /// The document as a strict-mode statement declaring `view` sees it, with `_id`.
    pub fn view(
        &mut self,
        collection: &str,
        id: &DocId,
        view: &bigpeer_schema::TypeView,
    ) -> Result<Option<Value>, StoreError> {
        let l = self.slot(collection, id)?;
        Ok(bigpeer_dql::exec::viewed_with_id(&l.doc, &l.id, view))
    }

    /// The current JSON with `_id`, or `None` when the document does not exist or is deleted.
    pub fn value(&mut self, collection: &str, id: &DocId) -> Result<Option<Value>, StoreError> {
        let l = self.slot(collection, id)?;
        Ok(materialize_with_id(&l.doc, &l.id))
    }

    /// Applies local operations, stamped now by this store's clock. Refused (and nothing
    /// changes) when they break a limit (`bigpeer_schema::limits`): a collection name, an id,
    /// a path or a value, or the document size.
    pub fn apply_ops(
        &mut self,
        collection: &str,
        id: &DocId,
        ops: &[Op],
    ) -> Result<(), StoreError> {
        if !limits::only_deletes(ops) {
            check_target(collection, id)?;
            limits::check_ops(ops).map_err(SchemaError::from)?;
        }
        let store = self.store;
        let limit = store.document_size_limit();
        let l = self.slot(collection, id)?;
        let stamp = store.stamp_after(newest(&l.doc))?;
        let before = l.doc.clone();
        // As in the evaluator (bigpeer_dql::exec): writes touch only their own type.
        l.doc.apply_typed(ops, stamp)?;
        settle(l, before, limit)
    }

    /// Joins a remote delta: `Refused` when this store lacks the delta's base. Refused with an
    /// error (and nothing changes) when it breaks a limit.
    pub fn apply_delta(
        &mut self,
        collection: &str,
        id: &DocId,
        delta: &Delta,
    ) -> Result<Outcome, StoreError> {
        check_target(collection, id)?;
        limits::check_state(&delta.state).map_err(SchemaError::from)?;
        let store = self.store;
        let limit = store.document_size_limit();
        let l = self.slot(collection, id)?;
        store.observe(delta.state.vv.max_hlc());
        let before = l.doc.clone();
        match l.doc.apply_delta(delta) {
            Ok(()) if l.doc == before => Ok(Outcome::Unchanged),
            Ok(()) => settle(l, before, limit).map(|()| Outcome::Changed { seq: 0 }),
            Err(SchemaError::BaseNotDominated) => Ok(Outcome::Refused),
            Err(e) => Err(e.into()),
        }
    }

    /// [`Working::apply_delta`], kept only when `keep` accepts the merged document's JSON (with
    /// `_id`; `None` when deleted): otherwise the document is left as it was and the answer is
    /// `None`. The delta is joined once, whatever `keep` looks at.
    pub fn apply_delta_if(
        &mut self,
        collection: &str,
        id: &DocId,
        delta: &Delta,
        keep: impl FnOnce(Option<&Value>) -> bool,
    ) -> Result<Option<Outcome>, StoreError> {
        check_target(collection, id)?;
        limits::check_state(&delta.state).map_err(SchemaError::from)?;
        let store = self.store;
        let limit = store.document_size_limit();
        let l = self.slot(collection, id)?;
        let before = l.doc.clone();
        match l.doc.apply_delta(delta) {
            Ok(()) => {}
            Err(SchemaError::BaseNotDominated) => return Ok(Some(Outcome::Refused)),
            Err(e) => return Err(e.into()),
        }
        if !keep(materialize_with_id(&l.doc, &l.id).as_ref()) {
            l.doc = before;
            return Ok(None);
        }
        store.observe(delta.state.vv.max_hlc());
        if l.doc == before {
            return Ok(Some(Outcome::Unchanged));
        }
        settle(l, before, limit).map(|()| Some(Outcome::Changed { seq: 0 }))
    }

    /// Evicts the document: its row is removed without a tombstone, so nothing propagates
    /// (EVICT). A later write in the same transaction re-creates it from scratch. Also for a
    /// document whose stored row does not decode.
    pub fn evict(&mut self, collection: &str, id: &DocId) -> Result<(), StoreError> {
        let l = self.locked(collection, id)?;
        l.doc = Doc::new();
        l.evict = l.original.is_some();
        l.unreadable = None;
        l.encoded = None;
        l.size = Some(0);
        Ok(())
    }

    /// Joins a full remote state (checked as [`Working::apply_delta`]).
    pub fn join_state(
        &mut self,
        collection: &str,
        id: &DocId,
        state: &Doc,
    ) -> Result<Outcome, StoreError> {
        check_target(collection, id)?;
        limits::check_state(state).map_err(SchemaError::from)?;
        let store = self.store;
        let limit = store.document_size_limit();
        let l = self.slot(collection, id)?;
        store.observe(state.vv.max_hlc());
        let before = l.doc.clone();
        l.doc.join(state);
        if l.doc == before {
            return Ok(Outcome::Unchanged);
        }
        settle(l, before, limit).map(|()| Outcome::Changed { seq: 0 })
    }
}

/// The newest clock value anywhere in a document: its version vector and every stamp.
fn newest(doc: &Doc) -> bigpeer_schema::Hlc {
    doc.vv
        .max_hlc()
        .max(doc.max_stamp().map(|s| s.hlc).unwrap_or_default())
}

/// The collection name and the id of a document a write creates or changes.
fn check_target(collection: &str, id: &DocId) -> Result<(), StoreError> {
    limits::check_collection(collection).map_err(SchemaError::from)?;
    limits::check_id(id).map_err(SchemaError::from)?;
    Ok(())
}

/// After a change of `l.doc` (from `before`): keeps it when the document stays within the size
/// limit (or does not grow), with its encoding for the write; otherwise restores `before`.
fn settle(l: &mut Loaded, before: Doc, limit: usize) -> Result<(), StoreError> {
    let encoded = l.doc.encode();
    if let Err(e) = limits::check_size(encoded.len(), l.size(), limit) {
        l.doc = before;
        return Err(SchemaError::from(e).into());
    }
    l.size = Some(encoded.len());
    l.encoded = Some(encoded);
    Ok(())
}

/// Postgres cannot store U+0000 in `jsonb` or `text`: a write that brings it in is refused on
/// its own (and nothing of it is kept).
pub use bigpeer_schema::limits::NUL_CHARACTER;

/// Delivers a job's result once the transaction committed.
pub(crate) type Finish = Box<dyn FnOnce(&TxnInfo) + Send>;

/// Runs a job on the working set. May run more than once: when a shared transaction fails in
/// the database, its jobs run again in smaller transactions (see [`Store::run_jobs`]).
type RunFn = Box<dyn FnMut(&mut Working<'_>) -> Result<Finish, StoreError> + Send>;
type FailFn = Box<dyn FnOnce(StoreError) + Send>;

struct JobSlot {
    targets: Vec<(String, DocId)>,
    run: RunFn,
    /// `None` once the job has been answered (with its error).
    fail: Option<FailFn>,
    finish: Option<Finish>,
}

impl JobSlot {
    fn waiting(&self) -> bool {
        self.fail.is_some()
    }
}

/// A type-erased job.
pub(crate) struct Job {
    pub targets: Vec<(String, DocId)>,
    pub run: RunFn,
    pub fail: FailFn,
}

impl Job {
    /// Wraps a typed job; its outcome arrives on the returned receiver. `f` may be called more
    /// than once (each time on a fresh working set, after the earlier attempt was rolled back).
    #[allow(clippy::type_complexity)]
    pub fn new<R, F>(
        targets: Vec<(String, DocId)>,
        mut f: F,
    ) -> (
        Job,
        tokio::sync::oneshot::Receiver<Result<(R, TxnInfo), StoreError>>,
    )
    where
        R: Send + 'static,
        F: FnMut(&mut Working<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tx = std::sync::Arc::new(std::sync::Mutex::new(Some(tx)));
        let tx2 = tx.clone();
        let take = |t: &std::sync::Arc<std::sync::Mutex<Option<_>>>| {
            t.lock().ok().and_then(|mut g| g.take())
        };
        let job = Job {
            targets,
            run: Box::new(move |w| {
                let r = f(w)?;
                let tx = tx.clone();
                Ok(Box::new(move |info: &TxnInfo| {
                    if let Some(tx) = take(&tx) {
                        let _ = tx.send(Ok((r, info.clone())));
                    }
                }) as Finish)
            }),
            fail: Box::new(move |e| {
                if let Some(tx) = take(&tx2) {
                    let _ = tx.send(Err(e));
                }
            }),
        };
        (job, rx)
    }
}

/// Why a transaction of jobs failed.
enum TxnFailure {
    /// Before any job ran, or not because of what the jobs wrote (a lost connection): every
    /// waiting job gets the error.
    All(StoreError),
    /// The database refused what the jobs wrote (the write or the commit): one of them may be
    /// the cause, so the others run again without it.
    Written(StoreError),
}

impl From<StoreError> for TxnFailure {
    fn from(e: StoreError) -> Self {
        TxnFailure::All(e)
    }
}

impl From<sqlx::Error> for TxnFailure {
    fn from(e: sqlx::Error) -> Self {
        TxnFailure::All(e.into())
    }
}

/// A failure of the statements that write the jobs' changes: the database refusing them (some
/// job's data) can be retried without that job; anything else fails the transaction.
fn written(e: sqlx::Error) -> TxnFailure {
    match e {
        sqlx::Error::Database(_) => TxnFailure::Written(e.into()),
        other => TxnFailure::All(other.into()),
    }
}

impl Store {
    /// Runs `f` on the documents `targets` in one transaction of its own and commits.
    pub async fn transact<R, F>(
        &self,
        targets: Vec<(String, DocId)>,
        f: F,
    ) -> Result<(R, TxnInfo), StoreError>
    where
        R: Send + 'static,
        F: FnMut(&mut Working<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        let (job, rx) = Job::new(targets, f);
        self.run_jobs(vec![job]).await;
        rx.await
            .map_err(|_| StoreError::Internal("write job dropped"))?
    }

    /// Runs jobs in one transaction; every job gets its result or its error through its own
    /// callbacks.
    ///
    /// No job fails because of another job's data: when the database refuses the shared
    /// transaction's writes (a row it cannot store), the jobs are split in halves, each run
    /// again in a transaction of its own, until the job that causes the refusal runs alone and
    /// gets the error. The others commit.
    pub(crate) async fn run_jobs(&self, jobs: Vec<Job>) {
        let slots: Vec<JobSlot> = jobs
            .into_iter()
            .map(|j| JobSlot {
                targets: j.targets,
                run: j.run,
                fail: Some(j.fail),
                finish: None,
            })
            .collect();
        let mut groups = vec![slots];
        while let Some(mut group) = groups.pop() {
            let failure = match self.run_jobs_inner(&mut group).await {
                Ok(()) => continue,
                Err(f) => f,
            };
            let mut waiting: Vec<JobSlot> = group.into_iter().filter(JobSlot::waiting).collect();
            for slot in &mut waiting {
                // Its result was not committed: it runs again, or fails.
                slot.finish = None;
            }
            match failure {
                TxnFailure::Written(e) if waiting.len() > 1 => {
                    tracing::warn!(jobs = waiting.len(), error = %e,
                        "the database refused a shared write transaction; retrying its jobs in smaller ones");
                    let second = waiting.split_off(waiting.len() / 2);
                    groups.push(second);
                    groups.push(waiting);
                }
                TxnFailure::Written(e) | TxnFailure::All(e) => {
                    // The transaction failed as a whole: every job still waiting gets the error.
                    let copy = e.shared();
                    let mut first = Some(e);
                    for fail in waiting.into_iter().filter_map(|s| s.fail) {
                        fail(first.take().unwrap_or_else(|| copy.shared()));
                    }
                }
            }
        }
    }

    async fn run_jobs_inner(&self, slots: &mut [JobSlot]) -> Result<(), TxnFailure> {
        let mut tx = self.pool().begin().await?;

        // 1. Lock and load every target.
        let mut targets: BTreeMap<Key, DocId> = BTreeMap::new();
        for slot in slots.iter().filter(|s| s.waiting()) {
            for (coll, id) in &slot.targets {
                targets
                    .entry((coll.clone(), id.key()))
                    .or_insert_with(|| id.clone());
            }
        }
        let mut locks: Vec<i64> = targets.keys().map(|(c, k)| lock_key(c, k)).collect();
        locks.sort_unstable();
        locks.dedup();
        sqlx::query("SELECT pg_advisory_xact_lock(k) FROM unnest($1::int8[]) AS k")
            .bind(&locks)
            .execute(&mut *tx)
            .await?;
        let colls: Vec<String> = targets.keys().map(|(c, _)| c.clone()).collect();
        let keys: Vec<Vec<u8>> = targets.keys().map(|(_, k)| k.clone()).collect();
        let rows = sqlx::query(LOAD_TARGETS)
            .bind(&colls)
            .bind(&keys)
            .fetch_all(&mut *tx)
            .await?;
        let mut found: BTreeMap<Key, Vec<u8>> = BTreeMap::new();
        for row in rows {
            found.insert((row.try_get(0)?, row.try_get(1)?), row.try_get(2)?);
        }
        let mut docs: BTreeMap<Key, Loaded> = BTreeMap::new();
        for (key, id) in targets {
            let original = found.remove(&key);
            // A row that does not decode fails only the jobs that read or change it (and can be
            // evicted); the other jobs go on.
            let (doc, unreadable) = match &original {
                Some(bytes) => match Doc::decode(bytes) {
                    Ok(doc) => (doc, None),
                    Err(e) => {
                        let e = corrupt_row(&key.0, &id, e);
                        self.skipped_row("write", &key.0, &key.1, 0, &e);
                        (Doc::new(), Some(e.to_string()))
                    }
                },
                None => (Doc::new(), None),
            };
            docs.insert(
                key,
                Loaded {
                    id,
                    doc,
                    original,
                    evict: false,
                    encoded: None,
                    size: None,
                    unreadable,
                },
            );
        }

        // 2. Run the jobs in memory; a failing job is undone and answered at once.
        for slot in slots.iter_mut().filter(|s| s.waiting()) {
            let allowed: BTreeSet<Key> = slot
                .targets
                .iter()
                .map(|(c, id)| (c.clone(), id.key()))
                .collect();
            type Snapshot = (Key, Doc, bool, Option<usize>, Option<String>);
            let snapshot: Vec<Snapshot> = allowed
                .iter()
                .filter_map(|k| {
                    docs.get(k).map(|l| {
                        (
                            k.clone(),
                            l.doc.clone(),
                            l.evict,
                            l.size,
                            l.unreadable.clone(),
                        )
                    })
                })
                .collect();
            let mut working = Working {
                store: self,
                docs: &mut docs,
                allowed: &allowed,
            };
            match (slot.run)(&mut working) {
                Ok(finish) => slot.finish = Some(finish),
                Err(e) => {
                    for (k, d, evict, size, unreadable) in snapshot {
                        if let Some(l) = docs.get_mut(&k) {
                            l.doc = d;
                            l.evict = evict;
                            l.size = size;
                            l.unreadable = unreadable;
                            l.encoded = None;
                        }
                    }
                    if let Some(fail) = slot.fail.take() {
                        fail(e);
                    }
                }
            }
        }

        // 3. Write what changed.
        let mut changed: Vec<(&Key, &Loaded, Vec<u8>)> = Vec::new();
        let mut evicted: Vec<&Key> = Vec::new();
        for (key, l) in docs.iter_mut() {
            if l.evict && l.doc == Doc::default() {
                evicted.push(key);
                continue;
            }
            if l.unreadable.is_some() {
                continue; // not evicted, so untouched
            }
            if l.original.is_none() && l.doc == Doc::default() {
                continue; // never existed and still empty (a refused delta, a failed job)
            }
            let encoded = l.encoded.take().unwrap_or_else(|| l.doc.encode());
            if l.original.as_deref() != Some(encoded.as_slice()) {
                changed.push((key, l, encoded));
            }
        }
        let mut info = TxnInfo::default();
        if changed.is_empty() && evicted.is_empty() {
            info.txn = sqlx::query_scalar("SELECT v FROM seq_counter WHERE id = 0")
                .fetch_one(&mut *tx)
                .await?;
        } else {
            let written_n = changed.len() as i64;
            let total = written_n + evicted.len() as i64;
            let mut colls = Vec::with_capacity(changed.len());
            let mut keys = Vec::with_capacity(changed.len());
            let mut values: Vec<Option<String>> = Vec::with_capacity(changed.len());
            let mut metas = Vec::with_capacity(changed.len());
            let mut shapes: Vec<Option<String>> = Vec::with_capacity(changed.len());
            let mut deleted = Vec::with_capacity(changed.len());
            for (key, l, encoded) in &changed {
                let value = materialize_with_id(&l.doc, &l.id);
                shapes.push(l.doc.shape().map(|s| s.to_json_string()));
                colls.push(key.0.clone());
                keys.push(key.1.clone());
                deleted.push(value.is_none());
                values.push(value.map(|v| v.to_json_string()));
                metas.push(encoded.clone());
            }
            let evicted_colls: Vec<&str> = evicted.iter().map(|k| k.0.as_str()).collect();
            let evicted_keys: Vec<&[u8]> = evicted.iter().map(|k| k.1.as_slice()).collect();
            // One statement, the last before commit (see [`WRITE_CHANGES`]): numbers from the
            // counter row (its lock is held until commit), the rows, the evictions, the change
            // log and the notification. One round trip while the lock is held.
            let last: i64 = sqlx::query_scalar(WRITE_CHANGES)
                .bind(&colls)
                .bind(&keys)
                .bind(&values)
                .bind(&metas)
                .bind(&deleted)
                .bind(total)
                .bind(&shapes)
                .bind(written_n)
                .bind(&evicted_colls)
                .bind(&evicted_keys)
                .fetch_one(&mut *tx)
                .await
                .map_err(written)?;
            let first = last - total + 1;
            info.txn = last;
            for (i, (key, _, _)) in changed.iter().enumerate() {
                info.seqs.insert((*key).clone(), first + i as i64);
            }
        }
        tx.commit().await.map_err(written)?;
        self.saw_txn(info.txn);
        for key in evicted.iter().copied().chain(changed.iter().map(|c| c.0)) {
            self.integrity.forget(&key.0, &key.1);
        }

        // 4. Answer the jobs.
        for slot in slots.iter_mut() {
            if let Some(finish) = slot.finish.take() {
                slot.fail = None;
                finish(&info);
            }
        }
        Ok(())
    }
}

/// Writes a transaction's changes, as its last statement before commit:
///
/// - takes `$6` numbers from the `seq_counter` row (locked until commit, so commit order is
///   sequence order); the written documents get the first `$8` in batch order, the evicted
///   ones the rest;
/// - writes the changed rows (`$1` collections, `$2` keys, `$3` JSON, `$4` CRDT states, `$5`
///   deleted, `$7` typed shapes) and removes the evicted ones (`$9` collections, `$10` keys);
/// - appends one row per change of a document's JSON to the change log (`changes`, see
///   `sql/0010_change_log.sql`): the old JSON is read in the same snapshot, before the writes;
///   a change that leaves the JSON as it was (compared as Postgres' canonical `jsonb` text, so
///   `1` and `1.0` differ) writes none, and neither does the eviction of a tombstone;
/// - queues `NOTIFY bigpeer_changes` with the transaction id (delivered at commit).
///
/// Answers the transaction id (the last number taken); no row when a write went missing.
const WRITE_CHANGES: &str = "\
WITH c AS (UPDATE seq_counter SET v = v + $6 WHERE id = 0 RETURNING v), \
t AS MATERIALIZED (SELECT * FROM unnest($1::text[], $2::bytea[], $3::text[], $4::bytea[], \
      $5::bool[], $7::text[]) WITH ORDINALITY AS t(c, i, v, m, d, s, o)), \
old AS (SELECT t.o, p.value::text AS value FROM t LEFT JOIN LATERAL \
      (SELECT d.value FROM documents d WHERE d.collection = t.c AND d.id = t.i LIMIT 1) AS p ON true), \
w AS ( \
  INSERT INTO documents (collection, id, value, meta, shape, deleted, seq, txn, updated_at) \
  SELECT t.c, t.i, t.v::jsonb, t.m, t.s::jsonb, t.d, c.v - $6 + t.o, c.v, now() FROM t CROSS JOIN c \
  ON CONFLICT (collection, id) DO UPDATE SET value = EXCLUDED.value, \
    meta = EXCLUDED.meta, shape = EXCLUDED.shape, deleted = EXCLUDED.deleted, seq = EXCLUDED.seq, \
    txn = EXCLUDED.txn, updated_at = EXCLUDED.updated_at \
  RETURNING 1), \
e AS MATERIALIZED (SELECT * FROM unnest($9::text[], $10::bytea[]) WITH ORDINALITY AS e(c, i, o)), \
gone AS ( \
  DELETE FROM documents WHERE ctid = ANY (ARRAY( \
    SELECT m.ctid FROM e CROSS JOIN LATERAL (SELECT d.ctid FROM documents d \
      WHERE d.collection = e.c AND d.id = e.i LIMIT 1) AS m)) \
  RETURNING collection, id, value), \
log AS ( \
  INSERT INTO changes (seq, txn, collection, id, method, old_value, new_value) \
  SELECT c.v - $6 + t.o, c.v, t.c, t.i, \
    CASE WHEN t.v IS NULL THEN 'remove' WHEN old.value IS NULL THEN 'upsert' ELSE 'update' END, \
    old.value::jsonb, t.v::jsonb \
  FROM t JOIN old ON old.o = t.o CROSS JOIN c \
  WHERE old.value IS DISTINCT FROM (t.v::jsonb)::text \
  UNION ALL \
  SELECT c.v - $6 + $8 + e.o, c.v, e.c, e.i, 'evict', g.value, NULL \
  FROM e JOIN gone g ON g.collection = e.c AND g.id = e.i CROSS JOIN c \
  WHERE g.value IS NOT NULL \
  RETURNING 1), \
note AS (SELECT pg_notify('bigpeer_changes', c.v::text) FROM c) \
SELECT c.v FROM c WHERE (SELECT count(*) FROM w) = $8 AND (SELECT count(*) FROM note) = 1 \
  AND (SELECT count(*) FROM log) >= 0";

/// Loads the CRDT state of the targets `($1 collections, $2 keys)`.
///
/// One primary-key probe per target, whatever the table's statistics were when the connection
/// prepared the statement. A plain join of `documents` with the unnested keys is planned on a
/// young database (statistics of an empty table) as a hash join over a sequential scan, and the
/// connection keeps that generic plan until the table is next analysed: every write read the
/// whole table (2 ms of Postgres time per group-commit transaction at 40k documents; HTTP INSERT
/// throughput rose from 4.3k to 6.7k req/s with this form). `LIMIT 1` keeps the lateral subquery
/// from being flattened back into such a join.
pub(crate) const LOAD_TARGETS: &str = "SELECT t.c, t.i, m.meta \
     FROM unnest($1::text[], $2::bytea[]) AS t(c, i) \
     CROSS JOIN LATERAL (SELECT d.meta FROM documents d \
       WHERE d.collection = t.c AND d.id = t.i LIMIT 1) AS m";

/// A stable 64-bit lock key for a document (FNV-1a; the same in every process and version, so
/// that several bigpeer processes on one database agree).
pub(crate) fn lock_key(collection: &str, key: &[u8]) -> i64 {
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
