//! End-to-end tests: the server in-process on a real port, on a fresh database of a real Postgres.

use std::time::Duration;

#[path = "it/auth.rs"]
mod auth;
#[path = "it/changes.rs"]
mod changes;
#[path = "it/legacy.rs"]
mod legacy;
#[path = "it/nats.rs"]
mod nats;
#[path = "it/openapi.rs"]
mod openapi;
#[path = "it/peers.rs"]
mod peers;
#[path = "it/security/mod.rs"]
mod security;
#[path = "it/store_execute.rs"]
mod store_execute;
#[path = "it/sync.rs"]
mod sync;
#[path = "it/tls.rs"]
mod tls;
#[path = "it/webhooks.rs"]
mod webhooks;

use integration_tests::{http_get, request, test_config, TestApp, TestDb};
use serde_json::json;
use sqlx::Connection as _;

#[tokio::test]
async fn health_and_readiness_over_a_real_socket() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/healthz").await, (200, json!({ "status": "ok" })));
    assert_eq!(app.get("/readyz").await, (200, json!({ "status": "ok" })));
    let raw = request(app.app.local_addr(), "GET", "/readyz", None)
        .await
        .expect("readyz");
    assert_eq!(raw.header("content-type"), Some("application/json"));
    let (status, _) = app.get("/no-such-route").await;
    assert_eq!(status, 404);

    let addr = app.app.local_addr();
    app.shutdown().await;
    let after = request(addr, "GET", "/healthz", None).await;
    assert!(
        after.is_err(),
        "the port still answers after shutdown: {after:?}"
    );
}

#[tokio::test]
async fn readyz_is_503_until_the_migrations_are_applied() {
    let db = TestDb::create().await;
    let app = TestApp::spawn_with(db, |c| c.migrate_on_start = false).await;
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["code"], "store/not-migrated");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("migrations")),
        "{body}"
    );
    assert!(
        body["hint"]
            .as_str()
            .is_some_and(|m| m.contains("bigpeer migrate")),
        "{body}"
    );
    // Liveness does not depend on the database.
    assert_eq!(app.get("/healthz").await.0, 200);

    app.app.store().migrate().await.expect("migrate");
    assert_eq!(app.get("/readyz").await, (200, json!({ "status": "ok" })));
    app.shutdown().await;
}

#[tokio::test]
async fn readyz_is_503_when_the_database_goes_away() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/readyz").await.0, 200);

    let mut admin = sqlx::PgConnection::connect(app.db.admin_url())
        .await
        .expect("admin");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE \"{}\" WITH (FORCE)",
        app.db.name()
    )))
    .execute(&mut admin)
    .await
    .expect("drop the database under the server");
    let _ = admin.close().await;

    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    let code = body["code"].as_str().unwrap_or_default();
    assert!(code.starts_with("store/"), "{body}");
    assert!(
        !body["message"].as_str().unwrap_or_default().is_empty(),
        "{body}"
    );
    assert_eq!(app.get("/healthz").await.0, 200);
    app.shutdown().await;
}

#[tokio::test]
async fn unreachable_database_is_a_precise_error() {
    let db = TestDb::create().await;
    let mut config = test_config(&db);
    config.database_url = Some(bigpeer::config::DatabaseUrl::new(
        "postgres://postgres@127.0.0.1:1/x",
    ));
    config.connect_timeout = Duration::from_millis(500);
    let err = bigpeer::spawn_app(config)
        .await
        .expect_err("nothing listens on port 1");
    assert_eq!(err.code(), "store/unavailable");
    assert!(
        err.to_string()
            .starts_with("cannot connect to Postgres at 127.0.0.1:1: connection refused"),
        "{err}"
    );
    let hint = err.hint().unwrap_or_default();
    assert!(hint.contains("check that Postgres runs there"), "{hint}");
    assert!(hint.contains("DATABASE_URL"), "{hint}");
}

#[tokio::test]
async fn missing_database_is_a_precise_error() {
    let db = TestDb::create().await;
    let mut config = test_config(&db);
    let missing = format!("{}_missing", db.name());
    let url = integration_tests::with_database(db.url(), &missing);
    config.database_url = Some(bigpeer::config::DatabaseUrl::new(url));
    let err = bigpeer::spawn_app(config)
        .await
        .expect_err("the database does not exist");
    assert_eq!(err.code(), "store/unavailable");
    assert!(
        err.to_string()
            .ends_with(&format!("database \"{missing}\" does not exist")),
        "{err}"
    );
    let hint = err.hint().unwrap_or_default();
    assert!(
        hint.contains(&format!("createdb -h 127.0.0.1 -p 5432 {missing}")),
        "{hint}"
    );
}

#[tokio::test]
async fn a_taken_port_is_a_precise_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let db = TestDb::create().await;
    let mut config = test_config(&db);
    config.listen = taken.local_addr().expect("addr");
    let err = bigpeer::spawn_app(config).await.expect_err("port in use");
    assert_eq!(err.code(), "http/bind");
    assert!(
        err.to_string().starts_with("cannot listen on 127.0.0.1:"),
        "{err}"
    );
    let hint = err.hint().unwrap_or_default();
    assert!(hint.contains("another process listens on port"), "{hint}");
}

#[tokio::test]
async fn two_servers_share_one_database() {
    // Nothing may assume a single server process: a second one on the same database is ready too.
    let first = TestApp::spawn().await;
    let mut config = test_config(&first.db);
    config.pool_size = 2;
    let second = bigpeer::spawn_app(config).await.expect("second server");
    assert_eq!(http_get(second.local_addr(), "/readyz").await.0, 200);
    assert_eq!(first.get("/readyz").await.0, 200);
    second.shutdown().await.expect("second shutdown");
    first.shutdown().await;
}
