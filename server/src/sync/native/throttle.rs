//! What a push must pass before it is looked at: Postgres known to be up, and the rate limit of
//! the session's key (the HTTP API's per-key limit; the buckets are shared).
//!
//! Over the limit, the push is not refused: the peer gets a non-fatal
//! `Error{request/rate-limited}` saying so, and the push waits for its turn and is then answered
//! with its `PushAck` as usual. The session stops reading the peer's frames meanwhile (TCP pushes
//! back), so a peer cannot push faster than the limit; a client that knows nothing of the limit
//! still gets every answer it waits for (`docs/sync-protocol.md`, section 6).

use bigpeer_sync_core::{Stop, CLOSE_INTERNAL};

use super::Shell;

impl Shell {
    /// Call at the start of every push.
    pub(super) async fn admit_push(&mut self) -> Result<(), Stop> {
        if self.hub.store.known_down() {
            return Err(Stop::fatal(
                "store/unavailable",
                "Postgres is unavailable: reconnect with backoff",
                CLOSE_INTERNAL,
            ));
        }
        let identity = match &self.open {
            Some(o) => match &o.key {
                Some((id, _)) => id.clone(),
                None => format!("user:{}", self.user),
            },
            None => return Ok(()),
        };
        if let Err(secs) = self.hub.limits.check_key(&identity) {
            let now = self.now();
            self.core.notice(
                now,
                "request/rate-limited",
                format!(
                    "pushes are over this key's rate limit: this push waits (up to {secs} s) and is then answered"
                ),
            );
            self.flush().await?;
            self.hub.limits.until_key_ready(&identity).await;
        }
        Ok(())
    }
}
