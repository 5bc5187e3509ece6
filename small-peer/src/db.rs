//! The SQLite layout, its migrations and the encodings of stored columns.
//!
//! | table | one row per | columns |
//! |---|---|---|
//! | `peer` | store (exactly one row) | `site` (16 bytes), `hlc` (the clock's last value), `change` (last local change number), `created_ms` |
//! | `documents` | document ever written or received | `collection`, `id` ([`DocId::key`]), `crdt` ([`Doc::encode`]), `value` (materialised JSON with `_id`, NULL when deleted), `value_exact`, `change`, `server_vv` |
//! | `outbox` | document with local changes the big peer has not acknowledged | `collection`, `id`, `change`, `denied` |
//! | `settings` | `ALTER SYSTEM` override | `name`, `value` (JSON) |
//! | `cursors` | durable subscription | `subscription`, `epoch`, `seq` |
//! | `subscriptions` | remembered sync subscription (format 2) | `key` ([`crate::subscription_key`]), `query`, `args` (JSON), `created_ms` |
//!
//! `value_exact` is 1 when the JSON text reads back as the same [`Value`] (true unless the
//! document holds binary data, which JSON writes as an array of numbers); reads of inexact rows
//! materialise the CRDT state instead.

use std::collections::BTreeMap;

use bigpeer_schema::codec::{write_varint, Reader};
use bigpeer_schema::{Doc, DocId, Hlc, SiteId, Value, VersionVector};
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{PeerError, Result};

/// The newest layout this code writes (`PRAGMA user_version`).
pub const FORMAT: i64 = 3;

const MIGRATION_1: &str = "
CREATE TABLE peer (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    site BLOB NOT NULL CHECK (length(site) = 16),
    hlc INTEGER NOT NULL,
    change INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE documents (
    collection TEXT NOT NULL,
    id BLOB NOT NULL,
    crdt BLOB NOT NULL,
    value TEXT,
    value_exact INTEGER NOT NULL,
    change INTEGER NOT NULL,
    server_vv BLOB,
    PRIMARY KEY (collection, id)
) WITHOUT ROWID;
CREATE TABLE outbox (
    collection TEXT NOT NULL,
    id BLOB NOT NULL,
    change INTEGER NOT NULL,
    denied TEXT,
    PRIMARY KEY (collection, id)
) WITHOUT ROWID;
CREATE INDEX outbox_change ON outbox (change);
CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE cursors (
    subscription TEXT PRIMARY KEY,
    epoch TEXT NOT NULL,
    seq INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Format 2: the sync subscriptions a store remembers (the CLI's `sync --subscribe`, `watch`).
const MIGRATION_2: &str = "
CREATE TABLE subscriptions (
    key TEXT PRIMARY KEY,
    query TEXT NOT NULL,
    args TEXT NOT NULL,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Format 3: documents whose change from the big peer could not be applied (its base was not
/// here) and that were asked for again (`Want`): remembered until the answer is applied, so that
/// a restart in between asks again (the cursor may already have moved past the change).
const MIGRATION_3: &str = "
CREATE TABLE wanted (
    collection TEXT NOT NULL,
    id BLOB NOT NULL,
    PRIMARY KEY (collection, id)
) WITHOUT ROWID;
";

/// Connection settings: WAL, full fsync at commit, a busy timeout for a second process.
pub fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // `journal_mode` answers with the mode in force (in-memory databases stay in `memory`).
    let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    Ok(())
}

/// Brings the layout up to [`FORMAT`] and mints the store's identity on first use. Returns the
/// site id and the clock's stored last value.
pub fn migrate(conn: &mut Connection) -> Result<(SiteId, Hlc)> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > FORMAT {
        return Err(PeerError::UnsupportedFormat {
            found: version,
            supported: FORMAT,
        });
    }
    if version < 1 {
        tx.execute_batch(MIGRATION_1)?;
        tx.execute(
            "INSERT INTO peer (one, site, hlc, change, created_ms) VALUES (1, ?1, 0, 0, ?2)",
            params![
                SiteId::random().to_bytes().as_slice(),
                hlc_to_sql(Hlc(bigpeer_schema::hlc::now_ms()))
            ],
        )?;
    }
    if version < 2 {
        tx.execute_batch(MIGRATION_2)?;
    }
    if version < 3 {
        tx.execute_batch(MIGRATION_3)?;
    }
    if version < FORMAT {
        tx.execute_batch(&format!("PRAGMA user_version = {FORMAT}"))?;
    }
    let identity = identity(&tx)?;
    tx.commit()?;
    Ok(identity)
}

/// The store's site id and the clock's stored last value.
pub fn identity(conn: &Connection) -> Result<(SiteId, Hlc)> {
    let (site, hlc): (Vec<u8>, i64) = conn
        .query_row("SELECT site, hlc FROM peer WHERE one = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?
        .ok_or_else(|| PeerError::Corrupt("the store has no identity row".into()))?;
    let site: [u8; 16] = site
        .try_into()
        .map_err(|_| PeerError::Corrupt("site id is not 16 bytes".into()))?;
    Ok((SiteId::from_bytes(site), hlc_from_sql(hlc)))
}

/// Clock values are stored in an SQLite INTEGER (i64) bit for bit.
pub fn hlc_to_sql(h: Hlc) -> i64 {
    i64::from_ne_bytes(h.0.to_ne_bytes())
}

pub fn hlc_from_sql(v: i64) -> Hlc {
    Hlc(u64::from_ne_bytes(v.to_ne_bytes()))
}

/// A version vector in the sync protocol's `vv` encoding (count, then site and hlc pairs).
pub fn encode_vv(vv: &VersionVector) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + vv.len() * 20);
    write_varint(&mut out, vv.len() as u64);
    for (site, hlc) in vv.iter() {
        out.extend_from_slice(&site.to_bytes());
        write_varint(&mut out, hlc.0);
    }
    out
}

pub fn decode_vv(bytes: &[u8]) -> Result<VersionVector> {
    let mut r = Reader::new(bytes);
    let n = r.len(17)?;
    let mut vv = VersionVector::new();
    for _ in 0..n {
        let mut site = [0u8; 16];
        site.copy_from_slice(r.take(16)?);
        vv.observe(SiteId::from_bytes(site), Hlc(r.varint()?));
    }
    r.finish()?;
    Ok(vv)
}

pub fn decode_doc(bytes: &[u8]) -> Result<Doc> {
    Doc::decode(bytes).map_err(|e| PeerError::Corrupt(format!("document state: {e}")))
}

/// The live document as queries see it: its fields plus `_id`; `None` when deleted.
pub fn materialize(id: &DocId, doc: &Doc) -> Option<Value> {
    let mut fields = match doc.materialize()? {
        Value::Object(o) => o,
        _ => BTreeMap::new(),
    };
    fields.insert("_id".to_owned(), id.value().clone());
    Some(Value::Object(fields))
}

/// JSON text of a materialised document, and whether it reads back exactly.
pub fn value_json(v: &Value) -> (String, bool) {
    (v.to_json_string(), json_exact(v, 0))
}

/// serde_json refuses nesting deeper than 128; stay well below.
const MAX_JSON_DEPTH: usize = 100;

fn json_exact(v: &Value, depth: usize) -> bool {
    if depth > MAX_JSON_DEPTH {
        return false;
    }
    match v {
        Value::Binary(_) => false,
        Value::Array(a) => a.iter().all(|x| json_exact(x, depth + 1)),
        Value::Object(o) => o.values().all(|x| json_exact(x, depth + 1)),
        Value::Null
        | Value::Bool(_)
        | Value::Int(_)
        | Value::UInt(_)
        | Value::Float(_)
        | Value::String(_) => true,
    }
}

/// The stored settings overrides.
pub fn load_settings(conn: &Connection) -> Result<bigpeer_dql::settings::Settings> {
    let mut stmt = conn.prepare_cached("SELECT name, value FROM settings ORDER BY name")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut kept = std::collections::BTreeMap::new();
    for row in rows {
        let (name, text) = row?;
        let value = Value::parse_json(&text)
            .map_err(|e| PeerError::Corrupt(format!("setting {name:?}: {e}")))?;
        kept.insert(name, value);
    }
    // A parameter a later version dropped (or retyped) is ignored, not fatal.
    Ok(bigpeer_dql::settings::Settings::from_overrides(kept).0)
}

/// Replaces the stored overrides with the parameters that differ from their defaults.
pub fn save_settings(conn: &Connection, settings: &bigpeer_dql::settings::Settings) -> Result<()> {
    conn.execute("DELETE FROM settings", [])?;
    let defaults = bigpeer_dql::settings::defaults();
    let all = settings.show(None)?;
    let Some(Value::Object(all)) = all.into_iter().next() else {
        return Ok(());
    };
    let mut insert = conn.prepare_cached("INSERT INTO settings (name, value) VALUES (?1, ?2)")?;
    for (name, value) in all {
        if defaults.get(&name) != Some(&value) {
            insert.execute(params![name, value.to_json_string()])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vv_round_trips_and_refuses_damage() {
        let vv: VersionVector = [(SiteId(7), Hlc(5)), (SiteId(u128::MAX), Hlc(u64::MAX))]
            .into_iter()
            .collect();
        let bytes = encode_vv(&vv);
        assert_eq!(decode_vv(&bytes).expect("decodes"), vv);
        assert!(decode_vv(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_vv(&[bytes.as_slice(), &[0]].concat()).is_err());
        assert_eq!(
            decode_vv(&encode_vv(&VersionVector::new())).expect("empty"),
            VersionVector::new()
        );
    }

    #[test]
    fn hlc_survives_sqlite_integers() {
        for h in [0, 1, u64::MAX, 1 << 63, 0x0123_4567_89ab_cdef] {
            assert_eq!(hlc_from_sql(hlc_to_sql(Hlc(h))), Hlc(h));
        }
    }

    #[test]
    fn json_text_is_exact_unless_binary() {
        let v = Value::parse_json(
            r#"{"a":1,"b":1.0,"c":-0.0,"d":18446744073709551615,"e":[1e300,"x",null,true]}"#,
        )
        .expect("json");
        let (text, exact) = value_json(&v);
        assert!(exact);
        assert_eq!(Value::parse_json(&text).expect("reads back"), v);
        let bin = Value::Array(vec![Value::Binary(vec![1, 2])]);
        assert!(!value_json(&bin).1);
    }
}
