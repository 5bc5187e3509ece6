//! Observers (live queries): a SELECT whose result is sent again whenever it changes.
//!
//! The store keeps each observer's plan and a [`tokio::sync::watch`] sender. After every
//! committed local statement or remote merge, the observers that read a written collection (and
//! those on `system:collections`) are evaluated again; the new result is sent only when it
//! differs from the last one. Dropping the [`Observer`] unregisters it at the next write.

use std::collections::BTreeSet;
use std::sync::Arc;

use bigpeer_dql::plan::{Plan, Source};
use bigpeer_schema::Value;
use tokio::sync::watch;

use crate::error::PeerError;

/// Why an observer's query failed on the current data (the code and message of the error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObserveError {
    pub code: String,
    pub message: String,
}

/// One result of an observed query: its items, or why evaluating it failed.
pub type Snapshot = Result<Arc<Vec<Value>>, ObserveError>;

/// A live query. Holds the latest result; [`Observer::next`] and [`Observer::try_next`] give the
/// first result at once, then each changed result.
#[derive(Debug)]
pub struct Observer {
    rx: watch::Receiver<Snapshot>,
    first: bool,
}

impl Observer {
    /// The latest result (without marking it seen).
    pub fn current(&self) -> Snapshot {
        self.rx.borrow().clone()
    }

    /// The first result, then a result each time it changed since the last call; `None` when
    /// nothing changed.
    pub fn try_next(&mut self) -> Option<Snapshot> {
        if std::mem::take(&mut self.first) {
            return Some(self.rx.borrow_and_update().clone());
        }
        match self.rx.has_changed() {
            Ok(true) => Some(self.rx.borrow_and_update().clone()),
            Ok(false) | Err(_) => None,
        }
    }

    /// The first result at once, then waits for the next change. `None` once the store is gone.
    pub async fn next(&mut self) -> Option<Snapshot> {
        if std::mem::take(&mut self.first) {
            return Some(self.rx.borrow_and_update().clone());
        }
        self.rx.changed().await.ok()?;
        Some(self.rx.borrow_and_update().clone())
    }
}

struct Entry {
    plan: Plan,
    tx: watch::Sender<Snapshot>,
}

/// The store's observers.
#[derive(Default)]
pub(crate) struct Registry {
    entries: Vec<Entry>,
}

impl Registry {
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn add(&mut self, plan: Plan, items: Vec<Value>) -> Observer {
        let (tx, rx) = watch::channel(Ok(Arc::new(items)));
        self.entries.push(Entry { plan, tx });
        Observer { rx, first: true }
    }

    /// Evaluates the observers that read one of `touched` again and sends changed results.
    pub(crate) fn notify(
        &mut self,
        touched: &BTreeSet<String>,
        mut eval: impl FnMut(&Plan) -> Result<Vec<Value>, PeerError>,
    ) {
        self.entries.retain(|e| !e.tx.is_closed());
        for e in &self.entries {
            let relevant = match &e.plan {
                Plan::Select(s) => match &s.source {
                    Source::Collection(c) => touched.contains(c),
                    Source::SystemCollections => true,
                },
                _ => false,
            };
            if !relevant {
                continue;
            }
            let next: Snapshot = eval(&e.plan).map(Arc::new).map_err(|err| ObserveError {
                code: err.code().to_owned(),
                message: err.to_string(),
            });
            e.tx.send_if_modified(|cur| {
                if *cur == next {
                    false
                } else {
                    *cur = next;
                    true
                }
            });
        }
    }
}
