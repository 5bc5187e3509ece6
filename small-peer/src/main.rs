//! `smallpeer`: a small peer on the command line.
//!
//! ```text
//! smallpeer --data DIR [--connect URL] [--token T] exec "<DQL>" [--args JSON] [--subscribe "<SELECT>"]... [--timeout SECS]
//! smallpeer --data DIR --connect URL [--token T] watch "<SELECT>" [--args JSON]
//! smallpeer --data DIR --connect URL [--token T] sync --subscribe "<SELECT>"...
//! ```
//!
//! `exec` prints `{"items": [...], "mutatedDocumentIds": [...]}` on stdout. With `--connect` it
//! syncs until the big peer holds every local change and every subscription has caught up; a
//! `SELECT` then runs after the sync (it shows what the big peer has), any other statement runs
//! before it (its changes are what is pushed). `watch` prints `{"items": [...]}` at start and
//! whenever the result changes. `status` prints the local changes not pushed yet and those the
//! big peer refused, with the reason. Sync events (`connected`, `disconnected`, `caught-up`,
//! `denied`, ...) go to stderr as JSON lines. Errors are printed on stderr as `{"code": ...,
//! "message": ...}`; the exit code is 2 for a bad statement, bad arguments or bad usage (URL, CA
//! file, missing `--connect`), 1 for a storage or sync failure (unreachable big peer, refused
//! token, untrusted certificate, a local change of this run refused by the big peer, timeout).
//! A refused token and an untrusted certificate end every command at once.

/// mimalloc instead of the system allocator: with glibc's, a sync peer spent about a quarter
/// of its time in malloc and free (see BENCHMARKS.md, Sync).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bigpeer_dql::plan::Plan;
use bigpeer_schema::Value;
use clap::{Parser, Subcommand};
use smallpeer::sync::{SubscriptionPhase, SyncStatus};
use smallpeer::{
    OutboxEntry, PeerError, QueryResult, Store, SyncClient, SyncConfig, SyncFailure, SyncHandle,
};

#[derive(Debug, Parser)]
#[command(
    name = "smallpeer",
    version,
    about = "A bigpeer small peer: local DQL over an embedded store, synced with a big peer"
)]
struct Cli {
    /// Directory holding the peer's database (created when missing).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// The big peer to sync with: its base URL, ws://HOST:PORT or wss://HOST:PORT (the path
    /// /api/v4/sync is added).
    #[arg(long, value_name = "URL", global = true)]
    connect: Option<String>,
    /// Credentials for the big peer (an API key or a token of its auth webhook).
    #[arg(long, value_name = "T", global = true, env = "SMALLPEER_TOKEN")]
    token: Option<String>,
    /// A PEM file of certificates to trust for wss:// (beside the bundled web PKI roots): a
    /// private CA's, or the big peer's own self-signed certificate, which is then pinned (no CA
    /// flag or host name checks).
    #[arg(long, value_name = "PEM", global = true, env = "SMALLPEER_CA_CERT")]
    ca_cert: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs one DQL statement on the local store and prints its result as JSON. With --connect,
    /// syncs until the big peer holds the local changes and the subscriptions have caught up: a
    /// SELECT runs after the sync, other statements before it. Exits 1 when the big peer refuses
    /// a change of this run.
    Exec {
        /// The DQL statement.
        statement: String,
        /// The statement's arguments as a JSON object.
        #[arg(long, value_name = "JSON")]
        args: Option<String>,
        /// A DQL SELECT to sync (repeatable); remembered in the store for later runs.
        #[arg(long, value_name = "SELECT")]
        subscribe: Vec<String>,
        /// With --connect: how long to try to sync, in seconds.
        #[arg(long, value_name = "SECS", default_value_t = 30)]
        timeout: u64,
    },
    /// Subscribes to a query and prints its result as one JSON line at start and each time it
    /// changes, until SIGINT or SIGTERM.
    Watch {
        /// The DQL SELECT statement.
        statement: String,
        /// The statement's arguments as a JSON object.
        #[arg(long, value_name = "JSON")]
        args: Option<String>,
    },
    /// Prints, as JSON, the local changes not pushed yet ("pending"), the ones the big peer
    /// refused with its reason ("refused"), and the remembered subscriptions.
    Status,
    /// Syncs with the big peer given by --connect until SIGINT or SIGTERM.
    Sync {
        /// A DQL SELECT saying which documents to sync (repeatable); remembered in the store
        /// for later runs.
        #[arg(long, value_name = "SELECT")]
        subscribe: Vec<String>,
    },
}

/// An error as the CLI reports it.
struct Failure {
    code: String,
    message: String,
    exit: u8,
}

impl From<PeerError> for Failure {
    fn from(e: PeerError) -> Failure {
        let message = match &e {
            PeerError::Dql(d) => d.message.clone(),
            other => other.to_string(),
        };
        let usage = matches!(e.code(), "sync/invalid-url" | "sync/invalid-ca");
        Failure {
            code: e.code().to_owned(),
            exit: if e.is_user_error() || usage { 2 } else { 1 },
            message,
        }
    }
}

impl From<SyncFailure> for Failure {
    fn from(f: SyncFailure) -> Failure {
        Failure::from(PeerError::Sync(f))
    }
}

fn usage(message: &str) -> Failure {
    Failure {
        code: "cli/usage".to_owned(),
        message: message.to_owned(),
        exit: 2,
    }
}

fn parse_args(args: Option<&str>) -> Result<BTreeMap<String, Value>, Failure> {
    let args = match args {
        None => serde_json::Value::Null,
        Some(text) => serde_json::from_str(text).map_err(|e| {
            Failure::from(PeerError::Args(format!("--args is not valid JSON: {e}")))
        })?,
    };
    Ok(smallpeer::args_from_json(&args)?)
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::from(PeerError::Io(e)))
}

/// The sync settings for this run: every subscription the store remembers.
fn sync_config(
    url: &str,
    token: Option<&str>,
    ca_cert: Option<&Path>,
    store: &Store,
) -> Result<SyncConfig, Failure> {
    let mut config = SyncConfig::new(url, token.unwrap_or_default());
    if let Some(path) = ca_cert {
        config = config.ca_cert_file(path)?;
    }
    for (query, args) in store.remembered_subscriptions()? {
        config
            .subscriptions
            .push(smallpeer::sync::Subscription { query, args });
    }
    Ok(config)
}

fn print_line(v: &serde_json::Value) -> bool {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{v}").and_then(|()| out.flush()).is_ok()
}

fn event(v: serde_json::Value) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{v}");
}

/// Prints sync events on stderr as the status changes.
#[derive(Default)]
struct Events {
    last: SyncStatus,
}

impl Events {
    fn update(&mut self, now: &SyncStatus) {
        let before = &self.last;
        if now.connected && !before.connected {
            event(
                serde_json::json!({"event": "connected", "session": now.session, "user": now.user}),
            );
        }
        if now.last_error != before.last_error {
            if let Some(e) = &now.last_error {
                let name = if before.connected && !now.connected {
                    "disconnected"
                } else {
                    "error"
                };
                event(serde_json::json!({"event": name, "code": e.code, "message": e.message}));
            }
        }
        for s in &now.subscriptions {
            let old = before
                .subscriptions
                .iter()
                .find(|o| o.subscription == s.subscription)
                .map(|o| &o.phase);
            if old == Some(&s.phase) {
                continue;
            }
            match &s.phase {
                SubscriptionPhase::CaughtUp => event(
                    serde_json::json!({"event": "caught-up", "subscription": s.subscription.query}),
                ),
                SubscriptionPhase::Failed(f) => event(serde_json::json!({
                    "event": "subscription-failed", "subscription": s.subscription.query,
                    "code": f.code, "message": f.message,
                })),
                SubscriptionPhase::Pending | SubscriptionPhase::Active => {}
            }
        }
        for d in &now.denied {
            if !before.denied.contains(d) {
                event(serde_json::json!({
                    "event": "denied", "collection": d.collection, "id": d.id.value(), "code": d.code,
                }));
            }
        }
        self.last = now.clone();
    }
}

/// Resolves at SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs the client until a signal (`Ok`) or an error that ends it.
async fn sync_until_stopped(handle: SyncHandle) -> Result<(), Failure> {
    let mut status = handle.watch_status();
    let mut events = Events::default();
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            () = &mut signal => {
                handle.stop().await;
                return Ok(());
            }
            changed = status.changed() => {
                if changed.is_err() {
                    return Err(SyncFailure::new("sync/stopped", "the sync client has stopped").into());
                }
                let now = status.borrow_and_update().clone();
                events.update(&now);
                if let Some(f) = &now.finished {
                    return Err(f.clone().into());
                }
            }
        }
    }
}

/// `(collection, id, change number)` of the outbox's entries that the big peer has not
/// refused (yet): the changes a sync may still refuse.
fn unrefused(store: &Store) -> Result<BTreeSet<(String, String, i64)>, Failure> {
    Ok(store
        .outbox()?
        .into_iter()
        .filter(|e| e.denied.is_none())
        .map(|e| (e.collection, e.id.value().to_json_string(), e.change))
        .collect())
}

fn exec(
    cli: &Cli,
    statement: &str,
    args: Option<&str>,
    subscribe: &[String],
    timeout: u64,
) -> Result<(), Failure> {
    let args = parse_args(args)?;
    let mut store = Store::open_dir(&cli.data)?;
    for q in subscribe {
        store.check_select(q, &BTreeMap::new())?;
    }
    let plan = store.plan(statement, &args)?;
    // With --connect, a SELECT runs after the sync, so that it shows what the big peer has;
    // any other statement runs (and prints) at once, and its changes are then pushed.
    let read_after_sync = cli.connect.is_some() && matches!(plan, Plan::Select(_));
    let print = |r: &QueryResult| {
        print_line(&serde_json::json!({
            "items": r.items,
            "mutatedDocumentIds": r.mutated_ids,
        }))
    };
    if !read_after_sync {
        let r = store.run(&plan)?;
        print(&r);
    }
    for q in subscribe {
        store.remember_subscription(q, &Value::Null)?;
    }
    let Some(url) = &cli.connect else {
        return Ok(());
    };
    let config = sync_config(url, cli.token.as_deref(), cli.ca_cert.as_deref(), &store)?;
    // The changes this sync may refuse: every local change not refused already (this
    // statement's included). The refusals are read from the store after the sync, where they are
    // recorded before the push counts as done, so the exit status never misses one.
    let open = unrefused(&store)?;
    let url = config.url.clone();
    let store = Arc::new(Mutex::new(store));
    let shared = store.clone();
    runtime()?.block_on(async move {
        let handle = SyncClient::start(shared, config)?;
        let limit = Duration::from_secs(timeout);
        let outcome = tokio::time::timeout(limit, handle.wait_until_synced()).await;
        let status = handle.status();
        handle.stop().await;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Failure::from(e)),
            Err(_) => {
                let why = status
                    .last_error
                    .map(|e| format!(": {}", e.message))
                    .unwrap_or_default();
                Err(if status.stats.sessions == 0 {
                    Failure {
                        code: "sync/unreachable".into(),
                        message: format!("could not sync with {url} within {timeout} s{why}"),
                        exit: 1,
                    }
                } else {
                    Failure {
                        code: "sync/timeout".into(),
                        message: format!("not synced with {url} within {timeout} s{why}"),
                        exit: 1,
                    }
                })
            }
        }
    })?;
    let mut store = store
        .lock()
        .map_err(|_| Failure::from(PeerError::Corrupt("the store lock is poisoned".into())))?;
    let refused: Vec<OutboxEntry> = store
        .outbox()?
        .into_iter()
        .filter(|e| {
            e.denied.is_some()
                && open.contains(&(
                    e.collection.clone(),
                    e.id.value().to_json_string(),
                    e.change,
                ))
        })
        .collect();
    if read_after_sync {
        let r = store.run(&plan)?;
        print(&r);
    }
    if let Some(first) = refused.first() {
        let docs: Vec<String> = refused
            .iter()
            .map(|d| format!("{}/{}", d.collection, d.id))
            .collect();
        return Err(Failure {
            code: first.denied.clone().unwrap_or_default(),
            message: format!(
                "the big peer refused local changes (kept locally; `smallpeer status` lists them): {}",
                docs.join(", ")
            ),
            exit: 1,
        });
    }
    Ok(())
}

/// Prints what the store holds for the big peer: the local changes not pushed yet, the ones the
/// big peer refused (with its reason), and the remembered subscriptions.
fn status(cli: &Cli) -> Result<(), Failure> {
    let store = Store::open_dir(&cli.data)?;
    let mut pending = Vec::new();
    let mut refused = Vec::new();
    for e in store.outbox()? {
        let id = e.id.value().to_json();
        match e.denied {
            None => pending.push(serde_json::json!({"collection": e.collection, "id": id})),
            Some(code) => refused.push(serde_json::json!({
                "collection": e.collection, "id": id, "code": code,
                "message": refusal_message(&code),
            })),
        }
    }
    let subscriptions: Vec<serde_json::Value> = store
        .remembered_subscriptions()?
        .into_iter()
        .map(|(query, args)| serde_json::json!({"query": query, "args": args.to_json()}))
        .collect();
    print_line(&serde_json::json!({
        "site": store.site().to_string(),
        "pending": pending,
        "refused": refused,
        "subscriptions": subscriptions,
    }));
    Ok(())
}

/// What a refusal code means, for `smallpeer status`.
fn refusal_message(code: &str) -> String {
    match code {
        "auth/forbidden" => "the token may not write this document (its write permission); \
                             the change stays here and is pushed again when the document is \
                             written again"
            .to_owned(),
        other => format!(
            "the big peer refused the change ({other}); it stays here and is pushed again when \
             the document is written again"
        ),
    }
}

fn watch(cli: &Cli, statement: &str, args: Option<&str>) -> Result<(), Failure> {
    let url = cli
        .connect
        .as_deref()
        .ok_or_else(|| usage("watch needs --connect URL"))?;
    let args = parse_args(args)?;
    let mut store = Store::open_dir(&cli.data)?;
    let mut observer = store.observe(statement, &args)?;
    let sub_args = Value::Object(args);
    store.remember_subscription(statement, &sub_args)?;
    let config = sync_config(url, cli.token.as_deref(), cli.ca_cert.as_deref(), &store)?;
    let own_key = smallpeer::subscription_key(statement, &sub_args);
    let store = Arc::new(Mutex::new(store));
    runtime()?.block_on(async move {
        let handle = SyncClient::start(store, config)?;
        let mut status = handle.watch_status();
        let mut events = Events::default();
        let signal = shutdown_signal();
        tokio::pin!(signal);
        loop {
            tokio::select! {
                () = &mut signal => break,
                snap = observer.next() => match snap {
                    Some(Ok(items)) => {
                        if !print_line(&serde_json::json!({"items": *items})) {
                            break; // stdout is gone
                        }
                    }
                    Some(Err(e)) => event(serde_json::json!({"event": "query-error", "code": e.code, "message": e.message})),
                    None => break,
                },
                changed = status.changed() => {
                    if changed.is_err() {
                        return Err(SyncFailure::new("sync/stopped", "the sync client has stopped").into());
                    }
                    let now = status.borrow_and_update().clone();
                    events.update(&now);
                    if let Some(f) = now.finished {
                        return Err(f.into());
                    }
                    let failed = now.subscriptions.iter().find_map(|s| match &s.phase {
                        SubscriptionPhase::Failed(f) if s.subscription.key() == own_key => Some(f.clone()),
                        _ => None,
                    });
                    if let Some(f) = failed {
                        handle.stop().await;
                        return Err(f.into());
                    }
                }
            }
        }
        handle.stop().await;
        Ok(())
    })
}

fn sync(cli: &Cli, subscribe: &[String]) -> Result<(), Failure> {
    let url = cli
        .connect
        .as_deref()
        .ok_or_else(|| usage("sync needs --connect URL"))?;
    let mut store = Store::open_dir(&cli.data)?;
    for q in subscribe {
        // Checked here, so that a typo is reported before anything is remembered.
        store.check_select(q, &BTreeMap::new())?;
    }
    for q in subscribe {
        store.remember_subscription(q, &Value::Null)?;
    }
    let config = sync_config(url, cli.token.as_deref(), cli.ca_cert.as_deref(), &store)?;
    let store = Arc::new(Mutex::new(store));
    runtime()?.block_on(async move {
        let handle = SyncClient::start(store, config)?;
        sync_until_stopped(handle).await
    })
}

fn run(cli: &Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Exec {
            statement,
            args,
            subscribe,
            timeout,
        } => exec(cli, statement, args.as_deref(), subscribe, *timeout),
        Command::Watch { statement, args } => watch(cli, statement, args.as_deref()),
        Command::Sync { subscribe } => sync(cli, subscribe),
        Command::Status => status(cli),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!(
                "{}",
                serde_json::json!({"code": f.code, "message": f.message})
            );
            ExitCode::from(f.exit)
        }
    }
}
