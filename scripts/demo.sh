#!/usr/bin/env bash
# The demo: flowgate forwarding real traffic between a client and three
# backend microservices, each in its own network namespace on this machine.
#
# Installs what is missing, builds flowgate and flowgatectl (release), builds
# the topology of configs/demo.toml (scripts/lib/topology.sh), starts real
# HTTP servers (nginx) and a UDP service on the backends, runs
# `flowgate run --config configs/demo.toml` on the gateway, sends requests
# with curl, a bounded load, and prints how the requests spread over the
# backends and the gateway's counters. Everything is torn down at the end,
# also on Ctrl-C or failure; a leftover of a killed run is removed at start.
# Needs root (namespaces, XDP). Sends traffic only between its namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "the demo creates network namespaces and attaches XDP programs: it needs root" >&2
  exec sudo --preserve-env=PATH,CARGO_HOME,RUSTUP_HOME,CARGO_TARGET_DIR "$0" "$@"
fi

# shellcheck source=lib/topology.sh
source scripts/lib/topology.sh
# shellcheck source=lib/report.sh
source scripts/lib/report.sh

CONFIG=configs/demo.toml
REQUESTS=${DEMO_REQUESTS:-1000}   # per TCP service
LOAD_SECONDS=${DEMO_LOAD_SECONDS:-3}
READY_SECONDS=30

say "installing what is missing"
scripts/install-deps.sh
say "building flowgate and flowgatectl (release)"
cargo build --release --locked --bins
bin=${CARGO_TARGET_DIR:-target}/release
FLOWGATE=$(realpath "$bin/flowgate")
FLOWGATECTL=$(realpath "$bin/flowgatectl")

# The daemon's control socket and metrics endpoint, as the config sets them.
setting() {
  sed -n "/^\[daemon\]/,/^\[/ s/^$1 *= *\"\([^\"]*\)\".*/\1/p" "$CONFIG" | head -n 1
}
CONTROL_SOCKET=$(setting control_socket)
CONTROL_SOCKET=${CONTROL_SOCKET:-/run/flowgate/control.sock}
METRICS=$(setting metrics_address)

work=$(mktemp -d /tmp/flowgate-demo.XXXXXX)
chmod 755 "$work"
fg_pid=""
fg_log=$work/flowgate.log

# Stops flowgate the way an operator would (SIGTERM, bounded wait), then
# removes the namespaces and everything running in them.
teardown() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  if [ -n "$fg_pid" ] && kill -0 "$fg_pid" 2>/dev/null; then
    kill -TERM "$fg_pid"
    for _ in $(seq 1 100); do kill -0 "$fg_pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$fg_pid" 2>/dev/null && kill -KILL "$fg_pid" 2>/dev/null
    wait "$fg_pid" 2>/dev/null
  fi
  if [ "$rc" -ne 0 ] && [ -s "$fg_log" ]; then
    echo "-- flowgate's log (last 20 lines):" >&2
    tail -n 20 "$fg_log" >&2
  fi
  topo_down
  rm -rf "$work"
  if [ "$rc" -eq 0 ]; then
    echo "torn down: namespaces and processes removed"
  else
    echo "demo failed (exit $rc); torn down: namespaces and processes removed" >&2
  fi
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "network namespaces (client, gateway, backend segment, three backends)"
topo_down # a killed run's leftovers
topo_up
topo_warm_up
for n in 1 2 3; do topo_start_backend "$n" "$work"; done
cat <<'EOF'
  client 198.18.0.2, 2001:2::2
     │  routes 198.18.100.0/24 and 2001:2:0:100::/64 via the gateway
  fg-client 198.18.0.1 ┤ gateway (flowgate) ├ fg-backend 198.18.1.1
                                              │ bridge
        b1 198.18.1.11, 2001:2:0:1::11 ─┬─ b2 198.18.1.12, 2001:2:0:1::12 ─┬─ b3 198.18.1.13
        nginx :8080 :8081, udp :5353 on each; each answers with its name
EOF
echo "gateway: net.ipv4.ip_forward=$(topo_exec gw sysctl -n net.ipv4.ip_forward)," \
  "net.ipv6.conf.all.forwarding=$(topo_exec gw sysctl -n net.ipv6.conf.all.forwarding)" \
  "(the kernel does not forward; flowgate does)"

# Wait (bounded) for the backends' servers.
for n in 1 2 3; do
  for i in $(seq 1 50); do
    topo_exec "b$n" curl -s --max-time 1 -o /dev/null http://127.0.0.1:8080/ && break
    [ "$i" -lt 50 ] || { echo "backend b$n's nginx did not start" >&2; cat "$work/b$n/error.log" >&2; exit 1; }
    sleep 0.1
  done
done

say "before flowgate runs: the VIP does not answer"
if topo_exec client curl -s --max-time 1 http://198.18.100.10/ >/dev/null; then
  echo "the VIP answered without flowgate: something else forwards in the gateway namespace" >&2
  exit 1
fi
echo "curl http://198.18.100.10/ -> no answer within 1 s"

say "starting flowgate run --config $CONFIG in the gateway namespace"
# Not through a shell function: $! must be flowgate itself (ip netns exec
# execs it), so that the signals below reach it.
ip netns exec "$FG_TOPO-gw" "$FLOWGATE" run --config "$CONFIG" >"$fg_log" 2>&1 &
fg_pid=$!
ready=""
for _ in $(seq 1 $((READY_SECONDS * 4))); do
  if ! kill -0 "$fg_pid" 2>/dev/null; then
    wait "$fg_pid" && rc=0 || rc=$?
    fg_pid=""
    echo "flowgate exited with status $rc before it was ready" >&2
    exit 1
  fi
  if topo_exec client "$(topo_python)" scripts/lib/udp-query.py 198.18.100.10 53 1 0.25 | grep -q '^198'; then
    ready=yes
    break
  fi
done
[ -n "$ready" ] || { echo "flowgate did not forward within ${READY_SECONDS} s" >&2; exit 1; }
sed 's/^/  | /' "$fg_log" | head -n 20

say "one request to each service (the client only ever sees the VIP)"
for url in http://198.18.100.10/ http://198.18.100.11/ 'http://[2001:2:0:100::10]/'; do
  printf '  curl %-28s -> ' "$url"
  topo_exec client curl -sS --max-time 2 -w ' (from %{remote_ip} port %{remote_port})\n' "$url" | tr '\n' ' '
  echo
done
printf '  udp  %-28s -> ' "198.18.100.10:53"
topo_exec client "$(topo_python)" scripts/lib/udp-query.py 198.18.100.10 53 1 1 |
  awk '{ print $2, "(from " $1 ")" }'

say "load: $REQUESTS new connections per HTTP service, then wrk for ${LOAD_SECONDS} s"
# "Connection: close": every request is a new TCP connection, so a new flow
# the gateway schedules. One line per request: the backend's name, or an
# empty line for a request that failed. Bounded: 2 s a request, 180 s in all.
load() {
  topo_exec client timeout --foreground 180 curl -s --connect-timeout 1 --max-time 2 \
    -H 'Connection: close' "$1?n=[1-$2]" -w '\n' || true
}
t0=$(date +%s.%N)
load http://198.18.100.10/ "$REQUESTS" >"$work/web"
load http://198.18.100.11/ "$REQUESTS" >"$work/web-wrr"
load 'http://[2001:2:0:100::10]/' "$((REQUESTS / 5))" >"$work/web6"
topo_exec client "$(topo_python)" scripts/lib/udp-query.py 198.18.100.10 53 "$((REQUESTS / 5))" 1 >"$work/dns"
t1=$(date +%s.%N)
echo
spread "web     (maglev, 198.18.100.10:80)" "$work/web" b1:1 b2:1 b3:2
spread "web-wrr (wrr, 198.18.100.11:80)" "$work/web-wrr" b1:1 b2:2 b3:3
spread "web6    (maglev, [2001:2:0:100::10]:80)" "$work/web6" b1:1 b2:1
spread "dns     (maglev, udp 198.18.100.10:53)" "$work/dns" b1:1 b2:1
echo "every UDP answer came from: $(awk '{print $1}' "$work/dns" | sort -u | tr '\n' ' ')"
awk -v a="$t0" -v b="$t1" 'BEGIN { printf "(%.1f s for all of the above)\n", b - a }'
echo
topo_exec client wrk -t1 -c16 -d"${LOAD_SECONDS}s" http://198.18.100.10/ | sed 's/^/  /'

say "the gateway's kernel stayed out of it, and is still reachable"
forwarded4=$(topo_exec gw awk '/^Ip: [0-9]/ { print $7 }' /proc/net/snmp)
forwarded6=$(topo_exec gw awk '$1 == "Ip6OutForwDatagrams" { print $2 }' /proc/net/snmp6)
echo "datagrams the gateway's kernel forwarded: IPv4 $forwarded4, IPv6 $forwarded6"
if [ "$forwarded4" != 0 ] || [ "$forwarded6" != 0 ]; then
  echo "the gateway's kernel forwarded traffic: this demo must show flowgate doing it" >&2
  exit 1
fi
for addr in 198.18.0.1 2001:2::1; do
  if topo_exec client ping -c 1 -W 1 "$addr" >/dev/null; then
    echo "ping $addr (the gateway's own address): answered by the kernel"
  else
    echo "ping $addr: no answer" >&2
    exit 1
  fi
done

say "the gateway's counters"
if "$FLOWGATECTL" --socket "$CONTROL_SOCKET" status 2>"$work/ctl.err" &&
  "$FLOWGATECTL" --socket "$CONTROL_SOCKET" stats 2>>"$work/ctl.err"; then
  :
elif [ -n "$METRICS" ] && topo_exec gw curl -sf --max-time 2 "http://$METRICS/metrics" >"$work/metrics"; then
  grep -v '^#' "$work/metrics" | grep -E 'packets|flows|drops' | head -n 30
else
  echo "(flowgatectl: $(head -n 1 "$work/ctl.err"); the counters follow in flowgate's final log lines)"
fi

say "stopping flowgate (SIGTERM, as a service manager would)"
kill -TERM "$fg_pid"
rc=""
for _ in $(seq 1 100); do
  if ! kill -0 "$fg_pid" 2>/dev/null; then
    wait "$fg_pid" && rc=0 || rc=$?
    break
  fi
  sleep 0.1
done
if [ -z "$rc" ]; then
  echo "flowgate did not stop within 10 s of SIGTERM" >&2
  exit 1
fi
fg_pid=""
tail -n 8 "$fg_log" | sed 's/^/  | /'
echo "flowgate exited with status $rc"
for dev in fg-client fg-backend; do
  if topo_exec gw ip link show dev "$dev" | grep -q ' xdp'; then
    echo "an XDP program is still attached to $dev after shutdown" >&2
    exit 1
  fi
done
echo "no XDP program left on fg-client or fg-backend"
[ "$rc" -eq 0 ] || exit 1

say "done"
