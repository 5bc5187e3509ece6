//! Text for resolved expressions (error messages and EXPLAIN), in DQL syntax.

use super::expr::{AggFunc, CmpOp, PExpr};
use crate::ast::IsTest;
use crate::print::{ident, literal};

fn join(items: &[PExpr]) -> String {
    items.iter().map(describe).collect::<Vec<_>>().join(", ")
}

/// DQL text for a resolved expression.
pub fn describe(e: &PExpr) -> String {
    match e {
        PExpr::Lit(v) => literal(v),
        PExpr::Missing => "MISSING".to_owned(),
        PExpr::Field(path) => path.iter().map(|p| ident(p)).collect::<Vec<_>>().join("."),
        PExpr::Member(b, k) => format!("{}.{}", describe(b), ident(k)),
        PExpr::Index(b, i) => format!("{}[{}]", describe(b), describe(i)),
        PExpr::Array(items) => format!("[{}]", join(items)),
        PExpr::Object(fields) => format!(
            "{{{}}}",
            fields
                .iter()
                .map(|(k, v)| format!("{}: {}", literal(&k.as_str().into()), describe(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        PExpr::Not(x) => format!("(NOT {})", describe(x)),
        PExpr::Neg(x) => format!("(- {})", describe(x)),
        PExpr::All(items) => format!(
            "({})",
            items.iter().map(describe).collect::<Vec<_>>().join(" AND ")
        ),
        PExpr::Any(items) => format!(
            "({})",
            items.iter().map(describe).collect::<Vec<_>>().join(" OR ")
        ),
        PExpr::Cmp(op, a, b) => {
            let s = match op {
                CmpOp::Eq => "=",
                CmpOp::Neq => "!=",
                CmpOp::Lt => "<",
                CmpOp::Le => "<=",
                CmpOp::Gt => ">",
                CmpOp::Ge => ">=",
            };
            format!("({} {s} {})", describe(a), describe(b))
        }
        PExpr::Arith(op, a, b) => format!("({} {} {})", describe(a), op.symbol(), describe(b)),
        PExpr::Between {
            expr,
            low,
            high,
            negated,
        } => format!(
            "({} {}BETWEEN {} AND {})",
            describe(expr),
            if *negated { "NOT " } else { "" },
            describe(low),
            describe(high)
        ),
        PExpr::InList {
            expr,
            list,
            negated,
        } => {
            format!(
                "({} {}IN ({}))",
                describe(expr),
                if *negated { "NOT " } else { "" },
                join(list)
            )
        }
        PExpr::InArray {
            expr,
            array,
            negated,
        } => {
            format!(
                "({} {}IN {})",
                describe(expr),
                if *negated { "NOT " } else { "" },
                describe(array)
            )
        }
        PExpr::Like {
            expr,
            pattern,
            case_insensitive,
            negated,
            escape,
        } => format!(
            "({} {}{} {}{})",
            describe(expr),
            if *negated { "NOT " } else { "" },
            if *case_insensitive { "ILIKE" } else { "LIKE" },
            describe(pattern),
            escape
                .map(|e| format!(" ESCAPE {}", crate::print::string_literal(&e.to_string())))
                .unwrap_or_default()
        ),
        PExpr::Is {
            expr,
            test,
            negated,
        } => {
            let t = match test {
                IsTest::Null => "NULL",
                IsTest::Missing => "MISSING",
                IsTest::Unknown => "UNKNOWN",
            };
            format!(
                "({} IS {}{t})",
                describe(expr),
                if *negated { "NOT " } else { "" }
            )
        }
        PExpr::Call(f, args) => format!("{}({})", f.name(), join(args)),
        PExpr::Agg(i) => format!("$agg{i}"),
        PExpr::GroupKey(i) => format!("$key{i}"),
    }
}

/// The name of an aggregate function.
pub fn agg_name(f: AggFunc) -> &'static str {
    match f {
        AggFunc::CountStar | AggFunc::Count => "count",
        AggFunc::Sum => "sum",
        AggFunc::Avg => "avg",
        AggFunc::Min => "min",
        AggFunc::Max => "max",
    }
}
