//! Evaluates resolved expressions against a document (or a group).

use std::borrow::Cow;

use bigpeer_schema::Value;

use super::functions::call;
use super::ops::{arith, compare, like, negate, Truth};
use crate::ast::IsTest;
use crate::error::Result;
use crate::plan::{CmpOp, PExpr};

/// What an expression can see: the document, and for grouped queries the group's keys and
/// aggregate values.
#[derive(Debug, Clone, Copy, Default)]
pub struct Env<'a> {
    pub doc: Option<&'a Value>,
    pub keys: &'a [Option<Value>],
    pub aggs: &'a [Option<Value>],
}

/// A value or MISSING (`None`), borrowed from the document where possible.
pub type Val<'a> = Option<Cow<'a, Value>>;

fn owned<'a>(v: Option<Value>) -> Val<'a> {
    v.map(Cow::Owned)
}

/// Evaluates an expression that reads no document.
pub fn eval_const(e: &PExpr) -> Result<Option<Value>> {
    Ok(eval(e, &Env::default())?.map(Cow::into_owned))
}

/// True when the expression is TRUE for this document (WHERE, HAVING).
pub fn is_true(e: &PExpr, env: &Env<'_>) -> Result<bool> {
    Ok(matches!(eval(e, env)?.as_deref(), Some(Value::Bool(true))))
}

pub fn eval<'a>(e: &'a PExpr, env: &Env<'a>) -> Result<Val<'a>> {
    Ok(match e {
        PExpr::Lit(v) => Some(Cow::Borrowed(v)),
        PExpr::Missing => None,
        PExpr::Field(path) => env.doc.and_then(|d| d.get_path(path)).map(Cow::Borrowed),
        PExpr::Member(base, key) => match eval(base, env)? {
            Some(Cow::Borrowed(Value::Object(o))) => o.get(key).map(Cow::Borrowed),
            Some(Cow::Owned(Value::Object(mut o))) => o.remove(key).map(Cow::Owned),
            _ => None,
        },
        PExpr::Index(base, index) => {
            let i = eval(index, env)?;
            let pos = match i.as_deref() {
                Some(Value::Int(i)) => usize::try_from(*i).ok(),
                Some(Value::Float(f)) if f.fract() == 0.0 && *f >= 0.0 && *f < 1e15 => {
                    Some(*f as usize)
                }
                _ => None,
            };
            match (eval(base, env)?, pos) {
                (Some(Cow::Borrowed(Value::Array(a))), Some(p)) => a.get(p).map(Cow::Borrowed),
                (Some(Cow::Owned(Value::Array(a))), Some(p)) => {
                    a.into_iter().nth(p).map(Cow::Owned)
                }
                _ => None,
            }
        }
        PExpr::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for i in items {
                out.push(eval(i, env)?.map(Cow::into_owned).unwrap_or(Value::Null));
            }
            Some(Cow::Owned(Value::Array(out)))
        }
        PExpr::Object(fields) => {
            let mut out = std::collections::BTreeMap::new();
            for (k, v) in fields {
                if let Some(v) = eval(v, env)? {
                    out.insert(k.clone(), v.into_owned());
                }
            }
            Some(Cow::Owned(Value::Object(out)))
        }
        PExpr::Not(x) => owned(Truth::of(eval(x, env)?.as_deref()).negate().value()),
        PExpr::Neg(x) => owned(negate(eval(x, env)?.as_deref())),
        PExpr::All(items) => {
            let mut t = Truth::True;
            for i in items {
                t = t.and(Truth::of(eval(i, env)?.as_deref()));
                if t == Truth::False {
                    break;
                }
            }
            owned(t.value())
        }
        PExpr::Any(items) => {
            let mut t = Truth::False;
            for i in items {
                t = t.or(Truth::of(eval(i, env)?.as_deref()));
                if t == Truth::True {
                    break;
                }
            }
            owned(t.value())
        }
        PExpr::Cmp(op, a, b) => owned(compare(
            *op,
            eval(a, env)?.as_deref(),
            eval(b, env)?.as_deref(),
        )),
        PExpr::Arith(op, a, b) => owned(arith(
            *op,
            eval(a, env)?.as_deref(),
            eval(b, env)?.as_deref(),
        )),
        PExpr::Between {
            expr,
            low,
            high,
            negated,
        } => {
            let x = eval(expr, env)?;
            let ge =
                Truth::of(compare(CmpOp::Ge, x.as_deref(), eval(low, env)?.as_deref()).as_ref());
            let le =
                Truth::of(compare(CmpOp::Le, x.as_deref(), eval(high, env)?.as_deref()).as_ref());
            let t = ge.and(le);
            owned(if *negated { t.negate() } else { t }.value())
        }
        PExpr::InList {
            expr,
            list,
            negated,
        } => {
            let x = eval(expr, env)?;
            let mut t = Truth::False;
            for item in list {
                t = t.or_match(Truth::of(
                    compare(CmpOp::Eq, x.as_deref(), eval(item, env)?.as_deref()).as_ref(),
                ));
            }
            owned(if *negated { t.negate() } else { t }.value())
        }
        PExpr::InArray {
            expr,
            array,
            negated,
        } => {
            let x = eval(expr, env)?;
            let t = match eval(array, env)?.as_deref() {
                Some(Value::Array(items)) => items.iter().fold(Truth::False, |t, item| {
                    t.or_match(Truth::of(
                        compare(CmpOp::Eq, x.as_deref(), Some(item)).as_ref(),
                    ))
                }),
                Some(Value::Null) => Truth::Null,
                _ => Truth::Missing,
            };
            owned(if *negated { t.negate() } else { t }.value())
        }
        PExpr::Like {
            expr,
            pattern,
            case_insensitive,
            negated,
            escape,
        } => {
            let x = eval(expr, env)?;
            let p = eval(pattern, env)?;
            let t = match (x.as_deref(), p.as_deref()) {
                (Some(Value::String(s)), Some(Value::String(p))) => {
                    if like(s, p, *case_insensitive, *escape) {
                        Truth::True
                    } else {
                        Truth::False
                    }
                }
                (Some(Value::Null), Some(Value::String(_) | Value::Null))
                | (Some(Value::String(_)), Some(Value::Null)) => Truth::Null,
                _ => Truth::Missing,
            };
            owned(if *negated { t.negate() } else { t }.value())
        }
        PExpr::Is {
            expr,
            test,
            negated,
        } => {
            let x = eval(expr, env)?;
            let r = match test {
                IsTest::Null | IsTest::Unknown => matches!(x.as_deref(), Some(Value::Null)),
                IsTest::Missing => x.is_none(),
            };
            owned(Some(Value::Bool(r != *negated)))
        }
        PExpr::Call(func, args) => {
            let mut vals = Vec::with_capacity(args.len());
            for a in args {
                vals.push(eval(a, env)?);
            }
            owned(call(*func, &vals)?)
        }
        PExpr::Agg(i) => env.aggs.get(*i).and_then(|v| v.as_ref()).map(Cow::Borrowed),
        PExpr::GroupKey(i) => env.keys.get(*i).and_then(|v| v.as_ref()).map(Cow::Borrowed),
    })
}
