//! Who is calling: the permissions of a request.

use actix_web::HttpRequest;

use crate::app::AppState;
use crate::auth::{bearer, AuthError};
use crate::service::{Access, ServiceError};

/// The permissions of a request: everything in playground mode, else the API key's.
pub async fn access(req: &HttpRequest, state: &AppState) -> Result<Access, ServiceError> {
    if state.playground {
        return Ok(Access::all());
    }
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(ServiceError::Auth(AuthError::MissingCredentials))?;
    let secret = bearer(header).ok_or(ServiceError::Auth(AuthError::MissingCredentials))?;
    let key = state.keys.authenticate(secret).await?;
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
