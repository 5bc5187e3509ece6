//! The legacy (pre-DQL) query language, translated to a DQL expression.
//!
//! Permission queries with `qlVersion` 0, the legacy HTTP endpoints (`/store/find`, `/count`,
//! `/write`) and CDC filters use it: `==`, `!=`, `<`, `<=`, `>`, `>=`, `&&`, `||`, `!`,
//! `contains(array, value)`, `starts_with(s, p)`, `ends_with(s, p)`, `field == null`,
//! `$args.name` parameters, bracket paths `work['street-line']`, and the query `true`.
//!
//! The translation works on tokens, so strings and names can hold anything: every field name is
//! quoted with backticks (a legacy field may be called `select` or `from`), strings are written
//! as single-quoted DQL strings, `$args.x` becomes `:x`.

use crate::ast::Span;
use crate::error::{DqlError, Result};

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

fn tokenize(text: &str) -> Result<Vec<Tok>> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
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
                    continue;
                }
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
    Ok(out)
}

fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn quote_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Translates a legacy query to a DQL expression (for a `WHERE` clause).
pub fn to_dql(query: &str) -> Result<String> {
    let toks = tokenize(query)?;
    if toks.is_empty() {
        return Err(invalid("the query is empty".into()));
    }
    let mut out: Vec<String> = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i];
        let next = toks.get(i + 1);
        match t {
            Tok::Ident(name) if next == Some(&Tok::LParen) => {
                let f = match name.as_str() {
                    "contains" => "array_contains",
                    "starts_with" | "ends_with" => name.as_str(),
                    "regex" => return Err(unsupported("regex()")),
                    other => return Err(unsupported(&format!("the function {other}()"))),
                };
                out.push(f.to_owned());
            }
            Tok::Ident(name) => match name.as_str() {
                "true" | "false" | "null" => {
                    let prev_is_path = matches!(out.last().map(String::as_str), Some("."));
                    if prev_is_path {
                        out.push(quote_ident(name));
                    } else {
                        out.push(name.to_uppercase());
                    }
                }
                _ => out.push(quote_ident(name)),
            },
            Tok::Str(s) => {
                // `a['key']` is a path segment; anywhere else a string.
                let in_brackets = matches!(out.last().map(String::as_str), Some("["));
                if in_brackets && toks.get(i + 1) == Some(&Tok::RBracket) {
                    out.pop();
                    out.push(".".to_owned());
                    out.push(quote_ident(s));
                    i += 2;
                    continue;
                }
                out.push(quote_str(s));
            }
            Tok::Num(n) => out.push(n.clone()),
            Tok::Arg(a) => out.push(format!(":{a}")),
            Tok::Op(op) => {
                // `x == null` / `x != null` are null tests in the legacy language.
                let null_next = matches!(next, Some(Tok::Ident(n)) if n == "null");
                match (*op, null_next) {
                    ("==", true) => {
                        out.push("IS NULL".to_owned());
                        i += 2;
                        continue;
                    }
                    ("!=", true) => {
                        out.push("IS NOT NULL".to_owned());
                        i += 2;
                        continue;
                    }
                    _ => {}
                }
                out.push(
                    match *op {
                        "==" => "=",
                        "&&" => "AND",
                        "||" => "OR",
                        "!" => "NOT",
                        other => other,
                    }
                    .to_owned(),
                );
            }
            Tok::LParen => out.push("(".to_owned()),
            Tok::RParen => out.push(")".to_owned()),
            Tok::LBracket => out.push("[".to_owned()),
            Tok::RBracket => out.push("]".to_owned()),
            Tok::Comma => out.push(",".to_owned()),
            Tok::Dot => out.push(".".to_owned()),
        }
        i += 1;
    }
    // Join without spaces around path dots and brackets, with spaces elsewhere.
    let mut text = String::new();
    for (k, piece) in out.iter().enumerate() {
        let glue = k > 0
            && !matches!(piece.as_str(), "." | "(" | ")" | "," | "[" | "]")
            && !matches!(out[k - 1].as_str(), "." | "(" | "[");
        if glue {
            text.push(' ');
        }
        text.push_str(piece);
    }
    Ok(text)
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
}
