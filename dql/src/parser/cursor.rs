//! A cursor over the token list with Ditto-style error messages.

use sqlparser::tokenizer::{Token, Word};

use crate::ast::Span;
use crate::error::{DqlError, Result};
use crate::lexer::{span_offset, Tok};

/// Words that cannot be used as unquoted identifiers (quote them with backticks). Ditto 5.1
/// accepts the CRDT type names and most option words (`collection`, `map`, `documents`) as field
/// names, so only the words that structure statements and expressions are reserved here.
pub const RESERVED: &[&str] = &[
    "AND", "APPLY", "AS", "ASC", "BETWEEN", "BY", "DELETE", "DESC", "DISTINCT", "FALSE", "FROM",
    "GROUP", "HAVING", "ILIKE", "IN", "INSERT", "INTO", "IS", "LIKE", "LIMIT", "MISSING", "NOT",
    "NULL", "OFFSET", "ON", "OR", "ORDER", "SELECT", "SET", "TRUE", "UNSET", "UPDATE", "USE",
    "VALUE", "VALUES", "WHERE",
];

pub fn is_reserved(word: &str) -> bool {
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(word))
}

pub struct Cursor<'a> {
    pub text: &'a str,
    toks: Vec<Tok>,
    pos: usize,
    /// Nesting depth of expressions, bounded so that deep input cannot overflow the stack.
    pub depth: usize,
    /// Operators applied so far; bounds the depth of left-leaning chains (`a OR b OR ...`),
    /// which the evaluator and printer walk recursively.
    pub operators: usize,
}

pub const MAX_DEPTH: usize = 128;

/// The most operators one statement may contain.
pub const MAX_OPERATORS: usize = 1000;

/// The deepest expression accepted (AND/OR chains count as one level). Later stages recurse
/// over expressions; this keeps them far from the stack limit.
pub const MAX_EXPR_DEPTH: usize = 24;

impl<'a> Cursor<'a> {
    pub fn new(text: &'a str, toks: Vec<Tok>) -> Cursor<'a> {
        Cursor {
            text,
            toks,
            pos: 0,
            depth: 0,
            operators: 0,
        }
    }

    pub fn peek(&self) -> Option<&Token> {
        self.toks.get(self.pos).map(|t| &t.token)
    }

    pub fn peek_nth(&self, n: usize) -> Option<&Token> {
        self.toks.get(self.pos + n).map(|t| &t.token)
    }

    /// Where the next token starts (or the end of input).
    pub fn span(&self) -> Span {
        match self.toks.get(self.pos) {
            Some(t) => t.span,
            None => self.end_span(),
        }
    }

    pub fn prev_end_offset(&self) -> usize {
        self.pos
            .checked_sub(1)
            .and_then(|i| self.toks.get(i))
            .map_or(0, |t| t.end_offset)
    }

    /// The offset where the next token starts, to tell whether two tokens touch.
    pub fn next_start_offset(&self) -> Option<usize> {
        self.toks
            .get(self.pos)
            .map(|t| span_offset(self.text, t.span))
    }

    fn end_span(&self) -> Span {
        let mut line = 1u32;
        let mut column = 1u32;
        for ch in self.text.chars() {
            if ch == '\n' {
                line = line.saturating_add(1);
                column = 1;
            } else {
                column = column.saturating_add(1);
            }
        }
        Span::new(line, column)
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.toks.len()
    }

    pub fn advance(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    /// Is the next token the unquoted keyword `kw`?
    pub fn is_kw(&self, kw: &str) -> bool {
        self.is_kw_at(0, kw)
    }

    pub fn is_kw_at(&self, n: usize, kw: &str) -> bool {
        matches!(self.peek_nth(n), Some(Token::Word(w)) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(kw))
    }

    pub fn eat_kw(&mut self, kw: &str) -> bool {
        if self.is_kw(kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub fn expect_kw(&mut self, kw: &str) -> Result<()> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            Err(self.unexpected(Some(kw)))
        }
    }

    pub fn is_token(&self, t: &Token) -> bool {
        self.peek() == Some(t)
    }

    pub fn eat_token(&mut self, t: &Token) -> bool {
        if self.is_token(t) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub fn expect_token(&mut self, t: &Token) -> Result<()> {
        if self.eat_token(t) {
            Ok(())
        } else {
            Err(self.unexpected(Some(&t.to_string())))
        }
    }

    /// An identifier: an unquoted word that is not reserved, or a backtick-quoted word.
    pub fn is_identifier(&self) -> bool {
        match self.peek() {
            Some(Token::Word(w)) => word_is_identifier(w),
            _ => false,
        }
    }

    pub fn expect_identifier(&mut self) -> Result<(String, Span)> {
        let span = self.span();
        match self.peek() {
            Some(Token::Word(w)) if word_is_identifier(w) => {
                let v = w.value.clone();
                self.pos += 1;
                Ok((v, span))
            }
            _ => Err(self.unexpected(Some("identifier"))),
        }
    }

    /// Any word, reserved or not (field names after a `.`).
    pub fn expect_any_word(&mut self) -> Result<String> {
        match self.peek() {
            Some(Token::Word(w)) if w.quote_style.is_none() || w.quote_style == Some('`') => {
                let v = w.value.clone();
                self.pos += 1;
                Ok(v)
            }
            _ => Err(self.unexpected(Some("identifier"))),
        }
    }

    /// `Unexpected token X at line L column C near "..."; expected Y`, or `query/unsupported`
    /// when the token starts a construct DQL has but bigpeer does not support.
    pub fn unexpected(&self, expected: Option<&str>) -> DqlError {
        let span = self.span();
        if let Some(construct) = self.unsupported_construct() {
            return DqlError::unsupported(construct, span);
        }
        let what = match self.toks.get(self.pos) {
            Some(t) => format!("token {}", t.token),
            None => "end of input".to_owned(),
        };
        let offset = match self.toks.get(self.pos) {
            Some(t) => span_offset(self.text, t.span),
            None => self.text.chars().count(),
        };
        let mut msg = format!(
            "DQL parser error: Unexpected {what} at line {} column {} near \"{}\"",
            span.line,
            span.column,
            near(self.text, offset)
        );
        if let Some(e) = expected {
            msg.push_str("; expected ");
            msg.push_str(e);
            if let Some(Token::Word(w)) = self.peek() {
                if w.quote_style.is_none()
                    && is_reserved(&w.value)
                    && (e == "identifier" || e == "an expression")
                {
                    msg.push_str(&format!(
                        " (`{}` is a reserved word: quote it with backticks)",
                        w.value
                    ));
                }
            }
        }
        DqlError::invalid(msg, span)
    }

    /// Recognises the start of a known construct that bigpeer does not support.
    fn unsupported_construct(&self) -> Option<String> {
        let prev = self
            .pos
            .checked_sub(1)
            .and_then(|i| self.toks.get(i))
            .map(|t| &t.token);
        let word = |n: usize| match self.peek_nth(n) {
            Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
            _ => None,
        };
        match self.peek()? {
            Token::ShiftLeft | Token::ShiftRight => {
                Some("the bit shift operators << and >>".to_owned())
            }
            Token::Arrow | Token::LongArrow => {
                Some("the `SET field -> (...)` map syntax (use `SET field.key = ...`)".to_owned())
            }
            Token::Word(_) => {
                let w = word(0)?;
                Some(match w.as_str() {
                    "JOIN" | "INNER" | "LEFT" | "RIGHT" | "FULL" | "CROSS" => "JOIN".to_owned(),
                    "UNION" | "INTERSECT" | "EXCEPT" => format!("{w} (set operations)"),
                    "SIMILAR" => "SIMILAR TO".to_owned(),
                    "SELECT" if prev == Some(&Token::LParen) => "subqueries".to_owned(),
                    "CREATE" | "DROP" if self.pos == 0 => {
                        format!("{w} {}", word(1).unwrap_or_default())
                            .trim_end()
                            .to_owned()
                    }
                    "SYNC" if self.pos == 0 => "SYNC CONTEXT".to_owned(),
                    _ => return None,
                })
            }
            _ => None,
        }
    }

    /// A parser error with a free-form detail at the current position.
    pub fn error(&self, detail: &str) -> DqlError {
        DqlError::invalid(format!("DQL parser error: {detail}"), self.span())
    }
}

fn word_is_identifier(w: &Word) -> bool {
    match w.quote_style {
        None => !is_reserved(&w.value),
        Some('`') => true,
        Some(_) => false,
    }
}

/// Up to 32 characters either side of `offset`, with `...` where text was cut.
fn near(text: &str, offset: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    let start = offset.saturating_sub(32);
    let end = offset.saturating_add(32).min(chars.len());
    let mut s = String::new();
    if start > 0 {
        s.push_str("...");
    }
    s.extend(chars.get(start..end).unwrap_or(&[]).iter());
    if end < chars.len() {
        s.push_str("...");
    }
    s
}
