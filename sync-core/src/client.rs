//! The subscribing side of a session (a small peer's): hello, resuming subscriptions from their
//! durable cursors, applying batches and acknowledging them once durable, pushing the outbox
//! and tracking the answers, answering `Want`, liveness.
//!
//! The shell drives a [`ClientSession`]:
//!
//! - [`ClientSession::on_frame`] with every protocol message received (while
//!   [`ClientSession::can_read`]);
//! - [`ClientSession::next_request`] until it returns `None`, after every call: the session's
//!   requests to the store, each answered with its method ([`Request`] says which).
//!   [`Request::Apply`] may run in the background (the session reads ahead meanwhile); every
//!   other request is answered before anything else is fed;
//! - [`ClientSession::push_outbox`] when local writes may be waiting, [`ClientSession::subscribe`]
//!   and [`ClientSession::unsubscribe`] for the application's subscriptions, and
//!   [`ClientSession::on_timer`] at [`ClientSession::deadline`].
//!
//! After every call the shell sends [`ClientSession::frames`] and handles
//! [`ClientSession::next_event`] (status and statistics). A [`Failure`] ends the session: the
//! shell sends [`ClientSession::last_words`] and closes; [`terminal`] says whether reconnecting
//! can help.

use std::collections::{BTreeMap, VecDeque};

use bigpeer_schema::wire::{Cursor, DocChange, Msg, PushResult, SubStatus, MINOR};
use bigpeer_schema::{DocId, SiteId, Value, VersionVector};

use crate::{Failure, Frames, Millis, FEATURE_FRESH_TOMBSTONES};

/// Bytes of deltas per `Push` at most (well under the big peer's frame limit).
pub const PUSH_BYTES: usize = 1024 * 1024;
/// Messages read and decoded ahead while a batch is being written to the store. They are handled
/// in arrival order once it is committed; reading stops (the socket and the big peer's credit
/// push back) when this many wait.
pub const READ_AHEAD: usize = 4;

/// The session's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// This store's site.
    pub site: SiteId,
    /// The token sent in `Hello`.
    pub token: String,
    /// Time allowed for `Welcome` after `Hello`.
    pub welcome_timeout_ms: u64,
    /// Most documents sent in one `Push`.
    pub push_max_changes: usize,
}

/// A subscription the application holds: its durable key, query and arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub key: String,
    pub query: String,
    pub args: Value,
}

/// What the session needs from the store.
#[derive(Debug)]
pub enum Request {
    /// The session is open: read each subscription's stored cursor and the documents asked for
    /// with `Want` and not answered yet; answer with [`ClientSession::resume`].
    Resume,
    /// Apply a batch in one transaction with the subscriptions' new cursors (left as they are
    /// when a change's base is missing); answer with [`ClientSession::applied`]. May run while
    /// the session reads on.
    Apply {
        batch: u64,
        changes: Vec<DocChange>,
        cursors: Vec<(String, Cursor)>,
    },
    /// Store a subscription's cursor (it caught up); answer with
    /// [`ClientSession::cursor_saved`].
    SaveCursor { key: String, cursor: Cursor },
    /// Up to `max` local changes to push (deltas against what the big peer is known to have);
    /// answer with [`ClientSession::outbox`].
    Outbox { max: usize },
    /// Record the big peer's answers to a push; answer with [`ClientSession::push_recorded`].
    RecordPush {
        changes: Vec<DocChange>,
        results: Vec<PushResult>,
    },
    /// The change that brings a replica at `have` up to this store's document (the big peer's
    /// `Want`); answer with [`ClientSession::delta`].
    Delta {
        collection: String,
        id: DocId,
        have: VersionVector,
    },
}

/// Where a subscription stands in this session.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    Active,
    CaughtUp,
    Failed(Failure),
}

/// What happened, for the application's status and statistics.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `Welcome`: the session is open.
    Opened { session: String, user: String },
    /// A subscription's phase changed.
    Phase { key: String, phase: Phase },
    /// What the big peer's authentication webhook said about this client.
    ClientInfo(Value),
    /// A non-fatal error from the big peer.
    Warning(Failure),
    /// A local change the big peer denied.
    Denied {
        collection: String,
        id: DocId,
        code: String,
    },
    /// A batch was applied and acknowledged.
    Batch {
        received: u64,
        applied: u64,
        wants: u64,
    },
    /// A push was sent with `changes` documents.
    Pushed { changes: u64 },
    /// `Want`s sent for documents refused in earlier sessions.
    WantsSent(u64),
}

/// An inline request being answered.
#[derive(Debug, PartialEq)]
enum Inline {
    None,
    Resume,
    SaveCursor { key: String },
    Outbox,
    RecordPush { push: u64, denied: Vec<Event> },
    Delta,
}

/// Errors a retry cannot cure.
pub fn terminal(code: &str) -> bool {
    // The authentication webhook failing is the server's trouble: retry.
    (code.starts_with("auth/") && code != "auth/webhook-failed")
        || code.starts_with("protocol/")
        || code.starts_with("crdt/")
        || matches!(
            code,
            "sync/refused"
                | "sync/invalid-url"
                | "sync/invalid-ca"
                | "sync/untrusted-certificate"
                | "store/corrupt"
        )
}

/// The failure of a broken connection.
pub fn disconnected(why: &str) -> Failure {
    Failure::new("sync/disconnected", why)
}

/// The subscribing side of one session.
pub struct ClientSession {
    config: Config,
    open: bool,
    /// The subscriptions of this session by id, with their keys.
    sub_ids: BTreeMap<u32, String>,
    next_sub: u32,
    /// Pushes awaiting their `PushAck`, and which of them carries the outbox.
    in_flight: BTreeMap<u64, Vec<DocChange>>,
    outbox_push: Option<u64>,
    /// An outbox push is wanted once the current inline request is answered.
    outbox_wanted: bool,
    next_push: u64,
    window: u32,
    heartbeat_ms: u64,
    max_frame: usize,
    welcome_by: Millis,
    last_sent: Millis,
    last_received: Millis,
    nonce: u64,
    /// The batch being applied (number, changes received).
    applying: Option<(u64, u64)>,
    backlog: VecDeque<Msg>,
    inline: Inline,
    requests: VecDeque<Request>,
    frames: Frames,
    events: VecDeque<Event>,
}

impl ClientSession {
    /// A session on a fresh connection: sends `Hello`.
    pub fn new(config: Config, now: Millis) -> ClientSession {
        let mut s = ClientSession {
            welcome_by: now.saturating_add(config.welcome_timeout_ms),
            config,
            open: false,
            sub_ids: BTreeMap::new(),
            next_sub: 1,
            in_flight: BTreeMap::new(),
            outbox_push: None,
            outbox_wanted: false,
            next_push: 1,
            window: 1,
            heartbeat_ms: 30_000,
            max_frame: 8 * 1024 * 1024,
            last_sent: now,
            last_received: now,
            nonce: 0,
            applying: None,
            backlog: VecDeque::new(),
            inline: Inline::None,
            requests: VecDeque::new(),
            frames: Frames::default(),
            events: VecDeque::new(),
        };
        let hello = Msg::Hello {
            minor: MINOR,
            site: s.config.site,
            token: s.config.token.clone(),
            features: vec![FEATURE_FRESH_TOMBSTONES.to_owned()],
            last_sync_ms: 0,
        };
        s.send(now, &hello);
        s
    }

    /// Frames to send, in order.
    pub fn frames(&mut self) -> &mut Frames {
        &mut self.frames
    }

    /// The next status event.
    pub fn next_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// `Welcome` arrived.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Whether the shell may read the next message (the read-ahead is not full).
    pub fn can_read(&self) -> bool {
        self.backlog.len() < READ_AHEAD
    }

    /// Whether a batch is being applied (its `Ack` waits for [`ClientSession::applied`]).
    pub fn applying(&self) -> bool {
        self.applying.is_some()
    }

    fn send(&mut self, now: Millis, msg: &Msg) {
        self.frames.push(msg.encode());
        self.last_sent = now;
    }

    /// When [`ClientSession::on_timer`] must run next.
    pub fn deadline(&self) -> Millis {
        if !self.open {
            return self.welcome_by;
        }
        (self.last_sent + self.heartbeat_ms / 2).min(self.last_received + self.heartbeat_ms * 2)
    }

    pub fn on_timer(&mut self, now: Millis) -> Result<(), Failure> {
        if !self.open {
            if now >= self.welcome_by {
                return Err(Failure::new(
                    "sync/timeout",
                    format!("no welcome within {} ms", self.config.welcome_timeout_ms),
                ));
            }
            return Ok(());
        }
        if now >= self.last_received + self.heartbeat_ms * 2 {
            return Err(Failure::new(
                "sync/timeout",
                format!(
                    "nothing received from the big peer for {} ms",
                    self.heartbeat_ms * 2
                ),
            ));
        }
        if now >= self.last_sent + self.heartbeat_ms / 2 {
            self.nonce += 1;
            let ping = Msg::Ping { nonce: self.nonce };
            self.send(now, &ping);
        }
        Ok(())
    }

    /// The frame to send before closing after `failure`: the big peer hears about errors of its
    /// own making (protocol errors, silence).
    pub fn last_words(failure: &Failure) -> Option<Vec<u8>> {
        let ours = failure.code.starts_with("protocol/") || failure.code == "sync/timeout";
        ours.then(|| {
            Msg::Error {
                code: failure.code.clone(),
                message: failure.message.clone(),
                fatal: true,
            }
            .encode()
        })
    }

    /// `Bye`, when the client stops.
    pub fn bye(&mut self, now: Millis, reason: &str) {
        let bye = Msg::Bye {
            reason: reason.to_owned(),
        };
        self.send(now, &bye);
    }

    /// A binary message received (a text message: [`ClientSession::on_text`]).
    pub fn on_frame(&mut self, now: Millis, bytes: &[u8]) -> Result<(), Failure> {
        self.last_received = now;
        let msg = Msg::decode(bytes).map_err(|e| {
            Failure::new(
                "protocol/malformed",
                format!("a frame from the big peer does not decode: {e}"),
            )
        })?;
        if !self.open {
            return self.welcome(now, msg);
        }
        self.backlog.push_back(msg);
        Ok(())
    }

    /// A transport frame that carries no protocol message (a WebSocket ping or pong): the
    /// connection is alive.
    pub fn on_transport_frame(&mut self, now: Millis) {
        self.last_received = now;
    }

    /// A text message received: not part of the protocol.
    pub fn on_text(&mut self) -> Failure {
        Failure::new("protocol/malformed", "the big peer sent a text message")
    }

    fn welcome(&mut self, now: Millis, msg: Msg) -> Result<(), Failure> {
        match msg {
            Msg::Welcome {
                session,
                max_frame,
                window,
                heartbeat_ms,
                user,
                ..
            } => {
                self.open = true;
                self.window = window.max(1);
                self.heartbeat_ms = heartbeat_ms.max(100);
                self.max_frame = usize::try_from(max_frame).unwrap_or(usize::MAX);
                self.last_received = now;
                self.events.push_back(Event::Opened { session, user });
                self.requests.push_back(Request::Resume);
                self.inline = Inline::Resume;
                Ok(())
            }
            Msg::Error { code, message, .. } => Err(Failure::new(&code, message)),
            Msg::Bye { reason } => Err(disconnected(&format!("the big peer said bye: {reason}"))),
            other => Err(Failure::new(
                "protocol/unexpected-message",
                format!("expected welcome, got {}", other.name()),
            )),
        }
    }

    /// The next request for the store, if any. Call until `None` after every input.
    pub fn next_request(&mut self, now: Millis) -> Result<Option<Request>, Failure> {
        loop {
            if let Some(r) = self.requests.pop_front() {
                return Ok(Some(r));
            }
            if self.inline != Inline::None {
                return Ok(None);
            }
            if self.outbox_wanted && self.outbox_push.is_none() {
                self.outbox_wanted = false;
                self.inline = Inline::Outbox;
                let max = self.config.push_max_changes.max(1);
                return Ok(Some(Request::Outbox { max }));
            }
            if self.applying.is_some() {
                return Ok(None);
            }
            let Some(msg) = self.backlog.pop_front() else {
                return Ok(None);
            };
            self.on_message(now, msg)?;
        }
    }

    fn on_message(&mut self, now: Millis, msg: Msg) -> Result<(), Failure> {
        match msg {
            Msg::Batch {
                batch,
                subs,
                changes,
                cursor,
            } => {
                let cursors: Vec<(String, Cursor)> = match &cursor {
                    Some(c) => subs
                        .iter()
                        .filter_map(|s| self.sub_ids.get(s))
                        .map(|k| (k.clone(), c.clone()))
                        .collect(),
                    None => Vec::new(),
                };
                self.applying = Some((batch, changes.len() as u64));
                self.requests.push_back(Request::Apply {
                    batch,
                    changes,
                    cursors,
                });
                Ok(())
            }
            Msg::SubState { sub, status } => {
                let Some(key) = self.sub_ids.get(&sub).cloned() else {
                    return Ok(()); // unsubscribed since
                };
                match status {
                    SubStatus::Active => self.events.push_back(Event::Phase {
                        key,
                        phase: Phase::Active,
                    }),
                    SubStatus::CaughtUp { cursor } => {
                        // Every batch before this message is applied: the head is the new
                        // position.
                        self.inline = Inline::SaveCursor { key: key.clone() };
                        self.requests.push_back(Request::SaveCursor { key, cursor });
                    }
                    SubStatus::Failed { code, message } => {
                        self.sub_ids.remove(&sub);
                        self.events.push_back(Event::Phase {
                            key,
                            phase: Phase::Failed(Failure::new(&code, message)),
                        });
                    }
                }
                Ok(())
            }
            Msg::PushAck { push, results, .. } => {
                let Some(changes) = self.in_flight.remove(&push) else {
                    return Err(Failure::new(
                        "protocol/unexpected-message",
                        format!("push acknowledgement for unknown push {push}"),
                    ));
                };
                // Reported once the store has recorded them (the application then sees the
                // denial and the outbox that no longer offers the change together).
                let denied = changes
                    .iter()
                    .zip(&results)
                    .filter_map(|(c, r)| match r {
                        PushResult::Denied { code } => Some(Event::Denied {
                            collection: c.collection.clone(),
                            id: c.id.clone(),
                            code: code.clone(),
                        }),
                        _ => None,
                    })
                    .collect();
                self.inline = Inline::RecordPush { push, denied };
                self.requests
                    .push_back(Request::RecordPush { changes, results });
                Ok(())
            }
            Msg::Want {
                collection,
                id,
                have,
            } => {
                self.inline = Inline::Delta;
                self.requests.push_back(Request::Delta {
                    collection,
                    id,
                    have,
                });
                Ok(())
            }
            Msg::Ping { nonce } => {
                self.send(now, &Msg::Pong { nonce });
                Ok(())
            }
            Msg::Pong { .. } | Msg::Unknown { .. } => Ok(()),
            Msg::ClientInfo { info } => {
                self.events.push_back(Event::ClientInfo(info));
                Ok(())
            }
            Msg::Error {
                code,
                message,
                fatal,
            } => {
                let failure = Failure::new(&code, message);
                if fatal {
                    return Err(failure);
                }
                self.events.push_back(Event::Warning(failure));
                Ok(())
            }
            Msg::Bye { reason } => Err(disconnected(&format!("the big peer said bye: {reason}"))),
            other => Err(Failure::new(
                "protocol/unexpected-message",
                format!("{} is not sent by a big peer", other.name()),
            )),
        }
    }

    fn answered(&mut self, what: &str) -> Result<Inline, Failure> {
        let was = std::mem::replace(&mut self.inline, Inline::None);
        if was == Inline::None {
            return Err(Failure::new(
                "internal",
                format!("an answer ({what}) to no request"),
            ));
        }
        Ok(was)
    }

    /// The answer to [`Request::Resume`]: the subscriptions with their stored cursors, and the
    /// documents still wanted. Subscribes, asks again, and pushes the outbox.
    pub fn resume(
        &mut self,
        now: Millis,
        subs: Vec<(Subscription, Option<Cursor>)>,
        wanted: Vec<(String, DocId, VersionVector)>,
    ) -> Result<(), Failure> {
        self.answered("resume")?;
        for (s, cursor) in subs {
            self.subscribe(now, s, cursor);
        }
        // Changes refused in an earlier session whose answer never arrived (the cursor may have
        // moved past them since): ask again.
        let n = self.send_wants(now, wanted);
        if n > 0 {
            self.events.push_back(Event::WantsSent(n));
        }
        self.outbox_wanted = true;
        Ok(())
    }

    /// Asks for the whole state of each document (`Want`); returns how many were asked for.
    fn send_wants(&mut self, now: Millis, wants: Vec<(String, DocId, VersionVector)>) -> u64 {
        let n = wants.len() as u64;
        for (collection, id, have) in wants {
            self.send(
                now,
                &Msg::Want {
                    collection,
                    id,
                    have,
                },
            );
        }
        n
    }

    /// Subscribes (a new subscription, or one resumed from its stored `cursor`).
    pub fn subscribe(&mut self, now: Millis, s: Subscription, cursor: Option<Cursor>) {
        let sub = self.next_sub;
        self.next_sub += 1;
        self.sub_ids.insert(sub, s.key.clone());
        self.events.push_back(Event::Phase {
            key: s.key,
            phase: Phase::Active,
        });
        let msg = Msg::Subscribe {
            sub,
            query: s.query,
            args: s.args,
            cursor,
        };
        self.send(now, &msg);
    }

    /// Ends a subscription in this session.
    pub fn unsubscribe(&mut self, now: Millis, key: &str) {
        let ids: Vec<u32> = self
            .sub_ids
            .iter()
            .filter(|(_, k)| *k == key)
            .map(|(id, _)| *id)
            .collect();
        for sub in ids {
            self.sub_ids.remove(&sub);
            self.send(now, &Msg::Unsubscribe { sub });
        }
    }

    /// The answer to [`Request::Apply`]: how many changes changed the store, and the documents
    /// whose delta did not fit what the store has. Asks for those, then acknowledges the batch.
    pub fn applied(
        &mut self,
        now: Millis,
        applied: u64,
        wants: Vec<(String, DocId, VersionVector)>,
    ) -> Result<(), Failure> {
        let Some((batch, received)) = self.applying.take() else {
            return Err(Failure::new("internal", "an answer to no batch"));
        };
        let n = self.send_wants(now, wants);
        self.events.push_back(Event::Batch {
            received,
            applied,
            wants: n,
        });
        let ack = Msg::Ack {
            batch,
            credit: self.window,
        };
        self.send(now, &ack);
        Ok(())
    }

    /// The answer to [`Request::SaveCursor`].
    pub fn cursor_saved(&mut self) -> Result<(), Failure> {
        if let Inline::SaveCursor { key } = self.answered("cursor")? {
            self.events.push_back(Event::Phase {
                key,
                phase: Phase::CaughtUp,
            });
        }
        Ok(())
    }

    /// Local writes may be waiting: pushes the next part of the outbox unless a push of it is in
    /// flight.
    pub fn push_outbox(&mut self) {
        if self.open {
            self.outbox_wanted = true;
        }
    }

    /// The answer to [`Request::Outbox`]: pushes as many of the changes as fit in one push.
    pub fn outbox(&mut self, now: Millis, mut changes: Vec<DocChange>) -> Result<(), Failure> {
        self.answered("outbox")?;
        if self.outbox_push.is_some() {
            return Ok(());
        }
        let budget = PUSH_BYTES.min(self.max_frame / 2).max(1);
        let mut bytes = 0;
        let mut keep = 0;
        for c in &changes {
            bytes += c.delta.encode().len() + c.collection.len() + 64;
            if keep > 0 && bytes > budget {
                break;
            }
            keep += 1;
        }
        changes.truncate(keep);
        if changes.is_empty() {
            return Ok(());
        }
        let push = self.start_push(now, changes);
        self.outbox_push = Some(push);
        Ok(())
    }

    fn start_push(&mut self, now: Millis, changes: Vec<DocChange>) -> u64 {
        let push = self.next_push;
        self.next_push += 1;
        let n = changes.len() as u64;
        let msg = Msg::Push { push, changes };
        self.send(now, &msg);
        if let Msg::Push { changes, .. } = msg {
            self.in_flight.insert(push, changes);
        }
        self.events.push_back(Event::Pushed { changes: n });
        push
    }

    /// The answer to [`Request::RecordPush`]: reports the denied changes ([`Event::Denied`]); the
    /// next part of the outbox goes out when this was the outbox's push.
    pub fn push_recorded(&mut self) -> Result<(), Failure> {
        if let Inline::RecordPush { push, denied } = self.answered("push")? {
            self.events.extend(denied);
            if self.outbox_push == Some(push) {
                self.outbox_push = None;
                self.outbox_wanted = true;
            }
        }
        Ok(())
    }

    /// The answer to [`Request::Delta`]: sent as a push (`None`: the document is unknown here).
    pub fn delta(&mut self, now: Millis, change: Option<DocChange>) -> Result<(), Failure> {
        self.answered("delta")?;
        if let Some(c) = change {
            self.start_push(now, vec![c]);
        }
        Ok(())
    }
}
