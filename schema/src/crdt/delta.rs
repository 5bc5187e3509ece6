//! Field-level deltas.
//!
//! A delta is a partial document state holding everything the sender has that a receiver at
//! version vector `base` may lack: registers, map marks and counters with a stamp above `base`,
//! tombstones with a remover above `base`, and every counter below such a tombstone (a removal
//! records on the counters below it what it removed of them, which carries no stamp). Applying
//! it is a join, so a delta computed against any vector at or below the receiver's is safe (it
//! is a superset of the minimal one).

use super::{Counter, CounterNum, Doc, MapNode, Register, Slot, VersionVector};
use crate::error::{Result, SchemaError};

/// A delta of one document.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Delta {
    /// The receiver version vector this delta was computed against.
    pub base: VersionVector,
    /// The partial state; its `vv` is the sender's full version vector.
    pub state: Doc,
}

impl Delta {
    /// True when the delta carries no field and no version information beyond its base.
    pub fn is_empty(&self) -> bool {
        self.state.root.is_empty() && self.base.dominates(&self.state.vv)
    }

    pub fn encode(&self) -> Vec<u8> {
        super::codec::encode_delta(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Delta> {
        super::codec::decode_delta(bytes)
    }

    /// The encoding of the full-state delta (`base` empty) of the document encoded as
    /// `doc_bytes`, without decoding the document, and the document's version vector. The same
    /// bytes as `Delta { base: empty, state: Doc::decode(doc_bytes)? }.encode()`.
    pub fn encode_full_state(doc_bytes: &[u8]) -> Result<(Vec<u8>, VersionVector)> {
        super::codec::full_state_delta_from_doc(doc_bytes)
    }
}

impl Doc {
    /// The delta that brings a replica at `base` up to this state.
    pub fn delta(&self, base: &VersionVector) -> Delta {
        Delta {
            base: base.clone(),
            state: Doc {
                vv: self.vv.clone(),
                root: slot_delta(&self.root, base, false),
            },
        }
    }

    /// Applies a delta. Refused (and nothing changes) when this replica's version vector does not
    /// dominate the delta's base: the replica lost state the delta assumes (eviction, restore).
    pub fn apply_delta(&mut self, delta: &Delta) -> Result<()> {
        if !self.vv.dominates(&delta.base) {
            return Err(SchemaError::BaseNotDominated);
        }
        self.join(&delta.state);
        Ok(())
    }

    /// [`Doc::apply_delta`] taking the delta by value (see [`Doc::join_owned`]).
    pub fn apply_delta_owned(&mut self, delta: Delta) -> Result<()> {
        if !self.vv.dominates(&delta.base) {
            return Err(SchemaError::BaseNotDominated);
        }
        self.join_owned(delta.state);
        Ok(())
    }
}

fn reg_delta(r: &Option<Register>, base: &VersionVector) -> Option<Register> {
    r.as_ref().filter(|r| !base.covers(r.stamp)).cloned()
}

/// `removed`: a removal the receiver may lack covers the counter.
fn counter_delta<N: CounterNum>(
    c: &Option<Counter<N>>,
    base: &VersionVector,
    removed: bool,
) -> Option<Counter<N>> {
    // A counter is small: when any part of it is new, send all of it (its epoch included).
    c.as_ref()
        .filter(|c| removed || c.stamps().any(|s| !base.covers(s)))
        .cloned()
}

/// `removed`: a tombstone above this slot goes in the delta.
fn slot_delta(slot: &Slot, base: &VersionVector, removed: bool) -> Slot {
    let tomb = slot
        .tomb
        .as_ref()
        .filter(|t| base.any_above(&t.removers))
        .cloned();
    let removed = removed || tomb.is_some();
    let map = slot.map.as_ref().and_then(|m| {
        let mark = m.mark.filter(|s| !base.covers(*s));
        let entries: std::collections::BTreeMap<_, _> = m
            .entries
            .iter()
            .map(|(k, e)| (k.clone(), slot_delta(e, base, removed)))
            .filter(|(_, e)| !e.is_empty())
            .collect();
        (mark.is_some() || !entries.is_empty()).then_some(MapNode { mark, entries })
    });
    Slot {
        reg: reg_delta(&slot.reg, base),
        att: reg_delta(&slot.att, base),
        ctr: counter_delta(&slot.ctr, base, removed),
        pn: counter_delta(&slot.pn, base, removed),
        tomb,
        map,
    }
}
