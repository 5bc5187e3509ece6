//! HTTP resources, one module each. Handlers are thin: an extractor ([`extract`]) admits the
//! request and reads and validates its body, the handler calls the service, and every failure is
//! an [`error::ApiError`], whose one table ([`error::Problem::status_and_code`]) gives the status
//! and code.

pub mod admin;
pub mod auth;
pub mod changes;
pub mod edge;
pub mod error;
pub mod extract;
pub mod health;
pub mod legacy;
pub mod metrics;
pub mod openapi;
pub mod store;
pub mod sync;
pub mod webhooks;
pub mod write;

use actix_web::web;

/// Registers every route. The binary and the in-process test server both use it; later resources
/// (`/api/v4/...`) add their `configure` call here.
pub fn configure(cfg: &mut web::ServiceConfig) {
    health::configure(cfg);
    store::configure(cfg);
    legacy::configure(cfg);
    write::configure(cfg);
    changes::configure(cfg);
    admin::configure(cfg);
    webhooks::configure(cfg);
    metrics::configure(cfg);
    openapi::configure(cfg);
    sync::configure(cfg);
    cfg.default_service(web::to(unrouted));
}

/// What answers a request no route takes: 405 with `Allow` when the path has routes for other
/// methods, else 404, both in the JSON error envelope.
pub async fn unrouted(
    req: actix_web::HttpRequest,
) -> Result<actix_web::HttpResponse, error::ApiError<error::Plain>> {
    let allowed = routes::allowed_methods(req.path());
    if allowed.is_empty() {
        return Err(error::Problem::NoRoute(req.path().to_owned()).into());
    }
    Err(error::Problem::MethodNotAllowed(req.method().to_string(), allowed).into())
}

/// The methods of each route, from the OpenAPI description (which a test keeps complete).
mod routes {
    use std::sync::LazyLock;

    use actix_web::dev::ResourceDef;

    /// Routes served that the OpenAPI spec may not describe (added when it does not).
    const UNDESCRIBED: [(&str, &str); 2] = [("/api/v4/swagger.json", "GET"), ("/docs", "GET")];

    static ROUTES: LazyLock<Vec<(ResourceDef, Vec<&'static str>)>> = LazyLock::new(|| {
        let spec = super::openapi::spec();
        let mut routes: Vec<(ResourceDef, Vec<&'static str>)> = spec
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let methods = [
                    ("GET", item.get.is_some()),
                    ("PUT", item.put.is_some()),
                    ("POST", item.post.is_some()),
                    ("DELETE", item.delete.is_some()),
                    ("PATCH", item.patch.is_some()),
                ]
                .into_iter()
                .filter_map(|(m, has)| has.then_some(m))
                .collect();
                (ResourceDef::new(path.as_str()), methods)
            })
            .collect();
        for (path, method) in UNDESCRIBED {
            if !spec.paths.paths.contains_key(path) {
                routes.push((ResourceDef::new(path), vec![method]));
            }
        }
        routes
    });

    /// The methods the routes of `path` take; empty when no route has it.
    pub fn allowed_methods(path: &str) -> Vec<&'static str> {
        ROUTES
            .iter()
            .filter(|(def, _)| def.is_match(path))
            .flat_map(|(_, methods)| methods.iter().copied())
            .collect()
    }
}
