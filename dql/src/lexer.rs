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

    fn supports_string_literal_backslash_escape(&self) -> bool {
        true
    }
}

/// The text of a string literal as written between its quotes, with Ditto's escapes: `\b \f
/// \n \r \t`, `\uXXXX` (four hex digits, not a surrogate), and `\` before any other character
/// stands for that character (`\\`, `\'`, `\"`, `\%` ...). A doubled quote stands for one quote
/// (as in SQL; Ditto rejects it). `None`: an invalid `\u` escape.
fn unescape_string(raw: &str, quote: char) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('b') => out.push('\u{8}'),
                Some('f') => out.push('\u{c}'),
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some('u') => {
                    let hex: String = (0..4).filter_map(|_| chars.next()).collect();
                    if hex.len() != 4 || !hex.chars().all(|h| h.is_ascii_hexdigit()) {
                        return None;
                    }
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                Some(other) => out.push(other),
                None => out.push('\\'),
            },
            q if q == quote && chars.peek() == Some(&quote) => {
                chars.next();
                out.push(q);
            }
            other => out.push(other),
        }
    }
    Some(out)
}

/// Identifiers in backticks as written: a doubled backtick stands for one.
fn unescape_ident(raw: &str) -> String {
    raw.replace("``", "`")
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
    // Escapes are read here (`unescape_string`), as Ditto reads them, not by sqlparser.
    let tokens = Tokenizer::new(&dialect, text)
        .with_unescape(false)
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
        let bad_escape = || {
            DqlError::invalid(
                format!(
                    "DQL parser error: Invalid unicode escape sequence in string literal at line {} column {}",
                    span.line, span.column
                ),
                span,
            )
        };
        let token = match t.token {
            Token::SingleQuotedString(raw) => {
                Token::SingleQuotedString(unescape_string(&raw, '\'').ok_or_else(bad_escape)?)
            }
            Token::DoubleQuotedString(raw) => {
                Token::DoubleQuotedString(unescape_string(&raw, '"').ok_or_else(bad_escape)?)
            }
            Token::Word(mut w) if w.quote_style == Some('`') => {
                w.value = unescape_ident(&w.value);
                Token::Word(w)
            }
            other => other,
        };
        out.push(Tok {
            token,
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
pub(crate) fn line_starts(text: &str) -> Vec<usize> {
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

/// The span (1-based line and column) of a character offset, given [`line_starts`].
pub(crate) fn span_at(line_starts: &[usize], offset: usize) -> Span {
    let line = line_starts.partition_point(|s| *s <= offset).max(1);
    let start = line_starts.get(line - 1).copied().unwrap_or(0);
    Span::new(
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(offset - start.min(offset) + 1).unwrap_or(u32::MAX),
    )
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
    fn string_escapes_are_read_as_ditto_reads_them() {
        let strings = |text: &str| -> Vec<String> {
            tokenize(text)
                .expect("tokens")
                .into_iter()
                .filter_map(|t| match t.token {
                    Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => Some(s),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(
            strings(r#"'a\_b' 'a\\b' 'a\nb' 'a\'b' "a\"b" 'x\u0041' '\x' 'it''s' """#),
            vec!["a_b", "a\\b", "a\nb", "a'b", "a\"b", "xA", "x", "it's", ""]
        );
        for bad in [r"'\u00zz'", r"'\u00'", r"'\ud83d'"] {
            let e = tokenize(bad).expect_err(bad);
            assert!(e.message.contains("Invalid unicode escape"), "{bad}: {e}");
        }
        assert!(
            tokenize(r"'a\'").is_err(),
            "an escaped closing quote leaves it open"
        );
        let ident = tokenize("`a``b`").expect("tokens");
        assert!(matches!(&ident[0].token, Token::Word(w) if w.value == "a`b"));
    }

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
