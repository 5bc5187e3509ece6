//! Rough local throughput of the SQLite store: `cargo run --release -p smallpeer --example
//! insert_rate [N]`. Documents of about 300 bytes; each statement is one durable transaction.

use std::collections::BTreeMap;
use std::time::Instant;

use bigpeer_schema::Value;
use smallpeer::Store;

fn doc(i: usize) -> Value {
    let text = format!(
        r#"{{"_id": "car-{i:08}", "make": "make-{}", "model": "model {i} with a longer name",
            "year": {}, "price": {}.5, "color": "{}", "tags": ["a", "b", "c{}"],
            "owner": {{"name": "owner {i}", "city": "city {}", "since": {}}},
            "notes": "about one hundred bytes of free text to bring the document near three hundred bytes"}}"#,
        i % 50,
        1990 + i % 30,
        i * 7 % 90_000,
        ["red", "blue", "green"][i % 3],
        i % 10,
        i % 100,
        2000 + i % 20
    );
    Value::parse_json(&text).unwrap_or(Value::Null)
}

fn rate(label: &str, n: usize, start: Instant) {
    let s = start.elapsed().as_secs_f64();
    println!("{label}: {n} in {s:.2}s = {:.0}/s", n as f64 / s);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5_000);
    let dir = tempfile::tempdir()?;
    let mut store = Store::open_dir(dir.path())?;

    let start = Instant::now();
    for i in 0..n {
        let mut args = BTreeMap::new();
        args.insert("d".to_owned(), doc(i));
        store.execute("INSERT INTO cars DOCUMENTS (:d)", &args)?;
    }
    rate("insert, one document per statement", n, start);

    let batch = 100;
    let start = Instant::now();
    for b in 0..n / batch {
        let mut args = BTreeMap::new();
        let docs: Vec<Value> = (0..batch).map(|i| doc(n + b * batch + i)).collect();
        args.insert("docs".to_owned(), Value::Array(docs));
        let marks: Vec<String> = (0..batch).map(|i| format!("(:docs[{i}])")).collect();
        store.execute(
            &format!("INSERT INTO cars DOCUMENTS {}", marks.join(", ")),
            &args,
        )?;
    }
    rate(
        "insert, 100 documents per statement",
        n / batch * batch,
        start,
    );

    let start = Instant::now();
    for i in 0..n {
        let mut args = BTreeMap::new();
        args.insert(
            "id".to_owned(),
            Value::String(format!("car-{:08}", i * 7 % n)),
        );
        store.execute("SELECT * FROM cars WHERE _id = :id", &args)?;
    }
    rate("point select by _id", n, start);

    let start = Instant::now();
    for i in 0..n / 10 {
        let mut args = BTreeMap::new();
        args.insert(
            "id".to_owned(),
            Value::String(format!("car-{:08}", i * 7 % n)),
        );
        store.execute("UPDATE cars SET price = price + 1 WHERE _id = :id", &args)?;
    }
    rate("point update by _id", n / 10, start);

    let start = Instant::now();
    let scans = 5;
    let mut found = 0;
    for _ in 0..scans {
        found = store
            .execute(
                "SELECT _id FROM cars WHERE color = 'red' AND year > 2000",
                &BTreeMap::new(),
            )?
            .items
            .len();
    }
    let per = start.elapsed().as_secs_f64() / f64::from(scans);
    println!(
        "filter scan over {} documents ({found} found): {:.1} ms",
        n + n / batch * batch,
        per * 1000.0
    );
    Ok(())
}
