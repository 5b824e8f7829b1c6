//! The XDP program's counters, summed over CPUs.

use super::program::counter;

/// What the XDP program did with the frames it saw, per reason, since it
/// was loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpCounters {
    /// Redirected: TCP/UDP to a service.
    pub redirected_vip: u64,
    /// Redirected: a fragment to a VIP address.
    pub redirected_vip_fragment: u64,
    /// Redirected: a reply from a backend.
    pub redirected_reply: u64,
    /// Redirected in forward-only mode (redirect everything IP).
    pub redirected_all: u64,
    /// Owned traffic dropped: no AF_XDP socket on its receive queue.
    pub dropped_no_socket: u64,
    /// Forward-only mode, passed: no AF_XDP socket on its receive queue.
    pub passed_no_socket: u64,
    /// Passed: not IP (ARP, LLDP, …).
    pub passed_not_ip: u64,
    /// Passed: IP but neither TCP nor UDP (ICMP, NDP, …).
    pub passed_not_tcp_udp: u64,
    /// Passed: TCP/UDP not to a service nor from a backend (e.g. SSH).
    pub passed_not_owned: u64,
    /// Passed: a fragment not to a VIP.
    pub passed_fragment: u64,
    /// Passed: headers the program could not parse (truncated, a third
    /// VLAN tag, too many IPv6 extension headers, …).
    pub passed_unparsed: u64,
    /// Passed: from a backend's (protocol, address, port) but to one of
    /// the box's own addresses, so an answer to the box's own connection
    /// (a health check, an operator's curl), not a reply of the gateway's.
    pub passed_local: u64,
    /// Fast path: forwarded with XDP_TX (egress is the ingress interface).
    pub fast_tx: u64,
    /// Fast path: forwarded with bpf_redirect_map to another interface.
    pub fast_redirect: u64,
    /// Fast path on, owned traffic with no entry in the cache (a new
    /// flow, or one not installed): to the worker, and counted above too.
    pub fast_miss: u64,
    /// Fast path on, owned traffic it must not forward (SYN, FIN, RST,
    /// TTL ≤ 1, IPv4 options, IPv6 extension headers, lengths the worker
    /// refuses, another client MAC): to the worker, and counted above too.
    pub fast_handed_up: u64,
    /// Fast path: an entry's egress port has no interface in
    /// `fast_tx_ports`, or one that cannot transmit XDP frames (its bit
    /// clear in `fast_config.egress_ready`): to the worker.
    pub fast_no_egress: u64,
    /// ARP requests for an announced VIP answered with XDP_TX.
    pub answered_arp: u64,
    /// IPv6 neighbour solicitations for an announced VIP answered with
    /// XDP_TX.
    pub answered_ns: u64,
    /// Ingress sanity (bpf/flowgate_ingress.h), dropped: unicast for
    /// another host's MAC.
    pub dropped_other_host: u64,
    /// Dropped: broadcast, and the gateway's traffic otherwise.
    pub dropped_broadcast: u64,
    /// Dropped: multicast, and the gateway's traffic otherwise.
    pub dropped_multicast: u64,
    /// Dropped: an IPv4 header with a wrong checksum.
    pub dropped_bad_ip_checksum: u64,
    /// Dropped: VLAN-tagged, and the gateway's traffic otherwise.
    pub dropped_vlan_not_configured: u64,
}

impl XdpCounters {
    /// Frames handed to an AF_XDP socket.
    pub fn redirected(&self) -> u64 {
        self.redirected_vip
            .saturating_add(self.redirected_vip_fragment)
            .saturating_add(self.redirected_reply)
            .saturating_add(self.redirected_all)
    }

    /// Frames that should have gone to a socket but found none.
    pub fn redirect_failed(&self) -> u64 {
        self.dropped_no_socket.saturating_add(self.passed_no_socket)
    }

    /// Frames the fast path forwarded.
    pub fn fast_forwarded(&self) -> u64 {
        self.fast_tx.saturating_add(self.fast_redirect)
    }

    /// Frames the ingress checks dropped.
    pub fn ingress_dropped(&self) -> u64 {
        self.dropped_other_host
            .saturating_add(self.dropped_broadcast)
            .saturating_add(self.dropped_multicast)
            .saturating_add(self.dropped_bad_ip_checksum)
            .saturating_add(self.dropped_vlan_not_configured)
    }

    /// Frames passed to the kernel.
    pub fn passed(&self) -> u64 {
        self.passed_no_socket
            .saturating_add(self.passed_not_ip)
            .saturating_add(self.passed_not_tcp_udp)
            .saturating_add(self.passed_not_owned)
            .saturating_add(self.passed_fragment)
            .saturating_add(self.passed_unparsed)
            .saturating_add(self.passed_local)
    }

    /// The counters from per-index totals (`totals[i]` for counter `i`).
    pub(crate) fn from_totals(totals: &[u64]) -> XdpCounters {
        let at = |index: u32| totals.get(index as usize).copied().unwrap_or(0);
        XdpCounters {
            redirected_vip: at(counter::REDIRECTED_VIP),
            redirected_vip_fragment: at(counter::REDIRECTED_VIP_FRAGMENT),
            redirected_reply: at(counter::REDIRECTED_REPLY),
            redirected_all: at(counter::REDIRECTED_ALL),
            dropped_no_socket: at(counter::DROPPED_NO_SOCKET),
            passed_no_socket: at(counter::PASSED_NO_SOCKET),
            passed_not_ip: at(counter::PASSED_NOT_IP),
            passed_not_tcp_udp: at(counter::PASSED_NOT_TCP_UDP),
            passed_not_owned: at(counter::PASSED_NOT_OWNED),
            passed_fragment: at(counter::PASSED_FRAGMENT),
            passed_unparsed: at(counter::PASSED_UNPARSED),
            passed_local: at(counter::PASSED_LOCAL),
            fast_tx: at(counter::FAST_TX),
            fast_redirect: at(counter::FAST_REDIRECT),
            fast_miss: at(counter::FAST_MISS),
            fast_handed_up: at(counter::FAST_HANDED_UP),
            fast_no_egress: at(counter::FAST_NO_EGRESS),
            answered_arp: at(counter::ANSWERED_ARP),
            answered_ns: at(counter::ANSWERED_NS),
            dropped_other_host: at(counter::DROPPED_OTHER_HOST),
            dropped_broadcast: at(counter::DROPPED_BROADCAST),
            dropped_multicast: at(counter::DROPPED_MULTICAST),
            dropped_bad_ip_checksum: at(counter::DROPPED_BAD_IP_CHECKSUM),
            dropped_vlan_not_configured: at(counter::DROPPED_VLAN_NOT_CONFIGURED),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_land_in_their_fields_and_sums_group_them() {
        let totals: Vec<u64> = (1..=u64::from(counter::COUNT)).collect();
        let c = XdpCounters::from_totals(&totals);
        assert_eq!(c.redirected_vip, 1);
        assert_eq!(c.passed_unparsed, 11);
        assert_eq!(c.passed_local, 12);
        assert_eq!(c.fast_forwarded(), 13 + 14);
        assert_eq!(c.fast_no_egress, 17);
        assert_eq!((c.answered_arp, c.answered_ns), (18, 19));
        assert_eq!(c.dropped_other_host, 20);
        assert_eq!(c.dropped_vlan_not_configured, 24);
        assert_eq!(c.ingress_dropped(), 20 + 21 + 22 + 23 + 24);
        assert_eq!(c.redirected(), 1 + 2 + 3 + 4);
        assert_eq!(c.redirect_failed(), 5 + 6);
        assert_eq!(c.passed(), 6 + 7 + 8 + 9 + 10 + 11 + 12);
        assert_eq!(XdpCounters::from_totals(&[]), XdpCounters::default());
    }
}
