"""A UDP microservice for the demo: answers every datagram with its name.

Usage: udp-name-server.py NAME PORT

Listens on PORT over IPv4 and IPv6 (where the host has IPv6) and replies to
each datagram, from the port it arrived on, with "NAME\n". Runs until killed.
"""

import selectors
import socket
import sys


def main() -> None:
    name, port = sys.argv[1], int(sys.argv[2])
    answer = (name + "\n").encode()
    sel = selectors.DefaultSelector()
    v4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    v4.bind(("0.0.0.0", port))
    sel.register(v4, selectors.EVENT_READ)
    try:
        v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        v6.bind(("::", port))
        sel.register(v6, selectors.EVENT_READ)
    except OSError:
        pass  # no IPv6 on this host
    print(f"{name}: answering on udp/{port}", flush=True)
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            _, peer = sock.recvfrom(2048)
            sock.sendto(answer, peer)


if __name__ == "__main__":
    main()
