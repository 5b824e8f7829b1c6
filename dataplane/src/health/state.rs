//! A target's state under rise and fall, and what one check found.
//!
//! Pure: no clock, no I/O. The prober feeds each check's result to
//! [`RiseFall::observe`], which says when the state changes.

use std::fmt;

use super::check::Timing;

/// Whether a target takes new traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Health {
    /// Passing its checks.
    Up,
    /// Failing its checks.
    Down,
}

impl Health {
    /// `up` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of a target the prober has not checked yet.
///
/// The default is [`InitialState::Up`]: a target counts as up until its
/// first `fall` consecutive failures. A gateway that starts or reloads
/// therefore keeps serving at once (as it does without health checks, and
/// as HAProxy does), and a backend that is dead from the start is ejected
/// after `fall` checks, exactly like one that dies later.
/// [`InitialState::Down`] is Envoy's choice for new hosts: no traffic until
/// `rise` consecutive successes, for fleets where a new instance registers
/// before it is ready to serve.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum InitialState {
    /// Up until `fall` consecutive failures.
    #[default]
    Up,
    /// Down until `rise` consecutive successes.
    Down,
}

/// Why a check failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The connection was refused (TCP RST to the SYN, or ICMP port
    /// unreachable to a UDP datagram).
    Refused,
    /// No answer within the check's timeout.
    Timeout,
    /// The connection was reset after it was made.
    Reset,
    /// The network or host is unreachable (ICMP, or no route).
    Unreachable,
    /// An HTTP status outside the healthy range.
    BadStatus(u16),
    /// An answer that does not start with an HTTP/1.x status line.
    NotHttp,
    /// The peer closed the connection before a complete status line.
    Closed,
    /// A UDP reply shorter than the expected prefix.
    ShortReply,
    /// A UDP reply that does not start with the expected prefix.
    MismatchedReply,
    /// Any other socket error (the errno).
    Error(i32),
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureReason::Refused => f.write_str("refused"),
            FailureReason::Timeout => f.write_str("timeout"),
            FailureReason::Reset => f.write_str("reset"),
            FailureReason::Unreachable => f.write_str("unreachable"),
            FailureReason::BadStatus(s) => write!(f, "bad status {s}"),
            FailureReason::NotHttp => f.write_str("not an http reply"),
            FailureReason::Closed => f.write_str("closed before a reply"),
            FailureReason::ShortReply => f.write_str("short reply"),
            FailureReason::MismatchedReply => f.write_str("mismatched reply"),
            FailureReason::Error(errno) => {
                write!(f, "error: {}", std::io::Error::from_raw_os_error(*errno))
            }
        }
    }
}

/// What one check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckResult {
    /// Healthy.
    Ok,
    /// Not healthy, and why.
    Failed(FailureReason),
}

impl CheckResult {
    /// Whether the check passed.
    pub fn is_ok(self) -> bool {
        self == CheckResult::Ok
    }

    /// A compact code (never 0) and detail, for the lock-free status words.
    pub(super) fn encode(self) -> (u8, u16) {
        use FailureReason as F;
        match self {
            CheckResult::Ok => (1, 0),
            CheckResult::Failed(reason) => match reason {
                F::Refused => (2, 0),
                F::Timeout => (3, 0),
                F::Reset => (4, 0),
                F::Unreachable => (5, 0),
                F::BadStatus(s) => (6, s),
                F::NotHttp => (7, 0),
                F::Closed => (8, 0),
                F::ShortReply => (9, 0),
                F::MismatchedReply => (10, 0),
                F::Error(errno) => (11, u16::try_from(errno).unwrap_or(u16::MAX)),
            },
        }
    }

    /// The inverse of [`CheckResult::encode`]; `None` for code 0 (no check yet).
    pub(super) fn decode(code: u8, detail: u16) -> Option<CheckResult> {
        use FailureReason as F;
        let reason = match code {
            1 => return Some(CheckResult::Ok),
            2 => F::Refused,
            3 => F::Timeout,
            4 => F::Reset,
            5 => F::Unreachable,
            6 => F::BadStatus(detail),
            7 => F::NotHttp,
            8 => F::Closed,
            9 => F::ShortReply,
            10 => F::MismatchedReply,
            11 => F::Error(i32::from(detail)),
            _ => return None,
        };
        Some(CheckResult::Failed(reason))
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckResult::Ok => f.write_str("ok"),
            CheckResult::Failed(reason) => reason.fmt(f),
        }
    }
}

/// A target's state and its current streak of results that disagree with
/// it (failures while up, successes while down).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RiseFall {
    health: Health,
    streak: u32,
}

impl RiseFall {
    /// A target not checked yet.
    pub fn new(initial: InitialState) -> RiseFall {
        let health = match initial {
            InitialState::Up => Health::Up,
            InitialState::Down => Health::Down,
        };
        RiseFall { health, streak: 0 }
    }

    /// The current state.
    pub fn health(&self) -> Health {
        self.health
    }

    /// Takes one check's result; returns the new state when it changes.
    /// Up goes down at the `fall`-th consecutive failure, down goes up at
    /// the `rise`-th consecutive success; an agreeing result resets the
    /// streak.
    pub fn observe(&mut self, ok: bool, timing: &Timing) -> Option<Health> {
        let (disagrees, needed, other) = match self.health {
            Health::Up => (!ok, timing.fall(), Health::Down),
            Health::Down => (ok, timing.rise(), Health::Up),
        };
        if !disagrees {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        if self.streak >= needed {
            self.health = other;
            self.streak = 0;
            Some(other)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn timing(rise: u32, fall: u32) -> Timing {
        Timing::new(
            Duration::from_secs(1),
            Duration::from_millis(500),
            rise,
            fall,
        )
        .unwrap()
    }

    /// Feeds `results`; returns the index of each transition and its state.
    fn run(initial: InitialState, t: &Timing, results: &[bool]) -> Vec<(usize, Health)> {
        let mut s = RiseFall::new(initial);
        results
            .iter()
            .enumerate()
            .filter_map(|(i, &ok)| s.observe(ok, t).map(|h| (i, h)))
            .collect()
    }

    #[test]
    fn up_goes_down_at_exactly_the_fall_th_consecutive_failure() {
        let t = timing(2, 3);
        assert_eq!(run(InitialState::Up, &t, &[false, false]), []);
        assert_eq!(
            run(InitialState::Up, &t, &[false, false, false]),
            [(2, Health::Down)]
        );
        // A success in between resets the streak.
        assert_eq!(
            run(
                InitialState::Up,
                &t,
                &[false, false, true, false, false, false]
            ),
            [(5, Health::Down)]
        );
    }

    #[test]
    fn down_comes_up_at_exactly_the_rise_th_consecutive_success() {
        let t = timing(2, 3);
        let r = [false, false, false, true, false, true, true];
        assert_eq!(
            run(InitialState::Up, &t, &r),
            [(2, Health::Down), (6, Health::Up)]
        );
        let t = timing(1, 1);
        assert_eq!(
            run(InitialState::Up, &t, &[false, true, false]),
            [(0, Health::Down), (1, Health::Up), (2, Health::Down)]
        );
    }

    #[test]
    fn the_initial_state_is_a_setting() {
        let t = timing(2, 3);
        assert_eq!(RiseFall::new(InitialState::default()).health(), Health::Up);
        assert_eq!(run(InitialState::Down, &t, &[true]), []);
        assert_eq!(
            run(InitialState::Down, &t, &[true, true]),
            [(1, Health::Up)]
        );
        assert_eq!(run(InitialState::Down, &t, &[false; 10]), []);
    }

    #[test]
    fn results_round_trip_through_their_codes() {
        use FailureReason as F;
        let all = [
            CheckResult::Ok,
            CheckResult::Failed(F::Refused),
            CheckResult::Failed(F::Timeout),
            CheckResult::Failed(F::Reset),
            CheckResult::Failed(F::Unreachable),
            CheckResult::Failed(F::BadStatus(503)),
            CheckResult::Failed(F::NotHttp),
            CheckResult::Failed(F::Closed),
            CheckResult::Failed(F::ShortReply),
            CheckResult::Failed(F::MismatchedReply),
            CheckResult::Failed(F::Error(24)),
        ];
        for r in all {
            let (code, detail) = r.encode();
            assert_ne!(code, 0);
            assert_eq!(CheckResult::decode(code, detail), Some(r));
        }
        assert_eq!(CheckResult::decode(0, 0), None);
        assert_eq!(
            CheckResult::Failed(F::BadStatus(503)).to_string(),
            "bad status 503"
        );
        assert_eq!(CheckResult::Ok.to_string(), "ok");
    }
}
