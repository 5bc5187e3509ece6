//! The embedded default: with no database URL, bigpeer runs its own Postgres cluster from the
//! Postgres binaries installed on the machine, inside its data folder.
//!
//! Layout of the data folder:
//!
//! ```text
//! <data-dir>/
//!   bigpeer.lock     held (flock) by the running bigpeer: one process per data folder
//!   postgres/        the cluster (PGDATA), made once by initdb
//!   run/             the private Unix socket; Postgres listens on no TCP port
//!   postgres.log     the server log
//! ```
//!
//! Postgres refuses to run as root. When bigpeer runs as root (as in many containers), it runs
//! `initdb` and `pg_ctl` as the unprivileged `postgres` system user, through
//! [`std::os::unix::process::CommandExt::uid`] and `gid`: the standard library switches the child
//! to that user (dropping root's supplementary groups) between fork and exec, which needs neither
//! `unsafe` code nor `su`/`runuser` being installed. The folders Postgres writes are chowned to
//! that user. bigpeer itself connects over the socket as the `bigpeer` database superuser, with
//! `trust` authentication limited to that socket (host connections are rejected).

mod binaries;
mod error;

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{Gid, Uid, User};

pub use binaries::PgBinaries;
pub use error::PgError;

/// The database superuser and database that bigpeer creates in its cluster.
pub const DB_USER: &str = "bigpeer";
pub const DB_NAME: &str = "bigpeer";
/// The port number only names the socket file (`.s.PGSQL.5432`); nothing listens on TCP.
const PORT: u16 = 5432;
/// `sun_path` holds 108 bytes on Linux, 104 on macOS, including the final NUL.
const MAX_SOCKET_PATH: usize = 103;
/// Written next to `postgresql.conf` at every start, included from it.
const SETTINGS_FILE: &str = "bigpeer.conf";
/// Present once the `bigpeer` database exists.
const DATABASE_MARKER: &str = "bigpeer.database-created";

/// Where and how to run the embedded Postgres.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// bigpeer's data folder; the cluster lives in `<data_dir>/postgres`.
    pub data_dir: PathBuf,
    /// The folder holding `initdb` and `pg_ctl`; searched for when `None`.
    pub bin_dir: Option<PathBuf>,
    /// How long `pg_ctl start` and `pg_ctl stop` may wait.
    pub timeout: Duration,
}

/// The unprivileged user that runs Postgres when bigpeer runs as root.
#[derive(Debug, Clone)]
struct RunAs {
    name: String,
    uid: Uid,
    gid: Gid,
    home: PathBuf,
}

/// A running Postgres cluster owned by this process. Stopped by [`EmbeddedPostgres::stop`], or
/// when dropped.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    bins: PgBinaries,
    cluster: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    run_as: Option<RunAs>,
    timeout: Duration,
    running: bool,
    url: String,
    // Last field: unlocked after the server is stopped.
    _lock: Flock<File>,
}

impl EmbeddedPostgres {
    /// Initialises the cluster if needed, starts it and makes sure the `bigpeer` database exists.
    pub async fn start(opts: EmbeddedOptions) -> Result<EmbeddedPostgres, PgError> {
        match tokio::task::spawn_blocking(move || start_blocking(&opts)).await {
            Ok(result) => result,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }

    /// The URL to connect to the `bigpeer` database over the private socket.
    pub fn database_url(&self) -> &str {
        &self.url
    }

    /// The cluster folder (`<data-dir>/postgres`).
    pub fn cluster_dir(&self) -> &Path {
        &self.cluster
    }

    /// The Postgres version in use, such as `15.19`.
    pub fn version(&self) -> &str {
        &self.bins.version
    }

    /// Stops the server (`pg_ctl stop -m fast`) and releases the data folder.
    pub async fn stop(mut self) -> Result<(), PgError> {
        match tokio::task::spawn_blocking(move || self.stop_blocking()).await {
            Ok(result) => result,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }

    fn stop_blocking(&mut self) -> Result<(), PgError> {
        if !self.running {
            return Ok(());
        }
        tracing::info!(cluster = %self.cluster.display(), "stopping the embedded Postgres");
        let secs = self.timeout.as_secs().max(1).to_string();
        let fast = self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", &secs])?;
        if !fast.status.success() {
            tracing::warn!(output = %output_text(&fast), "fast shutdown failed, trying immediate");
            let immediate = self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", &secs])?;
            if !immediate.status.success() {
                return Err(PgError::Stop {
                    output: output_text(&immediate),
                });
            }
        }
        self.running = false;
        Ok(())
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<Output, PgError> {
        let mut all: Vec<OsString> = args.iter().map(OsString::from).collect();
        all.push("-D".into());
        all.push(self.cluster.clone().into_os_string());
        run(
            &self.bins.pg_ctl(),
            &all,
            self.run_as.as_ref(),
            &self.cluster,
        )
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if let Err(err) = self.stop_blocking() {
            tracing::error!(code = err.code(), "{err}");
        }
    }
}

fn start_blocking(opts: &EmbeddedOptions) -> Result<EmbeddedPostgres, PgError> {
    let data_dir = std::path::absolute(&opts.data_dir).map_err(|source| PgError::DataDir {
        path: opts.data_dir.clone(),
        source,
    })?;
    fs::create_dir_all(&data_dir).map_err(|source| PgError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let lock = lock_data_dir(&data_dir)?;

    let run_as = if Uid::effective().is_root() {
        Some(postgres_user()?)
    } else {
        None
    };
    if let Some(user) = &run_as {
        check_reachable(&data_dir, user)?;
    }

    let cluster = data_dir.join("postgres");
    let socket_dir = data_dir.join("run");
    let log = data_dir.join("postgres.log");
    let socket_file = socket_dir.join(format!(".s.PGSQL.{PORT}"));
    let len = socket_file.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(PgError::SocketPathTooLong {
            path: socket_file,
            len,
            max: MAX_SOCKET_PATH,
        });
    }

    let existing = cluster_version(&cluster);
    let bins = binaries::find(opts.bin_dir.as_deref(), existing)?;
    let fresh = existing.is_none();
    if fresh {
        init_cluster(&cluster, &bins, run_as.as_ref())?;
    }
    ensure_include(&cluster)?;

    prepare_dir(&socket_dir, 0o700, run_as.as_ref())?;
    remove_stale_sockets(&socket_dir)?;
    prepare_log(&log, run_as.as_ref())?;
    write_settings(&cluster, &socket_dir, run_as.as_ref())?;

    let url = socket_url(&socket_dir);
    let mut pg = EmbeddedPostgres {
        bins,
        cluster,
        socket_dir,
        log,
        run_as,
        timeout: opts.timeout,
        running: false,
        url,
        _lock: lock,
    };
    stop_leftover(&pg)?;

    tracing::info!(
        cluster = %pg.cluster.display(),
        version = %pg.bins.version,
        "starting the embedded Postgres"
    );
    let secs = pg.timeout.as_secs().max(1).to_string();
    let log_arg = pg.log.to_string_lossy().into_owned();
    let out = pg.pg_ctl(&["start", "-w", "-t", &secs, "-l", &log_arg])?;
    if !out.status.success() {
        let mut output = output_text(&out);
        let tail = log_tail(&pg.log, 15);
        if !tail.is_empty() {
            output = format!("{output}\nlast lines of the server log:\n{tail}");
        }
        return Err(PgError::Start {
            output,
            log: pg.log.clone(),
        });
    }
    // From here on, dropping `pg` stops the server, also when the rest of start-up fails.
    pg.running = true;
    ensure_database(&pg)?;
    Ok(pg)
}

/// The URL of the embedded cluster that another bigpeer process runs in `data_dir`, if one
/// does: its lock is held and its socket is there. A command such as `bigpeer keys create` then
/// connects to that cluster over the private socket instead of starting its own, so that it
/// works while the server runs. `None` when no bigpeer runs there (the caller starts the cluster
/// itself); an error when the folder is locked but the cluster is not up (starting or stopping).
pub fn running_cluster_url(data_dir: &Path) -> Result<Option<String>, PgError> {
    let data_dir = std::path::absolute(data_dir).map_err(|source| PgError::DataDir {
        path: data_dir.to_path_buf(),
        source,
    })?;
    if !data_dir.join("bigpeer.lock").exists() {
        return Ok(None);
    }
    match lock_data_dir(&data_dir) {
        // Nobody runs there: release the lock again (the caller starts its own cluster).
        Ok(_lock) => Ok(None),
        Err(PgError::DataDirInUse { path }) => {
            let socket_dir = data_dir.join("run");
            if socket_dir.join(format!(".s.PGSQL.{PORT}")).exists() {
                Ok(Some(socket_url(&socket_dir)))
            } else {
                Err(PgError::ServerStarting { path })
            }
        }
        Err(other) => Err(other),
    }
}

/// The URL of the `bigpeer` database over the private socket in `socket_dir`.
fn socket_url(socket_dir: &Path) -> String {
    format!(
        "postgres://{DB_USER}@localhost:{PORT}/{DB_NAME}?host={}",
        percent_encode(&socket_dir.to_string_lossy())
    )
}

/// One bigpeer per data folder: an exclusive, non-blocking `flock` held for the process lifetime
/// (released by the kernel if the process dies, so a crash never leaves a stale lock).
fn lock_data_dir(data_dir: &Path) -> Result<Flock<File>, PgError> {
    let path = data_dir.join("bigpeer.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| PgError::DataDir {
            path: path.clone(),
            source,
        })?;
    let mut locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => locked,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            return Err(PgError::DataDirInUse {
                path: data_dir.to_path_buf(),
            })
        }
        Err((_, errno)) => {
            return Err(PgError::DataDir {
                path,
                source: std::io::Error::from(errno),
            })
        }
    };
    // The pid is informative only; the lock is what counts.
    let _ = locked
        .set_len(0)
        .and_then(|()| writeln!(*locked, "{}", std::process::id()));
    Ok(locked)
}

fn postgres_user() -> Result<RunAs, PgError> {
    match User::from_name("postgres") {
        Ok(Some(user)) => Ok(RunAs {
            name: user.name,
            uid: user.uid,
            gid: user.gid,
            home: user.dir,
        }),
        _ => Err(PgError::NoPostgresUser),
    }
}

/// The unprivileged user needs to traverse every folder down to the data folder.
fn check_reachable(data_dir: &Path, user: &RunAs) -> Result<(), PgError> {
    for dir in data_dir.ancestors() {
        let Ok(meta) = fs::metadata(dir) else {
            continue;
        };
        let mode = meta.mode();
        let ok = if meta.uid() == user.uid.as_raw() {
            mode & 0o100 != 0
        } else if meta.gid() == user.gid.as_raw() {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !ok {
            return Err(PgError::NotReachable {
                user: user.name.clone(),
                path: dir.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// The major version of the cluster in `dir`, from its `PG_VERSION` file.
fn cluster_version(cluster: &Path) -> Option<u32> {
    let text = fs::read_to_string(cluster.join("PG_VERSION")).ok()?;
    binaries::major_of(text.trim())
}

fn init_cluster(cluster: &Path, bins: &PgBinaries, run_as: Option<&RunAs>) -> Result<(), PgError> {
    if let Ok(mut entries) = fs::read_dir(cluster) {
        if entries.next().is_some() {
            return Err(PgError::NotACluster {
                path: cluster.to_path_buf(),
            });
        }
    }
    tracing::info!(
        cluster = %cluster.display(),
        version = %bins.version,
        "initialising a new Postgres cluster (first start with this data folder)"
    );
    prepare_dir(cluster, 0o700, run_as)?;
    let args: Vec<OsString> = vec![
        "-D".into(),
        cluster.as_os_str().into(),
        "-U".into(),
        DB_USER.into(),
        "--auth-local=trust".into(),
        "--auth-host=reject".into(),
        "--encoding=UTF8".into(),
        "--locale=C".into(),
        format!("--lc-ctype={}", ctype_locale()).into(),
    ];
    let out = run(&bins.initdb(), &args, run_as, cluster)?;
    if !out.status.success() {
        return Err(PgError::Initdb {
            output: output_text(&out),
        });
    }
    Ok(())
}

/// Makes `postgresql.conf` include bigpeer's settings file (done once; also repairs a cluster
/// made by hand, which would otherwise listen where the system's Postgres does).
fn ensure_include(cluster: &Path) -> Result<(), PgError> {
    let conf = cluster.join("postgresql.conf");
    let err = |source| PgError::DataDir {
        path: conf.clone(),
        source,
    };
    let include = format!("include_if_exists = '{SETTINGS_FILE}'");
    let text = fs::read_to_string(&conf).map_err(err)?;
    if text.lines().any(|line| line.trim() == include) {
        return Ok(());
    }
    let mut file = OpenOptions::new().append(true).open(&conf).map_err(err)?;
    writeln!(
        file,
        "\n# Added by bigpeer: its own settings, rewritten at every start.\n{include}"
    )
    .map_err(err)
}

/// Character classification for the cluster: `C.UTF-8` where the system has it, so that
/// `lower()`, `upper()` and `ILIKE` handle non-ASCII letters; sorting stays bytewise (`C`).
fn ctype_locale() -> &'static str {
    let listed = Command::new("locale")
        .arg("-a")
        .env("LC_ALL", "C")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    let has_c_utf8 = listed
        .lines()
        .any(|l| l.eq_ignore_ascii_case("c.utf8") || l.eq_ignore_ascii_case("c.utf-8"));
    if has_c_utf8 {
        "C.UTF-8"
    } else {
        "C"
    }
}

/// Creates `dir` with `mode`, owned by the user that runs Postgres.
fn prepare_dir(dir: &Path, mode: u32, run_as: Option<&RunAs>) -> Result<(), PgError> {
    let err = |source| PgError::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(err)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(err)?;
    chown(dir, run_as)
}

fn chown(path: &Path, run_as: Option<&RunAs>) -> Result<(), PgError> {
    if let Some(user) = run_as {
        std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw())).map_err(
            |source| PgError::DataDir {
                path: path.to_path_buf(),
                source,
            },
        )?;
    }
    Ok(())
}

/// Socket and socket lock files left by a server that did not stop cleanly.
fn remove_stale_sockets(socket_dir: &Path) -> Result<(), PgError> {
    let entries = fs::read_dir(socket_dir).map_err(|source| PgError::DataDir {
        path: socket_dir.to_path_buf(),
        source,
    })?;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(".s.PGSQL.") {
            let path = entry.path();
            fs::remove_file(&path).map_err(|source| PgError::DataDir { path, source })?;
        }
    }
    Ok(())
}

fn prepare_log(log: &Path, run_as: Option<&RunAs>) -> Result<(), PgError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|source| PgError::DataDir {
            path: log.to_path_buf(),
            source,
        })?;
    chown(log, run_as)
}

/// Settings that must follow the data folder (it may have moved since the last start).
fn write_settings(
    cluster: &Path,
    socket_dir: &Path,
    run_as: Option<&RunAs>,
) -> Result<(), PgError> {
    let quoted = socket_dir.to_string_lossy().replace('\'', "''");
    let text = format!(
        "# Written by bigpeer at every start; put your own settings in postgresql.conf.\n\
         listen_addresses = ''\n\
         unix_socket_directories = '{quoted}'\n\
         unix_socket_permissions = 0700\n\
         port = {PORT}\n"
    );
    let path = cluster.join(SETTINGS_FILE);
    fs::write(&path, text).map_err(|source| PgError::DataDir {
        path: path.clone(),
        source,
    })?;
    chown(&path, run_as)
}

/// We hold the data folder's lock, so a `postmaster.pid` is left over from a crashed run: either
/// its server still runs (bigpeer was killed) and is stopped, or it is stale and removed.
fn stop_leftover(pg: &EmbeddedPostgres) -> Result<(), PgError> {
    let pid_file = pg.cluster.join("postmaster.pid");
    let Ok(text) = fs::read_to_string(&pid_file) else {
        return Ok(());
    };
    let pid: Option<i32> = text.lines().next().and_then(|l| l.trim().parse().ok());
    match pid {
        Some(pid) if pid > 0 && is_postgres_process(pid) => {
            tracing::warn!(
                pid,
                "a Postgres server from an earlier run still runs; stopping it"
            );
            let secs = pg.timeout.as_secs().max(1).to_string();
            let out = pg.pg_ctl(&["stop", "-m", "fast", "-w", "-t", &secs])?;
            if !out.status.success() {
                return Err(PgError::Leftover {
                    pid,
                    output: output_text(&out),
                });
            }
            Ok(())
        }
        _ => {
            tracing::warn!(file = %pid_file.display(), "removing a stale postmaster.pid");
            fs::remove_file(&pid_file).map_err(|source| PgError::DataDir {
                path: pid_file,
                source,
            })
        }
    }
}

/// Whether `pid` is alive and (where `/proc` tells) a Postgres process, not a process that reused
/// the number.
fn is_postgres_process(pid: i32) -> bool {
    let alive = match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(errno) => errno == nix::errno::Errno::EPERM,
    };
    if !alive {
        return false;
    }
    if Path::new("/proc/self").exists() {
        match fs::read_to_string(format!("/proc/{pid}/comm")) {
            Ok(comm) => comm.trim().starts_with("postgres"),
            Err(_) => false,
        }
    } else {
        true
    }
}

fn ensure_database(pg: &EmbeddedPostgres) -> Result<(), PgError> {
    let marker = pg.cluster.join(DATABASE_MARKER);
    if marker.exists() {
        return Ok(());
    }
    let createdb = pg.bins.createdb();
    let program = if createdb.is_file() {
        createdb
    } else {
        PathBuf::from("createdb")
    };
    let args: Vec<OsString> = vec![
        "-h".into(),
        pg.socket_dir.as_os_str().into(),
        "-p".into(),
        PORT.to_string().into(),
        "-U".into(),
        DB_USER.into(),
        "-E".into(),
        "UTF8".into(),
        DB_NAME.into(),
    ];
    let out = run(&program, &args, None, &pg.cluster)?;
    if !out.status.success() {
        let text = output_text(&out);
        if !text.contains("already exists") {
            return Err(PgError::CreateDatabase { output: text });
        }
    }
    tracing::info!(database = DB_NAME, "created the database");
    fs::write(&marker, "the bigpeer database exists\n").map_err(|source| PgError::DataDir {
        path: marker.clone(),
        source,
    })?;
    chown(&marker, pg.run_as.as_ref())
}

/// Runs a Postgres program, as `run_as` when given, with a clean, predictable environment.
fn run(
    program: &Path,
    args: &[OsString],
    run_as: Option<&RunAs>,
    cwd: &Path,
) -> Result<Output, PgError> {
    let mut cmd = Command::new(program);
    cmd.args(args).env("LC_ALL", "C").env("LANG", "C");
    for var in [
        "PGDATA",
        "PGHOST",
        "PGHOSTADDR",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGOPTIONS",
        "PGSERVICE",
        "PGPASSWORD",
        "PGPASSFILE",
    ] {
        cmd.env_remove(var);
    }
    if let Some(user) = run_as {
        cmd.uid(user.uid.as_raw())
            .gid(user.gid.as_raw())
            .env("USER", &user.name)
            .env("LOGNAME", &user.name)
            .env("HOME", &user.home);
    }
    // A folder the program may enter (initdb and pg_ctl complain when they cannot).
    if cwd.is_dir() {
        cmd.current_dir(cwd);
    }
    cmd.output().map_err(|source| PgError::Spawn {
        program: program.to_path_buf(),
        source,
    })
}

/// stderr and stdout of a finished program, trimmed to the last lines.
fn output_text(out: &Output) -> String {
    let mut text = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.trim().is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(stdout.trim());
    }
    if text.is_empty() {
        text = format!("exited with {}", out.status);
    }
    last_lines(&text, 20)
}

fn log_tail(log: &Path, n: usize) -> String {
    fs::read_to_string(log)
        .map(|t| last_lines(t.trim(), n))
        .unwrap_or_default()
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Percent-encodes everything but unreserved characters (for the socket path in the URL).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_socket_paths_for_urls() {
        assert_eq!(percent_encode("/tmp/a b/run"), "%2Ftmp%2Fa%20b%2Frun");
        assert_eq!(percent_encode("x-y_z.~"), "x-y_z.~");
    }

    #[test]
    fn keeps_the_last_lines() {
        assert_eq!(last_lines("a\nb\nc", 2), "b\nc");
        assert_eq!(last_lines("a", 5), "a");
    }

    #[test]
    fn a_second_process_cannot_take_the_data_folder() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let first = lock_data_dir(tmp.path()).expect("first lock");
        let err = lock_data_dir(tmp.path()).expect_err("second lock must fail");
        assert_eq!(err.code(), "pg/data-dir-in-use");
        drop(first);
        lock_data_dir(tmp.path()).expect("free again once the first holder is gone");
    }

    #[test]
    fn dead_pids_are_not_postgres() {
        // Pid numbers are bounded by pid_max (at most 2^22 on Linux).
        assert!(!is_postgres_process(i32::MAX - 1));
        assert!(!is_postgres_process(std::process::id() as i32));
    }
}
