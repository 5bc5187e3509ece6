//! The legacy (pre-DQL) query language, translated to a DQL expression.
//!
//! Permission queries with `qlVersion` 0, the legacy HTTP endpoints (`/store/find`, `/count`,
//! `/write`) and CDC filters use it: `==`, `!=`, `<`, `<=`, `>`, `>=`, `&&`, `||`, `!`,
//! `contains(array, value)`, `starts_with(s, p)`, `ends_with(s, p)`, `field == null`,
//! `$args.name` parameters, bracket paths `work['street-line']`, and the query `true`.
//!
//! The translation works on tokens, so strings and names can hold anything: every field name is
//! a quoted DQL name (a legacy field may be called `select` or `from`), strings stay strings,
//! `$args.x` becomes `:x`. [`to_expr`] gives the DQL tokens straight to the DQL expression
//! parser (the same precedence and limits as DQL, positions in the legacy text); no DQL text is
//! written and read again. [`to_dql`] writes the same translation as text, for people and tests.
//!
//! The legacy routes' statements are built here as trees: [`find_statement`],
//! [`count_statement`], [`find_by_id_statement`].

use sqlparser::tokenizer::Token;

use bigpeer_schema::Value;

use crate::ast::{
    BinaryOp, CollectionRef, Expr, ExprKind, OrderItem, Projection, Select, Span, Statement,
};
use crate::error::{DqlError, Result};
use crate::lexer::{line_starts, span_at, Tok as LexTok};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    Arg(String),
    Op(&'static str),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
}

fn unsupported(what: &str) -> DqlError {
    DqlError::new(
        crate::error::ErrorCode::Unsupported,
        format!("{what} is not supported in legacy queries"),
        Span::NONE,
    )
}

fn invalid(what: String) -> DqlError {
    DqlError::invalid(format!("invalid legacy query: {what}"), Span::NONE)
}

/// The tokens of a legacy query, each with the character offsets where it starts and ends.
fn tokenize(text: &str) -> Result<Vec<(Tok, usize, usize)>> {
    let chars: Vec<char> = text.chars().collect();
    let mut out: Vec<Tok> = Vec::new();
    let mut at: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let start = i;
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            '[' => {
                out.push(Tok::LBracket);
                i += 1;
            }
            ']' => {
                out.push(Tok::RBracket);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            '.' if !next.is_some_and(|n| n.is_ascii_digit()) => {
                out.push(Tok::Dot);
                i += 1;
            }
            '\'' | '"' => {
                let quote = c;
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(invalid("unterminated string".into())),
                        Some('\\') => {
                            match chars.get(i + 1) {
                                Some('n') => s.push('\n'),
                                Some('t') => s.push('\t'),
                                Some(other) => s.push(*other),
                                None => return Err(invalid("unterminated string".into())),
                            }
                            i += 2;
                        }
                        Some(ch) if *ch == quote => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            s.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Str(s));
            }
            '$' => {
                let start = i + 1;
                let mut j = start;
                while j < chars.len()
                    && (chars[j].is_alphanumeric() || chars[j] == '_' || chars[j] == '.')
                {
                    j += 1;
                }
                let name: String = chars[start..j].iter().collect();
                let Some(arg) = name.strip_prefix("args.") else {
                    return Err(invalid(format!(
                        "unknown variable ${name}; parameters are written $args.name"
                    )));
                };
                if arg.is_empty() || arg.contains('.') {
                    return Err(invalid(format!("invalid parameter ${name}")));
                }
                out.push(Tok::Arg(arg.to_owned()));
                i = j;
            }
            c if c.is_ascii_digit() || (c == '.' && next.is_some_and(|n| n.is_ascii_digit())) => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric()
                        || chars[i] == '.'
                        || ((chars[i] == '-' || chars[i] == '+')
                            && matches!(chars[i - 1], 'e' | 'E')))
                {
                    i += 1;
                }
                let n: String = chars[start..i].iter().collect();
                if n.parse::<f64>().is_err() {
                    return Err(invalid(format!("invalid number {n}")));
                }
                out.push(Tok::Num(n));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            _ => {
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                let op = match two.as_str() {
                    "==" => Some("=="),
                    "!=" => Some("!="),
                    "<=" => Some("<="),
                    ">=" => Some(">="),
                    "&&" => Some("&&"),
                    "||" => Some("||"),
                    _ => None,
                };
                if let Some(op) = op {
                    out.push(Tok::Op(op));
                    i += 2;
                } else {
                    let one = match c {
                        '<' => "<",
                        '>' => ">",
                        '!' => "!",
                        '+' => "+",
                        '-' => "-",
                        '*' => "*",
                        '/' => "/",
                        '%' => "%",
                        '=' => "==",
                        other => return Err(invalid(format!("unexpected character '{other}'"))),
                    };
                    out.push(Tok::Op(one));
                    i += 1;
                }
            }
        }
        if out.len() > at.len() {
            at.push((start, i));
        }
    }
    Ok(out
        .into_iter()
        .zip(at)
        .map(|(t, (s, e))| (t, s, e))
        .collect())
}

fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn quote_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// One step of the translation: the DQL tokens the parser reads (with positions in the legacy
/// text) and how [`to_dql`] writes them.
struct Piece {
    text: String,
    toks: Vec<LexTok>,
}

/// Translates the legacy tokens to DQL tokens.
fn translate(query: &str) -> Result<Vec<Piece>> {
    let toks = tokenize(query)?;
    if toks.is_empty() {
        return Err(invalid("the query is empty".into()));
    }
    let starts = line_starts(query);
    let tok = |token: Token, start: usize, end: usize| LexTok {
        token,
        span: span_at(&starts, start),
        end_offset: end,
    };
    let word = |w: &str| Token::make_word(w, None);
    let quoted = |w: &str| Token::make_word(w, Some('`'));
    let mut out: Vec<Piece> = Vec::with_capacity(toks.len());
    let last_is = |out: &[Piece], text: &str| out.last().is_some_and(|p| p.text == text);
    let mut i = 0;
    while i < toks.len() {
        let (t, start, end) = (&toks[i].0, toks[i].1, toks[i].2);
        let next = toks.get(i + 1).map(|n| &n.0);
        let one = |token: Token, text: String| Piece {
            text,
            toks: vec![tok(token, start, end)],
        };
        match t {
            Tok::Ident(name) if next == Some(&Tok::LParen) => {
                let f = match name.as_str() {
                    "contains" => "array_contains",
                    "starts_with" | "ends_with" => name.as_str(),
                    "regex" => return Err(unsupported("regex()")),
                    other => return Err(unsupported(&format!("the function {other}()"))),
                };
                out.push(one(word(f), f.to_owned()));
            }
            Tok::Ident(name) => match name.as_str() {
                "true" | "false" | "null" if !last_is(&out, ".") => {
                    let kw = name.to_uppercase();
                    out.push(one(word(&kw), kw));
                }
                _ => out.push(one(quoted(name), quote_ident(name))),
            },
            Tok::Str(s) => {
                // `a['key']` is a path segment; anywhere else a string.
                if last_is(&out, "[") && next == Some(&Tok::RBracket) {
                    if let Some(open) = out.pop() {
                        let at = open
                            .toks
                            .first()
                            .map_or(start, |t| crate::lexer::span_offset(query, t.span));
                        out.push(Piece {
                            text: ".".to_owned(),
                            toks: vec![tok(Token::Period, at, at + 1)],
                        });
                    }
                    out.push(one(quoted(s), quote_ident(s)));
                    i += 2;
                    continue;
                }
                out.push(one(Token::SingleQuotedString(s.clone()), quote_str(s)));
            }
            Tok::Num(n) => {
                // Read as DQL reads a number; anything else (`1.e5`) is not one DQL number.
                match crate::lexer::tokenize(n)?.as_slice() {
                    [LexTok {
                        token: token @ Token::Number(..),
                        ..
                    }] => out.push(one(token.clone(), n.clone())),
                    _ => return Err(invalid(format!("invalid number {n}"))),
                }
            }
            Tok::Arg(a) => {
                // `:name`, the two tokens touching. A name DQL cannot read is not a word.
                let name = if a.starts_with(|c: char| c.is_alphabetic() || c == '_') {
                    word(a)
                } else {
                    Token::Number(a.clone(), false)
                };
                out.push(Piece {
                    text: format!(":{a}"),
                    toks: vec![
                        tok(Token::Colon, start, start + 1),
                        tok(name, start + 1, end),
                    ],
                });
            }
            Tok::Op(op) => {
                // `x == null` / `x != null` are null tests in the legacy language.
                let null = match toks.get(i + 1) {
                    Some((Tok::Ident(n), s, e)) if n == "null" => Some((*s, *e)),
                    _ => None,
                };
                match (*op, null) {
                    ("==", Some((s, e))) => {
                        out.push(Piece {
                            text: "IS NULL".to_owned(),
                            toks: vec![tok(word("IS"), start, end), tok(word("NULL"), s, e)],
                        });
                        i += 2;
                        continue;
                    }
                    ("!=", Some((s, e))) => {
                        out.push(Piece {
                            text: "IS NOT NULL".to_owned(),
                            toks: vec![
                                tok(word("IS"), start, end),
                                tok(word("NOT"), start, end),
                                tok(word("NULL"), s, e),
                            ],
                        });
                        i += 2;
                        continue;
                    }
                    _ => {}
                }
                let (token, text) = match *op {
                    "==" => (Token::Eq, "="),
                    "!=" => (Token::Neq, "!="),
                    "<" => (Token::Lt, "<"),
                    "<=" => (Token::LtEq, "<="),
                    ">" => (Token::Gt, ">"),
                    ">=" => (Token::GtEq, ">="),
                    "&&" => (word("AND"), "AND"),
                    "||" => (word("OR"), "OR"),
                    "!" => (word("NOT"), "NOT"),
                    "+" => (Token::Plus, "+"),
                    "-" => (Token::Minus, "-"),
                    "*" => (Token::Mul, "*"),
                    "/" => (Token::Div, "/"),
                    "%" => (Token::Mod, "%"),
                    other => return Err(invalid(format!("unexpected operator {other}"))),
                };
                out.push(one(token, text.to_owned()));
            }
            Tok::LParen => out.push(one(Token::LParen, "(".to_owned())),
            Tok::RParen => out.push(one(Token::RParen, ")".to_owned())),
            Tok::LBracket => out.push(one(Token::LBracket, "[".to_owned())),
            Tok::RBracket => out.push(one(Token::RBracket, "]".to_owned())),
            Tok::Comma => out.push(one(Token::Comma, ",".to_owned())),
            Tok::Dot => out.push(one(Token::Period, ".".to_owned())),
        }
        i += 1;
    }
    // `1 .a`, `1['a']`: a number then a path step, which the text translation wrote as `1.`
    // and a name, no expression.
    let number = |p: &Piece| {
        matches!(
            p.toks.as_slice(),
            [LexTok {
                token: Token::Number(..),
                ..
            }]
        )
    };
    if out.windows(2).any(|w| number(&w[0]) && w[1].text == ".") {
        return Err(invalid("a number followed by '.'".into()));
    }
    Ok(out)
}

/// Translates a legacy query to a DQL expression. The translated tokens go straight to the
/// DQL expression parser: no DQL text is written and read again, and error positions point
/// into the legacy query.
pub fn to_expr(query: &str) -> Result<Expr> {
    let toks = translate(query)?.into_iter().flat_map(|p| p.toks).collect();
    crate::parser::parse_expression_tokens(query, toks)
}

/// The same translation written as DQL text (for people: documentation, messages, tests).
/// Statements are built from [`to_expr`], never from this text.
pub fn to_dql(query: &str) -> Result<String> {
    let out: Vec<String> = translate(query)?.into_iter().map(|p| p.text).collect();
    // Join without spaces around path dots and brackets, with spaces elsewhere.
    let mut text = String::new();
    for (k, piece) in out.iter().enumerate() {
        // A number after a path dot keeps its space: `. 1` is not the number `.1`.
        let number_after_dot =
            out[k.saturating_sub(1)] == "." && piece.starts_with(|c: char| c.is_ascii_digit());
        let glue = k > 0
            && !matches!(piece.as_str(), "." | "(" | ")" | "," | "[" | "]")
            && (!matches!(out[k - 1].as_str(), "." | "(" | "[") || number_after_dot);
        if glue {
            text.push(' ');
        }
        text.push_str(piece);
    }
    Ok(text)
}

/// The collection of a statement built here, as `FROM \`name\`` reads it.
fn collection(name: &str) -> CollectionRef {
    CollectionRef {
        name: name.to_owned(),
        system: false,
        keyword: false,
        types: Vec::new(),
        alias: None,
        span: Span::NONE,
    }
}

fn expr(kind: ExprKind) -> Expr {
    Expr::new(kind, Span::NONE)
}

/// A dotted property (`a.b`, as `/store/find` sorts by) as a field path: every part is a name,
/// whatever it holds.
pub fn property(path: &str) -> Expr {
    let mut parts = path.split('.');
    let first = expr(ExprKind::Ident(parts.next().unwrap_or_default().to_owned()));
    parts.fold(first, |base, name| {
        expr(ExprKind::Member(Box::new(base), name.to_owned()))
    })
}

/// A LIMIT or OFFSET count as the parser reads one.
fn count_literal(n: u64) -> Expr {
    expr(ExprKind::Literal(match i64::try_from(n) {
        Ok(i) => Value::Int(i),
        Err(_) => Value::UInt(n),
    }))
}

fn select(collection_name: &str, projection: Projection, filter: Expr) -> Select {
    Select {
        distinct: false,
        projections: vec![projection],
        from: collection(collection_name),
        directives: None,
        filter: Some(filter),
        group_by: Vec::new(),
        having: None,
        order_by: Vec::new(),
        limit: None,
        offset: None,
    }
}

/// `/store/find`: `SELECT * FROM collection WHERE <query> [ORDER BY <sort>] LIMIT limit
/// [OFFSET offset]`, with `sort` as (property, descending) pairs.
pub fn find_statement(
    collection_name: &str,
    query: &str,
    sort: &[(&str, bool)],
    limit: u64,
    offset: Option<u64>,
) -> Result<Statement> {
    let mut s = select(
        collection_name,
        Projection::Star(Span::NONE),
        to_expr(query)?,
    );
    s.order_by = sort
        .iter()
        .map(|(p, desc)| OrderItem {
            expr: property(p),
            desc: *desc,
        })
        .collect();
    s.limit = Some(count_literal(limit));
    s.offset = offset.map(count_literal);
    Ok(Statement::Select(s))
}

/// `/store/count`: `SELECT COUNT(*) AS n FROM collection WHERE <query>`.
pub fn count_statement(collection_name: &str, query: &str) -> Result<Statement> {
    let count = Projection::Expr {
        expr: expr(ExprKind::Call {
            name: "count".to_owned(),
            args: Vec::new(),
            distinct: false,
            star: true,
        }),
        alias: Some("n".to_owned()),
    };
    Ok(Statement::Select(select(
        collection_name,
        count,
        to_expr(query)?,
    )))
}

/// `/store/findbyid`: `SELECT * FROM collection WHERE _id = :id` (the id is the argument `id`).
pub fn find_by_id_statement(collection_name: &str) -> Statement {
    let filter = expr(ExprKind::Binary(
        BinaryOp::Eq,
        Box::new(expr(ExprKind::Ident("_id".to_owned()))),
        Box::new(expr(ExprKind::Param("id".to_owned()))),
    ));
    Statement::Select(select(
        collection_name,
        Projection::Star(Span::NONE),
        filter,
    ))
}

#[cfg(test)]
mod tests {
    use super::to_dql;

    #[test]
    fn translations() {
        let cases = [
            ("true", "TRUE"),
            (
                "_id.locationId == 'abcedef123456'",
                "`_id`.`locationId` = 'abcedef123456'",
            ),
            (
                "name == \"John\" && age >= 18",
                "`name` = 'John' AND `age` >= 18",
            ),
            ("!(a == 1) || b != 2", "NOT(`a` = 1) OR `b` != 2"),
            (
                "createdAt <= $args.ttl && evictionFlag == false",
                "`createdAt` <= :ttl AND `evictionFlag` = FALSE",
            ),
            ("owner == null", "`owner` IS NULL"),
            ("owner != null", "`owner` IS NOT NULL"),
            ("contains(tags, 'red')", "array_contains(`tags`, 'red')"),
            ("starts_with(name, 'Jo')", "starts_with(`name`, 'Jo')"),
            ("work['street-line'] == 'x'", "`work`.`street-line` = 'x'"),
            ("select == 1", "`select` = 1"),
            ("price > 2.5e3", "`price` > 2.5e3"),
            ("s == 'it\\'s'", "`s` = 'it\\'s'"),
        ];
        for (legacy, dql) in cases {
            assert_eq!(to_dql(legacy).expect(legacy), dql, "{legacy}");
        }
    }

    #[test]
    fn translated_queries_parse_as_dql() {
        for legacy in [
            "true",
            "a.b == 1 && !(c < $args.x)",
            "contains(t, 'x') || t == null",
            "work['a b'] >= \"z\"",
        ] {
            let dql = to_dql(legacy).expect(legacy);
            let stmt = format!("SELECT * FROM c WHERE {dql}");
            crate::parse(&stmt).unwrap_or_else(|e| panic!("{legacy} -> {stmt}: {e}"));
        }
    }

    #[test]
    fn errors() {
        for bad in [
            "",
            "a == 'x",
            "regex(a, 'x')",
            "$foo == 1",
            "a # b",
            "frobnicate(a)",
        ] {
            let err = to_dql(bad).expect_err(bad);
            assert!(err.code.as_str().starts_with("query/"), "{bad}: {err:?}");
        }
        assert_eq!(
            to_dql("regex(a, 'x')").expect_err("regex").code.as_str(),
            "query/unsupported"
        );
    }

    /// What the text translation gives once DQL reads it: the tree, printed, or the error code.
    fn through_text(legacy: &str) -> std::result::Result<String, &'static str> {
        to_dql(legacy)
            .and_then(|t| crate::parser::parse_expression(&t))
            .map(|e| e.to_string())
            .map_err(|e| e.code.as_str())
    }

    fn through_tokens(legacy: &str) -> std::result::Result<String, &'static str> {
        super::to_expr(legacy)
            .map(|e| e.to_string())
            .map_err(|e| e.code.as_str())
    }

    #[test]
    fn the_tree_is_what_dql_read_from_the_translated_text() {
        for legacy in [
            "true",
            "_id.locationId == 'abcedef123456'",
            "name == \"John\" && age >= 18 || !(a == 1) && b != 2",
            "createdAt <= $args.ttl && evictionFlag == false",
            "owner == null || owner != null",
            "contains(tags, 'red') && starts_with(name, 'Jo') && ends_with(n, \"x\")",
            "work['street-line'] == 'x' && a['b']['c'] > 1 && a[0] == b[$args.i]",
            "select == 1 && from.where != 'x' && a.true == b.null",
            "price > 2.5e3 && q < .5 && r == 1. && s == 1E+3 && t == 18446744073709551615",
            "s == 'it\\'s' && t == 'back\\\\slash' && u == 'tab\\t' && v == 'a`b'",
            "a + b * c - d / e % f > 0 && !a == b",
            "- a > 0 && - 1 < b",
            "a['']== 1 && `x` == 1",
            "$args.1x == 1",
            "a == ",
            "(a == 1",
            "a == 1)",
            "a . == 1",
            "1 .a == 1",
            "1['k'] == 1",
            "contains(['a'], x)",
            "[1, 2] == a",
            "frobnicate(a)",
            "a ==== b",
            "'x' == . 1",
        ] {
            assert_eq!(through_tokens(legacy), through_text(legacy), "{legacy}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(2000))]
        /// Any sequence of legacy tokens: the tree is the one DQL reads from the translated
        /// text, or both fail with the same code. (Tokens are separated by spaces: a `-`
        /// touching a number is folded into a negative literal by the tree, as DQL does.)
        #[test]
        fn any_token_sequence_reads_the_same(
            toks in proptest::collection::vec(proptest::sample::select(vec![
                "a", "b.c", "_id", "select", "true", "false", "null", "==", "!=", "<", "<=",
                ">", ">=", "&&", "||", "!", "+", "-", "*", "/", "%", "(", ")", "[", "]", ",",
                ".", "'x'", "\"y z\"", "1", "2.5", "1e3", ".5", "$args.p", "contains",
                "starts_with", "['k']", "=",
            ]), 1..9)
        ) {
            let legacy = toks.join(" ");
            proptest::prop_assert_eq!(through_tokens(&legacy), through_text(&legacy), "{}", legacy);
        }
    }

    #[test]
    fn errors_point_into_the_legacy_query() {
        let e = super::to_expr("age >= 1 && ").expect_err("incomplete");
        assert_eq!((e.line, e.column), (1, 13), "{e:?}");
        assert!(e.message.contains("near \"age >= 1 && \""), "{}", e.message);
        let e = super::to_expr("a == 1\n  && (b").expect_err("unclosed");
        assert_eq!((e.line, e.column), (2, 8), "{e:?}");
    }

    #[test]
    fn a_minus_touching_a_number_is_a_negative_literal() {
        // As DQL reads `-1`; the text translation wrote `- 1`, the same value computed.
        assert_eq!(through_tokens("a == -1").as_deref(), Ok("(a = -1)"));
        assert_eq!(through_text("a == -1").as_deref(), Ok("(a = (- 1))"));
    }

    /// The statements the legacy routes ran before, as text.
    fn old_statement(kind: &str, coll: &str, query: &str, sort: &[(&str, bool)]) -> String {
        let ident = |n: &str| format!("`{}`", n.replace('`', "``"));
        let path = |p: &str| p.split('.').map(ident).collect::<Vec<_>>().join(".");
        match kind {
            "find" => {
                let mut s = format!(
                    "SELECT * FROM {} WHERE {}",
                    ident(coll),
                    to_dql(query).expect("translates")
                );
                if !sort.is_empty() {
                    let keys: Vec<String> = sort
                        .iter()
                        .map(|(p, d)| format!("{} {}", path(p), if *d { "DESC" } else { "ASC" }))
                        .collect();
                    s.push_str(&format!(" ORDER BY {}", keys.join(", ")));
                }
                s + " LIMIT 1000 OFFSET 18446744073709551615"
            }
            "count" => format!(
                "SELECT COUNT(*) AS n FROM {} WHERE {}",
                ident(coll),
                to_dql(query).expect("translates")
            ),
            _ => format!("SELECT * FROM {} WHERE _id = :id", ident(coll)),
        }
    }

    #[test]
    fn route_statements_are_the_trees_the_old_texts_parsed_to() {
        let names = [
            "cars",
            "a`b",
            "``",
            "it's \"quoted\"",
            "select",
            "system",
            "system:collections",
            "COLLECTION",
            "with space; DROP",
            "é",
            "",
        ];
        let sorts: [&[(&str, bool)]; 4] = [
            &[],
            &[("year", true), ("engine.hp", false)],
            &[("a`b.c'd", true), ("", false), ("x..y", true)],
            &[("cars", false), ("_id", true)],
        ];
        for coll in names {
            for sort in sorts {
                let query = "cars.year > 2000 && a['b`c'] == 'x' || select == null";
                let tree =
                    super::find_statement(coll, query, sort, 1000, Some(u64::MAX)).expect("builds");
                let text = crate::parse(&old_statement("find", coll, query, sort)).expect("parses");
                assert_eq!(tree.to_string(), text.to_string(), "{coll} {sort:?}");
            }
            let tree = super::count_statement(coll, "true").expect("builds");
            let text = crate::parse(&old_statement("count", coll, "true", &[])).expect("parses");
            assert_eq!(tree.to_string(), text.to_string(), "{coll}");
            let tree = super::find_by_id_statement(coll);
            let text = crate::parse(&old_statement("id", coll, "", &[])).expect("parses");
            assert_eq!(tree.to_string(), text.to_string(), "{coll}");
            // And they plan alike (names resolve against the same collection).
            let args = std::collections::BTreeMap::from([(
                "id".to_owned(),
                bigpeer_schema::Value::String("k".into()),
            )]);
            assert_eq!(
                crate::plan::check(&tree, &args),
                crate::plan::check(&text, &args)
            );
        }
    }
}
