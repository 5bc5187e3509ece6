//! `EXPLAIN`: the plan as a JSON document shaped like Ditto's (`{"plan": {"#operator": ...}}`).

use bigpeer_schema::Value;
use serde_json::json;

use super::display::{agg_name, describe};
use super::{Plan, Projection, RemoveKind, Source, Target};

fn scan(collection: &str) -> serde_json::Value {
    json!({"#operator": "scan", "alias": collection, "collection": collection, "datasource": "default"})
}

fn target_ops(t: &Target, out: &mut Vec<serde_json::Value>) {
    out.push(scan(&t.collection));
    if let Some(f) = &t.filter {
        out.push(json!({"#operator": "filter", "condition": describe(f)}));
    }
    if !t.order_by.is_empty() {
        let terms: Vec<_> = t
            .order_by
            .iter()
            .map(|(e, d)| json!({"expr": describe(e), "desc": d}))
            .collect();
        out.push(json!({"#operator": "order", "sort_terms": terms}));
    }
    if t.offset.is_some() || t.limit.is_some() {
        out.push(json!({"#operator": "window", "offset": t.offset, "limit": t.limit}));
    }
}

/// The EXPLAIN item for a plan.
pub fn explain(plan: &Plan) -> Value {
    let mut children = Vec::new();
    match plan {
        Plan::Select(s) => {
            match &s.source {
                Source::Collection(c) => children.push(scan(c)),
                Source::SystemCollections => children.push(scan("system:collections")),
            }
            if let Some(f) = &s.filter {
                children.push(json!({"#operator": "filter", "condition": describe(f)}));
            }
            if let Some(g) = &s.grouping {
                let keys: Vec<_> = g.keys.iter().map(describe).collect();
                let aggs: Vec<_> = g
                    .aggregates
                    .iter()
                    .map(|a| {
                        let arg = a.arg.as_ref().map_or_else(|| "*".to_owned(), describe);
                        format!("{}({}{arg})", agg_name(a.func), if a.distinct { "DISTINCT " } else { "" })
                    })
                    .collect();
                children.push(json!({"#operator": "group", "keys": keys, "aggregates": aggs}));
                if let Some(h) = &g.having {
                    children.push(json!({"#operator": "having", "condition": describe(h)}));
                }
            }
            if !s.order_by.is_empty() {
                let terms: Vec<_> = s.order_by.iter().map(|(e, d)| json!({"expr": describe(e), "desc": d})).collect();
                children.push(json!({"#operator": "order", "sort_terms": terms}));
            }
            let projections: Vec<_> = match &s.projection {
                Projection::Document { extra } => std::iter::once(json!({"wildcard": true}))
                    .chain(extra.iter().map(|(n, e)| json!({"as": n, "expression": describe(e)})))
                    .collect(),
                Projection::Fields(f) => f.iter().map(|(n, e)| json!({"as": n, "expression": describe(e)})).collect(),
            };
            children.push(json!({"#operator": "projection", "distinct": s.distinct, "projections": projections}));
            if s.offset.is_some() || s.limit.is_some() {
                children.push(json!({"#operator": "window", "offset": s.offset, "limit": s.limit}));
            }
        }
        Plan::Insert(i) => {
            children.push(json!({"#operator": "insert", "collection": i.collection, "documents": i.documents.len()}))
        }
        Plan::Update(u) => {
            target_ops(&u.target, &mut children);
            children.push(json!({"#operator": "update", "actions": u.actions.len()}));
        }
        Plan::Remove(r) => {
            target_ops(&r.target, &mut children);
            let op = if r.kind == RemoveKind::Evict { "evict" } else { "delete" };
            children.push(json!({"#operator": op}));
        }
        Plan::AlterSystem { .. } | Plan::Show { .. } | Plan::Explain(_) => {
            children.push(json!({"#operator": "system"}))
        }
    }
    Value::from_json(json!({"plan": {"#operator": "sequence", "children": children}}))
}
