//! `GET /api/v4/changes`: the change stream (change data capture), as server-sent events
//! (`Accept: text/event-stream`) or newline-delimited JSON (anything else, such as
//! `application/x-ndjson`).
//!
//! The stream reads the durable change log (`store::changes`) by sequence number from the
//! reader's position: first everything already logged (catching up), then, live, whatever
//! commits next. The process's change feed (`store::ChangeFeed`, which follows every process's
//! commits) wakes it; it always reads the log itself, by sequence number, so it neither misses
//! nor repeats an event, whichever process wrote it.
//!
//! Where it starts: after the `Last-Event-ID` header (what an `EventSource` sends when it
//! reconnects, so it wins), else after `since`, else after the newest committed change (only
//! what commits from now on). A position older than the log keeps answers 410
//! `changes/requery-required` (with the transaction to re-read at in `X-DITTO-TXN-ID`); when the
//! log is pruned past a stream that fell behind, the stream sends a `requeryRequired` event and
//! ends. The key is checked again before each read of the log: a stream ends once its key is
//! revoked or expired.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::error::{ApiError, Plain, Problem};
use super::extract::{Call, NoBody};
use super::openapi::ErrorMessage;
use crate::auth::KeyStore;
use crate::service::{ChangeScope, ChangeScopeError, RequeryEvent};
use crate::store::{ChangeFeed, ChangeLogPage, Store};

/// Log rows read per query.
const PAGE: i64 = 500;
/// A comment (SSE) or an empty line (NDJSON) after this long without an event, so that proxies
/// keep the connection and a gone client is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Open change streams per API key (or per client address in the playground).
pub const MAX_STREAMS_PER_KEY: usize = 16;
/// Open change streams per client address.
pub const MAX_STREAMS_PER_ADDRESS: usize = 16;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v4/changes", web::get().to(changes));
}

/// The query of `GET /api/v4/changes`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ChangesQuery {
    /// Send the changes after this position (an event's `seq`, or a transaction id). Without
    /// it (and without `Last-Event-ID`), the stream starts after the newest committed change.
    #[param(minimum = 0, example = 41)]
    pub since: Option<i64>,
    /// Only this collection's changes.
    #[param(example = "cars")]
    pub collection: Option<String>,
    /// Only changes of documents matching this DQL condition (before or after the change).
    #[param(example = "color = 'blue'")]
    pub filter: Option<String>,
}

/// The open streams: counts per key and per client address, and the shutdown signal.
#[derive(Debug)]
pub struct ChangeStreams {
    open: Mutex<HashMap<String, usize>>,
    closing: tokio::sync::watch::Sender<bool>,
}

impl Default for ChangeStreams {
    fn default() -> Self {
        ChangeStreams {
            open: Mutex::default(),
            closing: tokio::sync::watch::Sender::new(false),
        }
    }
}

/// An open stream's places; given back when the stream ends (dropped).
struct Slot {
    streams: Arc<ChangeStreams>,
    names: Vec<(String, usize)>,
}

impl ChangeStreams {
    /// Ends every open stream (at shutdown: a stream would otherwise hold the graceful stop for
    /// the whole shutdown timeout). Clients resume from their last event elsewhere.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    fn admit(self: &Arc<Self>, names: Vec<(String, usize)>) -> Result<Slot, Problem> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        for (name, max) in &names {
            if open.get(name).copied().unwrap_or(0) >= *max {
                let whose = name.split(':').next().unwrap_or("key");
                return Err(Problem::TooManyStreams(format!(
                    "too many open change streams for this {whose} (at most {max}): close one"
                )));
            }
        }
        for (name, _) in &names {
            *open.entry(name.clone()).or_insert(0) += 1;
        }
        Ok(Slot {
            streams: self.clone(),
            names,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().unwrap_or_else(|p| p.into_inner());
        for (name, _) in &self.names {
            if let Some(n) = open.get_mut(name) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.remove(name);
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Sse,
    Ndjson,
}

/// An event of the change stream (Ditto's CDC shape with bigpeer's `id`, `seq`, `documentId`
/// and `committedAt`). `change` is `{method, oldValue, newValue}` for `upsert` and `update`,
/// `{method, value}` for `remove` and `evict`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ChangeEvent, example = json!({
    "id": "3f2a9c0d6be14e7a9d1f0c2b4a6e8d10:42", "seq": 42, "txnId": 42,
    "type": "documentChanged", "collection": "cars", "documentId": "123",
    "committedAt": "2026-12-07T23:41:56.123456Z",
    "change": {"method": "update", "oldValue": {"_id": "123", "color": "red"},
               "newValue": {"_id": "123", "color": "blue"}}
}))]
pub struct ChangeEventDoc {
    /// Stable across retries and processes: `<epoch>:<seq>`.
    pub id: String,
    /// The position: the SSE `id`, and what to resume after (`since`, `Last-Event-ID`).
    pub seq: i64,
    /// The transaction id.
    pub txn_id: i64,
    /// `documentChanged`.
    #[serde(rename = "type")]
    pub kind: String,
    pub collection: String,
    /// The document's `_id` (a string, number or object).
    #[schema(value_type = Object)]
    pub document_id: serde_json::Value,
    /// When the change committed (RFC 3339, UTC).
    pub committed_at: String,
    /// `method` (`upsert`, `update`, `remove`, `evict`), then `oldValue` and `newValue`, or
    /// `value` for `remove` and `evict`.
    #[schema(value_type = Object)]
    pub change: serde_json::Value,
}

/// The change stream.
#[utoipa::path(
    get,
    path = "/api/v4/changes",
    tag = "changes",
    operation_id = "changes",
    security(("api_key" = [])),
    params(
        ChangesQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event's `seq` \
            (what an EventSource sends when it reconnects); wins over `since`."),
        ("Accept" = Option<String>, Header, description = "`text/event-stream` for server-sent \
            events; anything else gets newline-delimited JSON (`application/x-ndjson`)."),
    ),
    responses(
        (status = 200, description = "The stream, long-lived: first the changes already logged \
            after the position, then each change as it commits, in commit order, only of \
            documents the key may read (before or after the change). SSE: each event has \
            `id: <seq>` and `event: documentChanged`; comments are keep-alives. NDJSON: one \
            event per line; empty lines are keep-alives. When the log is pruned past a stream \
            that fell behind, a `requeryRequired` event (`{\"txnID\", \"type\": \
            \"requeryRequired\", \"documents\": []}`) ends it.",
            content(
                (String = "text/event-stream", example = json!("id: 42\nevent: documentChanged\ndata: {\"id\":\"3f2a9c0d6be14e7a9d1f0c2b4a6e8d10:42\",\"seq\":42,\"txnId\":42,\"type\":\"documentChanged\",\"collection\":\"cars\",\"documentId\":\"123\",\"committedAt\":\"2026-12-07T23:41:56.123456Z\",\"change\":{\"method\":\"upsert\",\"oldValue\":null,\"newValue\":{\"_id\":\"123\",\"color\":\"blue\"}}}\n\n")),
                (ChangeEventDoc = "application/x-ndjson"),
            )),
        (status = 400, description = "A bad parameter or `Last-Event-ID` \
            (`changes/invalid-parameter`), collection name (`changes/invalid-collection`) or \
            filter (`changes/invalid-filter`).", body = ErrorMessage, example = json!({
                "code": "changes/invalid-filter",
                "message": "invalid filter: expected an expression"})),
        (status = 401, description = "No API key, or an unknown, expired or revoked one \
            (`auth/...`).", body = ErrorMessage),
        (status = 403, description = "The key may not read `collection` (`auth/forbidden`).",
            body = ErrorMessage),
        (status = 410, description = "The position is older than the change log keeps \
            (`changes_retention`), or beyond the newest committed change (a position of \
            another database): `changes/requery-required`. Re-read the documents with the \
            answer's `X-DITTO-TXN-ID` header as `X-DITTO-TXN-ID`, then resume with `since` set \
            to it.", body = ErrorMessage, headers(("X-DITTO-TXN-ID" = i64,
                description = "The transaction to re-read at and resume after.")),
            example = json!({"code": "changes/requery-required",
                "message": "the change log cannot give every change after 0 (older than it \
                    keeps, or not a position of this database): re-read the documents with \
                    X-DITTO-TXN-ID: 42, then resume with since=42"})),
        (status = 429, description = "Over the rate limit (`request/rate-limited`), or too many \
            open streams for the key or the address (`changes/too-many-streams`).",
            body = ErrorMessage),
        (status = 503, description = "Postgres is unavailable (`store/unavailable`).",
            body = ErrorMessage),
    )
)]
async fn changes(
    req: HttpRequest,
    call: Call<NoBody, Plain>,
) -> Result<HttpResponse, ApiError<Plain>> {
    let query = web::Query::<ChangesQuery>::from_query(req.query_string())
        .map_err(|e| Problem::ChangesParameter(e.to_string()))?
        .into_inner();
    if query.since.is_some_and(|s| s < 0) {
        return Err(
            Problem::ChangesParameter("since must be a position (0 or more)".into()).into(),
        );
    }
    let last_event_id = match req.headers().get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .filter(|s| *s >= 0)
                .ok_or_else(|| {
                    Problem::ChangesParameter(
                        "Last-Event-ID must be the id of an event of this stream (a position)"
                            .into(),
                    )
                })?,
        ),
    };
    let format = match req
        .headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
    {
        Some(a) if a.contains("text/event-stream") => Format::Sse,
        _ => Format::Ndjson,
    };
    let scope = ChangeScope::new(
        call.access,
        query.collection.as_deref(),
        query.filter.as_deref(),
    )
    .map_err(|e| match e {
        ChangeScopeError::Collection(m) => Problem::ChangesCollection(m),
        ChangeScopeError::Filter(m) => Problem::ChangesFilter(m),
        ChangeScopeError::Service(s) => Problem::Service(s),
    })?;

    let streams = req
        .app_data::<web::Data<ChangeStreams>>()
        .map(|d| d.clone().into_inner())
        .ok_or(Problem::Service(
            crate::store::StoreError::Internal("the app has no change streams").into(),
        ))?;
    let mut names = Vec::new();
    // The key is checked again before each read of the log: a revoked or expired key gets
    // nothing more (none in the playground).
    let credential = if call.state.playground {
        None
    } else {
        super::extract::credential(&req).map(str::to_owned)
    };
    if let Some(secret) = &credential {
        names.push((format!("key:{}", short_hash(secret)), MAX_STREAMS_PER_KEY));
    }
    if let Some(ip) = req.peer_addr().map(|a| a.ip()) {
        names.push((format!("address:{ip}"), MAX_STREAMS_PER_ADDRESS));
    }
    let slot = streams.admit(names)?;
    let closing = streams.closing.subscribe();

    let store = call.state.store.clone();
    let feed = call.state.sync.feed().await.map_err(Problem::from)?.clone();
    let epoch = store.epoch().await.map_err(Problem::from)?;
    let head = store.committed_txn().await.map_err(Problem::from)?;
    let start = last_event_id.or(query.since).unwrap_or(head);
    let first = store
        .change_log_page(start, scope.collection(), PAGE)
        .await
        .map_err(Problem::from)?;
    // Older than the log keeps, or beyond anything committed (a position of another database,
    // or of this one before a restore): either way, events may be missing.
    if start < first.pruned_through || start > head {
        let txn = store.committed_txn().await.map_err(Problem::from)?;
        return Err(Problem::RequeryRequired { since: start, txn }.into());
    }
    let mut pending = VecDeque::new();
    if format == Format::Sse {
        // Sent at once: the client knows the stream is open, and reconnects after 2 s.
        pending.push_back(Bytes::from_static(b"retry: 2000\n: stream open\n\n"));
    }
    let streamer = Streamer {
        key: credential.map(|secret| (call.state.keys.clone(), secret)),
        store,
        feed,
        scope,
        epoch,
        cursor: start,
        format,
        pending,
        first: Some(first),
        done: false,
        closing,
        _slot: slot,
    };
    let body = futures_util::stream::unfold(streamer, Streamer::next);
    let content_type = match format {
        Format::Sse => "text/event-stream",
        Format::Ndjson => "application/x-ndjson",
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-cache"))
        // Proxies (nginx) must not buffer the stream.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

/// A key's secret, as a name that does not reveal it.
fn short_hash(secret: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(secret.as_bytes());
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// One open stream.
struct Streamer {
    /// The key store and the stream's key, checked before each read.
    key: Option<(KeyStore, String)>,
    store: Store,
    /// The process's change feed: what wakes the stream.
    feed: ChangeFeed,
    scope: ChangeScope,
    epoch: String,
    /// Everything up to here has been sent (or was not for this reader).
    cursor: i64,
    format: Format,
    /// Encoded events and keep-alives to send.
    pending: VecDeque<Bytes>,
    /// The page read before answering.
    first: Option<ChangeLogPage>,
    /// Ends once `pending` is sent.
    done: bool,
    /// True once the server shuts down.
    closing: tokio::sync::watch::Receiver<bool>,
    _slot: Slot,
}

impl Streamer {
    async fn next(mut self) -> Option<(Result<Bytes, Infallible>, Streamer)> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some((Ok(chunk), self));
            }
            if self.done || *self.closing.borrow() {
                return None;
            }
            let page = match self.first.take() {
                Some(page) => page,
                None => {
                    if let Some((keys, secret)) = &self.key {
                        if let Err(e) = keys.authenticate(secret).await {
                            tracing::debug!(
                                code = e.code(),
                                "change stream ends: its key is no longer valid"
                            );
                            self.done = true;
                            continue;
                        }
                    }
                    match self
                        .store
                        .change_log_page(self.cursor, self.scope.collection(), PAGE)
                        .await
                    {
                        Ok(page) => page,
                        Err(e) => {
                            // The client resumes from its last event.
                            tracing::warn!(error = %e, "change stream read failed; ending the stream");
                            self.done = true;
                            continue;
                        }
                    }
                }
            };
            if self.cursor < page.pruned_through {
                // Pruned past this reader while it was behind.
                let txn = self.store.known_txn().await.unwrap_or(page.pruned_through);
                self.push_requery(txn.max(page.pruned_through));
                self.done = true;
                continue;
            }
            for row in &page.rows {
                if let Some(event) = self.scope.event(&self.epoch, row) {
                    let json = serde_json::to_string(&event).unwrap_or_default();
                    self.pending.push_back(match self.format {
                        Format::Sse => Bytes::from(format!(
                            "id: {}\nevent: documentChanged\ndata: {json}\n\n",
                            event.seq
                        )),
                        Format::Ndjson => Bytes::from(format!("{json}\n")),
                    });
                }
            }
            self.cursor = self.cursor.max(page.next);
            if page.read as i64 >= PAGE || !self.pending.is_empty() {
                continue;
            }
            // Caught up: wait until the feed has seen a newer commit, or send a keep-alive.
            let next = self.cursor.saturating_add(1);
            let woke = tokio::select! {
                woke = self.feed.wait_for(next, KEEP_ALIVE) => Some(woke),
                _ = self.closing.wait_for(|c| *c) => None,
            };
            match woke {
                Some(true) => {}
                Some(false) => self.keep_alive(),
                None => self.done = true,
            }
        }
    }

    fn keep_alive(&mut self) {
        self.pending
            .push_back(Bytes::from_static(match self.format {
                Format::Sse => b": keep-alive\n\n",
                Format::Ndjson => b"\n",
            }));
    }

    fn push_requery(&mut self, txn: i64) {
        let json = serde_json::to_string(&RequeryEvent::new(txn)).unwrap_or_default();
        // No `id:`: an EventSource must not resume after it.
        self.pending.push_back(match self.format {
            Format::Sse => Bytes::from(format!("event: requeryRequired\ndata: {json}\n\n")),
            Format::Ndjson => Bytes::from(format!("{json}\n")),
        });
    }
}
