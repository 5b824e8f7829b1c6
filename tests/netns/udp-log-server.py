"""A UDP backend for the fan-out tests: logs and answers every datagram.

Usage: udp-log-server.py NAME PORT LOG

Listens on PORT (IPv4), appends one line per datagram to LOG,
"PEER_ADDRESS PEER_PORT PAYLOAD" (the payload as text), flushed at once,
and answers from the port it arrived on with "NAME PAYLOAD". Runs until
killed.
"""

import socket
import sys


def main() -> None:
    name, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    with open(log, "a", encoding="utf-8") as out:
        while True:
            data, peer = sock.recvfrom(2048)
            text = data.decode("utf-8", "replace")
            out.write(f"{peer[0]} {peer[1]} {text}\n")
            out.flush()
            sock.sendto(f"{name} {text}".encode(), peer)


if __name__ == "__main__":
    main()
