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
    Clock, CounterKind, Delta, Doc, Hlc, ObjectMode, Op, SchemaError, SiteId, Value, VersionVector,
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
    prop_oneof![1 => Just(Vec::new()), 8 => path()]
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

/// Every kind of operation, with both object modes and both counter kinds.
pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (path(), value(), mode()).prop_map(|(path, value, objects)| Op::Set { path, value, objects }),
        1 => (object(), mode()).prop_map(|(o, objects)| Op::Set { path: Vec::new(), value: Value::Object(o), objects }),
        4 => (prop::collection::vec(key(), 0..=2), object(), mode())
            .prop_map(|(path, value, objects)| Op::Merge { path, value, objects }),
        3 => path_or_root().prop_map(|path| Op::Unset { path }),
        4 => increment(),
        2 => (path_or_root(), -10i64..10).prop_map(|(path, to)| Op::Restart { path, to }),
        1 => (path_or_root(), "[a-f]{2}", 0i64..100).prop_map(|(path, id, len)| Op::Attach {
            path,
            token: Value::Object(BTreeMap::from([("id".into(), Value::String(id)), ("len".into(), Value::Int(len))])),
        }),
        1 => Just(Op::Delete),
    ]
}

/// One statement: one to three operations sharing a stamp. Rarely, an invalid one (a float
/// increment of a COUNTER), which `apply` must refuse without changing anything.
pub fn statement() -> impl Strategy<Value = Vec<Op>> {
    prop_oneof![
        30 => prop::collection::vec(op(), 1..=3),
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
}

impl Replica {
    pub fn new(i: usize, skew_ms: u64) -> Replica {
        // Site ids whose order differs from the replica order.
        let site = SiteId(0x9e37_79b9_7f4a_7c15_u128.wrapping_mul(i as u128 + 1));
        Replica {
            doc: Doc::new(),
            clock: Clock::new(site),
            skew_ms,
        }
    }

    /// Runs one statement at this replica's next stamp. A refused statement leaves the state
    /// exactly as it was.
    pub fn write(&mut self, ops: &[Op], now_ms: u64) -> Result<(), SchemaError> {
        let stamp = self.clock.tick_at(now_ms + self.skew_ms);
        let before = self.doc.clone();
        let newest = before.max_stamp().is_none_or(|m| m < stamp);
        let r = self.doc.apply(ops, stamp);
        match (&r, ops) {
            (Err(_), _) => assert_eq!(self.doc, before, "a refused statement changed the document"),
            // A write stamped after everything in the state reads back as written.
            (Ok(()), [op]) if newest => check_read_your_write(&self.doc, op),
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

/// Checks that `doc`, just written by `op` at a stamp newer than everything it held, shows the
/// effect of `op`.
pub fn check_read_your_write(doc: &Doc, op: &Op) {
    let json = doc.materialize();
    let at = |path: &[String]| json.as_ref().and_then(|j| j.get_path(path)).cloned();
    match op {
        Op::Set { path, value, .. } if path.is_empty() => {
            if let Value::Object(_) = value {
                assert_eq!(json.as_ref(), Some(value), "SET of the whole document");
            }
        }
        Op::Set { path, value, .. } => assert_eq!(at(path).as_ref(), Some(value), "SET {path:?}"),
        Op::Merge {
            path,
            value,
            objects,
        } => {
            let Some(Value::Object(got)) = at(path) else {
                panic!("MERGE {path:?}: no object there: {json:?}");
            };
            for (k, v) in value {
                let g = got
                    .get(k)
                    .unwrap_or_else(|| panic!("MERGE {path:?}: key {k} missing"));
                match (v, objects) {
                    (Value::Object(_), ObjectMode::Map) => {
                        assert!(contains(g, v), "MERGE {path:?}.{k}")
                    }
                    _ => assert_eq!(g, v, "MERGE {path:?}.{k}"),
                }
            }
        }
        Op::Unset { path } => assert_eq!(at(path), None, "UNSET {path:?}"),
        Op::Delete => assert_eq!(json, None, "DELETE"),
        Op::Increment { path, .. } | Op::Restart { path, .. } | Op::Attach { path, .. }
            if path.is_empty() =>
        {
            // The root holds a counter or a token now: not a document.
            assert_eq!(json, None, "{op:?}");
        }
        Op::Increment { path, kind, .. } => {
            let got = at(path);
            match kind {
                CounterKind::Counter => assert!(
                    matches!(got, Some(Value::Int(_))),
                    "INCREMENT {path:?}: {got:?}"
                ),
                CounterKind::PnCounter => assert!(
                    matches!(got, Some(Value::Float(_))),
                    "PN_INCREMENT {path:?}: {got:?}"
                ),
            }
        }
        Op::Restart { path, to } => assert_eq!(at(path), Some(Value::Int(*to)), "RESTART {path:?}"),
        Op::Attach { path, token } => assert_eq!(at(path).as_ref(), Some(token), "ATTACH {path:?}"),
    }
}

/// True when `big` holds every key of `small`, recursively, with equal non-object values.
fn contains(big: &Value, small: &Value) -> bool {
    match (big, small) {
        (Value::Object(b), Value::Object(s)) => s
            .iter()
            .all(|(k, v)| b.get(k).is_some_and(|bv| contains(bv, v))),
        _ => big == small,
    }
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
