//! The crate's one error type.

use bigpeer_dql::DqlError;
use bigpeer_schema::SchemaError;

/// Errors of the small peer. Each has a stable [`PeerError::code`].
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// A statement that does not parse, check or evaluate (the server answers the same).
    #[error(transparent)]
    Dql(#[from] DqlError),
    /// Arguments that are not a JSON object of values.
    #[error("invalid arguments: {0}")]
    Args(String),
    /// SQLite failed (I/O, a locked database past the busy timeout, a full disk, ...).
    #[error("storage error: {0}")]
    Storage(#[from] rusqlite::Error),
    /// A stored row that does not decode (damaged file, or written by a newer version).
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// A document model error (a CRDT state or id that does not decode).
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The sync client's input does not fit the protocol (for example a `PushAck` with the wrong
    /// number of results).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The database was written by a newer version of this crate.
    #[error("store format {found} is newer than this program supports ({supported})")]
    UnsupportedFormat { found: i64, supported: i64 },
    /// Creating the data directory failed.
    #[error("cannot use data directory: {0}")]
    Io(#[from] std::io::Error),
    /// The sync client failed, or the big peer ended the session with an error (see
    /// [`SyncFailure`] for the codes).
    #[error(transparent)]
    Sync(#[from] SyncFailure),
}

/// Why syncing failed: a stable code and a message. Codes of the client itself:
///
/// | code | meaning |
/// |---|---|
/// | `sync/invalid-url` | the URL is not `ws://host[:port]` or `wss://host[:port]` |
/// | `sync/invalid-ca` | the CA certificate file is unreadable or holds no PEM certificate |
/// | `sync/untrusted-certificate` | the TLS handshake refused the big peer's certificate (not in the CA file and not signed by a trusted CA, expired, made for another name, a bad signature); the message says why and what to do |
/// | `sync/unreachable` | the big peer could not be reached (DNS, refused, a TLS failure other than the certificate, no answer in time) |
/// | `sync/refused` | the big peer refused the WebSocket upgrade (for example no common protocol) |
/// | `sync/timeout` | no message from the big peer for twice its heartbeat, or a wait that ran out |
/// | `sync/disconnected` | the connection broke |
/// | `sync/stopped` | the client was stopped (or dropped) |
///
/// Errors the big peer sends keep its code: `auth/invalid-token`, `auth/expired`,
/// `auth/forbidden` (a denied push), `query/invalid`, `query/unsupported` (a failed
/// subscription), `protocol/...`, `sync/slow-consumer`, `internal`, ... (see
/// `docs/sync-protocol.md`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SyncFailure {
    pub code: String,
    pub message: String,
}

impl SyncFailure {
    pub fn new(code: &str, message: impl Into<String>) -> SyncFailure {
        SyncFailure {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

impl PeerError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &str {
        match self {
            PeerError::Dql(e) => e.code.as_str(),
            PeerError::Args(_) => "query/invalid",
            PeerError::Storage(_) | PeerError::Io(_) => "store/io",
            PeerError::Corrupt(_) => "store/corrupt",
            PeerError::Schema(e) => e.code(),
            PeerError::Protocol(_) => "protocol/malformed",
            PeerError::UnsupportedFormat { .. } => "store/unsupported-version",
            PeerError::Sync(f) => &f.code,
        }
    }

    /// True for errors caused by the statement or its arguments (not by the store), a write
    /// over a limit included.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            PeerError::Dql(_) | PeerError::Args(_) | PeerError::Schema(SchemaError::Limit(_))
        )
    }
}

pub type Result<T, E = PeerError> = std::result::Result<T, E>;
