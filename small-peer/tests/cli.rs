//! The `smallpeer` binary on a temporary data directory.

use std::path::Path;
use std::process::{Command, Output};

fn smallpeer(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_smallpeer"))
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .expect("run smallpeer")
}

fn stdout_json(o: &Output) -> serde_json::Value {
    assert!(
        o.status.success(),
        "status {:?}, stderr {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("stdout is JSON")
}

fn stderr_json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stderr).expect("stderr is JSON")
}

#[test]
fn insert_select_and_persistence_across_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("peer");
    let out = smallpeer(
        &data,
        &[
            "exec",
            "INSERT INTO cars DOCUMENTS (:a), ({'_id': 'b', 'color': 'red'})",
            "--args",
            r#"{"a": {"_id": "a", "color": "blue", "price": 1.5}}"#,
        ],
    );
    assert_eq!(
        stdout_json(&out),
        serde_json::json!({"items": [], "mutatedDocumentIds": ["a", "b"]})
    );
    // A second process sees the first one's writes.
    let out = smallpeer(
        &data,
        &[
            "exec",
            "SELECT * FROM cars WHERE color = :c",
            "--args",
            r#"{"c": "blue"}"#,
        ],
    );
    assert_eq!(
        stdout_json(&out),
        serde_json::json!({
            "items": [{"_id": "a", "color": "blue", "price": 1.5}],
            "mutatedDocumentIds": []
        })
    );
    let out = smallpeer(
        &data,
        &["exec", "UPDATE cars SET sold = true WHERE _id = 'b'"],
    );
    assert_eq!(
        stdout_json(&out)["mutatedDocumentIds"],
        serde_json::json!(["b"])
    );
    let out = smallpeer(&data, &["exec", "SELECT _id, sold FROM cars ORDER BY _id"]);
    assert_eq!(
        stdout_json(&out)["items"],
        serde_json::json!([{"_id": "a"}, {"_id": "b", "sold": true}])
    );
}

#[test]
fn bad_statements_and_arguments_exit_2_with_a_json_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    for (args, code) in [
        (vec!["exec", "SELEKT * FROM cars"], "query/invalid"),
        (
            vec!["exec", "SELECT * FROM cars WHERE x = :missing"],
            "query/invalid",
        ),
        (
            vec!["exec", "SELECT 1 FROM cars", "--args", "{not json"],
            "query/invalid",
        ),
        (
            vec!["exec", "SELECT 1 FROM cars", "--args", "[1, 2]"],
            "query/invalid",
        ),
        (
            vec!["exec", "SELECT * FROM a JOIN b ON a.x = b.x"],
            "query/unsupported",
        ),
    ] {
        let out = smallpeer(data, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let err = stderr_json(&out);
        assert_eq!(err["code"], code, "{args:?}: {err}");
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    smallpeer(data, &["exec", "INSERT INTO c DOCUMENTS ({'_id': 1})"]);
    let out = smallpeer(data, &["exec", "INSERT INTO c DOCUMENTS ({'_id': 1})"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr_json(&out)["code"], "query/evaluation");
}

#[test]
fn sync_commands_check_their_usage_before_connecting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").expect("write");
    let garbage = garbage.to_string_lossy().into_owned();
    for (args, code) in [
        (vec!["watch", "SELECT * FROM c"], "cli/usage"),
        (vec!["sync", "--subscribe", "SELECT * FROM c"], "cli/usage"),
        (
            vec!["--connect", "http://127.0.0.1:1", "sync"],
            "sync/invalid-url",
        ),
        (
            vec!["--connect", "127.0.0.1:1", "watch", "SELECT * FROM c"],
            "sync/invalid-url",
        ),
        (
            vec![
                "--connect",
                "wss://127.0.0.1:1",
                "--ca-cert",
                &garbage,
                "sync",
            ],
            "sync/invalid-ca",
        ),
        (
            vec![
                "--connect",
                "ws://127.0.0.1:1",
                "sync",
                "--subscribe",
                "DELETE FROM c",
            ],
            "query/invalid",
        ),
        (
            vec!["--connect", "ws://127.0.0.1:1", "watch", "SELEC"],
            "query/invalid",
        ),
    ] {
        let out = smallpeer(data, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(stderr_json(&out)["code"], code, "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn exec_connect_to_nothing_fails_after_its_timeout_and_keeps_the_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    // Nothing listens on port 1.
    let out = smallpeer(
        data,
        &[
            "--connect",
            "ws://127.0.0.1:1",
            "exec",
            "INSERT INTO c DOCUMENTS ({'_id': 'offline'})",
            "--timeout",
            "2",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    // The statement ran and its result was printed before syncing.
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(
        printed["mutatedDocumentIds"],
        serde_json::json!(["offline"])
    );
    let err: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .expect("an error line"),
    )
    .expect("stderr is JSON lines");
    assert_eq!(err["code"], "sync/unreachable", "{err}");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("127.0.0.1:1")),
        "{err}"
    );
    // The write is kept, waiting in the outbox for the next sync.
    let store = smallpeer::Store::open_dir(data).expect("open");
    assert_eq!(store.outbox().expect("outbox").len(), 1);
}

#[test]
fn unusable_data_directories_exit_1_with_a_json_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let damaged = dir.path().join("damaged");
    std::fs::create_dir(&damaged).expect("mkdir");
    std::fs::write(
        damaged.join(smallpeer::FILE_NAME),
        "this is not an SQLite database, just text long enough to be read as a header".repeat(2),
    )
    .expect("write");
    for data in [&file, &damaged] {
        let out = smallpeer(data, &["exec", "SELECT * FROM c"]);
        assert_eq!(out.status.code(), Some(1), "{}", data.display());
        assert_eq!(stderr_json(&out)["code"], "store/io");
    }
}
