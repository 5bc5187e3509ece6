//! DQL (Ditto's query language, 5.x semantics): parse, plan, compile to Postgres SQL, evaluate
//! in memory. Pure: no IO, no async.
//!
//! | stage | module | output |
//! |---|---|---|
//! | tokens | [`lexer`] (sqlparser's tokenizer with [`lexer::DqlDialect`]) | tokens with positions |
//! | parse | [`parser`] (recursive descent, Pratt expressions) | [`ast::Statement`] (spans) |
//! | check | [`plan`] | [`plan::Plan`]: names resolved, aggregates checked, parameters bound |
//! | run in memory | [`eval`], [`exec`] (on any [`exec::DocumentStore`]), [`memstore`] | items, or per-document CRDT operations |
//! | compile | [`sql`] | [`sql::CompiledPlan`]: one parameterised Postgres statement |
//!
//! # How a server runs a statement
//!
//! ```no_run
//! # use std::collections::BTreeMap;
//! # use bigpeer_schema::Value;
//! use bigpeer_dql::{parse, plan, sql};
//! let args: BTreeMap<String, Value> = BTreeMap::new();
//! let stmt = parse("SELECT * FROM cars WHERE color = 'blue'")?;        // DqlError on bad text
//! let plan = plan::check_with(&stmt, &args, &plan::PlanOptions::default())?;
//! match sql::compile(&plan)? {
//!     sql::CompiledPlan::Query(c) => { /* run c.sql with c.params; each row: one jsonb `item` */ }
//!     sql::CompiledPlan::Mutation { targets } => {
//!         // Run `targets` (the ids, a snapshot read); then in one transaction lock and load
//!         // each document, check the filter again, and per document: eval::update_ops(&u,
//!         // &value) / eval::insert_ops(&i, &doc, existing) / Op::Delete, apply to the decoded
//!         // Doc with one stamp, write back.
//!     }
//!     sql::CompiledPlan::NoSql => { /* ALTER SYSTEM / SHOW (settings::Settings), EXPLAIN (plan::explain) */ }
//! }
//! # Ok::<(), bigpeer_dql::DqlError>(())
//! ```
//!
//! Errors are [`DqlError`] `{code, message, line, column}`; [`DqlError::ditto_message`] wraps
//! the message the way Ditto's SDK shows it.

pub mod ast;
pub mod error;
pub mod eval;
pub mod exec;
pub mod legacy;
pub mod lexer;
pub mod memstore;
pub mod parser;
pub mod plan;
pub mod print;
pub mod settings;
pub mod sql;

pub use error::{DqlError, ErrorCode, Result};
pub use parser::parse;
