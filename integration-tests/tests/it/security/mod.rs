//! Hardening: what a hostile key holder or peer tries, over HTTP and over a raw sync client
//! (`docs/sync-protocol.md`). Every test checks the answer and that nothing was written, lost or
//! stalled. Each class of attack has its own module and several variants.

/// Peers' clocks and site ids.
mod clocks;
/// Input that used to reach Postgres' own limits (argument counts, numbers): 4xx, never 5xx.
mod dql_limits;
/// The HTTP and WebSocket edge: credentials before bodies, slow clients, connection caps,
/// rate limits on sync, bounded metrics labels, admin routes, Postgres outages.
mod edge;
/// One limit per dimension (depth, path, id, names, document size) on every path; one bad write
/// never fails its neighbours; an unreadable row never stops the feed.
mod limits;
/// Documents outside a key's read permission do not exist for that key, writes included.
mod permissions;
