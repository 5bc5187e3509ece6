//! The crate's one error type: a stable code, a message close to Ditto's, and a position.

use std::fmt;

/// The stable error codes (the same strings Ditto uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Parse and validation errors, missing parameters: `query/invalid`.
    Invalid,
    /// Runtime errors (id conflicts, counter types): `query/evaluation`.
    Evaluation,
    /// Syntax that is recognised but not supported by bigpeer: `query/unsupported`.
    Unsupported,
    /// An unknown system parameter in `SHOW` or `ALTER SYSTEM`, or a value it refuses:
    /// `query/parameter`, as Ditto.
    Parameter,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Invalid => "query/invalid",
            ErrorCode::Evaluation => "query/evaluation",
            ErrorCode::Unsupported => "query/unsupported",
            ErrorCode::Parameter => "query/parameter",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A DQL error. `line` and `column` are 1-based; 0 when the error has no position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DqlError {
    pub code: ErrorCode,
    pub message: String,
    pub line: u32,
    pub column: u32,
}

pub type Result<T, E = DqlError> = std::result::Result<T, E>;

impl DqlError {
    pub fn new(code: ErrorCode, message: impl Into<String>, span: crate::ast::Span) -> DqlError {
        DqlError {
            code,
            message: message.into(),
            line: span.line,
            column: span.column,
        }
    }

    /// A `query/invalid` error.
    pub fn invalid(message: impl Into<String>, span: crate::ast::Span) -> DqlError {
        DqlError::new(ErrorCode::Invalid, message, span)
    }

    /// A `query/evaluation` error.
    pub fn evaluation(message: impl Into<String>, span: crate::ast::Span) -> DqlError {
        DqlError::new(ErrorCode::Evaluation, message, span)
    }

    /// A `query/unsupported` error naming the construct.
    pub fn unsupported(construct: impl fmt::Display, span: crate::ast::Span) -> DqlError {
        DqlError::new(
            ErrorCode::Unsupported,
            format!("not supported by bigpeer: {construct}"),
            span,
        )
    }

    /// A `query/parameter` error: `name` is not a system parameter.
    pub fn unknown_parameter(name: &str) -> DqlError {
        DqlError::parameter(format!("Unknown system parameter \"{name}\""))
    }

    /// A `query/parameter` error: a system parameter's value is refused.
    pub fn parameter(message: impl Into<String>) -> DqlError {
        DqlError::new(ErrorCode::Parameter, message, crate::ast::Span::NONE)
    }

    /// The code as a string (`query/invalid`, ...).
    pub fn code_str(&self) -> &'static str {
        self.code.as_str()
    }

    /// The message wrapped the way Ditto's SDK presents it to users.
    pub fn ditto_message(&self) -> String {
        const LINK: &str =
            "For more information on Ditto's query language see: https://ditto.com/link/dql-guide";
        match self.code {
            ErrorCode::Evaluation => {
                format!(
                    "Query failed: `DQL Internal execution error: {}`. {LINK}",
                    self.message
                )
            }
            ErrorCode::Invalid | ErrorCode::Unsupported | ErrorCode::Parameter => {
                format!("Invalid query: `{}`. {LINK}", self.message)
            }
        }
    }
}
