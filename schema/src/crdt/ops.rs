//! The write operations (delta mutators) on a document.
//!
//! All operations of one statement on one document share one stamp; the document's version
//! vector before the statement is the context of every removal the statement makes.

use std::collections::BTreeMap;

use super::{
    Component, Contrib, Counter, CounterNum, Doc, Epoch, Register, Seen, Slot, VersionVector,
};
use crate::error::{Result, SchemaError};
use crate::hlc::Stamp;
use crate::value::Value;

/// How an object value is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectMode {
    /// Objects become add-wins MAPs, each key its own register (DQL strict mode off, Ditto 5.x).
    Map,
    /// Objects are registers, replaced whole (strict mode on, or a field declared REGISTER).
    Register,
}

/// The two counter types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterKind {
    /// The settable COUNTER: integers, `INCREMENT BY`, `RESTART [WITH n]`.
    Counter,
    /// The legacy PN_COUNTER: floats, `PN_INCREMENT BY`.
    PnCounter,
}

/// One write on a document. Paths are lists of object keys from the document root.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Assign a value (`SET path = value`). An object in [`ObjectMode::Map`] replaces what the
    /// writer saw at `path` while concurrent additions by others survive.
    Set {
        path: Vec<String>,
        value: Value,
        objects: ObjectMode,
    },
    /// Merge an object into the map at `path`: given keys are set, nested objects merged, other
    /// keys kept (`INSERT ... ON ID CONFLICT DO UPDATE`, and every INSERT). An empty path is the
    /// document root, which this (re)creates.
    Merge {
        path: Vec<String>,
        value: BTreeMap<String, Value>,
        objects: ObjectMode,
    },
    /// Remove a field (`UNSET path`).
    Unset { path: Vec<String> },
    /// Remove one component of a field, leaving its other types alone (`UNSET path` in strict
    /// mode, where a field's type is part of its identity: the declared type, REGISTER when the
    /// statement declares none).
    Remove {
        path: Vec<String>,
        component: Component,
    },
    /// Add to a counter (`APPLY path INCREMENT BY n` / `PN_INCREMENT BY n`).
    Increment {
        path: Vec<String>,
        by: Value,
        kind: CounterKind,
    },
    /// Set a settable counter (`APPLY path RESTART WITH n`).
    Restart { path: Vec<String>, to: i64 },
    /// Assign an attachment token.
    Attach { path: Vec<String>, token: Value },
    /// Delete the document (tombstone).
    Delete,
}

struct Writer {
    stamp: Stamp,
    before: VersionVector,
    /// Strict mode: a write touches only the component of its own type; the field's other
    /// types stay (a REGISTER `m` written over a MAP `m` leaves the map). Otherwise a write of
    /// another type replaces what the writer saw at the field.
    typed: bool,
}

impl Doc {
    /// Applies the operations of one statement, all stamped with `stamp`, which must be newer
    /// than anything this document has seen from `stamp.site`.
    ///
    /// On error the document is left unchanged.
    pub fn apply(&mut self, ops: &[Op], stamp: Stamp) -> Result<()> {
        self.apply_with(ops, stamp, false)
    }

    /// [`Doc::apply`] for DQL strict mode: each operation touches only the component of its
    /// own type at its path, so a field can hold a register, a map and counters side by side
    /// (see [`crate::TypeView`] for how queries then see them).
    pub fn apply_typed(&mut self, ops: &[Op], stamp: Stamp) -> Result<()> {
        self.apply_with(ops, stamp, true)
    }

    fn apply_with(&mut self, ops: &[Op], stamp: Stamp, typed: bool) -> Result<()> {
        if self.vv.covers(stamp) {
            return Err(SchemaError::TypeMismatch(format!(
                "stamp {} of site {} is not newer than the document's version vector",
                stamp.hlc, stamp.site
            )));
        }
        for op in ops {
            validate(op)?;
        }
        let w = Writer {
            stamp,
            before: self.vv.clone(),
            typed,
        };
        let empty = VersionVector::default();
        for op in ops {
            apply_one(&mut self.root, op, &w, &empty);
        }
        self.vv.observe(stamp.site, stamp.hlc);
        self.root.normalize(&empty);
        Ok(())
    }
}

fn validate(op: &Op) -> Result<()> {
    let check_value = |v: &Value| v.validate();
    // The document root is an object. A counter or a token there hid the document's fields (the
    // document read as deleted) and a scalar SET there was silently ignored.
    let root_only_object = |what: &str| {
        Err(SchemaError::TypeMismatch(format!(
            "the document root is an object: {what} needs a field path"
        )))
    };
    match op {
        Op::Set { path, value, .. } if path.is_empty() && value.as_object().is_none() => {
            root_only_object("SET of a non-object")
        }
        Op::Increment { path, .. } if path.is_empty() => root_only_object("INCREMENT"),
        Op::Restart { path, .. } if path.is_empty() => root_only_object("RESTART"),
        Op::Attach { path, .. } if path.is_empty() => root_only_object("an attachment"),
        Op::Set { value, .. } => check_value(value),
        Op::Merge { value, .. } => value.values().try_for_each(check_value),
        Op::Attach { token, .. } => check_value(token),
        Op::Increment {
            by,
            kind: CounterKind::Counter,
            ..
        } => match by {
            Value::Int(_) => Ok(()),
            other => Err(SchemaError::TypeMismatch(format!(
                "expected {other} to be an integer value"
            ))),
        },
        Op::Increment {
            by,
            kind: CounterKind::PnCounter,
            ..
        } => match by {
            Value::Int(_) | Value::UInt(_) | Value::Float(_) => check_value(by),
            other => Err(SchemaError::TypeMismatch(format!(
                "expected {other} to be a number"
            ))),
        },
        Op::Remove { path, .. } if path.is_empty() => root_only_object("a component removal"),
        Op::Unset { .. } | Op::Remove { .. } | Op::Restart { .. } | Op::Delete => Ok(()),
    }
}

fn apply_one(root: &mut Slot, op: &Op, w: &Writer, empty: &VersionVector) {
    match op {
        Op::Delete => root.add_tomb(w.stamp, &w.before),
        Op::Unset { path } if w.typed && !path.is_empty() => {
            unset_typed(root, path, None, w, empty)
        }
        Op::Unset { path } => {
            if unset_in_register(root, path, w, empty) {
                return;
            }
            if let Some((slot, _)) = descend(root, path, empty.clone(), w, false) {
                slot.add_tomb(w.stamp, &w.before);
            }
        }
        Op::Remove { path, component } => unset_typed(root, path, Some(*component), w, empty),
        Op::Set {
            path,
            value,
            objects,
        } => {
            if path.is_empty() {
                if let Value::Object(o) = value {
                    // Assigning the whole document: replace what the writer saw.
                    root.add_tomb(w.stamp, &w.before);
                    merge(root, o, w, *objects, empty);
                }
                return;
            }
            if let Some((slot, _)) = descend(root, path, empty.clone(), w, true) {
                assign(slot, value, w, *objects, false);
            }
        }
        Op::Merge {
            path,
            value,
            objects,
        } => {
            if let Some((slot, ctx)) = descend(root, path, empty.clone(), w, true) {
                merge(slot, value, w, *objects, &ctx);
            }
        }
        Op::Increment { path, by, kind } => {
            if let Some((slot, ctx)) = descend(root, path, empty.clone(), w, true) {
                increment(slot, by, *kind, w, &ctx);
            }
        }
        Op::Restart { path, to } => {
            if let Some((slot, ctx)) = descend(root, path, empty.clone(), w, true) {
                hide_other_components(slot, Component::Counter, w, &ctx);
                let seen = slot
                    .ctr
                    .as_ref()
                    .map(|c| c.observed(&w.before))
                    .unwrap_or_default();
                restart(&mut slot.ctr, *to, seen, w, true);
            }
        }
        Op::Attach { path, token } => {
            if let Some((slot, ctx)) = descend(root, path, empty.clone(), w, true) {
                hide_other_components(slot, Component::Attachment, w, &ctx);
                put_register(&mut slot.att, w.stamp, token);
            }
        }
    }
}

/// UNSET of a key that shows inside an object held by a register (an object written in
/// [`ObjectMode::Register`]): the register is rewritten without the key, as objects in registers
/// are replaced whole. Without this the UNSET found no slot at `path` (or only a hidden one)
/// and silently did nothing. False when `path` does not show a value inside a register object.
fn unset_in_register(
    slot: &mut Slot,
    path: &[String],
    w: &Writer,
    inherited: &VersionVector,
) -> bool {
    let Some((key, rest)) = path.split_first() else {
        return false;
    };
    match slot.visible(inherited) {
        Some((Component::Map, _)) => {
            let ctx = slot.ctx(inherited).into_owned();
            match slot.map.as_mut().and_then(|m| m.entries.get_mut(key)) {
                Some(child) => unset_in_register(child, rest, w, &ctx),
                None => false,
            }
        }
        Some((Component::Register, _)) => {
            let Some(mut value) = slot.reg.as_ref().and_then(|r| r.value.clone()) else {
                return false;
            };
            if !remove_path(&mut value, path) {
                return false;
            }
            put_register(&mut slot.reg, w.stamp, &value);
            true
        }
        _ => false,
    }
}

/// Removes the value at `path` inside nested objects; false when there is none.
fn remove_path(value: &mut Value, path: &[String]) -> bool {
    let Value::Object(o) = value else {
        return false;
    };
    match path {
        [] => false,
        [key] => o.remove(key).is_some(),
        [key, rest @ ..] => o.get_mut(key).is_some_and(|child| remove_path(child, rest)),
    }
}

/// Walks to the slot at `path`. With `create`, missing entries are created and every slot walked
/// through is made a visible map; without it, `None` when the path does not exist.
fn descend<'a>(
    slot: &'a mut Slot,
    path: &[String],
    inherited: VersionVector,
    w: &Writer,
    create: bool,
) -> Option<(&'a mut Slot, VersionVector)> {
    let Some((key, rest)) = path.split_first() else {
        return Some((slot, inherited));
    };
    if create {
        ensure_map(slot, w, &inherited);
    }
    let ctx = slot.ctx(&inherited).into_owned();
    let map = slot.map.as_mut()?;
    let child = if create {
        map.entries.entry(key.clone()).or_default()
    } else {
        map.entries.get_mut(key)?
    };
    descend(child, rest, ctx, w, create)
}

/// Makes the map of `slot` the visible component, (re)creating it when it is absent, removed or
/// hidden behind another type. A register holding an object is turned into map entries.
///
/// Only one level is turned into a map: nested objects become registers, turned into maps in
/// their turn when a path goes through them. The entries carry the writer's stamp, the same as
/// what the operation then writes below; were a nested object exploded into a map here, a value
/// of another type written at its key by the same operation would tie with it and lose (at
/// equal stamps a map is shown first), so `SET o.k = 1` on a register `o = {"k": {}}` showed
/// `{}`. A register entry is simply replaced.
fn ensure_map(slot: &mut Slot, w: &Writer, inherited: &VersionVector) {
    if w.typed {
        // Only the map component: a live one is used as it is, else a new (empty) one starts.
        if !slot.has_live(Component::Map, inherited) {
            let map = slot.map.get_or_insert_with(Default::default);
            map.mark = map.mark.max(Some(w.stamp));
        }
        return;
    }
    let visible = slot.visible(inherited);
    if matches!(visible, Some((Component::Map, _))) {
        return;
    }
    let exploded = match visible {
        Some((Component::Register, _)) => slot.reg.as_ref().and_then(|r| match &r.value {
            Some(Value::Object(o)) => Some(o.clone()),
            _ => None,
        }),
        _ => None,
    };
    if visible.is_some() {
        // A type change: what the writer saw of the other components is gone for good.
        slot.add_tomb(w.stamp, &w.before);
    }
    let map = slot.map.get_or_insert_with(Default::default);
    map.mark = map.mark.max(Some(w.stamp));
    if let Some(o) = exploded {
        for (k, v) in o {
            assign(
                map.entries.entry(k).or_default(),
                &v,
                w,
                ObjectMode::Register,
                true,
            );
        }
    }
}

/// UNSET with typed writes (as Ditto does it): the maps on the way to the field are created
/// (`UNSET z.q` on a document without `z` leaves `z = {}`; through a register, a map starts
/// beside it), then the field loses one component: `component`, or the visible one (so the
/// field's next newest type shows, if it has one).
fn unset_typed(
    root: &mut Slot,
    path: &[String],
    component: Option<Component>,
    w: &Writer,
    inherited: &VersionVector,
) {
    let Some((leaf, parents)) = path.split_last() else {
        return;
    };
    let Some((parent, ctx)) = descend(root, parents, inherited.clone(), w, true) else {
        return;
    };
    ensure_map(parent, w, &ctx);
    let ctx = parent.ctx(&ctx).into_owned();
    let Some(slot) = parent.map.as_mut().and_then(|m| m.entries.get_mut(leaf)) else {
        return;
    };
    let component = match component {
        Some(c) => c,
        None => match slot.visible(&ctx) {
            Some((c, _)) => c,
            None => return,
        },
    };
    remove_component(slot, component, w, &ctx);
}

/// Strict-mode UNSET: removes one component of a field and keeps its other types. A register
/// (or token) is cleared by a newer, empty register. Components have no tombstones of their
/// own, so removing a map or a counter beside other live types removes the field and writes
/// the others again, at this write's stamp.
fn remove_component(slot: &mut Slot, c: Component, w: &Writer, inherited: &VersionVector) {
    if !slot.has_live(c, inherited) {
        return;
    }
    let others = slot.live(inherited).into_iter().any(|o| o != c);
    let clear = |r: &mut Option<Register>| {
        if r.as_ref().is_none_or(|r| r.stamp <= w.stamp) {
            *r = Some(Register {
                stamp: w.stamp,
                value: None,
            });
        }
    };
    match c {
        _ if !others => slot.add_tomb(w.stamp, &w.before),
        Component::Register => clear(&mut slot.reg),
        Component::Attachment => clear(&mut slot.att),
        Component::Map | Component::Counter | Component::PnCounter => {
            let before = slot.clone();
            slot.add_tomb(w.stamp, &w.before);
            rewrite(&before, slot, inherited, w, Some(c));
        }
    }
}

/// Writes the live components of `src` (but `skip`) into `dst` again, stamped by `w`.
fn rewrite(
    src: &Slot,
    dst: &mut Slot,
    inherited: &VersionVector,
    w: &Writer,
    skip: Option<Component>,
) {
    let ctx = src.ctx(inherited).into_owned();
    for c in src.live(inherited) {
        if Some(c) == skip {
            continue;
        }
        match c {
            Component::Register => {
                if let Some(v) = src.reg.as_ref().and_then(|r| r.value.as_ref()) {
                    put_register(&mut dst.reg, w.stamp, v);
                }
            }
            Component::Attachment => {
                if let Some(v) = src.att.as_ref().and_then(|r| r.value.as_ref()) {
                    put_register(&mut dst.att, w.stamp, v);
                }
            }
            Component::Counter => restart_from(&mut dst.ctr, src.ctr.as_ref(), w),
            Component::PnCounter => restart_from(&mut dst.pn, src.pn.as_ref(), w),
            Component::Map => {
                let Some(from) = &src.map else { continue };
                let map = dst.map.get_or_insert_with(Default::default);
                map.mark = map.mark.max(Some(w.stamp));
                for (k, e) in &from.entries {
                    rewrite(e, map.entries.entry(k.clone()).or_default(), &ctx, w, None);
                }
            }
        }
    }
}

/// Restarts `dst` at the writer's stamp from the total of `src` (the counter before the
/// removal that `dst` just had: its totals are already removed, so the restart need not list
/// them). Only a newer epoch may replace the current one (see `put_register`): with a clock
/// behind the state the counter stays removed rather than the replicas diverging.
fn restart_from<N: CounterNum>(dst: &mut Option<Counter<N>>, src: Option<&Counter<N>>, w: &Writer) {
    let Some(src) = src else { return };
    restart(dst, src.total(), BTreeMap::new(), w, false);
}

/// `RESTART WITH base` at the writer's stamp: the counter shows `base` in place of the totals
/// the writer had seen (`seen`), and increments beyond them count on top. Last writer wins: an
/// epoch newer than the writer's stamp stays (a clock behind the state), and the restart then
/// changes nothing; an equal one (an earlier operation of the statement) is replaced when
/// `replace_equal`.
fn restart<N: CounterNum>(
    counter: &mut Option<Counter<N>>,
    base: N,
    seen: BTreeMap<crate::hlc::SiteId, Seen<N>>,
    w: &Writer,
    replace_equal: bool,
) {
    let c = counter.get_or_insert_with(Counter::default);
    let current = c.epoch_stamp();
    if current < Some(w.stamp) || (replace_equal && current == Some(w.stamp)) {
        c.epoch = Some(Epoch {
            stamp: w.stamp,
            base,
            seen,
            removed: false,
        });
    }
}

/// Tombstones what the writer saw at `slot` when a component other than `keep` is visible.
fn hide_other_components(slot: &mut Slot, keep: Component, w: &Writer, inherited: &VersionVector) {
    if w.typed {
        return;
    }
    if let Some((c, _)) = slot.visible(inherited) {
        if c != keep {
            slot.add_tomb(w.stamp, &w.before);
        }
    }
}

/// Assigns `value` at `slot`. `fresh` means an ancestor was just replaced (its tombstone already
/// covers what the writer saw here).
fn assign(slot: &mut Slot, value: &Value, w: &Writer, objects: ObjectMode, fresh: bool) {
    match (value, objects) {
        (Value::Object(o), ObjectMode::Map) => {
            if w.typed {
                // Replace what the writer saw of the map only.
                if let Some(m) = slot.map.as_mut() {
                    for e in m.entries.values_mut() {
                        e.add_tomb(w.stamp, &w.before);
                    }
                }
            } else if !fresh && !slot.is_empty() {
                slot.add_tomb(w.stamp, &w.before);
            }
            let map = slot.map.get_or_insert_with(Default::default);
            map.mark = map.mark.max(Some(w.stamp));
            for (k, v) in o {
                assign(
                    map.entries.entry(k.clone()).or_default(),
                    v,
                    w,
                    objects,
                    true,
                );
            }
        }
        _ => {
            let other_alive =
                slot.map.is_some() || slot.ctr.is_some() || slot.pn.is_some() || slot.att.is_some();
            if !fresh && other_alive && !w.typed {
                slot.add_tomb(w.stamp, &w.before);
            }
            put_register(&mut slot.reg, w.stamp, value);
        }
    }
}

/// Writes a register. Every write must be an inflation of the state (what any other replica
/// computes when it joins the written component), or replicas diverge: the stamp of a local
/// write is newer than everything seen only while the clock follows every stamp it receives,
/// which the HLC admission bound does not guarantee (a peer's clock far in the future). An
/// older stamp therefore loses to the register it would replace, exactly as in a join. An equal
/// stamp is an earlier operation of the same statement, which the later one overrides.
fn put_register(reg: &mut Option<Register>, stamp: Stamp, value: &Value) {
    if reg.as_ref().is_none_or(|r| r.stamp <= stamp) {
        *reg = Some(Register {
            stamp,
            value: Some(value.clone()),
        });
    }
}

fn merge(
    slot: &mut Slot,
    obj: &BTreeMap<String, Value>,
    w: &Writer,
    objects: ObjectMode,
    inherited: &VersionVector,
) {
    ensure_map(slot, w, inherited);
    let ctx = slot.ctx(inherited).into_owned();
    let Some(map) = slot.map.as_mut() else { return };
    for (k, v) in obj {
        let child = map.entries.entry(k.clone()).or_default();
        match (v, objects) {
            (Value::Object(o), ObjectMode::Map) => merge(child, o, w, objects, &ctx),
            _ => assign(child, v, w, objects, false),
        }
    }
}

fn increment(
    slot: &mut Slot,
    by: &Value,
    kind: CounterKind,
    w: &Writer,
    inherited: &VersionVector,
) {
    let mut visible = slot.visible(inherited).map(|(c, _)| c);
    if w.typed {
        // Only the counter itself matters: live, it counts on; else it starts again.
        let own = match kind {
            CounterKind::Counter => Component::Counter,
            CounterKind::PnCounter => Component::PnCounter,
        };
        visible = slot.has_live(own, inherited).then_some(own);
    }
    match kind {
        CounterKind::Counter => {
            let by = by.as_i64().unwrap_or(0);
            let own = Component::Counter;
            if visible.is_some() && visible != Some(own) {
                slot.add_tomb(w.stamp, &w.before);
            }
            bump(&mut slot.ctr, by, visible == Some(own), w);
        }
        CounterKind::PnCounter => {
            let by = by.as_f64().unwrap_or(0.0);
            let own = Component::PnCounter;
            if visible.is_some() && visible != Some(own) {
                slot.add_tomb(w.stamp, &w.before);
            }
            bump(&mut slot.pn, by, visible == Some(own), w);
        }
    }
}

/// Adds `by` to this site's totals. A counter that exists but is not visible (removed, or
/// hidden behind a newer value of another type, which the caller has just removed) counts
/// from zero: what the writer saw of it is removed first. A removal already did that when it
/// was made (see [`Slot::add_tomb`]), except in states written in format 1, and a type change
/// does it just before; either way, sites that increment the removed counter concurrently
/// remove the same totals and their increments add up.
fn bump<N: CounterNum>(counter: &mut Option<Counter<N>>, by: N, visible: bool, w: &Writer) {
    let c = counter.get_or_insert_with(Counter::default);
    if !visible {
        c.remove_observed(&w.before);
    }
    let e = c.contrib.entry(w.stamp.site).or_insert(Contrib {
        p: N::ZERO,
        n: N::ZERO,
        last: w.stamp,
        removed: Seen::ZERO,
    });
    if by.is_negative() {
        e.n = e.n.add(by.neg());
    } else {
        e.p = e.p.add(by);
    }
    e.last = w.stamp;
}
