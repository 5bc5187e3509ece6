//! The common statements (a filtered, ordered, windowed scan of `documents`) built as sqlparser
//! trees without re-parsing: a constant template is parsed once, then cloned and filled in.

use std::sync::OnceLock;

use sqlparser::ast::{
    Expr, LimitClause, OrderByKind, OrderBySort, SelectItem, SetExpr, Statement, UnaryOperator,
};
use sqlparser::dialect::PostgreSqlDialect;

/// What fills the template.
pub struct Scan {
    /// The item column (`None`: the targets' `id`).
    pub item: Option<Expr>,
    pub conds: Vec<Expr>,
    /// Sort terms, `true` for descending.
    pub order: Vec<(Expr, bool)>,
    pub limit: Option<Expr>,
    pub offset: Option<Expr>,
    /// The targets of a mutation (their ids) rather than items.
    pub targets: bool,
}

const ITEM: &str = "SELECT 1 AS item FROM documents WHERE true ORDER BY 1 ASC LIMIT 1 OFFSET 1";
const TARGETS: &str = "SELECT id FROM documents WHERE true ORDER BY 1 ASC LIMIT 1 OFFSET 1";

fn parsed(
    text: &'static str,
    cell: &'static OnceLock<Option<Statement>>,
) -> Option<&'static Statement> {
    cell.get_or_init(|| {
        sqlparser::parser::Parser::parse_sql(&PostgreSqlDialect {}, text)
            .ok()
            .and_then(|mut v| v.pop())
    })
    .as_ref()
}

fn template(targets: bool) -> Option<&'static Statement> {
    static ITEM_T: OnceLock<Option<Statement>> = OnceLock::new();
    static TARGETS_T: OnceLock<Option<Statement>> = OnceLock::new();
    if targets {
        parsed(TARGETS, &TARGETS_T)
    } else {
        parsed(ITEM, &ITEM_T)
    }
}

pub fn not(e: Expr) -> Expr {
    Expr::UnaryOp {
        op: UnaryOperator::Not,
        expr: Box::new(e),
    }
}

/// Fills the template; `None` only if the constant template failed to parse (a bug).
pub fn build(scan: Scan) -> Option<String> {
    let mut stmt = template(scan.targets)?.clone();
    let Statement::Query(q) = &mut stmt else {
        return None;
    };
    let SetExpr::Select(select) = q.body.as_mut() else {
        return None;
    };
    if let Some(item) = scan.item {
        match select.projection.first_mut() {
            Some(SelectItem::ExprWithAlias { expr, .. }) => *expr = item,
            _ => return None,
        }
    }
    select.selection = super::expr::balanced_op(sqlparser::ast::BinaryOperator::And, scan.conds);
    let ob = q.order_by.as_mut()?;
    let OrderByKind::Expressions(exprs) = &mut ob.kind else {
        return None;
    };
    let proto = exprs.first()?.clone();
    *exprs = scan
        .order
        .into_iter()
        .map(|(e, desc)| {
            let mut o = proto.clone();
            o.expr = e;
            o.options.sort = Some(if desc {
                OrderBySort::Desc
            } else {
                OrderBySort::Asc
            });
            o
        })
        .collect();
    if exprs.is_empty() {
        q.order_by = None;
    }
    match &mut q.limit_clause {
        Some(LimitClause::LimitOffset { limit, offset, .. }) => {
            *limit = scan.limit;
            match (offset.as_mut(), scan.offset) {
                (Some(o), Some(v)) => o.value = v,
                _ => *offset = None,
            }
            if limit.is_none() && offset.is_none() {
                q.limit_clause = None;
            }
        }
        _ => return None,
    }
    Some(stmt.to_string())
}
