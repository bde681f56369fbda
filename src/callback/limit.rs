//! Per-client-IP quotas on callback routes (governor). Memory stays bounded:
//! a background sweep forgets addresses whose quota has refilled.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::text::Rate;

pub(crate) struct IpLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl IpLimiter {
    pub(crate) fn new(rate: Rate) -> Option<Self> {
        let count = NonZeroU32::new(rate.count)?;
        let quota = Quota::with_period(rate.per / rate.count)?.allow_burst(count);
        Some(Self {
            limiter: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
        })
    }

    /// Takes one unit of `ip`'s quota: `Err(wait)` when it is used up.
    pub(crate) fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.limiter
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets addresses whose quota is full again.
    pub(crate) fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_runs_out_and_says_how_long() {
        let l = IpLimiter::new(Rate {
            count: 3,
            per: Duration::from_secs(60),
        })
        .expect("limiter");
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        for _ in 0..3 {
            assert!(l.check(a).is_ok());
        }
        let wait = l.check(a).expect_err("exhausted");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(20));
        assert!(l.check(b).is_ok(), "other addresses are not affected");
    }
}
