//! `GET /metrics`: Prometheus text exposition (version 0.0.4, by `prometheus-client`) of request
//! counts and latencies, errors by code, the Postgres pool and the newest committed transaction.
//!
//! Requests are counted by [`observe`], the middleware of every route, through atomic counters
//! (no lock shared by all requests); an error answer's code comes from its
//! [`super::error::ErrorCode`]. The store's own counters are read at each scrape
//! ([`StoreCollector`]).

use std::time::{Duration, Instant};

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::state::AppState;
use crate::store::Store;
use crate::sync::SyncHub;

/// Latency histogram bucket bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Process-wide HTTP metrics (`web::Data<Metrics>`).
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    errors: Family<CodeLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// The metrics of one server; with a store, its counters too.
    pub fn new(store: Option<(Store, SyncHub)>) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let errors = Family::<CodeLabels, Counter>::default();
        registry.register(
            "bigpeer_http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "bigpeer_http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register(
            "bigpeer_errors",
            "Error answers by stable error code",
            errors.clone(),
        );
        if let Some((store, sync)) = store {
            registry.register_collector(Box::new(StoreCollector { store, sync }));
        }
        Metrics {
            registry,
            requests,
            latency,
            errors,
        }
    }

    /// Adds the webhook delivery metrics.
    pub fn register_webhooks(&mut self, stats: &crate::webhooks::DeliveryStats) {
        self.registry.register(
            "bigpeer_webhook_attempts",
            "Webhook requests by webhook and outcome (delivered, failed, dead)",
            stats.attempts.clone(),
        );
        self.registry.register(
            "bigpeer_webhook_events_delivered",
            "Events delivered by webhook",
            stats.events.clone(),
        );
        self.registry.register(
            "bigpeer_webhook_backlog",
            "Changes after each webhook's position (an upper bound), as of its last attempt",
            stats.backlog.clone(),
        );
        self.registry.register(
            "bigpeer_webhook_disabled",
            "Webhooks disabled after too many failed attempts in a row",
            stats.disabled.clone(),
        );
        self.registry.register(
            "bigpeer_webhook_delivery_latency_seconds",
            "From the commit of a batch's first change to the batch's first attempt",
            stats.latency.clone(),
        );
    }

    /// Records one request. `route` is the matched route pattern or `unmatched`; `method` is
    /// kept only when it is a standard one (else `other`), so that clients cannot make up new
    /// series.
    pub fn record(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method: method_label(method),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records an error answer by its stable code.
    pub fn error(&self, code: &'static str) {
        self.errors.get_or_create(&CodeLabels { code }).inc();
    }

    /// Adds the NATS JetStream sink's counters.
    pub fn with_nats(mut self, stats: std::sync::Arc<crate::nats::NatsStats>) -> Metrics {
        self.registry
            .register_collector(Box::new(NatsCollector { stats }));
        self
    }

    fn render(&self, out: &mut String) -> Result<(), std::fmt::Error> {
        prometheus_text::encode(out, &self.registry)
    }
}

/// The store's and the sync hub's own counters, read at each scrape.
#[derive(Debug)]
struct StoreCollector {
    store: Store,
    sync: SyncHub,
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (size, idle) = self.store.connections();
        let pool = [("idle", idle), ("in_use", size.saturating_sub(idle))];
        let mut family = encoder.encode_descriptor(
            "bigpeer_db_pool_connections",
            "Postgres connections of the pool by state.",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (state, n) in pool {
            ConstGauge::new(i64::from(n)).encode(family.encode_family(&StateLabels { state })?)?;
        }
        let (reads, statements) = self.store.point_read_counts();
        counter(
            &mut encoder,
            "bigpeer_point_reads",
            "Point reads by _id answered by the HTTP workers.",
            reads,
        )?;
        counter(
            &mut encoder,
            "bigpeer_point_read_statements",
            "Postgres statements that answered them (concurrent point reads share one).",
            statements,
        )?;
        counter(
            &mut encoder,
            "bigpeer_unreadable_rows_skipped",
            "Stored rows a reader could not read and skipped (see /readyz and the logs).",
            self.store.unreadable_rows().0,
        )?;
        counter(
            &mut encoder,
            "bigpeer_sync_oversized_changes",
            "Document changes not sent to a sync peer because they do not fit in a frame.",
            self.sync.oversized_changes(),
        )?;
        let g = ConstGauge::new(self.store.seen_txn());
        g.encode(encoder.encode_descriptor(
            "bigpeer_committed_transaction_id",
            "The newest committed transaction id this process knows.",
            None,
            g.metric_type(),
        )?)?;
        Ok(())
    }
}

/// The NATS JetStream sink's counters, read at each scrape.
#[derive(Debug)]
struct NatsCollector {
    stats: std::sync::Arc<crate::nats::NatsStats>,
}

impl Collector for NatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        counter(
            &mut encoder,
            "bigpeer_cdc_nats_published",
            "Change events this process published to NATS JetStream and the stream acknowledged (duplicates included).",
            self.stats.published.load(Relaxed),
        )?;
        counter(
            &mut encoder,
            "bigpeer_cdc_nats_duplicates",
            "Re-published events the stream acknowledged as duplicates (dropped by its duplicate window).",
            self.stats.duplicates.load(Relaxed),
        )?;
        counter(
            &mut encoder,
            "bigpeer_cdc_nats_failures",
            "Failed NATS publications or acknowledgements (each retried with backoff).",
            self.stats.failures.load(Relaxed),
        )?;
        let g = ConstGauge::new(self.stats.position.load(Relaxed));
        g.encode(encoder.encode_descriptor(
            "bigpeer_cdc_nats_position",
            "The change sequence position through which this process last published and recorded.",
            None,
            g.metric_type(),
        )?)?;
        Ok(())
    }
}

/// The middleware of every route: counts the request (and its error code, if any) and logs it.
pub async fn observe(
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.path().to_owned();
    let res = next.call(req).await?;
    let status = res.status().as_u16();
    let elapsed = started.elapsed();
    if let Some(metrics) = metrics {
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        metrics.record(&route, method.as_str(), status, elapsed);
        if let Some(code) = res.response().extensions().get::<super::error::ErrorCode>() {
            metrics.error(code.0);
        }
    }
    let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
    if path == "/healthz" || path == "/readyz" {
        tracing::debug!(%method, %path, status, elapsed_ms, "request");
    } else {
        tracing::info!(%method, %path, status, elapsed_ms, "request");
    }
    Ok(res)
}

/// The label of an HTTP method: the standard methods as they are, anything else `other`.
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

/// Prometheus metrics.
///
/// Request counts by route, method and status, latency histograms by route, error answers by
/// stable code, Postgres pool connections and the newest committed transaction, in the
/// Prometheus text exposition format 0.0.4.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    security(()),
    responses(
        (status = 200, description = "The metrics.",
            content_type = "text/plain; version=0.0.4; charset=utf-8", body = String,
            example = "# TYPE bigpeer_http_requests_total counter\n\
                bigpeer_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"} 1\n"),
    ),
)]
async fn metrics(state: web::Data<AppState>, metrics: web::Data<Metrics>) -> HttpResponse {
    // Makes sure the newest committed transaction is known (the collector reads it).
    let _ = state.store.known_txn().await;
    let mut out = String::with_capacity(4096);
    if let Err(e) = metrics.render(&mut out) {
        tracing::error!(error = %e, "the metrics could not be encoded");
        return HttpResponse::InternalServerError().finish();
    }
    HttpResponse::Ok()
        .content_type(prometheus_text::CONTENT_TYPE)
        .body(out)
}

/// Registers `GET /metrics`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_share_one_label() {
        let m = Metrics::new(None);
        for i in 0..100 {
            m.record("unmatched", &format!("X{i}"), 404, Duration::from_millis(1));
        }
        m.record("unmatched", "GET", 404, Duration::from_millis(1));
        let mut out = String::new();
        m.render(&mut out).expect("encoded");
        let series = out
            .lines()
            .filter(|l| l.starts_with("bigpeer_http_requests_total{"))
            .count();
        assert_eq!(series, 2, "{out}");
        assert!(
            out.contains("method=\"other\",status=\"404\"} 100"),
            "{out}"
        );
    }
}
