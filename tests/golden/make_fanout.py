#!/usr/bin/python3
"""Writes the golden frames of fan-out services: tests/golden/fanout/*.hex.

A fan-out service (scheduler = "fanout", UDP) sends each client datagram
to every alive weighted backend and brings the backends' replies back from
the VIP: all of them (fanout_replies = "all"), or only the first after each
client datagram ("first"). tests/golden.rs replays, through `flowgate
replay`'s pcap path, the client's datagram and then one reply from each of
the three backends, in backend order, and checks that what comes out is
exactly these frames (as a set: the copies' order on the wire is not
pinned).

Per case NAME:
  NAME.request.in.hex      the client's datagram to the VIP
  NAME.request.out.K.hex   what backend K (1..3) receives
  NAME.reply.K.in.hex      backend K's reply to the client
  NAME.reply.K.out.hex     what the client receives of it (absent: dropped)

The tests read the committed files; scapy is needed only to regenerate
them:

    apt-get install python3-scapy
    /usr/bin/python3 tests/golden/make_fanout.py

Format: lines starting with '#' are comments; the rest are hex bytes,
16 a line.
"""

import os

from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

# tests/common/mod.rs, and FANOUT_RULES in tests/golden.rs
GW_CLIENT_MAC = "02:66:67:00:00:01"
GW_BACKEND_MAC = "02:66:67:00:01:01"
CLIENT_MAC = "02:66:67:00:00:02"
BACKEND_MACS = ["02:66:67:00:01:11", "02:66:67:00:01:12", "02:66:67:00:01:13"]

FAMILIES = {
    "ipv4": ("198.18.0.2", "198.18.100.20", ["198.18.1.11", "198.18.1.12", "198.18.1.13"]),
    "ipv6": (
        "2001:2::2",
        "2001:2:0:100::20",
        ["2001:2:0:1::11", "2001:2:0:1::12", "2001:2:0:1::13"],
    ),
}
VIP_PORT, BACKEND_PORT = 9000, 7000
REQUEST = b"invalidate /catalog/42"


def ip(family, src, dst, ttl, ident):
    if family == "ipv4":
        return IP(src=src, dst=dst, ttl=ttl, id=ident, flags=0, tos=0)
    return IPv6(src=src, dst=dst, hlim=ttl, tc=0, fl=ident)


def case(family, replies, client_port):
    client, vip, backends = FAMILIES[family]
    frames = {}
    frames["request.in"] = (
        Ether(src=CLIENT_MAC, dst=GW_CLIENT_MAC)
        / ip(family, client, vip, 64, 0x4242)
        / UDP(sport=client_port, dport=VIP_PORT)
        / REQUEST
    )
    for k, (backend, mac) in enumerate(zip(backends, BACKEND_MACS), start=1):
        frames[f"request.out.{k}"] = (
            Ether(src=GW_BACKEND_MAC, dst=mac)
            / ip(family, client, backend, 63, 0x4242)
            / UDP(sport=client_port, dport=BACKEND_PORT)
            / REQUEST
        )
        answer = f"done by {backend}".encode()
        frames[f"reply.{k}.in"] = (
            Ether(src=mac, dst=GW_BACKEND_MAC)
            / ip(family, backend, client, 64, 0x100 + k)
            / UDP(sport=BACKEND_PORT, dport=client_port)
            / answer
        )
        # "first": only backend 1's reply, the first to arrive, goes back.
        if replies == "all" or k == 1:
            frames[f"reply.{k}.out"] = (
                Ether(src=GW_CLIENT_MAC, dst=CLIENT_MAC)
                / ip(family, vip, client, 63, 0x100 + k)
                / UDP(sport=VIP_PORT, dport=client_port)
                / answer
            )
    return frames


CASES = [
    ("ipv4_all", "IPv4, fanout_replies = all", case("ipv4", "all", 41001)),
    ("ipv4_first", "IPv4, fanout_replies = first", case("ipv4", "first", 41002)),
    ("ipv6_all", "IPv6, fanout_replies = all", case("ipv6", "all", 41003)),
    ("ipv6_first", "IPv6, fanout_replies = first", case("ipv6", "first", 41004)),
]


def write_hex(path, name, what, packet):
    data = bytes(packet)
    lines = [
        f"# {name}: {what}",
        "# Written by tests/golden/make_fanout.py (scapy); do not edit.",
        f"# {packet.summary()}",
    ]
    lines += [" ".join(f"{b:02x}" for b in data[i : i + 16]) for i in range(0, len(data), 16)]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fanout")
    os.makedirs(out, exist_ok=True)
    for stale in os.listdir(out):
        if stale.endswith(".hex"):
            os.remove(os.path.join(out, stale))
    for name, what, frames in CASES:
        for part, packet in frames.items():
            write_hex(os.path.join(out, f"{name}.{part}.hex"), f"{name}.{part}", what, packet)
    print(f"wrote {len(CASES)} cases to {out}")


if __name__ == "__main__":
    main()
