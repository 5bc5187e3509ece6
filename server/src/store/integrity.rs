//! What the store enforces on writes beyond the fixed limits of `bigpeer_schema::limits` (the
//! document size limit, which `ALTER SYSTEM` sets), and the rows it found it cannot read.
//!
//! A row that cannot be read (an undecodable CRDT state or id, a `value` no JSON reader takes) is
//! never allowed to stop a reader that is not asking for that very document: the change feed,
//! an initial sync, a SELECT over its collection skip it. Each time one is skipped it is logged,
//! counted (`bigpeer_unreadable_rows_skipped_total` in `/metrics`) and remembered (the number of
//! distinct rows is in `/readyz`), until it is evicted or written again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use bigpeer_schema::limits::DEFAULT_MAX_DOCUMENT_BYTES;

/// Distinct unreadable rows remembered at most (the count of skips goes on beyond it).
const MAX_REMEMBERED: usize = 1_000;

/// The store's shared write limits and read health.
#[derive(Debug)]
pub(crate) struct Integrity {
    /// `document_size_hard_limit_bytes` as set.
    doc_setting: AtomicUsize,
    /// The most any document may be whatever the setting says (sync's frame size).
    doc_cap: AtomicUsize,
    skipped: AtomicU64,
    rows: Mutex<BTreeMap<(String, Vec<u8>), String>>,
}

impl Default for Integrity {
    fn default() -> Self {
        Integrity {
            doc_setting: AtomicUsize::new(DEFAULT_MAX_DOCUMENT_BYTES),
            doc_cap: AtomicUsize::new(usize::MAX),
            skipped: AtomicU64::new(0),
            rows: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Integrity {
    pub(crate) fn document_limit(&self) -> usize {
        self.doc_setting
            .load(Ordering::Relaxed)
            .min(self.doc_cap.load(Ordering::Relaxed))
    }

    pub(crate) fn set_document_setting(&self, bytes: usize) {
        self.doc_setting.store(bytes, Ordering::Relaxed);
    }

    pub(crate) fn cap_document(&self, bytes: usize) {
        self.doc_cap.fetch_min(bytes, Ordering::Relaxed);
    }

    /// Records a skipped row of `collection` with storage key `key`.
    pub(crate) fn skipped(&self, what: &str, collection: &str, key: &[u8], seq: i64, error: &str) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
        let mut rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        let entry = (collection.to_owned(), key.to_vec());
        let new = !rows.contains_key(&entry);
        if new && rows.len() < MAX_REMEMBERED {
            rows.insert(entry, error.to_owned());
        }
        drop(rows);
        let id = hex(key);
        if new {
            tracing::error!(%collection, id_key = %id, seq, %error, reader = what,
                "unreadable document row skipped (EVICT it, or restore it from a backup)");
        } else {
            tracing::debug!(%collection, id_key = %id, seq, %error, reader = what,
                "unreadable document row skipped again");
        }
    }

    /// Records a skipped value whose row is not known.
    pub(crate) fn skipped_unknown(&self, what: &str, error: &str) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
        tracing::error!(%error, reader = what, "unreadable stored value skipped");
    }

    /// The row was written or removed: it is readable again.
    pub(crate) fn forget(&self, collection: &str, key: &[u8]) {
        let mut rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        if !rows.is_empty() {
            rows.remove(&(collection.to_owned(), key.to_vec()));
        }
    }

    pub(crate) fn skipped_total(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    pub(crate) fn known_unreadable(&self) -> usize {
        self.rows.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

fn hex(key: &[u8]) -> String {
    let mut s = String::with_capacity(key.len().min(64) * 2 + 3);
    for b in key.iter().take(64) {
        s.push_str(&format!("{b:02x}"));
    }
    if key.len() > 64 {
        s.push_str("...");
    }
    s
}
