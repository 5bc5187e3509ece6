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
}

impl PeerError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            PeerError::Dql(e) => e.code.as_str(),
            PeerError::Args(_) => "query/invalid",
            PeerError::Storage(_) | PeerError::Io(_) => "store/io",
            PeerError::Corrupt(_) => "store/corrupt",
            PeerError::Schema(e) => e.code(),
            PeerError::Protocol(_) => "protocol/malformed",
            PeerError::UnsupportedFormat { .. } => "store/unsupported-version",
        }
    }

    /// True for errors caused by the statement or its arguments (not by the store).
    pub fn is_user_error(&self) -> bool {
        matches!(self, PeerError::Dql(_) | PeerError::Args(_))
    }
}

pub type Result<T, E = PeerError> = std::result::Result<T, E>;
