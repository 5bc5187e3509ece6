//! The legacy RPC endpoints: `/store/find`, `/store/findbyid`, `/store/count`, `/store/write` with the legacy
//! query language.

use integration_tests::{TestApp, TestDb};
use serde_json::{json, Value};

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{}{path}", app.app.local_addr()))
        .json(&body)
        .send()
        .await
        .expect("request");
    (r.status().as_u16(), r.json().await.expect("json"))
}

#[tokio::test]
async fn find_findbyid_and_count_with_legacy_queries() {
    let app = TestApp::spawn_with(TestDb::create().await, |c| c.playground = true).await;
    let (status, _) = post(
        &app,
        "/api/v4/store/execute",
        json!({"statement": "INSERT INTO people DOCUMENTS (:a), (:b), (:c)",
               "args": {"a": {"_id": "a", "name": "John", "age": 30, "tags": ["x"]},
                        "b": {"_id": "b", "name": "Jane", "age": 25, "tags": ["y"]},
                        "c": {"_id": "c", "name": "Joe", "age": 40, "owner": null}}}),
    )
    .await;
    assert_eq!(status, 200);

    let (status, body) = post(
        &app,
        "/api/v4/store/find",
        json!({"collection": "people", "query": "age >= $args.min && starts_with(name, 'J')", "args": {"min": 26},
               "sort": [{"property": "age", "direction": "desc"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["documents"],
        json!([{"id": "c", "fields": {"name": "Joe", "age": 40, "owner": null}},
               {"id": "a", "fields": {"name": "John", "age": 30, "tags": ["x"]}}])
    );
    assert!(body["txnId"].as_i64().expect("txnId") > 0);

    let (_, body) = post(
        &app,
        "/api/v4/store/find",
        json!({"collection": "people", "query": "contains(tags, 'y')"}),
    )
    .await;
    assert_eq!(body["documents"][0]["id"], "b");
    let (_, body) = post(
        &app,
        "/api/v4/store/find",
        json!({"collection": "people", "query": "true", "limit": 1, "offset": 1}),
    )
    .await;
    assert_eq!(
        body["documents"],
        json!([{"id": "b", "fields": {"name": "Jane", "age": 25, "tags": ["y"]}}])
    );

    let (status, body) = post(
        &app,
        "/api/v4/store/findbyid",
        json!({"collection": "people", "id": "a"}),
    )
    .await;
    assert_eq!(
        (status, body["fields"]["name"].clone()),
        (200, json!("John"))
    );
    let (status, _) = post(
        &app,
        "/api/v4/store/findbyid",
        json!({"collection": "people", "id": "zz"}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = post(
        &app,
        "/api/v4/store/findbyid",
        json!({"collection": "people", "id": 1.5}),
    )
    .await;
    assert_eq!(status, 400, "float ids are invalid");

    let (status, body) = post(
        &app,
        "/api/v4/store/count",
        json!({"collection": "people", "query": "owner == null"}),
    )
    .await;
    assert_eq!((status, body["count"].clone()), (200, json!(1)), "{body}");

    // Bad input: precise errors.
    let (status, body) = post(
        &app,
        "/api/v4/store/find",
        json!({"collection": "people", "query": "regex(name, 'J.*')"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!("query/unsupported"))
    );
    let (status, body) = post(
        &app,
        "/api/v4/store/find",
        json!({"collection": "people", "query": "age == "}),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!("query/invalid")),
        "{body}"
    );
    let (status, _) = post(
        &app,
        "/api/v4/store/find",
        json!({"collection": "people", "query": "true", "serializedAs": "latestValuesAndTypes"}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = post(&app, "/api/v4/store/count", json!({"collection": "people"})).await;
    assert_eq!(status, 400, "a missing query");
    app.shutdown().await;
}

async fn post_with(app: &TestApp, path: &str, auth: Option<&str>, body: Value) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .post(format!("http://{}{path}", app.app.local_addr()))
        .json(&body);
    if let Some(key) = auth {
        r = r.bearer_auth(key);
    }
    let r = r.send().await.expect("request");
    (r.status().as_u16(), r.json().await.expect("json"))
}

async fn select(app: &TestApp, statement: &str) -> Value {
    let (status, body) = post(
        app,
        "/api/v4/store/execute",
        json!({ "statement": statement }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["items"].clone()
}

#[tokio::test]
async fn write_applies_upsert_update_and_remove_in_one_transaction() {
    let app = TestApp::spawn_with(TestDb::create().await, |c| c.playground = true).await;
    let (status, body) = post(
        &app,
        "/api/v4/store/write",
        json!({"commands": [
            {"method": "upsert", "collection": "people", "id": "a", "value": {"name": "John", "age": 30}},
            {"method": "upsert", "collection": "people", "value": {"_id": "b", "name": "Jane", "age": 25, "visits": 2},
             "valueTypeOverrides": {"visits": "counter"}},
            {"method": "upsert", "collection": "people", "value": {"name": "Nobody"}},
            // Sees the upserts of the same batch.
            {"method": "update", "collection": "people", "query": "age >= $args.min", "args": {"min": 20},
             "commands": [{"method": "set", "path": "adult", "value": true},
                          {"method": "increment", "path": "visits", "value": 3}]},
            {"method": "remove", "collection": "people", "query": "name == 'Nobody'"}
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let txn = body["transactionId"].as_i64().expect("transactionId");
    assert!(txn > 0);
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), 5);
    assert_eq!(
        results[0],
        json!({"method": "upsert", "transactionId": txn, "id": "a"})
    );
    assert_eq!(results[1]["id"], "b");
    let generated = results[2]["id"].as_str().expect("a generated id");
    assert_eq!(generated.len(), 24);
    assert_eq!(
        results[3],
        json!({"method": "update", "transactionId": txn, "updated": 2, "error": 0,
               "internalError": 0, "permissionDenied": 0})
    );
    assert_eq!(
        results[4],
        json!({"method": "remove", "transactionId": txn, "deleted": 1,
               "internalError": 0, "permissionDenied": 0})
    );
    assert_eq!(
        select(&app, "SELECT * FROM people ORDER BY _id").await,
        json!([{"_id": "a", "name": "John", "age": 30, "adult": true, "visits": 3.0},
               {"_id": "b", "name": "Jane", "age": 25, "adult": true, "visits": 5.0}])
    );

    // Update methods: setAttachment, replaceWithCounter (a counter stays a counter), nested and
    // bracket paths.
    let token = json!({"id": "0123abcd", "len": 3, "metadata": {"name": "a.txt"}});
    let (status, body) = post(
        &app,
        "/api/v4/store/write",
        json!({"commands": [
            {"method": "upsert", "collection": "people", "id": "c", "value": {"score": 7, "work": {"street-line": "x"}}},
            {"method": "update", "collection": "people", "query": "_id == 'c'", "commands": [
                {"method": "replaceWithCounter", "path": "score"},
                {"method": "setAttachment", "path": "pic", "value": token},
                {"method": "set", "path": "work['street-line']", "value": "y"}]},
            {"method": "update", "collection": "people", "query": "_id == 'c' || _id == 'b'", "commands": [
                {"method": "replaceWithCounter", "path": "visits", "isDefault": false},
                {"method": "increment", "path": "score", "value": 1.5}]}
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][2]["updated"], 2);
    let c = select(&app, "SELECT * FROM people WHERE _id = 'c'").await;
    assert_eq!(c[0]["score"], json!(8.5), "{c}");
    assert_eq!(c[0]["pic"], token);
    assert_eq!(c[0]["work"], json!({"street-line": "y"}));
    let b = select(&app, "SELECT visits FROM people WHERE _id = 'b'").await;
    assert_eq!(b, json!([{"visits": 5.0}]), "an existing counter is kept");

    // The transaction id reads the writes back.
    let r = reqwest::Client::new()
        .post(format!("http://{}/api/v4/store/write", app.app.local_addr()))
        .json(&json!({"commands": [{"method": "remove", "collection": "people", "query": "_id == 'c'"}]}))
        .send()
        .await
        .expect("request");
    let header: i64 = r.headers()["x-ditto-txn-id"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("integer");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["transactionId"], header);
    assert_eq!(body["results"][0]["deleted"], 1);
    app.shutdown().await;
}

#[tokio::test]
async fn a_failing_write_command_leaves_the_whole_batch_unwritten() {
    let app = TestApp::spawn_with(TestDb::create().await, |c| c.playground = true).await;
    let first = json!({"method": "upsert", "collection": "things", "id": "x", "value": {"n": 1}});
    // An invalid query (found while planning), an evaluation error (found while writing, after
    // the first command ran in the job), a permission-free failure of each kind.
    for (second, code) in [
        (
            json!({"method": "update", "collection": "things", "query": "n == ", "commands": [{"method": "set", "path": "n", "value": 2}]}),
            "query/invalid",
        ),
        (
            json!({"method": "update", "collection": "things", "query": "_id == 'x'", "commands": [{"method": "increment", "path": "n", "value": "lots"}]}),
            "query/evaluation",
        ),
        (
            json!({"method": "update", "collection": "things", "query": "true", "commands": [{"method": "set", "path": "_id", "value": "y"}]}),
            "query/invalid",
        ),
        (
            json!({"method": "remove", "collection": "things", "query": "regex(n, 'a')"}),
            "query/unsupported",
        ),
        (
            json!({"method": "update", "collection": "things", "query": "true", "commands": [{"method": "replaceWithCounter", "path": "s"}]}),
            "query/evaluation",
        ),
    ] {
        if code == "query/evaluation" && second["commands"][0]["path"] == "s" {
            // A string cannot become a counter: put one there first (committed).
            let (status, body) = post(
                &app,
                "/api/v4/store/write",
                json!({"commands": [{"method": "upsert", "collection": "things", "id": "s", "value": {"s": "text"}}]}),
            )
            .await;
            assert_eq!(status, 200, "{body}");
        }
        let (status, body) = post(
            &app,
            "/api/v4/store/write",
            json!({"commands": [first.clone(), second.clone()]}),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some(code)),
            "{second}: {body}"
        );
        assert_eq!(body["commandIndex"], 1, "{body}");
        assert!(body["message"]
            .as_str()
            .expect("message")
            .starts_with("command 1: "));
        assert_eq!(
            select(&app, "SELECT * FROM things WHERE _id = 'x'").await,
            json!([]),
            "the first command of {second} was written"
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn write_permissions_refuse_the_whole_batch() {
    const ADMIN: &str = "admin-secret-0123456789abcdef";
    let app = TestApp::spawn_with(TestDb::create().await, |c| {
        c.admin_key = Some(bigpeer::config::AdminKey::new(ADMIN));
    })
    .await;
    let (status, key) = post_with(
        &app,
        "/api/v4/admin/keys",
        Some(ADMIN),
        json!({"name": "shop-a", "permissions": {
            "read": {"everything": true},
            "write": {"queriesByCollection": {"books": ["_id.shop == 'a'"]}}}}),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    let key = key["key"].as_str().expect("secret").to_owned();
    let mine = json!({"method": "upsert", "collection": "books", "id": {"shop": "a", "n": 1}, "value": {"t": "ok"}});
    for (other, index) in [
        // A document outside the permission: found while writing.
        (
            json!({"method": "upsert", "collection": "books", "id": {"shop": "b", "n": 1}, "value": {"t": "no"}}),
            1,
        ),
        // A collection the key may not write at all: found while planning.
        (
            json!({"method": "remove", "collection": "films", "query": "true"}),
            1,
        ),
    ] {
        let (status, body) = post_with(
            &app,
            "/api/v4/store/write",
            Some(&key),
            json!({"commands": [mine.clone(), other.clone()]}),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str(), body["commandIndex"].as_u64()),
            (403, Some("auth/forbidden"), Some(index)),
            "{other}: {body}"
        );
        let (_, found) = post_with(
            &app,
            "/api/v4/store/execute",
            Some(&key),
            json!({"statement": "SELECT * FROM books"}),
        )
        .await;
        assert_eq!(found["items"], json!([]), "{other}: nothing is written");
    }
    // Alone, the permitted command goes through.
    let (status, body) = post_with(
        &app,
        "/api/v4/store/write",
        Some(&key),
        json!({"commands": [mine]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = post_with(&app, "/api/v4/store/write", None, json!({"commands": []})).await;
    assert_eq!(status, 401);
    app.shutdown().await;
}

#[tokio::test]
async fn malformed_write_bodies_get_precise_errors() {
    let app = TestApp::spawn_with(TestDb::create().await, |c| c.playground = true).await;
    let ok = json!({"method": "upsert", "collection": "c", "id": "k", "value": {"a": 1}});
    for (body, code, index, needle) in [
        (json!({}), "request/invalid-json", None, "commands"),
        (
            json!({"commands": {}}),
            "request/invalid-json",
            None,
            "sequence",
        ),
        (
            json!({"commands": [], "extra": 1}),
            "request/invalid-json",
            None,
            "extra",
        ),
        (
            json!({"commands": []}),
            "request/invalid-command",
            None,
            "empty",
        ),
        (
            json!({"commands": [ok.clone(), {"collection": "c"}]}),
            "request/invalid-command",
            Some(1),
            "method",
        ),
        (
            json!({"commands": [{"method": "insert", "collection": "c"}]}),
            "request/invalid-command",
            Some(0),
            "insert",
        ),
        (
            json!({"commands": [ok.clone(), ok.clone(), {"method": "upsert", "collection": "c"}]}),
            "request/invalid-command",
            Some(2),
            "value",
        ),
        (
            json!({"commands": [{"method": "upsert", "collection": "c", "value": {}, "colour": 1}]}),
            "request/invalid-command",
            Some(0),
            "colour",
        ),
        (
            json!({"commands": [{"method": "upsert", "collection": "c", "value": {}, "valueTypeOverrides": {"a": "blob"}}]}),
            "request/invalid-command",
            Some(0),
            "blob",
        ),
        (
            json!({"commands": [{"method": "update", "collection": "c", "query": "true", "commands": [{"method": "push", "path": "a", "value": 1}]}]}),
            "request/invalid-command",
            Some(0),
            "push",
        ),
        (
            json!({"commands": [{"method": "remove", "collection": "c", "query": 5}]}),
            "request/invalid-command",
            Some(0),
            "string",
        ),
        (
            json!({"commands": [{"method": "upsert", "collection": "c", "value": [1]}]}),
            "query/invalid",
            Some(0),
            "object",
        ),
        (
            json!({"commands": [{"method": "upsert", "collection": "c", "id": 1.5, "value": {}}]}),
            "query/invalid",
            Some(0),
            "id",
        ),
        (
            json!({"commands": [{"method": "upsert", "collection": "c", "id": "a", "value": {"_id": "b"}}]}),
            "query/invalid",
            Some(0),
            "differ",
        ),
        (
            json!({"commands": [{"method": "upsert", "collection": "", "value": {}}]}),
            "query/invalid",
            Some(0),
            "collection",
        ),
        (
            json!({"commands": [{"method": "update", "collection": "c", "query": "true", "commands": []}]}),
            "query/invalid",
            Some(0),
            "at least one",
        ),
        (
            json!({"commands": [{"method": "update", "collection": "c", "query": "true", "commands": [{"method": "set", "path": "a[0]", "value": 1}]}]}),
            "query/unsupported",
            Some(0),
            "index",
        ),
        (
            json!({"commands": [{"method": "update", "collection": "c", "query": "a == $args.missing", "commands": [{"method": "set", "path": "a", "value": 1}]}]}),
            "query/invalid",
            Some(0),
            "missing",
        ),
    ] {
        let (status, resp) = post(&app, "/api/v4/store/write", body.clone()).await;
        let got_code = resp["code"]
            .as_str()
            .or(resp["error"]["code"].as_str())
            .unwrap_or_default()
            .to_owned();
        assert_eq!((status, got_code.as_str()), (400, code), "{body}: {resp}");
        assert_eq!(
            resp["commandIndex"].as_u64(),
            index.map(|i: u64| i),
            "{body}: {resp}"
        );
        let message = resp["message"]
            .as_str()
            .or(resp["error"]["description"].as_str())
            .unwrap_or_default();
        assert!(message.contains(needle), "{body}: {message}");
    }
    assert_eq!(select(&app, "SELECT * FROM c").await, json!([]));
    app.shutdown().await;
}
