#!/usr/bin/python3
"""Writes the golden tests' independent frames: tests/golden/frames/*.hex.

tests/golden.rs builds its fixtures with the crate's own FrameBuilder, and
the pipeline parses them with the crate's own parser: a mistake the two
share (a field at the wrong offset, a checksum over the wrong bytes) would
cancel out and pass. These frames are made by scapy instead, every length
and checksum computed by scapy, so that golden.rs can check that

- the builder makes the same bytes for the same packet, and
- the pipeline turns each independent input into the independent expected
  output (for a forwarded frame), with the fixture's verdict.

Each case writes NAME.in.hex (the frame arriving at the gateway) and, when
the gateway forwards it, NAME.out.hex (the frame it must send). The packets
and the ports they arrive on are those of golden.rs's fixtures and its
rules (tests/common/mod.rs: GOLDEN_RULES and the MACs). The tests read the
committed files; scapy is needed only to regenerate them:

    apt-get install python3-scapy
    /usr/bin/python3 tests/golden/make_frames.py

Format: lines starting with '#' are comments; the rest are hex bytes,
16 a line.
"""

import os

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_Router_Alert
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6NDOptSrcLLAddr,
    ICMPv6PacketTooBig,
    IPv6,
    IPv6ExtHdrHopByHop,
)
from scapy.packet import Raw
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether

# tests/common/mod.rs
GW_CLIENT_MAC = "02:66:67:00:00:01"
GW_BACKEND_MAC = "02:66:67:00:01:01"
CLIENT_MAC = "02:66:67:00:00:02"
BACKEND1_MAC = "02:66:67:00:01:11"

CLIENT4, VIP4, BACKEND4 = "198.18.0.2", "198.18.100.10", "198.18.1.11"
CLIENT6, VIP6, BACKEND6 = "2001:2::2", "2001:2:0:100::10", "2001:2:0:1::11"

# What the crate's builder puts in the fields a fixture does not name
# (dataplane/src/wire/builder.rs): IPv4 identification 0x0101, no DF; TCP
# sequence number 1, window 65535.
IP_ID = 0x0101
TCP_SEQ = 1
TCP_WINDOW = 65535


def to_backend(l2=None):
    return Ether(src=GW_BACKEND_MAC, dst=BACKEND1_MAC) if l2 is None else l2


def from_client():
    return Ether(src=CLIENT_MAC, dst=GW_CLIENT_MAC)


def ip4(src, dst, ttl, **kw):
    return IP(src=src, dst=dst, ttl=ttl, id=IP_ID, flags=0, **kw)


def ip6(src, dst, hlim):
    return IPv6(src=src, dst=dst, hlim=hlim, tc=0, fl=0)


def tcp(sport, dport, flags):
    return TCP(sport=sport, dport=dport, flags=flags, seq=TCP_SEQ, ack=0, window=TCP_WINDOW)


def quote(packet, keep):
    """The first `keep` bytes of an IP packet: what an ICMP error quotes."""
    return Raw(bytes(packet)[:keep])


def from_backend_side():
    return Ether(src=BACKEND1_MAC, dst=GW_BACKEND_MAC)


def to_client():
    return Ether(src=GW_CLIENT_MAC, dst=CLIENT_MAC)


# The packets ICMP errors quote in the translation fixtures
# (tests/golden_translation/mod.rs).
BULK = b"\x42" * 1400
SENT4 = ip4(CLIENT4, BACKEND4, 63) / tcp(40010, 8080, "A") / BULK
ASKED4 = ip4(CLIENT4, VIP4, 63) / tcp(40010, 80, "A") / BULK
REPLY4 = ip4(VIP4, CLIENT4, 62) / tcp(80, 40010, "SA")
BACKENDS_REPLY4 = ip4(BACKEND4, CLIENT4, 62) / tcp(8080, 40010, "SA")
SENT6 = ip6(CLIENT6, BACKEND6, 63) / tcp(40010, 8080, "A") / BULK
ASKED6 = ip6(CLIENT6, VIP6, 63) / tcp(40010, 80, "A") / BULK
ANSWER6 = ip6(VIP6, CLIENT6, 63) / UDP(sport=53, dport=5010) / b"answer"
BACKENDS_ANSWER6 = ip6(BACKEND6, CLIENT6, 63) / UDP(sport=5353, dport=5010) / b"answer"


# (name, what, input, expected output or None when the frame is not sent on)
CASES = [
    (
        "ipv4_tcp_syn",
        "client SYN to the VIP goes to the backend (port 0 -> 1)",
        from_client() / ip4(CLIENT4, VIP4, 64) / tcp(40000, 80, "S"),
        to_backend() / ip4(CLIENT4, BACKEND4, 63) / tcp(40000, 8080, "S"),
    ),
    (
        "ipv4_tcp_syn_ack_reply",
        "backend SYN-ACK comes back from the VIP (port 1 -> 0)",
        Ether(src=BACKEND1_MAC, dst=GW_BACKEND_MAC)
        / ip4(BACKEND4, CLIENT4, 64)
        / tcp(8080, 40000, "SA"),
        Ether(src=GW_CLIENT_MAC, dst=CLIENT_MAC) / ip4(VIP4, CLIENT4, 63) / tcp(80, 40000, "SA"),
    ),
    (
        "ipv4_udp",
        "UDP query to the VIP goes to the backend",
        from_client() / ip4(CLIENT4, VIP4, 64) / UDP(sport=5000, dport=53) / b"query",
        to_backend() / ip4(CLIENT4, BACKEND4, 63) / UDP(sport=5000, dport=5353) / b"query",
    ),
    (
        "ipv6_tcp_syn",
        "client SYN to the IPv6 VIP goes to the backend",
        from_client() / ip6(CLIENT6, VIP6, 64) / tcp(40000, 80, "S"),
        to_backend() / ip6(CLIENT6, BACKEND6, 63) / tcp(40000, 8080, "S"),
    ),
    (
        "ipv6_udp",
        "UDP query to the IPv6 VIP goes to the backend",
        from_client() / ip6(CLIENT6, VIP6, 64) / UDP(sport=5000, dport=53) / b"q6",
        to_backend() / ip6(CLIENT6, BACKEND6, 63) / UDP(sport=5000, dport=5353) / b"q6",
    ),
    (
        "vlan_ipv4_tcp_syn",
        "802.1Q-tagged SYN on an untagged interface: dropped (vlan_not_configured)",
        from_client() / Dot1Q(vlan=100) / ip4(CLIENT4, VIP4, 64) / tcp(40001, 80, "S"),
        None,
    ),
    (
        "qinq_ipv6_udp",
        "802.1ad double-tagged UDP over IPv6 on an untagged interface: dropped",
        from_client()
        / Dot1AD(vlan=10)
        / Dot1Q(vlan=20)
        / ip6(CLIENT6, VIP6, 64)
        / UDP(sport=5002, dport=53)
        / b"qq",
        None,
    ),
    (
        "ipv4_options_tcp_syn",
        "SYN with an IPv4 option (router alert) keeps the option",
        from_client()
        / ip4(CLIENT4, VIP4, 64, options=[IPOption_Router_Alert()])
        / tcp(40006, 80, "S"),
        to_backend()
        / ip4(CLIENT4, BACKEND4, 63, options=[IPOption_Router_Alert()])
        / tcp(40006, 8080, "S"),
    ),
    (
        "ipv6_hop_by_hop_udp",
        "UDP behind an IPv6 hop-by-hop header keeps the header",
        from_client()
        / ip6(CLIENT6, VIP6, 64)
        / IPv6ExtHdrHopByHop()
        / UDP(sport=5005, dport=53)
        / b"ext",
        to_backend()
        / ip6(CLIENT6, BACKEND6, 63)
        / IPv6ExtHdrHopByHop()
        / UDP(sport=5005, dport=5353)
        / b"ext",
    ),
    (
        "ipv4_ttl_1",
        "SYN with TTL 1 cannot be forwarded: dropped",
        from_client() / ip4(CLIENT4, VIP4, 1) / tcp(40002, 80, "S"),
        None,
    ),
    (
        "ipv4_frag_needed_to_client",
        "fragmentation needed from the backend side reaches the client about its VIP",
        from_backend_side()
        / ip4("198.18.1.1", CLIENT4, 64)
        / ICMP(type=3, code=4, nexthopmtu=1400)
        / quote(SENT4, 548),
        to_client() / ip4(VIP4, CLIENT4, 63) / ICMP(type=3, code=4, nexthopmtu=1400) / quote(ASKED4, 548),
    ),
    (
        "ipv4_time_exceeded_short_quote_to_client",
        "a quote cut to 8 bytes of TCP is translated as far as it goes",
        from_backend_side() / ip4("198.18.1.1", CLIENT4, 64) / ICMP(type=11, code=0) / quote(SENT4, 28),
        to_client() / ip4(VIP4, CLIENT4, 63) / ICMP(type=11, code=0) / quote(ASKED4, 28),
    ),
    (
        "ipv4_time_exceeded_to_backend",
        "time exceeded from the client side reaches the backend about its reply",
        from_client() / ip4("198.18.0.254", VIP4, 64) / ICMP(type=11, code=0) / quote(REPLY4, 40),
        to_backend()
        / ip4("198.18.0.254", BACKEND4, 63)
        / ICMP(type=11, code=0)
        / quote(BACKENDS_REPLY4, 40),
    ),
    (
        "ipv6_packet_too_big_to_client",
        "packet too big from the backend side reaches the client about its VIP",
        from_backend_side()
        / ip6("2001:2:0:1::1", CLIENT6, 64)
        / ICMPv6PacketTooBig(mtu=1400)
        / quote(SENT6, 1232),
        to_client() / ip6(VIP6, CLIENT6, 63) / ICMPv6PacketTooBig(mtu=1400) / quote(ASKED6, 1232),
    ),
    (
        "ipv6_port_unreachable_to_backend",
        "port unreachable from the client reaches the backend about its answer",
        from_client() / ip6(CLIENT6, VIP6, 64) / ICMPv6DestUnreach(code=4) / quote(ANSWER6, 200),
        to_backend()
        / ip6(CLIENT6, BACKEND6, 63)
        / ICMPv6DestUnreach(code=4)
        / quote(BACKENDS_ANSWER6, 200),
    ),
    (
        "ipv4_stateless_reply",
        "a reply from a backend one service has, with no connection: from its VIP",
        from_backend_side() / ip4(BACKEND4, "198.18.0.3", 64) / tcp(8080, 40020, "SA"),
        to_client() / ip4(VIP4, "198.18.0.3", 63) / tcp(80, 40020, "SA"),
    ),
    (
        "ipv6_stateless_reply",
        "the same over IPv6 and UDP",
        from_backend_side() / ip6(BACKEND6, "2001:2::3", 64) / UDP(sport=5353, dport=5000) / b"late",
        to_client() / ip6(VIP6, "2001:2::3", 63) / UDP(sport=53, dport=5000) / b"late",
    ),
    (
        "arp_request",
        "ARP request for the gateway: passed to the kernel unchanged",
        Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff")
        / ARP(op=1, hwsrc=CLIENT_MAC, psrc=CLIENT4, hwdst="00:00:00:00:00:00", pdst="198.18.0.1"),
        None,
    ),
] + [
    # Ingress sanity (RFC 1812 5.2.2, 5.3.7): what a router refuses. None
    # of these is sent; the verdicts are golden.rs's.
    (
        "ingress_ipv4_other_host",
        "a SYN to the VIP in a frame for another host's MAC: dropped (other_host)",
        Ether(src=CLIENT_MAC, dst="02:66:67:00:00:99") / ip4(CLIENT4, VIP4, 64) / tcp(40010, 80, "S"),
        None,
    ),
    (
        "ingress_ipv6_other_host",
        "the same over IPv6",
        Ether(src=CLIENT_MAC, dst="02:66:67:00:00:99") / ip6(CLIENT6, VIP6, 64) / tcp(40010, 80, "S"),
        None,
    ),
    (
        "ingress_ipv4_broadcast",
        "a UDP query to the VIP in a broadcast frame: dropped (broadcast_frame)",
        Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff") / ip4(CLIENT4, VIP4, 64) / UDP(sport=5010, dport=53) / b"b",
        None,
    ),
    (
        "ingress_ipv6_multicast",
        "a SYN to the IPv6 VIP in a multicast frame: dropped (multicast_frame)",
        Ether(src=CLIENT_MAC, dst="33:33:00:00:00:10") / ip6(CLIENT6, VIP6, 64) / tcp(40011, 80, "S"),
        None,
    ),
    (
        "ingress_ipv6_ns_solicited_node",
        "a neighbour solicitation to the VIP's solicited-node address: the kernel's, passed",
        Ether(src=CLIENT_MAC, dst="33:33:ff:00:00:10")
        / IPv6(src=CLIENT6, dst="ff02::1:ff00:10", hlim=255)
        / ICMPv6ND_NS(tgt=VIP6)
        / ICMPv6NDOptSrcLLAddr(lladdr=CLIENT_MAC),
        None,
    ),
    (
        "ingress_ipv6_router_advertisement",
        "a router advertisement to all nodes: the kernel's, passed",
        Ether(src=CLIENT_MAC, dst="33:33:00:00:00:01")
        / IPv6(src="fe80::1", dst="ff02::1", hlim=255)
        / ICMPv6ND_RA(),
        None,
    ),
    (
        "ingress_ipv4_bad_checksum",
        "a SYN to the VIP whose IPv4 header checksum is wrong: dropped (bad_ip_checksum)",
        from_client() / IP(src=CLIENT4, dst=VIP4, ttl=64, id=IP_ID, chksum=0xDEAD) / tcp(40012, 80, "S"),
        None,
    ),
    (
        "ingress_ipv4_martian_loopback",
        "a SYN to the VIP from 127.0.0.1: dropped (martian_source)",
        from_client() / ip4("127.0.0.1", VIP4, 64) / tcp(40013, 80, "S"),
        None,
    ),
    (
        "ingress_ipv6_martian_multicast",
        "a SYN to the IPv6 VIP from ff02::1: dropped (martian_source)",
        from_client() / ip6("ff02::1", VIP6, 64) / tcp(40013, 80, "S"),
        None,
    ),
    (
        "ingress_ipv4_bogon",
        "a SYN to the VIP from a configured bogon prefix: dropped (bogon_source)",
        from_client() / ip4("198.19.250.7", VIP4, 64) / tcp(40014, 80, "S"),
        None,
    ),
]


def write_hex(path, name, what, packet):
    data = bytes(packet)
    lines = [
        f"# {name}: {what}",
        "# Written by tests/golden/make_frames.py (scapy); do not edit.",
        f"# {packet.summary()}",
    ]
    lines += [" ".join(f"{b:02x}" for b in data[i : i + 16]) for i in range(0, len(data), 16)]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "frames")
    os.makedirs(out, exist_ok=True)
    for stale in os.listdir(out):
        if stale.endswith(".hex"):
            os.remove(os.path.join(out, stale))
    for name, what, frame_in, frame_out in CASES:
        write_hex(os.path.join(out, f"{name}.in.hex"), f"{name}.in", what, frame_in)
        if frame_out is not None:
            write_hex(os.path.join(out, f"{name}.out.hex"), f"{name}.out", what, frame_out)
    print(f"wrote {len(CASES)} cases to {out}")


if __name__ == "__main__":
    main()
