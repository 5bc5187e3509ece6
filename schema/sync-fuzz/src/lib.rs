//! The bodies of the sync protocol's fuzz targets.
//!
//! `schema/fuzz` holds the cargo-fuzz targets (nightly, libFuzzer); each is one line calling a
//! function here. This crate is a workspace member, so the same bodies run on stable in every
//! test run (`tests/targets.rs`): over the committed seed corpus (`schema/fuzz/corpus/<target>`)
//! and over thousands of seeded random inputs. A panic is a finding.
//!
//! - [`frame`]: any bytes as one sync frame (`wire::Msg::decode`).
//! - [`states`]: any bytes as encoded deltas and document states, and the join laws on them.
//! - [`structured`]: bytes driving [`gen`] (random documents, operations, stamps, sites), and
//!   the CRDT laws on what it builds.
//!
//! [`gen`] is also what the integration tests use to push random deltas at a real server.

pub mod gen;

use bigpeer_schema::wire::Msg;
use bigpeer_schema::{Delta, Doc};

/// Target `frame`: decoding never panics, and a decoded message re-encodes to a frame that
/// decodes back to the same message (compared by its encoding: a float may be NaN). The deltas a
/// message carries obey [`states`]' laws.
pub fn frame(data: &[u8]) {
    let Ok(msg) = Msg::decode(data) else { return };
    let bytes = msg.encode();
    let again = match Msg::decode(&bytes) {
        Ok(m) => m,
        Err(e) => panic!("a re-encoded {} does not decode: {e}", msg.name()),
    };
    assert_eq!(
        again.encode(),
        bytes,
        "{} does not re-encode the same",
        msg.name()
    );
    if let Msg::Push { changes, .. } | Msg::Batch { changes, .. } = &msg {
        for c in changes {
            delta_laws(&c.delta);
        }
    }
}

/// Target `states`: the first byte splits the rest into two parts, each decoded as a [`Delta`]
/// and as a [`Doc`]. Decoding never panics; what decodes re-encodes to the same bytes on a
/// second round; joins of decoded states are idempotent and commutative.
pub fn states(data: &[u8]) {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let at = rest.len() * usize::from(cut) / 255;
    let (a, b) = rest.split_at(at);
    let mut docs = Vec::new();
    for part in [a, b] {
        if let Ok(d) = Delta::decode(part) {
            delta_laws(&d);
            docs.push(d.state);
        }
        if let Ok(d) = Doc::decode(part) {
            doc_round_trip(&d);
            docs.push(d);
        }
    }
    for x in &docs {
        for y in &docs {
            join_laws(x, y);
        }
    }
}

/// Target `structured`: bytes driving [`gen`].
///
/// - Hostile states (any stamps, any sites, made up version vectors): the laws of [`states`].
/// - Honest replicas (three sites, each with a clock that only goes forward, from any start, up
///   to `u64::MAX`): each step one replica writes random operations or receives another's delta
///   against its own version vector. Every delta applies, and applying a delta gives the join.
///   At the end every pair obeys the join laws and delta exchange gives the join.
pub fn structured(data: &[u8]) {
    let mut u = arbitrary::Unstructured::new(data);
    let Ok(a) = gen::doc(&mut u) else { return };
    let Ok(b) = gen::doc(&mut u) else { return };
    let Ok(base) = gen::version_vector(&mut u, &[&a]) else {
        return;
    };
    for d in [&a, &b] {
        doc_round_trip(d);
        delta_laws(&d.delta(&base));
        delta_laws(&d.delta(&Default::default()));
    }
    join_laws(&a, &b);
    let _ = replicas(&mut u);
}

fn replicas(u: &mut arbitrary::Unstructured) -> arbitrary::Result<()> {
    use bigpeer_schema::{Hlc, SiteId, Stamp};
    let g = gen::Gen::default();
    let mut docs = vec![Doc::new(), Doc::new(), Doc::new()];
    let mut clocks: Vec<u64> = (0..3)
        .map(|_| g.hlc(u).map(|h| h.0))
        .collect::<Result<_, _>>()?;
    for _ in 0..u.int_in_range(0..=24)? {
        let r = u.int_in_range(0..=2usize)?;
        if u.ratio(1, 2)? {
            // A local write, one tick later (never past u64::MAX).
            let Some(next) = clocks[r].checked_add(u.int_in_range(1..=1u64 << 20)?) else {
                continue;
            };
            clocks[r] = next;
            let ops = (0..u.int_in_range(1..=3)?)
                .map(|_| g.op(u))
                .collect::<arbitrary::Result<Vec<_>>>()?;
            let stamp = Stamp::new(Hlc(next), SiteId(r as u128 + 1));
            let _ = docs[r].apply(&ops, stamp);
        } else {
            let q = u.int_in_range(0..=2usize)?;
            let delta = docs[q].delta(&docs[r].vv);
            delta_laws(&delta);
            let mut joined = docs[r].clone();
            joined.join(&docs[q]);
            if let Err(e) = docs[r].apply_delta(&delta) {
                panic!("a delta against the receiver's own version vector is refused: {e}");
            }
            assert_eq!(
                docs[r].encode(),
                joined.encode(),
                "applying a replica's delta is not the join"
            );
        }
    }
    for x in &docs {
        doc_round_trip(x);
        for y in &docs {
            join_laws(x, y);
            let mut via_delta = y.clone();
            if via_delta.apply_delta(&x.delta(&y.vv)).is_err() {
                panic!("a delta against the receiver's own version vector is refused");
            }
            let mut joined = y.clone();
            joined.join(x);
            assert_eq!(
                via_delta.encode(),
                joined.encode(),
                "delta exchange is not the join"
            );
        }
    }
    Ok(())
}

/// A decoded delta re-encodes to bytes that decode to the same delta; applying it to an empty
/// replica either is refused (a base the replica lacks) or gives a state that materialises.
fn delta_laws(d: &Delta) {
    let bytes = d.encode();
    let again = Delta::decode(&bytes).unwrap_or_else(|e| panic!("a re-encoded delta fails: {e}"));
    assert_eq!(again.encode(), bytes, "a delta does not re-encode the same");
    let mut fresh = Doc::new();
    if fresh.apply_delta(d).is_ok() {
        let _ = fresh.materialize();
        doc_round_trip(&fresh);
    }
}

fn doc_round_trip(d: &Doc) {
    let bytes = d.encode();
    let again = Doc::decode(&bytes).unwrap_or_else(|e| panic!("a re-encoded state fails: {e}"));
    assert_eq!(again.encode(), bytes, "a state does not re-encode the same");
    let _ = d.materialize();
    let _ = d.max_stamp();
}

/// Idempotent and commutative join, from the normal form (a decoded state may not be normal;
/// joining it into an empty state normalises it).
fn join_laws(x: &Doc, y: &Doc) {
    let normal = |d: &Doc| {
        let mut n = Doc::new();
        n.join(d);
        n
    };
    let (x, y) = (normal(x), normal(y));
    let mut xx = x.clone();
    xx.join(&x);
    assert_eq!(xx.encode(), x.encode(), "x ⊔ x is not x");
    let mut xy = x.clone();
    xy.join(&y);
    let mut yx = y.clone();
    yx.join(&x);
    assert_eq!(xy.encode(), yx.encode(), "x ⊔ y is not y ⊔ x");
    let mut again = xy.clone();
    again.join(&y);
    assert_eq!(again.encode(), xy.encode(), "(x ⊔ y) ⊔ y is not x ⊔ y");
    let _ = xy.materialize();
}
