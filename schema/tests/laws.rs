//! Algebraic laws of the document CRDT over reachable states: the join is a semilattice join,
//! deltas are equivalent to full states, the codec round-trips, and prefix closure holds.

mod common;

use bigpeer_schema::{Delta, Doc, SchemaError, VersionVector};
use common::{
    check_prefix_closure, config, joined, lower, round_trip_delta, round_trip_doc, run_history,
    step, Step,
};
use proptest::prelude::*;
use proptest::sample::Index;

const SITES: usize = 3;

fn history() -> impl Strategy<Value = (bool, Vec<Step>)> {
    (
        prop::bool::weighted(0.2),
        prop::collection::vec(step(), 1..28),
    )
}

fn pick<'a>(pool: &'a [Doc], i: &Index) -> &'a Doc {
    &pool[i.index(pool.len())]
}

proptest! {
    #![proptest_config(config(1000))]

    /// `join` is commutative, associative and idempotent, on states and on materialised JSON,
    /// and its result keeps prefix closure and survives the codec.
    #[test]
    fn join_is_a_semilattice((skewed, steps) in history(), i in any::<Index>(), j in any::<Index>(), k in any::<Index>()) {
        let (_, pool) = run_history(SITES, skewed, &steps);
        let (a, b, c) = (pick(&pool, &i), pick(&pool, &j), pick(&pool, &k));

        let ab = joined(a, b);
        let ba = joined(b, a);
        prop_assert_eq!(&ab, &ba, "commutativity");
        prop_assert_eq!(ab.materialize(), ba.materialize());

        let ab_c = joined(&ab, c);
        let a_bc = joined(a, &joined(b, c));
        prop_assert_eq!(&ab_c, &a_bc, "associativity");
        prop_assert_eq!(ab_c.materialize(), a_bc.materialize());

        prop_assert_eq!(&joined(a, a), a, "idempotence");
        prop_assert_eq!(&joined(&ab, b), &ab, "absorption");

        for d in [&ab, &ab_c] {
            check_prefix_closure(d);
            let back = round_trip_doc(d);
            prop_assert_eq!(back.materialize(), d.materialize());
        }
    }

    /// `join(r, delta(s, base)) == join(r, s)` for `base` = `r.vv`, the empty vector and any
    /// vector below `r.vv`; a delta whose base `r` does not dominate is refused and changes
    /// nothing; deltas round-trip through the codec.
    #[test]
    fn deltas_are_equivalent_to_states(
        (skewed, steps) in history(),
        i in any::<Index>(),
        j in any::<Index>(),
        choice in prop::collection::vec(any::<u8>(), 0..6),
    ) {
        let (_, pool) = run_history(SITES, skewed, &steps);
        let (r, s) = (pick(&pool, &i), pick(&pool, &j));
        let want = joined(r, s);

        let bases = [r.vv.clone(), VersionVector::new(), lower(&r.vv, &choice)];
        for base in &bases {
            let delta = s.delta(base);
            prop_assert_eq!(&delta.base, base);
            prop_assert_eq!(&delta.state.vv, &s.vv);
            let delta = round_trip_delta(&delta);
            let mut got = r.clone();
            got.apply_delta(&delta).expect("a delta against a dominated base applies");
            prop_assert_eq!(&got, &want, "delta against {:?}", base);
            // By value: the same state, also when it is moved into an empty document.
            let mut owned = r.clone();
            owned.apply_delta_owned(delta.clone()).expect("applies by value");
            prop_assert_eq!(&owned, &want, "owned delta against {:?}", base);
            if base.is_empty() {
                let mut fresh = Doc::new();
                fresh.apply_delta_owned(delta.clone()).expect("applies to a new document");
                prop_assert_eq!(&fresh, &joined(&Doc::new(), s));
            }
            prop_assert_eq!(got.materialize(), want.materialize());
        }

        // The minimal delta carries nothing the receiver already has.
        let minimal = s.delta(&r.vv);
        if r.vv.dominates(&s.vv) && r == &want {
            prop_assert!(minimal.is_empty(), "delta to an up-to-date receiver is not empty: {:?}", minimal);
        }

        // A base the receiver does not dominate: refused, nothing changes.
        let mut above = r.vv.clone();
        let site = s.vv.iter().next().map(|(site, _)| site).unwrap_or(bigpeer_schema::SiteId(7));
        above.observe(site, bigpeer_schema::Hlc(r.vv.get(site).0 + 1));
        let mut refused = r.clone();
        prop_assert_eq!(refused.apply_delta(&s.delta(&above)), Err(SchemaError::BaseNotDominated));
        prop_assert_eq!(&refused, r);
        if !r.vv.dominates(&s.vv) {
            let mut refused = r.clone();
            prop_assert_eq!(refused.apply_delta(&s.delta(&s.vv)), Err(SchemaError::BaseNotDominated));
            prop_assert_eq!(&refused, r);
        }
    }

    /// Every state of a history round-trips through the codec, keeps prefix closure, and the
    /// states of one history are joined in any order to the same result.
    #[test]
    fn states_round_trip_and_merge_in_any_order((skewed, steps) in history(), order in Just(()).prop_perturb(|_, mut rng| rng.next_u64())) {
        let (replicas, pool) = run_history(SITES, skewed, &steps);
        for d in &pool {
            check_prefix_closure(d);
            round_trip_doc(d);
            round_trip_delta(&Delta { base: VersionVector::new(), state: d.clone() });
            // The full-state delta made from the stored bytes is the one made from the tree.
            let full = Delta { base: VersionVector::new(), state: d.clone() };
            let (bytes, vv) = Delta::encode_full_state(&d.encode()).expect("a document's encoding converts");
            prop_assert_eq!(&bytes, &full.encode());
            prop_assert_eq!(&vv, &d.vv);
        }
        // Joining all states forwards and in a shuffled order gives the same state.
        let mut fwd = Doc::new();
        for d in &pool {
            fwd.join(d);
        }
        let mut idx: Vec<usize> = (0..pool.len()).collect();
        let mut x = order | 1;
        for n in (1..idx.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            idx.swap(n, (x % (n as u64 + 1)) as usize);
        }
        let mut shuffled = Doc::new();
        for n in idx {
            shuffled.join(&pool[n]);
        }
        prop_assert_eq!(&fwd, &shuffled);
        // The replicas' final states together hold everything.
        let mut finals = Doc::new();
        for r in &replicas {
            finals.join(&r.doc);
        }
        prop_assert_eq!(&finals, &fwd);
    }
}

/// A byte-level change to an encoding.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Insert(Index, u8),
    Remove(Index),
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 1u8..).prop_map(|(i, m)| Mutation::Flip(i, m)),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => any::<Index>().prop_map(Mutation::Remove),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    match m {
        Mutation::Flip(i, x) => {
            let i = i.index(bytes.len());
            bytes[i] ^= x;
        }
        Mutation::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), *b),
        Mutation::Remove(i) => {
            bytes.remove(i.index(bytes.len()));
        }
        Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len())),
    }
}

fn is_decode_error(e: &SchemaError) -> bool {
    matches!(
        e,
        SchemaError::Corrupt(_) | SchemaError::UnsupportedVersion(_)
    )
}

proptest! {
    #![proptest_config(config(1000))]

    /// Damaged encodings of reachable states and deltas decode to an error or to something
    /// usable, never to a panic.
    #[test]
    fn damaged_encodings_never_panic(
        (skewed, steps) in history(),
        i in any::<Index>(),
        j in any::<Index>(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let (_, pool) = run_history(SITES, skewed, &steps);
        let (a, b) = (pick(&pool, &i), pick(&pool, &j));
        let mut doc = a.encode();
        let mut delta = a.delta(&b.vv).encode();
        for m in &mutations {
            mutate(&mut doc, m);
            mutate(&mut delta, m);
        }
        match Doc::decode(&doc) {
            Ok(d) => {
                let again = Doc::decode(&d.encode()).expect("a decoded document re-encodes");
                prop_assert_eq!(&again, &d);
                let _ = joined(b, &d).materialize();
            }
            Err(e) => prop_assert!(is_decode_error(&e), "{:?}", e),
        }
        match Delta::decode(&delta) {
            Ok(d) => {
                let again = Delta::decode(&d.encode()).expect("a decoded delta re-encodes");
                prop_assert_eq!(&again, &d);
                let mut r = b.clone();
                if r.apply_delta(&d).is_ok() {
                    let _ = r.materialize();
                }
            }
            Err(e) => prop_assert!(is_decode_error(&e), "{:?}", e),
        }
    }
}
