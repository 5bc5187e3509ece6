//! The embedded store: opening, local DQL, and the document reads and writes every other part
//! uses.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use bigpeer_dql::exec::{self, DocWrite, DocumentStore, QueryResult};
use bigpeer_dql::plan::{self, Plan, PlanOptions};
use bigpeer_dql::settings::Settings;
use bigpeer_schema::{
    limits, Clock, Doc, DocId, SchemaError, SiteId, Stamp, TypeView, Value, VersionVector,
};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::db;
use crate::error::{PeerError, Result};
use crate::observe::{Observer, Registry};

/// The database file [`Store::open_dir`] uses inside a data directory.
pub const FILE_NAME: &str = "smallpeer.sqlite3";

/// A small peer's durable store. Every statement, merge and acknowledgement is one SQLite
/// transaction (WAL, `synchronous = FULL`): after a crash the store holds exactly the committed
/// ones.
///
/// `Store` is `Send` but not `Sync`: share it between tasks behind a mutex.
pub struct Store {
    pub(crate) conn: Connection,
    pub(crate) clock: Clock,
    pub(crate) observers: Registry,
    /// Counts committed local writes (the sync client waits on it to push promptly).
    pub(crate) local_writes: tokio::sync::watch::Sender<u64>,
}

// The sync client moves the store into its task (behind a mutex): it must stay `Send`.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<Store>();
    send::<Observer>();
};

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("site", &self.clock.site())
            .field("hlc", &self.clock.last())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating when missing) the store in a SQLite file.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        Store::init(Connection::open(path)?)
    }

    /// Opens (creating when missing) the store [`FILE_NAME`] in a data directory.
    pub fn open_dir(dir: impl AsRef<Path>) -> Result<Store> {
        std::fs::create_dir_all(dir.as_ref())?;
        Store::open(dir.as_ref().join(FILE_NAME))
    }

    /// A store that lives in memory only (tests, scratch work).
    pub fn open_in_memory() -> Result<Store> {
        Store::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Store> {
        db::configure(&conn)?;
        let (site, hlc) = db::migrate(&mut conn)?;
        Ok(Store {
            conn,
            clock: Clock::resume(site, hlc),
            observers: Registry::default(),
            local_writes: tokio::sync::watch::channel(0).0,
        })
    }

    /// This store's site id: minted when the database was created, never reused.
    pub fn site(&self) -> SiteId {
        self.clock.site()
    }

    /// The clock's last value (every later local write is stamped above it).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Parses, checks and runs one statement, as the big peer would. Mutations are written in
    /// one transaction; observers are told afterwards.
    pub fn execute(&mut self, text: &str, args: &BTreeMap<String, Value>) -> Result<QueryResult> {
        let plan = self.plan(text, args)?;
        self.run(&plan)
    }

    /// [`Store::execute`] with the arguments as a JSON object (or `null` for none).
    pub fn execute_json(&mut self, text: &str, args: &serde_json::Value) -> Result<QueryResult> {
        let args = args_from_json(args)?;
        self.execute(text, &args)
    }

    /// Parses and checks one statement without running it ([`Store::run`] runs it).
    pub fn plan(&self, text: &str, args: &BTreeMap<String, Value>) -> Result<Plan> {
        let stmt = bigpeer_dql::parse(text)?;
        let settings = db::load_settings(&self.conn)?;
        let opts = PlanOptions {
            strict_mode: settings.strict_mode(),
        };
        Ok(plan::check_with(&stmt, args, &opts)?)
    }

    /// Runs a checked plan.
    pub fn run(&mut self, plan: &Plan) -> Result<QueryResult> {
        let writes = plan.is_mutation() || matches!(plan, Plan::AlterSystem { .. });
        let behavior = if writes {
            TransactionBehavior::Immediate
        } else {
            TransactionBehavior::Deferred
        };
        let tx = self.conn.transaction_with_behavior(behavior)?;
        let mut local = Local::begin(&tx, &mut self.clock, writes)?.with_lookup(plan);
        let result = exec::run(&mut local, plan)?;
        let touched = local.finish()?;
        tx.commit()?;
        if writes && !touched.is_empty() {
            self.local_writes.send_modify(|n| *n = n.wrapping_add(1));
        }
        self.notify(&touched);
        Ok(result)
    }

    /// Ticks after every committed local statement that wrote documents of this handle (the
    /// sync client waits on it to push local changes at once). Writes made through another
    /// handle or process on the same file are not seen here; the sync client also looks at the
    /// outbox every second.
    pub fn local_writes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.local_writes.subscribe()
    }

    /// Checks that a statement parses and plans as a `SELECT` (what a sync subscription or an
    /// observer needs); the big peer may still refuse forms it does not sync (`LIMIT`, ...).
    pub fn check_select(&self, text: &str, args: &BTreeMap<String, Value>) -> Result<()> {
        match self.plan(text, args)? {
            Plan::Select(_) => Ok(()),
            _ => Err(PeerError::Dql(bigpeer_dql::DqlError::invalid(
                "a subscription needs a SELECT statement",
                bigpeer_dql::ast::Span::NONE,
            ))),
        }
    }

    /// A live query: the observer holds the result now and gets it again each time it changes
    /// after a local statement or a remote merge.
    pub fn observe(&mut self, select: &str, args: &BTreeMap<String, Value>) -> Result<Observer> {
        let plan = self.plan(select, args)?;
        let Plan::Select(_) = &plan else {
            return Err(PeerError::Dql(bigpeer_dql::DqlError::invalid(
                "an observer needs a SELECT statement",
                bigpeer_dql::ast::Span::NONE,
            )));
        };
        let first = self.run(&plan)?;
        Ok(self.observers.add(plan, first.items))
    }

    /// Re-evaluates the observers that read a touched collection.
    pub(crate) fn notify(&mut self, touched: &BTreeSet<String>) {
        if touched.is_empty() || self.observers.is_empty() {
            return;
        }
        let Store {
            conn,
            clock,
            observers,
            ..
        } = self;
        observers.notify(touched, |plan| {
            let tx = conn.transaction()?;
            let mut local = Local::begin(&tx, clock, false)?.with_lookup(plan);
            let r = exec::run(&mut local, plan)?;
            tx.commit()?;
            Ok(r.items)
        });
    }

    /// The stored CRDT state of a document (live or deleted).
    pub fn doc_state(&self, collection: &str, id: &DocId) -> Result<Option<Doc>> {
        load_doc(&self.conn, collection, &id.key())
    }

    /// The live documents of a collection (with `_id`), in storage order.
    pub fn documents(&self, collection: &str) -> Result<Vec<Value>> {
        live_documents(&self.conn, collection)
    }
}

/// Arguments from JSON: an object of values, or `null` for none.
pub fn args_from_json(args: &serde_json::Value) -> Result<BTreeMap<String, Value>> {
    match Value::from_json(args.clone()) {
        Value::Object(o) => Ok(o),
        Value::Null => Ok(BTreeMap::new()),
        other => Err(PeerError::Args(format!(
            "arguments must be a JSON object, not {}",
            other.type_name()
        ))),
    }
}

/// One transaction's view of the store for the DQL executor.
pub(crate) struct Local<'c> {
    conn: &'c Connection,
    clock: &'c mut Clock,
    /// Last local change number used.
    change: i64,
    /// Collections written (for observers).
    touched: BTreeSet<String>,
    /// Whether this transaction may write (holds the write lock).
    writes: bool,
    dirty: bool,
    /// A point lookup ([`crate::lookup`]): the only documents of this collection the statement
    /// can match.
    lookup: Option<(String, Vec<Vec<u8>>)>,
}

impl<'c> Local<'c> {
    /// Starts work inside a transaction. A writing transaction first catches the clock up with
    /// the stored one, so that two processes sharing the file never issue the same stamp.
    pub(crate) fn begin(conn: &'c Connection, clock: &'c mut Clock, writes: bool) -> Result<Self> {
        let mut change = 0;
        if writes {
            let (hlc, c): (i64, i64) = conn
                .prepare_cached("SELECT hlc, change FROM peer WHERE one = 1")?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let stored = db::hlc_from_sql(hlc);
            if stored > clock.last() {
                *clock = Clock::resume(clock.site(), stored);
            }
            change = c;
        }
        Ok(Local {
            conn,
            clock,
            change,
            touched: BTreeSet::new(),
            writes,
            dirty: false,
            lookup: None,
        })
    }

    /// Restricts reads of the plan's collection to the documents its filter can match.
    pub(crate) fn with_lookup(mut self, plan: &Plan) -> Self {
        self.lookup = crate::lookup::candidates(plan)
            .map(|(c, ids)| (c.to_owned(), ids.iter().map(DocId::key).collect()));
        self
    }

    pub(crate) fn clock(&mut self) -> &mut Clock {
        self.dirty = true;
        self.clock
    }

    pub(crate) fn next_change(&mut self) -> i64 {
        self.dirty = true;
        self.change += 1;
        self.change
    }

    pub(crate) fn touch(&mut self, collection: &str) {
        if !self.touched.contains(collection) {
            self.touched.insert(collection.to_owned());
        }
    }

    pub(crate) fn conn(&self) -> &'c Connection {
        self.conn
    }

    /// Stores the clock and the change counter; returns the collections written.
    pub(crate) fn finish(self) -> Result<BTreeSet<String>> {
        if self.writes && self.dirty {
            self.conn
                .prepare_cached("UPDATE peer SET hlc = ?1, change = ?2 WHERE one = 1")?
                .execute(params![db::hlc_to_sql(self.clock.last()), self.change])?;
        }
        Ok(self.touched)
    }

    fn ensure_writable(&self) -> Result<()> {
        if self.writes {
            Ok(())
        } else {
            Err(PeerError::Corrupt(
                "a read-only statement tried to write".into(),
            ))
        }
    }
}

impl DocumentStore for Local<'_> {
    type Error = PeerError;

    /// All live documents, or under a point lookup the live ones among the candidates (the
    /// executor filters them again, so the answer is the same).
    fn live_documents(&self, collection: &str) -> Result<Vec<Value>> {
        match &self.lookup {
            Some((c, keys)) if c == collection => {
                live_documents_by_key(self.conn, collection, keys)
            }
            _ => live_documents(self.conn, collection),
        }
    }

    fn live_documents_viewed(&self, collection: &str, view: &TypeView) -> Result<Vec<Value>> {
        let keys = match &self.lookup {
            Some((c, keys)) if c == collection => Some(keys.as_slice()),
            _ => None,
        };
        viewed_documents(self.conn, collection, keys, view)
    }

    fn live_collections(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT DISTINCT collection FROM documents WHERE value IS NOT NULL ORDER BY collection",
        )?;
        let names = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(names)
    }

    fn load(&self, collection: &str, key: &[u8]) -> Result<Option<Doc>> {
        load_doc(self.conn, collection, key)
    }

    fn stamp(&mut self) -> Stamp {
        self.clock().tick()
    }

    fn settings(&self) -> Result<Settings> {
        db::load_settings(self.conn)
    }

    fn save_settings(&mut self, settings: &Settings) -> Result<()> {
        self.ensure_writable()?;
        db::save_settings(self.conn, settings)
    }

    fn write(&mut self, collection: &str, writes: Vec<DocWrite>) -> Result<()> {
        self.ensure_writable()?;
        let limit = usize::try_from(db::load_settings(self.conn)?.document_size_hard_limit())
            .unwrap_or(usize::MAX);
        for w in writes {
            match w {
                DocWrite::Put { id, doc } => {
                    check_write(self.conn, collection, &id, &doc, limit)?;
                    let change = self.next_change();
                    put_doc(self.conn, collection, &id, &doc, change)?;
                    self.conn
                        .prepare_cached(
                            "INSERT INTO outbox (collection, id, change, denied) \
                             VALUES (?1, ?2, ?3, NULL) ON CONFLICT (collection, id) \
                             DO UPDATE SET change = excluded.change, denied = NULL",
                        )?
                        .execute(params![collection, id.key(), change])?;
                }
                DocWrite::Evict { key } => {
                    self.conn
                        .prepare_cached("DELETE FROM documents WHERE collection = ?1 AND id = ?2")?
                        .execute(params![collection, key])?;
                    self.conn
                        .prepare_cached("DELETE FROM outbox WHERE collection = ?1 AND id = ?2")?
                        .execute(params![collection, key])?;
                }
            }
            self.touch(collection);
        }
        Ok(())
    }
}

/// Checks a local write with the big peer's validator (`bigpeer_schema::limits`), so that what
/// this store accepts is never refused when it is pushed: the collection name and the id, what
/// the write brings (the delta from the stored state, as the push will carry it) and the
/// document size. Deleting a document is always allowed; so is making one over the size limit
/// smaller.
fn check_write(
    conn: &Connection,
    collection: &str,
    id: &DocId,
    doc: &Doc,
    limit: usize,
) -> Result<()> {
    let stored = load_stored(conn, collection, &id.key())?;
    let (before, before_size) = match &stored {
        Some(s) => (&s.doc.vv, s.crdt.len()),
        None => (&VersionVector::new(), 0),
    };
    let new = doc.delta(before);
    if !doc.is_deleted() {
        limits::check_collection(collection).map_err(SchemaError::from)?;
        limits::check_id(id).map_err(SchemaError::from)?;
    }
    limits::check_state(&new.state).map_err(SchemaError::from)?;
    limits::check_size(doc.encode().len(), before_size, limit).map_err(SchemaError::from)?;
    Ok(())
}

const LIVE_COLUMNS: &str = "SELECT id, value, CASE WHEN value_exact THEN NULL ELSE crdt END \
     FROM documents WHERE collection = ?1 AND value IS NOT NULL";

/// The live documents of a collection (with `_id`), in storage-key order.
pub(crate) fn live_documents(conn: &Connection, collection: &str) -> Result<Vec<Value>> {
    let mut stmt = conn.prepare_cached(&format!("{LIVE_COLUMNS} ORDER BY id"))?;
    let mut rows = stmt.query(params![collection])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.extend(live_value(row)?);
    }
    Ok(out)
}

/// The live documents among the given storage keys, in storage-key order.
pub(crate) fn live_documents_by_key(
    conn: &Connection,
    collection: &str,
    keys: &[Vec<u8>],
) -> Result<Vec<Value>> {
    let mut keys = keys.to_vec();
    keys.sort();
    keys.dedup();
    let mut stmt = conn.prepare_cached(&format!("{LIVE_COLUMNS} AND id = ?2"))?;
    let mut out = Vec::new();
    for key in &keys {
        let mut rows = stmt.query(params![collection, key])?;
        if let Some(row) = rows.next()? {
            out.extend(live_value(row)?);
        }
    }
    Ok(out)
}

/// The live documents (all, or those among `keys`) as a strict-mode statement declaring `view`
/// sees them, in storage-key order: decoded from the CRDT state, where every field's types are.
pub(crate) fn viewed_documents(
    conn: &Connection,
    collection: &str,
    keys: Option<&[Vec<u8>]>,
    view: &TypeView,
) -> Result<Vec<Value>> {
    const COLUMNS: &str =
        "SELECT id, crdt FROM documents WHERE collection = ?1 AND value IS NOT NULL";
    let row_value = |row: &rusqlite::Row<'_>| -> Result<Option<Value>> {
        let key: Vec<u8> = row.get(0)?;
        let bytes: Vec<u8> = row.get(1)?;
        let id = DocId::from_key(&key)?;
        let doc = db::decode_doc(&bytes)?;
        Ok(bigpeer_dql::exec::viewed_with_id(&doc, &id, view))
    };
    let mut out = Vec::new();
    match keys {
        None => {
            let mut stmt = conn.prepare_cached(&format!("{COLUMNS} ORDER BY id"))?;
            let mut rows = stmt.query(params![collection])?;
            while let Some(row) = rows.next()? {
                out.extend(row_value(row)?);
            }
        }
        Some(keys) => {
            let mut keys = keys.to_vec();
            keys.sort();
            keys.dedup();
            let mut stmt = conn.prepare_cached(&format!("{COLUMNS} AND id = ?2"))?;
            for key in &keys {
                let mut rows = stmt.query(params![collection, key])?;
                if let Some(row) = rows.next()? {
                    out.extend(row_value(row)?);
                }
            }
        }
    }
    Ok(out)
}

/// A row of [`LIVE_COLUMNS`] as the document queries see.
fn live_value(row: &rusqlite::Row<'_>) -> Result<Option<Value>> {
    let crdt: Option<Vec<u8>> = row.get(2)?;
    match crdt {
        None => {
            let text = row
                .get_ref(1)?
                .as_str()
                .map_err(|e| PeerError::Corrupt(format!("value: {e}")))?;
            Value::parse_json(text)
                .map(Some)
                .map_err(|e| PeerError::Corrupt(format!("value: {e}")))
        }
        Some(bytes) => {
            let key = row
                .get_ref(0)?
                .as_blob()
                .map_err(|e| PeerError::Corrupt(format!("id: {e}")))?;
            let id = DocId::from_key(key)?;
            Ok(db::materialize(&id, &db::decode_doc(&bytes)?))
        }
    }
}

pub(crate) fn load_doc(conn: &Connection, collection: &str, key: &[u8]) -> Result<Option<Doc>> {
    let bytes: Option<Vec<u8>> = conn
        .prepare_cached("SELECT crdt FROM documents WHERE collection = ?1 AND id = ?2")?
        .query_row(params![collection, key], |r| r.get(0))
        .optional()?;
    bytes.map(|b| db::decode_doc(&b)).transpose()
}

/// A document's state and the version vector the big peer is known to have of it.
pub(crate) fn load_with_server_vv(
    conn: &Connection,
    collection: &str,
    key: &[u8],
) -> Result<Option<(Doc, VersionVector)>> {
    Ok(load_stored(conn, collection, key)?.map(|s| (s.doc, s.server_vv)))
}

/// A stored document as the merge of remote changes needs it.
pub(crate) struct StoredState {
    pub doc: Doc,
    /// The state's encoding as stored (to tell whether a merge changed it without a copy).
    pub crdt: Vec<u8>,
    pub server_vv: VersionVector,
}

pub(crate) fn load_stored(
    conn: &Connection,
    collection: &str,
    key: &[u8],
) -> Result<Option<StoredState>> {
    let row: Option<(Vec<u8>, Option<Vec<u8>>)> = conn
        .prepare_cached("SELECT crdt, server_vv FROM documents WHERE collection = ?1 AND id = ?2")?
        .query_row(params![collection, key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((crdt, vv)) = row else {
        return Ok(None);
    };
    let server_vv = match vv {
        Some(b) => db::decode_vv(&b)?,
        None => VersionVector::new(),
    };
    Ok(Some(StoredState {
        doc: db::decode_doc(&crdt)?,
        crdt,
        server_vv,
    }))
}

/// The `value` and `value_exact` columns of a document's state.
fn value_columns(id: &DocId, doc: &Doc) -> (Option<String>, bool) {
    match db::materialize(id, doc) {
        Some(v) => {
            let (text, exact) = db::value_json(&v);
            (Some(text), exact)
        }
        None => (None, true),
    }
}

/// Writes a document's state and its materialised value (keeping what is known of the server).
pub(crate) fn put_doc(
    conn: &Connection,
    collection: &str,
    id: &DocId,
    doc: &Doc,
    change: i64,
) -> Result<()> {
    let (value, exact) = value_columns(id, doc);
    conn.prepare_cached(
        "INSERT INTO documents (collection, id, crdt, value, value_exact, change, server_vv) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL) ON CONFLICT (collection, id) DO UPDATE SET \
         crdt = excluded.crdt, value = excluded.value, value_exact = excluded.value_exact, \
         change = excluded.change",
    )?
    .execute(params![
        collection,
        id.key(),
        doc.encode(),
        value,
        exact,
        change
    ])?;
    Ok(())
}

/// Writes a merged document: its state (`crdt`, the encoding of `doc`), materialised value and
/// what the big peer is known to have of it, in one statement.
#[allow(clippy::too_many_arguments)]
pub(crate) fn put_merged(
    conn: &Connection,
    collection: &str,
    key: &[u8],
    id: &DocId,
    doc: &Doc,
    crdt: &[u8],
    change: i64,
    server_vv: &VersionVector,
) -> Result<()> {
    let (value, exact) = value_columns(id, doc);
    conn.prepare_cached(
        "INSERT INTO documents (collection, id, crdt, value, value_exact, change, server_vv) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (collection, id) DO UPDATE SET \
         crdt = excluded.crdt, value = excluded.value, value_exact = excluded.value_exact, \
         change = excluded.change, server_vv = excluded.server_vv",
    )?
    .execute(params![
        collection,
        key,
        crdt,
        value,
        exact,
        change,
        db::encode_vv(server_vv)
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bigpeer_schema::Hlc;

    fn run(store: &mut Store, text: &str) -> QueryResult {
        store
            .execute(text, &BTreeMap::new())
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn items(store: &mut Store, text: &str) -> String {
        Value::Array(run(store, text).items).to_json_string()
    }

    fn max_stamp(store: &Store, collection: &str, id: &str) -> Stamp {
        store
            .doc_state(collection, &DocId::string(id))
            .expect("read")
            .and_then(|d| d.max_stamp())
            .expect("document with a stamp")
    }

    #[test]
    fn crash_without_close_keeps_commits_and_the_clock_resumes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.sqlite3");
        let mut s = Store::open(&path).expect("open");
        let site = s.site();
        run(&mut s, "INSERT INTO c DOCUMENTS ({'_id': 'a', 'n': 1})");
        run(&mut s, "UPDATE c SET n = 2 WHERE _id = 'a'");
        let old = max_stamp(&s, "c", "a");
        // A crash: the connection is never closed and the WAL never checkpointed.
        std::mem::forget(s);

        let mut s = Store::open(&path).expect("reopen");
        assert_eq!(s.site(), site, "the identity survives");
        assert!(s.clock().last() >= old.hlc);
        assert_eq!(items(&mut s, "SELECT * FROM c"), r#"[{"_id":"a","n":2}]"#);
        run(&mut s, "UPDATE c SET n = 3 WHERE _id = 'a'");
        assert!(max_stamp(&s, "c", "a") > old);
    }

    #[test]
    fn the_stored_clock_wins_over_a_wall_clock_behind_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.sqlite3");
        drop(Store::open(&path).expect("create"));
        // As if the previous run had a wall clock ten minutes ahead of this one.
        let ahead = Hlc::new(bigpeer_schema::hlc::now_ms() + 600_000, 3);
        Connection::open(&path)
            .expect("raw")
            .execute("UPDATE peer SET hlc = ?1", params![db::hlc_to_sql(ahead)])
            .expect("set hlc");
        let mut s = Store::open(&path).expect("reopen");
        run(&mut s, "INSERT INTO c DOCUMENTS ({'_id': 'a'})");
        assert!(max_stamp(&s, "c", "a").hlc > ahead);
    }

    #[test]
    fn two_handles_on_one_file_never_reuse_a_stamp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.sqlite3");
        let mut a = Store::open(&path).expect("a");
        let mut b = Store::open(&path).expect("b");
        assert_eq!(a.site(), b.site());
        run(&mut a, "INSERT INTO c DOCUMENTS ({'_id': 'x', 'n': 0})");
        let ahead = Hlc::new(bigpeer_schema::hlc::now_ms() + 600_000, 0);
        a.clock = Clock::resume(a.site(), ahead);
        run(&mut a, "UPDATE c SET n = 1 WHERE _id = 'x'");
        // b's clock is behind a's last stamp; it must catch up from the file before writing.
        run(&mut b, "UPDATE c SET n = 2 WHERE _id = 'x'");
        assert!(max_stamp(&b, "c", "x").hlc > ahead);
        assert_eq!(items(&mut a, "SELECT n FROM c"), r#"[{"n":2}]"#);
    }

    #[test]
    fn settings_persist() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.sqlite3");
        let mut s = Store::open(&path).expect("open");
        run(&mut s, "ALTER SYSTEM SET DQL_STRICT_MODE = true");
        run(&mut s, "ALTER SYSTEM SET TOMBSTONE_TTL_HOURS = 5");
        drop(s);
        let mut s = Store::open(&path).expect("reopen");
        assert_eq!(
            items(&mut s, "SHOW DQL_STRICT_MODE"),
            r#"[{"dql_strict_mode":true}]"#
        );
        // Strict mode changes what the next statement does: objects are registers.
        run(
            &mut s,
            "INSERT INTO p DOCUMENTS ({'_id': 'y', 'o': {'a': 1, 'b': 2}})",
        );
        run(
            &mut s,
            "INSERT INTO p DOCUMENTS ({'_id': 'y', 'o': {'a': 5}}) ON ID CONFLICT DO UPDATE",
        );
        assert_eq!(items(&mut s, "SELECT o FROM p"), r#"[{"o":{"a":5}}]"#);
        run(&mut s, "ALTER SYSTEM RESET ALL");
        drop(s);
        let mut s = Store::open(&path).expect("reopen");
        assert_eq!(
            items(&mut s, "SHOW TOMBSTONE_TTL_HOURS"),
            r#"[{"tombstone_ttl_hours":720}]"#
        );
    }

    #[test]
    fn binary_values_read_back_exactly() {
        let mut s = Store::open_in_memory().expect("open");
        let mut args = BTreeMap::new();
        args.insert("b".to_owned(), Value::Binary(vec![0, 1, 255]));
        s.execute(
            "INSERT INTO c DOCUMENTS ({'_id': 'a', 'b': :b, 'n': 1.0})",
            &args,
        )
        .expect("insert");
        let r = run(&mut s, "SELECT b, n FROM c");
        let Some(Value::Object(o)) = r.items.first() else {
            panic!("one item: {:?}", r.items);
        };
        assert_eq!(o.get("b"), Some(&Value::Binary(vec![0, 1, 255])));
        assert_eq!(o.get("n"), Some(&Value::Float(1.0)));
        let exact: bool = s
            .conn
            .query_row("SELECT value_exact FROM documents", [], |r| r.get(0))
            .expect("row");
        assert!(!exact);
    }

    #[test]
    fn failed_statements_write_nothing_and_reads_do_not_move_the_counter() {
        let mut s = Store::open_in_memory().expect("open");
        run(&mut s, "INSERT INTO c DOCUMENTS ({'_id': 'a'})");
        let change = |s: &Store| -> i64 {
            s.conn
                .query_row("SELECT change FROM peer", [], |r| r.get(0))
                .expect("peer")
        };
        let before = change(&s);
        let err = s
            .execute(
                "INSERT INTO c DOCUMENTS ({'_id': 'b'}), ({'_id': 'a'})",
                &BTreeMap::new(),
            )
            .expect_err("id conflict");
        assert_eq!(err.code(), "query/evaluation");
        assert_eq!(items(&mut s, "SELECT _id FROM c"), r#"[{"_id":"a"}]"#);
        assert_eq!(change(&s), before);
        assert_eq!(s.outbox().expect("outbox").len(), 1);
    }

    #[test]
    fn evict_forgets_the_document_and_its_outbox_entry() {
        let mut s = Store::open_in_memory().expect("open");
        run(
            &mut s,
            "INSERT INTO c DOCUMENTS ({'_id': 'a'}), ({'_id': 'b'})",
        );
        run(&mut s, "DELETE FROM c WHERE _id = 'b'");
        let r = run(&mut s, "EVICT FROM c WHERE true");
        assert_eq!(Value::Array(r.mutated_ids).to_json_string(), r#"["a"]"#);
        assert!(s
            .doc_state("c", &DocId::string("a"))
            .expect("read")
            .is_none());
        // The deleted document is still known (its tombstone must reach the big peer).
        assert!(s
            .doc_state("c", &DocId::string("b"))
            .expect("read")
            .is_some());
        let outbox: Vec<String> = s
            .outbox()
            .expect("outbox")
            .into_iter()
            .map(|e| e.id.to_string())
            .collect();
        assert_eq!(outbox.len(), 1, "{outbox:?}");
    }

    #[test]
    fn bad_arguments_are_refused() {
        let mut s = Store::open_in_memory().expect("open");
        let err = s
            .execute_json("SELECT 1", &serde_json::json!([1]))
            .expect_err("array args");
        assert_eq!(err.code(), "query/invalid");
        assert!(err.is_user_error());
        let err = s
            .execute("SELECT * FROM c WHERE x = :missing", &BTreeMap::new())
            .expect_err("missing arg");
        assert_eq!(err.code(), "query/invalid");
    }
}
