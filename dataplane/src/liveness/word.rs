//! One endpoint's liveness in one 64-bit word.
//!
//! ```text
//!  63  62                                                       0
//! ┌──┬──────────────────────────────────────────────────────────┐
//! │up│ heartbeat deadline, ns after the epoch (2^63 − 1: no TTL) │
//! └──┴──────────────────────────────────────────────────────────┘
//! ```
//!
//! The health bit sits above the deadline so that "alive at `now`" — up,
//! and `now` before the deadline — is one unsigned compare of the word
//! with `UP | now`: a word that is down is below `2^63`, so below any
//! `UP | now`; a word that is up is above `UP | now` exactly when its
//! deadline is after `now`; and "no TTL" is the largest deadline there
//! is. A worker reads the word with one relaxed load and compares it; it
//! never writes it.
//!
//! Nanoseconds, not microseconds, because they are the workers' clock
//! (`now_ns`): no division on the data path, and 63 bits of them last
//! 292 years after the epoch.
//!
//! *Draining* is not in the word: it is weight 0 in the rules, compiled
//! into the snapshot, and a drained endpoint is in no scheduler table.

use std::fmt;

/// The health bit: set while the endpoint's checks pass (or it has none).
const UP_BIT: u64 = 1 << 63;
/// The deadline field, and its value for "no TTL".
const NO_TTL: u64 = UP_BIT - 1;

/// One endpoint's health and heartbeat deadline (see the module doc).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Word(u64);

impl Word {
    /// Up, without a TTL: what a new endpoint starts as, and what an
    /// endpoint the table has never been told about reads as.
    pub const UP: Word = Word(UP_BIT | NO_TTL);
    /// Down, without a TTL (an endpoint whose checks start failed).
    pub const DOWN: Word = Word(NO_TTL);

    /// Up, alive until `deadline_ns` (a backend registered with a TTL).
    /// A deadline at or past 2^63 − 1 ns is clamped just below it, so it
    /// still counts as a TTL.
    pub const fn up_until(deadline_ns: u64) -> Word {
        Word(UP_BIT | clamp_deadline(deadline_ns))
    }

    /// The word as stored.
    #[inline]
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// The word stored as `bits`.
    #[inline]
    pub const fn from_bits(bits: u64) -> Word {
        Word(bits)
    }

    /// Whether the endpoint's health is up (its TTL aside).
    #[inline]
    pub const fn is_up(self) -> bool {
        self.0 & UP_BIT != 0
    }

    /// The heartbeat deadline in ns after the epoch, if it has a TTL.
    #[inline]
    pub const fn deadline_ns(self) -> Option<u64> {
        match self.0 & NO_TTL {
            NO_TTL => None,
            d => Some(d),
        }
    }

    /// Whether it has a heartbeat TTL.
    #[inline]
    pub const fn has_ttl(self) -> bool {
        self.0 & NO_TTL != NO_TTL
    }

    /// Alive at `now_ns`: up, and before its deadline if it has one. One
    /// compare.
    #[inline(always)]
    pub const fn is_alive(self, now_ns: u64) -> bool {
        self.0 > (UP_BIT | now_ns)
    }

    /// The same deadline, with health `up`.
    #[inline]
    pub const fn with_up(self, up: bool) -> Word {
        if up {
            Word(self.0 | UP_BIT)
        } else {
            Word(self.0 & NO_TTL)
        }
    }

    /// The same health, with deadline `deadline_ns` (`None`: no TTL).
    #[inline]
    pub const fn with_deadline(self, deadline_ns: Option<u64>) -> Word {
        let deadline = match deadline_ns {
            Some(d) => clamp_deadline(d),
            None => NO_TTL,
        };
        Word((self.0 & UP_BIT) | deadline)
    }

    /// What an operator is shown, given the endpoint's weight.
    pub const fn status(self, now_ns: u64, weight: u32) -> Status {
        if !self.is_up() {
            Status::Down
        } else if !self.is_alive(now_ns) {
            Status::Expired
        } else if weight == 0 {
            Status::Draining
        } else {
            Status::Up
        }
    }
}

/// A deadline that is not "no TTL".
const fn clamp_deadline(deadline_ns: u64) -> u64 {
    if deadline_ns >= NO_TTL {
        NO_TTL - 1
    } else {
        deadline_ns
    }
}

impl Default for Word {
    fn default() -> Word {
        Word::UP
    }
}

impl fmt::Debug for Word {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let health = if self.is_up() { "up" } else { "down" };
        match self.deadline_ns() {
            Some(d) => write!(f, "Word({health}, until {d} ns)"),
            None => write!(f, "Word({health})"),
        }
    }
}

/// An endpoint's state as operators see it. *Alive* — the only state
/// that takes new flows — is [`Status::Up`].
///
/// When more than one applies, the most severe is shown: a backend whose
/// checks fail is `down` whatever its TTL or weight, one whose heartbeats
/// stopped is `expired` even if drained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Checks pass (or there are none), heartbeats (if required) are on
    /// time, and its weight is above 0.
    Up,
    /// Its health checks fail.
    Down,
    /// Weight 0: its connections stay, new flows go elsewhere.
    Draining,
    /// It has a heartbeat TTL and the TTL passed without a heartbeat.
    Expired,
}

impl Status {
    /// `up`, `down`, `draining` or `expired`.
    pub const fn name(self) -> &'static str {
        match self {
            Status::Up => "up",
            Status::Down => "down",
            Status::Draining => "draining",
            Status::Expired => "expired",
        }
    }

    /// Whether the endpoint takes new flows.
    pub const fn is_alive(self) -> bool {
        matches!(self, Status::Up)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_named_words_mean_what_they_say() {
        assert!(Word::UP.is_up() && !Word::UP.has_ttl());
        assert!(Word::UP.is_alive(0) && Word::UP.is_alive(NO_TTL - 1));
        assert!(!Word::DOWN.is_up() && !Word::DOWN.has_ttl());
        assert!(!Word::DOWN.is_alive(0));
        assert_eq!(Word::default(), Word::UP);
        let w = Word::up_until(500);
        assert_eq!(w.deadline_ns(), Some(500));
        assert!(w.is_alive(499) && !w.is_alive(500) && !w.is_alive(501));
        // A deadline as far as "no TTL" is still a TTL.
        assert!(Word::up_until(u64::MAX).has_ttl());
        assert_eq!(format!("{w:?}"), "Word(up, until 500 ns)");
        assert_eq!(format!("{:?}", Word::DOWN), "Word(down)");
    }

    #[test]
    fn health_and_deadline_change_independently() {
        let w = Word::up_until(1_000).with_up(false);
        assert_eq!((w.is_up(), w.deadline_ns()), (false, Some(1_000)));
        assert!(!w.is_alive(0), "down before its deadline");
        let w = w.with_up(true);
        assert!(w.is_alive(999));
        let w = w.with_deadline(None);
        assert!(w.is_up() && !w.has_ttl() && w.is_alive(u64::MAX >> 2));
        let w = Word::DOWN.with_deadline(Some(7));
        assert_eq!((w.is_up(), w.deadline_ns()), (false, Some(7)));
    }

    #[test]
    fn operators_see_the_most_severe_state() {
        let ttl = Word::up_until(100);
        assert_eq!(ttl.status(50, 1), Status::Up);
        assert_eq!(ttl.status(50, 0), Status::Draining);
        assert_eq!(ttl.status(100, 0), Status::Expired);
        assert_eq!(ttl.with_up(false).status(100, 0), Status::Down);
        assert_eq!(Word::DOWN.status(0, 1), Status::Down);
        let names: Vec<&str> = [Status::Up, Status::Down, Status::Draining, Status::Expired]
            .iter()
            .map(|s| s.name())
            .collect();
        assert_eq!(names, ["up", "down", "draining", "expired"]);
        assert!(Status::Up.is_alive() && !Status::Draining.is_alive());
    }

    proptest! {
        /// The one compare agrees with the definition: up, and before the
        /// deadline if there is one.
        #[test]
        fn one_compare_is_the_definition(up: bool, deadline in prop::option::of(0u64..NO_TTL), now in 0u64..NO_TTL) {
            let w = Word::UP.with_deadline(deadline).with_up(up);
            let defined = up && deadline.is_none_or(|d| now < d);
            prop_assert_eq!(w.is_alive(now), defined);
            prop_assert_eq!(Word::from_bits(w.bits()), w);
        }
    }
}
