//! DQL statements: a recursive descent over sqlparser's tokenizer (see [`crate::lexer`]), with
//! our own Pratt parser for expressions ([`expr`]).

mod cursor;
mod expr;

pub use cursor::{is_reserved, RESERVED};
pub use expr::parse_number;

use sqlparser::tokenizer::Token;

use crate::ast::*;
use crate::error::Result;
use crate::lexer::tokenize;
use cursor::Cursor;

/// Parses one DQL statement (an optional trailing `;` is accepted).
pub fn parse(text: &str) -> Result<Statement> {
    let toks = tokenize(text)?;
    let mut c = Cursor::new(text, toks);
    let stmt = c.parse_statement()?;
    if c.is_token(&Token::SemiColon) && c.peek_nth(1).is_none() {
        c.advance();
    }
    if !c.at_end() {
        return Err(c.unexpected(None));
    }
    Ok(stmt)
}

/// Parses a standalone expression (a permission predicate, tests and tools).
pub fn parse_expression(text: &str) -> Result<Expr> {
    parse_expression_tokens(text, tokenize(text)?)
}

/// Parses an expression from tokens made elsewhere (the legacy query language's translation);
/// `text` is what their positions point into, for error messages.
pub(crate) fn parse_expression_tokens(text: &str, toks: Vec<crate::lexer::Tok>) -> Result<Expr> {
    let mut c = Cursor::new(text, toks);
    let e = c.parse_expr()?;
    if !c.at_end() {
        return Err(c.unexpected(None));
    }
    Ok(e)
}

impl Cursor<'_> {
    fn parse_statement(&mut self) -> Result<Statement> {
        if self.eat_kw("SELECT") {
            return self.parse_select().map(Statement::Select);
        }
        if self.eat_kw("INSERT") {
            return self.parse_insert().map(Statement::Insert);
        }
        if self.eat_kw("UPDATE") {
            return self.parse_update().map(Statement::Update);
        }
        for (kw, kind) in [
            ("DELETE", DeleteKind::Delete),
            ("TOMBSTONE", DeleteKind::Tombstone),
            ("EVICT", DeleteKind::Evict),
        ] {
            if self.eat_kw(kw) {
                return self.parse_delete(kind).map(Statement::Delete);
            }
        }
        if self.eat_kw("ALTER") {
            return self.parse_alter().map(Statement::AlterSystem);
        }
        if self.eat_kw("SHOW") {
            if self.eat_kw("ALL") {
                return Ok(Statement::Show(Show { name: None }));
            }
            let (name, _) = self.expect_identifier()?;
            return Ok(Statement::Show(Show { name: Some(name) }));
        }
        if self.eat_kw("EXPLAIN") {
            let inner = self.parse_statement()?;
            return Ok(Statement::Explain(Box::new(inner)));
        }
        Err(self.unexpected(Some("a DQL statement")))
    }

    fn parse_select(&mut self) -> Result<Select> {
        let distinct = self.eat_kw("DISTINCT");
        let mut projections = Vec::new();
        loop {
            projections.push(self.parse_projection()?);
            if !self.eat_token(&Token::Comma) {
                break;
            }
        }
        self.expect_kw("FROM")?;
        let from = self.parse_collection(true)?;
        let directives = if self.eat_kw("USE") {
            self.parse_use()?
        } else {
            None
        };
        let filter = self.parse_where()?;
        let mut group_by = Vec::new();
        if self.eat_kw("GROUP") {
            self.expect_kw("BY")?;
            loop {
                group_by.push(self.parse_expr()?);
                if !self.eat_token(&Token::Comma) {
                    break;
                }
            }
        }
        let having = if self.eat_kw("HAVING") {
            Some(self.parse_expr()?)
        } else {
            None
        };
        let order_by = self.parse_order_by()?;
        let (limit, offset) = self.parse_limit_offset()?;
        Ok(Select {
            distinct,
            projections,
            from,
            directives,
            filter,
            group_by,
            having,
            order_by,
            limit,
            offset,
        })
    }

    fn parse_projection(&mut self) -> Result<Projection> {
        let span = self.span();
        if self.eat_token(&Token::Mul) {
            return Ok(Projection::Star(span));
        }
        if self.is_identifier()
            && self.peek_nth(1) == Some(&Token::Period)
            && self.peek_nth(2) == Some(&Token::Mul)
        {
            let (name, span) = self.expect_identifier()?;
            self.advance();
            self.advance();
            return Ok(Projection::QualifiedStar(name, span));
        }
        let expr = self.parse_expr()?;
        let alias = if self.eat_kw("AS") {
            Some(self.expect_identifier()?.0)
        } else {
            None
        };
        Ok(Projection::Expr { expr, alias })
    }

    /// `[COLLECTION] name [(type defs)] [AS alias]`, or `system:name`.
    fn parse_collection(&mut self, allow_alias: bool) -> Result<CollectionRef> {
        let mut keyword = false;
        if self.is_kw("COLLECTION")
            && matches!(self.peek_nth(1), Some(Token::Word(_)))
            && self.peek_nth(2) != Some(&Token::Colon)
        {
            self.advance();
            keyword = true;
        }
        let span = self.span();
        let (mut name, _) = self.expect_identifier()?;
        let mut system = false;
        if self.is_token(&Token::Colon) && name.eq_ignore_ascii_case("system") {
            self.advance();
            name = self.expect_any_word()?;
            system = true;
        }
        let mut types = Vec::new();
        if self.is_token(&Token::LParen) {
            self.advance();
            types = self.parse_type_defs()?;
        }
        let alias = if allow_alias && self.eat_kw("AS") {
            Some(self.expect_identifier()?.0)
        } else {
            None
        };
        Ok(CollectionRef {
            name,
            system,
            keyword,
            types,
            alias,
            span,
        })
    }

    /// `field TYPE, ...)` after the opening parenthesis.
    fn parse_type_defs(&mut self) -> Result<Vec<TypeDef>> {
        self.depth += 1;
        if self.depth > cursor::MAX_DEPTH {
            return Err(self.error("type definitions nested too deeply"));
        }
        let mut defs = Vec::new();
        loop {
            let span = self.span();
            let field = self.expect_any_word()?;
            let ty = if self.eat_kw("MAP") {
                if self.eat_token(&Token::LParen) {
                    CrdtType::Map(self.parse_type_defs()?)
                } else {
                    CrdtType::Map(Vec::new())
                }
            } else if self.eat_kw("REGISTER") {
                CrdtType::Register
            } else if self.eat_kw("COUNTER") {
                CrdtType::Counter
            } else if self.eat_kw("PN_COUNTER") || self.eat_kw("PNCOUNTER") {
                CrdtType::PnCounter
            } else if self.eat_kw("ATTACHMENT") {
                CrdtType::Attachment
            } else {
                return Err(
                    self.unexpected(Some("MAP, REGISTER, COUNTER, PN_COUNTER or ATTACHMENT"))
                );
            };
            defs.push(TypeDef { field, ty, span });
            if self.eat_token(&Token::RParen) {
                break;
            }
            self.expect_token(&Token::Comma)?;
        }
        self.depth -= 1;
        Ok(defs)
    }

    /// After `USE`: `DIRECTIVES '<json>'` or `INDEX (...)`; both are hints and change nothing.
    fn parse_use(&mut self) -> Result<Option<String>> {
        if self.eat_kw("DIRECTIVES") {
            return match self.advance().map(|t| t.token) {
                Some(Token::SingleQuotedString(s) | Token::DoubleQuotedString(s)) => Ok(Some(s)),
                _ => Err(self.unexpected(Some("a string"))),
            };
        }
        self.expect_kw("INDEX")?;
        self.expect_token(&Token::LParen)?;
        let mut names = Vec::new();
        loop {
            match self.advance().map(|t| t.token) {
                Some(Token::SingleQuotedString(s) | Token::DoubleQuotedString(s)) => names.push(s),
                Some(Token::Word(w)) => names.push(w.value),
                _ => return Err(self.unexpected(Some("an index name"))),
            }
            if self.eat_token(&Token::RParen) {
                break;
            }
            self.expect_token(&Token::Comma)?;
        }
        let json = serde_json::json!({ "#index": names });
        Ok(Some(json.to_string()))
    }

    fn parse_where(&mut self) -> Result<Option<Expr>> {
        if self.eat_kw("WHERE") {
            Ok(Some(self.parse_expr()?))
        } else {
            Ok(None)
        }
    }

    fn parse_order_by(&mut self) -> Result<Vec<OrderItem>> {
        let mut items = Vec::new();
        if self.eat_kw("ORDER") {
            self.expect_kw("BY")?;
            loop {
                let expr = self.parse_expr()?;
                let desc = if self.eat_kw("DESC") {
                    true
                } else {
                    self.eat_kw("ASC");
                    false
                };
                items.push(OrderItem { expr, desc });
                if !self.eat_token(&Token::Comma) {
                    break;
                }
            }
        }
        Ok(items)
    }

    fn parse_limit_offset(&mut self) -> Result<(Option<Expr>, Option<Expr>)> {
        let limit = if self.eat_kw("LIMIT") {
            Some(self.parse_count()?)
        } else {
            None
        };
        let offset = if self.eat_kw("OFFSET") {
            Some(self.parse_count()?)
        } else {
            None
        };
        Ok((limit, offset))
    }

    /// A LIMIT/OFFSET value: a number literal or a parameter.
    fn parse_count(&mut self) -> Result<Expr> {
        match self.peek() {
            Some(Token::Number(..)) | Some(Token::Colon) => self.parse_expr(),
            Some(Token::SingleQuotedString(_) | Token::DoubleQuotedString(_)) => {
                Err(self.unexpected(Some("literal number")))
            }
            _ => Err(self.unexpected(Some("a value"))),
        }
    }

    fn parse_insert(&mut self) -> Result<Insert> {
        self.expect_kw("INTO")?;
        let collection = self.parse_collection(false)?;
        let initial = self.eat_kw("INITIAL");
        let values_keyword = if self.eat_kw("VALUES") {
            true
        } else {
            self.expect_kw("DOCUMENTS")?;
            false
        };
        let mut documents = Vec::new();
        loop {
            self.expect_token(&Token::LParen)?;
            documents.push(self.parse_expr()?);
            self.expect_token(&Token::RParen)?;
            if !self.eat_token(&Token::Comma) {
                break;
            }
        }
        let on_conflict = if self.eat_kw("ON") {
            self.expect_kw("ID")?;
            self.expect_kw("CONFLICT")?;
            Some(if self.eat_kw("FAIL") {
                ConflictPolicy::Fail
            } else {
                self.expect_kw("DO")?;
                if self.eat_kw("FAIL") {
                    ConflictPolicy::Fail
                } else if self.eat_kw("NOTHING") {
                    ConflictPolicy::DoNothing
                } else if self.eat_kw("UPDATE") {
                    ConflictPolicy::DoUpdate
                } else if self.eat_kw("UPDATE_LOCAL_DIFF") {
                    ConflictPolicy::DoUpdateLocalDiff
                } else {
                    return Err(self.unexpected(Some("FAIL, NOTHING, UPDATE or UPDATE_LOCAL_DIFF")));
                }
            })
        } else {
            None
        };
        Ok(Insert {
            collection,
            initial,
            values_keyword,
            documents,
            on_conflict,
        })
    }

    fn parse_field_path(&mut self) -> Result<FieldPath> {
        let (first, span) = self.expect_identifier()?;
        let mut keys = vec![first];
        while self.eat_token(&Token::Period) {
            keys.push(self.expect_any_word()?);
        }
        Ok(FieldPath { keys, span })
    }

    fn parse_update(&mut self) -> Result<Update> {
        let collection = self.parse_collection(false)?;
        let mut apply = Vec::new();
        if self.eat_kw("APPLY") {
            loop {
                let path = self.parse_field_path()?;
                let op = if self.eat_kw("PN_INCREMENT") {
                    self.expect_kw("BY")?;
                    ApplyOp::PnIncrement(self.parse_expr()?)
                } else if self.eat_kw("INCREMENT") {
                    self.expect_kw("BY")?;
                    ApplyOp::Increment(self.parse_expr()?)
                } else if self.eat_kw("RESTART") {
                    if self.eat_kw("WITH") {
                        ApplyOp::Restart(Some(self.parse_expr()?))
                    } else {
                        ApplyOp::Restart(None)
                    }
                } else {
                    return Err(self.unexpected(Some("PN_INCREMENT, INCREMENT or RESTART")));
                };
                apply.push(Apply { path, op });
                if !self.eat_token(&Token::Comma) {
                    break;
                }
            }
        }
        let mut set = Vec::new();
        if self.eat_kw("SET") {
            loop {
                let path = self.parse_field_path()?;
                self.expect_token(&Token::Eq)?;
                let value = self.parse_expr()?;
                set.push(Assignment { path, value });
                if !self.eat_token(&Token::Comma) {
                    break;
                }
            }
        }
        let mut unset = Vec::new();
        if self.eat_kw("UNSET") {
            loop {
                unset.push(self.parse_field_path()?);
                if !self.eat_token(&Token::Comma) {
                    break;
                }
            }
        }
        if apply.is_empty() && set.is_empty() && unset.is_empty() {
            return Err(self.error("Missing SET and/or UNSET clause"));
        }
        let filter = self.parse_where()?;
        let order_by = self.parse_order_by()?;
        let (limit, offset) = self.parse_limit_offset()?;
        Ok(Update {
            collection,
            apply,
            set,
            unset,
            filter,
            order_by,
            limit,
            offset,
        })
    }

    fn parse_delete(&mut self, kind: DeleteKind) -> Result<Delete> {
        self.expect_kw("FROM")?;
        let collection = self.parse_collection(false)?;
        let filter = self.parse_where()?;
        let order_by = self.parse_order_by()?;
        let (limit, offset) = self.parse_limit_offset()?;
        Ok(Delete {
            kind,
            collection,
            filter,
            order_by,
            limit,
            offset,
        })
    }

    fn parse_alter(&mut self) -> Result<AlterSystem> {
        self.expect_kw("SYSTEM")?;
        if self.eat_kw("RESET") {
            if self.eat_kw("ALL") {
                return Ok(AlterSystem::ResetAll);
            }
            let (name, _) = self.expect_identifier()?;
            return Ok(AlterSystem::Reset { name });
        }
        self.expect_kw("SET")?;
        let (name, _) = self.expect_identifier()?;
        if !self.eat_token(&Token::Eq) {
            self.expect_kw("TO")?;
        }
        if self.eat_kw("DEFAULT") {
            return Ok(AlterSystem::Reset { name });
        }
        let value = self.parse_expr()?;
        Ok(AlterSystem::Set { name, value })
    }
}
