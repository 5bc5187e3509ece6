//! Checking SELECT: projections, grouping and aggregates, ORDER BY, LIMIT/OFFSET.

use std::collections::{BTreeMap, BTreeSet};

use bigpeer_schema::Value;

use super::check::{contains_aggregate, Mode, Resolver};
use super::*;
use crate::ast::{self, Expr, ExprKind};
use crate::error::{DqlError, Result};

/// The output name of an unaliased projection: the last field name, or `($n)`.
fn projection_name(e: &Expr, position: usize) -> String {
    match &e.kind {
        ExprKind::Ident(n) | ExprKind::Member(_, n) => n.clone(),
        _ => format!("(${position})"),
    }
}

pub(super) fn check_select(s: &ast::Select, args: &BTreeMap<String, Value>) -> Result<Plan> {
    let source = if s.from.system {
        if s.from.name.eq_ignore_ascii_case("collections") {
            Source::SystemCollections
        } else {
            return Err(DqlError::unsupported(
                format!("system:{}", s.from.name),
                s.from.span,
            ));
        }
    } else {
        Source::Collection(s.from.name.clone())
    };
    let r = Resolver {
        args,
        qualifier: Some(s.from.alias.clone().unwrap_or_else(|| s.from.name.clone())),
        collection: s.from.name.clone(),
    };
    let filter = s.filter.as_ref().map(|f| r.scalar(f)).transpose()?;

    let has_star = s
        .projections
        .iter()
        .any(|p| matches!(p, ast::Projection::Star(_)));
    if has_star && s.projections.len() > 1 {
        let span = s.projections.iter().find_map(|p| match p {
            ast::Projection::Star(sp) => Some(*sp),
            _ => None,
        });
        return Err(DqlError::invalid(
            "unqualified * with other projection elements is not supported",
            span.unwrap_or_default(),
        ));
    }
    let grouped = !s.group_by.is_empty()
        || s.having.is_some()
        || s.projections
            .iter()
            .any(|p| matches!(p, ast::Projection::Expr { expr, .. } if contains_aggregate(expr)))
        || s.order_by.iter().any(|o| contains_aggregate(&o.expr));

    // Output names.
    let mut names = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, p) in s.projections.iter().enumerate() {
        if let ast::Projection::Expr { expr, alias } = p {
            let name = alias
                .clone()
                .unwrap_or_else(|| projection_name(expr, i + 1));
            if !seen.insert(name.clone()) {
                return Err(DqlError::invalid(
                    format!("Duplicate term \"{name}\" in projection list"),
                    expr.span,
                ));
            }
            names.push(name);
        } else {
            names.push(String::new());
        }
    }

    let mut keys_text = Vec::new();
    let mut keys = Vec::new();
    for k in &s.group_by {
        if contains_aggregate(k) {
            return Err(DqlError::invalid(
                "Forbidden: Use of aggregates limited to projections, HAVING and ORDER BY clauses",
                k.span,
            ));
        }
        keys.push(r.scalar(k)?);
        keys_text.push(k.to_string());
    }
    let mut aggs = Vec::new();
    let mut fields = Vec::new();
    let mut star = false;
    for (p, name) in s.projections.iter().zip(&names) {
        match p {
            ast::Projection::Star(span) | ast::Projection::QualifiedStar(_, span) => {
                if let ast::Projection::QualifiedStar(q, _) = p {
                    if Some(q) != r.qualifier.as_ref() {
                        return Err(DqlError::invalid(
                            format!("Unknown collection or alias \"{q}\""),
                            *span,
                        ));
                    }
                }
                if grouped {
                    return Err(DqlError::invalid(
                        "Projection \"*\" must depend only on group keys or aggregates",
                        *span,
                    ));
                }
                star = true;
            }
            ast::Projection::Expr { expr, .. } => {
                let pe = if grouped {
                    r.resolve(
                        expr,
                        &mut Mode::Grouped {
                            keys: &keys_text,
                            aggs: &mut aggs,
                            label: name,
                        },
                    )?
                } else {
                    r.scalar(expr)?
                };
                fields.push((name.clone(), pe));
            }
        }
    }
    let having = match &s.having {
        Some(h) => {
            let label = h.to_string();
            Some(r.resolve(
                h,
                &mut Mode::Grouped {
                    keys: &keys_text,
                    aggs: &mut aggs,
                    label: &label,
                },
            )?)
        }
        None => None,
    };
    let mut order_by = Vec::new();
    for o in &s.order_by {
        let by_alias = match &o.expr.kind {
            ExprKind::Ident(n) => fields
                .iter()
                .find(|(name, _)| name == n)
                .map(|(_, e)| e.clone()),
            _ => None,
        };
        let e = match by_alias {
            Some(e) => e,
            None if grouped => {
                let label = o.expr.to_string();
                r.resolve(
                    &o.expr,
                    &mut Mode::Grouped {
                        keys: &keys_text,
                        aggs: &mut aggs,
                        label: &label,
                    },
                )?
            }
            None => r.scalar(&o.expr)?,
        };
        order_by.push((e, o.desc));
    }
    let projection = if star {
        Projection::Document { extra: fields }
    } else {
        Projection::Fields(fields)
    };
    Ok(Plan::Select(SelectPlan {
        source,
        filter,
        distinct: s.distinct,
        projection,
        grouping: grouped.then_some(Grouping {
            keys,
            aggregates: aggs,
            having,
        }),
        order_by,
        limit: s.limit.as_ref().map(|l| r.count(l, "LIMIT")).transpose()?,
        offset: s
            .offset
            .as_ref()
            .map(|o| r.count(o, "OFFSET"))
            .transpose()?,
        view: None,
    }))
}
