//! The preamble of every API route, as extractors, in the order that keeps a server safe:
//!
//! 1. the client address's rate limit;
//! 2. the credentials (an API key, or the admin key for the admin API), then the key's rate
//!    limit;
//! 3. only then the body, read once as the route's JSON and validated once ([`Validate`]);
//! 4. read-your-writes: with `X-DITTO-TXN-ID`, a wait on the change feed until that
//!    transaction is visible.
//!
//! One extractor does all four, in sequence ([`Call`], [`AdminCall`]): actix polls a handler's
//! extractors together, so separate ones could read a body before the credentials are checked.
//! Handlers take one of them and do only their own work.

use std::collections::BTreeMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::error::JsonPayloadError;
use actix_web::{web, FromRequest, HttpRequest};
use bigpeer_schema::Value;
use serde::de::DeserializeOwned;

use super::error::{ApiError, BodyProblem, Problem};
use crate::auth::{bearer, AuthError};
use crate::service::Access;
use crate::state::AppState;

/// How long a request carrying `X-DITTO-TXN-ID` waits for that transaction before answering 404.
pub const TXN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The one validation of a route's body, after it is read and before the handler sees it: the
/// body as read turns into what the handler works with (often itself), or into the failure.
pub trait Validate: Sized {
    /// What the handler gets.
    type Valid;
    /// Whether the route reads a body at all ([`NoBody`] does not).
    const READS_BODY: bool = true;
    fn validate(self) -> Result<Self::Valid, Failure>;
}

/// A body that fails validation: the problem, and the command at fault in a batch.
#[derive(Debug)]
pub struct Failure {
    pub problem: Problem,
    pub command_index: Option<usize>,
}

impl From<Problem> for Failure {
    fn from(problem: Problem) -> Self {
        Failure {
            problem,
            command_index: None,
        }
    }
}

impl Failure {
    fn into_api<E>(self) -> ApiError<E> {
        ApiError::new(self.problem).at(self.command_index)
    }
}

/// No body (the route reads none).
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
pub struct NoBody;

impl Validate for NoBody {
    type Valid = NoBody;
    const READS_BODY: bool = false;
    fn validate(self) -> Result<NoBody, Failure> {
        Ok(self)
    }
}

/// `Err(Nul(what))` when a text, an argument name or an argument value holds U+0000, which
/// Postgres cannot keep (`bigpeer_schema::limits`).
pub fn refuse_nul<'a>(
    what: &str,
    texts: impl IntoIterator<Item = &'a str>,
    args: &BTreeMap<String, Value>,
) -> Result<(), Failure> {
    let nul = texts.into_iter().any(|t| t.contains('\0'))
        || args
            .iter()
            .any(|(k, v)| k.contains('\0') || bigpeer_schema::limits::has_nul(v));
    if nul {
        return Err(Problem::Nul(what.to_owned()).into());
    }
    Ok(())
}

/// Who may call a route, and what admitting a request proves.
pub trait Admission: 'static {
    /// What the handler learns from admission (an API key's permissions; nothing for the admin).
    type Proof;
    /// Whether `X-DITTO-TXN-ID` is honoured (read-your-writes).
    const READS_YOUR_WRITES: bool;
    fn admit(
        req: &HttpRequest,
        state: &AppState,
    ) -> impl Future<Output = Result<Self::Proof, Problem>>;
}

/// The API-key routes: rate limits, then the key; the proof is its permissions.
#[derive(Debug)]
pub enum Key {}

/// The admin API: the address rate limit, then the admin key.
#[derive(Debug)]
pub enum Admin {}

impl Admission for Key {
    type Proof = Access;
    const READS_YOUR_WRITES: bool = true;
    async fn admit(req: &HttpRequest, state: &AppState) -> Result<Access, Problem> {
        admit(req, state).await
    }
}

impl Admission for Admin {
    type Proof = ();
    const READS_YOUR_WRITES: bool = false;
    async fn admit(req: &HttpRequest, state: &AppState) -> Result<(), Problem> {
        admit_admin(req, state)
    }
}

/// An admitted request: what admission proved (`access`) and its validated body. `E` is the
/// envelope of the route's errors, `W` who may call it.
pub struct Call<T: Validate, E, W: Admission = Key> {
    pub state: web::Data<AppState>,
    pub access: W::Proof,
    pub body: T::Valid,
    envelope: PhantomData<fn() -> E>,
}

/// An admitted admin request (the admin key checked): its validated body.
pub type AdminCall<T, E> = Call<T, E, Admin>;

type Extracting<X, E> = Pin<Box<dyn Future<Output = Result<X, ApiError<E>>>>>;

impl<T, E, W> FromRequest for Call<T, E, W>
where
    T: DeserializeOwned + Validate + 'static,
    E: super::error::Envelope,
    W: Admission,
{
    type Error = ApiError<E>;
    type Future = Extracting<Self, E>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            let state = app_state(&req)?;
            let access = W::admit(&req, &state).await?;
            // Only now, with the credentials checked, is the body read (and its fields revealed).
            let body = read_body::<T>(&req, &mut payload).await?;
            let body = body.validate().map_err(Failure::into_api)?;
            if W::READS_YOUR_WRITES {
                read_your_writes(&req, &state).await?;
            }
            Ok(Call {
                state,
                access,
                body,
                envelope: PhantomData,
            })
        })
    }
}

/// The app's state; every API route needs Postgres, so while it is known to be down the answer
/// is 503 at once, before anything else.
fn app_state(req: &HttpRequest) -> Result<web::Data<AppState>, Problem> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or(Problem::Service(
            crate::store::StoreError::Internal("the app has no state").into(),
        ))?;
    if state.store.known_down() {
        return Err(Problem::StoreDown);
    }
    Ok(state)
}

/// Applies the rate limits, then authenticates: the permissions of the request.
async fn admit(req: &HttpRequest, state: &AppState) -> Result<Access, Problem> {
    if let Some(ip) = req.peer_addr().map(|a| a.ip()) {
        state.limits.check_ip(ip).map_err(Problem::RateLimited)?;
    }
    if state.playground {
        return Ok(Access::all());
    }
    let secret = credential(req).ok_or(AuthError::MissingCredentials)?;
    let key = state.keys.authenticate(secret).await?;
    state
        .limits
        .check_key(&key.id)
        .map_err(Problem::RateLimited)?;
    Ok(Access::new(key.permissions.clone()))
}

/// The bearer token of `Authorization`.
pub(super) fn credential(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
}

/// Applies the client address's rate limit (so that nobody guesses the admin key quickly), then
/// checks the admin key.
fn admit_admin(req: &HttpRequest, state: &AppState) -> Result<(), Problem> {
    if let Some(ip) = req.peer_addr().map(|a| a.ip()) {
        state.limits.check_ip(ip).map_err(Problem::RateLimited)?;
    }
    let Some(expected) = &state.admin_key else {
        return Err(Problem::AdminDisabled);
    };
    match credential(req) {
        None => Err(AuthError::MissingCredentials.into()),
        Some(g) if super::auth::secrets_equal(g, expected.expose()) => Ok(()),
        Some(_) => Err(Problem::NotAdmin),
    }
}

/// Reads the body as JSON (the app's `JsonConfig` sets its size limit), saying what is wrong in
/// our codes.
async fn read_body<T: DeserializeOwned + Validate + 'static>(
    req: &HttpRequest,
    payload: &mut Payload,
) -> Result<T, Problem> {
    if !T::READS_BODY {
        // No body to read: serde makes the unit struct from `null`.
        return serde_json::from_value(serde_json::Value::Null)
            .map_err(|e| Problem::Body(BodyProblem::InvalidJson, e.to_string()));
    }
    match web::Json::<T>::from_request(req, payload).await {
        Ok(json) => Ok(json.into_inner()),
        Err(e) => {
            let kind = match e.as_error::<JsonPayloadError>() {
                Some(
                    JsonPayloadError::OverflowKnownLength { .. }
                    | JsonPayloadError::Overflow { .. },
                ) => BodyProblem::TooLarge,
                Some(JsonPayloadError::ContentType) => BodyProblem::ContentType,
                Some(JsonPayloadError::Payload(p)) if super::edge::is_body_timeout(p) => {
                    BodyProblem::Timeout
                }
                _ => BodyProblem::InvalidJson,
            };
            let message = match kind {
                BodyProblem::ContentType => {
                    "the body must be JSON: send the header Content-Type: application/json"
                        .to_owned()
                }
                _ => e.to_string(),
            };
            Err(Problem::Body(kind, message))
        }
    }
}

/// Read-your-writes: with `X-DITTO-TXN-ID`, waits (bounded) until that transaction is visible.
async fn read_your_writes(req: &HttpRequest, state: &AppState) -> Result<(), Problem> {
    let Some(txn) = txn_header(req)? else {
        return Ok(());
    };
    if state.wait_for_txn(txn, TXN_WAIT).await? {
        Ok(())
    } else {
        Err(Problem::TxnNotAvailable(txn))
    }
}

/// Reads `X-DITTO-TXN-ID`.
fn txn_header(req: &HttpRequest) -> Result<Option<i64>, Problem> {
    match req.headers().get("x-ditto-txn-id") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .map(Some)
            .ok_or(Problem::TxnHeader),
    }
}
