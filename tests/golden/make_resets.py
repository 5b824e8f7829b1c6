#!/usr/bin/python3
"""Writes the RST golden frames: tests/golden/resets/*.hex.

A new TCP flow refused by admission control (over_limit = "reset") is
answered with a RST built by flowgate_dataplane::admission::write_reset.
These frames are made by scapy instead, every length and checksum computed
by scapy, so that tests/admission_reset.rs can check that the crate turns
each refused segment (NAME.in.hex) into exactly the RST expected
(NAME.out.hex).

The RST follows RFC 793's reset generation (RFC 9293 section 3.10.7.1):
a segment without ACK (a SYN) gets <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>
where SEG.LEN counts the payload and one each for SYN and FIN; a segment
with ACK gets <SEQ=SEG.ACK><CTL=RST>. It goes back the way the segment
came: MACs, addresses and ports swapped, VLAN tags kept; IPv4 with DF,
identification 0, TTL 64; IPv6 with hop limit 64, no traffic class or flow
label; TCP window 0, no options.

The tests read the committed files; scapy is needed only to regenerate
them:

    apt-get install python3-scapy
    /usr/bin/python3 tests/golden/make_resets.py

Format: lines starting with '#' are comments; the rest are hex bytes,
16 a line.
"""

import os

from scapy.layers.inet import IP, TCP, IPOption_Router_Alert
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether

GW_MAC = "02:66:67:00:00:01"
CLIENT_MAC = "02:66:67:00:00:02"
CLIENT4, VIP4 = "198.18.0.2", "198.18.100.10"
CLIENT6, VIP6 = "2001:2::2", "2001:2:0:100::10"
MSS = [("MSS", 1460), ("SAckOK", b""), ("WScale", 7)]


def to_gw(*tags):
    frame = Ether(src=CLIENT_MAC, dst=GW_MAC)
    for tag in tags:
        frame = frame / tag
    return frame


def to_client(*tags):
    frame = Ether(src=GW_MAC, dst=CLIENT_MAC)
    for tag in tags:
        frame = frame / tag
    return frame


def rst4(sport, dport, seq, ack, flags):
    return IP(src=VIP4, dst=CLIENT4, ttl=64, id=0, flags="DF", tos=0) / TCP(
        sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, window=0, urgptr=0
    )


def rst6(sport, dport, seq, ack, flags):
    return IPv6(src=VIP6, dst=CLIENT6, hlim=64, tc=0, fl=0) / TCP(
        sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, window=0, urgptr=0
    )


# (name, what, refused segment, expected RST)
CASES = [
    (
        "ipv4_syn",
        "SYN with options: RST+ACK, seq 0, ack = seq + 1",
        to_gw()
        / IP(src=CLIENT4, dst=VIP4, ttl=64, id=7)
        / TCP(sport=40000, dport=80, flags="S", seq=0x12345678, window=64240, options=MSS),
        to_client() / rst4(80, 40000, 0, 0x12345679, "RA"),
    ),
    (
        "ipv6_syn",
        "IPv6 SYN: RST+ACK from the VIP",
        to_gw()
        / IPv6(src=CLIENT6, dst=VIP6, hlim=64, fl=0x12345)
        / TCP(sport=40001, dport=80, flags="S", seq=0x89ABCDEF, window=64800, options=MSS),
        to_client() / rst6(80, 40001, 0, 0x89ABCDF0, "RA"),
    ),
    (
        "ipv4_syn_data_wraps",
        "SYN carrying data (fast open) near the top of sequence space: the ack wraps",
        to_gw()
        / IP(src=CLIENT4, dst=VIP4, ttl=64)
        / TCP(sport=40002, dport=443, flags="S", seq=0xFFFFFFF8)
        / b"early data",
        to_client() / rst4(443, 40002, 0, (0xFFFFFFF8 + 1 + 10) & 0xFFFFFFFF, "RA"),
    ),
    (
        "ipv4_options_syn",
        "SYN with an IPv4 option: the RST has none",
        to_gw()
        / IP(src=CLIENT4, dst=VIP4, ttl=60, options=[IPOption_Router_Alert()])
        / TCP(sport=40003, dport=80, flags="S", seq=1),
        to_client() / rst4(80, 40003, 0, 2, "RA"),
    ),
    (
        "vlan_ipv4_syn",
        "802.1Q-tagged SYN: the RST carries the same tag",
        to_gw(Dot1Q(vlan=100, prio=3))
        / IP(src=CLIENT4, dst=VIP4, ttl=64)
        / TCP(sport=40004, dport=80, flags="S", seq=1000),
        to_client(Dot1Q(vlan=100, prio=3)) / rst4(80, 40004, 0, 1001, "RA"),
    ),
    (
        "qinq_ipv6_syn",
        "802.1ad double-tagged IPv6 SYN: both tags kept",
        to_gw(Dot1AD(vlan=10), Dot1Q(vlan=20))
        / IPv6(src=CLIENT6, dst=VIP6, hlim=64)
        / TCP(sport=40005, dport=80, flags="S", seq=5),
        to_client(Dot1AD(vlan=10), Dot1Q(vlan=20)) / rst6(80, 40005, 0, 6, "RA"),
    ),
    (
        "ipv4_ack_midstream",
        "a mid-stream ACK with data (a connection the gateway does not know): RST, seq = its ack",
        to_gw()
        / IP(src=CLIENT4, dst=VIP4, ttl=64)
        / TCP(sport=40006, dport=80, flags="PA", seq=5000, ack=0xABCDEF01)
        / b"GET / HTTP/1.1\r\n",
        to_client() / rst4(80, 40006, 0xABCDEF01, 0, "R"),
    ),
    (
        "ipv6_fin_ack",
        "IPv6 FIN+ACK: RST, seq = its ack",
        to_gw()
        / IPv6(src=CLIENT6, dst=VIP6, hlim=64)
        / TCP(sport=40007, dport=80, flags="FA", seq=77, ack=0x10203040),
        to_client() / rst6(80, 40007, 0x10203040, 0, "R"),
    ),
]


def write_hex(path, name, what, packet):
    data = bytes(packet)
    lines = [
        f"# {name}: {what}",
        "# Written by tests/golden/make_resets.py (scapy); do not edit.",
        f"# {packet.summary()}",
    ]
    lines += [" ".join(f"{b:02x}" for b in data[i : i + 16]) for i in range(0, len(data), 16)]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resets")
    os.makedirs(out, exist_ok=True)
    for stale in os.listdir(out):
        if stale.endswith(".hex"):
            os.remove(os.path.join(out, stale))
    for name, what, refused, reset in CASES:
        write_hex(os.path.join(out, f"{name}.in.hex"), f"{name}.in", what, refused)
        write_hex(os.path.join(out, f"{name}.out.hex"), f"{name}.out", what, reset)
    print(f"wrote {len(CASES)} cases to {out}")


if __name__ == "__main__":
    main()
