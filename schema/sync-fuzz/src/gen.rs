//! Random documents, operations, stamps and deltas, driven by bytes ([`arbitrary`]): the same
//! bytes give the same values. Stamps include the extremes (0, `u64::MAX`, a century ahead),
//! sites the extremes (0, `u128::MAX`) and a few shared ones, values every type and depth.

use std::collections::BTreeMap;

use arbitrary::{Result, Unstructured};
use bigpeer_schema::wire::DocChange;
use bigpeer_schema::{
    Component, CounterKind, Delta, Doc, DocId, Hlc, ObjectMode, Op, SiteId, Stamp, Value,
    VersionVector,
};

/// "Now" for the stamps built here, in milliseconds since the epoch: fixed, so that fuzz inputs
/// reproduce; [`Gen::at`] for stamps near a real clock.
pub const NOW_MS: u64 = 1_750_000_000_000;

const CENTURY_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// Choices that do not depend on the bytes.
#[derive(Debug, Clone, Copy)]
pub struct Gen {
    /// The time "now" stamps are near.
    pub now_ms: u64,
    /// The deepest value built (objects and arrays).
    pub max_depth: usize,
    /// The site that writes most stamps (a peer's own, so that a big peer, which takes a
    /// peer's own writes only, applies some of them); `None`: any site alike.
    pub own: Option<SiteId>,
}

impl Default for Gen {
    fn default() -> Gen {
        Gen::at(NOW_MS)
    }
}

impl Gen {
    pub fn at(now_ms: u64) -> Gen {
        Gen {
            now_ms,
            max_depth: 40,
            own: None,
        }
    }

    /// The same generator with most stamps, and nearly all of them near now, written by `own`.
    pub fn owned_by(mut self, own: SiteId) -> Gen {
        self.own = Some(own);
        self
    }

    pub fn site(&self, u: &mut Unstructured) -> Result<SiteId> {
        if let Some(own) = self.own {
            if !u.ratio(1, 16)? {
                return Ok(own);
            }
        }
        Ok(SiteId(match u.int_in_range(0..=6)? {
            0 => 0,
            1 => u128::MAX,
            2..=4 => u128::from(u.int_in_range(1u8..=3)?),
            _ => u.arbitrary()?,
        }))
    }

    pub fn hlc(&self, u: &mut Unstructured) -> Result<Hlc> {
        let now = Hlc::new(self.now_ms, 0).0;
        if self.own.is_some() && !u.ratio(1, 16)? {
            return Ok(Hlc(now
                .saturating_add(u.int_in_range(0..=1u64 << 30)?)
                .saturating_sub(1 << 29)));
        }
        Ok(Hlc(match u.int_in_range(0..=7)? {
            0 => 0,
            1 => u64::MAX,
            2 => u.int_in_range(1..=1000)?,
            // A century ahead.
            3 => Hlc::new(self.now_ms.saturating_add(CENTURY_MS), 0).0,
            // Near now, either side.
            4..=6 => now
                .saturating_add(u.int_in_range(0..=1u64 << 30)?)
                .saturating_sub(1 << 29),
            _ => u.arbitrary()?,
        }))
    }

    pub fn stamp(&self, u: &mut Unstructured) -> Result<Stamp> {
        Ok(Stamp::new(self.hlc(u)?, self.site(u)?))
    }

    pub fn key(&self, u: &mut Unstructured) -> Result<String> {
        Ok(match u.int_in_range(0u8..=9)? {
            0 => String::new(),
            1 => "_id".to_owned(),
            2 => "é✓\u{1F600}".to_owned(),
            3 => "k".repeat(u.int_in_range(1..=2000)?),
            4 => u.arbitrary()?,
            n => ["a", "b", "c", "n", "x"][usize::from(n) % 5].to_owned(),
        })
    }

    pub fn path(&self, u: &mut Unstructured) -> Result<Vec<String>> {
        let n = if u.ratio(1, 10)? {
            u.int_in_range(0..=126)?
        } else {
            u.int_in_range(0..=3)?
        };
        (0..n).map(|_| self.key(u)).collect()
    }

    /// Any value, nested at most `depth` deep.
    pub fn value(&self, u: &mut Unstructured, depth: usize) -> Result<Value> {
        let kinds = if depth == 0 { 7 } else { 9 };
        Ok(match u.int_in_range(0..=kinds)? {
            0 => Value::Null,
            1 => Value::Bool(u.arbitrary()?),
            2 => Value::Int(u.arbitrary()?),
            3 => Value::from_u64(u.arbitrary()?),
            4 => {
                let f: f64 = u.arbitrary()?;
                Value::float(f).unwrap_or(Value::Float(f64::MAX))
            }
            5 => Value::String(if u.ratio(1, 20)? {
                "s".repeat(u.int_in_range(1000..=100_000)?)
            } else {
                u.arbitrary()?
            }),
            6 => Value::Binary(u.arbitrary()?),
            7 => Value::String(self.key(u)?),
            8 => {
                let n = u.int_in_range(0..=4)?;
                Value::Array(
                    (0..n)
                        .map(|_| self.value(u, depth - 1))
                        .collect::<Result<_>>()?,
                )
            }
            _ => Value::Object(self.object(u, depth - 1)?),
        })
    }

    pub fn object(&self, u: &mut Unstructured, depth: usize) -> Result<BTreeMap<String, Value>> {
        let n = u.int_in_range(0..=4)?;
        let mut out = BTreeMap::new();
        for _ in 0..n {
            out.insert(self.key(u)?, self.value(u, depth)?);
        }
        Ok(out)
    }

    fn depth(&self, u: &mut Unstructured) -> Result<usize> {
        Ok(if u.ratio(1, 8)? {
            u.int_in_range(0..=self.max_depth)?
        } else {
            u.int_in_range(0..=3)?
        })
    }

    pub fn op(&self, u: &mut Unstructured) -> Result<Op> {
        let objects = if u.arbitrary()? {
            ObjectMode::Map
        } else {
            ObjectMode::Register
        };
        let depth = self.depth(u)?;
        Ok(match u.int_in_range(0..=8)? {
            0 | 1 => Op::Set {
                path: self.path(u)?,
                value: self.value(u, depth)?,
                objects,
            },
            2 | 3 => Op::Merge {
                path: self.path(u)?,
                value: self.object(u, depth)?,
                objects,
            },
            4 => Op::Unset {
                path: self.path(u)?,
            },
            5 => Op::Remove {
                path: self.path(u)?,
                component: *u.choose(&[
                    Component::Register,
                    Component::Attachment,
                    Component::PnCounter,
                    Component::Counter,
                    Component::Map,
                ])?,
            },
            6 => Op::Increment {
                path: self.path(u)?,
                by: self.value(u, 0)?,
                kind: if u.arbitrary()? {
                    CounterKind::Counter
                } else {
                    CounterKind::PnCounter
                },
            },
            7 => Op::Restart {
                path: self.path(u)?,
                to: u.arbitrary()?,
            },
            _ => {
                if u.ratio(1, 3)? {
                    Op::Delete
                } else {
                    Op::Attach {
                        path: self.path(u)?,
                        token: self.value(u, 2)?,
                    }
                }
            }
        })
    }

    /// A document state: statements of random operations under random stamps (a statement the
    /// document refuses is skipped), some joined from other replicas.
    pub fn doc(&self, u: &mut Unstructured) -> Result<Doc> {
        let mut doc = Doc::new();
        let statements = u.int_in_range(0..=6)?;
        for _ in 0..statements {
            if u.ratio(1, 6)? {
                let other = self.doc(u)?;
                doc.join(&other);
                continue;
            }
            let n = u.int_in_range(1..=4)?;
            let ops = (0..n).map(|_| self.op(u)).collect::<Result<Vec<_>>>()?;
            let stamp = self.stamp(u)?;
            let _ = doc.apply(&ops, stamp);
        }
        Ok(doc)
    }

    pub fn version_vector(&self, u: &mut Unstructured, near: &[&Doc]) -> Result<VersionVector> {
        let mut vv = VersionVector::new();
        if let Some(d) = near.first() {
            if u.arbitrary()? {
                vv = d.vv.clone();
            }
        }
        for _ in 0..u.int_in_range(0..=3)? {
            vv.observe(self.site(u)?, self.hlc(u)?);
        }
        Ok(vv)
    }

    /// A delta of a random document: full state, empty, or against a random base (which a
    /// receiver may lack).
    pub fn delta(&self, u: &mut Unstructured) -> Result<Delta> {
        let doc = self.doc(u)?;
        Ok(match u.int_in_range(0..=3)? {
            0 | 1 => doc.delta(&VersionVector::new()),
            2 => doc.delta(&doc.vv),
            _ => {
                let base = self.version_vector(u, &[&doc])?;
                doc.delta(&base)
            }
        })
    }

    pub fn doc_id(&self, u: &mut Unstructured) -> Result<DocId> {
        Ok(match u.int_in_range(0u8..=5)? {
            0 => DocId::new(self.value(u, 3)?).unwrap_or_else(|_| DocId::string("x")),
            1 => DocId::string(self.key(u)?),
            n => DocId::string(["a", "b", "c", "d"][usize::from(n) % 4]),
        })
    }

    /// One pushed change: mostly to `collections`, sometimes to an odd name.
    pub fn change(&self, u: &mut Unstructured, collections: &[&str]) -> Result<DocChange> {
        let collection = if u.ratio(1, 10)? || collections.is_empty() {
            self.key(u)?
        } else {
            (*u.choose(collections)?).to_owned()
        };
        Ok(DocChange {
            collection,
            id: self.doc_id(u)?,
            seq: if u.ratio(1, 10)? { u.arbitrary()? } else { 0 },
            delta: self.delta(u)?,
        })
    }
}

/// [`Gen`]'s functions at [`NOW_MS`], for the fuzz targets.
pub fn doc(u: &mut Unstructured) -> Result<Doc> {
    Gen::default().doc(u)
}

/// See [`doc`].
pub fn version_vector(u: &mut Unstructured, near: &[&Doc]) -> Result<VersionVector> {
    Gen::default().version_vector(u, near)
}

/// Random bytes from `rng` for an [`Unstructured`] (which reads them as choices).
pub fn bytes(rng: &mut impl rand::Rng, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    rng.fill_bytes(&mut out);
    out
}
