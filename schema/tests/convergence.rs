//! Convergence simulation: N replicas write at random and exchange encoded deltas over links
//! that reorder, duplicate and drop messages; deltas are computed against a possibly stale
//! cached view of the receiver's version vector, or an optimistic one the receiver refuses.
//! After healing (reliable all-pairs sync to quiescence) every replica holds the same state and
//! the same JSON, and every message still in flight is a no-op.

mod common;

use std::collections::BTreeMap;

use bigpeer_schema::{Delta, Doc, Op, SchemaError, VersionVector};
use common::{
    check_prefix_closure, config, overlapping, round_trip_delta, round_trip_doc, statement,
    Replica, BIG_SKEW_MS, T0_MS,
};
use proptest::prelude::*;
use proptest::sample::Index;

#[derive(Debug, Clone)]
enum Event {
    /// A local statement at a replica; the simulated wall clock advances by `dt_ms`.
    Write {
        replica: Index,
        ops: Vec<Op>,
        dt_ms: u64,
        /// A DQL strict-mode statement (writes touch only their own type).
        typed: bool,
    },
    /// `from` sends a delta to `to` against its cached view of `to`'s vv. With `optimistic`,
    /// `from` then assumes the delta arrives and raises its cache to its own vv (pushes without
    /// a round trip); when a message is lost or overtaken, `to` refuses a later delta whose base
    /// it does not dominate and answers with its vv, which resets the cache.
    Send {
        from: Index,
        to: Index,
        optimistic: bool,
    },
    /// Delivers one message of one non-empty link, in any order; `duplicate` leaves a copy in
    /// the queue to be delivered again later.
    Deliver {
        link: Index,
        msg: Index,
        duplicate: bool,
    },
    /// Loses one message (the sender resends later: its cache did not advance).
    Drop { link: Index, msg: Index },
}

#[derive(Debug, Clone)]
enum Msg {
    /// An encoded delta.
    Delta(Vec<u8>),
    /// The receiver's version vector, sent back after applying a delta (`want: false`) or
    /// refusing one (`want: true`).
    Ack { vv: VersionVector, want: bool },
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        7 => (any::<Index>(), statement(), 0u64..4, prop::bool::weighted(0.3))
            .prop_map(|(replica, ops, dt_ms, typed)| Event::Write { replica, ops, dt_ms, typed }),
        5 => (any::<Index>(), any::<Index>(), prop::bool::weighted(0.4))
            .prop_map(|(from, to, optimistic)| Event::Send { from, to, optimistic }),
        6 => (any::<Index>(), any::<Index>(), prop::bool::weighted(0.15))
            .prop_map(|(link, msg, duplicate)| Event::Deliver { link, msg, duplicate }),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(link, msg)| Event::Drop { link, msg }),
    ]
}

struct Sim {
    replicas: Vec<Replica>,
    /// `cache[i][j]`: what `i` believes `j`'s version vector is (above it after optimistic
    /// sends, otherwise at or below it).
    cache: Vec<Vec<VersionVector>>,
    /// Per directed link `(from, to)`, the messages in flight.
    links: BTreeMap<(usize, usize), Vec<Msg>>,
    now: u64,
    sent: usize,
    refused: usize,
}

impl Sim {
    fn new(n: usize, skew: bool) -> Sim {
        Sim {
            replicas: (0..n)
                .map(|i| {
                    Replica::new(
                        i,
                        if skew && i == 0 {
                            BIG_SKEW_MS
                        } else {
                            (i as u64) * 7
                        },
                    )
                })
                .collect(),
            cache: vec![vec![VersionVector::new(); n]; n],
            links: BTreeMap::new(),
            now: T0_MS,
            sent: 0,
            refused: 0,
        }
    }

    fn n(&self) -> usize {
        self.replicas.len()
    }

    fn send(&mut self, from: usize, to: usize, optimistic: bool) {
        let delta = self.replicas[from].doc.delta(&self.cache[from][to]);
        if delta.is_empty() {
            return;
        }
        let bytes = delta.encode();
        assert_eq!(
            Delta::decode(&bytes).as_ref(),
            Ok(&delta),
            "delta codec round trip"
        );
        self.links
            .entry((from, to))
            .or_default()
            .push(Msg::Delta(bytes));
        self.sent += 1;
        if optimistic {
            self.cache[from][to].join(&delta.state.vv);
        }
    }

    /// The non-empty link chosen by `link`, if any.
    fn link(&self, link: &Index) -> Option<(usize, usize)> {
        let live: Vec<(usize, usize)> = self
            .links
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(k, _)| *k)
            .collect();
        (!live.is_empty()).then(|| live[link.index(live.len())])
    }

    fn deliver(&mut self, (from, to): (usize, usize), msg: Msg) {
        match msg {
            Msg::Ack { vv, want: false } => self.cache[to][from].join(&vv),
            Msg::Ack { vv, want: true } => self.cache[to][from] = vv,
            Msg::Delta(bytes) => {
                let delta = Delta::decode(&bytes).expect("a message in flight decodes");
                let now = self.now;
                let want = match self.replicas[to].receive(&delta, now) {
                    Ok(()) => false,
                    Err(SchemaError::BaseNotDominated) => {
                        self.refused += 1;
                        true
                    }
                    Err(e) => panic!("unexpected error applying a delta: {e}"),
                };
                // Applied or refused, the receiver tells the sender where it is.
                let vv = self.replicas[to].doc.vv.clone();
                self.links
                    .entry((to, from))
                    .or_default()
                    .push(Msg::Ack { vv, want });
            }
        }
    }

    fn run(&mut self, ev: &Event) {
        let n = self.n();
        match ev {
            Event::Write {
                replica,
                ops,
                dt_ms,
                typed,
            } => {
                self.now += dt_ms;
                let now = self.now;
                let _ = self.replicas[replica.index(n)].write_with(ops, now, *typed);
            }
            Event::Send {
                from,
                to,
                optimistic,
            } => {
                let (f, t) = (from.index(n), to.index(n));
                if f != t {
                    self.send(f, t, *optimistic);
                }
            }
            Event::Deliver {
                link,
                msg,
                duplicate,
            } => {
                if let Some(l) = self.link(link) {
                    let q = self.links.get_mut(&l).expect("live link");
                    let i = msg.index(q.len());
                    let m = if *duplicate {
                        q[i].clone()
                    } else {
                        q.remove(i)
                    };
                    self.deliver(l, m);
                }
            }
            Event::Drop { link, msg } => {
                if let Some(l) = self.link(link) {
                    let q = self.links.get_mut(&l).expect("live link");
                    let i = msg.index(q.len());
                    q.remove(i);
                }
            }
        }
    }

    /// Reliable all-pairs sync until a whole round changes nothing. Returns the rounds used.
    fn heal(&mut self) -> usize {
        let n = self.n();
        for round in 1..=8 {
            let mut changed = false;
            for from in 0..n {
                for to in 0..n {
                    if from == to {
                        continue;
                    }
                    let delta = self.replicas[from].doc.delta(&self.replicas[to].doc.vv);
                    let delta = round_trip_delta(&delta);
                    let before = self.replicas[to].doc.clone();
                    let now = self.now;
                    self.replicas[to]
                        .receive(&delta, now)
                        .expect("a delta against the receiver's own vv applies");
                    changed |= self.replicas[to].doc != before;
                }
            }
            if !changed {
                return round;
            }
        }
        panic!("sync did not reach quiescence in 8 rounds");
    }

    fn assert_converged(&self) {
        let first = &self.replicas[0].doc;
        for (i, r) in self.replicas.iter().enumerate().skip(1) {
            assert_eq!(&r.doc.vv, &first.vv, "replica {i}: version vector differs");
            assert_eq!(&r.doc, first, "replica {i}: state differs");
            assert_eq!(
                r.doc.materialize(),
                first.materialize(),
                "replica {i}: JSON differs"
            );
            assert_eq!(
                r.doc.shape(),
                first.shape(),
                "replica {i}: typed state differs"
            );
        }
        check_prefix_closure(first);
        round_trip_doc(first);
    }
}

fn simulate(n: usize, skew: bool, events: &[Event]) -> Sim {
    let mut sim = Sim::new(n, skew);
    let sequential = !events
        .iter()
        .any(|e| matches!(e, Event::Write { ops, .. } if overlapping(ops)));
    for r in &mut sim.replicas {
        r.check_writes = sequential;
    }
    for ev in events {
        sim.run(ev);
    }
    // The union of all states (what a perfect network would have produced).
    let mut union = Doc::new();
    for r in &sim.replicas {
        union.join(&r.doc);
    }
    let rounds = sim.heal();
    assert!(rounds <= 2, "healing took {rounds} rounds");
    sim.assert_converged();
    assert_eq!(
        &sim.replicas[0].doc, &union,
        "healed state is not the join of the replicas' states"
    );

    // Every message still in flight is old news: applying it changes nothing.
    let settled = sim.replicas[0].doc.clone();
    let pending: Vec<((usize, usize), Msg)> = sim
        .links
        .iter()
        .flat_map(|(l, q)| q.iter().map(|m| (*l, m.clone())))
        .collect();
    for (l, m) in pending {
        if let Msg::Delta(_) = m {
            sim.deliver(l, m);
            assert_eq!(
                &sim.replicas[l.1].doc, &settled,
                "a late message changed a healed replica"
            );
        }
    }
    sim
}

proptest! {
    #![proptest_config(config(1000))]

    /// 3 to 5 replicas, lossy reordering duplicating links, stale and optimistic delta bases.
    #[test]
    fn replicas_converge_over_a_lossy_network(
        n in 3usize..=5,
        events in prop::collection::vec(event(), 1..70),
    ) {
        simulate(n, false, &events);
    }

    /// The same with one replica's wall clock beyond the HLC admission bound: the others refuse
    /// to follow its clock, so their later writes carry smaller stamps than what they have seen.
    /// Last-writer-wins then favours the skewed site, but replicas must still converge.
    #[test]
    fn replicas_converge_with_a_skewed_clock(
        n in 3usize..=4,
        events in prop::collection::vec(event(), 1..50),
    ) {
        simulate(n, true, &events);
    }
}

/// A fixed long run, so that the simulation does not only ever see short schedules.
#[test]
fn long_schedule_converges() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let mut total_sent = 0;
    let mut total_refused = 0;
    for skew in [false, true] {
        let events = prop::collection::vec(event(), 600)
            .new_tree(&mut runner)
            .expect("a schedule")
            .current();
        let sim = simulate(5, skew, &events);
        total_sent += sim.sent;
        total_refused += sim.refused;
    }
    // The schedule exercised both paths of delta application.
    assert!(total_sent > 100, "only {total_sent} deltas sent");
    assert!(total_refused > 0, "no optimistic delta was ever refused");
}
