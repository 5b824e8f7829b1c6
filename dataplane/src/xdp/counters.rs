//! The XDP program's counters, summed over CPUs. The struct is plain
//! data, there without the `daemon` feature too (metrics sampling and
//! rendering carry it); reading it from the program needs the feature.

#[cfg(feature = "daemon")]
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
    /// Fast path: bytes of the frames it forwarded (whole frames, as the
    /// workers count them).
    pub fast_bytes: u64,
    /// Why owned traffic went up to a worker while the fast path was on,
    /// besides [`fast_miss`](Self::fast_miss) and
    /// [`fast_no_egress`](Self::fast_no_egress).
    pub fast_up: FastHandUps,
}

/// Owned frames the fast path handed up to a worker, by reason. The first
/// six and `syn_proxy` add up to [`XdpCounters::fast_handed_up`];
/// fragments and ICMP errors never reach the cache's lookup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FastHandUps {
    /// TCP with SYN: the workers see every handshake.
    pub syn: u64,
    /// TCP with FIN or RST: the workers see every close.
    pub fin_rst: u64,
    /// IPv4 options or IPv6 extension headers.
    pub options: u64,
    /// TTL or hop limit 1 or 0.
    pub ttl: u64,
    /// Lengths the userspace parser refuses (it drops them with their
    /// reason).
    pub length: u64,
    /// From a client MAC other than the entry's.
    pub client_mac: u64,
    /// A fragment to a VIP address.
    pub fragment: u64,
    /// An ICMP error about a connection.
    pub icmp: u64,
    /// A SYN-proxied connection's segment the program does not translate
    /// (SACK blocks or other TCP options; to the backend without ACK).
    pub syn_proxy: u64,
}

impl FastHandUps {
    /// The reasons as the API and the metrics name them, with their counts.
    pub fn by_reason(&self) -> [(&'static str, u64); 9] {
        [
            ("syn", self.syn),
            ("fin_rst", self.fin_rst),
            ("ip_options", self.options),
            ("ttl", self.ttl),
            ("length", self.length),
            ("client_mac", self.client_mac),
            ("fragment", self.fragment),
            ("icmp_error", self.icmp),
            ("syn_proxy", self.syn_proxy),
        ]
    }
}

impl std::ops::AddAssign for FastHandUps {
    fn add_assign(&mut self, o: FastHandUps) {
        self.syn = self.syn.saturating_add(o.syn);
        self.fin_rst = self.fin_rst.saturating_add(o.fin_rst);
        self.options = self.options.saturating_add(o.options);
        self.ttl = self.ttl.saturating_add(o.ttl);
        self.length = self.length.saturating_add(o.length);
        self.client_mac = self.client_mac.saturating_add(o.client_mac);
        self.fragment = self.fragment.saturating_add(o.fragment);
        self.icmp = self.icmp.saturating_add(o.icmp);
        self.syn_proxy = self.syn_proxy.saturating_add(o.syn_proxy);
    }
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
    #[cfg(feature = "daemon")]
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
            fast_bytes: at(counter::FAST_BYTES),
            fast_up: FastHandUps {
                syn: at(counter::FAST_UP_SYN),
                fin_rst: at(counter::FAST_UP_FIN_RST),
                options: at(counter::FAST_UP_OPTIONS),
                ttl: at(counter::FAST_UP_TTL),
                length: at(counter::FAST_UP_LENGTH),
                client_mac: at(counter::FAST_UP_CLIENT_MAC),
                fragment: at(counter::FAST_UP_FRAGMENT),
                icmp: at(counter::FAST_UP_ICMP),
                syn_proxy: at(counter::FAST_UP_SYNPROXY),
            },
        }
    }

    /// The fast path's counters of `self` and `other` added (the
    /// interfaces' program instances summed); the other fields are
    /// `self`'s.
    pub fn add_fast(&mut self, other: &XdpCounters) {
        self.fast_tx = self.fast_tx.saturating_add(other.fast_tx);
        self.fast_redirect = self.fast_redirect.saturating_add(other.fast_redirect);
        self.fast_miss = self.fast_miss.saturating_add(other.fast_miss);
        self.fast_handed_up = self.fast_handed_up.saturating_add(other.fast_handed_up);
        self.fast_no_egress = self.fast_no_egress.saturating_add(other.fast_no_egress);
        self.fast_bytes = self.fast_bytes.saturating_add(other.fast_bytes);
        self.fast_up += other.fast_up;
    }
}

#[cfg(all(test, feature = "daemon"))]
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
        assert_eq!(c.fast_bytes, 25);
        assert_eq!((c.fast_up.syn, c.fast_up.fin_rst), (26, 27));
        assert_eq!(c.fast_up.icmp, 33);
        assert_eq!(c.fast_up.syn_proxy, 34);
        let mut sum = c;
        sum.add_fast(&c);
        assert_eq!(
            (sum.fast_tx, sum.fast_bytes, sum.fast_up.fragment),
            (26, 50, 64)
        );
        assert_eq!(sum.redirected_vip, 1);
        assert_eq!(c.redirected(), 1 + 2 + 3 + 4);
        assert_eq!(c.redirect_failed(), 5 + 6);
        assert_eq!(c.passed(), 6 + 7 + 8 + 9 + 10 + 11 + 12);
        assert_eq!(XdpCounters::from_totals(&[]), XdpCounters::default());
    }
}
