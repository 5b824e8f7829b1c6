#!/usr/bin/python3
"""Writes the golden frames of per-interface VLAN settings: tests/golden/vlan/*.hex.

Each case is a frame arriving at the gateway under tests/golden.rs's
VLAN_RULES, and the frame it must send (none when it is dropped or passed
to the kernel unchanged):

- fg-client (port 0) accepts VLANs 100 and 200 and untagged frames, and
  sends tagged 100;
- fg-backend (port 1) is untagged;
- fg-tagged (port 2) accepts VLAN 300 only (untagged = false) and sends
  tagged 300.

So a client's tag is taken off towards an untagged segment, replaced by
the backend segment's (id mapped), and put back on replies; an id not
accepted, two tags (QinQ) and an untagged frame where untagged frames are
refused are dropped (vlan_not_configured) if the gateway would forward
them; tagged traffic of the gateway box itself goes to the kernel tag and
all. tests/golden.rs checks that the pipeline, and the XDP program in
front of it with the kernel fast path on and off, turn each input into
its output byte for byte with the case's verdict. The tests read the
committed files; scapy is needed only to regenerate them:

    apt-get install python3-scapy
    /usr/bin/python3 tests/golden/make_vlan.py

Format: lines starting with '#' are comments; the rest are hex bytes,
16 a line.
"""

import os

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether

# tests/common/mod.rs, and VLAN_RULES in tests/golden.rs.
GW_CLIENT_MAC = "02:66:67:00:00:01"
GW_BACKEND_MAC = "02:66:67:00:01:01"
GW_TAGGED_MAC = "02:66:67:00:02:01"
CLIENT_MAC = "02:66:67:00:00:02"
BACKEND1_MAC = "02:66:67:00:01:11"
TAGGED_BACKEND_MAC = "02:66:67:00:02:11"

CLIENT4, VIP4, BACKEND4 = "198.18.0.2", "198.18.100.10", "198.18.1.11"
VIP4_TAGGED, TAGGED_BACKEND4 = "198.18.100.20", "198.18.2.11"
CLIENT6, VIP6, BACKEND6 = "2001:2::2", "2001:2:0:100::10", "2001:2:0:1::11"

# What the crate's builder puts in the fields a case does not name
# (dataplane/src/wire/builder.rs): IPv4 identification 0x0101, no DF; TCP
# sequence number 1, window 65535.
IP_ID = 0x0101


def ip4(src, dst, ttl):
    return IP(src=src, dst=dst, ttl=ttl, id=IP_ID, flags=0)


def ip6(src, dst, hlim):
    return IPv6(src=src, dst=dst, hlim=hlim, tc=0, fl=0)


def tcp(sport, dport, flags):
    return TCP(sport=sport, dport=dport, flags=flags, seq=1, ack=0, window=65535)


def from_client():
    return Ether(src=CLIENT_MAC, dst=GW_CLIENT_MAC)


def to_client():
    return Ether(src=GW_CLIENT_MAC, dst=CLIENT_MAC)


# (name, what, input, expected output or None when not sent on)
CASES = [
    (
        "accepted_stripped_ipv4_syn",
        "a SYN tagged 100 (accepted): to the untagged backend segment without its tag",
        from_client() / Dot1Q(vlan=100) / ip4(CLIENT4, VIP4, 64) / tcp(40100, 80, "S"),
        Ether(src=GW_BACKEND_MAC, dst=BACKEND1_MAC) / ip4(CLIENT4, BACKEND4, 63) / tcp(40100, 8080, "S"),
    ),
    (
        "reply_retagged_ipv4_syn_ack",
        "the backend's untagged SYN-ACK: back to the client tagged 100",
        Ether(src=BACKEND1_MAC, dst=GW_BACKEND_MAC) / ip4(BACKEND4, CLIENT4, 64) / tcp(8080, 40100, "SA"),
        to_client() / Dot1Q(vlan=100) / ip4(VIP4, CLIENT4, 63) / tcp(80, 40100, "SA"),
    ),
    (
        "accepted_stripped_ipv4_ack",
        "the client's data, tagged 100: without its tag",
        from_client() / Dot1Q(vlan=100) / ip4(CLIENT4, VIP4, 64) / tcp(40100, 80, "A") / b"data",
        Ether(src=GW_BACKEND_MAC, dst=BACKEND1_MAC) / ip4(CLIENT4, BACKEND4, 63) / tcp(40100, 8080, "A") / b"data",
    ),
    (
        "reply_retagged_ipv4_ack",
        "the backend's data: tagged 100",
        Ether(src=BACKEND1_MAC, dst=GW_BACKEND_MAC) / ip4(BACKEND4, CLIENT4, 64) / tcp(8080, 40100, "A") / b"back",
        to_client() / Dot1Q(vlan=100) / ip4(VIP4, CLIENT4, 63) / tcp(80, 40100, "A") / b"back",
    ),
    (
        "accepted_stripped_ipv6_udp",
        "an IPv6 query tagged 200 (accepted): without its tag",
        from_client() / Dot1Q(vlan=200) / ip6(CLIENT6, VIP6, 64) / UDP(sport=5100, dport=53) / b"query",
        Ether(src=GW_BACKEND_MAC, dst=BACKEND1_MAC) / ip6(CLIENT6, BACKEND6, 63) / UDP(sport=5100, dport=5353) / b"query",
    ),
    (
        "reply_retagged_ipv6_udp",
        "its answer: to the client tagged with fg-client's egress_vlan, 100",
        Ether(src=BACKEND1_MAC, dst=GW_BACKEND_MAC) / ip6(BACKEND6, CLIENT6, 64) / UDP(sport=5353, dport=5100) / b"answer",
        to_client() / Dot1Q(vlan=100) / ip6(VIP6, CLIENT6, 63) / UDP(sport=53, dport=5100) / b"answer",
    ),
    (
        "mapped_ipv4_syn",
        "a SYN tagged 100 to a service on fg-tagged: leaves tagged 300",
        from_client() / Dot1Q(vlan=100) / ip4(CLIENT4, VIP4_TAGGED, 64) / tcp(40101, 80, "S"),
        Ether(src=GW_TAGGED_MAC, dst=TAGGED_BACKEND_MAC) / Dot1Q(vlan=300) / ip4(CLIENT4, TAGGED_BACKEND4, 63) / tcp(40101, 8080, "S"),
    ),
    (
        "mapped_reply_ipv4_syn_ack",
        "its SYN-ACK tagged 300: back to the client tagged 100",
        Ether(src=TAGGED_BACKEND_MAC, dst=GW_TAGGED_MAC) / Dot1Q(vlan=300) / ip4(TAGGED_BACKEND4, CLIENT4, 64) / tcp(8080, 40101, "SA"),
        to_client() / Dot1Q(vlan=100) / ip4(VIP4_TAGGED, CLIENT4, 63) / tcp(80, 40101, "SA"),
    ),
    (
        "mapped_ipv4_ack",
        "the client's untagged data to the same service: leaves tagged 300",
        from_client() / ip4(CLIENT4, VIP4_TAGGED, 64) / tcp(40101, 80, "A") / b"data",
        Ether(src=GW_TAGGED_MAC, dst=TAGGED_BACKEND_MAC) / Dot1Q(vlan=300) / ip4(CLIENT4, TAGGED_BACKEND4, 63) / tcp(40101, 8080, "A") / b"data",
    ),
    (
        "not_accepted_ipv4_syn",
        "a SYN tagged 300, which fg-client does not accept: dropped (vlan_not_configured)",
        from_client() / Dot1Q(vlan=300) / ip4(CLIENT4, VIP4, 64) / tcp(40102, 80, "S"),
        None,
    ),
    (
        "qinq_ipv4_syn",
        "a double-tagged SYN (802.1ad 100, 802.1Q 100): dropped (vlan_not_configured)",
        from_client() / Dot1AD(vlan=100) / Dot1Q(vlan=100) / ip4(CLIENT4, VIP4, 64) / tcp(40103, 80, "S"),
        None,
    ),
    (
        "untagged_refused_ipv4_syn_ack",
        "an untagged reply on fg-tagged (untagged = false): dropped (vlan_not_configured)",
        Ether(src=TAGGED_BACKEND_MAC, dst=GW_TAGGED_MAC) / ip4(TAGGED_BACKEND4, CLIENT4, 64) / tcp(8080, 40104, "SA"),
        None,
    ),
    (
        "kernel_ssh_tagged",
        "ssh to the gateway box tagged 100: to the kernel, tag and all",
        from_client() / Dot1Q(vlan=100) / ip4(CLIENT4, "198.18.0.1", 64) / tcp(40105, 22, "S"),
        None,
    ),
]


def write_hex(path, name, what, packet):
    data = bytes(packet)
    lines = [
        f"# {name}: {what}",
        "# Written by tests/golden/make_vlan.py (scapy); do not edit.",
        f"# {packet.summary()}",
    ]
    lines += [" ".join(f"{b:02x}" for b in data[i : i + 16]) for i in range(0, len(data), 16)]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vlan")
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
