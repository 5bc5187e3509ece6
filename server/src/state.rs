//! What the request handlers share: the store, the executor, the sync hub, the keys and the
//! limits. Nothing here knows HTTP: the edge's own state (metrics, open connections) is the
//! `http` module's, so `app` builds both and nothing imports `app`.

use std::time::Duration;

use crate::auth::rate::RateLimits;
use crate::auth::KeyStore;
use crate::config::AdminKey;
use crate::service::{Executor, ServiceError};
use crate::store::Store;
use crate::sync::SyncHub;

/// Shared state of the handlers (`web::Data<AppState>`).
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    /// Runs DQL statements (with group commit for writes).
    pub executor: Executor,
    /// Peer sync sessions (`GET /api/v4/sync`) and the process's change feed.
    pub sync: SyncHub,
    /// API keys.
    pub keys: KeyStore,
    /// Every request gets every permission, without a key.
    pub playground: bool,
    /// Guards the key-management API; `None` turns it off.
    pub admin_key: Option<AdminKey>,
    /// Rate limits per key and per client address (shared with sync).
    pub limits: RateLimits,
    /// Webhook registrations (the admin API).
    pub webhooks: crate::webhooks::Registry,
}

impl AppState {
    /// Read-your-writes: waits until transaction `txn` is committed and visible, at most
    /// `budget` (on the commits' notifications, [`Store::wait_for_commit`]). Returns whether it
    /// is.
    pub async fn wait_for_txn(&self, txn: i64, budget: Duration) -> Result<bool, ServiceError> {
        Ok(self.store.wait_for_commit(txn, budget).await?)
    }
}
