//! Point lookups: when a statement's filter can only match documents with given ids, the store
//! reads just those rows instead of the whole collection.
//!
//! The executor applies the full filter again, so reading a superset of the matching documents
//! gives the same answer as a full scan. Only ids that DQL equality cannot match in another
//! spelling qualify: a constant that is not a valid document id (a float, `null`, anything with
//! a float inside, which `=` compares numerically) turns the shortcut off.

use bigpeer_dql::plan::{CmpOp, PExpr, Plan, Source};
use bigpeer_schema::{DocId, Value};

/// The collection a plan scans and the only ids its filter can match, when it says so.
pub fn candidates(plan: &Plan) -> Option<(&str, Vec<DocId>)> {
    let (collection, filter) = match plan {
        Plan::Select(s) => match &s.source {
            Source::Collection(c) => (c.as_str(), s.filter.as_ref()),
            Source::SystemCollections => return None,
        },
        Plan::Update(u) => (u.target.collection.as_str(), u.target.filter.as_ref()),
        Plan::Remove(r) => (r.target.collection.as_str(), r.target.filter.as_ref()),
        Plan::Insert(_) | Plan::AlterSystem { .. } | Plan::Show { .. } | Plan::Explain(_) => {
            return None
        }
    };
    Some((collection, ids(filter?)?))
}

fn is_id(e: &PExpr) -> bool {
    matches!(e, PExpr::Field(p) if p.len() == 1 && p[0] == "_id")
}

/// Constant expressions (literals, parameters, `[..]` and `{..}` of constants) as ids.
fn literal_ids<'a>(items: impl IntoIterator<Item = &'a PExpr>) -> Option<Vec<DocId>> {
    items
        .into_iter()
        .map(|e| {
            let v = bigpeer_dql::eval::eval_const(e).ok().flatten()?;
            DocId::new(v).ok()
        })
        .collect()
}

fn ids(filter: &PExpr) -> Option<Vec<DocId>> {
    match filter {
        PExpr::Cmp(CmpOp::Eq, a, b) if is_id(a) => literal_ids([b.as_ref()]),
        PExpr::Cmp(CmpOp::Eq, a, b) if is_id(b) => literal_ids([a.as_ref()]),
        PExpr::InList {
            expr,
            list,
            negated: false,
        } if is_id(expr) => literal_ids(list),
        PExpr::InArray {
            expr,
            array,
            negated: false,
        } if is_id(expr) => match array.as_ref() {
            PExpr::Array(items) => literal_ids(items),
            PExpr::Lit(Value::Array(items)) => {
                items.iter().map(|v| DocId::new(v.clone()).ok()).collect()
            }
            _ => None,
        },
        // A conjunction matches a subset of what any of its terms matches.
        PExpr::All(terms) => terms.iter().find_map(ids),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn check(statement: &str, args: &[(&str, Value)]) -> Option<String> {
        let args: BTreeMap<String, Value> = args
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let stmt = bigpeer_dql::parse(statement).expect("parses");
        let plan = bigpeer_dql::plan::check(&stmt, &args).expect("checks");
        candidates(&plan).map(|(c, ids)| {
            let ids: Vec<String> = ids.iter().map(|i| i.value().to_json_string()).collect();
            format!("{c}: {}", ids.join(" "))
        })
    }

    #[test]
    fn id_filters_give_candidates() {
        let cases: &[(&str, Option<&str>)] = &[
            ("SELECT * FROM c WHERE _id = 'a'", Some(r#"c: "a""#)),
            ("SELECT * FROM c WHERE 'a' = _id", Some(r#"c: "a""#)),
            ("SELECT * FROM c WHERE _id IN ['a', 1]", Some(r#"c: "a" 1"#)),
            (
                "SELECT * FROM c WHERE _id IN ('a', {'x': 1})",
                Some(r#"c: "a" {"x":1}"#),
            ),
            (
                "UPDATE c SET n = 1 WHERE n > 1 AND _id = 'b'",
                Some(r#"c: "b""#),
            ),
            ("DELETE FROM c WHERE _id = :id", Some(r#"c: "p""#)),
            ("EVICT FROM c WHERE _id = [1, 'x']", Some(r#"c: [1,"x"]"#)),
            (
                "SELECT * FROM c WHERE _id = {'k': :id}",
                Some(r#"c: {"k":"p"}"#),
            ),
            // Not a point lookup, or not one equality can be trusted with.
            ("SELECT * FROM c WHERE _id = 1.0", None),
            ("SELECT * FROM c WHERE _id = null", None),
            ("SELECT * FROM c WHERE _id IN ['a', 1.5]", None),
            ("SELECT * FROM c WHERE _id = 'a' OR n = 1", None),
            ("SELECT * FROM c WHERE _id != 'a'", None),
            ("SELECT * FROM c WHERE _id NOT IN ['a']", None),
            ("SELECT * FROM c WHERE n = 'a'", None),
            ("SELECT * FROM c WHERE _id = n", None),
            ("SELECT * FROM c WHERE _id = _id", None),
            ("SELECT * FROM c WHERE _id = {'x': [1, 2.5]}", None),
            ("SELECT * FROM c", None),
            ("SELECT * FROM system:collections WHERE _id = 'a'", None),
            ("INSERT INTO c DOCUMENTS ({'_id': 'a'})", None),
        ];
        for (statement, want) in cases {
            let got = check(statement, &[("id", Value::String("p".into()))]);
            assert_eq!(got.as_deref(), *want, "{statement}");
        }
    }
}

#[cfg(test)]
mod differential {
    use std::collections::BTreeMap;

    use bigpeer_dql::memstore::MemStore;
    use bigpeer_schema::Value;

    use crate::Store;

    /// Point lookups read a few rows; the answers must be those of a full scan.
    #[test]
    fn point_lookups_answer_as_full_scans() {
        let mut mem = MemStore::new();
        let mut peer = Store::open_in_memory().expect("open");
        let statements = [
            "INSERT INTO c DOCUMENTS ({'_id': 'a', 'n': 1}), ({'_id': 'b', 'n': 2}), ({'_id': 1, 'n': 3}), ({'_id': [1, 'x'], 'n': 4}), ({'_id': {'k': 1}, 'n': 5})",
            "DELETE FROM c WHERE _id = 'b'",
            "SELECT * FROM c WHERE _id = 'b'",
            "SELECT * FROM c WHERE _id IN ['zz', 1, 'a', 'a', {'k': 1}]",
            "SELECT n FROM c WHERE _id IN [[1, 'x'], 'a'] ORDER BY n DESC",
            "SELECT count(*) AS k FROM c WHERE _id = 'a' AND n > 0",
            "SELECT * FROM c WHERE _id = 1.0",
            "UPDATE c SET n = n + 10 WHERE _id IN ['a', 1, 'missing']",
            "UPDATE c SET n = 0 WHERE _id = 'b'",
            "SELECT * FROM c",
            "EVICT FROM c WHERE _id = {'k': 1}",
            "DELETE FROM c WHERE _id = [1, 'x'] AND n = 4",
            "INSERT INTO c DOCUMENTS ({'_id': 'b', 'fresh': true})",
            "SELECT * FROM c WHERE _id = 'b'",
            "SELECT * FROM c",
        ];
        for s in statements {
            let want = mem.execute(s, &BTreeMap::new()).expect(s);
            let got = peer.execute(s, &BTreeMap::new()).expect(s);
            assert_eq!(
                Value::Array(got.items).to_json_string(),
                Value::Array(want.items).to_json_string(),
                "{s}"
            );
            assert_eq!(got.mutated_ids, want.mutated_ids, "{s}");
        }
    }
}
