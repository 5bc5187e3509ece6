//! What the sync client needs from the store: merging the big peer's changes, the outbox of
//! local changes to push, their acknowledgements, and the subscriptions' durable cursors.
//!
//! Per document the store keeps `server_vv`, the version vector the big peer is known to have
//! (raised by every change received from it and every push it acknowledged, replaced by the
//! vector it sends with a refusal). A local write puts the document in the outbox; a push sends
//! the delta against `server_vv`, and the document leaves the outbox once the big peer holds
//! every local write (its `server_vv` entry for this site reaches the document's).

use bigpeer_schema::wire::{Cursor, DocChange, PushResult};
use bigpeer_schema::{Clock, Doc, DocId, SiteId, Value, VersionVector};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::db;
use crate::error::{PeerError, Result};
use crate::store::{load_stored, load_with_server_vv, put_merged, Local, Store};

/// What merging one remote change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeOutcome {
    /// The document changed (and is durable).
    Applied,
    /// Everything in the change was already here.
    Unchanged,
    /// This store lacks the delta's base (it never had, or evicted, part of the document): ask
    /// for a delta against `have` (a `Want`).
    Refused { have: VersionVector },
}

impl From<MergeOutcome> for PushResult {
    fn from(o: MergeOutcome) -> PushResult {
        match o {
            MergeOutcome::Applied => PushResult::Applied,
            MergeOutcome::Unchanged => PushResult::Unchanged,
            MergeOutcome::Refused { have } => PushResult::Refused { have },
        }
    }
}

/// A document waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    pub collection: String,
    pub id: DocId,
    /// The local change number of its last local write.
    pub change: i64,
    /// Set when the big peer denied the last push (`PushResult::Denied`): the change stays here
    /// and is not pushed again until the document is written locally again.
    pub denied: Option<String>,
}

/// A stable key for a subscription's durable cursor: the query text (length-prefixed) and its
/// arguments as JSON (objects keep their keys sorted, so equal arguments give equal keys).
pub fn subscription_key(query: &str, args: &Value) -> String {
    format!("{}:{query}{}", query.len(), args.to_json_string())
}

/// Whether the big peer (at `server`) holds every local write of `site` in `doc`.
fn server_has_local_writes(doc: &Doc, server: &VersionVector, site: SiteId) -> bool {
    server.get(site) >= doc.vv.get(site)
}

fn set_server_vv(
    conn: &Connection,
    collection: &str,
    key: &[u8],
    vv: &VersionVector,
) -> Result<()> {
    conn.prepare_cached("UPDATE documents SET server_vv = ?3 WHERE collection = ?1 AND id = ?2")?
        .execute(params![collection, key, db::encode_vv(vv)])?;
    Ok(())
}

fn remove_from_outbox(conn: &Connection, collection: &str, key: &[u8]) -> Result<()> {
    conn.prepare_cached("DELETE FROM outbox WHERE collection = ?1 AND id = ?2")?
        .execute(params![collection, key])?;
    Ok(())
}

impl Store {
    /// Merges changes received from the big peer, in one transaction with the subscriptions'
    /// new cursors (`(subscription key, cursor)`, see [`subscription_key`]). Returns one outcome
    /// per change, in order. Observers are told after the commit.
    ///
    /// When a change is refused (its base is not here: the sync client asks for it with a
    /// `Want`), the cursors are not moved, and the document is remembered as wanted (see
    /// [`Store::wanted`]) until a change of it is applied: a later batch's cursor may pass the
    /// refused change, and a restart before the answer must still ask for it.
    pub fn apply_remote(
        &mut self,
        changes: &[DocChange],
        cursors: &[(String, Cursor)],
    ) -> Result<Vec<MergeOutcome>> {
        let merged = self.apply_remote_owned(changes.to_vec(), cursors)?;
        Ok(merged.into_iter().map(|(_, _, o)| o).collect())
    }

    /// [`Store::apply_remote`] taking the changes by value, as the sync client receives them:
    /// a document seen for the first time takes the received state as it is, without a copy.
    /// Returns each change's collection, id and outcome, in order.
    pub fn apply_remote_owned(
        &mut self,
        changes: Vec<DocChange>,
        cursors: &[(String, Cursor)],
    ) -> Result<Vec<(String, DocId, MergeOutcome)>> {
        let site = self.site();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut local = Local::begin(&tx, &mut self.clock, true)?;
        // Outbox entries can only be cleared when there are some (a fresh or fully pushed store
        // has none): one look per batch instead of a delete per document.
        let outbox_empty: bool = local
            .conn()
            .prepare_cached("SELECT NOT EXISTS (SELECT 1 FROM outbox)")?
            .query_row([], |r| r.get(0))?;
        let wanted_empty: bool = local
            .conn()
            .prepare_cached("SELECT NOT EXISTS (SELECT 1 FROM wanted)")?
            .query_row([], |r| r.get(0))?;
        let mut outcomes = Vec::with_capacity(changes.len());
        for c in changes {
            let DocChange {
                collection,
                id,
                delta,
                ..
            } = c;
            let key = id.key();
            let conn = local.conn();
            let stored = load_stored(conn, &collection, &key)?;
            let existed = stored.is_some();
            let (mut doc, old_crdt, server_vv) = match stored {
                Some(s) => (s.doc, s.crdt, s.server_vv),
                None => (Doc::default(), Vec::new(), VersionVector::new()),
            };
            if !doc.vv.dominates(&delta.base) {
                conn.prepare_cached(
                    "INSERT INTO wanted (collection, id) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                )?
                .execute(params![collection, key])?;
                outcomes.push((collection, id, MergeOutcome::Refused { have: doc.vv }));
                continue;
            }
            if !wanted_empty {
                conn.prepare_cached("DELETE FROM wanted WHERE collection = ?1 AND id = ?2")?
                    .execute(params![collection, key])?;
            }
            let mut known = server_vv.clone();
            known.join(&delta.state.vv);
            // The clock follows remote writes (unless they are implausibly far ahead).
            let _ = local.clock().observe(delta.state.vv.max_hlc());
            doc.apply_delta_owned(delta)?;
            // Our own earlier writes coming back (for example after this database was restored
            // from a backup): the clock must pass them whatever the drift, or the next local
            // write to this document would be refused.
            let mine = doc.vv.get(site);
            if mine > local.clock().last() {
                *local.clock() = Clock::resume(site, mine);
            }
            // States are stored in their canonical encoding: equal bytes, equal states.
            let crdt = doc.encode();
            let changed = if existed {
                crdt != old_crdt
            } else {
                doc != Doc::default()
            };
            if changed || !existed {
                let change = local.next_change();
                put_merged(conn, &collection, &key, &id, &doc, &crdt, change, &known)?;
            } else if known != server_vv {
                set_server_vv(conn, &collection, &key, &known)?;
            }
            if !outbox_empty && server_has_local_writes(&doc, &known, site) {
                remove_from_outbox(conn, &collection, &key)?;
            }
            let outcome = if changed {
                local.touch(&collection);
                MergeOutcome::Applied
            } else {
                MergeOutcome::Unchanged
            };
            outcomes.push((collection, id, outcome));
        }
        let refused = outcomes
            .iter()
            .any(|(_, _, o)| matches!(o, MergeOutcome::Refused { .. }));
        let cursors = if refused { &[][..] } else { cursors };
        for (sub, cursor) in cursors {
            local
                .conn()
                .prepare_cached(
                    "INSERT INTO cursors (subscription, epoch, seq) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (subscription) DO UPDATE SET epoch = excluded.epoch, \
                     seq = excluded.seq",
                )?
                .execute(params![sub, cursor.epoch, seq_to_sql(cursor.seq)])?;
        }
        let touched = local.finish()?;
        tx.commit()?;
        self.notify(&touched);
        Ok(outcomes)
    }

    /// Up to `max` documents with local changes to push, oldest local change first: each a
    /// delta against the version vector the big peer is known to have (`seq` is 0). Documents
    /// whose last push was denied are left out until they are written again, and so are the
    /// collections whose `USER_COLLECTION_SYNC_SCOPES` keeps them from the big peer
    /// (`SmallPeersOnly`, `LocalPeerOnly`): they stay in the outbox, and are pushed once the
    /// scope allows it.
    pub fn pending_push(&self, max: usize) -> Result<Vec<DocChange>> {
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let withheld: Vec<String> = db::load_settings(&self.conn)?
            .sync_scopes()
            .into_iter()
            .filter(|(_, scope)| !scope.to_big_peer())
            .map(|(collection, _)| collection)
            .collect();
        let withheld = serde_json::to_string(&withheld)
            .map_err(|e| PeerError::Corrupt(format!("sync scopes: {e}")))?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT o.collection, o.id, d.crdt, d.server_vv FROM outbox o \
             JOIN documents d ON d.collection = o.collection AND d.id = o.id \
             WHERE o.denied IS NULL \
               AND o.collection NOT IN (SELECT value FROM json_each(?2)) \
             ORDER BY o.change LIMIT ?1",
        )?;
        let mut rows = stmt.query(params![limit, withheld])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let collection: String = row.get(0)?;
            let key: Vec<u8> = row.get(1)?;
            let crdt: Vec<u8> = row.get(2)?;
            let server_vv: Option<Vec<u8>> = row.get(3)?;
            let base = match server_vv {
                Some(b) => db::decode_vv(&b)?,
                None => VersionVector::new(),
            };
            let doc = db::decode_doc(&crdt)?;
            out.push(DocChange {
                collection,
                id: DocId::from_key(&key)?,
                seq: 0,
                delta: doc.delta(&base),
            });
        }
        Ok(out)
    }

    /// Records the big peer's answer to a push: `results[i]` is the outcome of `pushed[i]` (as
    /// returned by [`Store::pending_push`]). `applied`/`unchanged` raise what the big peer is
    /// known to have and clear the document from the outbox unless it was written again since;
    /// `refused` replaces it with the big peer's vector (the next push is a delta against it);
    /// `denied` keeps the change and stops pushing it until the next local write.
    pub fn ack_push(&mut self, pushed: &[DocChange], results: &[PushResult]) -> Result<()> {
        if pushed.len() != results.len() {
            return Err(PeerError::Protocol(format!(
                "push acknowledgement has {} results for {} changes",
                results.len(),
                pushed.len()
            )));
        }
        let site = self.site();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (c, result) in pushed.iter().zip(results) {
            let key = c.id.key();
            let Some((doc, server_vv)) = load_with_server_vv(&tx, &c.collection, &key)? else {
                continue; // evicted since
            };
            match result {
                PushResult::Applied | PushResult::Unchanged => {
                    let mut known = server_vv.clone();
                    known.join(&c.delta.state.vv);
                    if known != server_vv {
                        set_server_vv(&tx, &c.collection, &key, &known)?;
                    }
                    if server_has_local_writes(&doc, &known, site) {
                        remove_from_outbox(&tx, &c.collection, &key)?;
                    }
                }
                PushResult::Refused { have } => {
                    set_server_vv(&tx, &c.collection, &key, have)?;
                }
                PushResult::Denied { code } => {
                    // Only when the denied push carried the latest local write.
                    if c.delta.state.vv.get(site) >= doc.vv.get(site) {
                        tx.prepare_cached(
                            "UPDATE outbox SET denied = ?3 WHERE collection = ?1 AND id = ?2",
                        )?
                        .execute(params![c.collection, key, code])?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every document in the outbox (pushable or denied), oldest local change first.
    pub fn outbox(&self) -> Result<Vec<OutboxEntry>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT collection, id, change, denied FROM outbox ORDER BY change")?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let key: Vec<u8> = row.get(1)?;
            out.push(OutboxEntry {
                collection: row.get(0)?,
                id: DocId::from_key(&key)?,
                change: row.get(2)?,
                denied: row.get(3)?,
            });
        }
        Ok(out)
    }

    /// The documents asked for with `Want` whose answer has not been applied yet, each with the
    /// version vector this store has of it (empty when it has none): the sync client asks for
    /// them again when a session opens.
    pub fn wanted(&self) -> Result<Vec<(String, DocId, VersionVector)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT w.collection, w.id, d.crdt FROM wanted w \
             LEFT JOIN documents d ON d.collection = w.collection AND d.id = w.id \
             ORDER BY w.collection, w.id",
        )?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let collection: String = row.get(0)?;
            let key: Vec<u8> = row.get(1)?;
            let crdt: Option<Vec<u8>> = row.get(2)?;
            let have = match crdt {
                Some(b) => db::decode_doc(&b)?.vv,
                None => VersionVector::new(),
            };
            out.push((collection, DocId::from_key(&key)?, have));
        }
        Ok(out)
    }

    /// The change that brings a replica at `have` up to this store's state of a document (to
    /// answer a `Want`); `None` when the document is unknown here.
    pub fn delta_since(
        &self,
        collection: &str,
        id: &DocId,
        have: &VersionVector,
    ) -> Result<Option<DocChange>> {
        Ok(self.doc_state(collection, id)?.map(|doc| DocChange {
            collection: collection.to_owned(),
            id: id.clone(),
            seq: 0,
            delta: doc.delta(have),
        }))
    }

    /// The stored cursor of a subscription.
    pub fn cursor(&self, subscription: &str) -> Result<Option<Cursor>> {
        let row: Option<(String, i64)> = self
            .conn
            .prepare_cached("SELECT epoch, seq FROM cursors WHERE subscription = ?1")?
            .query_row(params![subscription], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(row.map(|(epoch, seq)| Cursor {
            epoch,
            seq: seq_from_sql(seq),
        }))
    }

    /// Remembers a sync subscription (a DQL `SELECT` and its arguments, an object or null) for
    /// later runs; returns its [`subscription_key`]. Remembering it again changes nothing.
    pub fn remember_subscription(&mut self, query: &str, args: &Value) -> Result<String> {
        let args = normalize_args(args)?;
        let key = subscription_key(query, &args);
        self.conn
            .prepare_cached(
                "INSERT INTO subscriptions (key, query, args, created_ms) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (key) DO NOTHING",
            )?
            .execute(params![
                key,
                query,
                args.to_json_string(),
                i64::try_from(bigpeer_schema::hlc::now_ms()).unwrap_or(i64::MAX)
            ])?;
        Ok(key)
    }

    /// The remembered subscriptions (query, arguments), oldest first.
    pub fn remembered_subscriptions(&self) -> Result<Vec<(String, Value)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT query, args FROM subscriptions ORDER BY created_ms, key")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(q, a)| {
                let args = Value::parse_json(&a)
                    .map_err(|e| PeerError::Corrupt(format!("subscription arguments: {e}")))?;
                Ok((q, args))
            })
            .collect()
    }

    /// Forgets a remembered subscription and its cursor; true when it was remembered.
    pub fn forget_subscription(&mut self, query: &str, args: &Value) -> Result<bool> {
        let key = subscription_key(query, &normalize_args(args)?);
        let tx = self.conn.transaction()?;
        let n = tx.execute("DELETE FROM subscriptions WHERE key = ?1", params![key])?;
        tx.execute("DELETE FROM cursors WHERE subscription = ?1", params![key])?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Forgets a subscription's cursor (the next subscribe starts from scratch).
    pub fn forget_cursor(&mut self, subscription: &str) -> Result<()> {
        self.conn
            .prepare_cached("DELETE FROM cursors WHERE subscription = ?1")?
            .execute(params![subscription])?;
        Ok(())
    }
}

/// Subscription arguments as they are keyed and sent: an object (`null` is the empty object).
pub fn normalize_args(args: &Value) -> Result<Value> {
    match args {
        Value::Null => Ok(Value::Object(Default::default())),
        Value::Object(_) => Ok(args.clone()),
        other => Err(PeerError::Args(format!(
            "subscription arguments must be an object, not {}",
            other.type_name()
        ))),
    }
}

fn seq_to_sql(seq: u64) -> i64 {
    i64::from_ne_bytes(seq.to_ne_bytes())
}

fn seq_from_sql(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bigpeer_schema::Hlc;

    use super::*;

    fn run(store: &mut Store, text: &str) {
        store
            .execute(text, &BTreeMap::new())
            .unwrap_or_else(|e| panic!("{text}: {e}"));
    }

    fn docs(store: &Store, collection: &str) -> String {
        Value::Array(store.documents(collection).expect("documents")).to_json_string()
    }

    /// `from` pushes its outbox to `to` (standing in for the big peer) and records the answer.
    fn push(from: &mut Store, to: &mut Store) -> Vec<MergeOutcome> {
        let changes = from.pending_push(1000).expect("pending");
        let outcomes = to.apply_remote(&changes, &[]).expect("apply");
        let results: Vec<PushResult> = outcomes.iter().cloned().map(Into::into).collect();
        from.ack_push(&changes, &results).expect("ack");
        outcomes
    }

    fn state(store: &Store, collection: &str, id: &str) -> Doc {
        store
            .doc_state(collection, &DocId::string(id))
            .expect("read")
            .expect("known document")
    }

    #[test]
    fn two_stores_exchanging_pushes_converge() {
        let mut a = Store::open_in_memory().expect("a");
        let mut b = Store::open_in_memory().expect("b");
        run(
            &mut a,
            "INSERT INTO c DOCUMENTS ({'_id': 'x', 'n': 1}), ({'_id': 'y', 'k': 'a'})",
        );
        run(
            &mut b,
            "INSERT INTO c DOCUMENTS ({'_id': 'x', 'm': 2}), ({'_id': 'z'})",
        );
        run(
            &mut a,
            "UPDATE COLLECTION c (hits COUNTER) APPLY hits INCREMENT BY 2 WHERE _id = 'x'",
        );
        run(
            &mut b,
            "UPDATE COLLECTION c (hits COUNTER) APPLY hits INCREMENT BY 5 WHERE _id = 'x'",
        );
        assert_eq!(push(&mut a, &mut b), vec![MergeOutcome::Applied; 2]);
        assert!(
            a.outbox().expect("outbox").is_empty(),
            "acknowledged pushes leave the outbox"
        );
        // b deletes y while a, concurrently, updates it: a's write survives (add wins).
        run(&mut b, "DELETE FROM c WHERE _id = 'y'");
        run(&mut a, "UPDATE c SET k = 'b', extra = true WHERE _id = 'y'");
        push(&mut b, &mut a);
        push(&mut a, &mut b);
        assert!(a.outbox().expect("a").is_empty());
        assert!(b.outbox().expect("b").is_empty());
        let (da, db) = (docs(&a, "c"), docs(&b, "c"));
        assert_eq!(da, db);
        assert_eq!(
            da,
            r#"[{"_id":"x","hits":7,"m":2,"n":1},{"_id":"y","extra":true,"k":"b"},{"_id":"z"}]"#
        );
        for id in ["x", "y", "z"] {
            assert_eq!(state(&a, "c", id).vv, state(&b, "c", id).vv, "{id}");
        }
        // Nothing left to say: pushing again changes nothing.
        assert!(a.pending_push(10).expect("pending").is_empty());
        let again = a.delta_since("c", &DocId::string("x"), &VersionVector::new());
        let again = again.expect("read").expect("known");
        assert_eq!(
            b.apply_remote(&[again], &[]).expect("apply"),
            vec![MergeOutcome::Unchanged]
        );
    }

    #[test]
    fn a_refused_change_stays_wanted_across_a_restart_until_a_change_of_it_applies() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("peer.db");
        let mut a = Store::open_in_memory().expect("a");
        run(&mut a, "INSERT INTO c DOCUMENTS ({'_id': 'x', 'n': 1})");
        let first = state(&a, "c", "x").vv;
        run(&mut a, "UPDATE c SET n = 2 WHERE _id = 'x'");
        let x = DocId::string("x");
        let later = a.delta_since("c", &x, &first).expect("read").expect("x");
        let cursor = Cursor {
            epoch: "e".into(),
            seq: 7,
        };
        {
            let mut b = Store::open(&path).expect("b");
            let outcomes = b
                .apply_remote(
                    std::slice::from_ref(&later),
                    &[("s".into(), cursor.clone())],
                )
                .expect("apply");
            assert!(matches!(outcomes[0], MergeOutcome::Refused { .. }));
            assert_eq!(b.cursor("s").expect("cursor"), None, "cursor held back");
            // A later batch moves the cursor past the refused change.
            let other = Cursor {
                epoch: "e".into(),
                seq: 9,
            };
            b.apply_remote(&[], &[("s".into(), other)])
                .expect("later batch");
            let wanted = b.wanted().expect("wanted");
            assert_eq!(
                wanted,
                vec![("c".to_owned(), x.clone(), VersionVector::new())]
            );
        }
        // After a restart the document is still wanted.
        let mut b = Store::open(&path).expect("reopen");
        assert_eq!(b.wanted().expect("wanted").len(), 1);
        // The answer (here: the whole state) applies and takes it off the list.
        let answer = a
            .delta_since("c", &x, &VersionVector::new())
            .expect("read")
            .expect("x");
        assert_eq!(
            b.apply_remote(&[answer], &[]).expect("answer"),
            vec![MergeOutcome::Applied]
        );
        assert!(b.wanted().expect("wanted").is_empty());
        assert_eq!(docs(&b, "c"), r#"[{"_id":"x","n":2}]"#);
    }

    #[test]
    fn pushes_are_deltas_against_what_the_server_acknowledged() {
        let mut a = Store::open_in_memory().expect("a");
        let mut server = Store::open_in_memory().expect("server");
        run(
            &mut a,
            "INSERT INTO c DOCUMENTS ({'_id': 'x', 'big': 'aaaaaaaaaaaaaaaaaaaa', 'n': 1})",
        );
        push(&mut a, &mut server);
        run(&mut a, "UPDATE c SET n = 2 WHERE _id = 'x'");
        let pending = a.pending_push(10).expect("pending");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].delta.base, state(&server, "c", "x").vv);
        let text = pending[0]
            .delta
            .state
            .materialize()
            .map(|v| v.to_json_string());
        assert_eq!(
            text.as_deref(),
            Some(r#"{"n":2}"#),
            "only the new field travels"
        );
        // A write between the push and its acknowledgement stays in the outbox.
        run(&mut a, "UPDATE c SET n = 3 WHERE _id = 'x'");
        let outcomes = server.apply_remote(&pending, &[]).expect("apply");
        let results: Vec<PushResult> = outcomes.into_iter().map(Into::into).collect();
        a.ack_push(&pending, &results).expect("ack");
        assert_eq!(a.outbox().expect("outbox").len(), 1);
        push(&mut a, &mut server);
        assert!(a.outbox().expect("outbox").is_empty());
        assert_eq!(docs(&server, "c"), docs(&a, "c"));
        let err = a.ack_push(&pending, &[]).expect_err("length mismatch");
        assert_eq!(err.code(), "protocol/malformed");
    }

    #[test]
    fn refused_pushes_are_resent_against_the_servers_vector() {
        let mut a = Store::open_in_memory().expect("a");
        let mut server = Store::open_in_memory().expect("server");
        run(&mut a, "INSERT INTO c DOCUMENTS ({'_id': 'x', 'n': 1})");
        push(&mut a, &mut server);
        // The server lost the document (a restore): the next delta's base is not dominated.
        let mut server = Store::open_in_memory().expect("restored server");
        run(&mut a, "UPDATE c SET n = 2 WHERE _id = 'x'");
        let outcomes = push(&mut a, &mut server);
        assert_eq!(
            outcomes,
            vec![MergeOutcome::Refused {
                have: VersionVector::new()
            }]
        );
        assert_eq!(a.outbox().expect("outbox").len(), 1);
        let pending = a.pending_push(10).expect("pending");
        assert_eq!(
            pending[0].delta.base,
            VersionVector::new(),
            "resent as a full state"
        );
        assert_eq!(push(&mut a, &mut server), vec![MergeOutcome::Applied]);
        assert_eq!(docs(&server, "c"), r#"[{"_id":"x","n":2}]"#);
        assert!(a.outbox().expect("outbox").is_empty());
    }

    #[test]
    fn a_refused_remote_change_is_answered_by_a_delta_against_have() {
        let mut a = Store::open_in_memory().expect("a");
        let mut b = Store::open_in_memory().expect("b");
        run(&mut a, "INSERT INTO c DOCUMENTS ({'_id': 'x', 'n': 1})");
        let first = state(&a, "c", "x").vv;
        run(&mut a, "UPDATE c SET n = 2 WHERE _id = 'x'");
        let id = DocId::string("x");
        let live = a
            .delta_since("c", &id, &first)
            .expect("read")
            .expect("known");
        let out = b.apply_remote(&[live], &[]).expect("apply");
        assert_eq!(
            out,
            vec![MergeOutcome::Refused {
                have: VersionVector::new()
            }]
        );
        assert!(
            b.doc_state("c", &id).expect("read").is_none(),
            "nothing stored"
        );
        let MergeOutcome::Refused { have } = &out[0] else {
            unreachable!("checked above")
        };
        let want = a.delta_since("c", &id, have).expect("read").expect("known");
        assert_eq!(
            b.apply_remote(&[want], &[]).expect("apply"),
            vec![MergeOutcome::Applied]
        );
        assert_eq!(docs(&b, "c"), r#"[{"_id":"x","n":2}]"#);
        assert!(
            b.outbox().expect("outbox").is_empty(),
            "remote changes are not pushed back"
        );
    }

    #[test]
    fn denied_changes_stay_but_are_not_pushed_until_written_again() {
        let mut a = Store::open_in_memory().expect("a");
        run(&mut a, "INSERT INTO c DOCUMENTS ({'_id': 'x', 'n': 1})");
        let pending = a.pending_push(10).expect("pending");
        a.ack_push(
            &pending,
            &[PushResult::Denied {
                code: "auth/forbidden".into(),
            }],
        )
        .expect("ack");
        let outbox = a.outbox().expect("outbox");
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox[0].denied.as_deref(), Some("auth/forbidden"));
        assert!(a.pending_push(10).expect("pending").is_empty());
        run(&mut a, "UPDATE c SET n = 2 WHERE _id = 'x'");
        assert_eq!(a.pending_push(10).expect("pending").len(), 1);
    }

    #[test]
    fn the_servers_echo_of_a_local_write_clears_the_outbox() {
        let mut a = Store::open_in_memory().expect("a");
        let mut server = Store::open_in_memory().expect("server");
        run(&mut a, "INSERT INTO c DOCUMENTS ({'_id': 'x', 'n': 1})");
        let pending = a.pending_push(10).expect("pending");
        server.apply_remote(&pending, &[]).expect("server merges");
        // The acknowledgement is lost, but the server's live batch carries the document back.
        let echo = server
            .delta_since("c", &DocId::string("x"), &VersionVector::new())
            .expect("read")
            .expect("known");
        assert_eq!(
            a.apply_remote(&[echo], &[]).expect("apply"),
            vec![MergeOutcome::Unchanged]
        );
        assert!(a.outbox().expect("outbox").is_empty());
    }

    #[test]
    fn cursors_commit_with_the_changes_and_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.sqlite3");
        let mut a = Store::open_in_memory().expect("a");
        run(&mut a, "INSERT INTO c DOCUMENTS ({'_id': 'x'})");
        let changes = a.pending_push(10).expect("pending");
        let key = subscription_key("SELECT * FROM c", &Value::Object(BTreeMap::new()));
        let other = Value::parse_json(r#"{"x": 1}"#).expect("json");
        assert_ne!(key, subscription_key("SELECT * FROM c", &other));
        assert_ne!(
            subscription_key("a", &Value::String("b".into())),
            subscription_key("a\"b", &Value::Null)
        );
        let cursor = Cursor {
            epoch: "e1".into(),
            seq: u64::MAX - 1,
        };
        {
            let mut b = Store::open(&path).expect("b");
            assert_eq!(b.cursor(&key).expect("cursor"), None);
            b.apply_remote(&changes, &[(key.clone(), cursor.clone())])
                .expect("apply");
        }
        let mut b = Store::open(&path).expect("reopen");
        assert_eq!(b.cursor(&key).expect("cursor"), Some(cursor));
        assert_eq!(docs(&b, "c"), r#"[{"_id":"x"}]"#);
        b.forget_cursor(&key).expect("forget");
        assert_eq!(b.cursor(&key).expect("cursor"), None);
    }

    #[test]
    fn a_restored_store_passes_its_own_returning_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, backup) = (dir.path().join("p.sqlite3"), dir.path().join("b.sqlite3"));
        let mut server = Store::open_in_memory().expect("server");
        {
            let mut a = Store::open(&path).expect("a");
            run(&mut a, "INSERT INTO c DOCUMENTS ({'_id': 'x', 'n': 0})");
            a.conn
                .execute_batch(&format!("VACUUM INTO '{}'", backup.display()))
                .expect("backup");
            // Later writes, stamped two hours ahead (more than the clock follows from others).
            let ahead = Hlc::new(bigpeer_schema::hlc::now_ms() + 7_200_000, 0);
            a.clock = Clock::resume(a.site(), ahead);
            run(&mut a, "UPDATE c SET n = 1 WHERE _id = 'x'");
            push(&mut a, &mut server);
        }
        let mut restored = Store::open(&backup).expect("restored");
        let back = server
            .delta_since("c", &DocId::string("x"), &VersionVector::new())
            .expect("read")
            .expect("known");
        restored.apply_remote(&[back], &[]).expect("apply");
        run(&mut restored, "UPDATE c SET n = 2 WHERE _id = 'x'");
        assert_eq!(docs(&restored, "c"), r#"[{"_id":"x","n":2}]"#);
    }

    #[test]
    fn the_clock_follows_remote_writes() {
        let mut a = Store::open_in_memory().expect("a");
        let mut b = Store::open_in_memory().expect("b");
        let ahead = Hlc::new(bigpeer_schema::hlc::now_ms() + 600_000, 0);
        a.clock = Clock::resume(a.site(), ahead);
        run(&mut a, "INSERT INTO c DOCUMENTS ({'_id': 'x', 'n': 1})");
        push(&mut a, &mut b);
        // b's wall clock is ten minutes behind a's write, yet b's later write must win.
        run(&mut b, "UPDATE c SET n = 2 WHERE _id = 'x'");
        push(&mut b, &mut a);
        assert_eq!(docs(&a, "c"), r#"[{"_id":"x","n":2}]"#);
        assert_eq!(docs(&b, "c"), r#"[{"_id":"x","n":2}]"#);
    }
}
