"""Asks a UDP service COUNT times, each time from a new socket (so a new
source port and a new flow through the gateway), and prints one line per
query: the address the answer came from and the answer, or "no-answer".

Usage: udp-query.py HOST PORT [COUNT] [TIMEOUT_SECONDS]
"""

import socket
import sys


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(count):
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(b"who are you?\n", (host, port))
            try:
                data, peer = s.recvfrom(2048)
            except socket.timeout:
                print("no-answer", flush=True)
                continue
            addr = f"[{peer[0]}]:{peer[1]}" if family == socket.AF_INET6 else f"{peer[0]}:{peer[1]}"
            print(addr, data.decode(errors="replace").strip(), flush=True)


if __name__ == "__main__":
    main()
