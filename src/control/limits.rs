//! Request rate limits of the control API: one budget per client address
//! (checked before the token, so floods of bad tokens are limited too) and
//! one per token subject, both `api.rate_limit_per_minute`, with `governor`.
//!
//! The client address is the TCP peer; `X-Forwarded-For` is not trusted.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// Checks between two sweeps of idle keys.
const SWEEP_EVERY: u64 = 4096;

/// Per-address and per-subject request budgets.
pub struct RateLimits {
    by_address: DefaultKeyedRateLimiter<IpAddr>,
    by_subject: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    checks: AtomicU64,
}

impl RateLimits {
    /// `per_minute` requests a minute for each key, all of them allowed in
    /// a burst.
    pub fn new(per_minute: u32) -> Self {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(per_minute);
        Self {
            by_address: DefaultKeyedRateLimiter::dashmap(quota),
            by_subject: DefaultKeyedRateLimiter::dashmap(quota),
            clock: DefaultClock::default(),
            checks: AtomicU64::new(0),
        }
    }

    /// Spends one request of `address`; `Err(seconds)` to wait when none is
    /// left.
    pub fn check_address(&self, address: IpAddr) -> Result<(), u64> {
        self.sweep();
        check(&self.by_address, &address, &self.clock)
    }

    /// Spends one request of a token subject.
    pub fn check_subject(&self, subject: &str) -> Result<(), u64> {
        check(&self.by_subject, &subject.to_string(), &self.clock)
    }

    /// Forgets keys whose budget is full again, now and then, so the maps
    /// do not grow with every address ever seen.
    fn sweep(&self) {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.by_address.retain_recent();
            self.by_subject.retain_recent();
            self.by_address.shrink_to_fit();
            self.by_subject.shrink_to_fit();
        }
    }
}

fn check<K: Clone + Hash + Eq>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
    clock: &DefaultClock,
) -> Result<(), u64> {
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(clock.now());
        wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_runs_out_and_others_do_not() {
        let limits = RateLimits::new(3);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..3 {
            assert_eq!(limits.check_address(a), Ok(()));
        }
        let wait = limits.check_address(a).expect_err("limited");
        assert!((1..=20).contains(&wait), "{wait}");
        assert_eq!(limits.check_address(b), Ok(()));
        assert_eq!(limits.check_subject("alice"), Ok(()));
    }
}
