//! The legacy RPC endpoints: `/store/find`, `/store/findbyid`, `/store/count` with the legacy
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
