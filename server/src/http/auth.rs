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

/// Reads a JSON body: call it only once the request's credentials are checked, so that nobody
/// without them makes the server read (and hold) a body. Handlers take `web::Payload`, which reads
/// nothing by itself. The body's limits and error answers are the app's `JsonConfig`'s
/// ([`super::store::json_config`]).
pub async fn json_body<T: serde::de::DeserializeOwned + 'static>(
    req: &HttpRequest,
    payload: actix_web::web::Payload,
) -> Result<T, actix_web::HttpResponse> {
    use actix_web::FromRequest as _;
    let mut payload = payload.into_inner();
    match actix_web::web::Json::<T>::from_request(req, &mut payload).await {
        Ok(json) => Ok(json.into_inner()),
        Err(e) => Err(e.error_response()),
    }
}

/// Constant-time comparison, so that timing reveals neither how much of a secret matched nor
/// its length: both sides are hashed (SHA-256) first, and the digests compared with `subtle`.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    use sha2::{Digest as _, Sha256};
    use subtle::ConstantTimeEq as _;
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_compare() {
        assert!(super::secrets_equal("abc", "abc"));
        assert!(!super::secrets_equal("abc", "abd"));
        assert!(!super::secrets_equal("abc", "abcd"));
        assert!(!super::secrets_equal("", "a"));
        assert!(super::secrets_equal("", ""));
    }

    /// The class of bug: a handler that extracts a JSON body (`web::Json<T>` as an argument)
    /// reads it before it can check the credentials. Every handler reads bodies with
    /// `json_body` after admission instead.
    #[test]
    fn no_handler_reads_a_body_before_admission() {
        let sources = [
            ("store.rs", include_str!("store.rs")),
            ("legacy.rs", include_str!("legacy.rs")),
            ("write.rs", include_str!("write.rs")),
            ("admin.rs", include_str!("admin.rs")),
            ("metrics.rs", include_str!("metrics.rs")),
            ("health.rs", include_str!("health.rs")),
            ("openapi.rs", include_str!("openapi.rs")),
            ("ws.rs", include_str!("../sync/ws.rs")),
        ];
        let extractor = ["web::Json", "<"].concat();
        for (name, text) in sources {
            assert!(!text.contains(&extractor), "{name} extracts a JSON body");
        }
    }
}
