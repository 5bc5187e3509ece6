//! What a serving session holds for its peer: live changes waiting for credit, and what the peer
//! is known to have (so that live changes go as deltas).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bigpeer_schema::wire::DocChange;
use bigpeer_schema::{Doc, DocId, Value, VersionVector};

/// A committed version of a document, as the change feed (or a read) gives it.
pub trait LiveDoc {
    fn collection(&self) -> &str;
    fn id(&self) -> &DocId;
    /// Its change sequence number.
    fn seq(&self) -> i64;
    /// The CRDT state.
    fn state(&self) -> &Doc;
    /// The materialised JSON with `_id`; `None` when deleted.
    fn value(&self) -> Option<&Value>;
    /// The size of the stored state, in bytes (what a waiting change costs, up to a factor).
    fn bytes(&self) -> usize;
}

/// A document's key: its collection and its id's storage key.
pub type DocKey = (String, Vec<u8>);

/// A live change waiting for credit.
pub struct PendingDoc<D> {
    pub doc: Arc<D>,
    pub subs: BTreeSet<u32>,
}

/// Live changes waiting for credit, newest state per document, in sequence order.
pub struct Pending<D> {
    by_seq: BTreeMap<i64, PendingDoc<D>>,
    seq_of: BTreeMap<DocKey, i64>,
    /// The stored size of the documents held.
    bytes: usize,
}

impl<D> Default for Pending<D> {
    fn default() -> Self {
        Pending {
            by_seq: BTreeMap::new(),
            seq_of: BTreeMap::new(),
            bytes: 0,
        }
    }
}

impl<D: LiveDoc> Pending<D> {
    pub fn add(&mut self, doc: Arc<D>, subs: BTreeSet<u32>) {
        let key = (doc.collection().to_owned(), doc.id().key());
        let mut all = subs;
        if let Some(old) = self.seq_of.remove(&key) {
            if let Some(p) = self.by_seq.remove(&old) {
                self.bytes = self.bytes.saturating_sub(p.doc.bytes());
                all.extend(p.subs);
            }
        }
        self.bytes += doc.bytes();
        self.seq_of.insert(key, doc.seq());
        self.by_seq.insert(doc.seq(), PendingDoc { doc, subs: all });
    }

    pub fn pop(&mut self) -> Option<PendingDoc<D>> {
        let (_, p) = self.by_seq.pop_first()?;
        self.bytes = self.bytes.saturating_sub(p.doc.bytes());
        self.seq_of
            .remove(&(p.doc.collection().to_owned(), p.doc.id().key()));
        Some(p)
    }

    pub fn first_seq(&self) -> Option<i64> {
        self.by_seq.keys().next().copied()
    }

    pub fn len(&self) -> usize {
        self.by_seq.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }

    /// The stored size of the documents waiting (a bound on what they take in memory, up to a
    /// constant factor).
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// What the peer is known to have, per document: the version vectors of the states this session
/// sent it and of the changes it pushed. A lower bound (the peer may hold more), so a delta
/// against it is always applicable by a peer that applies batches in order.
pub type Known = BTreeMap<DocKey, VersionVector>;

/// Documents remembered per session; past it the memory starts afresh (full states again).
const MAX_KNOWN: usize = 100_000;

pub fn remember(known: &mut Known, key: DocKey, vv: &VersionVector) {
    if known.len() >= MAX_KNOWN && !known.contains_key(&key) {
        known.clear();
    }
    known.entry(key).or_default().join(vv);
}

/// A document as a change for the peer: the delta against what it is known to have (its full
/// state the first time in this session); `None` when the peer has it all already (the echo of
/// its own push, say). The caller [`remember`]s the state once the change is sent.
pub fn change_for(
    known: &Known,
    collection: &str,
    id: &DocId,
    seq: i64,
    state: &Doc,
) -> Option<DocChange> {
    let key = (collection.to_owned(), id.key());
    let base = known.get(&key).cloned().unwrap_or_default();
    let delta = state.delta(&base);
    if delta.is_empty() {
        return None;
    }
    Some(DocChange {
        collection: collection.to_owned(),
        id: id.clone(),
        seq: u64::try_from(seq).unwrap_or(0),
        delta,
    })
}

/// A document's JSON with `_id` (`None`: deleted): [`Doc::materialize_with_id`].
pub fn materialize_with_id(doc: &Doc, id: &DocId) -> Option<Value> {
    doc.materialize_with_id(id)
}
