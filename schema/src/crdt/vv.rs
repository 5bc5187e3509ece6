//! Version vectors: per site, the newest hybrid-logical-clock value seen.

use std::collections::BTreeMap;

use crate::hlc::{Hlc, SiteId, Stamp};

/// A version vector. Missing sites are at [`Hlc::ZERO`]. Joins by pointwise maximum.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct VersionVector(BTreeMap<SiteId, Hlc>);

impl VersionVector {
    pub fn new() -> VersionVector {
        VersionVector::default()
    }

    /// The value for `site` (zero when absent).
    pub fn get(&self, site: SiteId) -> Hlc {
        self.0.get(&site).copied().unwrap_or(Hlc::ZERO)
    }

    /// Raises the entry of `site` to at least `hlc`.
    pub fn observe(&mut self, site: SiteId, hlc: Hlc) {
        if hlc == Hlc::ZERO {
            return;
        }
        let e = self.0.entry(site).or_insert(Hlc::ZERO);
        if hlc > *e {
            *e = hlc;
        }
    }

    /// Pointwise maximum.
    pub fn join(&mut self, other: &VersionVector) {
        for (s, h) in &other.0 {
            self.observe(*s, *h);
        }
    }

    /// True when this vector is pointwise at or above `other`.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(s, h)| self.get(*s) >= *h)
    }

    /// True when the event `stamp` is at or below this vector (it has been seen).
    pub fn covers(&self, stamp: Stamp) -> bool {
        stamp.hlc <= self.get(stamp.site)
    }

    /// True when `other` has some entry above this vector.
    pub fn any_above(&self, other: &VersionVector) -> bool {
        !self.dominates(other)
    }

    pub fn iter(&self) -> impl Iterator<Item = (SiteId, Hlc)> + '_ {
        self.0.iter().map(|(s, h)| (*s, *h))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The largest value over all sites.
    pub fn max_hlc(&self) -> Hlc {
        self.0.values().copied().max().unwrap_or(Hlc::ZERO)
    }
}

impl FromIterator<(SiteId, Hlc)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (SiteId, Hlc)>>(iter: I) -> Self {
        let mut v = VersionVector::new();
        for (s, h) in iter {
            v.observe(s, h);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_and_dominate() {
        let a: VersionVector = [(SiteId(1), Hlc(5)), (SiteId(2), Hlc(1))]
            .into_iter()
            .collect();
        let b: VersionVector = [(SiteId(2), Hlc(4)), (SiteId(3), Hlc(4))]
            .into_iter()
            .collect();
        let mut j = a.clone();
        j.join(&b);
        assert_eq!(j.get(SiteId(1)), Hlc(5));
        assert_eq!(j.get(SiteId(2)), Hlc(4));
        assert!(j.dominates(&a) && j.dominates(&b));
        assert!(!a.dominates(&b));
        assert!(j.covers(Stamp::new(Hlc(4), SiteId(3))));
        assert!(!j.covers(Stamp::new(Hlc(5), SiteId(3))));
    }
}
