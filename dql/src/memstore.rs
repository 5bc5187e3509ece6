//! A small in-memory store that executes DQL statements end to end with the evaluator and the
//! schema CRDT. It is the reference the Postgres store is tested against, and what the oracle
//! fixtures run on.

use std::collections::BTreeMap;

use bigpeer_schema::{Clock, Doc, DocId, SiteId, Stamp, TypeView, Value};

use crate::error::{DqlError, Result};
use crate::exec::{self, DocWrite, DocumentStore};
use crate::plan::Plan;
use crate::settings::Settings;

pub use crate::exec::QueryResult;

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

    /// The CRDT states of a collection's documents (live or deleted), in storage order.
    pub fn states(&self, collection: &str) -> Vec<(DocId, Doc)> {
        self.collections
            .get(collection)
            .map(|c| c.values().map(|e| (e.id.clone(), e.doc.clone())).collect())
            .unwrap_or_default()
    }

    /// Parses, checks and runs one statement.
    pub fn execute(&mut self, text: &str, args: &BTreeMap<String, Value>) -> Result<QueryResult> {
        exec::execute(self, text, args)
    }

    /// Runs a checked plan.
    pub fn run(&mut self, plan: &Plan) -> Result<QueryResult> {
        exec::run(self, plan)
    }
}

impl DocumentStore for MemStore {
    type Error = DqlError;

    fn live_documents(&self, collection: &str) -> Result<Vec<Value>> {
        Ok(self.documents(collection))
    }

    fn live_documents_viewed(&self, collection: &str, view: &TypeView) -> Result<Vec<Value>> {
        Ok(self
            .collections
            .get(collection)
            .map(|c| {
                c.values()
                    .filter_map(|e| exec::viewed_with_id(&e.doc, &e.id, view))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn live_collections(&self) -> Result<Vec<String>> {
        Ok(self
            .collections
            .iter()
            .filter(|(_, docs)| docs.values().any(|e| !e.doc.is_deleted()))
            .map(|(n, _)| n.clone())
            .collect())
    }

    fn load(&self, collection: &str, key: &[u8]) -> Result<Option<Doc>> {
        Ok(self
            .collections
            .get(collection)
            .and_then(|c| c.get(key))
            .map(|e| e.doc.clone()))
    }

    fn stamp(&mut self) -> Stamp {
        self.clock.tick()
    }

    fn settings(&self) -> Result<Settings> {
        Ok(self.settings.clone())
    }

    fn save_settings(&mut self, settings: &Settings) -> Result<()> {
        self.settings = settings.clone();
        Ok(())
    }

    fn write(&mut self, collection: &str, writes: Vec<DocWrite>) -> Result<()> {
        let coll = self.collections.entry(collection.to_owned()).or_default();
        for w in writes {
            match w {
                DocWrite::Put { id, doc } => {
                    coll.insert(id.key(), Entry { id, doc: *doc });
                }
                DocWrite::Evict { key } => {
                    coll.remove(&key);
                }
            }
        }
        Ok(())
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
