//! Rate limits per API key and per client IP address (`governor`, token buckets: a steady rate
//! and bursts of twice that). Over a limit the answer is 429 with `Retry-After` in seconds.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// The limiters of one server; cheap to clone.
#[derive(Clone, Default)]
pub struct RateLimits {
    per_key: Option<Arc<DefaultKeyedRateLimiter<String>>>,
    per_ip: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("per_key", &self.per_key.is_some())
            .field("per_ip", &self.per_ip.is_some())
            .finish()
    }
}

fn quota(per_second: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
    Some(Quota::per_second(rate).allow_burst(burst))
}

/// Seconds to wait before retrying, rounded up (at least 1).
fn retry_after(not_until: &governor::NotUntil<governor::clock::QuantaInstant>) -> u64 {
    let wait = not_until.wait_time_from(DefaultClock::default().now());
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

impl RateLimits {
    /// Limits of `per_key` and `per_ip` requests per second; 0 turns one off.
    pub fn new(per_key: u32, per_ip: u32) -> RateLimits {
        RateLimits {
            per_key: quota(per_key).map(|q| Arc::new(governor::RateLimiter::keyed(q))),
            per_ip: quota(per_ip).map(|q| Arc::new(governor::RateLimiter::keyed(q))),
        }
    }

    /// `Err(seconds to wait)` when the address is over its limit.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), u64> {
        match &self.per_ip {
            None => Ok(()),
            Some(l) => l.check_key(&ip).map_err(|n| retry_after(&n)),
        }
    }

    /// `Err(seconds to wait)` when the key is over its limit.
    pub fn check_key(&self, key_id: &str) -> Result<(), u64> {
        match &self.per_key {
            None => Ok(()),
            Some(l) => l.check_key(&key_id.to_owned()).map_err(|n| retry_after(&n)),
        }
    }

    /// Waits until the key is within its limit, and counts one request.
    pub async fn until_key_ready(&self, key_id: &str) {
        if let Some(l) = &self.per_key {
            l.until_key_ready(&key_id.to_owned()).await;
        }
    }

    /// Forgets idle keys and addresses (call now and then, so memory stays bounded).
    pub fn shrink(&self) {
        if let Some(l) = &self.per_key {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.per_ip {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refuses_with_a_retry_after() {
        let l = RateLimits::new(5, 0);
        for _ in 0..10 {
            assert_eq!(l.check_key("k"), Ok(()), "the burst is twice the rate");
        }
        let wait = l.check_key("k").expect_err("over the limit");
        assert!((1..=1).contains(&wait), "{wait}");
        assert_eq!(l.check_key("other"), Ok(()), "keys are limited separately");
        assert_eq!(
            l.check_ip("127.0.0.1".parse().expect("ip")),
            Ok(()),
            "no IP limit configured"
        );
    }
}
