//! The CRDT operations a mutation applies to each document.

use std::collections::BTreeMap;

use bigpeer_schema::{Component, CounterKind, ObjectMode, Op, Value};

use super::expr::{eval, Env};
use crate::ast::{ConflictPolicy, Span};
use crate::error::{DqlError, Result};
use crate::plan::{FieldKind, FieldTypes, InsertDoc, InsertPlan, PExpr, UpdateAction, UpdatePlan};

/// What to do with one document of an INSERT.
#[derive(Debug, Clone, PartialEq)]
pub enum InsertOutcome {
    /// Apply these operations (a new document, or a merge into an existing one).
    Write(Vec<Op>),
    /// Leave the existing document alone (`DO NOTHING`, `INITIAL DOCUMENTS`); not reported.
    Skip,
}

/// The operations for one INSERT document. `existing` is the live document with that id, if
/// any (its materialised value, with or without `_id`).
pub fn insert_ops(
    plan: &InsertPlan,
    doc: &InsertDoc,
    existing: Option<&Value>,
) -> Result<InsertOutcome> {
    let Some(existing) = existing else {
        return Ok(InsertOutcome::Write(fields_ops(
            &doc.fields,
            &plan.types,
            plan.objects,
            true,
        )));
    };
    if plan.initial {
        return Ok(InsertOutcome::Skip);
    }
    match plan.on_conflict {
        ConflictPolicy::Fail => Err(DqlError::evaluation(
            format!(
                "Insert failed: Identifier conflict on document {}: using FAIL conflict policy",
                doc.id
            ),
            doc.span,
        )),
        ConflictPolicy::DoNothing => Ok(InsertOutcome::Skip),
        ConflictPolicy::DoUpdate => Ok(InsertOutcome::Write(fields_ops(
            &doc.fields,
            &plan.types,
            plan.objects,
            false,
        ))),
        ConflictPolicy::DoUpdateLocalDiff => {
            let current = existing.as_object().cloned().unwrap_or_default();
            let diff = diff_fields(&doc.fields, &current);
            if diff.is_empty() {
                return Ok(InsertOutcome::Write(Vec::new()));
            }
            Ok(InsertOutcome::Write(fields_ops(
                &diff,
                &plan.types,
                plan.objects,
                false,
            )))
        }
    }
}

/// The fields of `new` whose values differ from `current`, recursing into objects.
fn diff_fields(
    new: &BTreeMap<String, Value>,
    current: &BTreeMap<String, Value>,
) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for (k, v) in new {
        match (v, current.get(k)) {
            (Value::Object(n), Some(Value::Object(c))) => {
                let d = diff_fields(n, c);
                if !d.is_empty() {
                    out.insert(k.clone(), Value::Object(d));
                }
            }
            (v, Some(c)) if v == c => {}
            (v, _) => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// A merge of the plain fields plus one operation per field declared with a special type.
fn fields_ops(
    fields: &BTreeMap<String, Value>,
    types: &FieldTypes,
    objects: ObjectMode,
    root: bool,
) -> Vec<Op> {
    let mut plain = fields.clone();
    let mut special = Vec::new();
    for (path, kind) in &types.0 {
        let Some(v) = path_value(fields, path) else {
            continue;
        };
        let op = match kind {
            FieldKind::Counter => match v {
                Value::Int(i) => Some(Op::Restart {
                    path: path.clone(),
                    to: *i,
                }),
                _ => None,
            },
            FieldKind::PnCounter => Some(Op::Increment {
                path: path.clone(),
                by: v.clone(),
                kind: CounterKind::PnCounter,
            }),
            FieldKind::Attachment => Some(Op::Attach {
                path: path.clone(),
                token: v.clone(),
            }),
            FieldKind::Register => Some(Op::Set {
                path: path.clone(),
                value: v.clone(),
                objects: ObjectMode::Register,
            }),
            // In strict mode objects are registers unless declared MAP: a declared map is
            // merged on its own, without its declared fields (their own operations follow).
            FieldKind::Map if objects == ObjectMode::Register => match v {
                Value::Object(o) => {
                    let mut own = o.clone();
                    for inner in types.0.keys() {
                        if inner.len() > path.len() && inner.starts_with(path) {
                            remove_path(&mut own, &inner[path.len()..]);
                        }
                    }
                    Some(Op::Merge {
                        path: path.clone(),
                        value: own,
                        objects,
                    })
                }
                _ => None,
            },
            FieldKind::Map | FieldKind::Default => None,
        };
        if let Some(op) = op {
            remove_path(&mut plain, path);
            special.push(op);
        }
    }
    let mut ops = Vec::with_capacity(1 + special.len());
    if root || !plain.is_empty() {
        ops.push(Op::Merge {
            path: Vec::new(),
            value: plain,
            objects,
        });
    }
    ops.extend(special);
    ops
}

fn path_value<'v>(fields: &'v BTreeMap<String, Value>, path: &[String]) -> Option<&'v Value> {
    let (first, rest) = path.split_first()?;
    fields.get(first)?.get_path(rest)
}

fn remove_path(fields: &mut BTreeMap<String, Value>, path: &[String]) {
    match path {
        [] => {}
        [last] => {
            fields.remove(last);
        }
        [first, rest @ ..] => {
            if let Some(Value::Object(o)) = fields.get_mut(first) {
                remove_path(o, rest);
            }
        }
    }
}

fn value_of(e: &PExpr, doc: &Value, span: Span) -> Result<Value> {
    match eval(
        e,
        &Env {
            doc: Some(doc),
            ..Env::default()
        },
    )? {
        Some(v) => Ok(v.into_owned()),
        None => Err(DqlError::evaluation(
            format!(
                "Update failed: Expected {} to evaluate to a value.",
                crate::plan::describe(e)
            ),
            span,
        )),
    }
}

/// The component a declared type names (REGISTER when undeclared).
fn component(kind: FieldKind) -> Component {
    match kind {
        FieldKind::Default | FieldKind::Register => Component::Register,
        FieldKind::Map => Component::Map,
        FieldKind::Counter => Component::Counter,
        FieldKind::PnCounter => Component::PnCounter,
        FieldKind::Attachment => Component::Attachment,
    }
}

/// In strict mode a nested path must go through fields declared MAP: anything else is a
/// REGISTER, whose value is replaced whole (Ditto: `Unsupported DML operation on REGISTER
/// field "m"` for `SET m.x = 1` without `(m MAP)`).
fn check_strict_path(plan: &UpdatePlan, path: &[String]) -> Result<()> {
    if !plan.strict() {
        return Ok(());
    }
    for n in 1..path.len() {
        if plan.types.kind(&path[..n]) != FieldKind::Map {
            return Err(DqlError::evaluation(
                format!(
                    "Update failed: Unsupported DML operation on REGISTER field \"{}\"",
                    path[..n].join(".")
                ),
                Span::NONE,
            ));
        }
    }
    Ok(())
}

fn action_path(a: &UpdateAction) -> &[String] {
    match a {
        UpdateAction::Set { path, .. }
        | UpdateAction::Unset { path, .. }
        | UpdateAction::PnIncrement { path, .. }
        | UpdateAction::Increment { path, .. }
        | UpdateAction::Restart { path, .. } => path,
    }
}

/// The operations an UPDATE applies to one matched document.
pub fn update_ops(plan: &UpdatePlan, doc: &Value) -> Result<Vec<Op>> {
    let mut ops = Vec::with_capacity(plan.actions.len());
    for a in &plan.actions {
        // Refused for each document it would change (Ditto: a statement that matches nothing
        // succeeds).
        if action_path(a).first().map(String::as_str) == Some("_id") {
            let span = match a {
                UpdateAction::Set { span, .. } => *span,
                _ => Span::NONE,
            };
            return Err(DqlError::evaluation(
                "Update failed: The document id `_id` cannot be modified",
                span,
            ));
        }
        check_strict_path(plan, action_path(a))?;
        ops.push(match a {
            UpdateAction::Set {
                path,
                value,
                kind,
                span,
            } => {
                let v = value_of(value, doc, *span)?;
                match kind {
                    FieldKind::Attachment => Op::Attach {
                        path: path.clone(),
                        token: v,
                    },
                    FieldKind::Register => Op::Set {
                        path: path.clone(),
                        value: v,
                        objects: ObjectMode::Register,
                    },
                    // In map mode, assigning an object merges it into the map: Ditto 5.1 keeps
                    // the keys that are not assigned (`SET o = {'r': 3}` on `{p, q}` gives
                    // `{p, q, r}`).
                    _ => match v {
                        Value::Object(o)
                            if plan.objects == ObjectMode::Map || *kind == FieldKind::Map =>
                        {
                            Op::Merge {
                                path: path.clone(),
                                value: o,
                                objects: plan.objects,
                            }
                        }
                        v => Op::Set {
                            path: path.clone(),
                            value: v,
                            objects: plan.objects,
                        },
                    },
                }
            }
            UpdateAction::Unset { path, kind } if plan.strict() => Op::Remove {
                path: path.clone(),
                component: component(*kind),
            },
            UpdateAction::Unset { path, .. } => Op::Unset { path: path.clone() },
            UpdateAction::PnIncrement { path, by, span, .. } => {
                let v = value_of(by, doc, *span)?;
                if !matches!(v, Value::Int(_) | Value::UInt(_) | Value::Float(_)) {
                    return Err(DqlError::evaluation(
                        format!("Update failed: Expected {v} to be a number"),
                        *span,
                    ));
                }
                Op::Increment {
                    path: path.clone(),
                    by: v,
                    kind: CounterKind::PnCounter,
                }
            }
            UpdateAction::Increment { path, by, span } => {
                let v = value_of(by, doc, *span)?;
                if !matches!(v, Value::Int(_)) {
                    return Err(DqlError::evaluation(
                        format!("Update failed: Expected {v} to be an integer value"),
                        *span,
                    ));
                }
                Op::Increment {
                    path: path.clone(),
                    by: v,
                    kind: CounterKind::Counter,
                }
            }
            UpdateAction::Restart { path, to, span } => {
                let to = match to {
                    None => 0,
                    Some(e) => match value_of(e, doc, *span)? {
                        Value::Int(i) => i,
                        v => {
                            return Err(DqlError::evaluation(
                                format!("Update failed: Expected {v} to be an integer value"),
                                *span,
                            ))
                        }
                    },
                };
                Op::Restart {
                    path: path.clone(),
                    to,
                }
            }
        });
    }
    Ok(ops)
}
