//! The executor on a real Postgres, checked against the in-memory reference store of the `dql`
//! crate (which is itself checked against Ditto's recorded answers): every oracle fixture runs
//! through both and must give the same items, mutated ids and error codes.

use std::collections::BTreeMap;

use bigpeer_dql::memstore::MemStore;
use bigpeer_schema::Value;
use oracle_steps::{cases, mask_generated, unordered};

use super::{Executor, QueryType};

#[path = "../../../dql/tests/support/oracle_steps.rs"]
mod oracle_steps;
use crate::store::GroupCommitOptions;
use crate::testdb::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_oracle_case_gives_the_reference_answer_on_postgres() {
    let db = TestDb::new().await;
    let cases = cases();
    assert!(cases.len() >= 25, "oracle fixtures missing");
    let mut failures = Vec::new();
    for (name, steps) in &cases {
        sqlx::query("TRUNCATE documents")
            .execute(db.store.pool())
            .await
            .expect("truncate");
        let exec = Executor::new(db.store.clone(), &GroupCommitOptions::default());
        let mut mem = MemStore::new();
        for (i, s) in steps.iter().enumerate() {
            let want = mem.execute(&s.statement, &s.args);
            let got = exec.execute(&s.statement, &s.args).await;
            let diff = match (&want, &got) {
                (Ok(w), Ok(g)) => {
                    let (mut wi, mut gi): (Vec<Value>, Vec<Value>) = (
                        w.items.iter().map(mask_generated).collect(),
                        g.items.iter().map(mask_generated).collect(),
                    );
                    if unordered(&s.statement) {
                        wi.sort_by_key(Value::to_json_string);
                        gi.sort_by_key(Value::to_json_string);
                    }
                    let wm: Vec<Value> = w.mutated_ids.iter().map(mask_generated).collect();
                    let gm: Vec<Value> = g.mutated_ids.iter().map(mask_generated).collect();
                    (wi != gi || wm != gm).then(|| {
                        format!(
                            "items {} vs {}; mutated {} vs {}",
                            Value::Array(wi).to_json_string(),
                            Value::Array(gi).to_json_string(),
                            Value::Array(wm).to_json_string(),
                            Value::Array(gm).to_json_string()
                        )
                    })
                }
                (Err(w), Err(g)) => (w.code.as_str() != g.code())
                    .then(|| format!("error {} vs {}: {g}", w.code.as_str(), g.code())),
                (Ok(_), Err(g)) => Some(format!(
                    "reference succeeded, Postgres failed: {}: {g}",
                    g.code()
                )),
                (Err(w), Ok(_)) => Some(format!(
                    "reference failed ({}: {}), Postgres succeeded",
                    w.code.as_str(),
                    w.message
                )),
            };
            if let Some(d) = diff {
                failures.push(format!("{name} step {i} `{}`: {d}", s.statement));
                break;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_self_referencing_updates_lose_nothing() {
    let db = TestDb::new().await;
    let exec = Executor::new(db.store.clone(), &GroupCommitOptions::default());
    let none = BTreeMap::new();
    exec.execute("INSERT INTO c DOCUMENTS ({'_id': 'a', 'n': 0})", &none)
        .await
        .expect("insert");
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let exec = exec.clone();
            tokio::spawn(async move {
                exec.execute("UPDATE c SET n = n + 1 WHERE _id = 'a'", &BTreeMap::new())
                    .await
            })
        })
        .collect();
    for t in tasks {
        let r = t.await.expect("join").expect("update");
        assert_eq!(r.query_type, QueryType::Mutation);
        assert_eq!(r.mutated_ids, vec![Value::from("a")]);
    }
    let r = exec
        .execute("SELECT n FROM c", &none)
        .await
        .expect("select");
    assert_eq!(Value::Array(r.items).to_json_string(), r#"[{"n":40}]"#);
    db.drop_db().await;
}

#[tokio::test]
async fn a_failing_statement_writes_nothing_and_txns_grow() {
    let db = TestDb::new().await;
    let exec = Executor::new(db.store.clone(), &GroupCommitOptions::default());
    let none = BTreeMap::new();
    let first = exec
        .execute("INSERT INTO c DOCUMENTS ({'_id': 'a'})", &none)
        .await
        .expect("insert");
    // The second document conflicts: the first one of the statement must not be written either.
    let err = exec
        .execute(
            "INSERT INTO c DOCUMENTS ({'_id': 'b'}), ({'_id': 'a'})",
            &none,
        )
        .await
        .expect_err("id conflict");
    assert_eq!(err.code(), "query/evaluation");
    let r = exec
        .execute("SELECT _id FROM c", &none)
        .await
        .expect("select");
    assert_eq!(Value::Array(r.items).to_json_string(), r#"[{"_id":"a"}]"#);
    let second = exec
        .execute("UPDATE c SET x = 1", &none)
        .await
        .expect("update");
    assert!(second.txn > first.txn);
    assert_eq!(
        exec.execute("SELEC * FROM c", &none)
            .await
            .expect_err("parse")
            .code(),
        "query/invalid"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn permissions_filter_reads_and_refuse_writes_whole() {
    let db = TestDb::new().await;
    let exec = Executor::new(db.store.clone(), &GroupCommitOptions::default());
    let none = BTreeMap::new();
    exec.execute(
        "INSERT INTO books DOCUMENTS ({'_id': {'loc': 'a', 'n': 1}, 'v': 1}), ({'_id': {'loc': 'b', 'n': 2}, 'v': 2}), ({'_id': {'loc': 'a', 'n': 3}, 'v': 3})",
        &none,
    )
    .await
    .expect("insert");
    exec.execute("INSERT INTO secrets DOCUMENTS ({'_id': 's'})", &none)
        .await
        .expect("insert");
    let perms: crate::auth::Permissions = serde_json::from_str(
        r#"{"read": {"queriesByCollection": {"books": ["_id.loc == 'a'"]}},
            "write": {"queriesByCollection": {"books": ["_id.loc == 'a'"]}}}"#,
    )
    .expect("permissions");
    let access = super::Access::new(perms);
    // Reads everything, writes only `loc` 'a'.
    let reader: crate::auth::Permissions = serde_json::from_str(
        r#"{"read": {"everything": true},
            "write": {"queriesByCollection": {"books": ["_id.loc == 'a'"]}}}"#,
    )
    .expect("permissions");
    let reader = super::Access::new(reader);

    // Reads: only permitted documents, also under aggregation.
    let r = exec
        .execute_as("SELECT v FROM books ORDER BY v", &none, &access)
        .await
        .expect("select");
    assert_eq!(
        Value::Array(r.items).to_json_string(),
        r#"[{"v":1},{"v":3}]"#
    );
    let r = exec
        .execute_as("SELECT COUNT(*) AS n FROM books", &none, &access)
        .await
        .expect("count");
    assert_eq!(Value::Array(r.items).to_json_string(), r#"[{"n":2}]"#);
    let err = exec
        .execute_as("SELECT * FROM secrets", &none, &access)
        .await
        .expect_err("no read");
    assert_eq!(err.code(), "auth/forbidden");
    let r = exec
        .execute_as("SELECT * FROM system:collections", &none, &access)
        .await
        .expect("collections");
    let names = Value::Array(r.items).to_json_string();
    assert!(
        names.contains("books") && !names.contains("secrets"),
        "{names}"
    );

    // Writes: a document the key may read but not write fails the whole statement; documents
    // it may not read do not exist for it (they are not targets).
    let err = exec
        .execute_as("UPDATE books SET v = v + 10", &none, &reader)
        .await
        .expect_err("partly forbidden");
    assert_eq!(err.code(), "auth/forbidden");
    let r = exec
        .execute_as("UPDATE books SET w = 1 WHERE v = 2", &none, &access)
        .await
        .expect("matches nothing the key may read");
    assert!(r.mutated_ids.is_empty(), "{r:?}");
    let err = exec
        .execute_as("INSERT INTO books DOCUMENTS ({'_id': {'loc': 'a', 'n': 9}}), ({'_id': {'loc': 'b', 'n': 9}})", &none, &access)
        .await
        .expect_err("second document forbidden");
    assert_eq!(err.code(), "auth/forbidden");
    assert_eq!(
        exec.execute_as("DELETE FROM secrets", &none, &access)
            .await
            .expect_err("no write")
            .code(),
        "auth/forbidden"
    );
    let all = exec
        .execute("SELECT v FROM books ORDER BY v", &none)
        .await
        .expect("select");
    assert_eq!(
        Value::Array(all.items).to_json_string(),
        r#"[{"v":1},{"v":2},{"v":3}]"#,
        "nothing was written"
    );
    let n = exec
        .execute("SELECT COUNT(*) AS n FROM books", &none)
        .await
        .expect("count");
    assert_eq!(Value::Array(n.items).to_json_string(), r#"[{"n":3}]"#);

    // Inside the permission, writes go through.
    let r = exec
        .execute_as(
            "UPDATE books SET v = v + 10 WHERE _id.loc = 'a'",
            &none,
            &access,
        )
        .await
        .expect("allowed");
    assert_eq!(r.mutated_ids.len(), 2);
    let err = exec
        .execute_as("ALTER SYSTEM SET DQL_STRICT_MODE = true", &none, &access)
        .await
        .expect_err("admin only");
    assert_eq!(err.code(), "auth/forbidden");
    db.drop_db().await;
}

#[tokio::test]
async fn big_results_and_slow_statements_get_clear_errors() {
    let db = TestDb::new().await;
    let exec = Executor::new(db.store.clone(), &GroupCommitOptions::default()).with_max_items(3);
    let none = BTreeMap::new();
    exec.execute(
        "INSERT INTO c DOCUMENTS ({'_id': 1}), ({'_id': 2}), ({'_id': 3}), ({'_id': 4})",
        &none,
    )
    .await
    .expect("insert");
    let err = exec
        .execute("SELECT * FROM c", &none)
        .await
        .expect_err("too many items");
    assert_eq!(err.code(), "query/result-too-large");
    assert!(err.to_string().contains("LIMIT"), "{err}");
    let page = exec
        .execute("SELECT * FROM c LIMIT 3", &none)
        .await
        .expect("a page fits");
    assert_eq!(page.items.len(), 3);

    // Postgres cancels statements over the store's statement timeout: a precise error code.
    let quick = crate::store::Store::connect(
        &db.url(),
        &crate::store::StoreOptions {
            statement_timeout: std::time::Duration::from_millis(50),
            ..Default::default()
        },
    )
    .await
    .expect("connect");
    let err = sqlx::query("SELECT pg_sleep(2)")
        .execute(quick.pool())
        .await
        .expect_err("cancelled");
    let err = crate::store::StoreError::from(err);
    assert_eq!(err.code(), "store/timeout");
    assert_eq!(err.kind(), crate::store::Kind::Timeout);
    quick.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_cached_statement_is_compiled_again_after_alter_system() {
    let db = TestDb::new().await;
    let exec = Executor::new(db.store.clone(), &GroupCommitOptions::default());
    let none = BTreeMap::new();
    exec.execute(
        "INSERT INTO c DOCUMENTS ({'_id': 'x', 'o': {'p': 1, 'q': 2}})",
        &none,
    )
    .await
    .expect("insert");
    let update = "UPDATE c SET o = {'r': 3} WHERE _id = 'x'";
    let select = "SELECT o FROM c WHERE _id = 'x'";
    // Strict mode off: the object is merged into the map.
    exec.execute(update, &none).await.expect("update");
    let r = exec.execute(select, &none).await.expect("select");
    assert_eq!(
        Value::Array(r.items).to_json_string(),
        r#"[{"o":{"p":1,"q":2,"r":3}}]"#
    );
    assert!(exec.cached_statements() >= 2, "the statements are cached");
    exec.execute("ALTER SYSTEM SET DQL_STRICT_MODE = true", &none)
        .await
        .expect("alter system");
    // The same text now assigns a register: the whole object is replaced.
    exec.execute(update, &none).await.expect("update");
    let r = exec.execute(select, &none).await.expect("select");
    assert_eq!(Value::Array(r.items).to_json_string(), r#"[{"o":{"r":3}}]"#);
    db.drop_db().await;
}

#[tokio::test]
async fn point_lookups_by_id_see_only_live_permitted_documents() {
    let db = TestDb::new().await;
    let exec = Executor::new(db.store.clone(), &GroupCommitOptions::default());
    let none = BTreeMap::new();
    exec.execute(
        "INSERT INTO books DOCUMENTS ({'_id': {'loc': 'a', 'n': 1}, 'v': 1}), ({'_id': {'loc': 'b', 'n': 2}, 'v': 2}), ({'_id': 'gone'})",
        &none,
    )
    .await
    .expect("insert");
    exec.execute("DELETE FROM books WHERE _id = 'gone'", &none)
        .await
        .expect("delete");
    let get = "SELECT * FROM books WHERE _id = :id";
    let args = |id: &str| BTreeMap::from([("id".to_owned(), Value::parse_json(id).expect("json"))]);
    let found = |r: super::ExecuteResult| Value::Array(r.items).to_json_string();
    // Object ids match whatever their key order.
    let r = exec
        .execute(get, &args(r#"{"n": 1, "loc": "a"}"#))
        .await
        .expect("get");
    assert_eq!(found(r), r#"[{"_id":{"loc":"a","n":1},"v":1}]"#);
    for missing in [r#""gone""#, r#""nope""#, r#"{"loc": "a"}"#] {
        let r = exec.execute(get, &args(missing)).await.expect("get");
        assert_eq!(found(r), "[]", "{missing}");
    }
    // A float is no id: the general path answers (nothing), as it did before.
    let r = exec.execute(get, &args("1.5")).await.expect("get");
    assert_eq!(found(r), "[]");
    let r = exec
        .execute("SELECT * FROM books WHERE 'gone' = _id OR _id = 'x'", &none)
        .await
        .expect("select");
    assert_eq!(found(r), "[]");
    // Read permissions still filter.
    let access = super::Access::new(
        serde_json::from_str(r#"{"read":{"queriesByCollection":{"books":["_id.loc == 'a'"]}}}"#)
            .expect("permissions"),
    );
    let r = exec
        .execute_as(get, &args(r#"{"loc": "b", "n": 2}"#), &access)
        .await
        .expect("get");
    assert_eq!(found(r), "[]", "outside the read permission");
    let r = exec
        .execute_as(get, &args(r#"{"loc": "a", "n": 1}"#), &access)
        .await
        .expect("get");
    assert_eq!(found(r), r#"[{"_id":{"loc":"a","n":1},"v":1}]"#);
    db.drop_db().await;
}

/// Strict mode on Postgres: point lookups, the filter checked again on the locked document and
/// self-references all see the statement's type declarations, not the default view.
#[tokio::test]
async fn strict_mode_statements_see_their_declared_types() {
    let db = TestDb::new().await;
    let exec = Executor::new(db.store.clone(), &GroupCommitOptions::default());
    let none = BTreeMap::new();
    let run = |text: &'static str| {
        let exec = exec.clone();
        async move { exec.execute(text, &BTreeMap::new()).await }
    };
    let items = |r: &super::ExecuteResult| Value::Array(r.items.clone()).to_json_string();
    run("ALTER SYSTEM SET DQL_STRICT_MODE = true")
        .await
        .expect("strict");
    exec.execute(
        "INSERT INTO COLLECTION c (m MAP) DOCUMENTS ({'_id': 'a', 'm': {'x': 1}, 'n': 1})",
        &none,
    )
    .await
    .expect("insert");
    let r = run("SELECT * FROM c WHERE _id = 'a'")
        .await
        .expect("lookup");
    assert_eq!(items(&r), r#"[{"_id":"a","n":1}]"#);
    let r = run("SELECT * FROM COLLECTION c (m MAP) WHERE _id = 'a'")
        .await
        .expect("lookup");
    assert_eq!(items(&r), r#"[{"_id":"a","m":{"x":1},"n":1}]"#);
    let err = run("UPDATE c SET n = m WHERE _id = 'a'")
        .await
        .expect_err("m is not a register");
    assert_eq!(err.code(), "query/evaluation", "{err}");
    let r = run("UPDATE c SET n = 2 WHERE m.x = 1")
        .await
        .expect("update");
    assert!(r.mutated_ids.is_empty(), "m.x is hidden without (m MAP)");
    let r = run("UPDATE COLLECTION c (m MAP) SET n = m.x + 1 WHERE m.x = 1")
        .await
        .expect("update");
    assert_eq!(r.mutated_ids, vec![Value::from("a")]);
    let r = run("SELECT n FROM c").await.expect("select");
    assert_eq!(items(&r), r#"[{"n":2}]"#);
    db.drop_db().await;
}

#[tokio::test]
async fn system_parameters_are_kept_in_the_database() {
    let db = TestDb::new().await;
    let a = Executor::new(db.store.clone(), &GroupCommitOptions::default());
    let none = BTreeMap::new();
    let kept = || async {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT name, value::text FROM system_settings ORDER BY name")
                .fetch_all(db.store.pool())
                .await
                .expect("read");
        rows
    };
    for s in [
        "ALTER SYSTEM SET DQL_STRICT_MODE = true",
        "ALTER SYSTEM SET TOMBSTONE_TTL_HOURS = 24",
    ] {
        a.execute(s, &none).await.expect(s);
    }
    // A refused ALTER keeps nothing.
    let err = a
        .execute("ALTER SYSTEM SET DQL_STRICT_MODE = 5", &none)
        .await
        .expect_err("not a bool");
    assert_eq!(err.code(), "query/parameter", "{err}");
    assert_eq!(
        kept().await,
        vec![
            ("dql_strict_mode".to_owned(), "true".to_owned()),
            ("tombstone_ttl_hours".to_owned(), "24".to_owned())
        ]
    );
    // A parameter this version does not know (kept by another one) is left out.
    sqlx::query("INSERT INTO system_settings VALUES ('gone_param', '1')")
        .execute(db.store.pool())
        .await
        .expect("insert");
    let b = Executor::new(db.store.clone(), &GroupCommitOptions::default());
    let r = b
        .execute("SHOW DQL_STRICT_MODE", &none)
        .await
        .expect("show");
    assert_eq!(
        r.items,
        vec![Value::parse_json(r#"{"dql_strict_mode":false}"#).expect("json")]
    );
    assert_eq!(b.load_settings().await.expect("load"), vec!["gone_param"]);
    let r = b.execute("SHOW ALL", &none).await.expect("show");
    let all = Value::Array(r.items).to_json_string();
    assert!(all.contains(r#""dql_strict_mode":true"#), "{all}");
    assert!(all.contains(r#""tombstone_ttl_hours":24"#), "{all}");
    assert!(b
        .strict_mode_flag()
        .load(std::sync::atomic::Ordering::Acquire));
    b.execute("ALTER SYSTEM RESET TOMBSTONE_TTL_HOURS", &none)
        .await
        .expect("reset");
    assert_eq!(
        kept().await,
        vec![
            ("dql_strict_mode".to_owned(), "true".to_owned()),
            ("gone_param".to_owned(), "1".to_owned())
        ]
    );
    b.execute("ALTER SYSTEM RESET ALL", &none)
        .await
        .expect("reset");
    assert!(kept().await.is_empty());
    assert!(!b
        .strict_mode_flag()
        .load(std::sync::atomic::Ordering::Acquire));
    db.drop_db().await;
}
