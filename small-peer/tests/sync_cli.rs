//! The `smallpeer` binary syncing with the real server (in-process, on a fresh database of a
//! real Postgres; see `integration-tests`).

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use integration_tests::{TestApp, TestDb};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(15);

fn smallpeer(data: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_smallpeer"));
    c.arg("--data")
        .arg(data)
        .args(args)
        .env_remove("SMALLPEER_CA_CERT")
        .kill_on_drop(true);
    c
}

/// Runs the binary to its end (bounded).
async fn run(data: &Path, args: &[&str]) -> Output {
    tokio::time::timeout(WAIT, smallpeer(data, args).output())
        .await
        .expect("smallpeer ends in time")
        .expect("run smallpeer")
}

fn stdout_json(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "status {:?}, stderr {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("stdout is JSON")
}

/// The last line on stderr (the error, after any sync events), as JSON.
fn last_error(o: &Output) -> Value {
    let text = String::from_utf8_lossy(&o.stderr);
    let line = text.lines().last().expect("an error line");
    serde_json::from_str(line).expect("stderr is JSON lines")
}

async fn playground() -> TestApp {
    TestApp::spawn_with(TestDb::create().await, |c| c.playground = true).await
}

async fn http(app: &TestApp, statement: &str) -> Value {
    let (status, body) = app
        .post("/api/v4/store/execute", &json!({ "statement": statement }))
        .await;
    assert_eq!(status, 200, "{statement}: {body}");
    body
}

#[tokio::test]
async fn exec_connect_pushes_local_writes_and_pulls_subscriptions() {
    let app = playground().await;
    let url = format!("ws://{}", app.app.local_addr());
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();

    let out = run(
        data,
        &[
            "--connect",
            &url,
            "exec",
            "INSERT INTO cars DOCUMENTS ({'_id': 'a', 'color': 'blue'})",
        ],
    )
    .await;
    assert_eq!(stdout_json(&out)["mutatedDocumentIds"], json!(["a"]));
    // Acknowledged by the big peer before the exit.
    let body = http(&app, "SELECT * FROM cars").await;
    assert_eq!(body["items"], json!([{"_id": "a", "color": "blue"}]));

    // A write on the server, pulled by a subscription given on exec (and remembered).
    http(
        &app,
        "INSERT INTO cars DOCUMENTS ({'_id': 'b', 'color': 'red'})",
    )
    .await;
    let out = run(
        data,
        &[
            "--connect",
            &url,
            "exec",
            "SELECT _id FROM cars ORDER BY _id",
            "--subscribe",
            "SELECT * FROM cars",
        ],
    )
    .await;
    // With --connect, a SELECT runs after the sync: it shows what the big peer has.
    assert_eq!(
        stdout_json(&out)["items"],
        json!([{"_id": "a"}, {"_id": "b"}])
    );
    let out = run(data, &["exec", "SELECT _id FROM cars ORDER BY _id"]).await;
    assert_eq!(
        stdout_json(&out)["items"],
        json!([{"_id": "a"}, {"_id": "b"}]),
        "and it is in the store"
    );

    // The subscription is remembered: a later exec --connect pulls without --subscribe.
    http(&app, "UPDATE cars SET color = 'green' WHERE _id = 'a'").await;
    let out = run(
        data,
        &["--connect", &url, "exec", "SELECT 1 FROM cars LIMIT 1"],
    )
    .await;
    stdout_json(&out);
    let out = run(data, &["exec", "SELECT color FROM cars WHERE _id = 'a'"]).await;
    assert_eq!(stdout_json(&out)["items"], json!([{"color": "green"}]));
    app.shutdown().await;
}

/// A key for `app` with these permissions.
async fn key(app: &TestApp, permissions: Value) -> String {
    use bigpeer::auth::{KeyStore, NewKey};
    KeyStore::new(app.app.store().clone())
        .create(NewKey {
            name: "peer".into(),
            permissions: serde_json::from_value(permissions).expect("permissions"),
            ..NewKey::default()
        })
        .await
        .expect("create key")
        .secret
}

#[tokio::test]
async fn a_refused_write_always_exits_1_and_status_lists_it() {
    let app = TestApp::spawn().await;
    let url = format!("ws://{}", app.app.local_addr());
    let token = key(
        &app,
        json!({
            "read": {"everything": true},
            "write": {"queriesByCollection": {"books": ["owner == 'ann'"]}},
        }),
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    // Repeated, because the refusal and the end of the push race inside the client: the exit
    // status must not depend on which comes first.
    for i in 0..12 {
        let insert =
            format!("INSERT INTO books DOCUMENTS ({{'_id': 'forged{i}', 'owner': 'bob'}})");
        let out = run(
            data,
            &["--connect", &url, "--token", &token, "exec", &insert],
        )
        .await;
        assert_eq!(
            out.status.code(),
            Some(1),
            "run {i}: a refused write exits 1: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = last_error(&out);
        assert_eq!(err["code"], "auth/forbidden", "run {i}: {err}");
        assert!(
            err["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("books/\"forged{i}\""))),
            "run {i}: {err}"
        );
        // An allowed write next to the refused ones exits 0: earlier refusals are not this
        // run's.
        let insert = format!("INSERT INTO books DOCUMENTS ({{'_id': 'ok{i}', 'owner': 'ann'}})");
        let out = run(
            data,
            &["--connect", &url, "--token", &token, "exec", &insert],
        )
        .await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "run {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = run(data, &["status"]).await;
    let status = stdout_json(&out);
    let refused = status["refused"].as_array().expect("refused");
    assert_eq!(refused.len(), 12, "{status}");
    assert_eq!(refused[0]["collection"], "books");
    assert_eq!(refused[0]["id"], "forged0");
    assert_eq!(refused[0]["code"], "auth/forbidden");
    assert!(refused[0]["message"]
        .as_str()
        .is_some_and(|m| m.contains("permission")));
    assert_eq!(status["pending"], json!([]), "{status}");
    app.shutdown().await;
}

/// The next JSON line `watch` prints (bounded wait).
async fn next_line(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> Value {
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("a line in time")
        .expect("read stdout")
        .expect("watch still runs");
    serde_json::from_str(&line).expect("a JSON line")
}

#[tokio::test]
async fn watch_prints_the_result_at_start_and_on_every_change() {
    let app = playground().await;
    http(
        &app,
        "INSERT INTO cars DOCUMENTS ({'_id': 'old', 'color': 'red'})",
    )
    .await;
    let url = format!("ws://{}", app.app.local_addr());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = smallpeer(
        dir.path(),
        &[
            "--connect",
            &url,
            "watch",
            "SELECT _id FROM cars WHERE color = :c ORDER BY _id",
            "--args",
            r#"{"c": "red"}"#,
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .expect("spawn watch");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    // At start: the local result (nothing yet); then the synced one.
    assert_eq!(next_line(&mut lines).await, json!({"items": []}));
    assert_eq!(
        next_line(&mut lines).await,
        json!({"items": [{"_id": "old"}]})
    );
    // A change over HTTP: a new line with the full result. A change that leaves the result as
    // it was prints nothing.
    http(
        &app,
        "INSERT INTO cars DOCUMENTS ({'_id': 'blue', 'color': 'blue'})",
    )
    .await;
    http(
        &app,
        "INSERT INTO cars DOCUMENTS ({'_id': 'new', 'color': 'red'})",
    )
    .await;
    assert_eq!(
        next_line(&mut lines).await,
        json!({"items": [{"_id": "new"}, {"_id": "old"}]})
    );

    let pid = child.id().expect("pid").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("watch ends after SIGTERM")
        .expect("wait");
    assert!(status.success(), "{status:?}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_refused_token_and_an_untrusted_certificate_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("cert");
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).expect("write");
    std::fs::write(&key_file, cert.key_pair.serialize_pem()).expect("write");
    let app = TestApp::spawn_with(TestDb::create().await, |c| {
        c.tls_cert = Some(cert_file.clone());
        c.tls_key = Some(key_file);
    })
    .await;
    let url = format!("wss://{}", app.app.local_addr());
    let data = dir.path().join("peer");
    let ca = cert_file.to_string_lossy().into_owned();

    // Trusted certificate, unknown key: the big peer's code, exit 1, at once.
    let out = run(
        &data,
        &[
            "--connect",
            &url,
            "--ca-cert",
            &ca,
            "--token",
            "bpk_nope",
            "exec",
            "SELECT * FROM c",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(last_error(&out)["code"], "auth/invalid-token");

    // Without the CA: the certificate is not trusted, exit 1 at once (not at the timeout).
    let out = run(
        &data,
        &[
            "--connect",
            &url,
            "--token",
            "bpk_nope",
            "exec",
            "SELECT * FROM c",
            "--timeout",
            "600",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = last_error(&out);
    assert_eq!(err["code"], "sync/untrusted-certificate", "{err}");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("not trusted") && m.contains("--ca-cert FILE")),
        "{err}"
    );
    app.shutdown().await;
}

/// A self-signed certificate as `openssl req -x509 -nodes -subj /CN=localhost` makes one:
/// `CA:TRUE`, no subjectAltName. (certificate PEM, key PEM)
fn openssl_like_certificate() -> (String, String) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("certificate");
    (cert.pem(), key.serialize_pem())
}

/// The README's command for a self-signed certificate (which is what users run).
const OPENSSL_REQ: &str = "openssl req -x509 -newkey rsa:2048 -keyout key.pem -out cert.pem \
                           -days 365 -nodes -subj /CN=localhost";

#[test]
fn the_readme_shows_the_tested_openssl_command() {
    assert!(include_str!("../README.md").contains(OPENSSL_REQ));
}

/// The certificate of the README's command, made by the real `openssl` in `dir`: (certificate
/// PEM, key PEM). `None` when there is no `openssl` on the machine, except in CI (`CI` set),
/// where that is a failure.
async fn openssl_certificate(dir: &Path) -> Option<(String, String)> {
    let made = Command::new("openssl")
        .args(OPENSSL_REQ.split(' ').skip(1))
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .await;
    let made = match made {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CI").is_none(),
                "openssl is needed in CI to test the README's certificate command"
            );
            eprintln!("no openssl here: the README's certificate command is not tested");
            return None;
        }
        made => made.expect("run openssl"),
    };
    assert!(
        made.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).expect("openssl's output");
    let cert = read("cert.pem");
    // The case of the report: a CA certificate without subjectAltName.
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in", "cert.pem"])
        .current_dir(dir)
        .output()
        .await
        .expect("openssl x509");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("CA:TRUE"), "{text}");
    assert!(!text.contains("Subject Alternative Name"), "{text}");
    Some((cert, read("key.pem")))
}

/// A playground server over TLS with this certificate: the server, its `wss://` URL (by IP
/// address; the certificates here name `localhost` only) and the certificate's file.
async fn tls_playground(dir: &Path, cert_pem: &str, key_pem: &str) -> (TestApp, String, PathBuf) {
    let (cert_file, key_file) = (dir.join("server-cert.pem"), dir.join("server-key.pem"));
    std::fs::write(&cert_file, cert_pem).expect("write");
    std::fs::write(&key_file, key_pem).expect("write");
    let cert = cert_file.clone();
    let app = TestApp::spawn_with(TestDb::create().await, |c| {
        c.tls_cert = Some(cert);
        c.tls_key = Some(key_file);
        c.playground = true;
    })
    .await;
    let url = format!("wss://{}", app.app.local_addr());
    (app, url, cert_file)
}

/// One peer pushes over `wss://` with `--ca-cert`, another pulls it the same way.
async fn sync_through_pinned_certificate(dir: &Path, cert_pem: &str, key_pem: &str) {
    let (app, url, cert_file) = tls_playground(dir, cert_pem, key_pem).await;
    let ca = cert_file.to_string_lossy().into_owned();
    let out = run(
        &dir.join("a"),
        &[
            "--connect",
            &url,
            "--ca-cert",
            &ca,
            "exec",
            "INSERT INTO cars DOCUMENTS ({'_id': 'a', 'color': 'blue'})",
        ],
    )
    .await;
    assert_eq!(stdout_json(&out)["mutatedDocumentIds"], json!(["a"]));
    let b = dir.join("b");
    let out = run(
        &b,
        &[
            "--connect",
            &url,
            "--ca-cert",
            &ca,
            "exec",
            "SELECT * FROM cars",
            "--subscribe",
            "SELECT * FROM cars",
        ],
    )
    .await;
    stdout_json(&out);
    let out = run(&b, &["exec", "SELECT * FROM cars"]).await;
    assert_eq!(
        stdout_json(&out)["items"],
        json!([{"_id": "a", "color": "blue"}])
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_self_signed_ca_certificate_given_with_ca_cert_is_pinned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = openssl_like_certificate();
    sync_through_pinned_certificate(dir.path(), &cert, &key).await;

    let dir = tempfile::tempdir().expect("tempdir");
    if let Some((cert, key)) = openssl_certificate(dir.path()).await {
        sync_through_pinned_certificate(dir.path(), &cert, &key).await;
    }
}

/// The last error of a run that must end with an untrusted certificate (exit 1), with a hint.
fn assert_untrusted(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = last_error(out);
    assert_eq!(err["code"], "sync/untrusted-certificate", "{err}");
    let message = err["message"].as_str().expect("a message").to_owned();
    assert!(message.contains("--ca-cert FILE"), "{message}");
    message
}

#[tokio::test]
async fn an_untrusted_certificate_ends_every_command_that_connects_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = openssl_like_certificate();
    let (app, url, _) = tls_playground(dir.path(), &cert, &key).await;
    let other = dir.path().join("other.pem");
    std::fs::write(&other, openssl_like_certificate().0).expect("write");
    let other = other.to_string_lossy().into_owned();
    let data = dir.path().join("peer");

    // exec with a long --timeout: it ends with the certificate error, not a timeout.
    let exec = ["exec", "SELECT * FROM c", "--timeout", "600"];
    let out = run(&data, &[&["--connect", url.as_str()][..], &exec].concat()).await;
    let message = assert_untrusted(&out);
    assert!(!message.contains("holds neither"), "{message}");
    // Another certificate than the server's.
    let out = run(
        &data,
        &[&["--connect", url.as_str(), "--ca-cert", &other][..], &exec].concat(),
    )
    .await;
    let message = assert_untrusted(&out);
    assert!(message.contains("holds neither"), "{message}");

    // sync and watch, which retry other errors for ever, stop too.
    let out = run(
        &data,
        &["--connect", &url, "sync", "--subscribe", "SELECT * FROM c"],
    )
    .await;
    assert_untrusted(&out);
    let out = run(
        &data,
        &[
            "--connect",
            &url,
            "--ca-cert",
            &other,
            "watch",
            "SELECT * FROM c",
        ],
    )
    .await;
    assert_untrusted(&out);
    app.shutdown().await;
}
