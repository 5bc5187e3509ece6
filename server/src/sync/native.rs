//! The native sync protocol, `bigpeer-sync.1` (`docs/sync-protocol.md`): the shell around the
//! serving state machine of `bigpeer_sync_core::serve`.
//!
//! One task per session runs [`Shell::run`]: it reads the peer's frames, the process's change
//! feed, key revocations, shutdown and the session's timer, hands each to the
//! [`ServerSession`], answers its requests (authentication, pushes through the service layer,
//! pages of initial syncs, documents asked for) and sends the frames it produces. Every protocol
//! decision (messages, credit, batches, cursors, errors, close codes) is the core's.

use std::sync::Arc;
use std::time::Duration;

use bigpeer_schema::wire;
use bigpeer_schema::{DocId, SiteId, Value};
use bigpeer_sync_core::serve::{self, Note, Opened, Request, ServerSession};
use bigpeer_sync_core::{known::LiveDoc, Millis, Stop, CLOSE_INTERNAL, CLOSE_NORMAL};
use bigpeer_sync_core::{CLOSE_POLICY, CLOSE_PROTOCOL};
use futures_util::future::LocalBoxFuture;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use super::checks::SessionPolicy;
use super::{Inbound, Link, Outbound, SyncHub, SyncProtocol};
use crate::auth::{now_secs, Permissions, Revoked};
use crate::service::Access;
use crate::store::{corrupt_row, Kind, StoreError, StoredDoc};

mod throttle;

/// `bigpeer-sync.1`.
pub struct Native;

impl SyncProtocol for Native {
    fn subprotocol(&self) -> &'static str {
        wire::SUBPROTOCOL
    }

    fn run(&self, hub: SyncHub, link: Link) -> LocalBoxFuture<'static, ()> {
        Box::pin(Shell::new(hub, link).run())
    }
}

/// Feed changes taken at once before a batch goes out (those already received: no waiting).
const FEED_DRAIN: usize = 1_000;
/// Changes read per query when catching up with the feed after lagging.
const LAG_PAGE: i64 = 1_000;

impl LiveDoc for StoredDoc {
    fn collection(&self) -> &str {
        &self.collection
    }
    fn id(&self) -> &DocId {
        &self.id
    }
    fn seq(&self) -> i64 {
        self.seq
    }
    fn state(&self) -> &bigpeer_schema::Doc {
        &self.state
    }
    fn value(&self) -> Option<&Value> {
        self.value.as_ref()
    }
    fn bytes(&self) -> usize {
        self.bytes
    }
}

/// A store error that ends the session, with its close code (`docs/sync-protocol.md`,
/// section 7), by the error's kind.
fn store_failure(e: &StoreError) -> Stop {
    let code = e.code();
    tracing::error!(code, error = ?e, "sync session: store error");
    let close = match e.kind() {
        // What the peer sent cannot be merged (a corrupt delta, `crdt/...`).
        Kind::Input => CLOSE_PROTOCOL,
        Kind::Forbidden => CLOSE_POLICY,
        Kind::Timeout | Kind::Unavailable | Kind::Internal => CLOSE_INTERNAL,
    };
    Stop::fatal(code, e.to_string(), close)
}

/// What the shell holds once the peer is authenticated.
struct Open {
    feed: broadcast::Receiver<Arc<StoredDoc>>,
    /// The session's API key and the watch of revoked keys (none for the playground and for
    /// webhook identities): the session ends when its key is revoked.
    key: Option<(String, Revoked)>,
    access: Access,
}

struct Shell {
    hub: SyncHub,
    inbound: mpsc::Receiver<Inbound>,
    outbound: mpsc::Sender<Outbound>,
    core: ServerSession<StoredDoc, SessionPolicy>,
    open: Option<Open>,
    /// The origin of the core's clock.
    start: Instant,
    /// The session id sent in `Welcome` (empty before).
    session: String,
    /// Who the session authenticated as (empty before `Welcome`).
    user: String,
}

impl Shell {
    fn new(hub: SyncHub, link: Link) -> Shell {
        let o = &hub.options;
        let config = serve::Config {
            max_frame: o.max_frame,
            window: o.window,
            heartbeat_ms: u64::try_from(o.heartbeat.as_millis()).unwrap_or(u64::MAX),
            max_pending: o.max_pending,
            max_pending_bytes: o.max_pending_bytes,
            max_subscriptions: o.max_subscriptions,
            page: serve::PAGE,
        };
        Shell {
            core: ServerSession::new(config, 0),
            hub,
            inbound: link.inbound,
            outbound: link.outbound,
            open: None,
            start: Instant::now(),
            session: String::new(),
            user: String::new(),
        }
    }

    fn now(&self) -> Millis {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    async fn run(mut self) {
        let stop = match self.run_inner().await {
            Ok(()) => Stop::Quiet(CLOSE_NORMAL),
            Err(s) => s,
        };
        if let Stop::Fatal { code, message, .. } = &stop {
            tracing::info!(session = %self.session, %code, %message, "sync session ends with an error");
        }
        let (last, close) = stop.last_words();
        if let Some(frame) = last {
            // Best effort: a peer that does not read gets no error, only the close.
            let _ = self.outbound.try_send(Outbound::Binary(frame));
        }
        tracing::debug!(session = %self.session, close, "sync session closed");
        let _ = self.outbound.try_send(Outbound::Close {
            code: close,
            reason: String::new(),
        });
    }

    async fn run_inner(&mut self) -> Result<(), Stop> {
        let mut closing = self.hub.closing();
        if *closing.borrow_and_update() {
            return Err(Stop::Shutdown);
        }
        loop {
            let deadline = self.start + Duration::from_millis(self.core.deadline());
            let can_pump = self.core.can_pump();
            let (feed, key) = match &mut self.open {
                Some(o) => (Some(&mut o.feed), o.key.as_mut()),
                None => (None, None),
            };
            tokio::select! {
                biased;
                frame = self.inbound.recv() => {
                    let frame = frame.unwrap_or(Inbound::Closed);
                    if frame == Inbound::Closed {
                        return Ok(());
                    }
                    let now = self.now();
                    let req = self.core.on_frame(now, frame)?;
                    self.answer(req).await?;
                }
                _ = closing.changed() => return Err(Stop::Shutdown),
                ev = recv_feed(feed) => self.on_feed(ev).await?,
                () = key_revoked(key) => return Err(revoked_key()),
                () = tokio::time::sleep_until(deadline) => {
                    let now = self.now();
                    self.core.on_timer(now)?;
                }
                () = std::future::ready(()), if can_pump => {
                    let now = self.now();
                    let req = self.core.pump(now)?;
                    self.answer(req).await?;
                }
            }
            self.flush().await?;
        }
    }

    /// Sends the core's frames; a peer whose queue stays full for a heartbeat is a slow
    /// consumer. Logs and counts its notes.
    async fn flush(&mut self) -> Result<(), Stop> {
        while let Some(note) = self.core.next_note() {
            self.note(note);
        }
        let wait = self.hub.options.heartbeat;
        while let Some(frame) = self.core.frames().pop() {
            match tokio::time::timeout(wait, self.outbound.send(Outbound::Binary(frame))).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Stop::Quiet(CLOSE_NORMAL)),
                Err(_) => {
                    return Err(Stop::fatal(
                        "sync/slow-consumer",
                        "the peer does not read what it is sent",
                        CLOSE_POLICY,
                    ))
                }
            }
        }
        Ok(())
    }

    fn note(&self, note: Note) {
        match note {
            Note::Oversized {
                collection,
                id,
                bytes,
            } => {
                self.hub.oversized_skipped();
                tracing::warn!(session = %self.session, %collection, %id, bytes,
                    max_frame = self.hub.options.max_frame,
                    "sync: a document's change does not fit in a frame; not sent");
            }
            Note::OversizedFrame { bytes } => {
                self.hub.oversized_skipped();
                tracing::error!(session = %self.session, bytes,
                    max_frame = self.hub.options.max_frame, "sync frame over max_frame not sent");
            }
            Note::Skipped {
                what,
                collection,
                id,
                seq,
                error,
            } => {
                let e = corrupt_row(&collection, &id, error);
                self.hub
                    .store
                    .skipped_row(what, &collection, &id.key(), seq, &e);
            }
            Note::WantDropped => {
                tracing::debug!(session = %self.session, "too many wants waiting for credit; dropped one");
            }
            Note::PeerError {
                code,
                message,
                fatal,
            } => tracing::debug!(%code, %message, fatal, "sync peer reported an error"),
        }
    }

    /// Runs the core's request against the store and the service layer, and gives it the
    /// answer.
    async fn answer(&mut self, req: Option<Request>) -> Result<(), Stop> {
        let Some(req) = req else { return Ok(()) };
        match req {
            Request::Hello { minor, site, token } => self.hello(minor, site, &token).await,
            Request::Push {
                push: _,
                changes,
                peer,
            } => {
                self.admit_push().await?;
                let access = match &self.open {
                    Some(o) => o.access.clone(),
                    None => {
                        return Err(Stop::fatal("internal", "push before hello", CLOSE_INTERNAL))
                    }
                };
                let bound = super::checks::clock_bound(self.hub.options.max_clock_skew);
                let (txn, results) = crate::service::merge_push(
                    &self.hub.store,
                    &self.hub.group,
                    &access,
                    changes,
                    peer,
                    bound,
                )
                .await
                .map_err(|e| store_failure(&e))?;
                let now = self.now();
                self.core.pushed(now, txn, results)
            }
            Request::Scan {
                sub: _,
                collection,
                after,
                tombstones,
                limit,
            } => {
                let page = self
                    .hub
                    .store
                    .scan_page(&collection, after, tombstones, limit)
                    .await
                    .map_err(|e| store_failure(&e))?;
                let page = serve::Page {
                    rows: page
                        .rows
                        .into_iter()
                        .map(|r| serve::ScanRow {
                            id: r.id,
                            meta: r.meta,
                            seq: r.seq,
                            deleted: r.deleted,
                        })
                        .collect(),
                    read: page.read,
                    last: page.last,
                    head: page.head,
                };
                let now = self.now();
                self.core.page(now, page)
            }
            Request::Read { collection, id } => {
                let doc = match self.hub.store.get(&collection, &id).await {
                    Ok(doc) => doc,
                    // A stored row that cannot be read: nothing to send (logged and counted).
                    Err(e @ StoreError::Schema(_)) => {
                        self.hub
                            .store
                            .skipped_row("want", &collection, &id.key(), 0, &e);
                        None
                    }
                    Err(e) => return Err(store_failure(&e)),
                };
                let now = self.now();
                self.core.want_read(now, doc.as_ref())
            }
        }
    }

    async fn hello(&mut self, minor: u16, site: SiteId, token: &str) -> Result<(), Stop> {
        let _ = minor;
        let webhook = self
            .hub
            .options
            .webhook
            .as_ref()
            .filter(|_| !token.starts_with(crate::auth::SECRET_PREFIX));
        let mut client_info = None;
        if token.is_empty() && !self.hub.options.playground {
            return Err(Stop::fatal(
                "auth/missing-credentials",
                "no token given: connect with an API key (smallpeer --token <key>) or a token of \
                 the server's authentication webhook",
                CLOSE_POLICY,
            ));
        }
        let (perms, user, expires_at, key) = if self.hub.options.playground {
            (Permissions::all(), PLAYGROUND_USER.to_owned(), None, None)
        } else if let Some(webhook) = webhook {
            // Not an API key, and the operator has an authentication webhook: ask it.
            match webhook.authenticate(token).await {
                Ok(id) => {
                    client_info = id.client_info.clone();
                    (
                        id.permissions.clone(),
                        id.user.clone(),
                        Some(id.expires_at),
                        None,
                    )
                }
                Err(e) => {
                    let close = match e {
                        super::webhook::WebhookError::Refused(_) => CLOSE_POLICY,
                        super::webhook::WebhookError::Failed(_) => {
                            tracing::warn!(error = %e, "sync session: authentication webhook failed");
                            CLOSE_INTERNAL
                        }
                    };
                    return Err(Stop::fatal(e.code(), e.to_string(), close));
                }
            }
        } else {
            // Watch revocations before the key is checked: a revoke after the check is seen.
            let mut revoked = self.hub.keys.watch_revocations();
            match self.hub.keys.authenticate(token).await {
                Ok(key) => {
                    if revoked.borrow_and_update().contains(&key.id) {
                        return Err(revoked_key());
                    }
                    (
                        key.permissions.clone(),
                        key.id.clone(),
                        key.expires_at,
                        Some((key.id.clone(), revoked)),
                    )
                }
                Err(crate::auth::AuthError::Backend(m)) => {
                    return Err(Stop::fatal("internal", m, CLOSE_INTERNAL))
                }
                Err(e) => {
                    return Err(Stop::fatal(
                        "auth/invalid-token",
                        e.to_string(),
                        CLOSE_POLICY,
                    ))
                }
            }
        };
        self.bind_site(site, key.as_ref().map(|(id, _)| id.as_str()), &user)
            .await?;
        let feed = self.hub.feed().await.map_err(|e| store_failure(&e))?;
        // Subscribe before reading the position: nothing after it can be missed.
        let rx = feed.subscribe();
        let feed_seq = feed.position();
        let epoch = self
            .hub
            .store
            .epoch()
            .await
            .map_err(|e| store_failure(&e))?;
        let access = Access::new(perms);
        let session = format!("{:016x}", rand::random::<u64>());
        tracing::info!(%session, %user, "sync session open");
        self.session = session.clone();
        self.user = user.clone();
        self.open = Some(Open {
            feed: rx,
            key,
            access: access.clone(),
        });
        let now = self.now();
        self.core.opened(
            now,
            Opened {
                policy: SessionPolicy::new(access, self.hub.strict_mode.clone()),
                server_site: self.hub.store.site(),
                session,
                user,
                expires_in: expires_at.map(|t| u64::try_from(t - now_secs()).unwrap_or(0)),
                epoch,
                feed_seq,
                client_info: client_info.map(Value::from_json),
            },
        )
    }

    /// Binds the peer's site id to its identity (its API key, else its user): a site belongs to
    /// one identity for good, and never to a peer when it is a bigpeer process's. A peer that
    /// claims a taken site could forge another writer's stamps or shadow its changes.
    async fn bind_site(&self, site: SiteId, key: Option<&str>, user: &str) -> Result<(), Stop> {
        let taken = || {
            Stop::fatal(
                SITE_TAKEN,
                format!("site id {site} belongs to another peer or server: each peer (each local store) needs its own random site id"),
                CLOSE_POLICY,
            )
        };
        if site == SiteId(0) || site == self.hub.store.site() {
            return Err(taken());
        }
        self.hub
            .register_server_site()
            .await
            .map_err(|e| store_failure(&e))?;
        let owner = match key {
            Some(id) => format!("key:{id}"),
            None => format!("user:{user}"),
        };
        let found = self
            .hub
            .store
            .claim_site(site, &owner)
            .await
            .map_err(|e| store_failure(&e))?;
        if found != owner {
            tracing::warn!(%site, claimed_by = %owner, "sync hello with a site id that belongs to another identity");
            return Err(taken());
        }
        Ok(())
    }

    async fn on_feed(&mut self, ev: Result<Arc<StoredDoc>, RecvError>) -> Result<(), Stop> {
        match ev {
            Ok(doc) => {
                self.core.feed(doc)?;
                // Take what else the feed already holds, so that a burst of changes goes out in
                // one batch instead of one batch per change (no waiting: only what is there).
                for _ in 0..FEED_DRAIN {
                    let Some(o) = &mut self.open else { break };
                    match o.feed.try_recv() {
                        Ok(doc) => self.core.feed(doc)?,
                        Err(TryRecvError::Empty) | Err(TryRecvError::Closed) => break,
                        Err(TryRecvError::Lagged(missed)) => return self.read_lagged(missed).await,
                    }
                }
                Ok(())
            }
            Err(RecvError::Lagged(missed)) => self.read_lagged(missed).await,
            Err(RecvError::Closed) => Err(Stop::fatal(
                "internal",
                "the change feed stopped",
                CLOSE_INTERNAL,
            )),
        }
    }

    /// The session fell behind the change feed by `missed` changes: read them from the database.
    async fn read_lagged(&mut self, missed: u64) -> Result<(), Stop> {
        tracing::debug!(
            missed,
            "sync session fell behind the change feed; reading the database"
        );
        // Resume from the session's position; later broadcasts at or below it are skipped.
        loop {
            let Some(from) = self.core.feed_seq() else {
                return Ok(());
            };
            let page = self
                .hub
                .store
                .changes_page(from, LAG_PAGE)
                .await
                .map_err(|e| store_failure(&e))?;
            for doc in page.docs {
                self.core.feed(Arc::new(doc))?;
            }
            // Past unreadable rows too (skipped, logged and counted by the store).
            self.core.feed_skipped_to(page.last)?;
            if (page.read as i64) < LAG_PAGE {
                return Ok(());
            }
        }
    }
}

/// The user of playground sessions.
const PLAYGROUND_USER: &str = "playground";

/// Fatal error code of a hello whose site id belongs to another peer or server.
const SITE_TAKEN: &str = "sync/site-taken";

/// Resolves when the session's key (`(id, watch)`) is revoked; never without a key.
async fn key_revoked(key: Option<&mut (String, Revoked)>) {
    let Some((id, rx)) = key else {
        return std::future::pending().await;
    };
    loop {
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
        if rx.borrow_and_update().contains(id.as_str()) {
            return;
        }
    }
}

fn revoked_key() -> Stop {
    Stop::fatal(
        "auth/revoked-key",
        "the API key of this session has been revoked",
        CLOSE_POLICY,
    )
}

async fn recv_feed(
    feed: Option<&mut broadcast::Receiver<Arc<StoredDoc>>>,
) -> Result<Arc<StoredDoc>, RecvError> {
    match feed {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_failures_close_by_their_kind() {
        let close = |e: StoreError| match store_failure(&e) {
            Stop::Fatal { code, close, .. } => (code, close),
            other => panic!("not fatal: {other:?}"),
        };
        let corrupt = StoreError::Schema(bigpeer_schema::SchemaError::Corrupt("x".into()));
        assert_eq!(close(corrupt), ("crdt/corrupt".into(), CLOSE_PROTOCOL));
        assert_eq!(
            close(StoreError::ShuttingDown),
            ("store/unavailable".into(), CLOSE_INTERNAL)
        );
        assert_eq!(
            close(StoreError::Internal("x")),
            ("internal".into(), CLOSE_INTERNAL)
        );
        assert_eq!(
            close(StoreError::Denied("x".into())),
            ("auth/forbidden".into(), CLOSE_POLICY)
        );
    }
}
