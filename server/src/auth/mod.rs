//! Authentication and permissions: API keys (stored hashed), the permission model and its checks.

mod keys;
mod permissions;
pub mod rate;
mod time;

pub use keys::{
    bearer, now_secs, ApiKey, CreatedKey, KeyStore, NewKey, Revoked, CACHE_TTL, REVOCATION_POLL,
    SECRET_PREFIX,
};
pub use permissions::{Permission, Permissions, Scope};
pub use time::{format_rfc3339, parse_rfc3339};

/// Authentication and authorisation errors.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: send an API key as \"Authorization: Bearer <key>\"")]
    MissingCredentials,
    #[error("the API key is not valid")]
    InvalidKey,
    #[error("the API key has expired")]
    ExpiredKey,
    #[error("the API key has been revoked")]
    RevokedKey,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("key storage error: {0}")]
    Backend(String),
}

impl AuthError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::MissingCredentials => "auth/missing-credentials",
            AuthError::InvalidKey => "auth/invalid-key",
            AuthError::ExpiredKey => "auth/expired-key",
            AuthError::RevokedKey => "auth/revoked-key",
            AuthError::Forbidden(_) => "auth/forbidden",
            AuthError::InvalidRequest(_) => "auth/invalid-request",
            AuthError::Backend(_) => "auth/backend",
        }
    }
}

impl From<crate::store::StoreError> for AuthError {
    fn from(e: crate::store::StoreError) -> Self {
        // The store error's words, never the database's own text.
        tracing::warn!(error = ?e, "key storage error");
        AuthError::Backend(e.to_string())
    }
}

#[cfg(test)]
mod tests;
