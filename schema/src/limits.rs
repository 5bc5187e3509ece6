//! The limits every write meets, on every path: DQL and legacy writes over HTTP, sync pushes, and
//! a small peer's local writes. One validator, so that nothing a peer accepts locally is refused
//! later by the big peer, and nothing is stored that a reader cannot read back.
//!
//! | dimension | limit | error code |
//! |---|---|---|
//! | value depth: containers from the document object down (`{"a":1}` is 1, `{"a":{"b":[1]}}` is 3) | [`MAX_DEPTH`] | `request/too-deep` |
//! | path length: segments of a written field path (`a.b.c` is 3) | [`MAX_PATH_SEGMENTS`] | `request/too-deep` |
//! | id depth: containers in an `_id` (`"x"` is 0, `{"a":[1]}` is 2) | [`MAX_ID_DEPTH`] | `request/too-deep` |
//! | id size: bytes of the id's storage key ([`DocId::key`]; about its JSON text, 9 bytes per number) | [`MAX_ID_BYTES`] | `request/too-long` |
//! | collection name: bytes of UTF-8, not empty, no control characters | [`MAX_COLLECTION_BYTES`] | `request/too-long`, `query/invalid` |
//! | text: no U+0000 in strings, object keys, paths, names (Postgres cannot store it) | — | `request/nul-character` |
//! | document size: bytes of the encoded CRDT state ([`crate::Doc::encode`]) | [`DEFAULT_MAX_DOCUMENT_BYTES`] (`document_size_hard_limit_bytes`) | `document/too-large` |
//!
//! The depth limit is half of what every reader accepts (`serde_json`'s recursion limit and the
//! binary decoders' [`crate::codec::MAX_DEPTH`] are 128), so a document can always be read back,
//! also wrapped in a response or a typed `shape`.
//!
//! Writes are checked by what they bring: local operations ([`check_ops`]) and remote deltas or
//! states ([`check_state`]), before they are applied. A document already over a limit (written
//! before the limit existed) can still be deleted, evicted or made smaller.

use std::collections::BTreeMap;

use crate::crdt::{Op, Slot};
use crate::id::DocId;
use crate::value::Value;
use crate::Doc;

/// Deepest nesting of containers in a document, the document object itself counting 1.
pub const MAX_DEPTH: usize = 64;
/// Most segments in a written field path.
pub const MAX_PATH_SEGMENTS: usize = 64;
/// Deepest nesting of containers inside an `_id`.
pub const MAX_ID_DEPTH: usize = 16;
/// Largest `_id`, in bytes of its storage key ([`DocId::key`]).
pub const MAX_ID_BYTES: usize = 1024;
/// Longest collection name, in bytes of UTF-8.
pub const MAX_COLLECTION_BYTES: usize = 256;
/// The default largest document, in bytes of its encoded CRDT state (Ditto's
/// `document_size_hard_limit_bytes`, 5 MiB).
pub const DEFAULT_MAX_DOCUMENT_BYTES: usize = 5 * 1024 * 1024;

/// `request/too-deep`.
pub const TOO_DEEP: &str = "request/too-deep";
/// `request/too-long`.
pub const TOO_LONG: &str = "request/too-long";
/// `document/too-large`.
pub const TOO_LARGE: &str = "document/too-large";
/// `request/nul-character`.
pub const NUL_CHARACTER: &str = "request/nul-character";
/// `query/invalid` (an empty collection name, or one with control characters).
pub const INVALID_NAME: &str = "query/invalid";

/// A write over a limit. Each variant has a stable [`LimitError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// Nested deeper than [`MAX_DEPTH`], [`MAX_PATH_SEGMENTS`] or [`MAX_ID_DEPTH`].
    #[error("{0}")]
    TooDeep(String),
    /// An id or a collection name longer than [`MAX_ID_BYTES`] or [`MAX_COLLECTION_BYTES`].
    #[error("{0}")]
    TooLong(String),
    /// A document larger than the document size limit.
    #[error("the document would be {bytes} bytes, over the limit of {limit} bytes (document_size_hard_limit_bytes)")]
    TooLarge { bytes: usize, limit: usize },
    /// Text holding U+0000.
    #[error("{0} contains the NUL character (U+0000), which bigpeer cannot store")]
    Nul(String),
    /// An empty collection name, or one with control characters.
    #[error("{0}")]
    InvalidName(String),
}

impl LimitError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            LimitError::TooDeep(_) => TOO_DEEP,
            LimitError::TooLong(_) => TOO_LONG,
            LimitError::TooLarge { .. } => TOO_LARGE,
            LimitError::Nul(_) => NUL_CHARACTER,
            LimitError::InvalidName(_) => INVALID_NAME,
        }
    }
}

type Result<T = ()> = std::result::Result<T, LimitError>;

/// A collection name a write may use: 1 to [`MAX_COLLECTION_BYTES`] bytes, no control
/// characters (U+0000 is `request/nul-character`).
pub fn check_collection(name: &str) -> Result {
    if name.is_empty() {
        return Err(LimitError::InvalidName(
            "the collection name is empty".into(),
        ));
    }
    if name.len() > MAX_COLLECTION_BYTES {
        return Err(LimitError::TooLong(format!(
            "the collection name is {} bytes long, over the limit of {MAX_COLLECTION_BYTES}",
            name.len()
        )));
    }
    if name.contains('\0') {
        return Err(LimitError::Nul("the collection name".into()));
    }
    if name.chars().any(char::is_control) {
        return Err(LimitError::InvalidName(
            "the collection name contains a control character".into(),
        ));
    }
    Ok(())
}

/// A document id a write may use: at most [`MAX_ID_DEPTH`] deep, [`MAX_ID_BYTES`] long, no
/// U+0000.
pub fn check_id(id: &DocId) -> Result {
    let v = id.value();
    if depth_over(v, MAX_ID_DEPTH) {
        return Err(LimitError::TooDeep(format!(
            "the document id is nested more than {MAX_ID_DEPTH} levels deep"
        )));
    }
    let bytes = id.key().len();
    if bytes > MAX_ID_BYTES {
        return Err(LimitError::TooLong(format!(
            "the document id is {bytes} bytes long (as stored), over the limit of {MAX_ID_BYTES}"
        )));
    }
    if has_nul(v) {
        return Err(LimitError::Nul("the document id".into()));
    }
    Ok(())
}

/// A written field path: at most [`MAX_PATH_SEGMENTS`] segments, no U+0000.
pub fn check_path(path: &[String]) -> Result {
    if path.len() > MAX_PATH_SEGMENTS {
        return Err(LimitError::TooDeep(format!(
            "the path has {} segments, over the limit of {MAX_PATH_SEGMENTS}",
            path.len()
        )));
    }
    if path.iter().any(|k| k.contains('\0')) {
        return Err(LimitError::Nul("a field path".into()));
    }
    Ok(())
}

/// A value written at a path of `at` segments: the document stays within [`MAX_DEPTH`] and the
/// value holds no U+0000.
pub fn check_value_at(at: usize, value: &Value) -> Result {
    let budget = MAX_DEPTH.saturating_sub(at);
    if at > MAX_DEPTH || depth_over(value, budget) {
        return Err(too_deep_value());
    }
    if has_nul(value) {
        return Err(LimitError::Nul("a value".into()));
    }
    Ok(())
}

fn too_deep_value() -> LimitError {
    LimitError::TooDeep(format!(
        "the value would nest the document more than {MAX_DEPTH} levels deep"
    ))
}

/// The local operations of one write on one document.
pub fn check_ops(ops: &[Op]) -> Result {
    for op in ops {
        match op {
            Op::Set { path, value, .. } => {
                check_path(path)?;
                check_value_at(path.len(), value)?;
            }
            Op::Merge { path, value, .. } => {
                check_path(path)?;
                check_fields_at(path.len(), value)?;
            }
            Op::Attach { path, token } => {
                check_path(path)?;
                check_value_at(path.len(), token)?;
            }
            Op::Increment { path, by, .. } => {
                check_path(path)?;
                check_value_at(path.len(), by)?;
            }
            Op::Unset { path } | Op::Remove { path, .. } | Op::Restart { path, .. } => {
                check_path(path)?
            }
            Op::Delete => {}
        }
    }
    Ok(())
}

/// An object's fields merged into the map at a path of `at` segments.
fn check_fields_at(at: usize, fields: &BTreeMap<String, Value>) -> Result {
    if at >= MAX_DEPTH {
        return Err(too_deep_value());
    }
    for (k, v) in fields {
        if k.contains('\0') {
            return Err(LimitError::Nul("a field name".into()));
        }
        check_value_at(at + 1, v)?;
    }
    Ok(())
}

/// True when the operations only delete the document (allowed whatever the document is).
pub fn only_deletes(ops: &[Op]) -> bool {
    ops.iter().all(|op| matches!(op, Op::Delete))
}

/// A remote delta's state (or a full state) before it is joined: every field, visible or not,
/// within [`MAX_DEPTH`] and [`MAX_PATH_SEGMENTS`], and no U+0000 in a key or a value.
pub fn check_state(state: &Doc) -> Result {
    check_slot(&state.root, 0)
}

fn check_slot(slot: &Slot, at: usize) -> Result {
    for r in [&slot.reg, &slot.att].into_iter().flatten() {
        if let Some(v) = &r.value {
            check_value_at(at, v)?;
        }
    }
    if (slot.ctr.is_some() || slot.pn.is_some()) && at > MAX_DEPTH {
        return Err(too_deep_value());
    }
    if let Some(m) = &slot.map {
        if at >= MAX_DEPTH && (m.mark.is_some() || !m.entries.is_empty()) {
            return Err(too_deep_value());
        }
        for (k, e) in &m.entries {
            if k.contains('\0') {
                return Err(LimitError::Nul("a field name".into()));
            }
            check_slot(e, at + 1)?;
        }
    }
    Ok(())
}

/// A document of `bytes` (encoded) after a write that found it at `before` bytes: refused when
/// over `limit` and larger than before (a document over the limit may still shrink).
pub fn check_size(bytes: usize, before: usize, limit: usize) -> Result {
    if bytes > limit && bytes > before {
        return Err(LimitError::TooLarge { bytes, limit });
    }
    Ok(())
}

/// Whether a value nests more than `budget` containers. Stops descending past the budget, so
/// it never recurses deeper than `budget + 1`.
fn depth_over(v: &Value, budget: usize) -> bool {
    match v {
        Value::Array(a) => budget == 0 || a.iter().any(|x| depth_over(x, budget - 1)),
        Value::Object(o) => budget == 0 || o.values().any(|x| depth_over(x, budget - 1)),
        _ => false,
    }
}

/// The nesting depth of a value: containers on its deepest path (a scalar is 0). Counts at most
/// `MAX_DEPTH + 1`.
pub fn depth(v: &Value) -> usize {
    fn go(v: &Value, left: usize) -> usize {
        if left == 0 {
            return 0;
        }
        match v {
            Value::Array(a) => 1 + a.iter().map(|x| go(x, left - 1)).max().unwrap_or(0),
            Value::Object(o) => 1 + o.values().map(|x| go(x, left - 1)).max().unwrap_or(0),
            _ => 0,
        }
    }
    go(v, MAX_DEPTH + 1)
}

/// Whether a value holds U+0000 in a string or an object key, at any depth.
pub fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// [`has_nul`] for `serde_json` values.
pub fn json_has_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(a) => a.iter().any(json_has_nul),
        serde_json::Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || json_has_nul(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::ObjectMode;
    use crate::hlc::{Hlc, SiteId, Stamp};

    fn nested(levels: usize) -> Value {
        let mut v = Value::Int(1);
        for _ in 0..levels {
            v = Value::Object([("a".to_owned(), v)].into_iter().collect());
        }
        v
    }

    fn path(n: usize) -> Vec<String> {
        vec!["p".to_owned(); n]
    }

    fn set(path: Vec<String>, value: Value) -> Op {
        Op::Set {
            path,
            value,
            objects: ObjectMode::Map,
        }
    }

    #[test]
    fn depth_counts_containers() {
        assert_eq!(depth(&Value::Int(1)), 0);
        assert_eq!(depth(&nested(3)), 3);
        assert_eq!(depth(&nested(500)), MAX_DEPTH + 1);
        assert_eq!(
            depth(&Value::parse_json(r#"{"a":[1,{"b":[]}]}"#).expect("json")),
            4
        );
    }

    #[test]
    fn values_deeper_than_the_limit_are_refused_wherever_they_are_written() {
        // `SET p = <63 levels>` gives a document 64 deep: the limit.
        check_ops(&[set(path(1), nested(MAX_DEPTH - 1))]).expect("at the limit");
        let err = check_ops(&[set(path(1), nested(MAX_DEPTH))]).expect_err("one over");
        assert_eq!(err.code(), TOO_DEEP);
        // The path counts: a shallow value at the end of a long path.
        check_ops(&[set(path(MAX_DEPTH), Value::Int(1))]).expect("path at the limit");
        let err = check_ops(&[set(path(MAX_DEPTH), nested(1))]).expect_err("deep");
        assert_eq!(err.code(), TOO_DEEP);
        let err = check_ops(&[set(path(200), Value::Int(1))]).expect_err("200 segments");
        assert_eq!(err.code(), TOO_DEEP);
        let err = check_ops(&[Op::Unset { path: path(200) }]).expect_err("unset too");
        assert_eq!(err.code(), TOO_DEEP);
        // INSERT: the document's fields merged at the root.
        let Value::Object(fields) = nested(MAX_DEPTH + 1) else {
            panic!("object")
        };
        let err = check_ops(&[Op::Merge {
            path: Vec::new(),
            value: fields,
            objects: ObjectMode::Map,
        }])
        .expect_err("insert");
        assert_eq!(err.code(), TOO_DEEP);
        // Far deeper than any reader: refused without recursing through it.
        let err = check_ops(&[set(path(1), nested(1_000))]).expect_err("very deep");
        assert_eq!(err.code(), TOO_DEEP);
    }

    #[test]
    fn remote_states_are_checked_like_local_writes() {
        let site = SiteId::from_bytes([7; 16]);
        let stamp = Stamp::new(Hlc(10), site);
        let mut ok = Doc::new();
        ok.apply(&[set(path(MAX_DEPTH - 1), nested(1))], stamp)
            .expect("apply");
        check_state(&ok).expect("at the limit");
        for bad in [
            set(path(MAX_DEPTH - 1), nested(2)),
            set(path(MAX_DEPTH + 1), Value::Int(1)),
            set(path(2), Value::String("a\0b".into())),
            set(vec!["a\0".into()], Value::Int(1)),
        ] {
            let mut d = Doc::new();
            d.apply(std::slice::from_ref(&bad), stamp).expect("apply");
            let state_err = check_state(&d).expect_err("state");
            let ops_err = check_ops(&[bad]).expect_err("ops");
            assert_eq!(state_err.code(), ops_err.code());
        }
        // A map as deep as the limit allows, then one more level.
        let mut d = Doc::new();
        d.apply(
            &[Op::Merge {
                path: path(MAX_DEPTH - 1),
                value: BTreeMap::new(),
                objects: ObjectMode::Map,
            }],
            stamp,
        )
        .expect("apply");
        check_state(&d).expect("an empty map at the limit");
        let mut d = Doc::new();
        d.apply(
            &[Op::Merge {
                path: path(MAX_DEPTH),
                value: BTreeMap::new(),
                objects: ObjectMode::Map,
            }],
            stamp,
        )
        .expect("apply");
        assert_eq!(check_state(&d).expect_err("map").code(), TOO_DEEP);
    }

    #[test]
    fn ids() {
        check_id(&DocId::string("x".repeat(MAX_ID_BYTES - 5))).expect("at the limit");
        let err = check_id(&DocId::string("x".repeat(MAX_ID_BYTES))).expect_err("long");
        assert_eq!(err.code(), TOO_LONG);
        let mut v = Value::Int(1);
        for _ in 0..MAX_ID_DEPTH {
            v = Value::Array(vec![v]);
        }
        check_id(&DocId::new(v.clone()).expect("id")).expect("at the limit");
        let err = check_id(&DocId::new(Value::Array(vec![v])).expect("id")).expect_err("deep");
        assert_eq!(err.code(), TOO_DEEP);
        let err = check_id(&DocId::string("a\0")).expect_err("nul");
        assert_eq!(err.code(), NUL_CHARACTER);
    }

    #[test]
    fn collection_names() {
        check_collection("cars").expect("plain");
        check_collection(&"é".repeat(MAX_COLLECTION_BYTES / 2)).expect("at the limit");
        let cases = [
            ("", INVALID_NAME),
            ("a\u{1}b", INVALID_NAME),
            ("a\nb", INVALID_NAME),
            ("a\0", NUL_CHARACTER),
        ];
        for (name, code) in cases {
            assert_eq!(check_collection(name).expect_err(name).code(), code);
        }
        let long = "c".repeat(MAX_COLLECTION_BYTES + 1);
        assert_eq!(check_collection(&long).expect_err("long").code(), TOO_LONG);
    }

    #[test]
    fn sizes_may_shrink_above_the_limit() {
        check_size(10, 0, 10).expect("at the limit");
        assert_eq!(check_size(11, 0, 10).expect_err("over").code(), TOO_LARGE);
        assert_eq!(check_size(12, 11, 10).expect_err("grows").code(), TOO_LARGE);
        check_size(11, 12, 10).expect("shrinks");
        check_size(11, 11, 10).expect("same");
    }

    #[test]
    fn nul_anywhere() {
        let v = Value::parse_json(r#"{"a":[{"b\u0000":1}]}"#).expect("json");
        assert!(has_nul(&v));
        assert_eq!(
            check_ops(&[set(path(1), v)]).expect_err("nul").code(),
            NUL_CHARACTER
        );
        assert!(json_has_nul(&serde_json::json!({"a": ["x\u{0}"]})));
        assert!(!json_has_nul(&serde_json::json!({"a": ["x"]})));
    }
}
