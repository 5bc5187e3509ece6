//! Webhooks of change data capture: the admin API (`/api/v4/admin/webhooks`).

use integration_tests::{TestApp, TestDb};
use serde_json::{json, Value};

const ADMIN: &str = "admin-secret-0123456789abcdef";

async fn app(allow_private: bool) -> TestApp {
    TestApp::spawn_with(TestDb::create().await, |c| {
        c.admin_key = Some(bigpeer::config::AdminKey::new(ADMIN));
        c.webhook_allow_private = allow_private;
    })
    .await
}

/// An admin request: status and JSON body (null when empty).
async fn admin(app: &TestApp, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut r = reqwest::Client::new()
        .request(method, format!("http://{}{path}", app.app.local_addr()))
        .bearer_auth(ADMIN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.expect("request");
    let status = r.status().as_u16();
    let bytes = r.bytes().await.expect("body");
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("json")
    };
    (status, json)
}

#[tokio::test]
async fn webhooks_are_created_listed_changed_and_deleted() {
    let app = app(true).await;
    let (status, created) = admin(
        &app,
        "POST",
        "/api/v4/admin/webhooks",
        Some(
            json!({"url": "http://127.0.0.1:9/in", "collections": ["orders"],
            "filter": "status = 'paid'", "description": "billing"}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("wh_"), "{created}");
    let secret = created["secret"].as_str().expect("the secret, this once");
    assert!(secret.starts_with("whsec_"), "{created}");
    assert!(bigpeer::webhooks::sign::Secret::parse(secret).is_ok());
    assert_eq!(created["collections"], json!(["orders"]));
    assert_eq!(created["filter"], "status = 'paid'");
    assert_eq!(created["enabled"], true);
    assert_eq!(created["consecutiveFailures"], 0);

    let (status, listed) = admin(&app, "GET", "/api/v4/admin/webhooks", None).await;
    assert_eq!(status, 200);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["id"], id.as_str());
    assert!(
        listed[0].get("secret").is_none(),
        "never shown again: {listed}"
    );

    let path = format!("/api/v4/admin/webhooks/{id}");
    let (status, patched) = admin(
        &app,
        "PATCH",
        &path,
        Some(json!({"collections": null, "description": "all", "enabled": false})),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["collections"], Value::Null);
    assert_eq!(patched["filter"], "status = 'paid'", "absent fields stay");
    assert_eq!(patched["description"], "all");
    assert_eq!(patched["enabled"], false);
    let (status, shown) = admin(&app, "GET", &path, None).await;
    assert_eq!((status, &shown["description"]), (200, &json!("all")));
    assert!(shown.get("secret").is_none());

    let (status, _) = admin(&app, "DELETE", &path, None).await;
    assert_eq!(status, 204);
    let (status, body) = admin(&app, "GET", &path, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("webhooks/not-found"))
    );
    let (status, body) = admin(&app, "DELETE", &path, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("webhooks/not-found"))
    );
    app.shutdown().await;
}

#[tokio::test]
async fn bad_webhooks_are_refused_with_stable_codes() {
    let app = app(false).await;
    let create = |body: Value| {
        let app = &app;
        async move { admin(app, "POST", "/api/v4/admin/webhooks", Some(body)).await }
    };
    // Requests leave from inside the network: private targets need webhook_allow_private.
    for url in [
        "http://127.0.0.1:8080/x",
        "http://[::1]/x",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.5/x",
    ] {
        let (status, body) = create(json!({ "url": url })).await;
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(body["code"], "webhooks/invalid-url", "{url}: {body}");
        assert!(body["message"]
            .as_str()
            .is_some_and(|m| m.contains("webhook_allow_private")));
    }
    for (body, code) in [
        (json!({"url": "ftp://h.example/x"}), "webhooks/invalid-url"),
        (
            json!({"url": "https://u:p@h.example/x"}),
            "webhooks/invalid-url",
        ),
        (
            json!({"url": "https://h.example/x", "filter": "status = "}),
            "webhooks/invalid",
        ),
        (
            json!({"url": "https://h.example/x", "collections": []}),
            "webhooks/invalid",
        ),
        (
            json!({"url": "https://h.example/x", "description": "a\u{0}b"}),
            "webhooks/invalid",
        ),
        (
            json!({"url": "https://h.example/x", "secret": "mine"}),
            "request/invalid-json",
        ),
        (json!({"collections": ["a"]}), "request/invalid-json"),
    ] {
        let (status, answer) = create(body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["code"], code, "{body}: {answer}");
    }
    let (status, body) = admin(
        &app,
        "PATCH",
        "/api/v4/admin/webhooks/wh_nope",
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("webhooks/not-found"))
    );
    let (status, listed) = admin(&app, "GET", "/api/v4/admin/webhooks", None).await;
    assert_eq!((status, listed), (200, json!([])), "nothing was stored");

    // Only the admin key.
    let r = reqwest::Client::new()
        .get(format!(
            "http://{}/api/v4/admin/webhooks",
            app.app.local_addr()
        ))
        .bearer_auth("bpk_not_the_admin")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 403);
    app.shutdown().await;
}
