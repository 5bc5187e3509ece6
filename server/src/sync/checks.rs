//! What a peer may subscribe to and push: subscription queries planned into the filters the
//! sync core matches documents with ([`SessionPolicy`]), and pushes merged through the service
//! layer ([`crate::service::merge_push`], the permission-and-merge path of HTTP writes).

use std::collections::BTreeMap;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bigpeer_dql::eval;
use bigpeer_dql::exec::viewed_with_id;
use bigpeer_dql::plan::{self, PExpr, Plan, PlanOptions, Source};
use bigpeer_schema::hlc::now_ms;
use bigpeer_schema::{Doc, DocId, Hlc, TypeView, Value};
use bigpeer_sync_core::serve::{Filter, Planned, Policy};

use crate::service::{Access, Allowed};

/// The newest clock value a peer's stamps may carry now: the server's wall clock plus the
/// allowed skew.
pub(super) fn clock_bound(max_skew: std::time::Duration) -> Hlc {
    let skew = u64::try_from(max_skew.as_millis()).unwrap_or(u64::MAX);
    Hlc::new(now_ms().saturating_add(skew).min((1 << 48) - 1), u16::MAX)
}

/// A checked subscription query.
pub(super) struct SubscriptionPlan {
    pub collection: String,
    /// The query's WHERE.
    pub filter: Option<PExpr>,
    /// In strict mode, how the query's type declarations see documents (its WHERE looks at
    /// this view, as the same SELECT would).
    pub view: Option<TypeView>,
    /// The read permission on the collection (`None`: everything).
    pub read: Option<PExpr>,
}

/// Checks a subscription: a SELECT on a collection the peer may read, planned with strict
/// mode on or off. Returns its plan, or a `SubState::Failed` code and message.
pub(super) fn check_subscription(
    access: &Access,
    query: &str,
    args: Value,
    strict_mode: bool,
) -> Result<SubscriptionPlan, (String, String)> {
    let dql = |e: bigpeer_dql::DqlError| (e.code.as_str().to_owned(), e.message);
    let args = match args {
        Value::Object(o) => o,
        Value::Null => BTreeMap::new(),
        _ => {
            return Err((
                "query/invalid".into(),
                "subscription arguments must be an object".into(),
            ))
        }
    };
    let stmt = bigpeer_dql::parse(query).map_err(dql)?;
    let select = match plan::check_with(&stmt, &args, &PlanOptions { strict_mode }).map_err(dql)? {
        Plan::Select(s) => s,
        _ => {
            return Err((
                "query/unsupported".into(),
                "a subscription must be a SELECT".into(),
            ))
        }
    };
    let Source::Collection(collection) = select.source else {
        return Err((
            "query/unsupported".into(),
            "a subscription must select from a collection".into(),
        ));
    };
    if select.grouping.is_some() || select.limit.is_some() || select.offset.is_some() {
        return Err((
            "query/unsupported".into(),
            "a subscription cannot aggregate or use LIMIT/OFFSET".into(),
        ));
    }
    let read = match access.read(&collection) {
        Ok(Allowed::All) => None,
        Ok(Allowed::Matching(p)) => Some(p),
        Ok(Allowed::Nothing) => {
            return Err((
                "auth/forbidden".into(),
                format!("no permission to read collection \"{collection}\""),
            ))
        }
        Err(e) => return Err((e.code().to_owned(), e.to_string())),
    };
    Ok(SubscriptionPlan {
        collection,
        filter: select.filter,
        view: select.view,
        read,
    })
}

/// Which documents a subscription (or a `Want`) gets: its `WHERE` (in strict mode through the
/// query's type declarations) and the read permission, evaluated in memory on each document.
pub(super) struct SubFilter {
    /// The subscription's WHERE.
    filter: Option<PExpr>,
    /// In strict mode, the view of documents the WHERE looks at (`None`: the whole document).
    view: Option<TypeView>,
    /// The read permission on the collection (`None`: everything).
    read: Option<PExpr>,
}

impl Filter for SubFilter {
    fn wants_all(&self) -> bool {
        self.filter.is_none() && self.read.is_none()
    }

    /// Live documents match the filter and the read permission; tombstones (no value) are
    /// wanted when the read permission admits their id. Permissions look at the whole
    /// document, as for DQL.
    fn wants(&self, id: &DocId, value: Option<&Value>, state: &Doc) -> bool {
        let ok = |f: Option<&PExpr>, v: &Value| eval::matches(f, v).unwrap_or(false);
        match value {
            Some(v) => {
                let filtered = match (&self.filter, &self.view) {
                    (None, _) => true,
                    (Some(f), None) => ok(Some(f), v),
                    (Some(f), Some(view)) => {
                        viewed_with_id(state, id, view).is_some_and(|viewed| ok(Some(f), &viewed))
                    }
                };
                filtered && ok(self.read.as_ref(), v)
            }
            None => {
                let only_id = Value::Object(
                    [("_id".to_owned(), id.value().clone())]
                        .into_iter()
                        .collect(),
                );
                ok(self.read.as_ref(), &only_id)
            }
        }
    }
}

/// A session's permissions, and the server's `DQL_STRICT_MODE` at the time of each `Subscribe`.
pub(super) struct SessionPolicy {
    access: Access,
    strict_mode: Arc<AtomicBool>,
}

impl SessionPolicy {
    pub fn new(access: Access, strict_mode: Arc<AtomicBool>) -> SessionPolicy {
        SessionPolicy {
            access,
            strict_mode,
        }
    }
}

impl Policy for SessionPolicy {
    type Filter = SubFilter;

    fn subscription(
        &self,
        query: &str,
        args: Value,
    ) -> Result<Planned<SubFilter>, (String, String)> {
        let strict_mode = self.strict_mode.load(Ordering::Acquire);
        let plan = check_subscription(&self.access, query, args, strict_mode)?;
        Ok(Planned {
            collection: plan.collection,
            filter: SubFilter {
                filter: plan.filter,
                view: plan.view,
                read: plan.read,
            },
        })
    }

    fn readable(&self, collection: &str) -> Option<SubFilter> {
        let read = match self.access.read(collection) {
            Ok(Allowed::All) => None,
            Ok(Allowed::Matching(p)) => Some(p),
            Ok(Allowed::Nothing) | Err(_) => return None,
        };
        Some(SubFilter {
            filter: None,
            view: None,
            read,
        })
    }
}
