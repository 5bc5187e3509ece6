//! DQL's value semantics: the cross-type order, three-valued logic with MISSING, comparisons and
//! arithmetic with Ditto's number model. `None` is MISSING throughout.

use std::cmp::Ordering;

use bigpeer_schema::Value;

use crate::ast::BinaryOp;
use crate::plan::CmpOp;

/// Rank of a value's type in ORDER BY: bool < number < binary < string < array < object < null
/// < missing.
pub fn type_rank(v: Option<&Value>) -> u8 {
    match v {
        Some(Value::Bool(_)) => 0,
        Some(Value::Int(_) | Value::UInt(_) | Value::Float(_)) => 1,
        Some(Value::Binary(_)) => 2,
        Some(Value::String(_)) => 3,
        Some(Value::Array(_)) => 4,
        Some(Value::Object(_)) => 5,
        Some(Value::Null) => 6,
        None => 7,
    }
}

/// Compares two numbers exactly where both are integers.
pub fn num_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    let int = |v: &Value| match v {
        Value::Int(i) => Some(i128::from(*i)),
        Value::UInt(u) => Some(i128::from(*u)),
        _ => None,
    };
    match (int(a), int(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// The total order of ORDER BY, MIN/MAX, GROUP BY and DISTINCT.
pub fn order_cmp(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    let (ra, rb) = (type_rank(a), type_rank(b));
    if ra != rb {
        return ra.cmp(&rb);
    }
    match (a, b) {
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(x @ (Value::Int(_) | Value::UInt(_) | Value::Float(_))), Some(y)) => {
            num_cmp(x, y).unwrap_or(Ordering::Equal)
        }
        (Some(Value::Binary(x)), Some(Value::Binary(y))) => x.cmp(y),
        (Some(Value::String(x)), Some(Value::String(y))) => x.as_bytes().cmp(y.as_bytes()),
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            for (p, q) in x.iter().zip(y) {
                let c = order_cmp(Some(p), Some(q));
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            for ((kp, vp), (kq, vq)) in x.iter().zip(y) {
                let c = kp
                    .as_bytes()
                    .cmp(kq.as_bytes())
                    .then_with(|| order_cmp(Some(vp), Some(vq)));
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        _ => Ordering::Equal,
    }
}

/// Whether two values are of the same comparable kind.
fn same_kind(a: &Value, b: &Value) -> bool {
    let kind = |v: &Value| match v {
        Value::Int(_) | Value::UInt(_) | Value::Float(_) => 1,
        other => type_rank(Some(other)),
    };
    kind(a) == kind(b)
}

/// `a <op> b`: MISSING when either side is missing or the types differ, NULL when either is
/// null; objects only compare for equality (ordering them gives false).
pub fn compare(op: CmpOp, a: Option<&Value>, b: Option<&Value>) -> Option<Value> {
    let (a, b) = (a?, b?);
    if a.is_null() || b.is_null() {
        return Some(Value::Null);
    }
    if !same_kind(a, b) {
        return None;
    }
    if let (Value::Array(x), Value::Array(y)) = (a, b) {
        if !matches!(op, CmpOp::Eq | CmpOp::Neq) {
            return array_order(op, x, y);
        }
    }
    let ord = order_cmp(Some(a), Some(b));
    let r = match op {
        CmpOp::Eq => ord == Ordering::Equal,
        CmpOp::Neq => ord != Ordering::Equal,
        _ if matches!(a, Value::Object(_)) => false,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
    };
    Some(Value::Bool(r))
}

/// `<`, `<=`, `>`, `>=` on arrays: the first pair of elements that differ decides, with the
/// comparison's own semantics (`[null] < [1]` is null, `[1, 'a'] < [1, 2]` is missing); then
/// the lengths.
fn array_order(op: CmpOp, x: &[Value], y: &[Value]) -> Option<Value> {
    for (p, q) in x.iter().zip(y) {
        let equal =
            same_kind(p, q) && order_cmp(Some(p), Some(q)) == Ordering::Equal && !p.is_null();
        if !equal {
            return compare(op, Some(p), Some(q));
        }
    }
    compare(
        op,
        Some(&Value::Int(x.len() as i64)),
        Some(&Value::Int(y.len() as i64)),
    )
}

/// A truth value: true, false, null, missing (anything that is not a boolean or null).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    True,
    False,
    Null,
    Missing,
    /// A value that is not a boolean (nor null) where AND / OR / NOT expect one. It shows as
    /// MISSING, but within an OR it outranks NULL (Ditto: `1 OR null` and `false OR 1 OR null`
    /// are MISSING, while `missing OR null` is NULL).
    NotBool,
}

impl Truth {
    pub fn of(v: Option<&Value>) -> Truth {
        match v {
            Some(Value::Bool(true)) => Truth::True,
            Some(Value::Bool(false)) => Truth::False,
            Some(Value::Null) => Truth::Null,
            Some(_) => Truth::NotBool,
            None => Truth::Missing,
        }
    }

    pub fn value(self) -> Option<Value> {
        match self {
            Truth::True => Some(Value::Bool(true)),
            Truth::False => Some(Value::Bool(false)),
            Truth::Null => Some(Value::Null),
            Truth::Missing | Truth::NotBool => None,
        }
    }

    pub fn and(self, other: Truth) -> Truth {
        use Truth::*;
        match (self, other) {
            (False, _) | (_, False) => False,
            (Missing | NotBool, _) | (_, Missing | NotBool) => Missing,
            (Null, _) | (_, Null) => Null,
            (True, True) => True,
        }
    }

    /// OR: TRUE outranks a non-boolean, which outranks NULL, then MISSING, then FALSE.
    pub fn or(self, other: Truth) -> Truth {
        use Truth::*;
        match (self, other) {
            (True, _) | (_, True) => True,
            (NotBool, _) | (_, NotBool) => NotBool,
            (Null, _) | (_, Null) => Null,
            (Missing, _) | (_, Missing) => Missing,
            (False, False) => False,
        }
    }

    /// IN: the comparisons with the list's values, any of which may match. A comparison that
    /// is MISSING (across types) outranks one that is NULL.
    pub fn or_match(self, other: Truth) -> Truth {
        use Truth::*;
        match (self, other) {
            (True, _) | (_, True) => True,
            (Missing | NotBool, _) | (_, Missing | NotBool) => Missing,
            (Null, _) | (_, Null) => Null,
            (False, False) => False,
        }
    }

    pub fn negate(self) -> Truth {
        match self {
            Truth::True => Truth::False,
            Truth::False => Truth::True,
            Truth::NotBool => Truth::Missing,
            other => other,
        }
    }
}

/// An integer result: `Int` when it fits, `UInt` above `i64::MAX`, otherwise a float.
pub fn int_value(v: i128) -> Value {
    if let Ok(i) = i64::try_from(v) {
        Value::Int(i)
    } else if let Ok(u) = u64::try_from(v) {
        Value::UInt(u)
    } else {
        Value::Float(v as f64)
    }
}

fn as_int(v: &Value) -> Option<i128> {
    match v {
        Value::Int(i) => Some(i128::from(*i)),
        Value::UInt(u) => Some(i128::from(*u)),
        _ => None,
    }
}

fn is_number(v: &Value) -> bool {
    matches!(v, Value::Int(_) | Value::UInt(_) | Value::Float(_))
}

/// `+ - * / % ||`. Integer division truncates; int with float gives a float; division by zero,
/// overflow to infinity and type errors give MISSING; null gives null.
pub fn arith(op: BinaryOp, a: Option<&Value>, b: Option<&Value>) -> Option<Value> {
    let (a, b) = (a?, b?);
    if op == BinaryOp::Concat {
        return match (a, b) {
            (Value::String(x), Value::String(y)) => Some(Value::String(format!("{x}{y}"))),
            (Value::Null, Value::String(_) | Value::Null) | (Value::String(_), Value::Null) => {
                Some(Value::Null)
            }
            _ => None,
        };
    }
    if a.is_null() || b.is_null() {
        return if (a.is_null() || is_number(a)) && (b.is_null() || is_number(b)) {
            Some(Value::Null)
        } else {
            None
        };
    }
    if let (Some(x), Some(y)) = (as_int(a), as_int(b)) {
        let r = match op {
            BinaryOp::Add => x.checked_add(y)?,
            BinaryOp::Sub => x.checked_sub(y)?,
            BinaryOp::Mul => x.checked_mul(y)?,
            BinaryOp::Div => x.checked_div(y)?,
            BinaryOp::Mod => x.checked_rem(y)?,
            _ => return None,
        };
        return int_result(r);
    }
    let (x, y) = (a.as_f64()?, b.as_f64()?);
    if !is_number(a) || !is_number(b) {
        return None;
    }
    let r = match op {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div if y == 0.0 => return None,
        BinaryOp::Div => x / y,
        BinaryOp::Mod if y == 0.0 => return None,
        BinaryOp::Mod => x % y,
        _ => return None,
    };
    // A float result out of range is null (as Ditto answers `1e300 * 1e300`).
    Some(Value::float(r).unwrap_or(Value::Null))
}

/// Unary minus.
pub fn negate(a: Option<&Value>) -> Option<Value> {
    match a? {
        Value::Null => Some(Value::Null),
        Value::Float(f) => Some(Value::Float(-f)),
        v => as_int(v).and_then(|i| int_result(-i)),
    }
}

/// An integer result of arithmetic: MISSING outside `i64::MIN ..= u64::MAX` (Ditto's integers).
pub fn int_result(v: i128) -> Option<Value> {
    if let Ok(i) = i64::try_from(v) {
        Some(Value::Int(i))
    } else {
        u64::try_from(v).ok().map(Value::UInt)
    }
}

/// SQL LIKE with `%` and `_`, on characters; `escape` (LIKE ... ESCAPE 'c') makes the next
/// character literal. Without ESCAPE there is no escape character (as in Ditto: a `\%` in the
/// statement's text is already `%` in the string).
pub fn like(text: &str, pattern: &str, case_insensitive: bool, escape: Option<char>) -> bool {
    let (t, p): (Vec<char>, Vec<char>) = if case_insensitive {
        (
            text.to_lowercase().chars().collect(),
            pattern.to_lowercase().chars().collect(),
        )
    } else {
        (text.chars().collect(), pattern.chars().collect())
    };
    let escape = if case_insensitive {
        escape.map(|e| e.to_lowercase().next().unwrap_or(e))
    } else {
        escape
    };
    // Tokens: Some(c) a literal char, None for `_`; `%` handled as a star.
    #[derive(Clone, Copy, PartialEq)]
    enum P {
        Lit(char),
        One,
        Any,
    }
    let mut toks = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            e if Some(e) == escape && i + 1 < p.len() => {
                toks.push(P::Lit(p[i + 1]));
                i += 1;
            }
            '%' => toks.push(P::Any),
            '_' => toks.push(P::One),
            c => toks.push(P::Lit(c)),
        }
        i += 1;
    }
    // Iterative wildcard matching with backtracking to the last `%`.
    let (mut ti, mut pi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match toks.get(pi) {
            Some(P::Any) => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(P::One) => {
                ti += 1;
                pi += 1;
            }
            Some(P::Lit(c)) if *c == t[ti] => {
                ti += 1;
                pi += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    toks[pi..].iter().all(|t| *t == P::Any)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns() {
        assert!(like("Alice", "Al%", false, None));
        assert!(!like("alan", "Al%", false, None));
        assert!(like("alan", "Al%", true, None));
        assert!(like("A_x", "A_x", false, None));
        assert!(like("50%", "50!%", false, Some('!')));
        assert!(!like("5x", "50!%", false, Some('!')));
        assert!(like("50\\x", "50\\_", false, None));
        assert!(like("abcabc", "%b%c", false, None));
        assert!(!like("ab", "a_b", false, None));
        assert!(like("", "%", false, None));
    }

    #[test]
    fn numbers() {
        assert_eq!(
            arith(BinaryOp::Div, Some(&Value::Int(7)), Some(&Value::Int(2))),
            Some(Value::Int(3))
        );
        assert_eq!(
            arith(BinaryOp::Div, Some(&Value::Int(-7)), Some(&Value::Int(2))),
            Some(Value::Int(-3))
        );
        assert_eq!(
            arith(
                BinaryOp::Add,
                Some(&Value::Int(7)),
                Some(&Value::Float(1.0))
            ),
            Some(Value::Float(8.0))
        );
        assert_eq!(
            arith(
                BinaryOp::Add,
                Some(&Value::Int(i64::MAX)),
                Some(&Value::Int(1))
            ),
            Some(Value::UInt(9_223_372_036_854_775_808))
        );
        assert_eq!(
            arith(BinaryOp::Div, Some(&Value::Int(1)), Some(&Value::Int(0))),
            None
        );
        assert_eq!(
            arith(
                BinaryOp::Add,
                Some(&Value::String("a".into())),
                Some(&Value::Int(1))
            ),
            None
        );
    }
}
