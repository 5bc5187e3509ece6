//! Binary encoding primitives: LEB128 varints, zig-zag integers and values.
//!
//! Values are encoded with a one-byte tag followed by the payload; the encoding is canonical
//! (object keys in order, `-0.0` written as `0.0`), so equal values give equal bytes.

use std::collections::BTreeMap;

use crate::error::{Result, SchemaError};
use crate::value::Value;

const V_NULL: u8 = 0;
const V_FALSE: u8 = 1;
const V_TRUE: u8 = 2;
const V_INT: u8 = 3;
const V_UINT: u8 = 4;
const V_FLOAT: u8 = 5;
const V_STRING: u8 = 6;
const V_BINARY: u8 = 7;
const V_ARRAY: u8 = 8;
const V_OBJECT: u8 = 9;

/// Deepest nesting a decoder accepts.
pub const MAX_DEPTH: usize = 128;

pub fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn write_zigzag(out: &mut Vec<u8>, v: i64) {
    write_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

pub fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

pub fn write_f64(out: &mut Vec<u8>, f: f64) {
    let f = if f == 0.0 { 0.0 } else { f };
    out.extend_from_slice(&f.to_bits().to_le_bytes());
}

pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.push(V_NULL),
        Value::Bool(false) => out.push(V_FALSE),
        Value::Bool(true) => out.push(V_TRUE),
        Value::Int(i) => {
            out.push(V_INT);
            write_zigzag(out, *i);
        }
        Value::UInt(u) => {
            out.push(V_UINT);
            write_varint(out, *u);
        }
        Value::Float(f) => {
            out.push(V_FLOAT);
            write_f64(out, *f);
        }
        Value::String(s) => {
            out.push(V_STRING);
            write_bytes(out, s.as_bytes());
        }
        Value::Binary(b) => {
            out.push(V_BINARY);
            write_bytes(out, b);
        }
        Value::Array(a) => {
            out.push(V_ARRAY);
            write_varint(out, a.len() as u64);
            for x in a {
                write_value(out, x);
            }
        }
        Value::Object(o) => {
            out.push(V_OBJECT);
            write_varint(out, o.len() as u64);
            for (k, x) in o {
                write_bytes(out, k.as_bytes());
                write_value(out, x);
            }
        }
    }
}

/// A bounds-checked reader over a byte slice. Every method fails with
/// [`SchemaError::Corrupt`] instead of panicking on short or malformed input.
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// How many bytes have been read.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn finish(&self) -> Result<()> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(corrupt("trailing bytes"))
        }
    }

    pub fn u8(&mut self) -> Result<u8> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or_else(|| corrupt("unexpected end of input"))?;
        self.pos += 1;
        Ok(b)
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(corrupt("unexpected end of input"));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn varint(&mut self) -> Result<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let part = u64::from(b & 0x7f);
            if shift == 63 && part > 1 {
                return Err(corrupt("varint overflows 64 bits"));
            }
            v |= part << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(corrupt("varint too long"))
    }

    pub fn zigzag(&mut self) -> Result<i64> {
        let u = self.varint()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    /// A length that must fit in what is left, given the minimum encoded size of one element.
    pub fn len(&mut self, min_elem: usize) -> Result<usize> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| corrupt("length too large"))?;
        if n.saturating_mul(min_elem.max(1)) > self.remaining() {
            return Err(corrupt("length exceeds input"));
        }
        Ok(n)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.len(1)?;
        self.take(n)
    }

    pub fn string(&mut self) -> Result<String> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| corrupt("string is not UTF-8"))
    }

    pub fn f64(&mut self) -> Result<f64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        let f = f64::from_bits(u64::from_le_bytes(a));
        if f.is_finite() {
            Ok(f)
        } else {
            Err(corrupt("non-finite float"))
        }
    }

    pub fn value(&mut self, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(corrupt("value nested too deeply"));
        }
        Ok(match self.u8()? {
            V_NULL => Value::Null,
            V_FALSE => Value::Bool(false),
            V_TRUE => Value::Bool(true),
            V_INT => Value::Int(self.zigzag()?),
            V_UINT => {
                let u = self.varint()?;
                if i64::try_from(u).is_ok() {
                    return Err(corrupt("unsigned integer that fits in i64"));
                }
                Value::UInt(u)
            }
            V_FLOAT => Value::Float(self.f64()?),
            V_STRING => Value::String(self.string()?),
            V_BINARY => Value::Binary(self.bytes()?.to_vec()),
            V_ARRAY => {
                let n = self.len(1)?;
                let mut a = Vec::with_capacity(n);
                for _ in 0..n {
                    a.push(self.value(depth + 1)?);
                }
                Value::Array(a)
            }
            V_OBJECT => {
                let n = self.len(2)?;
                let mut o = BTreeMap::new();
                for _ in 0..n {
                    let k = self.string()?;
                    let v = self.value(depth + 1)?;
                    o.insert(k, v);
                }
                Value::Object(o)
            }
            t => return Err(corrupt(&format!("unknown value tag {t}"))),
        })
    }
}

pub fn corrupt(what: &str) -> SchemaError {
    SchemaError::Corrupt(what.to_owned())
}

/// Decodes one value written by [`write_value`].
pub fn decode_value(bytes: &[u8]) -> Result<Value> {
    let mut r = Reader::new(bytes);
    let v = r.value(0)?;
    r.finish()?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            write_varint(&mut out, v);
            assert_eq!(Reader::new(&out).varint().expect("decodes"), v);
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            write_zigzag(&mut out, v);
            assert_eq!(Reader::new(&out).zigzag().expect("decodes"), v);
        }
    }

    #[test]
    fn values_round_trip() {
        let v =
            Value::parse_json(r#"{"a":[1,-2,2.5,"x",null,true],"b":{"c":18446744073709551615}}"#)
                .expect("json");
        let mut v = v;
        if let Value::Object(o) = &mut v {
            o.insert("bin".into(), Value::Binary(vec![0, 1, 255]));
        }
        assert_eq!(decode_value(&v.canonical_bytes()).expect("decodes"), v);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &[][..],
            &[
                9, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
            ],
            &[8, 200],
            &[6, 2, 0xc3],
        ] {
            assert!(decode_value(bad).is_err());
        }
    }
}
