//! Scalar functions on values (MISSING in, MISSING out; wrong types give MISSING).

use bigpeer_schema::Value;

use super::expr::Val;
use super::ops::{compare, int_value};
use crate::error::Result;
use crate::plan::{CmpOp, Func};

fn string_arg<'v>(v: &'v Val<'_>) -> Result<&'v str, Option<Value>> {
    match v.as_deref() {
        Some(Value::String(s)) => Ok(s),
        Some(Value::Null) => Err(Some(Value::Null)),
        _ => Err(None),
    }
}

fn present<'v>(v: &'v Val<'_>) -> Option<&'v Value> {
    v.as_deref().filter(|v| !v.is_null())
}

/// Calls a scalar function on evaluated arguments (the arity was checked by the planner).
pub fn call(func: Func, args: &[Val<'_>]) -> Result<Option<Value>> {
    let arg = |i: usize| args.get(i).and_then(|v| v.as_deref());
    let string_pair = |f: &dyn Fn(&str, &str) -> bool| -> Option<Value> {
        let a = match string_arg(args.first()?) {
            Ok(s) => s,
            Err(v) => return v,
        };
        let b = match string_arg(args.get(1)?) {
            Ok(s) => s,
            Err(v) => return v,
        };
        Some(Value::Bool(f(a, b)))
    };
    let string_one = |f: &dyn Fn(&str) -> Value| -> Option<Value> {
        match string_arg(args.first()?) {
            Ok(s) => Some(f(s)),
            Err(v) => v,
        }
    };
    let type_test = |f: &dyn Fn(&Value) -> bool| -> Option<Value> {
        arg(0).map(|v| {
            if v.is_null() {
                Value::Null
            } else {
                Value::Bool(f(v))
            }
        })
    };
    Ok(match func {
        Func::Concat => {
            let mut out = String::new();
            let mut null = false;
            for a in args {
                match a.as_deref() {
                    Some(Value::String(s)) => out.push_str(s),
                    Some(Value::Null) => null = true,
                    _ => return Ok(None),
                }
            }
            Some(if null {
                Value::Null
            } else {
                Value::String(out)
            })
        }
        Func::Contains => string_pair(&|a, b| a.contains(b)),
        Func::StartsWith => string_pair(&|a, b| a.starts_with(b)),
        Func::EndsWith => string_pair(&|a, b| a.ends_with(b)),
        Func::ByteLength => string_one(&|s| int_value(s.len() as i128)),
        Func::CharLength => string_one(&|s| int_value(s.chars().count() as i128)),
        Func::Upper => string_one(&|s| Value::String(s.to_uppercase())),
        Func::Lower => string_one(&|s| Value::String(s.to_lowercase())),
        Func::IsBoolean => type_test(&|v| matches!(v, Value::Bool(_))),
        Func::IsNumber => {
            type_test(&|v| matches!(v, Value::Int(_) | Value::UInt(_) | Value::Float(_)))
        }
        Func::IsString => type_test(&|v| matches!(v, Value::String(_))),
        Func::Type => Some(Value::String(
            arg(0).map_or("missing", Value::type_name).to_owned(),
        )),
        // Found or not: null elements do not make the answer null; a null needle does.
        Func::ArrayContains => match (arg(0), arg(1)) {
            (Some(Value::Null), _) => Some(Value::Null),
            (Some(Value::Array(_)), Some(Value::Null)) => Some(Value::Null),
            (Some(Value::Array(items)), Some(x)) => {
                Some(Value::Bool(items.iter().any(|i| {
                    compare(CmpOp::Eq, Some(i), Some(x)) == Some(Value::Bool(true))
                })))
            }
            _ => None,
        },
        Func::ArrayContainsNull => match arg(0) {
            Some(Value::Array(items)) => Some(Value::Bool(items.iter().any(Value::is_null))),
            Some(Value::Null) => Some(Value::Null),
            _ => None,
        },
        Func::ArrayLength => match arg(0) {
            Some(Value::Array(items)) => Some(int_value(items.len() as i128)),
            Some(Value::Null) => Some(Value::Null),
            _ => None,
        },
        Func::ObjectLength => match arg(0) {
            Some(Value::Object(o)) => Some(int_value(o.len() as i128)),
            Some(Value::Null) => Some(Value::Null),
            _ => None,
        },
        Func::ObjectKeys => match arg(0) {
            Some(Value::Object(o)) => Some(Value::Array(
                o.keys().map(|k| Value::String(k.clone())).collect(),
            )),
            Some(Value::Null) => Some(Value::Null),
            _ => None,
        },
        Func::ObjectValues => match arg(0) {
            Some(Value::Object(o)) => Some(Value::Array(o.values().cloned().collect())),
            Some(Value::Null) => Some(Value::Null),
            _ => None,
        },
        // The first value that is neither null nor missing; null when there is none.
        Func::Coalesce => Some(
            args.iter()
                .find_map(present)
                .cloned()
                .unwrap_or(Value::Null),
        ),
        Func::Nvl => match args.first().and_then(present) {
            Some(v) => Some(v.clone()),
            None => arg(1).cloned(),
        },
        Func::Decode => {
            let Some(x) = arg(0) else { return Ok(None) };
            let x = Some(x);
            let rest = args.get(1..).unwrap_or(&[]);
            let mut pairs = rest.chunks_exact(2);
            for pair in pairs.by_ref() {
                // A null search value matches null (Ditto), unlike `=`.
                let search = pair[0].as_deref();
                let matched = compare(CmpOp::Eq, x, search) == Some(Value::Bool(true))
                    || (x == Some(&Value::Null) && search == Some(&Value::Null));
                if matched {
                    return Ok(pair[1].as_deref().cloned());
                }
            }
            match pairs.remainder() {
                [default] => default.as_deref().cloned(),
                _ => Some(Value::Null),
            }
        }
        Func::Abs => match arg(0) {
            Some(Value::Int(i)) => Some(int_value(i128::from(*i).abs())),
            Some(Value::UInt(u)) => Some(Value::UInt(*u)),
            Some(Value::Float(f)) => Some(Value::Float(f.abs())),
            Some(Value::Null) => Some(Value::Null),
            _ => None,
        },
        Func::Ceil | Func::Floor => match arg(0) {
            Some(v @ (Value::Int(_) | Value::UInt(_))) => Some(v.clone()),
            Some(Value::Float(f)) => Some(Value::Float(if func == Func::Ceil {
                f.ceil()
            } else {
                f.floor()
            })),
            Some(Value::Null) => Some(Value::Null),
            _ => None,
        },
        // Text that is not JSON is MISSING (an INSERT of it is refused when it is checked).
        Func::DeserializeJson => match arg(0) {
            Some(Value::String(s)) => Value::parse_json(s).ok(),
            Some(Value::Null) => Some(Value::Null),
            _ => None,
        },
    })
}
