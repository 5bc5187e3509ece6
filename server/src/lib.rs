//! The bigpeer server: configuration, the managed Postgres, the store and the HTTP API.
//!
//! [`app::spawn_app`] starts everything (embedded Postgres when no database URL is set, the
//! store, migrations, the HTTP server) and returns a [`app::RunningApp`]; the `bigpeer` binary
//! and the integration tests both go through it.

pub mod app;
pub mod auth;
pub mod config;
pub mod http;
pub mod logging;
pub mod nats;
pub mod pg;
pub mod service;
pub mod state;
pub mod store;
pub mod sync;
pub mod tls;
pub mod webhooks;

pub use app::{spawn_app, AppError, RunningApp};
pub use config::{Config, ConfigError};

#[cfg(test)]
mod testdb;
