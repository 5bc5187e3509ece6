//! The SQLite store against the in-memory reference store of the `dql` crate (itself checked
//! against Ditto's recorded answers): every oracle fixture runs through both, statement by
//! statement, and must give the same items, mutated ids and error codes. Each case also reopens
//! the database before its last statement, so answers are read back from disk.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bigpeer_dql::memstore::MemStore;
use bigpeer_schema::Value;
use smallpeer::Store;

/// The oracle's JSON: `{"$bigint": ..}`, `{"$bytes": ..}`, and integral numbers that the
/// oracle's JavaScript passes as integers.
fn oracle_value(j: &serde_json::Value) -> Value {
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

struct Step {
    statement: String,
    args: BTreeMap<String, Value>,
}

fn step(j: &serde_json::Value) -> Step {
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
fn cases() -> Vec<(String, Vec<Step>)> {
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
fn mask_generated(v: &Value) -> Value {
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

fn unordered(statement: &str) -> bool {
    let s = statement.to_ascii_uppercase();
    (s.contains("GROUP BY") || s.contains("DISTINCT")) && !s.contains("ORDER BY")
}

fn masked(items: &[Value], statement: &str) -> Vec<Value> {
    let mut v: Vec<Value> = items.iter().map(mask_generated).collect();
    if unordered(statement) {
        v.sort_by_key(Value::to_json_string);
    }
    v
}

#[test]
fn every_oracle_case_gives_the_reference_answer_on_sqlite() {
    let cases = cases();
    assert!(cases.len() >= 25, "oracle fixtures missing");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut failures = Vec::new();
    let mut statements = 0;
    for (n, (name, steps)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("case{n}.sqlite3"));
        let mut peer = Store::open(&path).expect("open");
        let mut mem = MemStore::new();
        for (i, s) in steps.iter().enumerate() {
            if i + 1 == steps.len() && i > 0 {
                drop(peer);
                peer = Store::open(&path).expect("reopen");
            }
            statements += 1;
            let want = mem.execute(&s.statement, &s.args);
            let got = peer.execute(&s.statement, &s.args);
            let diff = match (&want, &got) {
                (Ok(w), Ok(g)) => {
                    let (wi, gi) = (
                        masked(&w.items, &s.statement),
                        masked(&g.items, &s.statement),
                    );
                    let (wm, gm) = (masked(&w.mutated_ids, ""), masked(&g.mutated_ids, ""));
                    (wi != gi || wm != gm).then(|| {
                        format!(
                            "items {} vs {}; mutated {} vs {}",
                            Value::Array(wi),
                            Value::Array(gi),
                            Value::Array(wm),
                            Value::Array(gm)
                        )
                    })
                }
                (Err(w), Err(g)) => (w.code.as_str() != g.code())
                    .then(|| format!("error {} vs {}: {g}", w.code.as_str(), g.code())),
                (Ok(_), Err(g)) => Some(format!(
                    "reference succeeded, SQLite failed: {}: {g}",
                    g.code()
                )),
                (Err(w), Ok(_)) => Some(format!(
                    "reference failed ({}: {}), SQLite succeeded",
                    w.code.as_str(),
                    w.message
                )),
            };
            if let Some(d) = diff {
                failures.push(format!("{name} step {i} `{}`: {d}", s.statement));
                break;
            }
        }
        // The stored collections hold what the reference holds.
        for coll in mem.collections() {
            let want = masked(&mem.documents(&coll), "");
            let got = masked(&peer.documents(&coll).expect("documents"), "");
            if want != got {
                failures.push(format!(
                    "{name}: collection {coll}: {} vs {}",
                    Value::Array(want),
                    Value::Array(got)
                ));
            }
        }
    }
    assert!(statements > cases.len(), "every case ran its statements");
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
