//! Which transactions are committed, as the commits themselves announce them: every writing
//! transaction of every bigpeer process on the database sends `NOTIFY bigpeer_changes, '<txn>'`
//! (see `txn.rs`). Read-your-writes ([`Store::wait_for_commit`]) waits on it, without polling
//! and without reading documents (the change feed, `feed.rs`, is for sync sessions).
//!
//! One listening connection per process, started on first use. A notification lost while the
//! listener reconnects costs at most a waiter's budget: a waiter asks the database once more
//! before it gives up, and the listener asks after each reconnection.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::PgListener;
use tokio::sync::{oneshot, watch};

use super::{Store, StoreError};

/// The newest committed transaction announced; the task stops when the last handle is dropped.
#[derive(Debug)]
pub(crate) struct CommitWatch {
    newest: watch::Receiver<i64>,
    _stop: oneshot::Sender<()>,
}

impl CommitWatch {
    async fn start(store: &Store) -> Result<CommitWatch, StoreError> {
        let mut listener = PgListener::connect_with(&store.pool).await?;
        listener.listen("bigpeer_changes").await?;
        // Listening first, then reading the counter: no commit falls between the two.
        let start = store.committed_txn().await?;
        let (tx, newest) = watch::channel(start);
        let (stop, mut stopped) = oneshot::channel::<()>();
        let pool = store.pool.clone();
        let seen = store.seen_txn.clone();
        let advance = move |txn: i64| {
            seen.fetch_max(txn, Ordering::Relaxed);
            tx.send_if_modified(|n| {
                let newer = txn > *n;
                *n = (*n).max(txn);
                newer
            });
        };
        // The listener's connection is the pool's: the task ends when the pool closes, so that
        // `Store::close` does not wait for it.
        let closed = store.pool.close_event();
        tokio::spawn(async move {
            tokio::pin!(closed);
            loop {
                tokio::select! {
                    biased;
                    _ = &mut stopped => break,
                    _ = &mut closed => break,
                    n = listener.try_recv() => match n {
                        Ok(Some(n)) => {
                            if let Ok(txn) = n.payload().parse::<i64>() {
                                advance(txn);
                            }
                        }
                        // The connection was lost (the listener reconnects on the next call):
                        // what was announced meanwhile is read from the counter.
                        Ok(None) => {
                            if let Ok(txn) =
                                sqlx::query_scalar::<_, i64>("SELECT v FROM seq_counter WHERE id = 0")
                                    .fetch_one(&pool)
                                    .await
                            {
                                advance(txn);
                            }
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "the commit listener failed; retrying");
                            tokio::select! {
                                biased;
                                _ = &mut stopped => break,
                                _ = &mut closed => break,
                                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                            }
                        }
                    },
                }
            }
        });
        Ok(CommitWatch {
            newest,
            _stop: stop,
        })
    }
}

impl Store {
    /// Read-your-writes: waits until transaction `txn` is committed (by any process on the
    /// database), at most `budget`. Returns whether it is.
    ///
    /// A transaction this process committed or has seen answers at once, without a query; else
    /// the database is asked once, then the commits' notifications are waited on, and the
    /// database is asked a last time when the budget is spent.
    pub async fn wait_for_commit(&self, txn: i64, budget: Duration) -> Result<bool, StoreError> {
        if self.seen_txn() >= txn || self.committed_txn().await? >= txn {
            return Ok(true);
        }
        let deadline = Instant::now() + budget;
        let watch = tokio::time::timeout(
            budget,
            self.commits.get_or_try_init(|| CommitWatch::start(self)),
        )
        .await;
        match watch {
            Ok(Ok(watch)) => {
                let mut newest = watch.newest.clone();
                let left = deadline.saturating_duration_since(Instant::now());
                let reached = tokio::time::timeout(left, newest.wait_for(|n| *n >= txn))
                    .await
                    .map(|r| r.map(|_| ()));
                match reached {
                    Ok(Ok(())) => return Ok(true),
                    // The budget is spent: the database has the last word.
                    Err(_) => return Ok(self.committed_txn().await? >= txn),
                    // The listener stopped (the server shuts down): ask the database instead.
                    Ok(Err(_)) => {}
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot listen for commits; asking the database instead");
            }
            Err(_) => return Ok(self.committed_txn().await? >= txn),
        }
        // Without notifications: ask the database now and then until the budget is spent.
        loop {
            if self.committed_txn().await? >= txn {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Handles on a store's commit watch: started on first use, shared by the store's clones.
pub(crate) type Commits = Arc<tokio::sync::OnceCell<CommitWatch>>;
