//! System parameters (`ALTER SYSTEM`, `SHOW`): the ones bigpeer knows and their defaults.

use std::collections::BTreeMap;

use bigpeer_schema::Value;

use crate::ast::Span;
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
        "document_size_hard_limit_bytes".to_owned(),
        Value::Int(5_242_880),
    );
    m.insert(
        "user_collection_sync_scopes".to_owned(),
        Value::Object(BTreeMap::new()),
    );
    m
}

/// Checks a value for a parameter: the name must be known and the type must match the default.
pub fn validate(name: &str, value: &Value) -> Result<()> {
    let d = defaults();
    let Some(default) = d.get(name) else {
        return Err(DqlError::unknown_parameter(name));
    };
    let same = std::mem::discriminant(default) == std::mem::discriminant(value);
    if same {
        Ok(())
    } else {
        Err(DqlError::invalid(
            format!(
                "Invalid value {value} for system parameter \"{name}\": expected a(n) {}",
                default.type_name()
            ),
            Span::NONE,
        ))
    }
}

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
