//! Document ids.
//!
//! Ditto accepts strings, integers, booleans, arrays and objects as `_id` and rejects floats and
//! null (also nested inside arrays and objects). Object ids compare equal regardless of key order.
//!
//! [`DocId::key`] is an order-preserving binary encoding that reproduces Ditto's storage order
//! (the order of `SELECT` without `ORDER BY`): non-negative integers ascending, then negative
//! integers, booleans, strings (shorter first, then bytewise), arrays, objects. The store uses it as
//! the primary key, so `ORDER BY id` in Postgres and sorting by key in memory agree.

use std::cmp::Ordering;
use std::fmt;

use crate::error::{Result, SchemaError};
use crate::value::Value;

const TAG_END: u8 = 0x00;
const TAG_ENTRY: u8 = 0x01;
const TAG_UINT: u8 = 0x10;
const TAG_NEG: u8 = 0x20;
const TAG_BOOL: u8 = 0x30;
const TAG_STR: u8 = 0x40;
const TAG_ARRAY: u8 = 0x50;
const TAG_OBJECT: u8 = 0x60;

/// A validated document id.
#[derive(Debug, Clone, PartialEq)]
pub struct DocId(Value);

impl DocId {
    /// Validates a value as a document id.
    pub fn new(value: Value) -> Result<DocId> {
        check(&value)?;
        Ok(DocId(value))
    }

    /// A string id.
    pub fn string(s: impl Into<String>) -> DocId {
        DocId(Value::String(s.into()))
    }

    /// A fresh ObjectId-like id: 24 lowercase hex characters whose first 8 are the unix time in
    /// seconds, followed by 16 random hex characters.
    pub fn generate() -> DocId {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        DocId::generate_at(secs, rand::random::<[u8; 8]>())
    }

    /// Deterministic form of [`DocId::generate`].
    pub fn generate_at(unix_secs: u64, random: [u8; 8]) -> DocId {
        let mut s = format!("{:08x}", unix_secs & 0xffff_ffff);
        for b in random {
            s.push_str(&format!("{b:02x}"));
        }
        DocId(Value::String(s))
    }

    pub fn value(&self) -> &Value {
        &self.0
    }

    pub fn into_value(self) -> Value {
        self.0
    }

    /// The order-preserving binary key (see the module docs).
    pub fn key(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        write_key(&mut out, &self.0);
        out
    }

    /// Decodes a key written by [`DocId::key`].
    pub fn from_key(bytes: &[u8]) -> Result<DocId> {
        let mut pos = 0;
        let v = read_key(bytes, &mut pos, 0)?;
        if pos != bytes.len() {
            return Err(SchemaError::Corrupt(
                "trailing bytes after document id key".into(),
            ));
        }
        DocId::new(v)
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl PartialOrd for DocId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for DocId {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl Eq for DocId {}

impl std::hash::Hash for DocId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state)
    }
}

impl TryFrom<Value> for DocId {
    type Error = SchemaError;
    fn try_from(v: Value) -> Result<DocId> {
        DocId::new(v)
    }
}

fn check(v: &Value) -> Result<()> {
    match v {
        Value::Float(_) => Err(SchemaError::InvalidId(
            "floats are not supported in document ids".into(),
        )),
        Value::Null => Err(SchemaError::InvalidId(
            "null is not supported as a document id".into(),
        )),
        Value::Binary(_) => Err(SchemaError::InvalidId(
            "binary values are not supported in document ids".into(),
        )),
        Value::Array(a) => a.iter().try_for_each(check),
        Value::Object(o) => o.values().try_for_each(check),
        Value::Bool(_) | Value::Int(_) | Value::UInt(_) | Value::String(_) => Ok(()),
    }
}

fn write_key(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Int(i) if *i >= 0 => {
            out.push(TAG_UINT);
            out.extend_from_slice(&(*i as u64).to_be_bytes());
        }
        Value::Int(i) => {
            out.push(TAG_NEG);
            // Flip the sign bit so that negative numbers sort ascending bytewise.
            out.extend_from_slice(&((*i as u64) ^ (1 << 63)).to_be_bytes());
        }
        Value::UInt(u) => {
            out.push(TAG_UINT);
            out.extend_from_slice(&u.to_be_bytes());
        }
        Value::Bool(b) => {
            out.push(TAG_BOOL);
            out.push(u8::from(*b));
        }
        Value::String(s) => {
            out.push(TAG_STR);
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Value::Array(a) => {
            out.push(TAG_ARRAY);
            for x in a {
                write_key(out, x);
            }
            out.push(TAG_END);
        }
        Value::Object(o) => {
            out.push(TAG_OBJECT);
            for (k, x) in o {
                out.push(TAG_ENTRY);
                out.extend_from_slice(&(k.len() as u32).to_be_bytes());
                out.extend_from_slice(k.as_bytes());
                write_key(out, x);
            }
            out.push(TAG_END);
        }
        // Unreachable for validated ids; encoded so that the function stays total.
        Value::Null | Value::Float(_) | Value::Binary(_) => out.push(TAG_END),
    }
}

fn take<'a>(bytes: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8]> {
    let end = pos
        .checked_add(n)
        .filter(|e| *e <= bytes.len())
        .ok_or_else(|| SchemaError::Corrupt("truncated document id key".into()))?;
    let s = &bytes[*pos..end];
    *pos = end;
    Ok(s)
}

fn take_u32(bytes: &[u8], pos: &mut usize) -> Result<usize> {
    let b = take(bytes, pos, 4)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

fn take_u64(bytes: &[u8], pos: &mut usize) -> Result<u64> {
    let b = take(bytes, pos, 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(u64::from_be_bytes(a))
}

fn take_string(bytes: &[u8], pos: &mut usize) -> Result<String> {
    let n = take_u32(bytes, pos)?;
    let s = take(bytes, pos, n)?;
    String::from_utf8(s.to_vec())
        .map_err(|_| SchemaError::Corrupt("document id key is not UTF-8".into()))
}

fn read_key(bytes: &[u8], pos: &mut usize, depth: usize) -> Result<Value> {
    if depth > 64 {
        return Err(SchemaError::Corrupt("document id nested too deeply".into()));
    }
    let tag = take(bytes, pos, 1)?[0];
    match tag {
        TAG_UINT => Ok(Value::from_u64(take_u64(bytes, pos)?)),
        TAG_NEG => Ok(Value::Int((take_u64(bytes, pos)? ^ (1 << 63)) as i64)),
        TAG_BOOL => Ok(Value::Bool(take(bytes, pos, 1)?[0] != 0)),
        TAG_STR => Ok(Value::String(take_string(bytes, pos)?)),
        TAG_ARRAY => {
            let mut a = Vec::new();
            loop {
                if bytes.get(*pos) == Some(&TAG_END) {
                    *pos += 1;
                    return Ok(Value::Array(a));
                }
                a.push(read_key(bytes, pos, depth + 1)?);
            }
        }
        TAG_OBJECT => {
            let mut o = std::collections::BTreeMap::new();
            loop {
                if bytes.get(*pos) == Some(&TAG_END) {
                    *pos += 1;
                    return Ok(Value::Object(o));
                }
                if take(bytes, pos, 1)?[0] != TAG_ENTRY {
                    return Err(SchemaError::Corrupt(
                        "malformed object in document id key".into(),
                    ));
                }
                let k = take_string(bytes, pos)?;
                let v = read_key(bytes, pos, depth + 1)?;
                o.insert(k, v);
            }
        }
        other => Err(SchemaError::Corrupt(format!(
            "unknown document id key tag {other:#x}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(json: &str) -> DocId {
        DocId::new(Value::parse_json(json).expect("json")).expect("valid id")
    }

    #[test]
    fn storage_order_matches_ditto() {
        // Observed order without ORDER BY: 5, "2", "a", "c", "10" (ints first, shorter strings first).
        let mut ids = [
            id(r#""c""#),
            id(r#""a""#),
            id(r#""10""#),
            id(r#""2""#),
            id("5"),
        ];
        ids.sort();
        let shown: Vec<String> = ids.iter().map(ToString::to_string).collect();
        assert_eq!(shown, vec!["5", r#""2""#, r#""a""#, r#""c""#, r#""10""#]);
    }

    #[test]
    fn type_order() {
        let mut ids = [
            id(r#"{"a":1}"#),
            id("[1]"),
            id(r#""s""#),
            id("true"),
            id("-1"),
            id("-7"),
            id("3"),
            id("18446744073709551615"),
        ];
        ids.sort();
        let shown: Vec<String> = ids.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            vec![
                "3",
                "18446744073709551615",
                "-7",
                "-1",
                "true",
                r#""s""#,
                "[1]",
                r#"{"a":1}"#
            ]
        );
    }

    #[test]
    fn object_ids_ignore_key_order_and_round_trip() {
        let a = id(r#"{"vin":"x","year":2020}"#);
        let b = id(r#"{"year":2020,"vin":"x"}"#);
        assert_eq!(a, b);
        assert_eq!(a.key(), b.key());
        assert_eq!(DocId::from_key(&a.key()).expect("decodes"), a);
    }

    #[test]
    fn floats_and_nulls_are_rejected() {
        assert!(DocId::new(Value::Float(1.5)).is_err());
        assert!(DocId::new(Value::Null).is_err());
        let nested = Value::parse_json(r#"{"a":[1, 2.5]}"#).expect("json");
        let err = DocId::new(nested).expect_err("nested float");
        assert_eq!(err.code(), "document/invalid-id");
    }

    #[test]
    fn generated_ids_look_like_object_ids() {
        let g = DocId::generate_at(0x6543_2100, [0xab; 8]);
        assert_eq!(g.to_string(), "\"65432100abababababababab\"");
        let live = DocId::generate();
        let s = live.value().as_str().expect("string id");
        assert_eq!(s.len(), 24);
        assert!(s.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn corrupt_keys_error() {
        assert!(DocId::from_key(&[]).is_err());
        assert!(DocId::from_key(&[0x40, 0, 0, 0, 9, b'a']).is_err());
        assert!(DocId::from_key(&[0x99]).is_err());
        assert!(DocId::from_key(&[0x50, 0x10]).is_err());
    }
}
