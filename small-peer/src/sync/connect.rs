//! The big peer's address, TLS trust, and the WebSocket handshake.

use std::sync::Arc;
use std::time::Duration;

use bigpeer_schema::wire::SUBPROTOCOL;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::error::TlsError;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Uri};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::tls::{self, PinningVerifier};
use crate::error::SyncFailure;

pub(super) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The sync endpoint's path, added to the base URL.
const SYNC_PATH: &str = "/api/v4/sync";

/// Where and how to connect.
pub(super) struct Target {
    /// The full `ws://` or `wss://` URL of the sync endpoint.
    pub url: String,
    /// TLS settings for `wss://`.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Whether a CA file was given (for the hint of an untrusted certificate).
    ca_given: bool,
}

fn invalid_url(url: &str, why: &str) -> SyncFailure {
    SyncFailure::new(
        "sync/invalid-url",
        format!("invalid big peer URL {url:?}: {why} (expected ws://HOST:PORT or wss://HOST:PORT)"),
    )
}

impl Target {
    /// Checks a base URL (`ws://host:port`, `wss://host:port`, optionally with a path prefix)
    /// and the extra CA certificates (trusted as roots and pinned: see [`tls`]).
    pub fn parse(url: &str, ca_pem: Option<&str>) -> Result<Target, SyncFailure> {
        let trimmed = url.trim();
        let (scheme, rest) = trimmed
            .split_once("://")
            .ok_or_else(|| invalid_url(url, "no scheme"))?;
        let secure = match scheme.to_ascii_lowercase().as_str() {
            "ws" => false,
            "wss" => true,
            other => return Err(invalid_url(url, &format!("unsupported scheme {other:?}"))),
        };
        if rest.contains(['?', '#']) {
            return Err(invalid_url(url, "a query or fragment is not allowed"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(invalid_url(url, "no host"));
        }
        // `host:port` or `[v6]:port`: a port must be a number.
        let port = match authority.rfind(':') {
            Some(i) if !authority[i..].contains(']') => Some(&authority[i + 1..]),
            _ => None,
        };
        if port.is_some_and(|p| p.parse::<u16>().is_err()) {
            return Err(invalid_url(url, "the port is not a number from 0 to 65535"));
        }
        let path = path.trim_end_matches('/');
        let path = if path.ends_with(SYNC_PATH) {
            path.to_owned()
        } else {
            format!("{path}{SYNC_PATH}")
        };
        let full = format!("{}://{authority}{path}", if secure { "wss" } else { "ws" });
        let uri: Uri = full
            .parse()
            .map_err(|e| invalid_url(url, &format!("{e}")))?;
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid_url(url, "no host"));
        }
        // The CA file is checked whatever the scheme: a bad one is a mistake worth reporting.
        let (roots, pinned) = roots(ca_pem)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = PinningVerifier::new(roots, pinned, &provider)
            .map_err(|e| SyncFailure::new("sync/invalid-ca", e))?;
        let tls = if secure {
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| SyncFailure::new("sync/invalid-ca", format!("TLS setup: {e}")))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth();
            Some(Arc::new(config))
        } else {
            None
        };
        Ok(Target {
            url: full,
            tls,
            ca_given: ca_pem.is_some(),
        })
    }

    /// Connects and upgrades, offering the protocol's subprotocol.
    pub async fn connect(&self, timeout: Duration) -> Result<Ws, SyncFailure> {
        let mut req = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| invalid_url(&self.url, &e.to_string()))?;
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        let connector = match &self.tls {
            Some(c) => Connector::Rustls(c.clone()),
            None => Connector::Plain,
        };
        let attempt =
            tokio_tungstenite::connect_async_tls_with_config(req, None, true, Some(connector));
        let (ws, resp) = match tokio::time::timeout(timeout, attempt).await {
            Err(_) => {
                return Err(SyncFailure::new(
                    "sync/unreachable",
                    format!(
                        "cannot connect to {}: no answer within {} ms",
                        self.url,
                        timeout.as_millis()
                    ),
                ))
            }
            Ok(Err(WsError::Http(resp))) => {
                let status = resp.status();
                let body = resp
                    .body()
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default()
                    .into_owned();
                let detail = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| {
                        let code = v.get("code")?.as_str()?.to_owned();
                        let message = v.get("message").and_then(|m| m.as_str()).unwrap_or("");
                        Some(format!("{code}: {message}"))
                    })
                    .unwrap_or(body);
                // 5xx: the server (or a proxy) may recover; 429: over a rate limit for now;
                // any other 4xx: it will answer the same.
                let code = if status.is_server_error() || status.as_u16() == 429 {
                    "sync/unreachable"
                } else {
                    "sync/refused"
                };
                return Err(SyncFailure::new(
                    code,
                    format!(
                        "{} refused the WebSocket upgrade with HTTP {status}: {detail}",
                        self.url
                    ),
                ));
            }
            Ok(Err(e)) => {
                // A certificate the client does not trust: retrying will not change it.
                if let Some(cert) = certificate_error(&e) {
                    return Err(SyncFailure::new(
                        "sync/untrusted-certificate",
                        format!(
                            "the certificate of {} is not trusted ({}): {}",
                            self.url,
                            tls::reason(cert),
                            tls::hint(cert, self.ca_given)
                        ),
                    ));
                }
                return Err(SyncFailure::new(
                    "sync/unreachable",
                    format!("cannot connect to {}: {e}", self.url),
                ));
            }
            Ok(Ok(pair)) => pair,
        };
        let chosen = resp
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok());
        if chosen != Some(SUBPROTOCOL) {
            return Err(SyncFailure::new(
                "sync/refused",
                format!(
                    "{} answered with subprotocol {chosen:?}, not {SUBPROTOCOL}",
                    self.url
                ),
            ));
        }
        Ok(ws)
    }
}

/// Why the TLS handshake refused the server's certificate, if it did. tokio-tungstenite passes
/// the handshake's error on as tokio-rustls gives it: an I/O error wrapping the rustls error.
fn certificate_error(e: &WsError) -> Option<&rustls::CertificateError> {
    let tls = match e {
        WsError::Io(io) => io.get_ref()?.downcast_ref::<rustls::Error>()?,
        WsError::Tls(TlsError::Rustls(e)) => e,
        _ => return None,
    };
    match tls {
        rustls::Error::InvalidCertificate(cert) => Some(cert),
        _ => None,
    }
}

/// Trust anchors, and the certificates to pin.
type Trust = (rustls::RootCertStore, Vec<CertificateDer<'static>>);

/// The bundled web PKI roots plus the certificates of `ca_pem`, and those certificates (to
/// pin).
fn roots(ca_pem: Option<&str>) -> Result<Trust, SyncFailure> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut pinned = Vec::new();
    if let Some(pem) = ca_pem {
        let bad = |why: String| SyncFailure::new("sync/invalid-ca", why);
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert =
                cert.map_err(|e| bad(format!("the CA certificate PEM does not parse: {e}")))?;
            roots
                .add(cert.clone())
                .map_err(|e| bad(format!("the CA certificate is not usable: {e}")))?;
            pinned.push(cert);
        }
        if pinned.is_empty() {
            return Err(bad("the CA certificate PEM holds no certificate".into()));
        }
    }
    Ok((roots, pinned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_get_the_sync_path() {
        let url = |u: &str| Target::parse(u, None).map(|t| t.url);
        assert_eq!(
            url("ws://127.0.0.1:8080").as_deref(),
            Ok("ws://127.0.0.1:8080/api/v4/sync")
        );
        assert_eq!(
            url("WSS://h.example/").as_deref(),
            Ok("wss://h.example/api/v4/sync")
        );
        assert_eq!(
            url("ws://h:1/api/v4/sync").as_deref(),
            Ok("ws://h:1/api/v4/sync")
        );
        assert_eq!(
            url("ws://h:1/proxy/").as_deref(),
            Ok("ws://h:1/proxy/api/v4/sync")
        );
        assert_eq!(
            url("ws://[::1]:9").as_deref(),
            Ok("ws://[::1]:9/api/v4/sync")
        );
        for bad in [
            "127.0.0.1:8080",
            "http://h:1",
            "ws://",
            "ws:///x",
            "ws://h:1/?a=b",
            "ws://u@h:1",
            "ws://h:notaport",
            "ws://h:70000",
        ] {
            let err = url(bad).expect_err(bad);
            assert_eq!(err.code, "sync/invalid-url", "{bad}: {err:?}");
        }
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let err = Target::parse("wss://h:1", Some("not a pem")).err();
        assert_eq!(err.map(|e| e.code).as_deref(), Some("sync/invalid-ca"));
        let cert =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
        assert!(Target::parse("wss://h:1", Some(&cert.cert.pem())).is_ok());
    }
}
