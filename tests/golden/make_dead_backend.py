#!/usr/bin/python3
"""Writes the golden frames of a dead backend's connections:
tests/golden/dead_backend/*.hex.

When a backend goes down, its service's on_backend_down policy decides what
its established TCP connections get: "keep" forwards them as before,
"drop" drops the client's next segment and forgets the connection, "reset"
answers the client's next segment with a RST from the VIP and forgets the
connection. tests/golden.rs opens each connection through the pipeline
(rules: tests/common/mod.rs GOLDEN_RULES with the case's policy on "web"
and "web6", and when_all_down = "closed", since the backend is their only
one and a service failing open ignores its backends' health), marks the
backend down, rebuilds the snapshot, and checks
that the pipeline turns scapy's segment (NAME.in.hex) into scapy's frame
(NAME.out.hex) byte for byte, or drops it (no .out.hex).

The RST follows RFC 793 for a segment with ACK: <SEQ=SEG.ACK><CTL=RST>,
back the way the segment came (MACs, addresses, ports swapped, VLAN tags
kept), IPv4 with DF, identification 0, TTL 64, IPv6 with hop limit 64,
window 0, no options.

The tests read the committed files; scapy is needed only to regenerate
them:

    apt-get install python3-scapy
    /usr/bin/python3 tests/golden/make_dead_backend.py

Format: lines starting with '#' are comments; the rest are hex bytes,
16 a line.
"""

import os

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether

# tests/common/mod.rs
GW_CLIENT_MAC = "02:66:67:00:00:01"
GW_BACKEND_MAC = "02:66:67:00:01:01"
CLIENT_MAC = "02:66:67:00:00:02"
BACKEND1_MAC = "02:66:67:00:01:11"

CLIENT4, VIP4, BACKEND4 = "198.18.0.2", "198.18.100.10", "198.18.1.11"
CLIENT6, VIP6 = "2001:2::2", "2001:2:0:100::10"
REQUEST = b"GET / HTTP/1.1\r\nHost: web\r\n\r\n"


def from_client(*tags):
    frame = Ether(src=CLIENT_MAC, dst=GW_CLIENT_MAC)
    for tag in tags:
        frame = frame / tag
    return frame


def to_client(*tags):
    frame = Ether(src=GW_CLIENT_MAC, dst=CLIENT_MAC)
    for tag in tags:
        frame = frame / tag
    return frame


def rst4(dport, seq):
    return IP(src=VIP4, dst=CLIENT4, ttl=64, id=0, flags="DF", tos=0) / TCP(
        sport=80, dport=dport, seq=seq, ack=0, flags="R", window=0, urgptr=0
    )


def rst6(dport, seq):
    return IPv6(src=VIP6, dst=CLIENT6, hlim=64, tc=0, fl=0) / TCP(
        sport=80, dport=dport, seq=seq, ack=0, flags="R", window=0, urgptr=0
    )


# (name, what, segment from the client, expected frame or None if dropped)
CASES = [
    (
        "ipv4_reset",
        "reset: the client's next data segment is answered with a RST from the VIP",
        from_client()
        / IP(src=CLIENT4, dst=VIP4, ttl=64, id=0x1234)
        / TCP(sport=40010, dport=80, flags="PA", seq=1001, ack=0x5EED0001, window=502)
        / REQUEST,
        to_client() / rst4(40010, 0x5EED0001),
    ),
    (
        "ipv6_fin_reset",
        "reset: an IPv6 FIN+ACK is answered with a RST from the VIP",
        from_client()
        / IPv6(src=CLIENT6, dst=VIP6, hlim=64, fl=0x54321)
        / TCP(sport=40011, dport=80, flags="FA", seq=77, ack=0x10203040, window=502),
        to_client() / rst6(40011, 0x10203040),
    ),
    (
        "vlan_ipv4_reset",
        "reset: an 802.1Q-tagged segment gets its RST with the same tag",
        from_client(Dot1Q(vlan=100, prio=3))
        / IP(src=CLIENT4, dst=VIP4, ttl=64, id=9)
        / TCP(sport=40012, dport=80, flags="A", seq=2002, ack=0xFFFFFFFF, window=502),
        to_client(Dot1Q(vlan=100, prio=3)) / rst4(40012, 0xFFFFFFFF),
    ),
    (
        "ipv4_drop",
        "drop: the client's next segment is dropped and the connection forgotten",
        from_client()
        / IP(src=CLIENT4, dst=VIP4, ttl=64, id=0x1235)
        / TCP(sport=40013, dport=80, flags="PA", seq=1001, ack=0x5EED0001, window=502)
        / REQUEST,
        None,
    ),
    (
        "ipv4_keep",
        "keep: the connection goes on to its (down) backend",
        from_client()
        / IP(src=CLIENT4, dst=VIP4, ttl=64, id=0x1236, flags=0)
        / TCP(sport=40014, dport=80, flags="PA", seq=1001, ack=0x5EED0001, window=502)
        / REQUEST,
        Ether(src=GW_BACKEND_MAC, dst=BACKEND1_MAC)
        / IP(src=CLIENT4, dst=BACKEND4, ttl=63, id=0x1236, flags=0)
        / TCP(sport=40014, dport=8080, flags="PA", seq=1001, ack=0x5EED0001, window=502)
        / REQUEST,
    ),
]


def write_hex(path, name, what, packet):
    data = bytes(packet)
    lines = [
        f"# {name}: {what}",
        "# Written by tests/golden/make_dead_backend.py (scapy); do not edit.",
        f"# {packet.summary()}",
    ]
    lines += [" ".join(f"{b:02x}" for b in data[i : i + 16]) for i in range(0, len(data), 16)]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dead_backend")
    os.makedirs(out, exist_ok=True)
    for stale in os.listdir(out):
        if stale.endswith(".hex"):
            os.remove(os.path.join(out, stale))
    for name, what, segment, expected in CASES:
        write_hex(os.path.join(out, f"{name}.in.hex"), f"{name}.in", what, segment)
        if expected is not None:
            write_hex(os.path.join(out, f"{name}.out.hex"), f"{name}.out", what, expected)
    print(f"wrote {len(CASES)} cases to {out}")


if __name__ == "__main__":
    main()
