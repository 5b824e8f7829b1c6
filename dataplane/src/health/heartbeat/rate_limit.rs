//! Per-source rate limiting in fixed memory.
//!
//! A token bucket per source, in a fixed array indexed by a keyed hash of
//! the source: memory is the array, whatever the number of sources, and
//! nothing is ever inserted or evicted. Two sources that hash to one bucket
//! share its rate (rare with 4 096 buckets and a random key, and then only
//! halves a legitimate agent's share). An IPv6 source counts by its /64,
//! the smallest block one host usually holds, so one host cannot spread
//! over every bucket by rotating addresses. Pure: time is passed in.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;

/// A source's allowance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Heartbeats per second, sustained.
    pub per_second: u32,
    /// Heartbeats at once after a quiet spell.
    pub burst: u32,
}

impl Default for RateLimit {
    /// 100 a second with bursts of 200: an agent heartbeating 100 backends
    /// every second fits.
    fn default() -> RateLimit {
        RateLimit {
            per_second: 100,
            burst: 200,
        }
    }
}

/// A token count in thousandths, and when it was last refilled.
#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    milli_tokens: u64,
    /// ns after the caller's epoch; 0: never used (full).
    last: u64,
}

/// Token buckets for sources, in fixed memory.
#[derive(Debug)]
pub struct SourceRateLimiter {
    buckets: Box<[Bucket]>,
    key: RandomState,
    limit: RateLimit,
}

impl SourceRateLimiter {
    /// `buckets` (rounded up to a power of two, at least 1) buckets.
    pub fn new(limit: RateLimit, buckets: usize) -> SourceRateLimiter {
        SourceRateLimiter {
            buckets: vec![Bucket::default(); buckets.max(1).next_power_of_two()].into_boxed_slice(),
            key: RandomState::new(),
            limit,
        }
    }

    fn index(&self, source: IpAddr) -> usize {
        let mut h = self.key.build_hasher();
        match source.to_canonical() {
            IpAddr::V4(v4) => v4.octets().hash(&mut h),
            IpAddr::V6(v6) => v6.octets()[..8].hash(&mut h),
        }
        (h.finish() as usize) & (self.buckets.len() - 1)
    }

    /// Whether `source` may send one more at `now_ns` (ns after any fixed
    /// epoch, never 0); takes a token if so.
    pub fn allow(&mut self, source: IpAddr, now_ns: u64) -> bool {
        let burst = u64::from(self.limit.burst) * 1000;
        let rate = u64::from(self.limit.per_second);
        let i = self.index(source);
        let bucket = &mut self.buckets[i];
        let tokens = if bucket.last == 0 {
            burst
        } else {
            let elapsed = now_ns.saturating_sub(bucket.last);
            // tokens/s × ns → thousandths of a token: × rate / 1e6.
            let refill = u128::from(elapsed) * u128::from(rate) / 1_000_000;
            (u128::from(bucket.milli_tokens) + refill).min(u128::from(burst)) as u64
        };
        bucket.last = now_ns.max(1);
        if tokens >= 1000 {
            bucket.milli_tokens = tokens - 1000;
            true
        } else {
            bucket.milli_tokens = tokens;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let mut limiter = SourceRateLimiter::new(
            RateLimit {
                per_second: 10,
                burst: 20,
            },
            64,
        );
        let a: IpAddr = "198.18.0.5".parse().unwrap();
        let allowed = (0..100).filter(|_| limiter.allow(a, SECOND)).count();
        assert_eq!(allowed, 20);
        // Half a second later: 5 more.
        let allowed = (0..100)
            .filter(|_| limiter.allow(a, SECOND + SECOND / 2))
            .count();
        assert_eq!(allowed, 5);
        // A long quiet spell refills to the burst, not beyond.
        let allowed = (0..100).filter(|_| limiter.allow(a, 1000 * SECOND)).count();
        assert_eq!(allowed, 20);
    }

    #[test]
    fn sources_do_not_share_a_limit_and_v6_counts_by_its_64() {
        let limit = RateLimit {
            per_second: 1,
            burst: 3,
        };
        let mut limiter = SourceRateLimiter::new(limit, 4096);
        let a: IpAddr = "198.18.0.5".parse().unwrap();
        let b: IpAddr = "198.18.0.6".parse().unwrap();
        assert_eq!((0..10).filter(|_| limiter.allow(a, SECOND)).count(), 3);
        // `b` lands in another bucket unless the random key says otherwise.
        if limiter.index(a) != limiter.index(b) {
            assert_eq!((0..10).filter(|_| limiter.allow(b, SECOND)).count(), 3);
        }
        // Every address of one /64 draws from one bucket.
        let allowed = (0..10u16)
            .filter(|&i| {
                let ip: IpAddr = format!("2001:2:0:1::{i:x}").parse().unwrap();
                limiter.allow(ip, SECOND)
            })
            .count();
        assert_eq!(allowed, 3);
        // IPv4-mapped IPv6 is the IPv4 source.
        let mapped: IpAddr = "::ffff:198.18.0.5".parse().unwrap();
        assert!(!limiter.allow(mapped, SECOND));
    }

    #[test]
    fn memory_is_fixed_whatever_the_sources() {
        let mut limiter = SourceRateLimiter::new(RateLimit::default(), 1000);
        assert_eq!(limiter.buckets.len(), 1024);
        for i in 0..100_000u32 {
            limiter.allow(IpAddr::from(i.to_be_bytes()), SECOND + u64::from(i));
        }
        assert_eq!(limiter.buckets.len(), 1024);
    }
}
