//! The `bigpeer` binary as users run it: a real process, real signals, a real Postgres.
//! (In-process tests of the server live in `integration-tests/`; this file needs
//! `CARGO_BIN_EXE_bigpeer`, which only this package's tests get.)

#[allow(dead_code)] // this file uses part of the shared helper
#[path = "../../integration-tests/src/testdb.rs"]
mod testdb;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testdb::TestDb;

const BIN: &str = env!("CARGO_BIN_EXE_bigpeer");

/// `bigpeer` in `cwd`, without any of the caller's bigpeer settings in its environment.
fn bigpeer(cwd: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd).stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("BIGPEER_") || name == "DATABASE_URL" || name == "RUST_LOG" {
            cmd.env_remove(name);
        }
    }
    cmd
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

/// A folder that the `postgres` user may traverse too (bigpeer runs Postgres as that user when
/// the tests run as root; `tempdir` makes private folders).
fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("bp")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// A running `bigpeer serve` whose JSON logs are collected.
struct Server {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    started: Instant,
}

impl Server {
    fn start(mut cmd: Command) -> Server {
        cmd.args(["--log-format", "json"])
            .stderr(Stdio::piped())
            .stdout(Stdio::null());
        let mut child = cmd.spawn().expect("start bigpeer");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("log lock").push(line);
            }
        });
        Server {
            child,
            logs,
            started: Instant::now(),
        }
    }

    fn logs(&self) -> String {
        self.logs.lock().expect("log lock").join("\n")
    }

    /// Waits for `/readyz` to answer 200 and returns the address.
    fn wait_ready(&mut self, within: Duration) -> SocketAddr {
        let deadline = self.started + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("bigpeer exited early with {status}:\n{}", self.logs());
            }
            if Instant::now() > deadline {
                panic!("bigpeer was not ready within {within:?}:\n{}", self.logs());
            }
            if let Some(addr) = self.address() {
                if let Ok((200, _)) = get(addr, "/readyz") {
                    return addr;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The address from the "listening for HTTP" log line.
    fn address(&self) -> Option<SocketAddr> {
        let logs = self.logs.lock().expect("log lock");
        logs.iter().find_map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).ok()?;
            if event["message"] != "listening for HTTP" {
                return None;
            }
            event["address"].as_str()?.parse().ok()
        })
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal bigpeer");
    }

    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return status;
            }
            if Instant::now() > deadline {
                panic!("bigpeer did not exit within {within:?}:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then the exit status.
    fn terminate(&mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait_exit(Duration::from_secs(60))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A plain HTTP/1.1 GET over a real socket.
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
}

/// A plain HTTP/1.1 POST of a JSON body with a bearer token, over a real socket.
fn post(addr: SocketAddr, path: &str, token: &str, body: &str) -> std::io::Result<(u16, String)> {
    exchange(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// Sends one request (whole, `Connection: close`) and reads the status and body of the answer.
fn exchange(addr: SocketAddr, request: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(request.as_bytes())?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Pids of live processes whose command line mentions `needle` (Linux `/proc`).
fn processes_mentioning(needle: &Path) -> Vec<String> {
    let needle = needle.to_string_lossy().into_owned();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&needle) {
                found.push(format!("{name}: {cmdline}"));
            }
        }
    }
    found
}

fn serve_embedded(cwd: &Path, data: &Path) -> Server {
    let mut cmd = bigpeer(cwd);
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data);
    Server::start(cmd)
}

fn assert_postgres_stopped(data: &Path) {
    let cluster = data.join("postgres");
    assert!(
        !cluster.join("postmaster.pid").exists(),
        "postmaster.pid left in {}",
        cluster.display()
    );
    let left = processes_mentioning(&cluster);
    assert!(left.is_empty(), "Postgres processes left running: {left:?}");
}

#[test]
fn embedded_postgres_by_default_starts_stops_and_is_reused() {
    let dir = shared_tempdir();
    let data = dir.path().join("data");

    let mut first = serve_embedded(dir.path(), &data);
    let addr = first.wait_ready(Duration::from_secs(60));
    eprintln!(
        "embedded mode, first start: /readyz 200 after {:?}",
        first.started.elapsed()
    );
    assert_eq!(
        get(addr, "/healthz").expect("healthz"),
        (200, r#"{"status":"ok"}"#.to_string())
    );
    assert!(data.join("postgres/PG_VERSION").is_file());
    assert!(
        data.join("run/.s.PGSQL.5432").exists(),
        "the private socket is in the data folder"
    );
    // The cluster: the bigpeer database in UTF-8, no TCP listener, Unicode-aware lower().
    let socket_url = format!(
        "postgres://bigpeer@localhost:5432/bigpeer?host={}",
        data.join("run").display()
    );
    let (listen, encoding, lowered): (String, String, String) = block_on(async {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&socket_url)
            .await
            .expect("connect over the private socket");
        sqlx::query_as(
            "SELECT current_setting('listen_addresses'), pg_encoding_to_char(encoding), lower('ÉTÉ') \
             FROM pg_database WHERE datname = current_database()",
        )
        .fetch_one(&mut conn)
        .await
        .expect("query the embedded Postgres")
    });
    assert_eq!(
        (listen.as_str(), encoding.as_str(), lowered.as_str()),
        ("", "UTF8", "été")
    );
    assert!(
        first.logs().contains("initialising a new Postgres cluster"),
        "{}",
        first.logs()
    );

    // One process per data folder.
    let out = bigpeer(dir.path())
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run a second bigpeer");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error[pg/data-dir-in-use]"), "{stderr}");

    // The first key while the server runs: `keys create` uses the running server's cluster.
    let out = bigpeer(dir.path())
        .args(["keys", "create", "--name", "first", "--quiet", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run bigpeer keys create");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("using the embedded Postgres of the bigpeer server"),
        "{stderr}"
    );
    let secret = String::from_utf8_lossy(&out.stdout).trim_end().to_owned();
    assert!(
        secret.starts_with(bigpeer::auth::SECRET_PREFIX),
        "{secret:?}"
    );
    let (status, body) = post(
        addr,
        "/api/v4/store/execute",
        &secret,
        r#"{"statement": "INSERT INTO cars DOCUMENTS ({'_id': 'first'})"}"#,
    )
    .expect("write with the new key");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"first\""), "{body}");
    let out = bigpeer(dir.path())
        .args(["keys", "list", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run bigpeer keys list");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"first\""));

    let status = first.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "exit after SIGTERM:\n{}",
        first.logs()
    );
    assert!(
        first.logs().contains("stopping the embedded Postgres"),
        "{}",
        first.logs()
    );
    assert_postgres_stopped(&data);

    let mut second = serve_embedded(dir.path(), &data);
    second.wait_ready(Duration::from_secs(60));
    eprintln!(
        "embedded mode, second start: /readyz 200 after {:?}",
        second.started.elapsed()
    );
    assert!(
        !second.logs().contains("initialising"),
        "the cluster is reused:\n{}",
        second.logs()
    );
    assert_eq!(second.terminate().code(), Some(0), "{}", second.logs());
    assert_postgres_stopped(&data);
}

#[test]
fn embedded_postgres_recovers_from_a_crash_and_a_stale_pid_file() {
    let dir = shared_tempdir();
    let data = dir.path().join("data");
    let cluster = data.join("postgres");

    let mut crashed = serve_embedded(dir.path(), &data);
    crashed.wait_ready(Duration::from_secs(60));
    crashed.signal(nix::sys::signal::Signal::SIGKILL);
    crashed.wait_exit(Duration::from_secs(10));
    assert!(
        !processes_mentioning(&cluster).is_empty(),
        "the orphaned Postgres still runs"
    );

    let mut recovered = serve_embedded(dir.path(), &data);
    recovered.wait_ready(Duration::from_secs(60));
    assert!(
        recovered
            .logs()
            .contains("a Postgres server from an earlier run still runs"),
        "{}",
        recovered.logs()
    );
    assert_eq!(
        recovered.terminate().code(),
        Some(0),
        "{}",
        recovered.logs()
    );
    assert_postgres_stopped(&data);

    // A pid file whose process is gone, as after a power cut.
    std::fs::write(cluster.join("postmaster.pid"), "2147483000\n/nowhere\n")
        .expect("write pid file");
    let mut stale = serve_embedded(dir.path(), &data);
    stale.wait_ready(Duration::from_secs(60));
    assert!(
        stale.logs().contains("removing a stale postmaster.pid"),
        "{}",
        stale.logs()
    );
    assert_eq!(stale.terminate().code(), Some(0), "{}", stale.logs());
    assert_postgres_stopped(&data);

    // `migrate` runs the embedded Postgres too, and stops it again.
    let out = bigpeer(dir.path())
        .arg("migrate")
        .arg("--data-dir")
        .arg(&data)
        .output()
        .expect("migrate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the database schema was already up to date"),
        "serve applied them already: {stderr}"
    );
    assert_postgres_stopped(&data);
}

#[test]
fn embedded_postgres_as_an_ordinary_user() {
    // As root (CI, containers) the other tests cover running Postgres as the `postgres` user;
    // here bigpeer itself runs as `nobody`, as in the Docker image (uid 10001). As an ordinary
    // user already, this is the same path as the other tests, checked once more.
    let dir = shared_tempdir();
    let mut cmd = if nix::unistd::Uid::effective().is_root() {
        let nobody = nix::unistd::User::from_name("nobody")
            .ok()
            .flatten()
            .expect("the test needs the \"nobody\" user when run as root");
        // The build folder may sit in a private home folder: give `nobody` its own copy.
        let bin = dir.path().join("bigpeer");
        std::fs::copy(BIN, &bin).expect("copy the binary");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::os::unix::fs::chown(
            dir.path(),
            Some(nobody.uid.as_raw()),
            Some(nobody.gid.as_raw()),
        )
        .expect("chown the folder to nobody");
        let mut as_nobody = Command::new(&bin);
        as_nobody
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .uid(nobody.uid.as_raw())
            .gid(nobody.gid.as_raw());
        as_nobody
    } else {
        bigpeer(dir.path())
    };
    let data = dir.path().join("data");
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data);
    let mut server = Server::start(cmd);
    server.wait_ready(Duration::from_secs(60));
    let owner = std::fs::metadata(data.join("postgres"))
        .expect("cluster")
        .uid();
    assert_eq!(owner, std::fs::metadata(dir.path()).expect("dir").uid());
    assert_eq!(server.terminate().code(), Some(0), "{}", server.logs());
    assert_postgres_stopped(&data);
}

/// `url` with a password in it, and that password. Trust authentication ignores it; a server
/// that checks passwords needs the real one in BIGPEER_TEST_DATABASE_URL already.
fn with_password(url: &str) -> (String, String) {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let at = url[scheme_end..].find('@').map(|i| scheme_end + i);
    match at {
        Some(at) if url[scheme_end..at].contains(':') => {
            let colon = scheme_end + url[scheme_end..at].find(':').unwrap_or(0);
            (url.to_string(), url[colon + 1..at].to_string())
        }
        Some(at) => {
            let password = "s3cret-pw".to_string();
            (format!("{}:{password}{}", &url[..at], &url[at..]), password)
        }
        None => (url.to_string(), String::new()),
    }
}

#[test]
fn serve_with_a_database_url_never_logs_the_password() {
    let db = block_on(TestDb::create());
    let (url, password) = with_password(db.url());
    assert!(!password.is_empty(), "the test URL has a password: {url}");
    let dir = shared_tempdir();
    let mut cmd = bigpeer(dir.path());
    cmd.env("DATABASE_URL", &url).args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--log-level",
        "debug",
    ]);
    let mut server = Server::start(cmd);
    let addr = server.wait_ready(Duration::from_secs(30));
    assert_eq!(
        get(addr, "/readyz").expect("readyz"),
        (200, r#"{"status":"ok"}"#.to_string())
    );
    assert_eq!(server.terminate().code(), Some(0), "{}", server.logs());
    let logs = server.logs();
    assert!(logs.contains(":***@"), "the masked URL is logged:\n{logs}");
    assert!(
        !logs.contains(&password),
        "the password leaked into the logs:\n{logs}"
    );
    assert!(
        !dir.path().join("bigpeer-data").exists(),
        "no data folder without the embedded Postgres"
    );
}

#[test]
fn migrate_applies_migrations_and_is_idempotent() {
    let db = block_on(TestDb::create());
    let dir = shared_tempdir();
    for run in 1..=2 {
        let out = bigpeer(dir.path())
            .args(["migrate", "--database-url", db.url()])
            .output()
            .expect("run bigpeer migrate");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "migrate run {run} failed:\n{stderr}");
        // The first run says what it applied; the second, that there was nothing to apply.
        let expected = if run == 1 {
            "migrations: the database schema is up to date"
        } else {
            "the database schema was already up to date"
        };
        assert!(stderr.contains(expected), "run {run}: {stderr}");
        assert_eq!(stderr.contains("applied "), run == 1, "run {run}: {stderr}");
    }
    let applied: i64 = block_on(async {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(db.url())
            .await
            .expect("connect");
        sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut conn)
            .await
            .expect("count migrations")
    });
    assert_eq!(applied as usize, bigpeer::store::MIGRATOR.iter().count());

    // A server that does not migrate by itself is ready on the migrated database.
    let mut cmd = bigpeer(dir.path());
    cmd.args([
        "serve",
        "--no-migrate",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        db.url(),
    ]);
    let mut server = Server::start(cmd);
    server.wait_ready(Duration::from_secs(30));
    assert_eq!(server.terminate().code(), Some(0), "{}", server.logs());
}

/// Runs bigpeer to completion; returns the exit code and stderr.
fn fails(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = bigpeer(cwd)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run bigpeer");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "bigpeer panicked: {stderr}");
    (out.status.code(), stderr)
}

#[test]
fn bad_input_gives_precise_errors_and_a_non_zero_exit() {
    let db = block_on(TestDb::create());
    let dir = shared_tempdir();
    let missing_db = testdb::with_database(db.url(), &format!("{}_missing", db.name()));
    let empty_bin = dir.path().join("empty-bin");
    std::fs::create_dir(&empty_bin).expect("mkdir");
    let empty_bin = empty_bin.to_string_lossy().into_owned();
    let data = dir.path().join("data").to_string_lossy().into_owned();

    /// Arguments, environment, exit code, texts stderr must contain.
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, i32, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            vec!["serve", "--listen", "127.0.0.1:0", "--connect-timeout", "1s"],
            vec![("DATABASE_URL", "postgres://postgres@127.0.0.1:1/x")],
            1,
            vec!["error[store/unavailable]: cannot connect to Postgres at 127.0.0.1:1: connection refused", "hint: check that Postgres runs there"],
        ),
        (
            vec!["migrate", "--database-url", &missing_db],
            vec![],
            1,
            vec!["error[store/unavailable]", "does not exist", "hint: create the database", "createdb"],
        ),
        (
            vec!["serve", "--pool-size", "0"],
            vec![],
            2,
            vec!["error[config/invalid-value]: invalid pool_size \"0\" on the command line (--pool-size): must be between 1 and 10000", "hint:"],
        ),
        (
            vec!["serve"],
            vec![("BIGPEER_LOG_FORMAT", "xml")],
            2,
            vec!["invalid log_format \"xml\" in environment variable BIGPEER_LOG_FORMAT: expected pretty or json"],
        ),
        (
            vec!["serve", "--listen", "8080"],
            vec![],
            2,
            vec!["invalid listen \"8080\" on the command line (--listen): the port is missing", "127.0.0.1:8080"],
        ),
        (
            vec!["serve", "--config", "nope.toml"],
            vec![],
            2,
            vec!["error[config/file-not-found]: config file \"nope.toml\" does not exist"],
        ),
        (
            vec!["serve", "--listen", "127.0.0.1:0", "--data-dir", &data, "--postgres-bin-dir", &empty_bin],
            vec![],
            1,
            vec!["error[pg/binaries-not-found]", "empty-bin"],
        ),
        (vec![], vec![], 2, vec!["Usage: bigpeer"]),
        (vec!["serve", "--no-such-flag"], vec![], 2, vec!["--no-such-flag"]),
    ];
    for (args, env, code, wanted) in cases {
        let (status, stderr) = fails(dir.path(), &args, &env);
        assert_eq!(status, Some(code), "bigpeer {args:?} {env:?}:\n{stderr}");
        for text in wanted {
            assert!(
                stderr.contains(text),
                "bigpeer {args:?} {env:?}: wanted {text:?} in:\n{stderr}"
            );
        }
    }
    assert!(
        !Path::new(&data).join("postgres").exists(),
        "nothing initialised without binaries"
    );

    // An unknown key in ./bigpeer.toml, found without --config.
    let with_file = shared_tempdir();
    std::fs::write(
        with_file.path().join("bigpeer.toml"),
        "listn = \"0.0.0.0:8080\"\n",
    )
    .expect("write");
    let (status, stderr) = fails(with_file.path(), &["serve"], &[]);
    assert_eq!(status, Some(2), "{stderr}");
    assert!(
        stderr.contains("error[config/unknown-key]: unknown key \"listn\" in config file"),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean \"listen\"?"), "{stderr}");
}

#[test]
fn config_command_shows_the_layered_settings_with_the_password_masked() {
    let dir = shared_tempdir();
    let file: PathBuf = dir.path().join("custom.toml");
    std::fs::write(
        &file,
        "listen = \"0.0.0.0:1111\"\npool_size = 3\nlog_format = \"json\"\n",
    )
    .expect("write config");
    let out = bigpeer(dir.path())
        .args(["config", "--config"])
        .arg(&file)
        .args(["--listen", "127.0.0.1:9999"])
        .env("BIGPEER_POOL_SIZE", "7")
        .env("DATABASE_URL", "postgres://app:hunter2@db:5432/bigpeer")
        .env("BIGPEER_NATS_URL", "nats://cdc:swordfish@nats:4222")
        .args(["--nats-subject-prefix", "acme.cdc"])
        .output()
        .expect("run bigpeer config");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "listen = \"127.0.0.1:9999\"",
        "pool_size = 7",
        "log_format = \"json\"",
        "database_url = \"postgres://app:***@db:5432/bigpeer\"",
        "data_dir = \"./bigpeer-data\"",
        "nats_url = \"nats://cdc:***@nats:4222\"",
        "nats_subject_prefix = \"acme.cdc\"",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "wanted {line:?} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(!stdout.contains("swordfish"), "{stdout}");
}

#[test]
fn help_documents_every_setting() {
    let dir = shared_tempdir();
    let mut help = String::new();
    for args in [vec!["--help"], vec!["serve", "--help"]] {
        let out = bigpeer(dir.path())
            .args(&args)
            .output()
            .expect("run bigpeer --help");
        assert!(out.status.success());
        help.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    for setting in bigpeer::config::SETTINGS {
        assert!(help.contains(setting.flag), "help lacks {}", setting.flag);
        for var in setting.env {
            assert!(help.contains(var), "help lacks {var}");
        }
    }
    assert!(help.contains("Examples:"), "{help}");
    // The top-level help points to where the server's settings are.
    assert!(help.contains("`bigpeer serve --help`"), "{help}");
}

#[test]
fn keys_command_creates_lists_and_revokes() {
    let db = block_on(TestDb::create());
    let dir = shared_tempdir();
    let run = |args: &[&str]| {
        let out = bigpeer(dir.path())
            .args(args)
            .args(["--database-url", db.url()])
            .output()
            .expect("run bigpeer keys");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&[
        "keys",
        "create",
        "--name",
        "ci",
        "--expires-at",
        "2099-01-01T00:00:00Z",
        "--permissions",
        r#"{"read":{"queriesByCollection":{"cars":["true"]}}}"#,
    ]);
    assert_eq!(code, Some(0), "{err}");
    let created: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let secret = created["key"].as_str().expect("the secret is shown once");
    assert!(secret.starts_with("bpk_"));
    assert_eq!(created["expiresAt"], "2099-01-01T00:00:00Z");
    let id = created["id"].as_str().expect("id").to_owned();

    let (code, out, err) = run(&["keys", "list"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&id) && !out.contains(secret), "{out}");

    let (code, out, err) = run(&["keys", "revoke", &id]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("revoked"));
    let (_, out, _) = run(&["keys", "list"]);
    let listed: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert!(listed[0]["revokedAt"].is_string(), "{listed}");

    // Bad input: a precise error and a non-zero exit.
    let (code, _, err) = run(&["keys", "revoke", "key_nope"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("auth/invalid-request") && err.contains("key_nope"),
        "{err}"
    );
    let (code, _, err) = run(&["keys", "create", "--name", "x", "--permissions", "{nope"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--permissions"), "{err}");
    let (code, _, err) = run(&["keys", "create", "--name", "x", "--expires-at", "soon"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("RFC 3339"), "{err}");

    // --quiet: the secret alone, on a line of its own, ready for KEY=$(...).
    let (code, out, err) = run(&["keys", "create", "--name", "quiet", "--quiet"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.ends_with('\n'), "{out:?}");
    let secret = out.trim_end_matches('\n');
    assert!(
        secret.starts_with(bigpeer::auth::SECRET_PREFIX) && !secret.contains(char::is_whitespace),
        "{out:?}"
    );
    let (_, listed, _) = run(&["keys", "list"]);
    assert!(listed.contains("\"quiet\""), "{listed}");
}

#[test]
fn webhooks_command_creates_lists_replays_and_deletes() {
    let db = block_on(TestDb::create());
    let dir = shared_tempdir();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = bigpeer(dir.path())
            .args(args)
            .args(["--database-url", db.url()])
            .envs(env.iter().copied())
            .output()
            .expect("run bigpeer webhooks");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(
        &[
            "webhooks",
            "create",
            "--url",
            "https://hooks.example.com/in",
            "--collection",
            "orders",
            "--collection",
            "carts",
            "--filter",
            "total > 100",
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    let created: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(
        created["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_")),
        "{created}"
    );
    assert_eq!(
        created["collections"],
        serde_json::json!(["orders", "carts"])
    );

    let (code, out, err) = run(&["webhooks", "list"], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&id) && !out.contains("whsec_"), "{out}");

    let (code, out, err) = run(&["webhooks", "replay", &id, "--since", "0"], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("replayed"), "{out}");

    // A private address needs webhook_allow_private; a bad filter is refused.
    let (code, _, err) = run(
        &["webhooks", "create", "--url", "http://127.0.0.1:9/x"],
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("webhooks/invalid-url"), "{err}");
    let (code, out, err) = run(
        &["webhooks", "create", "--url", "http://127.0.0.1:9/x"],
        &[("BIGPEER_WEBHOOK_ALLOW_PRIVATE", "true")],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("127.0.0.1"));
    let (code, _, err) = run(
        &[
            "webhooks",
            "create",
            "--url",
            "https://h.example/x",
            "--filter",
            "a =",
        ],
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("webhooks/invalid"), "{err}");

    let (code, _, err) = run(&["webhooks", "delete", &id], &[]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = run(&["webhooks", "delete", &id], &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("webhooks/not-found"), "{err}");
}

/// The requests a receiver got: `(webhook-id, body)`.
type Requests = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A webhook receiver on a loopback port, on plain threads: records `(webhook-id, body)` of each
/// request on arrival, then answers 200 after `delay_ms`.
struct HookReceiver {
    addr: SocketAddr,
    got: Requests,
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl HookReceiver {
    fn start() -> HookReceiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a receiver");
        let addr = listener.local_addr().expect("address");
        let got = Arc::new(Mutex::new(Vec::new()));
        let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (sink, delay) = (got.clone(), delay_ms.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (sink, delay) = (sink.clone(), delay.clone());
                std::thread::spawn(move || {
                    let _ = HookReceiver::serve(stream, &sink, &delay);
                });
            }
        });
        HookReceiver {
            addr,
            got,
            delay_ms,
        }
    }

    fn serve(
        stream: TcpStream,
        sink: &Mutex<Vec<(String, Vec<u8>)>>,
        delay: &std::sync::atomic::AtomicU64,
    ) -> std::io::Result<()> {
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        loop {
            let (mut id, mut length) = (String::new(), 0usize);
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            loop {
                line.clear();
                reader.read_line(&mut line)?;
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                if let Some((name, value)) = l.split_once(':') {
                    match name.to_ascii_lowercase().as_str() {
                        "webhook-id" => id = value.trim().to_owned(),
                        "content-length" => length = value.trim().parse().unwrap_or(0),
                        _ => {}
                    }
                }
            }
            let mut body = vec![0u8; length];
            reader.read_exact(&mut body)?;
            sink.lock().expect("receiver").push((id, body));
            std::thread::sleep(Duration::from_millis(
                delay.load(std::sync::atomic::Ordering::SeqCst),
            ));
            let mut out = stream.try_clone()?;
            out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")?;
        }
    }

    /// Every event id received, in arrival order, duplicates kept.
    fn event_ids(&self) -> Vec<String> {
        self.got
            .lock()
            .expect("receiver")
            .iter()
            .flat_map(|(_, body)| {
                let v: serde_json::Value = serde_json::from_slice(body).expect("JSON body");
                v["events"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|e| e["id"].as_str().unwrap_or("").to_owned())
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            })
            .collect()
    }
}

/// `kill -9` of bigpeer in the middle of a webhook delivery loses nothing: after a restart every
/// event arrives, and a batch sent again keeps its `webhook-id`, its body and its event ids.
#[test]
fn a_killed_server_resumes_webhook_delivery_without_losing_events() {
    let db = block_on(TestDb::create());
    let dir = shared_tempdir();
    let admin = "admin-secret-0123456789abcdef";
    let receiver = HookReceiver::start();
    let serve = || {
        let mut cmd = bigpeer(dir.path());
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--playground",
            "--webhook-allow-private",
        ])
        .args(["--database-url", db.url(), "--admin-key", admin]);
        Server::start(cmd)
    };
    let mut first = serve();
    let addr = first.wait_ready(Duration::from_secs(60));
    let (status, body) = post(
        addr,
        "/api/v4/admin/webhooks",
        admin,
        &format!(r#"{{"url": "http://{}/hook"}}"#, receiver.addr),
    )
    .expect("register a webhook");
    assert_eq!(status, 201, "{body}");
    // Slow answers: the server is killed while a request is in flight.
    receiver
        .delay_ms
        .store(3000, std::sync::atomic::Ordering::SeqCst);
    for i in 0..30 {
        let (status, body) = post(
            addr,
            "/api/v4/store/execute",
            "playground",
            &format!(r#"{{"statement": "INSERT INTO t DOCUMENTS ({{'_id': {i}}})"}}"#),
        )
        .expect("write");
        assert_eq!(status, 200, "{body}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.got.lock().expect("receiver").is_empty() {
        assert!(Instant::now() < deadline, "no delivery:\n{}", first.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    first.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = first.wait_exit(Duration::from_secs(10));
    receiver
        .delay_ms
        .store(0, std::sync::atomic::Ordering::SeqCst);

    let mut second = serve();
    second.wait_ready(Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ids: std::collections::BTreeSet<String> = receiver.event_ids().into_iter().collect();
        if ids.len() >= 30 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of 30 events:\n{}",
            ids.len(),
            second.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = receiver.got.lock().expect("receiver").clone();
    // The batch in flight at the kill came again: same id, same body.
    let (first_id, first_body) = &got[0];
    let again: Vec<&(String, Vec<u8>)> = got.iter().filter(|(id, _)| id == first_id).collect();
    assert!(
        again.len() >= 2,
        "the batch in flight is sent again after the restart"
    );
    assert!(
        again.iter().all(|(_, b)| b == first_body),
        "with the same body"
    );
    // Every event, each first seen in sequence order.
    let mut seen = std::collections::BTreeSet::new();
    let firsts: Vec<i64> = receiver
        .event_ids()
        .into_iter()
        .filter(|id| seen.insert(id.clone()))
        .map(|id| {
            id.rsplit(':')
                .next()
                .and_then(|s| s.parse().ok())
                .expect("seq")
        })
        .collect();
    assert_eq!(firsts.len(), 30);
    assert!(firsts.windows(2).all(|w| w[0] < w[1]), "{firsts:?}");
    assert_eq!(second.terminate().code(), Some(0), "{}", second.logs());
}
