//! The NATS JetStream sink of change data capture (`nats_url`): every event of the change log,
//! as a reader that may read everything sees it, published to `<prefix>.<collection>` with the
//! event id as `Nats-Msg-Id`.
//!
//! - The sink's position lives in Postgres (`cdc_sinks`, [`Store::lease_cdc_sink`]): created at
//!   the end of the change log the first time the sink runs, and moved only past events whose
//!   publication the stream has acknowledged. Its row is leased (`FOR UPDATE SKIP LOCKED`) for
//!   each batch, so one process publishes at a time, and a crashed process's lease ends with its
//!   connection.
//! - A batch is published as a window of messages whose acknowledgements are awaited in order;
//!   the position moves to the last event acknowledged. Whatever was published but not
//!   recorded (a crash, a failed acknowledgement) is published again from the position, under
//!   the same message ids: JetStream drops the copies that arrive within its duplicate window.
//! - No stream capturing the subject (`no responders`) is logged with the fix and retried with
//!   backoff: the sink never creates a stream itself.
//! - Changes pruned before they were published are announced with a `requeryRequired` event on
//!   `<prefix>._requery`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage as Publish;

use crate::auth::Permissions;
use crate::service::{event_id, Access, ChangeScope, RequeryEvent};
use crate::store::{Store, StoreError};

/// The sink's row in `cdc_sinks`.
pub const SINK_NAME: &str = "nats";
/// The subject token of `requeryRequired` events (collections' tokens never start with `_`).
pub const REQUERY_TOKEN: &str = "_requery";

/// Sink settings.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// One server URL, or several separated by commas (`nats://HOST:PORT`, `tls://...`).
    pub url: String,
    /// Subjects are `<prefix>.<collection>`.
    pub prefix: String,
    /// Most events published before their acknowledgements are awaited (the position moves
    /// after each window).
    pub window: usize,
    /// How long to wait for one acknowledgement.
    pub ack_timeout: Duration,
    /// How often an idle sink looks for new changes, at most.
    pub poll: Duration,
    /// The first retry delay after a failure; it doubles up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl NatsOptions {
    pub fn new(url: impl Into<String>, prefix: impl Into<String>) -> NatsOptions {
        NatsOptions {
            url: url.into(),
            prefix: prefix.into(),
            window: 256,
            ack_timeout: Duration::from_secs(5),
            poll: Duration::from_millis(200),
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// What the sink has done, for the metrics.
#[derive(Debug, Default)]
pub struct NatsStats {
    /// Events the stream acknowledged (duplicates included).
    pub published: AtomicU64,
    /// Acknowledgements that said the message was a duplicate (a re-publication dropped).
    pub duplicates: AtomicU64,
    /// Failed publications (each retried).
    pub failures: AtomicU64,
    /// The position this process last recorded.
    pub position: AtomicI64,
}

/// The running sink. Dropping it (or [`NatsSink::stop`]) stops it.
pub struct NatsSink {
    stop: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    stats: Arc<NatsStats>,
}

impl std::fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSink").finish_non_exhaustive()
    }
}

impl NatsSink {
    /// Starts the sink on the current runtime. It connects in the background (and keeps
    /// reconnecting): a NATS server that is down delays the events, never the start.
    pub fn start(store: Store, opts: NatsOptions) -> NatsSink {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let stats = Arc::new(NatsStats::default());
        let task = tokio::spawn(run(store, opts, stats.clone(), stopped));
        NatsSink {
            stop,
            task: Some(task),
            stats,
        }
    }

    pub fn stats(&self) -> Arc<NatsStats> {
        self.stats.clone()
    }

    /// Stops the sink, letting the batch in flight finish for up to 5 s; a batch cut short is
    /// rolled back (its events are published again, and deduplicated, later).
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(mut t) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(5), &mut t)
                .await
                .is_err()
            {
                t.abort();
            }
        }
    }
}

impl Drop for NatsSink {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Why a batch stopped short.
#[derive(Debug, thiserror::Error)]
enum SinkError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The client has no connection to a NATS server (yet): nothing is leased or sent.
    #[error("not connected to the NATS server")]
    NotConnected,
    /// Publishing took longer than the acknowledgement timeout.
    #[error("publishing to {0} did not finish in time")]
    SendTimeout(String),
    /// Publishing or its acknowledgement failed.
    #[error("publishing to {subject} failed: {source}")]
    Publish {
        subject: String,
        source: async_nats::jetstream::context::PublishError,
    },
}

impl SinkError {
    fn code(&self) -> &'static str {
        match self {
            SinkError::Store(e) => e.code(),
            SinkError::NotConnected => "nats/not-connected",
            SinkError::SendTimeout(_) => "nats/ack-timeout",
            SinkError::Publish { source, .. } => match source.kind() {
                PublishErrorKind::StreamNotFound => "nats/no-stream",
                PublishErrorKind::TimedOut => "nats/ack-timeout",
                _ => "nats/publish-failed",
            },
        }
    }
}

async fn run(
    store: Store,
    opts: NatsOptions,
    stats: Arc<NatsStats>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let shown = crate::config::mask_nats_url(&opts.url);
    let (servers, credentials) = split_credentials(&opts.url);
    let mut connect = async_nats::ConnectOptions::new();
    match credentials {
        Some(Credentials::UserPassword(user, password)) => {
            connect = connect.user_and_password(user, password);
        }
        Some(Credentials::Token(token)) => connect = connect.token(token),
        None => {}
    }
    let client = match connect
        .name(concat!("bigpeer/", env!("CARGO_PKG_VERSION")))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(servers)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(code = "nats/connect", url = %shown, "the NATS sink cannot start: {e}");
            return;
        }
    };
    tracing::info!(url = %shown, prefix = %opts.prefix, "publishing change events to NATS JetStream");
    let js = async_nats::jetstream::ContextBuilder::new()
        .timeout(opts.ack_timeout)
        .build(client.clone());
    let mut epoch: Option<String> = None;
    let mut ready = false;
    let mut failures: u32 = 0;
    loop {
        if *stopped.borrow() || store.is_closed() {
            return;
        }
        let outcome = if ready {
            // While there is no connection, messages would pile up in the client's buffer:
            // nothing is leased or sent until it is back.
            if client.connection_state() == async_nats::connection::State::Connected {
                step(&store, &js, &opts, &stats, &mut epoch).await
            } else {
                Err(SinkError::NotConnected)
            }
        } else {
            // The sink's row: created at the end of the change log the first time.
            match store.ensure_cdc_sink(SINK_NAME).await {
                Ok(_) => {
                    ready = true;
                    continue;
                }
                Err(e) => Err(SinkError::Store(e)),
            }
        };
        let pause = match outcome {
            Ok(true) => {
                failures = 0;
                continue;
            }
            Ok(false) => {
                failures = 0;
                opts.poll
            }
            Err(SinkError::NotConnected) => {
                // Connecting takes a moment at start: only a wait of a few retries is worth a
                // warning.
                failures = failures.saturating_add(1);
                if failures > 4 {
                    tracing::warn!(code = "nats/not-connected", url = %shown, "no connection to the NATS server yet; the events wait");
                } else {
                    tracing::debug!(url = %shown, "waiting for the connection to the NATS server");
                }
                backoff(&opts, failures)
            }
            Err(e) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                let code = e.code();
                if code == "nats/no-stream" {
                    tracing::warn!(
                        code,
                        "no JetStream stream captures the subjects {p}.>: create one, e.g. \
                         `nats stream add BIGPEER_CDC --subjects '{p}.>' --storage file \
                         --dupe-window 2m --defaults`; the events wait (the sink retries): {e}",
                        p = opts.prefix
                    );
                } else {
                    tracing::warn!(code, url = %shown, error = %e, "the NATS sink failed; retrying");
                }
                failures = failures.saturating_add(1);
                backoff(&opts, failures)
            }
        };
        tokio::select! {
            _ = stopped.changed() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// The delay after `failures` failures in a row: `backoff_min` doubled per failure, at most
/// `backoff_max`.
fn backoff(opts: &NatsOptions, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    opts.backoff_min
        .saturating_mul(2u32.saturating_pow(exp))
        .min(opts.backoff_max)
}

/// One batch: `false` when there was no work (or another process holds the sink).
async fn step(
    store: &Store,
    js: &async_nats::jetstream::Context,
    opts: &NatsOptions,
    stats: &NatsStats,
    epoch: &mut Option<String>,
) -> Result<bool, SinkError> {
    let Some(mut lease) = store.lease_cdc_sink(SINK_NAME).await? else {
        return Ok(false);
    };
    let epoch = match epoch {
        Some(e) => e.clone(),
        None => epoch.insert(lease.epoch().await?).clone(),
    };
    let position = lease.position;
    let limit = i64::try_from(opts.window.max(1)).unwrap_or(256);
    let page = lease.change_log_page(position, limit).await?;
    if page.pruned_through > position {
        // Changes after the position are gone (the sink was off, or failing, for longer than
        // changes_retention): consumers learn it as a change stream's reader does.
        let subject = format!("{}.{REQUERY_TOKEN}", opts.prefix);
        let id = format!("{epoch}:requery:{}", page.pruned_through);
        let body = json_bytes(&RequeryEvent::new(page.pruned_through));
        publish_one(js, opts, stats, subject, id, body).await?;
        lease.advance(page.pruned_through).await?;
        lease.commit().await?;
        stats
            .position
            .fetch_max(page.pruned_through, Ordering::Relaxed);
        return Ok(true);
    }
    // Every change, as a reader that may read everything sees it.
    let mut scope = ChangeScope::new(Access::new(Permissions::all()), None, None)
        .map_err(|_| StoreError::Internal("the sink's change scope"))?;
    let mut pending = Vec::with_capacity(page.rows.len());
    let mut unsent = None;
    for row in &page.rows {
        let Some(event) = scope.event(&epoch, row) else {
            continue;
        };
        let subject = format!("{}.{}", opts.prefix, subject_token(&row.collection));
        let msg = Publish::build()
            .payload(json_bytes(&event))
            .message_id(event_id(&epoch, row.seq));
        match tokio::time::timeout(opts.ack_timeout, js.send_publish(subject.clone(), msg)).await {
            Ok(Ok(ack)) => pending.push((row.seq, subject, ack)),
            Ok(Err(source)) => {
                unsent = Some(SinkError::Publish { subject, source });
                break;
            }
            Err(_) => {
                unsent = Some(SinkError::SendTimeout(subject));
                break;
            }
        }
    }
    // The acknowledgements, in order: the position moves to the last event acknowledged
    // before the first failure.
    let mut acked = position;
    let mut failed = None;
    for (seq, subject, ack) in pending {
        match ack.await {
            Ok(a) => {
                stats.published.fetch_add(1, Ordering::Relaxed);
                if a.duplicate {
                    stats.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                acked = seq;
            }
            Err(source) => {
                failed = Some(SinkError::Publish { subject, source });
                break;
            }
        }
    }
    let failed = failed.or(unsent);
    let to = if failed.is_none() {
        // Rows that do not read (logged and skipped by the store) and the snapshot's head are
        // covered too.
        acked.max(page.next)
    } else {
        acked
    };
    if to > position {
        lease.advance(to).await?;
    }
    lease.commit().await?;
    stats.position.fetch_max(to, Ordering::Relaxed);
    match failed {
        Some(e) => Err(e),
        None => Ok(to > position),
    }
}

async fn publish_one(
    js: &async_nats::jetstream::Context,
    opts: &NatsOptions,
    stats: &NatsStats,
    subject: String,
    id: String,
    body: bytes::Bytes,
) -> Result<(), SinkError> {
    let msg = Publish::build().payload(body).message_id(id);
    let ack =
        match tokio::time::timeout(opts.ack_timeout, js.send_publish(subject.clone(), msg)).await {
            Ok(Ok(ack)) => ack.await,
            Ok(Err(e)) => Err(e),
            Err(_) => return Err(SinkError::SendTimeout(subject)),
        };
    match ack {
        Ok(_) => {
            stats.published.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(source) => Err(SinkError::Publish { subject, source }),
    }
}

/// Credentials given in a server URL.
#[derive(Debug, PartialEq, Eq)]
enum Credentials {
    /// `nats://USER:PASSWORD@HOST`.
    UserPassword(String, String),
    /// `nats://TOKEN@HOST`.
    Token(String),
}

/// The server URLs without their credentials, and the credentials (the first URL's that has
/// any; percent-decoded): the client authenticates with its options, not with the URLs.
fn split_credentials(urls: &str) -> (Vec<String>, Option<Credentials>) {
    let mut credentials = None;
    let servers = urls
        .split(',')
        .map(str::trim)
        .map(|one| match url::Url::parse(one) {
            Ok(mut u) if !u.username().is_empty() => {
                let user = percent_decode(u.username());
                let found = match u.password() {
                    Some(p) => Credentials::UserPassword(user, percent_decode(p)),
                    None => Credentials::Token(user),
                };
                credentials.get_or_insert(found);
                let _ = u.set_username("");
                let _ = u.set_password(None);
                u.to_string()
            }
            _ => one.to_owned(),
        })
        .collect();
    (servers, credentials)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json_bytes<T: serde::Serialize>(v: &T) -> bytes::Bytes {
    serde_json::to_vec(v).unwrap_or_default().into()
}

/// A collection's subject token: the name itself when it is made of ASCII letters, digits, `-`
/// and `_` and does not start with `_`; otherwise every other byte (and a leading `_`) is written
/// `%XX` (uppercase hex), so that dots, wildcards and spaces never reach the subject, and tokens
/// that start with `_` stay bigpeer's own (`_requery`).
pub fn subject_token(collection: &str) -> String {
    let mut out = String::with_capacity(collection.len());
    for (i, b) in collection.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'-' || (b == b'_' && i > 0);
        if plain {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_names_become_single_safe_tokens() {
        assert_eq!(subject_token("orders"), "orders");
        assert_eq!(subject_token("my_orders-2"), "my_orders-2");
        assert_eq!(subject_token("a.b"), "a%2Eb");
        assert_eq!(subject_token("*>"), "%2A%3E");
        assert_eq!(subject_token("two words"), "two%20words");
        assert_eq!(subject_token("_requery"), "%5Frequery");
        assert_eq!(subject_token("100%"), "100%25");
        assert_eq!(subject_token("é"), "%C3%A9");
    }

    #[test]
    fn credentials_leave_the_urls_for_the_connect_options() {
        assert_eq!(
            split_credentials("nats://cdc:p%40ss@n1:4222, nats://n2:4222"),
            (
                vec!["nats://n1:4222".to_owned(), "nats://n2:4222".to_owned()],
                Some(Credentials::UserPassword("cdc".into(), "p@ss".into()))
            )
        );
        assert_eq!(
            split_credentials("tls://s3cr3t@n1:4222"),
            (
                vec!["tls://n1:4222".to_owned()],
                Some(Credentials::Token("s3cr3t".into()))
            )
        );
        assert_eq!(
            split_credentials("nats://127.0.0.1:4222"),
            (vec!["nats://127.0.0.1:4222".to_owned()], None)
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let opts = NatsOptions {
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
            ..NatsOptions::new("nats://127.0.0.1:4222", "bigpeer")
        };
        let ms: Vec<u128> = [1, 2, 3, 4, 5, 40]
            .iter()
            .map(|f| backoff(&opts, *f).as_millis())
            .collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1000, 1000]);
    }
}
