//! Transport-neutral operations shared by the HTTP API and the sync protocol.

mod access;
mod changes;
mod error;
mod execute;
mod push;
mod write;

pub use access::{validate as validate_permissions, Access, Allowed};
pub use changes::{
    event_id, ChangeEvent, ChangeScope, ChangeScopeError, EventChange, RequeryEvent,
};
pub use error::ServiceError;
pub use execute::{ExecuteResult, Executor, QueryType, WriteScope};
pub use push::merge_push;
pub use write::{
    parse_path, BatchError, FieldType, UpdateOp, WriteCommand, WriteOutcome, WriteResult,
    WriteStrategy,
};

#[cfg(test)]
mod tests;
