//! What the prober records, readable from any thread without a lock.
//!
//! The prober thread is the only writer of every value here: counters are
//! single-writer atomics (a plain load and store, as the workers' counters
//! are), and a target's state and last result are each packed into one
//! `AtomicU64`, so a reader sees a state together with its own `since`, and
//! a result together with its own latency, never halves of two.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::state::{CheckResult, Health};
use crate::pipeline::Counter;

/// Upper bounds of the check-latency histogram's buckets, in seconds
/// (Prometheus `le` labels; a last `+Inf` bucket follows).
pub const LATENCY_BUCKETS_SECONDS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// The same bounds in microseconds.
const LATENCY_BUCKETS_MICROS: [u64; 13] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000,
];
/// Buckets including `+Inf`.
pub const LATENCY_BUCKET_COUNT: usize = LATENCY_BUCKETS_SECONDS.len() + 1;

/// A fixed-bucket latency histogram with one writer.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [Counter; LATENCY_BUCKET_COUNT],
    sum_micros: Counter,
}

/// A histogram read at one moment, in Prometheus's shape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistogramSample {
    /// Cumulative counts: `cumulative[i]` observations took at most
    /// `LATENCY_BUCKETS_SECONDS[i]`; the last one is `+Inf` (the count).
    pub cumulative: [u64; LATENCY_BUCKET_COUNT],
    /// Sum of all observations, in microseconds.
    pub sum_micros: u64,
}

impl HistogramSample {
    /// How many observations.
    pub fn count(&self) -> u64 {
        self.cumulative[LATENCY_BUCKET_COUNT - 1]
    }
}

impl LatencyHistogram {
    /// Records one observation. Only the prober thread may call this.
    pub fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BUCKETS_MICROS.partition_point(|&le| le < micros);
        self.buckets[i].inc();
        self.sum_micros.add(micros);
    }

    /// The histogram now.
    pub fn sample(&self) -> HistogramSample {
        let mut out = HistogramSample {
            sum_micros: self.sum_micros.get(),
            ..HistogramSample::default()
        };
        let mut total = 0;
        for (c, b) in out.cumulative.iter_mut().zip(&self.buckets) {
            total += b.get();
            *c = total;
        }
        out
    }
}

/// Bit 63 of the state word: down.
const DOWN_BIT: u64 = 1 << 63;
/// Latency field of the result word: 40 bits of microseconds (12 days).
const LATENCY_MASK: u64 = (1 << 40) - 1;

/// One target's counters, state and last result.
#[derive(Debug, Default)]
pub struct TargetStats {
    /// Checks completed.
    pub checks: Counter,
    /// Checks failed.
    pub failures: Counter,
    /// State changes.
    pub transitions: Counter,
    /// Latency of every completed check (a timeout counts as its timeout).
    pub latency: LatencyHistogram,
    /// Bit 63: down; bits 0..63: since when (ns after the epoch).
    state: AtomicU64,
    /// Bits 56..64: result code (0: no check yet); 40..56: detail;
    /// 0..40: latency in µs.
    last: AtomicU64,
    /// When the last completed check started (ns after the epoch).
    last_at: AtomicU64,
}

/// A target's last completed check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastCheck {
    /// What it found.
    pub result: CheckResult,
    /// How long it took.
    pub latency: Duration,
    /// When it started, in ns after the prober's epoch.
    pub started_ns: u64,
}

impl TargetStats {
    /// Stats of a new target in `health` since `now_ns`.
    pub fn new(health: Health, now_ns: u64) -> TargetStats {
        let stats = TargetStats::default();
        stats.set_state(health, now_ns);
        stats
    }

    /// Records a state. Only the prober thread may call this.
    pub fn set_state(&self, health: Health, since_ns: u64) {
        let down = if health == Health::Down { DOWN_BIT } else { 0 };
        self.state.store(down | (since_ns & !DOWN_BIT), Relaxed);
    }

    /// The state and since when (ns after the epoch).
    pub fn state(&self) -> (Health, u64) {
        let word = self.state.load(Relaxed);
        let health = if word & DOWN_BIT != 0 {
            Health::Down
        } else {
            Health::Up
        };
        (health, word & !DOWN_BIT)
    }

    /// Records a completed check. Only the prober thread may call this.
    pub fn record(&self, result: CheckResult, latency: Duration, started_ns: u64) {
        self.checks.inc();
        if !result.is_ok() {
            self.failures.inc();
        }
        self.latency.record(latency);
        let (code, detail) = result.encode();
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .min(LATENCY_MASK);
        self.last.store(
            (u64::from(code) << 56) | (u64::from(detail) << 40) | micros,
            Relaxed,
        );
        self.last_at.store(started_ns, Relaxed);
    }

    /// The last completed check, if any.
    pub fn last(&self) -> Option<LastCheck> {
        let word = self.last.load(Relaxed);
        let result = CheckResult::decode((word >> 56) as u8, (word >> 40) as u16)?;
        Some(LastCheck {
            result,
            latency: Duration::from_micros(word & LATENCY_MASK),
            started_ns: self.last_at.load(Relaxed),
        })
    }
}

/// A single-writer value that goes up and down, readable from any thread.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Sets the value. Only the owning thread may call this.
    pub fn set(&self, n: u64) {
        self.0.store(n, Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// The prober's own counters.
#[derive(Debug, Default)]
pub struct ProberCounters {
    /// Probes started.
    pub started: Counter,
    /// Probes that were due while the in-flight cap was reached, and
    /// waited for a free place.
    pub deferred: Counter,
    /// Probes that could not start for a local reason (no file descriptor,
    /// no ephemeral port, no memory): not counted against the target.
    pub local_errors: Counter,
    /// Transitions dropped because the channel was full (read the
    /// statuses to catch up).
    pub transitions_dropped: Counter,
    /// The most probes ever in flight at once.
    pub in_flight_peak: Gauge,
    /// Probes in flight now.
    pub in_flight: Gauge,
    /// How late probes started after their scheduled time: shows the
    /// prober keeping up (bucket bounds as the check latency's).
    pub start_delay: LatencyHistogram,
}

impl ProberCounters {
    /// Sets the in-flight gauge (and its peak). Only the prober thread may
    /// call this.
    pub(super) fn set_in_flight(&self, n: usize) {
        let n = n as u64;
        self.in_flight.set(n);
        if n > self.in_flight_peak.get() {
            self.in_flight_peak.set(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::state::FailureReason;

    #[test]
    fn latencies_land_in_their_buckets_cumulatively() {
        let h = LatencyHistogram::default();
        for us in [100, 500, 501, 3_000, 7_000_000] {
            h.record(Duration::from_micros(us));
        }
        let s = h.sample();
        // le=0.0005 holds 100 and 500 µs; le=0.001 adds 501; le=0.005 adds 3 ms.
        assert_eq!(&s.cumulative[..4], &[2, 3, 3, 4]);
        assert_eq!(s.cumulative[12], 4); // le=5
        assert_eq!(s.count(), 5); // +Inf holds 7 s
        assert_eq!(s.sum_micros, 100 + 500 + 501 + 3_000 + 7_000_000);
    }

    #[test]
    fn state_and_last_result_read_back_whole() {
        let stats = TargetStats::new(Health::Up, 5);
        assert_eq!(stats.state(), (Health::Up, 5));
        assert_eq!(stats.last(), None);
        stats.set_state(Health::Down, 1 << 62);
        assert_eq!(stats.state(), (Health::Down, 1 << 62));
        let r = CheckResult::Failed(FailureReason::BadStatus(503));
        stats.record(r, Duration::from_micros(1234), 99);
        assert_eq!(
            stats.last(),
            Some(LastCheck {
                result: r,
                latency: Duration::from_micros(1234),
                started_ns: 99
            })
        );
        assert_eq!((stats.checks.get(), stats.failures.get()), (1, 1));
        stats.record(CheckResult::Ok, Duration::from_millis(2), 100);
        assert_eq!((stats.checks.get(), stats.failures.get()), (2, 1));
        assert_eq!(stats.last().unwrap().result, CheckResult::Ok);
    }
}
