//! Transport-neutral operations shared by the HTTP API and the sync protocol.

mod access;
mod error;
mod execute;

pub use access::{validate as validate_permissions, Access, Allowed};
pub use error::ServiceError;
pub use execute::{ExecuteResult, Executor, QueryType};

#[cfg(test)]
mod tests;
