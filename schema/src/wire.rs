//! The sync protocol's messages and their binary encoding (see `docs/sync-protocol.md`).
//!
//! Every WebSocket binary message carries exactly one [`Msg`]: a one-byte tag, then the body.
//! Bodies use the primitives of [`crate::codec`] (LEB128 varints, length-prefixed bytes, tagged
//! values); document changes carry a [`Delta`] in its own versioned encoding.
//!
//! Forward compatibility: tags from `0x80` up are optional: a peer that does not know one decodes
//! it as [`Msg::Unknown`] and ignores it. An unknown tag below `0x80` is a protocol error.

use crate::codec::{corrupt, write_bytes, write_value, write_varint, Reader};
use crate::crdt::{Delta, VersionVector};
use crate::error::{Result, SchemaError};
use crate::hlc::{Hlc, SiteId};
use crate::id::DocId;
use crate::value::Value;

/// The protocol's major version, also the WebSocket subprotocol `bigpeer-sync.1`.
pub const MAJOR: u16 = 1;
/// The minor version this code speaks (features added compatibly).
pub const MINOR: u16 = 0;
/// The WebSocket subprotocol name for [`MAJOR`].
pub const SUBPROTOCOL: &str = "bigpeer-sync.1";

const T_HELLO: u8 = 0x01;
const T_WELCOME: u8 = 0x02;
const T_SUBSCRIBE: u8 = 0x03;
const T_UNSUBSCRIBE: u8 = 0x04;
const T_SUB_STATE: u8 = 0x05;
const T_BATCH: u8 = 0x06;
const T_ACK: u8 = 0x07;
const T_PUSH: u8 = 0x08;
const T_PUSH_ACK: u8 = 0x09;
const T_WANT: u8 = 0x0a;
const T_ERROR: u8 = 0x0b;
const T_PING: u8 = 0x0c;
const T_PONG: u8 = 0x0d;
const T_BYE: u8 = 0x0e;
const T_OPTIONAL_MIN: u8 = 0x80;
const T_CLIENT_INFO: u8 = 0x80;

/// A position in the big peer's change feed: everything up to `seq` of sequence space `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor {
    pub epoch: String,
    pub seq: u64,
}

/// One document's change: a delta against `delta.base`.
#[derive(Debug, Clone, PartialEq)]
pub struct DocChange {
    pub collection: String,
    pub id: DocId,
    /// Feed position of this change on the sender (0 from small peers).
    pub seq: u64,
    pub delta: Delta,
}

/// One document's change whose delta is already encoded (as [`Delta::encode`] gives it): how a
/// sender that holds stored bytes builds a batch without decoding them.
#[derive(Debug, Clone, Copy)]
pub struct EncodedChange<'a> {
    pub collection: &'a str,
    pub id: &'a DocId,
    pub seq: u64,
    pub delta: &'a [u8],
}

/// The frame of `Msg::Batch { batch, subs, changes, cursor }` from changes whose deltas are
/// already encoded: the same bytes as [`Msg::encode`] gives for the decoded changes.
pub fn encode_batch(
    batch: u64,
    subs: &[u32],
    changes: &[EncodedChange<'_>],
    cursor: &Option<Cursor>,
) -> Vec<u8> {
    let size: usize = changes
        .iter()
        .map(|c| c.collection.len() + c.delta.len() + 48)
        .sum();
    let mut w = W(Vec::with_capacity(64 + size));
    w.batch_head(batch, subs);
    w.u(changes.len() as u64);
    for c in changes {
        w.change(c.collection, c.id, c.seq, c.delta);
    }
    w.cursor_opt(cursor);
    w.0
}

/// The most bytes one change takes in a `Batch` frame, its delta's `delta_len` bytes included
/// (a sender sizes batches with it to stay within `max_frame`).
pub fn change_size(collection: &str, id: &DocId, delta_len: usize) -> usize {
    // Length prefixes and the sequence number are varints of at most 10 bytes each.
    collection.len() + id.value().canonical_bytes().len() + delta_len + 30
}

/// What happened to one pushed document.
#[derive(Debug, Clone, PartialEq)]
pub enum PushResult {
    /// Merged and durable.
    Applied,
    /// Already incorporated; nothing changed.
    Unchanged,
    /// The receiver lacks the delta's base; resend against `have` (the receiver's version
    /// vector), or as a full state.
    Refused { have: VersionVector },
    /// The sender may not write this document; `code` says why.
    Denied { code: String },
}

/// Subscription status.
#[derive(Debug, Clone, PartialEq)]
pub enum SubStatus {
    /// Accepted; the initial documents follow in batches.
    Active,
    /// Everything up to the subscription's cursor has been sent (initial sync done).
    CaughtUp { cursor: Cursor },
    /// Refused or ended; `code` is a stable error code.
    Failed { code: String, message: String },
}

/// One protocol message.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    /// Client → server, first message: who I am and my credentials.
    Hello {
        minor: u16,
        site: SiteId,
        token: String,
        features: Vec<String>,
        last_sync_ms: u64,
    },
    /// Server → client: the session is open.
    Welcome {
        minor: u16,
        site: SiteId,
        session: String,
        /// Largest frame either side may send, in bytes.
        max_frame: u64,
        /// Unacknowledged batches the server keeps in flight (the client's initial credit).
        window: u32,
        /// The client must send something (a ping at least) this often, in milliseconds.
        heartbeat_ms: u64,
        /// Seconds until the credentials expire (0 = no expiry).
        expires_in: u64,
        user: String,
    },
    /// Client → server: start syncing the documents a DQL SELECT matches.
    Subscribe {
        sub: u32,
        query: String,
        args: Value,
        cursor: Option<Cursor>,
    },
    /// Client → server: stop a subscription (documents already synced are kept).
    Unsubscribe {
        sub: u32,
    },
    /// Server → client: the state of a subscription.
    SubState {
        sub: u32,
        status: SubStatus,
    },
    /// Server → client: document changes; to be acknowledged once durable.
    Batch {
        batch: u64,
        subs: Vec<u32>,
        changes: Vec<DocChange>,
        cursor: Option<Cursor>,
    },
    /// Client → server: batches up to and including `batch` are durable; `credit` more may come.
    Ack {
        batch: u64,
        credit: u32,
    },
    /// Client → server: the peer's own writes.
    Push {
        push: u64,
        changes: Vec<DocChange>,
    },
    /// Server → client: outcome per pushed change, in order, and the transaction they made.
    PushAck {
        push: u64,
        txn: u64,
        results: Vec<PushResult>,
    },
    /// Either way: send me this document as a delta against `have`.
    Want {
        collection: String,
        id: DocId,
        have: VersionVector,
    },
    /// Either way: an error. `fatal` errors are followed by a close.
    Error {
        code: String,
        message: String,
        fatal: bool,
    },
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    /// Either way: orderly end of session.
    Bye {
        reason: String,
    },
    /// Server → client, optional, right after `Welcome`: what the authentication webhook said
    /// about this client (its `clientInfo`, any JSON value).
    ClientInfo {
        info: Value,
    },
    /// An optional message this code does not know (tag ≥ 0x80): ignore it.
    Unknown {
        tag: u8,
    },
}

impl Msg {
    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Msg::Hello { .. } => "hello",
            Msg::Welcome { .. } => "welcome",
            Msg::Subscribe { .. } => "subscribe",
            Msg::Unsubscribe { .. } => "unsubscribe",
            Msg::SubState { .. } => "sub_state",
            Msg::Batch { .. } => "batch",
            Msg::Ack { .. } => "ack",
            Msg::Push { .. } => "push",
            Msg::PushAck { .. } => "push_ack",
            Msg::Want { .. } => "want",
            Msg::Error { .. } => "error",
            Msg::Ping { .. } => "ping",
            Msg::Pong { .. } => "pong",
            Msg::Bye { .. } => "bye",
            Msg::ClientInfo { .. } => "client_info",
            Msg::Unknown { .. } => "unknown",
        }
    }

    /// Encodes the message as one frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = W(Vec::with_capacity(64));
        match self {
            Msg::Hello {
                minor,
                site,
                token,
                features,
                last_sync_ms,
            } => {
                w.tag(T_HELLO);
                w.u(u64::from(*minor));
                w.site(*site);
                w.s(token);
                w.u(features.len() as u64);
                features.iter().for_each(|f| w.s(f));
                w.u(*last_sync_ms);
            }
            Msg::Welcome {
                minor,
                site,
                session,
                max_frame,
                window,
                heartbeat_ms,
                expires_in,
                user,
            } => {
                w.tag(T_WELCOME);
                w.u(u64::from(*minor));
                w.site(*site);
                w.s(session);
                w.u(*max_frame);
                w.u(u64::from(*window));
                w.u(*heartbeat_ms);
                w.u(*expires_in);
                w.s(user);
            }
            Msg::Subscribe {
                sub,
                query,
                args,
                cursor,
            } => {
                w.tag(T_SUBSCRIBE);
                w.u(u64::from(*sub));
                w.s(query);
                write_value(&mut w.0, args);
                w.cursor_opt(cursor);
            }
            Msg::Unsubscribe { sub } => {
                w.tag(T_UNSUBSCRIBE);
                w.u(u64::from(*sub));
            }
            Msg::SubState { sub, status } => {
                w.tag(T_SUB_STATE);
                w.u(u64::from(*sub));
                match status {
                    SubStatus::Active => w.tag(0),
                    SubStatus::CaughtUp { cursor } => {
                        w.tag(1);
                        w.cursor(cursor);
                    }
                    SubStatus::Failed { code, message } => {
                        w.tag(2);
                        w.s(code);
                        w.s(message);
                    }
                }
            }
            Msg::Batch {
                batch,
                subs,
                changes,
                cursor,
            } => {
                w.batch_head(*batch, subs);
                w.changes(changes);
                w.cursor_opt(cursor);
            }
            Msg::Ack { batch, credit } => {
                w.tag(T_ACK);
                w.u(*batch);
                w.u(u64::from(*credit));
            }
            Msg::Push { push, changes } => {
                w.tag(T_PUSH);
                w.u(*push);
                w.changes(changes);
            }
            Msg::PushAck { push, txn, results } => {
                w.tag(T_PUSH_ACK);
                w.u(*push);
                w.u(*txn);
                w.u(results.len() as u64);
                for r in results {
                    match r {
                        PushResult::Applied => w.tag(0),
                        PushResult::Unchanged => w.tag(1),
                        PushResult::Refused { have } => {
                            w.tag(2);
                            w.vv(have);
                        }
                        PushResult::Denied { code } => {
                            w.tag(3);
                            w.s(code);
                        }
                    }
                }
            }
            Msg::Want {
                collection,
                id,
                have,
            } => {
                w.tag(T_WANT);
                w.s(collection);
                write_value(&mut w.0, id.value());
                w.vv(have);
            }
            Msg::Error {
                code,
                message,
                fatal,
            } => {
                w.tag(T_ERROR);
                w.s(code);
                w.s(message);
                w.tag(u8::from(*fatal));
            }
            Msg::Ping { nonce } => {
                w.tag(T_PING);
                w.u(*nonce);
            }
            Msg::Pong { nonce } => {
                w.tag(T_PONG);
                w.u(*nonce);
            }
            Msg::Bye { reason } => {
                w.tag(T_BYE);
                w.s(reason);
            }
            Msg::ClientInfo { info } => {
                w.tag(T_CLIENT_INFO);
                write_value(&mut w.0, info);
            }
            Msg::Unknown { tag } => w.tag(*tag),
        }
        w.0
    }

    /// Decodes one frame. Never panics: malformed input is [`SchemaError::Corrupt`].
    pub fn decode(frame: &[u8]) -> Result<Msg> {
        let mut r = Reader::new(frame);
        let tag = r.u8()?;
        let msg = match tag {
            T_HELLO => {
                let minor = u16_of(r.varint()?)?;
                let site = site(&mut r)?;
                let token = r.string()?;
                let n = r.len(1)?;
                let features = (0..n).map(|_| r.string()).collect::<Result<Vec<_>>>()?;
                Msg::Hello {
                    minor,
                    site,
                    token,
                    features,
                    last_sync_ms: r.varint()?,
                }
            }
            T_WELCOME => Msg::Welcome {
                minor: u16_of(r.varint()?)?,
                site: site(&mut r)?,
                session: r.string()?,
                max_frame: r.varint()?,
                window: u32_of(r.varint()?)?,
                heartbeat_ms: r.varint()?,
                expires_in: r.varint()?,
                user: r.string()?,
            },
            T_SUBSCRIBE => Msg::Subscribe {
                sub: u32_of(r.varint()?)?,
                query: r.string()?,
                args: r.value(0)?,
                cursor: cursor_opt(&mut r)?,
            },
            T_UNSUBSCRIBE => Msg::Unsubscribe {
                sub: u32_of(r.varint()?)?,
            },
            T_SUB_STATE => {
                let sub = u32_of(r.varint()?)?;
                let status = match r.u8()? {
                    0 => SubStatus::Active,
                    1 => SubStatus::CaughtUp {
                        cursor: cursor(&mut r)?,
                    },
                    2 => SubStatus::Failed {
                        code: r.string()?,
                        message: r.string()?,
                    },
                    t => return Err(corrupt(&format!("unknown subscription status {t}"))),
                };
                Msg::SubState { sub, status }
            }
            T_BATCH => {
                let batch = r.varint()?;
                let n = r.len(1)?;
                let subs = (0..n)
                    .map(|_| r.varint().and_then(u32_of))
                    .collect::<Result<Vec<_>>>()?;
                let changes = changes(&mut r)?;
                Msg::Batch {
                    batch,
                    subs,
                    changes,
                    cursor: cursor_opt(&mut r)?,
                }
            }
            T_ACK => Msg::Ack {
                batch: r.varint()?,
                credit: u32_of(r.varint()?)?,
            },
            T_PUSH => Msg::Push {
                push: r.varint()?,
                changes: changes(&mut r)?,
            },
            T_PUSH_ACK => {
                let push = r.varint()?;
                let txn = r.varint()?;
                let n = r.len(1)?;
                let mut results = Vec::with_capacity(n);
                for _ in 0..n {
                    results.push(match r.u8()? {
                        0 => PushResult::Applied,
                        1 => PushResult::Unchanged,
                        2 => PushResult::Refused { have: vv(&mut r)? },
                        3 => PushResult::Denied { code: r.string()? },
                        t => return Err(corrupt(&format!("unknown push result {t}"))),
                    });
                }
                Msg::PushAck { push, txn, results }
            }
            T_WANT => Msg::Want {
                collection: r.string()?,
                id: doc_id(&mut r)?,
                have: vv(&mut r)?,
            },
            T_ERROR => Msg::Error {
                code: r.string()?,
                message: r.string()?,
                fatal: match r.u8()? {
                    0 => false,
                    1 => true,
                    b => return Err(corrupt(&format!("invalid flag byte {b}"))),
                },
            },
            T_PING => Msg::Ping { nonce: r.varint()? },
            T_PONG => Msg::Pong { nonce: r.varint()? },
            T_BYE => Msg::Bye {
                reason: r.string()?,
            },
            T_CLIENT_INFO => Msg::ClientInfo { info: r.value(0)? },
            t if t >= T_OPTIONAL_MIN => return Ok(Msg::Unknown { tag: t }),
            t => return Err(corrupt(&format!("unknown message tag {t:#04x}"))),
        };
        r.finish()?;
        Ok(msg)
    }
}

struct W(Vec<u8>);

impl W {
    fn tag(&mut self, t: u8) {
        self.0.push(t);
    }
    fn u(&mut self, v: u64) {
        write_varint(&mut self.0, v);
    }
    fn s(&mut self, s: &str) {
        write_bytes(&mut self.0, s.as_bytes());
    }
    fn site(&mut self, s: SiteId) {
        self.0.extend_from_slice(&s.to_bytes());
    }
    fn vv(&mut self, v: &VersionVector) {
        self.u(v.len() as u64);
        for (s, h) in v.iter() {
            self.site(s);
            self.u(h.0);
        }
    }
    fn cursor(&mut self, c: &Cursor) {
        self.s(&c.epoch);
        self.u(c.seq);
    }
    fn cursor_opt(&mut self, c: &Option<Cursor>) {
        match c {
            None => self.tag(0),
            Some(c) => {
                self.tag(1);
                self.cursor(c);
            }
        }
    }
    fn batch_head(&mut self, batch: u64, subs: &[u32]) {
        self.tag(T_BATCH);
        self.u(batch);
        self.u(subs.len() as u64);
        subs.iter().for_each(|s| self.u(u64::from(*s)));
    }
    fn change(&mut self, collection: &str, id: &DocId, seq: u64, delta: &[u8]) {
        self.s(collection);
        write_value(&mut self.0, id.value());
        self.u(seq);
        write_bytes(&mut self.0, delta);
    }
    fn changes(&mut self, changes: &[DocChange]) {
        self.u(changes.len() as u64);
        for c in changes {
            self.change(&c.collection, &c.id, c.seq, &c.delta.encode());
        }
    }
}

fn u16_of(v: u64) -> Result<u16> {
    u16::try_from(v).map_err(|_| corrupt("number out of range"))
}

fn u32_of(v: u64) -> Result<u32> {
    u32::try_from(v).map_err(|_| corrupt("number out of range"))
}

fn site(r: &mut Reader<'_>) -> Result<SiteId> {
    let b = r.take(16)?;
    let mut a = [0u8; 16];
    a.copy_from_slice(b);
    Ok(SiteId::from_bytes(a))
}

fn vv(r: &mut Reader<'_>) -> Result<VersionVector> {
    let n = r.len(17)?;
    let mut v = VersionVector::new();
    for _ in 0..n {
        let s = site(r)?;
        v.observe(s, Hlc(r.varint()?));
    }
    Ok(v)
}

fn cursor(r: &mut Reader<'_>) -> Result<Cursor> {
    Ok(Cursor {
        epoch: r.string()?,
        seq: r.varint()?,
    })
}

fn cursor_opt(r: &mut Reader<'_>) -> Result<Option<Cursor>> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(cursor(r)?)),
        b => Err(corrupt(&format!("invalid flag byte {b}"))),
    }
}

fn doc_id(r: &mut Reader<'_>) -> Result<DocId> {
    let v = r.value(0)?;
    DocId::new(v).map_err(|e| match e {
        SchemaError::InvalidId(m) => corrupt(&format!("invalid document id: {m}")),
        other => other,
    })
}

fn changes(r: &mut Reader<'_>) -> Result<Vec<DocChange>> {
    let n = r.len(4)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let collection = r.string()?;
        let id = doc_id(r)?;
        let seq = r.varint()?;
        let delta = Delta::decode(r.bytes()?)?;
        out.push(DocChange {
            collection,
            id,
            seq,
            delta,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::{Doc, ObjectMode, Op};
    use crate::hlc::Clock;

    fn sample_delta() -> Delta {
        let mut d = Doc::new();
        let v = Value::parse_json(r#"{"a":1,"b":{"c":"x"}}"#).expect("json");
        let o = v.as_object().cloned().expect("object");
        d.apply(
            &[Op::Merge {
                path: vec![],
                value: o,
                objects: ObjectMode::Map,
            }],
            Clock::new(SiteId(9)).tick_at(5),
        )
        .expect("apply");
        d.delta(&VersionVector::new())
    }

    #[test]
    fn a_batch_of_encoded_deltas_is_the_same_frame() {
        let changes = vec![
            DocChange {
                collection: "cars".into(),
                id: DocId::string("a"),
                seq: 42,
                delta: sample_delta(),
            },
            DocChange {
                collection: "bikes".into(),
                id: DocId::string("b"),
                seq: 43,
                delta: Delta::default(),
            },
        ];
        let encoded: Vec<Vec<u8>> = changes.iter().map(|c| c.delta.encode()).collect();
        let refs: Vec<EncodedChange<'_>> = changes
            .iter()
            .zip(&encoded)
            .map(|(c, d)| EncodedChange {
                collection: &c.collection,
                id: &c.id,
                seq: c.seq,
                delta: d,
            })
            .collect();
        for cursor in [
            None,
            Some(Cursor {
                epoch: "e1".into(),
                seq: 43,
            }),
        ] {
            let msg = Msg::Batch {
                batch: 7,
                subs: vec![1, 3],
                changes: changes.clone(),
                cursor: cursor.clone(),
            };
            assert_eq!(encode_batch(7, &[1, 3], &refs, &cursor), msg.encode());
        }
    }

    fn all_messages() -> Vec<Msg> {
        let change = DocChange {
            collection: "cars".into(),
            id: DocId::string("a"),
            seq: 42,
            delta: sample_delta(),
        };
        let cursor = Cursor {
            epoch: "e1".into(),
            seq: 7,
        };
        let have: VersionVector = [(SiteId(3), Hlc(99))].into_iter().collect();
        vec![
            Msg::Hello {
                minor: MINOR,
                site: SiteId(5),
                token: "tok".into(),
                features: vec!["x".into()],
                last_sync_ms: 12,
            },
            Msg::Welcome {
                minor: 0,
                site: SiteId(6),
                session: "s".into(),
                max_frame: 1 << 20,
                window: 8,
                heartbeat_ms: 30_000,
                expires_in: 0,
                user: "u".into(),
            },
            Msg::Subscribe {
                sub: 1,
                query: "SELECT * FROM cars WHERE color = :c".into(),
                args: Value::parse_json(r#"{"c":"red"}"#).expect("json"),
                cursor: Some(cursor.clone()),
            },
            Msg::Unsubscribe { sub: 1 },
            Msg::SubState {
                sub: 1,
                status: SubStatus::Active,
            },
            Msg::SubState {
                sub: 1,
                status: SubStatus::CaughtUp {
                    cursor: cursor.clone(),
                },
            },
            Msg::SubState {
                sub: 2,
                status: SubStatus::Failed {
                    code: "query/invalid".into(),
                    message: "m".into(),
                },
            },
            Msg::Batch {
                batch: 3,
                subs: vec![1, 2],
                changes: vec![change.clone()],
                cursor: Some(cursor),
            },
            Msg::Ack {
                batch: 3,
                credit: 4,
            },
            Msg::Push {
                push: 9,
                changes: vec![change],
            },
            Msg::PushAck {
                push: 9,
                txn: 100,
                results: vec![
                    PushResult::Applied,
                    PushResult::Unchanged,
                    PushResult::Refused { have: have.clone() },
                    PushResult::Denied {
                        code: "auth/forbidden".into(),
                    },
                ],
            },
            Msg::Want {
                collection: "cars".into(),
                id: DocId::string("a"),
                have,
            },
            Msg::Error {
                code: "protocol/malformed".into(),
                message: "bad".into(),
                fatal: true,
            },
            Msg::Ping { nonce: 1 },
            Msg::Pong { nonce: 1 },
            Msg::Bye {
                reason: "done".into(),
            },
            Msg::ClientInfo {
                info: Value::parse_json(r#"{"plan":"pro","seats":[1,2]}"#).expect("json"),
            },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in all_messages() {
            let bytes = m.encode();
            let back = Msg::decode(&bytes);
            assert_eq!(back.as_ref().ok(), Some(&m), "{}: {back:?}", m.name());
        }
    }

    #[test]
    fn truncated_and_garbled_frames_are_errors() {
        for m in all_messages() {
            let bytes = m.encode();
            for cut in 0..bytes.len() {
                assert!(
                    Msg::decode(&bytes[..cut]).is_err(),
                    "{} cut at {cut}",
                    m.name()
                );
            }
            let mut extra = bytes.clone();
            extra.push(0);
            assert!(
                Msg::decode(&extra).is_err(),
                "{} with a trailing byte",
                m.name()
            );
        }
        assert!(Msg::decode(&[0x7f]).is_err());
        assert!(
            Msg::decode(&[T_BATCH, 1, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err(),
            "huge count"
        );
    }

    #[test]
    fn optional_unknown_messages_are_ignorable() {
        assert_eq!(
            Msg::decode(&[0x91, 1, 2, 3]).expect("optional"),
            Msg::Unknown { tag: 0x91 }
        );
    }

    #[test]
    fn invalid_ids_in_frames_are_rejected() {
        let mut bytes = vec![T_WANT];
        write_bytes(&mut bytes, b"cars");
        write_value(&mut bytes, &Value::Float(1.5));
        bytes.push(0);
        let err = Msg::decode(&bytes).expect_err("float id");
        assert_eq!(err.code(), "crdt/corrupt");
    }
}
