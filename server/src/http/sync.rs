//! `GET /api/v4/sync`: the WebSocket upgrade and subprotocol negotiation. What runs on the
//! socket afterwards is the `sync` module's ([`crate::sync::start`]).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::error::{ApiError, Plain, Problem};
use crate::sync::{protocols, SyncHub, SyncProtocol};

/// Registers the sync endpoint.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v4/sync", web::get().to(sync));
}

/// The hint of every refusal that is about the upgrade itself.
const CONNECT_HINT: &str = "connect with a WebSocket client (ws:// or wss://) and offer the \
    subprotocol bigpeer-sync.1; see docs/sync-protocol.md";

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

/// Why a request is not a WebSocket upgrade this server can accept (RFC 6455 section 4.2.1).
fn upgrade_refusal(req: &HttpRequest) -> Option<ApiError<Plain>> {
    let has_token = |name: header::HeaderName, token: &str| {
        req.headers()
            .get_all(name)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let not_upgrade = |message: &str| {
        Some(ApiError::new(Problem::NotWebSocket(message.to_owned())).with_hint(CONNECT_HINT))
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
        Some(v) if v.as_bytes() != b"13" => Some(
            ApiError::new(Problem::WebSocketVersion(format!(
                "WebSocket version {} is not supported",
                String::from_utf8_lossy(v.as_bytes())
            )))
            .with_hint("use WebSocket version 13 (RFC 6455)"),
        ),
        Some(_) => None,
    }
}

async fn sync(
    req: HttpRequest,
    body: web::Payload,
    hub: web::Data<SyncHub>,
) -> Result<HttpResponse, ApiError<Plain>> {
    if hub.store.known_down() {
        return Err(Problem::StoreDown.into());
    }
    // The client address's rate limit, before anything else (the key is only known at Hello).
    if let Some(ip) = req.peer_addr().map(|a| a.ip()) {
        if let Err(secs) = hub.limits.check_ip(ip) {
            return Err(ApiError::new(Problem::RateLimited(secs))
                .with_hint("connect less often: this client address is over its rate limit"));
        }
    }
    if let Some(refusal) = upgrade_refusal(&req) {
        return Err(refusal);
    }
    let Some(protocol) = choose(&req) else {
        let names: Vec<&str> = protocols().iter().map(|p| p.subprotocol()).collect();
        return Err(ApiError::new(Problem::UnsupportedProtocol)
            .with_hint(&format!("offer one of: {}", names.join(", "))));
    };
    let (response, session, stream) =
        actix_ws::handle_with_protocols(&req, body, &[protocol.subprotocol()]).map_err(|e| {
            // Checked above; whatever else the handshake finds still gets a JSON body.
            ApiError::new(Problem::NotWebSocket(format!(
                "the WebSocket upgrade was refused: {e}"
            )))
            .with_hint("see docs/sync-protocol.md")
        })?;
    crate::sync::start(hub.get_ref().clone(), protocol, session, stream);
    Ok(response)
}
