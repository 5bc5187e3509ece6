//! Errors of the store.

use bigpeer_schema::SchemaError;

/// Errors raised while talking to Postgres or merging documents.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Postgres could not be reached or refused the connection.
    #[error("cannot connect to Postgres: {0}")]
    Connect(#[source] sqlx::Error),
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored or received CRDT blob, id or value is invalid.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// A DQL statement failed while it ran inside a write (an id conflict, a type error); the
    /// service layer turns it back into the DQL error.
    #[error("{}", .0.message)]
    Query(Box<bigpeer_dql::DqlError>),
    /// A write the caller is not permitted to make; nothing of the statement is written.
    #[error("{0}")]
    Denied(String),
    /// A write job touched a document it did not declare (a bug in the caller).
    #[error("document {id} in collection \"{collection}\" was not locked by this write")]
    NotLocked { collection: String, id: String },
    /// The error of a shared transaction, as seen by the other jobs in it.
    #[error("{message}")]
    Shared { code: &'static str, message: String },
    /// A delta could not be applied because the receiver lacks state it assumes.
    #[error("delta for {collection}/{id} is based on state this store does not have")]
    BaseNotDominated { collection: String, id: String },
}

impl StoreError {
    /// A write refused for what it holds (over a limit of `bigpeer_schema::limits`): nothing of
    /// it was kept, and the caller's other writes are not affected.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            StoreError::Schema(bigpeer_schema::SchemaError::Limit(_))
        )
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Connect(_) => "store/unavailable",
            StoreError::Migrate(_) => "store/migration",
            StoreError::Database(sqlx::Error::Database(d))
                if d.code().as_deref() == Some("57014") =>
            {
                "store/timeout"
            }
            StoreError::Database(sqlx::Error::PoolTimedOut) => "store/unavailable",
            StoreError::Database(_) => "store/backend",
            StoreError::Schema(e) => e.code(),
            StoreError::BaseNotDominated { .. } => "crdt/base-not-dominated",
            StoreError::NotLocked { .. } => "internal",
            StoreError::Query(e) => e.code.as_str(),
            StoreError::Denied(_) => "auth/forbidden",
            StoreError::Shared { code, .. } => code,
        }
    }
}
