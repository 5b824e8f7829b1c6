//! Connection states, their idle timeouts, and the TCP state machine.

use crate::rules::FlowSettings;
use crate::wire::tcp_flags::{ACK, FIN, RST, SYN};

const NS_PER_S: u64 = 1_000_000_000;

/// What the gateway knows of a connection's life; it decides the idle
/// timeout.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum FlowState {
    /// TCP, handshake not finished: only the client's SYN (and perhaps the
    /// backend's SYN+ACK) seen. Short timeout, so a SYN flood does not fill
    /// the table for long.
    TcpSyn,
    /// TCP, handshake finished (or picked up mid-stream).
    TcpEstablished,
    /// TCP after a FIN or RST in either direction.
    TcpClosing,
    /// UDP.
    Udp,
    /// Any other protocol (ICMP, ...).
    Other,
}

/// Which end sent a packet of a connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Direction {
    /// The client (matched the client tuple: client → VIP).
    FromClient,
    /// The backend (matched the reply tuple: backend → client).
    FromBackend,
}

/// Idle timeouts per state, in nanoseconds: a connection idle for longer
/// than its state's timeout is expired.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FlowTimeouts {
    /// [`FlowState::TcpSyn`].
    pub tcp_syn_ns: u64,
    /// [`FlowState::TcpEstablished`].
    pub tcp_established_ns: u64,
    /// [`FlowState::TcpClosing`].
    pub tcp_closing_ns: u64,
    /// [`FlowState::Udp`].
    pub udp_ns: u64,
    /// [`FlowState::Other`].
    pub other_ns: u64,
}

impl FlowTimeouts {
    /// The idle timeout of a state.
    #[inline]
    pub fn for_state(&self, state: FlowState) -> u64 {
        match state {
            FlowState::TcpSyn => self.tcp_syn_ns,
            FlowState::TcpEstablished => self.tcp_established_ns,
            FlowState::TcpClosing => self.tcp_closing_ns,
            FlowState::Udp => self.udp_ns,
            FlowState::Other => self.other_ns,
        }
    }

    /// Whether a connection in `state`, last seen at `last_seen_ns`, is
    /// expired at `now_ns`. A clock that seems to run backwards never
    /// expires anything.
    #[inline]
    pub fn is_expired(&self, state: FlowState, last_seen_ns: u64, now_ns: u64) -> bool {
        idle_past(self.for_state(state), last_seen_ns, now_ns)
    }
}

/// Whether something last seen at `last_seen_ns` has been idle longer
/// than `timeout_ns` at `now_ns` (never, if the clock seems to have run
/// backwards).
#[inline(always)]
pub(super) fn idle_past(timeout_ns: u64, last_seen_ns: u64, now_ns: u64) -> bool {
    now_ns.saturating_sub(last_seen_ns) > timeout_ns
}

impl From<&FlowSettings> for FlowTimeouts {
    /// Seconds to nanoseconds; protocols other than TCP and UDP take UDP's
    /// timeout (both are stateless to the gateway).
    fn from(s: &FlowSettings) -> Self {
        let ns = |secs: u32| u64::from(secs).saturating_mul(NS_PER_S);
        FlowTimeouts {
            tcp_syn_ns: ns(s.tcp_syn_timeout_s),
            tcp_established_ns: ns(s.tcp_established_timeout_s),
            tcp_closing_ns: ns(s.tcp_closing_timeout_s),
            udp_ns: ns(s.udp_timeout_s),
            other_ns: ns(s.udp_timeout_s),
        }
    }
}

impl Default for FlowTimeouts {
    fn default() -> Self {
        FlowTimeouts::from(&FlowSettings::default())
    }
}

/// The next state of a connection after a packet with `tcp_flags` from
/// `direction`. `backend_replied` records that the backend has answered
/// the handshake with SYN+ACK; it is read and set here only for TCP
/// ([`FlowTable::observe`](super::FlowTable::observe) sets it for a
/// datagram flow's first reply).
///
/// - FIN or RST from either end: [`FlowState::TcpClosing`], from any TCP
///   state. RST takes the same closing timeout as FIN: the gateway checks
///   no sequence numbers, so a forged RST must not cut a live connection's
///   mapping sooner than a FIN would; a connection still sending after it
///   keeps its mapping, since every packet refreshes it.
/// - `TcpSyn`: becomes `TcpEstablished` when the client sends an ACK
///   without SYN after the backend's SYN+ACK, i.e. on the third packet of
///   the handshake. A client that only sends SYNs, or a backend that never
///   answers, leaves the connection on the short SYN timeout.
/// - `TcpClosing` is final (a reused tuple is a new connection to the
///   pipeline); UDP and other protocols have no transitions.
#[inline]
pub fn next_state(
    state: FlowState,
    backend_replied: &mut bool,
    direction: Direction,
    tcp_flags: u8,
) -> FlowState {
    match state {
        FlowState::TcpSyn | FlowState::TcpEstablished if tcp_flags & (FIN | RST) != 0 => {
            FlowState::TcpClosing
        }
        FlowState::TcpSyn => match direction {
            Direction::FromBackend => {
                if tcp_flags & (SYN | ACK) == SYN | ACK {
                    *backend_replied = true;
                }
                FlowState::TcpSyn
            }
            Direction::FromClient => {
                if *backend_replied && tcp_flags & (SYN | ACK) == ACK {
                    FlowState::TcpEstablished
                } else {
                    FlowState::TcpSyn
                }
            }
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tcp_flags::PSH;

    fn run(packets: &[(Direction, u8)]) -> FlowState {
        let mut state = FlowState::TcpSyn;
        let mut replied = false;
        for &(d, f) in packets {
            state = next_state(state, &mut replied, d, f);
        }
        state
    }

    use Direction::{FromBackend as B, FromClient as C};

    #[test]
    fn three_way_handshake_establishes() {
        assert_eq!(run(&[(C, SYN)]), FlowState::TcpSyn);
        assert_eq!(run(&[(C, SYN), (B, SYN | ACK)]), FlowState::TcpSyn);
        assert_eq!(
            run(&[(C, SYN), (B, SYN | ACK), (C, ACK)]),
            FlowState::TcpEstablished
        );
        assert_eq!(
            run(&[(C, SYN), (B, SYN | ACK), (C, ACK | PSH)]),
            FlowState::TcpEstablished
        );
    }

    #[test]
    fn client_ack_without_backend_reply_stays_syn() {
        assert_eq!(run(&[(C, SYN), (C, ACK)]), FlowState::TcpSyn);
        // A plain ACK from the backend is not a handshake reply.
        assert_eq!(run(&[(C, SYN), (B, ACK), (C, ACK)]), FlowState::TcpSyn);
        // A retransmitted SYN after the SYN+ACK does not establish.
        assert_eq!(
            run(&[(C, SYN), (B, SYN | ACK), (C, SYN)]),
            FlowState::TcpSyn
        );
    }

    #[test]
    fn fin_or_rst_from_either_end_closes_and_closing_is_final() {
        for flags in [FIN | ACK, RST, RST | ACK] {
            for d in [C, B] {
                assert_eq!(run(&[(C, SYN), (d, flags)]), FlowState::TcpClosing);
                assert_eq!(
                    run(&[(C, SYN), (B, SYN | ACK), (C, ACK), (d, flags)]),
                    FlowState::TcpClosing
                );
                assert_eq!(
                    run(&[(C, SYN), (d, flags), (B, SYN | ACK), (C, ACK)]),
                    FlowState::TcpClosing
                );
            }
        }
    }

    #[test]
    fn udp_and_other_never_change() {
        let mut replied = false;
        for s in [FlowState::Udp, FlowState::Other] {
            for f in [0, SYN, FIN, RST, ACK] {
                assert_eq!(next_state(s, &mut replied, C, f), s);
            }
        }
    }

    #[test]
    fn timeouts_come_from_settings_in_nanoseconds() {
        let s = FlowSettings {
            capacity: 10,
            tcp_syn_timeout_s: 1,
            tcp_established_timeout_s: 2,
            tcp_closing_timeout_s: 3,
            udp_timeout_s: 4,
            evict_established: false,
        };
        let t = FlowTimeouts::from(&s);
        assert_eq!(t.for_state(FlowState::TcpSyn), 1_000_000_000);
        assert_eq!(t.for_state(FlowState::TcpEstablished), 2_000_000_000);
        assert_eq!(t.for_state(FlowState::TcpClosing), 3_000_000_000);
        assert_eq!(t.for_state(FlowState::Udp), 4_000_000_000);
        assert_eq!(t.for_state(FlowState::Other), 4_000_000_000);
    }

    #[test]
    fn expiry_is_strictly_after_the_timeout_and_ignores_a_backwards_clock() {
        let t = FlowTimeouts {
            tcp_syn_ns: 10,
            tcp_established_ns: 100,
            tcp_closing_ns: 20,
            udp_ns: 30,
            other_ns: 40,
        };
        assert!(!t.is_expired(FlowState::TcpSyn, 5, 15));
        assert!(t.is_expired(FlowState::TcpSyn, 5, 16));
        assert!(!t.is_expired(FlowState::TcpEstablished, 5, 16));
        assert!(!t.is_expired(FlowState::Udp, 100, 0));
    }
}
