//! SELECT over in-memory documents, and the target documents of mutations.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use bigpeer_schema::{DocId, Value};

use super::expr::{eval, is_true, Env};
use super::group::{aggregate, group_rows};
use super::ops::order_cmp;
use crate::error::Result;
use crate::plan::{PExpr, Projection, SelectPlan, Target};

/// The storage key of a document (`DocId::key()` of its `_id`); empty when it has none.
pub fn storage_key(doc: &Value) -> Vec<u8> {
    doc.as_object()
        .and_then(|o| o.get("_id"))
        .and_then(|id| DocId::new(id.clone()).ok())
        .map(|id| id.key())
        .unwrap_or_default()
}

/// The documents `SELECT * FROM system:collections` reads, for the given collection names.
pub fn system_collection_docs(names: &[String]) -> Vec<Value> {
    names
        .iter()
        .map(|n| {
            let mut o = BTreeMap::new();
            o.insert("_id".to_owned(), Value::String(format!("default:{n}")));
            o.insert("datasource".to_owned(), Value::String("default".to_owned()));
            o.insert("name".to_owned(), Value::String(n.clone()));
            Value::Object(o)
        })
        .collect()
}

type Keyed<'a> = (Vec<Option<Value>>, Vec<u8>, &'a Value);

fn sort_keys(order_by: &[(PExpr, bool)], env: &Env<'_>) -> Result<Vec<Option<Value>>> {
    order_by
        .iter()
        .map(|(e, _)| Ok(eval(e, env)?.map(|v| v.into_owned())))
        .collect()
}

fn cmp_keys(order_by: &[(PExpr, bool)], a: &[Option<Value>], b: &[Option<Value>]) -> Ordering {
    for (((_, desc), x), y) in order_by.iter().zip(a).zip(b) {
        let c = order_cmp(x.as_ref(), y.as_ref());
        let c = if *desc { c.reverse() } else { c };
        if c != Ordering::Equal {
            return c;
        }
    }
    Ordering::Equal
}

fn window<T>(items: Vec<T>, limit: Option<u64>, offset: Option<u64>) -> Vec<T> {
    let skip = usize::try_from(offset.unwrap_or(0)).unwrap_or(usize::MAX);
    let take = limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    items.into_iter().skip(skip).take(take).collect()
}

/// Filters and orders documents: by the sort keys, ties (and no ORDER BY) in storage order.
fn filter_sort<'a>(
    docs: impl IntoIterator<Item = &'a Value>,
    filter: Option<&PExpr>,
    order_by: &[(PExpr, bool)],
) -> Result<Vec<Keyed<'a>>> {
    let mut rows = Vec::new();
    for d in docs {
        let env = Env {
            doc: Some(d),
            ..Env::default()
        };
        if let Some(f) = filter {
            if !is_true(f, &env)? {
                continue;
            }
        }
        rows.push((sort_keys(order_by, &env)?, storage_key(d), d));
    }
    // Ties under ORDER BY go by `_id` in DQL's value order (as the SDK does); without ORDER BY
    // the order is the storage order.
    let id = |d: &Value| d.as_object().and_then(|o| o.get("_id")).cloned();
    rows.sort_by(|a, b| {
        let c = cmp_keys(order_by, &a.0, &b.0);
        if order_by.is_empty() {
            c.then_with(|| a.1.cmp(&b.1))
        } else {
            c.then_with(|| order_cmp(id(a.2).as_ref(), id(b.2).as_ref()))
                .then_with(|| a.1.cmp(&b.1))
        }
    });
    if order_by.is_empty() {
        if let Some(ids) = crate::plan::id_lookup_order(filter) {
            let pos = |d: &Value| {
                let id = d.as_object().and_then(|o| o.get("_id"));
                ids.iter()
                    .position(|i| order_cmp(Some(i), id) == Ordering::Equal)
                    .unwrap_or(usize::MAX)
            };
            rows.sort_by_key(|r| pos(r.2));
        }
    }
    Ok(rows)
}

/// The documents a mutation works on, in order.
pub fn targets<'a>(
    target: &Target,
    docs: impl IntoIterator<Item = &'a Value>,
) -> Result<Vec<&'a Value>> {
    let rows = filter_sort(docs, target.filter.as_ref(), &target.order_by)?;
    Ok(window(
        rows.into_iter().map(|r| r.2).collect(),
        target.limit,
        target.offset,
    ))
}

fn project(projection: &Projection, env: &Env<'_>) -> Result<Value> {
    let (mut out, fields) = match projection {
        Projection::Document { extra } => {
            let base = env
                .doc
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            (base, extra)
        }
        Projection::Fields(fields) => (BTreeMap::new(), fields),
    };
    for (name, e) in fields {
        if let Some(v) = eval(e, env)? {
            out.insert(name.clone(), v.into_owned());
        }
    }
    Ok(Value::Object(out))
}

fn distinct(items: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(items.len());
    for i in items {
        if !out
            .iter()
            .any(|o| order_cmp(Some(o), Some(&i)) == Ordering::Equal)
        {
            out.push(i);
        }
    }
    out
}

/// Runs a SELECT over documents (each an object with `_id`), giving the result items.
pub fn select<'a>(
    plan: &SelectPlan,
    docs: impl IntoIterator<Item = &'a Value>,
) -> Result<Vec<Value>> {
    let Some(grouping) = &plan.grouping else {
        let rows = filter_sort(docs, plan.filter.as_ref(), &plan.order_by)?;
        let mut items = Vec::with_capacity(rows.len());
        for (_, _, d) in &rows {
            items.push(project(
                &plan.projection,
                &Env {
                    doc: Some(d),
                    ..Env::default()
                },
            )?);
        }
        if plan.distinct {
            items = distinct(items);
        }
        return Ok(window(items, plan.limit, plan.offset));
    };
    let rows = filter_sort(docs, plan.filter.as_ref(), &[])?;
    let groups = group_rows(&grouping.keys, rows.iter().map(|r| r.2))?;
    let mut out = Vec::new();
    for (keys, members) in groups {
        let aggs = grouping
            .aggregates
            .iter()
            .map(|a| aggregate(a, &members))
            .collect::<Result<Vec<_>>>()?;
        let env = Env {
            doc: None,
            keys: &keys,
            aggs: &aggs,
        };
        if let Some(h) = &grouping.having {
            if !is_true(h, &env)? {
                continue;
            }
        }
        out.push((
            sort_keys(&plan.order_by, &env)?,
            project(&plan.projection, &env)?,
        ));
    }
    out.sort_by(|a, b| cmp_keys(&plan.order_by, &a.0, &b.0));
    let mut items: Vec<Value> = out.into_iter().map(|(_, v)| v).collect();
    if plan.distinct {
        items = distinct(items);
    }
    Ok(window(items, plan.limit, plan.offset))
}
