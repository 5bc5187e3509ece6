//! The native protocol over a [`Link`] without a socket: liveness and slow consumers, with
//! short intervals.

use std::time::Duration;

use bigpeer_schema::wire::Msg;
use bigpeer_schema::SiteId;
use tokio::sync::mpsc;
use tokio::task::LocalSet;

use super::{protocols, Inbound, Link, Outbound, SyncHub, SyncOptions};
use crate::testdb::TestDb;

fn hello() -> Inbound {
    Inbound::Binary(
        Msg::Hello {
            minor: 0,
            site: SiteId(1),
            token: "anything".into(),
            features: vec![],
            last_sync_ms: 0,
        }
        .encode(),
    )
}

/// Starts a native session on `db` with `options` (playground); returns its queues and task.
fn start(
    db: &TestDb,
    options: SyncOptions,
) -> (
    mpsc::Sender<Inbound>,
    mpsc::Receiver<Outbound>,
    tokio::task::JoinHandle<()>,
) {
    start_on(SyncHub::new(db.store.clone(), options))
}

/// Starts a native session of `hub`.
fn start_on(
    hub: SyncHub,
) -> (
    mpsc::Sender<Inbound>,
    mpsc::Receiver<Outbound>,
    tokio::task::JoinHandle<()>,
) {
    let (in_tx, in_rx) = mpsc::channel(8);
    let (out_tx, out_rx) = mpsc::channel(hub.options.send_queue);
    let link = Link {
        inbound: in_rx,
        outbound: out_tx,
    };
    let task = tokio::task::spawn_local(protocols()[0].run(hub, link));
    (in_tx, out_rx, task)
}

/// Acknowledges `batch` with a credit of 8 more.
async fn ack(tx: &mpsc::Sender<Inbound>, batch: u64) {
    tx.send(Inbound::Binary(Msg::Ack { batch, credit: 8 }.encode()))
        .await
        .expect("ack");
}

async fn next(rx: &mut mpsc::Receiver<Outbound>) -> Option<Outbound> {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("the session answers")
}

fn decode(o: Option<Outbound>) -> Msg {
    match o {
        Some(Outbound::Binary(b)) => Msg::decode(&b).expect("valid frame"),
        other => panic!("expected a frame, got {other:?}"),
    }
}

#[tokio::test]
async fn pings_when_idle_and_times_out_when_silent() {
    let db = TestDb::new().await;
    LocalSet::new()
        .run_until(async {
            let options = SyncOptions {
                heartbeat: Duration::from_millis(300),
                playground: true,
                ..SyncOptions::default()
            };
            let (tx, mut rx, task) = start(&db, options);
            tx.send(hello()).await.expect("send");
            match decode(next(&mut rx).await) {
                Msg::Welcome { heartbeat_ms, .. } => assert_eq!(heartbeat_ms, 300),
                other => panic!("{other:?}"),
            }
            // Idle: the server pings; the peer stays silent and is dropped.
            assert!(matches!(decode(next(&mut rx).await), Msg::Ping { .. }));
            let mut saw_timeout = false;
            loop {
                match next(&mut rx).await {
                    Some(Outbound::Binary(b)) => match Msg::decode(&b).expect("frame") {
                        Msg::Ping { .. } => {}
                        Msg::Error { code, fatal, .. } => {
                            assert_eq!((code.as_str(), fatal), ("sync/timeout", true));
                            saw_timeout = true;
                        }
                        other => panic!("{other:?}"),
                    },
                    Some(Outbound::Close { code, .. }) => {
                        assert_eq!(code, 1008);
                        break;
                    }
                    None => panic!("closed without a close frame"),
                }
            }
            assert!(saw_timeout);
            task.await.expect("the session ends");
        })
        .await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_peer_that_does_not_read_is_dropped() {
    let db = TestDb::new().await;
    LocalSet::new()
        .run_until(async {
            let options = SyncOptions {
                heartbeat: Duration::from_millis(300),
                send_queue: 1,
                playground: true,
                ..SyncOptions::default()
            };
            let (tx, mut rx, task) = start(&db, options);
            tx.send(hello()).await.expect("send");
            // The Welcome fills the queue; the Pong cannot be queued and nobody reads.
            tx.send(Inbound::Binary(Msg::Ping { nonce: 7 }.encode()))
                .await
                .expect("send");
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("the session gives up on its peer")
                .expect("no panic");
            assert!(matches!(decode(rx.recv().await), Msg::Welcome { .. }));
            assert_eq!(rx.recv().await, None, "nothing else was queued");
        })
        .await;
    db.drop_db().await;
}

#[tokio::test]
async fn any_input_before_hello_is_fatal_and_never_panics() {
    let db = TestDb::new().await;
    LocalSet::new()
        .run_until(async {
            for frame in [
                Inbound::Binary(vec![]),
                Inbound::Binary(vec![0x01]),
                Inbound::Binary(vec![0x06, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
                Inbound::Text,
                Inbound::TooLarge,
                Inbound::Broken("bad".into()),
            ] {
                let options = SyncOptions {
                    playground: true,
                    ..SyncOptions::default()
                };
                let (tx, mut rx, task) = start(&db, options);
                tx.send(frame.clone()).await.expect("send");
                match decode(next(&mut rx).await) {
                    Msg::Error { fatal, .. } => assert!(fatal, "{frame:?}"),
                    other => panic!("{frame:?}: {other:?}"),
                }
                assert!(matches!(next(&mut rx).await, Some(Outbound::Close { .. })));
                task.await.expect("no panic");
            }
        })
        .await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_session_that_lags_behind_the_feed_rereads_the_database() {
    let db = TestDb::new().await;
    let exec = crate::service::Executor::new(
        db.store.clone(),
        &crate::store::GroupCommitOptions::default(),
    );
    let write = |i: usize| {
        let exec = exec.clone();
        async move {
            exec.execute(
                &format!("INSERT INTO t DOCUMENTS ({{'_id': 'd{i}'}})"),
                &Default::default(),
            )
            .await
            .expect("insert");
        }
    };
    LocalSet::new()
        .run_until(async {
            let options = SyncOptions {
                heartbeat: Duration::from_secs(20),
                send_queue: 1,
                playground: true,
                feed: crate::store::FeedOptions {
                    capacity: 2,
                    poll_interval: Duration::from_millis(50),
                    ..crate::store::FeedOptions::default()
                },
                ..SyncOptions::default()
            };
            let (tx, mut rx, task) = start(&db, options);
            tx.send(hello()).await.expect("send");
            assert!(matches!(decode(next(&mut rx).await), Msg::Welcome { .. }));
            tx.send(Inbound::Binary(
                Msg::Subscribe {
                    sub: 1,
                    query: "SELECT * FROM t".into(),
                    args: bigpeer_schema::Value::Null,
                    cursor: None,
                }
                .encode(),
            ))
            .await
            .expect("send");
            assert!(matches!(decode(next(&mut rx).await), Msg::SubState { .. }));
            assert!(matches!(decode(next(&mut rx).await), Msg::SubState { .. }));
            // Nobody reads for a while: the session blocks on its full queue and its feed
            // receiver (2 changes of buffer) falls behind.
            let n = 30;
            for i in 0..n {
                write(i).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut seen = std::collections::BTreeSet::new();
            while seen.len() < n {
                match decode(next(&mut rx).await) {
                    Msg::Batch { batch, changes, .. } => {
                        seen.extend(changes.into_iter().map(|c| c.id.to_string()));
                        ack(&tx, batch).await;
                    }
                    Msg::Ping { .. } => {}
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(seen.len(), n);
            drop(tx);
            task.await.expect("no panic");
        })
        .await;
    db.drop_db().await;
}

#[tokio::test]
async fn subscriptions_per_session_are_bounded() {
    let db = TestDb::new().await;
    LocalSet::new()
        .run_until(async {
            let options = SyncOptions {
                max_subscriptions: 1,
                playground: true,
                ..SyncOptions::default()
            };
            let (tx, mut rx, task) = start(&db, options);
            tx.send(hello()).await.expect("send");
            assert!(matches!(decode(next(&mut rx).await), Msg::Welcome { .. }));
            let mut states = Vec::new();
            for sub in [1, 2] {
                let m = Msg::Subscribe {
                    sub,
                    query: "SELECT * FROM t".into(),
                    args: bigpeer_schema::Value::Null,
                    cursor: None,
                };
                tx.send(Inbound::Binary(m.encode())).await.expect("send");
            }
            while states.len() < 3 {
                if let Msg::SubState { sub, status } = decode(next(&mut rx).await) {
                    states.push((sub, status));
                }
            }
            use bigpeer_schema::wire::SubStatus;
            assert_eq!(states[0], (1, SubStatus::Active));
            let failed = states.iter().find(|(s, _)| *s == 2).expect("sub 2");
            assert!(
                matches!(&failed.1, SubStatus::Failed { code, .. } if code == "sync/too-many-subscriptions"),
                "{states:?}"
            );
            drop(tx);
            task.await.expect("no panic");
        })
        .await;
    db.drop_db().await;
}

/// Subscribes with `query` and returns the ids the initial sync sends, up to `CaughtUp`.
async fn subscribe_and_catch_up(
    tx: &mpsc::Sender<Inbound>,
    rx: &mut mpsc::Receiver<Outbound>,
    query: &str,
) -> std::collections::BTreeSet<String> {
    use bigpeer_schema::wire::SubStatus;
    tx.send(hello()).await.expect("send");
    assert!(matches!(decode(next(rx).await), Msg::Welcome { .. }));
    let m = Msg::Subscribe {
        sub: 1,
        query: query.into(),
        args: bigpeer_schema::Value::Null,
        cursor: None,
    };
    tx.send(Inbound::Binary(m.encode())).await.expect("send");
    let mut seen = std::collections::BTreeSet::new();
    loop {
        match decode(next(rx).await) {
            Msg::SubState {
                status: SubStatus::Active,
                ..
            } => {}
            Msg::SubState {
                status: SubStatus::CaughtUp { .. },
                ..
            } => return seen,
            Msg::Batch { batch, changes, .. } => {
                seen.extend(changes.into_iter().map(|c| c.id.to_string()));
                ack(tx, batch).await;
            }
            Msg::Ping { .. } => {}
            other => panic!("{other:?}"),
        }
    }
}

/// Collects the ids live batches send until `last` comes (changes come in feed order).
async fn live_until(
    tx: &mpsc::Sender<Inbound>,
    rx: &mut mpsc::Receiver<Outbound>,
    last: &str,
) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    while !seen.contains(last) {
        match decode(next(rx).await) {
            Msg::Batch { batch, changes, .. } => {
                seen.extend(changes.into_iter().map(|c| c.id.to_string()));
                ack(tx, batch).await;
            }
            Msg::Ping { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    seen
}

#[tokio::test]
async fn strict_mode_subscriptions_match_documents_through_their_type_declarations() {
    let db = TestDb::new().await;
    let exec = crate::service::Executor::new(
        db.store.clone(),
        &crate::store::GroupCommitOptions::default(),
    );
    let run = |text: &'static str| {
        let exec = exec.clone();
        async move {
            exec.execute(text, &Default::default())
                .await
                .unwrap_or_else(|e| panic!("{text}: {e}"));
        }
    };
    run("ALTER SYSTEM SET DQL_STRICT_MODE = true").await;
    // `m` of a is a map; `m` of r is a register holding an object.
    run("INSERT INTO COLLECTION c (m MAP) DOCUMENTS ({'_id': 'a', 'm': {'x': 1}})").await;
    run("INSERT INTO c DOCUMENTS ({'_id': 'r', 'm': {'x': 1}})").await;
    let hub = SyncHub::new(
        db.store.clone(),
        SyncOptions {
            playground: true,
            ..SyncOptions::default()
        },
    )
    .with_strict_mode(exec.strict_mode_flag());
    LocalSet::new()
        .run_until(async {
            let (tx1, mut rx1, task1) = start_on(hub.clone());
            let (tx2, mut rx2, task2) = start_on(hub.clone());
            let undeclared =
                subscribe_and_catch_up(&tx1, &mut rx1, "SELECT * FROM c WHERE m.x = 1").await;
            let declared = subscribe_and_catch_up(
                &tx2,
                &mut rx2,
                "SELECT * FROM COLLECTION c (m MAP) WHERE m.x = 1",
            )
            .await;
            // As the same SELECTs: undeclared, `m` is the register; declared, the map.
            let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
            assert_eq!(undeclared, ids(&["\"r\""]));
            assert_eq!(declared, ids(&["\"a\""]));
            run("INSERT INTO COLLECTION c (m MAP) DOCUMENTS ({'_id': 'b', 'm': {'x': 1}})").await;
            run("INSERT INTO c DOCUMENTS ({'_id': 'r2', 'm': {'x': 1}})").await;
            run("INSERT INTO COLLECTION c (m MAP) DOCUMENTS ({'_id': 'b2', 'm': {'x': 1}})").await;
            assert_eq!(live_until(&tx1, &mut rx1, "\"r2\"").await, ids(&["\"r2\""]));
            assert_eq!(
                live_until(&tx2, &mut rx2, "\"b2\"").await,
                ids(&["\"b\"", "\"b2\""])
            );
            drop((tx1, tx2));
            task1.await.expect("no panic");
            task2.await.expect("no panic");
        })
        .await;
    db.drop_db().await;
}
