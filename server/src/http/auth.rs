//! Who is calling: the permissions of a request.

use actix_web::HttpRequest;

use crate::app::AppState;
use crate::auth::{bearer, AuthError};
use crate::service::{Access, ServiceError};

/// Why a request may not go on.
#[derive(Debug)]
pub enum Refusal {
    Error(ServiceError),
    /// Over a rate limit: retry after this many seconds.
    RateLimited(u64),
}

impl From<ServiceError> for Refusal {
    fn from(e: ServiceError) -> Self {
        Refusal::Error(e)
    }
}

/// Applies the rate limits, then authenticates: the permissions of the request.
pub async fn admit(req: &HttpRequest, state: &AppState) -> Result<Access, Refusal> {
    if let Some(ip) = req.peer_addr().map(|a| a.ip()) {
        state.limits.check_ip(ip).map_err(Refusal::RateLimited)?;
    }
    if state.playground {
        return Ok(Access::all());
    }
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(ServiceError::Auth(AuthError::MissingCredentials))?;
    let secret = bearer(header).ok_or(ServiceError::Auth(AuthError::MissingCredentials))?;
    let key = state
        .keys
        .authenticate(secret)
        .await
        .map_err(ServiceError::Auth)?;
    state
        .limits
        .check_key(&key.id)
        .map_err(Refusal::RateLimited)?;
    Ok(Access::new(key.permissions.clone()))
}

/// Constant-time comparison, so that timing does not reveal how much of a secret matched.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_compare() {
        assert!(super::secrets_equal("abc", "abc"));
        assert!(!super::secrets_equal("abc", "abd"));
        assert!(!super::secrets_equal("abc", "abcd"));
    }
}
