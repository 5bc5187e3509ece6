//! `POST /api/v4/store/write`: Ditto's legacy write RPC. A `commands` array of `upsert`,
//! `update` and `remove` commands, applied atomically (one transaction; when one command fails,
//! nothing is written and the error names the command by its index).
//!
//! Request:
//!
//! ```json
//! {"commands": [
//!   {"method": "upsert", "collection": "people", "id": "abc", "value": {"name": "John"},
//!    "valueTypeOverrides": {"orderCount": "counter"}},
//!   {"method": "update", "collection": "orders", "query": "createdAt <= $args.ttl",
//!    "args": {"ttl": "2024-01-01"},
//!    "commands": [{"method": "set", "path": "evictionFlag", "value": true}]},
//!   {"method": "remove", "collection": "people", "query": "name == 'John'"}]}
//! ```
//!
//! Response (200): `{"results": [{"method": "upsert", "transactionId": 7, "id": "abc"},
//! {"method": "update", "transactionId": 7, "updated": 1, "error": 0, "internalError": 0,
//! "permissionDenied": 0}, {"method": "remove", "transactionId": 7, "deleted": 1,
//! "internalError": 0, "permissionDenied": 0}], "transactionId": 7}`, and the transaction id in
//! the `X-DITTO-TXN-ID` header, to send on a later request to read these writes.
//!
//! Errors: `{"message", "code", "commandIndex"}` (the index when one command is at fault): 400
//! for a malformed command (`request/invalid-command`) or an invalid query (`query/...`), 403
//! when a command writes outside the key's permissions (`auth/forbidden`).

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bigpeer_schema::Value;
use serde::{Deserialize, Serialize};

use super::legacy::{access, error};
use super::store::{status_of, txn_header, wait_for_txn, TXN_WAIT};
use crate::app::AppState;
use crate::service::{BatchError, FieldType, UpdateOp, WriteCommand, WriteOutcome, WriteStrategy};

/// The body of `POST /api/v4/store/write`. Each command is read on its own, so that a malformed
/// one is reported with its index.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteRequest {
    pub commands: Vec<serde_json::Value>,
}

/// One command of a write.
#[derive(Debug, Deserialize)]
#[serde(tag = "method", rename_all = "camelCase")]
pub enum Command {
    Upsert(UpsertCommand),
    Update(UpdateCommand),
    Remove(RemoveCommand),
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub enum ValueType {
    Counter,
    Register,
    Map,
    Attachment,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub enum Strategy {
    Merge,
    InsertIfAbsent,
    InsertDefaultIfAbsent,
    UpdateDifferentValues,
}

/// `{"method": "upsert", collection, id?, value, valueTypeOverrides?, writeStrategy?}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpsertCommand {
    pub collection: String,
    #[serde(default)]
    pub id: Option<Value>,
    pub value: Value,
    #[serde(default)]
    pub value_type_overrides: BTreeMap<String, ValueType>,
    #[serde(default)]
    pub write_strategy: Option<Strategy>,
}

/// `{"method": "update", collection, query, args?, commands: [...]}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateCommand {
    pub collection: String,
    pub query: String,
    #[serde(default)]
    pub args: BTreeMap<String, Value>,
    pub commands: Vec<UpdateMethod>,
}

/// One change of an update: `{"method": "set" | "setAttachment" | "increment" |
/// "replaceWithCounter", "path", "value"}`.
#[derive(Debug, Deserialize)]
#[serde(tag = "method", rename_all = "camelCase")]
pub enum UpdateMethod {
    Set(PathValue),
    SetAttachment(PathValue),
    Increment(PathValue),
    ReplaceWithCounter(CounterPath),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathValue {
    pub path: String,
    pub value: Value,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CounterPath {
    pub path: String,
    /// Accepted for compatibility: a field that is already a counter is kept either way.
    #[serde(default)]
    pub is_default: Option<bool>,
}

/// `{"method": "remove", collection, query, args?}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemoveCommand {
    pub collection: String,
    pub query: String,
    #[serde(default)]
    pub args: BTreeMap<String, Value>,
}

/// The answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WriteResponse {
    pub results: Vec<CommandResult>,
    pub transaction_id: i64,
}

/// What one command did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "method", rename_all = "camelCase")]
pub enum CommandResult {
    #[serde(rename_all = "camelCase")]
    Upsert {
        transaction_id: i64,
        #[schema(value_type = Value)]
        id: serde_json::Value,
    },
    #[serde(rename_all = "camelCase")]
    Update {
        transaction_id: i64,
        updated: usize,
        error: usize,
        internal_error: usize,
        permission_denied: usize,
    },
    #[serde(rename_all = "camelCase")]
    Remove {
        transaction_id: i64,
        deleted: usize,
        internal_error: usize,
        permission_denied: usize,
    },
}

impl From<Command> for WriteCommand {
    fn from(c: Command) -> Self {
        match c {
            Command::Upsert(u) => WriteCommand::Upsert {
                collection: u.collection,
                id: u.id,
                value: u.value,
                types: u
                    .value_type_overrides
                    .into_iter()
                    .map(|(k, t)| {
                        let t = match t {
                            ValueType::Counter => FieldType::Counter,
                            ValueType::Register => FieldType::Register,
                            ValueType::Map => FieldType::Map,
                            ValueType::Attachment => FieldType::Attachment,
                        };
                        (k, t)
                    })
                    .collect(),
                strategy: match u.write_strategy {
                    None | Some(Strategy::Merge) => WriteStrategy::Merge,
                    Some(Strategy::InsertIfAbsent) => WriteStrategy::InsertIfAbsent,
                    Some(Strategy::InsertDefaultIfAbsent) => WriteStrategy::InsertDefaultIfAbsent,
                    Some(Strategy::UpdateDifferentValues) => WriteStrategy::UpdateDifferentValues,
                },
            },
            Command::Update(u) => WriteCommand::Update {
                collection: u.collection,
                query: u.query,
                args: u.args,
                ops: u
                    .commands
                    .into_iter()
                    .map(|m| match m {
                        UpdateMethod::Set(p) => UpdateOp::Set {
                            path: p.path,
                            value: p.value,
                        },
                        UpdateMethod::SetAttachment(p) => UpdateOp::SetAttachment {
                            path: p.path,
                            value: p.value,
                        },
                        UpdateMethod::Increment(p) => UpdateOp::Increment {
                            path: p.path,
                            by: p.value,
                        },
                        UpdateMethod::ReplaceWithCounter(p) => {
                            UpdateOp::ReplaceWithCounter { path: p.path }
                        }
                    })
                    .collect(),
            },
            Command::Remove(r) => WriteCommand::Remove {
                collection: r.collection,
                query: r.query,
                args: r.args,
            },
        }
    }
}

fn command_error(
    status: StatusCode,
    code: &str,
    message: String,
    index: Option<usize>,
) -> HttpResponse {
    let mut body = serde_json::json!({ "message": message, "code": code });
    if let (Some(i), Some(o)) = (index, body.as_object_mut()) {
        o.insert("commandIndex".into(), i.into());
    }
    HttpResponse::build(status).json(body)
}

/// `POST /api/v4/store/write` (its OpenAPI description is in `http/openapi.rs`).
pub async fn write(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> HttpResponse {
    let access = match access(&req, &state).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    // Only now, with the credentials checked, is the body read.
    let body: WriteRequest = match super::auth::json_body(&req, payload).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let Ok(txn) = txn_header(&req) else {
        return error(
            StatusCode::BAD_REQUEST,
            "request/invalid-header",
            "X-DITTO-TXN-ID must be an integer transaction id".into(),
        );
    };
    if let Some(t) = txn {
        match wait_for_txn(&state.store, t, TXN_WAIT).await {
            Ok(true) => {}
            Ok(false) => {
                return error(
                    StatusCode::NOT_FOUND,
                    "store/txn-not-available",
                    format!("transaction {t} is not available yet"),
                )
            }
            Err(e) => return error(status_of(&e), e.code(), e.to_string()),
        }
    }
    let raw = body.commands;
    if raw.is_empty() {
        state.metrics.error("request/invalid-command");
        return command_error(
            StatusCode::BAD_REQUEST,
            "request/invalid-command",
            "\"commands\" is empty: give at least one command".into(),
            None,
        );
    }
    if let Some(i) = raw.iter().position(super::store::json_has_nul) {
        state.metrics.error(super::store::NUL_CODE);
        let message = super::store::nul_message(&format!("command {i}"));
        return command_error(
            StatusCode::BAD_REQUEST,
            super::store::NUL_CODE,
            message,
            Some(i),
        );
    }
    let mut commands = Vec::with_capacity(raw.len());
    for (i, c) in raw.into_iter().enumerate() {
        match serde_json::from_value::<Command>(c) {
            Ok(c) => commands.push(WriteCommand::from(c)),
            Err(e) => {
                state.metrics.error("request/invalid-command");
                return command_error(
                    StatusCode::BAD_REQUEST,
                    "request/invalid-command",
                    format!("command {i}: {e}"),
                    Some(i),
                );
            }
        }
    }
    match state.executor.write_batch(&commands, &access).await {
        Ok(r) => {
            let txn = r.txn;
            let results = r
                .outcomes
                .into_iter()
                .map(|o| match o {
                    WriteOutcome::Upsert { id } => CommandResult::Upsert {
                        transaction_id: txn,
                        id: id.to_json(),
                    },
                    WriteOutcome::Update { updated } => CommandResult::Update {
                        transaction_id: txn,
                        updated,
                        error: 0,
                        internal_error: 0,
                        permission_denied: 0,
                    },
                    WriteOutcome::Remove { deleted } => CommandResult::Remove {
                        transaction_id: txn,
                        deleted,
                        internal_error: 0,
                        permission_denied: 0,
                    },
                })
                .collect();
            HttpResponse::Ok()
                .insert_header(("X-DITTO-TXN-ID", txn.to_string()))
                .json(WriteResponse {
                    results,
                    transaction_id: txn,
                })
        }
        Err(BatchError { index, error: e }) => {
            state.metrics.error(e.code());
            let status = status_of(&e);
            let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
                tracing::error!(error = %e, code = e.code(), "write failed");
                "internal error".to_owned()
            } else {
                match index {
                    Some(i) => format!("command {i}: {e}"),
                    None => e.to_string(),
                }
            };
            command_error(status, e.code(), message, index)
        }
    }
}

/// Registers the route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v4/store/write", web::post().to(write));
}
