//! SELECT statements built as sqlparser trees, printed once by the caller. The clause
//! structure comes from a few constant templates, each parsed once per process ([`parsed`] takes
//! only `&'static str`: no SQL text made at run time is ever parsed); they are cloned and
//! filled in with the compiled expressions.

use std::sync::OnceLock;

use sqlparser::ast::{
    Expr, GroupByExpr, Ident, LimitClause, OrderByExpr, OrderByKind, OrderBySort, Query,
    SelectItem, SetExpr, Statement, TableFactor, UnaryOperator, WindowSpec, WindowType,
};
use sqlparser::dialect::PostgreSqlDialect;

use super::build::call;

/// The table a SELECT reads.
pub enum Table {
    /// The `documents` table.
    Documents,
    /// `(<query>) AS <alias>`.
    Query(Box<Query>, &'static str),
    /// One row per live collection (`system:collections`), as `src` with the columns `value`,
    /// `klen` and `kbytes`.
    SystemCollections,
}

/// One SELECT: `SELECT <projection> FROM <from> [WHERE <conds>] [GROUP BY <group_by>]
/// [HAVING <having>] [ORDER BY <order>] [LIMIT <limit>] [OFFSET <offset>]`.
pub struct Select {
    /// Columns, with their aliases.
    pub projection: Vec<(Expr, Option<String>)>,
    pub from: Table,
    /// Joined with AND (a balanced tree).
    pub conds: Vec<Expr>,
    pub group_by: Vec<Expr>,
    pub having: Option<Expr>,
    /// Sort terms, `true` for descending.
    pub order: Vec<(Expr, bool)>,
    pub limit: Option<Expr>,
    pub offset: Option<Expr>,
}

impl Select {
    pub fn new(projection: Vec<(Expr, Option<String>)>, from: Table) -> Select {
        Select {
            projection,
            from,
            conds: Vec::new(),
            group_by: Vec::new(),
            having: None,
            order: Vec::new(),
            limit: None,
            offset: None,
        }
    }
}

/// Every clause a [`Select`] may fill.
const SELECT: &str = "SELECT 1 AS x FROM documents WHERE true ORDER BY 1 ASC LIMIT 1 OFFSET 1";
/// A derived table.
const DERIVED: &str = "SELECT 1 FROM (SELECT 1) AS d";
/// A window function call.
const ROW_NUMBER: &str = "SELECT row_number() OVER (ORDER BY 1 ASC) FROM documents";
/// The collections that hold live documents, one row each.
const SYSTEM_COLLECTIONS: &str = "SELECT 1 FROM \
    (SELECT jsonb_build_object('_id', x, 'datasource', 'default', 'name', substr(x, 9)) AS value, \
     octet_length(x) AS klen, convert_to(x, 'UTF8') AS kbytes \
     FROM (SELECT DISTINCT 'default:' || collection AS x FROM documents WHERE NOT deleted) AS c) AS src";

struct Templates {
    select: Query,
    documents: TableFactor,
    derived: TableFactor,
    system: TableFactor,
    order: OrderByExpr,
    row_number: Expr,
}

/// A constant template, parsed.
fn parsed(text: &'static str) -> Option<Query> {
    let mut stmts = sqlparser::parser::Parser::parse_sql(&PostgreSqlDialect {}, text).ok()?;
    match stmts.pop()? {
        Statement::Query(q) => Some(*q),
        _ => None,
    }
}

fn body(q: &mut Query) -> Option<&mut sqlparser::ast::Select> {
    match q.body.as_mut() {
        SetExpr::Select(s) => Some(s),
        _ => None,
    }
}

fn relation(q: &mut Query) -> Option<TableFactor> {
    Some(body(q)?.from.first()?.relation.clone())
}

fn load() -> Option<Templates> {
    let mut select = parsed(SELECT)?;
    let documents = relation(&mut select)?;
    let order = match &select.order_by.as_ref()?.kind {
        OrderByKind::Expressions(e) => e.first()?.clone(),
        OrderByKind::All(_) => return None,
    };
    let row_number = match body(&mut parsed(ROW_NUMBER)?)?.projection.first()? {
        SelectItem::UnnamedExpr(e) => e.clone(),
        _ => return None,
    };
    Some(Templates {
        documents,
        derived: relation(&mut parsed(DERIVED)?)?,
        system: relation(&mut parsed(SYSTEM_COLLECTIONS)?)?,
        order,
        row_number,
        select,
    })
}

fn templates() -> Option<&'static Templates> {
    static T: OnceLock<Option<Templates>> = OnceLock::new();
    T.get_or_init(load).as_ref()
}

pub fn not(e: Expr) -> Expr {
    Expr::UnaryOp {
        op: UnaryOperator::Not,
        expr: Box::new(e),
    }
}

fn order_by(t: &Templates, order: Vec<(Expr, bool)>) -> Vec<OrderByExpr> {
    order
        .into_iter()
        .map(|(e, desc)| {
            let mut o = t.order.clone();
            o.expr = e;
            o.options.sort = Some(if desc {
                OrderBySort::Desc
            } else {
                OrderBySort::Asc
            });
            o
        })
        .collect()
}

/// `row_number() OVER (ORDER BY <order>)`; `None` only if a constant template failed to parse
/// (a bug).
pub fn row_number(order: Vec<(Expr, bool)>) -> Option<Expr> {
    let t = templates()?;
    let mut e = t.row_number.clone();
    let Expr::Function(f) = &mut e else {
        return None;
    };
    f.over = Some(WindowType::WindowSpec(WindowSpec {
        window_name: None,
        partition_by: Vec::new(),
        order_by: order_by(t, order),
        window_frame: None,
    }));
    Some(e)
}

/// `min(<e>)`.
pub fn min(e: Expr) -> Expr {
    call("min", vec![e])
}

/// Builds the SELECT; `None` only if a constant template failed to parse (a bug).
pub fn build(s: Select) -> Option<Query> {
    let t = templates()?;
    let mut q = t.select.clone();
    let select = body(&mut q)?;
    select.projection = s
        .projection
        .into_iter()
        .map(|(expr, alias)| match alias {
            Some(a) => SelectItem::ExprWithAlias {
                expr,
                alias: Ident::new(a),
            },
            None => SelectItem::UnnamedExpr(expr),
        })
        .collect();
    let from = &mut select.from.first_mut()?.relation;
    *from = match s.from {
        Table::Documents => t.documents.clone(),
        Table::SystemCollections => t.system.clone(),
        Table::Query(query, name) => {
            let mut d = t.derived.clone();
            if let TableFactor::Derived {
                subquery, alias, ..
            } = &mut d
            {
                *subquery = query;
                alias.as_mut()?.name = Ident::new(name);
            }
            d
        }
    };
    select.selection = super::expr::balanced_op(sqlparser::ast::BinaryOperator::And, s.conds);
    select.group_by = GroupByExpr::Expressions(s.group_by, Vec::new());
    select.having = s.having;
    if s.order.is_empty() {
        q.order_by = None;
    } else if let Some(OrderByKind::Expressions(exprs)) = q.order_by.as_mut().map(|o| &mut o.kind) {
        *exprs = order_by(t, s.order);
    }
    match &mut q.limit_clause {
        Some(LimitClause::LimitOffset { limit, offset, .. }) => {
            *limit = s.limit;
            match (offset.as_mut(), s.offset) {
                (Some(o), Some(v)) => o.value = v,
                _ => *offset = None,
            }
            if limit.is_none() && offset.is_none() {
                q.limit_clause = None;
            }
        }
        _ => return None,
    }
    Some(q)
}
