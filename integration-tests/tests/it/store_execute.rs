//! `POST /api/v4/store/execute` over a real socket: Ditto's request and response shapes, every
//! error status, read-your-writes with `X-DITTO-TXN-ID`.

use integration_tests::{TestApp, TestDb};
use serde_json::{json, Value};

/// A server that grants every permission without a key (auth is tested in `auth.rs`).
async fn playground() -> TestApp {
    TestApp::spawn_with(TestDb::create().await, |c| c.playground = true).await
}

fn url(app: &TestApp, path: &str) -> String {
    format!("http://{}{path}", app.app.local_addr())
}

async fn execute(app: &TestApp, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(url(app, "/api/v4/store/execute"))
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("a JSON body"))
}

#[tokio::test]
async fn insert_then_select_with_dittos_envelope() {
    let app = playground().await;
    let (status, body) = execute(
        &app,
        json!({"statement": "INSERT INTO cars DOCUMENTS (:a), (:b)",
               "args": {"a": {"_id": "123", "color": "blue", "price": 1.0}, "b": {"_id": "456", "color": "red", "n": 18446744073709551615u64}}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let txn = body["transactionId"].as_i64().expect("a transaction id");
    assert!(txn > 0);
    assert_eq!(body["queryType"], "mutation");
    assert_eq!(body["items"], json!([]));
    assert_eq!(body["mutatedDocumentIds"], json!(["123", "456"]));
    assert_eq!(body["error"], json!({}));
    assert_eq!(body["warnings"], json!([]));
    assert_eq!(body["totalWarningsCount"], 0);

    let (status, body) = execute(
        &app,
        json!({"statement": "SELECT * FROM cars WHERE color = :c", "args": {"c": "blue"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["queryType"], "select");
    assert_eq!(
        body["items"],
        json!([{"_id": "123", "color": "blue", "price": 1.0}])
    );
    assert!(body["transactionId"].as_i64().expect("txn") >= txn);

    // Floats stay floats and u64 stays exact on the wire.
    let raw = reqwest::Client::new()
        .post(url(&app, "/api/v4/store/execute"))
        .json(&json!({"statement": "SELECT price, n FROM cars ORDER BY _id"}))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("text");
    assert!(
        raw.contains(r#""items":[{"price":1.0},{"n":18446744073709551615}]"#),
        "{raw}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_a_precise_4xx_and_writes_nothing() {
    let app = playground().await;
    let client = reqwest::Client::new();
    let post_raw = |body: &'static str, ctype: &'static str| {
        client
            .post(url(&app, "/api/v4/store/execute"))
            .header("content-type", ctype)
            .body(body)
            .send()
    };

    // Invalid DQL: 400, query/invalid, with the position.
    let (status, body) = execute(&app, json!({"statement": "SELEC * FROM cars"})).await;
    assert_eq!(status, 400);
    assert_eq!(body["queryType"], "unknown");
    assert_eq!(body["error"]["code"], "query/invalid");
    assert_eq!(body["error"]["line"], 1);
    assert!(
        body["error"]["description"]
            .as_str()
            .expect("text")
            .contains("SELEC"),
        "{body}"
    );

    // A missing parameter.
    let (status, body) = execute(
        &app,
        json!({"statement": "SELECT * FROM cars WHERE a = :nope"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("query/invalid")),
        "{body}"
    );

    // Malformed JSON, wrong types, unknown fields, wrong content type.
    let r = post_raw("{\"statement\": ", "application/json")
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"]["code"],
        "request/invalid-json"
    );
    let r = post_raw("{\"statement\": 5}", "application/json")
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 400);
    let r = post_raw(
        "{\"statement\": \"SELECT * FROM cars\", \"argz\": {}}",
        "application/json",
    )
    .await
    .expect("request");
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.expect("text").contains("argz"));
    let r = post_raw("statement=1", "application/x-www-form-urlencoded")
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 415);

    // A body over the limit: 413.
    let huge = format!(
        r#"{{"statement": "INSERT INTO cars DOCUMENTS (:d)", "args": {{"d": {{"_id": "big", "x": "{}"}}}}}}"#,
        "a".repeat(5 << 20)
    );
    let r = client
        .post(url(&app, "/api/v4/store/execute"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 413);

    // An id conflict in the second document: 400 query/evaluation, and the first is not written.
    execute(
        &app,
        json!({"statement": "INSERT INTO cars DOCUMENTS ({'_id': 'a'})"}),
    )
    .await;
    let (status, body) = execute(
        &app,
        json!({"statement": "INSERT INTO cars DOCUMENTS ({'_id': 'b'}), ({'_id': 'a'})"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("query/evaluation")),
        "{body}"
    );

    let (_, body) = execute(&app, json!({"statement": "SELECT _id FROM cars"})).await;
    assert_eq!(
        body["items"],
        json!([{"_id": "a"}]),
        "nothing but the one valid insert was written"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn txn_header_gives_read_your_writes_or_404() {
    let app = playground().await;
    let client = reqwest::Client::new();
    let (_, body) = execute(
        &app,
        json!({"statement": "INSERT INTO c DOCUMENTS ({'_id': 'x'})"}),
    )
    .await;
    let txn = body["transactionId"].as_i64().expect("txn");
    let with_header = |value: String| {
        client
            .post(url(&app, "/api/v4/store/execute"))
            .header("X-DITTO-TXN-ID", value)
            .json(&json!({"statement": "SELECT * FROM c"}))
            .send()
    };
    let r = with_header(txn.to_string()).await.expect("request");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.json::<Value>().await.expect("json")["items"],
        json!([{"_id": "x"}])
    );

    let r = with_header((txn + 1_000_000).to_string())
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"]["code"],
        "store/txn-not-available"
    );

    let r = with_header("yesterday".to_owned()).await.expect("request");
    assert_eq!(r.status().as_u16(), 400);
    app.shutdown().await;
}

/// Read-your-writes across processes: a request to one server that names a transaction another
/// server (on the same database) has not committed yet waits on the change feed, which wakes on
/// that commit, and then sees the write.
#[tokio::test]
async fn txn_header_waits_for_another_process_commit() {
    let app = playground().await;
    let mut config = integration_tests::test_config(&app.db);
    config.playground = true;
    let other = bigpeer::spawn_app(config).await.expect("a second server");
    let (_, body) = execute(
        &app,
        json!({"statement": "INSERT INTO c DOCUMENTS ({'_id': 'a'})"}),
    )
    .await;
    let next = body["transactionId"].as_i64().expect("txn") + 1;

    let reader = {
        let addr = other.local_addr();
        tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(format!("http://{addr}/api/v4/store/execute"))
                .header("X-DITTO-TXN-ID", next.to_string())
                .json(&json!({"statement": "SELECT * FROM c ORDER BY _id"}))
                .send()
                .await
                .expect("request");
            (r.status().as_u16(), r.json::<Value>().await.expect("json"))
        })
    };
    // The reader is waiting for a transaction nobody has committed yet; now one server commits it.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (status, body) = execute(
        &app,
        json!({"statement": "INSERT INTO c DOCUMENTS ({'_id': 'b'})"}),
    )
    .await;
    assert_eq!(
        (status, body["transactionId"].as_i64()),
        (200, Some(next)),
        "{body}"
    );
    let (status, body) = reader.await.expect("reader");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"], json!([{"_id": "a"}, {"_id": "b"}]));
    other.shutdown().await.expect("shutdown");
    app.shutdown().await;
}

#[tokio::test]
async fn metrics_count_requests_latencies_errors_and_the_pool() {
    let app = playground().await;
    execute(
        &app,
        json!({"statement": "INSERT INTO c DOCUMENTS ({'_id': 'm'})"}),
    )
    .await;
    execute(&app, json!({"statement": "SELEC"})).await;
    // A body that is not JSON: counted by its code too, like every error answer.
    let r = reqwest::Client::new()
        .post(url(&app, "/api/v4/store/execute"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 400);
    let text = reqwest::get(url(&app, "/metrics"))
        .await
        .expect("request")
        .text()
        .await
        .expect("text");
    for needle in [
        r#"bigpeer_http_requests_total{route="/api/v4/store/execute",method="POST",status="200"} 1"#,
        r#"bigpeer_http_requests_total{route="/api/v4/store/execute",method="POST",status="400"} 2"#,
        r#"bigpeer_http_request_duration_seconds_count{route="/api/v4/store/execute"} 3"#,
        r#"bigpeer_errors_total{code="query/invalid"} 1"#,
        r#"bigpeer_errors_total{code="request/invalid-json"} 1"#,
        r#"bigpeer_db_pool_connections{state="idle"}"#,
        "bigpeer_committed_transaction_id ",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    app.shutdown().await;
}

async fn execute_at(addr: std::net::SocketAddr, statement: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/api/v4/store/execute"))
        .json(&json!({ "statement": statement }))
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("a JSON body"))
}

async fn strict_mode_at(addr: std::net::SocketAddr) -> Value {
    let (status, body) = execute_at(addr, "SHOW DQL_STRICT_MODE").await;
    assert_eq!(status, 200, "{body}");
    body["items"][0]["dql_strict_mode"].clone()
}

#[tokio::test]
async fn alter_system_is_kept_for_the_other_processes_and_for_restarts() {
    let app = playground().await;
    let mut config = integration_tests::test_config(&app.db);
    config.playground = true;
    // Another bigpeer process on the same database.
    let other = bigpeer::spawn_app(config.clone())
        .await
        .expect("a second server");
    assert_eq!(strict_mode_at(other.local_addr()).await, json!(false));

    let (status, body) = execute_at(
        app.app.local_addr(),
        "ALTER SYSTEM SET DQL_STRICT_MODE = true",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The process that ran it uses it at once; the other within its refresh period.
    assert_eq!(strict_mode_at(app.app.local_addr()).await, json!(true));
    let deadline = std::time::Instant::now() + bigpeer::app::SETTINGS_REFRESH * 5;
    while strict_mode_at(other.local_addr()).await != json!(true) {
        assert!(
            std::time::Instant::now() < deadline,
            "the other process never saw the change"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // And writes there follow it: an object is a register in strict mode, so a statement that
    // declares it a MAP does not see it.
    let (status, body) = execute_at(
        other.local_addr(),
        "INSERT INTO c DOCUMENTS ({'_id': 'a', 'o': {'x': 1}})",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = execute_at(
        app.app.local_addr(),
        "SELECT * FROM COLLECTION c (o MAP) WHERE _id = 'a'",
    )
    .await;
    assert_eq!(body["items"], json!([{ "_id": "a" }]));
    other.shutdown().await.expect("shutdown");

    // A restarted process starts with what was set.
    let restarted = bigpeer::spawn_app(config).await.expect("a restart");
    assert_eq!(strict_mode_at(restarted.local_addr()).await, json!(true));
    let (status, body) = execute_at(restarted.local_addr(), "ALTER SYSTEM RESET ALL").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(strict_mode_at(restarted.local_addr()).await, json!(false));
    restarted.shutdown().await.expect("shutdown");
    app.shutdown().await;
}
