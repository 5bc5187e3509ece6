//! The native sync protocol, `bigpeer-sync.1` (`docs/sync-protocol.md`): the server side of one
//! session.
//!
//! One task per session runs [`Session::run`]: it reads the peer's frames, the process's change
//! feed and its timers, and sends batches while the peer has credit. Subscriptions are matched in
//! memory: an initial (or resumed) sync pages through the collection in sequence order and filters
//! each document with the subscription's filter AND the read permission; afterwards every change
//! of the feed is matched the same way. Live changes wait in a per-session map (newest state per
//! document) while the peer has no credit.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bigpeer_dql::eval;
use bigpeer_dql::exec::viewed_with_id;
use bigpeer_dql::plan::PExpr;
use bigpeer_schema::wire::{self, Cursor, DocChange, EncodedChange, Msg, PushResult, SubStatus};
use bigpeer_schema::{Delta, Doc, DocId, SchemaError, SiteId, TypeView, Value, VersionVector};
use futures_util::future::LocalBoxFuture;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use super::checks::{check_subscription, clock_bound, merge_one, validate_change};
use super::outbox::{change_for, remember, Known, Pending};
use super::{Inbound, Link, Outbound, SyncHub, SyncProtocol};
use crate::auth::{now_secs, Permissions, Revoked};
use crate::service::{Access, Allowed, WriteScope};
use crate::store::{corrupt_row, materialize_with_id, ScanRow, StoreError, StoredDoc, Working};

mod throttle;

/// `bigpeer-sync.1`.
pub struct Native;

impl SyncProtocol for Native {
    fn subprotocol(&self) -> &'static str {
        wire::SUBPROTOCOL
    }

    fn run(&self, hub: SyncHub, link: Link) -> LocalBoxFuture<'static, ()> {
        Box::pin(Session::new(hub, link).run())
    }
}

/// Documents read per page of an initial sync (a page is one batch unless it passes
/// `BATCH_BYTES`): larger pages mean fewer queries, frames and client transactions.
const PAGE: i64 = 1_000;
/// Feed changes taken at once before a batch goes out (those already received: no waiting).
const FEED_DRAIN: usize = 1_000;
/// Bytes of deltas per batch (well under `max_frame`).
const BATCH_BYTES: usize = 1024 * 1024;
/// Changes read per query when catching up with the feed after lagging.
const LAG_PAGE: i64 = 1_000;
/// `Want`s a session keeps waiting for credit.
const MAX_WANTS: usize = 256;

// WebSocket close codes.
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_PROTOCOL: u16 = 1002;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_INTERNAL: u16 = 1011;

/// Why a session ends.
#[derive(Debug)]
enum Stop {
    /// Send `Error{code, message, fatal}` and close with `close`.
    Fatal {
        code: String,
        message: String,
        close: u16,
    },
    /// Close without an error (the peer said `Bye` or closed).
    Quiet(u16),
    /// The server shuts down: `Bye` and close (going away).
    Shutdown,
}

fn fatal(code: &str, message: impl Into<String>, close: u16) -> Stop {
    Stop::Fatal {
        code: code.to_owned(),
        message: message.into(),
        close,
    }
}

fn unexpected(what: &str) -> Stop {
    fatal(
        "protocol/unexpected-message",
        format!("{what} is not allowed here"),
        CLOSE_PROTOCOL,
    )
}

fn store_failure(e: &StoreError) -> Stop {
    let code = e.code();
    tracing::error!(code, error = ?e, "sync session: store error");
    let close = if code.starts_with("crdt/") {
        CLOSE_PROTOCOL
    } else {
        CLOSE_INTERNAL
    };
    fatal(code, e.to_string(), close)
}

/// One subscription of the session.
struct Sub {
    collection: String,
    /// The subscription's WHERE.
    filter: Option<PExpr>,
    /// In strict mode, the view of documents the WHERE looks at (`None`: the whole document).
    view: Option<TypeView>,
    /// The read permission on the collection (`None`: everything).
    read: Option<PExpr>,
    phase: Phase,
}

enum Phase {
    /// Paging through the collection after `after`.
    CatchingUp { after: i64, tombstones: bool },
    /// Caught up to `since`: feed changes after it are matched live.
    Live { since: i64 },
}

impl Sub {
    /// True when the peer gets every document of the collection (no filter, no read
    /// restriction): nothing needs to be materialised to decide.
    fn wants_all(&self) -> bool {
        self.filter.is_none() && self.read.is_none()
    }

    /// Whether the peer gets this version of a document: live documents (`value`, the
    /// materialised `state`) that match the filter and the read permission; tombstones (no
    /// value) when the read permission admits their id. In strict mode the filter looks at the
    /// declared-type view of the state; permissions look at the whole document, as for DQL.
    fn wants(&self, id: &DocId, value: Option<&Value>, state: &Doc) -> bool {
        let ok = |f: Option<&PExpr>, v: &Value| eval::matches(f, v).unwrap_or(false);
        match value {
            Some(v) => {
                let filtered = match (&self.filter, &self.view) {
                    (None, _) => true,
                    (Some(f), None) => ok(Some(f), v),
                    (Some(f), Some(view)) => {
                        viewed_with_id(state, id, view).is_some_and(|viewed| ok(Some(f), &viewed))
                    }
                };
                filtered && ok(self.read.as_ref(), v)
            }
            None => {
                let only_id = Value::Object(
                    [("_id".to_owned(), id.value().clone())]
                        .into_iter()
                        .collect(),
                );
                ok(self.read.as_ref(), &only_id)
            }
        }
    }
}

enum State {
    AwaitingHello,
    Open(Box<Open>),
}

/// The state of an authenticated session.
struct Open {
    access: Access,
    /// The peer's site, bound to its identity at hello: its pushes may add writes of this site
    /// only.
    site: SiteId,
    expires_at: Option<i64>,
    /// The session's API key and the watch of revoked keys (none for the playground and for
    /// webhook identities): the session ends when its key is revoked.
    key: Option<(String, Revoked)>,
    epoch: String,
    subs: BTreeMap<u32, Sub>,
    feed: broadcast::Receiver<Arc<StoredDoc>>,
    /// The newest feed sequence number processed.
    feed_seq: i64,
    pending: Pending,
    known: Known,
    /// The last batch number sent, the last acknowledged, and the last the credit allows.
    sent: u64,
    acked: u64,
    limit: u64,
    /// Alternates batches between live changes and initial syncs.
    live_turn: bool,
    /// `Want`s waiting for credit (their answers are batches), oldest first, without repeats.
    wants: std::collections::VecDeque<(String, DocId, VersionVector)>,
}

struct Session {
    hub: SyncHub,
    inbound: mpsc::Receiver<Inbound>,
    outbound: mpsc::Sender<Outbound>,
    state: State,
    last_sent: Instant,
    last_received: Instant,
    nonce: u64,
    /// The session id sent in `Welcome` (empty before).
    session: String,
    /// Who the session authenticated as (empty before `Welcome`).
    user: String,
}

impl Session {
    fn new(hub: SyncHub, link: Link) -> Session {
        let now = Instant::now();
        Session {
            hub,
            inbound: link.inbound,
            outbound: link.outbound,
            state: State::AwaitingHello,
            last_sent: now,
            last_received: now,
            nonce: 0,
            session: String::new(),
            user: String::new(),
        }
    }

    async fn run(mut self) {
        let stop = match self.run_inner().await {
            Ok(()) => Stop::Quiet(CLOSE_NORMAL),
            Err(s) => s,
        };
        let close = match stop {
            Stop::Fatal {
                code,
                message,
                close,
            } => {
                tracing::info!(session = %self.session, %code, %message, "sync session ends with an error");
                let frame = Msg::Error {
                    code,
                    message,
                    fatal: true,
                }
                .encode();
                // Best effort: a peer that does not read gets no error, only the close.
                let _ = self.outbound.try_send(Outbound::Binary(frame));
                close
            }
            Stop::Quiet(close) => close,
            Stop::Shutdown => {
                let frame = Msg::Bye {
                    reason: "the server is shutting down".into(),
                }
                .encode();
                let _ = self.outbound.try_send(Outbound::Binary(frame));
                CLOSE_GOING_AWAY
            }
        };
        tracing::debug!(session = %self.session, close, "sync session closed");
        let _ = self.outbound.try_send(Outbound::Close {
            code: close,
            reason: String::new(),
        });
    }

    fn heartbeat(&self) -> Duration {
        self.hub.options.heartbeat
    }

    async fn run_inner(&mut self) -> Result<(), Stop> {
        let mut closing = self.hub.closing();
        if *closing.borrow_and_update() {
            return Err(Stop::Shutdown);
        }
        loop {
            let deadline = self.next_deadline();
            let can_pump = self.can_pump();
            let (feed, key) = match &mut self.state {
                State::Open(o) => (Some(&mut o.feed), o.key.as_mut()),
                State::AwaitingHello => (None, None),
            };
            tokio::select! {
                biased;
                frame = self.inbound.recv() => {
                    self.last_received = Instant::now();
                    match frame {
                        None | Some(Inbound::Closed) => return Ok(()),
                        Some(f) => self.on_frame(f).await?,
                    }
                }
                _ = closing.changed() => return Err(Stop::Shutdown),
                ev = recv_feed(feed) => self.on_feed(ev).await?,
                () = key_revoked(key) => return Err(revoked_key()),
                () = tokio::time::sleep_until(deadline) => self.on_timer().await?,
                () = std::future::ready(()), if can_pump => self.pump().await?,
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        let hb = self.heartbeat();
        let mut d = (self.last_received + hb * 2).min(self.last_sent + hb / 2);
        if let State::Open(o) = &self.state {
            if let Some(t) = o.expires_at {
                let left = Duration::from_secs(u64::try_from(t - now_secs()).unwrap_or(0));
                d = d.min(Instant::now() + left);
            }
        }
        d
    }

    async fn on_timer(&mut self) -> Result<(), Stop> {
        let now = Instant::now();
        let hb = self.heartbeat();
        if now >= self.last_received + hb * 2 {
            return Err(fatal(
                "sync/timeout",
                format!("nothing received for {} ms", (hb * 2).as_millis()),
                CLOSE_POLICY,
            ));
        }
        if let State::Open(o) = &self.state {
            if o.expires_at.is_some_and(|t| t <= now_secs()) {
                return Err(fatal(
                    "auth/expired",
                    "the credentials expired",
                    CLOSE_POLICY,
                ));
            }
        }
        if now >= self.last_sent + hb / 2 {
            self.nonce += 1;
            self.send(Msg::Ping { nonce: self.nonce }).await?;
        }
        Ok(())
    }

    /// Queues one frame; a peer whose queue stays full for a heartbeat is a slow consumer.
    async fn send(&mut self, msg: Msg) -> Result<(), Stop> {
        self.send_frame(msg.encode()).await
    }

    async fn send_frame(&mut self, frame: Vec<u8>) -> Result<(), Stop> {
        if frame.len() > self.hub.options.max_frame {
            // Batches are sized to fit (and documents are limited to fit), so this is a last
            // guard: a frame the peer must refuse is never sent, and the session goes on.
            self.hub.oversized_skipped();
            tracing::error!(session = %self.session, bytes = frame.len(),
                max_frame = self.hub.options.max_frame, "sync frame over max_frame not sent");
            return Ok(());
        }
        let wait = self.heartbeat();
        match tokio::time::timeout(wait, self.outbound.send(Outbound::Binary(frame))).await {
            Ok(Ok(())) => {
                self.last_sent = Instant::now();
                Ok(())
            }
            Ok(Err(_)) => Err(Stop::Quiet(CLOSE_NORMAL)),
            Err(_) => Err(fatal(
                "sync/slow-consumer",
                "the peer does not read what it is sent",
                CLOSE_POLICY,
            )),
        }
    }

    async fn on_frame(&mut self, frame: Inbound) -> Result<(), Stop> {
        let bytes = match frame {
            Inbound::Binary(b) => b,
            Inbound::Text => {
                return Err(fatal(
                    "protocol/malformed",
                    "text messages are not part of the protocol: send binary messages",
                    CLOSE_PROTOCOL,
                ))
            }
            Inbound::TooLarge => {
                return Err(fatal(
                    "protocol/frame-too-large",
                    format!(
                        "a frame is larger than {} bytes",
                        self.hub.options.max_frame
                    ),
                    CLOSE_TOO_BIG,
                ))
            }
            Inbound::Broken(m) => return Err(fatal("protocol/malformed", m, CLOSE_PROTOCOL)),
            Inbound::Closed => return Err(Stop::Quiet(CLOSE_NORMAL)),
        };
        let msg = Msg::decode(&bytes).map_err(|e| {
            let code = match &e {
                SchemaError::UnsupportedVersion(_) => "crdt/unsupported-version",
                _ => "protocol/malformed",
            };
            fatal(code, e.to_string(), CLOSE_PROTOCOL)
        })?;
        match (&self.state, msg) {
            (
                State::AwaitingHello,
                Msg::Hello {
                    minor, site, token, ..
                },
            ) => self.hello(minor, site, &token).await,
            (State::AwaitingHello, m) => Err(fatal(
                "protocol/unexpected-message",
                format!("the first message must be hello, not {}", m.name()),
                CLOSE_PROTOCOL,
            )),
            (State::Open(_), Msg::Hello { .. }) => Err(unexpected("a second hello")),
            (
                State::Open(_),
                Msg::Subscribe {
                    sub,
                    query,
                    args,
                    cursor,
                },
            ) => self.subscribe(sub, &query, args, cursor).await,
            (State::Open(_), Msg::Unsubscribe { sub }) => {
                if let State::Open(o) = &mut self.state {
                    o.subs.remove(&sub);
                }
                Ok(())
            }
            (State::Open(_), Msg::Ack { batch, credit }) => {
                if let State::Open(o) = &mut self.state {
                    o.acked = o.acked.max(batch.min(o.sent));
                    o.limit = o.acked + u64::from(credit);
                }
                Ok(())
            }
            (State::Open(_), Msg::Push { push, changes }) => self.push(push, changes).await,
            (
                State::Open(_),
                Msg::Want {
                    collection,
                    id,
                    have,
                },
            ) => self.want(collection, id, have),
            (_, Msg::Ping { nonce }) => self.send(Msg::Pong { nonce }).await,
            (_, Msg::Pong { .. }) | (_, Msg::Unknown { .. }) => Ok(()),
            (_, Msg::Bye { .. }) => Err(Stop::Quiet(CLOSE_NORMAL)),
            (
                _,
                Msg::Error {
                    code,
                    message,
                    fatal,
                },
            ) => {
                tracing::debug!(%code, %message, fatal, "sync peer reported an error");
                if fatal {
                    Err(Stop::Quiet(CLOSE_NORMAL))
                } else {
                    Ok(())
                }
            }
            (State::Open(_), m) => Err(fatal(
                "protocol/unexpected-message",
                format!("{} is sent by the server only", m.name()),
                CLOSE_PROTOCOL,
            )),
        }
    }

    // `min(client, server)`: a no-op while the server speaks minor 0.
    #[allow(clippy::unnecessary_min_or_max)]
    async fn hello(&mut self, minor: u16, site: SiteId, token: &str) -> Result<(), Stop> {
        let webhook = self
            .hub
            .options
            .webhook
            .as_ref()
            .filter(|_| !token.starts_with(crate::auth::SECRET_PREFIX));
        let mut client_info = None;
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
                    return Err(fatal(e.code(), e.to_string(), close));
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
                    return Err(fatal("internal", m, CLOSE_INTERNAL))
                }
                Err(e) => return Err(fatal("auth/invalid-token", e.to_string(), CLOSE_POLICY)),
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
        let window = self.hub.options.window;
        self.state = State::Open(Box::new(Open {
            access: Access::new(perms),
            site,
            expires_at,
            key,
            epoch,
            subs: BTreeMap::new(),
            feed: rx,
            feed_seq,
            pending: Pending::default(),
            known: Known::new(),
            sent: 0,
            acked: 0,
            limit: u64::from(window),
            live_turn: false,
            wants: std::collections::VecDeque::new(),
        }));
        let expires_in =
            expires_at.map_or(0, |t| u64::try_from(t - now_secs()).unwrap_or(0).max(1));
        let session = format!("{:016x}", rand::random::<u64>());
        tracing::info!(%session, %user, "sync session open");
        self.session = session.clone();
        self.user = user.clone();
        self.send(Msg::Welcome {
            minor: minor.min(wire::MINOR),
            site: self.hub.store.site(),
            session,
            max_frame: self.hub.options.max_frame as u64,
            window,
            heartbeat_ms: self.heartbeat().as_millis() as u64,
            expires_in,
            user,
        })
        .await?;
        if let Some(info) = client_info {
            let frame = Msg::ClientInfo {
                info: Value::from_json(info),
            }
            .encode();
            if frame.len() <= self.hub.options.max_frame {
                self.send_frame(frame).await?;
            } else {
                tracing::warn!(
                    bytes = frame.len(),
                    "sync session: the webhook's clientInfo is larger than a frame; not sent"
                );
            }
        }
        Ok(())
    }

    /// Binds the peer's site id to its identity (its API key, else its user): a site belongs to
    /// one identity for good, and never to a peer when it is a bigpeer process's. A peer that
    /// claims a taken site could forge another writer's stamps or shadow its changes.
    async fn bind_site(&self, site: SiteId, key: Option<&str>, user: &str) -> Result<(), Stop> {
        let taken = || {
            fatal(
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

    /// Bytes of changes one batch may carry: the frame must stay within `max_frame`.
    fn frame_budget(&self) -> usize {
        self.hub
            .options
            .max_frame
            .saturating_sub(super::FRAME_SLACK)
    }

    /// A document whose change cannot fit in a frame (written before the document size limit
    /// held, or a `Want` whose base makes the delta too large): not sent, logged and counted;
    /// the session goes on.
    fn oversized(&self, collection: &str, id: &DocId, bytes: usize) {
        self.hub.oversized_skipped();
        tracing::warn!(session = %self.session, %collection, %id, bytes,
            max_frame = self.hub.options.max_frame,
            "sync: a document's change does not fit in a frame; not sent");
    }

    fn open(&mut self) -> Result<&mut Open, Stop> {
        match &mut self.state {
            State::Open(o) => Ok(o),
            State::AwaitingHello => Err(unexpected("this message before hello")),
        }
    }

    async fn subscribe(
        &mut self,
        sub: u32,
        query: &str,
        args: Value,
        cursor: Option<Cursor>,
    ) -> Result<(), Stop> {
        let max_subscriptions = self.hub.options.max_subscriptions;
        let strict_mode = self.hub.strict_mode();
        let o = self.open()?;
        if o.subs.contains_key(&sub) {
            return self
                .send(Msg::Error {
                    code: "protocol/duplicate-subscription".into(),
                    message: format!("subscription {sub} is already in use"),
                    fatal: false,
                })
                .await;
        }
        let status = match check_subscription(&o.access, query, args, strict_mode) {
            Err((code, message)) => SubStatus::Failed { code, message },
            Ok(_) if o.subs.len() >= max_subscriptions => SubStatus::Failed {
                code: "sync/too-many-subscriptions".into(),
                message: format!("a session may hold at most {max_subscriptions} subscriptions"),
            },
            Ok(plan) => {
                let (after, tombstones) = match cursor {
                    Some(c) if c.epoch == o.epoch => {
                        (i64::try_from(c.seq).unwrap_or(i64::MAX), true)
                    }
                    _ => (0, false),
                };
                o.subs.insert(
                    sub,
                    Sub {
                        collection: plan.collection,
                        filter: plan.filter,
                        view: plan.view,
                        read: plan.read,
                        phase: Phase::CatchingUp { after, tombstones },
                    },
                );
                SubStatus::Active
            }
        };
        self.send(Msg::SubState { sub, status }).await
    }

    fn can_pump(&self) -> bool {
        match &self.state {
            State::Open(o) => {
                o.sent < o.limit
                    && (o.pending.len() > 0
                        || !o.wants.is_empty()
                        || o.subs
                            .values()
                            .any(|s| matches!(s.phase, Phase::CatchingUp { .. })))
            }
            State::AwaitingHello => false,
        }
    }

    /// Sends one batch: the answer to the oldest `Want`, else live changes or a page of an
    /// initial sync, taking turns.
    async fn pump(&mut self) -> Result<(), Stop> {
        let o = self.open()?;
        if let Some((collection, id, have)) = o.wants.pop_front() {
            return self.answer_want(collection, id, have).await;
        }
        let catching_up = o
            .subs
            .iter()
            .find(|(_, s)| matches!(s.phase, Phase::CatchingUp { .. }))
            .map(|(id, _)| *id);
        o.live_turn = !o.live_turn;
        match catching_up {
            Some(sub) if !(o.live_turn && o.pending.len() > 0) => self.catch_up(sub).await,
            _ => self.send_live().await,
        }
    }

    async fn send_live(&mut self) -> Result<(), Stop> {
        let budget = self.frame_budget();
        let o = self.open()?;
        let mut changes = Vec::new();
        let mut subs = BTreeSet::new();
        let mut bytes = 0;
        let mut oversized = Vec::new();
        while let Some(seq) = o.pending.first_seq() {
            if bytes >= BATCH_BYTES {
                break;
            }
            let Some(p) = o.pending.pop() else { break };
            let live: Vec<u32> = p
                .subs
                .iter()
                .copied()
                .filter(|s| o.subs.contains_key(s))
                .collect();
            if live.is_empty() {
                continue;
            }
            let Some(change) =
                change_for(&o.known, &p.doc.collection, &p.doc.id, seq, &p.doc.state)
            else {
                continue;
            };
            let size =
                wire::change_size(&change.collection, &change.id, change.delta.encode().len());
            if size > budget {
                oversized.push((change.collection, change.id, size));
                continue;
            }
            if !changes.is_empty() && bytes + size > budget {
                // The next batch takes it.
                o.pending.add(p.doc, p.subs);
                break;
            }
            remember(
                &mut o.known,
                (change.collection.clone(), change.id.key()),
                &p.doc.state.vv,
            );
            bytes += size;
            subs.extend(live);
            changes.push(change);
        }
        let cursor_seq = match o.pending.first_seq() {
            Some(s) => s - 1,
            None => o.feed_seq,
        };
        for (collection, id, size) in oversized {
            self.oversized(&collection, &id, size);
        }
        if changes.is_empty() {
            return Ok(());
        }
        let o = self.open()?;
        let cursor = Some(Cursor {
            epoch: o.epoch.clone(),
            seq: u64::try_from(cursor_seq).unwrap_or(0),
        });
        self.send_batch(subs.into_iter().collect(), changes, cursor)
            .await
    }

    async fn send_batch(
        &mut self,
        subs: Vec<u32>,
        changes: Vec<DocChange>,
        cursor: Option<Cursor>,
    ) -> Result<(), Stop> {
        let o = self.open()?;
        o.sent += 1;
        let batch = o.sent;
        self.send(Msg::Batch {
            batch,
            subs,
            changes,
            cursor,
        })
        .await
    }

    /// One page of a subscription's initial sync; at its end, `SubState{caught up}`.
    async fn catch_up(&mut self, sub: u32) -> Result<(), Stop> {
        let (collection, after, tombstones) = {
            let o = self.open()?;
            match o.subs.get(&sub).map(|s| (&s.collection, &s.phase)) {
                Some((c, Phase::CatchingUp { after, tombstones })) => {
                    (c.clone(), *after, *tombstones)
                }
                _ => return Ok(()),
            }
        };
        let page = self
            .hub
            .store
            .scan_page(&collection, after, tombstones, PAGE)
            .await
            .map_err(|e| store_failure(&e))?;
        let budget = self.frame_budget();
        let store = self.hub.store.clone();
        let mut oversized = Vec::new();
        let o = self.open()?;
        let Open { subs, known, .. } = o;
        let Some(s) = subs.get_mut(&sub) else {
            return Ok(());
        };
        let full = page.read as i64 >= PAGE;
        // Initial and resumed syncs send full states (a delta against nothing): the peer may have
        // evicted what this session sent it before. A full-state delta is made from the stored
        // bytes without decoding them; a document is decoded only when the subscription or the
        // read permission has to look at its value. A row that does not decode is skipped
        // (logged and counted), never the end of the sync.
        let mut deltas: Vec<(usize, Vec<u8>)> = Vec::with_capacity(page.rows.len());
        let mut bytes = 0;
        let mut last = after;
        let mut stopped_early = false;
        let wants_all = s.wants_all();
        let skip = |row: &ScanRow, e: SchemaError| {
            let e = corrupt_row(&collection, &row.id, e);
            store.skipped_row("initial sync", &collection, &row.id.key(), row.seq, &e);
        };
        for (i, row) in page.rows.iter().enumerate() {
            if bytes >= BATCH_BYTES {
                stopped_early = true;
                break;
            }
            let before = last;
            last = row.seq;
            if !wants_all {
                let (state, value) = if row.deleted {
                    (Doc::default(), None)
                } else {
                    let state = match Doc::decode(&row.meta) {
                        Ok(state) => state,
                        Err(e) => {
                            skip(row, e);
                            continue;
                        }
                    };
                    let value = materialize_with_id(&state, &row.id);
                    (state, value)
                };
                if !s.wants(&row.id, value.as_ref(), &state) {
                    continue;
                }
            }
            let (delta, vv) = match Delta::encode_full_state(&row.meta) {
                Ok(d) => d,
                Err(e) => {
                    skip(row, e);
                    continue;
                }
            };
            if vv.is_empty() {
                // Nothing was ever written to it: nothing to send.
                continue;
            }
            let size = wire::change_size(&collection, &row.id, delta.len());
            if size > budget {
                oversized.push((row.id.clone(), size));
                continue;
            }
            if !deltas.is_empty() && bytes + size > budget {
                // The next page starts with it.
                last = before;
                stopped_early = true;
                break;
            }
            remember(known, (collection.clone(), row.id.key()), &vv);
            bytes += size;
            deltas.push((i, delta));
        }
        if !stopped_early {
            // Past rows left out of the page (their ids do not decode) too.
            last = last.max(page.last);
        }
        let done = !full && !stopped_early;
        s.phase = if done {
            Phase::Live {
                since: page.head.max(last),
            }
        } else {
            // After the first page, later tombstones may be of documents already sent.
            Phase::CatchingUp {
                after: last,
                tombstones: true,
            }
        };
        let epoch = o.epoch.clone();
        if !deltas.is_empty() {
            let cursor = Some(Cursor {
                epoch: epoch.clone(),
                seq: u64::try_from(last).unwrap_or(0),
            });
            let changes: Vec<EncodedChange<'_>> = deltas
                .iter()
                .filter_map(|(i, delta)| {
                    page.rows.get(*i).map(|row| EncodedChange {
                        collection: &collection,
                        id: &row.id,
                        seq: u64::try_from(row.seq).unwrap_or(0),
                        delta,
                    })
                })
                .collect();
            o.sent += 1;
            let frame = wire::encode_batch(o.sent, &[sub], &changes, &cursor);
            drop(changes);
            self.send_frame(frame).await?;
        }
        for (id, size) in oversized {
            self.oversized(&collection, &id, size);
        }
        if done {
            self.send(Msg::SubState {
                sub,
                status: SubStatus::CaughtUp {
                    cursor: Cursor {
                        epoch,
                        seq: u64::try_from(page.head.max(last)).unwrap_or(0),
                    },
                },
            })
            .await?;
        }
        Ok(())
    }

    async fn on_feed(&mut self, ev: Result<Arc<StoredDoc>, RecvError>) -> Result<(), Stop> {
        match ev {
            Ok(doc) => {
                self.live(doc)?;
                // Take what else the feed already holds, so that a burst of changes goes out in
                // one batch instead of one batch per change (no waiting: only what is there).
                for _ in 0..FEED_DRAIN {
                    match self.open()?.feed.try_recv() {
                        Ok(doc) => self.live(doc)?,
                        Err(TryRecvError::Empty) | Err(TryRecvError::Closed) => break,
                        Err(TryRecvError::Lagged(missed)) => return self.read_lagged(missed).await,
                    }
                }
                Ok(())
            }
            Err(RecvError::Lagged(missed)) => self.read_lagged(missed).await,
            Err(RecvError::Closed) => {
                Err(fatal("internal", "the change feed stopped", CLOSE_INTERNAL))
            }
        }
    }

    /// The session fell behind the change feed by `missed` changes: read them from the database.
    async fn read_lagged(&mut self, missed: u64) -> Result<(), Stop> {
        tracing::debug!(
            missed,
            "sync session fell behind the change feed; reading the database"
        );
        // Resume from our own cursor; later broadcasts at or below it are skipped.
        loop {
            let from = self.open()?.feed_seq;
            let page = self
                .hub
                .store
                .changes_page(from, LAG_PAGE)
                .await
                .map_err(|e| store_failure(&e))?;
            for doc in page.docs {
                self.live(Arc::new(doc))?;
            }
            // Past unreadable rows too (skipped, logged and counted by the store).
            let o = self.open()?;
            o.feed_seq = o.feed_seq.max(page.last);
            if (page.read as i64) < LAG_PAGE {
                return Ok(());
            }
        }
    }

    /// Matches one feed change against the live subscriptions.
    fn live(&mut self, doc: Arc<StoredDoc>) -> Result<(), Stop> {
        let max_pending = self.hub.options.max_pending;
        let max_pending_bytes = self.hub.options.max_pending_bytes;
        let o = self.open()?;
        if doc.seq <= o.feed_seq {
            return Ok(());
        }
        o.feed_seq = doc.seq;
        let subs: BTreeSet<u32> = o
            .subs
            .iter()
            .filter(|(_, s)| {
                s.collection == doc.collection
                    && matches!(s.phase, Phase::Live { since } if doc.seq > since)
                    && s.wants(&doc.id, doc.value.as_ref(), &doc.state)
            })
            .map(|(id, _)| *id)
            .collect();
        if subs.is_empty() {
            return Ok(());
        }
        o.pending.add(doc, subs);
        if o.pending.len() > max_pending {
            return Err(fatal(
                "sync/slow-consumer",
                format!("more than {max_pending} changes wait for the peer's credit"),
                CLOSE_POLICY,
            ));
        }
        if o.pending.bytes() > max_pending_bytes {
            return Err(fatal(
                "sync/slow-consumer",
                format!(
                    "more than {max_pending_bytes} bytes of changes wait for the peer's credit"
                ),
                CLOSE_POLICY,
            ));
        }
        Ok(())
    }

    /// Queues a `Want`: its answer is a batch, sent within the peer's credit like every other
    /// (a peer that asks and does not read holds at most `MAX_WANTS` small requests, never the
    /// answers). A repeated request replaces the queued one; past the bound the request is
    /// dropped (a `Want` is a hint: the peer asks again).
    fn want(&mut self, collection: String, id: DocId, have: VersionVector) -> Result<(), Stop> {
        let o = self.open()?;
        if let Some(w) = o
            .wants
            .iter_mut()
            .find(|(c, i, _)| *c == collection && *i == id)
        {
            w.2 = have;
            return Ok(());
        }
        if o.wants.len() >= MAX_WANTS {
            tracing::debug!(session = %self.session, "too many wants waiting for credit; dropped one");
            return Ok(());
        }
        o.wants.push_back((collection, id, have));
        Ok(())
    }

    async fn answer_want(
        &mut self,
        collection: String,
        id: DocId,
        have: VersionVector,
    ) -> Result<(), Stop> {
        let read = {
            let o = self.open()?;
            match o.access.read(&collection) {
                Ok(Allowed::All) => None,
                Ok(Allowed::Matching(p)) => Some(p),
                Ok(Allowed::Nothing) | Err(_) => return Ok(()),
            }
        };
        let doc = match self.hub.store.get(&collection, &id).await {
            Ok(Some(doc)) => doc,
            Ok(None) => return Ok(()),
            // A stored row that cannot be read: nothing to send (logged and counted).
            Err(e @ StoreError::Schema(_)) => {
                self.hub
                    .store
                    .skipped_row("want", &collection, &id.key(), 0, &e);
                return Ok(());
            }
            Err(e) => return Err(store_failure(&e)),
        };
        let probe = Sub {
            collection: collection.clone(),
            filter: None,
            view: None,
            read,
            phase: Phase::Live { since: 0 },
        };
        if !probe.wants(&id, doc.value.as_ref(), &doc.state) {
            return Ok(());
        }
        let change = DocChange {
            collection,
            id,
            seq: u64::try_from(doc.seq).unwrap_or(0),
            delta: doc.state.delta(&have),
        };
        let size = wire::change_size(&change.collection, &change.id, change.delta.encode().len());
        if size > self.frame_budget() {
            self.oversized(&change.collection, &change.id, size);
            return Ok(());
        }
        let mut after = have;
        after.join(&doc.state.vv);
        remember(
            &mut self.open()?.known,
            (change.collection.clone(), change.id.key()),
            &after,
        );
        self.send_batch(Vec::new(), vec![change], None).await
    }

    async fn push(&mut self, push: u64, changes: Vec<DocChange>) -> Result<(), Stop> {
        self.admit_push().await?;
        let bound = clock_bound(self.hub.options.max_clock_skew);
        let o = self.open()?;
        let peer = o.site;
        let mut results: Vec<Option<PushResult>> = vec![None; changes.len()];
        let mut work = Vec::new();
        let mut scopes: BTreeMap<String, Result<WriteScope, String>> = BTreeMap::new();
        for (i, c) in changes.into_iter().enumerate() {
            if let Err(code) = validate_change(&c) {
                results[i] = Some(PushResult::Denied { code: code.into() });
                continue;
            }
            let scope = scopes
                .entry(c.collection.clone())
                .or_insert_with(|| {
                    WriteScope::of(&o.access, &c.collection).map_err(|e| e.code().to_owned())
                })
                .clone();
            match scope {
                Ok(scope) => work.push((i, c, scope)),
                Err(code) => results[i] = Some(PushResult::Denied { code }),
            }
        }
        let txn = if work.is_empty() {
            self.hub
                .store
                .known_txn()
                .await
                .map_err(|e| store_failure(&e))?
        } else {
            let targets = work
                .iter()
                .map(|(_, c, _)| (c.collection.clone(), c.id.clone()))
                .collect();
            let pushed: Vec<(usize, (String, Vec<u8>), VersionVector)> = work
                .iter()
                .map(|(i, c, _)| {
                    (
                        *i,
                        (c.collection.clone(), c.id.key()),
                        c.delta.state.vv.clone(),
                    )
                })
                .collect();
            let job = move |w: &mut Working<'_>| -> Result<Vec<(usize, PushResult)>, StoreError> {
                work.iter()
                    .map(|(i, c, scope)| Ok((*i, merge_one(w, c, scope, peer, bound)?)))
                    .collect()
            };
            let (done, info) = self
                .hub
                .group
                .transact(targets, job)
                .await
                .map_err(|e| store_failure(&e))?;
            for (i, r) in done {
                results[i] = Some(r);
            }
            // The peer has what it pushed: later changes to these documents reach it as deltas.
            let known = &mut self.open()?.known;
            for (i, key, vv) in pushed {
                if matches!(
                    results[i],
                    Some(PushResult::Applied | PushResult::Unchanged)
                ) {
                    remember(known, key, &vv);
                }
            }
            info.txn
        };
        let results = results
            .into_iter()
            .map(|r| {
                r.unwrap_or(PushResult::Denied {
                    code: "internal".into(),
                })
            })
            .collect();
        self.send(Msg::PushAck {
            push,
            txn: u64::try_from(txn).unwrap_or(0),
            results,
        })
        .await
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
    fatal(
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
