//! Documents outside a key's read permission do not exist for that key: no answer (status, error,
//! ids, counts) of any statement, legacy command or sync push differs with their content.
//!
//! The main check runs the same requests with a limited key while another user's document is
//! in several states (present with one content, with another, absent), and compares the answers
//! byte for byte (less the transaction id).

use bigpeer::auth::Permissions;
use bigpeer_schema::wire::{Msg, PushResult};
use bigpeer_schema::{Clock, Doc, ObjectMode, Op, SiteId, Value, VersionVector};
use integration_tests::TestApp;
use serde_json::json;

use crate::sync::{change, execute, key, local_doc, Peer};

/// A request as the limited key sends it.
enum Req {
    /// `POST /api/v4/store/execute {statement}`.
    Dql(&'static str),
    /// `POST /api/v4/store/write {commands}`.
    Legacy(serde_json::Value),
    /// A legacy read route with its body.
    LegacyRead(&'static str, serde_json::Value),
}

async fn send(app: &TestApp, token: &str, req: &Req) -> (u16, serde_json::Value) {
    let (path, body) = match req {
        Req::Dql(s) => ("/api/v4/store/execute", json!({ "statement": s })),
        Req::Legacy(commands) => ("/api/v4/store/write", json!({ "commands": commands })),
        Req::LegacyRead(path, body) => (*path, body.clone()),
    };
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", app.app.url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let mut body: serde_json::Value = resp.json().await.expect("json");
    strip_txn(&mut body);
    (status, body)
}

/// Transaction ids differ from run to run; nothing else may.
fn strip_txn(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(o) => {
            o.remove("transactionId");
            o.remove("txnId");
            o.values_mut().for_each(strip_txn);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_txn),
        _ => {}
    }
}

async fn limited_key(app: &TestApp, perms: serde_json::Value) -> String {
    let perms: Permissions = serde_json::from_value(perms).expect("permissions");
    key(app, perms).await
}

/// A key that reads only alice's documents and writes everywhere.
async fn alice_reader_writing_everywhere(app: &TestApp) -> String {
    limited_key(
        app,
        json!({"read": {"queriesByCollection": {"cars": ["owner == 'alice'"], "diaries": ["owner == 'alice'"]}},
               "write": {"everything": true}}),
    )
    .await
}

/// Alice's documents, readable and writable by the limited key.
async fn seed(app: &TestApp) {
    execute(
        app,
        "INSERT INTO cars DOCUMENTS ({'_id': 'a1', 'owner': 'alice', 'salary': 10, 'color': 'blue'}), ({'_id': 'a2', 'owner': 'alice', 'salary': 20})",
    )
    .await;
}

/// Bob's document in one of the states the limited key must not be able to tell apart.
async fn bob_in_state(app: &TestApp, state: usize) {
    execute(app, "EVICT FROM cars WHERE _id = 'bob'").await;
    execute(app, "EVICT FROM diaries WHERE _id = 'bob'").await;
    let doc = match state {
        0 => Some("{'_id': 'bob', 'owner': 'bob', 'salary': 300000, 'color': 'red', 'hits': 1}"),
        1 => Some("{'_id': 'bob', 'owner': 'bob', 'salary': 'high', 'color': 5, 'tags': [1, 2], 'deep': {'x': {'y': 1}}}"),
        _ => None,
    };
    if let Some(d) = doc {
        execute(app, &format!("INSERT INTO cars DOCUMENTS ({d})")).await;
        // Bob's diary is the only one: the key may read some diaries, none of these.
        execute(app, &format!("INSERT INTO diaries DOCUMENTS ({d})")).await;
    }
}

async fn bob_now(app: &TestApp) -> serde_json::Value {
    execute(app, "SELECT * FROM cars WHERE _id = 'bob'").await["items"].clone()
}

/// The requests whose answers must not depend on bob's document.
fn probes() -> Vec<Req> {
    vec![
        Req::Dql("UPDATE cars SET color = 'x' WHERE salary > 200000"),
        Req::Dql("UPDATE cars SET color = 'x' WHERE owner = 'bob'"),
        Req::Dql("UPDATE cars SET color = 'x' WHERE _id = 'bob'"),
        Req::Dql("UPDATE cars SET n = salary + 1 WHERE color = 'red'"),
        Req::Dql("UPDATE cars SET n = salary * 'x' WHERE salary > 1000"),
        Req::Dql("UPDATE cars APPLY hits PN_INCREMENT BY 1.0 WHERE hits IS NOT MISSING"),
        Req::Dql("UPDATE cars UNSET color WHERE tags IS NOT MISSING"),
        Req::Dql("DELETE FROM cars WHERE salary > 200000"),
        Req::Dql("DELETE FROM cars WHERE deep.x.y = 1"),
        Req::Dql("EVICT FROM cars WHERE color = 5"),
        Req::Dql("SELECT * FROM cars WHERE salary > 200000"),
        Req::Dql("SELECT COUNT(*) AS n, SUM(salary) AS s FROM cars"),
        Req::Dql("SELECT * FROM cars WHERE _id = 'bob'"),
        Req::Dql("SELECT * FROM cars WHERE length(color) > 0 ORDER BY salary"),
        Req::Dql("SELECT owner, COUNT(*) AS n FROM cars GROUP BY owner"),
        Req::Dql("SELECT * FROM cars WHERE salary / 0 > 1 OR abs(color) > 1"),
        Req::Dql("SELECT * FROM cars WHERE deserialize_json(color) = 1"),
        Req::Dql("SELECT * FROM system:collections"),
        Req::Dql("SELECT COUNT(*) AS n FROM diaries"),
        Req::Legacy(json!([
            {"method": "update", "collection": "cars", "query": "salary > 200000",
             "commands": [{"method": "set", "path": "color", "value": "x"}]}
        ])),
        Req::Legacy(json!([
            {"method": "update", "collection": "cars", "query": "owner == 'bob'",
             "commands": [{"method": "increment", "path": "hits", "value": 1}]}
        ])),
        Req::Legacy(json!([
            {"method": "update", "collection": "cars", "query": "_id == 'bob'",
             "commands": [{"method": "replaceWithCounter", "path": "salary"}]}
        ])),
        Req::Legacy(json!([
            {"method": "remove", "collection": "cars", "query": "salary > 200000"}
        ])),
        Req::LegacyRead(
            "/api/v4/store/find",
            json!({"collection": "cars", "query": "salary > 200000"}),
        ),
        Req::LegacyRead(
            "/api/v4/store/count",
            json!({"collection": "cars", "query": "true"}),
        ),
        Req::LegacyRead(
            "/api/v4/store/findbyid",
            json!({"collection": "cars", "id": "bob"}),
        ),
    ]
}

/// Runs every probe with `token` while bob's document is in each state; the answers must be
/// the same in every state, and bob's document must be left as it was.
async fn answers_ignore_bob(app: &TestApp, token: &str) -> Vec<(u16, serde_json::Value)> {
    let mut first: Option<Vec<(u16, serde_json::Value)>> = None;
    for state in 0..3 {
        bob_in_state(app, state).await;
        let before = bob_now(app).await;
        let mut answers = Vec::new();
        for p in probes() {
            answers.push(send(app, token, &p).await);
        }
        assert_eq!(
            bob_now(app).await,
            before,
            "bob's document was changed by a key that cannot read it (state {state})"
        );
        match &first {
            None => first = Some(answers),
            Some(f) => {
                for (i, (a, b)) in f.iter().zip(&answers).enumerate() {
                    assert_eq!(a, b, "probe {i} answers differently in state {state}");
                }
            }
        }
    }
    first.unwrap_or_default()
}

#[tokio::test]
async fn no_answer_depends_on_documents_outside_the_read_permission() {
    let app = TestApp::spawn().await;
    seed(&app).await;
    // Read and write limited alike; read limited with writes everywhere; read limited in the
    // DQL predicate language.
    let keys = [
        json!({"read": {"queriesByCollection": {"cars": ["owner == 'alice'"], "diaries": ["owner == 'alice'"]}},
               "write": {"queriesByCollection": {"cars": ["owner == 'alice'"]}}}),
        json!({"read": {"queriesByCollection": {"cars": ["owner == 'alice'"], "diaries": ["owner == 'alice'"]}},
               "write": {"everything": true}}),
        json!({"read": {"queriesByCollection": {"cars": ["owner = 'alice'"], "diaries": ["owner = 'alice'"]}},
               "write": {"queriesByCollection": {"cars": ["true"]}}, "qlVersion": 1}),
    ];
    for perms in keys {
        let token = limited_key(&app, perms.clone()).await;
        let answers = answers_ignore_bob(&app, &token).await;
        // Not vacuous: the key's own documents answer.
        let select = &answers[10];
        assert_eq!(select.0, 200, "{perms}: {select:?}");
        let count = &answers[11];
        assert_eq!(count.1["items"], json!([{"n": 2, "s": 30}]), "{perms}");
        for (status, body) in &answers {
            assert!(*status < 500, "{perms}: {status} {body}");
            if let Some(ids) = body["mutatedDocumentIds"].as_array() {
                assert!(
                    !ids.contains(&json!("bob")),
                    "{perms}: an id the key cannot read: {body}"
                );
            }
        }
    }
    app.shutdown().await;
}

#[tokio::test]
async fn inserting_a_foreign_id_is_refused_alike_whatever_the_document_holds() {
    let app = TestApp::spawn().await;
    seed(&app).await;
    let token = alice_reader_writing_everywhere(&app).await;
    let inserts = [
        "INSERT INTO cars DOCUMENTS ({'_id': 'bob', 'owner': 'alice'})",
        "INSERT INTO cars DOCUMENTS ({'_id': 'bob', 'owner': 'alice'}) ON ID CONFLICT DO NOTHING",
        "INSERT INTO cars DOCUMENTS ({'_id': 'bob', 'owner': 'alice'}) ON ID CONFLICT DO UPDATE",
        "INSERT INTO cars DOCUMENTS ({'_id': 'bob', 'color': 'x'}) ON ID CONFLICT DO UPDATE_LOCAL_DIFF",
        "INSERT INTO cars DOCUMENTS ({'_id': 'bob', 'owner': 'alice'}) ON ID CONFLICT FAIL",
        "INSERT INTO cars INITIAL DOCUMENTS ({'_id': 'bob', 'owner': 'alice'})",
    ];
    let mut seen: Vec<Vec<(u16, serde_json::Value)>> = Vec::new();
    for state in 0..2 {
        bob_in_state(&app, state).await;
        let before = bob_now(&app).await;
        let mut answers = Vec::new();
        for s in inserts {
            answers.push(send(&app, &token, &Req::Dql(s)).await);
        }
        answers.push(
            send(
                &app,
                &token,
                &Req::Legacy(
                    json!([{"method": "upsert", "collection": "cars", "id": "bob",
                                     "value": {"owner": "alice"}}]),
                ),
            )
            .await,
        );
        assert_eq!(bob_now(&app).await, before, "state {state}");
        seen.push(answers);
    }
    assert_eq!(seen[0], seen[1], "the answers depend on bob's document");
    for (status, body) in &seen[0] {
        assert_eq!(*status, 403, "{body}");
    }
    // A fresh id is the key's to write.
    let (status, body) = send(
        &app,
        &token,
        &Req::Dql("INSERT INTO cars DOCUMENTS ({'_id': 'a3', 'owner': 'alice'})"),
    )
    .await;
    assert_eq!(
        (status, body["mutatedDocumentIds"].clone()),
        (200, json!(["a3"]))
    );
    app.shutdown().await;
}

#[tokio::test]
async fn strict_mode_type_declarations_do_not_bend_read_permissions() {
    let app = TestApp::spawn().await;
    execute(
        &app,
        "INSERT INTO cars DOCUMENTS ({'_id': 'open', 'hidden': false}), ({'_id': 'plain'}), ({'_id': 'secret', 'hidden': true})",
    )
    .await;
    execute(&app, "ALTER SYSTEM SET DQL_STRICT_MODE = true").await;
    let token = limited_key(
        &app,
        json!({"read": {"queriesByCollection": {"cars": ["coalesce(hidden, false) = false"]}},
               "write": {"everything": true}, "qlVersion": 1}),
    )
    .await;
    for statement in [
        "SELECT * FROM COLLECTION cars (hidden MAP)",
        "SELECT * FROM COLLECTION cars (hidden MAP(x REGISTER))",
        "SELECT * FROM COLLECTION cars (hidden COUNTER)",
        "SELECT * FROM COLLECTION cars (hidden ATTACHMENT) WHERE _id = 'secret'",
        "SELECT _id FROM COLLECTION cars (hidden MAP) ORDER BY _id",
    ] {
        let (status, body) = send(&app, &token, &Req::Dql(statement)).await;
        assert_eq!(status, 200, "{statement}: {body}");
        let items = body["items"].to_string();
        assert!(!items.contains("secret"), "{statement}: {items}");
    }
    for statement in [
        "UPDATE COLLECTION cars (hidden MAP) SET seen = true",
        "DELETE FROM COLLECTION cars (hidden MAP) WHERE _id = 'secret'",
        "EVICT FROM COLLECTION cars (hidden COUNTER) WHERE _id = 'secret'",
    ] {
        let (status, body) = send(&app, &token, &Req::Dql(statement)).await;
        assert_eq!(status, 200, "{statement}: {body}");
        assert!(
            !body["mutatedDocumentIds"].to_string().contains("secret"),
            "{statement}: {body}"
        );
    }
    let secret = execute(&app, "SELECT * FROM cars WHERE _id = 'secret'").await;
    assert_eq!(secret["items"], json!([{"_id": "secret", "hidden": true}]));

    // A sync subscription with the same declarations sees the same documents.
    let (mut peer, _) = Peer::open(&app, &token).await;
    peer.subscribe(1, "SELECT * FROM COLLECTION cars (hidden MAP)", None)
        .await;
    let (initial, _) = peer.until_caught_up(1).await;
    let ids: Vec<String> = initial.iter().map(|c| c.id.to_string()).collect();
    assert!(!ids.iter().any(|i| i.contains("secret")), "{ids:?}");
    assert!(ids.iter().any(|i| i.contains("open")), "{ids:?}");
    app.shutdown().await;
}

/// A peer's own write to an existing document (a delta on top of the server's state).
fn edit(base: &Doc, site: SiteId, field: &str) -> bigpeer_schema::Delta {
    let mut d = base.clone();
    d.apply(
        &[Op::Set {
            path: vec![field.into()],
            value: Value::String("x".into()),
            objects: ObjectMode::Map,
        }],
        Clock::resume(site, d.vv.max_hlc()).tick(),
    )
    .expect("apply");
    d.delta(&base.vv)
}

#[tokio::test]
async fn sync_pushes_to_documents_outside_the_read_permission_are_denied_alike() {
    let app = TestApp::spawn().await;
    seed(&app).await;
    // Writes everywhere, reads only alice's documents.
    let token = alice_reader_writing_everywhere(&app).await;
    let site = SiteId(0x5eed);
    let mut seen = Vec::new();
    for state in 0..2 {
        bob_in_state(&app, state).await;
        let before = bob_now(&app).await;
        let (mut p, _) = Peer::open_as(&app, site, &token).await;
        // Full states of new writes, and deltas against nothing, on bob's id.
        let mine = local_doc(0x5eed, r#"{"owner": "alice", "n": 1}"#);
        p.send(&Msg::Push {
            push: 1,
            changes: vec![
                change("cars", "bob", mine.delta(&VersionVector::new())),
                change("cars", "bob", edit(&Doc::new(), site, "color")),
                change("cars", "fresh", mine.delta(&VersionVector::new())),
            ],
        })
        .await;
        let Msg::PushAck { results, .. } = p.recv().await else {
            panic!("expected a push ack")
        };
        assert_eq!(bob_now(&app).await, before, "state {state}");
        seen.push(results);
        execute(&app, "EVICT FROM cars WHERE _id = 'fresh'").await;
    }
    assert_eq!(seen[0], seen[1], "the answers depend on bob's document");
    let forbidden = PushResult::Denied {
        code: "auth/forbidden".into(),
    };
    assert_eq!(
        seen[0],
        vec![forbidden.clone(), forbidden, PushResult::Applied]
    );
    app.shutdown().await;
}
