//! Group commit: concurrent writers share transactions.
//!
//! Each write is queued as a job; a small pool of committer tasks takes whatever is queued (up to
//! a bound on documents), runs the jobs in one transaction and answers each with its own result
//! and the shared transaction id. A job stays atomic on its own: one that fails (an invalid
//! operation, an id conflict, a write over a limit) is undone in memory and answered with its
//! error while the others commit; one whose data the database refuses is found by running the
//! jobs again in smaller transactions, and only it fails.

use std::sync::Arc;

use bigpeer_schema::DocId;
use tokio::sync::{mpsc, Mutex};

use super::documents::{batch_targets, committed, run_batch};
use super::txn::{Job, TxnInfo, Working};
use super::{Change, Committed, Store, StoreError};

/// Group commit settings.
#[derive(Debug, Clone)]
pub struct GroupCommitOptions {
    /// Committer tasks (transactions in flight at once). Every writing transaction holds the
    /// change-sequence row from its last statement through its commit, so commits are serial
    /// whatever this is; more committers only split the queue into smaller transactions. Two keep
    /// one transaction loading and merging while the other commits: at 32 concurrent
    /// single-document INSERTs over HTTP that measured 8.8k req/s, against 7.9k with one, 7.9k
    /// with three and 6.7k with four (BENCHMARKS.md).
    pub workers: usize,
    /// Most documents locked by one shared transaction.
    pub max_batch: usize,
    /// Queue bound; writers wait when it is full (backpressure).
    pub queue: usize,
}

impl Default for GroupCommitOptions {
    fn default() -> Self {
        GroupCommitOptions {
            workers: 2,
            max_batch: 512,
            queue: 4096,
        }
    }
}

/// A handle to submit writes. Cheap to clone; the committers stop when every handle is dropped.
#[derive(Clone)]
pub struct GroupCommit {
    tx: mpsc::Sender<Job>,
}

fn stopped() -> StoreError {
    StoreError::ShuttingDown
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
                    store.run_jobs(jobs).await;
                }
            });
        }
        GroupCommit { tx }
    }

    /// Runs `f` on `targets`, possibly in a transaction shared with other writers. `f` may run
    /// more than once (see [`Store::run_jobs`]): once the database refused a shared
    /// transaction's writes, its jobs run again in smaller ones, so that one job's data never
    /// fails the others.
    pub async fn transact<R, F>(
        &self,
        targets: Vec<(String, DocId)>,
        f: F,
    ) -> Result<(R, TxnInfo), StoreError>
    where
        R: Send + 'static,
        F: FnMut(&mut Working<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        let (job, rx) = Job::new(targets, f);
        self.tx.send(job).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Applies `changes` atomically (see [`Store::apply`]), possibly sharing a transaction.
    pub async fn write(&self, changes: Vec<Change>) -> Result<Committed, StoreError> {
        let targets = batch_targets(&changes);
        let (out, info) = self
            .transact(targets, move |w| {
                run_batch(w, &changes).map(|o| (o, changes.clone()))
            })
            .await?;
        Ok(committed(out, &info))
    }
}

/// Waits for one job, then takes whatever else is queued, up to `max_batch` documents.
async fn next_batch(rx: &Mutex<mpsc::Receiver<Job>>, max_batch: usize) -> Option<Vec<Job>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut n = first.targets.len();
    let mut jobs = vec![first];
    while n < max_batch {
        match rx.try_recv() {
            Ok(job) => {
                n += job.targets.len();
                jobs.push(job);
            }
            Err(_) => break,
        }
    }
    Some(jobs)
}
