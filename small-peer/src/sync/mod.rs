//! The sync client: keeps a [`Store`] in step with a big peer over the sync protocol
//! (`docs/sync-protocol.md`, WebSocket subprotocol `bigpeer-sync.1`).
//!
//! [`SyncClient::start`] spawns one task on the current tokio runtime that connects, says
//! `Hello` with the token, subscribes with each subscription's durable cursor, applies the big
//! peer's batches (each in one SQLite transaction, together with the batch's cursor, and only
//! then acknowledges it), pushes the store's outbox (local writes, made online or offline) and
//! clears an entry only when the big peer acknowledges it, answers `Want`, pings, and reconnects
//! with jittered exponential backoff when the connection drops. The [`SyncHandle`] it returns
//! adds subscriptions, reports [`SyncStatus`], waits for the store to be pushed or caught up,
//! and stops the client.
//!
//! ```no_run
//! use std::sync::{Arc, Mutex};
//! use smallpeer::sync::{SyncClient, SyncConfig};
//! use smallpeer::Store;
//!
//! # async fn run() -> smallpeer::Result<()> {
//! let store = Arc::new(Mutex::new(Store::open_dir("./peer")?));
//! let config = SyncConfig::new("wss://bigpeer.example:8080", "bpk_...")
//!     .subscribe("SELECT * FROM cars WHERE color = :c", serde_json::json!({"c": "blue"}))?;
//! let sync = SyncClient::start(store.clone(), config)?;
//! // Local writes are pushed as soon as they commit (or when the connection comes back).
//! store
//!     .lock()
//!     .expect("store")
//!     .execute_json("INSERT INTO cars DOCUMENTS (:c)", &serde_json::json!({"c": {"_id": "a", "color": "blue"}}))?;
//! sync.wait_until_pushed().await?; // the big peer holds it
//! sync.wait_until_caught_up().await?; // every subscription's initial sync is in the store
//! println!("{:?}", sync.status().stats);
//! sync.stop().await;
//! # Ok(())
//! # }
//! ```
//!
//! Observers ([`Store::observe`]) fire when batches from the big peer change their results.
//!
//! **TLS.** `wss://` trusts the bundled web PKI roots and the certificates of
//! [`SyncConfig::ca_pem`] (or [`SyncConfig::ca_cert_file`]). Each of those is trusted two ways:
//! as a CA (a server certificate it signed is checked as usual, host name included), and pinned:
//! a big peer presenting exactly that certificate is trusted without chain, CA-flag or host name
//! checks, which is what a self-signed certificate needs (such as the one of `openssl req -x509
//! -newkey rsa:2048 -keyout key.pem -out cert.pem -days 365 -nodes -subj /CN=localhost`, which is
//! marked `CA:TRUE` and names no subjectAltName). A pinned certificate must still be within its
//! validity dates, and the big peer must prove it holds its private key (the handshake
//! signatures are always verified).
//!
//! **Errors.** A session that breaks (network, the big peer restarting or saying `Bye`,
//! `sync/timeout`, `sync/slow-consumer`, `auth/webhook-failed`, a server or store error) is
//! retried after a backoff of `backoff_min` doubling up to `backoff_max`, each delay drawn at
//! random between half and all of it; a session that reached `Welcome` resets the backoff.
//! Errors that a retry cannot cure end the client: `auth/invalid-token` and `auth/expired` (start
//! a new client with a new token), `protocol/...` and `crdt/...` (the two sides do not
//! understand each other), `sync/refused` (the WebSocket upgrade was refused with a 4xx other than 429),
//! `sync/untrusted-certificate` (the TLS handshake refused the big peer's certificate: give it,
//! or its CA, with [`SyncConfig::ca_cert_file`]), `store/corrupt`. [`SyncStatus::finished`] then holds the error, and the waits return it.
//! Local writes go on meanwhile; they wait in the outbox.
//!
//! **What is durable.** A batch's changes and its cursor commit together, before the `Ack`; a
//! `SubState{caught up}` stores the subscription's cursor too. A change refused for a missing
//! base leaves the cursors where they were (a `Want` fetches it). An outbox entry is cleared only
//! by the `PushAck` (or a batch) showing that the big peer holds the document's local writes.
//! So a client killed at any point resumes without losing anything and without the big peer
//! sending again what was committed.

mod connect;
mod session;
mod tls;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bigpeer_schema::{DocId, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::error::{PeerError, Result, SyncFailure};
use crate::remote::normalize_args;
use crate::{subscription_key, Store};

/// A store shared between the application and the sync client.
pub type SharedStore = Arc<Mutex<Store>>;

/// A sync subscription: a DQL `SELECT` on one collection, and its arguments (an object). Only
/// its `WHERE` matters: whole documents are synced.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub query: String,
    pub args: Value,
}

impl Subscription {
    /// A subscription; `args` is an object or null (no arguments).
    pub fn new(query: impl Into<String>, args: Value) -> Result<Subscription> {
        Ok(Subscription {
            query: query.into(),
            args: normalize_args(&args)?,
        })
    }

    /// The key its durable cursor is stored under ([`subscription_key`]).
    pub fn key(&self) -> String {
        subscription_key(&self.query, &self.args)
    }
}

/// How to reach the big peer and what to sync.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// `ws://host:port` or `wss://host:port` (the client adds the path `/api/v4/sync`; a path
    /// given is kept as a prefix, for a reverse proxy).
    pub url: String,
    /// The token sent in `Hello`: an API key, or a token of the big peer's auth webhook.
    pub token: String,
    pub subscriptions: Vec<Subscription>,
    /// Extra trusted certificates (PEM) for `wss://`, beside the bundled web PKI roots: a
    /// private CA's, or the big peer's own certificate, which is then pinned (for a self-signed
    /// one; see the module's TLS notes).
    pub ca_pem: Option<String>,
    /// Time allowed for the TCP + TLS + WebSocket handshake, and then for `Welcome`.
    pub connect_timeout: Duration,
    /// The first reconnection delay; it doubles after each failed attempt.
    pub backoff_min: Duration,
    /// The longest reconnection delay.
    pub backoff_max: Duration,
    /// How often the outbox is looked at for writes made through another handle or process
    /// (writes through the shared store are pushed at once).
    pub outbox_poll: Duration,
    /// Most documents sent in one `Push`.
    pub push_max_changes: usize,
}

impl SyncConfig {
    /// Settings with the defaults: 10 s to connect, backoff from 250 ms to 10 s, the outbox
    /// looked at every second, pushes of up to 500 documents.
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> SyncConfig {
        SyncConfig {
            url: url.into(),
            token: token.into(),
            subscriptions: Vec::new(),
            ca_pem: None,
            connect_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(10),
            outbox_poll: Duration::from_secs(1),
            push_max_changes: 500,
        }
    }

    /// Adds a subscription (arguments as JSON: an object or null).
    pub fn subscribe(
        mut self,
        query: impl Into<String>,
        args: serde_json::Value,
    ) -> Result<SyncConfig> {
        self.subscriptions
            .push(Subscription::new(query, Value::from_json(args))?);
        Ok(self)
    }

    /// Trusts the certificates of a PEM file (beside the bundled roots): as CAs, and pinned
    /// (see [`SyncConfig::ca_pem`]).
    pub fn ca_cert_file(mut self, path: impl AsRef<std::path::Path>) -> Result<SyncConfig> {
        let path = path.as_ref();
        let pem = std::fs::read_to_string(path).map_err(|e| {
            SyncFailure::new(
                "sync/invalid-ca",
                format!("cannot read CA certificate {}: {e}", path.display()),
            )
        })?;
        self.ca_pem = Some(pem);
        Ok(self)
    }
}

/// Where a subscription stands in the current session.
#[derive(Debug, Clone, PartialEq)]
pub enum SubscriptionPhase {
    /// Not sent yet (not connected).
    Pending,
    /// Accepted; its initial (or resumed) sync is running.
    Active,
    /// Its initial sync is in the store; live changes follow.
    CaughtUp,
    /// Refused by the big peer (`query/invalid`, `query/unsupported`, `auth/forbidden`, ...).
    Failed(SyncFailure),
}

/// A subscription and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionState {
    pub subscription: Subscription,
    pub phase: SubscriptionPhase,
}

/// A local change the big peer refused to take (no write permission). It stays in the store
/// and in its outbox (marked denied) and is not pushed again until the document is written
/// again.
#[derive(Debug, Clone, PartialEq)]
pub struct Denial {
    pub collection: String,
    pub id: DocId,
    pub code: String,
}

/// Counters since the client started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Sessions opened (`Welcome` received).
    pub sessions: u64,
    /// Batches received and applied.
    pub batches: u64,
    /// Document changes received in batches.
    pub changes_received: u64,
    /// Of those, the ones that changed the store.
    pub changes_applied: u64,
    /// `Push` messages sent, and document changes in them.
    pub pushes: u64,
    pub changes_pushed: u64,
    /// `Want` messages sent (a delta whose base this store lacks).
    pub wants_sent: u64,
}

/// What the client is doing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncStatus {
    /// A session is open (`Welcome` received).
    pub connected: bool,
    /// The big peer's session id and the user it authenticated.
    pub session: Option<String>,
    pub user: Option<String>,
    /// What the big peer's authentication webhook said about this client (`clientInfo`), in the
    /// current session.
    pub client_info: Option<serde_json::Value>,
    pub subscriptions: Vec<SubscriptionState>,
    /// The last error (a failed connection attempt, a broken session, a non-fatal error).
    pub last_error: Option<SyncFailure>,
    /// Set when the client has ended: `sync/stopped` after [`SyncHandle::stop`], else the error
    /// that ended it.
    pub finished: Option<SyncFailure>,
    /// Local changes the big peer denied, the latest per document.
    pub denied: Vec<Denial>,
    pub stats: SyncStats,
}

impl SyncStatus {
    /// Every subscription has caught up in the current session (vacuously true without
    /// subscriptions, once connected); the first failed one is an error.
    fn caught_up(&self) -> std::result::Result<bool, SyncFailure> {
        for s in &self.subscriptions {
            if let SubscriptionPhase::Failed(f) = &s.phase {
                return Err(SyncFailure::new(
                    &f.code,
                    format!(
                        "subscription {:?} failed: {}",
                        s.subscription.query, f.message
                    ),
                ));
            }
        }
        Ok(self.connected
            && self
                .subscriptions
                .iter()
                .all(|s| s.phase == SubscriptionPhase::CaughtUp))
    }
}

/// Lists a subscription in the status (as pending) unless it is there.
pub(crate) fn add_pending(status: &watch::Sender<SyncStatus>, s: &Subscription) {
    let key = s.key();
    status.send_if_modified(|st| {
        if st.subscriptions.iter().any(|x| x.subscription.key() == key) {
            return false;
        }
        st.subscriptions.push(SubscriptionState {
            subscription: s.clone(),
            phase: SubscriptionPhase::Pending,
        });
        true
    });
}

pub(crate) enum Command {
    Subscribe(Subscription),
    Unsubscribe(String),
    Stop,
}

/// Starts sync clients.
pub struct SyncClient;

impl SyncClient {
    /// Checks the settings (URL, CA certificates, subscription arguments) and starts the client
    /// on the current tokio runtime. It runs until [`SyncHandle::stop`], until the handle is
    /// dropped, or until an error a retry cannot cure.
    pub fn start(store: SharedStore, config: SyncConfig) -> Result<SyncHandle> {
        let target = connect::Target::parse(&config.url, config.ca_pem.as_deref())?;
        let mut subs: Vec<Subscription> = Vec::new();
        for s in &config.subscriptions {
            let s = Subscription::new(s.query.clone(), s.args.clone())?;
            if !subs.iter().any(|x| x.key() == s.key()) {
                subs.push(s);
            }
        }
        let local_writes = lock(&store).local_writes();
        let (status_tx, status_rx) = watch::channel(SyncStatus {
            subscriptions: subs
                .iter()
                .map(|s| SubscriptionState {
                    subscription: s.clone(),
                    phase: SubscriptionPhase::Pending,
                })
                .collect(),
            ..SyncStatus::default()
        });
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let status_tx = Arc::new(status_tx);
        let ctx = session::Ctx {
            store: store.clone(),
            config,
            target,
            status: status_tx.clone(),
            local_writes,
        };
        let task = tokio::spawn(session::drive(ctx, subs, cmd_rx));
        Ok(SyncHandle {
            cmd: cmd_tx,
            status: status_rx,
            status_tx,
            store,
            task: Some(task),
        })
    }
}

/// The running client. Dropping it stops the client (as [`SyncHandle::stop`], without waiting).
pub struct SyncHandle {
    cmd: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<SyncStatus>,
    /// Shared with the task, so that a new subscription is in the status (pending) before
    /// `subscribe` returns.
    status_tx: Arc<watch::Sender<SyncStatus>>,
    store: SharedStore,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SyncHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncHandle")
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

fn stopped() -> PeerError {
    PeerError::Sync(SyncFailure::new(
        "sync/stopped",
        "the sync client has stopped",
    ))
}

pub(crate) fn lock(store: &SharedStore) -> std::sync::MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SyncHandle {
    /// Adds a subscription: sent at once when connected, and on every reconnection.
    pub fn subscribe(&self, query: impl Into<String>, args: serde_json::Value) -> Result<()> {
        let s = Subscription::new(query, Value::from_json(args))?;
        if self.status.borrow().finished.is_some() {
            return Err(stopped());
        }
        add_pending(&self.status_tx, &s);
        self.cmd.send(Command::Subscribe(s)).map_err(|_| stopped())
    }

    /// Ends a subscription (its documents stay in the store; its cursor too, see
    /// [`Store::forget_subscription`]).
    pub fn unsubscribe(&self, query: &str, args: serde_json::Value) -> Result<()> {
        let s = Subscription::new(query, Value::from_json(args))?;
        let key = s.key();
        self.status_tx
            .send_modify(|st| st.subscriptions.retain(|x| x.subscription.key() != key));
        self.cmd
            .send(Command::Unsubscribe(key))
            .map_err(|_| stopped())
    }

    /// The client's state now.
    pub fn status(&self) -> SyncStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every change of the status.
    pub fn watch_status(&self) -> watch::Receiver<SyncStatus> {
        self.status.clone()
    }

    /// Waits until the big peer has acknowledged every local change in the store's outbox
    /// (denied ones aside: see [`SyncStatus::denied`]). Waits across reconnections; an error
    /// when the client ends first.
    pub async fn wait_until_pushed(&self) -> Result<()> {
        let mut rx = self.status.clone();
        loop {
            if let Some(f) = &rx.borrow_and_update().finished {
                return Err(PeerError::Sync(f.clone()));
            }
            let store = self.store.clone();
            let empty = tokio::task::spawn_blocking(move || {
                lock(&store).pending_push(1).map(|p| p.is_empty())
            })
            .await
            .map_err(|e| SyncFailure::new("internal", format!("store task failed: {e}")))??;
            if empty {
                return Ok(());
            }
            rx.changed().await.map_err(|_| stopped())?;
        }
    }

    /// Waits until the client is connected and every subscription has caught up in this
    /// session (its initial or resumed sync is in the store). An error when a subscription
    /// fails or the client ends first.
    pub async fn wait_until_caught_up(&self) -> Result<()> {
        let mut rx = self.status.clone();
        loop {
            {
                let s = rx.borrow_and_update();
                if let Some(f) = &s.finished {
                    return Err(PeerError::Sync(f.clone()));
                }
                if s.caught_up()? {
                    return Ok(());
                }
            }
            rx.changed().await.map_err(|_| stopped())?;
        }
    }

    /// [`SyncHandle::wait_until_caught_up`], then [`SyncHandle::wait_until_pushed`]: the store
    /// and the big peer agree on everything subscribed and written here.
    pub async fn wait_until_synced(&self) -> Result<()> {
        self.wait_until_caught_up().await?;
        self.wait_until_pushed().await
    }

    /// Waits until the client ends and returns why (`sync/stopped` after a stop).
    pub async fn finished(&self) -> SyncFailure {
        let mut rx = self.status.clone();
        loop {
            if let Some(f) = &rx.borrow_and_update().finished {
                return f.clone();
            }
            if rx.changed().await.is_err() {
                return SyncFailure::new("sync/stopped", "the sync client has stopped");
            }
        }
    }

    /// Says `Bye` to the big peer, closes the connection and waits for the client to end.
    pub async fn stop(mut self) {
        let _ = self.cmd.send(Command::Stop);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Ends the client at once, in the middle of whatever it does, as a crash would (without
    /// `Bye`; a batch being applied is committed whole or not at all). For tests.
    pub async fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for SyncHandle {
    fn drop(&mut self) {
        let _ = self.cmd.send(Command::Stop);
    }
}
