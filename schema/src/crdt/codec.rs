//! The compact, versioned binary encoding of document states and deltas.
//!
//! ```text
//! doc   := FORMAT KIND_DOC   sites vv slot
//! delta := FORMAT KIND_DELTA sites vv(base) vv slot
//! sites := n:varint (16 bytes)*n          -- site table; stamps refer to sites by index
//! vv    := n:varint (site:varint hlc:varint)*n
//! stamp := hlc:varint site:varint
//! slot  := flags:u8 [register] [map] [counter] [pn-counter] [attachment] [tomb]
//!          flags bit 0 register, 1 map, 2 counter, 3 pn-counter, 4 attachment, 5 tomb
//! register := stamp has_value:u8 [value]
//! map      := has_mark:u8 [stamp] n:varint (key:bytes slot)*n
//! counter  := flags:u8 [era:stamp] [epoch] n:varint (site:varint p n last:stamp [removed])*n
//!             flags bit 0 epoch, 1 era, 2 epoch removed (needs bit 0), 3 removed totals (each
//!             contribution then carries `removed`)
//!             (integers zig-zag varints for COUNTER, 8-byte little-endian floats for PN_COUNTER)
//! epoch    := stamp base n:varint (site:varint p n)*n      -- the totals the restart had seen
//! removed  := 0 (none) | 1 (all of p and n) | 2 p n
//! tomb     := vv(removers) vv(ctx)
//! ```
//!
//! Format 1 differs only in the counter, `has_epoch:u8 [stamp base] n:varint (site:varint p n
//! last:stamp)*n`: its totals counted from the epoch, which therefore also names the era
//! ([`super::Counter::era`]). Both formats decode; encoding writes format 2.

use std::collections::BTreeMap;

use super::{
    Contrib, Counter, CounterNum, Delta, Doc, Epoch, MapNode, Register, Seen, Slot, Tomb,
    VersionVector,
};
use crate::codec::{
    corrupt, write_bytes, write_f64, write_value, write_varint, write_zigzag, Reader, MAX_DEPTH,
};
use crate::error::{Result, SchemaError};
use crate::hlc::{Hlc, SiteId, Stamp};

/// The current format version (first byte of every encoding).
pub const FORMAT: u8 = 2;
/// The first format, still decoded (documents stored before format 2).
const FORMAT_1: u8 = 1;
const KIND_DOC: u8 = 0;
const KIND_DELTA: u8 = 1;

const F_REG: u8 = 1;
const F_MAP: u8 = 2;
const F_CTR: u8 = 4;
const F_PN: u8 = 8;
const F_ATT: u8 = 16;
const F_TOMB: u8 = 32;

const C_EPOCH: u8 = 1;
const C_ERA: u8 = 2;
const C_EPOCH_REMOVED: u8 = 4;
const C_REMOVED: u8 = 8;

const REMOVED_NONE: u8 = 0;
const REMOVED_ALL: u8 = 1;
const REMOVED_SOME: u8 = 2;

struct Enc {
    out: Vec<u8>,
    sites: BTreeMap<SiteId, u64>,
}

impl Enc {
    fn new(docs: &[&Doc], extra: &[&VersionVector]) -> Enc {
        let mut set = std::collections::BTreeSet::new();
        for d in docs {
            d.vv.iter().for_each(|(s, _)| {
                set.insert(s);
            });
            collect_sites(&d.root, &mut set);
        }
        for v in extra {
            v.iter().for_each(|(s, _)| {
                set.insert(s);
            });
        }
        let sites: BTreeMap<SiteId, u64> = set
            .into_iter()
            .enumerate()
            .map(|(i, s)| (s, i as u64))
            .collect();
        let mut out = Vec::with_capacity(64 + sites.len() * 16);
        out.push(FORMAT);
        Enc { out, sites }
    }

    fn site_table(&mut self) {
        write_varint(&mut self.out, self.sites.len() as u64);
        let ids: Vec<SiteId> = self.sites.keys().copied().collect();
        for s in ids {
            self.out.extend_from_slice(&s.to_bytes());
        }
    }

    fn site(&mut self, s: SiteId) {
        let idx = self.sites.get(&s).copied().unwrap_or(0);
        write_varint(&mut self.out, idx);
    }

    fn stamp(&mut self, s: Stamp) {
        write_varint(&mut self.out, s.hlc.0);
        self.site(s.site);
    }

    fn vv(&mut self, v: &VersionVector) {
        write_varint(&mut self.out, v.len() as u64);
        for (s, h) in v.iter() {
            self.site(s);
            write_varint(&mut self.out, h.0);
        }
    }

    fn register(&mut self, r: &Register) {
        self.stamp(r.stamp);
        match &r.value {
            None => self.out.push(0),
            Some(v) => {
                self.out.push(1);
                write_value(&mut self.out, v);
            }
        }
    }

    fn counter<N: CounterNum>(&mut self, c: &Counter<N>, num: fn(&mut Vec<u8>, N)) {
        let any_removed = c.contrib.values().any(|k| !k.removed.is_zero());
        let mut flags = 0;
        for (on, bit) in [
            (c.epoch.is_some(), C_EPOCH),
            (c.era.is_some(), C_ERA),
            (c.epoch.as_ref().is_some_and(|e| e.removed), C_EPOCH_REMOVED),
            (any_removed, C_REMOVED),
        ] {
            if on {
                flags |= bit;
            }
        }
        self.out.push(flags);
        if let Some(era) = c.era {
            self.stamp(era);
        }
        if let Some(e) = &c.epoch {
            self.stamp(e.stamp);
            num(&mut self.out, e.base);
            write_varint(&mut self.out, e.seen.len() as u64);
            for (site, s) in &e.seen {
                self.site(*site);
                num(&mut self.out, s.p);
                num(&mut self.out, s.n);
            }
        }
        write_varint(&mut self.out, c.contrib.len() as u64);
        for (site, k) in &c.contrib {
            self.site(*site);
            num(&mut self.out, k.p);
            num(&mut self.out, k.n);
            self.stamp(k.last);
            if any_removed {
                if k.removed.is_zero() {
                    self.out.push(REMOVED_NONE);
                } else if k.removed == (Seen { p: k.p, n: k.n }) {
                    self.out.push(REMOVED_ALL);
                } else {
                    self.out.push(REMOVED_SOME);
                    num(&mut self.out, k.removed.p);
                    num(&mut self.out, k.removed.n);
                }
            }
        }
    }

    fn slot(&mut self, s: &Slot) {
        let mut flags = 0u8;
        for (present, bit) in [
            (s.reg.is_some(), F_REG),
            (s.map.is_some(), F_MAP),
            (s.ctr.is_some(), F_CTR),
            (s.pn.is_some(), F_PN),
            (s.att.is_some(), F_ATT),
            (s.tomb.is_some(), F_TOMB),
        ] {
            if present {
                flags |= bit;
            }
        }
        self.out.push(flags);
        if let Some(r) = &s.reg {
            self.register(r);
        }
        if let Some(m) = &s.map {
            match m.mark {
                None => self.out.push(0),
                Some(st) => {
                    self.out.push(1);
                    self.stamp(st);
                }
            }
            write_varint(&mut self.out, m.entries.len() as u64);
            for (k, e) in &m.entries {
                write_bytes(&mut self.out, k.as_bytes());
                self.slot(e);
            }
        }
        if let Some(c) = &s.ctr {
            self.counter(c, write_zigzag);
        }
        if let Some(c) = &s.pn {
            self.counter(c, write_f64);
        }
        if let Some(r) = &s.att {
            self.register(r);
        }
        if let Some(t) = &s.tomb {
            self.vv(&t.removers);
            self.vv(&t.ctx);
        }
    }
}

fn collect_sites(s: &Slot, set: &mut std::collections::BTreeSet<SiteId>) {
    s.visit_stamps(&mut |st| {
        set.insert(st.site);
    });
    collect_tomb_ctx_sites(s, set);
}

fn collect_tomb_ctx_sites(s: &Slot, set: &mut std::collections::BTreeSet<SiteId>) {
    if let Some(t) = &s.tomb {
        t.ctx.iter().for_each(|(site, _)| {
            set.insert(site);
        });
    }
    for c in s.ctr.iter() {
        set.extend(c.sites());
    }
    for c in s.pn.iter() {
        set.extend(c.sites());
    }
    if let Some(m) = &s.map {
        for e in m.entries.values() {
            collect_tomb_ctx_sites(e, set);
        }
    }
}

pub fn encode_doc(d: &Doc) -> Vec<u8> {
    let mut e = Enc::new(&[d], &[]);
    e.out.push(KIND_DOC);
    e.site_table();
    e.vv(&d.vv);
    e.slot(&d.root);
    e.out
}

pub fn encode_delta(d: &Delta) -> Vec<u8> {
    let mut e = Enc::new(&[&d.state], &[&d.base]);
    e.out.push(KIND_DELTA);
    e.site_table();
    e.vv(&d.base);
    e.vv(&d.state.vv);
    e.slot(&d.state.root);
    e.out
}

/// The full-state delta (a delta against the empty version vector) of an encoded document,
/// built from its bytes without decoding the tree, and the document's version vector.
///
/// The two encodings share the site table, the version vector and the slot; a full-state delta
/// only differs in its kind byte and the empty base vector before the version vector. The slot is
/// copied as it is, unchecked: whoever decodes the delta validates it.
pub fn full_state_delta_from_doc(bytes: &[u8]) -> Result<(Vec<u8>, VersionVector)> {
    let mut d = Dec::open(bytes, KIND_DOC)?;
    let sites_end = d.r.position();
    let vv = d.vv()?;
    let mut out = Vec::with_capacity(bytes.len() + 1);
    // The slot is copied as it is: the delta keeps the document's format.
    out.push(d.format);
    out.push(KIND_DELTA);
    out.extend_from_slice(bytes.get(2..sites_end).unwrap_or_default());
    write_varint(&mut out, 0);
    out.extend_from_slice(bytes.get(sites_end..).unwrap_or_default());
    Ok((out, vv))
}

struct Dec<'a> {
    r: Reader<'a>,
    format: u8,
    sites: Vec<SiteId>,
}

impl<'a> Dec<'a> {
    fn open(bytes: &'a [u8], kind: u8) -> Result<Dec<'a>> {
        let mut r = Reader::new(bytes);
        let format = r.u8()?;
        if format != FORMAT && format != FORMAT_1 {
            return Err(SchemaError::UnsupportedVersion(format));
        }
        let k = r.u8()?;
        if k != kind {
            return Err(corrupt(&format!(
                "expected encoding kind {kind}, found {k}"
            )));
        }
        let n = r.len(16)?;
        let mut sites = Vec::with_capacity(n);
        for _ in 0..n {
            let b = r.take(16)?;
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            sites.push(SiteId::from_bytes(a));
        }
        Ok(Dec { r, format, sites })
    }

    fn site(&mut self) -> Result<SiteId> {
        let i = self.r.varint()?;
        usize::try_from(i)
            .ok()
            .and_then(|i| self.sites.get(i).copied())
            .ok_or_else(|| corrupt("site index out of range"))
    }

    fn stamp(&mut self) -> Result<Stamp> {
        let hlc = Hlc(self.r.varint()?);
        Ok(Stamp::new(hlc, self.site()?))
    }

    fn flag(&mut self) -> Result<bool> {
        match self.r.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(corrupt(&format!("invalid flag byte {b}"))),
        }
    }

    fn vv(&mut self) -> Result<VersionVector> {
        let n = self.r.len(2)?;
        let mut v = VersionVector::new();
        for _ in 0..n {
            let s = self.site()?;
            v.observe(s, Hlc(self.r.varint()?));
        }
        Ok(v)
    }

    fn register(&mut self) -> Result<Register> {
        let stamp = self.stamp()?;
        let value = if self.flag()? {
            Some(self.r.value(0)?)
        } else {
            None
        };
        Ok(Register { stamp, value })
    }

    fn counter<N: CounterNum>(
        &mut self,
        num: fn(&mut Reader<'a>) -> Result<N>,
    ) -> Result<Counter<N>> {
        if self.format == FORMAT_1 {
            return self.counter_1(num);
        }
        let flags = self.r.u8()?;
        if flags & !(C_EPOCH | C_ERA | C_EPOCH_REMOVED | C_REMOVED) != 0
            || (flags & C_EPOCH_REMOVED != 0 && flags & C_EPOCH == 0)
        {
            return Err(corrupt(&format!("invalid counter flags {flags:#x}")));
        }
        let era = if flags & C_ERA != 0 {
            Some(self.stamp()?)
        } else {
            None
        };
        let epoch = if flags & C_EPOCH != 0 {
            let stamp = self.stamp()?;
            let base = num(&mut self.r)?;
            let n = self.r.len(3)?;
            let mut seen = BTreeMap::new();
            for _ in 0..n {
                let site = self.site()?;
                let p = num(&mut self.r)?;
                let nn = num(&mut self.r)?;
                seen.insert(site, Seen { p, n: nn });
            }
            Some(Epoch {
                stamp,
                base,
                seen,
                removed: flags & C_EPOCH_REMOVED != 0,
            })
        } else {
            None
        };
        let n = self.r.len(5)?;
        let mut contrib = BTreeMap::new();
        for _ in 0..n {
            let site = self.site()?;
            let p = num(&mut self.r)?;
            let nn = num(&mut self.r)?;
            let last = self.stamp()?;
            let removed = if flags & C_REMOVED == 0 {
                Seen::ZERO
            } else {
                match self.r.u8()? {
                    REMOVED_NONE => Seen::ZERO,
                    REMOVED_ALL => Seen { p, n: nn },
                    REMOVED_SOME => Seen {
                        p: num(&mut self.r)?,
                        n: num(&mut self.r)?,
                    },
                    b => return Err(corrupt(&format!("invalid removed totals tag {b}"))),
                }
            };
            contrib.insert(
                site,
                Contrib {
                    p,
                    n: nn,
                    last,
                    removed,
                },
            );
        }
        Ok(Counter {
            epoch,
            contrib,
            era,
        })
    }

    /// A counter of format 1: its totals count from its epoch, which names their era.
    fn counter_1<N: CounterNum>(
        &mut self,
        num: fn(&mut Reader<'a>) -> Result<N>,
    ) -> Result<Counter<N>> {
        let epoch = if self.flag()? {
            let stamp = self.stamp()?;
            Some(Epoch {
                stamp,
                base: num(&mut self.r)?,
                seen: BTreeMap::new(),
                removed: false,
            })
        } else {
            None
        };
        let n = self.r.len(4)?;
        let mut contrib = BTreeMap::new();
        for _ in 0..n {
            let site = self.site()?;
            let p = num(&mut self.r)?;
            let nn = num(&mut self.r)?;
            let last = self.stamp()?;
            contrib.insert(
                site,
                Contrib {
                    p,
                    n: nn,
                    last,
                    removed: Seen::ZERO,
                },
            );
        }
        Ok(Counter {
            era: epoch.as_ref().map(|e| e.stamp),
            epoch,
            contrib,
        })
    }

    fn slot(&mut self, depth: usize) -> Result<Slot> {
        if depth > MAX_DEPTH {
            return Err(corrupt("document nested too deeply"));
        }
        let flags = self.r.u8()?;
        if flags & !(F_REG | F_MAP | F_CTR | F_PN | F_ATT | F_TOMB) != 0 {
            return Err(corrupt(&format!("unknown slot flags {flags:#x}")));
        }
        let mut s = Slot::default();
        if flags & F_REG != 0 {
            s.reg = Some(self.register()?);
        }
        if flags & F_MAP != 0 {
            let mark = if self.flag()? {
                Some(self.stamp()?)
            } else {
                None
            };
            let n = self.r.len(2)?;
            let mut entries = BTreeMap::new();
            for _ in 0..n {
                let k = self.r.string()?;
                let e = self.slot(depth + 1)?;
                entries.insert(k, e);
            }
            s.map = Some(MapNode { mark, entries });
        }
        if flags & F_CTR != 0 {
            s.ctr = Some(self.counter(Reader::zigzag)?);
        }
        if flags & F_PN != 0 {
            s.pn = Some(self.counter(Reader::f64)?);
        }
        if flags & F_ATT != 0 {
            s.att = Some(self.register()?);
        }
        if flags & F_TOMB != 0 {
            let removers = self.vv()?;
            let ctx = self.vv()?;
            s.tomb = Some(Tomb { removers, ctx });
        }
        Ok(s)
    }
}

pub fn decode_doc(bytes: &[u8]) -> Result<Doc> {
    let mut d = Dec::open(bytes, KIND_DOC)?;
    let vv = d.vv()?;
    let root = d.slot(0)?;
    d.r.finish()?;
    let mut doc = Doc { vv, root };
    // Re-establish the canonical form, so that a hand-made blob cannot hold an unreachable shape.
    doc.root.normalize(&VersionVector::default());
    Ok(doc)
}

pub fn decode_delta(bytes: &[u8]) -> Result<Delta> {
    let mut d = Dec::open(bytes, KIND_DELTA)?;
    let base = d.vv()?;
    let vv = d.vv()?;
    let root = d.slot(0)?;
    d.r.finish()?;
    Ok(Delta {
        base,
        state: Doc { vv, root },
    })
}
