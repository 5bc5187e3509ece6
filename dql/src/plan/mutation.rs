//! Checking INSERT and UPDATE: documents evaluated, ids validated, assignments resolved.

use std::collections::{BTreeMap, BTreeSet};

use bigpeer_schema::{DocId, ObjectMode, Value};

use super::check::{Mode, Resolver};
use super::*;
use crate::ast;
use crate::error::{DqlError, ErrorCode, Result};

/// Ditto's name for a value's type in insert errors.
fn insert_type_name(v: &Value) -> &'static str {
    match v {
        Value::Int(_) | Value::UInt(_) | Value::Float(_) => "number",
        other => other.type_name(),
    }
}

/// Why a document expression evaluated to MISSING: for `deserialize_json` of text that is not
/// JSON (MISSING in a query, an error here, as Ditto), the parser's complaint.
fn missing_document_reason(pe: &crate::plan::PExpr) -> String {
    use crate::plan::{Func, PExpr};
    if let PExpr::Call(Func::DeserializeJson, args) = pe {
        if let Some(Ok(Some(Value::String(text)))) = args.first().map(crate::eval::eval_const) {
            if let Err(e) = Value::parse_json(&text) {
                return format!("Error in deserialize_json when parsing json: {e}");
            }
        }
    }
    "Evaluates to missing instead of an object".to_owned()
}

pub(super) fn check_insert(
    i: &ast::Insert,
    args: &BTreeMap<String, Value>,
    objects: ObjectMode,
) -> Result<Plan> {
    if i.collection.system {
        return Err(DqlError::invalid(
            format!("system:{} cannot be modified", i.collection.name),
            i.collection.span,
        ));
    }
    let r = Resolver::constant(args);
    let mut documents = Vec::new();
    let mut seen = BTreeSet::new();
    for d in &i.documents {
        let pe = r.resolve(d, &mut Mode::Constant)?;
        let value = crate::eval::eval_const(&pe)?;
        let mut fields = match value {
            Some(Value::Object(o)) => o,
            Some(other) => {
                return Err(DqlError::invalid(
                    format!(
                        "{d} is an invalid insert expression: Evaluates to a(n) {} instead of an object",
                        insert_type_name(&other)
                    ),
                    d.span,
                ))
            }
            None => {
                return Err(DqlError::invalid(
                    format!(
                        "{d} is an invalid insert expression: {}",
                        missing_document_reason(&pe)
                    ),
                    d.span,
                ))
            }
        };
        let id = match fields.remove("_id") {
            Some(Value::Null) => {
                return Err(DqlError::invalid(
                    format!("{d} is an invalid insert expression: Invalid document id: `Null document ID not allowed`"),
                    d.span,
                ))
            }
            Some(Value::Float(_)) => {
                return Err(DqlError::invalid(
                    format!(
                        "{d} is an invalid insert expression: Invalid document id: `Invalid value in document ID. Floats are not supported in document IDs.`"
                    ),
                    d.span,
                ))
            }
            Some(v) => DocId::new(v).map_err(|e| {
                DqlError::invalid(format!("{d} is an invalid insert expression: Invalid document id: `{e}`"), d.span)
            })?,
            None => DocId::generate(),
        };
        if !seen.insert(id.key()) {
            return Err(DqlError::invalid(
                format!("Expected unique document identifiers. Document id {id} is a duplicate"),
                d.span,
            ));
        }
        documents.push(InsertDoc {
            id,
            fields,
            span: d.span,
        });
    }
    Ok(Plan::Insert(InsertPlan {
        collection: i.collection.name.clone(),
        documents,
        on_conflict: i.on_conflict.unwrap_or(ast::ConflictPolicy::Fail),
        initial: i.initial,
        objects,
        types: FieldTypes::from_defs(&i.collection.types),
    }))
}

pub(super) fn check_update(
    u: &ast::Update,
    args: &BTreeMap<String, Value>,
    objects: ObjectMode,
) -> Result<Plan> {
    let r = Resolver::new(args, &u.collection)?;
    let types = FieldTypes::from_defs(&u.collection.types);
    let mut actions = Vec::new();
    let counter_error = |path: &ast::FieldPath| {
        DqlError::new(
            ErrorCode::Evaluation,
            format!(
                "Update failed: Unsupported DML operation on STCOUNTER field \"{}\"",
                path.keys.join(".")
            ),
            path.span,
        )
    };
    for a in &u.apply {
        let kind = types.kind(&a.path.keys);
        let path = a.path.keys.clone();
        let span = a.path.span;
        actions.push(match &a.op {
            ast::ApplyOp::PnIncrement(by) => {
                if kind == FieldKind::Counter {
                    return Err(counter_error(&a.path));
                }
                UpdateAction::PnIncrement {
                    path,
                    by: r.scalar(by)?,
                    kind,
                    span,
                }
            }
            ast::ApplyOp::Increment(by) => UpdateAction::Increment {
                path,
                by: r.scalar(by)?,
                span,
            },
            ast::ApplyOp::Restart(to) => UpdateAction::Restart {
                path,
                to: to.as_ref().map(|t| r.scalar(t)).transpose()?,
                span,
            },
        });
    }
    for s in &u.set {
        let kind = types.kind(&s.path.keys);
        if kind == FieldKind::Counter {
            return Err(counter_error(&s.path));
        }
        actions.push(UpdateAction::Set {
            path: s.path.keys.clone(),
            value: r.scalar(&s.value)?,
            kind,
            span: s.value.span,
        });
    }
    for p in &u.unset {
        actions.push(UpdateAction::Unset {
            path: p.keys.clone(),
            kind: types.kind(&p.keys),
        });
    }
    Ok(Plan::Update(UpdatePlan {
        target: r.target(&u.filter, &u.order_by, &u.limit, &u.offset)?,
        actions,
        objects,
        types,
    }))
}
