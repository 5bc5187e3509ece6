//! The checked plan: names resolved, aggregates separated from grouping, parameters bound,
//! insert documents evaluated. Both backends (the evaluator and the Postgres compiler) run it.

mod check;
mod display;
mod explain;
mod expr;
mod functions;
mod mutation;
mod select;

pub use check::{check, check_condition, check_with, PlanOptions};
pub use display::{agg_name, describe};
pub use explain::explain;
pub use expr::{AggCall, AggFunc, CmpOp, PExpr};
pub use functions::Func;

use std::collections::BTreeMap;

use bigpeer_schema::{DocId, FieldView, ObjectMode, TypeView, Value};

use crate::ast::{ConflictPolicy, CrdtType, Span};

/// A checked statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    Select(SelectPlan),
    Insert(InsertPlan),
    Update(UpdatePlan),
    /// `DELETE`, `TOMBSTONE` and `EVICT`.
    Remove(RemovePlan),
    /// `ALTER SYSTEM SET name = value` (value `None`: reset to the default).
    AlterSystem {
        name: Option<String>,
        value: Option<Value>,
    },
    /// `SHOW name` (`None`: `SHOW ALL`).
    Show {
        name: Option<String>,
    },
    Explain(Box<Plan>),
}

impl Plan {
    /// The collection the statement reads or writes, if any.
    pub fn collection(&self) -> Option<&str> {
        match self {
            Plan::Select(s) => match &s.source {
                Source::Collection(c) => Some(c),
                Source::SystemCollections => None,
            },
            Plan::Insert(i) => Some(&i.collection),
            Plan::Update(u) => Some(&u.target.collection),
            Plan::Remove(r) => Some(&r.target.collection),
            Plan::AlterSystem { .. } | Plan::Show { .. } | Plan::Explain(_) => None,
        }
    }

    /// True for statements that write documents.
    pub fn is_mutation(&self) -> bool {
        matches!(self, Plan::Insert(_) | Plan::Update(_) | Plan::Remove(_))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Collection(String),
    /// `system:collections`: one document per collection with live documents.
    SystemCollections,
}

/// The documents a statement works on: a filter, an order and a window.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub collection: String,
    pub filter: Option<PExpr>,
    /// Sort keys evaluated on the document; empty: storage order (`_id` key).
    pub order_by: Vec<(PExpr, bool)>,
    pub limit: Option<u64>,
    pub offset: Option<u64>,
    /// Strict mode: the documents as the statement's type declarations see them (see
    /// [`TypeView`]); `None`: the default view (every field's newest value).
    pub view: Option<TypeView>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SelectPlan {
    pub source: Source,
    pub filter: Option<PExpr>,
    pub distinct: bool,
    pub projection: Projection,
    /// Set when the query aggregates (aggregate calls, or GROUP BY).
    pub grouping: Option<Grouping>,
    /// Sort keys: on the document, or, for grouped queries, on the group (keys and aggregates).
    pub order_by: Vec<(PExpr, bool)>,
    pub limit: Option<u64>,
    pub offset: Option<u64>,
    /// Strict mode: see [`Target::view`].
    pub view: Option<TypeView>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Projection {
    /// `*` or `coll.*`, optionally with more named expressions merged in.
    Document { extra: Vec<(String, PExpr)> },
    /// Named expressions; missing values are left out of the item.
    Fields(Vec<(String, PExpr)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Grouping {
    /// GROUP BY expressions (on the document).
    pub keys: Vec<PExpr>,
    /// Aggregate calls, referred to by [`PExpr::Agg`].
    pub aggregates: Vec<AggCall>,
    /// HAVING, on the group.
    pub having: Option<PExpr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InsertPlan {
    pub collection: String,
    pub documents: Vec<InsertDoc>,
    pub on_conflict: ConflictPolicy,
    /// `INITIAL DOCUMENTS`: an existing id is always left alone.
    pub initial: bool,
    pub objects: ObjectMode,
    pub types: FieldTypes,
}

/// One document to insert: its id (given or generated) and its fields without `_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct InsertDoc {
    pub id: DocId,
    pub fields: BTreeMap<String, Value>,
    /// Where the document expression starts in the statement.
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpdatePlan {
    pub target: Target,
    pub actions: Vec<UpdateAction>,
    pub objects: ObjectMode,
    pub types: FieldTypes,
}

impl UpdatePlan {
    /// Strict mode (objects are registers): writes touch only their own type.
    pub fn strict(&self) -> bool {
        self.objects == ObjectMode::Register
    }
}

impl InsertPlan {
    /// Strict mode (objects are registers): writes touch only their own type.
    pub fn strict(&self) -> bool {
        self.objects == ObjectMode::Register
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum UpdateAction {
    Set {
        path: Vec<String>,
        value: PExpr,
        kind: FieldKind,
        span: Span,
    },
    Unset {
        path: Vec<String>,
        kind: FieldKind,
    },
    PnIncrement {
        path: Vec<String>,
        by: PExpr,
        kind: FieldKind,
        span: Span,
    },
    Increment {
        path: Vec<String>,
        by: PExpr,
        span: Span,
    },
    Restart {
        path: Vec<String>,
        to: Option<PExpr>,
        span: Span,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveKind {
    /// `DELETE` and `TOMBSTONE`: a document tombstone that syncs.
    Delete,
    /// `EVICT`: local removal, nothing syncs.
    Evict,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RemovePlan {
    pub kind: RemoveKind,
    pub target: Target,
}

/// The declared CRDT type of a field (from a `COLLECTION c (...)` clause).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Default,
    Register,
    Map,
    Counter,
    PnCounter,
    Attachment,
}

/// Declared field types by path.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldTypes(pub BTreeMap<Vec<String>, FieldKind>);

impl FieldTypes {
    pub fn from_defs(defs: &[crate::ast::TypeDef]) -> FieldTypes {
        let mut out = BTreeMap::new();
        fn walk(
            prefix: &[String],
            defs: &[crate::ast::TypeDef],
            out: &mut BTreeMap<Vec<String>, FieldKind>,
        ) {
            for d in defs {
                let mut path = prefix.to_vec();
                path.push(d.field.clone());
                let kind = match &d.ty {
                    CrdtType::Register => FieldKind::Register,
                    CrdtType::Map(inner) => {
                        walk(&path, inner, out);
                        FieldKind::Map
                    }
                    CrdtType::Counter => FieldKind::Counter,
                    CrdtType::PnCounter => FieldKind::PnCounter,
                    CrdtType::Attachment => FieldKind::Attachment,
                };
                out.insert(path, kind);
            }
        }
        walk(&[], defs, &mut out);
        FieldTypes(out)
    }

    pub fn kind(&self, path: &[String]) -> FieldKind {
        self.0.get(path).copied().unwrap_or(FieldKind::Default)
    }

    /// The declarations as the strict-mode view of a document.
    pub fn view(&self) -> TypeView {
        self.level(&[])
    }

    fn level(&self, prefix: &[String]) -> TypeView {
        let fields = self
            .0
            .iter()
            .filter(|(p, _)| p.len() == prefix.len() + 1 && p.starts_with(prefix))
            .filter_map(|(p, kind)| {
                let field = match kind {
                    FieldKind::Default | FieldKind::Register => FieldView::Register,
                    FieldKind::Map => FieldView::Map(self.level(p)),
                    FieldKind::Counter => FieldView::Counter,
                    FieldKind::PnCounter => FieldView::PnCounter,
                    FieldKind::Attachment => FieldView::Attachment,
                };
                p.last().map(|k| (k.clone(), field))
            })
            .collect();
        TypeView { fields }
    }
}

/// When a filter is `_id IN [...]` (or `_id IN (...)`) with constant values, those values in
/// the order written: Ditto looks such documents up by id and, without ORDER BY, returns them in
/// that order.
pub fn id_lookup_order(filter: Option<&PExpr>) -> Option<Vec<Value>> {
    let is_id = |e: &PExpr| matches!(e, PExpr::Field(p) if p.len() == 1 && p[0] == "_id");
    let items: Vec<PExpr> = match filter? {
        PExpr::InList {
            expr,
            list,
            negated: false,
        } if is_id(expr) => list.clone(),
        PExpr::InArray {
            expr,
            array,
            negated: false,
        } if is_id(expr) => match array.as_ref() {
            PExpr::Array(items) => items.clone(),
            PExpr::Lit(Value::Array(items)) => items.iter().cloned().map(PExpr::Lit).collect(),
            _ => return None,
        },
        _ => return None,
    };
    items
        .iter()
        .map(|i| crate::eval::eval_const(i).ok().flatten())
        .collect()
}
