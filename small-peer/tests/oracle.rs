//! The SQLite store against the in-memory reference store of the `dql` crate (itself checked
//! against Ditto's recorded answers): every oracle fixture runs through both, statement by
//! statement, and must give the same items, mutated ids and error codes. Each case also reopens
//! the database before its last statement, so answers are read back from disk.

#[path = "../../dql/tests/support/oracle_steps.rs"]
mod oracle_steps;

use bigpeer_dql::memstore::MemStore;
use bigpeer_schema::Value;
use oracle_steps::{cases, masked};
use smallpeer::Store;

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
