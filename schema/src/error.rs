//! The one error type of the `schema` crate.

/// Errors raised by the document model. Each variant has a stable [`SchemaError::code`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchemaError {
    /// A document id of a type Ditto does not accept (float or null, also nested).
    #[error("invalid document id: {0}")]
    InvalidId(String),
    /// A value that cannot be represented (NaN or infinite floats, ...).
    #[error("invalid value: {0}")]
    InvalidValue(String),
    /// A CRDT blob or delta that does not decode.
    #[error("corrupt CRDT encoding: {0}")]
    Corrupt(String),
    /// An encoding produced by a newer (unknown) format version.
    #[error("unsupported CRDT encoding version {0}")]
    UnsupportedVersion(u8),
    /// An operation that does not fit the field's CRDT type.
    #[error("{0}")]
    TypeMismatch(String),
    /// A delta whose base version vector the receiver does not dominate.
    #[error("delta base not dominated by the receiver's version vector")]
    BaseNotDominated,
    /// A write over one of the [`crate::limits`].
    #[error(transparent)]
    Limit(#[from] crate::limits::LimitError),
}

impl SchemaError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            SchemaError::InvalidId(_) => "document/invalid-id",
            SchemaError::InvalidValue(_) => "document/invalid-value",
            SchemaError::Corrupt(_) => "crdt/corrupt",
            SchemaError::UnsupportedVersion(_) => "crdt/unsupported-version",
            SchemaError::TypeMismatch(_) => "crdt/type-mismatch",
            SchemaError::BaseNotDominated => "crdt/base-not-dominated",
            SchemaError::Limit(e) => e.code(),
        }
    }
}

pub type Result<T, E = SchemaError> = std::result::Result<T, E>;
