//! `Delta::check_provenance` in the big peer's topology: small peers write at random, push their
//! deltas to the hub (against a possibly stale idea of what it has, or as full states) and pull
//! the hub's state. Every push of a peer's own writes passes the check (no legitimate write is
//! ever refused), and the same push with one of another site's parts forged, or with a stamp
//! past the bound, is refused.

mod common;

use bigpeer_schema::crdt::{CounterNum, Seen, Slot};
use bigpeer_schema::{
    CounterKind, Delta, Doc, Hlc, Op, ProvenanceError, SiteId, Value, VersionVector,
};
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

/// Raises what a removal or a restart recorded of another site's totals above those totals: the
/// removed part of a contribution, or what a restart had seen. `true` when something changed.
fn forge_floor(slot: &mut Slot, own: SiteId) -> bool {
    /// `x` plus at least 1000 (`None` when that does not fit).
    fn beyond<N: CounterNum>(x: N, more: N) -> Option<N> {
        let y = x.add(more).add(more);
        (x.max(y) != x).then_some(y)
    }
    fn counter<N: CounterNum>(
        c: &mut bigpeer_schema::crdt::Counter<N>,
        own: SiteId,
        more: fn(N) -> N,
    ) -> bool {
        for (_, k) in c.contrib.iter_mut().filter(|(s, _)| **s != own) {
            if let Some(p) = beyond(k.p, more(k.p)) {
                k.removed.p = p;
                return true;
            }
        }
        let Some(e) = &mut c.epoch else { return false };
        for (site, s) in e.seen.iter_mut().filter(|(s, _)| **s != own) {
            let total = c.contrib.get(site).map_or(N::ZERO, |k| k.p);
            if let Some(p) = beyond(total, more(total)) {
                s.p = p;
                return true;
            }
        }
        false
    }
    if slot
        .pn
        .as_mut()
        .is_some_and(|c| counter(c, own, |x: f64| x.abs() + 1000.0))
        || slot.ctr.as_mut().is_some_and(|c| counter(c, own, |_| 1000))
    {
        return true;
    }
    if let Some(m) = &mut slot.map {
        for e in m.entries.values_mut() {
            if forge_floor(e, own) {
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
                    for forgery in [forge, forge_floor] {
                        let mut forged = genuine.clone();
                        if forgery(&mut forged.state.root, own) {
                            let refused = matches!(
                                forged.check_provenance(&hub, own, BOUND),
                                Err(ProvenanceError::ForeignWrite { .. })
                            );
                            let (mut with_forged, mut with_genuine) = (hub.clone(), hub.clone());
                            with_forged.join(&forged.state);
                            with_genuine.join(&genuine.state);
                            prop_assert!(refused || with_forged == with_genuine, "a forged part passed");
                        }
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

/// The hub holds site 1's counter total of 10; site 2 took it.
fn hub_with_a_counter() -> (Doc, Replica, SiteId) {
    let mut one = Replica::new(1, 0);
    let inc = Op::Increment {
        path: vec!["n".into()],
        by: Value::Int(10),
        kind: CounterKind::Counter,
    };
    one.write(&[inc], T0_MS).expect("applies");
    let mut hub = Doc::new();
    hub.apply_delta(&one.doc.delta(&VersionVector::new()))
        .expect("applies");
    let mut two = Replica::new(2, 0);
    two.join(&hub, T0_MS);
    (hub, two, one.clock.site())
}

fn counter_of(doc: &mut Doc) -> &mut bigpeer_schema::crdt::Counter<i64> {
    doc.root
        .map
        .as_mut()
        .and_then(|m| m.entries.get_mut("n"))
        .and_then(|s| s.ctr.as_mut())
        .expect("the counter")
}

#[test]
fn removed_and_seen_totals_cannot_exceed_the_totals_that_exist() {
    let (hub, two, one) = hub_with_a_counter();
    let own = two.clock.site();
    let push = |doc: &Doc| {
        Delta {
            base: VersionVector::new(),
            state: doc.clone(),
        }
        .check_provenance(&hub, own, BOUND)
    };
    let refused = Err(ProvenanceError::ForeignWrite { site: one });

    // A genuine removal removes the 10 it saw; a genuine restart records having seen it.
    let mut removed = two.clone();
    removed
        .write(
            &[Op::Unset {
                path: vec!["n".into()],
            }],
            T0_MS + 1,
        )
        .expect("applies");
    assert_eq!(counter_of(&mut removed.doc).contrib[&one].removed.p, 10);
    assert_eq!(push(&removed.doc), Ok(()));
    let mut restarted = two.clone();
    restarted
        .write(
            &[Op::Restart {
                path: vec!["n".into()],
                to: 3,
            }],
            T0_MS + 1,
        )
        .expect("applies");
    assert_eq!(push(&restarted.doc), Ok(()));

    // More removed than site 1 counted: it would hide site 1's next increments.
    let mut forged = removed.doc.clone();
    counter_of(&mut forged)
        .contrib
        .get_mut(&one)
        .expect("site 1")
        .removed = Seen { p: 1000, n: 0 };
    assert_eq!(push(&forged), refused);
    // The same with site 1's total raised to match.
    let c = counter_of(&mut forged)
        .contrib
        .get_mut(&one)
        .expect("site 1");
    c.p = 1000;
    assert_eq!(push(&forged), refused);
    // A restart that claims to have seen more of site 1 than exists.
    let mut forged = restarted.doc.clone();
    if let Some(e) = counter_of(&mut forged).epoch.as_mut() {
        e.seen.insert(one, Seen { p: 11, n: 0 });
    }
    assert_eq!(push(&forged), refused);
    // Or decrements of site 1 that do not exist.
    let mut forged = restarted.doc.clone();
    if let Some(e) = counter_of(&mut forged).epoch.as_mut() {
        e.seen.insert(one, Seen { p: 10, n: 1 });
    }
    assert_eq!(push(&forged), refused);

    // A format 1 era (which replaces the totals in the join) of its own, over site 1's live
    // total: refused; another site's era too.
    let mut era = two.doc.clone();
    counter_of(&mut era).era = Some(bigpeer_schema::Stamp::new(Hlc(1), own));
    assert_eq!(push(&era), refused);
    let mut era = two.doc.clone();
    let c = counter_of(&mut era);
    c.era = Some(c.contrib[&one].last);
    assert_eq!(push(&era), refused);
    // Over a total the hub no longer shows (site 2 removed it first), its own era passes (in
    // format 1 an era started with no totals).
    let mut hub = hub.clone();
    hub.apply_delta(&removed.doc.delta(&hub.vv))
        .expect("applies");
    let mut era = removed.doc.clone();
    let site_two_stamp = bigpeer_schema::Stamp::new(removed.doc.vv.get(own), own);
    let c = counter_of(&mut era);
    c.era = Some(site_two_stamp);
    c.contrib.clear();
    let pushed = Delta {
        base: VersionVector::new(),
        state: era,
    };
    assert_eq!(pushed.check_provenance(&hub, own, BOUND), Ok(()));
}
