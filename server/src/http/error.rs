//! The one error table of the HTTP edge.
//!
//! Every failure of a request is a [`Problem`]. [`Problem::status_and_code`] gives its HTTP status
//! and stable code by exhaustive matches, down to the variants of the service's, store's and
//! key store's errors: a new variant anywhere does not compile until it has a row here. No status
//! is chosen from the text of a code.
//!
//! A handler fails with an [`ApiError<E>`], where `E` is the envelope of its route family:
//! - [`Ditto`]: `/store/execute`, Ditto's answer shape with `queryType: "unknown"`;
//! - [`Commands`]: `/store/write`, `{code, message, commandIndex}`;
//! - [`Plain`]: every other route, `{code, message}`.
//!
//! A 500 is always masked ("internal error") and logged with its details; a 503 is logged as a
//! warning. Every error answer carries its code in the response's extensions ([`ErrorCode`]),
//! where the metrics middleware counts it.

use std::fmt;
use std::marker::PhantomData;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::auth::AuthError;
use crate::service::ServiceError;
use crate::store::{Kind, StoreError};
use crate::webhooks::registry::WebhookError;

/// What went wrong in a request, whatever its route.
#[derive(Debug)]
pub enum Problem {
    /// A failure of the service: DQL, permissions, keys or the store.
    Service(ServiceError),
    /// Over the rate limit of the key or the client address: retry after this many seconds.
    RateLimited(u64),
    /// Postgres is known to be down: answered at once, before anything else.
    StoreDown,
    /// The body is not the route's JSON.
    Body(BodyProblem, String),
    /// Text of the request holds U+0000, which Postgres cannot store; says which text.
    Nul(String),
    /// `X-DITTO-TXN-ID` is not an integer.
    TxnHeader,
    /// The transaction of `X-DITTO-TXN-ID` was not reached in time.
    TxnNotAvailable(i64),
    /// An option or form bigpeer does not support.
    Unsupported(String),
    /// A command of `/store/write` that is not valid.
    InvalidCommand(String),
    /// `/store/findbyid`: no such document the key may read.
    NoSuchDocument(String),
    /// The admin API: no such key.
    NoSuchKey(String),
    /// The admin API is off (no admin key configured).
    AdminDisabled,
    /// The admin API: a credential that is not the admin key.
    NotAdmin,
    /// `/sync`: not a WebSocket upgrade this server can accept; says why.
    NotWebSocket(String),
    /// `/sync`: a WebSocket version other than 13; says which.
    WebSocketVersion(String),
    /// `/sync`: no sync protocol offered that this server speaks.
    UnsupportedProtocol,
    /// `/changes`: a query parameter or `Last-Event-ID` that is not valid; says which.
    ChangesParameter(String),
    /// `/changes`: `collection` is not a valid collection name.
    ChangesCollection(String),
    /// `/changes`: `filter` is not a valid DQL condition.
    ChangesFilter(String),
    /// `/changes`: the position is older than the change log keeps; re-read the documents at
    /// transaction `txn`, then resume after it.
    RequeryRequired { since: i64, txn: i64 },
    /// `/changes`: too many open streams for the key or the client address.
    TooManyStreams(String),
    /// No route has this path.
    NoRoute(String),
    /// The path's route does not take this method; the ones it takes.
    MethodNotAllowed(String, Vec<&'static str>),
    /// The webhook admin API.
    Webhook(WebhookError),
}

impl From<WebhookError> for Problem {
    fn from(e: WebhookError) -> Self {
        Problem::Webhook(e)
    }
}

/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyProblem {
    /// Over the size limit.
    TooLarge,
    /// Not `application/json`.
    ContentType,
    /// It did not arrive within `body_timeout`.
    Timeout,
    /// Malformed JSON, wrong types, unknown fields.
    InvalidJson,
}

impl From<ServiceError> for Problem {
    fn from(e: ServiceError) -> Self {
        Problem::Service(e)
    }
}

impl From<AuthError> for Problem {
    fn from(e: AuthError) -> Self {
        Problem::Service(ServiceError::Auth(e))
    }
}

impl From<bigpeer_dql::DqlError> for Problem {
    fn from(e: bigpeer_dql::DqlError) -> Self {
        Problem::Service(ServiceError::Dql(e))
    }
}

impl Problem {
    /// The table: the HTTP status and the stable code of every failure.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Problem::Service(e) => service(e),
            Problem::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "request/rate-limited"),
            Problem::StoreDown => (StatusCode::SERVICE_UNAVAILABLE, "store/unavailable"),
            Problem::Body(b, _) => match b {
                BodyProblem::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "request/too-large"),
                BodyProblem::ContentType => {
                    (StatusCode::UNSUPPORTED_MEDIA_TYPE, "request/content-type")
                }
                BodyProblem::Timeout => (StatusCode::REQUEST_TIMEOUT, "request/timeout"),
                BodyProblem::InvalidJson => (StatusCode::BAD_REQUEST, "request/invalid-json"),
            },
            Problem::Nul(_) => (
                StatusCode::BAD_REQUEST,
                bigpeer_schema::limits::NUL_CHARACTER,
            ),
            Problem::TxnHeader => (StatusCode::BAD_REQUEST, "request/invalid-header"),
            Problem::TxnNotAvailable(_) => (StatusCode::NOT_FOUND, "store/txn-not-available"),
            Problem::Unsupported(_) => (StatusCode::BAD_REQUEST, "query/unsupported"),
            Problem::InvalidCommand(_) => (StatusCode::BAD_REQUEST, "request/invalid-command"),
            Problem::NoSuchDocument(_) => (StatusCode::NOT_FOUND, "store/not-found"),
            Problem::NoSuchKey(_) => (StatusCode::NOT_FOUND, "auth/no-such-key"),
            Problem::AdminDisabled => (StatusCode::NOT_FOUND, "admin/disabled"),
            Problem::NotAdmin => (StatusCode::FORBIDDEN, "auth/forbidden"),
            Problem::NotWebSocket(_) => (StatusCode::BAD_REQUEST, "sync/not-websocket"),
            Problem::WebSocketVersion(_) => (
                StatusCode::UPGRADE_REQUIRED,
                "sync/unsupported-websocket-version",
            ),
            Problem::UnsupportedProtocol => (StatusCode::BAD_REQUEST, "sync/unsupported-protocol"),
            Problem::ChangesParameter(_) => (StatusCode::BAD_REQUEST, "changes/invalid-parameter"),
            Problem::ChangesCollection(_) => {
                (StatusCode::BAD_REQUEST, "changes/invalid-collection")
            }
            Problem::ChangesFilter(_) => (StatusCode::BAD_REQUEST, "changes/invalid-filter"),
            Problem::RequeryRequired { .. } => (StatusCode::GONE, "changes/requery-required"),
            Problem::TooManyStreams(_) => {
                (StatusCode::TOO_MANY_REQUESTS, "changes/too-many-streams")
            }
            Problem::NoRoute(_) => (StatusCode::NOT_FOUND, "request/not-found"),
            Problem::MethodNotAllowed(..) => {
                (StatusCode::METHOD_NOT_ALLOWED, "request/method-not-allowed")
            }
            Problem::Webhook(e) => match e {
                WebhookError::Invalid(_) | WebhookError::Target(_) => {
                    (StatusCode::BAD_REQUEST, e.code())
                }
                WebhookError::NotFound(_) => (StatusCode::NOT_FOUND, e.code()),
                WebhookError::Store(s) => (kind(s.kind()), s.code()),
            },
        }
    }

    /// What the answer says, for people. Never called for a 500 (masked).
    fn message(&self) -> String {
        match self {
            Problem::Service(e) => e.to_string(),
            Problem::RateLimited(secs) => format!("too many requests: retry in {secs} s"),
            Problem::StoreDown => "Postgres is unavailable: retry shortly".to_owned(),
            Problem::Body(_, m)
            | Problem::NotWebSocket(m)
            | Problem::WebSocketVersion(m)
            | Problem::InvalidCommand(m)
            | Problem::NoSuchDocument(m)
            | Problem::NoSuchKey(m)
            | Problem::TooManyStreams(m) => m.clone(),
            Problem::ChangesParameter(m) => format!("invalid change stream parameter: {m}"),
            Problem::ChangesCollection(m) => format!("invalid collection: {m}"),
            Problem::ChangesFilter(m) => format!("invalid filter: {m}"),
            Problem::RequeryRequired { since, txn } => format!(
                "the change log cannot give every change after {since} (older than it keeps, or \
                 not a position of this database): re-read the documents with X-DITTO-TXN-ID: \
                 {txn}, then resume with since={txn}"
            ),
            Problem::Nul(what) => {
                format!("{what} contains the NUL character (U+0000), which bigpeer cannot store")
            }
            Problem::TxnHeader => "X-DITTO-TXN-ID must be an integer transaction id".to_owned(),
            Problem::TxnNotAvailable(t) => format!("transaction {t} is not available yet"),
            Problem::Unsupported(what) => format!("{what} is not supported"),
            Problem::AdminDisabled => "the admin API is off: start bigpeer with an admin key \
                (--admin-key or BIGPEER_ADMIN_KEY)"
                .to_owned(),
            Problem::NotAdmin => "this is not the admin key".to_owned(),
            Problem::UnsupportedProtocol => {
                "no supported sync protocol offered in Sec-WebSocket-Protocol".to_owned()
            }
            Problem::NoRoute(path) => format!(
                "there is no route {path:?}: see GET /api/v4/openapi.json (or /docs) for the API"
            ),
            Problem::MethodNotAllowed(method, allowed) => {
                format!("{method} is not allowed here: use {}", allowed.join(" or "))
            }
            Problem::Webhook(e) => e.to_string(),
        }
    }

    /// Where in the statement a DQL error is (1-based line and column).
    fn position(&self) -> Option<(u32, u32)> {
        match self {
            Problem::Service(ServiceError::Dql(d)) if d.line > 0 => Some((d.line, d.column)),
            _ => None,
        }
    }
}

fn service(e: &ServiceError) -> (StatusCode, &'static str) {
    match e {
        ServiceError::Dql(d) => (StatusCode::BAD_REQUEST, d.code.as_str()),
        ServiceError::ResultTooLarge { .. } => (StatusCode::BAD_REQUEST, e.code()),
        ServiceError::Auth(a) => (auth(a), a.code()),
        ServiceError::Store(s) => (kind(s.kind()), s.code()),
    }
}

fn auth(e: &AuthError) -> StatusCode {
    match e {
        AuthError::MissingCredentials
        | AuthError::InvalidKey
        | AuthError::ExpiredKey
        | AuthError::RevokedKey => StatusCode::UNAUTHORIZED,
        AuthError::Forbidden(_) => StatusCode::FORBIDDEN,
        AuthError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
        AuthError::Backend(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn kind(k: Kind) -> StatusCode {
    match k {
        Kind::Input => StatusCode::BAD_REQUEST,
        Kind::Forbidden => StatusCode::FORBIDDEN,
        Kind::Timeout => StatusCode::REQUEST_TIMEOUT,
        Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The HTTP status of a service error (the table's row for it).
pub fn status_of(e: &ServiceError) -> StatusCode {
    service(e).0
}

/// The stable code of an error answer, kept in the response's extensions for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub &'static str);

/// An error answer's parts, in our words: what the envelopes render.
pub struct Rendered<'a> {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Line and column of a DQL error.
    pub position: Option<(u32, u32)>,
    /// The failing command of `/store/write`.
    pub command_index: Option<usize>,
    /// How to fix it, when there is advice.
    pub hint: Option<&'a str>,
    pub problem: &'a Problem,
}

/// The error body of a route family.
pub trait Envelope: 'static {
    fn render(r: &Rendered<'_>) -> HttpResponse;
}

/// `/store/execute`: Ditto's answer shape.
#[derive(Debug)]
pub enum Ditto {}

/// `/store/write`: `{code, message, commandIndex}`.
#[derive(Debug)]
pub enum Commands {}

/// Every other route: `{code, message}`.
#[derive(Debug)]
pub enum Plain {}

impl Envelope for Ditto {
    fn render(r: &Rendered<'_>) -> HttpResponse {
        HttpResponse::build(r.status).json(super::store::ExecuteResponse::error(
            r.code,
            r.message.clone(),
            r.position,
        ))
    }
}

impl Envelope for Commands {
    fn render(r: &Rendered<'_>) -> HttpResponse {
        HttpResponse::build(r.status).json(super::openapi::WriteErrorDoc {
            code: r.code.to_owned(),
            message: r.message.clone(),
            command_index: r.command_index.map(|i| i as u64),
        })
    }
}

impl Envelope for Plain {
    fn render(r: &Rendered<'_>) -> HttpResponse {
        HttpResponse::build(r.status).json(super::openapi::ErrorMessage {
            code: r.code.to_owned(),
            message: r.message.clone(),
            hint: r.hint.map(str::to_owned),
        })
    }
}

/// A failed request, answered in the envelope `E` of its route family.
pub struct ApiError<E> {
    pub problem: Problem,
    /// The failing command of `/store/write`.
    pub command_index: Option<usize>,
    /// How to fix it (in the envelopes that have a place for it).
    pub hint: Option<String>,
    envelope: PhantomData<fn() -> E>,
}

impl<E> ApiError<E> {
    pub fn new(problem: Problem) -> ApiError<E> {
        ApiError {
            problem,
            command_index: None,
            hint: None,
            envelope: PhantomData,
        }
    }

    /// The same failure with advice on how to fix it.
    pub fn with_hint(mut self, hint: &str) -> ApiError<E> {
        self.hint = Some(hint.to_owned());
        self
    }

    /// The same failure about command `index` of a `/store/write` batch.
    pub fn at(mut self, index: Option<usize>) -> ApiError<E> {
        self.command_index = index;
        self
    }

    /// The same failure in another route family's envelope.
    pub fn into_envelope<F>(self) -> ApiError<F> {
        ApiError {
            problem: self.problem,
            command_index: self.command_index,
            hint: self.hint,
            envelope: PhantomData,
        }
    }
}

impl<E, P: Into<Problem>> From<P> for ApiError<E> {
    fn from(p: P) -> Self {
        ApiError::new(p.into())
    }
}

impl<E> fmt::Debug for ApiError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiError")
            .field("problem", &self.problem)
            .field("command_index", &self.command_index)
            .finish()
    }
}

impl<E> fmt::Display for ApiError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (status, code) = self.problem.status_and_code();
        write!(f, "{code} ({status})")
    }
}

impl<E: Envelope> ResponseError for ApiError<E> {
    fn status_code(&self) -> StatusCode {
        self.problem.status_and_code().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code) = self.problem.status_and_code();
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(problem = ?self.problem, code, "request failed");
            "internal error".to_owned()
        } else {
            if status.is_server_error() && !matches!(self.problem, Problem::StoreDown) {
                // (The outage itself is logged once, by the store's health probe.)
                tracing::warn!(problem = ?self.problem, code, "request failed");
            } else if let Problem::Service(ServiceError::Store(s)) = &self.problem {
                tracing::debug!(error = ?s, code, "statement failed on its data");
            }
            match (self.command_index, &self.problem) {
                // A command's own failure names it (its validation messages already do).
                (Some(i), Problem::Service(_)) => {
                    format!("command {i}: {}", self.problem.message())
                }
                _ => self.problem.message(),
            }
        };
        let mut resp = E::render(&Rendered {
            status,
            code,
            message,
            position: self.problem.position(),
            command_index: self.command_index,
            hint: self.hint.as_deref(),
            problem: &self.problem,
        });
        if let Problem::MethodNotAllowed(_, allowed) = &self.problem {
            if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&allowed.join(", ")) {
                resp.headers_mut().insert(actix_web::http::header::ALLOW, v);
            }
        }
        if let Problem::RequeryRequired { txn, .. } = self.problem {
            resp.headers_mut().insert(
                actix_web::http::header::HeaderName::from_static("x-ditto-txn-id"),
                actix_web::http::header::HeaderValue::from(txn),
            );
        }
        if let Problem::WebSocketVersion(_) = self.problem {
            resp.headers_mut().insert(
                actix_web::http::header::SEC_WEBSOCKET_VERSION,
                actix_web::http::header::HeaderValue::from_static("13"),
            );
        }
        let retry_after = match self.problem {
            Problem::RateLimited(secs) => Some(secs),
            Problem::StoreDown => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after {
            resp.headers_mut().insert(
                actix_web::http::header::RETRY_AFTER,
                actix_web::http::header::HeaderValue::from(secs),
            );
        }
        resp.extensions_mut().insert(ErrorCode(code));
        resp
    }
}

/// A store error as a service failure (for handlers that call the store directly).
impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        Problem::Service(ServiceError::from(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_store_kind_has_its_status() {
        for (k, status) in [
            (Kind::Input, 400),
            (Kind::Forbidden, 403),
            (Kind::Timeout, 408),
            (Kind::Unavailable, 503),
            (Kind::Internal, 500),
        ] {
            assert_eq!(kind(k).as_u16(), status, "{k:?}");
        }
    }

    #[test]
    fn a_500_is_masked_and_a_store_copy_keeps_its_status() {
        let e: ApiError<Plain> = ApiError::new(Problem::from(StoreError::Internal("a bug")));
        let resp = e.error_response();
        assert_eq!(resp.status().as_u16(), 500);
        assert_eq!(
            resp.extensions().get::<ErrorCode>(),
            Some(&ErrorCode("internal"))
        );
        let copy = StoreError::ShuttingDown.shared();
        assert_eq!(copy.code(), "store/unavailable");
        assert_eq!(status_of(&ServiceError::from(copy)).as_u16(), 503);
    }

    #[test]
    fn a_rate_limit_says_when_to_retry() {
        let resp = ApiError::<Ditto>::new(Problem::RateLimited(3)).error_response();
        assert_eq!(resp.status().as_u16(), 429);
        assert_eq!(
            resp.headers()
                .get(actix_web::http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
            Some("3")
        );
    }
}
