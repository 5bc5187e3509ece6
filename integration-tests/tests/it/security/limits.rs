//! See `super`. One limit per dimension (`bigpeer_schema::limits`), the same answer on every
//! path: `/api/v4/store/execute`, the legacy `/api/v4/store/write`, a sync push and a small
//! peer's local writes. A bad write never fails its neighbours, and an unreadable row never
//! stops the feed, an initial sync or a SELECT.

use std::collections::BTreeMap;

use bigpeer_schema::wire::{Msg, PushResult, SubStatus};
use bigpeer_schema::{Clock, Doc, DocId, ObjectMode, Op, SiteId, Value};
use futures_util::StreamExt as _;
use integration_tests::TestApp;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::sync::{admin, ids, Peer};

/// `POST /api/v4/store/execute` with `token`: status and body.
async fn exec(
    app: &TestApp,
    token: &str,
    statement: &str,
    args: serde_json::Value,
) -> (u16, serde_json::Value) {
    post(
        app,
        token,
        "/api/v4/store/execute",
        json!({ "statement": statement, "args": args }),
    )
    .await
}

async fn post(
    app: &TestApp,
    token: &str,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", app.app.url()))
        .header("Authorization", format!("Bearer {token}"))
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json body"))
}

/// The error code of an execute answer.
fn code(body: &serde_json::Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// `{"a": {"a": ... 1}}`, `levels` objects deep.
fn nested(levels: usize) -> serde_json::Value {
    let mut v = json!(1);
    for _ in 0..levels {
        v = json!({ "a": v });
    }
    v
}

/// `[[...["x"]...]]`, `levels` arrays deep.
fn nested_id(levels: usize) -> serde_json::Value {
    let mut v = json!("x");
    for _ in 0..levels {
        v = json!([v]);
    }
    v
}

fn value(v: &serde_json::Value) -> Value {
    Value::from_json(v.clone())
}

/// A peer's new document `id` in `coll` with `ops` applied by `site`.
fn pushed(coll: &str, id: DocId, site: u128, ops: &[Op]) -> bigpeer_schema::wire::DocChange {
    let mut d = Doc::new();
    d.apply(ops, Clock::new(SiteId(site)).tick())
        .expect("apply");
    bigpeer_schema::wire::DocChange {
        collection: coll.into(),
        id,
        seq: 0,
        delta: d.delta(&Default::default()),
    }
}

/// `SET path = v`, objects kept whole (registers: what the wire decoder lets nest deepest).
fn set(path: &[&str], v: Value) -> Op {
    Op::Set {
        path: path.iter().map(|s| (*s).to_owned()).collect(),
        value: v,
        objects: ObjectMode::Register,
    }
}

fn denied(code: &str) -> PushResult {
    PushResult::Denied { code: code.into() }
}

/// Values nested deeper than the limit, paths longer than it and ids nested deeper than theirs
/// are refused with `request/too-deep` through execute (SET, INSERT arguments, UPDATE paths), the
/// legacy write route and a sync push, before anything is written; what the limit allows reads
/// back everywhere (also sorted by Postgres), and the collection stays readable.
#[tokio::test]
async fn nesting_over_the_limit_is_refused_on_every_path() {
    let app = TestApp::spawn().await;
    let token = admin(&app).await;
    let insert = "INSERT INTO c DOCUMENTS (:d)";

    // At the limit: a document 64 deep (the document object, then 63 more).
    let (s, b) = exec(
        &app,
        &token,
        insert,
        json!({"d": {"_id": "max", "v": nested(63)}}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    // One more, or far more (past what serde_json reads back, 128): refused.
    for (id, levels) in [("over", 64), ("far", 120)] {
        let (s, b) = exec(
            &app,
            &token,
            insert,
            json!({"d": {"_id": id, "v": nested(levels)}}),
        )
        .await;
        assert_eq!((s, code(&b)), (400, "request/too-deep"), "{id}: {b}");
    }
    // SET: a deep value, a long path, a long path plus a deep value.
    let update = |set: &str| format!("UPDATE c SET {set} WHERE _id = 'max'");
    let long_path = vec!["p"; 200].join(".");
    let path_70 = vec!["q"; 70].join(".");
    for (statement, args) in [
        (update("w = :v"), json!({"v": nested(64)})),
        (update(&format!("{long_path} = 1")), json!({})),
        (update(&format!("{path_70} = :v")), json!({"v": nested(70)})),
    ] {
        let (s, b) = exec(&app, &token, &statement, args).await;
        assert_eq!((s, code(&b)), (400, "request/too-deep"), "{statement}: {b}");
    }
    let path_64 = vec!["r"; 64].join(".");
    let (s, b) = exec(&app, &token, &update(&format!("{path_64} = 1")), json!({})).await;
    assert_eq!(s, 200, "a 64-segment path: {b}");
    // Ids: 16 levels are fine, 17 or 65 are not.
    let (s, b) = exec(&app, &token, insert, json!({"d": {"_id": nested_id(16)}})).await;
    assert_eq!(s, 200, "{b}");
    for levels in [17, 65] {
        let (s, b) = exec(
            &app,
            &token,
            insert,
            json!({"d": {"_id": nested_id(levels)}}),
        )
        .await;
        assert_eq!((s, code(&b)), (400, "request/too-deep"), "id {levels}: {b}");
    }

    // The legacy write route: the same limits, the same codes.
    for command in [
        json!({"method": "upsert", "collection": "c", "id": "l", "value": {"v": nested(64)}}),
        json!({"method": "upsert", "collection": "c", "value": {"_id": nested_id(20)}}),
        json!({"method": "update", "collection": "c", "query": "_id == 'max'",
               "commands": [{"method": "set", "path": long_path, "value": 1}]}),
    ] {
        let (s, b) = post(
            &app,
            &token,
            "/api/v4/store/write",
            json!({"commands": [command]}),
        )
        .await;
        assert_eq!(
            (s, b["code"].as_str()),
            (400, Some("request/too-deep")),
            "{b}"
        );
    }

    // A sync push: each change refused on its own, the valid one applied.
    let (mut p, _) = Peer::open_as(&app, SiteId(14), &token).await;
    let deep_value = value(&nested(100));
    let results = p
        .push(
            1,
            vec![
                pushed("c", DocId::string("s1"), 11, &[set(&["v"], deep_value)]),
                pushed(
                    "c",
                    DocId::string("s2"),
                    12,
                    &[set(&vec!["p"; 70], value(&nested(70)))],
                ),
                pushed(
                    "c",
                    DocId::new(value(&nested_id(40))).expect("id"),
                    13,
                    &[set(&["a"], Value::Int(1))],
                ),
                pushed(
                    "c",
                    DocId::string("s4"),
                    14,
                    &[set(&["fine"], Value::Int(1))],
                ),
            ],
        )
        .await;
    assert_eq!(
        results,
        vec![
            denied("request/too-deep"),
            denied("request/too-deep"),
            denied("request/too-deep"),
            PushResult::Applied
        ]
    );

    // Nothing refused was written, and everything written reads back, sorted by Postgres too.
    let (s, b) = exec(&app, &token, "SELECT * FROM c ORDER BY v", json!({})).await;
    assert_eq!(s, 200, "{b}");
    let items = b["items"].as_array().expect("items");
    assert_eq!(items.len(), 3, "{b}");
    let max = items.iter().find(|d| d["_id"] == "max").expect("max");
    assert_eq!(max["v"], nested(63));
    let (s, _) = exec(
        &app,
        &token,
        "UPDATE c SET v = 2 WHERE _id = 'max'",
        json!({}),
    )
    .await;
    assert_eq!(s, 200, "the document at the limit can be updated");
    app.shutdown().await;
}

/// Collection names and ids: empty names and control characters (`query/invalid`), U+0000
/// (`request/nul-character`), a 4,000-character id or name (`request/too-long`): the same answer
/// over execute, the legacy route and a sync push, so that a peer's outbox never holds what the
/// big peer refuses; and a small peer refuses locally what the big peer refuses.
#[tokio::test]
async fn names_and_ids_are_checked_alike_everywhere() {
    let app = TestApp::spawn().await;
    let token = admin(&app).await;
    let long = "x".repeat(4000);
    let cases: Vec<(&str, String, serde_json::Value, &str)> = vec![
        (
            "empty collection",
            "INSERT INTO `` DOCUMENTS ({'_id': 'a'})".into(),
            json!({}),
            "query/invalid",
        ),
        (
            "control character",
            "INSERT INTO `a\u{1}b` DOCUMENTS ({'_id': 'a'})".into(),
            json!({}),
            "query/invalid",
        ),
        (
            "long collection",
            format!("INSERT INTO `{long}` DOCUMENTS ({{'_id': 'a'}})"),
            json!({}),
            "request/too-long",
        ),
        (
            "long id",
            "INSERT INTO c DOCUMENTS (:d)".into(),
            json!({"d": {"_id": long}}),
            "request/too-long",
        ),
        (
            "nul value",
            "INSERT INTO c DOCUMENTS (:d)".into(),
            json!({"d": {"_id": "n", "s": "a\u{0}b"}}),
            "request/nul-character",
        ),
        (
            "deep",
            "INSERT INTO c DOCUMENTS (:d)".into(),
            json!({"d": {"_id": "d", "v": nested(80)}}),
            "request/too-deep",
        ),
    ];
    let mut small = smallpeer::Store::open_in_memory().expect("small peer");
    for (what, statement, args, expected) in &cases {
        let (s, b) = exec(&app, &token, statement, args.clone()).await;
        assert_eq!((s, code(&b)), (400, *expected), "{what}: {b}");
        let args: BTreeMap<String, Value> = match value(args) {
            Value::Object(o) => o,
            _ => BTreeMap::new(),
        };
        let err = small.execute(statement, &args).expect_err(what);
        assert_eq!(err.code(), *expected, "small peer, {what}: {err}");
    }
    // A small peer's later edits of a valid document still go (nothing was stuck).
    small
        .execute(
            "INSERT INTO c DOCUMENTS ({'_id': 'ok', 'n': 1})",
            &BTreeMap::new(),
        )
        .expect("valid write");

    // The legacy route.
    for (collection, id, expected) in [
        ("", json!("a"), "query/invalid"),
        ("a\nb", json!("a"), "query/invalid"),
        (long.as_str(), json!("a"), "request/too-long"),
        ("c", json!(long), "request/too-long"),
        ("c\u{0}", json!("a"), "request/nul-character"),
    ] {
        let (s, b) = post(
            &app,
            &token,
            "/api/v4/store/write",
            json!({"commands": [{"method": "upsert", "collection": collection, "id": id, "value": {"n": 1}}]}),
        )
        .await;
        assert_eq!(
            (s, b["code"].as_str()),
            (400, Some(expected)),
            "{collection:?}: {b}"
        );
    }

    // A sync push.
    let (mut p, _) = Peer::open_as(&app, SiteId(26), &token).await;
    let one = |coll: &str, id: DocId, site| pushed(coll, id, site, &[set(&["n"], Value::Int(1))]);
    let results = p
        .push(
            1,
            vec![
                one("", DocId::string("a"), 21),
                one("a\u{1}b", DocId::string("a"), 22),
                one(&long, DocId::string("a"), 23),
                one("c", DocId::string(long.clone()), 24),
                pushed(
                    "c",
                    DocId::string("n"),
                    25,
                    &[set(&["s"], Value::String("a\0b".into()))],
                ),
                one("c", DocId::string("fine"), 26),
            ],
        )
        .await;
    assert_eq!(
        results,
        vec![
            denied("query/invalid"),
            denied("query/invalid"),
            denied("request/too-long"),
            denied("request/too-long"),
            denied("request/nul-character"),
            PushResult::Applied,
        ]
    );
    let (s, b) = exec(&app, &token, "SELECT * FROM system:collections", json!({})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["items"].as_array().map(Vec::len),
        Some(1),
        "only `c` exists: {b}"
    );
    app.shutdown().await;
}

/// The next frame and its size in bytes (pings answered).
async fn recv_sized(p: &mut Peer) -> (Msg, usize) {
    loop {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(30), p.ws.next())
            .await
            .expect("a frame within the timeout")
            .expect("open")
            .expect("frame");
        if let Message::Binary(b) = frame {
            let m = Msg::decode(&b).expect("valid frame");
            if let Msg::Ping { nonce } = m {
                p.send(&Msg::Pong { nonce }).await;
                continue;
            }
            return (m, b.len());
        }
    }
}

/// The document size limit (`document_size_hard_limit_bytes`, SHOW's value, on the encoded
/// CRDT state) holds however a document grows, over execute, the legacy route and a sync push;
/// set above what a frame holds, it is capped there, and no frame a peer gets is ever larger
/// than the `max_frame` the server announced.
#[tokio::test]
async fn the_document_size_limit_holds_and_every_frame_fits() {
    let app = TestApp::spawn().await;
    let token = admin(&app).await;
    let (_, b) = exec(
        &app,
        &token,
        "SHOW document_size_hard_limit_bytes",
        json!({}),
    )
    .await;
    assert_eq!(b["items"][0]["document_size_hard_limit_bytes"], 5_242_880);
    assert_eq!(app.app.store().document_size_limit(), 5_242_880);

    let (s, b) = exec(
        &app,
        &token,
        "ALTER SYSTEM SET document_size_hard_limit_bytes = 200000",
        json!({}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let chunk = "y".repeat(30_000);
    let (s, _) = exec(
        &app,
        &token,
        "INSERT INTO big DOCUMENTS ({'_id': 'g'})",
        json!({}),
    )
    .await;
    assert_eq!(s, 200);
    let mut refused_at = None;
    for i in 0..20 {
        let (s, b) = exec(
            &app,
            &token,
            &format!("UPDATE big SET f{i} = :c WHERE _id = 'g'"),
            json!({"c": chunk}),
        )
        .await;
        if s != 200 {
            assert_eq!((s, code(&b)), (400, "document/too-large"), "{b}");
            refused_at = Some(i);
            break;
        }
    }
    assert!(matches!(refused_at, Some(5..=7)), "{refused_at:?}");
    // The legacy route and a push meet the same limit.
    let (s, b) = post(
        &app,
        &token,
        "/api/v4/store/write",
        json!({"commands": [{"method": "update", "collection": "big", "query": "_id == 'g'",
                             "commands": [{"method": "set", "path": "more", "value": chunk}]}]}),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (400, Some("document/too-large")),
        "{b}"
    );
    let (mut p, welcome) = Peer::open_as(&app, SiteId(31), &token).await;
    let Msg::Welcome { max_frame, .. } = welcome else {
        unreachable!()
    };
    let results = p
        .push(
            1,
            vec![pushed(
                "big",
                DocId::string("h"),
                31,
                &[set(&["s"], Value::String("z".repeat(300_000)))],
            )],
        )
        .await;
    assert_eq!(results, vec![denied("document/too-large")]);
    // A small peer with the same setting refuses locally.
    let mut small = smallpeer::Store::open_in_memory().expect("small peer");
    let none = BTreeMap::new();
    small
        .execute(
            "ALTER SYSTEM SET document_size_hard_limit_bytes = 200000",
            &none,
        )
        .expect("alter");
    let mut args = BTreeMap::new();
    args.insert("c".to_owned(), Value::String("z".repeat(300_000)));
    let err = small
        .execute("INSERT INTO big DOCUMENTS ({'_id': 'h', 's': :c})", &args)
        .expect_err("too large");
    assert_eq!(err.code(), "document/too-large");

    // A limit above what a frame holds is capped: built by writes of 3 MB each, the document is
    // refused before it passes max_frame, and a subscribed peer gets every version in frames
    // no larger than max_frame.
    let (s, _) = exec(
        &app,
        &token,
        "ALTER SYSTEM SET document_size_hard_limit_bytes = 100000000",
        json!({}),
    )
    .await;
    assert_eq!(s, 200);
    p.subscribe(1, "SELECT * FROM huge", None).await;
    p.until_caught_up(1).await;
    let (s, _) = exec(
        &app,
        &token,
        "INSERT INTO huge DOCUMENTS ({'_id': 'h'})",
        json!({}),
    )
    .await;
    assert_eq!(s, 200);
    let three_mb = "w".repeat(3_000_000);
    let mut written = 0;
    for i in 0..4 {
        let (s, b) = exec(
            &app,
            &token,
            &format!("UPDATE huge SET f{i} = :c WHERE _id = 'h'"),
            json!({"c": three_mb}),
        )
        .await;
        if s == 200 {
            written += 1;
        } else {
            assert_eq!((s, code(&b)), (400, "document/too-large"), "{b}");
            break;
        }
    }
    assert_eq!(written, 2, "6 MB fit in an 8 MiB frame, 9 MB do not");
    let mut seen = 0;
    while seen < 3 {
        let (m, bytes) = recv_sized(&mut p).await;
        assert!(
            bytes as u64 <= max_frame,
            "a frame of {bytes} bytes, max_frame {max_frame}"
        );
        if let Msg::Batch { changes, batch, .. } = m {
            seen += changes.len();
            p.send(&Msg::Ack { batch, credit: 8 }).await;
        }
    }
    app.shutdown().await;
}

/// Writes a row straight into the documents table with a new sequence number (as a damaged
/// disk or a manual edit would), and wakes the change feed.
async fn raw_row(app: &TestApp, collection: &str, key: &[u8], value: Option<&str>, meta: &[u8]) {
    let mut db = direct(app).await;
    sqlx::query(
        "WITH c AS (UPDATE seq_counter SET v = v + 1 WHERE id = 0 RETURNING v) \
         INSERT INTO documents (collection, id, value, meta, deleted, seq, txn) \
         SELECT $1, $2, $3::jsonb, $4, $3 IS NULL, c.v, c.v FROM c \
         ON CONFLICT (collection, id) DO UPDATE SET value = EXCLUDED.value, meta = EXCLUDED.meta, \
           seq = EXCLUDED.seq, txn = EXCLUDED.txn",
    )
    .bind(collection)
    .bind(key)
    .bind(value)
    .bind(meta)
    .execute(&mut db)
    .await
    .expect("raw row");
    sqlx::query("SELECT pg_notify('bigpeer_changes', '0')")
        .execute(&mut db)
        .await
        .expect("notify");
}

/// A connection of the test's own to the server's database (as an operator's `psql`).
async fn direct(app: &TestApp) -> sqlx::PgConnection {
    use sqlx::Connection as _;
    sqlx::PgConnection::connect(app.db.url())
        .await
        .expect("a direct connection")
}

/// Rows that cannot be read (a CRDT state or an id that does not decode, a value nested deeper
/// than any JSON reader takes) are skipped by the change feed, initial syncs (with and without a
/// filter) and SELECT: other collections' changes still reach a subscribed peer, the rest of the
/// collection syncs, they are counted in /metrics and /readyz, and the damaged one can be evicted.
#[tokio::test]
async fn an_unreadable_row_never_stops_the_feed_a_sync_or_a_select() {
    let app = TestApp::spawn().await;
    let token = admin(&app).await;
    let (mut p, _) = Peer::open(&app, &token).await;
    p.subscribe(1, "SELECT * FROM other", None).await;
    p.until_caught_up(1).await;
    let (s, _) = exec(
        &app,
        &token,
        "INSERT INTO bad DOCUMENTS ({'_id': 'a', 'x': 1}), ({'_id': 'b', 'x': 1}), ({'_id': 'c', 'x': 1})",
        json!({}),
    )
    .await;
    assert_eq!(s, 200);
    let bad_key = DocId::string("b").key();
    // b's CRDT state no longer decodes; a row whose id does not decode; a value nested far
    // deeper than any JSON reader takes (its state is fine).
    raw_row(
        &app,
        "bad",
        &bad_key,
        Some(r#"{"_id":"b","x":1}"#),
        &[1, 0xff, 0xff],
    )
    .await;
    raw_row(
        &app,
        "bad",
        &[0xff, 0xfe],
        Some(r#"{"_id":"k","x":1}"#),
        &[1, 0xff],
    )
    .await;
    let mut deep_state = Doc::new();
    deep_state
        .apply(&[set(&["x"], Value::Int(1))], Clock::new(SiteId(41)).tick())
        .expect("apply");
    let mut deep_value = nested(200);
    deep_value["_id"] = json!("deep");
    deep_value["x"] = json!(1);
    raw_row(
        &app,
        "bad",
        &DocId::string("deep").key(),
        Some(&deep_value.to_string()),
        &deep_state.encode(),
    )
    .await;

    // The feed goes on: a change of another collection reaches the peer.
    let (s, _) = exec(
        &app,
        &token,
        "INSERT INTO other DOCUMENTS ({'_id': 'o'})",
        json!({}),
    )
    .await;
    assert_eq!(s, 200);
    let (_, changes) = p.batch().await;
    assert_eq!(ids(&changes), vec!["\"o\""]);

    // Initial syncs of the damaged collection skip what they cannot read, with a filter or not.
    for (sub, query) in [
        (2, "SELECT * FROM bad"),
        (3, "SELECT * FROM bad WHERE x = 1"),
    ] {
        p.subscribe(sub, query, None).await;
        let (changes, _) = p.until_caught_up(sub).await;
        assert_eq!(ids(&changes), vec!["\"a\"", "\"c\"", "\"deep\""], "{query}");
    }

    // SELECT skips the value it cannot read; point reads of the others work.
    // (b's value and the undecodable id's row are readable JSON: only their states or ids are
    // damaged.)
    let (s, b) = exec(&app, &token, "SELECT * FROM bad", json!({})).await;
    assert_eq!(s, 200, "{b}");
    let mut got: Vec<String> = b["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["_id"].to_string())
        .collect();
    got.sort();
    assert_eq!(got, vec!["\"a\"", "\"b\"", "\"c\"", "\"k\""], "{b}");
    let (s, b) = exec(&app, &token, "SELECT * FROM bad WHERE _id = 'c'", json!({})).await;
    assert_eq!(
        (s, b["items"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{b}"
    );

    // Counted and shown.
    let (s, ready) = app.get("/readyz").await;
    assert_eq!(s, 200, "{ready}");
    let unreadable = ready["unreadableRows"].as_u64().expect("unreadableRows");
    assert!(unreadable >= 2, "{ready}");
    let metrics = reqwest::get(format!("{}/metrics", app.app.url()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let skipped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("bigpeer_unreadable_rows_skipped_total "))
        .and_then(|n| n.parse().ok())
        .expect("the counter");
    assert!(skipped >= 3, "{skipped}");

    // The damaged document can be evicted (and is forgotten); the others are still written.
    let (s, b) = exec(&app, &token, "EVICT FROM bad WHERE _id = 'b'", json!({})).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = exec(
        &app,
        &token,
        "UPDATE bad SET y = 2 WHERE _id = 'a'",
        json!({}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (_, ready) = app.get("/readyz").await;
    assert_eq!(
        ready["unreadableRows"].as_u64().unwrap_or(0),
        unreadable - 1,
        "{ready}"
    );
    app.shutdown().await;
}

/// A 4,000-character id or collection name among concurrent inserts is a 400 of its own; a job
/// the database itself refuses (a trigger standing for any row Postgres will not store) fails
/// alone: no other client's insert fails with it.
#[tokio::test]
async fn one_bad_write_never_fails_its_neighbours() {
    let app = TestApp::spawn().await;
    let token = admin(&app).await;
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN RAISE EXCEPTION 'poisoned row'; END $$; \
         CREATE TRIGGER refuse_poison BEFORE INSERT OR UPDATE ON documents \
         FOR EACH ROW WHEN (NEW.collection = 'poison') EXECUTE FUNCTION refuse_poison();",
    )
    .execute(&mut direct(&app).await)
    .await
    .expect("trigger");
    let long = "x".repeat(4000);
    let mut tasks = Vec::new();
    for i in 0..120 {
        let (statement, args, expected) = match i % 10 {
            3 => (
                "INSERT INTO c DOCUMENTS (:d)".to_owned(),
                json!({"d": {"_id": long}}),
                400,
            ),
            5 => (
                format!("INSERT INTO `{long}` DOCUMENTS ({{'_id': 'a'}})"),
                json!({}),
                400,
            ),
            7 => (
                "INSERT INTO poison DOCUMENTS (:d)".to_owned(),
                json!({"d": {"_id": i}}),
                503,
            ),
            _ => (
                "INSERT INTO c DOCUMENTS (:d)".to_owned(),
                json!({"d": {"_id": i}}),
                200,
            ),
        };
        let url = app.app.url();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let resp = reqwest::Client::new()
                .post(format!("{url}/api/v4/store/execute"))
                .header("Authorization", format!("Bearer {token}"))
                .json(&json!({ "statement": statement, "args": args }))
                .send()
                .await
                .expect("request");
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.expect("json");
            (i, expected, status, body)
        }));
    }
    for t in tasks {
        let (i, expected, status, body) = t.await.expect("task");
        assert_eq!(status, expected, "insert {i}: {body}");
        if expected == 400 {
            assert_eq!(code(&body), "request/too-long", "{body}");
        }
    }
    let (s, b) = exec(&app, &token, "SELECT count(*) AS n FROM c", json!({})).await;
    assert_eq!((s, b["items"][0]["n"].as_i64()), (200, Some(84)), "{b}");
    app.shutdown().await;
}

/// A document written before the size limit held (straight into the table here), too large for
/// any frame: a subscribed peer is never sent a frame over max_frame; the document is skipped
/// (counted in /metrics) and the session goes on, in the initial sync and live.
#[tokio::test]
async fn a_document_too_large_for_a_frame_is_skipped_not_sent() {
    let app = TestApp::spawn().await;
    let token = admin(&app).await;
    let huge = |site| {
        let mut d = Doc::new();
        d.apply(
            &[set(&["s"], Value::String("h".repeat(9 * 1024 * 1024)))],
            Clock::new(SiteId(site)).tick(),
        )
        .expect("apply");
        d.encode()
    };
    raw_row(
        &app,
        "h",
        &DocId::string("old").key(),
        Some(r#"{"_id":"old","s":"..."}"#),
        &huge(51),
    )
    .await;
    let (s, _) = exec(
        &app,
        &token,
        "INSERT INTO h DOCUMENTS ({'_id': 'small'})",
        json!({}),
    )
    .await;
    assert_eq!(s, 200);
    let (mut p, welcome) = Peer::open(&app, &token).await;
    let Msg::Welcome { max_frame, .. } = welcome else {
        unreachable!()
    };
    p.subscribe(1, "SELECT * FROM h", None).await;
    let mut got = Vec::new();
    loop {
        let (m, bytes) = recv_sized(&mut p).await;
        assert!(
            bytes as u64 <= max_frame,
            "a frame of {bytes} bytes, max_frame {max_frame}"
        );
        match m {
            Msg::Batch { changes, batch, .. } => {
                got.extend(changes.into_iter().map(|c| c.id.to_string()));
                p.send(&Msg::Ack { batch, credit: 8 }).await;
            }
            Msg::SubState {
                status: SubStatus::CaughtUp { .. },
                ..
            } => break,
            Msg::SubState {
                status: SubStatus::Active,
                ..
            } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, vec!["\"small\""]);
    // Live: the large document changes, then a small one; only the small one comes.
    raw_row(
        &app,
        "h",
        &DocId::string("old").key(),
        Some(r#"{"_id":"old","s":"..."}"#),
        &huge(52),
    )
    .await;
    let (s, _) = exec(
        &app,
        &token,
        "INSERT INTO h DOCUMENTS ({'_id': 'later'})",
        json!({}),
    )
    .await;
    assert_eq!(s, 200);
    let (m, bytes) = recv_sized(&mut p).await;
    assert!(bytes as u64 <= max_frame);
    let Msg::Batch { changes, .. } = m else {
        panic!("expected a batch, got {m:?}")
    };
    assert_eq!(ids(&changes), vec!["\"later\""]);
    let metrics = reqwest::get(format!("{}/metrics", app.app.url()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.lines().any(|l| l
            .strip_prefix("bigpeer_sync_oversized_changes_total ")
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n >= 2)),
        "{metrics}"
    );
    app.shutdown().await;
}
