//! Peers choose their own clocks and site ids: the server bounds the clocks, binds each site to
//! one identity, refuses writes of sites a peer does not own, and stamps its own writes after
//! everything a document holds.

use bigpeer::auth::Permissions;
use bigpeer_schema::hlc::now_ms;
use bigpeer_schema::wire::{Msg, PushResult};
use bigpeer_schema::{
    Clock, CounterKind, Delta, Doc, DocId, Hlc, ObjectMode, Op, SiteId, Value, VersionVector,
};
use integration_tests::TestApp;
use serde_json::json;

use crate::sync::{admin, change, execute, key, Peer};

const MINUTE_MS: u64 = 60_000;

/// A new document written by `site` at wall-clock time `ms`.
fn written_at(site: SiteId, ms: u64, json: &str) -> Doc {
    let mut d = Doc::new();
    let obj = Value::parse_json(json)
        .expect("json")
        .as_object()
        .cloned()
        .expect("object");
    let stamp = Clock::resume(site, Hlc::new(ms, 0)).tick_at(ms);
    d.apply(
        &[Op::Merge {
            path: vec![],
            value: obj,
            objects: ObjectMode::Map,
        }],
        stamp,
    )
    .expect("apply");
    d
}

fn full(d: &Doc) -> Delta {
    d.delta(&VersionVector::new())
}

fn denied(code: &str) -> PushResult {
    PushResult::Denied { code: code.into() }
}

async fn select(app: &TestApp, statement: &str) -> serde_json::Value {
    execute(app, statement).await["items"].clone()
}

#[tokio::test]
async fn stamps_too_far_ahead_are_refused_and_later_server_writes_win() {
    let app = TestApp::spawn().await;
    let token = admin(&app).await;
    let site = SiteId(0xc10c);
    let (mut p, _) = Peer::open_as(&app, site, &token).await;
    let now = now_ms();

    // Year 3000, the largest clock value, just past the allowed skew: refused, one by one.
    let year_3000 = 32_503_680_000_000;
    let far = written_at(site, year_3000, r#"{"owner": "mallory"}"#);
    let mut max = written_at(site, now, r#"{"owner": "mallory"}"#);
    max.vv.observe(site, Hlc(u64::MAX));
    let past_skew = written_at(site, now + 6 * MINUTE_MS, r#"{"owner": "mallory"}"#);
    // Only the version vector runs ahead.
    let mut vv_only = written_at(site, now, r#"{"owner": "mallory"}"#);
    vv_only.vv.observe(site, Hlc::new(year_3000, 0));
    // A removal stamped in the future.
    let mut tomb = written_at(site, now, r#"{"owner": "mallory", "x": 1}"#);
    tomb.apply(
        &[Op::Unset {
            path: vec!["x".into()],
        }],
        Clock::resume(site, Hlc::new(year_3000, 0)).tick_at(year_3000),
    )
    .expect("unset");
    // A counter increment in the future.
    let mut counter = written_at(site, now, r#"{"owner": "mallory"}"#);
    counter
        .apply(
            &[Op::Increment {
                path: vec!["n".into()],
                by: Value::Int(1),
                kind: CounterKind::PnCounter,
            }],
            Clock::resume(site, Hlc::new(year_3000, 0)).tick_at(year_3000),
        )
        .expect("increment");
    let results = p
        .push(
            1,
            vec![
                change("cars", "far", full(&far)),
                change("cars", "max", full(&max)),
                change("cars", "skew", full(&past_skew)),
                change("cars", "vv", full(&vv_only)),
                change("cars", "tomb", full(&tomb)),
                change("cars", "counter", full(&counter)),
            ],
        )
        .await;
    assert_eq!(results, vec![denied("sync/clock-skew"); 6]);
    assert_eq!(select(&app, "SELECT * FROM cars").await, json!([]));

    // Within the skew (a peer clock a minute ahead): applied, and a server write right after
    // still wins, answered and kept.
    let ahead = written_at(site, now + MINUTE_MS, r#"{"owner": "mallory"}"#);
    let results = p.push(2, vec![change("cars", "car", full(&ahead))]).await;
    assert_eq!(results, vec![PushResult::Applied]);
    let body = execute(&app, "UPDATE cars SET owner = 'alice' WHERE _id = 'car'").await;
    assert_eq!(body["mutatedDocumentIds"], json!(["car"]));
    assert_eq!(
        select(&app, "SELECT owner FROM cars WHERE _id = 'car'").await,
        json!([{"owner": "alice"}])
    );
    // The session is still open.
    p.send(&Msg::Ping { nonce: 1 }).await;
    assert_eq!(p.recv().await, Msg::Pong { nonce: 1 });
    app.shutdown().await;
}

#[tokio::test]
async fn no_peer_may_claim_the_servers_site_or_another_peers() {
    let app = TestApp::spawn().await;
    let alice = key(&app, Permissions::all()).await;
    let bob = key(&app, Permissions::all()).await;
    let (_first, welcome) = Peer::open(&app, &alice).await;
    let Msg::Welcome {
        site: server_site, ..
    } = welcome
    else {
        panic!("welcome")
    };

    // The server's site, the zero site: refused at hello.
    for site in [server_site, SiteId(0)] {
        let mut p = Peer::connect(&app).await;
        p.hello_as(site, &alice).await;
        p.expect_fatal("sync/site-taken").await;
    }
    // A site belongs to the first identity that used it; the same key may come back with it.
    let site_a = SiteId(0xa11ce);
    let (a, _) = Peer::open_as(&app, site_a, &alice).await;
    drop(a);
    let mut p = Peer::connect(&app).await;
    p.hello_as(site_a, &bob).await;
    p.expect_fatal("sync/site-taken").await;
    let (_again, _) = Peer::open_as(&app, site_a, &alice).await;
    app.shutdown().await;
}

#[tokio::test]
async fn writes_of_sites_a_peer_does_not_own_are_refused() {
    let app = TestApp::spawn().await;
    let alice = key(&app, Permissions::all()).await;
    let bob = key(&app, Permissions::all()).await;
    let (site_a, site_b) = (SiteId(0xa), SiteId(0xb));
    let (mut a, welcome) = Peer::open_as(&app, site_a, &alice).await;
    let Msg::Welcome {
        site: server_site, ..
    } = welcome
    else {
        panic!("welcome")
    };
    let (mut b, _) = Peer::open_as(&app, site_b, &bob).await;
    let now = now_ms();

    // A's document, with a counter.
    let mut doc = written_at(site_a, now, r#"{"owner": "alice"}"#);
    doc.apply(
        &[Op::Increment {
            path: vec!["n".into()],
            by: Value::Int(2),
            kind: CounterKind::PnCounter,
        }],
        Clock::resume(site_a, doc.vv.max_hlc()).tick(),
    )
    .expect("increment");
    assert_eq!(
        a.push(1, vec![change("cars", "c", full(&doc))]).await,
        vec![PushResult::Applied]
    );

    // B claims the server's site in its version vector (at the largest value), writes stamped
    // with A's or the server's site, forges A's counter total and A's register value under A's
    // own stamp.
    let mut claims_server = written_at(site_b, now, r#"{"x": 1}"#);
    claims_server.vv.observe(server_site, Hlc(u64::MAX));
    let as_a = written_at(site_a, now + 1, r#"{"owner": "bob"}"#);
    let as_server = written_at(server_site, now + 1, r#"{"owner": "bob"}"#);
    let mut forged_counter = doc.clone();
    if let Some(m) = forged_counter.root.map.as_mut() {
        if let Some(pn) = m.entries.get_mut("n").and_then(|s| s.pn.as_mut()) {
            if let Some(c) = pn.contrib.get_mut(&site_a) {
                c.p = 1000.0;
            }
        }
    }
    let mut forged_value = doc.clone();
    if let Some(m) = forged_value.root.map.as_mut() {
        if let Some(r) = m.entries.get_mut("owner").and_then(|s| s.reg.as_mut()) {
            r.value = Some(Value::String("bob".into()));
        }
    }
    assert_ne!(forged_counter, doc);
    assert_ne!(forged_value, doc);
    let results = b
        .push(
            1,
            vec![
                change("cars", "c", full(&claims_server)),
                change("cars", "c", full(&as_a)),
                change("cars", "c", full(&as_server)),
                change("cars", "c", full(&forged_counter)),
                change("cars", "c", full(&forged_value)),
                change("cars", "new", full(&as_a)),
            ],
        )
        .await;
    assert_eq!(results, vec![denied("sync/foreign-site"); 6]);
    assert_eq!(
        select(&app, "SELECT * FROM cars").await,
        json!([{"_id": "c", "owner": "alice", "n": 2.0}])
    );
    // The document stays writable over HTTP.
    let body = execute(&app, "UPDATE cars SET owner = 'carol' WHERE _id = 'c'").await;
    assert_eq!(body["mutatedDocumentIds"], json!(["c"]));
    assert_eq!(
        select(&app, "SELECT owner FROM cars").await,
        json!([{"owner": "carol"}])
    );

    // Relaying what the server has is fine: B holds the document (as the server sent it) and
    // pushes it whole with an edit of its own.
    // (The test client applies what it pushes to its own copy: start from the server's.)
    b.docs.clear();
    b.subscribe(1, "SELECT * FROM cars", None).await;
    b.until_caught_up(1).await;
    let mut held = b.docs[&("cars".to_owned(), DocId::string("c"))].clone();
    held.apply(
        &[Op::Set {
            path: vec!["seen_by".into()],
            value: Value::String("bob".into()),
            objects: ObjectMode::Map,
        }],
        Clock::resume(site_b, held.vv.max_hlc()).tick(),
    )
    .expect("edit");
    assert_eq!(
        b.push(2, vec![change("cars", "c", full(&held))]).await,
        vec![PushResult::Applied]
    );
    assert_eq!(
        select(&app, "SELECT owner, seen_by, n FROM cars").await,
        json!([{"owner": "carol", "seen_by": "bob", "n": 2.0}])
    );
    app.shutdown().await;
}
