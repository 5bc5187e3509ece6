//! JSON values with Ditto's number model.
//!
//! Integers and floats are distinct: `1` is an integer, `1.0` a float, and both survive a round
//! trip through JSON text and through Postgres `jsonb` (which keeps the scale of `numeric`).
//! Signed and unsigned 64-bit integers are both supported; an unsigned value is only used when it
//! does not fit in `i64`, so every integer has exactly one representation and equality is
//! structural.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Result, SchemaError};

/// A JSON-like value stored in documents.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    /// A signed integer (every integer that fits in `i64`).
    Int(i64),
    /// An unsigned integer larger than `i64::MAX`.
    UInt(u64),
    /// A finite float.
    Float(f64),
    String(String),
    Binary(Vec<u8>),
    Array(Vec<Value>),
    /// An object; keys are kept sorted, so equality ignores the order they were written in.
    Object(BTreeMap<String, Value>),
}

impl Value {
    /// An integer from a `u64`, normalised to [`Value::Int`] when it fits.
    pub fn from_u64(v: u64) -> Value {
        match i64::try_from(v) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::UInt(v),
        }
    }

    /// A float; NaN and infinities are refused (JSON cannot carry them).
    pub fn float(f: f64) -> Result<Value> {
        if f.is_finite() {
            Ok(Value::Float(f))
        } else {
            Err(SchemaError::InvalidValue(format!(
                "float {f} is not finite"
            )))
        }
    }

    /// The name DQL's `type()` gives this value.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) | Value::UInt(_) => "integer",
            Value::Float(_) => "float",
            Value::String(_) => "string",
            Value::Binary(_) => "binary",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&BTreeMap<String, Value>> {
        match self {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// Numeric value as `f64` (integers are converted).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::UInt(u) => Some(*u as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// Looks up a dotted path of object keys.
    pub fn get_path<S: AsRef<str>>(&self, path: &[S]) -> Option<&Value> {
        let mut cur = self;
        for key in path {
            cur = cur.as_object()?.get(key.as_ref())?;
        }
        Some(cur)
    }

    /// Converts from `serde_json`, refusing nothing (serde_json never holds NaN).
    pub fn from_json(v: serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Value::UInt(u)
                } else {
                    Value::Float(n.as_f64().unwrap_or(0.0))
                }
            }
            serde_json::Value::String(s) => Value::String(s),
            serde_json::Value::Array(a) => {
                Value::Array(a.into_iter().map(Value::from_json).collect())
            }
            serde_json::Value::Object(o) => Value::Object(
                o.into_iter()
                    .map(|(k, v)| (k, Value::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// Converts to `serde_json`; binary becomes an array of byte values (as Ditto's
    /// `jsonString()` writes it).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::UInt(u) => serde_json::Value::from(*u),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Binary(b) => {
                serde_json::Value::Array(b.iter().map(|x| serde_json::Value::from(*x)).collect())
            }
            Value::Array(a) => serde_json::Value::Array(a.iter().map(Value::to_json).collect()),
            Value::Object(o) => {
                serde_json::Value::Object(o.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }

    /// Parses JSON text.
    pub fn parse_json(text: &str) -> Result<Value> {
        serde_json::from_str(text)
            .map_err(|e| SchemaError::InvalidValue(format!("invalid JSON: {e}")))
    }

    /// Writes compact JSON text.
    pub fn to_json_string(&self) -> String {
        // Serialising a `Value` to a string cannot fail: keys are strings and floats are finite.
        serde_json::to_string(self).unwrap_or_else(|_| "null".to_owned())
    }

    /// Refuses values that cannot be stored (non-finite floats anywhere inside).
    pub fn validate(&self) -> Result<()> {
        match self {
            Value::Float(f) if !f.is_finite() => Err(SchemaError::InvalidValue(format!(
                "float {f} is not finite"
            ))),
            Value::Array(a) => a.iter().try_for_each(Value::validate),
            Value::Object(o) => o.values().try_for_each(Value::validate),
            _ => Ok(()),
        }
    }

    /// A canonical, self-delimiting byte encoding: equal values give equal bytes, and distinct
    /// values distinct bytes. Used as a deterministic tie-break and as a hashing input.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        crate::codec::write_value(&mut out, self);
        out
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json_string())
    }
}

impl From<serde_json::Value> for Value {
    fn from(v: serde_json::Value) -> Self {
        Value::from_json(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::String(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::String(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::UInt(u) => s.serialize_u64(*u),
            Value::Float(f) => s.serialize_f64(*f),
            Value::String(v) => s.serialize_str(v),
            Value::Binary(b) => {
                let mut seq = s.serialize_seq(Some(b.len()))?;
                for x in b {
                    seq.serialize_element(x)?;
                }
                seq.end()
            }
            Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for x in a {
                    seq.serialize_element(x)?;
                }
                seq.end()
            }
            Value::Object(o) => {
                let mut map = s.serialize_map(Some(o.len()))?;
                for (k, v) in o {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> std::result::Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> std::result::Result<Value, E> {
        Ok(Value::from_u64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Value, E> {
        Value::float(v).map_err(E::custom)
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> std::result::Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> std::result::Result<Value, E> {
        Ok(Value::Binary(v.to_vec()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_model_round_trips() {
        let v = Value::parse_json(r#"{"a":1,"b":1.0,"c":-3,"d":18446744073709551615,"e":2.5e-3}"#)
            .expect("valid json");
        let o = v.as_object().expect("object");
        assert_eq!(o["a"], Value::Int(1));
        assert_eq!(o["b"], Value::Float(1.0));
        assert_eq!(o["c"], Value::Int(-3));
        assert_eq!(o["d"], Value::UInt(u64::MAX));
        assert_eq!(
            v.to_json_string(),
            r#"{"a":1,"b":1.0,"c":-3,"d":18446744073709551615,"e":0.0025}"#
        );
    }

    #[test]
    fn objects_ignore_key_order() {
        let a = Value::parse_json(r#"{"x":1,"y":2}"#).expect("json");
        let b = Value::parse_json(r#"{"y":2,"x":1}"#).expect("json");
        assert_eq!(a, b);
        assert_eq!(a.canonical_bytes(), b.canonical_bytes());
    }

    #[test]
    fn u64_normalises() {
        assert_eq!(Value::from_u64(5), Value::Int(5));
        assert_eq!(Value::from_u64(u64::MAX), Value::UInt(u64::MAX));
    }

    #[test]
    fn non_finite_floats_are_refused() {
        assert!(Value::float(f64::NAN).is_err());
        assert!(Value::Array(vec![Value::Float(f64::INFINITY)])
            .validate()
            .is_err());
    }
}
