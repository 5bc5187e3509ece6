//! The in-memory evaluator: runs a [`crate::plan::Plan`] over documents (`Value` objects that
//! include `_id`). It defines the semantics the Postgres backend must reproduce.

mod expr;
mod functions;
mod group;
mod mutate;
mod ops;
mod select;

pub use expr::{eval, eval_const, is_true, Env};
pub use group::aggregate;
pub use mutate::{insert_ops, update_ops, InsertOutcome};
pub use ops::{arith, compare, like, order_cmp, type_rank, Truth};
pub use select::{select, storage_key, system_collection_docs, targets};

/// Whether a document matches a filter (for subscriptions: does this change concern a query).
pub fn matches(
    filter: Option<&crate::plan::PExpr>,
    doc: &bigpeer_schema::Value,
) -> crate::Result<bool> {
    match filter {
        None => Ok(true),
        Some(f) => is_true(
            f,
            &Env {
                doc: Some(doc),
                ..Env::default()
            },
        ),
    }
}
