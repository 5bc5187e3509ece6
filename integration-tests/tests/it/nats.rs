//! The NATS JetStream sink, against a real NATS server with JetStream on 127.0.0.1:4222 (`bash
//! scripts/test` starts one when none answers). Each test makes its own stream and subject
//! prefix, deleted afterwards. Without a NATS server the tests fail in CI (`CI` set) and are
//! skipped with a notice elsewhere.

use std::time::Duration;

use async_nats::jetstream;
use integration_tests::{TestApp, TestDb};
use serde_json::{json, Value};

const NATS: &str = "127.0.0.1:4222";

/// A JetStream context on the test server, or `None` (after a notice) when none answers and
/// this is not CI.
async fn jetstream() -> Option<jetstream::Context> {
    let reachable = tokio::net::TcpStream::connect(NATS).await.is_ok();
    if !reachable {
        if std::env::var_os("CI").is_some() {
            panic!(
                "the NATS sink's tests need a NATS server with JetStream on {NATS} \
                 (`nats-server -js -a 127.0.0.1 -p 4222`; `bash scripts/test` starts one)"
            );
        }
        eprintln!(
            "SKIPPED: no NATS server on {NATS}; run `nats-server -js -a 127.0.0.1 -p 4222` \
             (Debian package nats-server) or `bash scripts/test`, which starts one"
        );
        return None;
    }
    let client = async_nats::connect(NATS).await.expect("connect to NATS");
    Some(jetstream::new(client))
}

/// A stream of the test's own, capturing `<prefix>.>`; deleted when dropped (even when the test
/// fails).
struct TestStream {
    js: jetstream::Context,
    name: String,
    prefix: String,
}

impl TestStream {
    async fn create(js: &jetstream::Context, duplicate_window: Duration) -> TestStream {
        let tag = format!("{:016x}", rand::random::<u64>());
        let name = format!("bigpeer_it_{tag}");
        let prefix = format!("it{tag}.cdc");
        js.create_stream(jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![format!("{prefix}.>")],
            duplicate_window,
            ..Default::default()
        })
        .await
        .expect("create the test stream");
        TestStream {
            js: js.clone(),
            name,
            prefix,
        }
    }

    /// Messages in the stream.
    async fn count(&self) -> u64 {
        let stream = self.js.get_stream(&self.name).await.expect("stream");
        stream.get_info().await.expect("info").state.messages
    }

    /// Every message, in stream order: subject, `Nats-Msg-Id` and JSON body.
    async fn messages(&self) -> Vec<(String, String, Value)> {
        let stream = self.js.get_stream(&self.name).await.expect("stream");
        let info = stream.get_info().await.expect("info");
        let mut out = Vec::new();
        for seq in info.state.first_sequence..=info.state.last_sequence {
            if info.state.messages == 0 {
                break;
            }
            let m = stream.get_raw_message(seq).await.expect("message");
            let id = m
                .headers
                .get("Nats-Msg-Id")
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            let body: Value = serde_json::from_slice(&m.payload).expect("a JSON event");
            out.push((m.subject.to_string(), id, body));
        }
        out
    }

    /// Waits (bounded) until the stream holds `n` messages.
    async fn until_count(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let have = self.count().await;
            if have >= n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {n} messages in the stream (have {have})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on: a thread of its own.
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let client = async_nats::connect(NATS).await.ok()?;
                jetstream::new(client).delete_stream(&name).await.ok()
            })
        })
        .join();
    }
}

async fn app_on(db: TestDb, prefix: &str) -> TestApp {
    TestApp::spawn_with(db, |c| {
        c.playground = true;
        c.nats_url = Some(bigpeer::config::NatsUrl::new(format!("nats://{NATS}")));
        c.nats_subject_prefix = prefix.to_owned();
    })
    .await
}

async fn execute(app: &TestApp, statement: &str) {
    let (status, body) = app
        .post("/api/v4/store/execute", &json!({ "statement": statement }))
        .await;
    assert_eq!(status, 200, "{statement}: {body}");
}

async fn position(app: &TestApp) -> i64 {
    app.app
        .store()
        .cdc_sink_position(bigpeer::nats::SINK_NAME)
        .await
        .expect("position")
        .expect("the sink's row exists once the server runs")
}

/// The newest committed change's position.
async fn head(app: &TestApp) -> i64 {
    let page = app
        .app
        .store()
        .change_log_page(0, None, 100_000)
        .await
        .expect("change log");
    page.rows.last().map_or(0, |r| r.seq)
}

/// Waits (bounded) until the sink has recorded everything up to the newest change.
async fn until_caught_up(app: &TestApp) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let target = head(app).await;
    while position(app).await < target {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for the sink to reach {target}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_change_is_published_in_order_with_the_event_id_as_message_id() {
    let Some(js) = jetstream().await else { return };
    let stream = TestStream::create(&js, Duration::from_secs(120)).await;
    let app = app_on(TestDb::create().await, &stream.prefix).await;

    execute(
        &app,
        "INSERT INTO cars DOCUMENTS ({'_id': 'a', 'color': 'blue'})",
    )
    .await;
    execute(&app, "UPDATE cars SET color = 'red' WHERE _id = 'a'").await;
    execute(&app, "DELETE FROM cars WHERE _id = 'a'").await;
    execute(&app, "INSERT INTO `odd.name *` DOCUMENTS ({'_id': 1})").await;
    stream.until_count(4).await;
    until_caught_up(&app).await;

    let messages = stream.messages().await;
    assert_eq!(messages.len(), 4, "{messages:#?}");
    let subjects: Vec<&str> = messages.iter().map(|m| m.0.as_str()).collect();
    let p = &stream.prefix;
    assert_eq!(
        subjects,
        vec![
            format!("{p}.cars"),
            format!("{p}.cars"),
            format!("{p}.cars"),
            format!("{p}.odd%2Ename%20%2A"),
        ]
    );
    let methods: Vec<&Value> = messages.iter().map(|m| &m.2["change"]["method"]).collect();
    assert_eq!(
        methods,
        vec![
            &json!("upsert"),
            &json!("update"),
            &json!("remove"),
            &json!("upsert")
        ]
    );
    assert_eq!(
        messages[1].2["change"],
        json!({"method": "update", "oldValue": {"_id": "a", "color": "blue"},
               "newValue": {"_id": "a", "color": "red"}})
    );
    assert_eq!(
        messages[2].2["change"],
        json!({"method": "remove", "value": {"_id": "a", "color": "red"}})
    );
    assert_eq!(messages[3].2["collection"], "odd.name *");
    let mut last = 0;
    for (_, id, event) in &messages {
        assert_eq!(event["type"], "documentChanged", "{event}");
        assert_eq!(
            event["id"].as_str(),
            Some(id.as_str()),
            "Nats-Msg-Id is the event id"
        );
        let seq = event["seq"].as_i64().expect("seq");
        assert!(id.ends_with(&format!(":{seq}")), "{id} {seq}");
        assert!(seq > last, "in sequence order: {messages:#?}");
        last = seq;
    }

    // The same events as the change stream serves to a reader that may read everything.
    let (status, _) = app.get("/readyz").await;
    assert_eq!(status, 200);
    let r = reqwest::Client::new()
        .get(format!(
            "http://{}/api/v4/changes?since=0",
            app.app.local_addr()
        ))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .expect("change stream");
    let mut r = r;
    let mut text = String::new();
    while text.lines().count() < 4 {
        let chunk = tokio::time::timeout(Duration::from_secs(30), r.chunk())
            .await
            .expect("the change stream answers")
            .expect("chunk")
            .expect("more");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let streamed: Vec<Value> = text
        .lines()
        .take(4)
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let published: Vec<Value> = messages.into_iter().map(|m| m.2).collect();
    assert_eq!(published, streamed);
    app.shutdown().await;
}

#[tokio::test]
async fn a_restart_and_a_rewound_position_publish_nothing_twice() {
    let Some(js) = jetstream().await else { return };
    let stream = TestStream::create(&js, Duration::from_secs(120)).await;
    let app = app_on(TestDb::create().await, &stream.prefix).await;
    let start = position(&app).await;
    for i in 0..3 {
        execute(&app, &format!("INSERT INTO t DOCUMENTS ({{'_id': {i}}})")).await;
    }
    stream.until_count(3).await;
    until_caught_up(&app).await;

    // A restart on the same database resumes from the stored position.
    let TestApp { app: running, db } = app;
    running.shutdown().await.expect("shutdown");
    let app = app_on(db, &stream.prefix).await;
    assert!(position(&app).await > start);
    // A crash after publishing, before the position was recorded: the position goes back and
    // the events are published again, under the same message ids.
    assert!(app
        .app
        .store()
        .rewind_cdc_sink(bigpeer::nats::SINK_NAME, start)
        .await
        .expect("rewind"));
    execute(&app, "INSERT INTO t DOCUMENTS ({'_id': 3})").await;
    stream.until_count(4).await;
    until_caught_up(&app).await;

    let messages = stream.messages().await;
    let ids: Vec<Value> = messages.iter().map(|m| m.2["documentId"].clone()).collect();
    assert_eq!(
        ids,
        vec![json!(0), json!(1), json!(2), json!(3)],
        "each once"
    );
    // The re-published ones were acknowledged as duplicates.
    let (_, metrics) = metrics(&app).await;
    assert_eq!(
        metric(&metrics, "bigpeer_cdc_nats_duplicates_total"),
        3,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "bigpeer_cdc_nats_published_total"),
        4,
        "{metrics}"
    );
    app.shutdown().await;
}

async fn metrics(app: &TestApp) -> (u16, String) {
    let r = integration_tests::request(app.app.local_addr(), "GET", "/metrics", None)
        .await
        .expect("metrics");
    (r.status, r.text())
}

fn metric(text: &str, name: &str) -> i64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test]
async fn two_processes_publish_each_event_once() {
    let Some(js) = jetstream().await else { return };
    let stream = TestStream::create(&js, Duration::from_secs(120)).await;
    let first = app_on(TestDb::create().await, &stream.prefix).await;
    let mut config = integration_tests::test_config(&first.db);
    config.playground = true;
    config.nats_url = Some(bigpeer::config::NatsUrl::new(format!("nats://{NATS}")));
    config.nats_subject_prefix = stream.prefix.clone();
    let second = bigpeer::spawn_app(config).await.expect("second server");
    for i in 0..40 {
        let statement = format!("INSERT INTO t DOCUMENTS ({{'_id': {i}}})");
        let addr = if i % 2 == 0 {
            first.app.local_addr()
        } else {
            second.local_addr()
        };
        let r = integration_tests::request(
            addr,
            "POST",
            "/api/v4/store/execute",
            Some(&json!({ "statement": statement })),
        )
        .await
        .expect("request");
        assert_eq!(r.status, 200, "{statement}: {}", r.text());
    }
    stream.until_count(40).await;
    until_caught_up(&first).await;
    let ids: Vec<Value> = stream
        .messages()
        .await
        .into_iter()
        .map(|m| m.2["documentId"].clone())
        .collect();
    assert_eq!(
        ids,
        (0..40).map(|i| json!(i)).collect::<Vec<_>>(),
        "each once, in order"
    );
    // Each event was published by one process only: the stream acknowledged no duplicate
    // (which its duplicate window would otherwise hide from the assertion above).
    let (_, one) = metrics(&first).await;
    let r = integration_tests::request(second.local_addr(), "GET", "/metrics", None)
        .await
        .expect("metrics");
    let two = r.text();
    let sum = |name: &str| metric(&one, name) + metric(&two, name);
    assert_eq!(sum("bigpeer_cdc_nats_published_total"), 40, "{one}\n{two}");
    assert_eq!(sum("bigpeer_cdc_nats_duplicates_total"), 0, "{one}\n{two}");
    second.shutdown().await.expect("second shutdown");
    first.shutdown().await;
}

#[tokio::test]
async fn while_another_process_holds_the_sink_this_one_publishes_nothing() {
    let Some(js) = jetstream().await else { return };
    let stream = TestStream::create(&js, Duration::from_secs(120)).await;
    let app = app_on(TestDb::create().await, &stream.prefix).await;
    let start = position(&app).await;
    // Another process's lease: the sink's row locked, as a process does while it publishes.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(app.db.url())
        .await
        .expect("connect");
    let mut tx = <sqlx::PgConnection as sqlx::Connection>::begin(&mut conn)
        .await
        .expect("begin");
    sqlx::query("SELECT position FROM cdc_sinks WHERE name = 'nats' FOR UPDATE")
        .execute(&mut *tx)
        .await
        .expect("lock the sink");
    execute(&app, "INSERT INTO t DOCUMENTS ({'_id': 'held'})").await;
    // Several of the server's polls (every 200 ms) go by: it skips the locked row.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        stream.count().await,
        0,
        "published while another process held the sink"
    );
    assert_eq!(position(&app).await, start);
    tx.rollback().await.expect("release");
    stream.until_count(1).await;
    until_caught_up(&app).await;
    assert_eq!(stream.count().await, 1);
    let _ = <sqlx::PgConnection as sqlx::Connection>::close(conn).await;
    app.shutdown().await;
}

#[tokio::test]
async fn without_a_stream_the_events_wait_and_flow_once_it_exists() {
    let Some(js) = jetstream().await else { return };
    let tag = format!("{:016x}", rand::random::<u64>());
    let prefix = format!("it{tag}.late");
    let app = app_on(TestDb::create().await, &prefix).await;
    let start = position(&app).await;
    execute(&app, "INSERT INTO t DOCUMENTS ({'_id': 'early'})").await;
    // No stream captures the subject: publishing fails (no responders) and is retried; the
    // position stays.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, text) = metrics(&app).await;
        if metric(&text, "bigpeer_cdc_nats_failures_total") >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed publication: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(position(&app).await, start);

    let name = format!("bigpeer_it_{tag}");
    js.create_stream(jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("{prefix}.>")],
        ..Default::default()
    })
    .await
    .expect("create the stream");
    let stream = TestStream {
        js: js.clone(),
        name,
        prefix,
    };
    execute(&app, "INSERT INTO t DOCUMENTS ({'_id': 'late'})").await;
    stream.until_count(2).await;
    until_caught_up(&app).await;
    let ids: Vec<Value> = stream
        .messages()
        .await
        .into_iter()
        .map(|m| m.2["documentId"].clone())
        .collect();
    assert_eq!(ids, vec![json!("early"), json!("late")]);
    app.shutdown().await;
}

#[tokio::test]
async fn changes_pruned_before_they_were_published_are_announced() {
    let Some(js) = jetstream().await else { return };
    let stream = TestStream::create(&js, Duration::from_secs(120)).await;
    let app = app_on(TestDb::create().await, &stream.prefix).await;
    execute(&app, "INSERT INTO t DOCUMENTS ({'_id': 1})").await;
    stream.until_count(1).await;
    until_caught_up(&app).await;
    let first = stream.messages().await;
    let seq = first[0].2["seq"].as_i64().expect("seq");
    // The sink fell behind (its position goes back) and the log was pruned past it: both at
    // once, so that the sink sees neither or both.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(app.db.url())
        .await
        .expect("connect");
    let mut tx = <sqlx::PgConnection as sqlx::Connection>::begin(&mut conn)
        .await
        .expect("begin");
    for (sql, value) in [
        ("UPDATE cdc_sinks SET position = $1", seq - 1),
        ("DELETE FROM changes WHERE seq <= $1", seq),
        ("UPDATE changes_horizon SET pruned_through = $1", seq),
    ] {
        sqlx::query(sql)
            .bind(value)
            .execute(&mut *tx)
            .await
            .expect(sql);
    }
    tx.commit().await.expect("commit");
    stream.until_count(2).await;
    let messages = stream.messages().await;
    assert_eq!(messages[1].0, format!("{}._requery", stream.prefix));
    assert_eq!(
        messages[1].2,
        json!({"txnID": seq, "type": "requeryRequired", "documents": []})
    );
    assert!(
        messages[1].1.ends_with(&format!(":requery:{seq}")),
        "{}",
        messages[1].1
    );
    let _ = <sqlx::PgConnection as sqlx::Connection>::close(conn).await;
    app.shutdown().await;
}

/// A `nats-server -js` of the test's own, with a user and password, stopped when dropped.
struct OwnServer {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl OwnServer {
    /// `None` (after a notice) when the nats-server binary is not installed.
    async fn start(user: &str, pass: &str) -> Option<OwnServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        OwnServer::start_on(port, user, pass).await
    }

    async fn start_on(port: u16, user: &str, pass: &str) -> Option<OwnServer> {
        let bin = [
            "nats-server",
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
        ]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok()
        });
        let Some(bin) = bin else {
            eprintln!(
                "SKIPPED: no nats-server binary (Debian package nats-server) to test credentials"
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let child = std::process::Command::new(bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["--user", user, "--pass", pass, "--store_dir"])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nats-server");
        let server = OwnServer {
            child,
            port,
            _dir: dir,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(server)
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn credentials_in_the_url_log_the_sink_in() {
    let Some(server) = OwnServer::start("cdc", "p@ss-w0rd").await else {
        return;
    };
    let client = async_nats::ConnectOptions::new()
        .user_and_password("cdc".into(), "p@ss-w0rd".into())
        .connect(format!("nats://127.0.0.1:{}", server.port))
        .await
        .expect("connect with the password");
    let js = jetstream::new(client);
    let stream = TestStream::create(&js, Duration::from_secs(120)).await;
    let url = format!("nats://cdc:p%40ss-w0rd@127.0.0.1:{}", server.port);
    let app = TestApp::spawn_with(TestDb::create().await, |c| {
        c.playground = true;
        c.nats_url = Some(bigpeer::config::NatsUrl::new(url));
        c.nats_subject_prefix = stream.prefix.clone();
    })
    .await;
    execute(&app, "INSERT INTO t DOCUMENTS ({'_id': 'in'})").await;
    stream.until_count(1).await;
    let messages = stream.messages().await;
    assert_eq!(messages[0].2["documentId"], "in");
    app.shutdown().await;
}

#[tokio::test]
async fn a_nats_server_that_comes_up_late_gets_the_events_that_waited() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("nats://u:p@127.0.0.1:{port}");
    let prefix = format!("it{:016x}.down", rand::random::<u64>());
    // The server starts (and takes writes) while nothing answers on the NATS port.
    let app = TestApp::spawn_with(TestDb::create().await, |c| {
        c.playground = true;
        c.nats_url = Some(bigpeer::config::NatsUrl::new(url));
        c.nats_subject_prefix = prefix.clone();
    })
    .await;
    let start = position(&app).await;
    execute(&app, "INSERT INTO t DOCUMENTS ({'_id': 'waited'})").await;
    let Some(server) = OwnServer::start_on(port, "u", "p").await else {
        app.shutdown().await;
        return;
    };
    assert_eq!(
        position(&app).await,
        start,
        "nothing was recorded as published"
    );
    let client = async_nats::ConnectOptions::new()
        .user_and_password("u".into(), "p".into())
        .connect(format!("nats://127.0.0.1:{port}"))
        .await
        .expect("connect");
    let js = jetstream::new(client);
    let name = format!("bigpeer_it_{:016x}", rand::random::<u64>());
    js.create_stream(jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("{prefix}.>")],
        ..Default::default()
    })
    .await
    .expect("create the stream");
    let stream = TestStream { js, name, prefix };
    stream.until_count(1).await;
    until_caught_up(&app).await;
    let messages = stream.messages().await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].2["documentId"], "waited");
    app.shutdown().await;
    drop(server);
}
