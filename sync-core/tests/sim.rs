//! Deterministic simulation of the sync protocol: one big peer (the serving state machine over a
//! simulated store) and several small peers (the subscribing state machine over simulated local
//! stores), in virtual time, over a simulated network, with the real CRDT.
//!
//! Each run is drawn from a seed: how many peers, what they subscribe to, when and what every
//! side writes (field sets, counter increments, deletes, on the big peer too, as HTTP writes
//! would), message delays (so messages of different connections and peers interleave in any
//! order), and faults: connections cut at any point (mid-batch included: the frames in flight
//! are lost, the big peer gets a prefix of what the peer sent, and a batch being written commits
//! or not), peers that crash while a batch is being applied, and sessions of the same peer that
//! overlap (the big peer still merges the old connection's pushes after the peer reconnected),
//! peers that forget a subscription's cursor (their next subscription starts from scratch while
//! they hold documents, some of them deleted on the big peer since). The big peer denies every
//! push to one document (outside the write permission), as it denies changes outside a write
//! permission or over a limit.
//! The transport is a WebSocket: within one connection frames arrive in order, once, or not at
//! all after a cut; duplicates and reordering come from reconnections (pushes sent again,
//! batches resent from older cursors, overlapping sessions), as they do in production.
//!
//! After the faults the network heals and the run goes on until it is quiet. Then it checks:
//! - **convergence**: every peer holds exactly the big peer's state of every document of the
//!   collections it subscribes to;
//! - **nothing acknowledged is lost**: every change the big peer acknowledged (`PushAck`
//!   applied/unchanged) is in its store, and every local write of every peer reached it, except
//!   the denied ones, which the big peer never holds and the peer keeps;
//! - no session ever failed with a protocol error (both sides agree on the protocol).
//!
//! `BIGPEER_SIM_RUNS=<n>` sets the number of seeds (default 2000, split over the tests below);
//! `BIGPEER_SIM_SEED=<n>` replays one seed. A failing seed is printed with the command that
//! replays it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use bigpeer_schema::wire::{Cursor, DocChange, PushResult};
use bigpeer_schema::{
    Clock, CounterKind, Doc, DocId, Hlc, ObjectMode, Op, SchemaError, SiteId, Value, VersionVector,
};
use bigpeer_sync_core::client::{self, ClientSession, Subscription};
use bigpeer_sync_core::known::{materialize_with_id, DocKey, LiveDoc};
use bigpeer_sync_core::serve::{
    self, Filter, Opened, Page, Planned, Policy, ScanRow, ServerSession,
};
use bigpeer_sync_core::{Failure, Inbound, Millis, Stop};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Wall-clock milliseconds at virtual time 0 (HLC stamps need a plausible wall clock).
const EPOCH_MS: u64 = 1_700_000_000_000;
const COLLECTIONS: [&str; 2] = ["cars", "people"];
const IDS: [&str; 5] = ["a", "b", "c", "d", "e"];
const FIELDS: [&str; 3] = ["x", "y", "z"];

/// The peers' write permission leaves out one document: every push to it is denied (as the big
/// peer denies changes outside a write permission, or over a limit).
fn writable(collection: &str, id: &DocId) -> bool {
    !(collection == "people" && *id == doc_id("e"))
}

// ---------------------------------------------------------------------------------------------
// The big peer's store.

#[derive(Debug)]
struct SimDoc {
    collection: String,
    id: DocId,
    seq: i64,
    state: Doc,
    value: Option<Value>,
    bytes: usize,
}

impl LiveDoc for SimDoc {
    fn collection(&self) -> &str {
        &self.collection
    }
    fn id(&self) -> &DocId {
        &self.id
    }
    fn seq(&self) -> i64 {
        self.seq
    }
    fn state(&self) -> &Doc {
        &self.state
    }
    fn value(&self) -> Option<&Value> {
        self.value.as_ref()
    }
    fn bytes(&self) -> usize {
        self.bytes
    }
}

struct All;

impl Filter for All {
    fn wants_all(&self) -> bool {
        true
    }
    fn wants(&self, _: &DocId, _: Option<&Value>, _: &Doc) -> bool {
        true
    }
}

/// Every permission; a subscription is `SELECT * FROM <collection>`.
struct AllPolicy;

impl Policy for AllPolicy {
    type Filter = All;
    fn subscription(&self, query: &str, _: Value) -> Result<Planned<All>, (String, String)> {
        match query.strip_prefix("SELECT * FROM ") {
            Some(c) => Ok(Planned {
                collection: c.to_owned(),
                filter: All,
            }),
            None => Err(("query/invalid".into(), query.into())),
        }
    }
    fn readable(&self, _: &str) -> Option<All> {
        Some(All)
    }
}

struct BigPeer {
    site: SiteId,
    clock: Clock,
    docs: BTreeMap<DocKey, Arc<SimDoc>>,
    seq: i64,
    /// Every committed version, in sequence order: the change feed.
    feed: Vec<Arc<SimDoc>>,
    epoch: String,
}

impl BigPeer {
    fn commit(&mut self, collection: &str, id: &DocId, state: Doc) {
        self.seq += 1;
        let doc = Arc::new(SimDoc {
            collection: collection.to_owned(),
            id: id.clone(),
            seq: self.seq,
            value: materialize_with_id(&state, id),
            bytes: state.encode().len(),
            state,
        });
        self.docs
            .insert((collection.to_owned(), id.key()), doc.clone());
        self.feed.push(doc);
    }

    fn state(&self, collection: &str, id: &DocId) -> Doc {
        self.docs
            .get(&(collection.to_owned(), id.key()))
            .map(|d| d.state.clone())
            .unwrap_or_default()
    }

    /// A push, merged as the server does: refused without the base, provenance checked.
    fn merge(&mut self, changes: &[DocChange], peer: SiteId, now: Millis) -> Vec<PushResult> {
        let mut results = Vec::new();
        for c in changes {
            if !writable(&c.collection, &c.id) {
                results.push(PushResult::Denied {
                    code: "auth/forbidden".into(),
                });
                continue;
            }
            let mut doc = self.state(&c.collection, &c.id);
            let bound = Hlc::new(EPOCH_MS + now + 300_000, u16::MAX);
            if c.delta.check_provenance(&doc, peer, bound).is_err() {
                results.push(PushResult::Denied {
                    code: "sync/foreign-site".into(),
                });
                continue;
            }
            let before = doc.clone();
            match doc.apply_delta(&c.delta) {
                Ok(()) if doc == before => results.push(PushResult::Unchanged),
                Ok(()) => {
                    let _ = self.clock.observe_at(doc.vv.max_hlc(), EPOCH_MS + now);
                    self.commit(&c.collection, &c.id, doc);
                    results.push(PushResult::Applied);
                }
                Err(SchemaError::BaseNotDominated) => {
                    results.push(PushResult::Refused { have: before.vv })
                }
                Err(e) => panic!("a pushed delta does not apply: {e}"),
            }
        }
        results
    }

    fn page(&self, collection: &str, after: i64, tombstones: bool, limit: i64) -> Page {
        let mut docs: Vec<&Arc<SimDoc>> = self
            .docs
            .values()
            .filter(|d| d.collection == collection && d.seq > after)
            .filter(|d| tombstones || !d.state.is_deleted())
            .collect();
        docs.sort_by_key(|d| d.seq);
        docs.truncate(usize::try_from(limit).unwrap_or(0));
        Page {
            read: docs.len(),
            last: docs.last().map_or(after, |d| d.seq),
            head: self.seq,
            rows: docs
                .iter()
                .map(|d| ScanRow {
                    id: d.id.clone(),
                    meta: d.state.encode(),
                    seq: d.seq,
                    deleted: d.state.is_deleted(),
                })
                .collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A small peer's store (what `small-peer/src/remote.rs` keeps, in memory).

#[derive(Clone, Default)]
struct LocalDoc {
    id: Option<DocId>,
    doc: Doc,
    /// What the big peer is known to have.
    server_vv: VersionVector,
}

#[derive(Clone)]
struct LocalStore {
    site: SiteId,
    clock: Clock,
    docs: BTreeMap<DocKey, LocalDoc>,
    /// Documents with local writes not known to be on the big peer, by local change number.
    outbox: BTreeMap<DocKey, u64>,
    changes: u64,
    cursors: BTreeMap<String, Cursor>,
    wanted: BTreeSet<DocKey>,
    /// Documents whose local writes the big peer denied: not pushed again until written again.
    denied: BTreeSet<DocKey>,
}

fn key_of(collection: &str, id: &DocId) -> DocKey {
    (collection.to_owned(), id.key())
}

impl LocalStore {
    fn write(&mut self, collection: &str, id: &DocId, ops: &[Op], now: Millis) {
        let key = key_of(collection, id);
        let stamp = self.clock.tick_at(EPOCH_MS + now);
        let entry = self.docs.entry(key.clone()).or_default();
        entry.id = Some(id.clone());
        entry.doc.apply(ops, stamp).expect("a local write applies");
        self.changes += 1;
        self.denied.remove(&key);
        self.outbox.insert(key, self.changes);
    }

    fn server_has_local_writes(&self, d: &LocalDoc) -> bool {
        d.server_vv.get(self.site) >= d.doc.vv.get(self.site)
    }

    fn apply(
        &mut self,
        changes: Vec<DocChange>,
        cursors: &[(String, Cursor)],
        now: Millis,
    ) -> (u64, Vec<(String, DocId, VersionVector)>) {
        let mut applied = 0;
        let mut wants = Vec::new();
        for c in changes {
            let key = key_of(&c.collection, &c.id);
            let entry = self.docs.entry(key.clone()).or_default();
            if !entry.doc.vv.dominates(&c.delta.base) {
                self.wanted.insert(key);
                wants.push((c.collection, c.id, entry.doc.vv.clone()));
                continue;
            }
            self.wanted.remove(&key);
            entry.id = Some(c.id.clone());
            entry.server_vv.join(&c.delta.state.vv);
            let _ = self
                .clock
                .observe_at(c.delta.state.vv.max_hlc(), EPOCH_MS + now);
            let before = entry.doc.clone();
            entry
                .doc
                .apply_delta(&c.delta)
                .expect("a dominated delta applies");
            if entry.doc != before {
                applied += 1;
            }
            let mine = entry.doc.vv.get(self.site);
            if mine > self.clock.last() {
                self.clock = Clock::resume(self.site, mine);
            }
            let entry = entry.clone();
            if self.server_has_local_writes(&entry) {
                self.outbox.remove(&key);
            }
        }
        if wants.is_empty() {
            for (sub, cursor) in cursors {
                self.cursors.insert(sub.clone(), cursor.clone());
            }
        }
        (applied, wants)
    }

    fn pending_push(&self, max: usize) -> Vec<DocChange> {
        let mut keys: Vec<(&u64, &DocKey)> = self.outbox.iter().map(|(k, n)| (n, k)).collect();
        keys.sort();
        keys.into_iter()
            .take(max)
            .filter_map(|(_, k)| {
                let d = self.docs.get(k)?;
                Some(DocChange {
                    collection: k.0.clone(),
                    id: d.id.clone()?,
                    seq: 0,
                    delta: d.doc.delta(&d.server_vv),
                })
            })
            .collect()
    }

    fn ack_push(&mut self, pushed: &[DocChange], results: &[PushResult]) {
        assert_eq!(pushed.len(), results.len(), "one result per pushed change");
        for (c, r) in pushed.iter().zip(results) {
            let key = key_of(&c.collection, &c.id);
            let Some(d) = self.docs.get_mut(&key) else {
                continue;
            };
            match r {
                PushResult::Applied | PushResult::Unchanged => {
                    d.server_vv.join(&c.delta.state.vv);
                    let d = d.clone();
                    if self.server_has_local_writes(&d) {
                        self.outbox.remove(&key);
                    }
                }
                PushResult::Refused { have } => d.server_vv = have.clone(),
                PushResult::Denied { code } => {
                    assert!(
                        !writable(&c.collection, &c.id),
                        "a writable change was denied: {code}"
                    );
                    // Kept locally, not pushed again until the document is written again.
                    self.outbox.remove(&key);
                    self.denied.insert(key);
                }
            }
        }
    }

    fn wanted(&self) -> Vec<(String, DocId, VersionVector)> {
        self.wanted
            .iter()
            .filter_map(|k| {
                let d = self.docs.get(k);
                let id = d.and_then(|d| d.id.clone())?;
                Some((
                    k.0.clone(),
                    id,
                    d.map(|d| d.doc.vv.clone()).unwrap_or_default(),
                ))
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The network and the world.

struct Conn {
    peer: usize,
    server: Option<ServerSession<SimDoc, AllPolicy>>,
    /// Frames to the big peer and to the peer, each with its arrival time (FIFO).
    up: VecDeque<(Millis, Inbound)>,
    down: VecDeque<(Millis, Vec<u8>)>,
    /// How far the session has read the feed.
    feed_pos: usize,
}

/// A batch being written: when it commits, its changes and its cursors.
type Applying = (Millis, Vec<DocChange>, Vec<(String, Cursor)>);

struct Peer {
    store: LocalStore,
    subs: Vec<Subscription>,
    session: Option<(ClientSession, u64)>,
    /// A batch being written: when it commits, and what it is.
    applying: Option<Applying>,
    reconnect_at: Option<Millis>,
}

struct World {
    rng: StdRng,
    now: Millis,
    big: BigPeer,
    peers: Vec<Peer>,
    conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    /// Every change the big peer acknowledged as applied or unchanged: (collection, id, vv).
    acknowledged: Vec<(String, DocId, VersionVector)>,
    config: serve::Config,
    trace: VecDeque<String>,
    steps: u64,
}

fn doc_id(s: &str) -> DocId {
    DocId::new(Value::String(s.to_owned())).expect("a valid id")
}

fn random_ops(rng: &mut StdRng) -> Vec<Op> {
    match rng.random_range(0..10) {
        0 => vec![Op::Delete],
        1..=2 => vec![Op::Increment {
            path: vec!["n".into()],
            by: Value::Int(rng.random_range(1..5)),
            kind: CounterKind::Counter,
        }],
        _ => vec![Op::Set {
            path: vec![FIELDS[rng.random_range(0..FIELDS.len())].to_owned()],
            value: Value::Int(rng.random_range(0..100)),
            objects: ObjectMode::Map,
        }],
    }
}

impl World {
    fn new(seed: u64) -> World {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = rng.random_range(2..=5);
        let mut peers = Vec::new();
        for i in 0..n {
            let site = SiteId(1000 + i as u128);
            let mut subs = Vec::new();
            for c in COLLECTIONS {
                if subs.is_empty() || rng.random_bool(0.7) {
                    subs.push(Subscription {
                        key: format!("sub:{c}"),
                        query: format!("SELECT * FROM {c}"),
                        args: Value::Null,
                    });
                }
            }
            peers.push(Peer {
                store: LocalStore {
                    site,
                    clock: Clock::new(site),
                    docs: BTreeMap::new(),
                    outbox: BTreeMap::new(),
                    changes: 0,
                    cursors: BTreeMap::new(),
                    wanted: BTreeSet::new(),
                    denied: BTreeSet::new(),
                },
                subs,
                session: None,
                applying: None,
                reconnect_at: Some(rng.random_range(0..500)),
            });
        }
        let config = serve::Config {
            window: rng.random_range(1..=4),
            heartbeat_ms: 5_000,
            // Small pages, so that initial syncs take several batches.
            page: rng.random_range(1..4),
            ..serve::Config::default()
        };
        World {
            rng,
            now: 0,
            big: BigPeer {
                site: SiteId(1),
                clock: Clock::new(SiteId(1)),
                docs: BTreeMap::new(),
                seq: 0,
                feed: Vec::new(),
                epoch: "e1".into(),
            },
            peers,
            conns: BTreeMap::new(),
            next_conn: 1,
            acknowledged: Vec::new(),
            config,
            trace: VecDeque::new(),
            steps: 0,
        }
    }

    fn log(&mut self, what: String) {
        if self.trace.len() >= 400 {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("{:>7} {what}", self.now));
    }

    fn delay(&mut self) -> Millis {
        self.rng.random_range(1..40)
    }

    // --- the peer side -------------------------------------------------------------------

    fn connect(&mut self, p: usize) {
        let id = self.next_conn;
        self.next_conn += 1;
        let mut session = ClientSession::new(
            client::Config {
                site: self.peers[p].store.site,
                token: "t".into(),
                welcome_timeout_ms: 10_000,
                push_max_changes: self.rng.random_range(1..6),
            },
            self.now,
        );
        let server = ServerSession::new(self.config.clone(), self.now);
        self.conns.insert(
            id,
            Conn {
                peer: p,
                server: Some(server),
                up: VecDeque::new(),
                down: VecDeque::new(),
                feed_pos: 0,
            },
        );
        self.log(format!("peer {p} connects (conn {id})"));
        let frames = drain(session.frames());
        self.peers[p].session = Some((session, id));
        self.peer_send(id, frames);
    }

    fn peer_send(&mut self, conn: u64, frames: Vec<Vec<u8>>) {
        for f in frames {
            let d = self.delay();
            let now = self.now;
            if let Some(c) = self.conns.get_mut(&conn) {
                let at = c.up.back().map_or(0, |(t, _)| *t).max(now + d);
                c.up.push_back((at, Inbound::Binary(f)));
            }
        }
    }

    /// The peer's session ends (cut, crash or failure): the big peer gets a prefix of what was
    /// in flight, then the close; what was coming to the peer is lost.
    fn drop_peer_session(&mut self, p: usize, why: &str) {
        let Some((_, conn)) = self.peers[p].session.take() else {
            return;
        };
        // A batch being written commits or not.
        if let Some((_, changes, cursors)) = self.peers[p].applying.take() {
            if self.rng.random_bool(0.5) {
                let now = self.now;
                self.peers[p].store.apply(changes, &cursors, now);
            }
        }
        let keep = {
            let c = &self.conns[&conn];
            self.rng.random_range(0..=c.up.len())
        };
        let now = self.now;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.up.truncate(keep);
            c.down.clear();
            let at = c.up.back().map_or(0, |(t, _)| *t).max(now + 1);
            c.up.push_back((at, Inbound::Closed));
        }
        let backoff = self.rng.random_range(50..1500);
        self.peers[p].reconnect_at = Some(self.now + backoff);
        self.log(format!("peer {p} drops conn {conn}: {why}"));
    }

    fn peer_failed(&mut self, p: usize, f: Failure) {
        assert!(
            !client::terminal(&f.code),
            "peer {p} failed with a terminal error: {f}"
        );
        if let Some((_, conn)) = &self.peers[p].session {
            let conn = *conn;
            if let Some(words) = ClientSession::last_words(&f) {
                self.peer_send(conn, vec![words]);
            }
        }
        self.drop_peer_session(p, &f.to_string());
    }

    /// Runs the peer's session until it waits: requests answered, frames sent.
    fn run_peer(&mut self, p: usize) {
        loop {
            let now = self.now;
            let Some((session, conn)) = &mut self.peers[p].session else {
                return;
            };
            let conn = *conn;
            let req = match session.next_request(now) {
                Ok(r) => r,
                Err(f) => return self.peer_failed(p, f),
            };
            let Some(req) = req else {
                let frames = drain(session.frames());
                while session.next_event().is_some() {}
                self.peer_send(conn, frames);
                return;
            };
            let peer = &mut self.peers[p];
            let store = &mut peer.store;
            let Some((session, _)) = &mut peer.session else {
                return;
            };
            let answer = match req {
                client::Request::Resume => {
                    let subs = peer
                        .subs
                        .iter()
                        .map(|s| (s.clone(), store.cursors.get(&s.key).cloned()))
                        .collect();
                    session.resume(now, subs, store.wanted())
                }
                client::Request::Apply {
                    changes, cursors, ..
                } => {
                    let d = self.rng.random_range(0..30);
                    peer.applying = Some((now + d, changes, cursors));
                    Ok(())
                }
                client::Request::SaveCursor { key, cursor } => {
                    store.cursors.insert(key, cursor);
                    session.cursor_saved()
                }
                client::Request::Outbox { max } => {
                    let changes = store.pending_push(max);
                    session.outbox(now, changes)
                }
                client::Request::RecordPush { changes, results } => {
                    store.ack_push(&changes, &results);
                    session.push_recorded()
                }
                client::Request::Delta {
                    collection,
                    id,
                    have,
                } => {
                    let change = store
                        .docs
                        .get(&key_of(&collection, &id))
                        .map(|d| DocChange {
                            collection: collection.clone(),
                            id: id.clone(),
                            seq: 0,
                            delta: d.doc.delta(&have),
                        });
                    session.delta(now, change)
                }
            };
            if let Err(f) = answer {
                return self.peer_failed(p, f);
            }
        }
    }

    fn finish_apply(&mut self, p: usize) {
        let Some((_, changes, cursors)) = self.peers[p].applying.take() else {
            return;
        };
        let now = self.now;
        let n = changes.len();
        let (applied, wants) = self.peers[p].store.apply(changes, &cursors, now);
        self.log(format!(
            "peer {p} applied a batch of {n}: {applied} changed, wants {wants:?}, cursors {cursors:?}"
        ));
        if let Some((s, _)) = &mut self.peers[p].session {
            if let Err(f) = s.applied(now, applied, wants) {
                return self.peer_failed(p, f);
            }
        }
        self.run_peer(p);
    }

    fn peer_receives(&mut self, p: usize, frame: Vec<u8>) {
        let now = self.now;
        let Some((s, _)) = &mut self.peers[p].session else {
            return;
        };
        if let Err(f) = s.on_frame(now, &frame) {
            return self.peer_failed(p, f);
        }
        self.run_peer(p);
    }

    fn local_write(&mut self, p: usize) {
        let c = COLLECTIONS[self.rng.random_range(0..COLLECTIONS.len())];
        let id = doc_id(IDS[self.rng.random_range(0..IDS.len())]);
        let ops = random_ops(&mut self.rng);
        let now = self.now;
        self.peers[p].store.write(c, &id, &ops, now);
        self.log(format!("peer {p} writes {c}/{id}: {ops:?}"));
        if let Some((s, _)) = &mut self.peers[p].session {
            s.push_outbox();
        }
        self.run_peer(p);
    }

    // --- the big peer's side -------------------------------------------------------------

    fn server_write(&mut self) {
        let c = COLLECTIONS[self.rng.random_range(0..COLLECTIONS.len())];
        let id = doc_id(IDS[self.rng.random_range(0..IDS.len())]);
        let ops = random_ops(&mut self.rng);
        let mut doc = self.big.state(c, &id);
        let stamp = self.big.clock.tick_at(EPOCH_MS + self.now);
        doc.apply(&ops, stamp).expect("a server write applies");
        self.big.commit(c, &id, doc);
        self.log(format!("big peer writes {c}/{id}: {ops:?}"));
        self.feed_all();
    }

    fn end_server(&mut self, conn: u64, stop: &Stop) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.server.take().is_none() {
            return;
        }
        if let Stop::Fatal { code, .. } = stop {
            assert!(
                !code.starts_with("protocol/") && !code.starts_with("crdt/"),
                "the big peer ended conn {conn} with {stop:?}"
            );
        }
        let p = c.peer;
        let (words, _) = stop.last_words();
        let now = self.now;
        if let Some(w) = words {
            let at = c.down.back().map_or(0, |(t, _)| *t).max(now + 1);
            c.down.push_back((at, w));
        }
        self.log(format!("big peer ends conn {conn}: {stop:?}"));
        // The peer sees the close after the last words.
        if self.peers[p]
            .session
            .as_ref()
            .is_some_and(|(_, id)| *id == conn)
        {
            // Delivered by `step` when the queue is empty and the server is gone.
        }
    }

    /// Runs the session of `conn` until it waits.
    fn run_server(&mut self, conn: u64) {
        loop {
            let now = self.now;
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            let Some(s) = &mut c.server else { return };
            // The feed first, as the shell drains it.
            if s.feed_seq().is_some() {
                while c.feed_pos < self.big.feed.len() {
                    let doc = self.big.feed[c.feed_pos].clone();
                    c.feed_pos += 1;
                    if let Err(stop) = s.feed(doc) {
                        return self.end_server(conn, &stop);
                    }
                }
            }
            if !s.can_pump() {
                break;
            }
            let req = match s.pump(now) {
                Ok(r) => r,
                Err(stop) => return self.end_server(conn, &stop),
            };
            if let Err(stop) = self.answer(conn, req) {
                return self.end_server(conn, &stop);
            }
        }
        self.flush_server(conn);
    }

    fn flush_server(&mut self, conn: u64) {
        let now = self.now;
        let mut frames = Vec::new();
        if let Some(c) = self.conns.get_mut(&conn) {
            if let Some(s) = &mut c.server {
                frames = drain(s.frames());
                while s.next_note().is_some() {}
            }
        }
        for f in frames {
            let d = self.delay();
            if let Some(c) = self.conns.get_mut(&conn) {
                let at = c.down.back().map_or(0, |(t, _)| *t).max(now + d);
                c.down.push_back((at, f));
            }
        }
    }

    fn answer(&mut self, conn: u64, req: Option<serve::Request>) -> Result<(), Stop> {
        let Some(req) = req else { return Ok(()) };
        let now = self.now;
        let feed_len = self.big.feed.len();
        let seq = self.big.seq;
        let epoch = self.big.epoch.clone();
        let big_site = self.big.site;
        let c = self.conns.get_mut(&conn).expect("the connection");
        let s = c.server.as_mut().expect("the session");
        match req {
            serve::Request::Hello { .. } => {
                c.feed_pos = feed_len;
                s.opened(
                    now,
                    Opened {
                        policy: AllPolicy,
                        server_site: big_site,
                        session: format!("s{conn}"),
                        user: "u".into(),
                        expires_in: None,
                        epoch,
                        feed_seq: seq,
                        client_info: None,
                    },
                )
            }
            serve::Request::Push {
                changes,
                peer,
                push,
            } => {
                let results = self.big.merge(&changes, peer, now);
                for (ch, r) in changes.iter().zip(&results) {
                    if matches!(r, PushResult::Applied | PushResult::Unchanged) {
                        self.acknowledged.push((
                            ch.collection.clone(),
                            ch.id.clone(),
                            ch.delta.state.vv.clone(),
                        ));
                    }
                }
                self.log(format!("conn {conn} push {push}: {results:?}"));
                let txn = u64::try_from(self.big.seq).unwrap_or(0);
                let c = self.conns.get_mut(&conn).expect("the connection");
                let s = c.server.as_mut().expect("the session");
                let r = s.pushed(now, txn, results);
                self.feed_all();
                r
            }
            serve::Request::Scan {
                collection,
                after,
                tombstones,
                limit,
                ..
            } => {
                let page = self.big.page(&collection, after, tombstones, limit);
                s.page(now, page)
            }
            serve::Request::Read { collection, id } => {
                let doc = self.big.docs.get(&key_of(&collection, &id)).cloned();
                s.want_read(now, doc.as_deref())
            }
        }
    }

    /// Every open session reads the feed.
    fn feed_all(&mut self) {
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            self.run_server(id);
        }
    }

    fn server_receives(&mut self, conn: u64, frame: Inbound) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(s) = &mut c.server else { return };
        let r = s.on_frame(now, frame);
        let r = r.and_then(|req| self.answer(conn, req));
        match r {
            Ok(()) => self.run_server(conn),
            Err(stop) => {
                self.flush_server(conn);
                self.end_server(conn, &stop);
            }
        }
    }

    // --- time ----------------------------------------------------------------------------

    /// Advances to the next thing that happens before `until`; false when nothing does.
    fn step(&mut self, until: Millis, chaos: bool) -> bool {
        self.steps += 1;
        if self.steps >= 300_000 {
            let mut due = Vec::new();
            for (id, c) in &self.conns {
                due.push(format!(
                    "conn {id} peer {} up {:?} down {:?} server {:?} live {}",
                    c.peer,
                    c.up.front().map(|(t, _)| t),
                    c.down.front().map(|(t, _)| t),
                    c.server.as_ref().map(|s| (s.deadline(), s.can_pump())),
                    self.peers[c.peer]
                        .session
                        .as_ref()
                        .is_some_and(|(_, s)| s == id)
                ));
            }
            for (i, p) in self.peers.iter().enumerate() {
                due.push(format!(
                    "peer {i} session {:?} applying {:?} reconnect {:?}",
                    p.session
                        .as_ref()
                        .map(|(s, c)| (c, s.deadline(), s.can_read(), s.applying())),
                    p.applying.as_ref().map(|(t, _, _)| t),
                    p.reconnect_at
                ));
            }
            panic!(
                "the simulation does not advance (stuck at {}): {}",
                self.now,
                due.join("; ")
            );
        }
        let mut next = until;
        for (id, c) in &self.conns {
            if let Some((t, _)) = c.up.front() {
                next = next.min(*t);
            }
            // A frame the peer does not read yet (its read-ahead is full) waits for the batch.
            let reads = self.peers[c.peer]
                .session
                .as_ref()
                .is_some_and(|(s, conn)| conn != id || s.can_read());
            if let Some((t, _)) = c.down.front().filter(|_| reads) {
                next = next.min(*t);
            }
            if let Some(s) = &c.server {
                next = next.min(s.deadline());
            }
        }
        for p in &self.peers {
            if let Some((s, _)) = &p.session {
                next = next.min(s.deadline());
            }
            if let Some((t, _, _)) = &p.applying {
                next = next.min(*t);
            }
            if let Some(t) = p.reconnect_at {
                next = next.min(t);
            }
        }
        if chaos {
            next = next.min(self.now + self.rng.random_range(1..200));
        }
        if next >= until {
            self.now = until;
            return false;
        }
        self.now = self.now.max(next);
        let now = self.now;
        if chaos && next < until {
            self.chaos();
        }
        // Deliveries.
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            while let Some((t, _)) = self.conns[&id].up.front() {
                if *t > now {
                    break;
                }
                let Some((_, f)) = self.conns.get_mut(&id).and_then(|c| c.up.pop_front()) else {
                    break;
                };
                self.server_receives(id, f);
            }
            loop {
                let c = &self.conns[&id];
                let p = c.peer;
                let live = self.peers[p]
                    .session
                    .as_ref()
                    .is_some_and(|(_, s)| *s == id);
                if !live {
                    // Nobody reads this connection any more.
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.down.clear();
                    }
                    break;
                }
                let can_read = self.peers[p]
                    .session
                    .as_ref()
                    .is_some_and(|(s, _)| s.can_read());
                match c.down.front() {
                    Some((t, _)) if *t <= now && can_read => {
                        let Some((_, f)) = self.conns.get_mut(&id).and_then(|c| c.down.pop_front())
                        else {
                            break;
                        };
                        self.peer_receives(p, f);
                    }
                    None if c.server.is_none() => {
                        // The big peer closed and everything it said has arrived.
                        self.drop_peer_session(p, "the big peer closed the connection");
                        break;
                    }
                    _ => break,
                }
            }
        }
        // Connections both sides are done with.
        let peers = &self.peers;
        self.conns.retain(|id, c| {
            c.server.is_some()
                || !c.up.is_empty()
                || peers[c.peer].session.as_ref().is_some_and(|(_, s)| s == id)
        });
        // Timers.
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            let due = self.conns[&id]
                .server
                .as_ref()
                .is_some_and(|s| s.deadline() <= now);
            if due {
                let r = self
                    .conns
                    .get_mut(&id)
                    .and_then(|c| c.server.as_mut())
                    .map(|s| s.on_timer(now));
                match r {
                    Some(Err(stop)) => self.end_server(id, &stop),
                    _ => self.flush_server(id),
                }
            }
        }
        for p in 0..self.peers.len() {
            if self.peers[p]
                .applying
                .as_ref()
                .is_some_and(|(t, _, _)| *t <= now)
            {
                self.finish_apply(p);
            }
            if let Some((s, _)) = &mut self.peers[p].session {
                if s.deadline() <= now {
                    if let Err(f) = s.on_timer(now) {
                        // Silence is not a protocol error here: the peer reconnects.
                        self.drop_peer_session(p, &f.to_string());
                        continue;
                    }
                    self.run_peer(p);
                }
            }
            if self.peers[p].reconnect_at.is_some_and(|t| t <= now)
                && self.peers[p].session.is_none()
            {
                self.peers[p].reconnect_at = None;
                self.connect(p);
            }
        }
        true
    }

    fn chaos(&mut self) {
        let n = self.peers.len();
        match self.rng.random_range(0..100) {
            0..=24 => {
                let p = self.rng.random_range(0..n);
                self.local_write(p);
            }
            25..=32 => self.server_write(),
            33..=36 => {
                let p = self.rng.random_range(0..n);
                self.drop_peer_session(p, "cut");
            }
            38..=39 => {
                // A peer forgets a subscription's cursor (`Store::forget_cursor`, or the same
                // query subscribed anew): its next session subscribes from scratch, though it
                // holds documents of the collection.
                let p = self.rng.random_range(0..n);
                let subs = self.peers[p].subs.len();
                let key = self.peers[p].subs[self.rng.random_range(0..subs)]
                    .key
                    .clone();
                self.peers[p].store.cursors.remove(&key);
                self.log(format!("peer {p} forgets the cursor of {key}"));
            }
            37 => {
                // The big peer's side of a connection ends (a restart, say).
                let ids: Vec<u64> = self.conns.keys().copied().collect();
                if !ids.is_empty() {
                    let id = ids[self.rng.random_range(0..ids.len())];
                    self.end_server(id, &Stop::Shutdown);
                }
            }
            _ => {}
        }
    }

    fn check(&self) -> Result<(), String> {
        for (c, id, vv) in &self.acknowledged {
            let have = self.big.state(c, id).vv;
            if !have.dominates(vv) {
                return Err(format!(
                    "{c}/{id}: acknowledged {vv:?}, the big peer has {have:?}"
                ));
            }
        }
        for (p, peer) in self.peers.iter().enumerate() {
            let site = peer.store.site;
            for ((c, _), d) in &peer.store.docs {
                let Some(id) = &d.id else { continue };
                let big = self.big.state(c, id);
                if !writable(c, id) {
                    // Denied, never written, and never reported as applied (the acknowledged
                    // check above).
                    if big.vv.get(site) > Hlc::default() {
                        return Err(format!(
                            "peer {p}: its write to {c}/{id} was denied, yet the big peer holds it"
                        ));
                    }
                    continue;
                }
                if big.vv.get(site) < d.doc.vv.get(site) {
                    return Err(format!(
                        "peer {p}: its write to {c}/{id} never reached the big peer"
                    ));
                }
            }
            for s in &peer.subs {
                let c = s.key.trim_start_matches("sub:");
                for doc in self.big.docs.values().filter(|d| d.collection == c) {
                    let local = peer.store.docs.get(&key_of(c, &doc.id)).map(|d| &d.doc);
                    // A fresh subscription's first page leaves tombstones out
                    // (docs/sync-protocol.md, section 4): a peer that never had a document need
                    // not hold its tombstone.
                    // The same goes for a peer whose copy is deleted too (the tombstones may
                    // differ in who removed it).
                    if doc.state.is_deleted() && local.is_none_or(Doc::is_deleted) {
                        continue;
                    }
                    let local = local.cloned().unwrap_or_default();
                    if !writable(c, &doc.id) {
                        // The peer keeps its denied writes: it holds everything the big peer has,
                        // and more.
                        if !local.vv.dominates(&doc.state.vv) {
                            return Err(format!(
                                "peer {p} lacks the big peer's {c}/{}: {:?} < {:?}",
                                doc.id, local.vv, doc.state.vv
                            ));
                        }
                        continue;
                    }
                    if local != doc.state {
                        return Err(format!(
                            "peer {p} did not converge on {c}/{}: {:?} != big peer's {:?}",
                            doc.id,
                            local.materialize(),
                            doc.state.materialize()
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn drain(frames: &mut bigpeer_sync_core::Frames) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(f) = frames.pop() {
        out.push(f);
    }
    out
}

/// One seeded run; `Err` says what went wrong.
fn run(seed: u64) -> Result<(), String> {
    let mut w = World::new(seed);
    let chaos_until = w.rng.random_range(3_000..10_000);
    while w.step(chaos_until, true) {}
    // Heal: nothing breaks any more; everyone reconnects and syncs.
    let settle_until = chaos_until + 30_000;
    while w.step(settle_until, false) {}
    for (p, peer) in w.peers.iter().enumerate() {
        let line = format!(
            "end: peer {p} session {:?} outbox {} wanted {:?} cursors {:?}",
            peer.session.as_ref().map(|(s, c)| (c, s.is_open())),
            peer.store.outbox.len(),
            peer.store.wanted,
            peer.store.cursors
        );
        w.trace.push_back(line);
    }
    w.check().map_err(|e| {
        let tail: Vec<&str> = w.trace.iter().map(String::as_str).collect();
        format!("{e}\n--- last events ---\n{}", tail.join("\n"))
    })
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Runs this test's share of the seeds (or the one `BIGPEER_SIM_SEED`).
fn seeds(part: u64, parts: u64) {
    let seeds: Vec<u64> = match env_u64("BIGPEER_SIM_SEED") {
        Some(s) if s % parts == part => vec![s],
        Some(_) => return,
        None => {
            let runs = env_u64("BIGPEER_SIM_RUNS").unwrap_or(2000);
            (0..runs).filter(|s| s % parts == part).collect()
        }
    };
    for seed in seeds {
        let r = std::panic::catch_unwind(|| run(seed));
        let failure = match r {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(p) => p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic".into()),
        };
        panic!(
            "simulation seed {seed} failed: {failure}\n\
             replay it with: BIGPEER_SIM_SEED={seed} cargo nextest run -p bigpeer-sync-core --test sim"
        );
    }
}

#[test]
fn simulated_peers_converge_and_lose_nothing_acknowledged_0() {
    seeds(0, 4);
}

#[test]
fn simulated_peers_converge_and_lose_nothing_acknowledged_1() {
    seeds(1, 4);
}

#[test]
fn simulated_peers_converge_and_lose_nothing_acknowledged_2() {
    seeds(2, 4);
}

#[test]
fn simulated_peers_converge_and_lose_nothing_acknowledged_3() {
    seeds(3, 4);
}

/// The runs are deterministic: a seed replays exactly.
#[test]
fn a_seed_replays_exactly() {
    let trace = |seed| {
        let mut w = World::new(seed);
        while w.step(8_000, true) {}
        while w.step(30_000, false) {}
        w.trace
    };
    assert_eq!(trace(7), trace(7));
}
