//! Store tests against a real Postgres (a fresh database per test, dropped afterwards).

use std::collections::{BTreeMap, BTreeSet};

use crate::testdb::TestDb;
use bigpeer_schema::{Clock, CounterKind, Doc, DocId, ObjectMode, Op, SiteId, Value};

use super::{Change, Outcome, Store, StoreError, StoreOptions};

fn obj(json: &str) -> BTreeMap<String, Value> {
    match Value::parse_json(json).expect("json") {
        Value::Object(o) => o,
        other => panic!("not an object: {other}"),
    }
}

fn insert(coll: &str, id: &str, json: &str) -> Change {
    Change::Ops {
        collection: coll.into(),
        id: DocId::string(id),
        ops: vec![Op::Merge {
            path: vec![],
            value: obj(json),
            objects: ObjectMode::Map,
        }],
    }
}

#[tokio::test]
async fn writes_read_back_with_monotonic_txns() {
    let db = TestDb::new().await;
    let s = &db.store;
    assert!(s.ready().await.expect("ready"));
    assert_eq!(s.committed_txn().await.expect("txn"), 0);

    let a = s
        .apply(vec![insert(
            "cars",
            "a",
            r#"{"color":"red","n":1,"f":1.0}"#,
        )])
        .await
        .expect("apply");
    let b = s
        .apply(vec![
            insert("cars", "b", r#"{"big":18446744073709551615}"#),
            Change::Ops {
                collection: "cars".into(),
                id: DocId::string("a"),
                ops: vec![
                    Op::Set {
                        path: vec!["color".into()],
                        value: "blue".into(),
                        objects: ObjectMode::Map,
                    },
                    Op::Increment {
                        path: vec!["hits".into()],
                        by: Value::Int(2),
                        kind: CounterKind::Counter,
                    },
                ],
            },
        ])
        .await
        .expect("apply");
    assert!(
        b.txn > a.txn,
        "transaction ids grow: {} then {}",
        a.txn,
        b.txn
    );
    assert_eq!(b.outcomes.len(), 2);
    assert!(matches!(b.outcomes[0], Outcome::Changed { .. }));

    let doc = s
        .get("cars", &DocId::string("a"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        doc.value.expect("live").to_json_string(),
        r#"{"_id":"a","color":"blue","f":1.0,"hits":2,"n":1}"#,
        "int/float kept apart, counter materialised"
    );
    assert_eq!(doc.txn, b.txn);
    let big = s
        .get("cars", &DocId::string("b"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        big.value.expect("live").to_json_string(),
        r#"{"_id":"b","big":18446744073709551615}"#
    );
    assert_eq!(s.committed_txn().await.expect("txn"), b.txn);
    db.drop_db().await;
}

#[tokio::test]
async fn deltas_are_idempotent_and_refused_without_base() {
    let db = TestDb::new().await;
    let s = &db.store;
    // A small peer's state, sent as a delta from nothing.
    let mut peer = Doc::new();
    let mut clock = Clock::new(SiteId(7));
    peer.apply(
        &[Op::Merge {
            path: vec![],
            value: obj(r#"{"x":1}"#),
            objects: ObjectMode::Map,
        }],
        clock.tick(),
    )
    .expect("apply");
    let d1 = peer.delta(&Default::default());
    let first = s
        .apply(vec![Change::Delta {
            collection: "c".into(),
            id: DocId::string("p"),
            delta: d1.clone(),
        }])
        .await
        .expect("apply");
    assert!(matches!(first.outcomes[0], Outcome::Changed { .. }));
    // The same delta again (a retry): nothing changes, no sequence number is taken.
    let again = s
        .apply(vec![Change::Delta {
            collection: "c".into(),
            id: DocId::string("p"),
            delta: d1,
        }])
        .await
        .expect("apply");
    assert_eq!(again.outcomes, vec![Outcome::Unchanged]);
    assert_eq!(again.txn, first.txn);

    // A delta computed against a version this store never saw is refused; the rest of the batch
    // is applied.
    let base = peer.vv.clone();
    peer.apply(
        &[Op::Set {
            path: vec!["x".into()],
            value: Value::Int(2),
            objects: ObjectMode::Map,
        }],
        clock.tick(),
    )
    .expect("apply");
    let mut other = Doc::new();
    other
        .apply(
            &[Op::Merge {
                path: vec![],
                value: obj(r#"{"y":1}"#),
                objects: ObjectMode::Map,
            }],
            clock.tick(),
        )
        .expect("apply");
    let res = s
        .apply(vec![
            Change::Delta {
                collection: "c".into(),
                id: DocId::string("unknown"),
                delta: peer.delta(&base),
            },
            Change::Delta {
                collection: "c".into(),
                id: DocId::string("p"),
                delta: peer.delta(&base),
            },
        ])
        .await
        .expect("apply");
    assert_eq!(res.outcomes[0], Outcome::Refused);
    assert!(matches!(res.outcomes[1], Outcome::Changed { .. }));
    let p = s
        .get("c", &DocId::string("p"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        p.value.expect("live").to_json_string(),
        r#"{"_id":"p","x":2}"#
    );
    assert!(s
        .get("c", &DocId::string("unknown"))
        .await
        .expect("get")
        .is_none());
    db.drop_db().await;
}

#[tokio::test]
async fn delete_then_recreate_starts_fresh() {
    let db = TestDb::new().await;
    let s = &db.store;
    s.apply(vec![insert("c", "a", r#"{"old":1,"keep":{"x":1}}"#)])
        .await
        .expect("apply");
    s.apply(vec![Change::Ops {
        collection: "c".into(),
        id: DocId::string("a"),
        ops: vec![Op::Delete],
    }])
    .await
    .expect("delete");
    let gone = s
        .get("c", &DocId::string("a"))
        .await
        .expect("get")
        .expect("tombstone row kept");
    assert!(gone.deleted);
    assert!(gone.value.is_none());
    s.apply(vec![insert("c", "a", r#"{"new":2}"#)])
        .await
        .expect("apply");
    let back = s
        .get("c", &DocId::string("a"))
        .await
        .expect("get")
        .expect("exists");
    assert!(!back.deleted);
    assert_eq!(
        back.value.expect("live").to_json_string(),
        r#"{"_id":"a","new":2}"#
    );
    db.drop_db().await;
}

#[tokio::test]
async fn a_failing_change_writes_nothing() {
    let db = TestDb::new().await;
    let s = &db.store;
    let err = s
        .apply(vec![
            insert("c", "ok", r#"{"v":1}"#),
            Change::Ops {
                collection: "c".into(),
                id: DocId::string("bad"),
                ops: vec![Op::Increment {
                    path: vec!["n".into()],
                    by: Value::Float(2.5),
                    kind: CounterKind::Counter,
                }],
            },
        ])
        .await
        .expect_err("a float increment of a COUNTER is refused");
    assert_eq!(err.code(), "crdt/type-mismatch");
    assert!(
        s.get("c", &DocId::string("ok"))
            .await
            .expect("get")
            .is_none(),
        "no partial write"
    );
    assert_eq!(s.committed_txn().await.expect("txn"), 0);
    db.drop_db().await;
}

#[tokio::test]
async fn corrupt_blobs_give_a_precise_error() {
    let db = TestDb::new().await;
    let s = &db.store;
    s.apply(vec![insert("c", "a", r#"{"v":1}"#)])
        .await
        .expect("apply");
    sqlx::query("UPDATE documents SET meta = '\\x0100ff'::bytea")
        .execute(s.pool())
        .await
        .expect("corrupt it");
    let err = s
        .apply(vec![insert("c", "a", r#"{"v":2}"#)])
        .await
        .expect_err("corrupt");
    assert_eq!(err.code(), "crdt/corrupt");
    assert!(
        err.to_string()
            .contains("document \"a\" in collection \"c\""),
        "{err}"
    );
    let err = s.get("c", &DocId::string("a")).await.expect_err("corrupt");
    assert_eq!(err.code(), "crdt/corrupt");
    db.drop_db().await;
}

/// Many concurrent writers and one reader following the feed with a cursor: the reader must see
/// every document's final change, in strictly increasing sequence order, never skipping a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn change_feed_cursor_never_skips() {
    let db = TestDb::new().await;
    let s = db.store.clone();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                for i in 0..40 {
                    let batch = (0..3)
                        .map(|k| {
                            insert(
                                "feed",
                                &format!("w{w}-{}", (i * 3 + k) % 25),
                                &format!(r#"{{"i":{i}}}"#),
                            )
                        })
                        .collect();
                    s.apply(batch).await.expect("apply");
                }
            })
        })
        .collect();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let s = s.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut cursor = 0i64;
            let mut seen: BTreeSet<(String, i64)> = BTreeSet::new();
            loop {
                // Read `done` before querying: an empty answer after the writers finished is final.
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let rows = s.changes_since(cursor, 50).await.expect("changes");
                if rows.is_empty() {
                    if finished {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    continue;
                }
                for r in rows {
                    assert!(r.seq > cursor, "sequence goes forward");
                    cursor = r.seq;
                    seen.insert((r.id.to_string(), r.seq));
                }
            }
            (cursor, seen)
        })
    };
    for w in writers {
        w.await.expect("writer");
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let (cursor, seen) = reader.await.expect("reader");
    let last = s.committed_txn().await.expect("txn");
    assert_eq!(cursor, last, "the reader caught up");
    let finals = s.changes_since(0, 10_000).await.expect("all");
    assert_eq!(finals.len(), 8 * 25);
    for d in finals {
        assert!(
            seen.contains(&(d.id.to_string(), d.seq)),
            "reader skipped {} at seq {}",
            d.id,
            d.seq
        );
    }
    db.drop_db().await;
}

/// The property behind the feed: while a transaction holds an uncommitted sequence number, no
/// later one can commit, so a reader never moves its cursor past a row that appears later.
/// (With a plain Postgres sequence the second writer would commit at once and this test fails.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_sequence_number_cannot_commit_first() {
    let db = TestDb::new().await;
    let s = db.store.clone();
    let mut slow = s.pool().begin().await.expect("begin");
    let a_seq: i64 =
        sqlx::query_scalar("UPDATE seq_counter SET v = v + 1 WHERE id = 0 RETURNING v")
            .fetch_one(&mut *slow)
            .await
            .expect("take a number");
    let mut doc = Doc::new();
    doc.apply(
        &[Op::Merge {
            path: vec![],
            value: obj(r#"{"slow":true}"#),
            objects: ObjectMode::Map,
        }],
        Clock::new(SiteId(3)).tick(),
    )
    .expect("apply");
    sqlx::query("INSERT INTO documents (collection, id, value, meta, seq, txn) VALUES ('c', $1, '{}'::jsonb, $2, $3, $3)")
        .bind(DocId::string("slow").key())
        .bind(doc.encode())
        .bind(a_seq)
        .execute(&mut *slow)
        .await
        .expect("insert");

    let fast = {
        let s = s.clone();
        tokio::spawn(async move { s.apply(vec![insert("c", "fast", r#"{"fast":true}"#)]).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !fast.is_finished(),
        "a later writer committed while an earlier sequence number was open"
    );
    assert!(s.changes_since(0, 10).await.expect("feed").is_empty());

    slow.commit().await.expect("commit");
    let committed = fast.await.expect("join").expect("apply");
    let feed = s.changes_since(0, 10).await.expect("feed");
    let order: Vec<(String, i64)> = feed.iter().map(|d| (d.id.to_string(), d.seq)).collect();
    assert_eq!(
        order,
        vec![
            ("\"slow\"".to_owned(), a_seq),
            ("\"fast\"".to_owned(), committed.txn)
        ]
    );
    assert!(committed.txn > a_seq);
    db.drop_db().await;
}

/// Two writers creating the same new document at the same time (no row to lock yet) must both
/// be merged: neither may overwrite the other with a state computed from an empty document.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_of_one_document_merge() {
    let db = TestDb::new().await;
    // Two store handles = two processes with their own clocks, on one database.
    let other = Store::connect(&db.url(), &StoreOptions::default())
        .await
        .expect("connect");
    for round in 0..20 {
        let id = format!("doc{round}");
        let a = {
            let s = db.store.clone();
            let id = id.clone();
            tokio::spawn(async move { s.apply(vec![insert("c", &id, r#"{"a":1}"#)]).await })
        };
        let b = {
            let s = other.clone();
            let id = id.clone();
            tokio::spawn(async move { s.apply(vec![insert("c", &id, r#"{"b":2}"#)]).await })
        };
        a.await.expect("join").expect("apply a");
        b.await.expect("join").expect("apply b");
        let d = db
            .store
            .get("c", &DocId::string(&id))
            .await
            .expect("get")
            .expect("exists");
        let v = d.value.expect("live");
        assert_eq!(
            v.get_path(&["a"]),
            Some(&Value::Int(1)),
            "round {round}: {v}"
        );
        assert_eq!(
            v.get_path(&["b"]),
            Some(&Value::Int(2)),
            "round {round}: {v}"
        );
    }
    other.close().await;
    db.drop_db().await;
}

/// Concurrent writers through group commit: every write lands with its own outcomes, and one
/// invalid request fails alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_shares_transactions_and_isolates_failures() {
    let db = TestDb::new().await;
    let gc = super::GroupCommit::start(
        db.store.clone(),
        &super::GroupCommitOptions {
            workers: 2,
            max_batch: 64,
            queue: 256,
        },
    );
    let mut tasks = Vec::new();
    for i in 0..120 {
        let gc = gc.clone();
        tasks.push(tokio::spawn(async move {
            if i == 57 {
                gc.write(vec![Change::Ops {
                    collection: "g".into(),
                    id: DocId::string("bad"),
                    ops: vec![Op::Increment {
                        path: vec!["n".into()],
                        by: Value::Float(0.5),
                        kind: CounterKind::Counter,
                    }],
                }])
                .await
            } else {
                gc.write(vec![
                    insert("g", &format!("d{i}"), &format!(r#"{{"i":{i}}}"#)),
                    insert("g", "shared", &format!(r#"{{"k{i}":{i}}}"#)),
                ])
                .await
            }
        }));
    }
    let mut txns = BTreeSet::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let res = t.await.expect("join");
        if i == 57 {
            assert_eq!(res.expect_err("invalid").code(), "crdt/type-mismatch");
        } else {
            let c = res.expect("write");
            assert_eq!(c.outcomes.len(), 2);
            assert!(c
                .outcomes
                .iter()
                .all(|o| matches!(o, Outcome::Changed { .. })));
            txns.insert(c.txn);
        }
    }
    let all = db.store.changes_since(0, 1000).await.expect("feed");
    assert_eq!(all.len(), 120, "119 documents and the shared one");
    let shared = db
        .store
        .get("g", &DocId::string("shared"))
        .await
        .expect("get")
        .expect("exists");
    let fields = shared
        .value
        .expect("live")
        .as_object()
        .map(|o| o.len())
        .unwrap_or(0);
    assert_eq!(
        fields, 120,
        "_id and one key from each of the 119 valid writers"
    );
    assert!(db
        .store
        .get("g", &DocId::string("bad"))
        .await
        .expect("get")
        .is_none());
    drop(gc);
    db.drop_db().await;
}

/// The feed broadcasts every change of every process on the database, in sequence order, woken
/// by NOTIFY (the poll interval is set far too long to matter).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn change_feed_broadcasts_changes_of_all_processes_in_order() {
    let db = TestDb::new().await;
    let other = Store::connect(&db.url(), &StoreOptions::default())
        .await
        .expect("connect");
    let feed = super::ChangeFeed::start(
        db.store.clone(),
        super::FeedOptions {
            poll_interval: std::time::Duration::from_secs(3600),
            ..Default::default()
        },
    )
    .await
    .expect("feed");
    let mut rx = feed.subscribe();
    let mut expected = 0;
    for i in 0..10 {
        let s = if i % 2 == 0 { &db.store } else { &other };
        s.apply(vec![
            insert("f", &format!("d{i}"), r#"{"v":1}"#),
            insert("f", "same", &format!(r#"{{"k{i}":{i}}}"#)),
        ])
        .await
        .expect("apply");
        expected += 2;
    }
    let last = db.store.committed_txn().await.expect("txn");
    assert!(
        feed.wait_for(last, std::time::Duration::from_secs(10))
            .await,
        "the feed reached {last}"
    );
    // The feed holds the latest change per document: a document changed by several commits
    // between two reads shows up once, with its newest sequence number.
    let mut got = Vec::new();
    while let Ok(d) = rx.try_recv() {
        got.push((d.id.to_string(), d.seq));
    }
    assert!(
        got.windows(2).all(|w| w[0].1 < w[1].1),
        "sequence order: {got:?}"
    );
    assert!(got.len() <= expected);
    let finals = db.store.changes_since(0, 100).await.expect("feed");
    assert_eq!(finals.len(), 11);
    for d in finals {
        assert!(
            got.contains(&(d.id.to_string(), d.seq)),
            "missed {} at {}",
            d.id,
            d.seq
        );
    }
    assert_eq!(feed.position(), last);
    other.close().await;
    drop(feed);
    db.drop_db().await;
}

/// Jobs sharing one transaction: each sees the effects of the ones before it; a failing job is
/// undone (even its changes to a document another job also changed) and only it gets the error.
#[tokio::test]
async fn jobs_in_one_transaction_are_isolated() {
    let db = TestDb::new().await;
    let s = &db.store;
    let x = DocId::string("x");
    let y = DocId::string("y");
    let t = |ids: &[&DocId]| {
        ids.iter()
            .map(|i| ("c".to_owned(), (*i).clone()))
            .collect::<Vec<_>>()
    };
    let set = |k: &str, v: i64| {
        vec![Op::Set {
            path: vec![k.into()],
            value: Value::Int(v),
            objects: ObjectMode::Map,
        }]
    };

    let (a, ra) = super::txn::Job::new(t(&[&x]), {
        let (x, ops) = (x.clone(), set("a", 1));
        move |w| w.apply_ops("c", &x, &ops)
    });
    let (b, rb) = super::txn::Job::new(t(&[&x, &y]), {
        let (x, y, ops) = (x.clone(), y.clone(), set("b", 2));
        move |w| {
            // Sees job a's write.
            let seen = w.value("c", &x)?.and_then(|v| v.get_path(&["a"]).cloned());
            assert_eq!(seen, Some(Value::Int(1)));
            w.apply_ops("c", &x, &ops)?;
            w.apply_ops("c", &y, &ops)?;
            Err::<(), _>(StoreError::Shared {
                kind: crate::store::Kind::Input,
                code: "query/evaluation",
                message: "conflict".into(),
            })
        }
    });
    let (c, rc) = super::txn::Job::new(t(&[&y]), {
        let (y, ops) = (y.clone(), set("c", 3));
        move |w| {
            w.apply_ops("c", &y, &ops)?;
            // Touching a document it did not declare is refused.
            let undeclared = w.value("c", &DocId::string("z")).expect_err("not locked");
            assert_eq!(undeclared.code(), "internal");
            Ok(())
        }
    });
    s.run_jobs(vec![a, b, c]).await;
    let (_, ia) = ra.await.expect("answer").expect("a commits");
    let eb = rb.await.expect("answer").expect_err("b fails");
    let (_, ic) = rc.await.expect("answer").expect("c commits");
    assert_eq!(eb.code(), "query/evaluation");
    assert_eq!(ia.txn, ic.txn, "one shared transaction");
    let xv = s
        .get("c", &x)
        .await
        .expect("get")
        .expect("x")
        .value
        .expect("live");
    let yv = s
        .get("c", &y)
        .await
        .expect("get")
        .expect("y")
        .value
        .expect("live");
    assert_eq!(xv.to_json_string(), r#"{"_id":"x","a":1}"#);
    assert_eq!(yv.to_json_string(), r#"{"_id":"y","c":3}"#);
    db.drop_db().await;
}

/// U+0000 cannot be stored by Postgres: a job that brings it in fails on its own with
/// `request/nul-character` (its document unchanged) and the jobs beside it commit.
#[tokio::test]
async fn a_nul_character_fails_only_its_own_job() {
    let db = TestDb::new().await;
    let s = &db.store;
    let x = DocId::string("x");
    let y = DocId::string("y");
    let set = |k: &str, v: Value| {
        vec![Op::Set {
            path: vec![k.into()],
            value: v,
            objects: ObjectMode::Map,
        }]
    };
    let (a, ra) = super::txn::Job::new(vec![("c".to_owned(), x.clone())], {
        let (x, ops) = (x.clone(), set("a", Value::String("fine".into())));
        move |w| w.apply_ops("c", &x, &ops)
    });
    let (b, rb) = super::txn::Job::new(vec![("c".to_owned(), y.clone())], {
        let (y, ops) = (y.clone(), set("b", Value::String("nu\0l".into())));
        move |w| w.apply_ops("c", &y, &ops)
    });
    let (c, rc) = super::txn::Job::new(vec![("c".to_owned(), y.clone())], {
        // The same through a remote delta: refused, and the document is as before.
        let y = y.clone();
        let mut remote = Doc::new();
        remote
            .apply(
                &set("k\0ey", Value::Int(1))
                    .into_iter()
                    .chain(set("ok", Value::Int(2)))
                    .collect::<Vec<_>>(),
                Clock::new(SiteId(9)).tick(),
            )
            .expect("apply");
        let delta = remote.delta(&Default::default());
        move |w| {
            let err = w.apply_delta("c", &y, &delta).expect_err("refused");
            assert_eq!(err.code(), "request/nul-character");
            assert_eq!(w.value("c", &y)?, None);
            Ok(())
        }
    });
    s.run_jobs(vec![a, b, c]).await;
    ra.await.expect("answer").expect("a commits");
    let eb = rb.await.expect("answer").expect_err("b fails");
    assert_eq!(eb.code(), "request/nul-character");
    rc.await.expect("answer").expect("c commits");
    let xv = s.get("c", &x).await.expect("get").expect("x").value;
    assert_eq!(
        xv.map(|v| v.to_json_string()),
        Some(r#"{"_id":"x","a":"fine"}"#.to_owned())
    );
    assert!(s.get("c", &y).await.expect("get").is_none());
    db.drop_db().await;
}

/// The statement that loads a write's targets probes the primary key even with the generic plan
/// a connection caches while the table is young (empty), as it is on a new database: a join
/// planned then as a hash join over a sequential scan read the whole table on every write.
#[tokio::test]
async fn loading_write_targets_probes_the_primary_key_on_a_young_table() {
    let db = TestDb::new().await;
    let mut conn = db.store.pool().acquire().await.expect("connection");
    for sql in [
        "SET plan_cache_mode = force_generic_plan".to_owned(),
        format!(
            "PREPARE load_targets(text[], bytea[]) AS {}",
            super::txn::LOAD_TARGETS
        ),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .expect("prepare");
    }
    let lines: Vec<String> = sqlx::query_scalar(
        "EXPLAIN (FORMAT TEXT) EXECUTE load_targets('{cars,cars}', '{\\x01,\\x02}')",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("explain");
    let plan = lines.join("\n");
    assert!(
        plan.contains("Index Scan using documents_pkey") && !plan.contains("Seq Scan"),
        "{plan}"
    );
    sqlx::query("DEALLOCATE load_targets")
        .execute(&mut *conn)
        .await
        .expect("deallocate");
    sqlx::query("RESET plan_cache_mode")
        .execute(&mut *conn)
        .await
        .expect("reset");
}

#[tokio::test]
async fn a_thread_reads_through_its_own_pool_and_the_store_closes_it() {
    let db = TestDb::new().await;
    let other = TestDb::new().await;
    let shared_max = db.store.pool().options().get_max_connections();
    db.store.add_thread_reads(2);

    // This thread's reads go through its own pool, opened on demand.
    let reads = db.store.reads();
    assert_eq!(reads.options().get_max_connections(), 2);
    assert_ne!(shared_max, 2);
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&reads)
        .await
        .expect("read");
    assert_eq!(one, 1);
    assert_eq!(reads.size(), 1);
    let (size, _) = db.store.connections();
    assert_eq!(size, db.store.pool().size() + 1);

    // Another thread, and another store on this thread, read through the shared pool.
    let store = db.store.clone();
    let elsewhere = std::thread::spawn(move || store.reads().options().get_max_connections())
        .join()
        .expect("thread");
    assert_eq!(elsewhere, shared_max);
    let other_max = other.store.pool().options().get_max_connections();
    assert_eq!(
        other.store.reads().options().get_max_connections(),
        other_max
    );

    // Installing again replaces (and closes) this thread's pool; closing the store closes
    // the thread's pool with the shared one.
    db.store.add_thread_reads(3);
    assert!(reads.is_closed());
    let reads = db.store.reads();
    assert_eq!(reads.options().get_max_connections(), 3);
    other.drop_db().await;
    db.drop_db().await;
    assert!(reads.is_closed());
}

/// Documents `d0`..`d{n}` in `c` (`{"n": i}`), with `d0` deleted; reads of `d0`..`d{n+10}`.
async fn point_read_fixture(s: &Store, n: usize) {
    let docs = (0..n)
        .map(|i| insert("c", &format!("d{i}"), &format!(r#"{{"n":{i}}}"#)))
        .collect();
    s.apply(docs).await.expect("apply");
    s.apply(vec![Change::Ops {
        collection: "c".into(),
        id: DocId::string("d0"),
        ops: vec![Op::Delete],
    }])
    .await
    .expect("delete");
}

fn expected_point_read(i: usize, n: usize) -> Option<Value> {
    (i > 0 && i < n)
        .then(|| Value::parse_json(&format!(r#"{{"_id":"d{i}","n":{i}}}"#)).expect("json"))
}

type PointRead = tokio::task::JoinHandle<(usize, Result<Option<Value>, StoreError>)>;

/// Reads of `d0`..`d{n-1}` in `c`, each a task; on a current-thread runtime they all run on
/// this thread, on its read queue.
fn spawn_point_reads(s: &Store, n: usize) -> Vec<PointRead> {
    (0..n)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let key = DocId::string(format!("d{i}")).key();
                (i, s.read_current("c", &key).await)
            })
        })
        .collect()
}

#[tokio::test]
async fn concurrent_point_reads_share_statements_and_each_gets_its_own_document() {
    let db = TestDb::new().await;
    let s = db.store.clone();
    point_read_fixture(&s, 200).await;
    s.add_thread_reads(2);
    let tasks = spawn_point_reads(&s, 210);
    for t in tasks {
        let (i, got) = t.await.expect("task");
        assert_eq!(got.expect("read"), expected_point_read(i, 200), "d{i}");
    }
    let (reads, statements) = s.point_read_counts();
    assert_eq!(reads, 210);
    assert!(
        statements < reads / 4,
        "{statements} statements for {reads} reads"
    );
    // Another collection with the same ids is another document.
    let other = s
        .read_current("other", &DocId::string("d1").key())
        .await
        .expect("read");
    assert_eq!(other, None);
    db.drop_db().await;
}

#[tokio::test]
async fn cancelled_point_reads_neither_lose_nor_stall_the_others() {
    let db = TestDb::new().await;
    let s = db.store.clone();
    point_read_fixture(&s, 50).await;
    s.add_thread_reads(1);
    for round in 0..20 {
        let tasks = spawn_point_reads(&s, 40);
        // Let some start (and some batches run), then cancel every third: reads running a
        // batch and reads queued. (A read cancelled with the turn in hand, before it saw it, is
        // `reads::tests`'s deterministic case.)
        for _ in 0..round % 4 {
            tokio::task::yield_now().await;
        }
        let mut kept = Vec::new();
        for (n, t) in tasks.into_iter().enumerate() {
            if n % 3 == 0 {
                t.abort();
            } else {
                kept.push(t);
            }
        }
        for t in kept {
            let (i, got) = tokio::time::timeout(std::time::Duration::from_secs(10), t)
                .await
                .expect("a read stalled")
                .expect("task");
            assert_eq!(got.expect("read"), expected_point_read(i, 50), "d{i}");
        }
    }
    // The one slot is free again: a read alone goes straight through.
    let got = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        s.read_current("c", &DocId::string("d7").key()),
    )
    .await
    .expect("the slot leaked")
    .expect("read");
    assert_eq!(got, expected_point_read(7, 50));
    db.drop_db().await;
}

/// Every write stores the typed state strict-mode queries read (`shape`), NULL when the default
/// view tells every field's type; documents from before the column get it on the next migrate.
#[tokio::test]
async fn writes_store_the_typed_state_and_migrate_backfills_it() {
    let db = TestDb::new().await;
    let s = &db.store;
    let typed = Change::Ops {
        collection: "c".into(),
        id: DocId::string("t"),
        ops: vec![Op::Merge {
            path: vec![],
            value: obj(r#"{"m":{"x":1},"n":2}"#),
            objects: ObjectMode::Register,
        }],
    };
    s.apply(vec![typed, insert("c", "p", r#"{"m":{"x":1},"n":2}"#)])
        .await
        .expect("apply");
    let shapes = || async {
        sqlx::query_as::<_, (Vec<u8>, Option<serde_json::Value>)>(
            "SELECT id, shape FROM documents ORDER BY id",
        )
        .fetch_all(s.pool())
        .await
        .expect("shapes")
    };
    let written = shapes().await;
    let by_id = |rows: &[(Vec<u8>, Option<serde_json::Value>)], id: &str| {
        rows.iter()
            .find(|(k, _)| *k == DocId::string(id).key())
            .and_then(|(_, s)| s.clone())
    };
    assert_eq!(
        by_id(&written, "t"),
        Some(serde_json::json!({"m": {"r": {"x": 1}}, "n": {"r": 2}})),
        "a register holding an object needs the typed state"
    );
    assert_eq!(
        by_id(&written, "p"),
        None,
        "objects as maps: no shape needed"
    );

    sqlx::query("UPDATE documents SET shape = NULL")
        .execute(s.pool())
        .await
        .expect("forget shapes");
    sqlx::query("INSERT INTO pending_backfills (name) VALUES ('documents_shape')")
        .execute(s.pool())
        .await
        .expect("mark pending");
    s.migrate().await.expect("migrate");
    assert_eq!(shapes().await, written, "backfilled as written");
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM pending_backfills")
        .fetch_one(s.pool())
        .await
        .expect("pending");
    assert_eq!(pending, 0);
    db.drop_db().await;
}

fn set_ops(k: &str, v: Value) -> Vec<Op> {
    vec![Op::Set {
        path: vec![k.into()],
        value: v,
        objects: ObjectMode::Map,
    }]
}

/// One job whose data the database refuses (here a trigger: what passes every validator but
/// Postgres will not store) fails alone; the jobs that shared its transaction commit.
#[tokio::test]
async fn a_database_refusal_fails_only_its_own_job() {
    let db = TestDb::new().await;
    let s = &db.store;
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN RAISE EXCEPTION 'poisoned row'; END $$; \
         CREATE TRIGGER refuse_poison BEFORE INSERT OR UPDATE ON documents \
         FOR EACH ROW WHEN (NEW.collection = 'poison') EXECUTE FUNCTION refuse_poison();",
    )
    .execute(s.pool())
    .await
    .expect("trigger");
    let mut jobs = Vec::new();
    let mut answers = Vec::new();
    for i in 0..40 {
        let coll = if i == 17 { "poison" } else { "c" };
        let id = DocId::string(format!("d{i}"));
        let (job, rx) = super::txn::Job::new(vec![(coll.to_owned(), id.clone())], {
            let ops = set_ops("n", Value::Int(i));
            move |w| w.apply_ops(coll, &id, &ops)
        });
        jobs.push(job);
        answers.push((i, rx));
    }
    // One call: all forty jobs start in one shared transaction.
    s.run_jobs(jobs).await;
    for (i, rx) in answers {
        let r = rx.await.expect("answer");
        if i == 17 {
            assert_eq!(
                r.expect_err("the poisoned job fails").code(),
                "store/backend"
            );
        } else {
            r.unwrap_or_else(|e| panic!("job {i} failed with its neighbour: {e}"));
        }
    }
    let stored = s.changes_since(0, 100).await.expect("feed");
    assert_eq!(stored.len(), 39);
    assert!(stored.iter().all(|d| d.collection == "c"));
    db.drop_db().await;
}

/// Writes over a limit fail on their own (400-class codes), before anything is stored.
#[tokio::test]
async fn writes_over_a_limit_fail_only_their_own_job() {
    use bigpeer_schema::limits;
    let db = TestDb::new().await;
    let s = &db.store;
    let mut deep = Value::Int(1);
    for _ in 0..limits::MAX_DEPTH {
        deep = Value::Array(vec![deep]);
    }
    let long_id = DocId::string("x".repeat(4000));
    let long_coll = "c".repeat(4000);
    let cases: Vec<(String, DocId, Vec<Op>, &str)> = vec![
        (
            "c".into(),
            DocId::string("deep"),
            set_ops("a", deep),
            limits::TOO_DEEP,
        ),
        (
            "c".into(),
            DocId::string("path"),
            vec![Op::Set {
                path: vec!["p".into(); 200],
                value: Value::Int(1),
                objects: ObjectMode::Map,
            }],
            limits::TOO_DEEP,
        ),
        (
            "c".into(),
            long_id,
            set_ops("a", Value::Int(1)),
            limits::TOO_LONG,
        ),
        (
            long_coll,
            DocId::string("a"),
            set_ops("a", Value::Int(1)),
            limits::TOO_LONG,
        ),
        (
            "".into(),
            DocId::string("a"),
            set_ops("a", Value::Int(1)),
            "query/invalid",
        ),
        (
            "a\u{1}".into(),
            DocId::string("a"),
            set_ops("a", Value::Int(1)),
            "query/invalid",
        ),
    ];
    let mut jobs = Vec::new();
    let mut answers = Vec::new();
    for (coll, id, ops, code) in cases {
        let (job, rx) = super::txn::Job::new(vec![(coll.clone(), id.clone())], move |w| {
            w.apply_ops(&coll, &id, &ops)
        });
        jobs.push(job);
        answers.push((code, rx));
    }
    let ok = DocId::string("ok");
    let (job, ok_rx) = super::txn::Job::new(vec![("c".to_owned(), ok.clone())], {
        let (ok, ops) = (ok.clone(), set_ops("a", Value::Int(1)));
        move |w| w.apply_ops("c", &ok, &ops)
    });
    jobs.push(job);
    s.run_jobs(jobs).await;
    for (code, rx) in answers {
        let e = rx.await.expect("answer").expect_err(code);
        assert_eq!(e.code(), code, "{e}");
        assert!(e.is_refusal() || code == "query/invalid", "{e}");
    }
    ok_rx
        .await
        .expect("answer")
        .expect("the valid write commits");
    let stored = s.changes_since(0, 100).await.expect("feed");
    assert_eq!(stored.len(), 1);
    db.drop_db().await;
}

/// The document size limit holds however a document grows (many small writes), measured on the
/// encoded CRDT state; a document over it may still shrink or be deleted.
#[tokio::test]
async fn the_document_size_limit_holds_for_small_writes() {
    let db = TestDb::new().await;
    let s = &db.store;
    s.set_document_size_limit(4096);
    let id = DocId::string("big");
    let mut refused = None;
    for i in 0..100 {
        let ops = set_ops(&format!("f{i}"), Value::String("x".repeat(100)));
        match s
            .apply(vec![Change::Ops {
                collection: "c".into(),
                id: id.clone(),
                ops,
            }])
            .await
        {
            Ok(_) => {}
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (at, e) = refused.expect("refused before 10 kB");
    assert!(at > 10, "refused after {at} writes");
    assert_eq!(e.code(), "document/too-large");
    let stored = s.get("c", &id).await.expect("get").expect("doc");
    assert!(stored.state.encode().len() <= 4096);
    // Lower the limit: the document is over it now, and can still shrink or go.
    s.set_document_size_limit(100);
    s.apply(vec![Change::Ops {
        collection: "c".into(),
        id: id.clone(),
        ops: vec![Op::Unset {
            path: vec!["f0".into()],
        }],
    }])
    .await
    .expect("shrinks");
    s.apply(vec![Change::Ops {
        collection: "c".into(),
        id: id.clone(),
        ops: vec![Op::Delete],
    }])
    .await
    .expect("deleted");
    db.drop_db().await;
}

/// A stored state that does not decode fails only the writes to that document (which can still
/// evict it); the feed skips it, counts it and moves on.
#[tokio::test]
async fn an_unreadable_row_fails_only_its_own_document() {
    let db = TestDb::new().await;
    let s = &db.store;
    s.apply(vec![
        insert("c", "bad", r#"{"a":1}"#),
        insert("c", "good", r#"{"a":1}"#),
    ])
    .await
    .expect("insert");
    sqlx::query("UPDATE documents SET meta = '\\x01ffff'::bytea WHERE id = $1")
        .bind(DocId::string("bad").key())
        .execute(s.pool())
        .await
        .expect("corrupt");
    let page = s.changes_page(0, 10).await.expect("feed reads on");
    assert_eq!(page.read, 2);
    assert_eq!(page.docs.len(), 1);
    assert_eq!(page.docs[0].id, DocId::string("good"));
    assert_eq!(s.unreadable_rows().1, 1);

    let bad = DocId::string("bad");
    let good = DocId::string("good");
    let (a, ra) = super::txn::Job::new(vec![("c".to_owned(), bad.clone())], {
        let (bad, ops) = (bad.clone(), set_ops("a", Value::Int(2)));
        move |w| w.apply_ops("c", &bad, &ops)
    });
    let (b, rb) = super::txn::Job::new(vec![("c".to_owned(), good.clone())], {
        let (good, ops) = (good.clone(), set_ops("a", Value::Int(2)));
        move |w| w.apply_ops("c", &good, &ops)
    });
    s.run_jobs(vec![a, b]).await;
    assert_eq!(
        ra.await.expect("answer").expect_err("unreadable").code(),
        "crdt/corrupt"
    );
    rb.await
        .expect("answer")
        .expect("the other document is written");
    s.transact(vec![("c".to_owned(), bad.clone())], {
        let bad = bad.clone();
        move |w| w.evict("c", &bad)
    })
    .await
    .expect("evicted");
    assert!(s.get("c", &bad).await.expect("get").is_none());
    assert_eq!(s.unreadable_rows().1, 0, "forgotten once evicted");
    db.drop_db().await;
}

/// The migrations as every existing database recorded them: sqlx refuses to start on a database
/// whose applied migration's checksum (SHA-384 of the file) or version changed. A migration is
/// never edited once released; a new one is added.
#[test]
fn released_migrations_keep_their_versions_descriptions_and_checksums() {
    let released = [
        (1, "documents", "b9685486a6fea7fcf7b30bc83415d7c0c4f11f78f1a7d9b5ed7e2d6b6515ae8cd5143a73e39df240825094aa8846774b"),
        (2, "dql functions", "c49ccce30fb58bd9e1e32a24a21cf073f607b7b89d3f108d1cc4c0f98904213bd399c58f29617f4d4180ac761779b82f"),
        (3, "api keys", "3fac06be5b66ebec0e87d059bc2ab850e351b7e8762a8004dc271e88c92618ea9babf1fc01e1dcaa2f23f4cdf72c5ed6"),
        (4, "documents collection seq", "c3122c3cf87c9da9f55f78310d0133784e4473106a0c31b91b4df57001b8199d607b2d9f7d00db64001d10b2068a41e5"),
        (5, "documents shape", "4490662f7bcbd6d66cd147b6c70eb192a393862273de8a4f590a5f68e9f154b873a0d2f923ed52b69d825c108d48d03d"),
        (6, "system settings", "7f2b66a8784ed283e675e1d6bf01328b34b5a2361b63fae0c4632d23a2bf7f1b3b9a949f55ccfa80f8e1f9421334b8e9"),
        (7, "dql semantics", "752ddcdeb38b3439843e4e50846f15d5964d418ca3e1f3388e54bf6b1dac48e42aae383f8f03f2a432a726bc37c93387"),
        (8, "sync sites", "a2654db1a1ccfccabd2d844ecf70d4ae13635a985ff78a4e07a3c6badea1da50cec72f4fb9f7c41dfc3212afb70ad157"),
        (9, "dql limits", "ca1f64ac5153d6410da7b584de7f487bc05de8aacd023b1de989bb914b5180819f985d27f47b9cf42a28ae2f2a8a89e4"),
    ];
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let ours: Vec<(i64, String, String)> = super::MIGRATOR
        .iter()
        .map(|m| (m.version, m.description.to_string(), hex(&m.checksum)))
        .collect();
    for (i, (version, description, checksum)) in released.iter().enumerate() {
        assert_eq!(
            ours.get(i),
            Some(&(*version, description.to_string(), checksum.to_string())),
            "migration {version} changed"
        );
        assert!(!super::MIGRATOR.iter().nth(i).is_some_and(|m| m.no_tx));
    }
}

/// The whole change log after `after`.
async fn logged(s: &Store, after: i64) -> Vec<super::ChangeRow> {
    s.change_log_page(after, None, 1000)
        .await
        .expect("change log")
        .rows
}

fn json(text: &str) -> Option<Value> {
    Some(Value::parse_json(text).expect("json"))
}

#[tokio::test]
async fn every_committed_change_of_a_documents_json_is_logged_once_in_commit_order() {
    use super::ChangeMethod::*;
    let db = TestDb::new().await;
    let s = &db.store;
    let a = DocId::string("a");
    let set = |v: &str| Change::Ops {
        collection: "cars".into(),
        id: DocId::string("a"),
        ops: vec![Op::Set {
            path: vec!["color".into()],
            value: v.into(),
            objects: ObjectMode::Map,
        }],
    };
    let ins = s
        .apply(vec![insert("cars", "a", r#"{"color":"red"}"#)])
        .await
        .expect("insert");
    let upd = s.apply(vec![set("blue")]).await.expect("update");
    // The same value again: the CRDT state changes (a new stamp) and takes a number for sync,
    // but the JSON does not: no event.
    let same = s.apply(vec![set("blue")]).await.expect("same value");
    assert!(matches!(same.outcomes[0], Outcome::Changed { .. }));
    let del = s
        .apply(vec![Change::Ops {
            collection: "cars".into(),
            id: a.clone(),
            ops: vec![Op::Delete],
        }])
        .await
        .expect("delete");
    // Deleting a deleted document changes nothing visible.
    s.apply(vec![Change::Ops {
        collection: "cars".into(),
        id: a.clone(),
        ops: vec![Op::Delete],
    }])
    .await
    .expect("delete again");
    let back = s
        .apply(vec![insert("cars", "a", r#"{"color":"green"}"#)])
        .await
        .expect("re-insert");
    // Two documents in one transaction: one position each, one transaction id.
    let two = s
        .apply(vec![
            insert("cars", "b", r#"{"n":1}"#),
            insert("boats", "c", r#"{"n":2}"#),
        ])
        .await
        .expect("two");
    let (_, ev) = s
        .transact(vec![("cars".to_owned(), a.clone())], {
            let a = a.clone();
            move |w| w.evict("cars", &a)
        })
        .await
        .expect("evict");

    let log = logged(s, 0).await;
    let got: Vec<_> = log
        .iter()
        .map(|r| {
            (
                r.collection.as_str(),
                r.id.to_string(),
                r.method,
                r.old_value.clone(),
                r.new_value.clone(),
                r.txn,
            )
        })
        .collect();
    let a_ = DocId::string("a").to_string();
    assert_eq!(
        got,
        vec![
            (
                "cars",
                a_.clone(),
                Upsert,
                None,
                json(r#"{"_id":"a","color":"red"}"#),
                ins.txn
            ),
            (
                "cars",
                a_.clone(),
                Update,
                json(r#"{"_id":"a","color":"red"}"#),
                json(r#"{"_id":"a","color":"blue"}"#),
                upd.txn
            ),
            (
                "cars",
                a_.clone(),
                Remove,
                json(r#"{"_id":"a","color":"blue"}"#),
                None,
                del.txn
            ),
            (
                "cars",
                a_.clone(),
                Upsert,
                None,
                json(r#"{"_id":"a","color":"green"}"#),
                back.txn
            ),
            (
                "boats",
                DocId::string("c").to_string(),
                Upsert,
                None,
                json(r#"{"_id":"c","n":2}"#),
                two.txn
            ),
            (
                "cars",
                DocId::string("b").to_string(),
                Upsert,
                None,
                json(r#"{"_id":"b","n":1}"#),
                two.txn
            ),
            (
                "cars",
                a_,
                Evict,
                json(r#"{"_id":"a","color":"green"}"#),
                None,
                ev.txn
            ),
        ]
    );
    // Positions: strictly increasing, each the document's own sequence number.
    assert!(log.windows(2).all(|w| w[0].seq < w[1].seq));
    let seqs: Vec<i64> = two
        .outcomes
        .iter()
        .map(|o| match o {
            Outcome::Changed { seq } => *seq,
            other => panic!("{other:?}"),
        })
        .collect();
    // In one transaction, documents are numbered in key order (collection, then id).
    assert_eq!(vec![log[5].seq, log[4].seq], seqs);
    assert_eq!(log[6].seq, ev.txn, "an eviction takes a number of its own");
    assert!(log.iter().all(|r| r.committed_at_us > 0));

    // Reading from a cursor, and one collection only.
    assert_eq!(logged(s, log[2].seq).await, log[3..].to_vec());
    let boats = s
        .change_log_page(0, Some("boats"), 10)
        .await
        .expect("boats");
    assert_eq!(boats.rows, vec![log[4].clone()]);
    assert_eq!(
        boats.next, ev.txn,
        "a page that is not full covers everything committed"
    );
    assert_eq!(boats.pruned_through, 0);
    let first = s.change_log_page(0, None, 2).await.expect("page");
    assert_eq!((first.read, first.next), (2, log[1].seq));
    db.drop_db().await;
}

#[tokio::test]
async fn what_rolls_back_is_never_logged() {
    let db = TestDb::new().await;
    let s = &db.store;
    let a = DocId::string("a");
    // A job that changes a document, then fails: undone, nothing written.
    let failed = s
        .transact(vec![("c".to_owned(), a.clone())], {
            let a = a.clone();
            move |w| {
                w.apply_ops(
                    "c",
                    &a,
                    &[Op::Set {
                        path: vec!["x".into()],
                        value: 1.into(),
                        objects: ObjectMode::Map,
                    }],
                )?;
                Err::<(), _>(StoreError::Internal("fails midway"))
            }
        })
        .await;
    assert!(failed.is_err());
    // A batch with a change that breaks a limit fails as a whole.
    let nul = Change::Ops {
        collection: "c".into(),
        id: DocId::string("nul"),
        ops: vec![Op::Set {
            path: vec!["x".into()],
            value: "a\u{0}b".into(),
            objects: ObjectMode::Map,
        }],
    };
    assert!(s
        .apply(vec![insert("c", "ok", r#"{"x":1}"#), nul])
        .await
        .is_err());
    // A shared transaction the database refuses at its write is rolled back, log rows included;
    // its jobs run again apart, and only the refused one fails.
    sqlx::query(
        "ALTER TABLE documents ADD CONSTRAINT no_bad CHECK (value->>'x' IS DISTINCT FROM 'bad')",
    )
    .execute(s.pool())
    .await
    .expect("constraint");
    let (good, rg) = super::txn::Job::new(vec![("c".to_owned(), DocId::string("good"))], |w| {
        w.apply_ops(
            "c",
            &DocId::string("good"),
            &[Op::Set {
                path: vec!["x".into()],
                value: "fine".into(),
                objects: ObjectMode::Map,
            }],
        )
    });
    let (bad, rb) = super::txn::Job::new(vec![("c".to_owned(), DocId::string("bad"))], |w| {
        w.apply_ops(
            "c",
            &DocId::string("bad"),
            &[Op::Set {
                path: vec!["x".into()],
                value: "bad".into(),
                objects: ObjectMode::Map,
            }],
        )
    });
    s.run_jobs(vec![good, bad]).await;
    rg.await.expect("answer").expect("good commits");
    rb.await.expect("answer").expect_err("bad is refused");
    let log = logged(s, 0).await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].id, DocId::string("good"));
    sqlx::query("DELETE FROM changes")
        .execute(s.pool())
        .await
        .expect("clear");
    assert!(logged(s, 0).await.is_empty());
    s.apply(vec![insert("c", "ok", r#"{"x":1}"#)])
        .await
        .expect("insert");
    let log = logged(s, 0).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].id, DocId::string("ok"));
    db.drop_db().await;
}

#[tokio::test]
async fn pruning_moves_the_horizon_with_the_rows_it_deletes() {
    let db = TestDb::new().await;
    let s = &db.store;
    for i in 0..5 {
        s.apply(vec![insert("c", &format!("d{i}"), r#"{"x":1}"#)])
            .await
            .expect("insert");
    }
    let log = logged(s, 0).await;
    assert_eq!(log.len(), 5);
    assert_eq!(
        s.prune_changes(std::time::Duration::from_secs(3600))
            .await
            .expect("prune"),
        0
    );
    // The first three are two hours old.
    sqlx::query("UPDATE changes SET committed_at = now() - interval '2 hours' WHERE seq <= $1")
        .bind(log[2].seq)
        .execute(s.pool())
        .await
        .expect("age");
    assert_eq!(
        s.prune_changes(std::time::Duration::from_secs(3600))
            .await
            .expect("prune"),
        3
    );
    let page = s.change_log_page(0, None, 10).await.expect("page");
    assert_eq!(page.pruned_through, log[2].seq);
    assert_eq!(page.rows, log[3..].to_vec());
    // Pruning again deletes nothing and keeps the horizon.
    assert_eq!(
        s.prune_changes(std::time::Duration::from_secs(3600))
            .await
            .expect("prune"),
        0
    );
    assert_eq!(
        s.change_log_page(0, None, 10)
            .await
            .expect("page")
            .pruned_through,
        log[2].seq
    );
    db.drop_db().await;
}

#[tokio::test]
async fn a_sink_starts_at_the_end_of_the_log_and_one_process_holds_it_at_a_time() {
    let db = TestDb::new().await;
    let s = &db.store;
    s.apply(vec![insert("c", "before", r#"{"x":1}"#)])
        .await
        .expect("insert");
    let head = logged(s, 0).await.last().map(|r| r.seq).expect("a change");
    // Created at the end of the log; a second call keeps the position.
    assert_eq!(s.ensure_cdc_sink("nats").await.expect("ensure"), head);
    assert!(
        s.lease_cdc_sink("nats").await.expect("lease").is_none(),
        "no work yet"
    );
    s.apply(vec![insert("c", "after", r#"{"x":2}"#)])
        .await
        .expect("insert");
    let mut first = s
        .lease_cdc_sink("nats")
        .await
        .expect("lease")
        .expect("work after the position");
    assert_eq!(first.position, head);
    let page = first
        .change_log_page(first.position, 100)
        .await
        .expect("page");
    assert_eq!(page.rows.len(), 1);
    // While it is held, another process gets nothing.
    assert!(s.lease_cdc_sink("nats").await.expect("lease").is_none());
    first.advance(page.rows[0].seq).await.expect("advance");
    // Not visible before the commit.
    assert_eq!(s.cdc_sink_position("nats").await.expect("pos"), Some(head));
    first.commit().await.expect("commit");
    assert_eq!(
        s.cdc_sink_position("nats").await.expect("pos"),
        Some(page.rows[0].seq)
    );
    assert_eq!(
        s.ensure_cdc_sink("nats").await.expect("ensure"),
        page.rows[0].seq
    );
    assert!(
        s.lease_cdc_sink("nats").await.expect("lease").is_none(),
        "caught up"
    );
    // A lease dropped without a commit (a crash) leaves the position as it was.
    assert!(s.rewind_cdc_sink("nats", head).await.expect("rewind"));
    let mut dropped = s
        .lease_cdc_sink("nats")
        .await
        .expect("lease")
        .expect("work");
    dropped.advance(page.rows[0].seq).await.expect("advance");
    drop(dropped);
    assert_eq!(s.cdc_sink_position("nats").await.expect("pos"), Some(head));
    assert_eq!(s.cdc_sink_position("other").await.expect("pos"), None);
}
