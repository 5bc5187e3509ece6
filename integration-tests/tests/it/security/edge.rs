//! See `super`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bigpeer::auth::Permissions;
use bigpeer_schema::wire::{Msg, PushResult, SUBPROTOCOL};
use bigpeer_schema::{SiteId, VersionVector};
use integration_tests::{TestApp, TestDb};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::sync::{change, key, local_doc, Peer};

/// The longest any answer may take here. Generous: it only tells "answered" from "left hanging"
/// (the servers below are set up so that hanging would last far longer).
const BOUND: Duration = Duration::from_secs(20);

const ADMIN_KEY: &str = "an-admin-key-of-enough-length";

/// Sends `head` (a request's head, without the blank line) and a blank line; reads the answer
/// until the server closes the connection. `None`: no answer within [`BOUND`].
async fn send_head(addr: SocketAddr, head: &str) -> Option<(u16, serde_json::Value)> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write the head");
    let mut raw = Vec::new();
    tokio::time::timeout(BOUND, s.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    Some(parse(&raw))
}

fn parse(raw: &[u8]) -> (u16, serde_json::Value) {
    let text = String::from_utf8_lossy(raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// The error code of either error body (`{code}` or `/store/execute`'s `{error: {code}}`).
fn code(body: &serde_json::Value) -> &str {
    body["code"]
        .as_str()
        .or_else(|| body["error"]["code"].as_str())
        .unwrap_or("")
}

/// Reads until the server closes the connection (or resets it). False: still open after
/// [`BOUND`].
async fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(BOUND, read_all).await.is_ok()
}

/// A server whose body timeout is far beyond [`BOUND`]: an answer within the bound was given
/// without waiting for the body.
async fn patient_app() -> TestApp {
    TestApp::spawn_with(TestDb::create().await, |c| {
        c.admin_key = Some(bigpeer::config::AdminKey::new(ADMIN_KEY));
        c.body_timeout = Duration::from_secs(600);
    })
    .await
}

#[tokio::test]
async fn bodies_are_not_read_before_the_credentials_are_checked() {
    let app = patient_app().await;
    let addr = app.app.local_addr();
    let body_head = "Content-Type: application/json\r\nContent-Length: 4000000";
    let cases = [
        (
            "/api/v4/store/execute",
            None,
            401,
            "auth/missing-credentials",
        ),
        (
            "/api/v4/store/execute",
            Some("bpk_nosuchkey"),
            401,
            "auth/invalid-key",
        ),
        ("/api/v4/store/find", None, 401, "auth/missing-credentials"),
        (
            "/api/v4/store/findbyid",
            Some("not-even-a-key"),
            401,
            "auth/invalid-key",
        ),
        ("/api/v4/store/count", None, 401, "auth/missing-credentials"),
        (
            "/api/v4/store/write",
            Some("bpk_nosuchkey"),
            401,
            "auth/invalid-key",
        ),
        ("/api/v4/admin/keys", None, 401, "auth/missing-credentials"),
        (
            "/api/v4/admin/keys",
            Some("bpk_nosuchkey"),
            403,
            "auth/forbidden",
        ),
    ];
    for (path, token, status, want) in cases {
        let auth = token.map_or(String::new(), |t| format!("\r\nAuthorization: Bearer {t}"));
        // The head promises 4 MB of body; none of it is ever sent.
        let answer = send_head(addr, &format!("POST {path} HTTP/1.1\r\n{body_head}{auth}")).await;
        let (got, body) =
            answer.unwrap_or_else(|| panic!("{path} waited for a body before checking the key"));
        assert_eq!((got, code(&body)), (status, want), "{path}: {body}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn admin_routes_reveal_nothing_of_their_body_to_strangers() {
    let app = patient_app().await;
    // A body that does not parse, with unknown fields: without the admin key, the answer is
    // about the key only, never about the body (which would list the accepted fields).
    for (token, status, want) in [
        (None, 401, "auth/missing-credentials"),
        (Some("wrong"), 403, "auth/forbidden"),
        (Some("an-admin-key-of-enough-lengtX"), 403, "auth/forbidden"),
        (
            Some("an-admin-key-of-enough-length-and-more"),
            403,
            "auth/forbidden",
        ),
    ] {
        let mut req = reqwest::Client::new()
            .post(format!("{}/api/v4/admin/keys", app.app.url()))
            .header("Content-Type", "application/json")
            .body(r#"{"nmae": 1, "guess": true}"#);
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let resp = req.send().await.expect("answer");
        assert_eq!(resp.status().as_u16(), status);
        let body: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(code(&body), want, "{body}");
        let text = body.to_string();
        for field in ["name", "description", "expiresAt", "permissions", "nmae"] {
            assert!(!text.contains(field), "{field} revealed: {text}");
        }
    }
    // With the key, the same body gets the parse error.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v4/admin/keys", app.app.url()))
        .header("Authorization", format!("Bearer {ADMIN_KEY}"))
        .header("Content-Type", "application/json")
        .body(r#"{"nmae": 1}"#)
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status().as_u16(), 400);
    app.shutdown().await;
}

#[tokio::test]
async fn slow_bodies_time_out_and_close_the_connection() {
    let app = TestApp::spawn_with(TestDb::create().await, |c| {
        c.body_timeout = Duration::from_secs(1);
    })
    .await;
    let token = key(&app, Permissions::all()).await;
    let addr = app.app.local_addr();
    let routes = [
        "/api/v4/store/execute",
        "/api/v4/store/find",
        "/api/v4/store/write",
    ];
    for path in routes {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"statement\": "
        );
        s.write_all(head.as_bytes()).await.expect("write");
        // A byte now and then: the body never completes.
        let mut raw = Vec::new();
        let trickle_and_read = async {
            let mut buf = [0u8; 4096];
            loop {
                tokio::select! {
                    r = s.read(&mut buf) => match r {
                        Ok(0) | Err(_) => return,
                        Ok(n) => raw.extend_from_slice(&buf[..n]),
                    },
                    () = tokio::time::sleep(Duration::from_millis(200)) => {
                        if s.write_all(b" ").await.is_err() {
                            return;
                        }
                    }
                }
            }
        };
        assert!(
            tokio::time::timeout(BOUND, trickle_and_read).await.is_ok(),
            "{path}: a trickled body kept the connection open"
        );
        let (status, body) = parse(&raw);
        assert_eq!(
            (status, code(&body)),
            (408, "request/timeout"),
            "{path}: {body}"
        );
    }
    // A body that arrives whole is still read.
    let (status, _) = integration_tests::request(addr, "GET", "/healthz", None)
        .await
        .map(|r| (r.status, ()))
        .expect("healthz");
    assert_eq!(status, 200);
    app.shutdown().await;
}

#[tokio::test]
async fn slow_request_heads_are_cut_off() {
    let app = TestApp::spawn_with(TestDb::create().await, |c| {
        c.header_timeout = Duration::from_secs(1);
        c.keep_alive_timeout = Duration::from_secs(1);
    })
    .await;
    let addr = app.app.local_addr();
    // Variant 1: the first request's head, a byte at a time.
    // Variant 2: a first request answered, then the next one's head trickled on the same
    // (kept-alive) connection.
    // Variant 3: the same after a request whose chunked body is never finished (the server drains
    // what it did not read).
    for variant in 1..=3 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        if variant >= 2 {
            let first = if variant == 2 {
                format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n")
            } else {
                format!(
                    "POST /api/v4/store/execute HTTP/1.1\r\nHost: {addr}\r\n\
                     Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n1\r\n{{\r\n"
                )
            };
            s.write_all(first.as_bytes()).await.expect("write");
            let mut buf = [0u8; 1024];
            let n = tokio::time::timeout(BOUND, s.read(&mut buf))
                .await
                .expect("an answer to the first request")
                .expect("read");
            assert!(n > 0, "variant {variant}: the first request was answered");
        }
        // A head that never ends; after the unfinished chunked body, more valid chunks.
        let trickle: &[u8] = if variant == 3 {
            b"1\r\na\r\n"
        } else {
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        };
        let trickle_until_closed = async {
            let mut buf = [0u8; 1024];
            for byte in trickle.iter().cycle() {
                tokio::select! {
                    r = s.read(&mut buf) => match r {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    },
                    () = tokio::time::sleep(Duration::from_millis(100)) => {
                        if s.write_all(&[*byte]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        };
        assert!(
            tokio::time::timeout(BOUND, trickle_until_closed)
                .await
                .is_ok(),
            "variant {variant}: a trickled request head kept the connection open"
        );
    }
    // Prompt clients are served as before, and a sync session (a request in progress for as
    // long as it lasts) is not cut for being quiet.
    assert_eq!(app.get("/healthz").await.0, 200);
    let token = key(&app, Permissions::all()).await;
    let (mut p, _) = Peer::open(&app, &token).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    p.send(&Msg::Ping { nonce: 7 }).await;
    assert_eq!(p.recv().await, Msg::Pong { nonce: 7 });
    app.shutdown().await;
}

/// A connection from `ip` (any 127.x.y.z is this machine).
async fn connect_from(ip: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((ip, 0)))
        .expect("bind the client address");
    socket.connect(addr).await.expect("connect")
}

/// `GET /healthz` on an open connection (kept alive): the status.
async fn healthz_on(s: &mut TcpStream) -> Option<u16> {
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .ok()?;
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(BOUND, s.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    (n > 0).then(|| parse(&buf[..n]).0)
}

#[tokio::test]
async fn connections_over_the_per_ip_cap_are_refused() {
    let app = TestApp::spawn_with(TestDb::create().await, |c| {
        c.max_connections_per_ip = 3;
        // Idle connections stay while the test runs.
        c.header_timeout = Duration::from_secs(60);
        c.keep_alive_timeout = Duration::from_secs(60);
    })
    .await;
    let addr = app.app.local_addr();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = connect_from([127, 0, 0, 1], addr).await;
        assert_eq!(healthz_on(&mut s).await, Some(200));
        held.push(s);
    }
    // Over the cap: closed at once, whatever it sends, and never answered.
    for attempt in 0..3 {
        let mut extra = connect_from([127, 0, 0, 1], addr).await;
        let _ = extra
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let mut raw = Vec::new();
        let read = tokio::time::timeout(BOUND, extra.read_to_end(&mut raw)).await;
        assert!(
            read.is_ok(),
            "attempt {attempt}: the extra connection was left open"
        );
        assert!(
            raw.is_empty(),
            "attempt {attempt}: answered: {:?}",
            String::from_utf8_lossy(&raw)
        );
    }
    // The connections within the cap still work, and so does another client address.
    for s in &mut held {
        assert_eq!(healthz_on(s).await, Some(200));
    }
    let mut other = connect_from([127, 0, 0, 2], addr).await;
    assert_eq!(healthz_on(&mut other).await, Some(200));
    // A closed connection frees its place.
    drop(held.pop());
    let mut freed = None;
    for _ in 0..100 {
        let mut s = connect_from([127, 0, 0, 1], addr).await;
        if healthz_on(&mut s).await == Some(200) {
            freed = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        freed.is_some(),
        "the place of a closed connection was not freed"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_total_cap_are_refused() {
    let app = TestApp::spawn_with(TestDb::create().await, |c| {
        c.max_connections = 2;
        c.max_connections_per_ip = 0;
        c.header_timeout = Duration::from_secs(60);
        c.keep_alive_timeout = Duration::from_secs(60);
    })
    .await;
    let addr = app.app.local_addr();
    let mut a = connect_from([127, 0, 0, 1], addr).await;
    let mut b = connect_from([127, 0, 0, 3], addr).await;
    assert_eq!(healthz_on(&mut a).await, Some(200));
    assert_eq!(healthz_on(&mut b).await, Some(200));
    for ip in [[127, 0, 0, 1], [127, 0, 0, 4]] {
        let mut extra = connect_from(ip, addr).await;
        assert!(
            closed_by_server(&mut extra).await,
            "{ip:?}: over the cap, still open"
        );
    }
    assert_eq!(healthz_on(&mut a).await, Some(200));
    app.shutdown().await;
}

/// A WebSocket upgrade of `/api/v4/sync`: the HTTP status of a refusal, or 101.
async fn upgrade_status(app: &TestApp) -> u16 {
    let url = format!("ws://{}/api/v4/sync", app.app.local_addr());
    let mut req = url.into_client_request().expect("request");
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            if resp.status().as_u16() == 429 {
                assert!(resp.headers().contains_key("retry-after"));
                let body: serde_json::Value =
                    serde_json::from_slice(resp.body().as_deref().unwrap_or(b"{}")).expect("json");
                assert_eq!(code(&body), "request/rate-limited", "{body}");
            }
            resp.status().as_u16()
        }
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

#[tokio::test]
async fn sync_upgrades_count_against_the_client_address_limit() {
    let app = TestApp::spawn_with(TestDb::create().await, |c| {
        c.rate_limit_per_ip = 1;
    })
    .await;
    // Bursts of twice the rate: well before 20 upgrades, one is refused.
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(upgrade_status(&app).await);
        if statuses.last() == Some(&429) {
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert!(statuses[0] == 101, "{statuses:?}");
    app.shutdown().await;
}

#[tokio::test]
async fn pushes_over_the_key_rate_limit_are_told_and_throttled_not_lost() {
    let app = TestApp::spawn_with(TestDb::create().await, |c| {
        c.rate_limit_per_key = 10;
    })
    .await;
    let token = key(&app, Permissions::all()).await;
    let mut p = Peer::connect(&app).await;
    p.hello_as(SiteId(77), &token).await;
    assert!(matches!(p.recv().await, Msg::Welcome { .. }));
    const PUSHES: u64 = 40;
    for push in 1..=PUSHES {
        let doc = local_doc(77, &format!(r#"{{"n": {push}}}"#));
        p.send(&Msg::Push {
            push,
            changes: vec![change(
                "cars",
                &format!("c{push}"),
                doc.delta(&VersionVector::new()),
            )],
        })
        .await;
    }
    let (mut acked, mut told) = (Vec::new(), 0);
    while acked.len() < PUSHES as usize {
        match p.recv().await {
            Msg::PushAck { push, results, .. } => {
                assert_eq!(results, vec![PushResult::Applied], "push {push}");
                acked.push(push);
            }
            Msg::Error {
                code, fatal: false, ..
            } if code == "request/rate-limited" => told += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        acked,
        (1..=PUSHES).collect::<Vec<_>>(),
        "every push answered, in order"
    );
    assert!(
        told > 0,
        "pushes beyond the limit went through without a word"
    );
    // Everything pushed is stored.
    let body = crate::sync::execute(&app, "SELECT COUNT(*) AS n FROM cars").await;
    assert_eq!(body["items"][0]["n"], json!(PUSHES), "{body}");
    app.shutdown().await;
}

#[tokio::test]
async fn metrics_labels_do_not_grow_with_made_up_methods_or_paths() {
    let app = TestApp::spawn().await;
    let addr = app.app.local_addr();
    for i in 0..30 {
        let _ = send_head(addr, &format!("MADEUP{i} /healthz HTTP/1.1")).await;
        let _ = send_head(addr, &format!("GET /no/such/path/{i} HTTP/1.1")).await;
        let _ = send_head(addr, &format!("BREW{i} /x{i} HTTP/1.1")).await;
    }
    let text = reqwest::get(format!("{}/metrics", app.app.url()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for made_up in ["MADEUP", "BREW", "/no/such", "/x1"] {
        assert!(!text.contains(made_up), "{made_up} became a label:\n{text}");
    }
    let series = text
        .lines()
        .filter(|l| l.starts_with("bigpeer_http_requests_total{"))
        .count();
    assert!(series <= 6, "{series} request series:\n{text}");
    assert!(text.contains("method=\"other\""), "{text}");
    app.shutdown().await;
}

/// A TCP proxy to Postgres that the test can cut (connections refused, open ones broken) and
/// restore, to play a Postgres outage without touching the shared server.
struct Proxy {
    addr: SocketAddr,
    upstream: String,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    pipes: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accepted: Arc<AtomicUsize>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let p = Proxy {
            addr,
            upstream,
            task: Mutex::new(None),
            pipes: Arc::default(),
            accepted: Arc::default(),
        };
        p.serve(listener);
        p
    }

    fn serve(&self, listener: TcpListener) {
        let (upstream, pipes, accepted) = (
            self.upstream.clone(),
            self.pipes.clone(),
            self.accepted.clone(),
        );
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let upstream = upstream.clone();
                let pipe = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                pipes.lock().expect("pipes").push(pipe);
            }
        });
        *self.task.lock().expect("task") = Some(task);
    }

    /// Postgres goes away: new connections are refused, open ones are broken.
    fn cut(&self) {
        if let Some(t) = self.task.lock().expect("task").take() {
            t.abort();
        }
        for pipe in self.pipes.lock().expect("pipes").drain(..) {
            pipe.abort();
        }
    }

    /// Postgres is back, at the same address.
    async fn restore(&self) {
        let mut listener = None;
        for _ in 0..100 {
            match TcpListener::bind(self.addr).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        self.serve(listener.expect("rebind the proxy's port"));
    }
}

/// `POST /api/v4/store/execute` over a fresh connection: status and error code.
async fn run(app: &TestApp, token: &str, statement: &str) -> (u16, String) {
    let resp = tokio::time::timeout(
        BOUND,
        reqwest::Client::new()
            .post(format!("{}/api/v4/store/execute", app.app.url()))
            .header("Authorization", format!("Bearer {token}"))
            .json(&json!({ "statement": statement }))
            .send(),
    )
    .await
    .unwrap_or_else(|_| panic!("{statement}: no answer: the request hung"))
    .expect("answer");
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    (status, code(&body).to_owned())
}

#[tokio::test]
async fn a_postgres_outage_fails_fast_and_recovery_needs_no_retries() {
    let db = TestDb::create().await;
    let upstream = {
        let opts: sqlx::postgres::PgConnectOptions = db.url().parse().expect("url");
        format!("{}:{}", opts.get_host(), opts.get_port())
    };
    let proxy = Proxy::start(upstream.clone()).await;
    let proxied = db.url().replacen(&upstream, &proxy.addr.to_string(), 1);
    assert_ne!(proxied, db.url(), "the URL names the proxy");
    let app = TestApp::spawn_with(db, move |c| {
        c.database_url = Some(bigpeer::config::DatabaseUrl::new(proxied));
        // A request that waits for a connection would wait far beyond BOUND.
        c.connect_timeout = Duration::from_secs(120);
    })
    .await;
    let token = key(&app, Permissions::all()).await;
    // Warm every pool (the shared one and the HTTP workers' read pools).
    for i in 0..5 {
        assert_eq!(
            run(
                &app,
                &token,
                &format!("INSERT INTO cars DOCUMENTS ({{'_id': 'w{i}'}})")
            )
            .await
            .0,
            200
        );
    }
    for _ in 0..20 {
        assert_eq!(run(&app, &token, "SELECT * FROM cars").await.0, 200);
    }
    let mut peer = Peer::connect(&app).await;
    peer.hello_as(SiteId(77), &token).await;
    assert!(matches!(peer.recv().await, Msg::Welcome { .. }));

    proxy.cut();
    // The server notices (readiness says so) ...
    let mut noticed = false;
    for _ in 0..100 {
        if app.get("/readyz").await.0 == 503
            && app.get("/readyz").await.1["code"] == "store/unavailable"
        {
            noticed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(noticed, "the outage was not noticed");
    // ... and then every request that needs Postgres is answered 503 at once.
    for statement in [
        "SELECT * FROM cars",
        "INSERT INTO cars DOCUMENTS ({'_id': 'x'})",
    ] {
        for _ in 0..3 {
            assert_eq!(
                run(&app, &token, statement).await,
                (503, "store/unavailable".into()),
                "{statement}"
            );
        }
    }
    let legacy = reqwest::Client::new()
        .post(format!("{}/api/v4/store/find", app.app.url()))
        .header("Authorization", format!("Bearer {token}"))
        .json(&json!({"collection": "cars", "query": "true"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(legacy.status().as_u16(), 503);
    assert_eq!(upgrade_status(&app).await, 503, "sync upgrades too");
    // A live sync session's push: a fatal store/unavailable at once (the peer reconnects later).
    let doc = local_doc(77, r#"{"n": 1}"#);
    peer.send(&Msg::Push {
        push: 1,
        changes: vec![change("cars", "p1", doc.delta(&VersionVector::new()))],
    })
    .await;
    peer.expect_fatal("store/unavailable").await;

    proxy.restore().await;
    let mut back = false;
    for _ in 0..200 {
        if app.get("/readyz").await.0 == 200 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "the recovery was not noticed");
    // Once ready, no request meets a connection from before the outage.
    for i in 0..20 {
        assert_eq!(
            run(&app, &token, "SELECT * FROM cars").await,
            (200, String::new()),
            "read {i}"
        );
        assert_eq!(
            run(
                &app,
                &token,
                &format!("INSERT INTO cars DOCUMENTS ({{'_id': 'after{i}'}})")
            )
            .await,
            (200, String::new()),
            "write {i}"
        );
    }
    assert!(proxy.accepted.load(Ordering::SeqCst) > 0);
    app.shutdown().await;
}

#[tokio::test]
async fn before_its_welcome_a_peer_cannot_make_the_server_buffer_large_messages() {
    use futures_util::SinkExt as _;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
    use tokio_tungstenite::tungstenite::Message;

    let app = TestApp::spawn().await;
    let token = key(&app, Permissions::all()).await;
    // A Hello whose token alone is 100 KB.
    let mut p = Peer::connect(&app).await;
    p.hello_as(SiteId(77), &"x".repeat(100 * 1024)).await;
    p.expect_fatal("protocol/frame-too-large").await;
    // Any large message first.
    let mut p = Peer::connect(&app).await;
    p.ws.send(Message::Binary(vec![0x01; 200 * 1024].into()))
        .await
        .expect("send");
    p.expect_fatal("protocol/frame-too-large").await;
    // The same in small fragments (each within the limit, together over it).
    let mut p = Peer::connect(&app).await;
    let piece = vec![0x01; 16 * 1024];
    for i in 0..8 {
        let opcode = if i == 0 {
            OpCode::Data(Data::Binary)
        } else {
            OpCode::Data(Data::Continue)
        };
        let header = FrameHeader {
            is_final: i == 7,
            opcode,
            ..FrameHeader::default()
        };
        if p.ws
            .send(Message::Frame(Frame::from_payload(
                header,
                piece.clone().into(),
            )))
            .await
            .is_err()
        {
            break;
        }
    }
    p.expect_fatal("protocol/frame-too-large").await;
    // A small Hello is welcomed, and after the welcome large messages are fine.
    let mut p = Peer::connect(&app).await;
    p.hello_as(SiteId(77), &token).await;
    assert!(matches!(p.recv().await, Msg::Welcome { .. }));
    let big = "y".repeat(512 * 1024);
    let doc = local_doc(77, &format!(r#"{{"text": "{big}"}}"#));
    p.send(&Msg::Push {
        push: 1,
        changes: vec![change("notes", "big", doc.delta(&VersionVector::new()))],
    })
    .await;
    match p.recv().await {
        Msg::PushAck { results, .. } => assert_eq!(results, vec![PushResult::Applied]),
        other => panic!("expected the push's ack, got {other:?}"),
    }
    app.shutdown().await;
}
