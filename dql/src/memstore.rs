//! A small in-memory store that executes DQL statements end to end with the evaluator and the
//! schema CRDT. It is the reference the Postgres store is tested against, and what the oracle
//! fixtures run on.

use std::collections::BTreeMap;

use bigpeer_schema::{Clock, Doc, DocId, Op, SiteId, Value};

use crate::ast::Span;
use crate::error::{DqlError, Result};
use crate::eval::{self, InsertOutcome};
use crate::plan::{self, Plan, PlanOptions, RemoveKind, Source};
use crate::settings::Settings;

/// The answer to a statement.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryResult {
    pub items: Vec<Value>,
    /// Ids of the written documents, in storage order.
    pub mutated_ids: Vec<Value>,
}

#[derive(Debug, Clone)]
struct Entry {
    id: DocId,
    doc: Doc,
}

/// Collections of CRDT documents keyed by storage key.
#[derive(Debug, Clone)]
pub struct MemStore {
    collections: BTreeMap<String, BTreeMap<Vec<u8>, Entry>>,
    clock: Clock,
    settings: Settings,
}

impl Default for MemStore {
    fn default() -> Self {
        MemStore::new()
    }
}

fn crdt_error(e: bigpeer_schema::SchemaError) -> DqlError {
    DqlError::evaluation(format!("Update failed: {e}"), Span::NONE)
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore {
            collections: BTreeMap::new(),
            clock: Clock::new(SiteId::random()),
            settings: Settings::default(),
        }
    }

    /// Names of the collections that hold documents (live or deleted).
    pub fn collections(&self) -> Vec<String> {
        self.collections.keys().cloned().collect()
    }

    /// The live documents of a collection (with `_id`), in storage order.
    pub fn documents(&self, collection: &str) -> Vec<Value> {
        let Some(c) = self.collections.get(collection) else {
            return Vec::new();
        };
        c.values().filter_map(with_id).collect()
    }

    /// Parses, checks and runs one statement.
    pub fn execute(&mut self, text: &str, args: &BTreeMap<String, Value>) -> Result<QueryResult> {
        let stmt = crate::parse(text)?;
        let opts = PlanOptions {
            strict_mode: self.settings.strict_mode(),
        };
        let plan = plan::check_with(&stmt, args, &opts)?;
        self.run(&plan)
    }

    /// Runs a checked plan.
    pub fn run(&mut self, plan: &Plan) -> Result<QueryResult> {
        match plan {
            Plan::Select(s) => {
                let docs = match &s.source {
                    Source::Collection(c) => self.documents(c),
                    Source::SystemCollections => {
                        let names: Vec<String> = self
                            .collections
                            .iter()
                            .filter(|(_, docs)| docs.values().any(|e| !e.doc.is_deleted()))
                            .map(|(n, _)| n.clone())
                            .collect();
                        eval::system_collection_docs(&names)
                    }
                };
                Ok(QueryResult {
                    items: eval::select(s, &docs)?,
                    mutated_ids: Vec::new(),
                })
            }
            Plan::Insert(i) => {
                let mut coll = self
                    .collections
                    .get(&i.collection)
                    .cloned()
                    .unwrap_or_default();
                let mut mutated = Vec::new();
                for d in &i.documents {
                    let key = d.id.key();
                    let existing = coll.get(&key).and_then(|e| e.doc.materialize());
                    match eval::insert_ops(i, d, existing.as_ref())? {
                        InsertOutcome::Skip => {}
                        InsertOutcome::Write(ops) => {
                            let stamp = self.clock.tick();
                            let entry = coll.entry(key.clone()).or_insert_with(|| Entry {
                                id: d.id.clone(),
                                doc: Doc::new(),
                            });
                            entry.doc.apply(&ops, stamp).map_err(crdt_error)?;
                            mutated.push(key);
                        }
                    }
                }
                self.collections.insert(i.collection.clone(), coll);
                Ok(self.mutated(&i.collection, mutated))
            }
            Plan::Update(u) => {
                let docs = self.documents(&u.target.collection);
                let targets: Vec<Value> = eval::targets(&u.target, &docs)?
                    .into_iter()
                    .cloned()
                    .collect();
                let mut coll = self
                    .collections
                    .get(&u.target.collection)
                    .cloned()
                    .unwrap_or_default();
                let mut mutated = Vec::new();
                for t in &targets {
                    let ops = eval::update_ops(u, t)?;
                    let key = eval::storage_key(t);
                    if let Some(entry) = coll.get_mut(&key) {
                        let stamp = self.clock.tick();
                        entry.doc.apply(&ops, stamp).map_err(crdt_error)?;
                        mutated.push(key);
                    }
                }
                self.collections.insert(u.target.collection.clone(), coll);
                Ok(self.mutated(&u.target.collection, mutated))
            }
            Plan::Remove(r) => {
                let docs = self.documents(&r.target.collection);
                let keys: Vec<Vec<u8>> = eval::targets(&r.target, &docs)?
                    .into_iter()
                    .map(eval::storage_key)
                    .collect();
                let ids = self.ids(&r.target.collection, &keys);
                let stamp = self.clock.tick();
                if let Some(coll) = self.collections.get_mut(&r.target.collection) {
                    for k in &keys {
                        match r.kind {
                            RemoveKind::Evict => {
                                coll.remove(k);
                            }
                            RemoveKind::Delete => {
                                if let Some(e) = coll.get_mut(k) {
                                    e.doc.apply(&[Op::Delete], stamp).map_err(crdt_error)?;
                                }
                            }
                        }
                    }
                }
                Ok(QueryResult {
                    items: Vec::new(),
                    mutated_ids: ids,
                })
            }
            Plan::AlterSystem { name, value } => {
                let items = self.settings.alter(name.as_deref(), value.as_ref())?;
                Ok(QueryResult {
                    items,
                    mutated_ids: Vec::new(),
                })
            }
            Plan::Show { name } => Ok(QueryResult {
                items: self.settings.show(name.as_deref())?,
                mutated_ids: Vec::new(),
            }),
            Plan::Explain(inner) => Ok(QueryResult {
                items: vec![plan::explain(inner)],
                mutated_ids: Vec::new(),
            }),
        }
    }

    fn ids(&self, collection: &str, keys: &[Vec<u8>]) -> Vec<Value> {
        let mut keys = keys.to_vec();
        keys.sort();
        keys.dedup();
        let Some(coll) = self.collections.get(collection) else {
            return Vec::new();
        };
        keys.iter()
            .filter_map(|k| coll.get(k))
            .map(|e| e.id.value().clone())
            .collect()
    }

    fn mutated(&self, collection: &str, keys: Vec<Vec<u8>>) -> QueryResult {
        QueryResult {
            items: Vec::new(),
            mutated_ids: self.ids(collection, &keys),
        }
    }
}

fn with_id(e: &Entry) -> Option<Value> {
    let mut fields = match e.doc.materialize()? {
        Value::Object(o) => o,
        _ => BTreeMap::new(),
    };
    fields.insert("_id".to_owned(), e.id.value().clone());
    Some(Value::Object(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(store: &mut MemStore, text: &str) -> QueryResult {
        store
            .execute(text, &BTreeMap::new())
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn items(store: &mut MemStore, text: &str) -> String {
        Value::Array(run(store, text).items).to_json_string()
    }

    #[test]
    fn insert_update_delete_round() {
        let mut s = MemStore::new();
        let r = run(
            &mut s,
            "INSERT INTO c DOCUMENTS ({'_id': 'b', 'n': 1, 'o': {'x': 1, 'y': 2}}), ({'_id': 'a'})",
        );
        assert_eq!(Value::Array(r.mutated_ids).to_json_string(), r#"["a","b"]"#);
        run(
            &mut s,
            "UPDATE c SET n = n + 1, o.x = 5 UNSET o.y WHERE _id = 'b'",
        );
        assert_eq!(
            items(&mut s, "SELECT * FROM c WHERE _id = 'b'"),
            r#"[{"_id":"b","n":2,"o":{"x":5}}]"#
        );
        let err = s
            .execute("INSERT INTO c DOCUMENTS ({'_id': 'a'})", &BTreeMap::new())
            .expect_err("conflict");
        assert_eq!(err.code, crate::ErrorCode::Evaluation);
        run(&mut s, "DELETE FROM c WHERE _id = 'b'");
        assert_eq!(items(&mut s, "SELECT _id FROM c"), r#"[{"_id":"a"}]"#);
        run(&mut s, "INSERT INTO c DOCUMENTS ({'_id': 'b', 'z': true})");
        assert_eq!(
            items(&mut s, "SELECT * FROM c WHERE _id = 'b'"),
            r#"[{"_id":"b","z":true}]"#
        );
        assert_eq!(
            items(&mut s, "SELECT * FROM system:collections"),
            r#"[{"_id":"default:c","datasource":"default","name":"c"}]"#
        );
    }

    #[test]
    fn counters_and_settings() {
        let mut s = MemStore::new();
        run(&mut s, "INSERT INTO p DOCUMENTS ({'_id': 'x'})");
        run(
            &mut s,
            "UPDATE COLLECTION p (n COUNTER) APPLY n INCREMENT BY 2, m PN_INCREMENT BY 0.5",
        );
        run(
            &mut s,
            "UPDATE COLLECTION p (n COUNTER) APPLY n INCREMENT BY 3",
        );
        assert_eq!(items(&mut s, "SELECT n, m FROM p"), r#"[{"m":0.5,"n":5}]"#);
        assert_eq!(
            items(&mut s, "SHOW DQL_STRICT_MODE"),
            r#"[{"dql_strict_mode":false}]"#
        );
        run(&mut s, "ALTER SYSTEM SET DQL_STRICT_MODE = true");
        run(
            &mut s,
            "INSERT INTO p DOCUMENTS ({'_id': 'y', 'o': {'a': 1, 'b': 2}})",
        );
        run(
            &mut s,
            "INSERT INTO p DOCUMENTS ({'_id': 'y', 'o': {'a': 5}}) ON ID CONFLICT DO UPDATE",
        );
        assert_eq!(
            items(&mut s, "SELECT o FROM p WHERE _id = 'y'"),
            r#"[{"o":{"a":5}}]"#
        );
        let explain = items(&mut s, "EXPLAIN SELECT * FROM p WHERE n > 1");
        assert!(explain.contains(r#""condition":"(n > 1)""#), "{explain}");
    }
}
