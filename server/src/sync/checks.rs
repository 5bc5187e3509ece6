//! What a peer may subscribe to and write: subscription queries, pushed collection names, and
//! the write permission on a merged document.

use std::collections::BTreeMap;

use bigpeer_dql::plan::{self, PExpr, Plan, PlanOptions, Source};
use bigpeer_schema::hlc::now_ms;
use bigpeer_schema::wire::{DocChange, PushResult};
use bigpeer_schema::{limits, Hlc, ProvenanceError, SchemaError, SiteId, TypeView, Value};

use crate::service::{Access, Allowed, WriteScope};
use crate::store::{materialize_with_id, Outcome, StoreError, Working};

/// Checks a pushed change against the write limits (`bigpeer_schema::limits`, the same as for
/// every other write) before anything runs: the collection name, the id and what the delta
/// holds. `Err` is the code of the `Denied` answer.
pub(super) fn validate_change(c: &DocChange) -> Result<(), &'static str> {
    limits::check_collection(&c.collection).map_err(|e| e.code())?;
    limits::check_id(&c.id).map_err(|e| e.code())?;
    limits::check_state(&c.delta.state).map_err(|e| e.code())?;
    Ok(())
}

/// Merges one pushed change inside the write job, for the peer of site `peer`:
///
/// 1. a document outside the read permission does not exist for the peer: it is `Denied`
///    (`auth/forbidden`), as a write outside the write permission, before anything about it is
///    looked at;
/// 2. the change may only add the peer's own writes, with stamps at most `bound`
///    (`sync/clock-skew`, `sync/foreign-site`: see [`bigpeer_schema::Delta::check_provenance`]);
/// 3. within a write permission that is a filter, the document before and the merged document
///    must both match it (as for DQL writes).
pub(super) fn merge_one(
    w: &mut Working<'_>,
    c: &DocChange,
    scope: &WriteScope,
    peer: SiteId,
    bound: Hlc,
) -> Result<PushResult, StoreError> {
    let forbidden = || PushResult::Denied {
        code: "auth/forbidden".into(),
    };
    let current = w.state(&c.collection, &c.id)?;
    let before = materialize_with_id(current, &c.id);
    if let Some(v) = &before {
        if !scope.may_read(v)? {
            return Ok(forbidden());
        }
    }
    if let Err(e) = c.delta.check_provenance(current, peer, bound) {
        let code = match e {
            ProvenanceError::ClockAhead { .. } => CLOCK_SKEW,
            ProvenanceError::ForeignWrite { .. } => FOREIGN_SITE,
        };
        tracing::info!(collection = %c.collection, id = %c.id, %peer, error = %e, "sync push refused");
        return Ok(PushResult::Denied { code: code.into() });
    }
    if scope.write.is_some() {
        let current = current.clone();
        let mut merged = current.clone();
        match merged.apply_delta(&c.delta) {
            Ok(()) => {}
            Err(SchemaError::BaseNotDominated) => {
                return Ok(PushResult::Refused { have: current.vv })
            }
            Err(e) => return Err(e.into()),
        }
        let after = materialize_with_id(&merged, &c.id);
        if ![before, after].iter().flatten().all(|v| scope.may_write(v)) {
            return Ok(forbidden());
        }
    }
    let outcome = match w.apply_delta(&c.collection, &c.id, &c.delta) {
        // Refused on its own (over a limit: the store kept nothing of it); the rest of the push
        // goes on.
        Err(e) if e.is_refusal() => {
            return Ok(PushResult::Denied {
                code: e.code().into(),
            })
        }
        other => other?,
    };
    Ok(match outcome {
        Outcome::Changed { .. } => PushResult::Applied,
        Outcome::Unchanged => PushResult::Unchanged,
        Outcome::Refused => PushResult::Refused {
            have: w.state(&c.collection, &c.id)?.vv.clone(),
        },
    })
}

/// `Denied` code of a change with a stamp too far ahead of the server's clock.
pub(super) const CLOCK_SKEW: &str = "sync/clock-skew";
/// `Denied` code of a change carrying another site's writes that the server does not have.
pub(super) const FOREIGN_SITE: &str = "sync/foreign-site";

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
