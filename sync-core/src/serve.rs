//! The serving side of a session (the big peer's): hello, subscriptions, initial syncs, live
//! changes within the peer's credit, `Want`s, pushes and liveness.
//!
//! The shell drives a [`ServerSession`]:
//!
//! - [`ServerSession::on_frame`] with every frame; it may return a [`Request`] (authenticate a
//!   hello, merge a push), answered with [`ServerSession::opened`] / [`ServerSession::pushed`];
//! - [`ServerSession::feed`] with every change of the change feed (and
//!   [`ServerSession::feed_skipped_to`] after reading past unreadable rows);
//! - [`ServerSession::pump`] whenever [`ServerSession::can_pump`] (the peer has credit and
//!   something waits); it may return a [`Request`] to read a page of an initial sync or a
//!   document asked for with `Want`, answered with [`ServerSession::page`] /
//!   [`ServerSession::want_read`];
//! - [`ServerSession::on_timer`] at [`ServerSession::deadline`].
//!
//! After every call the shell sends [`ServerSession::frames`] and handles
//! [`ServerSession::notes`]. A `Stop` ends the session: the shell sends
//! [`Stop::last_words`] and closes.
//!
//! Subscriptions are matched by a [`Filter`] the shell's [`Policy`] plans (the DQL `WHERE` and
//! the read permission); the session only asks it yes or no, identically for the initial sync,
//! live changes and `Want`s.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use bigpeer_schema::wire::{
    self, Cursor, DocChange, EncodedChange, Msg, PushResult, SubStatus, MINOR,
};
use bigpeer_schema::{Delta, Doc, DocId, SchemaError, SiteId, Value, VersionVector};

use crate::known::{change_for, materialize_with_id, remember, DocKey, Known, LiveDoc, Pending};
use crate::{
    Frames, Inbound, Millis, Stop, CLOSE_NORMAL, CLOSE_POLICY, CLOSE_PROTOCOL, CLOSE_TOO_BIG,
    FEATURE_FRESH_TOMBSTONES,
};

/// Documents read per page of an initial sync (a page is one batch unless it passes
/// `BATCH_BYTES`): larger pages mean fewer queries, frames and client transactions.
pub const PAGE: i64 = 1_000;
/// Bytes of deltas per batch (well under `max_frame`).
pub const BATCH_BYTES: usize = 1024 * 1024;
/// `Want`s a session keeps waiting for credit.
pub const MAX_WANTS: usize = 256;
/// Bytes of a frame that are not a document's delta, at most (message head, collection name,
/// id, sequence number, cursor): a document must fit in `max_frame` minus this.
pub const FRAME_SLACK: usize = 64 * 1024;

/// The session's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest frame either side may send (announced in `Welcome`).
    pub max_frame: usize,
    /// Unacknowledged batches in flight at first.
    pub window: u32,
    /// The liveness interval: pings after `heartbeat / 2` of silence, closes after `2 ×
    /// heartbeat` without anything received.
    pub heartbeat_ms: u64,
    /// Live changes held for a peer without credit before it is dropped as a slow consumer.
    pub max_pending: usize,
    /// Bytes of live changes held for a peer without credit before it is dropped.
    pub max_pending_bytes: usize,
    /// Subscriptions one session may hold at once.
    pub max_subscriptions: usize,
    /// Documents read per page of an initial sync ([`PAGE`]).
    pub page: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame: 8 * 1024 * 1024,
            window: 8,
            heartbeat_ms: 30_000,
            max_pending: 10_000,
            max_pending_bytes: 64 * 1024 * 1024,
            max_subscriptions: 256,
            page: PAGE,
        }
    }
}

/// Decides which documents a subscription (or a `Want`) gets.
pub trait Filter {
    /// True when every document of the collection is wanted (nothing needs decoding to decide).
    fn wants_all(&self) -> bool;
    /// Whether the peer gets this version of a document: `value` is its JSON with `_id`
    /// (`None`: a tombstone), `state` its CRDT state.
    fn wants(&self, id: &DocId, value: Option<&Value>, state: &Doc) -> bool;
}

/// A subscription as the policy planned it.
pub struct Planned<F> {
    pub collection: String,
    pub filter: F,
}

/// What the peer may see, as the shell decides it (permissions, DQL).
pub trait Policy {
    type Filter: Filter;
    /// Checks and plans a subscription; `Err((code, message))` fails it (`SubState{failed}`).
    fn subscription(
        &self,
        query: &str,
        args: Value,
    ) -> Result<Planned<Self::Filter>, (String, String)>;
    /// The read permission on a collection as a filter; `None` when the peer may read nothing
    /// of it.
    fn readable(&self, collection: &str) -> Option<Self::Filter>;
}

/// What the session needs from the shell. Answer it before feeding the session anything else.
#[derive(Debug)]
pub enum Request {
    /// Authenticate `token`, bind `site` to the identity, subscribe to the change feed; answer
    /// with [`ServerSession::opened`], or end the session with the `Stop` it gives.
    Hello {
        minor: u16,
        site: SiteId,
        token: String,
    },
    /// Check and merge a push atomically (permissions, provenance, limits); answer with
    /// [`ServerSession::pushed`].
    Push {
        push: u64,
        changes: Vec<DocChange>,
        peer: SiteId,
    },
    /// Read the collection's documents after `after` in sequence order, `limit` at most, with
    /// tombstones or not; answer with [`ServerSession::page`].
    Scan {
        sub: u32,
        collection: String,
        after: i64,
        tombstones: bool,
        limit: i64,
    },
    /// Read one document (to answer a `Want`); answer with [`ServerSession::want_read`].
    Read { collection: String, id: DocId },
}

/// Something for the logs or the metrics.
#[derive(Debug)]
pub enum Note {
    /// A change not sent because it does not fit in a frame.
    Oversized {
        collection: String,
        id: DocId,
        bytes: usize,
    },
    /// A frame over `max_frame` not sent (a last guard: batches are cut to fit).
    OversizedFrame { bytes: usize },
    /// A stored row that does not decode, skipped.
    Skipped {
        what: &'static str,
        collection: String,
        id: DocId,
        seq: i64,
        error: SchemaError,
    },
    /// A `Want` dropped: too many wait for credit.
    WantDropped,
    /// The client's own fatal or non-fatal error.
    PeerError {
        code: String,
        message: String,
        fatal: bool,
    },
}

/// A row of an initial-sync page, as stored.
#[derive(Debug, Clone)]
pub struct ScanRow {
    pub id: DocId,
    /// The encoded CRDT state.
    pub meta: Vec<u8>,
    pub seq: i64,
    pub deleted: bool,
}

/// A page of a collection after a sequence number.
#[derive(Debug, Clone)]
pub struct Page {
    /// The readable rows.
    pub rows: Vec<ScanRow>,
    /// How many rows the page read, readable or not (a full page: there may be more).
    pub read: usize,
    /// The largest sequence number the page read, readable or not (`after` when none).
    pub last: i64,
    /// The newest committed sequence number in the page's snapshot.
    pub head: i64,
}

/// What the shell found out at hello.
pub struct Opened<P> {
    pub policy: P,
    /// This server's site (`Welcome.site`).
    pub server_site: SiteId,
    /// The session id (`Welcome.session`).
    pub session: String,
    /// Who the peer is (`Welcome.user`).
    pub user: String,
    /// Seconds until the credentials expire (`None`: never).
    pub expires_in: Option<u64>,
    /// The change feed's epoch and position when the session subscribed to it.
    pub epoch: String,
    pub feed_seq: i64,
    /// What the authentication webhook said about the client (sent as `ClientInfo`).
    pub client_info: Option<Value>,
}

struct Sub<F> {
    collection: String,
    filter: F,
    phase: Phase,
}

enum Phase {
    /// Paging through the collection after `after`.
    CatchingUp { after: i64, tombstones: bool },
    /// Caught up to `since`: feed changes after it are matched live.
    Live { since: i64 },
}

struct Open<D, P: Policy> {
    policy: P,
    /// The peer's site, bound to its identity at hello: its pushes may add its own writes only.
    site: SiteId,
    expires_at: Option<Millis>,
    epoch: String,
    /// Fresh subscriptions get tombstones too (the peer asked for them in its hello).
    fresh_tombstones: bool,
    subs: BTreeMap<u32, Sub<P::Filter>>,
    /// The newest feed sequence number processed.
    feed_seq: i64,
    pending: Pending<D>,
    known: Known,
    /// The last batch number sent, the last acknowledged, and the last the credit allows.
    sent: u64,
    acked: u64,
    limit: u64,
    /// Alternates batches between live changes and initial syncs.
    live_turn: bool,
    /// `Want`s waiting for credit, oldest first, without repeats.
    wants: VecDeque<(String, DocId, VersionVector)>,
}

enum State<D, P: Policy> {
    AwaitingHello,
    /// A hello is being checked by the shell.
    Hello {
        minor: u16,
        site: SiteId,
        /// The peer asked for tombstones in fresh subscriptions ([`FEATURE_FRESH_TOMBSTONES`]).
        fresh_tombstones: bool,
    },
    Open(Box<Open<D, P>>),
}

/// A request being answered.
enum Waiting<F> {
    None,
    Push {
        push: u64,
        pushed: Vec<(DocKey, VersionVector)>,
    },
    Scan {
        sub: u32,
        after: i64,
        limit: i64,
    },
    Want {
        collection: String,
        id: DocId,
        have: VersionVector,
        filter: F,
    },
}

/// The serving side of one session.
pub struct ServerSession<D, P: Policy> {
    config: Config,
    state: State<D, P>,
    waiting: Waiting<P::Filter>,
    last_sent: Millis,
    last_received: Millis,
    nonce: u64,
    frames: Frames,
    notes: VecDeque<Note>,
}

fn unexpected(what: &str) -> Stop {
    Stop::fatal(
        "protocol/unexpected-message",
        format!("{what} is not allowed here"),
        CLOSE_PROTOCOL,
    )
}

impl<D: LiveDoc, P: Policy> ServerSession<D, P> {
    pub fn new(config: Config, now: Millis) -> Self {
        ServerSession {
            config,
            state: State::AwaitingHello,
            waiting: Waiting::None,
            last_sent: now,
            last_received: now,
            nonce: 0,
            frames: Frames::default(),
            notes: VecDeque::new(),
        }
    }

    /// Frames to send, in order.
    pub fn frames(&mut self) -> &mut Frames {
        &mut self.frames
    }

    /// The next note for the logs or the metrics.
    pub fn next_note(&mut self) -> Option<Note> {
        self.notes.pop_front()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The peer's site once the session is open.
    pub fn peer_site(&self) -> Option<SiteId> {
        match &self.state {
            State::Open(o) => Some(o.site),
            _ => None,
        }
    }

    /// The newest feed sequence number processed (where a session that fell behind the feed
    /// reads from).
    pub fn feed_seq(&self) -> Option<i64> {
        match &self.state {
            State::Open(o) => Some(o.feed_seq),
            _ => None,
        }
    }

    fn open(&mut self) -> Result<&mut Open<D, P>, Stop> {
        match &mut self.state {
            State::Open(o) => Ok(o),
            _ => Err(unexpected("this message before hello")),
        }
    }

    fn send(&mut self, now: Millis, msg: &Msg) {
        self.send_frame(now, msg.encode());
    }

    fn send_frame(&mut self, now: Millis, frame: Vec<u8>) {
        if frame.len() > self.config.max_frame {
            // Batches are sized to fit (and documents are limited to fit), so this is a last
            // guard: a frame the peer must refuse is never sent, and the session goes on.
            self.notes
                .push_back(Note::OversizedFrame { bytes: frame.len() });
            return;
        }
        self.frames.push(frame);
        self.last_sent = now;
    }

    /// Sends a non-fatal `Error` (for example the push rate limit's notice).
    pub fn notice(&mut self, now: Millis, code: &str, message: String) {
        self.send(
            now,
            &Msg::Error {
                code: code.to_owned(),
                message,
                fatal: false,
            },
        );
    }

    /// When [`ServerSession::on_timer`] must run next.
    pub fn deadline(&self) -> Millis {
        let hb = self.config.heartbeat_ms;
        let mut d = (self.last_received + hb * 2).min(self.last_sent + hb / 2);
        if let State::Open(o) = &self.state {
            if let Some(t) = o.expires_at {
                d = d.min(t);
            }
        }
        d
    }

    pub fn on_timer(&mut self, now: Millis) -> Result<(), Stop> {
        let hb = self.config.heartbeat_ms;
        if now >= self.last_received + hb * 2 {
            return Err(Stop::fatal(
                "sync/timeout",
                format!("nothing received for {} ms", hb * 2),
                CLOSE_POLICY,
            ));
        }
        if let State::Open(o) = &self.state {
            if o.expires_at.is_some_and(|t| t <= now) {
                return Err(Stop::fatal(
                    "auth/expired",
                    "the credentials expired",
                    CLOSE_POLICY,
                ));
            }
        }
        if now >= self.last_sent + hb / 2 {
            self.nonce += 1;
            self.send(now, &Msg::Ping { nonce: self.nonce });
        }
        Ok(())
    }

    /// A frame (or transport event) from the peer.
    pub fn on_frame(&mut self, now: Millis, frame: Inbound) -> Result<Option<Request>, Stop> {
        self.last_received = now;
        let bytes = match frame {
            Inbound::Binary(b) => b,
            Inbound::Text => {
                return Err(Stop::fatal(
                    "protocol/malformed",
                    "text messages are not part of the protocol: send binary messages",
                    CLOSE_PROTOCOL,
                ))
            }
            Inbound::TooLarge => {
                return Err(Stop::fatal(
                    "protocol/frame-too-large",
                    format!("a frame is larger than {} bytes", self.config.max_frame),
                    CLOSE_TOO_BIG,
                ))
            }
            Inbound::Broken(m) => return Err(Stop::fatal("protocol/malformed", m, CLOSE_PROTOCOL)),
            Inbound::Closed => return Err(Stop::Quiet(CLOSE_NORMAL)),
        };
        let msg = Msg::decode(&bytes).map_err(|e| {
            let code = match &e {
                SchemaError::UnsupportedVersion(_) => "crdt/unsupported-version",
                _ => "protocol/malformed",
            };
            Stop::fatal(code, e.to_string(), CLOSE_PROTOCOL)
        })?;
        self.on_message(now, msg)
    }

    fn on_message(&mut self, now: Millis, msg: Msg) -> Result<Option<Request>, Stop> {
        let open = matches!(self.state, State::Open(_));
        match msg {
            Msg::Hello {
                minor,
                site,
                token,
                features,
                ..
            } if matches!(self.state, State::AwaitingHello) => {
                let fresh_tombstones = features.iter().any(|f| f == FEATURE_FRESH_TOMBSTONES);
                self.state = State::Hello {
                    minor,
                    site,
                    fresh_tombstones,
                };
                Ok(Some(Request::Hello { minor, site, token }))
            }
            m if !open && !matches!(self.state, State::Open(_)) => Err(Stop::fatal(
                "protocol/unexpected-message",
                format!("the first message must be hello, not {}", m.name()),
                CLOSE_PROTOCOL,
            )),
            Msg::Hello { .. } => Err(unexpected("a second hello")),
            Msg::Subscribe {
                sub,
                query,
                args,
                cursor,
            } => {
                self.subscribe(now, sub, &query, args, cursor)?;
                Ok(None)
            }
            Msg::Unsubscribe { sub } => {
                self.open()?.subs.remove(&sub);
                Ok(None)
            }
            Msg::Ack { batch, credit } => {
                let o = self.open()?;
                o.acked = o.acked.max(batch.min(o.sent));
                o.limit = o.acked + u64::from(credit);
                Ok(None)
            }
            Msg::Push { push, changes } => {
                let o = self.open()?;
                let peer = o.site;
                self.waiting = Waiting::Push {
                    push,
                    pushed: changes
                        .iter()
                        .map(|c| ((c.collection.clone(), c.id.key()), c.delta.state.vv.clone()))
                        .collect(),
                };
                Ok(Some(Request::Push {
                    push,
                    changes,
                    peer,
                }))
            }
            Msg::Want {
                collection,
                id,
                have,
            } => {
                self.want(collection, id, have)?;
                Ok(None)
            }
            Msg::Ping { nonce } => {
                self.send(now, &Msg::Pong { nonce });
                Ok(None)
            }
            Msg::Pong { .. } | Msg::Unknown { .. } => Ok(None),
            Msg::Bye { .. } => Err(Stop::Quiet(CLOSE_NORMAL)),
            Msg::Error {
                code,
                message,
                fatal,
            } => {
                self.notes.push_back(Note::PeerError {
                    code,
                    message,
                    fatal,
                });
                if fatal {
                    Err(Stop::Quiet(CLOSE_NORMAL))
                } else {
                    Ok(None)
                }
            }
            m => Err(Stop::fatal(
                "protocol/unexpected-message",
                format!("{} is sent by the server only", m.name()),
                CLOSE_PROTOCOL,
            )),
        }
    }

    /// The hello checked out: the session is open. Sends `Welcome` (and `ClientInfo`).
    // `min(client, server)`: a no-op while the protocol has minor 0.
    #[allow(clippy::unnecessary_min_or_max)]
    pub fn opened(&mut self, now: Millis, o: Opened<P>) -> Result<(), Stop> {
        let State::Hello {
            minor,
            site,
            fresh_tombstones,
        } = self.state
        else {
            return Err(unexpected("an answer to no hello"));
        };
        self.state = State::Open(Box::new(Open {
            policy: o.policy,
            site,
            expires_at: o
                .expires_in
                .map(|s| now.saturating_add(s.saturating_mul(1000))),
            epoch: o.epoch,
            fresh_tombstones,
            subs: BTreeMap::new(),
            feed_seq: o.feed_seq,
            pending: Pending::default(),
            known: Known::new(),
            sent: 0,
            acked: 0,
            limit: u64::from(self.config.window),
            live_turn: false,
            wants: VecDeque::new(),
        }));
        self.send(
            now,
            &Msg::Welcome {
                minor: minor.min(MINOR),
                site: o.server_site,
                session: o.session,
                max_frame: self.config.max_frame as u64,
                window: self.config.window,
                heartbeat_ms: self.config.heartbeat_ms,
                expires_in: o.expires_in.map_or(0, |s| s.max(1)),
                user: o.user,
            },
        );
        if let Some(info) = o.client_info {
            let frame = Msg::ClientInfo { info }.encode();
            if frame.len() <= self.config.max_frame {
                self.send_frame(now, frame);
            } else {
                self.notes
                    .push_back(Note::OversizedFrame { bytes: frame.len() });
            }
        }
        Ok(())
    }

    fn subscribe(
        &mut self,
        now: Millis,
        sub: u32,
        query: &str,
        args: Value,
        cursor: Option<Cursor>,
    ) -> Result<(), Stop> {
        let max_subscriptions = self.config.max_subscriptions;
        let o = self.open()?;
        if o.subs.contains_key(&sub) {
            self.send(
                now,
                &Msg::Error {
                    code: "protocol/duplicate-subscription".into(),
                    message: format!("subscription {sub} is already in use"),
                    fatal: false,
                },
            );
            return Ok(());
        }
        let status = match o.policy.subscription(query, args) {
            Err((code, message)) => SubStatus::Failed { code, message },
            Ok(_) if o.subs.len() >= max_subscriptions => SubStatus::Failed {
                code: "sync/too-many-subscriptions".into(),
                message: format!("a session may hold at most {max_subscriptions} subscriptions"),
            },
            Ok(plan) => {
                // A fresh subscription's first page leaves tombstones out, unless the peer
                // asked for them: without a usable cursor it may still hold documents of the
                // collection that were deleted here since.
                let (after, tombstones) = match cursor {
                    Some(c) if c.epoch == o.epoch => {
                        (i64::try_from(c.seq).unwrap_or(i64::MAX), true)
                    }
                    _ => (0, o.fresh_tombstones),
                };
                o.subs.insert(
                    sub,
                    Sub {
                        collection: plan.collection,
                        filter: plan.filter,
                        phase: Phase::CatchingUp { after, tombstones },
                    },
                );
                SubStatus::Active
            }
        };
        self.send(now, &Msg::SubState { sub, status });
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
            self.notes.push_back(Note::WantDropped);
            return Ok(());
        }
        o.wants.push_back((collection, id, have));
        Ok(())
    }

    /// The answer to [`Request::Push`]: one result per change, and the transaction. Sends
    /// `PushAck`; the peer is known to have what was applied.
    pub fn pushed(&mut self, now: Millis, txn: u64, results: Vec<PushResult>) -> Result<(), Stop> {
        let Waiting::Push { push, pushed } = std::mem::replace(&mut self.waiting, Waiting::None)
        else {
            return Err(unexpected("an answer to no push"));
        };
        let known = &mut self.open()?.known;
        for ((key, vv), r) in pushed.into_iter().zip(&results) {
            if matches!(r, PushResult::Applied | PushResult::Unchanged) {
                remember(known, key, &vv);
            }
        }
        self.send(now, &Msg::PushAck { push, txn, results });
        Ok(())
    }

    /// Whether [`ServerSession::pump`] has something to send within the peer's credit.
    pub fn can_pump(&self) -> bool {
        match &self.state {
            State::Open(o) => {
                o.sent < o.limit
                    && (!o.pending.is_empty()
                        || !o.wants.is_empty()
                        || o.subs
                            .values()
                            .any(|s| matches!(s.phase, Phase::CatchingUp { .. })))
            }
            _ => false,
        }
    }

    /// Sends one batch: the answer to the oldest `Want`, else live changes or a page of an
    /// initial sync, taking turns. May need a read from the store first.
    pub fn pump(&mut self, now: Millis) -> Result<Option<Request>, Stop> {
        let page = self.config.page.max(1);
        let o = self.open()?;
        if let Some((collection, id, have)) = o.wants.pop_front() {
            let Some(filter) = o.policy.readable(&collection) else {
                return Ok(None);
            };
            self.waiting = Waiting::Want {
                collection: collection.clone(),
                id: id.clone(),
                have,
                filter,
            };
            return Ok(Some(Request::Read { collection, id }));
        }
        let catching_up = o
            .subs
            .iter()
            .find(|(_, s)| matches!(s.phase, Phase::CatchingUp { .. }))
            .map(|(id, _)| *id);
        o.live_turn = !o.live_turn;
        match catching_up {
            Some(sub) if !o.live_turn || o.pending.is_empty() => {
                let Some(Sub {
                    collection,
                    phase: Phase::CatchingUp { after, tombstones },
                    ..
                }) = o.subs.get(&sub)
                else {
                    return Ok(None);
                };
                let req = Request::Scan {
                    sub,
                    collection: collection.clone(),
                    after: *after,
                    tombstones: *tombstones,
                    limit: page,
                };
                self.waiting = Waiting::Scan {
                    sub,
                    after: *after,
                    limit: page,
                };
                Ok(Some(req))
            }
            _ => {
                self.send_live(now)?;
                Ok(None)
            }
        }
    }

    /// Bytes of changes one batch may carry: the frame must stay within `max_frame`.
    fn frame_budget(&self) -> usize {
        self.config.max_frame.saturating_sub(FRAME_SLACK)
    }

    fn send_live(&mut self, now: Millis) -> Result<(), Stop> {
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
            let doc = &p.doc;
            let Some(change) = change_for(&o.known, doc.collection(), doc.id(), seq, doc.state())
            else {
                continue;
            };
            let size =
                wire::change_size(&change.collection, &change.id, change.delta.encode().len());
            if size > budget {
                oversized.push(Note::Oversized {
                    collection: change.collection,
                    id: change.id,
                    bytes: size,
                });
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
                &doc.state().vv,
            );
            bytes += size;
            subs.extend(live);
            changes.push(change);
        }
        let cursor_seq = match o.pending.first_seq() {
            Some(s) => s - 1,
            None => o.feed_seq,
        };
        let cursor = Some(Cursor {
            epoch: o.epoch.clone(),
            seq: u64::try_from(cursor_seq).unwrap_or(0),
        });
        self.notes.extend(oversized);
        if changes.is_empty() {
            return Ok(());
        }
        self.send_batch(now, subs.into_iter().collect(), changes, cursor)
    }

    fn send_batch(
        &mut self,
        now: Millis,
        subs: Vec<u32>,
        changes: Vec<DocChange>,
        cursor: Option<Cursor>,
    ) -> Result<(), Stop> {
        let o = self.open()?;
        o.sent += 1;
        let batch = o.sent;
        self.send(
            now,
            &Msg::Batch {
                batch,
                subs,
                changes,
                cursor,
            },
        );
        Ok(())
    }

    /// The answer to [`Request::Scan`]: one page of a subscription's initial sync, sent as one
    /// batch; at its end, `SubState{caught up}`.
    pub fn page(&mut self, now: Millis, page: Page) -> Result<(), Stop> {
        let Waiting::Scan { sub, after, limit } =
            std::mem::replace(&mut self.waiting, Waiting::None)
        else {
            return Err(unexpected("an answer to no scan"));
        };
        let budget = self.frame_budget();
        let mut notes = Vec::new();
        let o = self.open()?;
        let Open {
            subs, known, epoch, ..
        } = &mut *o;
        let Some(s) = subs.get_mut(&sub) else {
            return Ok(());
        };
        let collection = s.collection.clone();
        let full = page.read as i64 >= limit;
        // Initial and resumed syncs send full states (a delta against nothing): the peer may have
        // evicted what this session sent it before. A full-state delta is made from the stored
        // bytes without decoding them; a document is decoded only when the subscription or the
        // read permission has to look at its value. A row that does not decode is skipped
        // (noted), never the end of the sync.
        let mut deltas: Vec<(usize, Vec<u8>)> = Vec::with_capacity(page.rows.len());
        let mut bytes = 0;
        let mut last = after;
        let mut stopped_early = false;
        let wants_all = s.filter.wants_all();
        let skip = |row: &ScanRow, error: SchemaError| Note::Skipped {
            what: "initial sync",
            collection: collection.clone(),
            id: row.id.clone(),
            seq: row.seq,
            error,
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
                            notes.push(skip(row, e));
                            continue;
                        }
                    };
                    let value = materialize_with_id(&state, &row.id);
                    (state, value)
                };
                if !s.filter.wants(&row.id, value.as_ref(), &state) {
                    continue;
                }
            }
            let (delta, vv) = match Delta::encode_full_state(&row.meta) {
                Ok(d) => d,
                Err(e) => {
                    notes.push(skip(row, e));
                    continue;
                }
            };
            if vv.is_empty() {
                // Nothing was ever written to it: nothing to send.
                continue;
            }
            let size = wire::change_size(&collection, &row.id, delta.len());
            if size > budget {
                notes.push(Note::Oversized {
                    collection: collection.clone(),
                    id: row.id.clone(),
                    bytes: size,
                });
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
        let epoch = epoch.clone();
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
            self.send_frame(now, frame);
        }
        self.notes.extend(notes);
        if done {
            self.send(
                now,
                &Msg::SubState {
                    sub,
                    status: SubStatus::CaughtUp {
                        cursor: Cursor {
                            epoch,
                            seq: u64::try_from(page.head.max(last)).unwrap_or(0),
                        },
                    },
                },
            );
        }
        Ok(())
    }

    /// The answer to [`Request::Read`]: the document (`None`: it does not exist, or its row
    /// cannot be read). Sends the delta against what the peer said it has, in a batch with no
    /// subscription and no cursor, when the peer may read it.
    pub fn want_read(&mut self, now: Millis, doc: Option<&D>) -> Result<(), Stop> {
        let Waiting::Want {
            collection,
            id,
            have,
            filter,
        } = std::mem::replace(&mut self.waiting, Waiting::None)
        else {
            return Err(unexpected("an answer to no want"));
        };
        let Some(doc) = doc else { return Ok(()) };
        if !filter.wants(&id, doc.value(), doc.state()) {
            return Ok(());
        }
        let change = DocChange {
            collection,
            id,
            seq: u64::try_from(doc.seq()).unwrap_or(0),
            delta: doc.state().delta(&have),
        };
        let size = wire::change_size(&change.collection, &change.id, change.delta.encode().len());
        if size > self.frame_budget() {
            self.notes.push_back(Note::Oversized {
                collection: change.collection,
                id: change.id,
                bytes: size,
            });
            return Ok(());
        }
        let mut after = have;
        after.join(&doc.state().vv);
        remember(
            &mut self.open()?.known,
            (change.collection.clone(), change.id.key()),
            &after,
        );
        self.send_batch(now, Vec::new(), vec![change], None)
    }

    /// A change from the change feed: matched against the live subscriptions, and held until
    /// the peer has credit. Changes at or below the session's position are skipped.
    pub fn feed(&mut self, doc: Arc<D>) -> Result<(), Stop> {
        let max_pending = self.config.max_pending;
        let max_pending_bytes = self.config.max_pending_bytes;
        let o = self.open()?;
        if doc.seq() <= o.feed_seq {
            return Ok(());
        }
        o.feed_seq = doc.seq();
        let subs: BTreeSet<u32> = o
            .subs
            .iter()
            .filter(|(_, s)| {
                s.collection == doc.collection()
                    && matches!(s.phase, Phase::Live { since } if doc.seq() > since)
                    && s.filter.wants(doc.id(), doc.value(), doc.state())
            })
            .map(|(id, _)| *id)
            .collect();
        if subs.is_empty() {
            return Ok(());
        }
        o.pending.add(doc, subs);
        if o.pending.len() > max_pending {
            return Err(Stop::fatal(
                "sync/slow-consumer",
                format!("more than {max_pending} changes wait for the peer's credit"),
                CLOSE_POLICY,
            ));
        }
        if o.pending.bytes() > max_pending_bytes {
            return Err(Stop::fatal(
                "sync/slow-consumer",
                format!(
                    "more than {max_pending_bytes} bytes of changes wait for the peer's credit"
                ),
                CLOSE_POLICY,
            ));
        }
        Ok(())
    }

    /// The session's position passes `seq` (a page of the feed read from the store, past rows
    /// that could not be read).
    pub fn feed_skipped_to(&mut self, seq: i64) -> Result<(), Stop> {
        let o = self.open()?;
        o.feed_seq = o.feed_seq.max(seq);
        Ok(())
    }
}
