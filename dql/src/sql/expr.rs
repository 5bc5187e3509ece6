//! Compiles resolved expressions to SQL expressions of type jsonb (SQL NULL is MISSING).

use std::collections::HashMap;

use bigpeer_schema::Value;
use sqlparser::ast::{BinaryOperator, DataType, Expr};

use super::build::*;
use super::SqlParam;
use crate::ast::{BinaryOp, IsTest};
use crate::error::Result;
use crate::plan::{AggCall, AggFunc, CmpOp, Func, PExpr};

/// Collects bind parameters, giving equal values the same `$n`.
#[derive(Debug, Default)]
pub struct Params {
    pub list: Vec<SqlParam>,
    seen: HashMap<String, usize>,
}

impl Params {
    pub fn add(&mut self, p: SqlParam) -> Expr {
        let key = format!("{p:?}");
        let n = match self.seen.get(&key) {
            Some(n) => *n,
            None => {
                self.list.push(p);
                let n = self.list.len();
                self.seen.insert(key, n);
                n
            }
        };
        placeholder(n)
    }

    pub fn jsonb(&mut self, v: &Value) -> Expr {
        cast(self.add(SqlParam::Jsonb(v.to_json())), DataType::JSONB)
    }

    pub fn text(&mut self, s: &str) -> Expr {
        cast(self.add(SqlParam::Text(s.to_owned())), DataType::Text)
    }

    pub fn int8(&mut self, i: i64) -> Expr {
        cast(self.add(SqlParam::Int8(i)), DataType::BigInt(None))
    }

    pub fn bytea(&mut self, b: Vec<u8>) -> Expr {
        cast(self.add(SqlParam::Bytea(b)), DataType::Bytea)
    }
}

/// What names mean while compiling: the document column, group keys and aggregate columns.
pub struct Scope {
    pub doc: Option<Expr>,
    pub keys: Vec<Expr>,
    pub aggs: Vec<Expr>,
}

impl Scope {
    pub fn document(doc: Expr) -> Scope {
        Scope {
            doc: Some(doc),
            keys: Vec::new(),
            aggs: Vec::new(),
        }
    }
}

fn cmp_code(op: CmpOp) -> i64 {
    match op {
        CmpOp::Eq => 0,
        CmpOp::Neq => 1,
        CmpOp::Lt => 2,
        CmpOp::Le => 3,
        CmpOp::Gt => 4,
        CmpOp::Ge => 5,
    }
}

fn arith_code(op: BinaryOp) -> i64 {
    match op {
        BinaryOp::Add => 0,
        BinaryOp::Sub => 1,
        BinaryOp::Mul => 2,
        BinaryOp::Div => 3,
        BinaryOp::Mod => 4,
        _ => 5,
    }
}

fn flip(op: CmpOp) -> CmpOp {
    match op {
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::Le => CmpOp::Ge,
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::Ge => CmpOp::Le,
        other => other,
    }
}

/// The jsonb type name of a literal that comparisons can inline.
fn scalar_kind(v: &Value) -> Option<&'static str> {
    match v {
        Value::Int(_) | Value::UInt(_) | Value::Float(_) => Some("number"),
        Value::String(_) => Some("string"),
        Value::Bool(_) => Some("boolean"),
        _ => None,
    }
}

/// The SQL condition "this DQL expression is TRUE" (WHERE, HAVING). AND/OR chains and
/// comparisons with a literal become plain SQL conditions the planner can use and short-cut;
/// anything else is `(value) = 'true'::jsonb`.
pub fn truth(e: &PExpr, scope: &Scope, p: &mut Params) -> Result<Expr> {
    Ok(match e {
        PExpr::All(items) | PExpr::Any(items) if !items.is_empty() => {
            let op = if matches!(e, PExpr::All(_)) {
                BinaryOperator::And
            } else {
                BinaryOperator::Or
            };
            let mut parts = Vec::with_capacity(items.len());
            for i in items {
                parts.push(truth(i, scope, p)?);
            }
            balanced_op(op, parts).unwrap_or_else(|| constant_bool(false))
        }
        PExpr::Cmp(op, a, b) => match (a.as_ref(), b.as_ref()) {
            (x, PExpr::Lit(v)) if scalar_kind(v).is_some() => {
                literal_condition(*op, compile(x, scope, p)?, v, p)
            }
            (PExpr::Lit(v), x) if scalar_kind(v).is_some() => {
                literal_condition(flip(*op), compile(x, scope, p)?, v, p)
            }
            _ => is_true(compile(e, scope, p)?),
        },
        other => is_true(compile(other, scope, p)?),
    })
}

fn template_not(e: Expr) -> Expr {
    super::template::not(Expr::Nested(Box::new(e)))
}

pub(super) fn constant_bool(b: bool) -> Expr {
    Expr::value(sqlparser::ast::Value::Boolean(b))
}

/// `CASE WHEN jsonb_typeof(x) = kind THEN x <op> literal ELSE false END`: TRUE exactly when the
/// DQL comparison is TRUE.
fn literal_condition(op: CmpOp, x: Expr, v: &Value, p: &mut Params) -> Expr {
    let kind = scalar_kind(v).unwrap_or("number");
    let (left, sql_op, right) = literal_operands(op, x.clone(), v, p);
    // CASE, not AND: SQL may evaluate AND's operands in any order, and the cast must only see
    // values of the right type.
    case(
        vec![(typeof_is(x, kind), bin(left, sql_op, right))],
        Some(constant_bool(false)),
    )
}

fn literal_operands(op: CmpOp, x: Expr, v: &Value, p: &mut Params) -> (Expr, BinaryOperator, Expr) {
    let sql_op = match op {
        CmpOp::Eq => BinaryOperator::Eq,
        CmpOp::Neq => BinaryOperator::NotEq,
        CmpOp::Lt => BinaryOperator::Lt,
        CmpOp::Le => BinaryOperator::LtEq,
        CmpOp::Gt => BinaryOperator::Gt,
        CmpOp::Ge => BinaryOperator::GtEq,
    };
    let (left, right) = match v {
        Value::String(s) => (collate_c(json_text(x)), collate_c(p.text(s))),
        Value::Bool(b) => (cast(x, DataType::Boolean), constant_bool(*b)),
        _ => {
            let numeric = DataType::Numeric(sqlparser::ast::ExactNumberInfo::None);
            (cast(x, numeric.clone()), cast(p.jsonb(v), numeric))
        }
    };
    (left, sql_op, right)
}

/// `x <op> literal` without a function call: the same result as `dql_compare` (MISSING for
/// another type, NULL for null), in plain SQL that the planner can inline.
fn compare_with_literal(op: CmpOp, x: Expr, v: &Value, p: &mut Params) -> Expr {
    let kind = scalar_kind(v).unwrap_or("number");
    let (left, sql_op, right) = literal_operands(op, x.clone(), v, p);
    case(
        vec![
            (
                typeof_is(x.clone(), kind),
                call("to_jsonb", vec![bin(left, sql_op, right)]),
            ),
            (typeof_is(x, "null"), jsonb_constant("null")),
        ],
        None,
    )
}

/// Combines with an associative function as a balanced tree (shallow SQL for long chains).
fn balanced(f: &str, parts: Vec<Expr>, empty: &str) -> Expr {
    tree(parts, &|a, b| call(f, vec![a, b])).unwrap_or_else(|| jsonb_constant(empty))
}

/// Combines with an associative binary operator as a balanced tree: `a OR b OR ...` stays
/// shallow however long the chain (a deep tree would overflow the stack while it is printed).
pub(super) fn balanced_op(op: BinaryOperator, parts: Vec<Expr>) -> Option<Expr> {
    tree(parts, &|a, b| bin(a, op.clone(), b))
}

fn tree(mut parts: Vec<Expr>, join: &dyn Fn(Expr, Expr) -> Expr) -> Option<Expr> {
    while parts.len() > 1 {
        let mut next = Vec::with_capacity(parts.len().div_ceil(2));
        let mut it = parts.into_iter();
        while let Some(a) = it.next() {
            match it.next() {
                Some(b) => next.push(join(a, b)),
                None => next.push(a),
            }
        }
        parts = next;
    }
    parts.pop()
}

/// Postgres passes at most 100 arguments to a function (`FUNC_MAX_ARGS`), variadic ones too:
/// longer lists are split into calls of at most this many arguments.
pub(super) const MAX_ARGS: usize = 100;

/// Fields set by one chain of `dql_obj_set` calls; larger objects are merged (`||`) from such
/// chains, so that the SQL stays shallow.
const OBJECT_CHAIN: usize = 16;

/// The literal values of `items`, when every one is a literal.
fn literals<'a>(items: impl IntoIterator<Item = &'a PExpr>) -> Option<Vec<Value>> {
    items
        .into_iter()
        .map(|i| match i {
            PExpr::Lit(v) => Some(v.clone()),
            _ => None,
        })
        .collect()
}

/// An array literal: one bound jsonb value when every element is a literal, else
/// `jsonb_build_array` over groups of at most [`MAX_ARGS`] elements joined with `||`.
fn array(items: &[PExpr], scope: &Scope, p: &mut Params) -> Result<Expr> {
    if let Some(values) = literals(items) {
        return Ok(p.jsonb(&Value::Array(values)));
    }
    let mut groups = Vec::with_capacity(items.len().div_ceil(MAX_ARGS));
    for group in items.chunks(MAX_ARGS) {
        groups.push(match literals(group) {
            Some(values) => p.jsonb(&Value::Array(values)),
            None => {
                let args = group
                    .iter()
                    .map(|i| compile(i, scope, p))
                    .collect::<Result<Vec<_>>>()?;
                call("jsonb_build_array", args)
            }
        });
    }
    Ok(balanced_op(BinaryOperator::StringConcat, groups).unwrap_or_else(|| jsonb_constant("[]")))
}

/// `base` with the fields set in order (a MISSING value sets nothing): chains of
/// `dql_obj_set` of at most [`OBJECT_CHAIN`] fields, merged with `||` (the later field wins, as
/// in the chain).
pub(super) fn object_with(base: Expr, fields: Vec<(Expr, Expr)>) -> Expr {
    let chain = |start: Expr, fields: Vec<(Expr, Expr)>| {
        fields
            .into_iter()
            .fold(start, |o, (k, v)| call("dql_obj_set", vec![o, k, v]))
    };
    if fields.len() <= OBJECT_CHAIN {
        return chain(base, fields);
    }
    let mut parts = vec![base];
    let mut fields = fields.into_iter().peekable();
    while fields.peek().is_some() {
        let group: Vec<(Expr, Expr)> = fields.by_ref().take(OBJECT_CHAIN).collect();
        parts.push(chain(jsonb_constant("{}"), group));
    }
    balanced_op(BinaryOperator::StringConcat, parts).unwrap_or_else(|| jsonb_constant("{}"))
}

/// A variadic helper over any number of arguments: calls of at most [`MAX_ARGS`] arguments,
/// nested (`f(f(a1..a100), f(a101..))`). Only for functions where that gives the same result
/// (`dql_concat`, `dql_coalesce`).
fn variadic(f: &str, mut args: Vec<Expr>) -> Expr {
    while args.len() > MAX_ARGS {
        let mut next = Vec::with_capacity(args.len().div_ceil(MAX_ARGS));
        let mut it = args.into_iter().peekable();
        while it.peek().is_some() {
            next.push(call(f, it.by_ref().take(MAX_ARGS).collect()));
        }
        args = next;
    }
    call(f, args)
}

/// `decode(x, search, result, ..., [default])`: `dql_decode` while the arguments fit one call,
/// else the same as a `CASE` (which has no argument limit).
fn decode(mut args: Vec<Expr>) -> Expr {
    if args.len() <= MAX_ARGS {
        return call("dql_decode", args);
    }
    let x = args.remove(0);
    let mut pairs = args.chunks_exact(2);
    let mut whens = vec![(Expr::IsNull(Box::new(x.clone())), null_jsonb())];
    for pair in pairs.by_ref() {
        // A null search value matches a null x (as `dql_decode`).
        let matched = bin(
            bin(
                call("dql_compare", vec![int(0), x.clone(), pair[0].clone()]),
                BinaryOperator::Eq,
                jsonb_constant("true"),
            ),
            BinaryOperator::Or,
            bin(
                bin(x.clone(), BinaryOperator::Eq, jsonb_constant("null")),
                BinaryOperator::And,
                bin(pair[0].clone(), BinaryOperator::Eq, jsonb_constant("null")),
            ),
        );
        whens.push((matched, pair[1].clone()));
    }
    let default = match pairs.remainder() {
        [d] => d.clone(),
        _ => jsonb_constant("null"),
    };
    case(whens, Some(default))
}

/// `(e) = 'true'::jsonb`: the SQL condition "the DQL value is TRUE".
pub fn is_true(e: Expr) -> Expr {
    bin(e, BinaryOperator::Eq, jsonb_constant("true"))
}

/// Compiles one expression.
pub fn compile(e: &PExpr, scope: &Scope, p: &mut Params) -> Result<Expr> {
    let c = |x: &PExpr, p: &mut Params| compile(x, scope, p);
    Ok(match e {
        PExpr::Lit(v) => p.jsonb(v),
        PExpr::Missing => null_jsonb(),
        PExpr::Field(path) => match &scope.doc {
            Some(doc) => {
                let mut out = doc.clone();
                for k in path {
                    out = bin(out, BinaryOperator::Arrow, p.text(k));
                }
                out
            }
            None => null_jsonb(),
        },
        PExpr::Member(base, k) => bin(c(base, p)?, BinaryOperator::Arrow, p.text(k)),
        PExpr::Index(base, i) => call("dql_index", vec![c(base, p)?, c(i, p)?]),
        PExpr::Array(items) => array(items, scope, p)?,
        PExpr::Object(fields) => {
            if let Some(values) = literals(fields.iter().map(|(_, v)| v)) {
                // Later keys win, as in the chain of `dql_obj_set`.
                let mut object = std::collections::BTreeMap::new();
                for ((k, _), v) in fields.iter().zip(values) {
                    object.insert(k.clone(), v);
                }
                return Ok(p.jsonb(&Value::Object(object)));
            }
            let mut sets = Vec::with_capacity(fields.len());
            for (k, v) in fields {
                sets.push((p.text(k), c(v, p)?));
            }
            object_with(jsonb_constant("{}"), sets)
        }
        PExpr::Not(x) => call("dql_not", vec![c(x, p)?]),
        PExpr::Neg(x) => call("dql_neg", vec![c(x, p)?]),
        PExpr::All(items) => {
            let parts = items.iter().map(|i| c(i, p)).collect::<Result<Vec<_>>>()?;
            balanced("dql_and", parts, "true")
        }
        // One fold over the chain, as the evaluator's: pairwise, a non-boolean operand's rank
        // (above null) would be lost in the MISSING it shows as.
        PExpr::Any(items) => {
            let parts = items.iter().map(|i| c(i, p)).collect::<Result<Vec<_>>>()?;
            call("dql_or_all", vec![jsonb_array(parts)])
        }
        PExpr::Cmp(op, a, b) => match (a.as_ref(), b.as_ref()) {
            (x, PExpr::Lit(v)) if scalar_kind(v).is_some() => {
                compare_with_literal(*op, c(x, p)?, v, p)
            }
            (PExpr::Lit(v), x) if scalar_kind(v).is_some() => {
                compare_with_literal(flip(*op), c(x, p)?, v, p)
            }
            _ => call("dql_compare", vec![int(cmp_code(*op)), c(a, p)?, c(b, p)?]),
        },
        PExpr::Arith(op, a, b) => call("dql_arith", vec![int(arith_code(*op)), c(a, p)?, c(b, p)?]),
        PExpr::Between {
            expr,
            low,
            high,
            negated,
        } => {
            let x = c(expr, p)?;
            let ge = call("dql_compare", vec![int(5), x.clone(), c(low, p)?]);
            let le = call("dql_compare", vec![int(3), x, c(high, p)?]);
            let r = call("dql_and", vec![ge, le]);
            if *negated {
                call("dql_not", vec![r])
            } else {
                r
            }
        }
        PExpr::InList {
            expr,
            list,
            negated,
        } => {
            let x = c(expr, p)?;
            let acc = match literals(list) {
                // The same fold as `dql_in` (OR of the equalities, from false), over one
                // bound array instead of a parameter per value.
                Some(values) if list.len() > 1 => {
                    call("dql_in", vec![x, p.jsonb(&Value::Array(values))])
                }
                _ => {
                    let mut parts = Vec::with_capacity(list.len());
                    for item in list {
                        parts.push(call("dql_compare", vec![int(0), x.clone(), c(item, p)?]));
                    }
                    balanced("dql_or", parts, "false")
                }
            };
            if *negated {
                call("dql_not", vec![acc])
            } else {
                acc
            }
        }
        PExpr::InArray {
            expr,
            array,
            negated,
        } => {
            let r = call("dql_in", vec![c(expr, p)?, c(array, p)?]);
            if *negated {
                call("dql_not", vec![r])
            } else {
                r
            }
        }
        PExpr::Like {
            expr,
            pattern,
            case_insensitive,
            negated,
            escape,
        } => {
            let ci = Expr::value(sqlparser::ast::Value::Boolean(*case_insensitive));
            // The escape character is a bind parameter ('' for none).
            let esc = p.text(&escape.map(String::from).unwrap_or_default());
            let r = call("dql_like", vec![c(expr, p)?, c(pattern, p)?, ci, esc]);
            if *negated {
                call("dql_not", vec![r])
            } else {
                r
            }
        }
        PExpr::Is {
            expr,
            test,
            negated,
        } => {
            let x = c(expr, p)?;
            let cond = match test {
                IsTest::Null | IsTest::Unknown => call(
                    "coalesce",
                    vec![
                        bin(x, BinaryOperator::Eq, jsonb_constant("null")),
                        Expr::value(sqlparser::ast::Value::Boolean(false)),
                    ],
                ),
                IsTest::Missing => Expr::IsNull(Box::new(x)),
            };
            let cond = if *negated {
                Expr::UnaryOp {
                    op: sqlparser::ast::UnaryOperator::Not,
                    expr: Box::new(Expr::Nested(Box::new(cond))),
                }
            } else {
                cond
            };
            call("to_jsonb", vec![cond])
        }
        PExpr::Call(func, args) => {
            let a = args.iter().map(|x| c(x, p)).collect::<Result<Vec<_>>>()?;
            function(*func, a)
        }
        PExpr::Agg(i) => scope.aggs.get(*i).cloned().unwrap_or_else(null_jsonb),
        PExpr::GroupKey(i) => scope.keys.get(*i).cloned().unwrap_or_else(null_jsonb),
    })
}

fn function(f: Func, mut a: Vec<Expr>) -> Expr {
    let first = |a: &mut Vec<Expr>| {
        if a.is_empty() {
            null_jsonb()
        } else {
            a.remove(0)
        }
    };
    let type_test = |x: Expr, kinds: &[&str]| {
        let cond = kinds
            .iter()
            .map(|k| typeof_is(x.clone(), k))
            .reduce(|l, r| bin(l, BinaryOperator::Or, r));
        case(
            vec![
                (Expr::IsNull(Box::new(x.clone())), null_jsonb()),
                (
                    bin(x.clone(), BinaryOperator::Eq, jsonb_constant("null")),
                    jsonb_constant("null"),
                ),
            ],
            Some(call(
                "to_jsonb",
                vec![cond.unwrap_or_else(|| Expr::value(sqlparser::ast::Value::Boolean(false)))],
            )),
        )
    };
    match f {
        Func::Concat => variadic("dql_concat", a),
        Func::Contains => call("dql_str2", [vec![int(0)], a].concat()),
        Func::StartsWith => call("dql_str2", [vec![int(1)], a].concat()),
        Func::EndsWith => call("dql_str2", [vec![int(2)], a].concat()),
        Func::ByteLength => call("dql_str1", vec![int(0), first(&mut a)]),
        Func::CharLength => call("dql_str1", vec![int(1), first(&mut a)]),
        Func::Upper => call("dql_str1", vec![int(2), first(&mut a)]),
        Func::Lower => call("dql_str1", vec![int(3), first(&mut a)]),
        Func::IsBoolean => type_test(first(&mut a), &["boolean"]),
        Func::IsNumber => type_test(first(&mut a), &["number"]),
        Func::IsString => type_test(first(&mut a), &["string"]),
        Func::Type => call("dql_type", a),
        Func::ArrayContains => call("dql_array_contains", a),
        Func::ArrayContainsNull => call("dql_coll", vec![int(0), first(&mut a)]),
        Func::ArrayLength => call("dql_coll", vec![int(1), first(&mut a)]),
        Func::ObjectLength => call("dql_coll", vec![int(2), first(&mut a)]),
        Func::ObjectKeys => call("dql_coll", vec![int(3), first(&mut a)]),
        Func::ObjectValues => call("dql_coll", vec![int(4), first(&mut a)]),
        Func::Coalesce => variadic("dql_coalesce", a),
        Func::Nvl => {
            let x = first(&mut a);
            let d = first(&mut a);
            case(
                vec![(
                    bin(
                        Expr::IsNull(Box::new(x.clone())),
                        BinaryOperator::Or,
                        bin(x.clone(), BinaryOperator::Eq, jsonb_constant("null")),
                    ),
                    d,
                )],
                Some(x),
            )
        }
        Func::Decode => decode(a),
        Func::Abs => call("dql_math", vec![int(0), first(&mut a)]),
        Func::Ceil => call("dql_math", vec![int(1), first(&mut a)]),
        Func::Floor => call("dql_math", vec![int(2), first(&mut a)]),
        Func::DeserializeJson => call("dql_deserialize_json", a),
    }
}

/// Compiles an aggregate over the rows of a group (`scope` is the per-document scope).
pub fn aggregate(a: &AggCall, scope: &Scope, p: &mut Params) -> Result<Expr> {
    let x = match &a.arg {
        Some(arg) => compile(arg, scope, p)?,
        None => null_jsonb(),
    };
    let d = a.distinct;
    let when_number = |then: Expr| case(vec![(typeof_is(x.clone(), "number"), then)], None);
    let numeric = cast(
        x.clone(),
        DataType::Numeric(sqlparser::ast::ExactNumberInfo::None),
    );
    Ok(match a.func {
        AggFunc::CountStar => call("to_jsonb", vec![count_star()]),
        AggFunc::Count => {
            // Ditto counts neither null nor false.
            let not_null = bin(
                bin(x.clone(), BinaryOperator::NotEq, jsonb_constant("null")),
                BinaryOperator::And,
                bin(x.clone(), BinaryOperator::NotEq, jsonb_constant("false")),
            );
            call(
                "to_jsonb",
                vec![call_with(
                    "count",
                    vec![case(vec![(not_null, x.clone())], None)],
                    d,
                )],
            )
        }
        AggFunc::Sum | AggFunc::Avg => {
            let isum = call_with("sum", vec![when_number(numeric.clone())], d);
            // `dql_fsum`: an overflowing float sum is infinite (null in the end), not an error.
            let fsum = call_with(
                "dql_fsum",
                vec![when_number(cast(numeric.clone(), DataType::Float8))],
                d,
            );
            let n = call_with("count", vec![when_number(numeric.clone())], d);
            let any_float = call(
                "bool_or",
                vec![when_number(template_not(call(
                    "dql_is_int",
                    vec![x.clone()],
                )))],
            );
            let avg = Expr::value(sqlparser::ast::Value::Boolean(a.func == AggFunc::Avg));
            call("dql_sum_final", vec![isum, fsum, n, any_float, avg])
        }
        AggFunc::Min => call("dql_min", vec![x]),
        AggFunc::Max => call("dql_max", vec![x]),
    })
}

/// ORDER BY terms for one DQL sort key: type rank, then the value within its type.
pub fn sort_terms(k: Expr) -> Vec<Expr> {
    let numeric = cast(
        k.clone(),
        DataType::Numeric(sqlparser::ast::ExactNumberInfo::None),
    );
    let other = bin(
        bin(
            typeof_is(k.clone(), "array"),
            BinaryOperator::Or,
            typeof_is(k.clone(), "object"),
        ),
        BinaryOperator::Or,
        typeof_is(k.clone(), "boolean"),
    );
    vec![
        call("dql_rank", vec![k.clone()]),
        case(vec![(typeof_is(k.clone(), "number"), numeric)], None),
        collate_c(case(
            vec![(typeof_is(k.clone(), "string"), json_text(k.clone()))],
            None,
        )),
        case(vec![(other, call("dql_sort_bytes", vec![k]))], None),
    ]
}
