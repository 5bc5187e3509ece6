//! The error (code, position, message) for common mistakes, compared with a snapshot file.
//! Run with `UPDATE_SNAPSHOTS=1` to rewrite `tests/snapshots/error_messages.txt` after a
//! deliberate change, and review the diff.

use std::collections::BTreeMap;

use bigpeer_dql::memstore::MemStore;
use bigpeer_schema::Value;

const MISTAKES: &[&str] = &[
    "SELEC * FROM cars",
    "SELECT * FROM",
    "SELECT * cars",
    "SELECT * FROM cars WHERE",
    "SELECT * FROM cars WHERE color = 'red",
    "SELECT * FROM cars WHERE color = :color",
    "SELECT *, color FROM cars",
    "SELECT a.b, b FROM cars",
    "SELECT color, COUNT(*) FROM cars",
    "SELECT * FROM cars GROUP BY color",
    "SELECT * FROM cars WHERE COUNT(*) > 1",
    "SELECT nofunc(a) FROM cars",
    "SELECT upper(a, b) FROM cars",
    "SELECT SUM(*) FROM cars",
    "SELECT * FROM cars LIMIT 'ten'",
    "SELECT * FROM cars LIMIT -1",
    "SELECT * FROM cars WHERE select = 1",
    "SELECT * FROM cars WHERE a IS 5",
    "SELECT * FROM cars ORDER BY",
    "SELECT * FROM cars; DROP TABLE cars",
    "SELECT * FROM system:indexes",
    "UPDATE cars SET _id = 'x'",
    "UPDATE cars SET tags[0] = 'x'",
    "UPDATE cars WHERE color = 'red'",
    "UPDATE cars SET n = nope + 1",
    "DELETE cars WHERE color = 'red'",
    "INSERT INTO cars DOCUMENTS ({'_id': 'a'}), ({'_id': 'a'})",
    "INSERT INTO cars DOCUMENTS ('not an object')",
    "INSERT INTO cars DOCUMENTS ({'_id': 1.5})",
    "INSERT INTO cars DOCUMENTS ({'_id': 'b', 'color': 'red'})",
    "UPDATE COLLECTION cars (n COUNTER) APPLY n INCREMENT BY 2.5",
    "SELECT * FROM cars JOIN owners ON cars.owner = owners._id",
    "SELECT * FROM cars WHERE _id IN (SELECT car FROM owners)",
    "SELECT * FROM cars WHERE name SIMILAR TO 'a%'",
    "CREATE INDEX ix ON cars (color)",
    "UPDATE cars SET props -> (color = 'red')",
    "SELECT * FROM cars UNION SELECT * FROM trucks",
];

fn render() -> String {
    let mut out = String::new();
    for text in MISTAKES {
        let mut store = MemStore::new();
        let setup = "INSERT INTO cars DOCUMENTS ({'_id': 'b', 'n': 1, 'color': 'blue'})";
        store.execute(setup, &BTreeMap::new()).expect("setup");
        let result = store.execute(text, &BTreeMap::<String, Value>::new());
        let line = match result {
            Ok(r) => format!(
                "ok: {} items, {} mutated",
                r.items.len(),
                r.mutated_ids.len()
            ),
            Err(e) => format!("{} at {}:{}: {}", e.code, e.line, e.column, e.message),
        };
        out.push_str(&format!("{text}\n    {line}\n"));
    }
    out
}

#[test]
fn error_messages_match_the_snapshot() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/error_messages.txt");
    let rendered = render();
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &rendered).expect("write snapshot");
    }
    let expected =
        std::fs::read_to_string(&path).expect("snapshot exists (run with UPDATE_SNAPSHOTS=1)");
    assert_eq!(
        rendered, expected,
        "error messages changed; review and rerun with UPDATE_SNAPSHOTS=1"
    );
    // Every listed mistake must be an error.
    assert!(
        !rendered.contains("ok: "),
        "a mistake was accepted:\n{rendered}"
    );
}
