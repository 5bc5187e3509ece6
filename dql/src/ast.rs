//! The typed DQL syntax tree. Every node that can be the subject of an error carries a [`Span`].

use bigpeer_schema::Value;

/// A 1-based source position (line, column in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord, Hash)]
pub struct Span {
    pub line: u32,
    pub column: u32,
}

impl Span {
    pub const NONE: Span = Span { line: 0, column: 0 };

    pub fn new(line: u32, column: u32) -> Span {
        Span { line, column }
    }
}

/// One DQL statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    Select(Select),
    Insert(Insert),
    Update(Update),
    /// `DELETE FROM`, `TOMBSTONE FROM` and `EVICT FROM`.
    Delete(Delete),
    AlterSystem(AlterSystem),
    Show(Show),
    Explain(Box<Statement>),
}

/// The collection a statement works on.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionRef {
    pub name: String,
    /// `system:name` virtual collections.
    pub system: bool,
    /// `FROM COLLECTION name (...)`: the `COLLECTION` keyword was written.
    pub keyword: bool,
    pub types: Vec<TypeDef>,
    pub alias: Option<String>,
    pub span: Span,
}

/// A field type declaration: `field MAP(...)`, `field COUNTER`, ...
#[derive(Debug, Clone, PartialEq)]
pub struct TypeDef {
    pub field: String,
    pub ty: CrdtType,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CrdtType {
    Register,
    Map(Vec<TypeDef>),
    Counter,
    PnCounter,
    Attachment,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Select {
    pub distinct: bool,
    pub projections: Vec<Projection>,
    pub from: CollectionRef,
    pub directives: Option<String>,
    pub filter: Option<Expr>,
    pub group_by: Vec<Expr>,
    pub having: Option<Expr>,
    pub order_by: Vec<OrderItem>,
    pub limit: Option<Expr>,
    pub offset: Option<Expr>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Projection {
    /// `*`
    Star(Span),
    /// `coll.*` or `alias.*`
    QualifiedStar(String, Span),
    Expr {
        expr: Expr,
        alias: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderItem {
    pub expr: Expr,
    pub desc: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictPolicy {
    Fail,
    DoNothing,
    DoUpdate,
    DoUpdateLocalDiff,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Insert {
    pub collection: CollectionRef,
    /// `INITIAL DOCUMENTS`
    pub initial: bool,
    /// `VALUES` was written instead of `DOCUMENTS`.
    pub values_keyword: bool,
    pub documents: Vec<Expr>,
    pub on_conflict: Option<ConflictPolicy>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub collection: CollectionRef,
    pub apply: Vec<Apply>,
    pub set: Vec<Assignment>,
    pub unset: Vec<FieldPath>,
    pub filter: Option<Expr>,
    pub order_by: Vec<OrderItem>,
    pub limit: Option<Expr>,
    pub offset: Option<Expr>,
}

/// A dotted field path written as an assignment target.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldPath {
    pub keys: Vec<String>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub path: FieldPath,
    pub value: Expr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Apply {
    pub path: FieldPath,
    pub op: ApplyOp,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ApplyOp {
    PnIncrement(Expr),
    Increment(Expr),
    Restart(Option<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteKind {
    Delete,
    Tombstone,
    Evict,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Delete {
    pub kind: DeleteKind,
    pub collection: CollectionRef,
    pub filter: Option<Expr>,
    pub order_by: Vec<OrderItem>,
    pub limit: Option<Expr>,
    pub offset: Option<Expr>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AlterSystem {
    Set { name: String, value: Expr },
    Reset { name: String },
    ResetAll,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Show {
    /// `None` for `SHOW ALL`.
    pub name: Option<String>,
}

/// An expression with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

impl Expr {
    pub fn new(kind: ExprKind, span: Span) -> Expr {
        Expr { kind, span }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// `null`, booleans, numbers, strings.
    Literal(Value),
    /// The `MISSING` literal.
    Missing,
    /// `:name`
    Param(String),
    /// A bare identifier (a top-level field, or a collection alias when followed by `.`).
    Ident(String),
    /// `base.name`
    Member(Box<Expr>, String),
    /// `base[index]`
    Index(Box<Expr>, Box<Expr>),
    Array(Vec<Expr>),
    Object(Vec<(String, Expr)>),
    Unary(UnaryOp, Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    Between {
        expr: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
        negated: bool,
    },
    In {
        expr: Box<Expr>,
        list: InList,
        negated: bool,
    },
    Like {
        expr: Box<Expr>,
        pattern: Box<Expr>,
        case_insensitive: bool,
        negated: bool,
        /// `ESCAPE 'c'`.
        escape: Option<char>,
    },
    Is {
        expr: Box<Expr>,
        test: IsTest,
        negated: bool,
    },
    /// A function call. `star` for `COUNT(*)`.
    Call {
        name: String,
        args: Vec<Expr>,
        distinct: bool,
        star: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum InList {
    /// `IN (a, b)`
    List(Vec<Expr>),
    /// `IN [a, b]`, `IN :param`, `IN field`
    Expr(Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsTest {
    Null,
    Missing,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    Not,
    Neg,
    Plus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Or,
    And,
    Eq,
    /// `==`, kept apart only to print the statement back as written.
    EqEq,
    Neq,
    /// `<>`
    LtGt,
    Lt,
    Le,
    Gt,
    Ge,
    Concat,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

impl BinaryOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Or => "OR",
            BinaryOp::And => "AND",
            BinaryOp::Eq => "=",
            BinaryOp::EqEq => "==",
            BinaryOp::Neq => "!=",
            BinaryOp::LtGt => "<>",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::Concat => "||",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
        }
    }

    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq
                | BinaryOp::EqEq
                | BinaryOp::Neq
                | BinaryOp::LtGt
                | BinaryOp::Lt
                | BinaryOp::Le
                | BinaryOp::Gt
                | BinaryOp::Ge
        )
    }
}
