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

use actix_web::{web, HttpResponse};
use bigpeer_schema::Value;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, Commands, Problem};
use super::extract::{Call, Failure, Validate};
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

impl Validate for WriteRequest {
    type Valid = Vec<WriteCommand>;

    /// At least one command; no text holding U+0000; each command well formed. A failure names
    /// the command by its index.
    fn validate(self) -> Result<Vec<WriteCommand>, Failure> {
        let at = |problem: Problem, i: usize| Failure {
            problem,
            command_index: Some(i),
        };
        if self.commands.is_empty() {
            return Err(Problem::InvalidCommand(
                "\"commands\" is empty: give at least one command".into(),
            )
            .into());
        }
        if let Some(i) = self
            .commands
            .iter()
            .position(bigpeer_schema::limits::json_has_nul)
        {
            return Err(at(Problem::Nul(format!("command {i}")), i));
        }
        self.commands
            .into_iter()
            .enumerate()
            .map(|(i, c)| match serde_json::from_value::<Command>(c) {
                Ok(c) => Ok(WriteCommand::from(c)),
                Err(e) => Err(at(Problem::InvalidCommand(format!("command {i}: {e}")), i)),
            })
            .collect()
    }
}

/// `POST /api/v4/store/write` (its OpenAPI description is in `http/openapi.rs`).
pub async fn write(call: Call<WriteRequest, Commands>) -> Result<HttpResponse, ApiError<Commands>> {
    let r = call
        .state
        .executor
        .write_batch(&call.body, &call.access)
        .await
        .map_err(|BatchError { index, error }| ApiError::from(error).at(index))?;
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
    Ok(HttpResponse::Ok()
        .insert_header(("X-DITTO-TXN-ID", txn.to_string()))
        .json(WriteResponse {
            results,
            transaction_id: txn,
        }))
}

/// Registers the route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v4/store/write", web::post().to(write));
}
