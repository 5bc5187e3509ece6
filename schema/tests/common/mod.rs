//! Shared generators and checks for the CRDT property tests.
//!
//! States are only ever produced by running operations at sites and syncing replicas, so every
//! generated state is reachable (unconstrained random states would include shapes the CRDT can
//! never hold and would fail for no reason).

#![allow(dead_code)]

use std::collections::BTreeMap;

use bigpeer_schema::crdt::Slot;
use bigpeer_schema::hlc::Observe;
use bigpeer_schema::{
    Clock, Component, CounterKind, Delta, Doc, Hlc, ObjectMode, Op, SchemaError, SiteId, Value,
    VersionVector,
};
use proptest::prelude::*;
use proptest::sample::Index;

/// Keys of paths and of generated objects: small, so that writes collide.
const KEYS: [&str; 3] = ["a", "b", "c"];
const OBJECT_KEYS: [&str; 4] = ["a", "b", "c", "d"];

/// A wall clock start (2023-11-14) so that hlc values look like real ones.
pub const T0_MS: u64 = 1_700_000_000_000;
/// A skew beyond the HLC admission bound: peers refuse to follow this clock.
pub const BIG_SKEW_MS: u64 = bigpeer_schema::hlc::MAX_DRIFT_MS + 3_600_000;

pub fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(&KEYS[..]).prop_map(str::to_owned)
}

fn object_key() -> impl Strategy<Value = String> {
    prop::sample::select(&OBJECT_KEYS[..]).prop_map(str::to_owned)
}

/// A path of one to three keys.
fn path() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(key(), 1..=3)
}

/// Mostly a non-empty path, sometimes the document root.
fn path_or_root() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![1 => Just(Vec::new()), 20 => path()]
}

fn float() -> impl Strategy<Value = f64> {
    use prop::num::f64::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    prop_oneof![
        4 => -1000.0f64..1000.0,
        2 => POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO,
        1 => prop::sample::select(vec![f64::MAX, -f64::MAX, 1e308, -0.0, 0.5]),
    ]
}

/// A scalar of every type: null, bool, i64, u64 above `i64::MAX`, finite float, string, binary.
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![3 => -100i64..100, 1 => any::<i64>()].prop_map(Value::Int),
        ((i64::MAX as u64 + 1)..=u64::MAX).prop_map(Value::UInt),
        float().prop_map(Value::Float),
        "[a-z]{0,5}".prop_map(Value::String),
        prop::collection::vec(any::<u8>(), 0..4).prop_map(Value::Binary),
    ]
}

/// Any value: scalars, arrays and objects nested up to two levels.
pub fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(object_key(), inner, 0..3).prop_map(Value::Object),
        ]
    })
}

fn object() -> impl Strategy<Value = BTreeMap<String, Value>> {
    prop::collection::btree_map(object_key(), value(), 0..4)
}

fn mode() -> impl Strategy<Value = ObjectMode> {
    prop_oneof![3 => Just(ObjectMode::Map), 1 => Just(ObjectMode::Register)]
}

fn increment() -> impl Strategy<Value = Op> {
    let counter_by = prop_oneof![
        8 => (-5i64..=5).prop_map(Value::Int),
        1 => prop::sample::select(vec![i64::MAX, i64::MIN]).prop_map(Value::Int),
    ];
    let pn_by = prop_oneof![
        3 => (-5i64..=5).prop_map(Value::Int),
        3 => float().prop_map(Value::Float),
        1 => ((i64::MAX as u64 + 1)..=u64::MAX).prop_map(Value::UInt),
    ];
    prop_oneof![
        (path_or_root(), counter_by).prop_map(|(path, by)| Op::Increment {
            path,
            by,
            kind: CounterKind::Counter
        }),
        (path_or_root(), pn_by).prop_map(|(path, by)| Op::Increment {
            path,
            by,
            kind: CounterKind::PnCounter
        }),
    ]
}

fn component() -> impl Strategy<Value = Component> {
    prop_oneof![
        Just(Component::Register),
        Just(Component::Map),
        Just(Component::Counter),
        Just(Component::PnCounter),
        Just(Component::Attachment),
    ]
}

/// Every kind of operation, with both object modes and both counter kinds.
pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (path(), value(), mode()).prop_map(|(path, value, objects)| Op::Set { path, value, objects }),
        1 => (object(), mode()).prop_map(|(o, objects)| Op::Set { path: Vec::new(), value: Value::Object(o), objects }),
        4 => (prop::collection::vec(key(), 0..=2), object(), mode())
            .prop_map(|(path, value, objects)| Op::Merge { path, value, objects }),
        3 => path_or_root().prop_map(|path| Op::Unset { path }),
        1 => (path_or_root(), component()).prop_map(|(path, component)| Op::Remove { path, component }),
        4 => increment(),
        2 => (path_or_root(), -10i64..10).prop_map(|(path, to)| Op::Restart { path, to }),
        1 => (path_or_root(), "[a-f]{2}", 0i64..100).prop_map(|(path, id, len)| Op::Attach {
            path,
            token: Value::Object(BTreeMap::from([("id".into(), Value::String(id)), ("len".into(), Value::Int(len))])),
        }),
        1 => Just(Op::Delete),
    ]
}

/// The path an operation writes at (the root for a delete).
fn op_path(op: &Op) -> &[String] {
    match op {
        Op::Set { path, .. }
        | Op::Merge { path, .. }
        | Op::Unset { path }
        | Op::Remove { path, .. }
        | Op::Increment { path, .. }
        | Op::Restart { path, .. }
        | Op::Attach { path, .. } => path,
        Op::Delete => &[],
    }
}

/// True when two operations of the statement write at the same path or at a path and a prefix
/// of it. All operations of a statement share one stamp, so such a statement's result is
/// decided by the CRDT's tie-breaks rather than by the order of its operations (for example
/// `[SET a.b = 1, SET a = null]` shows `{"a":{"b":1}}`); a DQL statement does not do that, and
/// the sequential model of `check_read_your_write` does not hold after one.
pub fn overlapping(ops: &[Op]) -> bool {
    ops.iter().enumerate().any(|(i, a)| {
        ops[i + 1..].iter().any(|b| {
            let (p, q) = (op_path(a), op_path(b));
            p.starts_with(q) || q.starts_with(p)
        })
    })
}

/// One statement: one to three operations sharing a stamp, mostly at disjoint paths. Rarely,
/// an invalid one (a float increment of a COUNTER), which `apply` must refuse without changing
/// anything.
pub fn statement() -> impl Strategy<Value = Vec<Op>> {
    prop_oneof![
        27 => prop::collection::vec(op(), 1..=3).prop_map(|ops| {
            let mut kept: Vec<Op> = Vec::new();
            for op in ops {
                kept.push(op);
                if overlapping(&kept) {
                    kept.pop();
                }
            }
            kept
        }),
        3 => prop::collection::vec(op(), 2..=3),
        1 => path().prop_map(|path| vec![
            Op::Set { path: path.clone(), value: Value::Int(1), objects: ObjectMode::Map },
            Op::Increment { path, by: Value::Float(1.5), kind: CounterKind::Counter },
        ]),
    ]
}

/// One replica of a document: its state and the clock of its site.
#[derive(Debug, Clone)]
pub struct Replica {
    pub doc: Doc,
    pub clock: Clock,
    /// Offset of this replica's wall clock from the simulation's.
    pub skew_ms: u64,
    /// Whether to check each local write against the sequential model (off when the run has
    /// statements with overlapping paths, see [`overlapping`]).
    pub check_writes: bool,
}

impl Replica {
    pub fn new(i: usize, skew_ms: u64) -> Replica {
        // Site ids whose order differs from the replica order.
        let site = SiteId(0x9e37_79b9_7f4a_7c15_u128.wrapping_mul(i as u128 + 1));
        Replica {
            doc: Doc::new(),
            clock: Clock::new(site),
            skew_ms,
            check_writes: true,
        }
    }

    /// Runs one statement at this replica's next stamp. A refused statement leaves the state
    /// exactly as it was.
    pub fn write(&mut self, ops: &[Op], now_ms: u64) -> Result<(), SchemaError> {
        self.write_with(ops, now_ms, false)
    }

    /// [`Replica::write`], with `typed`: as a DQL strict-mode statement ([`Doc::apply_typed`]).
    pub fn write_with(&mut self, ops: &[Op], now_ms: u64, typed: bool) -> Result<(), SchemaError> {
        let stamp = self.clock.tick_at(now_ms + self.skew_ms);
        let before = self.doc.clone();
        let newest = before.max_stamp().is_none_or(|m| m < stamp);
        let r = if typed {
            self.doc.apply_typed(ops, stamp)
        } else {
            self.doc.apply(ops, stamp)
        };
        match (&r, ops) {
            (Err(_), _) => assert_eq!(self.doc, before, "a refused statement changed the document"),
            // A write stamped after everything in the state reads back as written.
            (Ok(()), [op]) if newest && self.check_writes && !typed => {
                check_read_your_write(&before, op, &self.doc)
            }
            _ => {}
        }
        check_prefix_closure(&self.doc);
        r
    }

    /// Applies a delta the way a real replica does: checks, joins, then advances the clock.
    pub fn receive(&mut self, delta: &Delta, now_ms: u64) -> Result<(), SchemaError> {
        let before = self.doc.clone();
        match self.doc.apply_delta(delta) {
            Ok(()) => {
                let _: Observe = self
                    .clock
                    .observe_at(delta.state.vv.max_hlc(), now_ms + self.skew_ms);
                check_prefix_closure(&self.doc);
                Ok(())
            }
            Err(e) => {
                assert_eq!(self.doc, before, "a refused delta changed the document");
                Err(e)
            }
        }
    }

    /// Full-state join (as a state-based replica would), with the clock rule.
    pub fn join(&mut self, other: &Doc, now_ms: u64) {
        self.doc.join(other);
        let _: Observe = self
            .clock
            .observe_at(other.vv.max_hlc(), now_ms + self.skew_ms);
        check_prefix_closure(&self.doc);
    }
}

/// The JSON a local write must produce from the JSON before it, when its stamp is newer than
/// everything in the state: the sequential specification of each operation. `None` is a
/// deleted document. For increments, whose value depends on the counter's history, `after` says
/// what the counter shows, and only its type and the rest of the document are checked.
pub fn expected_after(before: Option<&Value>, op: &Op, after: Option<&Value>) -> Option<Value> {
    let doc = || {
        before
            .cloned()
            .unwrap_or_else(|| Value::Object(BTreeMap::new()))
    };
    match op {
        Op::Delete => None,
        Op::Unset { path } if path.is_empty() => None,
        // `apply` refuses the other operations with an empty path.
        Op::Set { path, value, .. } if path.is_empty() => Some(value.clone()),
        Op::Set { path, value, .. } => Some(set_path(doc(), path, value.clone())),
        Op::Restart { path, to } => Some(set_path(doc(), path, Value::Int(*to))),
        Op::Attach { path, token } => Some(set_path(doc(), path, token.clone())),
        Op::Increment { path, kind, .. } => {
            let shown = after.and_then(|a| a.get_path(path)).cloned();
            let typed = match kind {
                CounterKind::Counter => matches!(shown, Some(Value::Int(_))),
                CounterKind::PnCounter => matches!(shown, Some(Value::Float(_))),
            };
            // A wrongly typed counter value is reported as a null there.
            Some(set_path(
                doc(),
                path,
                shown.filter(|_| typed).unwrap_or(Value::Null),
            ))
        }
        Op::Merge {
            path,
            value,
            objects,
        } => {
            let mut d = doc();
            let target = walk_mut(&mut d, path);
            if !is_map(target) {
                *target = Value::Object(BTreeMap::new());
            }
            merge_into(target, value, *objects);
            Some(d)
        }
        Op::Unset { path } => before.cloned().map(|mut d| {
            remove_path(&mut d, path);
            d
        }),
        // Strict-mode removals are not generated: what shows afterwards depends on the types
        // left at the field, which this model does not track.
        Op::Remove { .. } => after.cloned(),
    }
}

/// An attachment token: opaque, not an object one can write into. The generated tokens are
/// the only generated objects with an `id` key.
fn is_token(v: &Value) -> bool {
    v.as_object().is_some_and(|o| o.contains_key("id"))
}

/// True for an object one can write into.
fn is_map(v: &Value) -> bool {
    matches!(v, Value::Object(_)) && !is_token(v)
}

/// The value at `path`, made an object at every step (a non-object there is replaced).
fn walk_mut<'a>(mut v: &'a mut Value, path: &[String]) -> &'a mut Value {
    for k in path {
        if !is_map(v) {
            *v = Value::Object(BTreeMap::new());
        }
        let Value::Object(o) = v else {
            unreachable!("made an object above")
        };
        v = o.entry(k.clone()).or_insert(Value::Null);
    }
    v
}

fn set_path(mut doc: Value, path: &[String], value: Value) -> Value {
    *walk_mut(&mut doc, path) = value;
    doc
}

fn merge_into(target: &mut Value, obj: &BTreeMap<String, Value>, mode: ObjectMode) {
    let Value::Object(t) = target else {
        unreachable!("merge into an object")
    };
    for (k, v) in obj {
        match (v, mode) {
            (Value::Object(o), ObjectMode::Map) => {
                let child = t
                    .entry(k.clone())
                    .or_insert_with(|| Value::Object(BTreeMap::new()));
                if !is_map(child) {
                    *child = Value::Object(BTreeMap::new());
                }
                merge_into(child, o, mode);
            }
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
}

fn remove_path(v: &mut Value, path: &[String]) {
    if is_token(v) {
        return;
    }
    let Value::Object(o) = v else { return };
    match path {
        [] => {}
        [k] => {
            o.remove(k);
        }
        [k, rest @ ..] => {
            if let Some(c) = o.get_mut(k) {
                remove_path(c, rest);
            }
        }
    }
}

/// Checks that `after`, just written by `op` at a stamp newer than everything in `before`,
/// shows exactly the effect of `op` on `before`'s JSON.
pub fn check_read_your_write(before: &Doc, op: &Op, after: &Doc) {
    let (b, a) = (before.materialize(), after.materialize());
    let want = expected_after(b.as_ref(), op, a.as_ref());
    if let (Op::Unset { path }, false) = (op, a == want) {
        // A map's own liveness is its newest mark, last-writer-wins like a register. A map whose
        // mark was removed (by a delete or a type change that missed a concurrent write below
        // it) shows only through that write; when the write is removed the map goes, leaving
        // an older hidden value of another type, or nothing (up to the whole document), rather
        // than `{}`. So only the field itself and the other top-level fields are checked.
        let without = |d: &Option<Value>| {
            let mut d = d.clone().unwrap_or_else(|| Value::Object(BTreeMap::new()));
            remove_path(&mut d, &path[..1]);
            d
        };
        assert_eq!(
            a.as_ref().and_then(|d| d.get_path(path)),
            None,
            "UNSET {path:?} left a value"
        );
        assert_eq!(
            without(&a),
            without(&want),
            "UNSET {path:?} changed other fields"
        );
        return;
    }
    assert_eq!(
        a.as_ref().map(Value::to_json_string),
        want.as_ref().map(Value::to_json_string),
        "local write {op:?} on {}",
        b.as_ref()
            .map(Value::to_json_string)
            .unwrap_or_else(|| "(deleted)".into())
    );
    assert_eq!(a, want);
}

/// How two replicas sync in a history.
#[derive(Debug, Clone, Copy)]
pub enum SyncKind {
    /// Full-state join.
    Join,
    /// A delta against the receiver's exact version vector.
    Delta,
    /// A delta against the empty vector (a full state as a delta).
    FullDelta,
}

/// One step of a history over a fixed set of sites.
#[derive(Debug, Clone)]
pub enum Step {
    Write {
        site: Index,
        ops: Vec<Op>,
        dt_ms: u64,
    },
    Sync {
        from: Index,
        to: Index,
        kind: SyncKind,
    },
}

pub fn step() -> impl Strategy<Value = Step> {
    let kind = prop_oneof![
        Just(SyncKind::Join),
        Just(SyncKind::Delta),
        Just(SyncKind::FullDelta)
    ];
    prop_oneof![
        3 => (any::<Index>(), statement(), 0u64..3).prop_map(|(site, ops, dt_ms)| Step::Write { site, ops, dt_ms }),
        2 => (any::<Index>(), any::<Index>(), kind).prop_map(|(from, to, kind)| Step::Sync { from, to, kind }),
    ]
}

/// Runs a history over `sites` replicas and returns every state any replica passed through
/// (the empty document included), in order.
pub fn run_history(sites: usize, skewed: bool, steps: &[Step]) -> (Vec<Replica>, Vec<Doc>) {
    let mut replicas: Vec<Replica> = (0..sites)
        .map(|i| {
            Replica::new(
                i,
                if skewed && i == sites - 1 {
                    BIG_SKEW_MS
                } else {
                    0
                },
            )
        })
        .collect();
    let sequential = !steps
        .iter()
        .any(|s| matches!(s, Step::Write { ops, .. } if overlapping(ops)));
    for r in &mut replicas {
        r.check_writes = sequential;
    }
    let mut now = T0_MS;
    let mut pool = vec![Doc::new()];
    for s in steps {
        match s {
            Step::Write { site, ops, dt_ms } => {
                now += dt_ms;
                let r = &mut replicas[site.index(sites)];
                let _ = r.write(ops, now);
                pool.push(r.doc.clone());
            }
            Step::Sync { from, to, kind } => {
                let (f, t) = (from.index(sites), to.index(sites));
                let src = replicas[f].doc.clone();
                let dst = &mut replicas[t];
                match kind {
                    SyncKind::Join => dst.join(&src, now),
                    SyncKind::Delta => {
                        let d = src.delta(&dst.doc.vv);
                        dst.receive(&d, now)
                            .expect("a delta against the receiver's vv applies");
                    }
                    SyncKind::FullDelta => {
                        let d = src.delta(&VersionVector::new());
                        dst.receive(&d, now)
                            .expect("a delta against the empty vv applies");
                    }
                }
                pool.push(dst.doc.clone());
            }
        }
    }
    (replicas, pool)
}

/// Every stamp in `slot` (registers, attachments, counter epochs and contributions, tombstone
/// removers, map marks), with the tombstone contexts as version vectors.
fn walk(slot: &Slot, stamps: &mut Vec<bigpeer_schema::Stamp>, ctxs: &mut Vec<VersionVector>) {
    for r in [&slot.reg, &slot.att].into_iter().flatten() {
        stamps.push(r.stamp);
    }
    if let Some(c) = &slot.ctr {
        stamps.extend(c.epoch.as_ref().map(|e| e.stamp));
        stamps.extend(c.era);
        for (site, k) in &c.contrib {
            assert_eq!(
                *site, k.last.site,
                "counter contribution keyed by another site"
            );
            stamps.push(k.last);
        }
    }
    if let Some(c) = &slot.pn {
        stamps.extend(c.epoch.as_ref().map(|e| e.stamp));
        stamps.extend(c.era);
        for (site, k) in &c.contrib {
            assert_eq!(
                *site, k.last.site,
                "counter contribution keyed by another site"
            );
            stamps.push(k.last);
        }
    }
    if let Some(t) = &slot.tomb {
        stamps.extend(
            t.removers
                .iter()
                .map(|(s, h)| bigpeer_schema::Stamp::new(h, s)),
        );
        ctxs.push(t.ctx.clone());
    }
    if let Some(m) = &slot.map {
        stamps.extend(m.mark);
        for e in m.entries.values() {
            walk(e, stamps, ctxs);
        }
    }
}

/// Prefix closure as far as a state can show it: every stamp and every removal context in the
/// state is at or below the version vector.
pub fn check_prefix_closure(doc: &Doc) {
    let (mut stamps, mut ctxs) = (Vec::new(), Vec::new());
    walk(&doc.root, &mut stamps, &mut ctxs);
    for s in stamps {
        assert!(
            doc.vv.covers(s),
            "stamp {}@{} is above the version vector {:?}",
            s.hlc,
            s.site,
            doc.vv
        );
    }
    for c in ctxs {
        assert!(
            doc.vv.dominates(&c),
            "tombstone context {c:?} is above the version vector {:?}",
            doc.vv
        );
    }
}

/// A vector at or below `vv`: each entry kept, lowered or dropped as `choice` says.
pub fn lower(vv: &VersionVector, choice: &[u8]) -> VersionVector {
    vv.iter()
        .enumerate()
        .filter_map(
            |(i, (s, h))| match choice.get(i).copied().unwrap_or(0) % 3 {
                0 => Some((s, h)),
                1 => Some((s, Hlc(h.0 / 2))),
                _ => None,
            },
        )
        .collect()
}

/// `a` joined with `b`.
pub fn joined(a: &Doc, b: &Doc) -> Doc {
    let mut j = a.clone();
    j.join(b);
    j
}

/// Encodes then decodes a document, which must come back equal.
pub fn round_trip_doc(d: &Doc) -> Doc {
    let bytes = d.encode();
    let back = Doc::decode(&bytes).expect("an encoded document decodes");
    assert_eq!(&back, d, "document codec round trip");
    back
}

/// Encodes then decodes a delta, which must come back equal.
pub fn round_trip_delta(d: &Delta) -> Delta {
    let bytes = d.encode();
    let back = Delta::decode(&bytes).expect("an encoded delta decodes");
    assert_eq!(&back, d, "delta codec round trip");
    back
}
