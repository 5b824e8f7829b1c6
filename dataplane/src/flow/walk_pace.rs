//! How many records a worker's periodic walks over its connection table
//! (the expiry sweep, the fast path's traffic walk) look at on a poll.
//!
//! A fixed number per poll ties the walks' cost to the poll rate: an idle
//! worker that naps between polls, or a busy one taking small batches,
//! polls thousands of times a second and walked a table of 2^20 records
//! several times a second, reading records that are mostly unused — a
//! third of a core spent on an idle worker while the kernel fast path
//! carried its connections. Paced by time instead, each walk goes round
//! the table in about [`ROUND_NS`] whatever the poll rate, so a worker with
//! nothing to do costs little and a busy one spends its time on frames.

/// About how long a walk takes to go round the table.
pub const ROUND_NS: u64 = 4_000_000_000;

/// The walk's rate at least, records a second: small tables go round in
/// milliseconds, so that expiry keeps close to the timeouts.
pub const MIN_PER_SECOND: u64 = 1 << 18;

/// Most records one poll looks at, however long since the last: a
/// worker back from a long pause does not stall its next frames.
pub const MAX_PER_POLL: usize = 4096;

/// The pace of one walk over a table of a given size.
#[derive(Clone, Debug)]
pub struct WalkPace {
    per_second: u64,
    /// When the walk started, on the worker's clock.
    start_ns: Option<u64>,
    /// Records earned since the start that were given (or dropped by the
    /// cap).
    given: u128,
}

impl WalkPace {
    /// The pace of a walk over `records` records: round in about
    /// [`ROUND_NS`], at [`MIN_PER_SECOND`] at least.
    pub fn new(records: usize) -> Self {
        let round = (records as u64).saturating_mul(1_000_000_000) / ROUND_NS;
        Self {
            per_second: round.max(MIN_PER_SECOND),
            start_ns: None,
            given: 0,
        }
    }

    /// Records the walk may look at now (`now_ns` on the worker's clock):
    /// those earned since the last records given, at most
    /// [`MAX_PER_POLL`]. Time too short for a whole record counts towards
    /// the next call, not lost; records beyond the cap are dropped.
    pub fn budget(&mut self, now_ns: u64) -> usize {
        let Some(start) = self.start_ns else {
            self.start_ns = Some(now_ns);
            return MAX_PER_POLL;
        };
        let elapsed = now_ns.saturating_sub(start);
        let earned = u128::from(elapsed) * u128::from(self.per_second) / 1_000_000_000;
        let owed = earned.saturating_sub(self.given);
        if owed > MAX_PER_POLL as u128 {
            self.given = earned;
            return MAX_PER_POLL;
        }
        self.given += owed;
        owed as usize
    }

    /// Records a second this walk looks at.
    pub fn per_second(&self) -> u64 {
        self.per_second
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_follows_time_not_calls() {
        let mut pace = WalkPace::new(1 << 20);
        assert_eq!(
            pace.per_second(),
            (1 << 20) / 4,
            "2^20 records round in 4 s"
        );
        assert_eq!(
            pace.budget(1_000),
            MAX_PER_POLL,
            "the first call starts the walk"
        );
        // A thousand polls within the same microsecond earn almost nothing.
        let total: usize = (0..1_000).map(|_| pace.budget(2_000)).sum();
        assert_eq!(total, 0);
        // A second of polls, 10 µs apart: about a second's worth of records.
        let mut total = 0;
        let mut now = 2_000;
        for _ in 0..100_000 {
            now += 10_000;
            total += pace.budget(now);
        }
        let second = pace.per_second() as usize;
        assert!(
            total.abs_diff(second) <= 2,
            "{total} records in a second, want {second}"
        );
    }

    #[test]
    fn fractions_carry_and_long_pauses_are_capped() {
        let mut pace = WalkPace::new(0);
        assert_eq!(
            pace.per_second(),
            MIN_PER_SECOND,
            "small tables walk at the floor"
        );
        pace.budget(0);
        // One record is earned every 1e9 / 2^18 ≈ 3.8 µs: polls 1 µs apart
        // get one every fourth poll or so, and none is lost.
        let mut total = 0;
        for i in 1..=1_000_000u64 {
            total += pace.budget(i * 1_000);
        }
        assert_eq!(total as u64, MIN_PER_SECOND, "one second at 1 µs a poll");
        // An hour's pause gives the cap, not an hour of records.
        assert_eq!(pace.budget(3_600_000_000_000), MAX_PER_POLL);
        assert_eq!(pace.budget(3_600_000_000_000), 0);
    }

    #[test]
    fn a_clock_that_steps_back_gives_nothing_and_does_not_panic() {
        let mut pace = WalkPace::new(1 << 10);
        pace.budget(u64::MAX - 5);
        assert_eq!(pace.budget(0), 0);
        assert_eq!(pace.budget(u64::MAX), 0);
    }
}
