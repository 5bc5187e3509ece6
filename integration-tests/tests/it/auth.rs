//! API keys over HTTP: the admin API, bearer authentication, permissions, revocation.

use std::time::{Duration, Instant};

use integration_tests::{TestApp, TestDb};
use serde_json::{json, Value};

const ADMIN: &str = "admin-secret-0123456789abcdef";

async fn app() -> TestApp {
    TestApp::spawn_with(TestDb::create().await, |c| {
        c.admin_key = Some(bigpeer::config::AdminKey::new(ADMIN));
    })
    .await
}

fn url(app: &TestApp, path: &str) -> String {
    format!("http://{}{path}", app.app.local_addr())
}

async fn execute(app: &TestApp, auth: Option<&str>, statement: &str) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .post(url(app, "/api/v4/store/execute"))
        .json(&json!({ "statement": statement }));
    if let Some(a) = auth {
        r = r.header("Authorization", a);
    }
    let r = r.send().await.expect("request");
    (r.status().as_u16(), r.json().await.expect("json"))
}

async fn create_key(app: &TestApp, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(url(app, "/api/v4/admin/keys"))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .expect("request");
    (r.status().as_u16(), r.json().await.expect("json"))
}

#[tokio::test]
async fn keys_authenticate_and_permissions_apply() {
    let app = app().await;
    let (status, admin) = create_key(&app, json!({"name": "admin", "permissions": {"read": {"everything": true}, "write": {"everything": true}}})).await;
    assert_eq!(status, 201, "{admin}");
    let admin_key = admin["key"].as_str().expect("secret").to_owned();
    assert!(admin_key.starts_with("bpk_"));
    let (status, limited) = create_key(
        &app,
        json!({"name": "shop-a", "expiresAt": "2099-01-01T00:00:00Z", "permissions": {
            "read": {"queriesByCollection": {"books": ["_id.shop == 'a'"]}},
            "write": {"queriesByCollection": {"books": ["_id.shop == 'a'"]}}}}),
    )
    .await;
    assert_eq!(status, 201, "{limited}");
    assert_eq!(limited["expiresAt"], "2099-01-01T00:00:00Z");
    let limited_key = limited["key"].as_str().expect("secret").to_owned();

    // No key, a bad key: 401 with the envelope.
    let (status, body) = execute(&app, None, "SELECT * FROM books").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (401, json!("auth/missing-credentials"))
    );
    let (status, body) = execute(&app, Some("Bearer bpk_nope"), "SELECT * FROM books").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (401, json!("auth/invalid-key"))
    );

    // The key works with "Bearer", lower-case "bearer", or bare.
    let insert = "INSERT INTO books DOCUMENTS ({'_id': {'shop': 'a', 'n': 1}}), ({'_id': {'shop': 'b', 'n': 2}})";
    let (status, body) = execute(&app, Some(&format!("Bearer {admin_key}")), insert).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = execute(
        &app,
        Some(&format!("bearer {limited_key}")),
        "SELECT * FROM books",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["items"],
        json!([{"_id": {"n": 1, "shop": "a"}}]),
        "reads see only permitted documents"
    );
    // Documents outside the read permission do not exist for the key: an UPDATE of the whole
    // collection changes its own documents only.
    let (status, body) = execute(&app, Some(&limited_key), "UPDATE books SET x = 1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["mutatedDocumentIds"], json!([{"n": 1, "shop": "a"}]));
    let (status, body) = execute(&app, Some(&limited_key), "UPDATE books UNSET x").await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = execute(
        &app,
        Some(&admin_key),
        "SELECT * FROM books WHERE x IS NOT MISSING",
    )
    .await;
    assert_eq!(
        body["items"],
        json!([]),
        "nothing outside the key's documents was written"
    );
    let (status, _) = execute(&app, Some(&limited_key), "SELECT * FROM other").await;
    assert_eq!(status, 403);

    // Listing never shows secrets; revocation works within a second.
    let list: Value = reqwest::Client::new()
        .get(url(&app, "/api/v4/admin/keys"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    assert!(!list.to_string().contains(&limited_key));
    let id = limited["id"].as_str().expect("id");
    let r = reqwest::Client::new()
        .delete(url(&app, &format!("/api/v4/admin/keys/{id}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 204);
    let start = Instant::now();
    loop {
        let (status, body) = execute(&app, Some(&limited_key), "SELECT * FROM books").await;
        if status == 401 {
            assert_eq!(body["error"]["code"], "auth/revoked-key");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "revoked key still works"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.shutdown().await;
}

#[tokio::test]
async fn admin_api_is_guarded_and_validates() {
    let app = app().await;
    let client = reqwest::Client::new();
    let r = client
        .get(url(&app, "/api/v4/admin/keys"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 401);
    let r = client
        .get(url(&app, "/api/v4/admin/keys"))
        .bearer_auth("wrong-admin-key-123456")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 403);
    let (status, body) = create_key(&app, json!({"name": "x", "expiresAt": "tomorrow"})).await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!("auth/invalid-request")),
        "{body}"
    );
    let (status, body) = create_key(
        &app,
        json!({"name": "x", "expiresAt": "2001-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = create_key(
        &app,
        json!({"name": "x", "permissions": {"read": {"queriesByCollection": {"c": ["_id ==="]}}}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = create_key(&app, json!({"name": "x", "permisions": {}})).await;
    assert_eq!(status, 400, "unknown field");
    let r = client
        .delete(url(&app, "/api/v4/admin/keys/key_missing"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 404);
    app.shutdown().await;

    // Without an admin key configured the admin API does not exist.
    let plain = TestApp::spawn().await;
    let r = client
        .get(url(&plain, "/api/v4/admin/keys"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 404);
    plain.shutdown().await;
}

#[tokio::test]
async fn rate_limits_per_key_and_per_ip_answer_429_with_retry_after() {
    let app = TestApp::spawn_with(TestDb::create().await, |c| {
        c.admin_key = Some(bigpeer::config::AdminKey::new(ADMIN));
        c.rate_limit_per_key = 2;
    })
    .await;
    let (_, a) = create_key(
        &app,
        json!({"name": "a", "permissions": {"read": {"everything": true}}}),
    )
    .await;
    let (_, b) = create_key(
        &app,
        json!({"name": "b", "permissions": {"read": {"everything": true}}}),
    )
    .await;
    let (a, b) = (
        a["key"].as_str().expect("a").to_owned(),
        b["key"].as_str().expect("b").to_owned(),
    );
    let client = reqwest::Client::new();
    let mut limited = None;
    for _ in 0..12 {
        let r = client
            .post(url(&app, "/api/v4/store/execute"))
            .bearer_auth(&a)
            .json(&json!({"statement": "SELECT * FROM c"}))
            .send()
            .await
            .expect("request");
        if r.status().as_u16() == 429 {
            let retry = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            limited = Some((retry, r.json::<Value>().await.expect("json")));
            break;
        }
        assert_eq!(r.status().as_u16(), 200);
    }
    let (retry, body) = limited.expect("key a was limited after its burst");
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(body["error"]["code"], "request/rate-limited");
    // Another key is not affected.
    let (status, _) = execute(&app, Some(&b), "SELECT * FROM c").await;
    assert_eq!(status, 200);
    app.shutdown().await;

    let app = TestApp::spawn_with(TestDb::create().await, |c| {
        c.playground = true;
        c.rate_limit_per_ip = 1;
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(execute(&app, None, "SELECT * FROM c").await.0);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(statuses[0], 200);
    app.shutdown().await;
}
