//! Reads on the HTTP worker threads: each worker reads through a pool of its own, and the point
//! reads that wait on one worker at the same moment share one statement.
//!
//! A connection's socket is driven by the runtime that opened it. The HTTP workers are each a
//! single-threaded runtime, so a worker reading through a connection another runtime opened
//! waits for that runtime's thread to see the answer and wake it: two thread wake-ups per
//! statement, which on a small machine cost more than the statement. Hence one pool per worker.
//!
//! Point reads (`SELECT * FROM c WHERE _id = ...`) are the cheapest statements there are, so
//! their cost is the round trip. While a worker has as many point reads in flight as its pool
//! has connections, the next ones queue, and the next read to start takes the whole queue in
//! one statement (one primary-key probe per document). The request whose future runs a batch
//! is in it; when the batch ends it hands the turn to the oldest queued request, so no request
//! runs more than one batch, and a request whose batch was cancelled reads on its own. Each
//! read still sees a snapshot taken after it was asked for.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bigpeer_schema::Value;
use sqlx::{PgPool, Row};
use tokio::sync::oneshot;

use super::{Store, StoreError};

/// The most point reads one statement carries.
const MAX_BATCH: usize = 64;

/// One primary-key read.
const READ_ONE: &str =
    "SELECT value FROM documents WHERE collection = $1 AND id = $2 AND NOT deleted";

/// Several primary-key reads: one probe per (collection, key), answered with its position.
const READ_MANY: &str = "SELECT t.n, m.value \
     FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY AS t(c, i, n) \
     CROSS JOIN LATERAL (SELECT d.value FROM documents d \
       WHERE d.collection = t.c AND d.id = t.i AND NOT d.deleted LIMIT 1) AS m";

/// The read pools owned by threads, so that [`Store::close`] reaches them.
#[derive(Debug)]
pub(super) struct ThreadReads {
    /// Tells this store's pools from another store's on the same thread.
    store: u64,
    pools: Mutex<Vec<PgPool>>,
    /// Point reads answered on the threads' queues, and the statements that answered them.
    point_reads: AtomicU64,
    point_statements: AtomicU64,
}

static NEXT_STORE: AtomicU64 = AtomicU64::new(1);

impl ThreadReads {
    pub(super) fn new() -> ThreadReads {
        ThreadReads {
            store: NEXT_STORE.fetch_add(1, Ordering::Relaxed),
            pools: Mutex::new(Vec::new()),
            point_reads: AtomicU64::new(0),
            point_statements: AtomicU64::new(0),
        }
    }

    fn counted(&self, reads: usize) {
        self.point_reads.fetch_add(reads as u64, Ordering::Relaxed);
        self.point_statements.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn pools(&self) -> Vec<PgPool> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A thread's read pool and point-read queue, with the id of the store they belong to. The
/// pool is marked closed when the thread ends, so that [`Store::add_thread_reads`] forgets it
/// and its connections go.
struct ThreadPool {
    store: u64,
    pool: PgPool,
    queue: Arc<Mutex<Queue>>,
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        // Marks the pool closed at once; the connections close as the last handle goes.
        drop(self.pool.close());
    }
}

thread_local! {
    static THREAD_READS: RefCell<Option<ThreadPool>> = const { RefCell::new(None) };
}

/// What a queued point read is told.
enum Reply {
    /// Its document (or none).
    Done(Result<Option<Value>, StoreError>),
    /// Its turn to run a batch (it was handed the running slot of the batch that ended).
    Lead,
}

struct Waiting {
    collection: String,
    key: Vec<u8>,
    reply: oneshot::Sender<Reply>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Waiting>,
    /// Batches running (at most `slots`).
    running: usize,
    slots: usize,
}

fn lock(queue: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    queue.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running slot: handed to the oldest waiting read when the batch ends (also when its
/// future is dropped), or given back when none waits.
struct Slot(Arc<Mutex<Queue>>);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut q = lock(&self.0);
        while let Some(next) = q.waiting.pop_front() {
            if next.reply.send(Reply::Lead).is_ok() {
                return;
            }
            // Its request is gone: try the next.
        }
        q.running -= 1;
    }
}

/// A queued read's end of its reply channel. Dropped with a turn to lead in it (the request
/// went away before it saw the turn), it passes the turn on.
struct Ticket {
    rx: oneshot::Receiver<Reply>,
    queue: Arc<Mutex<Queue>>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Ok(Reply::Lead) = self.rx.try_recv() {
            drop(Slot(self.queue.clone()));
        }
    }
}

impl Store {
    /// Gives the calling thread a read pool of its own, of up to `max_connections` connections
    /// opened on demand, used by [`Store::reads`] and [`Store::read_current`] on this thread
    /// (see the module's documentation). Must be called within the thread's async runtime.
    pub fn add_thread_reads(&self, max_connections: u32) {
        let shared = self.pool.options();
        let max_connections = max_connections.max(1);
        let pool = self
            .health
            .pool_options()
            .max_connections(max_connections)
            .acquire_timeout(shared.get_acquire_timeout())
            .connect_lazy_with((*self.pool.connect_options()).clone());
        let store = self.thread_reads.store;
        let queue = Arc::new(Mutex::new(Queue {
            slots: max_connections as usize,
            ..Queue::default()
        }));
        THREAD_READS.with(|r| {
            *r.borrow_mut() = Some(ThreadPool {
                store,
                pool: pool.clone(),
                queue,
            })
        });
        let mut pools = self
            .thread_reads
            .pools
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Forget the pools of threads that ended (and the one this thread may have had).
        pools.retain(|p| !p.is_closed());
        pools.push(pool);
    }

    fn thread_pool(&self) -> Option<(PgPool, Arc<Mutex<Queue>>)> {
        THREAD_READS.with(|r| match &*r.borrow() {
            Some(t) if t.store == self.thread_reads.store => {
                Some((t.pool.clone(), t.queue.clone()))
            }
            _ => None,
        })
    }

    /// The pool to read through on this thread: its own (see [`Store::add_thread_reads`]),
    /// else the shared one. Snapshot reads only; writes go through [`Store::pool`].
    pub fn reads(&self) -> PgPool {
        match self.thread_pool() {
            Some((pool, _)) => pool,
            None => self.pool.clone(),
        }
    }

    /// Connections open in the shared pool and in the threads' read pools, and how many of
    /// them are idle.
    pub fn connections(&self) -> (u32, u32) {
        std::iter::once(self.pool.clone())
            .chain(self.thread_reads.pools())
            .fold((0, 0), |(size, idle), p| {
                (size + p.size(), idle + p.num_idle() as u32)
            })
    }

    /// Point reads answered through the threads' read queues, and the statements that
    /// answered them (fewer when reads shared statements).
    pub fn point_read_counts(&self) -> (u64, u64) {
        (
            self.thread_reads.point_reads.load(Ordering::Relaxed),
            self.thread_reads.point_statements.load(Ordering::Relaxed),
        )
    }

    /// The current value of a live document (`None`: missing or deleted), read with other
    /// point reads waiting on this thread at the same moment (see the module's documentation).
    /// A read whose connection turns out to be lost is retried once on a fresh connection.
    pub async fn read_current(
        &self,
        collection: &str,
        key: &[u8],
    ) -> Result<Option<Value>, StoreError> {
        self.retry_read(|| self.read_current_once(collection, key))
            .await
    }

    async fn read_current_once(
        &self,
        collection: &str,
        key: &[u8],
    ) -> Result<Option<Value>, StoreError> {
        let Some((pool, queue)) = self.thread_pool() else {
            return read_one(&self.pool, collection, key).await;
        };
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut q = lock(&queue);
            if q.running < q.slots {
                q.running += 1;
                true
            } else {
                q.waiting.push_back(Waiting {
                    collection: collection.to_owned(),
                    key: key.to_owned(),
                    reply: tx,
                });
                false
            }
        };
        if lead {
            // A connection is free: this read alone, as one plain statement.
            let _slot = Slot(queue);
            self.thread_reads.counted(1);
            return read_one(&pool, collection, key).await;
        }
        let mut ticket = Ticket {
            rx,
            queue: queue.clone(),
        };
        match (&mut ticket.rx).await {
            Ok(Reply::Done(result)) => result,
            Ok(Reply::Lead) => {
                // This read's turn: it and whoever queued behind it, in one statement.
                let slot = Slot(queue.clone());
                let others: Vec<Waiting> = {
                    let mut q = lock(&queue);
                    let n = q.waiting.len().min(MAX_BATCH - 1);
                    q.waiting.drain(..n).collect()
                };
                self.thread_reads.counted(others.len() + 1);
                let result = if others.is_empty() {
                    read_one(&pool, collection, key).await
                } else {
                    run_batch(&pool, collection, key, others).await
                };
                drop(slot);
                result
            }
            // The batch this read was in was cancelled: read alone.
            Err(_) => {
                self.thread_reads.counted(1);
                read_one(&pool, collection, key).await
            }
        }
    }
}

async fn read_one(
    pool: &PgPool,
    collection: &str,
    key: &[u8],
) -> Result<Option<Value>, StoreError> {
    let row = sqlx::query(READ_ONE)
        .bind(collection)
        .bind(key)
        .fetch_optional(pool)
        .await?;
    match row {
        None => Ok(None),
        Some(r) => Ok(Some(r.try_get::<sqlx::types::Json<Value>, _>(0)?.0)),
    }
}

/// Reads this read's document and those of `others` in one statement, answers the others and
/// returns this one's.
async fn run_batch(
    pool: &PgPool,
    collection: &str,
    key: &[u8],
    others: Vec<Waiting>,
) -> Result<Option<Value>, StoreError> {
    let mut colls = Vec::with_capacity(others.len() + 1);
    let mut keys = Vec::with_capacity(others.len() + 1);
    colls.push(collection);
    keys.push(key);
    for w in &others {
        colls.push(&w.collection);
        keys.push(&w.key);
    }
    let rows = sqlx::query(READ_MANY)
        .bind(&colls)
        .bind(&keys)
        .fetch_all(pool)
        .await;
    let mut found: Vec<Option<Value>> = vec![None; colls.len()];
    let outcome = rows.map_err(StoreError::from).and_then(|rows| {
        for row in rows {
            let n: i64 = row.try_get(0)?;
            let value = row.try_get::<sqlx::types::Json<Value>, _>(1)?.0;
            if let Some(slot) = usize::try_from(n - 1).ok().and_then(|i| found.get_mut(i)) {
                *slot = Some(value);
            }
        }
        Ok(())
    });
    match outcome {
        Ok(()) => {
            let mut found = found.into_iter();
            let own = found.next().flatten();
            for (w, value) in others.into_iter().zip(found) {
                let _ = w.reply.send(Reply::Done(Ok(value)));
            }
            Ok(own)
        }
        Err(e) => {
            for w in others {
                let _ = w.reply.send(Reply::Done(Err(e.shared())));
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(q: &Arc<Mutex<Queue>>) -> Ticket {
        let (tx, rx) = oneshot::channel();
        lock(q).waiting.push_back(Waiting {
            collection: "c".into(),
            key: vec![1],
            reply: tx,
        });
        Ticket {
            rx,
            queue: q.clone(),
        }
    }

    #[test]
    fn a_turn_passes_to_the_oldest_live_read_and_is_not_lost_when_it_goes() {
        let q = Arc::new(Mutex::new(Queue {
            running: 1,
            slots: 1,
            ..Queue::default()
        }));
        let gone = queued(&q);
        let first = queued(&q);
        let mut second = queued(&q);
        drop(gone);
        // The batch ends: the read that went away is skipped, the next is told to lead.
        drop(Slot(q.clone()));
        assert_eq!(lock(&q).running, 1);
        assert_eq!(lock(&q).waiting.len(), 1);
        // It went away too before it saw its turn: the turn goes on to the last one.
        drop(first);
        assert_eq!(lock(&q).running, 1);
        assert!(lock(&q).waiting.is_empty());
        assert!(matches!(second.rx.try_recv(), Ok(Reply::Lead)));
        // It ran its batch; nobody waits: the slot is free.
        drop(Slot(q.clone()));
        assert_eq!(lock(&q).running, 0);
        drop(second);
        assert_eq!(lock(&q).running, 0);
    }
}
