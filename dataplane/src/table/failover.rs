//! What a compiled service does about its backends' liveness: how many of
//! them are alive, which mode that puts it in, and what an established
//! connection of a dead backend gets.
//!
//! All of it is decided by a snapshot build, from the liveness table as it
//! is at that moment; the control side rebuilds after every transition.
//! Between a transition and the rebuild that follows it, the counts and the
//! mode are stale, which is harmless: in [`Mode::Healthy`] every new flow's
//! pick is checked against the live word anyway (the skip rule), so a
//! stale count can at worst keep a service out of panic mode, or in it,
//! for the length of one build.

use crate::liveness::{Liveness, Word};
use crate::rules::{Failover, OnBackendDown, Protocol, WhenAllDown};

use super::EndpointId;

/// How many of a set of endpoints (a service's, later a subset's) are
/// alive, and their weights. Counted by the control side at each build;
/// the policies that fall back by them read these numbers, and the
/// workers' choices check the live word.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AliveCount {
    /// Endpoints with weight > 0.
    pub weighted: u32,
    /// Of those, the ones alive at the build.
    pub alive: u32,
    /// Sum of the weighted endpoints' weights.
    pub total_weight: u64,
    /// Sum of the alive ones' weights.
    pub alive_weight: u64,
}

impl AliveCount {
    /// Counts `endpoints` (id and weight) by `liveness` at `now_ns`.
    pub fn of(
        endpoints: impl IntoIterator<Item = (EndpointId, u32)>,
        liveness: &Liveness,
        now_ns: u64,
    ) -> AliveCount {
        let words = endpoints
            .into_iter()
            .map(|(id, weight)| (weight, liveness.word(id)));
        AliveCount::of_words(words, now_ns)
    }

    /// Counts endpoints given by weight and liveness word, at `now_ns`.
    pub fn of_words(endpoints: impl IntoIterator<Item = (u32, Word)>, now_ns: u64) -> AliveCount {
        let mut count = AliveCount::default();
        for (weight, word) in endpoints {
            if weight == 0 {
                continue;
            }
            count.weighted += 1;
            count.total_weight += u64::from(weight);
            if word.is_alive(now_ns) {
                count.alive += 1;
                count.alive_weight += u64::from(weight);
            }
        }
        count
    }

    /// Whether the alive share of the weight is below `percent` percent.
    pub fn share_below(&self, percent: u32) -> bool {
        u128::from(self.alive_weight) * 100 < u128::from(percent) * u128::from(self.total_weight)
    }
}

/// How a service places new flows, given its alive count and failover
/// settings. Its scheduler tables are built over the endpoints the mode
/// names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Tables over the alive weighted endpoints. Each new flow's pick is
    /// checked against the live word and skipped if dead; if none is
    /// alive, the service's `when_all_down` decides.
    #[default]
    Healthy,
    /// The alive share of the weight is below `panic_threshold`: tables
    /// over every weighted endpoint, health ignored.
    Panic,
    /// No endpoint alive, failing open: tables over every weighted
    /// endpoint, health ignored.
    AllDownOpen,
    /// No endpoint alive, failing closed: empty tables, new flows dropped
    /// (`all_backends_down`).
    AllDownClosed,
}

impl Mode {
    /// The mode for a service with `count` under `failover`.
    pub fn of(count: &AliveCount, failover: &Failover) -> Mode {
        if count.alive_weight == 0 && count.total_weight > 0 {
            match failover.when_all_down {
                WhenAllDown::Open => Mode::AllDownOpen,
                WhenAllDown::Closed => Mode::AllDownClosed,
            }
        } else if count.share_below(failover.panic_threshold) {
            Mode::Panic
        } else {
            Mode::Healthy
        }
    }

    /// `healthy`, `panic`, `all_down_open` or `all_down_closed`.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Healthy => "healthy",
            Mode::Panic => "panic",
            Mode::AllDownOpen => "all_down_open",
            Mode::AllDownClosed => "all_down_closed",
        }
    }

    /// Whether the scheduler tables hold only endpoints alive at the build
    /// (else every weighted one, or none).
    pub const fn schedules_alive_only(self) -> bool {
        matches!(self, Mode::Healthy)
    }
}

/// What a packet of an established connection does when its endpoint is
/// not alive. An endpoint carries one only when the worker must look (see
/// [`if_dead`]); otherwise the established path reads nothing more than
/// the endpoint it already has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IfDead {
    /// Drop the packet and forget the connection (TCP, `drop`).
    Drop,
    /// Answer the client's segment with a RST and forget the connection
    /// (TCP, `reset`).
    Reset,
    /// Give the flow to an alive endpoint (UDP).
    Reschedule,
}

/// What an established connection of an endpoint whose word was `word`
/// at the build (at `now_ns`), of a service with this protocol and
/// failover settings, must check for: `None` when the established path
/// need not look at the endpoint's liveness at all.
///
/// It must look when the service acts on dead endpoints (TCP `drop` or
/// `reset`, or UDP) and the endpoint either was not alive at the build or
/// has a heartbeat TTL, which can run out before any rebuild. An endpoint
/// that was alive without a TTL is looked at from the rebuild that follows
/// its going down. (A service in panic mode or failing open ignores
/// health, its connections' included: the build flags none of its
/// endpoints.)
pub fn if_dead(protocol: Protocol, failover: &Failover, word: Word, now_ns: u64) -> Option<IfDead> {
    let action = match (protocol, failover.on_backend_down()) {
        (Protocol::Udp, _) => IfDead::Reschedule,
        (Protocol::Tcp, OnBackendDown::Keep) => return None,
        (Protocol::Tcp, OnBackendDown::Drop) => IfDead::Drop,
        (Protocol::Tcp, OnBackendDown::Reset) => IfDead::Reset,
    };
    (!word.is_alive(now_ns) || word.has_ttl()).then_some(action)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn failover(threshold: u32, when: WhenAllDown) -> Failover {
        Failover {
            on_backend_down: None,
            panic_threshold: threshold,
            when_all_down: when,
        }
    }

    #[test]
    fn counts_leave_out_drained_endpoints_and_weigh_the_alive() {
        let table = Liveness::new(Instant::now());
        table.set_up(1, false).unwrap();
        table.set_deadline(2, Some(100)).unwrap();
        let count = AliveCount::of([(0, 3), (1, 1), (2, 2), (3, 0)], &table, 50);
        assert_eq!(
            count,
            AliveCount {
                weighted: 3,
                alive: 2,
                total_weight: 6,
                alive_weight: 5
            }
        );
        // At 100 ns endpoint 2's TTL has run out.
        let later = AliveCount::of([(0, 3), (1, 1), (2, 2), (3, 0)], &table, 100);
        assert_eq!((later.alive, later.alive_weight), (1, 3));
        assert!(later.share_below(51) && !later.share_below(50));
    }

    #[test]
    fn the_mode_follows_the_alive_share() {
        let count = |alive_weight| AliveCount {
            weighted: 4,
            alive: 0,
            total_weight: 4,
            alive_weight,
        };
        let open = failover(50, WhenAllDown::Open);
        assert_eq!(Mode::of(&count(4), &open), Mode::Healthy);
        assert_eq!(
            Mode::of(&count(2), &open),
            Mode::Healthy,
            "50 % is not below 50"
        );
        assert_eq!(Mode::of(&count(1), &open), Mode::Panic);
        assert_eq!(Mode::of(&count(0), &open), Mode::AllDownOpen);
        let closed = failover(0, WhenAllDown::Closed);
        assert_eq!(Mode::of(&count(1), &closed), Mode::Healthy, "no panic mode");
        assert_eq!(Mode::of(&count(0), &closed), Mode::AllDownClosed);
        // A service without weight (only in unvalidated rules) has nothing
        // to fail over.
        assert_eq!(Mode::of(&AliveCount::default(), &closed), Mode::Healthy);
        assert!(Mode::Healthy.schedules_alive_only() && !Mode::Panic.schedules_alive_only());
        assert_eq!(Mode::AllDownClosed.name(), "all_down_closed");
    }

    #[test]
    fn the_established_path_looks_only_where_it_must() {
        let policy = |p| Failover {
            on_backend_down: Some(p),
            ..Failover::default()
        };
        let (tcp, udp) = (Protocol::Tcp, Protocol::Udp);
        let up = Word::UP;
        let down = Word::DOWN;
        let ttl = Word::up_until(1_000);
        // keep: never, whatever the endpoint.
        for w in [up, down, ttl] {
            assert_eq!(if_dead(tcp, &policy(OnBackendDown::Keep), w, 0), None);
            assert_eq!(if_dead(tcp, &Failover::default(), w, 0), None);
        }
        // drop / reset / UDP: dead or TTL-registered endpoints only.
        assert_eq!(if_dead(tcp, &policy(OnBackendDown::Drop), up, 0), None);
        assert_eq!(
            if_dead(tcp, &policy(OnBackendDown::Drop), down, 0),
            Some(IfDead::Drop)
        );
        assert_eq!(
            if_dead(tcp, &policy(OnBackendDown::Reset), ttl, 0),
            Some(IfDead::Reset)
        );
        assert_eq!(if_dead(udp, &Failover::default(), up, 0), None);
        assert_eq!(
            if_dead(udp, &Failover::default(), ttl, 2_000),
            Some(IfDead::Reschedule)
        );
    }
}
