//! Change data capture: the events of the change log (`store::ChangeRow`) in Ditto's CDC shape,
//! as one reader (an API key, with an optional collection and filter) may see them.
//!
//! A reader sees a change when it may read the document before or after it (the read
//! permission on the whole document, then the filter); the values it may not read are never
//! in the event. The method is the change as the reader sees it:
//!
//! | before visible | after visible | event |
//! |---|---|---|
//! | no | no | none (not even the id) |
//! | no | yes | `upsert`, `oldValue: null` (the document appears to the reader) |
//! | yes | yes | `update` (or `upsert` when it was created) |
//! | yes | no | the logged `remove` or `evict`, or `remove` when the document still exists but left the reader's scope; `value` is the old value, which the reader could read |
//!
//! So a reader that applies its events in order holds exactly the documents it may read.

use std::collections::BTreeMap;

use bigpeer_dql::eval;
use bigpeer_dql::plan::{self, PExpr};
use bigpeer_schema::Value;
use serde::Serialize;

use super::{Access, Allowed, ServiceError};
use crate::auth::AuthError;
use crate::store::{ChangeMethod, ChangeRow};

/// One event, in Ditto's CDC shape (`type: "documentChanged"`) with bigpeer's additions (`id`,
/// `seq`, `documentId`, `committedAt`).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChangeEvent {
    /// Stable across retries, readers and processes: `<epoch>:<seq>`, where the epoch names the
    /// database's sequence space (`seq_counter.epoch`).
    pub id: String,
    /// The change's position in the commit-ordered sequence: the cursor to resume after.
    pub seq: i64,
    /// The transaction id (`X-DITTO-TXN-ID` reads at or after it see the change).
    pub txn_id: i64,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub collection: String,
    /// The document's `_id`.
    pub document_id: serde_json::Value,
    /// When it committed (RFC 3339, UTC, Postgres' clock).
    pub committed_at: String,
    pub change: EventChange,
}

/// `change`: `{"method", "oldValue", "newValue"}`, or `{"method", "value"}` for `remove` and
/// `evict`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum EventChange {
    Written {
        method: &'static str,
        #[serde(rename = "oldValue")]
        old_value: serde_json::Value,
        #[serde(rename = "newValue")]
        new_value: serde_json::Value,
    },
    Gone {
        method: &'static str,
        value: serde_json::Value,
    },
}

/// Ditto's overflow event: the reader's cursor is older than the log keeps. Re-read the
/// documents over HTTP with `X-DITTO-TXN-ID: <txnID>`, then resume after `txnID`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RequeryEvent {
    #[serde(rename = "txnID")]
    pub txn_id: i64,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Always empty (as Ditto's, deprecated there).
    pub documents: Vec<serde_json::Value>,
}

impl RequeryEvent {
    pub fn new(txn_id: i64) -> RequeryEvent {
        RequeryEvent {
            txn_id,
            kind: "requeryRequired",
            documents: Vec::new(),
        }
    }
}

/// The event id of the change at `seq` in the sequence space `epoch`.
pub fn event_id(epoch: &str, seq: i64) -> String {
    format!("{epoch}:{seq}")
}

/// What one reader sees of the change log: its permissions, and optionally one collection and
/// a DQL condition on the documents.
#[derive(Debug)]
pub struct ChangeScope {
    access: Access,
    collection: Option<String>,
    filter: Option<PExpr>,
    /// The read permission resolved per collection.
    read: BTreeMap<String, Option<Allowed>>,
}

impl ChangeScope {
    /// Checks the reader's collection and filter. Errors: `changes/invalid-collection`,
    /// `changes/invalid-filter` (as `AuthError::InvalidRequest`'s 400 with its own code, see
    /// [`ChangeScopeError`]), and `auth/forbidden` when the key may not read the collection.
    pub fn new(
        access: Access,
        collection: Option<&str>,
        filter: Option<&str>,
    ) -> Result<ChangeScope, ChangeScopeError> {
        if let Some(c) = collection {
            bigpeer_schema::limits::check_collection(c)
                .map_err(|e| ChangeScopeError::Collection(e.to_string()))?;
            if !access.can_read_some(c) {
                return Err(ChangeScopeError::Service(ServiceError::Auth(
                    AuthError::Forbidden(format!("no permission to read collection \"{c}\"")),
                )));
            }
        }
        let filter = match filter {
            None => None,
            Some(text) => {
                let expr = bigpeer_dql::parser::parse_expression(text)
                    .map_err(|e| ChangeScopeError::Filter(e.message))?;
                Some(
                    plan::check_condition(&expr, &BTreeMap::new())
                        .map_err(|e| ChangeScopeError::Filter(e.message))?,
                )
            }
        };
        Ok(ChangeScope {
            access,
            collection: collection.map(str::to_owned),
            filter,
            read: BTreeMap::new(),
        })
    }

    /// The one collection read, if any.
    pub fn collection(&self) -> Option<&str> {
        self.collection.as_deref()
    }

    /// Whether the reader sees this document (with `_id`) of `collection`.
    fn sees(&mut self, collection: &str, value: Option<&Value>) -> bool {
        let Some(value) = value else {
            return false;
        };
        if self.collection.as_deref().is_some_and(|c| c != collection) {
            return false;
        }
        let access = &self.access;
        let read = self
            .read
            .entry(collection.to_owned())
            .or_insert_with(|| access.read(collection).ok());
        // Permission and filter predicates: an evaluation error is no match.
        let permitted = match read {
            None | Some(Allowed::Nothing) => false,
            Some(Allowed::All) => true,
            Some(Allowed::Matching(p)) => eval::matches(Some(p), value).unwrap_or(false),
        };
        permitted
            && self
                .filter
                .as_ref()
                .is_none_or(|f| eval::matches(Some(f), value).unwrap_or(false))
    }

    /// The event this reader gets for a logged change, if any.
    pub fn event(&mut self, epoch: &str, row: &ChangeRow) -> Option<ChangeEvent> {
        let before = self.sees(&row.collection, row.old_value.as_ref());
        let after = self.sees(&row.collection, row.new_value.as_ref());
        let json = |v: &Option<Value>| v.as_ref().map_or(serde_json::Value::Null, Value::to_json);
        let change = match (before, after) {
            (false, false) => return None,
            (false, true) => EventChange::Written {
                method: ChangeMethod::Upsert.as_str(),
                old_value: serde_json::Value::Null,
                new_value: json(&row.new_value),
            },
            (true, true) => EventChange::Written {
                method: row.method.as_str(),
                old_value: json(&row.old_value),
                new_value: json(&row.new_value),
            },
            (true, false) => EventChange::Gone {
                method: match row.method {
                    ChangeMethod::Evict => ChangeMethod::Evict.as_str(),
                    _ => ChangeMethod::Remove.as_str(),
                },
                value: json(&row.old_value),
            },
        };
        Some(ChangeEvent {
            id: event_id(epoch, row.seq),
            seq: row.seq,
            txn_id: row.txn,
            kind: "documentChanged",
            collection: row.collection.clone(),
            document_id: row.id.value().to_json(),
            committed_at: rfc3339(row.committed_at_us),
            change,
        })
    }
}

/// Why a change stream's parameters are refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeScopeError {
    /// `collection` is not a valid collection name (`changes/invalid-collection`).
    #[error("collection: {0}")]
    Collection(String),
    /// `filter` is not a valid DQL condition (`changes/invalid-filter`).
    #[error("filter: {0}")]
    Filter(String),
    #[error(transparent)]
    Service(ServiceError),
}

fn rfc3339(us: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bigpeer_schema::DocId;

    fn row(method: ChangeMethod, old: Option<&str>, new: Option<&str>) -> ChangeRow {
        let v = |t: Option<&str>| t.map(|t| Value::parse_json(t).expect("json"));
        ChangeRow {
            seq: 7,
            txn: 7,
            collection: "c".into(),
            id: DocId::string("d"),
            method,
            old_value: v(old),
            new_value: v(new),
            committed_at_us: 1_700_000_000_123_456,
        }
    }

    fn ann_only() -> Access {
        Access::new(
            serde_json::from_str(
                r#"{"read":{"queriesByCollection":{"c":["owner == 'ann'"]}},"write":{"everything":true}}"#,
            )
            .expect("permissions"),
        )
    }

    fn seen(scope: &mut ChangeScope, r: &ChangeRow) -> Option<serde_json::Value> {
        scope
            .event("e", r)
            .map(|e| serde_json::to_value(e).expect("json"))
    }

    #[test]
    fn events_have_dittos_shape_and_our_additions() {
        let mut all = ChangeScope::new(Access::all(), None, None).expect("scope");
        let e = seen(
            &mut all,
            &row(
                ChangeMethod::Update,
                Some(r#"{"_id":"d","n":1}"#),
                Some(r#"{"_id":"d","n":2}"#),
            ),
        );
        assert_eq!(
            e,
            Some(serde_json::json!({
                "id": "e:7", "seq": 7, "txnId": 7, "type": "documentChanged", "collection": "c",
                "documentId": "d", "committedAt": "2023-11-14T22:13:20.123456Z",
                "change": {"method": "update", "oldValue": {"_id": "d", "n": 1}, "newValue": {"_id": "d", "n": 2}}
            }))
        );
        let gone = seen(
            &mut all,
            &row(ChangeMethod::Remove, Some(r#"{"_id":"d"}"#), None),
        );
        assert_eq!(
            gone.map(|e| e["change"].clone()),
            Some(serde_json::json!({"method": "remove", "value": {"_id": "d"}}))
        );
        assert_eq!(
            serde_json::to_value(RequeryEvent::new(45)).expect("json"),
            serde_json::json!({"txnID": 45, "type": "requeryRequired", "documents": []})
        );
    }

    #[test]
    fn a_reader_sees_only_what_it_may_read_and_documents_leaving_its_scope_go() {
        let mut ann = ChangeScope::new(ann_only(), None, None).expect("scope");
        let (a1, a2) = (
            r#"{"_id":"d","owner":"ann","n":1}"#,
            r#"{"_id":"d","owner":"ann","n":2}"#,
        );
        let bob = r#"{"_id":"d","owner":"bob","n":3}"#;
        let method = |e: Option<serde_json::Value>| e.map(|e| e["change"]["method"].clone());
        assert_eq!(
            seen(&mut ann, &row(ChangeMethod::Upsert, None, Some(bob))),
            None
        );
        assert_eq!(
            seen(&mut ann, &row(ChangeMethod::Update, Some(bob), Some(bob))),
            None
        );
        assert_eq!(
            seen(&mut ann, &row(ChangeMethod::Remove, Some(bob), None)),
            None
        );
        assert_eq!(
            method(seen(
                &mut ann,
                &row(ChangeMethod::Update, Some(a1), Some(a2))
            )),
            Some("update".into())
        );
        // Bob's document given to ann: it appears, without bob's old value.
        let given = seen(&mut ann, &row(ChangeMethod::Update, Some(bob), Some(a1))).expect("seen");
        assert_eq!(
            given["change"],
            serde_json::json!({"method": "upsert", "oldValue": null, "newValue": serde_json::from_str::<serde_json::Value>(a1).expect("json")})
        );
        // Ann's document given to bob: it goes, without bob's new value.
        let taken = seen(&mut ann, &row(ChangeMethod::Update, Some(a2), Some(bob))).expect("seen");
        assert_eq!(
            taken["change"],
            serde_json::json!({"method": "remove", "value": serde_json::from_str::<serde_json::Value>(a2).expect("json")})
        );
        assert_eq!(
            method(seen(&mut ann, &row(ChangeMethod::Evict, Some(a2), None))),
            Some("evict".into())
        );
        // Another collection, not readable at all.
        let mut other = row(ChangeMethod::Upsert, None, Some(a1));
        other.collection = "x".into();
        assert_eq!(seen(&mut ann, &other), None);
    }

    #[test]
    fn collection_and_filter_narrow_the_stream_and_bad_ones_are_refused() {
        let mut big = ChangeScope::new(Access::all(), Some("c"), Some("n > 1")).expect("scope");
        assert_eq!(
            seen(
                &mut big,
                &row(ChangeMethod::Upsert, None, Some(r#"{"_id":"d","n":1}"#))
            ),
            None
        );
        assert!(seen(
            &mut big,
            &row(ChangeMethod::Upsert, None, Some(r#"{"_id":"d","n":2}"#))
        )
        .is_some());
        let mut other = row(ChangeMethod::Upsert, None, Some(r#"{"_id":"d","n":2}"#));
        other.collection = "x".into();
        assert_eq!(seen(&mut big, &other), None);
        assert!(matches!(
            ChangeScope::new(Access::all(), None, Some("n >")),
            Err(ChangeScopeError::Filter(_))
        ));
        assert!(matches!(
            ChangeScope::new(Access::all(), Some(""), None),
            Err(ChangeScopeError::Collection(_))
        ));
        assert!(matches!(
            ChangeScope::new(ann_only(), Some("x"), None),
            Err(ChangeScopeError::Service(_))
        ));
    }
}
