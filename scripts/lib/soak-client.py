#!/usr/bin/env python3
"""The soak's traffic, run in the client namespace (scripts/soak.sh).

    soak-client.py SECONDS REPORT_FILE

For SECONDS it keeps, at once:
- established: 8 keep-alive HTTP connections to web (maglev, 198.18.100.10)
  and 8 to web-wrr (wrr, 198.18.100.11), each from a source port of its
  own, one request a second each; every answer must come from the backend
  that answered the first. A connection that fails or moves is an
  established-connection failure, and is not reopened (it stays failed).
- new flows: a new connection (request, answer, close) to web, 20 a second.
- UDP: a query to dns (198.18.100.10:53) every second, one socket (one flow).
- flap: a new connection to the soak's flapping service every second; its
  backends come and go, so these fail while the health checks catch up and
  are reported, not judged.

Every 10 s and at the end it writes one JSON line of totals to REPORT_FILE
(appending), so a killed run still leaves its last totals.
"""

import json
import selectors
import socket
import sys
import time

WEB = ("198.18.100.10", 80)
WEB_WRR = ("198.18.100.11", 80)
DNS = ("198.18.100.10", 53)
FLAP = ("198.18.100.20", 80)
PER_SERVICE = 8
FIRST_PORT = 21000  # below the ephemeral range: no other socket takes one
NEW_PER_SECOND = 20
TIMEOUT = 2.0


def http_get(sock):
    """One request on sock; the body (the backend's name) or raises."""
    sock.sendall(b"GET / HTTP/1.1\r\nHost: soak\r\n\r\n")
    data = b""
    deadline = time.monotonic() + TIMEOUT
    while b"\r\n\r\n" not in data:
        if time.monotonic() > deadline:
            raise TimeoutError("no head")
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError("status %r" % head.split(b"\r\n", 1)[0])
    while len(body) < length:
        if time.monotonic() > deadline:
            raise TimeoutError("short body")
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed in body")
        body += chunk
    return body[:length].decode(errors="replace")


def connect(to, port=None):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    if port is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
    sock.connect(to)
    return sock


def one_new_flow(to):
    """A new connection, one request, close; None if answered, else why not."""
    try:
        with connect(to) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            first_line = data.split(b"\r\n", 1)[0]
            status = first_line.split()
            if len(status) >= 2 and status[0].startswith(b"HTTP/") and status[1] == b"200":
                return None
            return "status %r" % first_line
    except OSError as e:
        return repr(e)


def main():
    seconds = float(sys.argv[1])
    report_path = sys.argv[2]
    totals = {
        "established_connections": 0,
        "established_requests": 0,
        "established_failures": 0,
        "established_failure_reasons": [],
        "new_flows": 0,
        "new_flow_failures": 0,
        "new_flow_failure_reasons": [],
        "udp_queries": 0,
        "udp_failures": 0,
        "flap_flows": 0,
        "flap_failures": 0,
        "elapsed_s": 0.0,
    }
    live = []  # [sock, service, backend]
    port = FIRST_PORT
    for service in (WEB, WEB_WRR):
        for _ in range(PER_SERVICE):
            sock = connect(service, port)
            port += 1
            backend = http_get(sock)
            live.append([sock, service, backend])
    totals["established_connections"] = len(live)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.settimeout(TIMEOUT)

    def report():
        with open(report_path, "a") as f:
            f.write(json.dumps(totals) + "\n")

    start = time.monotonic()
    next_report = start + 10
    second = 0
    while time.monotonic() - start < seconds:
        tick = start + second
        for conn in live:
            sock, service, backend = conn
            if sock is None:
                continue
            totals["established_requests"] += 1
            try:
                got = http_get(sock)
                if got != backend:
                    raise ConnectionError("answered by %s, was %s" % (got, backend))
            except OSError as e:
                totals["established_failures"] += 1
                reasons = totals["established_failure_reasons"]
                if len(reasons) < 20:
                    reasons.append("%.0f s %s:%d %s" % (time.monotonic() - start, *service, e))
                sock.close()
                conn[0] = None
        try:
            udp.sendto(b"who are you?", DNS)
            udp.recvfrom(64)
        except OSError:
            totals["udp_failures"] += 1
        totals["udp_queries"] += 1
        totals["flap_flows"] += 1
        if one_new_flow(FLAP) is not None:
            totals["flap_failures"] += 1
        for i in range(NEW_PER_SECOND):
            totals["new_flows"] += 1
            failure = one_new_flow(WEB)
            if failure is not None:
                totals["new_flow_failures"] += 1
                reasons = totals["new_flow_failure_reasons"]
                if len(reasons) < 20:
                    reasons.append("%.0f s %s" % (time.monotonic() - start, failure))
            pause = tick + (i + 1) / NEW_PER_SECOND - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        second += 1
        totals["elapsed_s"] = round(time.monotonic() - start, 1)
        if time.monotonic() >= next_report:
            report()
            next_report += 10
        pause = start + second - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    totals["elapsed_s"] = round(time.monotonic() - start, 1)
    report()
    for sock, _, _ in live:
        if sock is not None:
            sock.close()


if __name__ == "__main__":
    main()
