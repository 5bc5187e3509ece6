//! API keys: random secrets stored hashed, with a name, an expiry and permissions.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use rand::RngExt;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::{AuthError, Permissions};
use crate::store::{KeyRow, NewKeyRow, Store};

/// The part of every secret before the random characters.
pub const SECRET_PREFIX: &str = "bpk_";
const SECRET_RANDOM_CHARS: usize = 40;
const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// How long a key lookup (found or not) is cached. Bounds how long a key revoked by another
/// bigpeer process keeps working here; a revoke in this process takes effect at once.
pub const CACHE_TTL: Duration = Duration::from_millis(500);
/// How often a process that has live sync sessions looks for keys revoked by other processes.
pub const REVOCATION_POLL: Duration = Duration::from_secs(1);
/// Revocations up to this long before the watch started are reported too (a revoking
/// transaction's `now()` is its start, which can be well before it commits).
const REVOCATION_MARGIN_SECS: f64 = 60.0;

/// A stored key, without its secret.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub description: String,
    /// The first characters of the secret, to recognise a key in a list.
    pub prefix: String,
    pub permissions: Permissions,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl ApiKey {
    /// Usable at unix time `now`.
    pub fn check_active(&self, now: i64) -> Result<(), AuthError> {
        if self.revoked_at.is_some() {
            return Err(AuthError::RevokedKey);
        }
        match self.expires_at {
            Some(t) if t <= now => Err(AuthError::ExpiredKey),
            _ => Ok(()),
        }
    }
}

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub name: String,
    pub description: String,
    /// Unix seconds; must be in the future.
    pub expires_at: Option<i64>,
    pub permissions: Permissions,
}

/// A freshly created key with its secret (shown once; only its hash is stored).
#[derive(Debug, Clone)]
pub struct CreatedKey {
    pub key: ApiKey,
    pub secret: String,
}

type Hash = [u8; 32];

/// Ids of the keys revoked while this process runs, as a watch (see
/// [`KeyStore::watch_revocations`]).
pub type Revoked = watch::Receiver<Arc<BTreeSet<String>>>;

struct Revocations {
    tx: watch::Sender<Arc<BTreeSet<String>>>,
    poller: OnceLock<()>,
}

/// API key storage with a small lookup cache.
#[derive(Clone)]
pub struct KeyStore {
    store: Store,
    cache: moka::future::Cache<Hash, Option<Arc<ApiKey>>>,
    revocations: Arc<Revocations>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("cached", &self.cache.entry_count())
            .finish()
    }
}

impl KeyStore {
    /// Keys kept in `store`. A lookup whose connection turns out to be lost is retried once on
    /// a fresh connection (see [`Store::retry_read`]).
    pub fn new(store: Store) -> KeyStore {
        KeyStore {
            store,
            cache: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(CACHE_TTL)
                .build(),
            revocations: Arc::new(Revocations {
                tx: watch::Sender::new(Arc::default()),
                poller: OnceLock::new(),
            }),
        }
    }

    /// The ids of keys revoked since the first call, by this process at once and by other
    /// processes on the database within [`REVOCATION_POLL`] (the first call starts a task that
    /// looks for them; it stops when the last clone of this store is dropped). Live sync sessions
    /// end when their key appears.
    pub fn watch_revocations(&self) -> Revoked {
        self.revocations.poller.get_or_init(|| {
            tokio::spawn(poll_revocations(
                Arc::downgrade(&self.revocations),
                self.store.clone(),
                self.cache.clone(),
            ));
        });
        self.revocations.tx.subscribe()
    }

    fn revoked(&self, ids: impl IntoIterator<Item = String>) {
        let ids: Vec<String> = ids.into_iter().collect();
        self.revocations.tx.send_if_modified(|set| {
            let new: Vec<&String> = ids.iter().filter(|id| !set.contains(*id)).collect();
            if new.is_empty() {
                return false;
            }
            let set = Arc::make_mut(set);
            set.extend(new.into_iter().cloned());
            true
        });
    }

    /// Creates a key.
    pub async fn create(&self, new: NewKey) -> Result<CreatedKey, AuthError> {
        validate_name(&new.name)?;
        if let Some(t) = new.expires_at {
            if t <= now_secs() {
                return Err(AuthError::InvalidRequest(
                    "the expiry is in the past".into(),
                ));
            }
        }
        let secret = generate_secret();
        let id = format!("key_{:016x}", rand::random::<u64>());
        let prefix: String = secret.chars().take(SECRET_PREFIX.len() + 8).collect();
        let perms = serde_json::to_value(&new.permissions)
            .map_err(|e| AuthError::InvalidRequest(format!("permissions: {e}")))?;
        let created_at = self
            .store
            .insert_key(NewKeyRow {
                id: &id,
                name: &new.name,
                description: &new.description,
                secret_hash: hash(&secret).as_slice(),
                prefix: &prefix,
                permissions: &perms,
                expires_at: new.expires_at,
            })
            .await?;
        let key = ApiKey {
            id,
            name: new.name,
            description: new.description,
            prefix,
            permissions: new.permissions,
            created_at,
            expires_at: new.expires_at,
            revoked_at: None,
        };
        Ok(CreatedKey { key, secret })
    }

    /// Every key, newest first.
    pub async fn list(&self) -> Result<Vec<ApiKey>, AuthError> {
        self.store
            .list_keys()
            .await?
            .into_iter()
            .map(key_from_row)
            .collect()
    }

    /// Revokes a key; `false` when there is no such key. Takes effect at once in this process.
    pub async fn revoke(&self, id: &str) -> Result<bool, AuthError> {
        match self.store.revoke_key(id).await? {
            None => Ok(false),
            Some(h) => {
                if let Ok(h) = Hash::try_from(h.as_slice()) {
                    self.cache.invalidate(&h).await;
                }
                self.revoked([id.to_owned()]);
                Ok(true)
            }
        }
    }

    /// The active key for a secret.
    pub async fn authenticate(&self, secret: &str) -> Result<Arc<ApiKey>, AuthError> {
        if !secret.starts_with(SECRET_PREFIX) || secret.len() > 256 {
            return Err(AuthError::InvalidKey);
        }
        let h = hash(secret);
        let store = self.store.clone();
        let found = self
            .cache
            .try_get_with(h, async move {
                let row = store.key_by_hash(h.as_slice()).await?;
                row.map(|r| key_from_row(r).map(Arc::new)).transpose()
            })
            .await
            .map_err(|e: Arc<AuthError>| AuthError::Backend(e.to_string()))?;
        let key = found.ok_or(AuthError::InvalidKey)?;
        key.check_active(now_secs())?;
        Ok(key)
    }
}

/// Every [`REVOCATION_POLL`], the keys revoked since shortly before the task started: their cache
/// entries go and their ids join the watch. Ends when the key store is gone.
async fn poll_revocations(
    revocations: Weak<Revocations>,
    store: Store,
    cache: moka::future::Cache<Hash, Option<Arc<ApiKey>>>,
) {
    let mut since: Option<f64> = None;
    let mut tick = tokio::time::interval(REVOCATION_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if revocations.strong_count() == 0 {
            return;
        }
        let from = match since {
            Some(t) => t,
            None => match store.database_now().await {
                Ok(now) => *since.insert(now - REVOCATION_MARGIN_SECS),
                Err(e) => {
                    tracing::debug!(error = %e, "looking for revoked keys");
                    continue;
                }
            },
        };
        let rows = match store.keys_revoked_since(from).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "looking for revoked keys");
                continue;
            }
        };
        let Some(rev) = revocations.upgrade() else {
            return;
        };
        let known = rev.tx.borrow().clone();
        let mut new = Vec::new();
        for (id, h) in rows {
            if known.contains(&id) {
                continue;
            }
            if let Ok(h) = Hash::try_from(h.as_slice()) {
                cache.invalidate(&h).await;
            }
            new.push(id);
        }
        if !new.is_empty() {
            rev.tx.send_modify(|set| Arc::make_mut(set).extend(new));
        }
    }
}

fn key_from_row(r: KeyRow) -> Result<ApiKey, AuthError> {
    let permissions = serde_json::from_value(r.permissions)
        .map_err(|e| AuthError::Backend(format!("stored permissions do not decode: {e}")))?;
    Ok(ApiKey {
        id: r.id,
        name: r.name,
        description: r.description,
        prefix: r.prefix,
        permissions,
        created_at: r.created_at,
        expires_at: r.expires_at,
        revoked_at: r.revoked_at,
    })
}

fn validate_name(name: &str) -> Result<(), AuthError> {
    if name.trim().is_empty() {
        return Err(AuthError::InvalidRequest("a key needs a name".into()));
    }
    if name.chars().count() > 128 || name.chars().any(char::is_control) {
        return Err(AuthError::InvalidRequest(
            "a key name is at most 128 characters, without control characters".into(),
        ));
    }
    Ok(())
}

fn generate_secret() -> String {
    let mut rng = rand::rng();
    let mut s = String::with_capacity(SECRET_PREFIX.len() + SECRET_RANDOM_CHARS);
    s.push_str(SECRET_PREFIX);
    for _ in 0..SECRET_RANDOM_CHARS {
        s.push(char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]));
    }
    s
}

fn hash(secret: &str) -> Hash {
    Sha256::digest(secret.as_bytes()).into()
}

/// Unix time in seconds.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Reads the key from an `Authorization` header value: `Bearer <key>` in any case, or the bare key.
pub fn bearer(header: &str) -> Option<&str> {
    let h = header.trim();
    let token = match h.split_once(char::is_whitespace) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        Some(_) => return None,
        None => h,
    };
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_forms() {
        assert_eq!(bearer("Bearer bpk_x"), Some("bpk_x"));
        assert_eq!(bearer("bearer   bpk_x "), Some("bpk_x"));
        assert_eq!(bearer("BEARER bpk_x"), Some("bpk_x"));
        assert_eq!(bearer("bpk_x"), Some("bpk_x"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("  "), None);
    }

    #[test]
    fn secrets_are_long_random_and_prefixed() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a, b);
        assert!(a.starts_with(SECRET_PREFIX));
        assert_eq!(a.len(), SECRET_PREFIX.len() + SECRET_RANDOM_CHARS);
        assert!(a[SECRET_PREFIX.len()..]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric()));
    }
}
