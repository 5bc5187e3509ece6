//! `GET /api/v4/sync`: the WebSocket upgrade, subprotocol negotiation and the two tasks that move
//! frames between the socket and a session's [`Link`].

use std::time::Duration;

use actix_web::http::header;
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

async fn sync(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    let Some(protocol) = choose(&req) else {
        let names: Vec<&str> = protocols().iter().map(|p| p.subprotocol()).collect();
        return Ok(HttpResponse::BadRequest().json(serde_json::json!({
            "code": "sync/unsupported-protocol",
            "message": "no supported sync protocol offered in Sec-WebSocket-Protocol",
            "hint": format!("offer one of: {}", names.join(", ")),
        })));
    };
    let hub = state.sync.clone();
    let (response, session, stream) =
        actix_ws::handle_with_protocols(&req, body, &[protocol.subprotocol()])?;
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
