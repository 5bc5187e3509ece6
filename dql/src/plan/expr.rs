//! Resolved expressions.

use bigpeer_schema::Value;

use super::functions::Func;
use crate::ast::{BinaryOp, IsTest};

/// A resolved expression. Parameters are already replaced by their values.
#[derive(Debug, Clone, PartialEq)]
pub enum PExpr {
    Lit(Value),
    Missing,
    /// A field of the document by object keys from the root (`_id` included).
    Field(Vec<String>),
    /// `base.key` on a computed value.
    Member(Box<PExpr>, String),
    /// `base[index]`: array element by integer position.
    Index(Box<PExpr>, Box<PExpr>),
    Array(Vec<PExpr>),
    Object(Vec<(String, PExpr)>),
    Not(Box<PExpr>),
    Neg(Box<PExpr>),
    /// `a AND b AND ...` (a chain is kept flat).
    All(Vec<PExpr>),
    /// `a OR b OR ...` (a chain is kept flat).
    Any(Vec<PExpr>),
    Cmp(CmpOp, Box<PExpr>, Box<PExpr>),
    /// `+ - * / % ||`
    Arith(BinaryOp, Box<PExpr>, Box<PExpr>),
    Between {
        expr: Box<PExpr>,
        low: Box<PExpr>,
        high: Box<PExpr>,
        negated: bool,
    },
    InList {
        expr: Box<PExpr>,
        list: Vec<PExpr>,
        negated: bool,
    },
    InArray {
        expr: Box<PExpr>,
        array: Box<PExpr>,
        negated: bool,
    },
    Like {
        expr: Box<PExpr>,
        pattern: Box<PExpr>,
        case_insensitive: bool,
        negated: bool,
        escape: Option<char>,
    },
    Is {
        expr: Box<PExpr>,
        test: IsTest,
        negated: bool,
    },
    Call(Func, Vec<PExpr>),
    /// The value of aggregate number `n` of the group.
    Agg(usize),
    /// The value of GROUP BY key number `n` of the group.
    GroupKey(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Neq,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFunc {
    CountStar,
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AggCall {
    pub func: AggFunc,
    /// The argument, evaluated on each document (`None` for `COUNT(*)`).
    pub arg: Option<PExpr>,
    pub distinct: bool,
}

impl PExpr {
    pub fn boxed(self) -> Box<PExpr> {
        Box::new(self)
    }

    /// True when the expression reads the document (a field), directly or inside.
    pub fn reads_document(&self) -> bool {
        let mut found = false;
        self.visit(&mut |e| {
            if matches!(e, PExpr::Field(_)) {
                found = true;
            }
        });
        found
    }

    /// Calls `f` on this expression and every sub-expression.
    pub fn visit(&self, f: &mut dyn FnMut(&PExpr)) {
        f(self);
        match self {
            PExpr::Lit(_)
            | PExpr::Missing
            | PExpr::Field(_)
            | PExpr::Agg(_)
            | PExpr::GroupKey(_) => {}
            PExpr::Member(b, _) | PExpr::Not(b) | PExpr::Neg(b) => b.visit(f),
            PExpr::Is { expr, .. } => expr.visit(f),
            PExpr::Index(a, b)
            | PExpr::Cmp(_, a, b)
            | PExpr::Arith(_, a, b)
            | PExpr::InArray {
                expr: a, array: b, ..
            }
            | PExpr::Like {
                expr: a,
                pattern: b,
                ..
            } => {
                a.visit(f);
                b.visit(f);
            }
            PExpr::Between {
                expr, low, high, ..
            } => {
                expr.visit(f);
                low.visit(f);
                high.visit(f);
            }
            PExpr::InList { expr, list, .. } => {
                expr.visit(f);
                list.iter().for_each(|e| e.visit(f));
            }
            PExpr::Array(items) | PExpr::Call(_, items) | PExpr::All(items) | PExpr::Any(items) => {
                items.iter().for_each(|e| e.visit(f))
            }
            PExpr::Object(fields) => fields.iter().for_each(|(_, e)| e.visit(f)),
        }
    }
}
