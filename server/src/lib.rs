//! The bigpeer server: configuration, the managed Postgres, the store and the HTTP API.

pub mod store;
