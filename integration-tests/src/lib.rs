//! Test harness of the end-to-end tests (`tests/it.rs`), and for later issues' tests:
//!
//! - [`TestDb`]: a fresh database per test on a real Postgres, dropped afterwards;
//! - [`TestApp`]: the whole server in-process (`bigpeer::spawn_app`) on a free port, on such a
//!   database;
//! - [`request`] and [`http_get`]: HTTP requests over a real socket (reqwest).

pub mod testdb;

use std::net::SocketAddr;
use std::time::Duration;

use bigpeer::config::{Config, DatabaseUrl};
use bigpeer::RunningApp;

pub use testdb::{admin_url, with_database, TestDb};

/// Settings for a test server on `db`: a free port on 127.0.0.1, a small pool, short timeouts.
pub fn test_config(db: &TestDb) -> Config {
    Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        database_url: Some(DatabaseUrl::new(db.url())),
        pool_size: 4,
        connect_timeout: Duration::from_secs(5),
        shutdown_timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

/// The server running in this process on a fresh database.
pub struct TestApp {
    pub app: RunningApp,
    pub db: TestDb,
}

impl TestApp {
    /// A migrated, ready server on a fresh database.
    pub async fn spawn() -> TestApp {
        let db = TestDb::create().await;
        TestApp::spawn_with(db, |_| {}).await
    }

    /// A server on `db`, with settings adjusted by `edit`.
    pub async fn spawn_with(db: TestDb, edit: impl FnOnce(&mut Config)) -> TestApp {
        let mut config = test_config(&db);
        edit(&mut config);
        let app = bigpeer::spawn_app(config)
            .await
            .unwrap_or_else(|e| panic!("the test server did not start: [{}] {e}", e.code()));
        TestApp { app, db }
    }

    /// `GET path` on the server: status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        http_get(self.app.local_addr(), path).await
    }

    /// `POST path` with a JSON body: status and JSON body.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let response = request(self.app.local_addr(), "POST", path, Some(body))
            .await
            .unwrap_or_else(|e| panic!("POST {path} failed: {e}"));
        (response.status, response.json())
    }

    /// Graceful shutdown; the database is dropped when `self` is.
    pub async fn shutdown(self) {
        let TestApp { app, db } = self;
        app.shutdown()
            .await
            .unwrap_or_else(|e| panic!("shutdown failed: [{}] {e}", e.code()));
        drop(db);
    }
}

/// An HTTP response as the tests see it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names in lowercase, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (`Value::Null` when empty); panics when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return serde_json::Value::Null;
        }
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
}

/// `GET path` over a new TCP connection: the status code and the body parsed as JSON.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let response = request(addr, "GET", path, None)
        .await
        .unwrap_or_else(|e| panic!("GET http://{addr}{path} failed: {e}"));
    (response.status, response.json())
}

/// One HTTP request (reqwest, a new connection each time), with an optional JSON body. Errors
/// are transport errors (nothing listening, no answer within 10 s, not HTTP).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json: Option<&serde_json::Value>,
) -> std::io::Result<Response> {
    let io = |e: reqwest::Error| std::io::Error::other(e.to_string());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .map_err(io)?;
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let mut req = client.request(method, format!("http://{addr}{path}"));
    if let Some(v) = json {
        req = req.json(v);
    }
    let resp = req.send().await.map_err(io)?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = resp.bytes().await.map_err(io)?.to_vec();
    Ok(Response {
        status,
        headers,
        body,
    })
}
