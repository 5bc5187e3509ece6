//! `GET /metrics`: Prometheus text exposition of request counts and latencies, errors by code,
//! the Postgres pool and the newest committed transaction.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use actix_web::{web, HttpResponse};

use crate::app::AppState;

/// Latency histogram bucket bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    /// (route, method, status) → count
    requests: BTreeMap<(String, String, u16), u64>,
    /// route → latency
    latency: BTreeMap<String, Histogram>,
    /// error code → count
    errors: BTreeMap<String, u64>,
}

/// Process-wide HTTP metrics.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Records one request. `route` is the matched route pattern or `unmatched`; `method` is
    /// kept only when it is a standard one (else `other`), so that clients cannot make up new
    /// series.
    pub fn record(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let method = method_label(method);
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *m.requests
            .entry((route.to_owned(), method.to_owned(), status))
            .or_default() += 1;
        let h = m.latency.entry(route.to_owned()).or_default();
        let secs = elapsed.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// Records an error answer by its stable code.
    pub fn error(&self, code: &str) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *m.errors.entry(code.to_owned()).or_default() += 1;
    }

    fn render(&self, out: &mut String) {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        out.push_str(
            "# HELP bigpeer_http_requests_total HTTP requests by route, method and status.\n",
        );
        out.push_str("# TYPE bigpeer_http_requests_total counter\n");
        for ((route, method, status), n) in &m.requests {
            let _ = writeln!(out, "bigpeer_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}", escape(route));
        }
        out.push_str(
            "# HELP bigpeer_http_request_duration_seconds HTTP request latency by route.\n",
        );
        out.push_str("# TYPE bigpeer_http_request_duration_seconds histogram\n");
        for (route, h) in &m.latency {
            let r = escape(route);
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(out, "bigpeer_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"{bound}\"}} {}", h.counts[i]);
            }
            let _ = writeln!(
                out,
                "bigpeer_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "bigpeer_http_request_duration_seconds_sum{{route=\"{r}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "bigpeer_http_request_duration_seconds_count{{route=\"{r}\"}} {}",
                h.count
            );
        }
        out.push_str("# HELP bigpeer_errors_total Error answers by stable error code.\n");
        out.push_str("# TYPE bigpeer_errors_total counter\n");
        for (code, n) in &m.errors {
            let _ = writeln!(out, "bigpeer_errors_total{{code=\"{}\"}} {n}", escape(code));
        }
    }
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

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let mut out = String::with_capacity(4096);
    state.metrics.render(&mut out);
    let (size, idle) = state.store.connections();
    out.push_str("# HELP bigpeer_db_pool_connections Postgres connections of the pool by state.\n");
    out.push_str("# TYPE bigpeer_db_pool_connections gauge\n");
    let _ = writeln!(out, "bigpeer_db_pool_connections{{state=\"idle\"}} {idle}");
    let _ = writeln!(
        out,
        "bigpeer_db_pool_connections{{state=\"in_use\"}} {}",
        size.saturating_sub(idle)
    );
    let (reads, statements) = state.store.point_read_counts();
    out.push_str(
        "# HELP bigpeer_point_reads_total Point reads by _id answered by the HTTP workers.\n",
    );
    out.push_str("# TYPE bigpeer_point_reads_total counter\n");
    let _ = writeln!(out, "bigpeer_point_reads_total {reads}");
    out.push_str("# HELP bigpeer_point_read_statements_total Postgres statements that answered them (concurrent point reads share one).\n");
    out.push_str("# TYPE bigpeer_point_read_statements_total counter\n");
    let _ = writeln!(out, "bigpeer_point_read_statements_total {statements}");
    let (skipped, _) = state.store.unreadable_rows();
    out.push_str("# HELP bigpeer_unreadable_rows_skipped_total Stored rows a reader could not read and skipped (see /readyz and the logs).\n");
    out.push_str("# TYPE bigpeer_unreadable_rows_skipped_total counter\n");
    let _ = writeln!(out, "bigpeer_unreadable_rows_skipped_total {skipped}");
    out.push_str("# HELP bigpeer_sync_oversized_changes_total Document changes not sent to a sync peer because they do not fit in a frame.\n");
    out.push_str("# TYPE bigpeer_sync_oversized_changes_total counter\n");
    let _ = writeln!(
        out,
        "bigpeer_sync_oversized_changes_total {}",
        state.sync.oversized_changes()
    );
    if let Ok(txn) = state.store.known_txn().await {
        out.push_str("# HELP bigpeer_committed_transaction_id The newest committed transaction id this process knows.\n");
        out.push_str("# TYPE bigpeer_committed_transaction_id gauge\n");
        let _ = writeln!(out, "bigpeer_committed_transaction_id {txn}");
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
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
        let m = Metrics::default();
        for i in 0..100 {
            m.record("unmatched", &format!("X{i}"), 404, Duration::from_millis(1));
        }
        m.record("unmatched", "GET", 404, Duration::from_millis(1));
        let mut out = String::new();
        m.render(&mut out);
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
