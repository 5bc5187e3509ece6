//! Small peers against the big peer, end to end: the real `smallpeer` library (SQLite stores in
//! temporary directories, its sync client over real WebSockets) against the server in-process on
//! a real Postgres.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bigpeer::auth::{KeyStore, NewKey, Permissions};
use integration_tests::{TestApp, TestDb};
use rand::{RngExt as _, SeedableRng as _};
use serde_json::{json, Value as Json};
use smallpeer::sync::{SharedStore, SubscriptionPhase, SyncClient, SyncConfig, SyncHandle};
use smallpeer::Store;

/// How long any wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

async fn key(app: &TestApp, perms: Permissions) -> String {
    KeyStore::new(app.app.store().clone())
        .create(NewKey {
            name: "peer".into(),
            permissions: perms,
            ..NewKey::default()
        })
        .await
        .expect("create key")
        .secret
}

async fn admin(app: &TestApp) -> String {
    key(app, Permissions::all()).await
}

/// `POST /api/v4/store/execute` with `token`: the response body (status 200 asserted).
async fn http(app: &TestApp, token: &str, statement: &str, args: Json) -> Json {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v4/store/execute", app.app.url()))
        .header("Authorization", format!("Bearer {token}"))
        .json(&json!({ "statement": statement, "args": args }))
        .send()
        .await
        .expect("execute");
    let status = resp.status().as_u16();
    let body: Json = resp.json().await.expect("json");
    assert_eq!(status, 200, "{statement}: {body}");
    body
}

/// The server's live documents of a collection, ordered by `_id`.
async fn server_docs(app: &TestApp, token: &str, coll: &str) -> Json {
    let body = http(app, token, &format!("SELECT * FROM {coll}"), json!({})).await;
    sorted(body["items"].clone())
}

fn sorted(v: Json) -> Json {
    let mut items = v.as_array().cloned().unwrap_or_default();
    items.sort_by_key(|d| d["_id"].to_string());
    Json::Array(items)
}

/// Polls `f` every 20 ms until it gives a value; panics after [`WAIT`].
async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A small peer: a store in a temporary directory and, while started, its sync client.
struct Peer {
    dir: tempfile::TempDir,
    store: SharedStore,
    config: SyncConfig,
    sync: Option<SyncHandle>,
}

fn sync_url(app: &TestApp) -> String {
    let scheme = if app.app.url().starts_with("https") {
        "wss"
    } else {
        "ws"
    };
    format!("{scheme}://{}", app.app.local_addr())
}

impl Peer {
    fn new(app: &TestApp, token: &str, subs: &[&str]) -> Peer {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_dir(dir.path()).expect("open store");
        let mut config = SyncConfig::new(sync_url(app), token);
        config.backoff_min = Duration::from_millis(50);
        config.backoff_max = Duration::from_millis(500);
        for q in subs {
            config = config.subscribe(*q, Json::Null).expect("subscription");
        }
        Peer {
            dir,
            store: Arc::new(Mutex::new(store)),
            config,
            sync: None,
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    fn start(&mut self) {
        assert!(self.sync.is_none(), "already started");
        self.sync =
            Some(SyncClient::start(self.store.clone(), self.config.clone()).expect("start sync"));
    }

    async fn stop(&mut self) {
        if let Some(h) = self.sync.take() {
            h.stop().await;
        }
    }

    fn sync(&self) -> &SyncHandle {
        self.sync.as_ref().expect("started")
    }

    fn exec(&self, statement: &str) -> smallpeer::QueryResult {
        self.store
            .lock()
            .expect("store")
            .execute(statement, &Default::default())
            .unwrap_or_else(|e| panic!("{statement}: {e}"))
    }

    /// The peer's live documents of a collection as JSON, ordered by `_id`.
    fn docs(&self, coll: &str) -> Json {
        let docs = self
            .store
            .lock()
            .expect("store")
            .documents(coll)
            .expect("documents");
        let text = bigpeer_schema::Value::Array(docs).to_json_string();
        sorted(serde_json::from_str(&text).expect("json"))
    }

    async fn synced(&self) {
        tokio::time::timeout(WAIT, self.sync().wait_until_synced())
            .await
            .unwrap_or_else(|_| panic!("not synced within the timeout: {:?}", self.sync().status()))
            .expect("synced");
    }

    async fn pushed(&self) {
        tokio::time::timeout(WAIT, self.sync().wait_until_pushed())
            .await
            .expect("pushed within the timeout")
            .expect("pushed");
    }

    fn received(&self) -> u64 {
        self.sync().status().stats.changes_received
    }

    /// See [`hold_after_first_batch`].
    async fn hold_after_first_batch(&self) -> MutexGuard<'_, Store> {
        hold_after_first_batch(&self.store, self.sync()).await
    }
}

/// Holds the store as soon as a first batch is applied, so that the sync cannot get further
/// until the guard is dropped, however fast it is.
///
/// The lock is taken blocking, on the test's (single) runtime thread: a batch being applied in the
/// blocking pool finishes and lets go, while the session's next step (counting the batch,
/// starting the next one) waits for this thread to yield. Polling with `try_lock` instead misses
/// the short gaps between batches that are read ahead and applied back to back.
async fn hold_after_first_batch<'a>(
    store: &'a SharedStore,
    sync: &SyncHandle,
) -> MutexGuard<'a, Store> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let guard = store.lock().expect("store lock");
        if sync.status().stats.changes_received > 0 {
            return guard;
        }
        drop(guard);
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for the first batch"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits until every peer holds exactly the server's documents of `coll`; returns them.
async fn converge(app: &TestApp, token: &str, coll: &str, peers: &[&Peer]) -> Json {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let server = server_docs(app, token, coll).await;
        let all: Vec<Json> = peers.iter().map(|p| p.docs(coll)).collect();
        if all.iter().all(|d| *d == server) {
            return server;
        }
        if tokio::time::Instant::now() >= deadline {
            for (i, d) in all.iter().enumerate() {
                eprintln!("peer {i}: {d}");
            }
            panic!("the peers did not converge on the server's state {server}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_write_on_one_peer_reaches_another_peer_and_http() {
    let app = TestApp::spawn().await;
    let token = admin(&app).await;
    let mut a = Peer::new(&app, &token, &["SELECT * FROM notes"]);
    let mut b = Peer::new(&app, &token, &["SELECT * FROM notes"]);
    a.start();
    b.start();
    a.synced().await;
    b.synced().await;
    let mut observer = b
        .store
        .lock()
        .expect("store")
        .observe("SELECT * FROM notes ORDER BY _id", &Default::default())
        .expect("observe");
    let first = observer.next().await.expect("first").expect("result");
    assert!(first.is_empty());

    a.exec("INSERT INTO notes DOCUMENTS ({'_id': 'n1', 'text': 'hello'})");
    a.pushed().await;
    // B's observer fires with the note.
    let seen = tokio::time::timeout(WAIT, observer.next())
        .await
        .expect("B's observer fires")
        .expect("store alive")
        .expect("result");
    assert_eq!(
        bigpeer_schema::Value::Array(seen.to_vec()).to_json_string(),
        r#"[{"_id":"n1","text":"hello"}]"#
    );
    assert_eq!(
        server_docs(&app, &token, "notes").await,
        json!([{"_id": "n1", "text": "hello"}])
    );
    // B edits it back; A gets the edit.
    b.exec("UPDATE notes SET text = 'hi' WHERE _id = 'n1'");
    b.pushed().await;
    eventually("A to get B's edit", || {
        (a.docs("notes") == json!([{"_id": "n1", "text": "hi"}])).then_some(())
    })
    .await;
    let stats = a.sync().status().stats;
    assert_eq!(stats.pushes, 1, "{stats:?}");
    a.stop().await;
    b.stop().await;
    app.shutdown().await;
}

/// A change refused for a missing base is asked for again after a restart, even though no
/// subscription covers it any more and the cursor has moved on: the store remembers it as wanted.
#[tokio::test]
async fn a_wanted_document_is_asked_for_again_in_the_next_session() {
    let app = TestApp::spawn().await;
    let token = admin(&app).await;
    http(
        &app,
        &token,
        "INSERT INTO w DOCUMENTS ({'_id': 'x', 'n': 1})",
        json!({}),
    )
    .await;
    let mut a = Peer::new(&app, &token, &["SELECT * FROM w"]);
    a.start();
    a.synced().await;
    let x = bigpeer_schema::DocId::string("x");
    let first = a
        .store
        .lock()
        .expect("a")
        .doc_state("w", &x)
        .expect("read")
        .expect("x at a")
        .vv;
    http(
        &app,
        &token,
        "UPDATE w SET n = 2 WHERE _id = 'x'",
        json!({}),
    )
    .await;
    eventually("the update at a", || {
        (a.docs("w") == json!([{"_id": "x", "n": 2}])).then_some(())
    })
    .await;
    // A delta of the update, against a state b never had: b refuses it and wants x.
    let later = a
        .store
        .lock()
        .expect("a")
        .delta_since("w", &x, &first)
        .expect("read")
        .expect("x at a");
    a.stop().await;
    let mut b = Peer::new(&app, &token, &[]);
    let outcomes = b
        .store
        .lock()
        .expect("b")
        .apply_remote(&[later], &[])
        .expect("apply");
    assert!(matches!(
        outcomes[0],
        smallpeer::MergeOutcome::Refused { .. }
    ));
    // b subscribes to nothing: only its wanted list can bring x.
    b.start();
    eventually("x at b through the want", || {
        (b.docs("w") == json!([{"_id": "x", "n": 2}])).then_some(())
    })
    .await;
    assert!(b
        .store
        .lock()
        .expect("b")
        .wanted()
        .expect("wanted")
        .is_empty());
    assert!(b.sync().status().stats.wants_sent >= 1);
    b.stop().await;
    app.shutdown().await;
}

#[tokio::test]
async fn an_http_write_reaches_a_subscribed_peer_live() {
    let app = TestApp::spawn().await;
    let token = admin(&app).await;
    let mut p = Peer::new(&app, &token, &["SELECT * FROM cars WHERE color = 'red'"]);
    p.start();
    p.synced().await;
    let mut observer = p
        .store
        .lock()
        .expect("store")
        .observe("SELECT _id FROM cars", &Default::default())
        .expect("observe");
    observer.next().await.expect("first").expect("result");

    http(
        &app,
        &token,
        "INSERT INTO cars DOCUMENTS ({'_id': 'green', 'color': 'green'})",
        json!({}),
    )
    .await;
    http(
        &app,
        &token,
        "INSERT INTO cars DOCUMENTS ({'_id': 'red', 'color': 'red'})",
        json!({}),
    )
    .await;
    let seen = tokio::time::timeout(WAIT, observer.next())
        .await
        .expect("the observer fires")
        .expect("store alive")
        .expect("result");
    // Only the matching document, though the other was written first.
    assert_eq!(
        bigpeer_schema::Value::Array(seen.to_vec()).to_json_string(),
        r#"[{"_id":"red"}]"#
    );
    assert_eq!(p.docs("cars"), json!([{"_id": "red", "color": "red"}]));
    p.stop().await;
    app.shutdown().await;
}

/// A peer holding a live copy of a document deleted on the server while it was away gets the
/// deletion from a fresh subscription too (here another query on the collection, so no cursor):
/// initial syncs send tombstones (issue 18; before, the first page left them out and the peer
/// kept the deleted document for good).
#[tokio::test]
async fn a_fresh_subscription_brings_the_deletion_of_a_document_the_peer_holds() {
    let app = TestApp::spawn().await;
    let token = admin(&app).await;
    http(
        &app,
        &token,
        "INSERT INTO cars DOCUMENTS ({'_id': 'a', 'color': 'red'}), ({'_id': 'b', 'color': 'blue'})",
        json!({}),
    )
    .await;
    let mut p = Peer::new(&app, &token, &["SELECT * FROM cars WHERE color = 'red'"]);
    p.start();
    p.synced().await;
    assert_eq!(p.docs("cars"), json!([{"_id": "a", "color": "red"}]));
    p.stop().await;

    http(&app, &token, "DELETE FROM cars WHERE _id = 'a'", json!({})).await;
    let mut config = p.config.clone();
    config.subscriptions.clear();
    p.config = config
        .subscribe("SELECT * FROM cars", Json::Null)
        .expect("subscription");
    p.start();
    p.synced().await;
    assert_eq!(p.docs("cars"), json!([{"_id": "b", "color": "blue"}]));
    assert_eq!(server_docs(&app, &token, "cars").await, p.docs("cars"));
    p.stop().await;
    app.shutdown().await;
}

#[tokio::test]
async fn concurrent_offline_edits_converge_after_reconnecting() {
    let app = TestApp::spawn().await;
    let token = admin(&app).await;
    let sub = ["SELECT * FROM c"];
    let mut a = Peer::new(&app, &token, &sub);
    let mut b = Peer::new(&app, &token, &sub);
    a.start();
    b.start();
    a.synced().await;
    b.synced().await;
    a.exec(
        "INSERT INTO c DOCUMENTS ({'_id': 'x', 'color': 'white', 'features': {'base': true}}), \
         ({'_id': 'y', 'k': 'a'}), ({'_id': 'z', 'keep': 1})",
    );
    a.exec("UPDATE COLLECTION c (hits COUNTER) APPLY hits INCREMENT BY 1 WHERE _id = 'x'");
    a.pushed().await;
    converge(&app, &token, "c", &[&a, &b]).await;
    a.stop().await;
    b.stop().await;

    // Offline, both edit the same documents.
    a.exec("UPDATE c SET color = 'red', features.a = 1 WHERE _id = 'x'");
    a.exec("UPDATE COLLECTION c (hits COUNTER) APPLY hits INCREMENT BY 2 WHERE _id = 'x'");
    a.exec("DELETE FROM c WHERE _id = 'y'");
    a.exec("DELETE FROM c WHERE _id = 'z'");
    b.exec("UPDATE c SET color = 'blue', features.b = 2 WHERE _id = 'x'");
    b.exec("UPDATE COLLECTION c (hits COUNTER) APPLY hits INCREMENT BY 5 WHERE _id = 'x'");
    b.exec("UPDATE c SET k = 'b' WHERE _id = 'y'");
    b.exec("INSERT INTO c DOCUMENTS ({'_id': 'w', 'from': 'b'})");
    // Meanwhile on the server.
    http(
        &app,
        &token,
        "UPDATE c SET server = true WHERE _id = 'x'",
        json!({}),
    )
    .await;

    a.start();
    b.start();
    a.synced().await;
    b.synced().await;
    let state = converge(&app, &token, "c", &[&a, &b]).await;
    let docs = state.as_array().expect("array");
    let x = docs.iter().find(|d| d["_id"] == "x").expect("x");
    assert_eq!(x["hits"], json!(8), "counters add up: {x}");
    assert_eq!(
        x["features"],
        json!({"base": true, "a": 1, "b": 2}),
        "map keys merge"
    );
    assert!(
        x["color"] == "red" || x["color"] == "blue",
        "one register value wins: {x}"
    );
    assert_eq!(x["server"], json!(true));
    // A's delete of y and B's concurrent update: the update survives (as the CRDT says);
    // z, deleted with nothing concurrent, stays deleted.
    let y = docs.iter().find(|d| d["_id"] == "y").expect("y survives");
    assert_eq!(y["k"], "b");
    assert!(docs.iter().all(|d| d["_id"] != "z"), "{state}");
    assert!(docs.iter().any(|d| d["_id"] == "w"));
    a.stop().await;
    b.stop().await;
    app.shutdown().await;
}

/// Inserts `n` documents of about 300 bytes into `coll` over HTTP.
async fn seed(app: &TestApp, token: &str, coll: &str, n: usize) {
    let filler = "x".repeat(250);
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let docs: Vec<Json> = chunk
            .iter()
            .map(|i| json!({"_id": format!("d{i:06}"), "n": i, "filler": filler}))
            .collect();
        let placeholders: Vec<String> = (0..docs.len()).map(|i| format!("(:d{i})")).collect();
        let args: serde_json::Map<String, Json> = docs
            .into_iter()
            .enumerate()
            .map(|(i, d)| (format!("d{i}"), d))
            .collect();
        http(
            app,
            token,
            &format!("INSERT INTO {coll} DOCUMENTS {}", placeholders.join(", ")),
            Json::Object(args),
        )
        .await;
    }
}

#[tokio::test]
#[allow(
    clippy::await_holding_lock,
    reason = "the test holds the store on purpose, to stop the sync where it is"
)]
async fn a_server_restart_mid_sync_loses_nothing_and_resends_nothing() {
    const N: usize = 6000;
    let app = TestApp::spawn().await;
    let token = admin(&app).await;
    seed(&app, &token, "big", N).await;
    let mut p = Peer::new(&app, &token, &["SELECT * FROM big"]);
    // Local writes (to a collection the peer does not subscribe to, so that they do not count
    // as received).
    p.exec("INSERT INTO local DOCUMENTS ({'_id': 'l1'})");
    p.start();
    // As soon as the initial sync has begun, the server goes away.
    let held = p.hold_after_first_batch().await;
    let addr = app.app.local_addr();
    let TestApp { app: server, db } = app;
    server.shutdown().await.expect("shutdown");
    let before = p.received();
    drop(held);
    assert!(
        before < N as u64,
        "the restart came after the whole sync ({before})"
    );
    // While the server is down: a local write waits in the outbox.
    p.exec("INSERT INTO local DOCUMENTS ({'_id': 'l2'})");
    eventually("the client to notice", || {
        (!p.sync().status().connected).then_some(())
    })
    .await;

    // A new server process on the same database and port.
    let app = TestApp::spawn_with(db, |c| c.listen = addr).await;
    http(
        &app,
        &token,
        "UPDATE big SET touched = true WHERE _id = 'd000000'",
        json!({}),
    )
    .await;
    p.synced().await;
    let docs = converge(&app, &token, "big", &[&p]).await;
    assert_eq!(docs.as_array().map(Vec::len), Some(N));
    p.pushed().await;
    assert_eq!(
        server_docs(&app, &token, "local").await,
        json!([{"_id": "l1"}, {"_id": "l2"}])
    );
    let status = p.sync().status();
    assert!(status.stats.sessions >= 2, "{status:?}");
    // Each server document arrived once (its first page, before the restart, may hold the
    // update of d000000 only as its old version: at most one more).
    let received = status.stats.changes_received;
    assert!(
        received <= N as u64 + 1,
        "the resumed sync sent {received} changes for {N} documents"
    );
    p.stop().await;
    app.shutdown().await;
}

#[tokio::test]
#[allow(
    clippy::await_holding_lock,
    reason = "the test holds the store on purpose, to stop the sync where it is"
)]
async fn a_peer_killed_mid_batch_resumes_from_its_cursor() {
    const N: usize = 6000;
    let app = TestApp::spawn().await;
    let token = admin(&app).await;
    seed(&app, &token, "big", N).await;
    let mut p = Peer::new(&app, &token, &["SELECT * FROM big"]);
    p.exec("INSERT INTO local DOCUMENTS ({'_id': 'offline'})");
    p.start();
    let handle = p.sync.take().expect("started");
    let held = hold_after_first_batch(&p.store, &handle).await;
    // Killed: no goodbye; a batch being applied commits whole or not at all.
    handle.abort().await;
    drop(held);
    let path = p.path();
    let config = p.config.clone();
    let store = p.store.clone();
    drop(p.store);
    // The blocking store work of the killed task ends on its own; then the store is closed.
    eventually("the killed task to let go of the store", || {
        (Arc::strong_count(&store) == 1).then_some(())
    })
    .await;
    drop(store);

    let store = Store::open_dir(&path).expect("reopen");
    let kept = store.documents("big").expect("documents").len();
    assert!(kept < N, "the kill came after the whole sync ({kept})");
    let store = Arc::new(Mutex::new(store));
    let sync = SyncClient::start(store.clone(), config).expect("restart");
    tokio::time::timeout(WAIT, sync.wait_until_synced())
        .await
        .expect("synced in time")
        .expect("synced");
    let resumed = sync.status().stats.changes_received;
    assert_eq!(
        resumed as usize,
        N - kept,
        "the resumed sync sends exactly what the store lacked"
    );
    assert_eq!(
        store
            .lock()
            .expect("store")
            .documents("big")
            .expect("docs")
            .len(),
        N
    );
    tokio::time::timeout(WAIT, sync.wait_until_pushed())
        .await
        .expect("pushed in time")
        .expect("pushed");
    assert_eq!(
        server_docs(&app, &token, "local").await,
        json!([{"_id": "offline"}])
    );
    sync.stop().await;
    app.shutdown().await;
}

#[tokio::test]
async fn permissions_limit_what_a_peer_gets_and_may_write() {
    let app = TestApp::spawn().await;
    let token = admin(&app).await;
    http(
        &app,
        &token,
        "INSERT INTO books DOCUMENTS ({'_id': 'mine', 'owner': 'ann'}), ({'_id': 'theirs', 'owner': 'bob'})",
        json!({}),
    )
    .await;
    let perms: Permissions = serde_json::from_value(json!({
        "read": {"queriesByCollection": {"books": ["owner == 'ann'"]}},
        "write": {"queriesByCollection": {"books": ["owner == 'ann'"]}},
    }))
    .expect("permissions");
    let ann = key(&app, perms).await;
    let mut p = Peer::new(&app, &ann, &["SELECT * FROM books"]);
    p.start();
    p.synced().await;
    assert_eq!(p.docs("books"), json!([{"_id": "mine", "owner": "ann"}]));

    // Live too: a change to a document outside the read permission never arrives.
    http(
        &app,
        &token,
        "UPDATE books SET n = 1 WHERE _id = 'theirs'",
        json!({}),
    )
    .await;
    http(
        &app,
        &token,
        "UPDATE books SET n = 1 WHERE _id = 'mine'",
        json!({}),
    )
    .await;
    eventually("the allowed update", || {
        (p.docs("books") == json!([{"_id": "mine", "n": 1, "owner": "ann"}])).then_some(())
    })
    .await;

    // Writes: one allowed, one outside the write permission.
    p.exec("INSERT INTO books DOCUMENTS ({'_id': 'new', 'owner': 'ann'}), ({'_id': 'forged', 'owner': 'bob'})");
    p.pushed().await;
    let status = p.sync().status();
    assert_eq!(status.denied.len(), 1, "{status:?}");
    assert_eq!(status.denied[0].id.to_string(), "\"forged\"");
    assert_eq!(status.denied[0].code, "auth/forbidden");
    let outbox = p.store.lock().expect("store").outbox().expect("outbox");
    assert_eq!(outbox.len(), 1, "the denied change is kept locally");
    assert_eq!(outbox[0].denied.as_deref(), Some("auth/forbidden"));
    let ids: Vec<Json> = server_docs(&app, &token, "books")
        .await
        .as_array()
        .expect("array")
        .iter()
        .map(|d| d["_id"].clone())
        .collect();
    assert_eq!(ids, vec![json!("mine"), json!("new"), json!("theirs")]);
    // A subscription on a collection it may not read fails, and says why.
    p.sync()
        .subscribe("SELECT * FROM secrets", Json::Null)
        .expect("subscribe");
    let err = tokio::time::timeout(WAIT, p.sync().wait_until_caught_up())
        .await
        .expect("answered in time")
        .expect_err("refused");
    assert_eq!(err.code(), "auth/forbidden");
    p.stop().await;
    app.shutdown().await;
}

/// A small peer started without a token hears that it gave none, not that its key is invalid.
#[tokio::test]
async fn no_token_ends_the_client_saying_so() {
    let app = TestApp::spawn().await;
    let mut p = Peer::new(&app, "", &["SELECT * FROM c"]);
    p.start();
    let failure = tokio::time::timeout(WAIT, p.sync().finished())
        .await
        .expect("ends in time");
    assert_eq!(failure.code, "auth/missing-credentials");
    assert!(
        failure.message.contains("no token given"),
        "{}",
        failure.message
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_refused_token_ends_the_client_with_its_code() {
    let app = TestApp::spawn().await;
    let mut p = Peer::new(&app, "bpk_not_a_key", &["SELECT * FROM c"]);
    p.start();
    let failure = tokio::time::timeout(WAIT, p.sync().finished())
        .await
        .expect("ends in time");
    assert_eq!(failure.code, "auth/invalid-token");
    let err = p.sync().wait_until_synced().await.expect_err("not synced");
    assert_eq!(err.code(), "auth/invalid-token");
    assert_eq!(p.sync().status().stats.sessions, 0);
    app.shutdown().await;
}

#[tokio::test]
async fn random_edits_on_four_peers_converge() {
    let seed: u64 = rand::random();
    eprintln!("random_edits_on_four_peers_converge seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let app = TestApp::spawn().await;
    let token = admin(&app).await;
    let mut peers: Vec<Peer> = (0..4)
        .map(|_| Peer::new(&app, &token, &["SELECT * FROM r"]))
        .collect();
    for p in &mut peers {
        p.start();
    }
    let started = tokio::time::Instant::now();
    let mut ops = 0;
    while ops < 240 && started.elapsed() < Duration::from_secs(8) {
        ops += 1;
        let i = rng.random_range(0..peers.len());
        let id = format!("k{}", rng.random_range(0..6));
        let v: i64 = rng.random_range(0..1000);
        let statement = match rng.random_range(0..10) {
            0 | 1 => format!(
                "INSERT INTO r DOCUMENTS ({{'_id': '{id}', 'v': {v}, 'by{i}': true}}) ON ID CONFLICT DO UPDATE"
            ),
            2 | 3 => format!("UPDATE r SET v = {v}, m.p{i} = {v} WHERE _id = '{id}'"),
            4 | 5 => format!(
                "UPDATE COLLECTION r (hits COUNTER) APPLY hits INCREMENT BY {} WHERE _id = '{id}'",
                v % 7 + 1
            ),
            6 => format!("DELETE FROM r WHERE _id = '{id}'"),
            7 => {
                // The server writes too.
                http(
                    &app,
                    &token,
                    &format!("INSERT INTO r DOCUMENTS ({{'_id': '{id}', 'srv': {v}}}) ON ID CONFLICT DO UPDATE"),
                    json!({}),
                )
                .await;
                continue;
            }
            _ => {
                // Go offline, or come back.
                let p = &mut peers[i];
                if p.sync.is_some() {
                    if rng.random_bool(0.5) {
                        p.stop().await;
                    } else {
                        p.sync.take().expect("started").abort().await;
                    }
                } else {
                    p.start();
                }
                continue;
            }
        };
        peers[i].exec(&statement);
        if rng.random_bool(0.3) {
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..20))).await;
        }
    }
    for p in &mut peers {
        if p.sync.is_none() {
            p.start();
        }
    }
    for p in &peers {
        p.synced().await;
    }
    let refs: Vec<&Peer> = peers.iter().collect();
    let state = converge(&app, &token, "r", &refs).await;
    eprintln!("{ops} operations; final state {state}");
    for p in &mut peers {
        assert!(p.sync().status().denied.is_empty());
        p.stop().await;
    }
    app.shutdown().await;
}

/// A self-signed certificate for 127.0.0.1 in `dir`: (cert path, key path, cert PEM).
fn certificate(dir: &std::path::Path) -> (PathBuf, PathBuf, String) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("a certificate");
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.key_pair.serialize_pem());
    let (cp, kp) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cp, &cert_pem).expect("write cert");
    std::fs::write(&kp, key_pem).expect("write key");
    (cp, kp, cert_pem)
}

#[tokio::test]
async fn peers_sync_over_wss_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key_file, pem) = certificate(dir.path());
    let app = TestApp::spawn_with(TestDb::create().await, |c| {
        c.tls_cert = Some(cert);
        c.tls_key = Some(key_file);
    })
    .await;
    let token = KeyStore::new(app.app.store().clone())
        .create(NewKey {
            name: "tls".into(),
            permissions: Permissions::all(),
            ..NewKey::default()
        })
        .await
        .expect("key")
        .secret;
    let mut a = Peer::new(&app, &token, &["SELECT * FROM t"]);
    assert!(a.config.url.starts_with("wss://"));
    a.config.ca_pem = Some(pem.clone());
    let mut b = Peer::new(&app, &token, &["SELECT * FROM t"]);
    b.config.ca_pem = Some(pem);
    a.start();
    b.start();
    a.synced().await;
    b.synced().await;
    a.exec("INSERT INTO t DOCUMENTS ({'_id': 'secure', 'ok': true})");
    a.pushed().await;
    eventually("B to get A's write over wss", || {
        (b.docs("t") == json!([{"_id": "secure", "ok": true}])).then_some(())
    })
    .await;

    // A peer that does not trust the certificate never gets in.
    let mut c = Peer::new(&app, &token, &["SELECT * FROM t"]);
    c.start();
    let err = eventually("the TLS failure", || c.sync().status().finished).await;
    assert_eq!(err.code, "sync/untrusted-certificate", "{err:?}");
    assert!(
        err.message.contains("certificate") || err.message.contains("Certificate"),
        "{err:?}"
    );
    assert_eq!(c.sync().status().stats.sessions, 0);
    assert!(c.docs("t").as_array().is_some_and(Vec::is_empty));
    c.stop().await;
    a.stop().await;
    b.stop().await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_subscription_added_while_connected_catches_up() {
    let app = TestApp::spawn().await;
    let token = admin(&app).await;
    http(
        &app,
        &token,
        "INSERT INTO late DOCUMENTS ({'_id': 'a'}), ({'_id': 'b'})",
        json!({}),
    )
    .await;
    let mut p = Peer::new(&app, &token, &[]);
    p.start();
    p.synced().await;
    assert!(p.docs("late").as_array().is_some_and(Vec::is_empty));
    p.sync()
        .subscribe("SELECT * FROM late WHERE _id = :id", json!({"id": "b"}))
        .expect("subscribe");
    p.synced().await;
    assert_eq!(p.docs("late"), json!([{"_id": "b"}]));
    let status = p.sync().status();
    assert_eq!(status.subscriptions.len(), 1);
    assert_eq!(status.subscriptions[0].phase, SubscriptionPhase::CaughtUp);
    p.stop().await;
    app.shutdown().await;
}

#[tokio::test]
async fn an_evicted_document_comes_back_whole_through_want() {
    let app = TestApp::spawn().await;
    let token = admin(&app).await;
    http(
        &app,
        &token,
        "INSERT INTO e DOCUMENTS ({'_id': 'x', 'a': 1, 'b': 'kept on the server'})",
        json!({}),
    )
    .await;
    let mut p = Peer::new(&app, &token, &["SELECT * FROM e"]);
    p.start();
    p.synced().await;
    // The peer forgets the document; the session still believes the peer has it, so the next
    // change comes as a delta whose base the peer lacks: it asks for the rest.
    p.exec("EVICT FROM e WHERE _id = 'x'");
    assert!(p.docs("e").as_array().is_some_and(Vec::is_empty));
    http(
        &app,
        &token,
        "UPDATE e SET a = 2 WHERE _id = 'x'",
        json!({}),
    )
    .await;
    eventually("the whole document back", || {
        (p.docs("e") == json!([{"_id": "x", "a": 2, "b": "kept on the server"}])).then_some(())
    })
    .await;
    assert_eq!(p.sync().status().stats.wants_sent, 1);
    p.stop().await;
    app.shutdown().await;
}

#[tokio::test]
async fn an_expiring_key_ends_the_client_with_auth_expired() {
    let app = TestApp::spawn().await;
    let token = KeyStore::new(app.app.store().clone())
        .create(NewKey {
            name: "short".into(),
            permissions: Permissions::all(),
            expires_at: Some(bigpeer::auth::now_secs() + 2),
            ..NewKey::default()
        })
        .await
        .expect("create key")
        .secret;
    let mut p = Peer::new(&app, &token, &["SELECT * FROM c"]);
    p.start();
    p.synced().await;
    let failure = tokio::time::timeout(WAIT, p.sync().finished())
        .await
        .expect("ends in time");
    assert_eq!(failure.code, "auth/expired");
    let status = p.sync().status();
    assert!(!status.connected);
    assert_eq!(status.stats.sessions, 1, "no reconnection with a dead key");
    // Writes go on locally and wait for a new key.
    p.exec("INSERT INTO c DOCUMENTS ({'_id': 'later'})");
    assert_eq!(
        p.store
            .lock()
            .expect("store")
            .outbox()
            .expect("outbox")
            .len(),
        1
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_revoked_key_ends_the_client_and_webhook_client_info_reaches_it() {
    let app = TestApp::spawn().await;
    let keys = KeyStore::new(app.app.store().clone());
    let created = keys
        .create(NewKey {
            name: "revoked soon".into(),
            permissions: Permissions::all(),
            ..NewKey::default()
        })
        .await
        .expect("create key");
    let mut p = Peer::new(&app, &created.secret, &["SELECT * FROM c"]);
    p.start();
    p.synced().await;
    assert_eq!(p.sync().status().client_info, None, "API keys carry none");
    // Revoked by another process's key store: the server notices and ends the session.
    assert!(keys.revoke(&created.key.id).await.expect("revoke"));
    let failure = tokio::time::timeout(WAIT, p.sync().finished())
        .await
        .expect("ends in time");
    assert_eq!(failure.code, "auth/revoked-key");
    assert_eq!(p.sync().status().stats.sessions, 1, "no reconnection");
    app.shutdown().await;

    let hook = crate::sync::FakeWebhook::start(Arc::new(|_| {
        (
            200,
            json!({
                "authenticate": true,
                "expirationSeconds": 3600,
                "userID": "ada",
                "permissions": {"read": {"everything": true}, "write": {"everything": true}},
                "clientInfo": {"plan": "gold", "seats": 3}
            })
            .to_string(),
        )
    }))
    .await;
    let app = crate::sync::app_with_webhook(&hook).await;
    let mut p = Peer::new(&app, "a-jwt", &["SELECT * FROM c"]);
    p.start();
    p.synced().await;
    let status = p.sync().status();
    assert_eq!(status.user.as_deref(), Some("ada"));
    assert_eq!(
        status.client_info,
        Some(json!({"plan": "gold", "seats": 3}))
    );
    p.stop().await;
    app.shutdown().await;
}

#[tokio::test]
async fn sync_scopes_keep_collections_from_the_big_peer_until_allowed() {
    let app = TestApp::spawn().await;
    let token = admin(&app).await;
    let mut peer = Peer::new(&app, &token, &[]);
    peer.exec(
        "ALTER SYSTEM SET USER_COLLECTION_SYNC_SCOPES = \
         {'drafts': 'LocalPeerOnly', 'notes': 'smallpeersonly', 'tel': 'BigPeerOnly'}",
    );
    for coll in ["drafts", "notes", "tel", "cars"] {
        peer.exec(&format!(
            "INSERT INTO {coll} DOCUMENTS ({{'_id': '{coll}-1', 'n': 1}})"
        ));
    }
    peer.start();
    // Everything the scopes let go reaches the big peer; the rest stays local.
    peer.pushed().await;
    assert_eq!(
        server_docs(&app, &token, "cars").await,
        json!([{"_id": "cars-1", "n": 1}])
    );
    assert_eq!(
        server_docs(&app, &token, "tel").await,
        json!([{"_id": "tel-1", "n": 1}])
    );
    for coll in ["drafts", "notes"] {
        assert_eq!(server_docs(&app, &token, coll).await, json!([]), "{coll}");
    }
    // Written again while withheld: still nothing leaves.
    peer.exec("UPDATE drafts SET n = 2");
    peer.exec("INSERT INTO cars DOCUMENTS ({'_id': 'cars-2', 'n': 2})");
    peer.pushed().await;
    assert_eq!(
        server_docs(&app, &token, "cars")
            .await
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert_eq!(server_docs(&app, &token, "drafts").await, json!([]));
    // Scopes are checked when sending: once allowed, the kept changes go.
    peer.exec("ALTER SYSTEM SET USER_COLLECTION_SYNC_SCOPES = {'notes': 'SmallPeersOnly'}");
    peer.pushed().await;
    assert_eq!(
        server_docs(&app, &token, "drafts").await,
        json!([{"_id": "drafts-1", "n": 2}])
    );
    assert_eq!(server_docs(&app, &token, "notes").await, json!([]));
    peer.stop().await;
    app.shutdown().await;
}
