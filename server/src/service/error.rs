//! The service layer's error: every failure a request can meet, with a stable code.

use bigpeer_dql::DqlError;

use crate::auth::AuthError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Invalid, unsupported or failing DQL (`query/invalid`, `query/unsupported`,
    /// `query/evaluation`, `query/parameter`).
    #[error("{}", .0.message)]
    Dql(DqlError),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A SELECT whose result has more items than the server returns at once.
    #[error(
        "the result has more than {limit} items: narrow the query or page it with LIMIT and OFFSET"
    )]
    ResultTooLarge { limit: usize },
}

impl From<DqlError> for ServiceError {
    fn from(e: DqlError) -> Self {
        ServiceError::Dql(e)
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Query(q) => ServiceError::Dql(*q),
            StoreError::Denied(m) => ServiceError::Auth(AuthError::Forbidden(m)),
            other => ServiceError::Store(other),
        }
    }
}

impl ServiceError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::Dql(e) => e.code.as_str(),
            ServiceError::Store(e) => e.code(),
            ServiceError::Auth(e) => e.code(),
            ServiceError::ResultTooLarge { .. } => "query/result-too-large",
        }
    }
}
