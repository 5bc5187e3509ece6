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
//! concurrent write never shows through a removed newer one. A counter's totals only grow, so a
//! removal also records on every counter below it what it had seen of them: an increment is
//! never lost, only removed or restarted by a writer that had seen it (see [`Counter`]).
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
    /// What `self` adds beyond `floor`: `self - floor`, never below zero.
    fn above(self, floor: Self) -> Self;
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
    fn above(self, floor: i64) -> i64 {
        Ord::max(self.saturating_sub(floor), 0)
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
    fn above(self, floor: f64) -> f64 {
        if self > floor {
            saturate(self - floor)
        } else {
            0.0
        }
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

/// A site's totals (increments `p`, decrements `n`) as some write had observed them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seen<N> {
    pub p: N,
    pub n: N,
}

impl<N: CounterNum> Seen<N> {
    pub const ZERO: Seen<N> = Seen {
        p: N::ZERO,
        n: N::ZERO,
    };

    fn join(&mut self, other: &Seen<N>) {
        self.p = self.p.max(other.p);
        self.n = self.n.max(other.n);
    }

    fn is_zero(&self) -> bool {
        *self == Seen::ZERO
    }
}

/// The newest `RESTART [WITH base]` of a settable counter (or the rewrite of a counter that a
/// strict-mode removal kept), last writer wins.
#[derive(Debug, Clone, PartialEq)]
pub struct Epoch<N> {
    pub stamp: Stamp,
    pub base: N,
    /// Per site, the totals the restart had observed: `base` replaces them. Increments beyond
    /// them (made concurrently or later) count on top of `base`.
    pub seen: BTreeMap<crate::hlc::SiteId, Seen<N>>,
    /// A removal had seen this restart: its base no longer counts.
    pub removed: bool,
}

impl<N: CounterNum> Epoch<N> {
    /// Joins another epoch under the same stamp. Two different ones only happen with corrupted
    /// input (a reused site id, a forged state); the join stays commutative anyway.
    fn join_same(&mut self, other: &Epoch<N>) {
        self.base = self.base.max(other.base);
        join_seen(&mut self.seen, &other.seen);
        self.removed |= other.removed;
    }
}

fn join_seen<N: CounterNum>(
    mine: &mut BTreeMap<crate::hlc::SiteId, Seen<N>>,
    other: &BTreeMap<crate::hlc::SiteId, Seen<N>>,
) {
    for (site, s) in other {
        mine.entry(*site).or_insert(Seen::ZERO).join(s);
    }
}

/// One site's totals: increments `p`, decrements `n` (both only grow), last write `last`.
#[derive(Debug, Clone, PartialEq)]
pub struct Contrib<N> {
    pub p: N,
    pub n: N,
    pub last: Stamp,
    /// The part of `p` and `n` that removals had observed: it went with the removed value.
    pub removed: Seen<N>,
}

impl<N: CounterNum> Contrib<N> {
    fn join(&mut self, other: &Contrib<N>) {
        self.p = self.p.max(other.p);
        self.n = self.n.max(other.n);
        self.last = self.last.max(other.last);
        self.removed.join(&other.removed);
    }
}

/// A PN counter: per-site totals that only grow, a last-writer-wins restart, and what
/// removals had observed. The value is the base of the restart (unless a removal had seen it)
/// plus every increment that neither that restart nor any removal had observed, so an
/// increment is never lost to a concurrent restart or removal.
#[derive(Debug, Clone, PartialEq)]
pub struct Counter<N> {
    /// `None` until the first restart (base zero).
    pub epoch: Option<Epoch<N>>,
    pub contrib: BTreeMap<crate::hlc::SiteId, Contrib<N>>,
    /// Only in states written in format 1, where a restart (or the first increment after a
    /// removal) started the totals again from zero: the stamp of that epoch, whose totals
    /// `contrib` holds. A newer era replaces the totals in the join, an older one is ignored,
    /// as format 1 merged them. Never set by a write.
    pub era: Option<Stamp>,
}

impl<N: CounterNum> Default for Counter<N> {
    fn default() -> Self {
        Counter {
            epoch: None,
            contrib: BTreeMap::new(),
            era: None,
        }
    }
}

impl<N: CounterNum> Counter<N> {
    fn epoch_stamp(&self) -> Option<Stamp> {
        self.epoch.as_ref().map(|e| e.stamp)
    }

    fn join(&mut self, other: &Counter<N>) {
        match other.epoch_stamp().cmp(&self.epoch_stamp()) {
            Ordering::Greater => self.epoch = other.epoch.clone(),
            Ordering::Less => {}
            Ordering::Equal => {
                if let (Some(mine), Some(theirs)) = (&mut self.epoch, &other.epoch) {
                    mine.join_same(theirs);
                }
            }
        }
        match other.era.cmp(&self.era) {
            Ordering::Greater => {
                self.era = other.era;
                self.contrib = other.contrib.clone();
            }
            Ordering::Less => {}
            Ordering::Equal => {
                for (site, c) in &other.contrib {
                    match self.contrib.get_mut(site) {
                        None => {
                            self.contrib.insert(*site, c.clone());
                        }
                        Some(mine) => mine.join(c),
                    }
                }
            }
        }
    }

    /// The counter's value.
    pub fn total(&self) -> N {
        let (mut v, seen) = match &self.epoch {
            Some(e) => (if e.removed { N::ZERO } else { e.base }, Some(&e.seen)),
            None => (N::ZERO, None),
        };
        for (site, c) in &self.contrib {
            let mut floor = c.removed;
            if let Some(s) = seen.and_then(|s| s.get(site)) {
                floor.join(s);
            }
            v = v.add(c.p.above(floor.p)).sub(c.n.above(floor.n));
        }
        v
    }

    /// Per site, the totals a writer that had seen `seen` observed (zero totals left out).
    fn observed(&self, seen: &VersionVector) -> BTreeMap<crate::hlc::SiteId, Seen<N>> {
        self.contrib
            .iter()
            .filter(|(_, c)| seen.covers(c.last))
            .map(|(site, c)| (*site, Seen { p: c.p, n: c.n }))
            .filter(|(_, s)| !s.is_zero())
            .collect()
    }

    /// A removal that had seen `seen` covers this counter: the totals and the restart it had
    /// observed go with the removed value; increments it had not seen stay.
    fn remove_observed(&mut self, seen: &VersionVector) {
        if let Some(e) = &mut self.epoch {
            if seen.covers(e.stamp) {
                e.removed = true;
            }
        }
        for c in self.contrib.values_mut() {
            if seen.covers(c.last) {
                let all = Seen { p: c.p, n: c.n };
                c.removed.join(&all);
            }
        }
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
            .chain(self.era)
            .chain(self.contrib.values().map(|c| c.last))
    }

    /// The sites named anywhere in the counter.
    fn sites(&self) -> impl Iterator<Item = crate::hlc::SiteId> + '_ {
        self.contrib
            .keys()
            .chain(self.epoch.iter().flat_map(|e| e.seen.keys()))
            .copied()
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

    /// Removes what a writer that had seen `ctx` saw at this slot and below: a tombstone, and
    /// on every counter below, the totals and restart the writer had observed (see
    /// [`Counter::total`]), so that a concurrent increment brings back only itself.
    fn add_tomb(&mut self, stamp: Stamp, ctx: &VersionVector) {
        let mut t = Tomb::default();
        t.removers.observe(stamp.site, stamp.hlc);
        t.ctx = ctx.clone();
        match &mut self.tomb {
            Some(existing) => existing.join(&t),
            None => self.tomb = Some(t),
        }
        self.remove_counters(ctx);
    }

    fn remove_counters(&mut self, seen: &VersionVector) {
        if let Some(c) = &mut self.ctr {
            c.remove_observed(seen);
        }
        if let Some(c) = &mut self.pn {
            c.remove_observed(seen);
        }
        if let Some(m) = &mut self.map {
            for e in m.entries.values_mut() {
                e.remove_counters(seen);
            }
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
