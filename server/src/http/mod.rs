//! HTTP resources, one module each. Handlers are thin: they translate between the wire and the
//! store (or `service`), nothing more.

pub mod admin;
pub mod auth;
pub mod edge;
pub mod health;
pub mod legacy;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod store;
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
    crate::sync::configure(cfg);
}
