//! Unit tests of the merge rules, one scenario each. Replicas are [`Peer`]s: a document and the
//! clock of a site, which observes what it receives (the HLC rule), so that a write made after
//! seeing another one is stamped after it.

use super::*;
use crate::error::SchemaError;
use crate::hlc::{Clock, Hlc, SiteId};

/// A wall clock in milliseconds (2023-11-14), plus small offsets to order concurrent writes.
const MS: u64 = 1_700_000_000_000;

fn v(json: &str) -> Value {
    Value::parse_json(json).expect("valid JSON")
}

fn path(p: &str) -> Vec<String> {
    p.split('.')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn obj(json: &str) -> BTreeMap<String, Value> {
    v(json).as_object().expect("an object").clone()
}

fn set(p: &str, json: &str) -> Op {
    Op::Set {
        path: path(p),
        value: v(json),
        objects: ObjectMode::Map,
    }
}

fn set_reg(p: &str, json: &str) -> Op {
    Op::Set {
        path: path(p),
        value: v(json),
        objects: ObjectMode::Register,
    }
}

fn merge(p: &str, json: &str) -> Op {
    Op::Merge {
        path: path(p),
        value: obj(json),
        objects: ObjectMode::Map,
    }
}

fn merge_reg(p: &str, json: &str) -> Op {
    Op::Merge {
        path: path(p),
        value: obj(json),
        objects: ObjectMode::Register,
    }
}

fn unset(p: &str) -> Op {
    Op::Unset { path: path(p) }
}

fn inc(p: &str, by: i64) -> Op {
    Op::Increment {
        path: path(p),
        by: Value::Int(by),
        kind: CounterKind::Counter,
    }
}

fn pn_inc(p: &str, by: f64) -> Op {
    Op::Increment {
        path: path(p),
        by: Value::Float(by),
        kind: CounterKind::PnCounter,
    }
}

fn restart(p: &str, to: i64) -> Op {
    Op::Restart { path: path(p), to }
}

fn attach(p: &str, id: &str) -> Op {
    Op::Attach {
        path: path(p),
        token: v(&format!(r#"{{"id":"{id}","len":3}}"#)),
    }
}

/// One replica: a document and its site's clock.
struct Peer {
    doc: Doc,
    clock: Clock,
}

impl Peer {
    fn new(site: u128) -> Peer {
        Peer {
            doc: Doc::new(),
            clock: Clock::new(SiteId(site)),
        }
    }

    /// Runs one statement with the wall clock at `MS + offset_ms`.
    fn write_at(&mut self, offset_ms: u64, ops: &[Op]) {
        let stamp = self.clock.tick_at(MS + offset_ms);
        self.doc.apply(ops, stamp).expect("statement applies");
    }

    fn write(&mut self, ops: &[Op]) {
        self.write_at(0, ops);
    }

    /// Receives what `other` has that this replica lacks, as a delta, and observes its clock.
    fn pull(&mut self, other: &Peer) {
        let delta = other.doc.delta(&self.doc.vv);
        let delta = Delta::decode(&delta.encode()).expect("delta round trip");
        self.doc.apply_delta(&delta).expect("delta applies");
        self.clock.observe_at(delta.state.vv.max_hlc(), MS);
    }

    fn json(&self) -> Option<Value> {
        self.doc.materialize()
    }

    fn get(&self, p: &str) -> Option<Value> {
        self.json().and_then(|d| d.get_path(&path(p)).cloned())
    }
}

/// Syncs two replicas both ways and checks they converged.
fn sync(a: &mut Peer, b: &mut Peer) {
    a.pull(b);
    b.pull(a);
    assert_eq!(a.doc, b.doc, "replicas did not converge");
    assert_eq!(a.json(), b.json());
}

/// Syncs the replicas in every order (full-state joins) and checks they all end equal, then
/// leaves every replica at that state.
fn sync_all(peers: &mut [&mut Peer]) {
    let mut all = Doc::new();
    for p in peers.iter() {
        all.join(&p.doc);
    }
    // The same result whatever the join order.
    let mut rev = Doc::new();
    for p in peers.iter().rev() {
        rev.join(&p.doc);
    }
    assert_eq!(all, rev, "join order changed the result");
    for p in peers.iter_mut() {
        p.doc.join(&all);
        p.clock.observe_at(all.vv.max_hlc(), MS);
        assert_eq!(p.doc, all);
    }
}

// ---------------------------------------------------------------------------------------------
// Maps and registers

#[test]
fn concurrent_adds_of_different_keys_both_survive() {
    let (mut a, mut b) = (Peer::new(1), Peer::new(2));
    a.write(&[merge("", r#"{"o":{"k":0}}"#)]);
    b.pull(&a);
    a.write(&[set("x", "1"), set("o.p", "2")]);
    b.write(&[set("y", r#""two""#), set("o.q", "3")]);
    sync(&mut a, &mut b);
    assert_eq!(
        a.json(),
        Some(v(r#"{"o":{"k":0,"p":2,"q":3},"x":1,"y":"two"}"#))
    );
}

#[test]
fn concurrent_map_creation_at_the_same_key_merges() {
    // Both sites create `o` as a map without having seen the other: an add-wins map, so the
    // keys of both survive.
    let (mut a, mut b) = (Peer::new(1), Peer::new(2));
    a.write(&[set("o", r#"{"x":1}"#)]);
    b.write(&[set("o.y", "2")]);
    sync(&mut a, &mut b);
    assert_eq!(a.get("o"), Some(v(r#"{"x":1,"y":2}"#)));
}

#[test]
fn later_register_wins() {
    let (mut a, mut b) = (Peer::new(1), Peer::new(2));
    a.write_at(20, &[set("r", r#""a""#)]);
    b.write_at(10, &[set("r", r#""b""#)]);
    sync(&mut a, &mut b);
    assert_eq!(a.get("r"), Some(v(r#""a""#)));

    // A write made after seeing another wins even when its wall clock is behind: the clock
    // observed the newer stamp.
    b.write_at(0, &[set("r", r#""b2""#)]);
    a.pull(&b);
    assert_eq!(a.get("r"), Some(v(r#""b2""#)));
}

#[test]
fn register_ties_break_by_site_whatever_the_order() {
    for (first, second) in [(1u128, 2u128), (2, 1)] {
        let (mut p, mut q) = (Peer::new(first), Peer::new(second));
        p.write_at(5, &[set("r", &format!("{first}"))]);
        q.write_at(5, &[set("r", &format!("{second}"))]);
        sync(&mut p, &mut q);
        // Same hlc: the larger site id wins.
        assert_eq!(p.get("r"), Some(Value::Int(2)));
    }
}

#[test]
fn arrays_are_registers() {
    let (mut a, mut b) = (Peer::new(1), Peer::new(2));
    a.write(&[set("l", "[1,2,3]")]);
    b.pull(&a);
    a.write_at(1, &[set("l", "[1,2,3,4]")]);
    b.write_at(2, &[set("l", "[0,2,3]")]);
    sync(&mut a, &mut b);
    assert_eq!(a.get("l"), Some(v("[0,2,3]")));
}

#[test]
fn nested_merge_sets_given_keys_and_keeps_others() {
    let mut a = Peer::new(1);
    a.write(&[merge("", r#"{"o":{"x":1,"y":2}}"#)]);
    a.write(&[merge("", r#"{"o":{"x":5}}"#)]);
    assert_eq!(a.get("o"), Some(v(r#"{"x":5,"y":2}"#)));
    a.write(&[merge("o", r#"{"z":{"deep":true}}"#)]);
    assert_eq!(a.get("o"), Some(v(r#"{"x":5,"y":2,"z":{"deep":true}}"#)));
}

#[test]
fn set_in_map_mode_replaces_what_the_writer_saw_and_keeps_concurrent_additions() {
    let (mut a, mut b) = (Peer::new(1), Peer::new(2));
    a.write(&[set("o", r#"{"a":1,"b":2}"#)]);
    b.pull(&a);
    a.write_at(10, &[set("o", r#"{"x":1}"#)]);
    b.write_at(5, &[set("o.c", "3")]);
    sync(&mut a, &mut b);
    assert_eq!(a.get("o"), Some(v(r#"{"c":3,"x":1}"#)));
}

#[test]
fn set_in_map_mode_keeps_a_concurrent_update_of_a_replaced_key() {
    // Add-wins: `b` updated `o.a`, which `a`'s replacement of `o` had not seen.
    let (mut a, mut b) = (Peer::new(1), Peer::new(2));
    a.write(&[set("o", r#"{"a":1,"b":2}"#)]);
    b.pull(&a);
    a.write_at(10, &[set("o", r#"{"x":1}"#)]);
    b.write_at(5, &[set("o.a", "9")]);
    sync(&mut a, &mut b);
    assert_eq!(a.get("o"), Some(v(r#"{"a":9,"x":1}"#)));
}

#[test]
fn register_mode_replaces_objects_whole() {
    let (mut a, mut b) = (Peer::new(1), Peer::new(2));
    a.write(&[set_reg("o", r#"{"a":1,"b":2}"#)]);
    b.pull(&a);
    a.write_at(10, &[set_reg("o", r#"{"x":1}"#)]);
    b.write_at(5, &[set_reg("o", r#"{"y":2}"#)]);
    sync(&mut a, &mut b);
    // No key-wise mixing: the newer object, whole.
    assert_eq!(a.get("o"), Some(v(r#"{"x":1}"#)));

    // A register-mode merge replaces a nested map whole as well.
    a.write(&[set("m", r#"{"p":1,"q":2}"#)]);
    a.write(&[merge_reg("", r#"{"m":{"r":3}}"#)]);
    assert_eq!(a.get("m"), Some(v(r#"{"r":3}"#)));
}

#[test]
fn writing_inside_a_register_object_turns_it_into_a_map() {
    let mut a = Peer::new(1);
    a.write(&[set_reg("o", r#"{"a":1,"b":{"c":2}}"#)]);
    a.write(&[set("o.d", "4")]);
    assert_eq!(a.get("o"), Some(v(r#"{"a":1,"b":{"c":2},"d":4}"#)));
    a.write(&[set("o.b.e", "5")]);
    assert_eq!(a.get("o.b"), Some(v(r#"{"c":2,"e":5}"#)));
}

#[test]
fn unset_inside_a_register_object_rewrites_the_register() {
    // Regression: UNSET of a key inside an object held by a register found no slot there and
    // silently did nothing (or tombstoned a hidden old map at that path).
    let (mut a, mut b) = (Peer::new(1), Peer::new(2));
    a.write(&[set("o", r#"{"x":1}"#)]);
    a.write(&[set_reg("o", r#"{"x":2,"y":{"z":3,"w":4}}"#)]);
    a.write(&[unset("o.x"), unset("o.y.z")]);
    assert_eq!(a.get("o"), Some(v(r#"{"y":{"w":4}}"#)));
    // Still a register: replaced whole, so a concurrent older whole write loses to it.
    b.pull(&a);
    a.write_at(10, &[unset("o.y")]);
    b.write_at(5, &[set_reg("o", r#"{"q":1}"#)]);
    sync(&mut a, &mut b);
    assert_eq!(a.get("o"), Some(v("{}")));
}

#[test]
fn writing_at_a_key_of_a_register_object_shows_the_written_value() {
    // Regression: turning a register object into a map turned its nested objects into maps
    // stamped like the write itself, and at equal stamps the map was shown, not the value.
    let mut a = Peer::new(1);
    a.write(&[set_reg("o", r#"{"k":{"x":1},"l":{"y":2},"m":{},"n":{}}"#)]);
    a.write(&[set("o.k", "null")]);
    assert_eq!(a.get("o.k"), Some(Value::Null));
    a.write(&[Op::Merge {
        path: path("o"),
        value: obj(r#"{"l":{"z":3}}"#),
        objects: ObjectMode::Register,
    }]);
    assert_eq!(a.get("o.l"), Some(v(r#"{"z":3}"#)));
    a.write(&[inc("o.m", 2)]);
    assert_eq!(a.get("o.m"), Some(Value::Int(2)));
    a.write(&[attach("o.n", "abcd")]);
    assert_eq!(a.get("o.n.id"), Some(v(r#""abcd""#)));
    // Merging a map into a nested register object keeps its keys.
    a.write(&[set_reg("p", r#"{"q":{"x":1}}"#)]);
    a.write(&[merge("p", r#"{"q":{"y":2}}"#)]);
    assert_eq!(a.get("p"), Some(v(r#"{"q":{"x":1,"y":2}}"#)));
}

#[test]
fn empty_objects_stay() {
    let mut a = Peer::new(1);
    a.write(&[set("o", "{}"), merge("", r#"{"p":{}}"#)]);
    assert_eq!(a.json(), Some(v(r#"{"o":{},"p":{}}"#)));
}

// ---------------------------------------------------------------------------------------------
// Removal

#[test]
fn unset_loses_to_a_concurrent_set() {
    let (mut a, mut b) = (Peer::new(1), Peer::new(2));
    a.write(&[set("f", "1"), set("g", "1")]);
    b.pull(&a);
    // `a` removes, `b` concurrently writes, even with an older wall clock: add-wins.
    a.write_at(10, &[unset("f"), unset("g")]);
    b.write_at(5, &[set("f", "2")]);
    sync(&mut a, &mut b);
    assert_eq!(a.json(), Some(v(r#"{"f":2}"#)));
}

#[test]
fn unset_removes_every_write_the_remover_saw() {
    let (mut a, mut b, mut c) = (Peer::new(1), Peer::new(2), Peer::new(3));
    a.write(&[set("f", "1")]);
    b.pull(&a);
    b.write(&[set("f", "2")]);
    // `c` saw both writes (the older one too, through `a`), then removes the field.
    c.pull(&a);
    c.pull(&b);
    c.write(&[unset("f")]);
    // `a` still holds only the older write; after the removal arrives it must not come back.
    a.pull(&c);
    assert_eq!(a.get("f"), None);
    sync_all(&mut [&mut a, &mut b, &mut c]);
    assert_eq!(a.json(), Some(v("{}")));
}

#[test]
fn unset_of_a_map_keeps_only_concurrent_additions() {
    let (mut a, mut b) = (Peer::new(1), Peer::new(2));
    a.write(&[set("o", r#"{"x":1,"y":{"z":2}}"#)]);
    b.pull(&a);
    a.write_at(10, &[unset("o")]);
    b.write_at(5, &[set("o.w", "3"), set("o.y.n", "4")]);
    sync(&mut a, &mut b);
    assert_eq!(a.get("o"), Some(v(r#"{"w":3,"y":{"n":4}}"#)));
}

#[test]
fn unset_of_a_missing_path_is_a_no_op() {
    let mut a = Peer::new(1);
    a.write(&[set("f", "1")]);
    let before = a.json();
    a.write(&[unset("nope.deeper")]);
    assert_eq!(a.json(), before);
}

#[test]
fn delete_then_recreate_starts_with_none_of_the_old_fields() {
    let (mut a, mut b) = (Peer::new(1), Peer::new(2));
    a.write(&[
        merge("", r#"{"a":1,"o":{"x":1}}"#),
        inc("n", 5),
        pn_inc("p", 1.5),
        attach("f", "aa"),
    ]);
    b.pull(&a);
    b.write(&[Op::Delete]);
    assert!(b.doc.is_deleted());
    assert_eq!(b.json(), None);
    b.write(&[
        merge("", r#"{"b":2,"o":{"y":2}}"#),
        inc("n", 1),
        pn_inc("p", 0.25),
    ]);
    assert_eq!(b.json(), Some(v(r#"{"b":2,"n":1,"o":{"y":2},"p":0.25}"#)));
    sync(&mut a, &mut b);
    assert_eq!(a.json(), Some(v(r#"{"b":2,"n":1,"o":{"y":2},"p":0.25}"#)));
}

#[test]
fn a_concurrent_update_resurrects_only_what_the_deleter_had_not_seen() {
    let (mut a, mut b) = (Peer::new(1), Peer::new(2));
    a.write(&[merge("", r#"{"a":1,"b":2,"o":{"x":1}}"#)]);
    b.pull(&a);
    a.write_at(10, &[Op::Delete]);
    b.write_at(5, &[merge("", r#"{"c":3,"o":{"y":2}}"#)]);
    sync(&mut a, &mut b);
    assert_eq!(a.json(), Some(v(r#"{"c":3,"o":{"y":2}}"#)));
}

#[test]
fn a_map_kept_alive_only_by_a_concurrent_write_goes_when_that_write_is_removed() {
    // Documented consequence of a map's mark being last-writer-wins (like a register): `b`
    // created the root map and `x` concurrently with `a`, whose newer marks the delete then
    // removed. After the sync the document shows only `b`'s write; removing it leaves no
    // surviving stamp, so the document reads as deleted, not as `{}`.
    let (mut a, mut b) = (Peer::new(1), Peer::new(2));
    a.write_at(20, &[set("x.y", "1")]);
    a.write_at(21, &[Op::Delete]);
    b.write_at(10, &[set("x.z", "2")]);
    sync(&mut a, &mut b);
    assert_eq!(b.json(), Some(v(r#"{"x":{"z":2}}"#)));
    b.write(&[unset("x.z")]);
    assert_eq!(b.json(), None);
    // Without the concurrent delete, the maps stay.
    let mut c = Peer::new(3);
    c.write(&[set("x.z", "2")]);
    c.write(&[unset("x.z")]);
    assert_eq!(c.json(), Some(v(r#"{"x":{}}"#)));
}

#[test]
fn removing_what_kept_a_map_in_front_shows_an_older_concurrent_value() {
    // The same consequence with a type conflict: `b` replaced `m` by `null` (removing the map
    // mark it saw) while `a` concurrently and later added `m.y`. The map shows through `m.y`;
    // once `m.y` is removed the newest surviving component of `m` is `b`'s null.
    let (mut a, mut b) = (Peer::new(1), Peer::new(2));
    a.write_at(5, &[set("m.x", "1")]);
    b.pull(&a);
    b.write_at(10, &[set("m", "null")]);
    a.write_at(12, &[merge("m", r#"{"y":{}}"#)]);
    sync(&mut a, &mut b);
    assert_eq!(a.get("m"), Some(v(r#"{"y":{}}"#)));
    a.write(&[unset("m.y")]);
    sync(&mut a, &mut b);
    assert_eq!(a.get("m"), Some(Value::Null));
}

#[test]
fn a_delete_that_saw_everything_wins() {
    let (mut a, mut b) = (Peer::new(1), Peer::new(2));
    a.write(&[merge("", r#"{"a":1}"#)]);
    b.pull(&a);
    b.write(&[set("b", "2")]);
    a.pull(&b);
    a.write(&[Op::Delete]);
    sync(&mut a, &mut b);
    assert!(a.doc.is_deleted() && b.doc.is_deleted());
}

// ---------------------------------------------------------------------------------------------
// Counters

#[test]
fn counters_from_two_sites_add() {
    let (mut a, mut b) = (Peer::new(1), Peer::new(2));
    // Concurrent first increments of a missing field both count.
    a.write(&[inc("n", 5)]);
    b.write(&[inc("n", 3)]);
    sync(&mut a, &mut b);
    assert_eq!(a.get("n"), Some(Value::Int(8)));
    a.write(&[inc("n", -10)]);
    b.write(&[inc("n", 4)]);
    b.write(&[inc("n", 4)]);
    sync(&mut a, &mut b);
    assert_eq!(a.get("n"), Some(Value::Int(6)));
}

#[test]
fn pn_counters_from_two_sites_add() {
    let (mut a, mut b) = (Peer::new(1), Peer::new(2));
    a.write(&[pn_inc("p", 1.5)]);
    b.write(&[pn_inc("p", 2.25)]);
    b.write(&[Op::Increment {
        path: path("p"),
        by: Value::Int(-1),
        kind: CounterKind::PnCounter,
    }]);
    sync(&mut a, &mut b);
    assert_eq!(a.get("p"), Some(Value::Float(2.75)));
}

#[test]
fn counters_join_by_max_so_redelivery_does_not_double_count() {
    let (mut a, mut b) = (Peer::new(1), Peer::new(2));
    a.write(&[inc("n", 2)]);
    let early = a.doc.clone();
    a.write(&[inc("n", 3)]);
    b.doc.join(&a.doc);
    b.doc.join(&early);
    b.doc.join(&a.doc);
    assert_eq!(b.get("n"), Some(Value::Int(5)));
}

#[test]
fn restart_sets_what_the_restarter_saw_and_a_concurrent_increment_counts_on_top() {
    let (mut a, mut b, mut c) = (Peer::new(1), Peer::new(2), Peer::new(3));
    a.write(&[inc("n", 10)]);
    b.pull(&a);
    c.pull(&a);
    // Increments concurrent with a RESTART are not lost, a later one or an earlier one.
    a.write_at(20, &[restart("n", 100)]);
    b.write_at(30, &[inc("n", 5)]);
    c.write_at(10, &[inc("n", 1)]);
    sync_all(&mut [&mut a, &mut b, &mut c]);
    assert_eq!(a.get("n"), Some(Value::Int(106)));
    // Increments after seeing the restart count from it.
    b.write(&[inc("n", 1)]);
    a.write(&[inc("n", 2)]);
    sync(&mut a, &mut b);
    assert_eq!(a.get("n"), Some(Value::Int(109)));
    // Two concurrent restarts: the later one wins, and what either had seen is gone.
    a.write_at(50, &[restart("n", 7)]);
    b.write_at(60, &[restart("n", 9)]);
    sync(&mut a, &mut b);
    assert_eq!(a.get("n"), Some(Value::Int(9)));
}

#[test]
fn restart_on_a_missing_field_creates_the_counter() {
    let mut a = Peer::new(1);
    a.write(&[restart("n", -4)]);
    a.write(&[inc("n", 1)]);
    assert_eq!(a.get("n"), Some(Value::Int(-3)));
}

#[test]
fn pn_increment_of_a_plain_number_starts_a_counter_from_zero_and_set_makes_it_plain_again() {
    let (mut a, mut b) = (Peer::new(1), Peer::new(2));
    a.write(&[set("n", "7")]);
    a.write(&[pn_inc("n", 2.0)]);
    assert_eq!(a.get("n"), Some(Value::Float(2.0)));
    b.pull(&a);
    b.write(&[pn_inc("n", 1.0)]);
    sync(&mut a, &mut b);
    assert_eq!(a.get("n"), Some(Value::Float(3.0)));

    a.write(&[set("n", "3")]);
    sync(&mut a, &mut b);
    assert_eq!(b.get("n"), Some(Value::Int(3)));
    // Counting again starts from zero; the old counter's increments do not come back.
    b.write(&[pn_inc("n", 0.5)]);
    sync(&mut a, &mut b);
    assert_eq!(a.get("n"), Some(Value::Float(0.5)));
}

#[test]
fn increment_of_a_plain_number_starts_a_counter_from_zero() {
    let mut a = Peer::new(1);
    a.write(&[set("n", "7")]);
    a.write(&[inc("n", 2)]);
    assert_eq!(a.get("n"), Some(Value::Int(2)));
    a.write(&[set("n", r#""text""#)]);
    a.write(&[inc("n", 1)]);
    assert_eq!(a.get("n"), Some(Value::Int(1)));
}

#[test]
fn unset_counter_restarts_from_zero() {
    let (mut a, mut b) = (Peer::new(1), Peer::new(2));
    a.write(&[inc("n", 5)]);
    b.pull(&a);
    b.write(&[inc("n", 2)]);
    a.pull(&b);
    a.write(&[unset("n")]);
    sync(&mut a, &mut b);
    assert_eq!(a.get("n"), None);
    b.write(&[inc("n", 1)]);
    sync(&mut a, &mut b);
    assert_eq!(a.get("n"), Some(Value::Int(1)));
}

#[test]
fn concurrent_first_increments_after_a_delete_both_count() {
    // Regression: both sites saw the delete and increment the removed counter concurrently.
    // Each used to start a new epoch at its own stamp, so only the later increment survived.
    let (mut a, mut b) = (Peer::new(1), Peer::new(2));
    a.write(&[inc("n", 5), pn_inc("p", 5.0)]);
    b.pull(&a);
    b.write(&[Op::Delete]);
    a.pull(&b);
    a.write_at(10, &[inc("n", 1), pn_inc("p", 1.0)]);
    b.write_at(20, &[inc("n", 2), pn_inc("p", 2.0)]);
    sync(&mut a, &mut b);
    assert_eq!(a.get("n"), Some(Value::Int(3)));
    assert_eq!(a.get("p"), Some(Value::Float(3.0)));

    // The same after an UNSET of the field.
    a.write(&[unset("n")]);
    b.pull(&a);
    a.write_at(40, &[inc("n", 4)]);
    b.write_at(30, &[inc("n", 8)]);
    sync(&mut a, &mut b);
    assert_eq!(a.get("n"), Some(Value::Int(12)));
}

#[test]
fn an_increment_concurrent_with_a_delete_brings_back_only_itself() {
    // Add-wins: the increment was not seen by the deleter, so the counter survives, with the
    // increments the deleter had not seen only (the deleter removed the 5 it saw).
    let (mut a, mut b) = (Peer::new(1), Peer::new(2));
    a.write(&[inc("n", 5), set("s", "1")]);
    b.pull(&a);
    a.write_at(10, &[Op::Delete]);
    b.write_at(5, &[inc("n", 1)]);
    sync(&mut a, &mut b);
    assert_eq!(a.json(), Some(v(r#"{"n":1}"#)));
}

#[test]
fn counter_saturates_instead_of_overflowing() {
    let mut a = Peer::new(1);
    a.write(&[inc("n", i64::MAX)]);
    a.write(&[inc("n", i64::MAX)]);
    a.write(&[inc("m", i64::MIN)]);
    a.write(&[inc("m", -1)]);
    assert_eq!(a.get("n"), Some(Value::Int(i64::MAX)));
    // Decrements are kept as a positive total, so the value bottoms out at `-i64::MAX`.
    assert_eq!(a.get("m"), Some(Value::Int(-i64::MAX)));
    assert_eq!(Doc::decode(&a.doc.encode()).as_ref(), Ok(&a.doc));
}

#[test]
fn pn_counter_overflow_stays_finite_and_encodable() {
    // Regression: a PN_COUNTER's per-site totals are float sums, which overflowed to infinity;
    // the encoder wrote it and the decoder (rightly) refused it, so the document could not be
    // read back.
    let mut a = Peer::new(1);
    a.write(&[pn_inc("p", f64::MAX)]);
    a.write(&[pn_inc("p", f64::MAX)]);
    a.write(&[pn_inc("q", -f64::MAX)]);
    a.write(&[pn_inc("q", -f64::MAX)]);
    assert_eq!(a.get("p"), Some(Value::Float(f64::MAX)));
    assert_eq!(a.get("q"), Some(Value::Float(-f64::MAX)));
    let back = Doc::decode(&a.doc.encode()).expect("decodes");
    assert_eq!(back, a.doc);
}

// ---------------------------------------------------------------------------------------------
// Type conflicts and attachments

#[test]
fn type_conflicts_converge_and_show_the_newer() {
    for (reg_at, map_at, want) in [(10, 20, r#"{"b":1}"#), (20, 10, "5")] {
        let (mut a, mut b) = (Peer::new(1), Peer::new(2));
        a.write_at(reg_at, &[set("x", "5")]);
        b.write_at(map_at, &[set("x.b", "1")]);
        sync(&mut a, &mut b);
        assert_eq!(a.get("x"), Some(v(want)));
    }
}

#[test]
fn a_type_change_hides_the_old_value_for_good() {
    let (mut a, mut b) = (Peer::new(1), Peer::new(2));
    a.write(&[set("x", r#"{"b":1}"#)]);
    b.pull(&a);
    b.write(&[set("x", "5")]);
    a.pull(&b);
    a.write(&[set("x", r#""str""#)]);
    sync(&mut a, &mut b);
    assert_eq!(a.get("x"), Some(v(r#""str""#)));
    // Changing it back to a map does not bring the old keys back.
    b.write(&[set("x.c", "2")]);
    sync(&mut a, &mut b);
    assert_eq!(a.get("x"), Some(v(r#"{"c":2}"#)));
    // Nor does a counter over it.
    a.write(&[inc("x", 1)]);
    sync(&mut a, &mut b);
    assert_eq!(a.get("x"), Some(Value::Int(1)));
}

#[test]
fn writing_below_a_value_does_not_revive_a_hidden_map() {
    // `x` is a map on one side and, newer, a number on the other. A write below `x` by a site
    // that saw both turns `x` into a map again, holding only the new key: the hidden older map
    // it replaced stays removed.
    let (mut a, mut b) = (Peer::new(1), Peer::new(2));
    a.write_at(10, &[set("x.b", "1")]);
    b.write_at(20, &[set("x", "5")]);
    sync(&mut a, &mut b);
    assert_eq!(a.get("x"), Some(Value::Int(5)));
    a.write_at(30, &[set("x.c", "2")]);
    sync(&mut a, &mut b);
    assert_eq!(a.get("x"), Some(v(r#"{"c":2}"#)));
}

#[test]
fn counter_against_register_shows_the_newer() {
    let (mut a, mut b) = (Peer::new(1), Peer::new(2));
    a.write_at(10, &[inc("x", 3)]);
    b.write_at(20, &[set("x", r#""s""#)]);
    sync(&mut a, &mut b);
    assert_eq!(a.get("x"), Some(v(r#""s""#)));
    // A later increment elsewhere, concurrent with nothing, brings the counter to the front.
    a.write_at(30, &[inc("x", 1)]);
    sync(&mut a, &mut b);
    assert_eq!(a.get("x"), Some(Value::Int(1)));
}

#[test]
fn attachment_tokens_are_last_writer_wins() {
    let (mut a, mut b) = (Peer::new(1), Peer::new(2));
    a.write_at(10, &[attach("f", "aaaa")]);
    b.write_at(20, &[attach("f", "bbbb")]);
    sync(&mut a, &mut b);
    assert_eq!(a.get("f.id"), Some(v(r#""bbbb""#)));
    a.write(&[unset("f")]);
    sync(&mut a, &mut b);
    assert_eq!(a.get("f"), None);
}

// ---------------------------------------------------------------------------------------------
// Writes that must be refused

#[test]
fn apply_refuses_a_stale_stamp_and_leaves_the_doc_unchanged() {
    let mut a = Doc::new();
    let site = SiteId(1);
    let stamp = Stamp::new(Hlc::new(MS, 5), site);
    a.apply(&[set("f", "1")], stamp).expect("applies");
    let before = a.clone();
    for stale in [
        stamp,
        Stamp::new(Hlc::new(MS, 4), site),
        Stamp::new(Hlc::new(MS - 1, 9), site),
    ] {
        assert!(matches!(
            a.apply(&[set("f", "2"), Op::Delete], stale),
            Err(SchemaError::TypeMismatch(_))
        ));
        assert_eq!(a, before);
    }
    // Another site's older stamp is fine: it is that site's first event.
    a.apply(&[set("g", "2")], Stamp::new(Hlc::new(MS, 1), SiteId(2)))
        .expect("applies");
}

#[test]
fn increment_with_a_float_on_a_counter_is_an_error() {
    let mut a = Peer::new(1);
    a.write(&[inc("n", 1)]);
    let before = a.doc.clone();
    let stamp = a.clock.tick_at(MS);
    let bad = Op::Increment {
        path: path("n"),
        by: Value::Float(1.5),
        kind: CounterKind::Counter,
    };
    // The whole statement is refused, including its valid first operation.
    assert!(matches!(
        a.doc.apply(&[set("x", "1"), bad], stamp),
        Err(SchemaError::TypeMismatch(_))
    ));
    assert_eq!(a.doc, before);
    let text = Op::Increment {
        path: path("n"),
        by: v(r#""1""#),
        kind: CounterKind::PnCounter,
    };
    assert!(matches!(
        a.doc.apply(&[text], stamp),
        Err(SchemaError::TypeMismatch(_))
    ));
    assert_eq!(a.doc, before);
}

#[test]
fn the_root_only_takes_objects() {
    // Regression: an INCREMENT, RESTART or attachment with an empty path made the root a
    // counter or a token, which hid every field (the document read as deleted); a scalar SET of
    // the root was silently ignored.
    let mut a = Peer::new(1);
    a.write(&[set("f", "1")]);
    let before = a.doc.clone();
    let stamp = a.clock.tick_at(MS);
    for op in [
        inc("", 1),
        pn_inc("", 1.0),
        restart("", 1),
        attach("", "abcd"),
        set("", "5"),
        set_reg("", "[1]"),
    ] {
        assert!(
            matches!(
                a.doc.apply(&[set("g", "2"), op.clone()], stamp),
                Err(SchemaError::TypeMismatch(_))
            ),
            "{op:?}"
        );
        assert_eq!(a.doc, before);
    }
    // Objects are fine at the root.
    a.doc
        .apply(&[set("", r#"{"g":2}"#)], stamp)
        .expect("applies");
    assert_eq!(a.json(), Some(v(r#"{"g":2}"#)));
}

#[test]
fn non_finite_floats_are_refused() {
    let mut a = Peer::new(1);
    let stamp = a.clock.tick_at(MS);
    for op in [
        Op::Set {
            path: path("f"),
            value: Value::Float(f64::NAN),
            objects: ObjectMode::Map,
        },
        Op::Merge {
            path: vec![],
            value: BTreeMap::from([(
                "f".to_owned(),
                Value::Array(vec![Value::Float(f64::INFINITY)]),
            )]),
            objects: ObjectMode::Map,
        },
        Op::Increment {
            path: path("p"),
            by: Value::Float(f64::NEG_INFINITY),
            kind: CounterKind::PnCounter,
        },
        Op::Attach {
            path: path("t"),
            token: Value::Float(f64::NAN),
        },
    ] {
        assert!(matches!(
            a.doc.apply(&[op], stamp),
            Err(SchemaError::InvalidValue(_))
        ));
        assert_eq!(a.doc, Doc::new());
    }
}

// ---------------------------------------------------------------------------------------------
// Clock skew beyond the admission bound

#[test]
fn a_write_stamped_below_the_state_does_not_diverge() {
    // Regression: `b`'s clock is far ahead, so `a`'s clock refuses to follow it and `a`'s next
    // write carries an older stamp than the value it overwrites. The write used to replace the
    // register (and counter epoch, attachment) locally, while every other replica kept the newer
    // one: permanent divergence. A write is now a join like any other: the older stamp loses.
    let far = crate::hlc::MAX_DRIFT_MS * 2;
    let (mut a, mut b) = (Peer::new(1), Peer::new(2));
    b.write_at(
        far,
        &[
            set("r", r#""future""#),
            restart("n", 50),
            attach("f", "ffff"),
            set("o.x", "1"),
        ],
    );
    a.pull(&b);
    assert_eq!(
        a.clock.observe_at(b.doc.vv.max_hlc(), MS),
        crate::hlc::Observe::Skewed
    );
    a.write(&[
        set("r", r#""now""#),
        restart("n", 1),
        attach("f", "aaaa"),
        inc("n", 2),
    ]);
    a.write(&[set("o", r#"{"y":2}"#)]);
    let (ra, rb) = (a.json(), b.json());
    sync(&mut a, &mut b);
    assert_eq!(a.get("r"), Some(v(r#""future""#)));
    assert_eq!(a.get("f.id"), Some(v(r#""ffff""#)));
    assert_eq!(a.get("n"), Some(Value::Int(52)));
    assert_eq!(a.get("o"), Some(v(r#"{"y":2}"#)));
    assert_ne!(ra, rb);
}

// ---------------------------------------------------------------------------------------------
// Deltas

#[test]
fn delta_carries_only_what_the_receiver_lacks() {
    let (mut a, mut b) = (Peer::new(1), Peer::new(2));
    a.write(&[merge(
        "",
        r#"{"a":1,"b":{"c":2},"big":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#,
    )]);
    b.pull(&a);
    a.write(&[set("b.d", "3")]);
    let d = a.doc.delta(&b.doc.vv);
    let fields = d
        .state
        .root
        .map
        .as_ref()
        .expect("map")
        .entries
        .keys()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(fields, vec!["b".to_owned()]);
    assert!(d.encode().len() < a.doc.encode().len());
    // Nothing to send to an up-to-date receiver.
    b.pull(&a);
    assert!(a.doc.delta(&b.doc.vv).is_empty());
}

#[test]
fn a_delta_against_an_older_base_is_a_superset() {
    let (mut a, mut b) = (Peer::new(1), Peer::new(2));
    a.write(&[set("x", "1")]);
    b.pull(&a);
    let old = b.doc.vv.clone();
    a.write(&[set("y", "2"), unset("x")]);
    b.pull(&a);
    a.write(&[set("z", "3")]);
    for base in [VersionVector::new(), old] {
        let mut c = Peer {
            doc: b.doc.clone(),
            clock: b.clock.clone(),
        };
        c.doc.apply_delta(&a.doc.delta(&base)).expect("applies");
        assert_eq!(c.json(), Some(v(r#"{"y":2,"z":3}"#)));
    }
}

#[test]
fn a_delta_whose_base_the_receiver_does_not_dominate_is_refused() {
    let (mut a, mut b) = (Peer::new(1), Peer::new(2));
    a.write(&[set("x", "1")]);
    let d1 = a.doc.delta(&VersionVector::new());
    a.write(&[set("y", "2")]);
    // Computed as if `b` had the first write; `b` has nothing.
    let d2 = a.doc.delta(&d1.state.vv);
    let before = b.doc.clone();
    assert_eq!(b.doc.apply_delta(&d2), Err(SchemaError::BaseNotDominated));
    assert_eq!(b.doc, before);
    b.doc.apply_delta(&d1).expect("applies");
    b.doc.apply_delta(&d2).expect("applies");
    assert_eq!(b.json(), a.json());
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// A document with every component, tombstones and several sites, and counters with every
/// part: restarts that saw totals, removed totals (all and some), a removed restart.
fn rich_doc() -> Doc {
    let (mut a, mut b) = (Peer::new(1), Peer::new(u128::MAX));
    a.write(&[
        merge("", r#"{"s":"text","i":-3,"u":18446744073709551615,"f":2.5,"l":[1,[2],{"k":null}],"t":true}"#),
        set("o.x.y", "1"),
        set_reg("r", r#"{"whole":1}"#),
        inc("n", 4),
        pn_inc("p", 0.5),
        inc("k", 3),
        pn_inc("q", 1.5),
        inc("c", 2),
        attach("att", "abcd"),
        Op::Set { path: path("bin"), value: Value::Binary(vec![0, 1, 255]), objects: ObjectMode::Map },
    ]);
    b.pull(&a);
    b.write(&[
        unset("t"),
        inc("n", -1),
        restart("c", 9),
        set("o.x.z", "2"),
        restart("k", 50),
        unset("q"),
    ]);
    a.write(&[unset("o.x.y"), pn_inc("q", 2.0), inc("k", -2)]);
    sync(&mut a, &mut b);
    a.write(&[unset("c")]);
    b.write(&[inc("c", 4)]);
    sync(&mut a, &mut b);
    assert_eq!(
        (a.get("k"), a.get("q"), a.get("c")),
        (
            Some(Value::Int(48)),
            Some(Value::Float(2.0)),
            Some(Value::Int(4))
        )
    );
    a.doc
}

fn is_decode_error(e: &SchemaError) -> bool {
    matches!(
        e,
        SchemaError::Corrupt(_) | SchemaError::UnsupportedVersion(_)
    )
}

#[test]
fn codec_round_trips_docs_and_deltas() {
    let doc = rich_doc();
    assert_eq!(Doc::decode(&doc.encode()).as_ref(), Ok(&doc));
    for base in [VersionVector::new(), doc.vv.clone()] {
        let d = doc.delta(&base);
        assert_eq!(Delta::decode(&d.encode()).as_ref(), Ok(&d));
    }
    assert_eq!(Doc::decode(&Doc::new().encode()), Ok(Doc::new()));
}

#[test]
fn truncated_blobs_are_corrupt() {
    let doc = rich_doc();
    let blob = doc.encode();
    let delta = doc.delta(&VersionVector::new()).encode();
    for n in 0..blob.len() {
        let e = Doc::decode(&blob[..n]).expect_err("a truncated document does not decode");
        assert!(is_decode_error(&e), "{e:?}");
    }
    for n in 0..delta.len() {
        let e = Delta::decode(&delta[..n]).expect_err("a truncated delta does not decode");
        assert!(is_decode_error(&e), "{e:?}");
    }
    // Trailing bytes are refused too.
    let mut long = blob.clone();
    long.push(0);
    assert!(matches!(Doc::decode(&long), Err(SchemaError::Corrupt(_))));
}

#[test]
fn unknown_versions_and_kinds_are_refused() {
    let doc = rich_doc();
    let mut blob = doc.encode();
    for version in [0, 3, 255] {
        blob[0] = version;
        assert_eq!(
            Doc::decode(&blob),
            Err(SchemaError::UnsupportedVersion(version))
        );
    }
    let delta = doc.delta(&VersionVector::new()).encode();
    assert!(matches!(Doc::decode(&delta), Err(SchemaError::Corrupt(_))));
    assert!(matches!(
        Delta::decode(&doc.encode()),
        Err(SchemaError::Corrupt(_))
    ));
}

/// Decoding must never panic; what does decode must be usable.
fn decode_anything(bytes: &[u8], reference: &Doc) {
    match Doc::decode(bytes) {
        Ok(d) => {
            let _ = d.materialize();
            let _ = Doc::decode(&d.encode()).expect("a decoded document re-encodes");
            let mut j = reference.clone();
            j.join(&d);
            let _ = j.materialize();
        }
        Err(e) => assert!(is_decode_error(&e), "{e:?}"),
    }
    match Delta::decode(bytes) {
        Ok(d) => {
            let _ = Delta::decode(&d.encode()).expect("a decoded delta re-encodes");
            let mut j = reference.clone();
            if j.vv.dominates(&d.base) {
                j.apply_delta(&d).expect("applies");
                let _ = j.materialize();
            }
        }
        Err(e) => assert!(is_decode_error(&e), "{e:?}"),
    }
}

#[test]
fn corrupted_blobs_never_panic() {
    let doc = rich_doc();
    let mut checked = 0;
    for blob in [doc.encode(), doc.delta(&VersionVector::new()).encode()] {
        for i in 0..blob.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut b = blob.clone();
                b[i] ^= mask;
                decode_anything(&b, &doc);
                checked += 1;
            }
        }
    }
    assert!(checked > 1000);
}

#[test]
fn garbage_never_panics() {
    let doc = rich_doc();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for len in 0..300usize {
        let mut b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Half of the inputs start with a valid header so that decoding goes further.
        if len >= 2 && len % 2 == 0 {
            b[0] = 1;
            b[1] = (len % 4 == 0) as u8;
        }
        decode_anything(&b, &doc);
    }
    // Lengths far beyond the input.
    for b in [
        &[1u8, 0, 0xff, 0xff, 0xff, 0xff, 0x0f][..],
        &[1, 0, 0, 0, 0, 2, 0xff, 0xff, 0xff, 0x7f],
    ] {
        assert!(matches!(Doc::decode(b), Err(SchemaError::Corrupt(_))));
    }
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    // doc := FORMAT KIND_DOC sites(0) vv(0) slot; a slot that is a map with one entry, nested.
    let mut b = vec![1u8, 0, 0, 0];
    for _ in 0..10_000 {
        b.extend_from_slice(&[2, 0, 1, 1, b'k']);
    }
    b.push(0);
    assert!(matches!(Doc::decode(&b), Err(SchemaError::Corrupt(_))));
}

// ---------------------------------------------------------------------------------------------
// Format 1

/// States encoded in format 1 (before removals and restarts recorded what they had seen), by
/// two sites:
///
/// ```text
/// a @1: INCREMENT c 5, RESTART r WITH 100, INCREMENT d 4, PN_INCREMENT p 2.5,
///       INCREMENT x 10, INCREMENT y 10
/// b: takes a's state
/// b @2: INCREMENT c 3, PN_INCREMENT p -0.5
/// a @3: INCREMENT r 2, UNSET d, UNSET x, RESTART y WITH 100
/// a @4: INCREMENT d 1
/// b @5: INCREMENT x 1, INCREMENT y 5
/// ```
///
/// `A` and `B` are the two states, `J` their join, `D` the delta of `a` against `b`'s version
/// vector (untyped writes, stamps `(1_700_000_000_000 + t) << 16` of sites 1 and 2).
const FORMAT_1_A: &str = concat!(
    "010001000000000000000000000000000000010100808090c0d6fcf3c5010201808084c0d6fcf3c501000601",
    "63040001000a00808084c0d6fcf3c501000164240180808cc0d6fcf3c501000001000200808090c0d6fcf3c5",
    "0100010080808cc0d6fcf3c5010100808084c0d6fcf3c5010170080001000000000000000440000000000000",
    "0000808084c0d6fcf3c5010001720401808084c0d6fcf3c50100c8010100040080808cc0d6fcf3c501000178",
    "240001001400808084c0d6fcf3c50100010080808cc0d6fcf3c5010100808084c0d6fcf3c501017904018080",
    "8cc0d6fcf3c50100c80100",
);
const FORMAT_1_B: &str = concat!(
    "01000200000000000000000000000000000001000000000000000000000000000000020200808084c0d6fcf3",
    "c50101808094c0d6fcf3c5010201808084c0d6fcf3c50100060163040002000a00808084c0d6fcf3c5010001",
    "0600808088c0d6fcf3c501010164040001000800808084c0d6fcf3c501000170080002000000000000000440",
    "0000000000000000808084c0d6fcf3c50100010000000000000000000000000000e03f808088c0d6fcf3c501",
    "0101720401808084c0d6fcf3c50100c801000178040002001400808084c0d6fcf3c50100010200808094c0d6",
    "fcf3c501010179040002001400808084c0d6fcf3c50100010a00808094c0d6fcf3c50101",
);
const FORMAT_1_J: &str = concat!(
    "01000200000000000000000000000000000001000000000000000000000000000000020200808090c0d6fcf3",
    "c50101808094c0d6fcf3c5010201808084c0d6fcf3c50100060163040002000a00808084c0d6fcf3c5010001",
    "0600808088c0d6fcf3c501010164240180808cc0d6fcf3c501000001000200808090c0d6fcf3c50100010080",
    "808cc0d6fcf3c5010100808084c0d6fcf3c50101700800020000000000000004400000000000000000808084",
    "c0d6fcf3c50100010000000000000000000000000000e03f808088c0d6fcf3c5010101720401808084c0d6fc",
    "f3c50100c8010100040080808cc0d6fcf3c501000178240002001400808084c0d6fcf3c50100010200808094",
    "c0d6fcf3c50101010080808cc0d6fcf3c5010100808084c0d6fcf3c5010179040180808cc0d6fcf3c50100c8",
    "0100",
);
const FORMAT_1_D: &str = concat!(
    "01010200000000000000000000000000000001000000000000000000000000000000020200808084c0d6fcf3",
    "c50101808094c0d6fcf3c5010100808090c0d6fcf3c5010200040164240180808cc0d6fcf3c5010000010002",
    "00808090c0d6fcf3c50100010080808cc0d6fcf3c5010100808084c0d6fcf3c50101720401808084c0d6fcf3",
    "c50100c8010100040080808cc0d6fcf3c50100017820010080808cc0d6fcf3c5010100808084c0d6fcf3c501",
    "0179040180808cc0d6fcf3c50100c80100",
);

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn format_1_states_decode_to_the_same_values_and_merge_as_format_1_did() {
    let (a, b, j) = (unhex(FORMAT_1_A), unhex(FORMAT_1_B), unhex(FORMAT_1_J));
    let decode = |bytes: &[u8]| Doc::decode(bytes).expect("format 1 decodes");
    let (da, db, dj) = (decode(&a), decode(&b), decode(&j));
    // The values format 1 showed (`x`: the increment concurrent with the UNSET brought the
    // whole total back; `y`: the one concurrent with the RESTART was lost).
    assert_eq!(
        da.materialize(),
        Some(v(r#"{"c":5,"d":1,"p":2.5,"r":102,"y":100}"#))
    );
    assert_eq!(
        db.materialize(),
        Some(v(r#"{"c":8,"d":4,"p":2.0,"r":100,"x":11,"y":15}"#))
    );
    let joined = v(r#"{"c":8,"d":1,"p":2.0,"r":102,"x":11,"y":100}"#);
    assert_eq!(dj.materialize(), Some(joined.clone()));
    // Merged after decoding, the states give what format 1 gave: the totals of an epoch (its
    // era) replace those of an older one.
    for (x, y) in [(&da, &db), (&db, &da)] {
        let mut m = x.clone();
        m.join(y);
        assert_eq!(m, dj);
    }
    let mut via_delta = db.clone();
    let delta = Delta::decode(&unhex(FORMAT_1_D)).expect("a format 1 delta decodes");
    via_delta.apply_delta(&delta).expect("applies");
    assert_eq!(via_delta.materialize(), Some(joined));
    // Written again, in format 2, nothing changes.
    for d in [&da, &db, &dj] {
        let again = d.encode();
        assert_eq!(again[0], codec::FORMAT);
        assert_eq!(Doc::decode(&again).as_ref(), Ok(d));
    }
    // The full-state delta of a stored format 1 document stays in format 1.
    let (full, vv) = Delta::encode_full_state(&a).expect("converts");
    assert_eq!(full[0], 1);
    assert_eq!(vv, da.vv);
    let full = Delta::decode(&full).expect("decodes");
    assert_eq!(full.state, da);
    // Counting on a format 1 state follows the new rules from there: a site that saw the
    // removal of `x` and one that did not, `y`'s restart counts on.
    let (mut p, mut q) = (Peer::new(1), Peer::new(3));
    p.doc = dj.clone();
    p.clock.observe_at(p.doc.vv.max_hlc(), MS);
    q.doc = dj;
    q.clock.observe_at(q.doc.vv.max_hlc(), MS);
    p.write(&[unset("x"), inc("y", 1)]);
    q.write(&[inc("x", 2), inc("y", 2)]);
    sync(&mut p, &mut q);
    assert_eq!(p.get("x"), Some(Value::Int(2)));
    assert_eq!(p.get("y"), Some(Value::Int(103)));
}

/// A format 2 document whose field `n` is a counter encoded as `counter` (one site, at hlc 5).
fn doc_with_counter(counter: &[u8]) -> Vec<u8> {
    let mut b = vec![2u8, 0, 1];
    b.extend_from_slice(&SiteId(7).to_bytes());
    // vv {site 0: 5}; root slot: a map marked (5, site 0) with one entry `n`, a counter.
    b.extend_from_slice(&[1, 0, 5, 2, 1, 5, 0, 1, 1, b'n', 4]);
    b.extend_from_slice(counter);
    b
}

#[test]
fn format_2_counters_decode_and_bad_ones_are_corrupt() {
    let n = |bytes: &[u8]| {
        Doc::decode(&doc_with_counter(bytes)).map(|d| {
            d.materialize()
                .and_then(|j| j.get_path(&path("n")).cloned())
        })
    };
    // One contribution of 1: flags, count, site, p, n, last.
    assert_eq!(n(&[0, 1, 0, 2, 0, 5, 0]), Ok(Some(Value::Int(1))));
    // Removed totals: all of them, or p 1 of 2.
    assert_eq!(n(&[8, 1, 0, 2, 0, 5, 0, 1]), Ok(Some(Value::Int(0))));
    assert_eq!(n(&[8, 1, 0, 4, 0, 5, 0, 2, 2, 0]), Ok(Some(Value::Int(1))));
    // A restart to 10 that had seen 1 of the 2.
    let restarted = [1, 5, 0, 20, 1, 0, 2, 0, 1, 0, 4, 0, 5, 0];
    assert_eq!(n(&restarted), Ok(Some(Value::Int(11))));
    // ... removed.
    let mut removed = restarted;
    removed[0] = 1 | 4;
    assert_eq!(n(&removed), Ok(Some(Value::Int(1))));
    for bad in [
        &[0x10, 1, 0, 2, 0, 5, 0][..],
        // Removed without an epoch.
        &[4, 1, 0, 2, 0, 5, 0],
        // An unknown removed-totals tag, and a missing one.
        &[8, 1, 0, 2, 0, 5, 0, 3],
        &[8, 1, 0, 2, 0, 5, 0],
        // More seen totals than bytes.
        &[1, 5, 0, 20, 0xff, 0xff, 0x03, 0],
        // A site index out of range in the seen totals.
        &[1, 5, 0, 20, 1, 9, 2, 0, 0],
    ] {
        assert!(matches!(n(bad), Err(SchemaError::Corrupt(_))), "{bad:?}");
    }
}

#[test]
fn what_restarts_and_removals_record_stays_small() {
    // The encoding of the counter alone, in a document of its own.
    fn size(c: &Counter<i64>) -> usize {
        Doc {
            vv: VersionVector::new(),
            root: Slot {
                ctr: Some(c.clone()),
                ..Slot::default()
            },
        }
        .encode()
        .len()
    }
    let counter = |p: &Peer| {
        p.doc.root.map.as_ref().expect("map").entries["n"]
            .ctr
            .clone()
            .expect("a counter")
    };
    let (mut a, mut b, mut c) = (Peer::new(1), Peer::new(2), Peer::new(3));
    a.write(&[inc("n", 5)]);
    b.write(&[inc("n", 40)]);
    c.write(&[inc("n", -3)]);
    sync_all(&mut [&mut a, &mut b, &mut c]);
    let plain = size(&counter(&a));
    // A removal: one byte per site (the totals removed are all of them).
    a.write(&[unset("n")]);
    assert_eq!(size(&counter(&a)), plain + 3);
    // A restart: its stamp and base, and per site its index and the totals it saw (small
    // integers: a byte each).
    b.write(&[restart("n", 1)]);
    let restarted = counter(&b);
    assert_eq!(restarted.epoch.as_ref().map(|e| e.seen.len()), Some(3));
    assert!(
        size(&restarted) <= plain + 10 + 1 + 1 + 3 * 3,
        "{}",
        size(&restarted)
    );
    // A strict-mode removal that keeps the counter beside a map lists nothing again.
    let mut d = Peer::new(4);
    d.doc = c.doc.clone();
    d.clock.observe_at(d.doc.vv.max_hlc(), MS);
    let stamp = d.clock.tick_at(MS);
    d.doc
        .apply_typed(&[set("n.m", "1")], stamp)
        .expect("applies");
    let stamp = d.clock.tick_at(MS);
    d.doc
        .apply_typed(
            &[Op::Remove {
                path: path("n"),
                component: Component::Map,
            }],
            stamp,
        )
        .expect("applies");
    let kept = counter(&d);
    assert_eq!(kept.total(), 42);
    assert_eq!(kept.epoch.as_ref().map(|e| e.seen.len()), Some(0));
}
