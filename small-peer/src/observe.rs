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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bigpeer_schema::Value;

    use super::*;
    use crate::Store;

    fn run(store: &mut Store, text: &str) {
        store
            .execute(text, &BTreeMap::new())
            .unwrap_or_else(|e| panic!("{text}: {e}"));
    }

    fn text(s: Option<Snapshot>) -> Option<String> {
        s.map(|s| match s {
            Ok(items) => Value::Array(items.to_vec()).to_json_string(),
            Err(e) => format!("error {}", e.code),
        })
    }

    fn observe(store: &mut Store, q: &str) -> Observer {
        store.observe(q, &BTreeMap::new()).expect("observe")
    }

    #[test]
    fn fires_at_once_then_only_on_change() {
        let mut s = Store::open_in_memory().expect("open");
        run(
            &mut s,
            "INSERT INTO c DOCUMENTS ({'_id': 'a', 'n': 1, 'other': 0})",
        );
        let mut o = observe(&mut s, "SELECT n FROM c WHERE n > 0 ORDER BY n");
        assert_eq!(text(o.try_next()).as_deref(), Some(r#"[{"n":1}]"#));
        assert_eq!(text(o.try_next()), None);
        run(&mut s, "INSERT INTO c DOCUMENTS ({'_id': 'b', 'n': 2})");
        assert_eq!(text(o.try_next()).as_deref(), Some(r#"[{"n":1},{"n":2}]"#));
        // Writes that leave the result as it was: another collection, a field not selected,
        // a document the filter excludes.
        run(&mut s, "INSERT INTO d DOCUMENTS ({'_id': 'a', 'n': 5})");
        run(&mut s, "UPDATE c SET other = 1 WHERE _id = 'a'");
        run(&mut s, "INSERT INTO c DOCUMENTS ({'_id': 'z', 'n': -1})");
        assert_eq!(text(o.try_next()), None);
        run(&mut s, "DELETE FROM c WHERE _id = 'a'");
        assert_eq!(text(o.try_next()).as_deref(), Some(r#"[{"n":2}]"#));
        assert_eq!(text(Some(o.current())).as_deref(), Some(r#"[{"n":2}]"#));
    }

    #[test]
    fn remote_merges_fire_observers() {
        let mut a = Store::open_in_memory().expect("a");
        let mut b = Store::open_in_memory().expect("b");
        let mut o = observe(&mut b, "SELECT * FROM c");
        assert_eq!(text(o.try_next()).as_deref(), Some("[]"));
        run(&mut a, "INSERT INTO c DOCUMENTS ({'_id': 'x', 'v': true})");
        let changes = a.pending_push(10).expect("pending");
        b.apply_remote(&changes, &[]).expect("apply");
        assert_eq!(
            text(o.try_next()).as_deref(),
            Some(r#"[{"_id":"x","v":true}]"#)
        );
        // The same change again is unchanged: no event.
        b.apply_remote(&changes, &[]).expect("apply");
        assert_eq!(text(o.try_next()), None);
    }

    #[test]
    fn system_collections_and_dropped_observers() {
        let mut s = Store::open_in_memory().expect("open");
        let mut o = observe(&mut s, "SELECT name FROM system:collections");
        let dropped = observe(&mut s, "SELECT * FROM c");
        assert_eq!(text(o.try_next()).as_deref(), Some("[]"));
        drop(dropped);
        run(&mut s, "INSERT INTO c DOCUMENTS ({'_id': 'x'})");
        assert_eq!(text(o.try_next()).as_deref(), Some(r#"[{"name":"c"}]"#));
        assert_eq!(s.observers.entries.len(), 1, "the dropped observer is gone");
        let err = s
            .observe("DELETE FROM c WHERE true", &BTreeMap::new())
            .expect_err("not a select");
        assert_eq!(err.code(), "query/invalid");
    }

    #[tokio::test]
    async fn next_waits_for_a_change() {
        let mut s = Store::open_in_memory().expect("open");
        let mut o = observe(&mut s, "SELECT count(*) AS n FROM c");
        assert_eq!(text(o.next().await).as_deref(), Some(r#"[{"n":0}]"#));
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(20), o.next()).await;
        assert!(waiting.is_err(), "no change yet");
        run(&mut s, "INSERT INTO c DOCUMENTS ({'_id': 'x'})");
        assert_eq!(text(o.next().await).as_deref(), Some(r#"[{"n":1}]"#));
        drop(s);
        assert_eq!(text(o.next().await), None, "the store is gone");
    }
}
