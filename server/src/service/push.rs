//! Peers' pushes (`Push` of the sync protocol): the same permission-and-merge path as the
//! HTTP API's writes. Each change is checked against the write limits, then merged in one
//! group-committed transaction under the caller's [`WriteScope`], which decides exactly as for a
//! DQL write: a document outside the read permission does not exist for the caller, and within a
//! write permission that is a filter the document before and after the write must match it.
//! The delta is joined once; a change refused by a check leaves its document as it was, and the
//! other changes of the push go on.

use std::collections::BTreeMap;

use bigpeer_schema::wire::{DocChange, PushResult};
use bigpeer_schema::{limits, Hlc, ProvenanceError, SiteId};

use super::{Access, WriteScope};
use crate::store::{materialize_with_id, GroupCommit, Outcome, Store, StoreError, Working};

/// `Denied` code of a change with a stamp too far ahead of the server's clock.
const CLOCK_SKEW: &str = "sync/clock-skew";
/// `Denied` code of a change carrying another site's writes that the server does not have.
const FOREIGN_SITE: &str = "sync/foreign-site";

/// Checks a pushed change against the write limits (`bigpeer_schema::limits`, the same as for
/// every other write) before anything runs: the collection name, the id and what the delta
/// holds. `Err` is the code of the `Denied` answer.
fn validate_change(c: &DocChange) -> Result<(), &'static str> {
    limits::check_collection(&c.collection).map_err(|e| e.code())?;
    limits::check_id(&c.id).map_err(|e| e.code())?;
    limits::check_state(&c.delta.state).map_err(|e| e.code())?;
    Ok(())
}

/// Merges the changes a peer of site `peer` pushed, under `access`, atomically: one result per
/// change, in order, and the transaction they were written in (the newest committed one when
/// nothing was written). Stamps of the peer's site may be at most `bound`.
pub async fn merge_push(
    store: &Store,
    group: &GroupCommit,
    access: &Access,
    changes: Vec<DocChange>,
    peer: SiteId,
    bound: Hlc,
) -> Result<(u64, Vec<PushResult>), StoreError> {
    let mut results: Vec<Option<PushResult>> = vec![None; changes.len()];
    let mut work = Vec::new();
    let mut scopes: BTreeMap<String, Result<WriteScope, String>> = BTreeMap::new();
    for (i, c) in changes.into_iter().enumerate() {
        if let Err(code) = validate_change(&c) {
            results[i] = Some(PushResult::Denied { code: code.into() });
            continue;
        }
        let scope = scopes
            .entry(c.collection.clone())
            .or_insert_with(|| {
                WriteScope::of(access, &c.collection).map_err(|e| e.code().to_owned())
            })
            .clone();
        match scope {
            Ok(scope) => work.push((i, c, scope)),
            Err(code) => results[i] = Some(PushResult::Denied { code }),
        }
    }
    let txn = if work.is_empty() {
        store.known_txn().await?
    } else {
        let targets = work
            .iter()
            .map(|(_, c, _)| (c.collection.clone(), c.id.clone()))
            .collect();
        let job = move |w: &mut Working<'_>| -> Result<Vec<(usize, PushResult)>, StoreError> {
            work.iter()
                .map(|(i, c, scope)| Ok((*i, merge_one(w, c, scope, peer, bound)?)))
                .collect()
        };
        let (done, info) = group.transact(targets, job).await?;
        for (i, r) in done {
            results[i] = Some(r);
        }
        info.txn
    };
    let results = results
        .into_iter()
        .map(|r| {
            r.unwrap_or(PushResult::Denied {
                code: "internal".into(),
            })
        })
        .collect();
    Ok((u64::try_from(txn).unwrap_or(0), results))
}

/// Merges one pushed change inside the write job, for the peer of site `peer`:
///
/// 1. a document outside the read permission does not exist for the peer: it is `Denied`
///    (`auth/forbidden`), as a write outside the write permission, before anything about it is
///    looked at;
/// 2. the change may only add the peer's own writes, with stamps at most `bound`
///    (`sync/clock-skew`, `sync/foreign-site`: see [`bigpeer_schema::Delta::check_provenance`]);
/// 3. within a write permission that is a filter, the document before and the merged document
///    must both match it (as for DQL writes); the merge is undone otherwise.
fn merge_one(
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
    let applied = if scope.write.is_some() {
        w.apply_delta_if(&c.collection, &c.id, &c.delta, |after| {
            [before.as_ref(), after]
                .into_iter()
                .flatten()
                .all(|v| scope.may_write(v))
        })
    } else {
        w.apply_delta(&c.collection, &c.id, &c.delta).map(Some)
    };
    let outcome = match applied {
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
        None => forbidden(),
        Some(Outcome::Changed { .. }) => PushResult::Applied,
        Some(Outcome::Unchanged) => PushResult::Unchanged,
        Some(Outcome::Refused) => PushResult::Refused {
            have: w.state(&c.collection, &c.id)?.vv.clone(),
        },
    })
}
