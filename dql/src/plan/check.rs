//! From syntax to plan: resolve names, separate aggregates from grouping, bind parameters.

use std::collections::BTreeMap;

use bigpeer_schema::{ObjectMode, Value};

use super::expr::{AggCall, AggFunc, CmpOp, PExpr};
use super::functions::Func;
use super::*;
use crate::ast::{self, BinaryOp, Expr, ExprKind, InList, Statement, UnaryOp};
use crate::error::{DqlError, Result};

/// Settings that change how statements are planned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// `DQL_STRICT_MODE`: objects written by INSERT/SET are registers instead of maps.
    pub strict_mode: bool,
}

/// Checks a statement with the default options (Ditto 5.x: strict mode off).
pub fn check(stmt: &Statement, args: &BTreeMap<String, Value>) -> Result<Plan> {
    check_with(stmt, args, &PlanOptions::default())
}

/// Checks a statement and builds its plan.
pub fn check_with(
    stmt: &Statement,
    args: &BTreeMap<String, Value>,
    opts: &PlanOptions,
) -> Result<Plan> {
    let objects = if opts.strict_mode {
        ObjectMode::Register
    } else {
        ObjectMode::Map
    };
    match stmt {
        Statement::Select(s) => {
            let mut plan = super::select::check_select(s, args)?;
            if let Plan::Select(p) = &mut plan {
                if matches!(p.source, Source::Collection(_)) {
                    p.view = strict_view(opts, &s.from);
                }
            }
            Ok(plan)
        }
        Statement::Insert(i) => super::mutation::check_insert(i, args, objects),
        Statement::Update(u) => {
            let mut plan = super::mutation::check_update(u, args, objects)?;
            if let Plan::Update(p) = &mut plan {
                p.target.view = strict_view(opts, &u.collection);
            }
            Ok(plan)
        }
        Statement::Delete(d) => {
            let r = Resolver::new(args, &d.collection)?;
            let kind = match d.kind {
                ast::DeleteKind::Delete | ast::DeleteKind::Tombstone => RemoveKind::Delete,
                ast::DeleteKind::Evict => RemoveKind::Evict,
            };
            let mut target = r.target(&d.filter, &d.order_by, &d.limit, &d.offset)?;
            target.view = strict_view(opts, &d.collection);
            Ok(Plan::Remove(RemovePlan { kind, target }))
        }
        Statement::AlterSystem(a) => match a {
            ast::AlterSystem::Set { name, value } => {
                let r = Resolver::constant(args);
                let v = r.scalar(value)?;
                let v = crate::eval::eval_const(&v)?.unwrap_or(Value::Null);
                Ok(Plan::AlterSystem {
                    name: Some(name.to_ascii_lowercase()),
                    value: Some(v),
                })
            }
            ast::AlterSystem::Reset { name } => Ok(Plan::AlterSystem {
                name: Some(name.to_ascii_lowercase()),
                value: None,
            }),
            ast::AlterSystem::ResetAll => Ok(Plan::AlterSystem {
                name: None,
                value: None,
            }),
        },
        Statement::Show(s) => Ok(Plan::Show {
            name: s.name.as_ref().map(|n| n.to_ascii_lowercase()),
        }),
        Statement::Explain(inner) => Ok(Plan::Explain(Box::new(check_with(inner, args, opts)?))),
    }
}

/// Checks a condition on documents on its own, outside any statement (a permission
/// predicate): every name is a field of the document (no collection name or alias qualifies
/// it), parameters come from `args`, aggregates are an error (as in a WHERE clause).
pub fn check_condition(e: &Expr, args: &BTreeMap<String, Value>) -> Result<PExpr> {
    let r = Resolver {
        args,
        qualifier: None,
        collection: String::new(),
    };
    r.resolve(e, &mut Mode::Scalar)
}

/// In strict mode, how the statement's type declarations see documents.
fn strict_view(opts: &PlanOptions, coll: &ast::CollectionRef) -> Option<bigpeer_schema::TypeView> {
    opts.strict_mode
        .then(|| FieldTypes::from_defs(&coll.types).view())
}

/// How aggregates and fields are treated while resolving.
pub(super) enum Mode<'m> {
    /// Aggregates are an error (WHERE, GROUP BY, mutation values).
    Scalar,
    /// Aggregates become [`PExpr::Agg`], group keys [`PExpr::GroupKey`], other fields an error.
    Grouped {
        keys: &'m [String],
        aggs: &'m mut Vec<AggCall>,
        label: &'m str,
    },
    /// No document: fields are an error (INSERT documents, ALTER SYSTEM values).
    Constant,
}

pub(crate) struct Resolver<'a> {
    pub(super) args: &'a BTreeMap<String, Value>,
    /// The name that qualifies fields (`alias.field`, or `collection.field`).
    pub(super) qualifier: Option<String>,
    pub(super) collection: String,
}

fn is_aggregate(name: &str) -> bool {
    matches!(name, "count" | "sum" | "avg" | "min" | "max")
}

pub(super) fn contains_aggregate(e: &Expr) -> bool {
    let mut found = false;
    walk_ast(e, &mut |e| {
        if let ExprKind::Call { name, .. } = &e.kind {
            if is_aggregate(name) {
                found = true;
            }
        }
    });
    found
}

fn walk_ast(e: &Expr, f: &mut dyn FnMut(&Expr)) {
    f(e);
    match &e.kind {
        ExprKind::Literal(_) | ExprKind::Missing | ExprKind::Param(_) | ExprKind::Ident(_) => {}
        ExprKind::Member(b, _) | ExprKind::Unary(_, b) | ExprKind::Is { expr: b, .. } => {
            walk_ast(b, f)
        }
        ExprKind::Index(a, b)
        | ExprKind::Binary(_, a, b)
        | ExprKind::Like {
            expr: a,
            pattern: b,
            ..
        } => {
            walk_ast(a, f);
            walk_ast(b, f);
        }
        ExprKind::Between {
            expr, low, high, ..
        } => {
            walk_ast(expr, f);
            walk_ast(low, f);
            walk_ast(high, f);
        }
        ExprKind::In { expr, list, .. } => {
            walk_ast(expr, f);
            match list {
                InList::List(items) => items.iter().for_each(|i| walk_ast(i, f)),
                InList::Expr(x) => walk_ast(x, f),
            }
        }
        ExprKind::Array(items) | ExprKind::Call { args: items, .. } => {
            items.iter().for_each(|i| walk_ast(i, f))
        }
        ExprKind::Object(fields) => fields.iter().for_each(|(_, v)| walk_ast(v, f)),
    }
}

impl<'a> Resolver<'a> {
    pub(super) fn new(
        args: &'a BTreeMap<String, Value>,
        coll: &ast::CollectionRef,
    ) -> Result<Resolver<'a>> {
        if coll.system {
            return Err(DqlError::invalid(
                format!("system:{} cannot be modified", coll.name),
                coll.span,
            ));
        }
        Ok(Resolver {
            args,
            qualifier: Some(coll.alias.clone().unwrap_or_else(|| coll.name.clone())),
            collection: coll.name.clone(),
        })
    }

    pub(super) fn constant(args: &'a BTreeMap<String, Value>) -> Resolver<'a> {
        Resolver {
            args,
            qualifier: None,
            collection: String::new(),
        }
    }

    pub(crate) fn scalar(&self, e: &Expr) -> Result<PExpr> {
        let mut mode = if self.qualifier.is_some() {
            Mode::Scalar
        } else {
            Mode::Constant
        };
        self.resolve(e, &mut mode)
    }

    pub(super) fn target(
        &self,
        filter: &Option<Expr>,
        order_by: &[ast::OrderItem],
        limit: &Option<Expr>,
        offset: &Option<Expr>,
    ) -> Result<Target> {
        Ok(Target {
            collection: self.collection.clone(),
            filter: filter.as_ref().map(|f| self.scalar(f)).transpose()?,
            order_by: order_by
                .iter()
                .map(|o| Ok((self.scalar(&o.expr)?, o.desc)))
                .collect::<Result<_>>()?,
            limit: limit.as_ref().map(|l| self.count(l, "LIMIT")).transpose()?,
            offset: offset
                .as_ref()
                .map(|o| self.count(o, "OFFSET"))
                .transpose()?,
            view: None,
        })
    }

    pub(super) fn count(&self, e: &Expr, what: &str) -> Result<u64> {
        let v = self.resolve(e, &mut Mode::Constant)?;
        match crate::eval::eval_const(&v)? {
            Some(Value::Int(i)) if i >= 0 => u64::try_from(i).map_err(|_| count_error(what, e)),
            Some(Value::UInt(u)) => Ok(u),
            _ => Err(count_error(what, e)),
        }
    }

    /// A field path: `a`, `a.b.c`, `alias.a.b`.
    fn path_of(&self, e: &Expr) -> Option<Vec<String>> {
        match &e.kind {
            // The bare collection name (or alias) is the whole document.
            ExprKind::Ident(n) if self.qualifier.as_deref() == Some(n.as_str()) => Some(Vec::new()),
            ExprKind::Ident(n) => Some(vec![n.clone()]),
            ExprKind::Member(base, name) => {
                if let ExprKind::Ident(root) = &base.kind {
                    if self.qualifier.as_deref() == Some(root.as_str()) {
                        return Some(vec![name.clone()]);
                    }
                }
                let mut p = self.path_of(base)?;
                p.push(name.clone());
                Some(p)
            }
            _ => None,
        }
    }

    pub(super) fn resolve(&self, e: &Expr, mode: &mut Mode<'_>) -> Result<PExpr> {
        if let Mode::Grouped { keys, .. } = mode {
            let text = e.to_string();
            if let Some(i) = keys.iter().position(|k| *k == text) {
                return Ok(PExpr::GroupKey(i));
            }
        }
        let r = |x: &Expr, mode: &mut Mode<'_>| -> Result<Box<PExpr>> {
            Ok(Box::new(self.resolve(x, mode)?))
        };
        Ok(match &e.kind {
            ExprKind::Literal(v) => PExpr::Lit(v.clone()),
            ExprKind::Missing => PExpr::Missing,
            ExprKind::Param(name) => match self.args.get(name) {
                Some(v) => PExpr::Lit(v.clone()),
                None => {
                    return Err(DqlError::invalid(
                        format!("Parameter {name} was not provided"),
                        e.span,
                    ))
                }
            },
            ExprKind::Ident(_) | ExprKind::Member(..) if self.path_of(e).is_some() => {
                let path = self.path_of(e).unwrap_or_default();
                match mode {
                    Mode::Scalar => PExpr::Field(path),
                    Mode::Constant => {
                        return Err(DqlError::invalid(
                            "Forbidden: Document references in mutation values",
                            e.span,
                        ))
                    }
                    Mode::Grouped { label, .. } => {
                        return Err(DqlError::invalid(
                            format!(
                            "Projection \"{label}\" must depend only on group keys or aggregates"
                        ),
                            e.span,
                        ))
                    }
                }
            }
            ExprKind::Ident(_) => PExpr::Missing,
            ExprKind::Member(base, name) => PExpr::Member(r(base, mode)?, name.clone()),
            ExprKind::Index(base, index) => PExpr::Index(r(base, mode)?, r(index, mode)?),
            ExprKind::Array(items) => PExpr::Array(
                items
                    .iter()
                    .map(|i| self.resolve(i, mode))
                    .collect::<Result<_>>()?,
            ),
            ExprKind::Object(fields) => PExpr::Object(
                fields
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), self.resolve(v, mode)?)))
                    .collect::<Result<_>>()?,
            ),
            ExprKind::Unary(UnaryOp::Not, x) => PExpr::Not(r(x, mode)?),
            ExprKind::Unary(UnaryOp::Neg, x) => PExpr::Neg(r(x, mode)?),
            ExprKind::Unary(UnaryOp::Plus, x) => self.resolve(x, mode)?,
            ExprKind::Binary(op @ (BinaryOp::And | BinaryOp::Or), _, _) => {
                let items = chain_operands(e, *op)
                    .into_iter()
                    .map(|x| self.resolve(x, mode))
                    .collect::<Result<Vec<_>>>()?;
                if *op == BinaryOp::And {
                    PExpr::All(items)
                } else {
                    PExpr::Any(items)
                }
            }
            ExprKind::Binary(op, a, b) => {
                let (l, rr) = (r(a, mode)?, r(b, mode)?);
                let cmp = |c: CmpOp| {
                    // Ditto 5.1: a comparison with the NULL literal is MISSING.
                    if is_null_literal(a) || is_null_literal(b) {
                        PExpr::Missing
                    } else {
                        PExpr::Cmp(c, l.clone(), rr.clone())
                    }
                };
                match op {
                    BinaryOp::And | BinaryOp::Or => PExpr::Missing,
                    BinaryOp::Eq | BinaryOp::EqEq => cmp(CmpOp::Eq),
                    BinaryOp::Neq | BinaryOp::LtGt => cmp(CmpOp::Neq),
                    BinaryOp::Lt => cmp(CmpOp::Lt),
                    BinaryOp::Le => cmp(CmpOp::Le),
                    BinaryOp::Gt => cmp(CmpOp::Gt),
                    BinaryOp::Ge => cmp(CmpOp::Ge),
                    BinaryOp::Concat
                    | BinaryOp::Add
                    | BinaryOp::Sub
                    | BinaryOp::Mul
                    | BinaryOp::Div
                    | BinaryOp::Mod => PExpr::Arith(*op, l, rr),
                }
            }
            ExprKind::Between {
                expr,
                low,
                high,
                negated,
            } => PExpr::Between {
                expr: r(expr, mode)?,
                low: r(low, mode)?,
                high: r(high, mode)?,
                negated: *negated,
            },
            ExprKind::In {
                expr,
                list,
                negated,
            } => {
                let x = r(expr, mode)?;
                match list {
                    InList::List(items) => PExpr::InList {
                        expr: x,
                        list: items
                            .iter()
                            .map(|i| self.resolve(i, mode))
                            .collect::<Result<_>>()?,
                        negated: *negated,
                    },
                    InList::Expr(arr) => PExpr::InArray {
                        expr: x,
                        array: r(arr, mode)?,
                        negated: *negated,
                    },
                }
            }
            ExprKind::Like {
                expr,
                pattern,
                case_insensitive,
                negated,
                escape,
            } => PExpr::Like {
                expr: r(expr, mode)?,
                pattern: r(pattern, mode)?,
                case_insensitive: *case_insensitive,
                negated: *negated,
                escape: *escape,
            },
            ExprKind::Is {
                expr,
                test,
                negated,
            } => PExpr::Is {
                expr: r(expr, mode)?,
                test: *test,
                negated: *negated,
            },
            ExprKind::Call {
                name,
                args,
                distinct,
                star,
            } => {
                if is_aggregate(name) {
                    return self.aggregate(e, name, args, *distinct, *star, mode);
                }
                let Some(func) = Func::lookup(name) else {
                    return Err(DqlError::invalid(
                        format!("Function \"{name}\" not found"),
                        e.span,
                    ));
                };
                if *star || !func.accepts(args.len()) {
                    let n = if *star { 1 } else { args.len() };
                    return Err(DqlError::invalid(
                        format!("Wrong number of arguments for function {name}(): {n}"),
                        e.span,
                    ));
                }
                if *distinct {
                    return Err(DqlError::invalid(
                        format!("DISTINCT is only allowed in aggregates, not in {name}()"),
                        e.span,
                    ));
                }
                PExpr::Call(
                    func,
                    args.iter()
                        .map(|a| self.resolve(a, mode))
                        .collect::<Result<_>>()?,
                )
            }
        })
    }

    fn aggregate(
        &self,
        e: &Expr,
        name: &str,
        args: &[Expr],
        distinct: bool,
        star: bool,
        mode: &mut Mode<'_>,
    ) -> Result<PExpr> {
        let Mode::Grouped { aggs, .. } = mode else {
            return Err(DqlError::invalid(
                "Forbidden: Use of aggregates limited to projections, HAVING and ORDER BY clauses",
                e.span,
            ));
        };
        let func = match (name, star) {
            ("count", true) => AggFunc::CountStar,
            (_, true) => {
                return Err(DqlError::invalid(
                    "Forbidden: Wildcard aggregate expressions",
                    e.span,
                ))
            }
            ("count", false) => AggFunc::Count,
            ("sum", _) => AggFunc::Sum,
            ("avg", _) => AggFunc::Avg,
            ("min", _) => AggFunc::Min,
            _ => AggFunc::Max,
        };
        let arg = if star {
            None
        } else {
            if args.len() != 1 {
                return Err(DqlError::invalid(
                    format!(
                        "Wrong number of arguments for function {name}(): {}",
                        args.len()
                    ),
                    e.span,
                ));
            }
            if contains_aggregate(&args[0]) {
                return Err(DqlError::invalid("Forbidden: Nested aggregates", e.span));
            }
            Some(self.resolve(&args[0], &mut Mode::Scalar)?)
        };
        let call = AggCall {
            func,
            arg,
            distinct,
        };
        let idx = match aggs.iter().position(|a| *a == call) {
            Some(i) => i,
            None => {
                aggs.push(call);
                aggs.len() - 1
            }
        };
        Ok(PExpr::Agg(idx))
    }
}

/// The operands of a chain `a OP b OP c` (left-leaning as parsed), without recursion.
fn chain_operands(e: &Expr, op: BinaryOp) -> Vec<&Expr> {
    let mut rights = Vec::new();
    let mut cur = e;
    while let ExprKind::Binary(o, l, r) = &cur.kind {
        if *o != op {
            break;
        }
        rights.push(r.as_ref());
        cur = l;
    }
    rights.push(cur);
    rights.reverse();
    rights
}

fn count_error(what: &str, e: &Expr) -> DqlError {
    DqlError::invalid(
        format!("{what} must be a non-negative integer, not {e}"),
        e.span,
    )
}

fn is_null_literal(e: &Expr) -> bool {
    matches!(e.kind, ExprKind::Literal(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bigpeer_schema::DocId;

    fn plan(text: &str) -> Result<Plan> {
        let mut args = BTreeMap::new();
        args.insert("p".to_owned(), Value::Int(1));
        check(&crate::parse(text)?, &args)
    }

    fn select(text: &str) -> SelectPlan {
        match plan(text) {
            Ok(Plan::Select(s)) => s,
            other => panic!("{text}: {other:?}"),
        }
    }

    fn error(text: &str) -> String {
        match plan(text) {
            Err(e) => format!("{}: {}", e.code, e.message),
            Ok(p) => panic!("{text} planned as {p:?}"),
        }
    }

    #[test]
    fn aliases_and_collection_names_qualify_fields() {
        let s = select("SELECT c.a.b AS x, c.* FROM cars AS c WHERE c.n = :p");
        assert_eq!(
            s.filter,
            Some(PExpr::Cmp(
                CmpOp::Eq,
                PExpr::Field(vec!["n".into()]).boxed(),
                PExpr::Lit(Value::Int(1)).boxed()
            ))
        );
        let Projection::Document { extra } = &s.projection else {
            panic!("document projection")
        };
        assert_eq!(
            extra[0],
            ("x".to_owned(), PExpr::Field(vec!["a".into(), "b".into()]))
        );
        // The bare collection name is the whole document.
        let s = select("SELECT * FROM t WHERE 'y' IN t");
        assert!(
            matches!(s.filter, Some(PExpr::InArray { ref array, .. }) if **array == PExpr::Field(vec![]))
        );
    }

    #[test]
    fn projection_names() {
        let s = select("SELECT a.b, n + 1, upper('x'), _id FROM t");
        let Projection::Fields(f) = s.projection else {
            panic!("fields")
        };
        let names: Vec<&str> = f.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["b", "($2)", "($3)", "_id"]);
    }

    #[test]
    fn grouping_replaces_keys_and_aggregates() {
        let s = select("SELECT color, COUNT(*) AS n, MAX(p) + 1 AS m FROM t GROUP BY color HAVING COUNT(*) > 1 ORDER BY n");
        let g = s.grouping.expect("grouped");
        assert_eq!(g.keys, vec![PExpr::Field(vec!["color".into()])]);
        assert_eq!(
            g.aggregates.len(),
            2,
            "COUNT(*) is shared between the projection and HAVING"
        );
        let Projection::Fields(f) = s.projection else {
            panic!("fields")
        };
        assert_eq!(f[0].1, PExpr::GroupKey(0));
        assert_eq!(s.order_by[0].0, PExpr::Agg(0));
    }

    #[test]
    fn comparison_with_null_literal_is_missing() {
        let s = select("SELECT * FROM t WHERE a = null");
        assert_eq!(s.filter, Some(PExpr::Missing));
    }

    #[test]
    fn and_or_chains_are_flat() {
        let s = select("SELECT * FROM t WHERE a = 1 OR b = 2 OR c = 3 OR d = 4");
        assert!(matches!(s.filter, Some(PExpr::Any(ref items)) if items.len() == 4));
    }

    #[test]
    fn errors() {
        assert_eq!(
            error("SELECT * FROM t WHERE x = :nope"),
            "query/invalid: Parameter nope was not provided"
        );
        assert_eq!(
            error("SELECT a, COUNT(*) FROM t"),
            "query/invalid: Projection \"a\" must depend only on group keys or aggregates"
        );
        assert_eq!(
            error("SELECT * FROM t LIMIT :p OFFSET 'x'")
                .split(':')
                .next(),
            Some("query/invalid")
        );
        assert_eq!(
            error("SELECT x.* FROM t"),
            "query/invalid: Unknown collection or alias \"x\""
        );
        assert_eq!(
            error("SELECT COUNT(COUNT(a)) FROM t"),
            "query/invalid: Forbidden: Nested aggregates"
        );
        assert_eq!(
            error("INSERT INTO t DOCUMENTS ({'a': b})"),
            "query/invalid: Forbidden: Document references in mutation values"
        );
        assert_eq!(
            error("SELECT * FROM system:peers"),
            "query/unsupported: not supported by bigpeer: system:peers"
        );
    }

    #[test]
    fn insert_documents_are_evaluated() {
        let Ok(Plan::Insert(i)) =
            plan("INSERT INTO t DOCUMENTS ({'_id': 'a', 'n': 1 + :p}), ({'x': [1]})")
        else {
            panic!("insert")
        };
        assert_eq!(i.documents[0].id, DocId::string("a"));
        assert_eq!(i.documents[0].fields.get("n"), Some(&Value::Int(2)));
        let generated = i.documents[1]
            .id
            .value()
            .as_str()
            .expect("generated string id");
        assert_eq!(generated.len(), 24);
    }
}
