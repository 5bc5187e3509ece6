//! Group commit: concurrent writers share transactions.
//!
//! Each request is queued; a small pool of committer tasks takes whatever is queued (up to a
//! bound), applies it as one batch in one transaction, and hands each request its own outcomes
//! and the shared transaction id. A request's changes stay atomic: when a shared batch fails
//! (one request's change is invalid, say), every request of that batch is retried on its own, so
//! one bad request never fails or delays the others' writes beyond that retry.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};

use super::{Change, Committed, Store, StoreError};

/// Group commit settings.
#[derive(Debug, Clone)]
pub struct GroupCommitOptions {
    /// Committer tasks (transactions in flight at once).
    pub workers: usize,
    /// Most changes in one shared transaction.
    pub max_batch: usize,
    /// Queue bound; writers wait when it is full (backpressure).
    pub queue: usize,
}

impl Default for GroupCommitOptions {
    fn default() -> Self {
        GroupCommitOptions {
            workers: 4,
            max_batch: 512,
            queue: 4096,
        }
    }
}

struct Job {
    changes: Vec<Change>,
    reply: oneshot::Sender<Result<Committed, StoreError>>,
}

/// A handle to submit writes. Cheap to clone; the committers stop when every handle is dropped.
#[derive(Clone)]
pub struct GroupCommit {
    tx: mpsc::Sender<Job>,
}

/// Returned when the committers are gone (the server is shutting down).
fn stopped() -> StoreError {
    StoreError::Database(sqlx::Error::PoolClosed)
}

impl GroupCommit {
    /// Starts the committer tasks on the current tokio runtime.
    pub fn start(store: Store, opts: &GroupCommitOptions) -> GroupCommit {
        let (tx, rx) = mpsc::channel::<Job>(opts.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..opts.workers.max(1) {
            let rx = rx.clone();
            let store = store.clone();
            let max_batch = opts.max_batch.max(1);
            tokio::spawn(async move {
                while let Some(jobs) = next_batch(&rx, max_batch).await {
                    commit(&store, jobs).await;
                }
            });
        }
        GroupCommit { tx }
    }

    /// Applies `changes` atomically, possibly in a transaction shared with other writers.
    pub async fn write(&self, changes: Vec<Change>) -> Result<Committed, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { changes, reply })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// Waits for one job, then takes whatever else is queued, up to `max_batch` changes.
async fn next_batch(rx: &Mutex<mpsc::Receiver<Job>>, max_batch: usize) -> Option<Vec<Job>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut n = first.changes.len();
    let mut jobs = vec![first];
    while n < max_batch {
        match rx.try_recv() {
            Ok(job) => {
                n += job.changes.len();
                jobs.push(job);
            }
            Err(_) => break,
        }
    }
    Some(jobs)
}

async fn commit(store: &Store, jobs: Vec<Job>) {
    if jobs.len() == 1 {
        for job in jobs {
            let res = store.apply(job.changes).await;
            let _ = job.reply.send(res);
        }
        return;
    }
    let all: Vec<Change> = jobs
        .iter()
        .flat_map(|j| j.changes.iter().cloned())
        .collect();
    match store.apply(all).await {
        Ok(committed) => {
            let mut outcomes = committed.outcomes.into_iter();
            for job in jobs {
                let mine = outcomes.by_ref().take(job.changes.len()).collect();
                let _ = job.reply.send(Ok(Committed {
                    txn: committed.txn,
                    outcomes: mine,
                }));
            }
        }
        Err(_) => {
            // Someone's change failed the shared transaction: retry each request alone, so that
            // only the faulty one gets the error.
            for job in jobs {
                let res = store.apply(job.changes).await;
                let _ = job.reply.send(res);
            }
        }
    }
}
