//! Throughput of the document CRDT, in documents per second: applying a one-field delta,
//! merging a full state, computing a delta, encoding and decoding, materialising, for a small
//! (~300-byte) document and a 20-field document.
//!
//! Run: `cargo bench -p bigpeer-schema --bench crdt -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use bigpeer_schema::{Clock, Delta, Doc, ObjectMode, Op, SiteId, Value};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const MS: u64 = 1_700_000_000_000;

fn object(json: &str) -> std::collections::BTreeMap<String, Value> {
    Value::parse_json(json)
        .expect("valid JSON")
        .as_object()
        .expect("an object")
        .clone()
}

/// A car listing of about 300 bytes of JSON.
const CAR: &str = r#"{"make":"Toyota","model":"Corolla","year":2019,"color":"red","price":18999.5,
"mileage":42000,"owner":{"name":"Ada Lovelace","city":"London"},"tags":["a","b"],"vin":"JT2BF22K1Y0123456",
"fuel":"petrol","doors":4,"automatic":true,"seats":5,"location":{"lat":51.5072,"lon":-0.1276},
"listed":"2024-05-01T10:00:00Z"}"#;

/// A document with 20 top-level fields of mixed types.
fn twenty_fields() -> String {
    let fields: Vec<String> = (0..20)
        .map(|i| match i % 5 {
            0 => format!(r#""f{i}":{i}"#),
            1 => format!(r#""f{i}":"value number {i}""#),
            2 => format!(r#""f{i}":{}.25"#, i * 3),
            3 => format!(r#""f{i}":{{"x":{i},"y":"n{i}"}}"#),
            _ => format!(r#""f{i}":[{i},true,null]"#),
        })
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// Two replicas of one document: `sender` one edit ahead of `receiver`, both with a history of
/// two sites (created by one, edited by the other). `edit` is the path of the edited field.
struct Fixture {
    receiver: Doc,
    sender: Doc,
}

fn fixture(json: &str, edit: &str) -> Fixture {
    let mut a = Clock::new(SiteId(0x1111));
    let mut b = Clock::new(SiteId(0x2222));
    let mut doc = Doc::new();
    let ops = [Op::Merge {
        path: vec![],
        value: object(json),
        objects: ObjectMode::Map,
    }];
    doc.apply(&ops, a.tick_at(MS)).expect("insert");
    b.observe_at(doc.vv.max_hlc(), MS);
    let edit_op = |v: i64| Op::Set {
        path: vec![edit.to_owned()],
        value: Value::Int(v),
        objects: ObjectMode::Map,
    };
    doc.apply(&[edit_op(1)], b.tick_at(MS + 1)).expect("edit");
    let receiver = doc.clone();
    let mut sender = doc;
    sender
        .apply(&[edit_op(2)], a.tick_at(MS + 2))
        .expect("edit");
    Fixture { receiver, sender }
}

fn bench_doc(c: &mut Criterion, name: &str, json: &str, edit: &str) {
    let f = fixture(json, edit);
    let json_len = f
        .sender
        .materialize()
        .expect("a document")
        .to_json_string()
        .len();
    let blob = f.sender.encode();
    let delta = f.sender.delta(&f.receiver.vv);
    let delta_bytes = delta.encode();
    println!(
        "{name}: JSON {json_len} bytes, state {} bytes, one-field delta {} bytes",
        blob.len(),
        delta_bytes.len()
    );

    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(1));
    g.bench_function("delta_apply", |bch| {
        bch.iter_batched(
            || f.receiver.clone(),
            |mut r| {
                r.apply_delta(black_box(&delta)).expect("applies");
                r
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("delta_decode_apply", |bch| {
        bch.iter_batched(
            || f.receiver.clone(),
            |mut r| {
                let d = Delta::decode(black_box(&delta_bytes)).expect("decodes");
                r.apply_delta(&d).expect("applies");
                r
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("full_state_merge", |bch| {
        bch.iter_batched(
            || f.receiver.clone(),
            |mut r| {
                r.join(black_box(&f.sender));
                r
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("delta_compute", |bch| {
        bch.iter(|| black_box(&f.sender).delta(black_box(&f.receiver.vv)))
    });
    g.bench_function("encode", |bch| bch.iter(|| black_box(&f.sender).encode()));
    g.bench_function("decode", |bch| {
        bch.iter(|| Doc::decode(black_box(&blob)).expect("decodes"))
    });
    g.bench_function("materialize", |bch| {
        bch.iter(|| black_box(&f.sender).materialize())
    });
    g.finish();
}

fn crdt(c: &mut Criterion) {
    bench_doc(c, "car_300b", &CAR.replace('\n', ""), "price");
    bench_doc(c, "fields_20", &twenty_fields(), "f7");
}

criterion_group!(benches, crdt);
criterion_main!(benches);
