//! GROUP BY and aggregates.

use std::cmp::Ordering;

use bigpeer_schema::Value;

use super::expr::{eval, Env};
use super::ops::{int_value, order_cmp};
use crate::error::Result;
use crate::plan::{AggCall, AggFunc, PExpr};

/// A group: its key values and its documents.
pub type Group<'a> = (Vec<Option<Value>>, Vec<&'a Value>);

/// Splits documents into groups by their key values, in key order. No documents give one empty
/// group (so `COUNT(*)` is 0), as Ditto does even with GROUP BY.
pub fn group_rows<'a>(
    keys: &[PExpr],
    docs: impl Iterator<Item = &'a Value>,
) -> Result<Vec<Group<'a>>> {
    let mut groups: Vec<Group<'a>> = Vec::new();
    for d in docs {
        let env = Env {
            doc: Some(d),
            ..Env::default()
        };
        let k = keys
            .iter()
            .map(|e| Ok(eval(e, &env)?.map(|v| v.into_owned())))
            .collect::<Result<Vec<_>>>()?;
        let pos = groups.binary_search_by(|(g, _)| cmp_key(g, &k));
        match pos {
            Ok(i) => groups[i].1.push(d),
            Err(i) => groups.insert(i, (k, vec![d])),
        }
    }
    if groups.is_empty() {
        groups.push((vec![None; keys.len()], Vec::new()));
    }
    Ok(groups)
}

fn cmp_key(a: &[Option<Value>], b: &[Option<Value>]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let c = order_cmp(x.as_ref(), y.as_ref());
        if c != Ordering::Equal {
            return c;
        }
    }
    a.len().cmp(&b.len())
}

fn integral_or_float(f: f64) -> Value {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.2e18 {
        Value::Int(f as i64)
    } else {
        Value::float(f).unwrap_or(Value::Null)
    }
}

/// Computes one aggregate over the documents of a group.
pub fn aggregate(call: &AggCall, docs: &[&Value]) -> Result<Option<Value>> {
    if call.func == AggFunc::CountStar {
        return Ok(Some(int_value(docs.len() as i128)));
    }
    let mut values: Vec<Value> = Vec::new();
    if let Some(arg) = &call.arg {
        for d in docs {
            if let Some(v) = eval(
                arg,
                &Env {
                    doc: Some(d),
                    ..Env::default()
                },
            )? {
                values.push(v.into_owned());
            }
        }
    }
    if call.distinct {
        values.sort_by(|a, b| order_cmp(Some(a), Some(b)));
        values.dedup_by(|a, b| order_cmp(Some(a), Some(b)) == Ordering::Equal);
    }
    Ok(match call.func {
        // Ditto counts neither null nor false (0, '' and [] do count).
        AggFunc::CountStar | AggFunc::Count => {
            let counted = values
                .iter()
                .filter(|v| !matches!(v, Value::Null | Value::Bool(false)));
            Some(int_value(counted.count() as i128))
        }
        AggFunc::Sum | AggFunc::Avg => {
            let nums: Vec<&Value> = values
                .iter()
                .filter(|v| matches!(v, Value::Int(_) | Value::UInt(_) | Value::Float(_)))
                .collect();
            if nums.is_empty() {
                return Ok(None);
            }
            let n = nums.len() as i128;
            let all_int = nums.iter().all(|v| !matches!(v, Value::Float(_)));
            let isum: i128 = nums
                .iter()
                .map(|v| match v {
                    Value::Int(i) => i128::from(*i),
                    Value::UInt(u) => i128::from(*u),
                    _ => 0,
                })
                .sum();
            let fsum: f64 = nums.iter().filter_map(|v| v.as_f64()).sum();
            match (call.func, all_int) {
                // An integer sum beyond i64 becomes a float (Ditto).
                (AggFunc::Sum, true) => {
                    Some(i64::try_from(isum).map_or(Value::Float(isum as f64), Value::Int))
                }
                (AggFunc::Sum, false) => Some(Value::float(fsum).unwrap_or(Value::Null)),
                // AVG is an integer whenever the mean is integral, whatever the inputs.
                (_, true) if isum % n == 0 => int_value(isum / n).into(),
                (_, true) => Some(integral_or_float(isum as f64 / n as f64)),
                (_, false) => Some(integral_or_float(fsum / n as f64)),
            }
        }
        AggFunc::Min => values
            .into_iter()
            .min_by(|a, b| order_cmp(Some(a), Some(b))),
        AggFunc::Max => values
            .into_iter()
            .max_by(|a, b| order_cmp(Some(a), Some(b))),
    })
}
