//! The counter rules (`docs/crdt.md`, "Counters"): an increment is never silently lost. Every
//! increment that no RESTART and no removal had observed counts; a RESTART [WITH n] sets the
//! counter to n as of what its writer had seen (concurrent RESTARTs: the later stamp wins); a
//! removal (DELETE, UNSET, a value of another type written over the counter, a removal of an
//! ancestor) takes away what its writer had seen, and a concurrent increment brings back only
//! itself (add-wins).
//!
//! Each scenario runs with typed (DQL) and untyped writes, for COUNTER and PN_COUNTER, and merges
//! the replicas by deltas exchanged in both orders and by full-state joins, which must all give
//! the same state. A property test then checks the value at every replica after every step
//! against a model that knows which increments each RESTART and removal had observed.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use bigpeer_schema::{
    Component, CounterKind, Doc, FieldView, ObjectMode, Op, Stamp, TypeView, Value,
};
use common::{config, round_trip_delta, Replica, T0_MS};
use proptest::prelude::*;
use proptest::sample::Index;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Counter,
    Pn,
}

const KINDS: [Kind; 2] = [Kind::Counter, Kind::Pn];

impl Kind {
    fn inc(self, by: i64) -> Op {
        let (by, kind) = match self {
            Kind::Counter => (Value::Int(by), CounterKind::Counter),
            Kind::Pn => (Value::Float(by as f64), CounterKind::PnCounter),
        };
        Op::Increment {
            path: field(),
            by,
            kind,
        }
    }

    fn value(self, v: i64) -> Value {
        match self {
            Kind::Counter => Value::Int(v),
            Kind::Pn => Value::Float(v as f64),
        }
    }

    fn component(self) -> Component {
        match self {
            Kind::Counter => Component::Counter,
            Kind::Pn => Component::PnCounter,
        }
    }

    fn field_view(self) -> FieldView {
        match self {
            Kind::Counter => FieldView::Counter,
            Kind::Pn => FieldView::PnCounter,
        }
    }
}

/// The counter lives at `o.n`, so that removing `o` removes it too.
fn field() -> Vec<String> {
    vec!["o".into(), "n".into()]
}

fn restart(to: i64) -> Op {
    Op::Restart { path: field(), to }
}

fn set(path: &[&str], json: &str) -> Op {
    Op::Set {
        path: path.iter().map(|k| k.to_string()).collect(),
        value: Value::parse_json(json).expect("JSON"),
        objects: ObjectMode::Map,
    }
}

fn unset(path: &[&str]) -> Op {
    Op::Unset {
        path: path.iter().map(|k| k.to_string()).collect(),
    }
}

/// The ways of removing the counter.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Removal {
    Delete,
    /// `UNSET o.n`.
    UnsetField,
    /// `UNSET o`: a removal of an ancestor.
    UnsetParent,
    /// `SET o = {}`: the map replaced, its entries removed.
    ReplaceParent,
    /// `SET o.n = 'text'` written untyped: a type change tombstones the counter. (Typed, the
    /// register goes beside the counter, which stays.)
    TypeChange,
    /// Strict-mode `UNSET o.n` with the field declared as the counter's type.
    RemoveComponent,
}

const REMOVALS: [Removal; 6] = [
    Removal::Delete,
    Removal::UnsetField,
    Removal::UnsetParent,
    Removal::ReplaceParent,
    Removal::TypeChange,
    Removal::RemoveComponent,
];

impl Removal {
    /// The operation, or `None` when it does not remove the counter with such writes.
    fn op(self, kind: Kind, typed: bool) -> Option<Op> {
        Some(match self {
            Removal::Delete => Op::Delete,
            Removal::UnsetField => unset(&["o", "n"]),
            Removal::UnsetParent => unset(&["o"]),
            Removal::ReplaceParent => set(&["o"], "{}"),
            Removal::TypeChange if typed => return None,
            Removal::TypeChange => set(&["o", "n"], r#""text""#),
            Removal::RemoveComponent if !typed => return None,
            Removal::RemoveComponent => Op::Remove {
                path: field(),
                component: kind.component(),
            },
        })
    }
}

/// The typed view of the counter component at `o.n` (`None` when it is not live).
fn counter(doc: &Doc, kind: Kind) -> Option<Value> {
    let view = TypeView {
        fields: BTreeMap::from([(
            "o".to_owned(),
            FieldView::Map(TypeView {
                fields: BTreeMap::from([("n".to_owned(), kind.field_view())]),
            }),
        )]),
    };
    doc.view(&view)?.get_path(&field()).cloned()
}

/// What the default (non-strict) view shows at `o.n`.
fn shown(doc: &Doc) -> Option<Value> {
    doc.materialize()?.get_path(&field()).cloned()
}

fn replicas(n: usize) -> Vec<Replica> {
    (0..n).map(|i| Replica::new(i, 0)).collect()
}

fn write(r: &mut Replica, at: u64, typed: bool, ops: &[Op]) {
    r.write_with(ops, T0_MS + at, typed)
        .expect("the statement applies");
}

fn pull(to: &mut Replica, from: &Replica) {
    let delta = round_trip_delta(&from.doc.delta(&to.doc.vv));
    to.receive(&delta, T0_MS)
        .expect("a delta against the receiver's version vector applies");
}

/// Syncs every replica with every other one.
fn sync(rs: &mut [Replica]) {
    for _ in 0..2 {
        for i in 0..rs.len() {
            for j in 0..rs.len() {
                if i != j {
                    let from = rs[j].clone();
                    pull(&mut rs[i], &from);
                }
            }
        }
    }
}

/// Merges the replicas by deltas in forward and in reverse order, and by full-state joins in
/// both orders: all must give one state, which is returned.
fn merged(rs: &[Replica]) -> Doc {
    let mut results = Vec::new();
    for reverse in [false, true] {
        let mut xs: Vec<Replica> = rs.to_vec();
        if reverse {
            xs.reverse();
        }
        sync(&mut xs);
        for x in &xs[1..] {
            assert_eq!(x.doc, xs[0].doc, "replicas did not converge");
        }
        results.push(xs[0].doc.clone());
    }
    let mut fwd = Doc::new();
    let mut rev = Doc::new();
    for r in rs {
        fwd.join(&r.doc);
    }
    for r in rs.iter().rev() {
        rev.join(&r.doc);
    }
    assert_eq!(fwd, rev, "join order changed the result");
    for r in &results {
        assert_eq!(r, &fwd, "delta exchange is not the join");
    }
    fwd
}

/// Replicas 0 and 1 both hold the counter at 10 (7 from replica 0, 3 from replica 1); any
/// others hold it too.
fn counter_at_ten(n: usize, kind: Kind, typed: bool) -> Vec<Replica> {
    let mut rs = replicas(n);
    write(&mut rs[0], 0, typed, &[kind.inc(7)]);
    write(&mut rs[1], 0, typed, &[kind.inc(3)]);
    sync(&mut rs);
    for r in &rs {
        assert_eq!(counter(&r.doc, kind), Some(kind.value(10)));
    }
    rs
}

#[test]
fn typed_writes_keep_the_counter_beside_a_value_and_untyped_ones_replace_it() {
    for kind in KINDS {
        // One replica: counter 3, `SET n = 10`, +1.
        for (typed, want) in [(true, 4), (false, 1)] {
            let mut rs = replicas(1);
            write(&mut rs[0], 0, typed, &[kind.inc(3)]);
            write(&mut rs[0], 1, typed, &[set(&["o", "n"], "10")]);
            write(&mut rs[0], 2, typed, &[kind.inc(1)]);
            assert_eq!(
                shown(&rs[0].doc),
                Some(kind.value(want)),
                "{kind:?} {typed}"
            );
            assert_eq!(counter(&rs[0].doc, kind), Some(kind.value(want)));
        }
        // The same with the increment made concurrently with the SET, by another replica.
        for (typed, want) in [(true, 4), (false, 1)] {
            let mut rs = replicas(2);
            write(&mut rs[0], 0, typed, &[kind.inc(3)]);
            sync(&mut rs);
            write(&mut rs[0], 10, typed, &[set(&["o", "n"], "10")]);
            write(&mut rs[1], 20, typed, &[kind.inc(1)]);
            let doc = merged(&rs);
            assert_eq!(
                counter(&doc, kind),
                Some(kind.value(want)),
                "{kind:?} {typed}"
            );
            // The increment is the newest write at the field.
            assert_eq!(shown(&doc), Some(kind.value(want)));
        }
    }
}

#[test]
fn a_removal_concurrent_with_an_increment_keeps_only_the_unseen_increment() {
    for kind in KINDS {
        for typed in [true, false] {
            for removal in REMOVALS {
                let Some(op) = removal.op(kind, typed) else {
                    continue;
                };
                // The increment stamped after the removal, and before it.
                for (remove_at, inc_at) in [(10, 20), (20, 10)] {
                    let mut rs = counter_at_ten(2, kind, typed);
                    write(&mut rs[0], remove_at, typed, std::slice::from_ref(&op));
                    write(&mut rs[1], inc_at, typed, &[kind.inc(1)]);
                    let doc = merged(&rs);
                    let what = format!("{kind:?} typed {typed} {removal:?} at {remove_at}");
                    assert_eq!(counter(&doc, kind), Some(kind.value(1)), "{what}");
                    // Counting on afterwards. Untyped, when the text written over the counter
                    // is newer than the increment, it shows, and an increment replaces it: the
                    // counter starts from zero.
                    let hidden = removal == Removal::TypeChange && remove_at > inc_at;
                    let want = if hidden { 2 } else { 3 };
                    sync(&mut rs);
                    write(&mut rs[0], 30, typed, &[kind.inc(2)]);
                    let doc = merged(&rs);
                    assert_eq!(counter(&doc, kind), Some(kind.value(want)), "{what}");
                }
            }
        }
    }
}

#[test]
fn increments_after_a_removal_add_up_with_a_concurrent_increment() {
    for kind in KINDS {
        for typed in [true, false] {
            for removal in REMOVALS {
                let Some(op) = removal.op(kind, typed) else {
                    continue;
                };
                for (remove_at, inc_at) in [(10, 20), (20, 10)] {
                    let mut rs = counter_at_ten(2, kind, typed);
                    // Replica 0 removes the counter then counts 2 again; replica 1 concurrently
                    // counts 1.
                    write(&mut rs[0], remove_at, typed, std::slice::from_ref(&op));
                    write(&mut rs[0], remove_at + 1, typed, &[kind.inc(2)]);
                    write(&mut rs[1], inc_at, typed, &[kind.inc(1)]);
                    let doc = merged(&rs);
                    let what = format!("{kind:?} typed {typed} {removal:?} at {remove_at}");
                    assert_eq!(counter(&doc, kind), Some(kind.value(3)), "{what}");
                    assert_eq!(shown(&doc), Some(kind.value(3)), "{what}");
                }
            }
        }
    }
}

#[test]
fn a_restart_concurrent_with_an_increment_counts_it_on_top() {
    let kind = Kind::Counter;
    for typed in [true, false] {
        for (restart_at, inc_at) in [(10, 20), (20, 10)] {
            let mut rs = counter_at_ten(2, kind, typed);
            write(&mut rs[0], restart_at, typed, &[restart(100)]);
            write(&mut rs[1], inc_at, typed, &[kind.inc(1)]);
            let doc = merged(&rs);
            assert_eq!(counter(&doc, kind), Some(Value::Int(101)), "typed {typed}");
            assert_eq!(shown(&doc), Some(Value::Int(101)));
        }
    }
}

#[test]
fn concurrent_restarts_the_later_wins_and_unseen_increments_count_on_top() {
    let kind = Kind::Counter;
    for typed in [true, false] {
        let mut rs = counter_at_ten(3, kind, typed);
        write(&mut rs[0], 20, typed, &[restart(7)]);
        write(&mut rs[1], 30, typed, &[restart(9)]);
        write(&mut rs[2], 10, typed, &[kind.inc(1)]);
        write(&mut rs[2], 40, typed, &[kind.inc(1)]);
        let doc = merged(&rs);
        assert_eq!(counter(&doc, kind), Some(Value::Int(11)), "typed {typed}");
        // An increment only the earlier restart had seen counts on top of the later one, which
        // had not seen it (9 + 5).
        let mut rs = counter_at_ten(3, kind, typed);
        write(&mut rs[0], 1, typed, &[kind.inc(5)]);
        write(&mut rs[0], 20, typed, &[restart(7)]);
        write(&mut rs[1], 30, typed, &[restart(9)]);
        let doc = merged(&rs);
        assert_eq!(counter(&doc, kind), Some(Value::Int(14)), "typed {typed}");
    }
}

#[test]
fn a_restart_and_a_concurrent_removal_both_hold() {
    // A removal removes only what its writer had seen: a concurrent RESTART stays (add-wins,
    // whichever is stamped later) and shows its value plus the increments neither had seen.
    let kind = Kind::Counter;
    for typed in [true, false] {
        for removal in REMOVALS {
            let Some(op) = removal.op(kind, typed) else {
                continue;
            };
            for (restart_at, remove_at) in [(10, 20), (20, 10)] {
                let mut rs = counter_at_ten(3, kind, typed);
                // Replica 1 counts 4 and removes the counter, replica 0 concurrently restarts
                // it, replica 2 concurrently counts 5.
                write(&mut rs[1], remove_at - 1, typed, &[kind.inc(4)]);
                write(&mut rs[1], remove_at, typed, std::slice::from_ref(&op));
                write(&mut rs[0], restart_at, typed, &[restart(100)]);
                write(&mut rs[2], 15, typed, &[kind.inc(5)]);
                let doc = merged(&rs);
                let what = format!("typed {typed} {removal:?} restart at {restart_at}");
                assert_eq!(counter(&doc, kind), Some(Value::Int(105)), "{what}");
            }
        }
    }
}

#[test]
fn a_removal_that_saw_a_restart_removes_it_and_a_restart_that_saw_a_removal_stands() {
    let kind = Kind::Counter;
    for typed in [true, false] {
        for removal in REMOVALS {
            let Some(op) = removal.op(kind, typed) else {
                continue;
            };
            let what = format!("typed {typed} {removal:?}");
            // Restart, then a removal that saw it, then counting again; replica 2 counted 5
            // concurrently with both.
            let mut rs = counter_at_ten(3, kind, typed);
            write(&mut rs[0], 10, typed, &[restart(100)]);
            let r0 = rs[0].clone();
            pull(&mut rs[1], &r0);
            write(&mut rs[1], 20, typed, std::slice::from_ref(&op));
            assert_eq!(counter(&rs[1].doc, kind), None, "{what}");
            write(&mut rs[1], 30, typed, &[kind.inc(1)]);
            write(&mut rs[2], 15, typed, &[kind.inc(5)]);
            let doc = merged(&rs);
            assert_eq!(counter(&doc, kind), Some(Value::Int(6)), "{what}");

            // A removal, then a restart that saw it.
            let mut rs = counter_at_ten(3, kind, typed);
            write(&mut rs[1], 10, typed, std::slice::from_ref(&op));
            let r1 = rs[1].clone();
            pull(&mut rs[0], &r1);
            write(&mut rs[0], 20, typed, &[restart(100)]);
            write(&mut rs[2], 15, typed, &[kind.inc(5)]);
            let doc = merged(&rs);
            assert_eq!(counter(&doc, kind), Some(Value::Int(105)), "{what}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The model

/// One write the model follows.
#[derive(Debug, Clone)]
enum Event {
    Inc(i64),
    Restart {
        stamp: Stamp,
        to: i64,
        seen: BTreeSet<usize>,
    },
    /// A removal of the counter, with the events its writer had seen.
    Removal(BTreeSet<usize>),
}

/// The value the rules give, from the events a replica has seen: `None` when the counter does
/// not show.
fn model(events: &[Event], known: &BTreeSet<usize>) -> Option<i64> {
    let removals: Vec<&BTreeSet<usize>> = known
        .iter()
        .filter_map(|&i| match &events[i] {
            Event::Removal(seen) => Some(seen),
            _ => None,
        })
        .collect();
    let removed = |i: usize| removals.iter().any(|seen| seen.contains(&i));
    let restart = known
        .iter()
        .filter_map(|&i| match &events[i] {
            Event::Restart { stamp, to, seen } => Some((*stamp, i, *to, seen)),
            _ => None,
        })
        .max_by_key(|(stamp, ..)| *stamp);
    let (base, restart_alive, restart_seen) = match restart {
        Some((_, i, to, seen)) if !removed(i) => (to, true, Some(seen)),
        Some((_, _, _, seen)) => (0, false, Some(seen)),
        None => (0, false, None),
    };
    let mut value = base;
    let mut alive = restart_alive;
    for &i in known {
        if let Event::Inc(by) = events[i] {
            if !removed(i) {
                alive = true;
                if !restart_seen.is_some_and(|s| s.contains(&i)) {
                    value += by;
                }
            }
        }
    }
    alive.then_some(value)
}

#[derive(Debug, Clone)]
enum Act {
    Inc {
        r: Index,
        by: i64,
        typed: bool,
    },
    Restart {
        r: Index,
        to: i64,
        typed: bool,
    },
    Remove {
        r: Index,
        how: Index,
        typed: bool,
    },
    /// `SET o.n = 'text'` typed: a register beside the counter (untyped it is a removal).
    SetBeside {
        r: Index,
    },
    Sync {
        from: Index,
        to: Index,
        full: bool,
    },
}

fn act(kind: Kind) -> impl Strategy<Value = Act> {
    let typed = prop::bool::weighted(0.5);
    let restart_weight = if kind == Kind::Counter { 2 } else { 0 };
    prop_oneof![
        5 => (any::<Index>(), -5i64..=5, typed).prop_map(|(r, by, typed)| Act::Inc { r, by, typed }),
        restart_weight => (any::<Index>(), -10i64..=10, typed).prop_map(|(r, to, typed)| Act::Restart { r, to, typed }),
        2 => (any::<Index>(), any::<Index>(), typed).prop_map(|(r, how, typed)| Act::Remove { r, how, typed }),
        1 => any::<Index>().prop_map(|r| Act::SetBeside { r }),
        4 => (any::<Index>(), any::<Index>(), any::<bool>()).prop_map(|(from, to, full)| Act::Sync { from, to, full }),
    ]
}

/// The component that shows at `o.n` in `doc`, as a write there sees it.
fn visible_at_field(doc: &Doc) -> Option<Component> {
    let mut ctx = bigpeer_schema::VersionVector::new();
    let mut slot = &doc.root;
    for key in field() {
        if let Some(t) = &slot.tomb {
            ctx.join(&t.ctx);
        }
        slot = slot.map.as_ref()?.entries.get(&key)?;
    }
    slot.visible(&ctx).map(|(c, _)| c)
}

struct Sim {
    kind: Kind,
    rs: Vec<Replica>,
    known: Vec<BTreeSet<usize>>,
    events: Vec<Event>,
    now: u64,
}

impl Sim {
    fn new(kind: Kind, n: usize) -> Sim {
        Sim {
            kind,
            rs: replicas(n),
            known: vec![BTreeSet::new(); n],
            events: Vec::new(),
            now: T0_MS,
        }
    }

    fn record(&mut self, r: usize, e: Event) {
        self.events.push(e);
        self.known[r].insert(self.events.len() - 1);
    }

    /// Records a removal of everything replica `r` has seen.
    fn removal(&mut self, r: usize) {
        let seen = self.known[r].clone();
        self.record(r, Event::Removal(seen));
    }

    /// An untyped write of another type over a visible value of another type removes it.
    fn replaces_other_type(&self, r: usize, typed: bool) -> bool {
        !typed && visible_at_field(&self.rs[r].doc).is_some_and(|c| c != self.kind.component())
    }

    fn write(&mut self, r: usize, typed: bool, ops: &[Op]) -> Stamp {
        self.now += 1;
        let now = self.now;
        self.rs[r]
            .write_with(ops, now, typed)
            .expect("the statement applies");
        let site = self.rs[r].clock.site();
        Stamp::new(self.rs[r].doc.vv.get(site), site)
    }

    fn run(&mut self, a: &Act) {
        let n = self.rs.len();
        let kind = self.kind;
        match a {
            Act::Inc { r, by, typed } => {
                let r = r.index(n);
                if self.replaces_other_type(r, *typed) {
                    self.removal(r);
                }
                self.write(r, *typed, &[kind.inc(*by)]);
                self.record(r, Event::Inc(*by));
            }
            Act::Restart { r, to, typed } => {
                let r = r.index(n);
                if self.replaces_other_type(r, *typed) {
                    self.removal(r);
                }
                let seen = self.known[r].clone();
                let stamp = self.write(r, *typed, &[restart(*to)]);
                self.record(
                    r,
                    Event::Restart {
                        stamp,
                        to: *to,
                        seen,
                    },
                );
            }
            Act::Remove { r, how, typed } => {
                let r = r.index(n);
                let removal = REMOVALS[how.index(REMOVALS.len())];
                let Some(op) = removal.op(kind, *typed) else {
                    return;
                };
                // A typed UNSET of the field removes its visible component, which may be the
                // register beside the counter.
                let removes_counter = !(*typed && removal == Removal::UnsetField)
                    || visible_at_field(&self.rs[r].doc) == Some(kind.component());
                if removes_counter {
                    self.removal(r);
                }
                self.write(r, *typed, &[op]);
            }
            Act::SetBeside { r } => {
                let r = r.index(n);
                self.write(r, true, &[set(&["o", "n"], r#""text""#)]);
            }
            Act::Sync { from, to, full } => {
                let (f, t) = (from.index(n), to.index(n));
                if f == t {
                    return;
                }
                let src = self.rs[f].clone();
                if *full {
                    let now = self.now;
                    self.rs[t].join(&src.doc, now);
                } else {
                    pull(&mut self.rs[t], &src);
                }
                let k = self.known[f].clone();
                self.known[t].extend(k);
            }
        }
    }

    fn check(&self) {
        for (i, r) in self.rs.iter().enumerate() {
            let want = model(&self.events, &self.known[i]).map(|v| self.kind.value(v));
            assert_eq!(
                counter(&r.doc, self.kind),
                want,
                "replica {i} knows {:?} of {:?}",
                self.known[i],
                self.events
            );
        }
    }
}

fn simulate(kind: Kind, acts: &[Act]) {
    let mut sim = Sim::new(kind, 3);
    for a in acts {
        sim.run(a);
        sim.check();
    }
    let mut rs = sim.rs.clone();
    sync(&mut rs);
    sim.rs = rs;
    let all: BTreeSet<usize> = (0..sim.events.len()).collect();
    sim.known = vec![all; sim.rs.len()];
    sim.check();
}

proptest! {
    #![proptest_config(config(400))]

    /// COUNTER: increments, RESTARTs, every kind of removal and values written beside the
    /// counter, typed and untyped, at three replicas that sync now and then.
    #[test]
    fn counter_values_follow_the_model(acts in prop::collection::vec(act(Kind::Counter), 1..40)) {
        simulate(Kind::Counter, &acts);
    }

    /// PN_COUNTER: the same without RESTART.
    #[test]
    fn pn_counter_values_follow_the_model(acts in prop::collection::vec(act(Kind::Pn), 1..40)) {
        simulate(Kind::Pn, &acts);
    }
}
