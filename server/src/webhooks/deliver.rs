//! Webhook delivery: every bigpeer process runs a few delivery loops, which take turns over the
//! webhooks that have work.
//!
//! - A loop leases one webhook at a time ([`Store::lease_webhook`]: its row locked with `FOR
//!   UPDATE SKIP LOCKED`), so two processes on one database never work on the same webhook at
//!   once, and a crashed process's lease ends with its connection.
//! - With no open delivery, it reads the change log after the webhook's position, turns the
//!   changes the webhook gets into events (its collections and filter) and stores the next batch
//!   as a pending delivery, committed before the first attempt: every attempt of a batch (after
//!   a restart too) sends the same body under the same `webhook-id`.
//! - It attempts the webhook's oldest open delivery: a 2xx answer moves the position past it;
//!   anything else is retried with exponential backoff and jitter (or after the receiver's
//!   `Retry-After`), until the delivery is older than `max_age`: then it is dead-lettered and the
//!   position moves on. So events reach a webhook in sequence order, at least once.
//! - After `disable_after` failed attempts in a row the webhook is disabled, with the reason.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use rand::RngExt as _;

use super::guard::{check_url, GuardedResolver};
use super::sign::Secret;
use crate::auth::Permissions;
use crate::service::{Access, ChangeScope, RequeryEvent};
use crate::store::{AttemptOutcome, DeliveryRow, Store, StoreError, WebhookLease};

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// Most events in one request.
    pub batch: usize,
    /// Time allowed for one request, from connecting to the end of the answer.
    pub timeout: Duration,
    /// How long a delivery is retried before it is dead-lettered.
    pub max_age: Duration,
    /// Failed attempts in a row after which the webhook is disabled (0: never).
    pub disable_after: u32,
    /// The first retry delay; it doubles with each attempt, up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Delivery loops per process (webhooks delivered at once). Each holds one database
    /// connection while it works on a webhook (for up to `timeout`).
    pub workers: usize,
    /// How often an idle loop looks for work (new changes, retries due), at most.
    pub poll: Duration,
    /// Requests may go to loopback, private and link-local addresses.
    pub allow_private: bool,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            batch: 100,
            timeout: Duration::from_secs(15),
            max_age: Duration::from_secs(72 * 3600),
            disable_after: 100,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(3600),
            workers: 2,
            poll: Duration::from_millis(400),
            allow_private: false,
        }
    }
}

/// The delivery metrics of a process (registered by the HTTP layer's `/metrics`).
#[derive(Clone)]
pub struct DeliveryStats {
    /// Attempts by webhook and outcome (`delivered`, `failed`, `dead`).
    pub attempts: Family<OutcomeLabels, Counter>,
    /// Events delivered, by webhook.
    pub events: Family<WebhookLabels, Counter>,
    /// Changes after each webhook's position (an upper bound: not every change is one of its
    /// events), as of the last time a loop worked on it.
    pub backlog: Family<WebhookLabels, Gauge>,
    /// Webhooks disabled after too many failures, by webhook.
    pub disabled: Family<WebhookLabels, Counter>,
    /// Seconds from the commit of a batch's first change to the batch's first attempt.
    pub latency: Histogram,
}

/// Labels of a webhook's series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub webhook: String,
}

/// Labels of an attempt.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub webhook: String,
    pub outcome: &'static str,
}

impl Default for DeliveryStats {
    fn default() -> Self {
        DeliveryStats {
            attempts: Family::default(),
            events: Family::default(),
            backlog: Family::default(),
            disabled: Family::default(),
            latency: Histogram::new([
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0,
            ]),
        }
    }
}

impl std::fmt::Debug for DeliveryStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeliveryStats")
    }
}

/// Change log rows read per page while a batch is assembled.
const PAGE: i64 = 500;
/// Most bytes of a receiver's answer kept as the attempt's error.
const ERROR_BODY: usize = 256;

/// The process's delivery loops. Dropping it (or [`Deliverer::stop`]) stops them.
pub struct Deliverer {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer")
            .field("workers", &self.tasks.len())
            .finish()
    }
}

impl Deliverer {
    /// Starts the delivery loops on the current runtime; they count into `stats`.
    pub fn start(
        store: Store,
        opts: DeliveryOptions,
        stats: DeliveryStats,
    ) -> Result<Deliverer, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(opts.timeout)
            .connect_timeout(opts.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: opts.allow_private,
            }))
            .user_agent(concat!("bigpeer/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let shared = Arc::new(Shared {
            store,
            opts,
            client,
            stats,
        });
        let tasks = (0..shared.opts.workers.max(1))
            .map(|_| tokio::spawn(run(shared.clone(), stopped.clone())))
            .collect();
        Ok(Deliverer { stop, tasks })
    }

    /// Stops the loops, letting each finish the attempt in flight for up to 5 s; an attempt cut
    /// short is rolled back and made again later (same delivery, same `webhook-id`).
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for mut t in self.tasks.drain(..) {
            if tokio::time::timeout(Duration::from_secs(5), &mut t)
                .await
                .is_err()
            {
                t.abort();
            }
        }
    }
}

impl Drop for Deliverer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

struct Shared {
    store: Store,
    opts: DeliveryOptions,
    client: reqwest::Client,
    stats: DeliveryStats,
}

async fn run(shared: Arc<Shared>, mut stopped: tokio::sync::watch::Receiver<bool>) {
    let mut epoch: Option<String> = None;
    loop {
        if *stopped.borrow() || shared.store.is_closed() {
            return;
        }
        // Work until there is none left, then wait for a commit (or the poll interval).
        let idle = match step(&shared, &mut epoch).await {
            Ok(worked) => !worked,
            Err(e) => {
                tracing::warn!(code = e.code(), error = %e, "webhook delivery failed");
                true
            }
        };
        if !idle {
            continue;
        }
        // Look again after the poll interval (jittered, so that the loops of several processes
        // spread out). Polling costs a short query, where waiting for commit notifications
        // would hold a listening connection of the pool for good.
        let ms = u64::try_from(shared.opts.poll.as_millis())
            .unwrap_or(1000)
            .max(2);
        let pause = Duration::from_millis(rand::rng().random_range(ms / 2..=ms));
        tokio::select! {
            _ = stopped.changed() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// One unit of work on one leased webhook; `false` when no webhook had any.
async fn step(shared: &Shared, epoch: &mut Option<String>) -> Result<bool, StoreError> {
    let Some(mut lease) = shared.store.lease_webhook().await? else {
        return Ok(false);
    };
    let webhook = WebhookLabels {
        webhook: lease.webhook.id.clone(),
    };
    match lease.open.clone() {
        Some(delivery) => {
            if delivery.attempts == 0 {
                let waited = unix_ms().saturating_sub(delivery.first_committed_at_ms);
                shared.stats.latency.observe(waited.max(0) as f64 / 1000.0);
            }
            let outcome = attempt(shared, &lease, &delivery).await;
            let (label, position) = match &outcome {
                AttemptOutcome::Delivered { .. } => {
                    shared
                        .stats
                        .events
                        .get_or_create(&webhook)
                        .inc_by(u64::try_from(delivery.events).unwrap_or(0));
                    ("delivered", delivery.last_seq)
                }
                AttemptOutcome::Failed {
                    error,
                    dead,
                    disable,
                    ..
                } => {
                    tracing::info!(webhook = %lease.webhook.id, delivery = %delivery.id, dead, "webhook attempt failed: {error}");
                    if disable.is_some() {
                        tracing::warn!(webhook = %lease.webhook.id, "webhook disabled: {error}");
                        shared.stats.disabled.get_or_create(&webhook).inc();
                    }
                    if *dead {
                        ("dead", delivery.last_seq)
                    } else {
                        ("failed", lease.webhook.position)
                    }
                }
            };
            shared
                .stats
                .attempts
                .get_or_create(&OutcomeLabels {
                    webhook: webhook.webhook.clone(),
                    outcome: label,
                })
                .inc();
            let head = lease.head().await?;
            shared
                .stats
                .backlog
                .get_or_create(&webhook)
                .set(head.saturating_sub(position).max(0));
            lease.record(&outcome).await?;
        }
        None => {
            let epoch = match epoch {
                Some(e) => e.clone(),
                None => epoch.insert(lease.epoch().await?).clone(),
            };
            batch(shared, &mut lease, &epoch).await?;
        }
    }
    lease.commit().await?;
    Ok(true)
}

/// Assembles the next batch of a webhook's events from the change log and stores it as a
/// pending delivery, or moves the position past changes the webhook does not get.
async fn batch(shared: &Shared, lease: &mut WebhookLease, epoch: &str) -> Result<(), StoreError> {
    let w = lease.webhook.clone();
    let mut scope =
        match ChangeScope::new(Access::new(Permissions::all()), None, w.filter.as_deref()) {
            Ok(scope) => scope,
            Err(e) => {
                // Checked when the webhook was stored; only a change of the DQL grammar gets here.
                tracing::error!(webhook = %w.id, "the webhook's filter no longer compiles: {e}");
                let reason = format!("its filter no longer compiles: {e}");
                lease.record_disabled(&reason).await?;
                return Ok(());
            }
        };
    let mut events: Vec<serde_json::Value> = Vec::new();
    let mut first_seq = None;
    let mut first_committed_us = None;
    let mut cursor = w.position;
    loop {
        let page = lease.change_log_page(cursor, PAGE).await?;
        if page.pruned_through > cursor && events.is_empty() {
            // Older changes are gone (the webhook was disabled, or behind, for longer than
            // changes_retention): the receiver learns it, as a change stream's reader does.
            events.push(json(&RequeryEvent::new(page.pruned_through)));
            first_seq = Some(cursor + 1);
            cursor = page.pruned_through;
            continue;
        }
        let full = page.read as i64 >= PAGE;
        for row in &page.rows {
            cursor = row.seq;
            let wanted = w
                .collections
                .as_ref()
                .is_none_or(|c| c.contains(&row.collection));
            if wanted {
                if let Some(event) = scope.event(epoch, row) {
                    first_seq.get_or_insert(row.seq);
                    first_committed_us.get_or_insert(row.committed_at_us);
                    events.push(json(&event));
                    if events.len() >= shared.opts.batch {
                        break;
                    }
                }
            }
        }
        if events.len() >= shared.opts.batch {
            break;
        }
        cursor = cursor.max(page.next);
        if !full {
            break;
        }
    }
    match first_seq {
        None => lease.advance(cursor).await,
        Some(first) => {
            let body = serde_json::to_vec(&serde_json::json!({ "events": events }))
                .map_err(|_| StoreError::Internal("a webhook batch does not serialise"))?;
            let id = format!(
                "msg_{:016x}{:016x}",
                rand::random::<u64>(),
                rand::random::<u64>()
            );
            let n = i32::try_from(events.len()).unwrap_or(i32::MAX);
            let committed = first_committed_us.unwrap_or_else(|| unix_ms().saturating_mul(1000));
            lease
                .create_delivery(&id, first, cursor, n, committed, &body)
                .await
        }
    }
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// Sends one delivery and says what became of it.
async fn attempt(shared: &Shared, lease: &WebhookLease, d: &DeliveryRow) -> AttemptOutcome {
    let w = &lease.webhook;
    let opts = &shared.opts;
    let failed = |status: Option<i32>, error: String, retry_after: Option<Duration>| {
        let now_ms = unix_ms();
        let dead = now_ms.saturating_sub(d.created_at_ms)
            >= i64::try_from(opts.max_age.as_millis()).unwrap_or(i64::MAX);
        let failures = u32::try_from(w.consecutive_failures).unwrap_or(0) + 1;
        let disable = (opts.disable_after > 0 && failures >= opts.disable_after).then(|| {
            format!("disabled after {failures} failed attempts in a row; the last: {error}")
        });
        let delay = retry_after.unwrap_or_else(|| backoff(opts, d.attempts));
        AttemptOutcome::Failed {
            status,
            error,
            retry_in_ms: i64::try_from(delay.as_millis()).unwrap_or(i64::MAX),
            dead,
            disable,
        }
    };
    let url = match check_url(&w.url, opts.allow_private) {
        Ok(url) => url,
        Err(e) => return failed(None, e.to_string(), None),
    };
    let secret = match Secret::parse(&w.secret) {
        Ok(s) => s,
        Err(e) => return failed(None, format!("the webhook's secret: {e}"), None),
    };
    let timestamp = unix_ms() / 1000;
    let signature = secret.sign(&d.id, timestamp, &d.body);
    let sent = shared
        .client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &d.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(d.body.clone())
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => return failed(None, transport_error(&e), None),
    };
    let status = resp.status();
    if status.is_success() {
        return AttemptOutcome::Delivered {
            status: i32::from(status.as_u16()),
        };
    }
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(opts.backoff_max));
    let body = resp.bytes().await.unwrap_or_default();
    let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY)]).into_owned();
    failed(
        Some(i32::from(status.as_u16())),
        format!("HTTP {status}: {text}"),
        retry_after,
    )
}

/// A transport error as one line, with its causes (the guard's refusal among them).
fn transport_error(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "no answer in time".to_owned()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The delay before attempt `attempts + 1`: `backoff_min` doubled per attempt, at most
/// `backoff_max`, drawn at random between half and all of it.
fn backoff(opts: &DeliveryOptions, attempts: i32) -> Duration {
    let exp = u32::try_from(attempts.clamp(0, 30)).unwrap_or(30);
    let full = opts
        .backoff_min
        .saturating_mul(2u32.saturating_pow(exp))
        .min(opts.backoff_max);
    let ms = u64::try_from(full.as_millis()).unwrap_or(u64::MAX).max(2);
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let opts = DeliveryOptions {
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
            ..DeliveryOptions::default()
        };
        for (attempts, full) in [
            (0, 100),
            (1, 200),
            (2, 400),
            (3, 800),
            (4, 1000),
            (40, 1000),
        ] {
            for _ in 0..50 {
                let d = backoff(&opts, attempts).as_millis();
                assert!((full / 2..=full).contains(&d), "{attempts}: {d}");
            }
        }
    }
}
