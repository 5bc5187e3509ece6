//! Test harness of the end-to-end tests (`tests/it.rs`), and for later issues' tests:
//!
//! - [`TestDb`]: a fresh database per test on a real Postgres, dropped afterwards;
//! - [`TestApp`]: the whole server in-process (`bigpeer::spawn_app`) on a free port, on such a
//!   database;
//! - [`http_get`]: a plain HTTP/1.1 request over a real socket.

pub mod testdb;

use std::net::SocketAddr;
use std::time::Duration;

use bigpeer::config::{Config, DatabaseUrl};
use bigpeer::RunningApp;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

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

    /// Graceful shutdown; the database is dropped when `self` is.
    pub async fn shutdown(self) {
        let TestApp { app, db } = self;
        app.shutdown()
            .await
            .unwrap_or_else(|e| panic!("shutdown failed: [{}] {e}", e.code()));
        drop(db);
    }
}

/// `GET path` over a new TCP connection: the status code and the body parsed as JSON
/// (`Value::Null` for an empty body; a body that is not JSON panics).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = http_get_raw(addr, path)
        .await
        .unwrap_or_else(|e| panic!("GET http://{addr}{path} failed: {e}"));
    let json = if body.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path}: body is not JSON ({e}): {body}"))
    };
    (status, json)
}

/// `GET path` over a new TCP connection: the status code and the body as text.
pub async fn http_get_raw(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "no response within 10s")
        })??;
    let text = String::from_utf8_lossy(&response);
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not HTTP: {text:?}"),
        )
    };
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok((status, dechunk(body)));
    }
    Ok((status, body.to_string()))
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}
