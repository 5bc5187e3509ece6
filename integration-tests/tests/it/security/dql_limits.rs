//! See `super`.
//!
//! Postgres passes at most 100 arguments to a function (`jsonb_build_array`, the variadic DQL
//! helpers), keeps at most 1664 columns (sort terms included) in a query, and fails a statement
//! on numbers out of range or JSON it cannot read back. None of that may be a 5xx, and the
//! database's own text never reaches a client.

use integration_tests::{TestApp, TestDb};
use serde_json::{json, Value};

/// A server that grants every permission without a key.
async fn playground() -> TestApp {
    TestApp::spawn_with(TestDb::create().await, |c| c.playground = true).await
}

async fn post(app: &TestApp, path: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{}{path}", app.app.local_addr()))
        .json(body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, body)
}

async fn execute(app: &TestApp, statement: &str) -> (u16, Value) {
    post(
        app,
        "/api/v4/store/execute",
        &json!({ "statement": statement }),
    )
    .await
}

/// Phrases of Postgres' and sqlx's own error texts, which must never be shown.
const DATABASE_TEXT: &[&str] = &[
    "returned from database",
    "database error:",
    "error occurred while decoding",
    "cannot pass more than",
    "target lists can have",
    "value out of range",
    "must not end with escape",
    "decoding column",
];

/// The answer is not a 5xx and says nothing in the database's words.
fn assert_no_database_text(what: &str, status: u16, body: &Value) {
    assert!(status < 500, "{what}: {status} {body}");
    let text = body.to_string();
    for phrase in DATABASE_TEXT {
        assert!(!text.contains(phrase), "{what}: `{phrase}` in {body}");
    }
}

/// A `/store/execute` error: its status and code.
fn assert_error(what: &str, status: u16, body: &Value, want_status: u16, code: &str) {
    assert_no_database_text(what, status, body);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (want_status, Some(code)),
        "{what}: {body}"
    );
}

async fn seed(app: &TestApp) {
    let (status, body) = execute(
        app,
        "INSERT INTO c DOCUMENTS ({'_id': 1, 'n': 1, 's': 'x', 'f': 1e308}), \
         ({'_id': 2, 'n': 2, 's': 'xy', 'f': 1.7e308}), ({'_id': 3, 'n': 700, 's': 'x!'})",
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

fn joined(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

/// Arrays, IN lists, `concat`, `coalesce`, `decode`, object literals and projections with more
/// than 100 elements are answered (they were 503 `store/backend`: "cannot pass more than 100
/// arguments to a function"; an object of 5000 keys overflowed the stack).
#[tokio::test]
async fn long_lists_and_argument_lists_are_answered() {
    let app = playground().await;
    seed(&app).await;
    for n in [101usize, 500, 5000] {
        let ints = || (0..n).map(|i| i.to_string());
        let fields = || {
            (0..n).map(|i| {
                if i % 2 == 0 {
                    "n".to_owned()
                } else {
                    i.to_string()
                }
            })
        };
        let items = |statement: String| {
            let app = &app;
            async move {
                let (status, body) = execute(app, &statement).await;
                let short: String = statement.chars().take(60).collect();
                assert_eq!(status, 200, "{n} {short}: {body}");
                body["items"].clone()
            }
        };
        // Array literals: constant, and with fields in them.
        let got = items(format!(
            "SELECT array_length([{}]) AS a FROM c WHERE n = 1",
            joined(ints())
        ))
        .await;
        assert_eq!(got, json!([{"a": n}]));
        let got = items(format!(
            "SELECT [{}] AS a FROM c WHERE n = 2",
            joined(fields())
        ))
        .await;
        let a = got[0]["a"].as_array().expect("an array").clone();
        assert_eq!(
            (a.len(), &a[0], &a[1], &a[n - 1]),
            (
                n,
                &json!(2),
                &json!(1),
                &json!(if (n - 1) % 2 == 0 { 2 } else { n - 1 })
            )
        );
        // IN lists and IN arrays.
        let want = if n > 700 {
            json!([{"_id": 1}, {"_id": 2}, {"_id": 3}])
        } else {
            json!([{"_id": 1}, {"_id": 2}])
        };
        let got = items(format!(
            "SELECT _id FROM c WHERE n IN ({}) ORDER BY _id",
            joined(ints())
        ))
        .await;
        assert_eq!(got, want);
        let got = items(format!(
            "SELECT _id FROM c WHERE n IN [{}] ORDER BY _id",
            joined(ints())
        ))
        .await;
        assert_eq!(got, want);
        let got = items(format!(
            "SELECT _id FROM c WHERE n IN [{}] ORDER BY _id",
            joined(fields())
        ))
        .await;
        assert_eq!(got.as_array().map(Vec::len), Some(3), "{got}");
        let got = items(format!(
            "SELECT _id FROM c WHERE _id IN [{}] ORDER BY _id",
            joined(ints())
        ))
        .await;
        assert_eq!(got, json!([{"_id": 1}, {"_id": 2}, {"_id": 3}]));
        // Variadic functions.
        let got = items(format!(
            "SELECT concat({}) AS a FROM c WHERE n = 1",
            joined((0..n).map(|_| "s".to_owned()))
        ))
        .await;
        assert_eq!(got, json!([{"a": "x".repeat(n)}]));
        let got = items(format!(
            "SELECT coalesce({}, n) AS a FROM c WHERE n = 2",
            joined((0..n).map(|_| "nope".to_owned()))
        ))
        .await;
        assert_eq!(got, json!([{"a": 2}]));
        let got = items(format!(
            "SELECT decode(n, {}, 'none') AS a FROM c ORDER BY n",
            joined((0..n).map(|i| format!("{i}, 'r{i}'")))
        ))
        .await;
        let third = if n > 700 {
            json!("r700")
        } else {
            json!("none")
        };
        assert_eq!(got, json!([{"a": "r1"}, {"a": "r2"}, {"a": third}]));
        // Object literals and projections with many keys.
        let got = items(format!(
            "SELECT {{{}}} AS o FROM c WHERE n = 1",
            joined((0..n).map(|i| format!("'k{i}': n")))
        ))
        .await;
        assert_eq!(got[0]["o"].as_object().map(|o| o.len()), Some(n));
        assert_eq!(got[0]["o"][format!("k{}", n - 1)], json!(1));
        let got = items(format!(
            "SELECT {} FROM c WHERE n = 1",
            joined((0..n).map(|i| format!("s AS p{i}")))
        ))
        .await;
        assert_eq!(got[0].as_object().map(|o| o.len()), Some(n));
        // A mutation finds its targets with the same SQL.
        let (status, body) = execute(
            &app,
            &format!("UPDATE c SET t = {n} WHERE n IN [{}]", joined(ints())),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["mutatedDocumentIds"].as_array().map(Vec::len),
            Some(if n > 700 { 3 } else { 2 })
        );
    }
    app.shutdown().await;
}

/// Bad numbers, deep nesting and oversized statements are 2xx or 4xx with a stable code, never
/// 5xx, and never in the database's words.
#[tokio::test]
async fn bad_numbers_and_nesting_are_never_5xx() {
    let app = playground().await;
    seed(&app).await;
    // Answered, as the evaluator answers them (MISSING or null), where Postgres used to fail.
    for (statement, want) in [
        (
            "SELECT deserialize_json('1e999') AS a FROM c WHERE n = 1",
            json!([{}]),
        ),
        (
            "SELECT deserialize_json('[1, -1e999]') AS a FROM c WHERE n = 1",
            json!([{}]),
        ),
        (
            "SELECT deserialize_json('[1.7976931348623157e308]') AS a FROM c WHERE n = 1",
            json!([{"a": [1.7976931348623157e308]}]),
        ),
        (
            "SELECT SUM(f) AS s, AVG(f) AS a FROM c",
            json!([{"s": null, "a": null}]),
        ),
        (
            "SELECT f * 10 AS a, f + f AS b FROM c WHERE n = 1",
            json!([{"a": null, "b": null}]),
        ),
        (
            "SELECT n / 0 AS a, n % 0 AS b, f / 0.0 AS c FROM c WHERE n = 1",
            json!([{}]),
        ),
        (
            "SELECT 9223372036854775807 * 9223372036854775807 AS a FROM c WHERE n = 1",
            json!([{}]),
        ),
        (
            "SELECT SUM(9223372036854775807) AS a FROM c",
            json!([{"a": 2.7670116110564327e19}]),
        ),
        (
            "SELECT _id FROM c WHERE s LIKE 'x!' ESCAPE '!' ORDER BY _id",
            json!([{"_id": 3}]),
        ),
        (
            "SELECT _id FROM c WHERE s LIKE 'x!!' ESCAPE '!' ORDER BY _id",
            json!([{"_id": 3}]),
        ),
        (
            "SELECT n FROM c WHERE n = 1 LIMIT 18446744073709551615 OFFSET 9223372036854775808",
            json!([]),
        ),
    ] {
        let (status, body) = execute(&app, statement).await;
        assert_no_database_text(statement, status, &body);
        assert_eq!(
            (status, &body["items"]),
            (200, &want),
            "{statement}: {body}"
        );
    }
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    for text in [deep(128), deep(5000), "[".repeat(10_000)] {
        let statement = format!("SELECT deserialize_json('{text}') AS a FROM c WHERE n = 1");
        let (status, body) = execute(&app, &statement).await;
        assert_no_database_text("deserialize_json of deep JSON", status, &body);
        assert_eq!((status, &body["items"]), (200, &json!([{}])), "{body}");
    }

    // Refused with a stable code.
    let keys = |n: usize| joined((0..n).map(|i| format!("k{i}")));
    let cases: Vec<(String, u16, &str)> = vec![
        (
            "SELECT * FROM c LIMIT 99999999999999999999".into(),
            400,
            "query/invalid",
        ),
        (
            "SELECT * FROM c OFFSET 99999999999999999999".into(),
            400,
            "query/invalid",
        ),
        ("SELECT 1e999 AS a FROM c".into(), 400, "query/invalid"),
        (
            "SELECT 99999999999999999999999 AS a FROM c".into(),
            400,
            "query/invalid",
        ),
        (
            format!(
                "SELECT {}1{} AS a FROM c",
                "(".repeat(10_000),
                ")".repeat(10_000)
            ),
            400,
            "query/invalid",
        ),
        (
            format!("SELECT * FROM c WHERE {}", "[".repeat(10_000)),
            400,
            "query/invalid",
        ),
        (
            format!("SELECT * FROM c WHERE {}n", "NOT ".repeat(10_000)),
            400,
            "query/invalid",
        ),
        (
            format!("SELECT * FROM c WHERE {}", vec!["n = 1"; 2000].join(" OR ")),
            400,
            "query/invalid",
        ),
        (
            format!("SELECT * FROM c WHERE n{}", " + 1".repeat(100)),
            400,
            "query/invalid",
        ),
        // Postgres' target list limit: 1664 columns, each sort key taking four.
        (
            format!("SELECT * FROM c ORDER BY {}", keys(401)),
            400,
            "query/invalid",
        ),
        (
            format!("SELECT DISTINCT n FROM c ORDER BY {}", keys(401)),
            400,
            "query/invalid",
        ),
        (
            format!("UPDATE c SET t = 1 ORDER BY {} LIMIT 1", keys(401)),
            400,
            "query/invalid",
        ),
        (
            format!(
                "SELECT {}, COUNT(*) AS n FROM c GROUP BY {}",
                keys(300),
                keys(300)
            ),
            200,
            "",
        ),
        (
            format!("SELECT k0 FROM c GROUP BY {} ORDER BY k0", keys(400)),
            400,
            "query/invalid",
        ),
        (
            format!(
                "SELECT {} FROM c",
                joined((0..1601).map(|i| format!("COUNT(k{i}) AS a{i}")))
            ),
            400,
            "query/invalid",
        ),
        (format!("SELECT * FROM c ORDER BY {}", keys(400)), 200, ""),
        // More distinct values than one Postgres statement can bind (65535).
        (
            format!(
                "SELECT concat({}) AS a FROM c",
                joined((0..70_000).map(|i| format!("'v{i}'")))
            ),
            400,
            "query/invalid",
        ),
        (
            format!(
                "SELECT * FROM c WHERE n IN ({})",
                joined((0..70_000).map(|i| i.to_string()))
            ),
            200,
            "",
        ),
        // A statement of 3 MB.
        (format!("SELECT {} FROM c", "x".repeat(3_000_000)), 200, ""),
    ];
    for (statement, want_status, code) in &cases {
        let (status, body) = execute(&app, statement).await;
        let short: String = statement.chars().take(60).collect();
        if *want_status == 200 {
            assert_no_database_text(&short, status, &body);
            assert_eq!(status, 200, "{short}: {body}");
        } else {
            assert_error(&short, status, &body, *want_status, code);
        }
    }

    // Arguments nested 10,000 deep never reach the statement: the body is refused as JSON.
    let raw = format!(
        "{{\"statement\": \"SELECT :a AS a FROM c\", \"args\": {{\"a\": {}1{}}}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let r = reqwest::Client::new()
        .post(format!(
            "http://{}/api/v4/store/execute",
            app.app.local_addr()
        ))
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let body: Value = r.json().await.expect("json");
    assert_error(
        "arguments nested 10000 deep",
        status,
        &body,
        400,
        "request/invalid-json",
    );

    // The server still answers.
    let (status, body) = execute(&app, "SELECT COUNT(*) AS n FROM c").await;
    assert_eq!(
        (status, &body["items"]),
        (200, &json!([{"n": 3}])),
        "{body}"
    );
    app.shutdown().await;
}

/// A statement Postgres fails on its data is a 400 `query/evaluation` in our words, on
/// `/store/execute` and on the legacy routes (it was a 503 `store/backend` quoting the
/// database: "database error: error returned from database: ...").
#[tokio::test]
async fn failures_on_the_data_are_query_evaluation_in_our_words() {
    let app = playground().await;
    seed(&app).await;
    // '%' as the escape character, ending the pattern: Postgres refuses the pattern (22025).
    let (status, body) = execute(&app, "SELECT * FROM c WHERE s LIKE 'x%' ESCAPE '%'").await;
    assert_error(
        "LIKE ending in its escape",
        status,
        &body,
        400,
        "query/evaluation",
    );
    let description = body["error"]["description"].as_str().unwrap_or_default();
    assert!(
        description.contains("the statement failed on its data"),
        "{body}"
    );
    assert!(description.contains("SQLSTATE 22025"), "{body}");

    // An item nested too deep to read back from Postgres (a value of 127 levels in an item).
    let statement = format!(
        "SELECT deserialize_json('{}{}') AS a FROM c WHERE n = 1",
        "[".repeat(127),
        "]".repeat(127)
    );
    let (status, body) = execute(&app, &statement).await;
    assert_error("an item 128 deep", status, &body, 400, "query/evaluation");
    assert!(
        body["error"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("cannot be represented")),
        "{body}"
    );

    // Legacy routes: `/store/find` with more sort keys than Postgres keeps, and a count.
    let sort: Vec<Value> = (0..401)
        .map(|i| json!({"property": format!("k{i}"), "direction": "asc"}))
        .collect();
    let (status, body) = post(
        &app,
        "/api/v4/store/find",
        &json!({"collection": "c", "query": "true", "sort": sort}),
    )
    .await;
    assert_no_database_text("legacy find with 401 sort keys", status, &body);
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("query/invalid")),
        "{body}"
    );
    let (status, body) = post(
        &app,
        "/api/v4/store/find",
        &json!({"collection": "c", "query": "contains($args.a, n)", "args": {"a": (0..5000).collect::<Vec<_>>()}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["documents"].as_array().map(Vec::len),
        Some(3),
        "{body}"
    );
    let (status, body) = post(
        &app,
        "/api/v4/store/count",
        &json!({"collection": "c", "query": vec!["n == 1"; 400].join(" || ")}),
    )
    .await;
    assert_no_database_text("legacy count with 400 terms", status, &body);
    assert_eq!((status, &body["count"]), (200, &json!(1)), "{body}");
    app.shutdown().await;
}

/// A structured fuzzer of the sync session's push handling: random deltas (random depths,
/// sizes, stamps from 0 to `u64::MAX` and a century ahead, sites from 0 to `u128::MAX`, bases the
/// server may lack, odd collections and ids), from seeded generators, pushed through the raw sync
/// client at a real server. The server never fails a session on its side (`internal`,
/// `store/...`), answers every change with one result, and stays usable: HTTP reads are never
/// 5xx, and afterwards a SELECT and a fresh subscription work.
mod push_fuzz {
    use arbitrary::Unstructured;
    use bigpeer_schema::wire::{Msg, PushResult};
    use bigpeer_schema::SiteId;
    use bigpeer_sync_fuzz::gen::{self, Gen};
    use integration_tests::TestApp;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    use serde_json::json;

    use crate::sync::{admin, Peer};

    /// Pushes in one run.
    const PUSHES: u64 = 300;
    const COLLECTIONS: &[&str] = &["fz", "fz2"];

    /// Codes of a fatal error that blame the server, not the peer.
    fn server_side(code: &str) -> bool {
        code == "internal" || code.starts_with("store/")
    }

    /// The site the generator stamps most writes with: a push adds writes of the session's
    /// own site only (the others' are `sync/foreign-site`).
    const OWN: SiteId = SiteId(0xf0f0);

    /// A session: first a hello as an edge site (zero is refused; another is taken for good
    /// by this key), then as the generator's own site.
    async fn open(app: &TestApp, token: &str, rng: &mut StdRng) -> Peer {
        let edge = match rng.random_range(0..3) {
            0 => SiteId(0),
            1 => SiteId(u128::MAX),
            _ => SiteId(rng.random()),
        };
        let mut p = Peer::connect(app).await;
        p.hello_as(edge, token).await;
        match p.recv().await {
            Msg::Welcome { .. } => {}
            Msg::Error { code, .. } => assert!(!server_side(&code), "hello as {edge:?}: {code}"),
            other => panic!("expected a welcome, got {other:?}"),
        }
        drop(p);
        let site = OWN;
        let mut p = Peer::connect(app).await;
        p.hello_as(site, token).await;
        match p.recv().await {
            Msg::Welcome { .. } => p,
            other => panic!("hello as {site:?}: expected a welcome, got {other:?}"),
        }
    }

    enum Reply {
        Ack(Vec<PushResult>),
        Fatal(String),
    }

    /// The server's answer to push `push` of `sent` changes.
    async fn reply(peer: &mut Peer, push: u64, sent: usize) -> Reply {
        loop {
            match peer.recv().await {
                Msg::PushAck {
                    push: p, results, ..
                } if p == push => {
                    assert_eq!(results.len(), sent, "push {push}: one result per change");
                    return Reply::Ack(results);
                }
                Msg::Error {
                    code, fatal: true, ..
                } => return Reply::Fatal(code),
                Msg::Error { code, .. } => {
                    assert!(!server_side(&code), "push {push}: {code}");
                }
                other => panic!("push {push}: unexpected {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn random_pushes_never_fail_the_server() {
        let app = TestApp::spawn().await;
        let token = admin(&app).await;
        let mut rng = StdRng::seed_from_u64(0x5eed_0017);
        let g = Gen::at(bigpeer_schema::hlc::now_ms()).owned_by(OWN);
        let mut peer = open(&app, &token, &mut rng).await;
        let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
        for push in 1..=PUSHES {
            let bytes = gen::bytes(&mut rng, 8192);
            let mut u = Unstructured::new(&bytes);
            let n = u.int_in_range(1..=4usize).unwrap_or(1);
            let changes: Vec<_> = (0..n)
                .filter_map(|_| g.change(&mut u, COLLECTIONS).ok())
                .collect();
            let sent = changes.len();
            peer.send(&Msg::Push { push, changes }).await;
            match reply(&mut peer, push, sent).await {
                Reply::Ack(results) => {
                    for r in results {
                        let name = match r {
                            PushResult::Applied => "applied".to_owned(),
                            PushResult::Unchanged => "unchanged".to_owned(),
                            PushResult::Refused { .. } => "refused".to_owned(),
                            PushResult::Denied { code } => format!("denied {code}"),
                        };
                        *outcomes.entry(name).or_default() += 1;
                    }
                }
                Reply::Fatal(code) => {
                    assert!(
                        !server_side(&code),
                        "push {push}: the server failed: {code}"
                    );
                    *outcomes.entry(format!("closed {code}")).or_default() += 1;
                    peer = open(&app, &token, &mut rng).await;
                }
            }
            if push % 50 == 0 {
                let (status, body) = app
                    .post(
                        "/api/v4/store/execute",
                        &json!({"statement": "SELECT COUNT(*) AS n FROM fz"}),
                    )
                    .await;
                assert!(status < 500, "after push {push}: {status} {body}");
            }
        }
        eprintln!("push outcomes: {outcomes:?}");
        assert!(
            outcomes.get("applied").copied().unwrap_or(0) > 0,
            "nothing was applied: {outcomes:?}"
        );

        // The collection reads, over HTTP and through a fresh subscription. (Pushed documents
        // may nest deeper than a JSON parser's default limit: the whole SELECT is checked by
        // its status, the ids are counted.)
        let select = |statement: &'static str| {
            let (app, token) = (&app, &token);
            async move {
                let resp = reqwest::Client::new()
                    .post(format!("{}/api/v4/store/execute", app.app.url()))
                    .header("Authorization", format!("Bearer {token}"))
                    .json(&json!({ "statement": statement }))
                    .send()
                    .await
                    .expect("select");
                (resp.status().as_u16(), resp.text().await.expect("body"))
            }
        };
        let (status, body) = select("SELECT * FROM fz").await;
        assert_eq!(status, 200, "{}", &body[..body.len().min(300)]);
        let (status, body) = select("SELECT _id FROM fz").await;
        assert_eq!(status, 200, "{body}");
        let body: serde_json::Value = serde_json::from_str(&body).expect("json");
        let items = body["items"].as_array().map_or(0, Vec::len);
        let (mut fresh, _) = Peer::open(&app, &token).await;
        fresh.subscribe(1, "SELECT * FROM fz", None).await;
        let (changes, _) = fresh.until_caught_up(1).await;
        assert_eq!(
            changes.len(),
            items,
            "the subscription and the SELECT disagree"
        );
        app.shutdown().await;
    }
}
