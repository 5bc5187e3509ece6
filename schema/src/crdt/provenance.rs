//! What a peer may put in a delta: writes of its own site, with clocks it may claim.
//!
//! A replica that receives a delta from a peer it does not trust checks it against its own
//! state before joining it ([`Delta::check_provenance`]):
//!
//! - every clock value of the peer's own site (stamps, version-vector entries, removal
//!   contexts) is at most a bound (the receiver's wall clock plus the allowed skew): a stamp in
//!   year 3000 would win every later conflict;
//! - every part of the delta that belongs to another site (a register, map mark, counter epoch,
//!   counter contribution or removal stamped by that site, a version-vector or removal-context
//!   entry of that site) is already known to the receiver: the receiver's state has it, or
//!   something newer in its place. A peer relays what it has seen, it never invents another
//!   writer's writes (nor the receiver's own);
//! - what a removal or a restart records of another site's counter totals (as removed, or as
//!   seen by the restart) is at most the totals the delta carries, which the receiver has: a
//!   peer can remove what exists, as a genuine removal does, never increments beyond it;
//! - a counter era of format 1 (see [`super::Counter::era`]) the receiver lacks replaces the
//!   receiver's totals: it must be the peer's own, and no live total of another site may go.
//!
//! Joining a delta that passes changes the receiver's state only by the peer's own writes.

use super::{Counter, CounterNum, Doc, MapNode, Register, Seen, Slot, VersionVector};
use crate::hlc::{Hlc, SiteId, Stamp};

use super::Delta;

/// Why a delta is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProvenanceError {
    /// A clock value of the sender's own site is past the bound.
    ClockAhead { hlc: Hlc, bound: Hlc },
    /// The delta carries a write of another site that the receiver does not have.
    ForeignWrite { site: SiteId },
}

impl std::fmt::Display for ProvenanceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProvenanceError::ClockAhead { hlc, bound } => write!(
                f,
                "a stamp ({} ms) is further ahead of the receiver's clock than allowed (at most {} ms)",
                hlc.ms(),
                bound.ms()
            ),
            ProvenanceError::ForeignWrite { site } => write!(
                f,
                "the change carries a write of site {site} that the receiver does not have: a peer may only add writes of its own site"
            ),
        }
    }
}

type Check = Result<(), ProvenanceError>;

struct Rules<'a> {
    own: SiteId,
    bound: Hlc,
    known: &'a VersionVector,
    /// The stamps of the removals in the receiver's state.
    removals: Vec<Stamp>,
}

impl Rules<'_> {
    /// A clock value attributed to `site`.
    fn clock(&self, site: SiteId, hlc: Hlc) -> Check {
        if site == self.own {
            if hlc > self.bound {
                return Err(ProvenanceError::ClockAhead {
                    hlc,
                    bound: self.bound,
                });
            }
            Ok(())
        } else if hlc > self.known.get(site) {
            Err(ProvenanceError::ForeignWrite { site })
        } else {
            Ok(())
        }
    }

    /// Whether the site of `s` made a removal at or after it (removal stamps are kept as the
    /// newest per site and slot).
    fn removed_since(&self, s: Stamp) -> bool {
        self.removals
            .iter()
            .any(|r| r.site == s.site && r.hlc >= s.hlc)
    }

    fn stamp(&self, s: Stamp) -> Check {
        self.clock(s.site, s.hlc)
    }

    fn vv(&self, vv: &VersionVector) -> Check {
        vv.iter().try_for_each(|(s, h)| self.clock(s, h))
    }

    fn foreign(&self, site: SiteId) -> ProvenanceError {
        ProvenanceError::ForeignWrite { site }
    }

    /// A register of the delta against the receiver's at the same place: another site's must
    /// be the receiver's or older than it.
    fn register(&self, theirs: &Register, mine: Option<&Register>) -> Check {
        self.stamp(theirs.stamp)?;
        if theirs.stamp.site == self.own {
            return Ok(());
        }
        match mine {
            Some(m) if m.stamp > theirs.stamp => Ok(()),
            Some(m) if m.stamp == theirs.stamp => {
                // The same write: the same value, or one side pruned by a removal.
                if m.value.is_none() || theirs.value.is_none() || m.value == theirs.value {
                    Ok(())
                } else {
                    Err(self.foreign(theirs.stamp.site))
                }
            }
            _ => Err(self.foreign(theirs.stamp.site)),
        }
    }

    /// `ctx`: the receiver's removal context at the counter.
    fn counter<N: CounterNum>(
        &self,
        theirs: &Counter<N>,
        mine: Option<&Counter<N>>,
        ctx: &VersionVector,
    ) -> Check {
        let their_era = theirs.era;
        let my_era = mine.and_then(|m| m.era);
        if let Some(era) = their_era {
            self.stamp(era)?;
            if their_era > my_era {
                // Format 1 only (never written since): a newer era replaces the receiver's
                // totals. A peer's own restart or re-creation from then, or one named after a
                // removal the receiver has, and only over totals the receiver no longer shows.
                let after_removal = theirs
                    .epoch
                    .as_ref()
                    .is_some_and(|e| e.stamp == era && e.base == N::ZERO)
                    && self.removed_since(era);
                if era.site != self.own && !after_removal {
                    return Err(self.foreign(era.site));
                }
                let live = mine.and_then(|m| {
                    m.contrib
                        .iter()
                        .find(|(site, c)| **site != self.own && !ctx.covers(c.last))
                });
                if let Some((site, _)) = live {
                    return Err(self.foreign(*site));
                }
            }
        }
        let their_epoch = theirs.epoch.as_ref().map(|e| e.stamp);
        let my_epoch = mine.and_then(|m| m.epoch.as_ref().map(|e| e.stamp));
        if let Some(e) = &theirs.epoch {
            self.stamp(e.stamp)?;
            if e.stamp.site != self.own {
                match mine.and_then(|m| m.epoch.as_ref()) {
                    Some(m) if m.stamp > e.stamp => {}
                    // The same restart (whether a removal had seen it is the remover's write).
                    Some(m) if m.stamp == e.stamp && m.base == e.base && m.seen == e.seen => {}
                    // Format 1: a counter that the peer's own increment re-created after a
                    // removal started from zero in an epoch (and era) stamped by that removal.
                    _ if theirs.era == Some(e.stamp)
                        && e.base == N::ZERO
                        && e.seen.is_empty()
                        && self.removed_since(e.stamp) => {}
                    _ => return Err(self.foreign(e.stamp.site)),
                }
            }
            if their_epoch >= my_epoch {
                // What the restart had seen: at most the totals the receiver will have.
                for (site, s) in &e.seen {
                    let total = joined_totals(theirs, mine, *site);
                    if !(grows(total.p, s.p) && grows(total.n, s.n)) {
                        return Err(self.foreign(*site));
                    }
                }
            }
        }
        for (site, c) in &theirs.contrib {
            self.clock(*site, c.last.hlc)?;
            self.stamp(c.last)?;
            // Totals of an older era are ignored by the join.
            if their_era < my_era {
                continue;
            }
            // What removals had observed is part of the totals.
            if !(grows(c.p, c.removed.p) && grows(c.n, c.removed.n)) {
                return Err(self.foreign(*site));
            }
            if *site == self.own && c.last.site == self.own {
                continue;
            }
            // Another site's totals: the receiver must have them (or more) already.
            let covered = mine.filter(|_| their_era == my_era).and_then(|m| {
                m.contrib
                    .get(site)
                    .filter(|mc| grows(mc.p, c.p) && grows(mc.n, c.n) && mc.last >= c.last)
            });
            if covered.is_none() {
                return Err(self.foreign(*site));
            }
        }
        Ok(())
    }

    fn map(&self, theirs: &MapNode, mine: Option<&MapNode>, ctx: &VersionVector) -> Check {
        if let Some(mark) = theirs.mark {
            self.stamp(mark)?;
            if mark.site != self.own && mine.and_then(|m| m.mark).is_none_or(|m| m < mark) {
                return Err(self.foreign(mark.site));
            }
        }
        for (k, slot) in &theirs.entries {
            self.slot(slot, mine.and_then(|m| m.entries.get(k)), ctx)?;
        }
        Ok(())
    }

    /// `inherited`: the receiver's removal context above the slot.
    fn slot(&self, theirs: &Slot, mine: Option<&Slot>, inherited: &VersionVector) -> Check {
        let ctx = match mine {
            Some(m) => m.ctx(inherited),
            None => std::borrow::Cow::Borrowed(inherited),
        };
        if let Some(r) = &theirs.reg {
            self.register(r, mine.and_then(|m| m.reg.as_ref()))?;
        }
        if let Some(r) = &theirs.att {
            self.register(r, mine.and_then(|m| m.att.as_ref()))?;
        }
        if let Some(c) = &theirs.ctr {
            self.counter(c, mine.and_then(|m| m.ctr.as_ref()), &ctx)?;
        }
        if let Some(c) = &theirs.pn {
            self.counter(c, mine.and_then(|m| m.pn.as_ref()), &ctx)?;
        }
        if let Some(t) = &theirs.tomb {
            // What the remover had seen may name any site, within what exists.
            self.vv(&t.ctx)?;
            let my_removers = mine.and_then(|m| m.tomb.as_ref()).map(|t| &t.removers);
            for (site, hlc) in t.removers.iter() {
                self.clock(site, hlc)?;
                if site != self.own && my_removers.is_none_or(|r| r.get(site) < hlc) {
                    return Err(self.foreign(site));
                }
            }
        }
        if let Some(m) = &theirs.map {
            self.map(m, mine.and_then(|s| s.map.as_ref()), &ctx)?;
        }
        Ok(())
    }
}

/// Every removal stamp under `slot`.
fn removals(slot: &Slot, out: &mut Vec<Stamp>) {
    if let Some(t) = &slot.tomb {
        out.extend(t.removers.iter().map(|(site, hlc)| Stamp::new(hlc, site)));
    }
    if let Some(m) = &slot.map {
        for e in m.entries.values() {
            removals(e, out);
        }
    }
}

/// The totals of `site` the receiver holds after joining `theirs` into `mine`.
fn joined_totals<N: CounterNum>(
    theirs: &Counter<N>,
    mine: Option<&Counter<N>>,
    site: crate::hlc::SiteId,
) -> Seen<N> {
    let of = |c: Option<&Counter<N>>| {
        c.and_then(|c| c.contrib.get(&site))
            .map(|k| Seen { p: k.p, n: k.n })
            .unwrap_or(Seen::ZERO)
    };
    let (t, m) = (of(Some(theirs)), of(mine));
    match theirs.era.cmp(&mine.and_then(|m| m.era)) {
        std::cmp::Ordering::Greater => t,
        std::cmp::Ordering::Less => m,
        std::cmp::Ordering::Equal => Seen {
            p: t.p.max(m.p),
            n: t.n.max(m.n),
        },
    }
}

/// `mine` at or above `theirs` (a per-site total only grows).
fn grows<N: CounterNum>(mine: N, theirs: N) -> bool {
    mine.max(theirs) == mine
}

impl Delta {
    /// Checks a delta sent by the peer of site `own` against the receiver's state `current`:
    /// the peer's own clock values are at most `bound`, and everything of another site is
    /// already in `current` (see the module documentation). The base is not checked: a base the
    /// receiver does not dominate makes the delta refused anyway.
    pub fn check_provenance(
        &self,
        current: &Doc,
        own: SiteId,
        bound: Hlc,
    ) -> Result<(), ProvenanceError> {
        let mut found = Vec::new();
        removals(&current.root, &mut found);
        let rules = Rules {
            own,
            bound,
            known: &current.vv,
            removals: found,
        };
        rules.vv(&self.state.vv)?;
        rules.slot(&self.state.root, Some(&current.root), &VersionVector::new())
    }
}
