//! `Delta::check_provenance` in the big peer's topology: small peers write at random, push their
//! deltas to the hub (against a possibly stale idea of what it has, or as full states) and pull
//! the hub's state. Every push of a peer's own writes passes the check (no legitimate write is
//! ever refused), and the same push with one of another site's parts forged, or with a stamp
//! past the bound, is refused.

mod common;

use bigpeer_schema::crdt::Slot;
use bigpeer_schema::{Delta, Doc, Hlc, ProvenanceError, SiteId, Value, VersionVector};
use common::{config, overlapping, statement, Replica, T0_MS};
use proptest::prelude::*;
use proptest::sample::Index;

#[derive(Debug, Clone)]
enum Event {
    Write {
        peer: Index,
        ops: Vec<bigpeer_schema::Op>,
        dt_ms: u64,
    },
    /// The peer pushes against what it last knew the hub to have (`full`: against nothing).
    Push { peer: Index, full: bool },
    /// The peer takes the hub's state.
    Pull { peer: Index },
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        5 => (any::<Index>(), statement(), 0u64..3).prop_map(|(peer, ops, dt_ms)| Event::Write { peer, ops, dt_ms }),
        3 => (any::<Index>(), any::<bool>()).prop_map(|(peer, full)| Event::Push { peer, full }),
        3 => any::<Index>().prop_map(|peer| Event::Pull { peer }),
    ]
}

/// Far beyond any clock of the run.
const BOUND: Hlc = Hlc(u64::MAX - 1);

/// Changes the first part of `slot` stamped by another site than `own`: a register value, a
/// counter total. `true` when something was changed.
fn forge(slot: &mut Slot, own: SiteId) -> bool {
    for r in [&mut slot.reg, &mut slot.att].into_iter().flatten() {
        if r.stamp.site != own && r.value.is_some() {
            r.value = Some(Value::String("forged".into()));
            return true;
        }
    }
    if let Some(c) = &mut slot.pn {
        if let Some((_, contrib)) = c.contrib.iter_mut().find(|(s, _)| **s != own) {
            contrib.p += 1000.0;
            return true;
        }
    }
    if let Some(c) = &mut slot.ctr {
        if let Some((_, contrib)) = c.contrib.iter_mut().find(|(s, _)| **s != own) {
            contrib.p = contrib.p.wrapping_add(1000);
            return true;
        }
    }
    if let Some(m) = &mut slot.map {
        for e in m.entries.values_mut() {
            if forge(e, own) {
                return true;
            }
        }
    }
    false
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn a_peers_own_writes_always_pass_and_forgeries_never(
        events in prop::collection::vec(event(), 1..40)
    ) {
        // Read-your-writes is checked as in the convergence simulation (not with statements
        // whose paths overlap); this property is about provenance.
        let check_writes = !events
            .iter()
            .any(|e| matches!(e, Event::Write { ops, .. } if overlapping(ops)));
        let mut peers: Vec<Replica> = (0..3)
            .map(|i| {
                let mut r = Replica::new(i, 0);
                r.check_writes = check_writes;
                r
            })
            .collect();
        // What each peer last knew the hub to have.
        let mut known: Vec<VersionVector> = vec![VersionVector::new(); peers.len()];
        let mut hub = Doc::new();
        let mut now = T0_MS;
        for e in events {
            match e {
                Event::Write { peer, ops, dt_ms } => {
                    now += dt_ms;
                    let p = peer.index(peers.len());
                    let _ = peers[p].write(&ops, now);
                }
                Event::Push { peer, full } => {
                    let p = peer.index(peers.len());
                    let own = peers[p].clock.site();
                    let base = if full { VersionVector::new() } else { known[p].clone() };
                    let delta = peers[p].doc.delta(&base);
                    prop_assert_eq!(delta.check_provenance(&hub, own, BOUND), Ok(()));
                    // Past the bound: refused when the peer wrote anything.
                    if delta.state.vv.get(own) > Hlc::ZERO {
                        let tight = Hlc(delta.state.vv.get(own).0 - 1);
                        let refused = matches!(
                            delta.check_provenance(&hub, own, tight),
                            Err(ProvenanceError::ClockAhead { .. })
                        );
                        prop_assert!(refused);
                    }
                    // Another site's part forged: refused, unless joining it changes nothing
                    // that the genuine state would not (a part the hub has removed or
                    // restarted since).
                    let genuine = Delta { base: VersionVector::new(), state: peers[p].doc.clone() };
                    let mut forged = genuine.clone();
                    if forge(&mut forged.state.root, own) {
                        let refused = matches!(
                            forged.check_provenance(&hub, own, BOUND),
                            Err(ProvenanceError::ForeignWrite { .. })
                        );
                        let (mut with_forged, mut with_genuine) = (hub.clone(), hub.clone());
                        with_forged.join(&forged.state);
                        with_genuine.join(&genuine.state);
                        prop_assert!(refused || with_forged == with_genuine, "a forged part passed");
                    }
                    // Claiming the hub's knowledge of another site past what it has: refused.
                    let other = SiteId(own.0 ^ 1);
                    let mut claims = delta.clone();
                    claims.state.vv.observe(other, Hlc(hub.vv.get(other).0 + 1));
                    let refused = matches!(
                        claims.check_provenance(&hub, own, BOUND),
                        Err(ProvenanceError::ForeignWrite { .. })
                    );
                    prop_assert!(refused);
                    if hub.apply_delta(&delta).is_ok() {
                        known[p] = hub.vv.clone();
                    }
                }
                Event::Pull { peer } => {
                    let p = peer.index(peers.len());
                    peers[p].join(&hub, now);
                    known[p] = hub.vv.clone();
                }
            }
        }
    }
}
