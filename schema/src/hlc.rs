//! Hybrid logical clocks, site ids and stamps.
//!
//! An [`Hlc`] value is `(unix_ms << 16) | counter`: 48 bits of milliseconds and a 16-bit logical
//! counter (Kulkarni et al.). A [`Clock`] hands out strictly increasing values even when the wall
//! clock goes backwards, and advances past every remote stamp it receives (within an admission
//! bound, so that a peer with a clock far in the future cannot drag ours along).

use std::fmt;

/// Maximum drift accepted from a remote stamp before the local clock refuses to follow it.
pub const MAX_DRIFT_MS: u64 = 60 * 60 * 1000;

const COUNTER_BITS: u32 = 16;
const COUNTER_MASK: u64 = (1 << COUNTER_BITS) - 1;
const MS_MAX: u64 = (1 << 48) - 1;

/// A hybrid logical clock value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hlc(pub u64);

impl Hlc {
    pub const ZERO: Hlc = Hlc(0);

    pub fn new(ms: u64, counter: u16) -> Hlc {
        Hlc(((ms & MS_MAX) << COUNTER_BITS) | u64::from(counter))
    }

    /// Wall-clock milliseconds part.
    pub fn ms(self) -> u64 {
        self.0 >> COUNTER_BITS
    }

    /// Logical counter part.
    pub fn counter(self) -> u16 {
        (self.0 & COUNTER_MASK) as u16
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.ms(), self.counter())
    }
}

/// A random 128-bit identifier of one store instance (a small peer's database, a big peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SiteId(pub u128);

impl SiteId {
    /// A fresh random site id. Never reuse one: a restored backup must mint a new id.
    pub fn random() -> SiteId {
        loop {
            let v: u128 = rand::random();
            if v != 0 {
                return SiteId(v);
            }
        }
    }

    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    pub fn from_bytes(b: [u8; 16]) -> SiteId {
        SiteId(u128::from_be_bytes(b))
    }
}

impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// The stamp of one write: totally ordered by `(hlc, site)`, the last-writer-wins order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Stamp {
    pub hlc: Hlc,
    pub site: SiteId,
}

impl Stamp {
    pub fn new(hlc: Hlc, site: SiteId) -> Stamp {
        Stamp { hlc, site }
    }
}

/// Outcome of observing a remote stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observe {
    /// The clock advanced (or already was) past the remote value.
    Accepted,
    /// The remote value is further in the future than [`MAX_DRIFT_MS`]; the clock did not follow
    /// it. The data is still accepted by the caller, who should log a clock-skew warning.
    Skewed,
}

/// A hybrid logical clock owned by one site.
#[derive(Debug, Clone)]
pub struct Clock {
    site: SiteId,
    last: Hlc,
}

impl Clock {
    pub fn new(site: SiteId) -> Clock {
        Clock {
            site,
            last: Hlc::ZERO,
        }
    }

    /// A clock that resumes after `last` (for example the largest stamp found in storage).
    pub fn resume(site: SiteId, last: Hlc) -> Clock {
        Clock { site, last }
    }

    pub fn site(&self) -> SiteId {
        self.site
    }

    pub fn last(&self) -> Hlc {
        self.last
    }

    /// The next stamp, using the system wall clock.
    pub fn tick(&mut self) -> Stamp {
        self.tick_at(now_ms())
    }

    /// The next stamp given the wall clock `now_ms`: strictly greater than every value this clock
    /// issued or observed.
    pub fn tick_at(&mut self, now_ms: u64) -> Stamp {
        let now = now_ms.min(MS_MAX);
        let next = if now > self.last.ms() {
            Hlc::new(now, 0)
        } else if self.last.counter() == u16::MAX {
            Hlc::new(self.last.ms() + 1, 0)
        } else {
            Hlc(self.last.0 + 1)
        };
        self.last = next;
        Stamp::new(next, self.site)
    }

    /// Observes a remote clock value, using the system wall clock.
    pub fn observe(&mut self, remote: Hlc) -> Observe {
        self.observe_at(remote, now_ms())
    }

    /// Observes a remote clock value: afterwards every local tick is greater than `remote`,
    /// unless `remote` is more than [`MAX_DRIFT_MS`] ahead of `now_ms`.
    pub fn observe_at(&mut self, remote: Hlc, now_ms: u64) -> Observe {
        if remote.ms() > now_ms.saturating_add(MAX_DRIFT_MS) {
            return Observe::Skewed;
        }
        if remote > self.last {
            self.last = remote;
        }
        Observe::Accepted
    }
}

/// Wall-clock milliseconds since the unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let h = Hlc::new(1_700_000_000_000, 7);
        assert_eq!(h.ms(), 1_700_000_000_000);
        assert_eq!(h.counter(), 7);
    }

    #[test]
    fn monotonic_under_backwards_clock() {
        let mut c = Clock::new(SiteId(1));
        let a = c.tick_at(1000);
        let b = c.tick_at(900);
        let d = c.tick_at(900);
        let e = c.tick_at(2000);
        assert!(a < b && b < d && d < e);
        assert_eq!(b.hlc, Hlc::new(1000, 1));
        assert_eq!(e.hlc, Hlc::new(2000, 0));
    }

    #[test]
    fn counter_overflow_moves_ms() {
        let mut c = Clock::resume(SiteId(1), Hlc::new(10, u16::MAX));
        assert_eq!(c.tick_at(5).hlc, Hlc::new(11, 0));
    }

    #[test]
    fn observe_advances_within_drift() {
        let mut c = Clock::new(SiteId(1));
        assert_eq!(c.observe_at(Hlc::new(5000, 3), 4000), Observe::Accepted);
        assert!(c.tick_at(4000).hlc > Hlc::new(5000, 3));
        let far = Hlc::new(4000 + MAX_DRIFT_MS + 1, 0);
        assert_eq!(c.observe_at(far, 4000), Observe::Skewed);
        assert!(c.tick_at(4000).hlc < far);
    }
}
