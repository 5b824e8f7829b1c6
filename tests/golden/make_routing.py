#!/usr/bin/python3
"""Writes the golden frames of routing by client: tests/golden/routing/*.hex.

Each case is a client's SYN to a VIP and the frame the gateway must send
for it under tests/golden.rs's ROUTING_RULES (client classes with SETs and
zones, a zone priority, distribution paths and a canary on "web" and
"web6"), with the backends the case names marked down first: its path,
its SET, its zone or the zone it falls back to, the canary, or a
combination decides which backend gets it. In every case exactly one
backend can, so each output is one exact frame. A case whose SET has no
backend alive is dropped (no .out.hex): a SET fails closed.

tests/golden.rs checks that the pipeline turns scapy's input (NAME.in.hex)
into scapy's output (NAME.out.hex) byte for byte, that the crate's builder
makes the same two frames, and that the stage the case is about decided
(the routing counters). The tests read the committed files; scapy is
needed only to regenerate them:

    apt-get install python3-scapy
    /usr/bin/python3 tests/golden/make_routing.py

Format: lines starting with '#' are comments; the rest are hex bytes,
16 a line.
"""

import os

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

# tests/common/mod.rs
GW_CLIENT_MAC = "02:66:67:00:00:01"
GW_BACKEND_MAC = "02:66:67:00:01:01"
CLIENT_MAC = "02:66:67:00:00:02"

VIP4, VIP6 = "198.18.100.10", "2001:2:0:100::10"

# What the crate's builder puts in the fields a case does not name
# (dataplane/src/wire/builder.rs): IPv4 identification 0x0101, no DF; TCP
# sequence number 1, window 65535.
IP_ID = 0x0101
TCP_SEQ = 1
TCP_WINDOW = 65535


def backend4(host):
    return f"198.18.1.{host}"


def backend6(host):
    return f"2001:2:0:1::{host}"


def backend_mac(host):
    # ROUTING_RULES: backend 198.18.1.H and 2001:2:0:1::H have MAC ..:01:H.
    return f"02:66:67:00:01:{host}"


def syn4(client, port):
    return (
        Ether(src=CLIENT_MAC, dst=GW_CLIENT_MAC)
        / IP(src=client, dst=VIP4, ttl=64, id=IP_ID, flags=0)
        / TCP(sport=port, dport=80, flags="S", seq=TCP_SEQ, ack=0, window=TCP_WINDOW)
    )


def out4(client, port, host):
    return (
        Ether(src=GW_BACKEND_MAC, dst=backend_mac(host))
        / IP(src=client, dst=backend4(host), ttl=63, id=IP_ID, flags=0)
        / TCP(sport=port, dport=8080, flags="S", seq=TCP_SEQ, ack=0, window=TCP_WINDOW)
    )


def syn6(client, port):
    return (
        Ether(src=CLIENT_MAC, dst=GW_CLIENT_MAC)
        / IPv6(src=client, dst=VIP6, hlim=64, tc=0, fl=0)
        / TCP(sport=port, dport=80, flags="S", seq=TCP_SEQ, ack=0, window=TCP_WINDOW)
    )


def out6(client, port, host):
    return (
        Ether(src=GW_BACKEND_MAC, dst=backend_mac(host))
        / IPv6(src=client, dst=backend6(host), hlim=63, tc=0, fl=0)
        / TCP(sport=port, dport=8080, flags="S", seq=TCP_SEQ, ack=0, window=TCP_WINDOW)
    )


def case4(name, what, client, port, host):
    return (name, what, syn4(client, port), None if host is None else out4(client, port, host))


def case6(name, what, client, port, host):
    return (name, what, syn6(client, port), None if host is None else out6(client, port, host))


# (name, what, input, expected output or None when dropped); keep in step
# with ROUTING_CASES in tests/golden.rs (which backends are down, and the
# stage that decides).
CASES = [
    case4("path_ipv4", "a client with a path goes straight to its backend (b1)",
          "198.18.50.5", 41000, 12),
    case6("path_ipv6", "an IPv6 /128 path goes straight to its backend (b1)",
          "2001:2:0:50::5", 41001, 12),
    case4("set_ipv4", "a g2 client uses its SET's only backend, in another zone",
          "198.18.11.7", 41002, 13),
    case6("set_ipv6", "an IPv6 g2 client uses its SET's only backend",
          "2001:2:0:11::7", 41003, 13),
    case4("set_fails_closed_ipv4", "its SET's backend down: dropped, no other SET's taken",
          "198.18.11.8", 41004, None),
    case4("zone_ipv4", "a client of zone dc-d uses dc-d's backend",
          "198.18.12.7", 41005, 16),
    case4("zone_fallback_ipv4", "dc-d down: the priority's first zone, dc-c",
          "198.18.12.8", 41006, 14),
    case6("zone_fallback_ipv6", "IPv6, dc-d down: dc-c",
          "2001:2:0:12::8", 41007, 14),
    case4("canary_ipv4", "a canary client goes to the canary group",
          "198.18.60.9", 41008, 15),
    case6("canary_ipv6", "an IPv6 canary client goes to the canary group",
          "2001:2:0:60::9", 41009, 15),
    case4("path_before_set_ipv4", "a g1 client's path to a backend of no SET wins over its SET",
          "198.18.10.50", 41010, 14),
    case4("path_down_falls_to_set_and_zone_ipv4",
          "its path's backend down: its SET g1 and zone dc-a decide (a1)",
          "198.18.10.51", 41011, 11),
    case4("set_zone_fallback_ipv4",
          "a g1 client in dc-a with a1 down: dc-c has no g1, dc-b's b1 then",
          "198.18.10.7", 41012, 12),
    case4("canary_before_zone_ipv4", "a dc-d client under the canary's prefix: the canary first",
          "198.18.61.7", 41013, 15),
    case6("set_zone_fallback_ipv6", "IPv6 g1 client in dc-a with a1 down: b1 in dc-b",
          "2001:2:0:10::7", 41014, 12),
]


def write_hex(path, name, what, packet):
    data = bytes(packet)
    lines = [
        f"# {name}: {what}",
        "# Written by tests/golden/make_routing.py (scapy); do not edit.",
        f"# {packet.summary()}",
    ]
    lines += [" ".join(f"{b:02x}" for b in data[i : i + 16]) for i in range(0, len(data), 16)]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "routing")
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
