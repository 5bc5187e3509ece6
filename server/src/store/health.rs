//! What the store knows about Postgres being up.
//!
//! A background probe keeps one connection of its own and pings it every second. When the ping
//! fails and a new connection cannot be made either, Postgres is *known down*: requests that need
//! it fail at once (503 `store/unavailable`) instead of each waiting `connect_timeout` for a
//! connection, and the probe tries again four times a second until a connection succeeds.
//!
//! Connections that were open when an outage (or any lost connection) was noticed are *stale*:
//! the pools drop them instead of handing them out (`before_acquire`, no round trip), so that
//! after a recovery requests get fresh connections, not ones a restarted Postgres has long
//! forgotten.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnectionMetadata;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, PgConnection};
use tokio::sync::Notify;

/// How often the probe pings while Postgres is up.
const PROBE_UP: Duration = Duration::from_secs(1);
/// How often the probe tries to connect while Postgres is down.
const PROBE_DOWN: Duration = Duration::from_millis(250);
/// The longest a probe's ping or connect may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Postgres' health as this process sees it. Shared by the store's clones.
#[derive(Debug)]
pub struct Health {
    epoch: Instant,
    down: AtomicBool,
    /// Milliseconds after `epoch` when connections last became stale (0: never).
    stale_before: AtomicU64,
    closed: AtomicBool,
    wake: Notify,
}

impl Health {
    pub(crate) fn new() -> Arc<Health> {
        Arc::new(Health {
            epoch: Instant::now(),
            down: AtomicBool::new(false),
            stale_before: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            wake: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        // At least 1, so that 0 keeps meaning "never".
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// True while Postgres is known to be down (the probe could not connect).
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Every connection open now is suspect: the pools replace them before use.
    pub fn mark_stale(&self) {
        self.stale_before.store(self.now_ms(), Ordering::Release);
    }

    /// A connection was lost: its neighbours are suspect, and the probe looks at once.
    pub fn connection_lost(&self) {
        self.mark_stale();
        self.wake.notify_one();
    }

    fn set_down(&self, down: bool) {
        let was = self.down.swap(down, Ordering::AcqRel);
        if down {
            self.mark_stale();
        }
        match (was, down) {
            (false, true) => tracing::error!(
                "Postgres is unreachable: requests that need it fail at once until it is back"
            ),
            (true, false) => tracing::info!("Postgres is reachable again"),
            _ => {}
        }
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Whether a pooled connection `age` old was opened before connections became stale.
    fn is_stale(&self, age: Duration) -> bool {
        let stale_before = self.stale_before.load(Ordering::Acquire);
        if stale_before == 0 {
            return false;
        }
        let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        let opened = self.now_ms().saturating_sub(age_ms);
        opened <= stale_before
    }

    /// Pool options that drop stale connections before handing them out.
    pub(crate) fn pool_options(self: &Arc<Self>) -> PgPoolOptions {
        let health = Arc::downgrade(self);
        PgPoolOptions::new()
            // No ping before every use of a pooled connection (a round trip per statement):
            // a connection that broke fails its next statement, and the pool replaces it;
            // after an outage the stale ones are dropped here.
            .test_before_acquire(false)
            .before_acquire(move |_conn, meta: PoolConnectionMetadata| {
                let stale = health.upgrade().is_some_and(|h| h.is_stale(meta.age));
                Box::pin(async move { Ok(!stale) })
            })
    }

    /// Starts the probe on the current runtime; it ends when the store is closed or dropped.
    pub(crate) fn start_probe(self: &Arc<Self>, options: PgConnectOptions) {
        tokio::spawn(probe(Arc::downgrade(self), options));
    }
}

/// Whether an error means the connection (or the server behind it) is gone, so that the work
/// may be retried on another connection.
pub fn is_connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            // connection_exception, admin_shutdown, crash_shutdown, cannot_connect_now
            c.starts_with("08") || c == "57P01" || c == "57P02" || c == "57P03"
        }),
        _ => false,
    }
}

async fn probe(health: Weak<Health>, options: PgConnectOptions) {
    let mut conn: Option<PgConnection> = None;
    let mut had_connection = false;
    loop {
        let Some(h) = health.upgrade() else { return };
        if h.closed.load(Ordering::Acquire) {
            if let Some(c) = conn.take() {
                let _ = c.close().await;
            }
            return;
        }
        let alive = match conn.as_mut() {
            Some(c) => matches!(
                tokio::time::timeout(PROBE_TIMEOUT, c.ping()).await,
                Ok(Ok(()))
            ),
            None => false,
        };
        if !alive {
            drop(conn.take());
            match tokio::time::timeout(PROBE_TIMEOUT, PgConnection::connect_with(&options)).await {
                Ok(Ok(c)) => {
                    if had_connection {
                        // The probe's connection was lost but Postgres answers: the pools'
                        // connections were most likely lost too (a restart).
                        h.mark_stale();
                    }
                    had_connection = true;
                    conn = Some(c);
                    h.set_down(false);
                }
                Ok(Err(e)) if !is_connection_lost(&e) && !matches!(e, sqlx::Error::Database(_)) => {
                    // Not a connectivity problem (bad configuration, say): do not claim an
                    // outage; requests will report the error themselves.
                    tracing::debug!(error = %e, "Postgres health probe failed");
                    h.set_down(false);
                }
                _ => h.set_down(true),
            }
        }
        let pause = if h.is_down() { PROBE_DOWN } else { PROBE_UP };
        let woken = async {
            h.wake.notified().await;
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = woken => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_opened_before_an_outage_are_stale() {
        let h = Health::new();
        assert!(
            !h.is_stale(Duration::from_secs(3600)),
            "nothing is stale at first"
        );
        // Ages measured from real instants, a few milliseconds either side of the mark: the
        // answer does not depend on how long the sleeps really take on a loaded machine.
        let opened_before = Instant::now();
        std::thread::sleep(Duration::from_millis(5));
        h.mark_stale();
        std::thread::sleep(Duration::from_millis(5));
        let opened_after = Instant::now();
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            h.is_stale(opened_before.elapsed()),
            "opened before the mark"
        );
        assert!(!h.is_stale(opened_after.elapsed()), "opened after the mark");
    }

    #[test]
    fn lost_connections_are_recognised() {
        assert!(is_connection_lost(&sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset
        ))));
        assert!(!is_connection_lost(&sqlx::Error::RowNotFound));
        assert!(!is_connection_lost(&sqlx::Error::PoolTimedOut));
    }
}
