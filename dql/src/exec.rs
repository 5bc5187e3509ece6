//! Runs a checked [`Plan`] end to end on any document storage: load the collection's live
//! documents, evaluate, turn each written document into CRDT operations stamped by the store's
//! clock, and hand the new states back to the store in one call.
//!
//! [`crate::memstore::MemStore`] (the reference) and the small peer's SQLite store both implement
//! [`DocumentStore`], so they give the same answers by construction.

use std::collections::BTreeMap;

use bigpeer_schema::{Doc, DocId, Op, Stamp, TypeView, Value};

use crate::ast::Span;
use crate::error::DqlError;
use crate::eval::{self, InsertOutcome};
use crate::plan::{self, Plan, RemoveKind, Source};
use crate::settings::Settings;

/// The answer to a statement.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryResult {
    pub items: Vec<Value>,
    /// Ids of the written documents, in storage order.
    pub mutated_ids: Vec<Value>,
}

/// One document written by a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum DocWrite {
    /// The document's new CRDT state (created, updated or deleted: a delete is a tombstone).
    Put { id: DocId, doc: Box<Doc> },
    /// `EVICT`: forget the document locally (its storage key).
    Evict { key: Vec<u8> },
}

/// The storage a statement runs on. Reads see the state before the statement; all of a
/// statement's writes arrive in one [`DocumentStore::write`] call (or none when it fails), so a
/// store that opens a transaction around [`run`] gets all-or-nothing statements.
pub trait DocumentStore {
    /// The store's error; DQL errors (evaluation, CRDT refusals) convert into it.
    type Error: From<DqlError>;

    /// The live documents of a collection, each an object with `_id`, in storage-key order.
    fn live_documents(&self, collection: &str) -> Result<Vec<Value>, Self::Error>;

    /// The live documents of a collection as a strict-mode statement declaring `view` sees
    /// them ([`Doc::view`] with `_id`), in storage-key order.
    fn live_documents_viewed(
        &self,
        collection: &str,
        view: &TypeView,
    ) -> Result<Vec<Value>, Self::Error>;

    /// The names of the collections holding at least one live document, sorted.
    fn live_collections(&self) -> Result<Vec<String>, Self::Error>;

    /// The stored CRDT state of a document, live or deleted.
    fn load(&self, collection: &str, key: &[u8]) -> Result<Option<Doc>, Self::Error>;

    /// The next stamp of the store's clock.
    fn stamp(&mut self) -> Stamp;

    /// The current system settings.
    fn settings(&self) -> Result<Settings, Self::Error>;

    /// Keeps the settings changed by `ALTER SYSTEM`.
    fn save_settings(&mut self, settings: &Settings) -> Result<(), Self::Error>;

    /// Stores the documents one statement wrote. `INSERT` and `UPDATE` call it even when they
    /// wrote nothing; `DELETE`/`EVICT` only when they matched something.
    fn write(&mut self, collection: &str, writes: Vec<DocWrite>) -> Result<(), Self::Error>;
}

pub(crate) fn crdt_error(e: bigpeer_schema::SchemaError) -> DqlError {
    DqlError::evaluation(format!("Update failed: {e}"), Span::NONE)
}

/// Parses, checks (with the store's settings) and runs one statement.
pub fn execute<S: DocumentStore + ?Sized>(
    store: &mut S,
    text: &str,
    args: &BTreeMap<String, Value>,
) -> Result<QueryResult, S::Error> {
    let stmt = crate::parse(text)?;
    let opts = plan::PlanOptions {
        strict_mode: store.settings()?.strict_mode(),
    };
    let checked = plan::check_with(&stmt, args, &opts)?;
    run(store, &checked)
}

/// A collection's live documents in the statement's view.
fn documents<S: DocumentStore + ?Sized>(
    store: &S,
    collection: &str,
    view: Option<&TypeView>,
) -> Result<Vec<Value>, S::Error> {
    match view {
        Some(v) => store.live_documents_viewed(collection, v),
        None => store.live_documents(collection),
    }
}

/// A document in a strict-mode view, with `_id` (`None` when deleted).
pub fn viewed_with_id(doc: &Doc, id: &DocId, view: &TypeView) -> Option<Value> {
    match doc.view(view)? {
        Value::Object(mut o) => {
            o.insert("_id".to_owned(), id.value().clone());
            Some(Value::Object(o))
        }
        _ => None,
    }
}

/// The documents a statement has read or written so far, by storage key (`None`: absent).
struct Working {
    collection: String,
    docs: BTreeMap<Vec<u8>, Option<Doc>>,
    written: BTreeMap<Vec<u8>, DocId>,
}

impl Working {
    fn new(collection: &str) -> Working {
        Working {
            collection: collection.to_owned(),
            docs: BTreeMap::new(),
            written: BTreeMap::new(),
        }
    }

    /// The document with this key as the statement sees it.
    fn get<S: DocumentStore + ?Sized>(
        &mut self,
        store: &S,
        key: &[u8],
    ) -> Result<Option<&Doc>, S::Error> {
        if !self.docs.contains_key(key) {
            let loaded = store.load(&self.collection, key)?;
            self.docs.insert(key.to_vec(), loaded);
        }
        Ok(self.docs.get(key).and_then(Option::as_ref))
    }

    /// Applies one write to the document with this key (creating it when absent).
    ///
    /// Writes touch only the component of their own type ([`Doc::apply_typed`]), as in Ditto:
    /// `SET m = 5` over a map `m` leaves the map, which a strict-mode query declaring `(m MAP)`
    /// still sees, and the default view shows the newest of the two.
    fn apply(&mut self, id: &DocId, key: &[u8], ops: &[Op], stamp: Stamp) -> Result<(), DqlError> {
        let slot = self.docs.entry(key.to_vec()).or_insert(None);
        let doc = slot.get_or_insert_with(Doc::new);
        doc.apply_typed(ops, stamp).map_err(crdt_error)?;
        self.written.insert(key.to_vec(), id.clone());
        Ok(())
    }

    /// The written documents' ids in storage order, and their new states.
    fn finish(mut self) -> (Vec<Value>, Vec<DocWrite>) {
        let mut ids = Vec::with_capacity(self.written.len());
        let mut writes = Vec::with_capacity(self.written.len());
        for (key, id) in self.written {
            ids.push(id.value().clone());
            if let Some(Some(doc)) = self.docs.remove(&key) {
                writes.push(DocWrite::Put {
                    id,
                    doc: Box::new(doc),
                });
            }
        }
        (ids, writes)
    }
}

fn target_id(doc: &Value) -> Option<DocId> {
    doc.as_object()
        .and_then(|o| o.get("_id"))
        .and_then(|id| DocId::new(id.clone()).ok())
}

/// Runs a checked plan on a store.
pub fn run<S: DocumentStore + ?Sized>(store: &mut S, plan: &Plan) -> Result<QueryResult, S::Error> {
    match plan {
        Plan::Select(s) => {
            let docs = match &s.source {
                Source::Collection(c) => documents(store, c, s.view.as_ref())?,
                Source::SystemCollections => {
                    eval::system_collection_docs(&store.live_collections()?)
                }
            };
            Ok(QueryResult {
                items: eval::select(s, &docs)?,
                mutated_ids: Vec::new(),
            })
        }
        Plan::Insert(i) => {
            let mut work = Working::new(&i.collection);
            for d in &i.documents {
                let key = d.id.key();
                let existing = work.get(store, &key)?.and_then(|doc| doc.materialize());
                match eval::insert_ops(i, d, existing.as_ref())? {
                    InsertOutcome::Skip => {}
                    InsertOutcome::Write(ops) => {
                        let stamp = store.stamp();
                        work.apply(&d.id, &key, &ops, stamp)?;
                    }
                }
            }
            let (ids, writes) = work.finish();
            store.write(&i.collection, writes)?;
            Ok(QueryResult {
                items: Vec::new(),
                mutated_ids: ids,
            })
        }
        Plan::Update(u) => {
            let collection = &u.target.collection;
            let docs = documents(store, collection, u.target.view.as_ref())?;
            let targets = eval::targets(&u.target, &docs)?;
            let mut work = Working::new(collection);
            for t in targets {
                let ops = eval::update_ops(u, t)?;
                let Some(id) = target_id(t) else { continue };
                let key = id.key();
                if work.get(store, &key)?.is_some() {
                    let stamp = store.stamp();
                    work.apply(&id, &key, &ops, stamp)?;
                }
            }
            let (ids, writes) = work.finish();
            store.write(collection, writes)?;
            Ok(QueryResult {
                items: Vec::new(),
                mutated_ids: ids,
            })
        }
        Plan::Remove(r) => {
            let collection = &r.target.collection;
            let docs = documents(store, collection, r.target.view.as_ref())?;
            let targets: BTreeMap<Vec<u8>, DocId> = eval::targets(&r.target, &docs)?
                .into_iter()
                .filter_map(target_id)
                .map(|id| (id.key(), id))
                .collect();
            let stamp = store.stamp();
            let mut writes = Vec::with_capacity(targets.len());
            for (key, id) in &targets {
                match r.kind {
                    RemoveKind::Evict => writes.push(DocWrite::Evict { key: key.clone() }),
                    RemoveKind::Delete => {
                        if let Some(mut doc) = store.load(collection, key)? {
                            doc.apply_typed(&[Op::Delete], stamp).map_err(crdt_error)?;
                            writes.push(DocWrite::Put {
                                id: id.clone(),
                                doc: Box::new(doc),
                            });
                        }
                    }
                }
            }
            if !writes.is_empty() {
                store.write(collection, writes)?;
            }
            Ok(QueryResult {
                items: Vec::new(),
                mutated_ids: targets.into_values().map(DocId::into_value).collect(),
            })
        }
        Plan::AlterSystem { name, value } => {
            let mut settings = store.settings()?;
            let items = settings.alter(name.as_deref(), value.as_ref())?;
            store.save_settings(&settings)?;
            Ok(QueryResult {
                items,
                mutated_ids: Vec::new(),
            })
        }
        Plan::Show { name } => Ok(QueryResult {
            items: store.settings()?.show(name.as_deref())?,
            mutated_ids: Vec::new(),
        }),
        Plan::Explain(inner) => Ok(QueryResult {
            items: vec![plan::explain(inner)],
            mutated_ids: Vec::new(),
        }),
    }
}
