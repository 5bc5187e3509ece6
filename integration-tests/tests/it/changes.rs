//! The change stream (`GET /api/v4/changes`) over a real socket: every write path gives its
//! event and nothing that rolled back does, permissions hide what a key may not read, a stream
//! resumes without a gap or a duplicate, and a position past the retention is refused.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bigpeer::auth::{KeyStore, NewKey, Permissions};
use integration_tests::{TestApp, TestDb};
use serde_json::{json, Value};

/// How long any wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(15);

async fn app() -> TestApp {
    TestApp::spawn_with(TestDb::create().await, |_| {}).await
}

async fn key(app: &TestApp, perms: Value) -> String {
    let permissions: Permissions = serde_json::from_value(perms).expect("permissions");
    KeyStore::new(app.app.store().clone())
        .create(NewKey {
            name: "cdc".into(),
            permissions,
            ..NewKey::default()
        })
        .await
        .expect("create key")
        .secret
}

async fn admin(app: &TestApp) -> String {
    key(
        app,
        json!({"read": {"everything": true}, "write": {"everything": true}}),
    )
    .await
}

/// `POST path` with `token`: status and JSON body.
async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", app.app.url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request");
    (r.status().as_u16(), r.json().await.expect("json"))
}

/// A DQL statement that must succeed; its transaction id.
async fn dql(app: &TestApp, token: &str, statement: &str, args: Value) -> i64 {
    let (status, body) = post(
        app,
        token,
        "/api/v4/store/execute",
        json!({"statement": statement, "args": args}),
    )
    .await;
    assert_eq!(status, 200, "{statement}: {body}");
    body["transactionId"].as_i64().expect("transaction id")
}

/// One open change stream, read event by event.
struct Events {
    resp: reqwest::Response,
    buf: Vec<u8>,
    sse: bool,
    /// Everything received, keep-alives included.
    raw: String,
}

/// An event as received: the SSE `id` and `event` fields (NDJSON: none) and the JSON.
#[derive(Debug)]
struct Got {
    id: Option<String>,
    event: Option<String>,
    data: Value,
}

/// Opens `GET /api/v4/changes?<query>`; the answer when it is not 200.
async fn open(
    app: &TestApp,
    token: &str,
    query: &str,
    sse: bool,
    last_event_id: Option<&str>,
) -> Result<Events, reqwest::Response> {
    let mut req = reqwest::Client::new()
        .get(format!("{}/api/v4/changes?{query}", app.app.url()))
        .bearer_auth(token)
        .header(
            "Accept",
            if sse {
                "text/event-stream"
            } else {
                "application/x-ndjson"
            },
        );
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    let resp = tokio::time::timeout(WAIT, req.send())
        .await
        .expect("an answer in time")
        .expect("request");
    if resp.status().as_u16() != 200 {
        return Err(resp);
    }
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        content_type,
        if sse {
            "text/event-stream"
        } else {
            "application/x-ndjson"
        }
    );
    Ok(Events {
        resp,
        buf: Vec::new(),
        sse,
        raw: String::new(),
    })
}

async fn stream(app: &TestApp, token: &str, query: &str, sse: bool) -> Events {
    match open(app, token, query, sse, None).await {
        Ok(e) => e,
        Err(r) => panic!(
            "GET /api/v4/changes?{query}: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        ),
    }
}

impl Events {
    /// The next event (keep-alives skipped).
    async fn next(&mut self) -> Got {
        loop {
            let sep: &[u8] = if self.sse { b"\n\n" } else { b"\n" };
            if let Some(at) = self.buf.windows(sep.len()).position(|w| w == sep) {
                let block: Vec<u8> = self.buf.drain(..at + sep.len()).collect();
                let text = String::from_utf8(block).expect("utf-8");
                if let Some(got) = self.parse(text.trim_end()) {
                    return got;
                }
                continue;
            }
            let chunk = tokio::time::timeout(WAIT, self.resp.chunk())
                .await
                .expect("an event in time")
                .expect("the stream reads")
                .expect("the stream is open");
            self.raw.push_str(&String::from_utf8_lossy(&chunk));
            self.buf.extend_from_slice(&chunk);
        }
    }

    fn parse(&self, block: &str) -> Option<Got> {
        if !self.sse {
            return (!block.is_empty()).then(|| Got {
                id: None,
                event: None,
                data: serde_json::from_str(block).expect("a JSON line"),
            });
        }
        let (mut id, mut event, mut data) = (None, None, None);
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("event: ") {
                event = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(serde_json::from_str(v).expect("JSON data"));
            }
        }
        data.map(|data| Got { id, event, data })
    }

    /// The next `n` events.
    async fn take(&mut self, n: usize) -> Vec<Got> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next().await);
        }
        out
    }
}

/// `(method, documentId, oldValue, newValue)` of a `documentChanged` event, `value` as oldValue
/// for `remove` and `evict`.
fn summary(e: &Value) -> (String, Value, Value, Value) {
    assert_eq!(e["type"], "documentChanged", "{e}");
    let c = &e["change"];
    let method = c["method"].as_str().expect("method").to_owned();
    match method.as_str() {
        "remove" | "evict" => {
            assert!(
                c.get("oldValue").is_none() && c.get("newValue").is_none(),
                "{e}"
            );
            (
                method,
                e["documentId"].clone(),
                c["value"].clone(),
                Value::Null,
            )
        }
        _ => (
            method,
            e["documentId"].clone(),
            c["oldValue"].clone(),
            c["newValue"].clone(),
        ),
    }
}

#[tokio::test]
async fn every_write_path_gives_its_event_and_nothing_rolled_back_does() {
    let app = app().await;
    let token = admin(&app).await;
    let mut events = stream(&app, &token, "since=0", false).await;

    // HTTP DQL.
    let t1 = dql(
        &app,
        &token,
        "INSERT INTO cars DOCUMENTS ({'_id': 'a', 'color': 'red'})",
        json!({}),
    )
    .await;
    dql(
        &app,
        &token,
        "UPDATE cars SET color = 'blue' WHERE _id = 'a'",
        json!({}),
    )
    .await;
    // The same value again: no event.
    dql(
        &app,
        &token,
        "UPDATE cars SET color = 'blue' WHERE _id = 'a'",
        json!({}),
    )
    .await;
    dql(
        &app,
        &token,
        "INSERT INTO cars DOCUMENTS ({'_id': 'a', 'color': 'green'}) ON ID CONFLICT DO UPDATE",
        json!({}),
    )
    .await;
    dql(
        &app,
        &token,
        "INSERT INTO cars DOCUMENTS ({'_id': 'b', 'n': 1})",
        json!({}),
    )
    .await;
    // Rolled back: the second document conflicts, so the first is not written either.
    let (status, body) = post(
        &app,
        &token,
        "/api/v4/store/execute",
        json!({"statement": "INSERT INTO cars DOCUMENTS ({'_id': 'ghost'}), ({'_id': 'b'})"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    dql(&app, &token, "DELETE FROM cars WHERE _id = 'b'", json!({})).await;
    dql(&app, &token, "EVICT FROM cars WHERE _id = 'a'", json!({})).await;

    // The legacy write route. One batch writes a document once: one event, its final value.
    let (status, body) = post(
        &app,
        &token,
        "/api/v4/store/write",
        json!({"commands": [
            {"method": "upsert", "collection": "people", "id": "c", "value": {"name": "Cy"}},
            {"method": "update", "collection": "people", "query": "_id == 'c'",
             "commands": [{"method": "set", "path": "age", "value": 3}]},
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(
        &app,
        &token,
        "/api/v4/store/write",
        json!({"commands": [{"method": "remove", "collection": "people", "query": "_id == 'c'"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // A push from a small peer.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = smallpeer::Store::open_dir(dir.path()).expect("open store");
    let store = Arc::new(Mutex::new(store));
    let config = smallpeer::sync::SyncConfig::new(format!("ws://{}", app.app.local_addr()), &token)
        .subscribe("SELECT * FROM cars", Value::Null)
        .expect("subscription");
    let sync = smallpeer::sync::SyncClient::start(store.clone(), config).expect("start sync");
    tokio::time::timeout(WAIT, sync.wait_until_synced())
        .await
        .expect("synced in time")
        .expect("synced");
    store
        .lock()
        .expect("store")
        .execute(
            "INSERT INTO cars DOCUMENTS ({'_id': 'p', 'from': 'peer'})",
            &Default::default(),
        )
        .expect("peer insert");
    tokio::time::timeout(WAIT, sync.wait_until_pushed())
        .await
        .expect("pushed in time")
        .expect("pushed");
    sync.stop().await;

    // Nothing else came in between: the next event is the next write's.
    dql(
        &app,
        &token,
        "INSERT INTO cars DOCUMENTS ({'_id': 'last'})",
        json!({}),
    )
    .await;
    let got: Vec<_> = events.take(10).await.into_iter().map(|g| g.data).collect();
    assert_eq!(got[9]["documentId"], "last");
    let s: Vec<_> = got[..9].iter().map(summary).collect();
    assert_eq!(
        s,
        vec![
            (
                "upsert".into(),
                json!("a"),
                Value::Null,
                json!({"_id": "a", "color": "red"})
            ),
            (
                "update".into(),
                json!("a"),
                json!({"_id": "a", "color": "red"}),
                json!({"_id": "a", "color": "blue"})
            ),
            (
                "update".into(),
                json!("a"),
                json!({"_id": "a", "color": "blue"}),
                json!({"_id": "a", "color": "green"})
            ),
            (
                "upsert".into(),
                json!("b"),
                Value::Null,
                json!({"_id": "b", "n": 1})
            ),
            (
                "remove".into(),
                json!("b"),
                json!({"_id": "b", "n": 1}),
                Value::Null
            ),
            (
                "evict".into(),
                json!("a"),
                json!({"_id": "a", "color": "green"}),
                Value::Null
            ),
            (
                "upsert".into(),
                json!("c"),
                Value::Null,
                json!({"_id": "c", "name": "Cy", "age": 3})
            ),
            (
                "remove".into(),
                json!("c"),
                json!({"_id": "c", "name": "Cy", "age": 3}),
                Value::Null
            ),
            (
                "upsert".into(),
                json!("p"),
                Value::Null,
                json!({"_id": "p", "from": "peer"})
            ),
        ]
    );
    // Shape, ids and positions.
    assert_eq!(got[0]["txnId"], t1);
    assert_eq!(got[0]["collection"], "cars");
    assert_eq!(got[6]["collection"], "people");
    let seqs: Vec<i64> = got
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    for e in &got {
        let id = e["id"].as_str().expect("id");
        assert!(id.ends_with(&format!(":{}", e["seq"])), "{e}");
    }
    assert!(
        !events.raw.contains("ghost"),
        "a rolled-back write gave an event"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_key_never_sees_documents_outside_its_read_permission() {
    let app = app().await;
    let token = admin(&app).await;
    let ann = key(
        &app,
        json!({"read": {"queriesByCollection": {"cars": ["owner == 'ann'"]}},
               "write": {"everything": true}}),
    )
    .await;
    let mut events = stream(&app, &ann, "", true).await;
    let w = |s: &'static str| {
        let (app, token) = (&app, &token);
        async move { dql(app, token, s, json!({})).await }
    };
    w("INSERT INTO cars DOCUMENTS ({'_id': 'bobs-secret', 'owner': 'bob', 'pin': 'pin-one'})")
        .await;
    w("INSERT INTO cars DOCUMENTS ({'_id': 'x1', 'owner': 'ann', 'n': 1})").await;
    w("UPDATE cars SET pin = 'pin-two' WHERE _id = 'bobs-secret'").await;
    w("INSERT INTO boats DOCUMENTS ({'_id': 'hidden-boat', 'owner': 'ann'})").await;
    // Bob gives x2 to ann: it appears, without bob's old value.
    w("INSERT INTO cars DOCUMENTS ({'_id': 'x2', 'owner': 'bob', 'code': 'bobs-code'})").await;
    w("UPDATE cars SET owner = 'ann', code = 'shared' WHERE _id = 'x2'").await;
    // Ann gives x1 to bob: it goes, without bob's new value.
    w("UPDATE cars SET owner = 'bob', n = 'given-to-bob' WHERE _id = 'x1'").await;
    w("DELETE FROM cars WHERE _id = 'bobs-secret'").await;
    w("INSERT INTO cars DOCUMENTS ({'_id': 'end', 'owner': 'ann'})").await;

    let got = events.take(4).await;
    let s: Vec<_> = got.iter().map(|g| summary(&g.data)).collect();
    assert_eq!(
        s,
        vec![
            (
                "upsert".into(),
                json!("x1"),
                Value::Null,
                json!({"_id": "x1", "owner": "ann", "n": 1})
            ),
            (
                "upsert".into(),
                json!("x2"),
                Value::Null,
                json!({"_id": "x2", "owner": "ann", "code": "shared"})
            ),
            (
                "remove".into(),
                json!("x1"),
                json!({"_id": "x1", "owner": "ann", "n": 1}),
                Value::Null
            ),
            (
                "upsert".into(),
                json!("end"),
                Value::Null,
                json!({"_id": "end", "owner": "ann"})
            ),
        ]
    );
    for g in &got {
        assert_eq!(g.event.as_deref(), Some("documentChanged"));
        assert_eq!(g.id.as_deref(), Some(g.data["seq"].to_string().as_str()));
    }
    // Text that only the documents outside ann's scope hold (not digits: timestamps have
    // those).
    for secret in [
        "bobs-secret",
        "pin-one",
        "pin-two",
        "bobs-code",
        "hidden-boat",
        "given-to-bob",
    ] {
        assert!(
            !events.raw.contains(secret),
            "{secret} leaked: {}",
            events.raw
        );
    }
    // A collection the key may not read at all is refused.
    let r = open(&app, &ann, "collection=boats", false, None)
        .await
        .err()
        .expect("refused");
    assert_eq!(r.status().as_u16(), 403);
    app.shutdown().await;
}

/// Writes `n` documents `<prefix>0..n` of `cars`, one transaction each.
async fn write_cars(app: &TestApp, token: &str, prefix: &str, n: usize) {
    for i in 0..n {
        dql(
            app,
            token,
            "INSERT INTO cars DOCUMENTS (:d)",
            json!({"d": {"_id": format!("{prefix}{i}"), "i": i}}),
        )
        .await;
    }
}

fn ids(got: &[Got]) -> Vec<String> {
    got.iter()
        .map(|g| g.data["documentId"].as_str().expect("string id").to_owned())
        .collect()
}

#[tokio::test]
async fn a_stream_resumes_after_a_reconnect_with_no_gap_and_no_duplicate() {
    let app = app().await;
    let token = admin(&app).await;
    write_cars(&app, &token, "a", 3).await;

    // SSE: read two events, disconnect, more writes, reconnect with Last-Event-ID (which wins
    // over the URL's since, as an EventSource sends both).
    let mut sse = stream(&app, &token, "since=0", true).await;
    let first = sse.take(2).await;
    assert_eq!(ids(&first), ["a0", "a1"]);
    let last_id = first[1].id.clone().expect("an SSE id");
    drop(sse);
    write_cars(&app, &token, "b", 2).await;
    let Ok(mut sse) = open(&app, &token, "since=0", true, Some(&last_id)).await else {
        panic!("not resumed");
    };
    let later = sse.take(3).await;
    assert_eq!(ids(&later), ["a2", "b0", "b1"]);
    // Live after catching up.
    write_cars(&app, &token, "c", 1).await;
    assert_eq!(ids(&sse.take(1).await), ["c0"]);
    drop(sse);

    // NDJSON: resume with since = the last seq processed.
    let mut nd = stream(&app, &token, "since=0", false).await;
    let all = nd.take(6).await;
    assert_eq!(ids(&all), ["a0", "a1", "a2", "b0", "b1", "c0"]);
    let seq = all[3].data["seq"].as_i64().expect("seq");
    drop(nd);
    let mut nd = stream(&app, &token, &format!("since={seq}"), false).await;
    write_cars(&app, &token, "d", 1).await;
    assert_eq!(ids(&nd.take(3).await), ["b1", "c0", "d0"]);
    // The same event has the same id on every stream.
    let mut again = stream(&app, &token, &format!("since={}", seq - 1), false).await;
    assert_eq!(again.next().await.data, all[3].data);
    app.shutdown().await;
}

#[tokio::test]
async fn a_position_past_the_retention_gets_410_and_a_stream_left_behind_gets_requery_required() {
    let app = app().await;
    let token = admin(&app).await;
    // Large documents, so that the server cannot hand a whole page of events to the socket:
    // a stream that is not read stays behind on its first page.
    let big = "x".repeat(32 * 1024);
    for batch in 0..6 {
        let docs: Vec<Value> = (0..100)
            .map(|i| json!({"_id": format!("d{batch}-{i}"), "big": big}))
            .collect();
        let args: serde_json::Map<String, Value> = docs
            .iter()
            .enumerate()
            .map(|(i, d)| (format!("d{i}"), d.clone()))
            .collect();
        let list = (0..100)
            .map(|i| format!("(:d{i})"))
            .collect::<Vec<_>>()
            .join(", ");
        dql(
            &app,
            &token,
            &format!("INSERT INTO cars DOCUMENTS {list}"),
            Value::Object(args),
        )
        .await;
    }
    let mut behind = stream(&app, &token, "since=0", false).await;
    let first = behind.next().await;
    assert_eq!(first.data["documentId"], "d0-0");

    // Every event is now older than the retention, and pruned.
    let db = app.app.store().clone();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(app.db.url())
        .await
        .expect("connect");
    sqlx::query("UPDATE changes SET committed_at = now() - interval '30 days'")
        .execute(&mut conn)
        .await
        .expect("age the log");
    assert_eq!(
        db.prune_changes(Duration::from_secs(3600))
            .await
            .expect("prune"),
        600
    );

    let r = open(&app, &token, "since=0", false, None)
        .await
        .err()
        .expect("refused");
    assert_eq!(r.status().as_u16(), 410);
    let txn: i64 = r
        .headers()
        .get("x-ditto-txn-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("X-DITTO-TXN-ID");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["code"], "changes/requery-required", "{body}");
    // Re-read at that transaction, then resume after it: nothing is refused or missing.
    let (status, body) = post(
        &app,
        &token,
        "/api/v4/store/execute",
        json!({"statement": "SELECT COUNT(*) AS n FROM cars"}),
    )
    .await;
    assert_eq!(
        (status, body["items"][0]["n"].clone()),
        (200, json!(600)),
        "{body}"
    );
    // A position beyond anything committed is not one of this database's.
    let r = open(&app, &token, &format!("since={}", txn + 1000), false, None)
        .await
        .err()
        .expect("refused");
    assert_eq!(r.status().as_u16(), 410);
    let mut fresh = stream(&app, &token, &format!("since={txn}"), false).await;
    write_cars(&app, &token, "new", 1).await;
    assert_eq!(ids(&fresh.take(1).await), ["new0"]);

    // The stream that was behind gets the rest of its first page, then requeryRequired, and
    // ends.
    let mut rest = Vec::new();
    loop {
        let g = behind.next().await;
        if g.data["type"] == "requeryRequired" {
            assert!(
                g.data["txnID"].as_i64().expect("txnID") >= 600,
                "{}",
                g.data
            );
            assert_eq!(g.data["documents"], json!([]));
            break;
        }
        rest.push(g);
    }
    assert!(rest.len() < 600, "the stream was not behind");
    let end = tokio::time::timeout(WAIT, behind.resp.chunk())
        .await
        .expect("the end in time")
        .expect("read");
    assert!(end.is_none(), "the stream ends after requeryRequired");
    app.shutdown().await;
}

#[tokio::test]
async fn collection_and_filter_are_honoured_and_bad_ones_refused() {
    let app = app().await;
    let token = admin(&app).await;
    let mut events = stream(&app, &token, "collection=boats&filter=n%20%3E%201", false).await;
    let w = |s: &'static str| {
        let (app, token) = (&app, &token);
        async move { dql(app, token, s, json!({})).await }
    };
    w("INSERT INTO cars DOCUMENTS ({'_id': 'c', 'n': 5})").await;
    w("INSERT INTO boats DOCUMENTS ({'_id': 'small', 'n': 1})").await;
    w("INSERT INTO boats DOCUMENTS ({'_id': 'big', 'n': 2})").await;
    w("UPDATE boats SET n = 3 WHERE _id = 'big'").await;
    // Leaves the filter: it goes.
    w("UPDATE boats SET n = 0 WHERE _id = 'big'").await;
    w("INSERT INTO boats DOCUMENTS ({'_id': 'end', 'n': 9})").await;
    let s: Vec<_> = events
        .take(4)
        .await
        .iter()
        .map(|g| summary(&g.data))
        .collect();
    assert_eq!(
        s,
        vec![
            (
                "upsert".into(),
                json!("big"),
                Value::Null,
                json!({"_id": "big", "n": 2})
            ),
            (
                "update".into(),
                json!("big"),
                json!({"_id": "big", "n": 2}),
                json!({"_id": "big", "n": 3})
            ),
            (
                "remove".into(),
                json!("big"),
                json!({"_id": "big", "n": 3}),
                Value::Null
            ),
            (
                "upsert".into(),
                json!("end"),
                Value::Null,
                json!({"_id": "end", "n": 9})
            ),
        ]
    );

    for (query, code) in [
        ("filter=n%20%3E", "changes/invalid-filter"),
        ("collection=", "changes/invalid-collection"),
        ("since=soon", "changes/invalid-parameter"),
        ("since=-1", "changes/invalid-parameter"),
        ("colection=cars", "changes/invalid-parameter"),
    ] {
        let r = open(&app, &token, query, false, None)
            .await
            .err()
            .expect(query);
        assert_eq!(r.status().as_u16(), 400, "{query}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["code"], code, "{query}: {body}");
    }
    let r = open(&app, &token, "", true, Some("later"))
        .await
        .err()
        .expect("bad id");
    assert_eq!(r.status().as_u16(), 400);
    let r = reqwest::Client::new()
        .get(format!("{}/api/v4/changes", app.app.url()))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 401);
    app.shutdown().await;
}

#[tokio::test]
async fn open_streams_are_limited_per_key() {
    let app = app().await;
    let token = admin(&app).await;
    let mut open_ones = Vec::new();
    for _ in 0..bigpeer::http::changes::MAX_STREAMS_PER_KEY {
        open_ones.push(stream(&app, &token, "", false).await);
    }
    let r = open(&app, &token, "", false, None)
        .await
        .err()
        .expect("refused");
    assert_eq!(r.status().as_u16(), 429);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["code"], "changes/too-many-streams");
    // A closed stream gives its place back once the server notices, at its next write (an
    // event here, a keep-alive at the latest).
    drop(open_ones.pop());
    let deadline = tokio::time::Instant::now() + WAIT;
    for i in 0.. {
        write_cars(&app, &token, &format!("w{i}-"), 1).await;
        match open(&app, &token, "", false, None).await {
            Ok(_) => break,
            Err(r) => assert_eq!(r.status().as_u16(), 429),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place was not given back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_revoked_key_gets_nothing_more() {
    const ADMIN: &str = "admin-secret-0123456789abcdef";
    let app = TestApp::spawn_with(TestDb::create().await, |c| {
        c.admin_key = Some(bigpeer::config::AdminKey::new(ADMIN));
    })
    .await;
    let token = admin(&app).await;
    let reader = KeyStore::new(app.app.store().clone())
        .create(NewKey {
            name: "reader".into(),
            permissions: Permissions::all(),
            ..NewKey::default()
        })
        .await
        .expect("create key");
    let mut events = stream(&app, &reader.secret, "", false).await;
    write_cars(&app, &token, "before", 1).await;
    assert_eq!(ids(&events.take(1).await), ["before0"]);

    let r = reqwest::Client::new()
        .delete(format!(
            "{}/api/v4/admin/keys/{}",
            app.app.url(),
            reader.key.id
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status().as_u16(), 204);
    write_cars(&app, &token, "after", 1).await;
    // The stream ends without the change committed after the revocation.
    loop {
        let chunk = tokio::time::timeout(WAIT, events.resp.chunk())
            .await
            .expect("the end in time")
            .expect("read");
        match chunk {
            Some(c) => events.raw.push_str(&String::from_utf8_lossy(&c)),
            None => break,
        }
    }
    assert!(!events.raw.contains("after0"), "{}", events.raw);
    app.shutdown().await;
}

#[tokio::test]
async fn a_change_made_by_another_process_on_the_database_is_streamed() {
    let app = app().await;
    let other = bigpeer::spawn_app(integration_tests::test_config(&app.db))
        .await
        .expect("a second server on the same database");
    let token = admin(&app).await;
    let mut events = stream(&app, &token, "", true).await;
    let (status, body) = {
        let r = reqwest::Client::new()
            .post(format!("{}/api/v4/store/execute", other.url()))
            .bearer_auth(&token)
            .json(&json!({"statement": "INSERT INTO cars DOCUMENTS ({'_id': 'elsewhere'})"}))
            .send()
            .await
            .expect("request");
        (r.status().as_u16(), r.json::<Value>().await.expect("json"))
    };
    assert_eq!(status, 200, "{body}");
    let got = events.next().await;
    assert_eq!(got.data["documentId"], "elsewhere");
    assert_eq!(got.data["txnId"], body["transactionId"]);
    other.shutdown().await.expect("shutdown");
    app.shutdown().await;
}
