//! When probes start: jittered intervals and a timer heap.
//!
//! Pure: times are nanoseconds after the prober's epoch, passed in.
//!
//! - A new target's first probe is at a uniformly random point of its
//!   first interval, so a thousand targets handed in at once (a start, a
//!   reload) are not probed in one burst.
//! - Every later probe starts `interval × U(0.9, 1.1)` after the previous
//!   one started (±10 %), so targets that happen to line up drift apart
//!   again instead of staying in lockstep.
//! - [`TimerHeap`] is a binary heap of next-probe times: O(log n) per
//!   probe. [`DeadlineQueues`] hold the deadlines of probes in flight, O(1).
//!   Entries carry the
//!   slot's sequence number at the time they were pushed; an entry whose
//!   slot has moved on (its probe finished early, or the target was
//!   removed) is skipped when it comes up, instead of being searched for
//!   and deleted.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

/// A small, fast generator for jitter (splitmix64). Not for secrets.
#[derive(Clone, Debug)]
pub struct Jitter {
    state: u64,
}

impl Jitter {
    /// A generator with a fixed seed (tests, benches).
    pub fn seeded(seed: u64) -> Jitter {
        Jitter { state: seed }
    }

    /// A generator seeded from the clock and the process id, so that two
    /// gateways started together do not probe a shared backend in step.
    pub fn from_entropy() -> Jitter {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Jitter::seeded(nanos ^ (u64::from(std::process::id()) << 32))
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform value in `0..n` (n > 0), by multiply-shift.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Delay of a new target's first probe: uniform in `[0, interval)`.
    pub fn first_delay(&mut self, interval: Duration) -> Duration {
        let n = duration_nanos(interval).max(1);
        Duration::from_nanos(self.below(n))
    }

    /// One jittered interval: uniform in `[0.9, 1.1] × interval`.
    pub fn next_interval(&mut self, interval: Duration) -> Duration {
        let n = duration_nanos(interval);
        let tenth = n / 10;
        Duration::from_nanos(n - tenth + self.below(2 * tenth + 1))
    }
}

/// Nanoseconds of a duration, saturating (check intervals are at most an hour).
pub fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A timer: at `at` (ns after the epoch), slot `slot` whose sequence number
/// was `seq` when the timer was set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timer {
    /// When it fires.
    pub at: u64,
    /// The slot it is for.
    pub slot: u32,
    /// The slot's sequence number when it was set.
    pub seq: u32,
}

/// Timers, earliest first.
#[derive(Debug, Default)]
pub struct TimerHeap {
    heap: BinaryHeap<Reverse<Timer>>,
}

impl TimerHeap {
    /// An empty heap.
    pub fn new() -> TimerHeap {
        TimerHeap::default()
    }

    /// Adds a timer: O(log n).
    pub fn push(&mut self, timer: Timer) {
        self.heap.push(Reverse(timer));
    }

    /// When the earliest timer fires.
    pub fn next_at(&self) -> Option<u64> {
        self.heap.peek().map(|t| t.0.at)
    }

    /// Removes and returns the earliest timer if it fires at or before `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<Timer> {
        if self.next_at()? <= now {
            self.heap.pop().map(|t| t.0)
        } else {
            None
        }
    }

    /// Timers held, stale ones included.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no timer is held.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// Deadlines of probes in flight, one FIFO per distinct timeout.
///
/// A probe's deadline is its start plus its check's timeout, and starts
/// only move forward, so the deadlines of one timeout arrive in order: a
/// queue per timeout is sorted by construction, and pushing and popping
/// are O(1) on memory read in order. Most probes finish long before their
/// deadline; their entries go stale (their slot's sequence has moved on)
/// and are skipped when they come up. There are as many queues as distinct
/// timeouts, a handful.
#[derive(Debug, Default)]
pub struct DeadlineQueues {
    queues: Vec<(u64, VecDeque<Timer>)>,
}

impl DeadlineQueues {
    /// No deadlines.
    pub fn new() -> DeadlineQueues {
        DeadlineQueues::default()
    }

    /// Adds the deadline of a probe whose check has `timeout_ns`; `timer.at`
    /// must not be before the last one pushed with the same timeout.
    pub fn push(&mut self, timeout_ns: u64, timer: Timer) {
        match self.queues.iter_mut().find(|(t, _)| *t == timeout_ns) {
            Some((_, q)) => q.push_back(timer),
            None => self.queues.push((timeout_ns, VecDeque::from([timer]))),
        }
    }

    /// The earliest deadline.
    pub fn next_at(&self) -> Option<u64> {
        self.queues
            .iter()
            .filter_map(|(_, q)| q.front())
            .map(|t| t.at)
            .min()
    }

    /// Removes and returns a deadline at or before `now`, if any.
    pub fn pop_due(&mut self, now: u64) -> Option<Timer> {
        self.queues
            .iter_mut()
            .find(|(_, q)| q.front().is_some_and(|t| t.at <= now))
            .and_then(|(_, q)| q.pop_front())
    }

    /// Forgets the queues of timeouts no longer in use.
    pub fn drop_empty(&mut self) {
        self.queues.retain(|(_, q)| !q.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_stay_within_ten_percent_and_cover_the_band() {
        let mut j = Jitter::seeded(7);
        let interval = Duration::from_secs(1);
        let draws: Vec<Duration> = (0..10_000).map(|_| j.next_interval(interval)).collect();
        let min = *draws.iter().min().unwrap();
        let max = *draws.iter().max().unwrap();
        assert!(min >= Duration::from_millis(900), "{min:?}");
        assert!(max <= Duration::from_millis(1100), "{max:?}");
        // Both ends of the band are reached, and the mean is the interval.
        assert!(min < Duration::from_millis(905) && max > Duration::from_millis(1095));
        let mean = draws.iter().sum::<Duration>() / 10_000;
        assert!(
            mean.abs_diff(interval) < Duration::from_millis(5),
            "{mean:?}"
        );
    }

    #[test]
    fn first_probes_spread_over_the_first_interval() {
        let mut j = Jitter::seeded(11);
        let interval = Duration::from_secs(2);
        let mut bins = [0u32; 10];
        for _ in 0..10_000 {
            let d = j.first_delay(interval);
            assert!(d < interval);
            bins[(d.as_nanos() * 10 / interval.as_nanos()) as usize] += 1;
        }
        // Uniform: each tenth of the interval gets about a tenth of the
        // targets (1 000 ± 15 %), not a burst at the start.
        for (i, &n) in bins.iter().enumerate() {
            assert!(
                (850..=1150).contains(&n),
                "bin {i}: {n} of 10 000 ({bins:?})"
            );
        }
    }

    #[test]
    fn differently_seeded_generators_differ() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut j = Jitter::seeded(1);
                move |_| j.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut j = Jitter::seeded(2);
                move |_| j.next_u64()
            })
            .collect();
        assert_ne!(a, b);
    }

    #[test]
    fn deadlines_of_several_timeouts_come_out_in_order() {
        let mut d = DeadlineQueues::new();
        // Two timeouts (100 and 30), starts moving forward.
        for (start, timeout, slot) in [(0, 100, 0), (10, 30, 1), (20, 100, 2), (30, 30, 3)] {
            d.push(
                timeout,
                Timer {
                    at: start + timeout,
                    slot,
                    seq: 0,
                },
            );
        }
        assert_eq!(d.next_at(), Some(40));
        assert_eq!(d.pop_due(39), None);
        let mut due: Vec<u32> = std::iter::from_fn(|| d.pop_due(100))
            .map(|t| t.slot)
            .collect();
        due.sort();
        assert_eq!(due, [0, 1, 3]);
        assert_eq!(d.next_at(), Some(120));
        d.drop_empty();
        assert_eq!(d.queues.len(), 1);
        assert_eq!(d.pop_due(u64::MAX).map(|t| t.slot), Some(2));
        assert_eq!(d.next_at(), None);
    }

    #[test]
    fn timers_come_out_earliest_first_and_only_when_due() {
        let mut heap = TimerHeap::new();
        for (at, slot) in [(30, 3), (10, 1), (20, 2), (10, 0)] {
            heap.push(Timer { at, slot, seq: 0 });
        }
        assert_eq!(heap.next_at(), Some(10));
        assert_eq!(heap.pop_due(9), None);
        let due: Vec<u32> = std::iter::from_fn(|| heap.pop_due(20))
            .map(|t| t.slot)
            .collect();
        assert_eq!(due, [0, 1, 2]);
        assert_eq!(heap.len(), 1);
        assert_eq!(heap.pop_due(u64::MAX).map(|t| t.slot), Some(3));
        assert!(heap.is_empty());
    }
}
