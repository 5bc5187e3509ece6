//! Typed views of a document (DQL strict mode).
//!
//! A slot may hold several live components at once: a register, a map, a counter, ... In DQL's
//! strict mode a field's CRDT type is part of its identity: a query sees, at each field, only the
//! component of the type it declares for that field (`COLLECTION c (m MAP, k COUNTER)`), and a
//! REGISTER where it declares nothing. The default, non-strict view ([`Doc::materialize`]) shows
//! the newest component of every field instead.
//!
//! [`Doc::shape`] writes the typed state out as JSON for stores that evaluate strict views in SQL
//! (Postgres: `dql_view` in `sql/0005_documents_shape.sql`).

use std::collections::BTreeMap;

use super::{Component, CounterNum, Doc, MapNode, Slot, VersionVector};
use crate::value::Value;

/// The type a query declares for a field.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum FieldView {
    #[default]
    Register,
    /// A map, with the declarations of its own fields.
    Map(TypeView),
    Counter,
    PnCounter,
    Attachment,
}

/// Declared field types of one level of a document (undeclared fields are REGISTERs).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TypeView {
    pub fields: BTreeMap<String, FieldView>,
}

const REGISTER: FieldView = FieldView::Register;

impl TypeView {
    /// The declared type of a field at this level.
    pub fn field(&self, key: &str) -> &FieldView {
        self.fields.get(key).unwrap_or(&REGISTER)
    }

    /// The declaration as JSON, the form `dql_view` takes: `{key: {"t": "r"|"m"|"c"|"p"|"a",
    /// "f": {...}}}`, declared keys only.
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.fields
                .iter()
                .map(|(k, f)| {
                    let mut o = BTreeMap::new();
                    o.insert("t".to_owned(), Value::from(code(field_component(f))));
                    if let FieldView::Map(inner) = f {
                        o.insert("f".to_owned(), inner.to_json());
                    }
                    (k.clone(), Value::Object(o))
                })
                .collect(),
        )
    }
}

fn field_component(f: &FieldView) -> Component {
    match f {
        FieldView::Register => Component::Register,
        FieldView::Map(_) => Component::Map,
        FieldView::Counter => Component::Counter,
        FieldView::PnCounter => Component::PnCounter,
        FieldView::Attachment => Component::Attachment,
    }
}

/// The one-letter name of a component in [`Doc::shape`] and in declarations.
fn code(c: Component) -> &'static str {
    match c {
        Component::Register => "r",
        Component::Map => "m",
        Component::Counter => "c",
        Component::PnCounter => "p",
        Component::Attachment => "a",
    }
}

impl Slot {
    /// True when the slot holds a live component of this type.
    pub fn has_live(&self, c: Component, inherited: &VersionVector) -> bool {
        let ctx = self.ctx(inherited);
        let reg_alive = |r: &Option<super::Register>| {
            r.as_ref()
                .is_some_and(|r| r.value.is_some() && !ctx.covers(r.stamp))
        };
        match c {
            Component::Register => reg_alive(&self.reg),
            Component::Attachment => reg_alive(&self.att),
            Component::Counter => self
                .ctr
                .as_ref()
                .is_some_and(|k| k.newest_alive(&ctx).is_some()),
            Component::PnCounter => self
                .pn
                .as_ref()
                .is_some_and(|k| k.newest_alive(&ctx).is_some()),
            Component::Map => self
                .map
                .as_ref()
                .is_some_and(|m| m.newest_alive(&ctx).is_some()),
        }
    }

    /// The live components, in [`Component`] order.
    pub(super) fn live(&self, inherited: &VersionVector) -> Vec<Component> {
        [
            Component::Register,
            Component::Attachment,
            Component::PnCounter,
            Component::Counter,
            Component::Map,
        ]
        .into_iter()
        .filter(|c| self.has_live(*c, inherited))
        .collect()
    }

    /// The value of one component (`None` when it is not live). A map shows through `view`.
    fn component_value(
        &self,
        c: Component,
        inherited: &VersionVector,
        view: Option<&TypeView>,
    ) -> Option<Value> {
        if !self.has_live(c, inherited) {
            return None;
        }
        let ctx = self.ctx(inherited);
        match c {
            Component::Register => self.reg.as_ref().and_then(|r| r.value.clone()),
            Component::Attachment => self.att.as_ref().and_then(|r| r.value.clone()),
            Component::Counter => self.ctr.as_ref().map(|k| k.total().to_value()),
            Component::PnCounter => self.pn.as_ref().map(|k| k.total().to_value()),
            Component::Map => self.map.as_ref().map(|m| match view {
                Some(v) => m.view(&ctx, v),
                None => m.shape(&ctx),
            }),
        }
    }

    /// What a query declaring `want` for this field sees of it.
    fn view(&self, inherited: &VersionVector, want: &FieldView) -> Option<Value> {
        let inner = match want {
            FieldView::Map(v) => Some(v),
            _ => Some(&EMPTY),
        };
        self.component_value(field_component(want), inherited, inner)
    }

    /// True when the slot holds exactly one live component, a map whose entries are all plain,
    /// or a register that does not hold an object: the non-strict view then tells its type.
    fn is_plain(&self, inherited: &VersionVector) -> bool {
        match self.live(inherited).as_slice() {
            [Component::Register] => !matches!(
                self.reg.as_ref().and_then(|r| r.value.as_ref()),
                Some(Value::Object(_))
            ),
            [Component::Map] => {
                let ctx = self.ctx(inherited);
                self.map.as_ref().is_some_and(|m| m.is_plain(&ctx))
            }
            _ => false,
        }
    }

    /// `{"r": value, "m": {...}, "c": n, "p": x, "a": token}` with the live components.
    fn shape(&self, inherited: &VersionVector) -> Option<Value> {
        let out: BTreeMap<String, Value> = self
            .live(inherited)
            .into_iter()
            .filter_map(|c| {
                self.component_value(c, inherited, None)
                    .map(|v| (code(c).to_owned(), v))
            })
            .collect();
        (!out.is_empty()).then_some(Value::Object(out))
    }
}

static EMPTY: TypeView = TypeView {
    fields: BTreeMap::new(),
};

impl MapNode {
    fn view(&self, ctx: &VersionVector, view: &TypeView) -> Value {
        Value::Object(
            self.entries
                .iter()
                .filter_map(|(k, e)| e.view(ctx, view.field(k)).map(|v| (k.clone(), v)))
                .collect(),
        )
    }

    fn is_plain(&self, ctx: &VersionVector) -> bool {
        self.entries
            .values()
            .all(|e| e.live(ctx).is_empty() || e.is_plain(ctx))
    }

    fn shape(&self, ctx: &VersionVector) -> Value {
        Value::Object(
            self.entries
                .iter()
                .filter_map(|(k, e)| e.shape(ctx).map(|v| (k.clone(), v)))
                .collect(),
        )
    }
}

impl Doc {
    /// The document's fields as a strict-mode query declaring `view` sees them (without `_id`),
    /// or `None` when it is deleted.
    pub fn view(&self, view: &TypeView) -> Option<Value> {
        let (root, ctx) = self.live_root()?;
        Some(root.view(&ctx, view))
    }

    /// The typed state as JSON, or `None` when the non-strict view already tells every field's
    /// type (each field one live component: objects are maps, other values registers) or the
    /// document is deleted. Otherwise the root map's fields, each `{"r": value, "m": {fields},
    /// "c": int, "p": float, "a": token}` with its live components.
    pub fn shape(&self) -> Option<Value> {
        let (root, ctx) = self.live_root()?;
        if root.is_plain(&ctx) {
            return None;
        }
        Some(root.shape(&ctx))
    }

    fn live_root(&self) -> Option<(&MapNode, VersionVector)> {
        let empty = VersionVector::default();
        match self.root.visible(&empty) {
            Some((Component::Map, _)) => self
                .root
                .map
                .as_ref()
                .map(|m| (m, self.root.ctx(&empty).into_owned())),
            _ => None,
        }
    }
}
