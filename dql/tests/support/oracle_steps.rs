//! Oracle fixtures as statement steps, shared by the tests that run every fixture through another
//! store and compare it with the in-memory reference store (`server`'s Postgres executor,
//! `small-peer`'s SQLite store). Included with `#[path]`; reads
//! `<crate>/../dql/tests/fixtures/oracle`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use bigpeer_schema::Value;

/// The oracle's JSON: `{"$bigint": ..}`, `{"$bytes": ..}`, and integral numbers that the
/// oracle's JavaScript passes as integers.
pub fn oracle_value(j: &serde_json::Value) -> Value {
    match j {
        serde_json::Value::Object(o) if o.len() == 1 && o.contains_key("$bigint") => {
            let s = o["$bigint"].as_str().unwrap_or("0");
            s.parse::<i64>()
                .map(Value::Int)
                .unwrap_or_else(|_| Value::from_u64(s.parse::<u64>().unwrap_or(0)))
        }
        serde_json::Value::Object(o) if o.len() == 1 && o.contains_key("$bytes") => {
            // Decoded as bytes (not kept as text) so that binary values reach the store.
            let text = o["$bytes"].as_str().unwrap_or_default();
            Value::Binary(text.as_bytes().to_vec())
        }
        serde_json::Value::Array(a) => Value::Array(a.iter().map(oracle_value).collect()),
        serde_json::Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), oracle_value(v)))
                .collect(),
        ),
        serde_json::Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(0.0);
            if f.fract() == 0.0 && f.abs() < 9.0e15 {
                Value::Int(f as i64)
            } else {
                Value::Float(f)
            }
        }
        other => Value::from_json(other.clone()),
    }
}

pub struct Step {
    pub statement: String,
    pub args: BTreeMap<String, Value>,
}

pub fn step(j: &serde_json::Value) -> Step {
    let args = match j.get("args").map(oracle_value) {
        Some(Value::Object(o)) => o,
        _ => BTreeMap::new(),
    };
    Step {
        statement: j
            .get("statement")
            .and_then(|s| s.as_str())
            .unwrap_or_default()
            .to_owned(),
        args,
    }
}

/// Every case of every fixture file: setup steps, the statement, then the `after` steps.
pub fn cases() -> Vec<(String, Vec<Step>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dql/tests/fixtures/oracle");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("oracle fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".cases.json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let cases: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&f).expect("read")).expect("json");
        for c in cases.as_array().into_iter().flatten() {
            let mut steps = Vec::new();
            for s in c
                .get("setup")
                .and_then(|s| s.as_array())
                .into_iter()
                .flatten()
            {
                if let Some(coll) = s.get("collection").and_then(|c| c.as_str()) {
                    let docs = s
                        .get("docs")
                        .and_then(|d| d.as_array())
                        .cloned()
                        .unwrap_or_default();
                    let marks: Vec<String> = (0..docs.len()).map(|i| format!("(:d{i})")).collect();
                    let args = docs
                        .iter()
                        .enumerate()
                        .map(|(i, d)| (format!("d{i}"), oracle_value(d)))
                        .collect();
                    steps.push(Step {
                        statement: format!("INSERT INTO `{coll}` DOCUMENTS {}", marks.join(", ")),
                        args,
                    });
                } else {
                    steps.push(step(s));
                }
            }
            steps.push(step(c));
            for a in c
                .get("after")
                .and_then(|a| a.as_array())
                .into_iter()
                .flatten()
            {
                steps.push(step(a));
            }
            let name = format!(
                "{}/{}",
                f.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                c["name"].as_str().unwrap_or_default()
            );
            out.push((name, steps));
        }
    }
    out
}

/// Generated ids differ between two stores: compare their shape only.
pub fn mask_generated(v: &Value) -> Value {
    match v {
        Value::String(s) if s.len() == 24 && s.chars().all(|c| c.is_ascii_hexdigit()) => {
            Value::String("<generated>".into())
        }
        Value::Array(a) => Value::Array(a.iter().map(mask_generated).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), mask_generated(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

pub fn unordered(statement: &str) -> bool {
    let s = statement.to_ascii_uppercase();
    (s.contains("GROUP BY") || s.contains("DISTINCT")) && !s.contains("ORDER BY")
}

pub fn masked(items: &[Value], statement: &str) -> Vec<Value> {
    let mut v: Vec<Value> = items.iter().map(mask_generated).collect();
    if unordered(statement) {
        v.sort_by_key(Value::to_json_string);
    }
    v
}
