//! HTTP resources, one module each. Handlers are thin: an extractor ([`extract`]) admits the
//! request and reads and validates its body, the handler calls the service, and every failure is
//! an [`error::ApiError`], whose one table ([`error::Problem::status_and_code`]) gives the status
//! and code.

pub mod admin;
pub mod auth;
pub mod edge;
pub mod error;
pub mod extract;
pub mod health;
pub mod legacy;
pub mod metrics;
pub mod openapi;
pub mod store;
pub mod sync;
pub mod write;

use actix_web::web;

/// Registers every route. The binary and the in-process test server both use it; later resources
/// (`/api/v4/...`) add their `configure` call here.
pub fn configure(cfg: &mut web::ServiceConfig) {
    health::configure(cfg);
    store::configure(cfg);
    legacy::configure(cfg);
    write::configure(cfg);
    admin::configure(cfg);
    metrics::configure(cfg);
    openapi::configure(cfg);
    sync::configure(cfg);
}
