//! Executing one DQL statement against the store: one statement, one transaction.
//!
//! - SELECT runs as one compiled, parameterised Postgres statement.
//! - INSERT locks the documents by id (they are known from the statement) and decides each one
//!   under the lock (`ON ID CONFLICT`), through group commit.
//! - UPDATE / DELETE / EVICT first find their targets with the compiled query (a snapshot
//!   read), then lock them and check the filter again on the locked state, so a document that
//!   changed in between is updated from its newest state, or left alone when it no longer
//!   matches. Self-references (`SET n = n + 1`) read the locked state: concurrent increments are
//!   never lost.
//! - ALTER SYSTEM / SHOW / EXPLAIN are answered without documents.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use bigpeer_dql::ast::Statement;
use bigpeer_dql::eval::{self, InsertOutcome};
use bigpeer_dql::plan::{self, PExpr, Plan, PlanOptions, RemoveKind, Source};
use bigpeer_dql::settings::Settings;
use bigpeer_dql::sql::{self, Compiled, CompiledPlan};
use bigpeer_schema::{DocId, Op, Value};

use super::{Access, Allowed, ServiceError};
use crate::auth::AuthError;
use crate::store::{GroupCommit, GroupCommitOptions, Items, Store, StoreError, Working};

/// What kind of statement ran (Ditto's `queryType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryType {
    Select,
    Mutation,
}

impl QueryType {
    pub fn as_str(self) -> &'static str {
        match self {
            QueryType::Select => "select",
            QueryType::Mutation => "mutation",
        }
    }
}

/// The answer to one statement.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecuteResult {
    /// The transaction the statement wrote in, or the newest committed one for reads.
    pub txn: i64,
    pub query_type: QueryType,
    pub items: Vec<Value>,
    /// Ids of the documents written, sorted by id.
    pub mutated_ids: Vec<Value>,
}

/// Runs DQL statements. Cheap to clone.
#[derive(Clone)]
pub struct Executor {
    pub(super) store: Store,
    pub(super) group: GroupCommit,
    settings: Arc<RwLock<Settings>>,
    /// `DQL_STRICT_MODE`, read on every statement without the settings lock.
    strict_mode: Arc<AtomicBool>,
    /// Compiled statements by text: the parsed statement and the planning options it is
    /// planned with. Bounded; emptied by `ALTER SYSTEM`, and an entry compiled under other
    /// settings is compiled again.
    prepared: moka::sync::Cache<String, Arc<Prepared>>,
    /// Most items a SELECT returns at once.
    max_items: usize,
}

/// A compiled statement: parsed, with the options it is planned with.
#[derive(Debug)]
pub(super) struct Prepared {
    pub stmt: bigpeer_dql::ast::Statement,
    pub opts: PlanOptions,
}

/// Most items one SELECT returns; more is a `query/result-too-large` error.
pub const MAX_RESULT_ITEMS: usize = 100_000;

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// An executor over `store`; starts the group-commit tasks on the current runtime.
    pub fn new(store: Store, group: &GroupCommitOptions) -> Executor {
        Executor {
            group: GroupCommit::start(store.clone(), group),
            store,
            strict_mode: Arc::new(AtomicBool::new(Settings::default().strict_mode())),
            settings: Arc::new(RwLock::new(Settings::default())),
            prepared: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_idle(std::time::Duration::from_secs(3600))
                .build(),
            max_items: MAX_RESULT_ITEMS,
        }
    }

    /// `DQL_STRICT_MODE` as `ALTER SYSTEM` sets it, shared with sync sessions: a subscription
    /// planned while it is on sees documents through its type declarations, as the same SELECT.
    pub fn strict_mode_flag(&self) -> Arc<AtomicBool> {
        self.strict_mode.clone()
    }

    /// Uses the system parameters kept in the database (`ALTER SYSTEM` of any process, before
    /// or since this one started). Statements compiled under other settings are compiled
    /// again. Returns the kept parameters that are not valid any more (left at their defaults).
    pub async fn load_settings(&self) -> Result<Vec<String>, StoreError> {
        let (loaded, dropped) = Settings::from_overrides(self.store.system_settings().await?);
        self.store
            .set_document_size_limit(loaded.document_size_hard_limit());
        let changed = {
            let mut s = self.settings.write().unwrap_or_else(|p| p.into_inner());
            let changed = *s != loaded;
            if changed {
                self.strict_mode
                    .store(loaded.strict_mode(), Ordering::Release);
                *s = loaded;
            }
            changed
        };
        if changed {
            // Compiled statements may mean something else now.
            self.prepared.invalidate_all();
        }
        Ok(dropped)
    }

    /// Re-reads the kept system parameters every `period` (what another process's `ALTER
    /// SYSTEM` changed), until the store's pool is closed.
    pub fn refresh_settings_every(
        &self,
        period: std::time::Duration,
    ) -> tokio::task::JoinHandle<()> {
        let exec = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                if exec.store.is_closed() {
                    break;
                }
                if let Err(e) = exec.load_settings().await {
                    tracing::debug!(error = %e, "could not re-read the system parameters");
                }
            }
        })
    }

    /// The same executor with another result size cap.
    pub fn with_max_items(mut self, max_items: usize) -> Executor {
        self.max_items = max_items.max(1);
        self
    }

    fn settings(&self) -> Settings {
        self.settings
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The compiled statement: from the cache when it was compiled under the current
    /// settings, else parsed now (and cached).
    pub(super) fn prepare(&self, statement: &str) -> Result<Arc<Prepared>, bigpeer_dql::DqlError> {
        let opts = PlanOptions {
            strict_mode: self.strict_mode.load(Ordering::Acquire),
        };
        if let Some(p) = self.prepared.get(statement) {
            if p.opts == opts {
                return Ok(p);
            }
        }
        let p = Arc::new(Prepared {
            stmt: bigpeer_dql::parse(statement)?,
            opts,
        });
        if statement.len() <= 16 * 1024 {
            self.prepared.insert(statement.to_owned(), p.clone());
        }
        Ok(p)
    }

    /// Whether a statement only reads (SELECT, SHOW, EXPLAIN), from the cache of parsed
    /// statements: a read may be run again when its connection is lost, a write may not.
    pub fn is_read(&self, statement: &str) -> bool {
        self.prepare(statement).is_ok_and(|p| {
            matches!(
                p.stmt,
                Statement::Select(_) | Statement::Show(_) | Statement::Explain(_)
            )
        })
    }

    /// How many compiled statements are cached (for tests).
    pub fn cached_statements(&self) -> u64 {
        self.prepared.run_pending_tasks();
        self.prepared.entry_count()
    }

    /// Parses, checks and runs one statement with every permission.
    pub async fn execute(
        &self,
        statement: &str,
        args: &BTreeMap<String, Value>,
    ) -> Result<ExecuteResult, ServiceError> {
        self.execute_as(statement, args, &Access::all()).await
    }

    /// Parses, checks and runs one statement within `access`: reads see only permitted
    /// documents; a write that touches a document outside the write permission fails as a whole
    /// (`auth/forbidden`) and writes nothing.
    pub async fn execute_as(
        &self,
        statement: &str,
        args: &BTreeMap<String, Value>,
        access: &Access,
    ) -> Result<ExecuteResult, ServiceError> {
        let prepared = self.prepare(statement)?;
        let plan = plan::check_with(&prepared.stmt, args, &prepared.opts)?;
        self.run(plan, access).await
    }

    /// Checks and runs a statement built as a tree (the legacy routes' statements) within
    /// `access`, as [`Executor::execute_as`] runs a text: no text is written or parsed.
    pub async fn execute_statement_as(
        &self,
        statement: &Statement,
        args: &BTreeMap<String, Value>,
        access: &Access,
    ) -> Result<ExecuteResult, ServiceError> {
        let opts = PlanOptions {
            strict_mode: self.strict_mode.load(Ordering::Acquire),
        };
        let plan = plan::check_with(statement, args, &opts)?;
        self.run(plan, access).await
    }

    async fn run(&self, plan: Plan, access: &Access) -> Result<ExecuteResult, ServiceError> {
        match plan {
            Plan::Select(select) => {
                let items = match &select.source {
                    Source::Collection(coll) => {
                        let allowed = access.read(coll)?;
                        if allowed == Allowed::All {
                            if let Some(id) = point_lookup(&select) {
                                let items = self.get_by_id(coll, &id).await?;
                                return Ok(self.read_result(items).await?);
                            }
                        }
                        let permission = match allowed {
                            Allowed::All => None,
                            Allowed::Nothing => return Err(forbidden("read", coll)),
                            Allowed::Matching(p) => Some(p),
                        };
                        let whole = whole_documents(&select);
                        match sql::compile_within(&Plan::Select(select), permission.as_ref())? {
                            CompiledPlan::Query(c) => self.query_items(&c, whole).await?,
                            _ => Vec::new(),
                        }
                    }
                    Source::SystemCollections => {
                        let names = self.store.live_collections().await?;
                        let mut listed = Vec::with_capacity(names.len());
                        for name in names {
                            if self.has_readable(&name, access).await? {
                                listed.push(name);
                            }
                        }
                        eval::select(&select, &eval::system_collection_docs(&listed))?
                    }
                };
                Ok(self.read_result(items).await?)
            }
            Plan::Insert(insert) => {
                let scope = WriteScope::of(access, &insert.collection)?;
                self.insert(insert, scope).await
            }
            Plan::Update(_) | Plan::Remove(_) => {
                let scope = WriteScope::of(access, plan.collection().unwrap_or_default())?;
                self.update_or_remove(plan, scope).await
            }
            Plan::AlterSystem { name, value } => {
                if !access.permissions().write.everything {
                    return Err(ServiceError::Auth(AuthError::Forbidden(
                        "ALTER SYSTEM needs the permission to write everything".into(),
                    )));
                }
                // Checked on a copy, kept in the database (shared with the other processes and
                // kept across restarts), then read back: the database holds the truth when
                // several ALTERs race.
                let mut next = self.settings();
                let items = next.alter(name.as_deref(), value.as_ref())?;
                match name.as_deref() {
                    None => self.store.reset_system_settings().await?,
                    Some(n) => self.store.set_system_setting(n, value.as_ref()).await?,
                }
                self.load_settings().await?;
                Ok(self.read_result(items).await?)
            }
            Plan::Show { name } => {
                let items = self.settings().show(name.as_deref())?;
                Ok(self.read_result(items).await?)
            }
            Plan::Explain(inner) => {
                if let Some(coll) = inner.collection() {
                    if access.read(coll)? == Allowed::Nothing
                        && access.write(coll)? == Allowed::Nothing
                    {
                        return Err(forbidden("read", coll));
                    }
                }
                let mut item = plan::explain(&inner);
                if let (Value::Object(o), Ok(compiled)) = (&mut item, sql::compile(&inner)) {
                    let text = match compiled {
                        CompiledPlan::Query(c) | CompiledPlan::Mutation { targets: c } => {
                            Some(c.sql)
                        }
                        CompiledPlan::NoSql => None,
                    };
                    if let Some(t) = text {
                        o.insert("sql".to_owned(), Value::String(t));
                    }
                }
                Ok(self.read_result(vec![item]).await?)
            }
        }
    }

    /// Whether `collection` holds a live document `access` may read: a collection whose
    /// documents are all outside the read permission is not listed (its existence would say
    /// that documents the caller may not read exist).
    async fn has_readable(&self, collection: &str, access: &Access) -> Result<bool, ServiceError> {
        let permission = match access.read(collection)? {
            Allowed::All => return Ok(true),
            Allowed::Nothing => return Ok(false),
            Allowed::Matching(p) => p,
        };
        // `SELECT _id FROM collection LIMIT 1`, within the permission.
        let probe = plan::SelectPlan {
            source: Source::Collection(collection.to_owned()),
            filter: None,
            distinct: false,
            projection: plan::Projection::Fields(vec![(
                "_id".to_owned(),
                PExpr::Field(vec!["_id".to_owned()]),
            )]),
            grouping: None,
            order_by: Vec::new(),
            limit: Some(1),
            offset: None,
            view: None,
        };
        match sql::compile_within(&Plan::Select(probe), Some(&permission))? {
            CompiledPlan::Query(c) => Ok(!self.query_items(&c, true).await?.is_empty()),
            _ => Ok(false),
        }
    }

    async fn read_result(&self, items: Vec<Value>) -> Result<ExecuteResult, StoreError> {
        Ok(ExecuteResult {
            txn: self.store.known_txn().await?,
            query_type: QueryType::Select,
            items,
            mutated_ids: Vec::new(),
        })
    }

    /// `SELECT * FROM c WHERE _id = <id>`: one primary-key lookup (shared with the other
    /// point reads waiting at the same moment, see `Store::read_current`).
    async fn get_by_id(&self, collection: &str, id: &DocId) -> Result<Vec<Value>, ServiceError> {
        Ok(self
            .store
            .read_current(collection, &id.key())
            .await?
            .into_iter()
            .collect())
    }

    /// The items of a compiled SELECT. `whole_documents`: the items are stored documents as
    /// they are (`SELECT *`), so one that does not decode is an unreadable row, skipped.
    async fn query_items(
        &self,
        c: &Compiled,
        whole_documents: bool,
    ) -> Result<Vec<Value>, ServiceError> {
        match self
            .store
            .select_items(c, self.max_items, whole_documents)
            .await?
        {
            Items::Found(items) => Ok(items),
            Items::TooMany => Err(ServiceError::ResultTooLarge {
                limit: self.max_items,
            }),
            Items::Unrepresentable => Err(unrepresentable_item()),
        }
    }

    async fn insert(
        &self,
        insert: plan::InsertPlan,
        scope: WriteScope,
    ) -> Result<ExecuteResult, ServiceError> {
        let coll = insert.collection.clone();
        let targets = insert
            .documents
            .iter()
            .map(|d| (coll.clone(), d.id.clone()))
            .collect();
        let job = move |w: &mut Working<'_>| apply_insert(w, &insert, &scope);
        let (ids, info) = self.group.transact(targets, job).await?;
        Ok(ExecuteResult {
            txn: info.txn,
            query_type: QueryType::Mutation,
            items: Vec::new(),
            mutated_ids: sorted(ids),
        })
    }

    /// The documents an UPDATE / DELETE / EVICT may change, from a snapshot read: among the
    /// documents the caller may read (`scope`), those its filter matches. The write job checks
    /// both again on each locked document.
    pub(super) async fn find_targets(
        &self,
        plan: &Plan,
        scope: &WriteScope,
    ) -> Result<Vec<DocId>, ServiceError> {
        let CompiledPlan::Mutation { targets: find } =
            sql::compile_within(plan, scope.read.as_ref())?
        else {
            return Err(ServiceError::Store(StoreError::Internal(
                "a mutation compiled to no target query",
            )));
        };
        Ok(self
            .store
            .target_ids(&find, plan.collection().unwrap_or_default())
            .await?)
    }

    async fn update_or_remove(
        &self,
        plan: Plan,
        scope: WriteScope,
    ) -> Result<ExecuteResult, ServiceError> {
        scope.needs_read(plan.collection().unwrap_or_default())?;
        let ids = self.find_targets(&plan, &scope).await?;
        let coll = plan.collection().unwrap_or_default().to_owned();
        if ids.is_empty() {
            return Ok(ExecuteResult {
                txn: self.store.committed_txn().await?,
                query_type: QueryType::Mutation,
                items: Vec::new(),
                mutated_ids: Vec::new(),
            });
        }
        let targets = ids.iter().map(|id| (coll.clone(), id.clone())).collect();
        let job = move |w: &mut Working<'_>| apply_update_or_remove(w, &plan, &coll, &ids, &scope);
        let (ids, info) = self.group.transact(targets, job).await?;
        Ok(ExecuteResult {
            txn: info.txn,
            query_type: QueryType::Mutation,
            items: Vec::new(),
            mutated_ids: sorted(ids),
        })
    }
}

/// The id of a plain point lookup, `SELECT * FROM c WHERE _id = <valid id>` (either operand
/// order, nothing else in the statement), which one primary-key read answers. The general path
/// finds such a document by the same key (`id = key`) and checks `_id = <id>` again, which the
/// key equality already implies.
fn point_lookup(s: &plan::SelectPlan) -> Option<DocId> {
    // A strict-mode view is computed from the typed state: the general path reads it.
    let plain = !s.distinct
        && s.view.is_none()
        && s.grouping.is_none()
        && s.order_by.is_empty()
        && s.limit.is_none()
        && s.offset.is_none()
        && matches!(&s.projection, plan::Projection::Document { extra } if extra.is_empty());
    if !plain {
        return None;
    }
    let is_id = |e: &PExpr| matches!(e, PExpr::Field(p) if p.len() == 1 && p[0] == "_id");
    match s.filter.as_ref()? {
        PExpr::Cmp(plan::CmpOp::Eq, a, b) => match (a.as_ref(), b.as_ref()) {
            (f, PExpr::Lit(v)) | (PExpr::Lit(v), f) if is_id(f) => DocId::new(v.clone()).ok(),
            _ => None,
        },
        _ => None,
    }
}

/// Whether a SELECT returns the stored documents as they are (no computed item).
fn whole_documents(s: &plan::SelectPlan) -> bool {
    s.grouping.is_none()
        && matches!(&s.projection, plan::Projection::Document { extra } if extra.is_empty())
}

/// Applies an INSERT plan inside a write job: the ids written.
///
/// An existing document outside the caller's read or write permission is refused before its
/// conflict policy is looked at, with the error a write outside the permission gets: whether
/// the statement would have skipped, updated or failed on it depends on its content, which the
/// caller may not learn.
pub(super) fn apply_insert(
    w: &mut Working<'_>,
    insert: &plan::InsertPlan,
    scope: &WriteScope,
) -> Result<Vec<DocId>, StoreError> {
    let mut mutated = Vec::new();
    for d in &insert.documents {
        let existing = w.value(&insert.collection, &d.id)?;
        if let Some(v) = &existing {
            if !scope.may_read(v)? {
                return Err(denied(&insert.collection, &d.id));
            }
        }
        match eval::insert_ops(insert, d, existing.as_ref()).map_err(query_error)? {
            InsertOutcome::Skip => {}
            InsertOutcome::Write(ops) => {
                if let Some(v) = &existing {
                    check_write(scope, &insert.collection, &d.id, v)?;
                }
                w.apply_ops(&insert.collection, &d.id, &ops)?;
                if let Some(after) = w.value(&insert.collection, &d.id)? {
                    check_write(scope, &insert.collection, &d.id, &after)?;
                }
                mutated.push(d.id.clone());
            }
        }
    }
    Ok(mutated)
}

/// Applies an UPDATE or a DELETE / EVICT plan inside a write job to the candidate documents
/// `ids` (locked by the job): the filter is checked again on each locked, newest state. `then`
/// runs on every updated document after the update's own operations. The ids written.
pub(super) fn apply_update_or_remove(
    w: &mut Working<'_>,
    plan: &Plan,
    coll: &str,
    ids: &[DocId],
    scope: &WriteScope,
) -> Result<Vec<DocId>, StoreError> {
    apply_update_or_remove_then(w, plan, coll, ids, scope, |_, _| Ok(()))
}

/// [`apply_update_or_remove`] with extra work on every updated document (`then`, given the
/// document's id and run after the update's own operations).
pub(super) fn apply_update_or_remove_then(
    w: &mut Working<'_>,
    plan: &Plan,
    coll: &str,
    ids: &[DocId],
    scope: &WriteScope,
    mut then: impl FnMut(&mut Working<'_>, &DocId) -> Result<(), StoreError>,
) -> Result<Vec<DocId>, StoreError> {
    let (filter, view) = match plan {
        Plan::Update(u) => (u.target.filter.as_ref(), u.target.view.as_ref()),
        Plan::Remove(r) => (r.target.filter.as_ref(), r.target.view.as_ref()),
        _ => (None, None),
    };
    let mut mutated = Vec::new();
    for id in ids {
        match unreadable_row(w, plan, coll, id, scope)? {
            Unreadable::Evicted => {
                mutated.push(id.clone());
                continue;
            }
            Unreadable::Skipped => continue,
            Unreadable::No => {}
        }
        // Check the filter again on the locked, newest state (as the statement sees it: in
        // strict mode through its type declarations). Permissions look at the whole document.
        let Some(value) = w.value(coll, id)? else {
            continue;
        };
        // A document the caller may not read does not exist for it: checked first, so that
        // nothing about it (not even an error of the filter) reaches the caller.
        if !scope.may_read(&value)? {
            continue;
        }
        let seen = match view {
            Some(v) => match w.view(coll, id, v)? {
                Some(seen) => std::borrow::Cow::Owned(seen),
                None => continue,
            },
            None => std::borrow::Cow::Borrowed(&value),
        };
        if !eval::matches(filter, &seen).map_err(query_error)? {
            continue;
        }
        check_write(scope, coll, id, &value)?;
        match plan {
            Plan::Update(u) => {
                let ops = eval::update_ops(u, &seen).map_err(query_error)?;
                w.apply_ops(coll, id, &ops)?;
                then(w, id)?;
                if let Some(after) = w.value(coll, id)? {
                    check_write(scope, coll, id, &after)?;
                }
            }
            Plan::Remove(r) => match r.kind {
                RemoveKind::Delete => w.apply_ops(coll, id, &[Op::Delete])?,
                RemoveKind::Evict => w.evict(coll, id)?,
            },
            _ => {}
        }
        mutated.push(id.clone());
    }
    Ok(mutated)
}

/// What became of a target whose stored row does not decode.
enum Unreadable {
    /// The row decodes.
    No,
    /// Evicted (an EVICT that matched it, by a key that may read and write the whole
    /// collection).
    Evicted,
    /// Left alone: its filter cannot be checked, and for a key with a narrower permission it
    /// does not exist (nothing is said about it).
    Skipped,
}

/// A target whose stored row does not decode (its filter cannot be checked again) is evicted by
/// an EVICT of a key that may read and write the whole collection, and skipped otherwise.
fn unreadable_row(
    w: &mut Working<'_>,
    plan: &Plan,
    coll: &str,
    id: &DocId,
    scope: &WriteScope,
) -> Result<Unreadable, StoreError> {
    if !w.is_unreadable(coll, id)? {
        return Ok(Unreadable::No);
    }
    let evicting = matches!(plan, Plan::Remove(r) if r.kind == RemoveKind::Evict);
    let whole = scope.read.is_none() && !scope.unreadable && scope.write.is_none();
    if evicting && whole {
        w.evict(coll, id)?;
        return Ok(Unreadable::Evicted);
    }
    Ok(Unreadable::Skipped)
}

pub(super) fn forbidden(what: &str, collection: &str) -> ServiceError {
    ServiceError::Auth(AuthError::Forbidden(format!(
        "no permission to {what} collection \"{collection}\""
    )))
}

/// What a write may touch in one collection: the documents of the read permission (the others
/// do not exist for the caller: a mutation's targets are restricted to read ∩ write), and of
/// those the ones the write permission covers before and after the write.
#[derive(Debug, Clone, Default)]
pub struct WriteScope {
    /// The read permission: `None` for everything.
    pub read: Option<PExpr>,
    /// The collection cannot be read at all.
    pub unreadable: bool,
    /// The write permission: `None` for everything.
    pub write: Option<PExpr>,
}

impl WriteScope {
    /// The scope of `access` on `collection`; an error when it may not write there at all.
    pub fn of(access: &Access, collection: &str) -> Result<WriteScope, ServiceError> {
        let write = match access.write(collection)? {
            Allowed::All => None,
            Allowed::Nothing => return Err(forbidden("write to", collection)),
            Allowed::Matching(p) => Some(p),
        };
        let (read, unreadable) = match access.read(collection)? {
            Allowed::All => (None, false),
            Allowed::Nothing => (None, true),
            Allowed::Matching(p) => (Some(p), false),
        };
        Ok(WriteScope {
            read,
            unreadable,
            write,
        })
    }

    /// UPDATE, DELETE and EVICT find their documents by what they read: they need the
    /// permission to read the collection (a refusal that depends on the key alone).
    pub fn needs_read(&self, collection: &str) -> Result<(), ServiceError> {
        if self.unreadable {
            return Err(ServiceError::Auth(AuthError::Forbidden(format!(
                "no permission to read collection \"{collection}\": UPDATE, DELETE and EVICT \
                 only see documents the key may read"
            ))));
        }
        Ok(())
    }

    /// Whether the caller may read this (whole, stored) document.
    pub fn may_read(&self, value: &Value) -> Result<bool, StoreError> {
        if self.unreadable {
            return Ok(false);
        }
        // Permission predicates are the operator's: an evaluation error in one is no match.
        Ok(self
            .read
            .as_ref()
            .is_none_or(|p| eval::matches(Some(p), value).unwrap_or(false)))
    }

    /// Whether the write permission covers this (whole) document.
    pub fn may_write(&self, value: &Value) -> bool {
        self.write
            .as_ref()
            .is_none_or(|p| eval::matches(Some(p), value).unwrap_or(false))
    }
}

/// The refusal of a write to a document outside the caller's permission. The same words
/// whether the document is outside the write permission or not readable at all.
pub(crate) fn denied(collection: &str, id: &DocId) -> StoreError {
    StoreError::Denied(format!(
        "no permission to write document {} in collection \"{collection}\"",
        id.value()
    ))
}

/// Refuses a write to a document (before or after the write) outside the write permission.
fn check_write(
    scope: &WriteScope,
    collection: &str,
    id: &DocId,
    value: &Value,
) -> Result<(), StoreError> {
    if scope.may_write(value) {
        Ok(())
    } else {
        Err(denied(collection, id))
    }
}

fn unrepresentable_item() -> ServiceError {
    ServiceError::Dql(bigpeer_dql::DqlError::evaluation(
        "a result value cannot be represented (a number beyond the float range, or nesting \
         too deep)",
        bigpeer_dql::ast::Span::NONE,
    ))
}

/// A DQL error raised inside a write job: it travels as a store error, so that the transaction
/// engine undoes the job, and comes back out as the DQL error it is.
pub(super) fn query_error(e: bigpeer_dql::DqlError) -> StoreError {
    StoreError::Query(Box::new(e))
}

pub(super) fn sorted(mut ids: Vec<DocId>) -> Vec<Value> {
    ids.sort();
    ids.dedup();
    ids.into_iter().map(DocId::into_value).collect()
}
