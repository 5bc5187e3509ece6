//! bigpeer's small peer: the embedded store an offline-first app (or the `smallpeer` CLI) keeps
//! its documents in, local DQL with the big peer's semantics, live queries, and the merge API
//! the sync client builds on.
//!
//! - [`Store`]: a SQLite database (WAL, one transaction per statement) holding each document's
//!   CRDT state and materialised JSON, the store's identity and clock, `ALTER SYSTEM` settings,
//!   the outbox of local changes and the subscriptions' cursors (layout in [`db`]).
//! - [`Store::execute`]: runs DQL with the `dql` crate's executor ([`bigpeer_dql::exec`]), the
//!   same code the reference store runs, so answers match the big peer's.
//! - [`Store::observe`]: live queries ([`observe`]).
//! - [`Store::apply_remote`], [`Store::pending_push`], [`Store::ack_push`]: the store's side of
//!   the protocol ([`remote`]).
//! - [`SyncClient`]: the sync client ([`sync`]), which keeps a store in step with a big peer over
//!   `ws://` or `wss://`: subscriptions with durable cursors, the outbox of offline writes,
//!   reconnection with backoff. An example is in [`sync`].
//!
//! ```
//! # use std::collections::BTreeMap;
//! let mut store = smallpeer::Store::open_in_memory()?;
//! store.execute("INSERT INTO cars DOCUMENTS ({'_id': 'a', 'color': 'blue'})", &BTreeMap::new())?;
//! let r = store.execute("SELECT color FROM cars", &BTreeMap::new())?;
//! assert_eq!(r.items[0].to_json_string(), r#"{"color":"blue"}"#);
//! # Ok::<(), smallpeer::PeerError>(())
//! ```
//!
//! # Identity
//! Each database mints a random site id when it is created; every local write is stamped with
//! it and with the store's hybrid logical clock, whose last value is stored with each write so
//! that stamps keep increasing across restarts. **A copied or restored database file keeps the
//! site id**: two live copies that both write would issue colliding stamps and their replicas
//! could diverge. Never run two copies of one database; to restore a backup on a device, open
//! it, let it sync, and prefer a fresh store (which re-syncs from the big peer) when the old
//! one might still be in use elsewhere.

pub mod db;
pub mod error;
pub mod lookup;
pub mod observe;
pub mod remote;
pub mod store;
pub mod sync;

pub use bigpeer_dql::exec::QueryResult;
pub use error::{PeerError, Result, SyncFailure};
pub use observe::{ObserveError, Observer, Snapshot};
pub use remote::{subscription_key, MergeOutcome, OutboxEntry};
pub use store::{args_from_json, Store, FILE_NAME};
pub use sync::{SharedStore, SyncClient, SyncConfig, SyncHandle, SyncStatus};
