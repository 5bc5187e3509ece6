//! Prints the syntax tree back as DQL text that parses to the same tree. Binary operators are
//! fully parenthesised so that the output does not depend on precedence.

use std::fmt::{self, Display, Formatter, Write};

use bigpeer_schema::Value;

use crate::ast::*;
use crate::parser::is_reserved;

/// Writes an identifier, quoting it with backticks when needed.
pub fn ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_alphanumeric() || c == '_')
        && !is_reserved(name);
    if plain {
        name.to_owned()
    } else {
        format!("`{}`", name.replace('`', "``"))
    }
}

/// Writes a string literal in single quotes, with the escapes the lexer reads back.
pub fn string_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Writes a value as a DQL literal.
pub fn literal(v: &Value) -> String {
    match v {
        Value::Null => "NULL".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(_) => v.to_json_string(),
        Value::String(s) => string_literal(s),
        Value::Binary(b) => format!(
            "[{}]",
            b.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Array(a) => format!("[{}]", a.iter().map(literal).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("{}: {}", string_literal(k), literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn list<T: Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Display for Expr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ExprKind::Literal(v) => f.write_str(&literal(v)),
            ExprKind::Missing => f.write_str("MISSING"),
            ExprKind::Param(p) => write!(f, ":{p}"),
            ExprKind::Ident(n) => f.write_str(&ident(n)),
            ExprKind::Member(base, name) => write!(f, "{base}.{}", ident_after_dot(name)),
            ExprKind::Index(base, index) => write!(f, "{base}[{index}]"),
            ExprKind::Array(items) => write!(f, "[{}]", list(items)),
            ExprKind::Object(fields) => {
                f.write_char('{')?;
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}: {v}", string_literal(k))?;
                }
                f.write_char('}')
            }
            ExprKind::Unary(UnaryOp::Not, e) => write!(f, "(NOT {e})"),
            ExprKind::Unary(UnaryOp::Neg, e) => write!(f, "(- {e})"),
            ExprKind::Unary(UnaryOp::Plus, e) => write!(f, "(+ {e})"),
            ExprKind::Binary(op, l, r) => {
                f.write_char('(')?;
                write_chain(f, *op, l)?;
                write!(f, " {} {r})", op.symbol())
            }
            ExprKind::Between {
                expr,
                low,
                high,
                negated,
            } => {
                write!(
                    f,
                    "({expr} {}BETWEEN {low} AND {high})",
                    if *negated { "NOT " } else { "" }
                )
            }
            ExprKind::In {
                expr,
                list: items,
                negated,
            } => {
                let not = if *negated { "NOT " } else { "" };
                match items {
                    InList::List(items) => write!(f, "({expr} {not}IN ({}))", list(items)),
                    InList::Expr(e) => write!(f, "({expr} {not}IN {e})"),
                }
            }
            ExprKind::Like {
                expr,
                pattern,
                case_insensitive,
                negated,
                escape,
            } => write!(
                f,
                "({expr} {}{} {pattern}{})",
                if *negated { "NOT " } else { "" },
                if *case_insensitive { "ILIKE" } else { "LIKE" },
                escape
                    .map(|e| format!(" ESCAPE {}", string_literal(&e.to_string())))
                    .unwrap_or_default()
            ),
            ExprKind::Is {
                expr,
                test,
                negated,
            } => {
                let t = match test {
                    IsTest::Null => "NULL",
                    IsTest::Missing => "MISSING",
                    IsTest::Unknown => "UNKNOWN",
                };
                write!(f, "({expr} IS {}{t})", if *negated { "NOT " } else { "" })
            }
            ExprKind::Call {
                name,
                args,
                distinct,
                star,
            } => {
                if *star {
                    write!(f, "{name}(*)")
                } else {
                    write!(
                        f,
                        "{name}({}{})",
                        if *distinct { "DISTINCT " } else { "" },
                        list(args)
                    )
                }
            }
        }
    }
}

/// Writes the left operand of a binary operator; a left operand with the same operator is
/// written without its parentheses (`(a OR b OR c)`), which parses back to the same tree and
/// keeps long chains from nesting.
fn write_chain(f: &mut Formatter<'_>, op: BinaryOp, e: &Expr) -> fmt::Result {
    // Walk down the left spine without recursion, then write left to right.
    let mut rights = Vec::new();
    let mut cur = e;
    while let ExprKind::Binary(inner, l, r) = &cur.kind {
        if *inner != op {
            break;
        }
        rights.push(r);
        cur = l;
    }
    write!(f, "{cur}")?;
    for r in rights.iter().rev() {
        write!(f, " {} {r}", op.symbol())?;
    }
    Ok(())
}

/// After a dot any word is a field name, but it still needs quoting when it is not a plain word.
fn ident_after_dot(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_alphanumeric() || c == '_');
    if plain {
        name.to_owned()
    } else {
        format!("`{}`", name.replace('`', "``"))
    }
}

impl Display for TypeDef {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", ident_after_dot(&self.field))?;
        match &self.ty {
            CrdtType::Register => f.write_str("REGISTER"),
            CrdtType::Counter => f.write_str("COUNTER"),
            CrdtType::PnCounter => f.write_str("PN_COUNTER"),
            CrdtType::Attachment => f.write_str("ATTACHMENT"),
            CrdtType::Map(inner) if inner.is_empty() => f.write_str("MAP"),
            CrdtType::Map(inner) => write!(f, "MAP({})", list(inner)),
        }
    }
}

impl Display for CollectionRef {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if self.keyword {
            f.write_str("COLLECTION ")?;
        }
        if self.system {
            write!(f, "system:{}", ident_after_dot(&self.name))?;
        } else {
            f.write_str(&ident(&self.name))?;
        }
        if !self.types.is_empty() {
            write!(f, " ({})", list(&self.types))?;
        }
        if let Some(a) = &self.alias {
            write!(f, " AS {}", ident(a))?;
        }
        Ok(())
    }
}

impl Display for FieldPath {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for (i, k) in self.keys.iter().enumerate() {
            if i == 0 {
                f.write_str(&ident(k))?;
            } else {
                write!(f, ".{}", ident_after_dot(k))?;
            }
        }
        Ok(())
    }
}

impl Display for OrderItem {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.expr, if self.desc { " DESC" } else { "" })
    }
}

fn tail(
    f: &mut Formatter<'_>,
    filter: &Option<Expr>,
    order_by: &[OrderItem],
    limit: &Option<Expr>,
    offset: &Option<Expr>,
) -> fmt::Result {
    if let Some(w) = filter {
        write!(f, " WHERE {w}")?;
    }
    if !order_by.is_empty() {
        write!(f, " ORDER BY {}", list(order_by))?;
    }
    if let Some(l) = limit {
        write!(f, " LIMIT {l}")?;
    }
    if let Some(o) = offset {
        write!(f, " OFFSET {o}")?;
    }
    Ok(())
}

impl Display for Projection {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Projection::Star(_) => f.write_char('*'),
            Projection::QualifiedStar(n, _) => write!(f, "{}.*", ident(n)),
            Projection::Expr {
                expr,
                alias: Some(a),
            } => write!(f, "{expr} AS {}", ident(a)),
            Projection::Expr { expr, alias: None } => write!(f, "{expr}"),
        }
    }
}

impl Display for Statement {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Statement::Select(s) => {
                write!(
                    f,
                    "SELECT {}{} FROM {}",
                    if s.distinct { "DISTINCT " } else { "" },
                    list(&s.projections),
                    s.from
                )?;
                if let Some(d) = &s.directives {
                    write!(f, " USE DIRECTIVES {}", string_literal(d))?;
                }
                if let Some(w) = &s.filter {
                    write!(f, " WHERE {w}")?;
                }
                if !s.group_by.is_empty() {
                    write!(f, " GROUP BY {}", list(&s.group_by))?;
                }
                if let Some(h) = &s.having {
                    write!(f, " HAVING {h}")?;
                }
                tail(f, &None, &s.order_by, &s.limit, &s.offset)
            }
            Statement::Insert(i) => {
                write!(f, "INSERT INTO {}", i.collection)?;
                if i.initial {
                    f.write_str(" INITIAL")?;
                }
                f.write_str(if i.values_keyword {
                    " VALUES "
                } else {
                    " DOCUMENTS "
                })?;
                let docs: Vec<String> = i.documents.iter().map(|d| format!("({d})")).collect();
                f.write_str(&docs.join(", "))?;
                match i.on_conflict {
                    None => Ok(()),
                    Some(ConflictPolicy::Fail) => f.write_str(" ON ID CONFLICT FAIL"),
                    Some(ConflictPolicy::DoNothing) => f.write_str(" ON ID CONFLICT DO NOTHING"),
                    Some(ConflictPolicy::DoUpdate) => f.write_str(" ON ID CONFLICT DO UPDATE"),
                    Some(ConflictPolicy::DoUpdateLocalDiff) => {
                        f.write_str(" ON ID CONFLICT DO UPDATE_LOCAL_DIFF")
                    }
                }
            }
            Statement::Update(u) => {
                write!(f, "UPDATE {}", u.collection)?;
                if !u.apply.is_empty() {
                    let items: Vec<String> = u
                        .apply
                        .iter()
                        .map(|a| match &a.op {
                            ApplyOp::PnIncrement(e) => format!("{} PN_INCREMENT BY {e}", a.path),
                            ApplyOp::Increment(e) => format!("{} INCREMENT BY {e}", a.path),
                            ApplyOp::Restart(Some(e)) => format!("{} RESTART WITH {e}", a.path),
                            ApplyOp::Restart(None) => format!("{} RESTART", a.path),
                        })
                        .collect();
                    write!(f, " APPLY {}", items.join(", "))?;
                }
                if !u.set.is_empty() {
                    let items: Vec<String> = u
                        .set
                        .iter()
                        .map(|a| format!("{} = {}", a.path, a.value))
                        .collect();
                    write!(f, " SET {}", items.join(", "))?;
                }
                if !u.unset.is_empty() {
                    write!(f, " UNSET {}", list(&u.unset))?;
                }
                tail(f, &u.filter, &u.order_by, &u.limit, &u.offset)
            }
            Statement::Delete(d) => {
                let kw = match d.kind {
                    DeleteKind::Delete => "DELETE",
                    DeleteKind::Tombstone => "TOMBSTONE",
                    DeleteKind::Evict => "EVICT",
                };
                write!(f, "{kw} FROM {}", d.collection)?;
                tail(f, &d.filter, &d.order_by, &d.limit, &d.offset)
            }
            Statement::AlterSystem(AlterSystem::Set { name, value }) => {
                write!(f, "ALTER SYSTEM SET {} = {value}", ident(name))
            }
            Statement::AlterSystem(AlterSystem::Reset { name }) => {
                write!(f, "ALTER SYSTEM RESET {}", ident(name))
            }
            Statement::AlterSystem(AlterSystem::ResetAll) => f.write_str("ALTER SYSTEM RESET ALL"),
            Statement::Show(Show { name: Some(n) }) => write!(f, "SHOW {}", ident(n)),
            Statement::Show(Show { name: None }) => f.write_str("SHOW ALL"),
            Statement::Explain(inner) => write!(f, "EXPLAIN {inner}"),
        }
    }
}
