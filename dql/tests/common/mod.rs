//! Shared test helpers: loading oracle fixtures (cases and Ditto's recorded answers) and
//! running them through the in-memory store.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bigpeer_dql::memstore::{MemStore, QueryResult};
use bigpeer_dql::DqlError;
use bigpeer_schema::Value;

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join("oracle")
}

/// Converts the oracle's JSON (with `{"$bigint": ..}` and `{"$bytes": ..}`) to a value.
pub fn value_from_oracle(j: &serde_json::Value) -> Value {
    match j {
        serde_json::Value::Object(o) if o.len() == 1 && o.contains_key("$bigint") => {
            let s = o["$bigint"].as_str().unwrap_or("0");
            s.parse::<i64>()
                .map(Value::Int)
                .unwrap_or_else(|_| Value::from_u64(s.parse::<u64>().unwrap_or(0)))
        }
        serde_json::Value::Array(a) => Value::Array(a.iter().map(value_from_oracle).collect()),
        serde_json::Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), value_from_oracle(v)))
                .collect(),
        ),
        other => Value::from_json(other.clone()),
    }
}

/// Arguments and documents as the oracle's JavaScript passes them: a JSON number with an
/// integral value (`2.0`) arrives as an integer.
pub fn input_from_oracle(j: &serde_json::Value) -> Value {
    integral_floats_to_ints(value_from_oracle(j))
}

fn integral_floats_to_ints(v: Value) -> Value {
    match v {
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::Int(f as i64),
        Value::Array(a) => Value::Array(a.into_iter().map(integral_floats_to_ints).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| (k, integral_floats_to_ints(v)))
                .collect(),
        ),
        other => other,
    }
}

pub fn args_of(j: Option<&serde_json::Value>) -> BTreeMap<String, Value> {
    match j.map(input_from_oracle) {
        Some(Value::Object(o)) => o,
        _ => BTreeMap::new(),
    }
}

#[derive(Debug, Clone)]
pub struct Step {
    pub statement: String,
    pub args: BTreeMap<String, Value>,
}

/// One oracle case with the engine's answer.
#[derive(Debug, Clone)]
pub struct Case {
    pub file: String,
    pub name: String,
    pub setup: Vec<Step>,
    pub step: Step,
    pub after: Vec<Step>,
    pub expected: serde_json::Value,
}

fn setup_steps(j: &serde_json::Value) -> Vec<Step> {
    let mut out = Vec::new();
    for s in j.as_array().into_iter().flatten() {
        if let Some(coll) = s.get("collection").and_then(|c| c.as_str()) {
            let docs = s
                .get("docs")
                .and_then(|d| d.as_array())
                .cloned()
                .unwrap_or_default();
            let placeholders: Vec<String> = (0..docs.len()).map(|i| format!("(:d{i})")).collect();
            let args = docs
                .iter()
                .enumerate()
                .map(|(i, d)| (format!("d{i}"), input_from_oracle(d)))
                .collect();
            out.push(Step {
                statement: format!("INSERT INTO `{coll}` DOCUMENTS {}", placeholders.join(", ")),
                args,
            });
        } else {
            out.push(step_of(s));
        }
    }
    out
}

fn step_of(s: &serde_json::Value) -> Step {
    Step {
        statement: s
            .get("statement")
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_owned(),
        args: args_of(s.get("args")),
    }
}

/// Loads every `*.cases.json` with its `*.results.json`.
pub fn load_cases() -> Vec<Case> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".cases.json"))
        .collect();
    files.sort();
    for f in files {
        let results_path =
            PathBuf::from(f.to_string_lossy().replace(".cases.json", ".results.json"));
        let cases: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&f).expect("cases")).expect("cases json");
        let results: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&results_path).expect("results"))
                .expect("results json");
        let by_name: BTreeMap<String, serde_json::Value> = results
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| (r["name"].as_str().unwrap_or_default().to_owned(), r.clone()))
            .collect();
        for c in cases.as_array().into_iter().flatten() {
            let name = c["name"].as_str().unwrap_or_default().to_owned();
            out.push(Case {
                file: f
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                setup: c.get("setup").map(setup_steps).unwrap_or_default(),
                step: step_of(c),
                after: c
                    .get("after")
                    .and_then(|a| a.as_array())
                    .into_iter()
                    .flatten()
                    .map(step_of)
                    .collect(),
                expected: by_name
                    .get(&name)
                    .cloned()
                    .unwrap_or(serde_json::Value::Null),
                name,
            });
        }
    }
    out
}

/// Items compared as sets when the engine's order is unspecified (GROUP BY without ORDER BY).
pub fn order_is_unspecified(statement: &str) -> bool {
    let s = statement.to_ascii_uppercase();
    s.contains("GROUP BY") && !s.contains("ORDER BY")
}

fn is_generated_id(v: &Value) -> bool {
    matches!(v, Value::String(s) if s.len() == 24 && s.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Compares one statement's outcome with the engine's answer; `Err` describes the difference.
pub fn compare(
    statement: &str,
    got: &Result<QueryResult, DqlError>,
    expected: &serde_json::Value,
) -> Result<(), String> {
    let ok = expected
        .get("ok")
        .and_then(|o| o.as_bool())
        .unwrap_or(false);
    match got {
        Ok(r) if ok => {
            let mut want: Vec<Value> = expected["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(value_from_oracle)
                .collect();
            let mut have = r.items.clone();
            if order_is_unspecified(statement) {
                want.sort_by_key(|v| v.to_json_string());
                have.sort_by_key(|v| v.to_json_string());
            }
            if want != have {
                return Err(format!(
                    "items differ\n  want {}\n  have {}",
                    Value::Array(want),
                    Value::Array(have)
                ));
            }
            if let Some(ids) = expected.get("mutatedIds").and_then(|m| m.as_array()) {
                let want: Vec<Value> = ids.iter().map(value_from_oracle).collect();
                let same = want.len() == r.mutated_ids.len()
                    && want
                        .iter()
                        .zip(&r.mutated_ids)
                        .all(|(w, h)| w == h || (is_generated_id(w) && is_generated_id(h)));
                if !same {
                    return Err(format!(
                        "mutated ids differ: want {} have {}",
                        Value::Array(want),
                        Value::Array(r.mutated_ids.clone())
                    ));
                }
            }
            Ok(())
        }
        Err(e) if !ok => {
            let code = expected["error"]["code"].as_str().unwrap_or_default();
            if e.code_str() != code {
                return Err(format!(
                    "error code differs: want {code} have {} ({})",
                    e.code_str(),
                    e.message
                ));
            }
            Ok(())
        }
        Ok(r) => Err(format!(
            "expected error {} but got items {}",
            expected["error"],
            Value::Array(r.items.clone())
        )),
        Err(e) => Err(format!(
            "expected success but got {}: {}",
            e.code_str(),
            e.message
        )),
    }
}

/// Runs a case on a fresh in-memory store; `Err` lists every difference.
pub fn run_case(case: &Case) -> Result<(), String> {
    let mut store = MemStore::new();
    for s in &case.setup {
        store
            .execute(&s.statement, &s.args)
            .map_err(|e| format!("setup {}: {e}", s.statement))?;
    }
    let got = store.execute(&case.step.statement, &case.step.args);
    compare(&case.step.statement, &got, &case.expected)?;
    let after = case
        .expected
        .get("after")
        .and_then(|a| a.as_array())
        .cloned()
        .unwrap_or_default();
    for (s, want) in case.after.iter().zip(after) {
        let got = store.execute(&s.statement, &s.args);
        compare(&s.statement, &got, &want).map_err(|e| format!("after `{}`: {e}", s.statement))?;
    }
    Ok(())
}
