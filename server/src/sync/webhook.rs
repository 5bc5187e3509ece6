//! The authentication webhook: peers that log in with a token that is not an API key are
//! checked by the operator's own service, with Ditto's contract.
//!
//! The server `POST`s `{"appID", "provider", "token"}` (JSON) to the configured URL. The webhook
//! answers, with any 2xx status:
//!
//! ```json
//! {"authenticate": true, "expirationSeconds": 28800, "userID": "123abc",
//!  "permissions": {"read": {...}, "write": {...}}, "clientInfo": {...}}
//! ```
//!
//! (`authenticated` is accepted as a spelling of `authenticate`, as in Ditto's published schema).
//! A refusal is `{"authenticate": false}`, with any status (Ditto's samples use 401). Every other
//! answer (unreachable, timeout, a 5xx, a body that is not that shape, permissions whose
//! predicates do not parse) is a failure of the webhook, not of the peer: the peer gets
//! `auth/webhook-failed` and may retry.
//!
//! Accepted tokens are cached until they expire, so a reconnecting peer does not call the
//! webhook again; refusals are not cached. With a secret configured, each request carries
//! `X-Bigpeer-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, so the webhook
//! can check that the call comes from this server and is fresh.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit as _, Mac as _};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::auth::{now_secs, Permissions};

/// How the webhook is reached.
#[derive(Clone)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL the server posts to.
    pub url: String,
    /// Sent as `provider`.
    pub provider: String,
    /// Sent as `appID`.
    pub app_id: String,
    /// HMAC key for `X-Bigpeer-Signature`; no header without it.
    pub secret: Option<String>,
    /// How long one call may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("provider", &self.provider)
            .field("app_id", &self.app_id)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Who a token belongs to, as the webhook said.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub user: String,
    pub permissions: Permissions,
    /// Unix seconds.
    pub expires_at: i64,
    /// Passed back to the client (`clientInfo`), if the webhook sent any.
    pub client_info: Option<serde_json::Value>,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WebhookError {
    /// The webhook refused the token.
    #[error("the authentication webhook refused the token{}", .0.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Refused(Option<String>),
    /// The webhook could not be asked, or answered something that is not the contract.
    #[error("the authentication webhook failed: {0}")]
    Failed(String),
}

impl WebhookError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            WebhookError::Refused(_) => "auth/invalid-token",
            WebhookError::Failed(_) => "auth/webhook-failed",
        }
    }
}

/// The webhook's answer (both spellings of the flag).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    authenticate: Option<bool>,
    authenticated: Option<bool>,
    expiration_seconds: Option<u64>,
    #[serde(rename = "userID")]
    user_id: Option<String>,
    permissions: Option<Permissions>,
    client_info: Option<serde_json::Value>,
    user_info: Option<serde_json::Value>,
}

/// Longest an accepted token is trusted, whatever the webhook says (Ditto's `expirationSeconds`
/// is a `u32`; a week is plenty for a session and keeps a leaked token's life bounded).
const MAX_EXPIRATION: u64 = 7 * 24 * 3600;

/// Accepted tokens held at once.
const CACHE_CAPACITY: u64 = 100_000;

#[derive(Clone)]
struct Cached {
    identity: Arc<Identity>,
    valid_until: Instant,
}

struct UntilExpiry;

impl moka::Expiry<[u8; 32], Cached> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Cached,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(value.valid_until.saturating_duration_since(created_at))
    }
}

/// The webhook client with its cache of accepted tokens. Cheap to clone.
#[derive(Clone)]
pub struct AuthWebhook {
    config: Arc<WebhookConfig>,
    http: reqwest::Client,
    cache: moka::future::Cache<[u8; 32], Cached>,
}

impl std::fmt::Debug for AuthWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthWebhook")
            .field("config", &self.config)
            .field("cached", &self.cache.entry_count())
            .finish()
    }
}

impl AuthWebhook {
    pub fn new(config: WebhookConfig) -> Result<AuthWebhook, WebhookError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| WebhookError::Failed(format!("cannot build the HTTP client: {e}")))?;
        let cache = moka::future::Cache::builder()
            .max_capacity(CACHE_CAPACITY)
            .expire_after(UntilExpiry)
            .build();
        Ok(AuthWebhook {
            config: Arc::new(config),
            http,
            cache,
        })
    }

    /// Checks `token`: from the cache while an earlier answer is still valid, else by asking the
    /// webhook (concurrent logins with the same token share one call).
    pub async fn authenticate(&self, token: &str) -> Result<Arc<Identity>, WebhookError> {
        let key: [u8; 32] = Sha256::new()
            .chain_update(self.config.provider.as_bytes())
            .chain_update([0])
            .chain_update(token.as_bytes())
            .finalize()
            .into();
        for _ in 0..2 {
            let cached = self
                .cache
                .try_get_with(key, self.call(token))
                .await
                .map_err(|e| (*e).clone())?;
            if cached.identity.expires_at > now_secs() {
                return Ok(cached.identity);
            }
            // Expired by the wall clock a moment before the cache noticed: ask again.
            self.cache.invalidate(&key).await;
        }
        Err(WebhookError::Refused(Some(
            "the webhook's answer expired at once".into(),
        )))
    }

    async fn call(&self, token: &str) -> Result<Cached, WebhookError> {
        let body = serde_json::to_vec(&serde_json::json!({
            "appID": self.config.app_id,
            "provider": self.config.provider,
            "token": token,
        }))
        .map_err(|e| WebhookError::Failed(e.to_string()))?;
        let mut request = self
            .http
            .post(&self.config.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(secret) = &self.config.secret {
            request = request.header("X-Bigpeer-Signature", sign(secret, now_secs(), &body));
        }
        let started = Instant::now();
        let response = request.body(body).send().await.map_err(|e| {
            WebhookError::Failed(if e.is_timeout() {
                format!("no answer within {:?}", self.config.timeout)
            } else {
                format!("cannot reach it: {e}")
            })
        })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| WebhookError::Failed(format!("cannot read its answer: {e}")))?;
        let answer: Option<Answer> = serde_json::from_slice(&bytes).ok();
        let accepted = answer
            .as_ref()
            .and_then(|a| a.authenticate.or(a.authenticated));
        match (accepted, answer) {
            (Some(false), Some(a)) => Err(WebhookError::Refused(a.user_info.map(|v| match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            }))),
            (Some(true), Some(a)) if status.is_success() => accept(a, started),
            _ if status.is_success() => Err(WebhookError::Failed(format!(
                "its answer is not {{\"authenticate\": true|false, ...}}: {}",
                excerpt(&bytes)
            ))),
            _ => Err(WebhookError::Failed(format!(
                "it answered HTTP {status}: {}",
                excerpt(&bytes)
            ))),
        }
    }
}

fn accept(a: Answer, asked_at: Instant) -> Result<Cached, WebhookError> {
    let user = a
        .user_id
        .filter(|u| !u.is_empty())
        .ok_or_else(|| WebhookError::Failed("it accepted the token without a userID".into()))?;
    let seconds = a.expiration_seconds.ok_or_else(|| {
        WebhookError::Failed("it accepted the token without expirationSeconds".into())
    })?;
    if seconds == 0 {
        return Err(WebhookError::Refused(Some(
            "the token expires at once (expirationSeconds 0)".into(),
        )));
    }
    let seconds = seconds.min(MAX_EXPIRATION);
    let permissions = a.permissions.unwrap_or_default();
    crate::service::validate_permissions(&permissions)
        .map_err(|e| WebhookError::Failed(format!("its permissions do not parse: {e}")))?;
    // Count the lifetime from when the webhook was asked: a slow answer does not extend it.
    let elapsed = asked_at.elapsed().as_secs();
    let expires_at = now_secs().saturating_add(seconds.saturating_sub(elapsed) as i64);
    Ok(Cached {
        identity: Arc::new(Identity {
            user,
            permissions,
            expires_at,
            client_info: a.client_info,
        }),
        valid_until: asked_at + Duration::from_secs(seconds),
    })
}

/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    // An HMAC takes a key of any length: `new_from_slice` cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut s: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_over_time_and_body() {
        // Expected value computed independently (Python's hmac module).
        let s = sign("Jefe", 1_700_000_000, br#"{"token":"x"}"#);
        assert_eq!(
            s,
            "t=1700000000,v1=0fbe8b6817acca3c18677e466f707d087625b9ca72711dc5cc4a9a576757a811"
        );
        assert_ne!(sign("other", 1_700_000_000, br#"{"token":"x"}"#), s);
    }
}
