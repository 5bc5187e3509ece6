//! The OpenAPI routes of a real server, and the answers the spec promises where schemathesis
//! found the server breaking it: text holding U+0000 (which Postgres cannot store) is a 400 with
//! nothing written, never a 503; JSON errors of every route but `/store/execute` have the
//! `{code, message}` shape.

use integration_tests::{request, TestApp, TestDb};
use serde_json::{json, Value};

const ADMIN_KEY: &str = "openapi-test-admin-key-0123456789";

async fn app() -> TestApp {
    TestApp::spawn_with(TestDb::create().await, |c| {
        c.playground = true;
        c.admin_key = Some(bigpeer::config::AdminKey::new(ADMIN_KEY));
    })
    .await
}

async fn post(app: &TestApp, path: &str, auth: Option<&str>, body: &str) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .post(format!("http://{}{path}", app.app.local_addr()))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(key) = auth {
        r = r.bearer_auth(key);
    }
    let r = r.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn count_cars(app: &TestApp) -> Value {
    let (status, body) = post(
        app,
        "/api/v4/store/execute",
        None,
        r#"{"statement": "SELECT COUNT(*) AS n FROM cars"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["items"].clone()
}

#[tokio::test]
async fn the_spec_and_the_docs_are_served_without_a_key() {
    // Not a playground: every API route needs a key, these do not.
    let app = TestApp::spawn().await;
    let addr = app.app.local_addr();
    let spec = request(addr, "GET", "/api/v4/openapi.json", None)
        .await
        .expect("openapi.json");
    assert_eq!(spec.status, 200);
    assert_eq!(spec.header("content-type"), Some("application/json"));
    assert_eq!(spec.text(), bigpeer::http::openapi::spec_json());
    let swagger = request(addr, "GET", "/api/v4/swagger.json", None)
        .await
        .expect("swagger.json");
    assert_eq!((swagger.status, swagger.text()), (200, spec.text()));
    let docs = request(addr, "GET", "/docs", None).await.expect("docs");
    assert_eq!(docs.status, 200);
    assert_eq!(
        docs.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(docs.text().contains("SwaggerUIBundle"), "{}", docs.text());
    app.shutdown().await;
}

/// A request no route takes gets the JSON error envelope: 405 with `Allow` for a wrong method
/// on any route of the spec, 404 for an unknown path.
#[tokio::test]
async fn wrong_methods_are_405_with_allow_and_unknown_paths_404() {
    let app = app().await;
    let addr = app.app.local_addr();
    let spec = bigpeer::http::openapi::spec();
    let all = ["GET", "PUT", "POST", "DELETE", "PATCH"];
    for (path, item) in &spec.paths.paths {
        let allowed: Vec<&str> = [
            item.get.is_some(),
            item.put.is_some(),
            item.post.is_some(),
            item.delete.is_some(),
            item.patch.is_some(),
        ]
        .into_iter()
        .zip(all)
        .filter_map(|(has, m)| has.then_some(m))
        .collect();
        let concrete = path.replace("{id}", "key_0");
        for method in all.iter().filter(|m| !allowed.contains(m)) {
            let r = request(addr, method, &concrete, None)
                .await
                .expect("request");
            assert_eq!(r.status, 405, "{method} {path}: {}", r.text());
            assert_eq!(
                r.header("allow"),
                Some(allowed.join(", ").as_str()),
                "{method} {path}"
            );
            let body: Value = serde_json::from_str(&r.text()).expect("JSON");
            assert_eq!(
                body["code"], "request/method-not-allowed",
                "{method} {path}"
            );
        }
    }
    let r = request(addr, "GET", "/api/v4/no/such/route", None)
        .await
        .expect("request");
    assert_eq!(r.status, 404);
    let body: Value = serde_json::from_str(&r.text()).expect("JSON");
    assert_eq!(body["code"], "request/not-found", "{body}");
    app.shutdown().await;
}

#[tokio::test]
async fn nul_characters_are_a_400_and_write_nothing() {
    let app = app().await;
    let nul_requests: [(&str, Option<&str>, &str); 9] = [
        (
            "/api/v4/store/execute",
            None,
            r#"{"statement": "INSERT INTO cars DOCUMENTS (:d)", "args": {"d": {"_id": "a", "name": "x\u0000y"}}}"#,
        ),
        (
            "/api/v4/store/execute",
            None,
            r#"{"statement": "INSERT INTO cars DOCUMENTS (:d)", "args": {"d": {"_id": "a", "k\u0000": 1}}}"#,
        ),
        (
            "/api/v4/store/execute",
            None,
            "{\"statement\": \"INSERT INTO cars DOCUMENTS ({'_id': 'a\\u0000'})\"}",
        ),
        (
            "/api/v4/store/find",
            None,
            r#"{"collection": "cars", "query": "name == $args.n", "args": {"n": "\u0000"}}"#,
        ),
        (
            "/api/v4/store/findbyid",
            None,
            r#"{"collection": "cars", "id": {"a": ["\u0000"]}}"#,
        ),
        (
            "/api/v4/store/count",
            None,
            r#"{"collection": "ca\u0000rs", "query": "true"}"#,
        ),
        (
            "/api/v4/store/write",
            None,
            r#"{"commands": [{"method": "upsert", "collection": "cars", "value": {"_id": "ok"}},
                {"method": "upsert", "collection": "cars", "value": {"_id": "b", "n": "\u0000"}}]}"#,
        ),
        (
            "/api/v4/admin/keys",
            Some(ADMIN_KEY),
            r#"{"name": "me\u0000"}"#,
        ),
        (
            "/api/v4/admin/keys",
            Some(ADMIN_KEY),
            r#"{"name": "me", "permissions": {"read": {"queriesByCollection": {"c\u0000": ["true"]}}}}"#,
        ),
    ];
    for (path, auth, body) in nul_requests {
        let (status, answer) = post(&app, path, auth, body).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        let code = if path == "/api/v4/store/execute" {
            &answer["error"]["code"]
        } else {
            &answer["code"]
        };
        assert_eq!(code, "request/nul-character", "{path} {body}: {answer}");
    }
    assert_eq!(count_cars(&app).await, json!([{"n": 0}]));
    let (status, keys) = reqwest::Client::new()
        .get(format!("http://{}/api/v4/admin/keys", app.app.local_addr()))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .expect("list keys");
    assert_eq!(status, 200);
    assert_eq!(keys.json::<Value>().await.expect("json"), json!([]));

    // A key id holding U+0000 names no key.
    let (status, body) = {
        let r = reqwest::Client::new()
            .delete(format!(
                "http://{}/api/v4/admin/keys/key_%00",
                app.app.local_addr()
            ))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .expect("revoke");
        (r.status().as_u16(), r.json::<Value>().await.expect("json"))
    };
    assert_eq!((status, &body["code"]), (404, &json!("auth/no-such-key")));
    app.shutdown().await;
}

#[tokio::test]
async fn json_errors_have_the_shape_of_their_route() {
    let app = app().await;
    // `/store/execute` keeps Ditto's envelope.
    let (status, body) = post(&app, "/api/v4/store/execute", None, "{not json").await;
    assert_eq!(status, 400);
    assert_eq!(body["queryType"], "unknown");
    assert_eq!(body["error"]["code"], "request/invalid-json");
    // Every other route answers `{code, message}`.
    for (path, auth) in [
        ("/api/v4/store/find", None),
        ("/api/v4/store/findbyid", None),
        ("/api/v4/store/count", None),
        ("/api/v4/store/write", None),
        ("/api/v4/admin/keys", Some(ADMIN_KEY)),
    ] {
        let (status, body) = post(&app, path, auth, r#"{"unknown": 1}"#).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["code"], "request/invalid-json", "{path}: {body}");
        assert!(body["message"].is_string(), "{path}: {body}");
        assert!(body.get("queryType").is_none(), "{path}: {body}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn legacy_queries_read_their_writes_with_the_txn_header() {
    let app = app().await;
    let (status, written) = post(
        &app,
        "/api/v4/store/execute",
        None,
        r#"{"statement": "INSERT INTO cars DOCUMENTS ({'_id': 'a', 'color': 'blue'})"}"#,
    )
    .await;
    assert_eq!(status, 200, "{written}");
    let txn = written["transactionId"].as_i64().expect("txn");
    let client = reqwest::Client::new();
    let bodies = [
        (
            "/api/v4/store/find",
            json!({"collection": "cars", "query": "true"}),
        ),
        (
            "/api/v4/store/findbyid",
            json!({"collection": "cars", "id": "a"}),
        ),
        (
            "/api/v4/store/count",
            json!({"collection": "cars", "query": "true"}),
        ),
    ];
    for (path, body) in &bodies {
        let send = |header: String| {
            client
                .post(format!("http://{}{path}", app.app.local_addr()))
                .header("X-DITTO-TXN-ID", header)
                .json(body)
                .send()
        };
        let r = send(txn.to_string()).await.expect("request");
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let answer: Value = r.json().await.expect("json");
        assert!(
            answer["txnId"].as_i64().expect("txnId") >= txn,
            "{path}: {answer}"
        );

        let r = send((txn + 1_000_000).to_string()).await.expect("request");
        assert_eq!(r.status().as_u16(), 404, "{path}");
        let answer: Value = r.json().await.expect("json");
        assert_eq!(
            answer["code"], "store/txn-not-available",
            "{path}: {answer}"
        );

        let r = send("soon".to_owned()).await.expect("request");
        assert_eq!(r.status().as_u16(), 400, "{path}");
        let answer: Value = r.json().await.expect("json");
        assert_eq!(answer["code"], "request/invalid-header", "{path}: {answer}");
    }
    app.shutdown().await;
}
