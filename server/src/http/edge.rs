//! The HTTP edge: what a client can make the server hold before anyone knows who it is.
//!
//! - **Connections** are counted per client IP address and in total; one over either cap is
//!   closed as soon as it is accepted, before anything is read from it ([`Connections`]).
//! - **Slow clients**: the head of a request must arrive within `header_timeout` (actix times
//!   out the first request of a connection; [`Connections::sweep`] closes a connection that sits
//!   between requests, or drains an unread body, longer than `keep_alive_timeout +
//!   header_timeout`), and a body within `body_timeout` of its head ([`guard`]; a late body gets
//!   408 `request/timeout`).
//! - **Postgres outages**: while the store knows Postgres to be down, requests that need it get
//!   503 `store/unavailable` at once instead of waiting for a connection (the extractors of
//!   [`super::extract`], before the credentials).
//!
//! Credentials are checked before a body is read, by the extractors ([`super::extract`]).

use std::any::Any;
use std::collections::HashMap;
use std::future::Future as _;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Extensions, Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::web;
use actix_web::web::Bytes;
use futures_util::Stream;

/// The edge's settings (see the README's settings table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeOptions {
    /// A request's head must arrive within this.
    pub header_timeout: Duration,
    /// A request's body must arrive within this of its head.
    pub body_timeout: Duration,
    /// An idle connection is closed after this.
    pub keep_alive: Duration,
    /// Open connections in all; 0: no cap.
    pub max_connections: u32,
    /// Open connections per client IP address; 0: no cap.
    pub max_connections_per_ip: u32,
}

impl Default for EdgeOptions {
    fn default() -> Self {
        EdgeOptions {
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(5),
            max_connections: 10_000,
            max_connections_per_ip: 256,
        }
    }
}

/// The open connections of one server (every worker's), and their caps.
#[derive(Debug)]
pub struct Connections {
    options: EdgeOptions,
    epoch: Instant,
    counts: Mutex<Counts>,
    refused: AtomicU64,
    cut: AtomicU64,
}

#[derive(Debug, Default)]
struct Counts {
    total: u32,
    per_ip: HashMap<IpAddr, u32>,
    open: HashMap<u64, Weak<Conn>>,
    next_id: u64,
}

/// One open connection.
#[derive(Debug)]
pub struct Conn {
    /// Requests in progress (their responses not sent yet).
    active: AtomicU32,
    /// Milliseconds since [`Connections::epoch`] when the connection last became idle.
    idle_since: AtomicU64,
    /// A second handle on the socket, to shut it down from outside the connection's task.
    socket: Mutex<Option<std::net::TcpStream>>,
}

impl Conn {
    fn shut_down(&self) -> bool {
        let socket = self.socket.lock().unwrap_or_else(|p| p.into_inner()).take();
        match socket {
            Some(s) => {
                let _ = s.shutdown(std::net::Shutdown::Both);
                true
            }
            None => false,
        }
    }
}

/// Kept in the connection's data: releases the connection's place when the connection ends.
#[derive(Debug)]
pub struct ConnGuard {
    id: u64,
    ip: IpAddr,
    conn: Arc<Conn>,
    owner: Arc<Connections>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        // Close our handle on the socket now, so that it does not outlive the connection.
        drop(
            self.conn
                .socket
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        self.owner.release(self.id, self.ip);
    }
}

/// A request in progress on a connection; the connection is idle again when it is dropped (with
/// the response's body, once that is sent).
struct Active {
    conn: Arc<Conn>,
    owner: Arc<Connections>,
}

impl Drop for Active {
    fn drop(&mut self) {
        self.conn
            .idle_since
            .store(self.owner.now_ms(), Ordering::Relaxed);
        self.conn.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    PerIp,
    Total,
}

impl Connections {
    pub fn new(options: EdgeOptions) -> Arc<Connections> {
        Arc::new(Connections {
            options,
            epoch: Instant::now(),
            counts: Mutex::new(Counts::default()),
            refused: AtomicU64::new(0),
            cut: AtomicU64::new(0),
        })
    }

    pub fn options(&self) -> &EdgeOptions {
        &self.options
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Counts a new connection from `ip`, unless that goes over a cap.
    fn admit(&self, ip: IpAddr, conn: &Arc<Conn>) -> Result<u64, Refused> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let max_total = self.options.max_connections;
        if max_total > 0 && c.total >= max_total {
            return Err(Refused::Total);
        }
        let max_ip = self.options.max_connections_per_ip;
        let n = c.per_ip.get(&ip).copied().unwrap_or(0);
        if max_ip > 0 && n >= max_ip {
            return Err(Refused::PerIp);
        }
        c.per_ip.insert(ip, n + 1);
        c.total += 1;
        c.next_id += 1;
        let id = c.next_id;
        c.open.insert(id, Arc::downgrade(conn));
        Ok(id)
    }

    fn release(&self, id: u64, ip: IpAddr) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.open.remove(&id);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_ip.remove(&ip);
            }
        }
    }

    /// Open connections: in all, and from `ip`.
    pub fn open(&self, ip: IpAddr) -> (u32, u32) {
        let c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        (c.total, c.per_ip.get(&ip).copied().unwrap_or(0))
    }

    /// Connections refused over a cap, and connections cut for being too slow, so far.
    pub fn closed_counts(&self) -> (u64, u64) {
        (
            self.refused.load(Ordering::Relaxed),
            self.cut.load(Ordering::Relaxed),
        )
    }

    /// `HttpServer::on_connect`: counts the connection (its [`ConnGuard`] goes into the
    /// connection's data), or shuts it down at once when it is over a cap.
    pub fn on_connect(self: &Arc<Self>, io: &dyn Any, data: &mut Extensions) {
        let tcp = if let Some(tcp) = io.downcast_ref::<actix_web::rt::net::TcpStream>() {
            tcp
        } else if let Some(tls) = io.downcast_ref::<actix_tls::accept::rustls_0_23::TlsStream<
            actix_web::rt::net::TcpStream,
        >>() {
            tls.get_ref().0
        } else {
            return;
        };
        let Ok(peer) = tcp.peer_addr() else { return };
        let socket = {
            use std::os::fd::AsFd as _;
            match tcp.as_fd().try_clone_to_owned() {
                Ok(fd) => std::net::TcpStream::from(fd),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch a connection");
                    return;
                }
            }
        };
        let conn = Arc::new(Conn {
            active: AtomicU32::new(0),
            idle_since: AtomicU64::new(self.now_ms()),
            socket: Mutex::new(None),
        });
        match self.admit(peer.ip(), &conn) {
            Ok(id) => {
                *conn.socket.lock().unwrap_or_else(|p| p.into_inner()) = Some(socket);
                data.insert(ConnGuard {
                    id,
                    ip: peer.ip(),
                    conn,
                    owner: self.clone(),
                });
            }
            Err(why) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                let cap = match why {
                    Refused::PerIp => "max_connections_per_ip",
                    Refused::Total => "max_connections",
                };
                tracing::warn!(client = %peer.ip(), cap, "connection refused: over the cap");
                let _ = socket.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// Shuts down every connection that has been idle (no request in progress) for longer than
    /// `keep_alive + header_timeout`: a client that trickles the head of its next request, or an
    /// unread body the server is draining. Call it about every second.
    pub fn sweep(&self) {
        let limit = self.options.keep_alive + self.options.header_timeout;
        let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        let now = self.now_ms();
        let open: Vec<Arc<Conn>> = {
            let c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            c.open.values().filter_map(Weak::upgrade).collect()
        };
        for conn in open {
            let idle = conn.active.load(Ordering::Acquire) == 0
                && now.saturating_sub(conn.idle_since.load(Ordering::Relaxed)) > limit_ms;
            if idle && conn.shut_down() {
                self.cut.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("closed a connection that sent no complete request in time");
            }
        }
    }
}

/// A request body that must arrive before a deadline: after it, reading fails with a timeout.
struct Deadline {
    inner: Payload,
    sleep: Pin<Box<tokio::time::Sleep>>,
    expired: bool,
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = Pin::new(&mut self.inner).poll_next(cx) {
            return Poll::Ready(item);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.expired = true;
            return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the request body did not arrive in time",
            )))));
        }
        Poll::Pending
    }
}

/// Whether a payload error is [`Deadline`]'s.
pub fn is_body_timeout(e: &PayloadError) -> bool {
    matches!(e, PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut)
}

/// A response body that marks its request finished when it is dropped (sent or abandoned).
struct Finishing {
    body: BoxBody,
    _active: Option<Active>,
}

impl MessageBody for Finishing {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}

/// The middleware of every route: marks the connection busy until the response is sent, and puts
/// a deadline on the body.
pub async fn guard(
    mut req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let active = req.conn_data::<ConnGuard>().map(|g| {
        g.conn.active.fetch_add(1, Ordering::AcqRel);
        Active {
            conn: g.conn.clone(),
            owner: g.owner.clone(),
        }
    });
    let body_timeout = req
        .app_data::<web::Data<Connections>>()
        .map(|c| c.options().body_timeout);
    // A WebSocket's payload is its stream of messages: no deadline on that.
    let upgrade = req.method() == Method::GET && req.head().upgrade();
    if let (Some(body_timeout), false) = (body_timeout, upgrade) {
        let (_, payload) = req.parts_mut();
        let inner = std::mem::replace(payload, Payload::None);
        if !matches!(inner, Payload::None) {
            *payload = Payload::from(Box::pin(Deadline {
                inner,
                sleep: Box::pin(tokio::time::sleep(body_timeout)),
                expired: false,
            })
                as Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>);
        }
    }
    let res = next.call(req).await?;
    Ok(res.map_body(|_, body| {
        BoxBody::new(Finishing {
            body,
            _active: active,
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(owner: &Connections) -> Arc<Conn> {
        Arc::new(Conn {
            active: AtomicU32::new(0),
            idle_since: AtomicU64::new(owner.now_ms()),
            socket: Mutex::new(None),
        })
    }

    #[test]
    fn caps_per_ip_and_in_total() {
        let c = Connections::new(EdgeOptions {
            max_connections: 3,
            max_connections_per_ip: 2,
            ..EdgeOptions::default()
        });
        let (a, b): (IpAddr, IpAddr) = (
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        );
        let (c1, c2, c3, c4) = (conn(&c), conn(&c), conn(&c), conn(&c));
        let first = c.admit(a, &c1).expect("first");
        c.admit(a, &c2).expect("second");
        assert_eq!(c.admit(a, &c3), Err(Refused::PerIp));
        c.admit(b, &c3).expect("another address");
        assert_eq!(c.admit(b, &c4), Err(Refused::Total));
        c.release(first, a);
        assert_eq!(c.open(a), (2, 1));
        c.admit(a, &c4).expect("a place was freed");
    }
}
