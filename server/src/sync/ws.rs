//! The socket side of `GET /api/v4/sync`: the two tasks that move frames between an accepted
//! WebSocket and a session's [`Link`] (the upgrade itself is `http::sync`'s).

use std::time::Duration;

use actix_ws::{CloseCode, CloseReason, Item, Message, ProtocolError};
use tokio::sync::{mpsc, watch};

use super::{Inbound, Link, Outbound, SyncHub, SyncProtocol};

/// Inbound frames buffered per session before the socket stops being read (TCP then pushes back).
const INBOUND_QUEUE: usize = 16;

/// The largest message a peer may send before it is welcomed (its `Hello`): nobody without
/// credentials makes the server buffer more.
const BEFORE_WELCOME: usize = 64 * 1024;

/// The tag of `Welcome`, the first byte of its frame (`docs/sync-protocol.md`, section 3).
const WELCOME_TAG: u8 = 0x02;

/// Runs an accepted WebSocket: the session of `protocol` and the two tasks that move frames
/// between the socket and it. The HTTP side (rate limit, upgrade checks, protocol choice,
/// handshake) is `http::sync`'s.
pub fn start(
    hub: SyncHub,
    protocol: &'static dyn SyncProtocol,
    session: actix_ws::Session,
    stream: actix_ws::MessageStream,
) {
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
