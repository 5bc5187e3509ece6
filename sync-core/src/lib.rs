//! The sync protocol `bigpeer-sync.1` (`docs/sync-protocol.md`) as sans-IO state machines.
//!
//! Both sides of a session live here: [`serve::ServerSession`] (the side that holds the
//! subscriptions: the big peer) and [`client::ClientSession`] (the side that subscribes and
//! pushes: a small peer). Neither does any IO, reads a clock or spawns anything. A shell owns the
//! socket, the timers, the store and the change feed, and drives a session with three kinds of
//! calls:
//!
//! - **inputs**: a frame received, the store's answer to a request, a change from the feed, a
//!   timer fired (`now` is always given by the shell, in milliseconds of its own monotonic
//!   clock, so the same code runs in real and in virtual time);
//! - **requests** returned by those calls: what the session needs from the store (authenticate
//!   a hello, merge a push, read a page, apply a batch, ...). The shell answers each one with
//!   the matching input before it feeds the session anything else;
//! - **outputs** drained after every call: frames to send ([`Frames`]) and notes for the logs
//!   and metrics.
//!
//! A session that must end returns a [`Stop`] (server) or a failure (client): the shell sends
//! the final frame it names and closes the connection with its close code.
//!
//! Every wire message, error code, close code and limit of the protocol is decided here; the
//! shells only move bytes and run store operations. `tests/sim.rs` runs both sides against each
//! other in virtual time, over a lossy network, with a store that uses the real CRDT.

pub mod client;
pub mod known;
pub mod serve;

use std::collections::VecDeque;

/// The `Hello` feature by which a peer asks for tombstones in fresh subscriptions too
/// (`docs/sync-protocol.md`, section 4): it may hold documents of the collection without a cursor
/// (its own writes, another subscription's, a cursor forgotten or of another epoch), and keeps
/// them live when their deletion never reaches it. Every [`client::ClientSession`] announces it.
pub const FEATURE_FRESH_TOMBSTONES: &str = "fresh-tombstones";

/// Milliseconds of the shell's monotonic clock (any origin, never going back).
pub type Millis = u64;

// WebSocket close codes (`docs/sync-protocol.md`, section 7).
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_PROTOCOL: u16 = 1002;
pub const CLOSE_POLICY: u16 = 1008;
pub const CLOSE_TOO_BIG: u16 = 1009;
pub const CLOSE_INTERNAL: u16 = 1011;

/// One frame (or transport event) received from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A binary message: one protocol message.
    Binary(Vec<u8>),
    /// A text message (not allowed by the protocol).
    Text,
    /// A frame larger than the session's `max_frame`; the transport reads nothing after it.
    TooLarge,
    /// The transport broke (a WebSocket protocol violation); nothing more will come.
    Broken(String),
    /// The peer closed the connection.
    Closed,
}

/// Frames a session wants sent, in order.
#[derive(Debug, Default)]
pub struct Frames(VecDeque<Vec<u8>>);

impl Frames {
    pub(crate) fn push(&mut self, frame: Vec<u8>) {
        self.0.push_back(frame);
    }

    /// The next frame to send.
    pub fn pop(&mut self) -> Option<Vec<u8>> {
        self.0.pop_front()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Why a server session ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
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

impl Stop {
    pub fn fatal(code: &str, message: impl Into<String>, close: u16) -> Stop {
        Stop::Fatal {
            code: code.to_owned(),
            message: message.into(),
            close,
        }
    }

    /// The last frame to send (best effort: a peer that does not read gets only the close), and
    /// the WebSocket close code.
    pub fn last_words(&self) -> (Option<Vec<u8>>, u16) {
        use bigpeer_schema::wire::Msg;
        match self {
            Stop::Fatal {
                code,
                message,
                close,
            } => (
                Some(
                    Msg::Error {
                        code: code.clone(),
                        message: message.clone(),
                        fatal: true,
                    }
                    .encode(),
                ),
                *close,
            ),
            Stop::Quiet(close) => (None, *close),
            Stop::Shutdown => (
                Some(
                    Msg::Bye {
                        reason: "the server is shutting down".into(),
                    }
                    .encode(),
                ),
                CLOSE_GOING_AWAY,
            ),
        }
    }
}

/// A failure that ends a client session: a stable code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: String,
    pub message: String,
}

impl Failure {
    pub fn new(code: &str, message: impl Into<String>) -> Failure {
        Failure {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}
