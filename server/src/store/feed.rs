//! The live change feed of this process.
//!
//! One task per process follows the documents table in sequence order: it wakes on
//! `NOTIFY bigpeer_changes` (sent by every writing transaction of every bigpeer process on the
//! database) and, as a safety net, on a timer; each time it reads everything after its cursor and
//! broadcasts it. Subscribers (sync sessions, change streams) match documents in memory, so
//! Postgres is read once per change, not once per subscriber.
//!
//! A subscriber that falls behind the broadcast buffer gets `Lagged` from its receiver and must
//! resume from its own cursor with [`Store::changes_since`]. To start without a gap, subscribe
//! first, then read the database up to [`ChangeFeed::position`], and skip broadcast events at or
//! below what was read.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::{broadcast, watch};

use super::{Store, StoreError, StoredDoc};

/// Feed settings.
#[derive(Debug, Clone)]
pub struct FeedOptions {
    /// Re-read even without a notification this often (a missed notification costs at most this).
    pub poll_interval: Duration,
    /// Documents buffered per subscriber before it lags.
    pub capacity: usize,
    /// Documents read per query.
    pub page: i64,
}

impl Default for FeedOptions {
    fn default() -> Self {
        FeedOptions {
            poll_interval: Duration::from_millis(500),
            capacity: 16_384,
            page: 1_000,
        }
    }
}

/// A handle on the process's change feed. Cheap to clone; the task stops when every handle is
/// dropped.
#[derive(Clone)]
pub struct ChangeFeed {
    tx: broadcast::Sender<Arc<StoredDoc>>,
    position: watch::Receiver<i64>,
    _stop: Arc<tokio::sync::oneshot::Sender<()>>,
}

impl ChangeFeed {
    /// Starts following the feed from the current end (changes committed from now on).
    pub async fn start(store: Store, opts: FeedOptions) -> Result<ChangeFeed, StoreError> {
        let start = store.committed_txn().await?;
        let mut listener = PgListener::connect_with(store.pool()).await?;
        listener.listen("bigpeer_changes").await?;
        let (tx, _) = broadcast::channel(opts.capacity.max(1));
        let (pos_tx, position) = watch::channel(start);
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let sender = tx.clone();
        // `Store::close` waits for every pooled connection (sqlx 0.9), the listener's too: the
        // task ends when the pool closes, even while handles remain.
        let closed = store.pool().close_event();
        tokio::spawn(async move {
            let mut cursor = start;
            tokio::pin!(closed);
            loop {
                // The newest transaction announced by this wake-up's notification: once the
                // documents are read up to the end after it arrived, everything up to it has
                // been seen, also numbers that left no document row (evictions).
                let mut announced = 0i64;
                // Stopping first: a listener that fails because the pool closed must not make
                // the task wait (and `Store::close` with it) for a poll interval.
                tokio::select! {
                    biased;
                    _ = &mut stop_rx => break,
                    _ = &mut closed => break,
                    n = listener.try_recv() => {
                        if let Ok(Some(n)) = &n {
                            announced = n.payload().parse::<i64>().unwrap_or(0);
                        }
                        if let Err(e) = n {
                            tracing::warn!(error = %e, "change feed listener failed; polling until it reconnects");
                            tokio::select! {
                                biased;
                                _ = &mut stop_rx => break,
                                _ = &mut closed => break,
                                _ = tokio::time::sleep(opts.poll_interval) => {}
                            }
                        }
                    }
                    _ = tokio::time::sleep(opts.poll_interval) => {}
                }
                loop {
                    match store.changes_page(cursor, opts.page).await {
                        Ok(page) => {
                            let full = page.read as i64 >= opts.page;
                            for doc in page.docs {
                                // No subscriber is fine: the feed just moves on.
                                let _ = sender.send(Arc::new(doc));
                            }
                            // Past unreadable rows too (skipped, logged and counted): one row
                            // never stops the feed.
                            cursor = cursor.max(page.last);
                            store.saw_txn(cursor);
                            let _ = pos_tx.send(cursor);
                            if !full {
                                if announced > cursor {
                                    cursor = announced;
                                    store.saw_txn(cursor);
                                    let _ = pos_tx.send(cursor);
                                }
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "change feed read failed; retrying");
                            break;
                        }
                    }
                }
            }
        });
        Ok(ChangeFeed {
            tx,
            position,
            _stop: Arc::new(stop_tx),
        })
    }

    /// A receiver of every change broadcast from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoredDoc>> {
        self.tx.subscribe()
    }

    /// The sequence number up to which changes have been broadcast.
    pub fn position(&self) -> i64 {
        *self.position.borrow()
    }

    /// Waits until the feed has broadcast everything up to `seq`, or `timeout` passes. Returns
    /// whether it got there.
    pub async fn wait_for(&self, seq: i64, timeout: Duration) -> bool {
        let mut rx = self.position.clone();
        tokio::time::timeout(timeout, rx.wait_for(|p| *p >= seq))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}
