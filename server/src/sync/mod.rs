//! Peer sync: the WebSocket endpoint `GET /api/v4/sync` and the protocols spoken over it.
//!
//! The endpoint ([`ws`]) negotiates a subprotocol, turns the socket into a [`Link`] (a bounded
//! queue of inbound frames and a bounded queue of outbound frames) and hands it to the chosen
//! [`SyncProtocol`]. The native protocol, `bigpeer-sync.1` ([`native`]), is specified in
//! `docs/sync-protocol.md`. A protocol never sees actix: it can be driven by any transport (or
//! by a test) that fills a `Link`.
//!
//! Every session follows the process's single [`ChangeFeed`] and matches each change against its
//! subscriptions in memory; Postgres is read once per change, not once per peer.

mod checks;
pub mod native;
pub mod webhook;
mod ws;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use tokio::sync::{mpsc, watch, OnceCell};

use crate::auth::rate::RateLimits;
use crate::auth::KeyStore;
use crate::store::{ChangeFeed, FeedOptions, GroupCommit, GroupCommitOptions, Store, StoreError};

pub use ws::start;

pub use bigpeer_sync_core::Inbound;

/// A frame to send to the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    Binary(Vec<u8>),
    /// Close the connection with a WebSocket close code and reason; nothing is sent after it.
    Close {
        code: u16,
        reason: String,
    },
}

/// A session's connection to its peer: bounded queues both ways. A transport that cannot deliver
/// an outbound frame fast enough makes `outbound` fill up, which the protocol notices (a slow
/// peer slows or loses only its own session).
pub struct Link {
    pub inbound: mpsc::Receiver<Inbound>,
    pub outbound: mpsc::Sender<Outbound>,
}

/// A sync protocol: a subprotocol name and a session loop over a [`Link`].
pub trait SyncProtocol: Send + Sync {
    /// The WebSocket subprotocol (`Sec-WebSocket-Protocol`) this protocol answers to.
    fn subprotocol(&self) -> &'static str;

    /// Runs one session until it ends. Must not panic on any input.
    fn run(&self, hub: SyncHub, link: Link) -> LocalBoxFuture<'static, ()>;
}

/// The protocols this server speaks, in order of preference.
pub fn protocols() -> &'static [&'static dyn SyncProtocol] {
    &[&native::Native]
}

/// Bytes of a frame that are not a document's delta, at most (message head, collection name,
/// id, sequence number, cursor): a document must fit in `max_frame` minus this, so the
/// document size limit is capped there (see [`SyncHub::new`]).
pub const FRAME_SLACK: usize = bigpeer_sync_core::serve::FRAME_SLACK;

/// Sync settings.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Largest frame either side may send (announced in `Welcome`). The document size limit
    /// (5 MiB by default) is capped at this minus [`FRAME_SLACK`], so that every document fits
    /// in a frame, whole.
    pub max_frame: usize,
    /// Unacknowledged batches the server keeps in flight at first.
    pub window: u32,
    /// The liveness interval: pings after `heartbeat / 2` of silence, closes after `2 ×
    /// heartbeat` without anything received.
    pub heartbeat: Duration,
    /// Outbound frames queued per session before the session waits for its peer.
    pub send_queue: usize,
    /// Live changes held for a peer without credit before it is dropped as a slow consumer.
    pub max_pending: usize,
    /// Bytes of live changes (their stored size) held for a peer without credit before it is
    /// dropped as a slow consumer.
    pub max_pending_bytes: usize,
    /// Subscriptions one session may hold at once.
    pub max_subscriptions: usize,
    /// How far ahead of this server's clock a peer's stamps may be (`sync/clock-skew`).
    pub max_clock_skew: Duration,
    /// Accept any token with every permission (development only).
    pub playground: bool,
    /// Checks tokens that are not API keys (none: only API keys are accepted).
    pub webhook: Option<webhook::AuthWebhook>,
    /// The change feed's settings (its buffer is how far a session may fall behind before it
    /// re-reads the database).
    pub feed: FeedOptions,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            max_frame: 8 * 1024 * 1024,
            window: 8,
            heartbeat: Duration::from_secs(30),
            send_queue: 64,
            max_pending: 10_000,
            max_pending_bytes: 64 * 1024 * 1024,
            max_subscriptions: 256,
            max_clock_skew: Duration::from_secs(300),
            playground: false,
            webhook: None,
            feed: FeedOptions::default(),
        }
    }
}

/// What sync sessions share: the store, the change feed (started by the first session), API
/// keys, group commit and the settings. Cheap to clone.
#[derive(Clone)]
pub struct SyncHub {
    pub store: Store,
    pub keys: KeyStore,
    pub group: GroupCommit,
    pub options: SyncOptions,
    feed: Arc<OnceCell<ChangeFeed>>,
    /// Set once this process's site is recorded as a server's (`Store::claim_site`).
    server_site: Arc<OnceCell<()>>,
    closing: Arc<watch::Sender<bool>>,
    /// `DQL_STRICT_MODE` when a subscription is planned (see [`SyncHub::with_strict_mode`]).
    strict_mode: Arc<AtomicBool>,
    /// Changes not sent because they do not fit in a frame.
    oversized: Arc<AtomicU64>,
    /// The per-key rate limit applies to pushes (see [`SyncHub::with_limits`]).
    pub limits: RateLimits,
}

impl std::fmt::Debug for SyncHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncHub")
            .field("options", &self.options)
            .field("feed_started", &self.feed.initialized())
            .finish_non_exhaustive()
    }
}

impl SyncHub {
    /// A hub over `store`, with its own group-commit tasks for pushes (started on the current
    /// runtime). The change feed starts with the first session, so a server whose database is
    /// not migrated yet still starts. Caps the store's document size limit at what a frame
    /// holds.
    pub fn new(store: Store, options: SyncOptions) -> SyncHub {
        store.cap_document_size(options.max_frame.saturating_sub(FRAME_SLACK));
        let group = GroupCommit::start(
            store.clone(),
            &GroupCommitOptions {
                workers: 2,
                ..GroupCommitOptions::default()
            },
        );
        SyncHub {
            keys: KeyStore::new(store.clone()),
            store,
            group,
            options,
            feed: Arc::new(OnceCell::new()),
            server_site: Arc::new(OnceCell::new()),
            closing: Arc::new(watch::channel(false).0),
            strict_mode: Arc::new(AtomicBool::new(false)),
            oversized: Arc::new(AtomicU64::new(0)),
            limits: RateLimits::default(),
        }
    }

    /// Counts a change (or frame) not sent because it does not fit in `max_frame`.
    pub(crate) fn oversized_skipped(&self) {
        self.oversized.fetch_add(1, Ordering::Relaxed);
    }

    /// How many changes (or frames) sessions did not send because they do not fit in
    /// `max_frame` (`bigpeer_sync_oversized_changes_total`).
    pub fn oversized_changes(&self) -> u64 {
        self.oversized.load(Ordering::Relaxed)
    }

    /// Applies the HTTP API's rate limits (shared buckets) to sessions: a key's pushes count
    /// against its requests per second.
    pub fn with_limits(mut self, limits: RateLimits) -> SyncHub {
        self.limits = limits;
        self
    }

    /// Plans subscriptions with the DQL executor's `DQL_STRICT_MODE` (off when not shared): a
    /// subscription gets the documents the same SELECT returns. A subscription keeps the mode
    /// it was planned with.
    pub fn with_strict_mode(mut self, strict_mode: Arc<AtomicBool>) -> SyncHub {
        self.strict_mode = strict_mode;
        self
    }

    /// Uses `keys` (and so its cache) for peers' API keys: share the HTTP API's key store, so
    /// that a revocation through the admin API reaches sync sessions at once.
    pub fn with_keys(mut self, keys: KeyStore) -> SyncHub {
        self.keys = keys;
        self
    }

    /// Ends every session (`Bye` and a close): the server is shutting down.
    pub fn close_sessions(&self) {
        self.closing.send_replace(true);
    }

    /// Tells a session when the server shuts down.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Records this process's site as a server's before any peer learns it (from `Welcome`),
    /// so that no peer can claim it afterwards. Once per process.
    pub async fn register_server_site(&self) -> Result<(), StoreError> {
        self.server_site
            .get_or_try_init(|| async {
                let site = self.store.site();
                let owner = self
                    .store
                    .claim_site(site, crate::store::SERVER_SITE_OWNER)
                    .await?;
                if owner != crate::store::SERVER_SITE_OWNER {
                    tracing::error!(%site, %owner, "this server's random site id was claimed by a peer before");
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// The process's change feed, started on first use.
    pub async fn feed(&self) -> Result<&ChangeFeed, StoreError> {
        self.feed
            .get_or_try_init(|| ChangeFeed::start(self.store.clone(), self.options.feed.clone()))
            .await
    }
}

#[cfg(test)]
mod tests;
