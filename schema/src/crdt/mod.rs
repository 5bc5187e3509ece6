//! The document CRDT.
//!
//! A document is a state-based, delta-capable CRDT: a tree whose root slot holds an add-wins map.
//! Every slot may hold several *components* (a last-writer-wins register, a map, a settable
//! counter, a legacy PN counter, an attachment token) plus a tombstone. Each component joins on
//! its own; which one is visible is a pure function of the joined state (the component with the
//! newest surviving stamp), so the join stays commutative, associative and idempotent.
//!
//! Removal is observed-remove: a tombstone records the remover's version vector (`ctx`), and any
//! stamp `(h, s)` under the tombstone with `h <= ctx[s]` is dead. Writes the remover had not seen
//! survive (add-wins). A dead register keeps its stamp but drops its value, so that an older
//! concurrent write never shows through a removed newer one.
//!
//! See `docs/crdt.md` for the rules with examples.

mod codec;
mod delta;
mod ops;
mod provenance;
mod view;
mod vv;

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeMap;

pub use delta::Delta;
pub use ops::{CounterKind, ObjectMode, Op};
pub use provenance::ProvenanceError;
pub use view::{FieldView, TypeView};
pub use vv::VersionVector;

use crate::hlc::Stamp;
use crate::value::Value;

/// A last-writer-wins register. `value` is `None` once the register is covered by a tombstone.
#[derive(Debug, Clone, PartialEq)]
pub struct Register {
    pub stamp: Stamp,
    pub value: Option<Value>,
}

impl Register {
    fn join(&mut self, other: &Register) {
        match other.stamp.cmp(&self.stamp) {
            Ordering::Greater => *self = other.clone(),
            Ordering::Less => {}
            Ordering::Equal => match (&self.value, &other.value) {
                // A pruned copy of the same write wins: the pruning tombstone is joined too.
                (Some(_), None) => self.value = None,
                (Some(a), Some(b)) => {
                    // Two values under one stamp only happen with corrupted input (a reused site
                    // id). Keep the join commutative anyway: the canonical bytes decide.
                    if b.canonical_bytes() > a.canonical_bytes() {
                        self.value = Some(b.clone());
                    }
                }
                (None, _) => {}
            },
        }
    }
}

/// A removal: `removers` are the stamps of the removing writes per site, `ctx` what they had seen.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tomb {
    pub removers: VersionVector,
    pub ctx: VersionVector,
}

impl Tomb {
    fn join(&mut self, other: &Tomb) {
        self.removers.join(&other.removers);
        self.ctx.join(&other.ctx);
    }
}

/// An add-wins map. `mark` is the stamp of the write that created or last assigned the map as a
/// whole; it keeps an empty map alive.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MapNode {
    pub mark: Option<Stamp>,
    pub entries: BTreeMap<String, Slot>,
}

/// Numbers a counter can count in: `i64` for the settable COUNTER, `f64` for the legacy
/// PN_COUNTER (whose values are floats in Ditto).
pub trait CounterNum: Copy + PartialEq + std::fmt::Debug {
    const ZERO: Self;
    fn add(self, other: Self) -> Self;
    fn sub(self, other: Self) -> Self;
    /// Join of two totals of the same site (both only grow).
    fn max(self, other: Self) -> Self;
    fn is_negative(self) -> bool;
    fn neg(self) -> Self;
    fn to_value(self) -> Value;
}

impl CounterNum for i64 {
    const ZERO: i64 = 0;
    fn add(self, other: i64) -> i64 {
        self.saturating_add(other)
    }
    fn sub(self, other: i64) -> i64 {
        self.saturating_sub(other)
    }
    fn max(self, other: i64) -> i64 {
        Ord::max(self, other)
    }
    fn is_negative(self) -> bool {
        self < 0
    }
    fn neg(self) -> i64 {
        self.saturating_neg()
    }
    fn to_value(self) -> Value {
        Value::Int(self)
    }
}

/// Saturates at the largest finite float, as the `i64` counter saturates: a per-site total that
/// overflowed to infinity could be encoded but not decoded (the decoder refuses non-finite
/// floats), and infinities of both signs in one sum would give NaN.
fn saturate(f: f64) -> f64 {
    f.clamp(-f64::MAX, f64::MAX)
}

impl CounterNum for f64 {
    const ZERO: f64 = 0.0;
    fn add(self, other: f64) -> f64 {
        saturate(self + other)
    }
    fn sub(self, other: f64) -> f64 {
        saturate(self - other)
    }
    fn max(self, other: f64) -> f64 {
        if other.total_cmp(&self) == Ordering::Greater {
            other
        } else {
            self
        }
    }
    fn is_negative(self) -> bool {
        self < 0.0
    }
    fn neg(self) -> f64 {
        -self
    }
    fn to_value(self) -> Value {
        // Sums of finite increments can overflow to infinity; clamp so the value stays JSON.
        Value::Float(if self.is_finite() {
            self
        } else {
            self.signum() * f64::MAX
        })
    }
}

/// The start of a counter's current epoch: a RESTART (settable counter) or a re-creation.
#[derive(Debug, Clone, PartialEq)]
pub struct Epoch<N> {
    pub stamp: Stamp,
    pub base: N,
}

/// One site's totals in the current epoch: increments `p`, decrements `n`, last write `last`.
#[derive(Debug, Clone, PartialEq)]
pub struct Contrib<N> {
    pub p: N,
    pub n: N,
    pub last: Stamp,
}

/// A PN counter with a last-writer-wins epoch (restart).
#[derive(Debug, Clone, PartialEq)]
pub struct Counter<N> {
    /// `None` is the initial epoch every replica agrees on (base zero).
    pub epoch: Option<Epoch<N>>,
    pub contrib: BTreeMap<crate::hlc::SiteId, Contrib<N>>,
}

impl<N: CounterNum> Default for Counter<N> {
    fn default() -> Self {
        Counter {
            epoch: None,
            contrib: BTreeMap::new(),
        }
    }
}

impl<N: CounterNum> Counter<N> {
    fn epoch_stamp(&self) -> Option<Stamp> {
        self.epoch.as_ref().map(|e| e.stamp)
    }

    fn join(&mut self, other: &Counter<N>) {
        match other.epoch_stamp().cmp(&self.epoch_stamp()) {
            Ordering::Greater => *self = other.clone(),
            Ordering::Less => {}
            Ordering::Equal => {
                // Two bases under one epoch stamp only happen with corrupted input (a reused
                // site id, a forged state). Keep the join commutative anyway: the larger wins.
                if let (Some(mine), Some(theirs)) = (&mut self.epoch, &other.epoch) {
                    mine.base = mine.base.max(theirs.base);
                }
                for (site, c) in &other.contrib {
                    match self.contrib.get_mut(site) {
                        None => {
                            self.contrib.insert(*site, c.clone());
                        }
                        Some(mine) => {
                            mine.p = mine.p.max(c.p);
                            mine.n = mine.n.max(c.n);
                            mine.last = mine.last.max(c.last);
                        }
                    }
                }
            }
        }
    }

    /// The counter's value.
    pub fn total(&self) -> N {
        let mut v = self.epoch.as_ref().map(|e| e.base).unwrap_or(N::ZERO);
        for c in self.contrib.values() {
            v = v.add(c.p).sub(c.n);
        }
        v
    }

    /// The newest stamp not covered by `ctx`.
    fn newest_alive(&self, ctx: &VersionVector) -> Option<Stamp> {
        let e = self.epoch_stamp().filter(|s| !ctx.covers(*s));
        let c = self
            .contrib
            .values()
            .map(|c| c.last)
            .filter(|s| !ctx.covers(*s))
            .max();
        e.max(c)
    }

    fn stamps(&self) -> impl Iterator<Item = Stamp> + '_ {
        self.epoch_stamp()
            .into_iter()
            .chain(self.contrib.values().map(|c| c.last))
    }
}

/// One position in the document tree.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Slot {
    pub reg: Option<Register>,
    pub map: Option<MapNode>,
    pub ctr: Option<Counter<i64>>,
    pub pn: Option<Counter<f64>>,
    pub att: Option<Register>,
    pub tomb: Option<Tomb>,
}

/// Which component of a slot is visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    Register,
    Attachment,
    PnCounter,
    Counter,
    Map,
}

impl Slot {
    fn is_empty(&self) -> bool {
        self.reg.is_none()
            && self.map.is_none()
            && self.ctr.is_none()
            && self.pn.is_none()
            && self.att.is_none()
            && self.tomb.is_none()
    }

    /// The removal context in force below this slot, given the one inherited from ancestors.
    fn ctx<'a>(&self, inherited: &'a VersionVector) -> Cow<'a, VersionVector> {
        match &self.tomb {
            None => Cow::Borrowed(inherited),
            Some(t) => {
                let mut c = inherited.clone();
                c.join(&t.ctx);
                Cow::Owned(c)
            }
        }
    }

    fn add_tomb(&mut self, stamp: Stamp, ctx: &VersionVector) {
        let mut t = Tomb::default();
        t.removers.observe(stamp.site, stamp.hlc);
        t.ctx = ctx.clone();
        match &mut self.tomb {
            Some(existing) => existing.join(&t),
            None => self.tomb = Some(t),
        }
    }

    fn join(&mut self, other: &Slot) {
        join_opt(&mut self.reg, &other.reg, Register::join);
        join_opt(&mut self.att, &other.att, Register::join);
        join_opt(&mut self.ctr, &other.ctr, Counter::join);
        join_opt(&mut self.pn, &other.pn, Counter::join);
        join_opt(&mut self.tomb, &other.tomb, Tomb::join);
        join_opt(&mut self.map, &other.map, MapNode::join);
    }

    /// Drops values of covered registers and empty entries. Idempotent; called after every join
    /// and write so that equal states have equal representations.
    fn normalize(&mut self, inherited: &VersionVector) {
        let ctx = self.ctx(inherited);
        for r in [&mut self.reg, &mut self.att].into_iter().flatten() {
            if ctx.covers(r.stamp) {
                r.value = None;
            }
        }
        if let Some(m) = &mut self.map {
            for e in m.entries.values_mut() {
                e.normalize(&ctx);
            }
            m.entries.retain(|_, e| !e.is_empty());
            if m.mark.is_none() && m.entries.is_empty() {
                self.map = None;
            }
        }
    }

    /// The visible component and its newest surviving stamp, given the inherited context.
    pub fn visible(&self, inherited: &VersionVector) -> Option<(Component, Stamp)> {
        let ctx = self.ctx(inherited);
        let mut best: Option<(Stamp, Component)> = None;
        let mut consider = |s: Option<Stamp>, c: Component| {
            if let Some(s) = s {
                if best.is_none_or(|b| (s, c) > b) {
                    best = Some((s, c));
                }
            }
        };
        let reg_alive = |r: &Option<Register>| {
            r.as_ref()
                .filter(|r| r.value.is_some() && !ctx.covers(r.stamp))
                .map(|r| r.stamp)
        };
        consider(reg_alive(&self.reg), Component::Register);
        consider(reg_alive(&self.att), Component::Attachment);
        consider(
            self.ctr.as_ref().and_then(|c| c.newest_alive(&ctx)),
            Component::Counter,
        );
        consider(
            self.pn.as_ref().and_then(|c| c.newest_alive(&ctx)),
            Component::PnCounter,
        );
        if let Some(m) = &self.map {
            consider(m.newest_alive(&ctx), Component::Map);
        }
        best.map(|(s, c)| (c, s))
    }

    /// The slot's visible JSON value.
    pub fn materialize(&self, inherited: &VersionVector) -> Option<Value> {
        let (component, _) = self.visible(inherited)?;
        let ctx = self.ctx(inherited);
        match component {
            Component::Register => self.reg.as_ref().and_then(|r| r.value.clone()),
            Component::Attachment => self.att.as_ref().and_then(|r| r.value.clone()),
            Component::Counter => self.ctr.as_ref().map(|c| c.total().to_value()),
            Component::PnCounter => self.pn.as_ref().map(|c| c.total().to_value()),
            Component::Map => self.map.as_ref().map(|m| m.materialize(&ctx)),
        }
    }

    fn visit_stamps(&self, f: &mut impl FnMut(Stamp)) {
        for r in [&self.reg, &self.att].into_iter().flatten() {
            f(r.stamp);
        }
        if let Some(c) = &self.ctr {
            c.stamps().for_each(&mut *f);
        }
        if let Some(c) = &self.pn {
            c.stamps().for_each(&mut *f);
        }
        if let Some(t) = &self.tomb {
            for (site, hlc) in t.removers.iter() {
                f(Stamp::new(hlc, site));
            }
        }
        if let Some(m) = &self.map {
            if let Some(s) = m.mark {
                f(s);
            }
            for e in m.entries.values() {
                e.visit_stamps(f);
            }
        }
    }
}

impl MapNode {
    fn join(&mut self, other: &MapNode) {
        self.mark = self.mark.max(other.mark);
        for (k, slot) in &other.entries {
            match self.entries.get_mut(k) {
                Some(mine) => mine.join(slot),
                None => {
                    self.entries.insert(k.clone(), slot.clone());
                }
            }
        }
    }

    fn newest_alive(&self, ctx: &VersionVector) -> Option<Stamp> {
        let mark = self.mark.filter(|s| !ctx.covers(*s));
        let child = self
            .entries
            .values()
            .filter_map(|e| e.visible(ctx).map(|(_, s)| s))
            .max();
        mark.max(child)
    }

    fn materialize(&self, ctx: &VersionVector) -> Value {
        Value::Object(
            self.entries
                .iter()
                .filter_map(|(k, e)| e.materialize(ctx).map(|v| (k.clone(), v)))
                .collect(),
        )
    }
}

fn join_opt<T: Clone>(mine: &mut Option<T>, other: &Option<T>, join: fn(&mut T, &T)) {
    match (mine.as_mut(), other) {
        (_, None) => {}
        (None, Some(o)) => *mine = Some(o.clone()),
        (Some(m), Some(o)) => join(m, o),
    }
}

/// The CRDT state of one document.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Doc {
    /// Per site, the newest event of that site this replica has incorporated (prefix closed).
    pub vv: VersionVector,
    /// The root slot; its map holds the document's fields, its tombstone is the delete.
    pub root: Slot,
}

impl Doc {
    pub fn new() -> Doc {
        Doc::default()
    }

    /// Joins another state of the same document into this one.
    pub fn join(&mut self, other: &Doc) {
        self.vv.join(&other.vv);
        self.root.join(&other.root);
        self.root.normalize(&VersionVector::default());
    }

    /// [`Doc::join`] taking the other state by value: joined into an empty state (a document
    /// seen for the first time), it is moved rather than copied. The same result as `join`.
    pub fn join_owned(&mut self, other: Doc) {
        if self.vv.is_empty() && self.root.is_empty() {
            *self = other;
            self.root.normalize(&VersionVector::default());
        } else {
            self.join(&other);
        }
    }

    /// True when nothing under the root survives: the document is deleted (or was never written).
    pub fn is_deleted(&self) -> bool {
        self.root.visible(&VersionVector::default()).is_none()
    }

    /// The document's fields as a JSON object (without `_id`), or `None` when deleted.
    pub fn materialize(&self) -> Option<Value> {
        let empty = VersionVector::default();
        match self.root.visible(&empty) {
            Some((Component::Map, _)) => self
                .root
                .map
                .as_ref()
                .map(|m| m.materialize(&self.root.ctx(&empty))),
            _ => None,
        }
    }

    /// The document's JSON with its `_id`, as subscriptions, permissions and the store see it;
    /// `None` when deleted.
    pub fn materialize_with_id(&self, id: &crate::DocId) -> Option<Value> {
        match self.materialize()? {
            Value::Object(mut o) => {
                o.insert("_id".to_owned(), id.value().clone());
                Some(Value::Object(o))
            }
            _ => None,
        }
    }

    /// The largest stamp anywhere in the state (for resuming a clock).
    pub fn max_stamp(&self) -> Option<Stamp> {
        let mut best: Option<Stamp> = None;
        self.root.visit_stamps(&mut |s| best = best.max(Some(s)));
        best
    }

    /// Encodes the state in the compact versioned binary format.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode_doc(self)
    }

    /// Decodes a state written by [`Doc::encode`].
    pub fn decode(bytes: &[u8]) -> crate::Result<Doc> {
        codec::decode_doc(bytes)
    }
}

#[cfg(test)]
mod tests;
