//! Transport-neutral operations shared by the HTTP API and the sync protocol.

mod error;
mod execute;

pub use error::ServiceError;
pub use execute::{ExecuteResult, Executor, QueryType};

#[cfg(test)]
mod tests;
