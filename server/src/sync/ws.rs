//! `GET /api/v4/sync`: the WebSocket upgrade, subprotocol negotiation and the two tasks that move
//! frames between the socket and a session's [`Link`].

use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError};
use tokio::sync::mpsc;

use super::{protocols, Inbound, Link, Outbound, SyncHub, SyncProtocol};
use crate::app::AppState;

/// Inbound frames buffered per session before the socket stops being read (TCP then pushes back).
const INBOUND_QUEUE: usize = 16;

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
    let stream = stream
        .max_frame_size(max_frame)
        .aggregate_continuations()
        .max_continuation_size(max_frame);
    let (in_tx, in_rx) = mpsc::channel(INBOUND_QUEUE);
    let (out_tx, out_rx) = mpsc::channel(hub.options.send_queue.max(1));
    actix_web::rt::spawn(read_socket(stream, session.clone(), in_tx));
    actix_web::rt::spawn(write_socket(
        session,
        out_rx,
        hub.options.heartbeat.saturating_mul(2),
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
/// is gone.
async fn read_socket(
    mut stream: actix_ws::AggregatedMessageStream,
    mut session: actix_ws::Session,
    tx: mpsc::Sender<Inbound>,
) {
    while let Some(item) = stream.recv().await {
        let (event, last) = match item {
            Ok(AggregatedMessage::Binary(b)) => (Inbound::Binary(b.to_vec()), false),
            Ok(AggregatedMessage::Text(_)) => (Inbound::Text, false),
            Ok(AggregatedMessage::Ping(p)) => {
                if session.pong(&p).await.is_err() {
                    break;
                }
                continue;
            }
            Ok(AggregatedMessage::Pong(_)) => continue,
            Ok(AggregatedMessage::Close(_)) => (Inbound::Closed, true),
            Err(ProtocolError::Overflow) => (Inbound::TooLarge, true),
            Err(ProtocolError::Io(e)) if e.to_string().contains("maximum continuation size") => {
                (Inbound::TooLarge, true)
            }
            Err(e) => (Inbound::Broken(e.to_string()), true),
        };
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
) {
    while let Some(out) = rx.recv().await {
        match out {
            Outbound::Binary(bytes) => {
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
