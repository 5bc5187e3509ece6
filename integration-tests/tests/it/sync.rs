//! Peer sync over `GET /api/v4/sync` (`docs/sync-protocol.md`): a small test client speaking
//! `bigpeer_schema::wire` over a real WebSocket against the server in-process.

use std::time::Duration;

use bigpeer::auth::{KeyStore, NewKey, Permissions};
use bigpeer_schema::wire::{Cursor, DocChange, Msg, PushResult, SubStatus, SUBPROTOCOL};
use bigpeer_schema::{Clock, Doc, DocId, ObjectMode, Op, SiteId, Value, VersionVector};
use futures_util::{SinkExt as _, StreamExt as _};
use integration_tests::TestApp;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const WAIT: Duration = Duration::from_secs(10);

/// A minimal peer: frames in, frames out (also used by the security tests).
pub(crate) struct Peer {
    pub(crate) ws: Ws,
    next_batch_seen: u64,
    /// The peer's documents: every batch received is applied here (which also checks that each
    /// delta applies to what the peer has).
    pub(crate) docs: std::collections::BTreeMap<(String, DocId), Doc>,
}

impl Peer {
    pub(crate) async fn connect(app: &TestApp) -> Peer {
        let url = format!("ws://{}/api/v4/sync", app.app.local_addr());
        let mut req = url.into_client_request().expect("request");
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        let (ws, resp) = tokio_tungstenite::connect_async(req)
            .await
            .expect("websocket upgrade");
        assert_eq!(
            resp.headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some(SUBPROTOCOL)
        );
        Peer {
            ws,
            next_batch_seen: 0,
            docs: Default::default(),
        }
    }

    /// Connects and says hello with `token`; returns the Welcome.
    pub(crate) async fn open(app: &TestApp, token: &str) -> (Peer, Msg) {
        Peer::open_as(app, SiteId::random(), token).await
    }

    /// Connects and says hello with `token` as the site `site` (the site of the writes it will
    /// push); returns the Welcome.
    pub(crate) async fn open_as(app: &TestApp, site: SiteId, token: &str) -> (Peer, Msg) {
        let mut p = Peer::connect(app).await;
        p.hello_as(site, token).await;
        let welcome = p.recv().await;
        assert!(matches!(welcome, Msg::Welcome { .. }), "{welcome:?}");
        (p, welcome)
    }

    /// Says hello with `token` (a fresh site id).
    pub(crate) async fn hello(&mut self, token: &str) {
        self.hello_as(SiteId::random(), token).await;
    }

    /// Says hello with `token` as the site `site`.
    pub(crate) async fn hello_as(&mut self, site: SiteId, token: &str) {
        self.send(&Msg::Hello {
            minor: 0,
            site,
            token: token.into(),
            features: vec![],
            last_sync_ms: 0,
        })
        .await;
    }

    pub(crate) async fn send(&mut self, m: &Msg) {
        if let Msg::Push { changes, .. } = m {
            // The peer holds what it pushes (a delta whose base it lacks is a test's doing).
            for c in changes {
                let _ = self
                    .docs
                    .entry((c.collection.clone(), c.id.clone()))
                    .or_default()
                    .apply_delta(&c.delta);
            }
        }
        self.ws
            .send(Message::Binary(m.encode().into()))
            .await
            .expect("send");
    }

    /// The next protocol message (pings answered, pongs skipped).
    pub(crate) async fn recv(&mut self) -> Msg {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a message within the timeout")
                .expect("the connection is open")
                .expect("a frame");
            match frame {
                Message::Binary(b) => {
                    let m = Msg::decode(&b).expect("a valid frame from the server");
                    match m {
                        Msg::Ping { nonce } => self.send(&Msg::Pong { nonce }).await,
                        Msg::Batch {
                            batch, ref changes, ..
                        } => {
                            self.next_batch_seen = batch;
                            for c in changes {
                                self.docs
                                    .entry((c.collection.clone(), c.id.clone()))
                                    .or_default()
                                    .apply_delta(&c.delta)
                                    .expect("the peer has the delta's base");
                            }
                            return m;
                        }
                        other => return other,
                    }
                }
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Receives messages until `SubState{caught up}` for `sub`, collecting batch changes.
    pub(crate) async fn until_caught_up(&mut self, sub: u32) -> (Vec<DocChange>, Cursor) {
        let mut changes = Vec::new();
        loop {
            match self.recv().await {
                Msg::Batch { changes: c, .. } => {
                    changes.extend(c);
                    self.ack().await;
                }
                Msg::SubState {
                    sub: s,
                    status: SubStatus::CaughtUp { cursor },
                } if s == sub => return (changes, cursor),
                Msg::SubState {
                    status: SubStatus::Active,
                    ..
                } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    pub(crate) async fn ack(&mut self) {
        let batch = self.next_batch_seen;
        self.send(&Msg::Ack { batch, credit: 8 }).await;
    }

    pub(crate) async fn subscribe(&mut self, sub: u32, query: &str, cursor: Option<Cursor>) {
        self.send(&Msg::Subscribe {
            sub,
            query: query.into(),
            args: Value::Object(Default::default()),
            cursor,
        })
        .await;
    }

    /// The next batch (acknowledged).
    pub(crate) async fn batch(&mut self) -> (Vec<u32>, Vec<DocChange>) {
        match self.recv().await {
            Msg::Batch { subs, changes, .. } => {
                self.ack().await;
                (subs, changes)
            }
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    /// Asserts that nothing arrives for `d` (pings aside).
    pub(crate) async fn quiet_for(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Binary(b)))) => {
                    let m = Msg::decode(&b).expect("frame");
                    assert!(matches!(m, Msg::Ping { .. }), "unexpected {m:?}");
                }
                Ok(other) => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Expects a fatal `Error{code}` followed by a close.
    /// Pushes `changes` as push `n` and returns its results (batches that arrive meanwhile are
    /// acknowledged; sub states are passed over).
    pub(crate) async fn push(&mut self, n: u64, changes: Vec<DocChange>) -> Vec<PushResult> {
        self.send(&Msg::Push { push: n, changes }).await;
        loop {
            match self.recv().await {
                Msg::PushAck { push, results, .. } if push == n => return results,
                Msg::Batch { .. } => self.ack().await,
                Msg::SubState { .. } => {}
                other => panic!("expected the ack of push {n}, got {other:?}"),
            }
        }
    }

    pub(crate) async fn expect_fatal(&mut self, code: &str) {
        match self.recv().await {
            Msg::Error {
                code: c,
                fatal: true,
                ..
            } => assert_eq!(c, code),
            other => panic!("expected error {code}, got {other:?}"),
        }
        let end = tokio::time::timeout(WAIT, self.ws.next())
            .await
            .expect("closed within the timeout");
        assert!(
            matches!(end, None | Some(Ok(Message::Close(_))) | Some(Err(_))),
            "{end:?}"
        );
    }
}

impl Peer {
    /// The JSON of a document the peer holds (`None`: deleted or unknown).
    pub(crate) fn json(&self, coll: &str, id: &str) -> Option<serde_json::Value> {
        self.docs
            .get(&(coll.to_owned(), DocId::string(id)))
            .and_then(Doc::materialize)
            .map(|v| serde_json::from_str(&v.to_json_string()).expect("json"))
    }
}

pub(crate) fn ids(changes: &[DocChange]) -> Vec<String> {
    let mut v: Vec<String> = changes.iter().map(|c| c.id.to_string()).collect();
    v.sort();
    v
}

/// `POST /api/v4/store/execute` with a key that may do everything.
pub(crate) async fn execute(app: &TestApp, statement: &str) -> serde_json::Value {
    let token = admin(app).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v4/store/execute", app.app.url()))
        .header("Authorization", format!("Bearer {token}"))
        .json(&json!({ "statement": statement }))
        .send()
        .await
        .expect("execute");
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(status, 200, "{statement}: {body}");
    body
}

pub(crate) async fn key(app: &TestApp, perms: Permissions) -> String {
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

pub(crate) async fn admin(app: &TestApp) -> String {
    key(app, Permissions::all()).await
}

/// A peer's own write: a full-state delta of a new document written by `site`.
pub(crate) fn local_doc(site: u128, json: &str) -> Doc {
    let mut d = Doc::new();
    let v = Value::parse_json(json).expect("json");
    let obj = v.as_object().cloned().expect("object");
    d.apply(
        &[Op::Merge {
            path: vec![],
            value: obj,
            objects: ObjectMode::Map,
        }],
        Clock::new(SiteId(site)).tick(),
    )
    .expect("apply");
    d
}

pub(crate) fn change(coll: &str, id: &str, delta: bigpeer_schema::Delta) -> DocChange {
    DocChange {
        collection: coll.into(),
        id: DocId::string(id),
        seq: 0,
        delta,
    }
}

#[tokio::test]
async fn hello_subscribe_initial_sync_and_live_changes() {
    let app = TestApp::spawn().await;
    execute(
        &app,
        "INSERT INTO cars DOCUMENTS ({'_id': 'a', 'color': 'red'}), ({'_id': 'b', 'color': 'blue'}), ({'_id': 'c', 'color': 'red'})",
    )
    .await;
    let token = admin(&app).await;
    let (mut p, welcome) = Peer::open(&app, &token).await;
    let Msg::Welcome {
        max_frame, window, ..
    } = welcome
    else {
        unreachable!()
    };
    assert_eq!(max_frame, 8 * 1024 * 1024);
    assert!(window > 0);

    p.subscribe(1, "SELECT * FROM cars WHERE color = 'red'", None)
        .await;
    assert_eq!(
        p.recv().await,
        Msg::SubState {
            sub: 1,
            status: SubStatus::Active
        }
    );
    let (initial, cursor) = p.until_caught_up(1).await;
    assert_eq!(ids(&initial), vec!["\"a\"", "\"c\""]);
    assert_eq!(p.json("cars", "a").expect("live"), json!({"color": "red"}));
    assert!(cursor.seq >= 3, "{cursor:?}");

    // Live: an HTTP write that matches reaches the session; one that does not, does not.
    execute(
        &app,
        "INSERT INTO cars DOCUMENTS ({'_id': 'x', 'color': 'green'})",
    )
    .await;
    execute(
        &app,
        "INSERT INTO cars DOCUMENTS ({'_id': 'd', 'color': 'red'})",
    )
    .await;
    let (subs, live) = p.batch().await;
    assert_eq!(subs, vec![1]);
    assert_eq!(ids(&live), vec!["\"d\""]);
    assert!(live[0].seq > cursor.seq);
    p.quiet_for(Duration::from_millis(300)).await;

    // A later change to a document the peer has comes as a delta against what it was sent.
    execute(&app, "UPDATE cars SET n = 1 WHERE _id = 'a'").await;
    let (_, live) = p.batch().await;
    assert_eq!(ids(&live), vec!["\"a\""]);
    assert!(!live[0].delta.base.is_empty());
    assert_eq!(p.json("cars", "a"), Some(json!({"color": "red", "n": 1})));
    app.shutdown().await;
}

#[tokio::test]
async fn pushes_are_merged_and_visible_over_http() {
    let app = TestApp::spawn().await;
    let token = admin(&app).await;
    let (mut p, _) = Peer::open_as(&app, SiteId(77), &token).await;
    let doc = local_doc(77, r#"{"make": "volvo", "n": 1}"#);
    let push = Msg::Push {
        push: 1,
        changes: vec![change("cars", "p1", doc.delta(&VersionVector::new()))],
    };
    p.send(&push).await;
    let Msg::PushAck {
        push: 1,
        txn,
        results,
    } = p.recv().await
    else {
        panic!("expected a push ack")
    };
    assert_eq!(results, vec![PushResult::Applied]);
    assert!(txn > 0);
    let body = execute(&app, "SELECT * FROM cars").await;
    assert_eq!(
        body["items"],
        json!([{"_id": "p1", "make": "volvo", "n": 1}])
    );

    // The same push again changes nothing.
    p.send(&push).await;
    let Msg::PushAck { results, .. } = p.recv().await else {
        panic!("expected a push ack")
    };
    assert_eq!(results, vec![PushResult::Unchanged]);

    // A delta against a base the server lacks is refused with the server's version vector.
    let mut later = doc.clone();
    later
        .apply(
            &[Op::Set {
                path: vec!["n".into()],
                value: Value::Int(2),
                objects: ObjectMode::Map,
            }],
            Clock::resume(SiteId(77), doc.vv.max_hlc()).tick(),
        )
        .expect("apply");
    let mut unknown_base = later.vv.clone();
    unknown_base.observe(SiteId(99), bigpeer_schema::Hlc(5));
    p.send(&Msg::Push {
        push: 2,
        changes: vec![change("cars", "p1", later.delta(&unknown_base))],
    })
    .await;
    let Msg::PushAck { results, .. } = p.recv().await else {
        panic!("expected a push ack")
    };
    assert_eq!(
        results,
        vec![PushResult::Refused {
            have: doc.vv.clone()
        }]
    );
    // Resent against what the server has, it applies.
    p.send(&Msg::Push {
        push: 3,
        changes: vec![change("cars", "p1", later.delta(&doc.vv))],
    })
    .await;
    let Msg::PushAck { results, .. } = p.recv().await else {
        panic!("expected a push ack")
    };
    assert_eq!(results, vec![PushResult::Applied]);
    let body = execute(&app, "SELECT n FROM cars WHERE _id = 'p1'").await;
    assert_eq!(body["items"], json!([{"n": 2}]));
    app.shutdown().await;
}

#[tokio::test]
async fn a_push_reaches_another_subscribed_peer() {
    let app = TestApp::spawn().await;
    let token = admin(&app).await;
    let (mut a, _) = Peer::open_as(&app, SiteId(5), &token).await;
    let (mut b, _) = Peer::open_as(&app, SiteId(6), &token).await;
    b.subscribe(1, "SELECT * FROM notes", None).await;
    let (initial, _) = b.until_caught_up(1).await;
    assert!(initial.is_empty());
    let doc = local_doc(5, r#"{"text": "hi"}"#);
    a.send(&Msg::Push {
        push: 1,
        changes: vec![change("notes", "n1", doc.delta(&VersionVector::new()))],
    })
    .await;
    assert!(matches!(a.recv().await, Msg::PushAck { .. }));
    let (_, live) = b.batch().await;
    assert_eq!(ids(&live), vec!["\"n1\""]);
    assert_eq!(b.json("notes", "n1"), Some(json!({"text": "hi"})));

    // B edits the note: A's subscription gets the change; B's own push does not come back.
    a.subscribe(1, "SELECT * FROM notes", None).await;
    a.until_caught_up(1).await;
    let mut edited = b.docs[&("notes".to_owned(), DocId::string("n1"))].clone();
    let base = edited.vv.clone();
    edited
        .apply(
            &[Op::Set {
                path: vec!["text".into()],
                value: Value::String("hello".into()),
                objects: ObjectMode::Map,
            }],
            Clock::new(SiteId(6)).tick(),
        )
        .expect("apply");
    b.send(&Msg::Push {
        push: 1,
        changes: vec![change("notes", "n1", edited.delta(&base))],
    })
    .await;
    let Msg::PushAck { results, .. } = b.recv().await else {
        panic!("expected a push ack")
    };
    assert_eq!(results, vec![PushResult::Applied]);
    a.batch().await;
    assert_eq!(a.json("notes", "n1"), Some(json!({"text": "hello"})));
    b.quiet_for(Duration::from_millis(300)).await;
    app.shutdown().await;
}

#[tokio::test]
async fn resume_with_a_cursor_sends_only_later_changes_and_tombstones() {
    let app = TestApp::spawn().await;
    execute(
        &app,
        "INSERT INTO t DOCUMENTS ({'_id': 'a', 'v': 1}), ({'_id': 'b', 'v': 2}), ({'_id': 'c', 'v': 3})",
    )
    .await;
    let token = admin(&app).await;
    let (mut p, _) = Peer::open(&app, &token).await;
    p.subscribe(1, "SELECT * FROM t", None).await;
    let (initial, cursor) = p.until_caught_up(1).await;
    assert_eq!(ids(&initial), vec!["\"a\"", "\"b\"", "\"c\""]);
    p.send(&Msg::Bye {
        reason: "offline".into(),
    })
    .await;
    drop(p);

    // While the peer is away: one update, one delete, one insert.
    execute(&app, "UPDATE t SET v = 20 WHERE _id = 'b'").await;
    execute(&app, "DELETE FROM t WHERE _id = 'c'").await;
    execute(&app, "INSERT INTO t DOCUMENTS ({'_id': 'd', 'v': 4})").await;

    let (mut p, _) = Peer::open(&app, &token).await;
    p.subscribe(1, "SELECT * FROM t", Some(cursor.clone()))
        .await;
    let (resumed, cursor2) = p.until_caught_up(1).await;
    assert_eq!(ids(&resumed), vec!["\"b\"", "\"c\"", "\"d\""]);
    let c = resumed
        .iter()
        .find(|c| c.id == DocId::string("c"))
        .expect("c");
    assert_eq!(p.json("t", "c"), None, "c is sent as a tombstone");
    assert!(
        c.delta.base.is_empty(),
        "the first time in a session: a full state"
    );
    assert!(cursor2.seq > cursor.seq);

    // A fresh subscription gets no tombstones; a live delete reaches a subscriber.
    p.subscribe(2, "SELECT * FROM t", None).await;
    let (fresh, _) = p.until_caught_up(2).await;
    assert_eq!(ids(&fresh), vec!["\"a\"", "\"b\"", "\"d\""]);
    execute(&app, "DELETE FROM t WHERE _id = 'a'").await;
    let (subs, live) = p.batch().await;
    assert_eq!(subs, vec![1, 2], "one change serves both subscriptions");
    assert_eq!(ids(&live), vec!["\"a\""]);
    assert_eq!(p.json("t", "a"), None);
    assert!(
        !live[0].delta.base.is_empty(),
        "a delta against what the peer has"
    );

    // A cursor from another epoch is a full resend.
    p.subscribe(
        3,
        "SELECT * FROM t",
        Some(Cursor {
            epoch: "another".into(),
            seq: cursor2.seq,
        }),
    )
    .await;
    let (again, _) = p.until_caught_up(3).await;
    assert_eq!(ids(&again), vec!["\"b\"", "\"d\""]);
    app.shutdown().await;
}

#[tokio::test]
async fn read_and_write_permissions_apply() {
    let app = TestApp::spawn().await;
    execute(
        &app,
        "INSERT INTO books DOCUMENTS ({'_id': 'mine', 'owner': 'ann'}), ({'_id': 'theirs', 'owner': 'bob'})",
    )
    .await;
    let perms: Permissions = serde_json::from_value(json!({
        "read": {"queriesByCollection": {"books": ["owner == 'ann'"]}},
        "write": {"queriesByCollection": {"books": ["owner == 'ann'"]}},
    }))
    .expect("permissions");
    let token = key(&app, perms).await;
    let (mut p, _) = Peer::open_as(&app, SiteId(9), &token).await;
    p.subscribe(1, "SELECT * FROM books", None).await;
    let (initial, _) = p.until_caught_up(1).await;
    assert_eq!(ids(&initial), vec!["\"mine\""]);

    // A document outside the read permission never arrives, live either.
    execute(&app, "UPDATE books SET n = 1 WHERE _id = 'theirs'").await;
    execute(&app, "UPDATE books SET n = 1 WHERE _id = 'mine'").await;
    let (_, live) = p.batch().await;
    assert_eq!(ids(&live), vec!["\"mine\""]);

    // A collection without read permission fails the subscription.
    p.subscribe(2, "SELECT * FROM other", None).await;
    match p.recv().await {
        Msg::SubState {
            sub: 2,
            status: SubStatus::Failed { code, .. },
        } => assert_eq!(code, "auth/forbidden"),
        other => panic!("{other:?}"),
    }

    // Writes outside the write permission are denied and not written; inside, applied.
    let bad = local_doc(9, r#"{"owner": "bob", "title": "forged"}"#);
    let good = local_doc(9, r#"{"owner": "ann", "title": "ok"}"#);
    p.send(&Msg::Push {
        push: 1,
        changes: vec![
            change("books", "forged", bad.delta(&VersionVector::new())),
            change("books", "new", good.delta(&VersionVector::new())),
            change("other", "x", good.delta(&VersionVector::new())),
        ],
    })
    .await;
    let Msg::PushAck { results, .. } = p.recv().await else {
        panic!("expected a push ack")
    };
    assert_eq!(
        results,
        vec![
            PushResult::Denied {
                code: "auth/forbidden".into()
            },
            PushResult::Applied,
            PushResult::Denied {
                code: "auth/forbidden".into()
            },
        ]
    );
    let body = execute(&app, "SELECT _id FROM books ORDER BY _id").await;
    assert_eq!(
        body["items"],
        json!([{"_id": "mine"}, {"_id": "new"}, {"_id": "theirs"}])
    );
    let body = execute(&app, "SELECT * FROM other").await;
    assert_eq!(body["items"], json!([]));
    app.shutdown().await;
}

#[tokio::test]
async fn bad_tokens_and_out_of_order_messages_are_fatal() {
    let app = TestApp::spawn().await;
    // An unknown token.
    let mut p = Peer::connect(&app).await;
    p.send(&Msg::Hello {
        minor: 0,
        site: SiteId(1),
        token: "bpk_nope".into(),
        features: vec![],
        last_sync_ms: 0,
    })
    .await;
    p.expect_fatal("auth/invalid-token").await;

    // Anything before hello.
    for early in [
        Msg::Ping { nonce: 1 },
        Msg::Subscribe {
            sub: 1,
            query: "SELECT * FROM t".into(),
            args: Value::Null,
            cursor: None,
        },
    ] {
        let mut p = Peer::connect(&app).await;
        p.send(&early).await;
        p.expect_fatal("protocol/unexpected-message").await;
    }

    // A second hello.
    let token = admin(&app).await;
    let (mut p, _) = Peer::open(&app, &token).await;
    p.send(&Msg::Hello {
        minor: 0,
        site: SiteId(1),
        token: token.clone(),
        features: vec![],
        last_sync_ms: 0,
    })
    .await;
    p.expect_fatal("protocol/unexpected-message").await;

    // A duplicate subscription id is an error, not fatal; a bad query fails the subscription.
    let (mut p, _) = Peer::open(&app, &token).await;
    p.subscribe(1, "SELECT * FROM t", None).await;
    p.until_caught_up(1).await;
    p.subscribe(1, "SELECT * FROM t", None).await;
    match p.recv().await {
        Msg::Error { code, fatal, .. } => {
            assert_eq!(
                (code.as_str(), fatal),
                ("protocol/duplicate-subscription", false)
            )
        }
        other => panic!("{other:?}"),
    }
    p.subscribe(2, "DELETE FROM t", None).await;
    match p.recv().await {
        Msg::SubState {
            sub: 2,
            status: SubStatus::Failed { code, .. },
        } => assert_eq!(code, "query/unsupported"),
        other => panic!("{other:?}"),
    }
    p.subscribe(3, "SELEC * FROM", None).await;
    match p.recv().await {
        Msg::SubState {
            sub: 3,
            status: SubStatus::Failed { code, .. },
        } => assert_eq!(code, "query/invalid"),
        other => panic!("{other:?}"),
    }
    app.shutdown().await;
}

#[tokio::test]
async fn malformed_text_and_oversized_frames_close_only_their_session() {
    let app = TestApp::spawn().await;
    let token = admin(&app).await;
    let (mut healthy, _) = Peer::open(&app, &token).await;
    healthy.subscribe(1, "SELECT * FROM t", None).await;
    healthy.until_caught_up(1).await;

    // A frame that does not decode.
    let (mut p, _) = Peer::open(&app, &token).await;
    p.ws.send(Message::Binary(vec![0x7f, 1, 2].into()))
        .await
        .expect("send");
    p.expect_fatal("protocol/malformed").await;

    // A text frame.
    let (mut p, _) = Peer::open(&app, &token).await;
    p.ws.send(Message::Text("hello".into()))
        .await
        .expect("send");
    p.expect_fatal("protocol/malformed").await;

    // A frame over max_frame.
    let (mut p, _) = Peer::open(&app, &token).await;
    let too_big = vec![0x08; 8 * 1024 * 1024 + 1];
    p.ws.send(Message::Binary(too_big.into()))
        .await
        .expect("send");
    p.expect_fatal("protocol/frame-too-large").await;

    // The first session still works.
    execute(&app, "INSERT INTO t DOCUMENTS ({'_id': 'ok'})").await;
    let (_, live) = healthy.batch().await;
    assert_eq!(ids(&live), vec!["\"ok\""]);
    app.shutdown().await;
}

#[tokio::test]
async fn credit_limits_batches_in_flight() {
    let app = TestApp::spawn().await;
    let token = admin(&app).await;
    let (mut p, welcome) = Peer::open(&app, &token).await;
    let Msg::Welcome { window, .. } = welcome else {
        unreachable!()
    };
    p.subscribe(1, "SELECT * FROM t", None).await;
    p.until_caught_up(1).await;
    // Without acks, at most `window` batches arrive.
    let n = window as usize + 3;
    for i in 0..n {
        execute(
            &app,
            &format!("INSERT INTO t DOCUMENTS ({{'_id': 'd{i}'}})"),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut got = Vec::new();
    let mut batches = 0;
    while got.len() < n && batches < window {
        match p.recv().await {
            Msg::Batch { changes, .. } => {
                batches += 1;
                got.extend(changes);
            }
            other => panic!("{other:?}"),
        }
    }
    if got.len() < n {
        assert_eq!(batches, window);
        p.quiet_for(Duration::from_millis(700)).await;
        // Credit brings the rest, coalesced.
        p.ack().await;
        while got.len() < n {
            let (_, c) = p.batch().await;
            got.extend(c);
        }
    }
    assert_eq!(got.len(), n);
    app.shutdown().await;
}

#[tokio::test]
async fn an_unknown_subprotocol_is_refused() {
    let app = TestApp::spawn().await;
    let url = format!("ws://{}/api/v4/sync", app.app.local_addr());
    let mut req = url.into_client_request().expect("request");
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("other-sync.9"),
    );
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 400);
            let body: serde_json::Value =
                serde_json::from_slice(resp.body().as_deref().unwrap_or_default())
                    .expect("json body");
            assert_eq!(body["code"], "sync/unsupported-protocol");
        }
        other => panic!("expected a 400, got {other:?}"),
    }
    // No subprotocol offered at all.
    let url = format!("ws://{}/api/v4/sync", app.app.local_addr());
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 400)
        }
        other => panic!("expected a 400, got {other:?}"),
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_request_that_is_not_a_websocket_upgrade_gets_a_json_error() {
    let app = TestApp::spawn().await;
    let url = format!("http://{}/api/v4/sync", app.app.local_addr());
    let http = reqwest::Client::new();
    let refused = |resp: reqwest::Response, status: u16, code: &'static str| async move {
        assert_eq!(resp.status().as_u16(), status, "{code}");
        let version = resp
            .headers()
            .get("sec-websocket-version")
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        let body: serde_json::Value = resp.json().await.expect("json body");
        assert_eq!(body["code"], code, "{body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        version
    };
    // A plain GET (curl, a browser).
    let resp = http.get(&url).send().await.expect("get");
    refused(resp, 400, "sync/not-websocket").await;
    let upgrade = |version: &'static str, key: Option<&'static str>| {
        let mut r = http
            .get(&url)
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", version)
            .header("Sec-WebSocket-Protocol", "bigpeer-sync.1");
        if let Some(k) = key {
            r = r.header("Sec-WebSocket-Key", k);
        }
        r
    };
    // No key.
    let resp = upgrade("13", None).send().await.expect("no key");
    refused(resp, 400, "sync/not-websocket").await;
    // An old protocol version: 426 names the one spoken.
    let resp = upgrade("8", Some("dGhlIHNhbXBsZSBub25jZQ=="))
        .send()
        .await
        .expect("version 8");
    let version = refused(resp, 426, "sync/unsupported-websocket-version").await;
    assert_eq!(version.as_deref(), Some("13"));
    // The server still upgrades a proper request afterwards.
    let token = admin(&app).await;
    let (_peer, welcome) = Peer::open(&app, &token).await;
    assert!(matches!(welcome, Msg::Welcome { .. }), "{welcome:?}");
    app.shutdown().await;
}

#[tokio::test]
async fn shutdown_says_bye_to_connected_peers() {
    let app = TestApp::spawn().await;
    let token = admin(&app).await;
    let (mut p, _) = Peer::open(&app, &token).await;
    let started = std::time::Instant::now();
    app.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "shutdown waited for the session: {:?}",
        started.elapsed()
    );
    match p.recv().await {
        Msg::Bye { reason } => assert!(reason.contains("shutting down"), "{reason}"),
        other => panic!("expected bye, got {other:?}"),
    }
}

#[tokio::test]
async fn want_is_answered_with_a_delta_against_what_the_peer_has() {
    let app = TestApp::spawn().await;
    let token = admin(&app).await;
    let (mut p, _) = Peer::open_as(&app, SiteId(11), &token).await;
    let doc = local_doc(11, r#"{"a": 1}"#);
    p.send(&Msg::Push {
        push: 1,
        changes: vec![change("w", "d", doc.delta(&VersionVector::new()))],
    })
    .await;
    assert!(matches!(p.recv().await, Msg::PushAck { .. }));
    execute(&app, "UPDATE w SET b = 2 WHERE _id = 'd'").await;

    p.send(&Msg::Want {
        collection: "w".into(),
        id: DocId::string("d"),
        have: doc.vv.clone(),
    })
    .await;
    let Msg::Batch {
        subs,
        changes,
        cursor,
        ..
    } = p.recv().await
    else {
        panic!("expected a batch")
    };
    assert!(subs.is_empty() && cursor.is_none());
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].delta.base, doc.vv);
    let mut mine = doc.clone();
    mine.apply_delta(&changes[0].delta)
        .expect("the delta applies");
    let json: serde_json::Value =
        serde_json::from_str(&mine.materialize().expect("live").to_json_string()).expect("json");
    assert_eq!(json, json!({"a": 1, "b": 2}));

    // A document that does not exist gets no answer.
    p.send(&Msg::Want {
        collection: "w".into(),
        id: DocId::string("nope"),
        have: VersionVector::new(),
    })
    .await;
    p.quiet_for(Duration::from_millis(300)).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_session_ends_when_its_key_expires() {
    let app = TestApp::spawn().await;
    let expires_at = bigpeer::auth::now_secs() + 2;
    let token = KeyStore::new(app.app.store().clone())
        .create(NewKey {
            name: "short".into(),
            permissions: Permissions::all(),
            expires_at: Some(expires_at),
            ..NewKey::default()
        })
        .await
        .expect("create key")
        .secret;
    let (mut p, welcome) = Peer::open(&app, &token).await;
    let Msg::Welcome { expires_in, .. } = welcome else {
        unreachable!()
    };
    assert!((1..=2).contains(&expires_in), "{expires_in}");
    p.expect_fatal("auth/expired").await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_session_ends_when_its_key_is_revoked_here_or_by_another_process() {
    const ADMIN: &str = "an-admin-key-for-the-revocation-test";
    let app = TestApp::spawn_with(integration_tests::TestDb::create().await, |c| {
        c.admin_key = Some(bigpeer::config::AdminKey::new(ADMIN));
    })
    .await;
    // Another bigpeer process on the same database: its own key store, cache and revocations.
    let elsewhere = KeyStore::new(app.app.store().clone());
    let mut created = Vec::new();
    for name in ["here", "there", "kept"] {
        created.push(
            elsewhere
                .create(NewKey {
                    name: name.into(),
                    permissions: Permissions::all(),
                    ..NewKey::default()
                })
                .await
                .expect("create key"),
        );
    }
    let mut peers = Vec::new();
    for k in &created {
        let (mut p, _) = Peer::open(&app, &k.secret).await;
        p.subscribe(1, "SELECT * FROM cars", None).await;
        p.until_caught_up(1).await;
        peers.push(p);
    }
    let mut kept = peers.pop().expect("kept");
    let mut there = peers.pop().expect("there");
    let mut here = peers.pop().expect("here");

    // Revoked through this server's admin API: the session ends at once.
    let r = reqwest::Client::new()
        .delete(format!(
            "{}/api/v4/admin/keys/{}",
            app.app.url(),
            created[0].key.id
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 204);
    here.expect_fatal("auth/revoked-key").await;

    // Revoked by the other process: this server notices within its poll interval (1 s).
    let started = std::time::Instant::now();
    assert!(elsewhere.revoke(&created[1].key.id).await.expect("revoke"));
    there.expect_fatal("auth/revoked-key").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "noticed after {:?}",
        started.elapsed()
    );

    // A revoked key opens no new session; the other session goes on and gets live changes.
    let mut again = Peer::connect(&app).await;
    again.hello(&created[0].secret).await;
    again.expect_fatal("auth/invalid-token").await;
    execute(
        &app,
        "INSERT INTO cars DOCUMENTS ({'_id': 'after', 'color': 'red'})",
    )
    .await;
    let (_, changes) = kept.batch().await;
    assert_eq!(ids(&changes), vec!["\"after\""]);
    app.shutdown().await;
}

/// An authentication webhook on a real socket: answers every `POST` with what `answer` says
/// for the request's JSON body, and records each request (headers lowercased, body).
pub(crate) struct FakeWebhook {
    url: String,
    calls: CallLog,
    task: tokio::task::JoinHandle<()>,
}

/// Each request: its headers (names lowercased) and its body.
type CallLog = std::sync::Arc<std::sync::Mutex<Vec<(Vec<(String, String)>, Vec<u8>)>>>;

pub(crate) type Answer = std::sync::Arc<dyn Fn(&serde_json::Value) -> (u16, String) + Send + Sync>;

impl FakeWebhook {
    pub(crate) async fn start(answer: Answer) -> FakeWebhook {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/validate_token",
            listener.local_addr().expect("addr")
        );
        let calls: CallLog = Default::default();
        let log = calls.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let (head_end, length) = loop {
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                            let length = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            break (i + 4, length);
                        }
                    };
                    while buf.len() < head_end + length {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let headers = head
                        .lines()
                        .skip(1)
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
                        .collect();
                    let body = buf[head_end..head_end + length].to_vec();
                    let json: serde_json::Value =
                        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                    log.lock().expect("log").push((headers, body));
                    let (status, text) = answer(&json);
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                        text.len()
                    );
                    let _ = sock.write_all(response.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        FakeWebhook { url, calls, task }
    }

    fn count(&self) -> usize {
        self.calls.lock().expect("log").len()
    }

    fn call(&self, i: usize) -> (Vec<(String, String)>, serde_json::Value) {
        let calls = self.calls.lock().expect("log");
        let (headers, body) = calls[i].clone();
        (headers, serde_json::from_slice(&body).expect("json body"))
    }
}

impl Drop for FakeWebhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const WEBHOOK_SECRET: &str = "a-webhook-secret-of-some-length";

pub(crate) async fn app_with_webhook(hook: &FakeWebhook) -> TestApp {
    let url = hook.url.clone();
    TestApp::spawn_with(integration_tests::TestDb::create().await, move |c| {
        c.auth_webhook_url = Some(url);
        c.auth_webhook_provider = "my-auth".into();
        c.app_id = "app-42".into();
        c.auth_webhook_secret = Some(bigpeer::config::AdminKey::new(WEBHOOK_SECRET));
    })
    .await
}

#[tokio::test]
async fn webhook_tokens_open_sessions_with_its_permissions_and_are_cached() {
    let hook = FakeWebhook::start(std::sync::Arc::new(|req| {
        assert_eq!(req["token"], "jwt-of-sandra");
        (
            200,
            json!({
                "authenticate": true,
                "expirationSeconds": 3600,
                "userID": "sandra",
                "permissions": {
                    "read": {"everything": false, "queriesByCollection": {"cars": ["color == 'red'"]}},
                    "write": {"everything": false, "queriesByCollection": {"cars": ["true"]}}
                },
                "clientInfo": {"plan": "gold"}
            })
            .to_string(),
        )
    }))
    .await;
    let app = app_with_webhook(&hook).await;
    execute(
        &app,
        "INSERT INTO cars DOCUMENTS ({'_id': 'a', 'color': 'red'}), ({'_id': 'b', 'color': 'blue'})",
    )
    .await;

    let (mut p, welcome) = Peer::open(&app, "jwt-of-sandra").await;
    let Msg::Welcome {
        user, expires_in, ..
    } = welcome
    else {
        unreachable!()
    };
    assert_eq!(user, "sandra");
    assert!((3590..=3600).contains(&expires_in), "{expires_in}");
    // The webhook's clientInfo follows the Welcome.
    assert_eq!(
        p.recv().await,
        Msg::ClientInfo {
            info: Value::from_json(json!({"plan": "gold"}))
        }
    );
    // The webhook's read permission applies: only the red car is sent.
    p.subscribe(1, "SELECT * FROM cars", None).await;
    let (initial, _) = p.until_caught_up(1).await;
    assert_eq!(ids(&initial), vec!["\"a\""]);

    // The request follows Ditto's contract and is signed.
    assert_eq!(hook.count(), 1);
    let (headers, body) = hook.call(0);
    assert_eq!(
        body,
        json!({"appID": "app-42", "provider": "my-auth", "token": "jwt-of-sandra"})
    );
    let signature = headers
        .iter()
        .find(|(k, _)| k == "x-bigpeer-signature")
        .map(|(_, v)| v.clone())
        .expect("a signature header");
    let t: i64 = signature
        .strip_prefix("t=")
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.parse().ok())
        .expect("t=");
    assert!((bigpeer::auth::now_secs() - t).abs() < 60, "{signature}");
    let raw = serde_json::to_vec(&body).expect("body");
    assert_eq!(
        signature,
        bigpeer::sync::webhook::sign(WEBHOOK_SECRET, t, &raw)
    );

    // A second session with the same token is served from the cache.
    let (mut q, welcome) = Peer::open(&app, "jwt-of-sandra").await;
    assert!(matches!(welcome, Msg::Welcome { ref user, .. } if user == "sandra"));
    assert!(matches!(q.recv().await, Msg::ClientInfo { .. }));
    assert_eq!(hook.count(), 1);

    // API keys keep working beside the webhook, without calling it (and have no clientInfo).
    let token = admin(&app).await;
    let (mut r, welcome) = Peer::open(&app, &token).await;
    assert!(matches!(welcome, Msg::Welcome { .. }));
    r.send(&Msg::Ping { nonce: 5 }).await;
    assert_eq!(r.recv().await, Msg::Pong { nonce: 5 });
    assert_eq!(hook.count(), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn webhook_refusals_and_failures_are_precise_and_refusals_are_not_cached() {
    let hook = FakeWebhook::start(std::sync::Arc::new(|req| {
        match req["token"].as_str().unwrap_or_default() {
            "refused" => (
                401,
                json!({"authenticate": false, "userInfo": "unknown user"}).to_string(),
            ),
            // The spelling of Ditto's published JSON schema.
            "other-spelling" => (
                200,
                json!({"authenticated": true, "expirationSeconds": 60, "userID": "u2"}).to_string(),
            ),
            "crash" => (500, "{\"oops\": true}".to_owned()),
            "garbage" => (200, "<html>not json</html>".to_owned()),
            "no-user" => (
                200,
                json!({"authenticate": true, "expirationSeconds": 60}).to_string(),
            ),
            "bad-permissions" => (
                200,
                json!({"authenticate": true, "expirationSeconds": 60, "userID": "u3",
                       "permissions": {"read": {"queriesByCollection": {"cars": ["color ==="]}}}})
                .to_string(),
            ),
            _ => (404, String::new()),
        }
    }))
    .await;
    let app = app_with_webhook(&hook).await;

    for (token, code) in [
        ("refused", "auth/invalid-token"),
        ("crash", "auth/webhook-failed"),
        ("garbage", "auth/webhook-failed"),
        ("no-user", "auth/webhook-failed"),
        ("bad-permissions", "auth/webhook-failed"),
    ] {
        let mut p = Peer::connect(&app).await;
        p.hello(token).await;
        p.expect_fatal(code).await;
    }
    let calls = hook.count();
    assert_eq!(calls, 5);
    // A refusal is asked again next time (the user may have been fixed meanwhile).
    let mut p = Peer::connect(&app).await;
    p.hello("refused").await;
    p.expect_fatal("auth/invalid-token").await;
    assert_eq!(hook.count(), calls + 1);

    let (_p, welcome) = Peer::open(&app, "other-spelling").await;
    assert!(matches!(welcome, Msg::Welcome { ref user, .. } if user == "u2"));
    // An unknown or revoked API key is still refused without asking the webhook.
    let before = hook.count();
    let mut p = Peer::connect(&app).await;
    p.hello(&format!("{}nope", bigpeer::auth::SECRET_PREFIX))
        .await;
    p.expect_fatal("auth/invalid-token").await;
    assert_eq!(hook.count(), before);
    app.shutdown().await;
}

#[tokio::test]
async fn a_webhook_session_ends_at_its_expiry_and_the_webhook_is_asked_again() {
    let hook = FakeWebhook::start(std::sync::Arc::new(|_| {
        (
            200,
            json!({"authenticate": true, "expirationSeconds": 1, "userID": "brief",
                   "permissions": {"read": {"everything": true}, "write": {"everything": true}}})
            .to_string(),
        )
    }))
    .await;
    let app = app_with_webhook(&hook).await;
    let (mut p, welcome) = Peer::open(&app, "short-lived").await;
    assert!(
        matches!(welcome, Msg::Welcome { expires_in: 1, .. }),
        "{welcome:?}"
    );
    p.expect_fatal("auth/expired").await;
    assert_eq!(hook.count(), 1);
    // The cached answer has expired with the session: a new login asks the webhook again.
    let (_p, _) = Peer::open(&app, "short-lived").await;
    assert_eq!(hook.count(), 2);
    app.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_webhook_is_a_webhook_failure() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let app = TestApp::spawn_with(integration_tests::TestDb::create().await, move |c| {
        c.auth_webhook_url = Some(format!("http://127.0.0.1:{port}/validate_token"));
    })
    .await;
    let mut p = Peer::connect(&app).await;
    p.hello("whatever").await;
    p.expect_fatal("auth/webhook-failed").await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_pushed_nul_character_is_denied_alone_and_harms_nothing_else() {
    // Postgres cannot store U+0000: the document that holds it is denied, the rest of the push
    // and of the shared transaction commit, and the session goes on.
    let app = TestApp::spawn().await;
    let token = admin(&app).await;
    let (mut p, _) = Peer::open_as(&app, SiteId(81), &token).await;
    let good = local_doc(81, r#"{"make": "volvo"}"#);
    let bad = local_doc(81, r#"{"make": "sa\u0000ab"}"#);
    let bad_key = local_doc(81, r#"{"ma\u0000ke": "saab"}"#);
    p.send(&Msg::Push {
        push: 1,
        changes: vec![
            change("cars", "bad", bad.delta(&VersionVector::new())),
            change("cars", "good", good.delta(&VersionVector::new())),
            change("cars", "bad-key", bad_key.delta(&VersionVector::new())),
            change("cars", "bad\u{0}id", good.delta(&VersionVector::new())),
        ],
    })
    .await;
    let Msg::PushAck { results, .. } = p.recv().await else {
        panic!("expected a push ack")
    };
    let denied = PushResult::Denied {
        code: "request/nul-character".into(),
    };
    assert_eq!(
        results,
        vec![denied.clone(), PushResult::Applied, denied.clone(), denied]
    );
    let body = execute(&app, "SELECT * FROM cars").await;
    assert_eq!(body["items"], json!([{"_id": "good", "make": "volvo"}]));
    // The session is still open.
    p.send(&Msg::Ping { nonce: 5 }).await;
    assert_eq!(p.recv().await, Msg::Pong { nonce: 5 });
    app.shutdown().await;
}
