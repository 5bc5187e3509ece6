//! System parameters (`ALTER SYSTEM`, `SHOW`): the ones bigpeer knows and their defaults.

use std::collections::BTreeMap;

use bigpeer_schema::Value;

use crate::error::{DqlError, Result};

/// The known parameters with their defaults (names are lower case).
pub fn defaults() -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    m.insert("dql_strict_mode".to_owned(), Value::Bool(false));
    m.insert("tombstone_ttl_hours".to_owned(), Value::Int(720));
    m.insert(
        "document_size_soft_limit_bytes".to_owned(),
        Value::Int(262_144),
    );
    m.insert(
        DOCUMENT_SIZE_HARD_LIMIT.to_owned(),
        Value::Int(bigpeer_schema::limits::DEFAULT_MAX_DOCUMENT_BYTES as i64),
    );
    m.insert(
        "user_collection_sync_scopes".to_owned(),
        Value::Object(BTreeMap::new()),
    );
    m
}

/// Checks a value for a parameter (`query/parameter` errors, as Ditto's): the name must be
/// known and the value of the default's type; counts and sizes are integers of at least 0;
/// `user_collection_sync_scopes` maps collection names (not starting with `__`) to a
/// [`SyncScope`] name, in any letter case.
pub fn validate(name: &str, value: &Value) -> Result<()> {
    let d = defaults();
    let Some(default) = d.get(name) else {
        return Err(DqlError::unknown_parameter(name));
    };
    let type_error = || {
        DqlError::parameter(format!(
            "type error: value {value} does not match system parameter {name} of type {}",
            match default {
                Value::Int(_) | Value::UInt(_) => "non-negative integer",
                other => other.type_name(),
            }
        ))
    };
    match (default, value) {
        (Value::Bool(_), Value::Bool(_)) => Ok(()),
        (Value::Int(_) | Value::UInt(_), v) => match v {
            Value::UInt(_) => Ok(()),
            Value::Int(n) if *n >= 0 => Ok(()),
            _ => Err(type_error()),
        },
        (Value::Object(_), Value::Object(scopes)) if name == SYNC_SCOPES => {
            for (collection, scope) in scopes {
                let invalid = |why: String| {
                    DqlError::parameter(format!("parameter validation for {name} failed: {why}"))
                };
                if collection.starts_with("__") {
                    return Err(invalid(format!(
                        "collection \"{collection}\" is a system collection (starts with __)"
                    )));
                }
                let Value::String(s) = scope else {
                    return Err(invalid(format!("value {scope} is not a string")));
                };
                if SyncScope::parse(s).is_none() {
                    return Err(invalid(format!(
                        "value \"{s}\" is not one of AllPeers, BigPeerOnly, SmallPeersOnly, \
                         LocalPeerOnly"
                    )));
                }
            }
            Ok(())
        }
        (d, v) if std::mem::discriminant(d) == std::mem::discriminant(v) => Ok(()),
        _ => Err(type_error()),
    }
}

/// The parameter naming each collection's [`SyncScope`].
pub const SYNC_SCOPES: &str = "user_collection_sync_scopes";

/// Which peers a collection's documents are sent to (`USER_COLLECTION_SYNC_SCOPES`), checked
/// by the sender: a document is withheld even when it matches a remote subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncScope {
    /// Every peer (the default).
    #[default]
    AllPeers,
    /// Only the big peer (not other small peers).
    BigPeerOnly,
    /// Only other small peers (never the big peer).
    SmallPeersOnly,
    /// No other peer: the documents stay where they are written.
    LocalPeerOnly,
}

impl SyncScope {
    /// A scope by name, in any letter case (as Ditto accepts them).
    pub fn parse(name: &str) -> Option<SyncScope> {
        [
            ("allpeers", SyncScope::AllPeers),
            ("bigpeeronly", SyncScope::BigPeerOnly),
            ("smallpeersonly", SyncScope::SmallPeersOnly),
            ("localpeeronly", SyncScope::LocalPeerOnly),
        ]
        .into_iter()
        .find(|(n, _)| name.eq_ignore_ascii_case(n))
        .map(|(_, s)| s)
    }

    /// Whether a peer may send this scope's documents to the big peer.
    pub fn to_big_peer(self) -> bool {
        matches!(self, SyncScope::AllPeers | SyncScope::BigPeerOnly)
    }
}

/// The parameter holding the document size limit the big peer and small peers enforce.
pub const DOCUMENT_SIZE_HARD_LIMIT: &str = "document_size_hard_limit_bytes";

/// Current settings: defaults overridden by what was set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    overrides: BTreeMap<String, Value>,
}

impl Settings {
    pub fn get(&self, name: &str) -> Option<Value> {
        self.overrides
            .get(name)
            .cloned()
            .or_else(|| defaults().remove(name))
    }

    /// The settings with `overrides` (as [`Settings::overrides`] gave them, e.g. kept in a
    /// database): entries that are not valid parameters any more are left out and returned.
    pub fn from_overrides(overrides: BTreeMap<String, Value>) -> (Settings, Vec<String>) {
        let mut settings = Settings::default();
        let mut dropped = Vec::new();
        for (name, value) in overrides {
            if validate(&name, &value).is_ok() {
                settings.overrides.insert(name, value);
            } else {
                dropped.push(name);
            }
        }
        (settings, dropped)
    }

    /// The parameters set away from their defaults (even when set to the default value).
    pub fn overrides(&self) -> &BTreeMap<String, Value> {
        &self.overrides
    }

    /// The collections `USER_COLLECTION_SYNC_SCOPES` names, with their scopes.
    pub fn sync_scopes(&self) -> BTreeMap<String, SyncScope> {
        match self.get(SYNC_SCOPES) {
            Some(Value::Object(scopes)) => scopes
                .iter()
                .filter_map(|(c, s)| match s {
                    Value::String(s) => Some((c.clone(), SyncScope::parse(s)?)),
                    _ => None,
                })
                .collect(),
            _ => BTreeMap::new(),
        }
    }

    /// `DOCUMENT_SIZE_HARD_LIMIT_BYTES`: the largest document, in bytes of its encoded CRDT
    /// state (`bigpeer_schema::limits`).
    pub fn document_size_hard_limit(&self) -> u64 {
        match self.get(DOCUMENT_SIZE_HARD_LIMIT) {
            Some(Value::Int(n)) => u64::try_from(n).unwrap_or(0),
            Some(Value::UInt(n)) => n,
            _ => bigpeer_schema::limits::DEFAULT_MAX_DOCUMENT_BYTES as u64,
        }
    }

    pub fn strict_mode(&self) -> bool {
        matches!(self.get("dql_strict_mode"), Some(Value::Bool(true)))
    }

    /// Applies `ALTER SYSTEM` (`name: None` resets all; `value: None` resets one) and returns
    /// the item Ditto answers with.
    pub fn alter(&mut self, name: Option<&str>, value: Option<&Value>) -> Result<Vec<Value>> {
        match (name, value) {
            (None, _) => {
                self.overrides.clear();
                Ok(Vec::new())
            }
            (Some(n), Some(v)) => {
                validate(n, v)?;
                self.overrides.insert(n.to_owned(), v.clone());
                Ok(vec![item(n, v.clone())])
            }
            (Some(n), None) => {
                if !defaults().contains_key(n) {
                    return Err(DqlError::unknown_parameter(n));
                }
                self.overrides.remove(n);
                Ok(self.get(n).map(|v| vec![item(n, v)]).unwrap_or_default())
            }
        }
    }

    /// `SHOW name` / `SHOW ALL` (one item with every parameter).
    pub fn show(&self, name: Option<&str>) -> Result<Vec<Value>> {
        match name {
            Some(n) => match self.get(n) {
                Some(v) => Ok(vec![item(n, v)]),
                None => Err(DqlError::unknown_parameter(n)),
            },
            None => {
                let mut all = defaults();
                all.extend(self.overrides.clone());
                Ok(vec![Value::Object(all)])
            }
        }
    }
}

fn item(name: &str, v: Value) -> Value {
    let mut m = BTreeMap::new();
    m.insert(name.to_owned(), v);
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_round_trip_and_invalid_ones_are_dropped() {
        let mut s = Settings::default();
        s.alter(Some("dql_strict_mode"), Some(&Value::Bool(true)))
            .expect("set");
        let mut kept = s.overrides().clone();
        kept.insert("gone_param".into(), Value::Int(1));
        kept.insert("tombstone_ttl_hours".into(), Value::from("a string"));
        let (back, dropped) = Settings::from_overrides(kept);
        assert_eq!(back, s);
        assert!(back.strict_mode());
        assert_eq!(dropped, vec!["gone_param", "tombstone_ttl_hours"]);
    }
}
