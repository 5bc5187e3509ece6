//! A Pratt parser for DQL expressions over sqlparser tokens.
//!
//! Binding powers, loosest first: `OR` < `AND` < `NOT` < `IS` < `LIKE`/`ILIKE` <
//! comparisons, `BETWEEN`, `IN` < `||` < `+ -` < `* / %` < unary `- +` < `.name`, `[index]`.

use bigpeer_schema::Value;
use sqlparser::tokenizer::Token;

use super::cursor::{Cursor, MAX_DEPTH, MAX_EXPR_DEPTH, MAX_OPERATORS};
use crate::ast::{BinaryOp, Expr, ExprKind, InList, IsTest, Span, UnaryOp};
use crate::error::{DqlError, Result};

const BP_OR: u8 = 1;
const BP_AND: u8 = 2;
const BP_NOT: u8 = 3;
const BP_IS: u8 = 4;
const BP_LIKE: u8 = 5;
const BP_CMP: u8 = 6;
const BP_CONCAT: u8 = 7;
const BP_ADD: u8 = 8;
const BP_MUL: u8 = 9;
const BP_UNARY: u8 = 10;

impl Cursor<'_> {
    /// Parses a whole expression.
    pub fn parse_expr(&mut self) -> Result<Expr> {
        let top = self.depth == 0;
        let e = self.parse_expr_bp(0)?;
        if top && expr_depth(&e) > MAX_EXPR_DEPTH {
            return Err(DqlError::invalid(
                format!("DQL parser error: expression nested too deeply (at most {MAX_EXPR_DEPTH} levels)"),
                e.span,
            ));
        }
        Ok(e)
    }

    fn parse_expr_bp(&mut self, min_bp: u8) -> Result<Expr> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("expression nested too deeply"));
        }
        let result = self.parse_expr_inner(min_bp);
        self.depth -= 1;
        result
    }

    fn parse_expr_inner(&mut self, min_bp: u8) -> Result<Expr> {
        let mut lhs = self.parse_prefix()?;
        loop {
            let span = self.span();
            let Some(bp) = self.infix_bp() else { break };
            if bp <= min_bp {
                break;
            }
            self.operators += 1;
            if self.operators > MAX_OPERATORS {
                return Err(self.error("expression has too many operators"));
            }
            lhs = self.parse_infix(lhs, bp, span)?;
        }
        Ok(lhs)
    }

    /// The binding power of the infix operator at the cursor, if any.
    fn infix_bp(&self) -> Option<u8> {
        let bp = match self.peek()? {
            Token::Word(w) if w.quote_style.is_none() => {
                match w.value.to_ascii_uppercase().as_str() {
                    "OR" => BP_OR,
                    "AND" => BP_AND,
                    "IS" => BP_IS,
                    "LIKE" | "ILIKE" => BP_LIKE,
                    "BETWEEN" | "IN" => BP_CMP,
                    "NOT" => {
                        if self.is_kw_at(1, "LIKE") || self.is_kw_at(1, "ILIKE") {
                            BP_LIKE
                        } else if self.is_kw_at(1, "BETWEEN") || self.is_kw_at(1, "IN") {
                            BP_CMP
                        } else {
                            return None;
                        }
                    }
                    _ => return None,
                }
            }
            Token::Eq
            | Token::DoubleEq
            | Token::Neq
            | Token::Lt
            | Token::LtEq
            | Token::Gt
            | Token::GtEq => BP_CMP,
            Token::StringConcat => BP_CONCAT,
            Token::Plus | Token::Minus => BP_ADD,
            Token::Mul | Token::Div | Token::Mod => BP_MUL,
            _ => return None,
        };
        Some(bp)
    }

    fn parse_infix(&mut self, lhs: Expr, bp: u8, span: Span) -> Result<Expr> {
        let tok = self.advance().map(|t| t.token);
        let binary = |op: BinaryOp, this: &mut Self, lhs: Expr| -> Result<Expr> {
            let rhs = this.parse_expr_bp(bp)?;
            let span = lhs.span;
            Ok(Expr::new(
                ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)),
                span,
            ))
        };
        let _ = span;
        match tok {
            Some(Token::Eq) => binary(BinaryOp::Eq, self, lhs),
            Some(Token::DoubleEq) => binary(BinaryOp::EqEq, self, lhs),
            Some(Token::Neq) => binary(BinaryOp::Neq, self, lhs),
            Some(Token::Lt) => binary(BinaryOp::Lt, self, lhs),
            Some(Token::LtEq) => binary(BinaryOp::Le, self, lhs),
            Some(Token::Gt) => binary(BinaryOp::Gt, self, lhs),
            Some(Token::GtEq) => binary(BinaryOp::Ge, self, lhs),
            Some(Token::StringConcat) => binary(BinaryOp::Concat, self, lhs),
            Some(Token::Plus) => binary(BinaryOp::Add, self, lhs),
            Some(Token::Minus) => binary(BinaryOp::Sub, self, lhs),
            Some(Token::Mul) => binary(BinaryOp::Mul, self, lhs),
            Some(Token::Div) => binary(BinaryOp::Div, self, lhs),
            Some(Token::Mod) => binary(BinaryOp::Mod, self, lhs),
            Some(Token::Word(w)) => {
                let kw = w.value.to_ascii_uppercase();
                match kw.as_str() {
                    "OR" => binary(BinaryOp::Or, self, lhs),
                    "AND" => binary(BinaryOp::And, self, lhs),
                    "IS" => self.parse_is(lhs),
                    "NOT" => {
                        if self.eat_kw("LIKE") {
                            self.parse_like(lhs, false, true)
                        } else if self.eat_kw("ILIKE") {
                            self.parse_like(lhs, true, true)
                        } else if self.eat_kw("BETWEEN") {
                            self.parse_between(lhs, true)
                        } else {
                            self.expect_kw("IN")?;
                            self.parse_in(lhs, true)
                        }
                    }
                    "LIKE" => self.parse_like(lhs, false, false),
                    "ILIKE" => self.parse_like(lhs, true, false),
                    "BETWEEN" => self.parse_between(lhs, false),
                    "IN" => self.parse_in(lhs, false),
                    _ => Err(self.unexpected(None)),
                }
            }
            _ => Err(self.unexpected(None)),
        }
    }

    fn parse_is(&mut self, lhs: Expr) -> Result<Expr> {
        let negated = self.eat_kw("NOT");
        let test = if self.eat_kw("NULL") {
            IsTest::Null
        } else if self.eat_kw("MISSING") {
            IsTest::Missing
        } else if self.eat_kw("UNKNOWN") {
            IsTest::Unknown
        } else {
            return Err(self.unexpected(Some("NULL, MISSING or UNKNOWN")));
        };
        let span = lhs.span;
        Ok(Expr::new(
            ExprKind::Is {
                expr: Box::new(lhs),
                test,
                negated,
            },
            span,
        ))
    }

    fn parse_like(&mut self, lhs: Expr, case_insensitive: bool, negated: bool) -> Result<Expr> {
        let pattern = self.parse_expr_bp(BP_LIKE)?;
        let escape = if self.eat_kw("ESCAPE") {
            Some(self.parse_escape_char()?)
        } else {
            None
        };
        let span = lhs.span;
        Ok(Expr::new(
            ExprKind::Like {
                expr: Box::new(lhs),
                pattern: Box::new(pattern),
                case_insensitive,
                negated,
                escape,
            },
            span,
        ))
    }

    /// `ESCAPE 'c'`: a string literal of exactly one character.
    fn parse_escape_char(&mut self) -> Result<char> {
        let span = self.span();
        match self.peek().cloned() {
            Some(Token::SingleQuotedString(s) | Token::DoubleQuotedString(s)) => {
                let mut chars = s.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => {
                        self.advance();
                        Ok(c)
                    }
                    _ => Err(DqlError::invalid(
                        format!("DQL parser error: Expect a char, found \"{s}\""),
                        span,
                    )),
                }
            }
            _ => Err(self.unexpected(Some("literal string"))),
        }
    }

    fn parse_between(&mut self, lhs: Expr, negated: bool) -> Result<Expr> {
        let low = self.parse_expr_bp(BP_CMP)?;
        self.expect_kw("AND")?;
        let high = self.parse_expr_bp(BP_CMP)?;
        let span = lhs.span;
        Ok(Expr::new(
            ExprKind::Between {
                expr: Box::new(lhs),
                low: Box::new(low),
                high: Box::new(high),
                negated,
            },
            span,
        ))
    }

    fn parse_in(&mut self, lhs: Expr, negated: bool) -> Result<Expr> {
        let list = if self.eat_token(&Token::LParen) {
            let items = self.parse_comma_list(&Token::RParen)?;
            InList::List(items)
        } else {
            InList::Expr(Box::new(self.parse_expr_bp(BP_CONCAT)?))
        };
        let span = lhs.span;
        Ok(Expr::new(
            ExprKind::In {
                expr: Box::new(lhs),
                list,
                negated,
            },
            span,
        ))
    }

    /// `a, b, c)` after an opening bracket, consuming the closing token.
    fn parse_comma_list(&mut self, close: &Token) -> Result<Vec<Expr>> {
        let mut items = Vec::new();
        if self.eat_token(close) {
            return Ok(items);
        }
        loop {
            items.push(self.parse_expr()?);
            if self.eat_token(close) {
                return Ok(items);
            }
            self.expect_token(&Token::Comma)?;
        }
    }

    fn parse_prefix(&mut self) -> Result<Expr> {
        let span = self.span();
        let Some(tok) = self.peek().cloned() else {
            return Err(self.unexpected(Some("an expression")));
        };
        let expr = match tok {
            Token::Number(n, _) => {
                self.advance();
                Expr::new(ExprKind::Literal(parse_number(&n, span)?), span)
            }
            Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => {
                self.advance();
                Expr::new(ExprKind::Literal(Value::String(s)), span)
            }
            Token::Colon => {
                self.advance();
                let touching = self.next_start_offset() == Some(self.prev_end_offset());
                match self.peek() {
                    Some(Token::Word(w)) if touching && w.quote_style.is_none() => {
                        let name = w.value.clone();
                        self.advance();
                        Expr::new(ExprKind::Param(name), span)
                    }
                    _ => return Err(self.unexpected(Some("parameter name"))),
                }
            }
            Token::LParen => {
                self.advance();
                let inner = self.parse_expr()?;
                self.expect_token(&Token::RParen)?;
                inner
            }
            Token::LBracket => {
                self.advance();
                let items = self.parse_comma_list(&Token::RBracket)?;
                Expr::new(ExprKind::Array(items), span)
            }
            Token::LBrace => {
                self.advance();
                self.parse_object(span)?
            }
            Token::Minus | Token::Plus => {
                self.advance();
                let operand = self.parse_expr_bp(BP_UNARY)?;
                let op = if tok == Token::Minus {
                    UnaryOp::Neg
                } else {
                    UnaryOp::Plus
                };
                // Fold `-<number>` so that i64::MIN and negative literals print back as written.
                match (&op, &operand.kind) {
                    (UnaryOp::Neg, ExprKind::Literal(Value::Int(i)))
                        if operand.span == self.span_after(span) =>
                    {
                        Expr::new(ExprKind::Literal(Value::Int(-i)), span)
                    }
                    _ => Expr::new(ExprKind::Unary(op, Box::new(operand)), span),
                }
            }
            Token::Word(w) if w.quote_style.is_none() => {
                match w.value.to_ascii_uppercase().as_str() {
                    "NOT" => {
                        self.advance();
                        let operand = self.parse_expr_bp(BP_NOT)?;
                        Expr::new(ExprKind::Unary(UnaryOp::Not, Box::new(operand)), span)
                    }
                    "NULL" => {
                        self.advance();
                        Expr::new(ExprKind::Literal(Value::Null), span)
                    }
                    "TRUE" => {
                        self.advance();
                        Expr::new(ExprKind::Literal(Value::Bool(true)), span)
                    }
                    "FALSE" => {
                        self.advance();
                        Expr::new(ExprKind::Literal(Value::Bool(false)), span)
                    }
                    "MISSING" => {
                        self.advance();
                        Expr::new(ExprKind::Missing, span)
                    }
                    _ if self.peek_nth(1) == Some(&Token::LParen) => self.parse_call(span)?,
                    _ => {
                        let (name, span) = self
                            .expect_identifier()
                            .map_err(|_| self.unexpected(Some("an expression")))?;
                        Expr::new(ExprKind::Ident(name), span)
                    }
                }
            }
            Token::Word(_) => {
                let (name, span) = self.expect_identifier()?;
                Expr::new(ExprKind::Ident(name), span)
            }
            _ => return Err(self.unexpected(Some("an expression"))),
        };
        self.parse_postfix(expr)
    }

    /// The span right after a one-character token at `span` (to tell `-1` from `- 1`).
    fn span_after(&self, span: Span) -> Span {
        Span::new(span.line, span.column.saturating_add(1))
    }

    fn parse_postfix(&mut self, mut expr: Expr) -> Result<Expr> {
        loop {
            if self.is_token(&Token::Period) && self.peek_nth(1) != Some(&Token::Mul) {
                self.advance();
                let name = self.expect_any_word()?;
                let span = expr.span;
                expr = Expr::new(ExprKind::Member(Box::new(expr), name), span);
            } else if self.is_token(&Token::LBracket) {
                self.advance();
                let index = self.parse_expr()?;
                self.expect_token(&Token::RBracket)?;
                let span = expr.span;
                expr = Expr::new(ExprKind::Index(Box::new(expr), Box::new(index)), span);
            } else {
                return Ok(expr);
            }
        }
    }

    fn parse_call(&mut self, span: Span) -> Result<Expr> {
        let name = match self.advance().map(|t| t.token) {
            Some(Token::Word(w)) => w.value.to_ascii_lowercase(),
            _ => return Err(self.unexpected(Some("function name"))),
        };
        self.expect_token(&Token::LParen)?;
        if self.is_token(&Token::Mul) && self.peek_nth(1) == Some(&Token::RParen) {
            self.advance();
            self.advance();
            return Ok(Expr::new(
                ExprKind::Call {
                    name,
                    args: Vec::new(),
                    distinct: false,
                    star: true,
                },
                span,
            ));
        }
        let distinct = self.eat_kw("DISTINCT");
        let args = self.parse_comma_list(&Token::RParen)?;
        Ok(Expr::new(
            ExprKind::Call {
                name,
                args,
                distinct,
                star: false,
            },
            span,
        ))
    }

    fn parse_object(&mut self, span: Span) -> Result<Expr> {
        let mut fields = Vec::new();
        if !self.eat_token(&Token::RBrace) {
            loop {
                let key = match self.peek().cloned() {
                    Some(Token::SingleQuotedString(s) | Token::DoubleQuotedString(s)) => {
                        self.advance();
                        s
                    }
                    Some(Token::Word(_)) => self.expect_any_word()?,
                    _ => return Err(self.unexpected(Some("an object key"))),
                };
                self.expect_token(&Token::Colon)?;
                let value = self.parse_expr()?;
                fields.push((key, value));
                if self.eat_token(&Token::RBrace) {
                    break;
                }
                self.expect_token(&Token::Comma)?;
            }
        }
        Ok(Expr::new(ExprKind::Object(fields), span))
    }
}

/// The nesting depth of an expression, counting a chain `a AND b AND c` (or OR) as one level;
/// computed without recursion.
pub fn expr_depth<'a>(root: &'a Expr) -> usize {
    let mut max = 0;
    let mut stack: Vec<(&'a Expr, usize)> = vec![(root, 1usize)];
    while let Some((e, d)) = stack.pop() {
        max = max.max(d);
        let push = |child: &'a Expr| step(e, child, d);
        let mut children: Vec<(&Expr, usize)> = Vec::new();
        match &e.kind {
            ExprKind::Literal(_) | ExprKind::Missing | ExprKind::Param(_) | ExprKind::Ident(_) => {}
            ExprKind::Member(b, _) | ExprKind::Unary(_, b) | ExprKind::Is { expr: b, .. } => {
                children.push(push(b))
            }
            ExprKind::Index(a, b)
            | ExprKind::Binary(_, a, b)
            | ExprKind::Like {
                expr: a,
                pattern: b,
                ..
            } => {
                children.push(push(a));
                children.push(push(b));
            }
            ExprKind::Between {
                expr, low, high, ..
            } => {
                children.extend([push(expr), push(low), push(high)]);
            }
            ExprKind::In { expr, list, .. } => {
                children.push(push(expr));
                match list {
                    InList::List(items) => children.extend(items.iter().map(push)),
                    InList::Expr(x) => children.push(push(x)),
                }
            }
            ExprKind::Array(items) | ExprKind::Call { args: items, .. } => {
                children.extend(items.iter().map(push))
            }
            ExprKind::Object(fields) => children.extend(fields.iter().map(|(_, v)| push(v))),
        }
        stack.extend(children);
    }
    max
}

fn step<'e>(parent: &Expr, child: &'e Expr, d: usize) -> (&'e Expr, usize) {
    let same_chain = matches!(
        (&parent.kind, &child.kind),
        (ExprKind::Binary(a, ..), ExprKind::Binary(b, ..))
            if a == b && matches!(a, BinaryOp::And | BinaryOp::Or)
    );
    (child, if same_chain { d } else { d + 1 })
}

/// Integers stay integers (`u64` above `i64::MAX`); anything with `.` or an exponent is a float.
pub fn parse_number(text: &str, span: Span) -> Result<Value> {
    let bad = || DqlError::invalid(format!("DQL parser error: invalid number {text}"), span);
    if text.contains(['.', 'e', 'E']) {
        let f: f64 = text.parse().map_err(|_| bad())?;
        Value::float(f).map_err(|_| bad())
    } else if let Ok(i) = text.parse::<i64>() {
        Ok(Value::Int(i))
    } else if let Ok(u) = text.parse::<u64>() {
        Ok(Value::UInt(u))
    } else {
        Err(bad())
    }
}
