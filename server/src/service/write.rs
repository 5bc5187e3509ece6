//! Ditto's legacy write RPC (`/store/write`): a batch of `upsert` / `update` / `remove`
//! commands applied atomically, in one transaction.
//!
//! Every command is built as a DQL statement tree (its legacy query through
//! [`bigpeer_dql::legacy::to_expr`]; no DQL text is written) and checked first, so a malformed command or an invalid
//! query fails before anything runs. Then the targets of the whole batch are gathered (the ids
//! of upserts; a snapshot read for the filters of updates and removes, plus every document an
//! earlier command of the batch touches in the same collection, as it may match once that
//! command ran) and one write job applies the commands in order on the locked documents, each
//! seeing the effects of the ones before it. When any command fails (a permission refusal on a
//! document, an evaluation error), the job is undone as a whole: nothing of the batch is
//! written, and the error names the command.
//!
//! Legacy documents keep objects as maps (as DQL with strict mode off), whatever
//! `DQL_STRICT_MODE` says.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use bigpeer_dql::ast::{
    Apply, ApplyOp, Assignment, CollectionRef, ConflictPolicy, CrdtType, Delete, DeleteKind, Expr,
    ExprKind, FieldPath, Insert, Span, Statement, TypeDef, Update,
};
use bigpeer_dql::plan::{self, Plan, PlanOptions, UpdatePlan};
use bigpeer_schema::crdt::{Component, Slot};
use bigpeer_schema::{CounterKind, DocId, ObjectMode, Op, Value, VersionVector};

use super::execute::{apply_insert, apply_update_or_remove_then, query_error, WriteScope};
use super::{Access, Executor, ServiceError};
use crate::store::{StoreError, Working};

/// How an upsert treats a document that exists (Ditto's `writeStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteStrategy {
    /// Merge the value's fields into the document (the default).
    #[default]
    Merge,
    /// Leave an existing document alone.
    InsertIfAbsent,
    /// Like `InsertIfAbsent`, as a default document "from the beginning of time".
    InsertDefaultIfAbsent,
    /// Write only the fields whose values differ.
    UpdateDifferentValues,
}

/// The CRDT type an upsert gives a field (`valueTypeOverrides`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// The legacy (PN) counter.
    Counter,
    Register,
    Map,
    Attachment,
}

/// One operation of an `update` command.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateOp {
    /// Assign a value.
    Set { path: String, value: Value },
    /// Assign an attachment token.
    SetAttachment { path: String, value: Value },
    /// Add to a legacy counter (creating it from 0).
    Increment { path: String, by: Value },
    /// Turn the number at the path into a legacy counter with that value (0 when missing); a
    /// counter stays as it is.
    ReplaceWithCounter { path: String },
}

/// One command of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteCommand {
    Upsert {
        collection: String,
        /// The id; `None`: the value's `_id`, or a generated one.
        id: Option<Value>,
        value: Value,
        types: BTreeMap<String, FieldType>,
        strategy: WriteStrategy,
    },
    Update {
        collection: String,
        query: String,
        args: BTreeMap<String, Value>,
        ops: Vec<UpdateOp>,
    },
    Remove {
        collection: String,
        query: String,
        args: BTreeMap<String, Value>,
    },
}

/// What one command did.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    /// The document's id.
    Upsert { id: Value },
    /// How many documents were updated.
    Update { updated: usize },
    /// How many documents were removed (tombstoned).
    Remove { deleted: usize },
}

/// The result of a batch: the transaction it committed in and one outcome per command.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteResult {
    pub txn: i64,
    pub outcomes: Vec<WriteOutcome>,
}

/// A failed batch: the error and, when one command caused it, that command's index.
#[derive(Debug)]
pub struct BatchError {
    pub index: Option<usize>,
    pub error: ServiceError,
}

impl BatchError {
    fn at(index: usize) -> impl FnOnce(ServiceError) -> BatchError {
        move |error| BatchError {
            index: Some(index),
            error,
        }
    }
}

impl From<ServiceError> for BatchError {
    fn from(error: ServiceError) -> Self {
        BatchError { index: None, error }
    }
}

/// A checked command, ready to run in the write job.
struct Planned {
    plan: Plan,
    collection: String,
    scope: WriteScope,
    /// `replaceWithCounter` paths (updates only).
    counters: Vec<Vec<String>>,
    /// Candidate documents (updates and removes).
    candidates: Vec<DocId>,
}

fn invalid(message: String) -> ServiceError {
    ServiceError::Dql(bigpeer_dql::DqlError::invalid(
        message,
        bigpeer_dql::ast::Span::NONE,
    ))
}

/// A legacy key path (`a.b`, `a['b-c']`) as field names.
pub fn parse_path(path: &str) -> Result<Vec<String>, ServiceError> {
    let bad = |why: &str| invalid(format!("invalid path {path:?}: {why}"));
    let chars: Vec<char> = path.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut expect_name = true;
    while i < chars.len() {
        match chars[i] {
            '[' => {
                let quote = match chars.get(i + 1) {
                    Some(q @ ('\'' | '"')) => *q,
                    Some(c) if c.is_ascii_digit() => {
                        return Err(ServiceError::Dql(bigpeer_dql::DqlError::new(
                            bigpeer_dql::ErrorCode::Unsupported,
                            format!("array index paths ({path:?}) are not supported"),
                            bigpeer_dql::ast::Span::NONE,
                        )))
                    }
                    _ => return Err(bad("expected a quoted key after '['")),
                };
                let mut name = String::new();
                i += 2;
                loop {
                    match chars.get(i) {
                        None => return Err(bad("unterminated key")),
                        Some('\\') => {
                            name.extend(chars.get(i + 1));
                            i += 2;
                        }
                        Some(c) if *c == quote => break,
                        Some(c) => {
                            name.push(*c);
                            i += 1;
                        }
                    }
                }
                if chars.get(i + 1) != Some(&']') {
                    return Err(bad("expected ']'"));
                }
                i += 2;
                out.push(name);
                expect_name = false;
            }
            '.' if !expect_name => {
                i += 1;
                expect_name = true;
            }
            _ if expect_name => {
                let mut name = String::new();
                while let Some(c) = chars.get(i).filter(|c| !matches!(c, '.' | '[')) {
                    name.push(*c);
                    i += 1;
                }
                if name.is_empty() {
                    return Err(bad("empty field name"));
                }
                out.push(name);
                expect_name = false;
            }
            _ => return Err(bad("expected '.' or '['")),
        }
    }
    if out.is_empty() || expect_name {
        return Err(bad("empty field name"));
    }
    if out[0] == "_id" {
        return Err(invalid("the document id `_id` cannot be modified".into()));
    }
    Ok(out)
}

/// The type definitions `(a MAP(b PN_COUNTER), c ATTACHMENT)` for the given paths: a path's
/// parents are maps.
fn type_defs(types: &[(Vec<String>, CrdtType)]) -> Vec<TypeDef> {
    #[derive(Default)]
    struct Node {
        ty: Option<CrdtType>,
        children: BTreeMap<String, Node>,
    }
    fn defs(n: BTreeMap<String, Node>) -> Vec<TypeDef> {
        n.into_iter()
            .map(|(field, c)| TypeDef {
                field,
                ty: if c.children.is_empty() {
                    c.ty.unwrap_or(CrdtType::Register)
                } else {
                    CrdtType::Map(defs(c.children))
                },
                span: Span::NONE,
            })
            .collect()
    }
    let mut root: BTreeMap<String, Node> = BTreeMap::new();
    for (path, ty) in types {
        let mut level = &mut root;
        for (i, key) in path.iter().enumerate() {
            let node = level.entry(key.clone()).or_default();
            if i + 1 == path.len() {
                node.ty = Some(ty.clone());
            }
            level = &mut node.children;
        }
    }
    defs(root)
}

/// `[COLLECTION] name [(type definitions)]`.
fn collection_ref(name: &str, keyword: bool, types: &[(Vec<String>, CrdtType)]) -> CollectionRef {
    CollectionRef {
        name: name.to_owned(),
        system: false,
        keyword,
        types: type_defs(types),
        alias: None,
        span: Span::NONE,
    }
}

fn param(name: &str) -> Expr {
    Expr::new(ExprKind::Param(name.to_owned()), Span::NONE)
}

fn field_path(keys: Vec<String>) -> FieldPath {
    FieldPath {
        keys,
        span: Span::NONE,
    }
}

/// `DELETE FROM collection WHERE filter`.
fn delete(collection: &str, filter: Expr) -> Statement {
    Statement::Delete(Delete {
        kind: DeleteKind::Delete,
        collection: collection_ref(collection, false, &[]),
        filter: Some(filter),
        order_by: Vec::new(),
        limit: None,
        offset: None,
    })
}

/// A name for a generated statement argument that the caller's arguments do not use.
fn fresh_arg(args: &BTreeMap<String, Value>, n: usize) -> String {
    let mut name = format!("bp_arg_{n}");
    while args.contains_key(&name) {
        name.insert(0, '_');
    }
    name
}

/// The collection name a command writes to (`bigpeer_schema::limits`, as every write).
fn collection_name(c: &str) -> Result<(), ServiceError> {
    bigpeer_schema::limits::check_collection(c)
        .map_err(|e| ServiceError::Store(StoreError::Schema(e.into())))
}

/// A command as DQL: the statement, its arguments and the `replaceWithCounter` paths.
type Translated = (Statement, BTreeMap<String, Value>, Vec<Vec<String>>);

/// The DQL statement (built as a tree) and arguments of one command, plus its
/// `replaceWithCounter` paths.
fn translate(cmd: &WriteCommand) -> Result<Translated, ServiceError> {
    match cmd {
        WriteCommand::Upsert {
            collection,
            id,
            value,
            types,
            strategy,
        } => {
            collection_name(collection)?;
            let Value::Object(fields) = value else {
                return Err(invalid(format!(
                    "an upsert's value must be an object, not {}",
                    value.type_name()
                )));
            };
            let mut doc = fields.clone();
            match (id, doc.get("_id")) {
                (Some(id), Some(inner)) if id != inner => {
                    return Err(invalid(format!(
                        "the upsert's id {id} and its value's _id {inner} differ"
                    )))
                }
                (Some(id), _) => {
                    doc.insert("_id".to_owned(), id.clone());
                }
                (None, _) => {}
            }
            let mut defs = Vec::new();
            for (path, ty) in types {
                defs.push((
                    parse_path(path)?,
                    match ty {
                        FieldType::Counter => CrdtType::PnCounter,
                        FieldType::Register => CrdtType::Register,
                        FieldType::Map => CrdtType::Map(Vec::new()),
                        FieldType::Attachment => CrdtType::Attachment,
                    },
                ));
            }
            let (initial, on_conflict) = match strategy {
                WriteStrategy::Merge => (false, Some(ConflictPolicy::DoUpdate)),
                WriteStrategy::InsertIfAbsent => (false, Some(ConflictPolicy::DoNothing)),
                WriteStrategy::InsertDefaultIfAbsent => (true, None),
                WriteStrategy::UpdateDifferentValues => {
                    (false, Some(ConflictPolicy::DoUpdateLocalDiff))
                }
            };
            // INSERT INTO COLLECTION name (types) [INITIAL] DOCUMENTS (:doc) [ON ID CONFLICT ...]
            let statement = Statement::Insert(Insert {
                collection: collection_ref(collection, true, &defs),
                initial,
                values_keyword: false,
                documents: vec![param("doc")],
                on_conflict,
            });
            let args = BTreeMap::from([("doc".to_owned(), Value::Object(doc))]);
            Ok((statement, args, Vec::new()))
        }
        WriteCommand::Update {
            collection,
            query,
            args,
            ops,
        } => {
            collection_name(collection)?;
            if ops.is_empty() {
                return Err(invalid("an update needs at least one command".into()));
            }
            let filter = bigpeer_dql::legacy::to_expr(query)?;
            let mut args = args.clone();
            let (mut set, mut apply, mut defs, mut counters) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (n, op) in ops.iter().enumerate() {
                let arg = fresh_arg(&args, n);
                match op {
                    UpdateOp::Set { path, value } => {
                        set.push(Assignment {
                            path: field_path(parse_path(path)?),
                            value: param(&arg),
                        });
                        args.insert(arg, value.clone());
                    }
                    UpdateOp::SetAttachment { path, value } => {
                        let p = parse_path(path)?;
                        set.push(Assignment {
                            path: field_path(p.clone()),
                            value: param(&arg),
                        });
                        defs.push((p, CrdtType::Attachment));
                        args.insert(arg, value.clone());
                    }
                    UpdateOp::Increment { path, by } => {
                        apply.push(Apply {
                            path: field_path(parse_path(path)?),
                            op: ApplyOp::PnIncrement(param(&arg)),
                        });
                        args.insert(arg, by.clone());
                    }
                    UpdateOp::ReplaceWithCounter { path } => counters.push(parse_path(path)?),
                }
            }
            let statement = if set.is_empty() && apply.is_empty() {
                // Only counter replacements, which the job applies itself: the statement gives
                // the filter.
                delete(collection, filter)
            } else {
                // UPDATE COLLECTION name (types) APPLY ... SET ... WHERE filter
                Statement::Update(Update {
                    collection: collection_ref(collection, true, &defs),
                    apply,
                    set,
                    unset: Vec::new(),
                    filter: Some(filter),
                    order_by: Vec::new(),
                    limit: None,
                    offset: None,
                })
            };
            Ok((statement, args, counters))
        }
        WriteCommand::Remove {
            collection,
            query,
            args,
        } => {
            collection_name(collection)?;
            let filter = bigpeer_dql::legacy::to_expr(query)?;
            Ok((delete(collection, filter), args.clone(), Vec::new()))
        }
    }
}

/// The visible component at `path` of a document state, if any.
fn component_at(doc: &bigpeer_schema::Doc, path: &[String]) -> Option<Component> {
    let empty = VersionVector::default();
    let mut slot: &Slot = &doc.root;
    for key in path {
        slot = slot.map.as_ref()?.entries.get(key)?;
    }
    slot.visible(&empty).map(|(c, _)| c)
}

/// Replaces the number at `path` with a legacy counter of that value (0 when missing).
fn replace_with_counter(
    w: &mut Working<'_>,
    coll: &str,
    id: &DocId,
    path: &[String],
) -> Result<(), StoreError> {
    if component_at(w.state(coll, id)?, path) == Some(Component::PnCounter) {
        return Ok(());
    }
    let current = w.value(coll, id)?.and_then(|v| v.get_path(path).cloned());
    let by = match current {
        None => Value::Int(0),
        Some(v @ (Value::Int(_) | Value::UInt(_) | Value::Float(_))) => v,
        Some(other) => {
            return Err(query_error(bigpeer_dql::DqlError::evaluation(
                format!(
                    "Update failed: cannot replace {} at {} with a counter: it is not a number",
                    other.type_name(),
                    path.join(".")
                ),
                bigpeer_dql::ast::Span::NONE,
            )))
        }
    };
    w.apply_ops(
        coll,
        id,
        &[
            Op::Unset {
                path: path.to_vec(),
            },
            Op::Increment {
                path: path.to_vec(),
                by,
                kind: CounterKind::PnCounter,
            },
        ],
    )
}

impl Executor {
    /// Runs a legacy write batch within `access`, atomically: all commands in one transaction,
    /// or none of them.
    pub async fn write_batch(
        &self,
        commands: &[WriteCommand],
        access: &Access,
    ) -> Result<WriteResult, BatchError> {
        let opts = PlanOptions { strict_mode: false };
        let mut planned = Vec::with_capacity(commands.len());
        for (i, cmd) in commands.iter().enumerate() {
            let (statement, args, counters) = translate(cmd).map_err(BatchError::at(i))?;
            let mut plan = plan::check_with(&statement, &args, &opts)
                .map_err(|e| BatchError::at(i)(ServiceError::Dql(e)))?;
            if let (WriteCommand::Update { .. }, Plan::Remove(r)) = (cmd, &plan) {
                // Counter replacements only: an update with no actions of its own.
                plan = Plan::Update(UpdatePlan {
                    target: r.target.clone(),
                    actions: Vec::new(),
                    objects: ObjectMode::Map,
                    types: Default::default(),
                });
            }
            let collection = plan.collection().unwrap_or_default().to_owned();
            let scope = WriteScope::of(access, &collection).map_err(BatchError::at(i))?;
            if !matches!(plan, Plan::Insert(_)) {
                scope.needs_read(&collection).map_err(BatchError::at(i))?;
            }
            planned.push(Planned {
                plan,
                collection,
                scope,
                counters,
                candidates: Vec::new(),
            });
        }

        // The documents each command may touch.
        let mut touched: BTreeMap<String, Vec<DocId>> = BTreeMap::new();
        for (i, p) in planned.iter_mut().enumerate() {
            let earlier = touched.entry(p.collection.clone()).or_default();
            match &p.plan {
                Plan::Insert(insert) => {
                    earlier.extend(insert.documents.iter().map(|d| d.id.clone()));
                }
                _ => {
                    let mut ids = self
                        .find_targets(&p.plan, &p.scope)
                        .await
                        .map_err(BatchError::at(i))?;
                    ids.extend(earlier.iter().cloned());
                    ids.sort();
                    ids.dedup();
                    earlier.clone_from(&ids);
                    p.candidates = ids;
                }
            }
        }
        let mut targets = BTreeSet::new();
        for (coll, ids) in touched {
            for id in ids {
                targets.insert((coll.clone(), id));
            }
        }

        let failed = Arc::new(Mutex::new(None::<usize>));
        let failed_in_job = failed.clone();
        let job = move |w: &mut Working<'_>| -> Result<Vec<WriteOutcome>, StoreError> {
            let mut outcomes = Vec::with_capacity(planned.len());
            for (i, p) in planned.iter().enumerate() {
                let outcome = run_command(w, p);
                match outcome {
                    Ok(o) => outcomes.push(o),
                    Err(e) => {
                        if let Ok(mut f) = failed_in_job.lock() {
                            *f = Some(i);
                        }
                        return Err(e);
                    }
                }
            }
            Ok(outcomes)
        };
        match self
            .group
            .transact(targets.into_iter().collect(), job)
            .await
        {
            Ok((outcomes, info)) => Ok(WriteResult {
                txn: info.txn,
                outcomes,
            }),
            Err(e) => Err(BatchError {
                index: failed.lock().ok().and_then(|f| *f),
                error: e.into(),
            }),
        }
    }
}

fn run_command(w: &mut Working<'_>, p: &Planned) -> Result<WriteOutcome, StoreError> {
    match &p.plan {
        Plan::Insert(insert) => {
            apply_insert(w, insert, &p.scope)?;
            let id = insert
                .documents
                .first()
                .map(|d| d.id.clone().into_value())
                .unwrap_or(Value::Null);
            Ok(WriteOutcome::Upsert { id })
        }
        Plan::Update(_) => {
            let n = apply_update_or_remove_then(
                w,
                &p.plan,
                &p.collection,
                &p.candidates,
                &p.scope,
                |w, id| {
                    for path in &p.counters {
                        replace_with_counter(w, &p.collection, id, path)?;
                    }
                    Ok(())
                },
            )?
            .len();
            Ok(WriteOutcome::Update { updated: n })
        }
        _ => {
            let n = apply_update_or_remove_then(
                w,
                &p.plan,
                &p.collection,
                &p.candidates,
                &p.scope,
                |_, _| Ok(()),
            )?
            .len();
            Ok(WriteOutcome::Remove { deleted: n })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse() {
        assert_eq!(parse_path("a").expect("ok"), vec!["a"]);
        assert_eq!(parse_path("a.b").expect("ok"), vec!["a", "b"]);
        assert_eq!(
            parse_path("work['street-line'].x").expect("ok"),
            vec!["work", "street-line", "x"]
        );
        for bad in ["", "a.", ".a", "a..b", "a['b'", "a[b]", "_id", "_id.x"] {
            assert_eq!(
                parse_path(bad).expect_err(bad).code(),
                "query/invalid",
                "{bad}"
            );
        }
        assert_eq!(
            parse_path("a[0]").expect_err("index").code(),
            "query/unsupported"
        );
    }

    #[test]
    fn type_clauses_nest() {
        let defs = type_defs(&[
            (vec!["a".into(), "b".into()], CrdtType::PnCounter),
            (vec!["c".into()], CrdtType::Attachment),
            (vec!["a".into(), "d".into()], CrdtType::Register),
        ]);
        let printed: Vec<String> = defs.iter().map(ToString::to_string).collect();
        assert_eq!(
            printed.join(", "),
            "a MAP(b PN_COUNTER, d REGISTER), c ATTACHMENT"
        );
        assert!(type_defs(&[]).is_empty());
    }

    /// The statements the server makes itself (legacy routes and writes, permission
    /// predicates, probes) are built as trees: no server code writes DQL text for the parser to
    /// read back. DQL text comes only from clients.
    #[test]
    fn no_server_code_writes_dql_text_to_parse_it() {
        fn sources(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
            for entry in std::fs::read_dir(dir).expect("server sources").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    sources(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && path.file_name().is_some_and(|n| n != "tests.rs")
                {
                    let text = std::fs::read_to_string(&path).expect("readable");
                    // Only the code, not its unit tests; without white space, so that a
                    // `format!(` spread over lines is seen too.
                    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                    let code = code.split_whitespace().collect::<String>();
                    out.push((path.display().to_string(), code));
                }
            }
        }
        let mut files = Vec::new();
        sources(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        assert!(files.len() > 20, "found {} files", files.len());
        let q = '"';
        let needles: Vec<String> = ["SELECT", "INSERT", "UPDATE", "DELETE", "EVICT"]
            .iter()
            .map(|kw| format!("format!({q}{kw}"))
            .chain([["to_", "dql("].concat(), ["permission", "_check"].concat()])
            .collect();
        for (name, code) in &files {
            if name.contains("/store/") {
                continue; // Postgres SQL, not DQL
            }
            for needle in &needles {
                assert!(!code.contains(needle.as_str()), "{name} has {needle}");
            }
        }
    }
}
