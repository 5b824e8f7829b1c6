//! What the pipeline decides for each frame, and why frames are dropped.

use crate::wire::ParseError;

/// The fate of one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Rewritten in place; send it out of this port (interface index).
    Transmit(u16),
    /// Not the gateway's traffic: hand it to the kernel unchanged.
    Pass,
    /// Discard it, for this reason.
    Drop(DropReason),
}

/// Why a frame was dropped. Each reason is one counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The parser rejected the frame.
    Malformed(ParseError),
    /// TTL or hop limit would reach 0 when forwarded.
    TtlExpired,
    /// An IP fragment addressed to a service VIP: the gateway does not
    /// reassemble, and a non-first fragment carries no ports to match.
    FragmentToVip,
    /// The service has no backend with weight > 0 (only rules that were
    /// not validated can say so).
    NoBackend,
    /// The connection's backend was removed from the rules (TCP: the
    /// connection ends; UDP flows are rescheduled instead).
    BackendRemoved,
    /// No next-hop MAC is known for the backend.
    NoNeighbour,
    /// A TCP segment without SYN for a `wrr` service and no connection:
    /// no backend choice could be the one the connection began with.
    NoConnection,
    /// The egress port's transmit ring was full.
    TxRingFull,
    /// The egress port is not one this worker serves (rules naming an
    /// interface the gateway was not started on).
    NoEgressPort,
    /// A packet of a TCP connection whose backend is down or expired, in a
    /// service with `on_backend_down = "drop"` (or `"reset"`, for a segment
    /// that is itself a RST): the connection is forgotten.
    BackendDown,
    /// A new flow to a service none of whose backends is alive, with
    /// `when_all_down = "closed"`.
    AllBackendsDown,
    /// A new flow the connection table had no room for: it is full of
    /// established connections, which it keeps (`flows.evict_established`
    /// is off). The client's retry gets a place once one ends or idles out.
    FlowTableFull,
    /// A new flow over one of its service's limits (`[services.limits]`,
    /// `over_limit = "drop"`): the admission counters say which.
    OverLimit,
    /// A fan-out backend's reply after the first since the client's latest
    /// datagram, for a service with `fanout_replies = "first"`.
    FanoutReplyAfterFirst,
    /// A fan-out copy not made: the share of the frame pool copies may
    /// hold was spent (counted per copy; not a received frame).
    FanoutCopyNoFrame,
    /// A backend's packet that belongs to no connection, from a backend
    /// (protocol, address, port) that several services share: no VIP
    /// could be known to be the right one. (Where exactly one service has
    /// that backend, the packet is translated back to its VIP instead.)
    UnknownReply,
    /// An ICMP error about a packet to a VIP or a backend, or from one,
    /// whose connection the gateway does not know: there is no one to
    /// translate it for.
    UnknownIcmpError,
    /// A frame addressed to another host's unicast MAC: a router forwards
    /// only what is sent to its own interface (RFC 1812, 5.2.2).
    OtherHost,
    /// A broadcast frame that the gateway would otherwise forward (one to
    /// a service, or from a backend). Broadcasts the kernel needs (ARP) are
    /// not the gateway's and reach it as before.
    BroadcastFrame,
    /// A multicast frame that the gateway would otherwise forward.
    /// Multicast the kernel needs (neighbour discovery, router
    /// advertisements, MLD) is not the gateway's and reaches it as before.
    MulticastFrame,
    /// A new flow from a source no host can have: 0.0.0.0/8, 127/8,
    /// 224/4, 255.255.255.255, ::, ::1, ff00::/8, or a VIP of the
    /// gateway's (RFC 1812, 5.3.7).
    MartianSource,
    /// A new flow from a source inside one of the configured bogon
    /// prefixes (`[ingress] bogons`).
    BogonSource,
    /// A frame the gateway would otherwise forward whose tag its
    /// interface does not accept (an id not in its `vlans`, two tags),
    /// or an untagged frame on an interface with `untagged = false`.
    /// Traffic the kernel serves (its VLAN devices) reaches it as before.
    VlanNotConfigured,
    /// A segment of a proxied connection (`syn_proxy`) whose backend has
    /// not answered the worker's SYN yet: the client's data sent right
    /// after its ACK (it retransmits it), or the backend's other
    /// segments. The worker keeps no buffer for them.
    SynProxyHandshake,
    /// A frame to send out of an interface with an `egress_vlan` whose
    /// frame memory has no room for the tag (a frame of more than an
    /// Ethernet MTU).
    VlanNoRoom,
}

/// Reasons other than parse errors, in counter order after them.
const OWN_REASONS: [DropReason; 24] = [
    DropReason::TtlExpired,
    DropReason::FragmentToVip,
    DropReason::NoBackend,
    DropReason::BackendRemoved,
    DropReason::NoNeighbour,
    DropReason::NoConnection,
    DropReason::TxRingFull,
    DropReason::NoEgressPort,
    DropReason::BackendDown,
    DropReason::AllBackendsDown,
    DropReason::FlowTableFull,
    DropReason::OverLimit,
    DropReason::FanoutReplyAfterFirst,
    DropReason::FanoutCopyNoFrame,
    DropReason::UnknownReply,
    DropReason::UnknownIcmpError,
    DropReason::OtherHost,
    DropReason::BroadcastFrame,
    DropReason::MulticastFrame,
    DropReason::MartianSource,
    DropReason::BogonSource,
    DropReason::VlanNotConfigured,
    DropReason::SynProxyHandshake,
    DropReason::VlanNoRoom,
];

impl DropReason {
    /// How many distinct reasons (counters) there are.
    pub const COUNT: usize = ParseError::ALL.len() + OWN_REASONS.len();

    /// This reason's counter index, `0..COUNT`.
    #[inline]
    pub const fn index(self) -> usize {
        let parse = ParseError::ALL.len();
        match self {
            DropReason::Malformed(e) => e as usize,
            DropReason::TtlExpired => parse,
            DropReason::FragmentToVip => parse + 1,
            DropReason::NoBackend => parse + 2,
            DropReason::BackendRemoved => parse + 3,
            DropReason::NoNeighbour => parse + 4,
            DropReason::NoConnection => parse + 5,
            DropReason::TxRingFull => parse + 6,
            DropReason::NoEgressPort => parse + 7,
            DropReason::BackendDown => parse + 8,
            DropReason::AllBackendsDown => parse + 9,
            DropReason::FlowTableFull => parse + 10,
            DropReason::OverLimit => parse + 11,
            DropReason::FanoutReplyAfterFirst => parse + 12,
            DropReason::FanoutCopyNoFrame => parse + 13,
            DropReason::UnknownReply => parse + 14,
            DropReason::UnknownIcmpError => parse + 15,
            DropReason::OtherHost => parse + 16,
            DropReason::BroadcastFrame => parse + 17,
            DropReason::MulticastFrame => parse + 18,
            DropReason::MartianSource => parse + 19,
            DropReason::BogonSource => parse + 20,
            DropReason::VlanNotConfigured => parse + 21,
            DropReason::SynProxyHandshake => parse + 22,

            DropReason::VlanNoRoom => parse + 23,
        }
    }

    /// The reason with counter index `i`.
    pub fn from_index(i: usize) -> Option<DropReason> {
        let parse = ParseError::ALL.len();
        if i < parse {
            ParseError::ALL.get(i).copied().map(DropReason::Malformed)
        } else {
            OWN_REASONS.get(i - parse).copied()
        }
    }

    /// Every reason, in counter order.
    pub fn all() -> impl Iterator<Item = DropReason> {
        (0..Self::COUNT).filter_map(Self::from_index)
    }

    /// A stable snake_case name for counters and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Malformed(e) => e.name(),
            DropReason::TtlExpired => "ttl_expired",
            DropReason::FragmentToVip => "fragment_to_vip",
            DropReason::NoBackend => "no_backend",
            DropReason::BackendRemoved => "backend_removed",
            DropReason::NoNeighbour => "no_neighbour",
            DropReason::NoConnection => "no_connection",
            DropReason::TxRingFull => "tx_ring_full",
            DropReason::NoEgressPort => "no_egress_port",
            DropReason::BackendDown => "backend_down",
            DropReason::AllBackendsDown => "all_backends_down",
            DropReason::FlowTableFull => "flow_table_full",
            DropReason::OverLimit => "over_limit",
            DropReason::FanoutReplyAfterFirst => "fanout_reply_after_first",
            DropReason::FanoutCopyNoFrame => "fanout_copy_no_frame",
            DropReason::UnknownReply => "unknown_reply",
            DropReason::UnknownIcmpError => "unknown_icmp_error",
            DropReason::OtherHost => "other_host",
            DropReason::BroadcastFrame => "broadcast_frame",
            DropReason::MulticastFrame => "multicast_frame",
            DropReason::MartianSource => "martian_source",
            DropReason::BogonSource => "bogon_source",
            DropReason::VlanNotConfigured => "vlan_not_configured",
            DropReason::SynProxyHandshake => "synproxy_handshake",

            DropReason::VlanNoRoom => "vlan_no_room",
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_distinct_index_and_name() {
        let all: Vec<_> = DropReason::all().collect();
        assert_eq!(all.len(), DropReason::COUNT);
        for (i, r) in all.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert_eq!(DropReason::from_index(i), Some(*r));
        }
        let mut names: Vec<_> = all.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        assert_eq!(DropReason::from_index(DropReason::COUNT), None);
    }
}
