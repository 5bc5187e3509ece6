//! Benchmarks: parse + plan + compile per statement, and evaluator throughput.
//!
//! `CARGO_TARGET_DIR=... cargo bench -p bigpeer-dql --bench dql`

use std::collections::BTreeMap;
use std::hint::black_box;

use bigpeer_dql::{eval, parse, plan, sql};
use bigpeer_schema::{Clock, Doc, DocId, FieldView, ObjectMode, Op, SiteId, TypeView, Value};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const STATEMENTS: &[(&str, &str)] = &[
    ("point", "SELECT * FROM cars WHERE _id = :id"),
    ("filter3", "SELECT * FROM cars WHERE color = 'blue' AND year >= 2015 AND price < 30000"),
    (
        "projection_order",
        "SELECT make, model, price * 1.2 AS gross FROM cars WHERE engine.hp > 100 OR tags IN :t ORDER BY price DESC, make LIMIT 20 OFFSET 40",
    ),
    ("group", "SELECT color, COUNT(*) AS n, AVG(price) AS avg FROM cars WHERE year > 2000 GROUP BY color HAVING COUNT(*) > 1 ORDER BY n DESC"),
    ("update", "UPDATE cars SET price = price + 1, owner.name = :name UNSET note WHERE color = 'red' AND sold = false"),
    ("insert", "INSERT INTO cars DOCUMENTS ({'_id': 'x', 'make': 'Ford', 'tags': ['a', 'b'], 'engine': {'hp': 150}}) ON ID CONFLICT DO UPDATE"),
];

fn args() -> BTreeMap<String, Value> {
    let mut a = BTreeMap::new();
    a.insert("id".to_owned(), Value::String("abc".into()));
    a.insert(
        "t".to_owned(),
        Value::Array(vec![Value::String("x".into())]),
    );
    a.insert("name".to_owned(), Value::String("Ann".into()));
    a
}

fn compile_benches(c: &mut Criterion) {
    let args = args();
    let mut group = c.benchmark_group("parse_plan_compile");
    for (name, text) in STATEMENTS {
        group.bench_with_input(BenchmarkId::from_parameter(name), text, |b, text| {
            b.iter(|| {
                let stmt = parse(black_box(text)).expect("parses");
                let p = plan::check(&stmt, &args).expect("checks");
                sql::compile(&p).expect("compiles")
            })
        });
    }
    group.finish();
}

/// About 300 bytes of JSON per document.
fn documents(n: usize) -> Vec<Value> {
    let colors = ["red", "blue", "green", "black", "white"];
    (0..n)
        .map(|i| {
            let json = format!(
                r#"{{"_id":"car-{i:06}","make":"Make{m}","model":"Model {i}","color":"{c}","year":{y},"price":{p},"sold":{s},"engine":{{"hp":{hp},"cyl":{cyl}}},"tags":["t{t}","fleet"],"owner":{{"name":"Owner {i}","city":"City {t}"}},"note":"a short note about car number {i}","vin":"1HGCM82633A{i:06}","status":"available"}}"#,
                m = i % 17,
                c = colors[i % colors.len()],
                y = 1990 + (i % 35),
                p = 5_000 + (i * 37) % 60_000,
                s = i % 3 == 0,
                hp = 60 + i % 300,
                cyl = 3 + i % 6,
                t = i % 11,
            );
            Value::parse_json(&json).expect("valid document")
        })
        .collect()
}

fn eval_benches(c: &mut Criterion) {
    let docs = documents(10_000);
    let avg = docs.iter().map(|d| d.to_json_string().len()).sum::<usize>() / docs.len();
    eprintln!(
        "evaluator benchmark: {} documents of {avg} bytes on average",
        docs.len()
    );
    let stmt = parse("SELECT * FROM cars WHERE color = 'blue' AND year >= 2015 AND price < 30000")
        .expect("parses");
    let plan::Plan::Select(select) = plan::check(&stmt, &BTreeMap::new()).expect("checks") else {
        unreachable!("a SELECT plans to a select")
    };
    let mut group = c.benchmark_group("evaluator");
    group.throughput(Throughput::Elements(docs.len() as u64));
    group.bench_function("where_3_predicates", |b| {
        b.iter(|| {
            let filter = select.filter.as_ref();
            docs.iter()
                .filter(|d| eval::matches(filter, d).unwrap_or(false))
                .count()
        })
    });
    group.bench_function("select_3_predicates", |b| {
        b.iter(|| eval::select(&select, &docs).expect("runs").len())
    });
    // Strict mode: every document is first viewed through the declarations (from its CRDT
    // state), then filtered.
    let states: Vec<(DocId, Doc)> = docs.iter().map(crdt_state).collect();
    let view = TypeView {
        fields: BTreeMap::from([
            ("engine".to_owned(), FieldView::Map(TypeView::default())),
            ("owner".to_owned(), FieldView::Map(TypeView::default())),
        ]),
    };
    group.bench_function("where_3_predicates_strict_view", |b| {
        b.iter(|| {
            let filter = select.filter.as_ref();
            states
                .iter()
                .filter_map(|(id, doc)| bigpeer_dql::exec::viewed_with_id(doc, id, &view))
                .filter(|d| eval::matches(filter, d).unwrap_or(false))
                .count()
        })
    });
    group.finish();
}

/// The CRDT state of a document inserted in the default mode (objects as maps).
fn crdt_state(doc: &Value) -> (DocId, Doc) {
    let mut fields = doc.as_object().cloned().unwrap_or_default();
    let id = DocId::new(fields.remove("_id").unwrap_or(Value::Null)).expect("valid id");
    let mut state = Doc::new();
    let op = Op::Merge {
        path: Vec::new(),
        value: fields,
        objects: ObjectMode::Map,
    };
    state
        .apply_typed(&[op], Clock::new(SiteId::random()).tick())
        .expect("applies");
    (id, state)
}

criterion_group!(benches, compile_benches, eval_benches);
criterion_main!(benches);
