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

// ---------------------------------------------------------------------------------------------
// Delivery, to real receivers on loopback.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: i64,
    signature: String,
    body: Vec<u8>,
}

impl Received {
    fn events(&self) -> Vec<Value> {
        let v: Value = serde_json::from_slice(&self.body).expect("a JSON body");
        v["events"].as_array().expect("events").clone()
    }
}

#[derive(Default)]
struct Plan {
    /// Statuses to answer, in order; 200 once they run out.
    answers: VecDeque<u16>,
    got: Vec<Received>,
}

/// A webhook receiver: an HTTP server on a loopback port that records every request and
/// answers as planned.
struct Receiver {
    url: String,
    plan: Arc<Mutex<Plan>>,
    handle: actix_web::dev::ServerHandle,
}

impl Receiver {
    async fn start(answers: &[u16]) -> Receiver {
        Receiver::start_on(0, answers).await
    }

    /// On a given port (0: any free one). An answer of 0 means: wait 3 s, then 200 (slower
    /// than the tests' webhook_timeout).
    async fn start_on(port: u16, answers: &[u16]) -> Receiver {
        use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
        let plan = Arc::new(Mutex::new(Plan {
            answers: answers.iter().copied().collect(),
            got: Vec::new(),
        }));
        let shared = plan.clone();
        let server = HttpServer::new(move || {
            let plan = shared.clone();
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let plan = plan.clone();
                async move {
                    let header = |n: &str| {
                        req.headers()
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned()
                    };
                    let mut status = {
                        let mut p = plan.lock().expect("plan");
                        p.got.push(Received {
                            id: header("webhook-id"),
                            timestamp: header("webhook-timestamp").parse().unwrap_or(0),
                            signature: header("webhook-signature"),
                            body: body.to_vec(),
                        });
                        p.answers.pop_front().unwrap_or(200)
                    };
                    if status == 0 {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        status = 200;
                    }
                    let mut answer = HttpResponse::build(
                        actix_web::http::StatusCode::from_u16(status).expect("status"),
                    );
                    if status == 429 {
                        answer.insert_header(("Retry-After", "1"));
                    }
                    answer.body("ok")
                }
            }))
        })
        .workers(1)
        .bind(("127.0.0.1", port))
        .expect("bind a receiver");
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Receiver {
            url: format!("http://{addr}/hook"),
            plan,
            handle,
        }
    }

    fn got(&self) -> Vec<Received> {
        self.plan.lock().expect("plan").got.clone()
    }

    /// Every event received, in order, as (collection, document id, method), duplicates kept.
    fn events(&self) -> Vec<(String, Value, String)> {
        self.got()
            .iter()
            .flat_map(|r| r.events())
            .map(|e| {
                (
                    e["collection"].as_str().unwrap_or("").to_owned(),
                    e["documentId"].clone(),
                    e["change"]["method"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    async fn stop(self) {
        self.handle.stop(false).await;
    }
}

async fn delivery_app(db: TestDb, edit: impl FnOnce(&mut bigpeer::Config)) -> TestApp {
    TestApp::spawn_with(db, |c| {
        c.admin_key = Some(bigpeer::config::AdminKey::new(ADMIN));
        c.webhook_allow_private = true;
        c.playground = true;
        edit(c);
    })
    .await
}

async fn register(app: &TestApp, body: Value) -> (String, String) {
    let (status, created) = admin(app, "POST", "/api/v4/admin/webhooks", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    (
        created["id"].as_str().expect("id").to_owned(),
        created["secret"].as_str().expect("secret").to_owned(),
    )
}

async fn execute(app: &TestApp, statement: &str) {
    let (status, body) = app
        .post("/api/v4/store/execute", &json!({ "statement": statement }))
        .await;
    assert_eq!(status, 200, "{statement}: {body}");
}

/// Waits (bounded) until `check` holds.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_write_path_is_delivered_signed_and_in_order() {
    let app = delivery_app(TestDb::create().await, |_| {}).await;
    let receiver = Receiver::start(&[]).await;
    let (_, secret) = register(&app, json!({ "url": receiver.url })).await;

    execute(
        &app,
        "INSERT INTO cars DOCUMENTS ({'_id': 'a', 'color': 'blue'})",
    )
    .await;
    execute(&app, "UPDATE cars SET color = 'red' WHERE _id = 'a'").await;
    // The legacy write route.
    let (status, body) = app
        .post(
            "/api/v4/store/write",
            &json!({"commands": [{"method": "upsert", "collection": "cars", "id": "b", "value": {"color": "green"}}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    execute(&app, "DELETE FROM cars WHERE _id = 'a'").await;
    // A statement that fails changes nothing and sends nothing.
    let (status, _) = app
        .post(
            "/api/v4/store/execute",
            &json!({"statement": "UPDATE cars SET x = 1 / 'a' WHERE _id = 'b'"}),
        )
        .await;
    assert_ne!(status, 200);
    execute(&app, "INSERT INTO other DOCUMENTS ({'_id': 'z'})").await;

    until("five events", || receiver.events().len() >= 5).await;
    let expected = vec![
        ("cars".to_owned(), json!("a"), "upsert".to_owned()),
        ("cars".to_owned(), json!("a"), "update".to_owned()),
        ("cars".to_owned(), json!("b"), "upsert".to_owned()),
        ("cars".to_owned(), json!("a"), "remove".to_owned()),
        ("other".to_owned(), json!("z"), "upsert".to_owned()),
    ];
    assert_eq!(receiver.events(), expected);
    let all: Vec<Value> = receiver.got().iter().flat_map(Received::events).collect();
    assert_eq!(
        all[1]["change"]["oldValue"],
        json!({"_id": "a", "color": "blue"})
    );
    assert_eq!(
        all[1]["change"]["newValue"],
        json!({"_id": "a", "color": "red"})
    );
    assert_eq!(
        all[3]["change"]["value"],
        json!({"_id": "a", "color": "red"})
    );
    assert_eq!(all[0]["type"], "documentChanged");
    let seqs: Vec<i64> = all
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in sequence order: {seqs:?}"
    );

    // Standard Webhooks signatures, made with the webhook's secret.
    let secret = bigpeer::webhooks::sign::Secret::parse(&secret).expect("secret");
    for r in receiver.got() {
        assert!(r.id.starts_with("msg_"), "{r:?}");
        assert!(
            secret.verify(&r.id, r.timestamp, &r.body, &r.signature),
            "the signature verifies: {r:?}"
        );
    }
    receiver.stop().await;
    app.shutdown().await;
}

#[tokio::test]
async fn failures_are_retried_in_order_with_the_same_id() {
    let app = delivery_app(TestDb::create().await, |_| {}).await;
    // Down twice (a 500, then a 429 with Retry-After), then up.
    let receiver = Receiver::start(&[500, 429]).await;
    let (id, _) = register(&app, json!({ "url": receiver.url })).await;
    execute(&app, "INSERT INTO t DOCUMENTS ({'_id': 1})").await;
    execute(&app, "INSERT INTO t DOCUMENTS ({'_id': 2})").await;
    until("a delivered batch after two failures", || {
        receiver.got().len() >= 3 && receiver.events().len() >= 2
    })
    .await;
    let got = receiver.got();
    assert_eq!(got[0].id, got[1].id, "a retry keeps the webhook-id");
    assert_eq!(got[0].body, got[1].body, "and the body");
    until("both events", || {
        let ids: Vec<Value> = receiver.events().into_iter().map(|e| e.1).collect();
        ids.ends_with(&[json!(1), json!(2)]) || ids == [json!(1), json!(1), json!(1), json!(2)]
    })
    .await;
    let (status, list) = admin(
        &app,
        "GET",
        &format!("/api/v4/admin/webhooks/{id}/deliveries"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let first = list
        .as_array()
        .and_then(|l| l.last())
        .cloned()
        .expect("a delivery");
    assert_eq!(first["status"], "delivered", "{list}");
    assert_eq!(first["attempts"], 3, "{list}");
    // The metrics count the attempts by outcome, the events and the latency.
    let r = reqwest::get(format!("http://{}/metrics", app.app.local_addr()))
        .await
        .expect("metrics");
    let text = r.text().await.expect("text");
    for line in [
        format!("bigpeer_webhook_attempts_total{{webhook=\"{id}\",outcome=\"failed\"}} 2"),
        format!("bigpeer_webhook_events_delivered_total{{webhook=\"{id}\"}} 2"),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("bigpeer_webhook_delivery_latency_seconds_count ")),
        "{text}"
    );
    assert!(
        text.contains(&format!("bigpeer_webhook_backlog{{webhook=\"{id}\"}}")),
        "{text}"
    );
    receiver.stop().await;
    app.shutdown().await;
}

#[tokio::test]
async fn collections_and_filters_are_honoured() {
    let app = delivery_app(TestDb::create().await, |_| {}).await;
    let receiver = Receiver::start(&[]).await;
    register(
        &app,
        json!({ "url": receiver.url, "collections": ["orders"], "filter": "status = 'paid'" }),
    )
    .await;
    execute(
        &app,
        "INSERT INTO orders DOCUMENTS ({'_id': 'o1', 'status': 'open'})",
    )
    .await;
    execute(
        &app,
        "INSERT INTO carts DOCUMENTS ({'_id': 'c1', 'status': 'paid'})",
    )
    .await;
    execute(
        &app,
        "INSERT INTO orders DOCUMENTS ({'_id': 'o2', 'status': 'paid'})",
    )
    .await;
    execute(&app, "UPDATE orders SET status = 'paid' WHERE _id = 'o1'").await;
    until("two events", || receiver.events().len() >= 2).await;
    // The last write is a marker: once it is through, nothing else is on its way.
    execute(
        &app,
        "INSERT INTO orders DOCUMENTS ({'_id': 'end', 'status': 'paid'})",
    )
    .await;
    until("the marker", || receiver.events().len() >= 3).await;
    assert_eq!(
        receiver.events(),
        vec![
            ("orders".to_owned(), json!("o2"), "upsert".to_owned()),
            // o1 enters the filter: to this webhook it appears.
            ("orders".to_owned(), json!("o1"), "upsert".to_owned()),
            ("orders".to_owned(), json!("end"), "upsert".to_owned()),
        ]
    );
    receiver.stop().await;
    app.shutdown().await;
}

/// Polls an admin GET until `check` holds (bounded); the last answer.
async fn poll(app: &TestApp, path: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = admin(app, "GET", path, None).await;
        if status == 200 && check(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out polling {path}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn dead_letters_can_be_replayed_and_failing_webhooks_are_disabled() {
    let app = delivery_app(TestDb::create().await, |c| {
        c.webhook_max_age = Duration::from_secs(1);
        c.webhook_disable_after = 4;
    })
    .await;
    let receiver = Receiver::start(&[500; 100]).await;
    let (id, _) = register(&app, json!({ "url": receiver.url })).await;
    let hook = format!("/api/v4/admin/webhooks/{id}");
    execute(&app, "INSERT INTO t DOCUMENTS ({'_id': 'x'})").await;
    // Retried until older than webhook_max_age, then dead-lettered; the position moves on.
    let dead = poll(&app, &format!("{hook}/deliveries?status=dead"), |l| {
        l.as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    assert!(
        dead[0]["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("500")),
        "{dead}"
    );
    assert_eq!(dead[0]["lastStatus"], 500);
    // More failures in a row: the webhook is disabled, with the reason.
    execute(&app, "INSERT INTO t DOCUMENTS ({'_id': 'y'})").await;
    let off = poll(&app, &hook, |w| w["enabled"] == false).await;
    assert!(
        off["disabledReason"]
            .as_str()
            .is_some_and(|r| r.contains("4 failed attempts")),
        "{off}"
    );
    let tried = receiver.got().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        receiver.got().len(),
        tried,
        "a disabled webhook gets nothing"
    );

    // The receiver recovers; the webhook is enabled again and its dead letters replayed.
    receiver.plan.lock().expect("plan").answers.clear();
    let (status, on) = admin(&app, "PATCH", &hook, Some(json!({"enabled": true}))).await;
    assert_eq!(
        (status, &on["enabled"], &on["consecutiveFailures"]),
        (200, &json!(true), &json!(0))
    );
    let dead = poll(&app, &format!("{hook}/deliveries"), |l| {
        l.as_array().is_some_and(|a| {
            a.iter()
                .all(|d| d["status"] == "dead" || d["status"] == "delivered")
        })
    })
    .await;
    let ids: Vec<Value> = dead
        .as_array()
        .expect("list")
        .iter()
        .filter(|d| d["status"] == "dead")
        .map(|d| d["id"].clone())
        .collect();
    let (status, replayed) = admin(
        &app,
        "POST",
        &format!("{hook}/replay"),
        Some(json!({ "deliveries": ids })),
    )
    .await;
    assert_eq!(status, 202, "{replayed}");
    poll(&app, &format!("{hook}/deliveries"), |l| {
        l.as_array()
            .is_some_and(|a| a.len() == 2 && a.iter().all(|d| d["status"] == "delivered"))
    })
    .await;
    let delivered: Vec<Value> = receiver
        .got()
        .iter()
        .rev()
        .take(2)
        .flat_map(Received::events)
        .map(|e| e["documentId"].clone())
        .collect();
    assert!(
        delivered.contains(&json!("x")) && delivered.contains(&json!("y")),
        "{delivered:?}"
    );

    // Replay since a position: the changes after it come again.
    let before = receiver.events().len();
    let (status, _) = admin(
        &app,
        "POST",
        &format!("{hook}/replay"),
        Some(json!({"since": 0})),
    )
    .await;
    assert_eq!(status, 202);
    until("the replayed changes", || {
        receiver.events().len() >= before + 2
    })
    .await;
    receiver.stop().await;
    app.shutdown().await;
}

#[tokio::test]
async fn two_processes_deliver_each_event_once() {
    let first = delivery_app(TestDb::create().await, |_| {}).await;
    let mut config = integration_tests::test_config(&first.db);
    config.playground = true;
    config.webhook_allow_private = true;
    let second = bigpeer::spawn_app(config).await.expect("second server");
    let receiver = Receiver::start(&[]).await;
    register(&first, json!({ "url": receiver.url })).await;
    for i in 0..40 {
        let statement = format!("INSERT INTO t DOCUMENTS ({{'_id': {i}}})");
        if i % 2 == 0 {
            execute(&first, &statement).await;
        } else {
            let r = integration_tests::request(
                second.local_addr(),
                "POST",
                "/api/v4/store/execute",
                Some(&json!({ "statement": statement })),
            )
            .await
            .expect("request");
            assert_eq!(r.status, 200, "{statement}: {}", r.text());
        }
    }
    until("forty events", || receiver.events().len() >= 40).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ids: Vec<Value> = receiver.events().into_iter().map(|e| e.1).collect();
    assert_eq!(
        ids,
        (0..40).map(|i| json!(i)).collect::<Vec<_>>(),
        "each once, in order"
    );
    receiver.stop().await;
    second.shutdown().await.expect("second shutdown");
    first.shutdown().await;
}

#[tokio::test]
async fn a_receiver_that_times_out_or_is_down_gets_every_event_in_order_once_it_recovers() {
    let app = delivery_app(TestDb::create().await, |c| {
        c.webhook_timeout = Duration::from_secs(1);
    })
    .await;
    // Down: nothing listens on the port yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let (id, _) = register(
        &app,
        json!({ "url": format!("http://127.0.0.1:{port}/hook") }),
    )
    .await;
    for i in 0..5 {
        execute(&app, &format!("INSERT INTO t DOCUMENTS ({{'_id': {i}}})")).await;
    }
    let hook = format!("/api/v4/admin/webhooks/{id}");
    let failed = poll(&app, &format!("{hook}/deliveries?status=failed"), |l| {
        l.as_array()
            .is_some_and(|a| a.first().is_some_and(|d| d["attempts"].as_i64() >= Some(2)))
    })
    .await;
    assert!(
        failed[0]["lastError"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{failed}"
    );
    // Up again, but its first answer comes after the timeout: one more failure, then through.
    let receiver = Receiver::start_on(port, &[0]).await;
    for i in 5..8 {
        execute(&app, &format!("INSERT INTO t DOCUMENTS ({{'_id': {i}}})")).await;
    }
    until("every event", || {
        let mut ids: Vec<Value> = receiver.events().into_iter().map(|e| e.1).collect();
        ids.dedup();
        ids.len() >= 8
    })
    .await;
    let mut firsts: Vec<Value> = Vec::new();
    for (_, id, _) in receiver.events() {
        if !firsts.contains(&id) {
            firsts.push(id);
        }
    }
    assert_eq!(
        firsts,
        (0..8).map(|i| json!(i)).collect::<Vec<_>>(),
        "in order"
    );
    let got = receiver.got();
    assert_eq!(
        got[0].id, got[1].id,
        "the batch that timed out came again under its id"
    );
    receiver.stop().await;
    app.shutdown().await;
}
