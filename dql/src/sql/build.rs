//! Small constructors for sqlparser AST nodes.

use sqlparser::ast::helpers::attached_token::AttachedToken;
use sqlparser::ast::{
    ArrayElemTypeDef, BinaryOperator, CaseWhen, CastKind, DataType, DuplicateTreatment, Expr,
    Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments, Ident,
    ObjectName, Value,
};

/// `name(args...)`.
pub fn call(name: &str, args: Vec<Expr>) -> Expr {
    call_with(name, args, false)
}

/// `name([DISTINCT] args...)`.
pub fn call_with(name: &str, args: Vec<Expr>, distinct: bool) -> Expr {
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: distinct.then_some(DuplicateTreatment::Distinct),
            args: args
                .into_iter()
                .map(|a| FunctionArg::Unnamed(FunctionArgExpr::Expr(a)))
                .collect(),
            clauses: Vec::new(),
        }),
        within_group: Vec::new(),
        filter: None,
        null_treatment: None,
        over: None,
    })
}

/// `count(*)`.
pub fn count_star() -> Expr {
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new("count")]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: vec![FunctionArg::Unnamed(FunctionArgExpr::Wildcard)],
            clauses: Vec::new(),
        }),
        within_group: Vec::new(),
        filter: None,
        null_treatment: None,
        over: None,
    })
}

/// `(a op b)`.
pub fn bin(a: Expr, op: BinaryOperator, b: Expr) -> Expr {
    Expr::Nested(Box::new(Expr::BinaryOp {
        left: Box::new(a),
        op,
        right: Box::new(b),
    }))
}

pub fn cast(e: Expr, ty: DataType) -> Expr {
    Expr::Cast {
        kind: CastKind::DoubleColon,
        expr: Box::new(e),
        data_type: ty,
        format: None,
    }
}

pub fn bytea_array() -> DataType {
    DataType::Array(ArrayElemTypeDef::SquareBracket(
        Box::new(DataType::Bytea),
        None,
    ))
}

/// `ARRAY[e, ...]::jsonb[]`.
pub fn jsonb_array(elems: Vec<Expr>) -> Expr {
    cast(
        Expr::Array(sqlparser::ast::Array {
            elem: elems,
            named: true,
        }),
        DataType::Array(ArrayElemTypeDef::SquareBracket(
            Box::new(DataType::JSONB),
            None,
        )),
    )
}

/// `$n`.
pub fn placeholder(n: usize) -> Expr {
    Expr::value(Value::Placeholder(format!("${n}")))
}

/// An integer constant chosen by the compiler (operator codes), never user input.
pub fn int(i: i64) -> Expr {
    Expr::value(Value::Number(i.to_string(), false))
}

/// A constant string chosen by the compiler, never user input.
pub fn constant(s: &str) -> Expr {
    Expr::value(Value::SingleQuotedString(s.to_owned()))
}

/// A constant jsonb (`'true'::jsonb`).
pub fn jsonb_constant(s: &str) -> Expr {
    cast(constant(s), DataType::JSONB)
}

pub fn null_jsonb() -> Expr {
    cast(Expr::value(Value::Null), DataType::JSONB)
}

pub fn col(name: &str) -> Expr {
    Expr::Identifier(Ident::new(name))
}

pub fn qualified(table: &str, name: &str) -> Expr {
    Expr::CompoundIdentifier(vec![Ident::new(table), Ident::new(name)])
}

/// `CASE WHEN c THEN r ... [ELSE e] END`.
pub fn case(conditions: Vec<(Expr, Expr)>, else_result: Option<Expr>) -> Expr {
    Expr::Case {
        case_token: AttachedToken::empty(),
        end_token: AttachedToken::empty(),
        operand: None,
        conditions: conditions
            .into_iter()
            .map(|(condition, result)| CaseWhen { condition, result })
            .collect(),
        else_result: else_result.map(Box::new),
    }
}

/// `jsonb_typeof(e) = 'kind'`.
pub fn typeof_is(e: Expr, kind: &str) -> Expr {
    bin(
        call("jsonb_typeof", vec![e]),
        BinaryOperator::Eq,
        constant(kind),
    )
}

/// `e COLLATE "C"`.
pub fn collate_c(e: Expr) -> Expr {
    Expr::Collate {
        expr: Box::new(e),
        collation: ObjectName::from(vec![Ident::with_quote('"', "C")]),
    }
}

/// `e #>> '{}'`: the text of a jsonb string.
pub fn json_text(e: Expr) -> Expr {
    bin(e, BinaryOperator::HashLongArrow, constant("{}"))
}
