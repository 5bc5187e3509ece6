//! The Postgres backend: a plan becomes ONE parameterised SQL statement over the `documents`
//! table (see `sql/0001_documents.sql`), using the helpers of `sql/0002_dql_functions.sql`.
//!
//! The statement is built as one `sqlparser::ast` tree and printed once: expressions are made
//! node by node, clauses by filling in constant templates that are parsed once per process
//! (`template.rs`, the only place that parses SQL). Every user value (literals, parameters,
//! field names, the collection) is a bind parameter `$n`.
//!
//! Index use: `a.b = <scalar>` conjuncts of the WHERE add `value @> $n::jsonb` (GIN
//! `jsonb_path_ops`); `_id = <id>` and `_id IN [...]` add `id = $n` / `id = ANY($n)` (primary key).
//!
//! Strict mode: expressions read `dql_view(value, shape, $decl)`, the document as the
//! statement's type declarations see it (`sql/0005_documents_shape.sql`), instead of `value`.
//! Only the primary-key conditions are added then: a field's register can sit behind its newer
//! map, so the view is not a part of `value` and a `value @>` condition could drop a match.

mod build;
mod expr;
mod template;

pub use expr::{compile as compile_expr, truth, Params, Scope};

use bigpeer_schema::{DocId, TypeView, Value};
use sqlparser::ast::Expr;

use crate::ast::Span;
use crate::error::{DqlError, Result};
use crate::plan::{CmpOp, PExpr, Plan, Projection, SelectPlan, Source, Target};
use build::*;
use expr::{aggregate, constant_bool, sort_terms};
use template::Table;

/// A bind parameter. The server binds `$1..$n` in order, with the SQL type given in the text
/// (`$n::jsonb`, `$n::text`, `$n::bytea`, `$n::bytea[]`, `$n::bigint`).
#[derive(Debug, Clone, PartialEq)]
pub enum SqlParam {
    Text(String),
    Jsonb(serde_json::Value),
    Bytea(Vec<u8>),
    ByteaArray(Vec<Vec<u8>>),
    Int8(i64),
}

/// One SQL statement and its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    pub sql: String,
    pub params: Vec<SqlParam>,
}

/// What the server runs for a plan.
#[derive(Debug, Clone, PartialEq)]
pub enum CompiledPlan {
    /// SELECT: every row has one `jsonb` column `item`, in result order.
    Query(Compiled),
    /// UPDATE / DELETE / EVICT / INSERT: `targets` finds the documents (rows: `id bytea`) in a
    /// snapshot; then, inside the write transaction, lock and load each one, check the filter
    /// again on its newest state, compute its operations with [`crate::eval::update_ops`] /
    /// [`crate::eval::insert_ops`] (or `Op::Delete`, or removal for EVICT) and write it back.
    Mutation { targets: Compiled },
    /// ALTER SYSTEM, SHOW, EXPLAIN: answered without touching documents.
    NoSql,
}

fn internal(msg: String) -> DqlError {
    DqlError::evaluation(format!("internal error: {msg}"), Span::NONE)
}

/// Compiles a plan for Postgres.
pub fn compile(plan: &Plan) -> Result<CompiledPlan> {
    compile_within(plan, None)
}

/// Compiles a plan for Postgres, seeing only the documents for which `permission` is true (a
/// read permission): for a SELECT the rows it reads, for an UPDATE / DELETE / EVICT its targets.
///
/// The permission is evaluated on the whole stored document, never on a strict-mode view (the
/// statement's type declarations cannot bend it), and always before the statement's own
/// filter (`CASE WHEN permission THEN filter ELSE false END`): an error that the filter would
/// raise on a document outside the permission can never happen, so no answer depends on the
/// content of documents the caller may not read. INSERT targets are known by id and are
/// checked by the caller on the locked documents.
pub fn compile_within(plan: &Plan, permission: Option<&PExpr>) -> Result<CompiledPlan> {
    Ok(match plan {
        Plan::Select(s) => CompiledPlan::Query(compile_select(s, permission)?),
        Plan::Update(u) => CompiledPlan::Mutation {
            targets: compile_targets(&u.target, permission)?,
        },
        Plan::Remove(r) => CompiledPlan::Mutation {
            targets: compile_targets(&r.target, permission)?,
        },
        Plan::Insert(i) => {
            // SELECT id FROM documents WHERE collection = $1 AND id = ANY($2)
            let mut p = Params::default();
            let coll = p.text(&i.collection);
            let ids = p.add(SqlParam::ByteaArray(
                i.documents.iter().map(|d| d.id.key()).collect(),
            ));
            let mut scan = template::Select::new(vec![(col("id"), None)], Table::Documents);
            scan.conds = vec![
                bin(col("collection"), sqlparser::ast::BinaryOperator::Eq, coll),
                bin(
                    col("id"),
                    sqlparser::ast::BinaryOperator::Eq,
                    call("ANY", vec![cast(ids, bytea_array())]),
                ),
            ];
            CompiledPlan::Mutation {
                targets: built(template::build(scan), p)?,
            }
        }
        Plan::AlterSystem { .. } | Plan::Show { .. } | Plan::Explain(_) => CompiledPlan::NoSql,
    })
}

fn conjuncts(e: &PExpr) -> Vec<&PExpr> {
    match e {
        PExpr::All(items) => items.iter().flat_map(conjuncts).collect(),
        other => vec![other],
    }
}

fn nested(path: &[String], v: &Value) -> Value {
    path.iter().rev().fold(v.clone(), |acc, k| {
        let mut m = std::collections::BTreeMap::new();
        m.insert(k.clone(), acc);
        Value::Object(m)
    })
}

/// The document expressions are evaluated on: the `value` column, or in strict mode the view
/// of the statement's type declarations (`dql_view`, `sql/0005_documents_shape.sql`).
fn doc_expr(view: Option<&TypeView>, p: &mut Params) -> Expr {
    match view {
        None => col("value"),
        Some(v) => call(
            "dql_view",
            vec![col("value"), col("shape"), p.jsonb(&v.to_json())],
        ),
    }
}

/// Index-friendly conditions implied by the filter (the filter itself is still applied). In
/// strict mode only the primary key ones: the view is not a part of `value` (a field's register
/// may sit behind its newer map), so `value @> ...` could drop matching documents.
fn prefilters(filter: &PExpr, view: Option<&TypeView>, p: &mut Params) -> Vec<Expr> {
    let mut out = Vec::new();
    let is_id = |path: &[String]| path.len() == 1 && path[0] == "_id";
    for c in conjuncts(filter) {
        match c {
            PExpr::Cmp(CmpOp::Eq, a, b) => {
                let (path, v) = match (a.as_ref(), b.as_ref()) {
                    (PExpr::Field(path), PExpr::Lit(v)) | (PExpr::Lit(v), PExpr::Field(path)) => {
                        (path, v)
                    }
                    _ => continue,
                };
                if is_id(path) {
                    if let Ok(id) = DocId::new(v.clone()) {
                        out.push(bin(
                            col("id"),
                            sqlparser::ast::BinaryOperator::Eq,
                            p.bytea(id.key()),
                        ));
                    }
                } else if view.is_none()
                    && matches!(
                        v,
                        Value::Bool(_)
                            | Value::Int(_)
                            | Value::UInt(_)
                            | Value::Float(_)
                            | Value::String(_)
                    )
                {
                    out.push(bin(
                        col("value"),
                        sqlparser::ast::BinaryOperator::AtArrow,
                        p.jsonb(&nested(path, v)),
                    ));
                }
            }
            PExpr::InList {
                expr,
                negated: false,
                ..
            }
            | PExpr::InArray {
                expr,
                negated: false,
                ..
            } if matches!(expr.as_ref(), PExpr::Field(path) if is_id(path)) => {
                let Some(ids) = crate::plan::id_lookup_order(Some(c)) else {
                    continue;
                };
                let keys: Option<Vec<Vec<u8>>> = ids
                    .into_iter()
                    .map(|v| DocId::new(v).ok().map(|d| d.key()))
                    .collect();
                if let Some(keys) = keys {
                    let arr = cast(p.add(SqlParam::ByteaArray(keys)), bytea_array());
                    out.push(bin(
                        col("id"),
                        sqlparser::ast::BinaryOperator::Eq,
                        call("ANY", vec![arr]),
                    ));
                }
            }
            _ => {}
        }
    }
    out
}

/// The table a source reads and the columns that order its rows when nothing else does.
fn source(src: &Source) -> (Table, &'static [&'static str]) {
    match src {
        Source::Collection(_) => (Table::Documents, &["id"]),
        Source::SystemCollections => (Table::SystemCollections, &["klen", "kbytes"]),
    }
}

/// Ties under ORDER BY go by `_id` in DQL's value order.
fn id_tie_break() -> Vec<(Expr, bool)> {
    let id = bin(
        col("value"),
        sqlparser::ast::BinaryOperator::Arrow,
        constant("_id"),
    );
    sort_terms(id).into_iter().map(|t| (t, false)).collect()
}

fn order_exprs(
    order_by: &[(PExpr, bool)],
    scope: &Scope,
    p: &mut Params,
) -> Result<Vec<(Expr, bool)>> {
    let mut out = Vec::new();
    for (k, desc) in order_by {
        for t in sort_terms(compile_expr(k, scope, p)?) {
            out.push((t, *desc));
        }
    }
    Ok(out)
}

fn item_expr(projection: &Projection, scope: &Scope, p: &mut Params) -> Result<Expr> {
    let (out, fields) = match projection {
        Projection::Document { extra } => (
            scope.doc.clone().unwrap_or_else(|| jsonb_constant("{}")),
            extra,
        ),
        Projection::Fields(f) => (jsonb_constant("{}"), f),
    };
    let mut sets = Vec::with_capacity(fields.len());
    for (name, e) in fields {
        let v = compile_expr(e, scope, p)?;
        sets.push((p.text(name), v));
    }
    Ok(expr::object_with(out, sets))
}

/// `SELECT <item> AS item FROM <from> WHERE <conds> ORDER BY <order> LIMIT .. OFFSET ..`,
/// keeping only the first of equal items: `SELECT item FROM (SELECT item, min(ord) AS ord
/// FROM (SELECT <item> AS item, row_number() OVER (ORDER BY <order>) AS ord FROM <from> WHERE
/// <conds>) AS s GROUP BY item) AS d ORDER BY ord LIMIT .. OFFSET ..`.
fn items(
    item: Expr,
    from: Table,
    conds: Vec<Expr>,
    order: Vec<(Expr, bool)>,
    (limit, offset): (Option<Expr>, Option<Expr>),
    distinct: bool,
) -> Option<sqlparser::ast::Query> {
    let alias = |a: &str| Some(a.to_owned());
    if !distinct {
        let mut q = template::Select::new(vec![(item, alias("item"))], from);
        q.conds = conds;
        q.order = order;
        (q.limit, q.offset) = (limit, offset);
        return template::build(q);
    }
    let ord = template::row_number(order)?;
    let mut numbered =
        template::Select::new(vec![(item, alias("item")), (ord, alias("ord"))], from);
    numbered.conds = conds;
    let mut firsts = template::Select::new(
        vec![
            (col("item"), None),
            (template::min(col("ord")), alias("ord")),
        ],
        Table::Query(Box::new(template::build(numbered)?), "s"),
    );
    firsts.group_by = vec![col("item")];
    let mut q = template::Select::new(
        vec![(col("item"), None)],
        Table::Query(Box::new(template::build(firsts)?), "d"),
    );
    q.order = vec![(col("ord"), false)];
    (q.limit, q.offset) = (limit, offset);
    template::build(q)
}

/// The most sort keys (ORDER BY and GROUP BY together) a statement may have on Postgres: each
/// takes four sort terms, and a query's target list, sort terms included, holds at most 1664.
pub const MAX_SORT_KEYS: usize = 400;

/// The most GROUP BY keys and distinct aggregates together (each one a column of a target list).
pub const MAX_GROUP_COLUMNS: usize = 1600;

fn check_shape(order_by: usize, grouping: Option<&crate::plan::Grouping>) -> Result<()> {
    let keys = grouping.map_or(0, |g| g.keys.len());
    if order_by + keys > MAX_SORT_KEYS {
        return Err(DqlError::invalid(
            format!("ORDER BY and GROUP BY have more than {MAX_SORT_KEYS} keys together"),
            Span::NONE,
        ));
    }
    if keys + grouping.map_or(0, |g| g.aggregates.len()) > MAX_GROUP_COLUMNS {
        return Err(DqlError::invalid(
            format!(
                "the statement has more than {MAX_GROUP_COLUMNS} GROUP BY keys and aggregates together"
            ),
            Span::NONE,
        ));
    }
    Ok(())
}

/// The conditions of a scan: the base ones, then the index-friendly prefilters of the
/// permission and of the filter (containment tests, which cannot fail), then the filter,
/// evaluated only on documents within the permission (see [`compile_within`]).
fn scan_conds(
    src: &Source,
    filter: Option<&PExpr>,
    permission: Option<&PExpr>,
    view: Option<&TypeView>,
    scope: &Scope,
    p: &mut Params,
) -> Result<Vec<Expr>> {
    let mut conds = base_conds(src, p);
    let allowed = match permission {
        Some(perm) => {
            conds.extend(prefilters(perm, None, p));
            Some(truth(perm, &Scope::document(col("value")), p)?)
        }
        None => None,
    };
    let wanted = match filter {
        Some(f) => {
            conds.extend(prefilters(f, view, p));
            Some(truth(f, scope, p)?)
        }
        None => None,
    };
    conds.extend(match (allowed, wanted) {
        (Some(a), Some(w)) => Some(case(vec![(a, w)], Some(constant_bool(false)))),
        (a, w) => a.or(w),
    });
    Ok(conds)
}

fn compile_select(s: &SelectPlan, permission: Option<&PExpr>) -> Result<Compiled> {
    check_shape(s.order_by.len(), s.grouping.as_ref())?;
    let mut p = Params::default();
    let (table, default_order) = source(&s.source);
    let doc = doc_expr(s.view.as_ref(), &mut p);
    let doc_scope = Scope::document(doc.clone());
    let conds = scan_conds(
        &s.source,
        s.filter.as_ref(),
        permission,
        s.view.as_ref(),
        &doc_scope,
        &mut p,
    )?;

    let Some(g) = &s.grouping else {
        let item = item_expr(&s.projection, &doc_scope, &mut p)?;
        let mut order = order_exprs(&s.order_by, &doc_scope, &mut p)?;
        if !s.order_by.is_empty() {
            order.extend(id_tie_break());
        }
        if s.order_by.is_empty() {
            if let Some(ids) = crate::plan::id_lookup_order(s.filter.as_ref()) {
                let id = bin(
                    col("value"),
                    sqlparser::ast::BinaryOperator::Arrow,
                    constant("_id"),
                );
                let whens = ids
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        (
                            bin(id.clone(), sqlparser::ast::BinaryOperator::Eq, p.jsonb(v)),
                            int(i as i64),
                        )
                    })
                    .collect();
                order.push((case(whens, None), false));
            }
        }
        order.extend(default_order.iter().map(|c| (col(c), false)));
        let window = window_exprs(s.limit, s.offset, &mut p);
        return built(items(item, table, conds, order, window, s.distinct), p);
    };

    // Grouped: keys and the document in `src`, aggregates per group in `g`, then the outer query.
    // The keys are computed on the document in `src`; the aggregates read it as `src.value`.
    let mut inner_cols = vec![(doc, Some("value".to_owned()))];
    for (i, k) in g.keys.iter().enumerate() {
        inner_cols.push((compile_expr(k, &doc_scope, &mut p)?, Some(format!("k{i}"))));
    }
    let mut inner = template::Select::new(inner_cols, table);
    inner.conds = conds;
    let src_scope = Scope::document(col("value"));
    let mut group_cols: Vec<(Expr, Option<String>)> = (0..g.keys.len())
        .map(|i| (col(&format!("k{i}")), None))
        .collect();
    for (i, a) in g.aggregates.iter().enumerate() {
        group_cols.push((aggregate(a, &src_scope, &mut p)?, Some(format!("a{i}"))));
    }
    if group_cols.is_empty() {
        group_cols.push((int(1), Some("one".to_owned())));
    }
    let mut grouped = template::Select::new(
        group_cols,
        Table::Query(Box::new(built_query(template::build(inner))?), "src"),
    );
    if !g.keys.is_empty() {
        // The keys are all grouped or all not (two grouping sets): GROUPING of the first tells
        // which set a row is from (GROUPING takes at most 31 arguments).
        let keys = (0..g.keys.len()).map(|i| col(&format!("k{i}"))).collect();
        grouped.group_by = vec![Expr::GroupingSets(vec![keys, Vec::new()])];
        grouped.having = Some(bin(
            bin(
                call("GROUPING", vec![col("k0")]),
                sqlparser::ast::BinaryOperator::Eq,
                int(0),
            ),
            sqlparser::ast::BinaryOperator::Or,
            bin(count_star(), sqlparser::ast::BinaryOperator::Eq, int(0)),
        ));
    }
    let group_scope = Scope {
        doc: None,
        keys: (0..g.keys.len())
            .map(|i| qualified("g", &format!("k{i}")))
            .collect(),
        aggs: (0..g.aggregates.len())
            .map(|i| qualified("g", &format!("a{i}")))
            .collect(),
    };
    let item = item_expr(&s.projection, &group_scope, &mut p)?;
    let mut outer_conds = Vec::new();
    if let Some(h) = &g.having {
        outer_conds.push(truth(h, &group_scope, &mut p)?);
    }
    let mut order = order_exprs(&s.order_by, &group_scope, &mut p)?;
    for k in &group_scope.keys {
        order.extend(sort_terms(k.clone()).into_iter().map(|t| (t, false)));
    }
    if order.is_empty() {
        order.push((int(1), false));
    }
    let from = Table::Query(Box::new(built_query(template::build(grouped))?), "g");
    let window = window_exprs(s.limit, s.offset, &mut p);
    built(items(item, from, outer_conds, order, window, s.distinct), p)
}

fn compile_targets(t: &Target, permission: Option<&PExpr>) -> Result<Compiled> {
    check_shape(t.order_by.len(), None)?;
    let mut p = Params::default();
    let scope = Scope::document(doc_expr(t.view.as_ref(), &mut p));
    let conds = scan_conds(
        &Source::Collection(t.collection.clone()),
        t.filter.as_ref(),
        permission,
        t.view.as_ref(),
        &scope,
        &mut p,
    )?;
    let mut order = order_exprs(&t.order_by, &scope, &mut p)?;
    if !t.order_by.is_empty() {
        order.extend(id_tie_break());
    }
    order.push((col("id"), false));
    let (limit, offset) = window_exprs(t.limit, t.offset, &mut p);
    // SELECT id FROM documents WHERE .. ORDER BY .. LIMIT .. OFFSET ..
    let mut scan = template::Select::new(vec![(col("id"), None)], Table::Documents);
    scan.conds = conds;
    scan.order = order;
    (scan.limit, scan.offset) = (limit, offset);
    built(template::build(scan), p)
}

/// The most bind parameters one Postgres statement can carry (the protocol counts them in 16
/// bits). Equal values share one, and constant arrays are one each.
pub const MAX_PARAMS: usize = 65_535;

fn check_params(params: &Params) -> Result<()> {
    if params.list.len() > MAX_PARAMS {
        return Err(DqlError::invalid(
            format!("the statement has more than {MAX_PARAMS} distinct values"),
            Span::NONE,
        ));
    }
    Ok(())
}

fn built_query(q: Option<sqlparser::ast::Query>) -> Result<sqlparser::ast::Query> {
    q.ok_or_else(|| internal("a statement template does not parse".to_owned()))
}

/// The statement, printed (the only time it is turned into text).
fn built(q: Option<sqlparser::ast::Query>, params: Params) -> Result<Compiled> {
    check_params(&params)?;
    Ok(Compiled {
        sql: built_query(q)?.to_string(),
        params: params.list,
    })
}

/// `collection = $n AND NOT deleted` for a collection (nothing for system collections).
fn base_conds(src: &Source, p: &mut Params) -> Vec<Expr> {
    match src {
        Source::Collection(c) => vec![
            bin(
                col("collection"),
                sqlparser::ast::BinaryOperator::Eq,
                p.text(c),
            ),
            template::not(col("deleted")),
        ],
        Source::SystemCollections => Vec::new(),
    }
}

fn window_exprs(
    limit: Option<u64>,
    offset: Option<u64>,
    p: &mut Params,
) -> (Option<Expr>, Option<Expr>) {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    (limit.map(|l| p.int8(n(l))), offset.map(|o| p.int8(n(o))))
}

/// Convenience: parse, check and compile a statement with the default options.
pub fn compile_statement(
    text: &str,
    args: &std::collections::BTreeMap<String, Value>,
) -> Result<(Plan, CompiledPlan)> {
    let stmt = crate::parse(text)?;
    let plan = crate::plan::check(&stmt, args)?;
    let compiled = compile(&plan)?;
    Ok((plan, compiled))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(text: &str) -> Compiled {
        let mut args = std::collections::BTreeMap::new();
        args.insert("id".to_owned(), Value::String("k".into()));
        match compile_statement(text, &args) {
            Ok((_, CompiledPlan::Query(c))) | Ok((_, CompiledPlan::Mutation { targets: c })) => c,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn equality_on_fields_uses_the_gin_index_and_ids_the_primary_key() {
        let c = compiled("SELECT * FROM cars WHERE engine.hp = 300 AND _id = :id AND price > 3");
        assert!(c.sql.contains("(value @> $"), "{}", c.sql);
        assert!(c.sql.contains("(id = $"), "{}", c.sql);
        let hp = serde_json::json!({"engine": {"hp": 300}});
        assert!(c.params.contains(&SqlParam::Jsonb(hp)));
        assert!(c
            .params
            .contains(&SqlParam::Bytea(DocId::string("k").key())));
        let c = compiled("SELECT * FROM cars WHERE _id IN ['a', 'b']");
        assert!(c.sql.contains("id = ANY($"), "{}", c.sql);
    }

    #[test]
    fn user_text_only_travels_as_parameters() {
        let c = compiled(
            "SELECT `x'; DROP TABLE documents; --` AS `y\"z` FROM `evil'coll` WHERE a = 'it''s'",
        );
        for needle in ["DROP", "evil", "it''s", "it's", "y\"z"] {
            assert!(!c.sql.contains(needle), "{needle} in {}", c.sql);
        }
        assert!(c.params.contains(&SqlParam::Text("evil'coll".into())));
        assert!(c
            .params
            .contains(&SqlParam::Text("x'; DROP TABLE documents; --".into())));
    }

    #[test]
    fn equal_values_share_a_parameter() {
        let c = compiled("SELECT * FROM cars WHERE a = 'x' OR b = 'x' OR c = 'x'");
        let x = c
            .params
            .iter()
            .filter(|p| **p == SqlParam::Text("x".into()))
            .count();
        assert_eq!(x, 1);
    }

    /// The most arguments any one function call of `sql` has (`ARRAY[...]` is no call).
    fn max_call_args(sql: &str) -> usize {
        // One entry per open parenthesis: whether it is a call's, and its commas so far.
        let mut stack: Vec<(bool, usize)> = Vec::new();
        let (mut most, mut quoted, mut prev) = (0, false, ' ');
        for ch in sql.chars() {
            match ch {
                '\'' => quoted = !quoted,
                _ if quoted => {}
                '(' => stack.push((prev.is_alphanumeric() || prev == '_', 0)),
                ',' => {
                    if let Some(top) = stack.last_mut() {
                        top.1 += 1;
                    }
                }
                ')' => {
                    if let Some((true, commas)) = stack.pop() {
                        most = most.max(commas + 1);
                    }
                }
                _ => {}
            }
            prev = ch;
        }
        most
    }

    #[test]
    fn no_call_passes_postgres_more_than_100_arguments() {
        let list =
            |n: usize, f: &dyn Fn(usize) -> String| (0..n).map(f).collect::<Vec<_>>().join(", ");
        for n in [100usize, 101, 500, 5000] {
            let mixed = |i: usize| {
                if i.is_multiple_of(2) {
                    "n".to_owned()
                } else {
                    i.to_string()
                }
            };
            for text in [
                format!("SELECT [{}] AS a FROM c", list(n, &mixed)),
                format!("SELECT * FROM c WHERE n IN ({})", list(n, &mixed)),
                format!("SELECT * FROM c WHERE n IN [{}]", list(n, &mixed)),
                format!("SELECT concat({}) AS a FROM c", list(n, &|_| "s".into())),
                format!("SELECT coalesce({}) AS a FROM c", list(n, &mixed)),
                format!("SELECT decode({}) AS a FROM c", list(n, &mixed)),
                format!(
                    "SELECT {{{}}} AS a FROM c",
                    list(n, &|i| format!("'k{i}': n"))
                ),
                format!("SELECT {} FROM c", list(n, &|i| format!("n AS p{i}"))),
                format!(
                    "SELECT DISTINCT {} FROM c",
                    list(n, &|i| format!("n AS p{i}"))
                ),
                format!("UPDATE c SET x = 1 WHERE s IN [{}]", list(n, &mixed)),
            ] {
                let c = compiled(&text);
                let most = max_call_args(&c.sql);
                assert!(most <= 100, "{most} arguments: {}", &text[..60]);
            }
        }
        // GROUPING takes at most 31 arguments.
        let keys = list(40, &|i| format!("k{i}"));
        let c = compiled(&format!(
            "SELECT {keys}, COUNT(*) AS n FROM c GROUP BY {keys}"
        ));
        assert!(c.sql.contains("GROUPING(k0) = 0"), "{}", c.sql);
    }

    #[test]
    fn long_condition_chains_compile_on_every_path() {
        let eqs = (0..450)
            .map(|i| format!("a{i} = {i}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        for text in [
            format!("SELECT * FROM c WHERE {eqs}"),
            format!("SELECT DISTINCT n FROM c WHERE {eqs}"),
            format!("SELECT n, COUNT(*) AS k FROM c WHERE {eqs} GROUP BY n"),
            format!("DELETE FROM c WHERE {eqs}"),
        ] {
            let c = compiled(&text);
            assert!(c.sql.contains("value @> $"), "{}", &c.sql[..200]);
        }
    }

    #[test]
    fn constant_lists_are_one_parameter() {
        let ints = (0..5000)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        for text in [
            format!("SELECT [{ints}] AS a FROM c"),
            format!("SELECT * FROM c WHERE n IN ({ints})"),
            format!("SELECT * FROM c WHERE n NOT IN [{ints}]"),
        ] {
            let c = compiled(&text);
            assert!(
                c.params.len() <= 3,
                "{} parameters: {}",
                c.params.len(),
                c.sql
            );
        }
        let keys = (0..5000)
            .map(|i| format!("'k{i}': {i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let c = compiled(&format!("SELECT {{{keys}, 'k0': 'last'}} AS o FROM c"));
        let object = c.params.iter().find_map(|p| match p {
            SqlParam::Jsonb(serde_json::Value::Object(o)) => Some(o.clone()),
            _ => None,
        });
        let object = object.expect("one bound object");
        assert_eq!(
            (object.len(), &object["k0"]),
            (5000, &serde_json::json!("last"))
        );
    }

    #[test]
    fn statements_beyond_postgres_limits_are_invalid() {
        let err = |text: &str| match compile_statement(text, &std::collections::BTreeMap::new()) {
            Err(e) => e,
            Ok(_) => panic!("compiled: {}", &text[..60]),
        };
        let keys = |n: usize| {
            (0..n)
                .map(|i| format!("k{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let e = err(&format!(
            "SELECT * FROM c ORDER BY {}",
            keys(MAX_SORT_KEYS + 1)
        ));
        assert_eq!(e.code, crate::error::ErrorCode::Invalid);
        let e = err(&format!(
            "DELETE FROM c ORDER BY {} LIMIT 1",
            keys(MAX_SORT_KEYS + 1)
        ));
        assert_eq!(e.code, crate::error::ErrorCode::Invalid);
        let aggs = (0..=MAX_GROUP_COLUMNS)
            .map(|i| format!("MAX(k{i}) AS a{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let e = err(&format!("SELECT {aggs} FROM c"));
        assert_eq!(e.code, crate::error::ErrorCode::Invalid);
        let values = (0..=MAX_PARAMS)
            .map(|i| format!("'v{i}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let e = err(&format!("SELECT concat({values}) AS a FROM c"));
        assert_eq!(e.code, crate::error::ErrorCode::Invalid);
        compiled(&format!("SELECT * FROM c ORDER BY {}", keys(MAX_SORT_KEYS)));
    }

    #[test]
    fn mutation_targets_ask_only_for_ids() {
        let c = compiled("UPDATE cars SET n = n + 1 WHERE color = 'red' ORDER BY n LIMIT 2");
        assert!(c.sql.starts_with("SELECT id FROM documents"), "{}", c.sql);
        assert!(!c.sql.contains("FOR UPDATE"), "{}", c.sql);
        let c = compiled("INSERT INTO cars DOCUMENTS ({'_id': 'a'}), ({'_id': 'b'})");
        assert!(c.sql.contains("id = ANY($2::BYTEA[])"), "{}", c.sql);
    }

    /// The statement is one tree printed once: no SQL text is glued together and parsed
    /// again. The only parser call is in `template.rs`, on `&'static str` constants, once per
    /// process.
    #[test]
    fn only_constant_templates_are_ever_parsed() {
        let parser = ["Parser", "::"].concat();
        for (name, text) in [
            ("mod.rs", include_str!("mod.rs")),
            ("expr.rs", include_str!("expr.rs")),
            ("build.rs", include_str!("build.rs")),
        ] {
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            assert!(!code.contains(&parser), "{name} parses SQL");
            assert!(!code.contains("format!(\"SELECT"), "{name} writes SQL text");
        }
        let template = include_str!("template.rs");
        assert_eq!(template.matches(&parser).count(), 1);
        assert!(template.contains("fn parsed(text: &'static str)"));
    }
}
