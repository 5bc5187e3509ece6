//! `GET /api/v4/sync`: the WebSocket upgrade, subprotocol negotiation and the two tasks that move
//! frames between the socket and a session's [`Link`].

use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Item, Message, ProtocolError};
use tokio::sync::{mpsc, watch};

use super::{protocols, Inbound, Link, Outbound, SyncHub, SyncProtocol};
use crate::app::AppState;

/// Inbound frames buffered per session before the socket stops being read (TCP then pushes back).
const INBOUND_QUEUE: usize = 16;

/// The largest message a peer may send before it is welcomed (its `Hello`): nobody without
/// credentials makes the server buffer more.
const BEFORE_WELCOME: usize = 64 * 1024;

/// The tag of `Welcome`, the first byte of its frame (`docs/sync-protocol.md`, section 3).
const WELCOME_TAG: u8 = 0x02;

/// Registers the sync endpoint.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v4/sync", web::get().to(sync));
}

/// The first protocol the client offers that this server speaks.
fn choose(req: &HttpRequest) -> Option<&'static dyn SyncProtocol> {
    let offered = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim);
    for name in offered {
        if let Some(p) = protocols().iter().find(|p| p.subprotocol() == name) {
            return Some(*p);
        }
    }
    None
}

/// Why a request is not a WebSocket upgrade this server can accept (RFC 6455 section 4.2.1):
/// the status, a stable code, the message and a hint.
fn upgrade_refusal(req: &HttpRequest) -> Option<(StatusCode, &'static str, String, String)> {
    let has_token = |name: header::HeaderName, token: &str| {
        req.headers()
            .get_all(name)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let not_upgrade = |message: &str| {
        Some((
            StatusCode::BAD_REQUEST,
            "sync/not-websocket",
            message.to_owned(),
            "connect with a WebSocket client (ws:// or wss://) and offer the subprotocol \
             bigpeer-sync.1; see docs/sync-protocol.md"
                .to_owned(),
        ))
    };
    if !has_token(header::UPGRADE, "websocket") {
        return not_upgrade("this endpoint only accepts a WebSocket upgrade (Upgrade: websocket)");
    }
    if !has_token(header::CONNECTION, "upgrade") {
        return not_upgrade("a WebSocket upgrade needs the header Connection: Upgrade");
    }
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY);
    // The key is 16 random bytes in base64: 24 characters.
    if key.is_none_or(|k| k.len() != 24) {
        return not_upgrade("a WebSocket upgrade needs a Sec-WebSocket-Key of 16 bytes in base64");
    }
    match req.headers().get(header::SEC_WEBSOCKET_VERSION) {
        None => not_upgrade("a WebSocket upgrade needs the header Sec-WebSocket-Version: 13"),
        Some(v) if v.as_bytes() != b"13" => Some((
            StatusCode::UPGRADE_REQUIRED,
            "sync/unsupported-websocket-version",
            format!(
                "WebSocket version {} is not supported",
                String::from_utf8_lossy(v.as_bytes())
            ),
            "use WebSocket version 13 (RFC 6455)".to_owned(),
        )),
        Some(_) => None,
    }
}

fn refusal(status: StatusCode, code: &str, message: String, hint: String) -> HttpResponse {
    let mut resp = HttpResponse::build(status);
    if status == StatusCode::UPGRADE_REQUIRED {
        resp.insert_header((header::SEC_WEBSOCKET_VERSION, "13"));
    }
    resp.json(serde_json::json!({"code": code, "message": message, "hint": hint}))
}

async fn sync(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    // The client address's rate limit, before anything else (the key is only known at Hello).
    if let Some(ip) = req.peer_addr().map(|a| a.ip()) {
        if let Err(secs) = state.limits.check_ip(ip) {
            state.metrics.error("request/rate-limited");
            let mut resp = refusal(
                StatusCode::TOO_MANY_REQUESTS,
                "request/rate-limited",
                format!("too many requests: retry in {secs} s"),
                "connect less often: this client address is over its rate limit".to_owned(),
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
            return Ok(resp);
        }
    }
    if let Some((status, code, message, hint)) = upgrade_refusal(&req) {
        return Ok(refusal(status, code, message, hint));
    }
    let Some(protocol) = choose(&req) else {
        let names: Vec<&str> = protocols().iter().map(|p| p.subprotocol()).collect();
        return Ok(refusal(
            StatusCode::BAD_REQUEST,
            "sync/unsupported-protocol",
            "no supported sync protocol offered in Sec-WebSocket-Protocol".to_owned(),
            format!("offer one of: {}", names.join(", ")),
        ));
    };
    let hub = state.sync.clone();
    let (response, session, stream) =
        match actix_ws::handle_with_protocols(&req, body, &[protocol.subprotocol()]) {
            Ok(r) => r,
            // Checked above; whatever else the handshake finds still gets a JSON body.
            Err(e) => {
                let status = e.as_response_error().status_code();
                return Ok(refusal(
                    status,
                    "sync/not-websocket",
                    format!("the WebSocket upgrade was refused: {e}"),
                    "see docs/sync-protocol.md".to_owned(),
                ));
            }
        };
    let max_frame = hub.options.max_frame;
    let (in_tx, in_rx) = mpsc::channel(INBOUND_QUEUE);
    let (out_tx, out_rx) = mpsc::channel(hub.options.send_queue.max(1));
    let (welcomed_tx, welcomed_rx) = watch::channel(false);
    actix_web::rt::spawn(read_socket(
        stream,
        session.clone(),
        in_tx,
        max_frame,
        welcomed_rx,
    ));
    actix_web::rt::spawn(write_socket(
        session,
        out_rx,
        hub.options.heartbeat.saturating_mul(2),
        welcomed_tx,
    ));
    actix_web::rt::spawn(run(protocol, hub, in_rx, out_tx));
    Ok(response)
}

async fn run(
    protocol: &'static dyn SyncProtocol,
    hub: SyncHub,
    inbound: mpsc::Receiver<Inbound>,
    outbound: mpsc::Sender<Outbound>,
) {
    protocol.run(hub, Link { inbound, outbound }).await;
}

/// Socket → session. Stops at the first oversized or broken frame, at close, or when the session
/// is gone. Messages (frames, or fragments put together) may be up to `max_frame` bytes once the
/// peer is welcomed, [`BEFORE_WELCOME`] before.
async fn read_socket(
    stream: actix_ws::MessageStream,
    mut session: actix_ws::Session,
    tx: mpsc::Sender<Inbound>,
    max_frame: usize,
    mut welcomed: watch::Receiver<bool>,
) {
    let mut limit = BEFORE_WELCOME.min(max_frame);
    let mut stream = stream.max_frame_size(limit);
    // A fragmented message being put together: (binary?, bytes so far).
    let mut partial: Option<(bool, Vec<u8>)> = None;
    loop {
        let item = tokio::select! {
            // The welcome first: it is sent before the peer can have seen it, so a message the
            // peer sends after it is always read with the full limit.
            biased;
            changed = welcomed.changed(), if limit < max_frame => {
                if changed.is_err() || *welcomed.borrow() {
                    limit = max_frame;
                    stream = stream.max_frame_size(limit);
                }
                continue;
            }
            item = stream.recv() => item,
        };
        let Some(item) = item else { break };
        let message = match item {
            Ok(Message::Binary(b)) => Some(Inbound::Binary(b.to_vec())),
            Ok(Message::Text(_)) => Some(Inbound::Text),
            Ok(Message::Continuation(piece)) => {
                let (first, binary, bytes, last) = match piece {
                    Item::FirstBinary(b) => (true, true, b, false),
                    Item::FirstText(b) => (true, false, b, false),
                    Item::Continue(b) => (false, false, b, false),
                    Item::Last(b) => (false, false, b, true),
                };
                let assembled = match (&mut partial, first) {
                    (None, true) => {
                        partial = Some((binary, bytes.to_vec()));
                        None
                    }
                    (Some((_, so_far)), false) => {
                        so_far.extend_from_slice(&bytes);
                        None
                    }
                    _ => Some(Inbound::Broken(
                        "a fragment out of order (RFC 6455 section 5.4)".to_owned(),
                    )),
                };
                if assembled.is_some() {
                    assembled
                } else if partial.as_ref().is_some_and(|(_, b)| b.len() > limit) {
                    Some(Inbound::TooLarge)
                } else if last {
                    partial.take().map(|(binary, bytes)| {
                        if binary {
                            Inbound::Binary(bytes)
                        } else {
                            Inbound::Text
                        }
                    })
                } else {
                    None
                }
            }
            Ok(Message::Ping(p)) => {
                if session.pong(&p).await.is_err() {
                    break;
                }
                None
            }
            Ok(Message::Pong(_)) | Ok(Message::Nop) => None,
            Ok(Message::Close(_)) => Some(Inbound::Closed),
            Err(ProtocolError::Overflow) => Some(Inbound::TooLarge),
            Err(e) => Some(Inbound::Broken(e.to_string())),
        };
        let Some(event) = message else { continue };
        let last = !matches!(event, Inbound::Binary(_) | Inbound::Text);
        if tx.send(event).await.is_err() || last {
            return;
        }
    }
    let _ = tx.send(Inbound::Closed).await;
}

/// Session → socket. A frame the socket does not take within `stall` (the peer stopped reading)
/// ends the connection.
async fn write_socket(
    mut session: actix_ws::Session,
    mut rx: mpsc::Receiver<Outbound>,
    stall: Duration,
    welcomed: watch::Sender<bool>,
) {
    while let Some(out) = rx.recv().await {
        match out {
            Outbound::Binary(bytes) => {
                if !*welcomed.borrow() && bytes.first() == Some(&WELCOME_TAG) {
                    // The peer is authenticated: it may send messages of full size now.
                    welcomed.send_replace(true);
                }
                match tokio::time::timeout(stall, session.binary(bytes)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) | Err(_) => return,
                }
            }
            Outbound::Close { code, reason } => {
                let reason = CloseReason {
                    code: CloseCode::from(code),
                    description: Some(reason),
                };
                let _ = tokio::time::timeout(stall, session.close(Some(reason))).await;
                return;
            }
        }
    }
    let _ = tokio::time::timeout(stall, session.close(None)).await;
}
