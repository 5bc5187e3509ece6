//! Tokens: sqlparser's tokenizer driven by [`DqlDialect`], with comments (including `/*+ ... */`
//! directive comments, which are accepted and ignored) and whitespace dropped.

use sqlparser::dialect::Dialect;
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::ast::Span;
use crate::error::{DqlError, Result};

/// DQL's lexical rules for sqlparser's tokenizer: identifiers start with a letter or `_`,
/// backticks quote identifiers, and double-quoted text is a string (Ditto 5.x).
#[derive(Debug, Default, Clone, Copy)]
pub struct DqlDialect;

impl Dialect for DqlDialect {
    fn is_identifier_start(&self, ch: char) -> bool {
        ch.is_alphabetic() || ch == '_'
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        ch.is_alphanumeric() || ch == '_'
    }

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        ch == '`'
    }

    fn supports_nested_comments(&self) -> bool {
        false
    }
}

/// A token and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Tok {
    pub token: Token,
    pub span: Span,
    /// Character offset just past the token in the source text.
    pub end_offset: usize,
}

/// Splits `text` into tokens, dropping whitespace and comments.
pub fn tokenize(text: &str) -> Result<Vec<Tok>> {
    let dialect = DqlDialect;
    let tokens = Tokenizer::new(&dialect, text)
        .tokenize_with_location()
        .map_err(|e| {
            let span = Span::new(
                u32::try_from(e.location.line).unwrap_or(u32::MAX),
                u32::try_from(e.location.column).unwrap_or(u32::MAX),
            );
            DqlError::invalid(lexer_message(&e.message, span), span)
        })?;
    let line_starts = line_starts(text);
    let mut out = Vec::with_capacity(tokens.len());
    for t in tokens {
        if matches!(t.token, Token::Whitespace(_) | Token::EOF) {
            continue;
        }
        let span = Span::new(
            u32::try_from(t.span.start.line).unwrap_or(u32::MAX),
            u32::try_from(t.span.start.column).unwrap_or(u32::MAX),
        );
        let end_offset = offset_of(&line_starts, t.span.end.line, t.span.end.column);
        out.push(Tok {
            token: t.token,
            span,
            end_offset,
        });
    }
    Ok(out)
}

fn lexer_message(raw: &str, span: Span) -> String {
    let detail = if raw.starts_with("Unterminated string") {
        "Unterminated string literal".to_owned()
    } else if raw.starts_with("Expected close delimiter") {
        "Unterminated quoted identifier".to_owned()
    } else if raw.starts_with("Unexpected EOF while in a multi-line comment") {
        "Unterminated comment".to_owned()
    } else {
        raw.to_owned()
    };
    format!(
        "DQL parser error: {detail} at line {} column {}",
        span.line, span.column
    )
}

/// Character offsets at which each line starts.
fn line_starts(text: &str) -> Vec<usize> {
    let mut starts = vec![0];
    for (i, ch) in text.chars().enumerate() {
        if ch == '\n' {
            starts.push(i + 1);
        }
    }
    starts
}

fn offset_of(line_starts: &[usize], line: u64, column: u64) -> usize {
    let line = usize::try_from(line).unwrap_or(usize::MAX).max(1);
    let col = usize::try_from(column).unwrap_or(usize::MAX).max(1);
    line_starts
        .get(line - 1)
        .copied()
        .unwrap_or(0)
        .saturating_add(col - 1)
}

/// Character offset of a span's start.
pub fn span_offset(text: &str, span: Span) -> usize {
    offset_of(
        &line_starts(text),
        u64::from(span.line),
        u64::from(span.column),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_comments_and_keeps_positions() {
        let toks =
            tokenize("/*+ {\"#x\": 1} */ SELECT\n  `a b` -- note\n FROM \"s\"").expect("tokens");
        let kinds: Vec<String> = toks.iter().map(|t| t.token.to_string()).collect();
        assert_eq!(kinds, vec!["SELECT", "`a b`", "FROM", "\"s\""]);
        assert_eq!(toks[1].span, Span::new(2, 3));
        assert!(matches!(toks[3].token, Token::DoubleQuotedString(_)));
    }

    #[test]
    fn unterminated_string_has_position() {
        let err = tokenize("SELECT * FROM cars WHERE a = 'x").expect_err("error");
        assert_eq!(
            err.message,
            "DQL parser error: Unterminated string literal at line 1 column 30"
        );
    }
}
