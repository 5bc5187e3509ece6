//! DQL: parse, plan, compile to Postgres SQL, evaluate in memory.
//!
//! | stage | module | output |
//! |---|---|---|
//! | tokens | [`lexer`] (sqlparser's tokenizer, [`lexer::DqlDialect`]) | tokens with positions |
//! | parse | [`parser`] (recursive descent + Pratt expressions) | [`ast::Statement`] |
//! | check | [`plan`] | [`plan::Plan`] (names resolved, aggregates checked, parameters bound) |
//! | run in memory | [`eval`] | items, or the documents a mutation touches and its CRDT operations |
//! | compile | [`sql`] | [`sql::Compiled`]: one parameterised Postgres statement |

pub mod ast;
pub mod error;
pub mod eval;
pub mod lexer;
pub mod memstore;
pub mod parser;
pub mod plan;
pub mod print;
pub mod settings;
pub mod sql;

pub use error::{DqlError, ErrorCode, Result};
pub use parser::parse;
