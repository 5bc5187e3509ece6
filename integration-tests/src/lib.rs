//! Test harness of the end-to-end tests (`tests/it.rs`), and for later issues' tests:
//!
//! - [`TestDb`]: a fresh database per test on a real Postgres, dropped afterwards;
//! - [`TestApp`]: the whole server in-process (`bigpeer::spawn_app`) on a free port, on such a
//!   database;
//! - [`request`] and [`http_get`]: plain HTTP/1.1 requests over a real socket.

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

/// One HTTP/1.1 request over a new TCP connection (`Connection: close`), with an optional JSON
/// body. Errors are transport errors (nothing listening, no answer within 10 s, not HTTP).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json: Option<&serde_json::Value>,
) -> std::io::Result<Response> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    let body = json.map(|v| v.to_string()).unwrap_or_default();
    if json.is_some() {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .map_err(|_| invalid("no response within 10s".to_string()))??;
    parse_response(&raw)
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let bad = || invalid(format!("not HTTP: {:?}", String::from_utf8_lossy(raw)));
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(body).ok_or_else(bad)?
    } else {
        body.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::parse_response;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain =
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").expect("plain");
        assert_eq!((plain.status, plain.text().as_str()), (200, "{}"));
        assert_eq!(plain.header("Content-Length"), Some("2"));
        let chunked = parse_response(
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n",
        )
        .expect("chunked");
        assert_eq!(chunked.status, 503);
        assert_eq!(chunked.json(), serde_json::json!({"a": 1}));
        assert!(parse_response(b"garbage").is_err());
    }
}
