#!/usr/bin/env bash
# The fleet demo: two flowgate gateways behind a router that spreads flows
# over them by ECMP, their rules from one etcd, their VIP announced to the
# router by BGP; one gateway is killed in the middle of long transfers and
# they complete through the other. All in network namespaces on this
# machine (the topology of scripts/lib/fleet-topology.sh).
#
#   scripts/fleet-demo.sh [--duration SECONDS]
#
# Installs what is missing (scripts/install-deps.sh: etcd-server, bird2,
# nginx, ...), builds flowgate and flowgatectl (release), then:
# - starts a real etcd (with a temporary data dir) and a real BIRD 2 on the
#   router and on each gateway (each with its own config, socket and pid
#   file), and nginx on three backends;
# - puts the fleet's services in etcd with `flowgatectl --etcd ... apply`
#   (a dry run first), starts `flowgate run` on both gateways
#   (`announce = "bgp"`), and waits for the router's multipath route;
# - sends new connections from eight client addresses and shows how they
#   spread over the gateways and the backends, and what an operator sees:
#   `flowgatectl --etcd ... fleet`, `flowgate fleet`, the router's routes,
#   each gateway's `flowgatectl stats`;
# - starts long transfers (SECONDS each, 10 by default), kills gateway 1
#   with SIGKILL a third of the way in, and shows the route withdrawn and
#   every transfer completing through gateway 2; starts more, brings
#   gateway 1 back in their middle, and shows flows hashed back to it going
#   on through it.
# The script checks what it claims: it exits non-zero if a request or a
# transfer fails or comes up short, if the route is not withdrawn within
# 3 s of the kill or does not come back, or if a gateway does not carry
# its share. Everything it started is stopped and removed on any exit
# (Ctrl-C, failure, success); a killed run's leftovers are removed at start.
# Needs root (namespaces, XDP). Sends traffic only between its namespaces,
# on 198.18.0.0/15.
#
# FLOWGATE and FLOWGATECTL (paths) use those binaries instead of building.
set -euo pipefail
self=$(realpath "$0")
cd "$(dirname "$self")/.."

usage() {
  echo "usage: $0 [--duration SECONDS]   (SECONDS: how long each long transfer lasts, 6..300; default 10)"
}
DURATION=10
while [ $# -gt 0 ]; do
  case $1 in
    --duration) [ $# -ge 2 ] || { usage >&2; exit 2; }; DURATION=$2; shift 2 ;;
    --duration=*) DURATION=${1#--duration=}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
if ! [[ $DURATION =~ ^[0-9]+$ ]] || [ "$DURATION" -lt 6 ] || [ "$DURATION" -gt 300 ]; then
  echo "--duration must be a whole number of seconds from 6 to 300, not \"$DURATION\"" >&2
  exit 2
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "the fleet demo creates network namespaces and attaches XDP programs: it needs root" >&2
  exec sudo --preserve-env=PATH,CARGO_HOME,RUSTUP_HOME,CARGO_TARGET_DIR,FLOWGATE,FLOWGATECTL,FG_FLEET \
    "$self" --duration "$DURATION"
fi

# shellcheck source=lib/fleet-topology.sh
source scripts/lib/fleet-topology.sh
# shellcheck source=lib/report.sh
source scripts/lib/report.sh

VIP=198.18.160.10
PREFIX=/flowgate-demo
ETCD_LOCAL=http://127.0.0.1:2379
ETCD=http://198.18.64.1:2379
RATE=131072                     # bytes a second of each long transfer
BYTES=$((RATE * DURATION))      # so that each lasts DURATION seconds
TRANSFERS=16                    # long transfers a round, two from each client address
REQUESTS=25                     # new connections from each client address
WITHDRAW_WITHIN=3               # seconds, as the fleet promises (docs/operations.md)
started_at=$(date +%s.%N)

say "installing what is missing"
scripts/install-deps.sh
if [ -n "${FLOWGATE:-}" ] && [ -n "${FLOWGATECTL:-}" ]; then
  say "using $FLOWGATE and $FLOWGATECTL"
else
  say "building flowgate and flowgatectl (release)"
  cargo build --release --locked --bins
  bin=${CARGO_TARGET_DIR:-target}/release
  FLOWGATE=$bin/flowgate
  FLOWGATECTL=$bin/flowgatectl
fi
FLOWGATE=$(realpath "$FLOWGATE")
FLOWGATECTL=$(realpath "$FLOWGATECTL")

work=/tmp/$FG_FLEET-demo
gw_pid=("" "" "")

# Stops the gateways the way an operator would (SIGTERM, bounded wait),
# then removes the namespaces and everything running in them (etcd, the
# BIRDs, nginx) and the temporary state.
teardown() {
  local rc=$? g
  trap - EXIT INT TERM
  set +e
  for g in 1 2; do
    if [ -n "${gw_pid[g]}" ] && kill -0 "${gw_pid[g]}" 2>/dev/null; then
      kill -TERM "${gw_pid[g]}"
      for _ in $(seq 1 100); do kill -0 "${gw_pid[g]}" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "${gw_pid[g]}" 2>/dev/null
      wait "${gw_pid[g]}" 2>/dev/null
    fi
  done
  if [ "$rc" -ne 0 ] && [ -d "$work" ]; then
    for f in "$work"/gw*.log "$work"/etcd.log "$work"/bird-*.log; do
      [ -s "$f" ] || continue
      echo "-- $(basename "$f") (last 15 lines):" >&2
      tail -n 15 "$f" >&2
    done
  fi
  fleet_down
  rm -rf "$work"
  awk -v a="$started_at" -v b="$(date +%s.%N)" 'BEGIN { printf "(%.0f s in all)\n", b - a }'
  if [ "$rc" -eq 0 ]; then
    echo "torn down: namespaces, processes and temporary state removed"
  else
    echo "fleet demo failed (exit $rc); torn down: namespaces, processes and temporary state removed" >&2
  fi
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
  echo "FAILED: $*" >&2
  exit 1
}

say "network namespaces: clients, a router, two gateways, three backends, etcd"
fleet_down # a killed run's leftovers
rm -rf "$work"
mkdir -p "$work"
chmod 755 "$work"
fleet_up
fleet_warm_up
cat <<'EOF'
  client 198.18.60.10-17 ── router (BIRD, ECMP, layer-4 hash) ─┬─ gw1 198.18.61.2 (flowgate, BIRD) ─┐
                                                              └─ gw2 198.18.62.2 (flowgate, BIRD) ─┴─ b1 b2 b3 (nginx)
  the backends' replies go back through the router, over either gateway     198.18.63.11-13
  etcd 198.18.64.1:2379, reached by the gateways on their management links
EOF

say "starting etcd (data in $work/etcd, removed at the end)"
fleet_exec etcd etcd --name fleet-demo --data-dir "$work/etcd" \
  --listen-client-urls "$ETCD,$ETCD_LOCAL" --advertise-client-urls "$ETCD" \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster fleet-demo=http://127.0.0.1:2380 >"$work/etcd.log" 2>&1 &
for i in $(seq 1 75); do
  ETCDCTL_API=3 fleet_exec etcd etcdctl --endpoints "$ETCD_LOCAL" --command-timeout=1s \
    endpoint health >/dev/null 2>&1 && break
  [ "$i" -lt 75 ] || fail "etcd did not answer within 15 s"
  sleep 0.2
done
echo "etcd $(etcd --version | head -n 1 | awk '{ print $3 }') answers on $ETCD"

say "starting BIRD on the router and on each gateway"
# bird_start NAME NS: BIRD with $work/bird-NAME.{conf,ctl,pid,log}, config on stdin.
bird_start() {
  local name=$1 ns=$2
  { echo "log \"$work/bird-$name.log\" all;"; cat; } >"$work/bird-$name.conf"
  fleet_exec "$ns" bird -c "$work/bird-$name.conf" -s "$work/bird-$name.ctl" \
    -P "$work/bird-$name.pid"
  for i in $(seq 1 50); do
    fleet_exec "$ns" birdc -s "$work/bird-$name.ctl" show status 2>/dev/null |
      grep -q "Daemon is up" && return 0
    [ "$i" -lt 50 ] || fail "BIRD $name did not start"
    sleep 0.2
  done
}
birdc_router() { fleet_exec router birdc -s "$work/bird-router.ctl" "$@"; }
fleet_router_bird "$VIP" | bird_start router router
for g in 1 2; do fleet_gateway_bird "$g" | bird_start "gw$g" "gw$g"; done
echo "$(bird --version 2>&1 | head -n 1): router (AS 65000), gw1 and gw2 (AS 65001)"

say "backends: nginx on b1, b2, b3 (/big: $BYTES bytes at $((RATE / 1024)) KiB/s)"
for n in 1 2 3; do fleet_start_backend "$n" "$work" "$BYTES" "$RATE"; done
for n in 1 2 3; do
  for i in $(seq 1 50); do
    fleet_exec "b$n" curl -s --max-time 1 -o /dev/null http://127.0.0.1:8080/ && break
    [ "$i" -lt 50 ] || fail "backend b$n's nginx did not start: $(cat "$work/b$n/error.log")"
    sleep 0.1
  done
done

say "the fleet's rules, written to etcd with flowgatectl --etcd"
# The operator's box is etcd's namespace here; in production, any machine
# that reaches the cluster.
ctl_etcd() { fleet_exec etcd "$FLOWGATECTL" --etcd "$ETCD_LOCAL" --etcd-prefix "$PREFIX" "$@"; }
backends() {
  local n
  for n in 1 2 3; do printf '[[services.backends]]\naddress = "198.18.63.1%s"\nport = %s\n' "$n" "$1"; done
}
cat >"$work/fleet.toml" <<EOF
# The fleet's services: both gateways run them, from etcd.
[[services]]
name = "web"
protocol = "tcp"
vip = "$VIP"
port = 80
scheduler = "maglev"
announce = "bgp"
$(backends 8080)

[[services]]
name = "files"
protocol = "tcp"
vip = "$VIP"
port = 81
scheduler = "sh"
announce = "bgp"
$(backends 8081)
EOF
sed 's/^/  /' "$work/fleet.toml"
echo "\$ flowgatectl --etcd $ETCD --etcd-prefix $PREFIX apply -f fleet.toml --dry-run"
ctl_etcd apply -f "$work/fleet.toml" --dry-run | sed 's/^/  /'
echo "\$ flowgatectl --etcd $ETCD --etcd-prefix $PREFIX apply -f fleet.toml"
ctl_etcd apply -f "$work/fleet.toml" | sed 's/^/  /'
echo "\$ etcdctl get --prefix $PREFIX/v1/rules/ --keys-only"
ETCDCTL_API=3 fleet_exec etcd etcdctl --endpoints "$ETCD_LOCAL" get --prefix "$PREFIX/v1/rules/" \
  --keys-only | sed '/^$/d; s/^/  /'

say "starting flowgate on both gateways (rules from etcd, VIP announced by BGP)"
gateway_config() {
  local g=$1
  cat >"$work/gw$g.toml" <<EOF
[daemon]
cores = [$((g - 1))]
frame_count = 8192
rx_ring_size = 1024
tx_ring_size = 1024
fill_ring_size = 2048
completion_ring_size = 2048
fast_path = "off"
control_socket = "$work/control-$g.sock"
metrics_address = "unix:$work/metrics-$g.sock"

[flows]
capacity = 16384

[[interfaces]]
name = "fgw-c"

[[interfaces]]
name = "fgw-b"

[etcd]
endpoints = ["$ETCD"]
prefix = "$PREFIX"
gateway_id = "gw-$g"
state_file = "$work/etcd-state-$g.json"
start_timeout = 10
status_ttl = 3
EOF
}
# start_gateway G: flowgate on gateway G, waiting (bounded) for its control
# socket, which it binds once its workers forward.
start_gateway() {
  local g=$1
  rm -f "$work/control-$g.sock"
  # Not through a shell function: $! must be flowgate itself (ip netns
  # exec execs it), so that the signals below reach it.
  ip netns exec "$FG_FLEET-gw$g" "$FLOWGATE" run --config "$work/gw$g.toml" >>"$work/gw$g.log" 2>&1 &
  gw_pid[g]=$!
  for _ in $(seq 1 300); do
    [ -S "$work/control-$g.sock" ] && return 0
    if ! kill -0 "${gw_pid[g]}" 2>/dev/null; then
      gw_pid[g]=""
      fail "flowgate on gw$g exited before it was ready"
    fi
    sleep 0.1
  done
  fail "flowgate on gw$g did not bind its control socket within 30 s"
}
gateways_started=$(date +%s.%N)
for g in 1 2; do gateway_config "$g"; start_gateway "$g"; done
echo "gw1 pid ${gw_pid[1]}, gw2 pid ${gw_pid[2]}"

# next_hops: the router's next hops to the VIP, sorted, one line.
next_hops() {
  fleet_exec router ip route show "$VIP/32" | awk '{ for (i = 1; i < NF; i++) if ($i == "via") print $(i + 1) }' |
    sort | tr '\n' ' ' | sed 's/ $//'
}
# wait_hops WANT SECONDS [SINCE]: polls (every 0.05 s, for SECONDS) until
# the router's next hops are WANT; prints how long it took since SINCE (a
# `date +%s.%N`; by default now), or fails.
wait_hops() {
  local want=$1 limit=$2 start=${3:-$(date +%s.%N)}
  for _ in $(seq 1 $((limit * 20))); do
    if [ "$(next_hops)" = "$want" ]; then
      awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f\n", b - a }'
      return 0
    fi
    sleep 0.05
  done
  echo "the router's route to $VIP is over \"$(next_hops)\", not \"$want\", after $limit s" >&2
  birdc_router show protocols >&2
  return 1
}
BOTH="198.18.61.2 198.18.62.2"
took=$(wait_hops "$BOTH" 40 "$gateways_started") || fail "the VIP's route did not reach both gateways"
echo "the router's multipath route over both gateways, from BGP, ${took} s after the gateways started:"
fleet_exec router ip route show "$VIP/32" | sed 's/^/  /'

# metric G NAME: the sum of gateway G's metric NAME.
metric() {
  curl -s --max-time 5 --unix-socket "$work/metrics-$1.sock" http://localhost/metrics |
    awk -v m="$2" '($1 == m || index($1, m "{") == 1) { s += $NF } END { printf "%d\n", s }'
}

say "new connections: $REQUESTS from each of 8 client addresses to web and to files"
# One line per request: the backend that answered, or "failed".
requests() {
  local port=$1 i
  for i in 0 1 2 3 4 5 6 7; do
    fleet_exec client timeout --foreground 120 curl -s --connect-timeout 2 --max-time 3 \
      --interface "$(fleet_client "$i")" -H 'Connection: close' \
      "http://$VIP:$port/?n=[1-$REQUESTS]" -w '\n' || true
  done | awk 'NF == 0 { next } { print }'
}
f1=$(metric 1 flowgate_new_flows_total)
f2=$(metric 2 flowgate_new_flows_total)
requests 80 >"$work/web"
requests 81 >"$work/files"
spread "web   (maglev, $VIP:80)" "$work/web" b1:1 b2:1 b3:1
spread "files (sh,     $VIP:81)" "$work/files" b1:1 b2:1 b3:1
n1=$(($(metric 1 flowgate_new_flows_total) - f1))
n2=$(($(metric 2 flowgate_new_flows_total) - f2))
echo "connections each gateway made: gw1 $n1, gw2 $n2 (ECMP's layer-4 hash chose)"
want=$((16 * REQUESTS))
for f in web files; do
  got=$(grep -cE '^b[123]$' "$work/$f" || true)
  [ "$got" -eq "$((8 * REQUESTS))" ] || fail "$f: $got of $((8 * REQUESTS)) requests answered"
done
if [ "$n1" -eq 0 ] || [ "$n2" -eq 0 ]; then fail "a gateway made no connection (gw1 $n1, gw2 $n2)"; fi
[ $((n1 + n2)) -ge "$want" ] || fail "the gateways made $((n1 + n2)) connections for $want requests"

say "what an operator sees"
echo "\$ flowgatectl --etcd $ETCD --etcd-prefix $PREFIX fleet"
ctl_etcd fleet | sed 's/^/  /'
echo "\$ flowgate fleet --config gw1.toml   (on gw1: the same, from its own [etcd])"
fleet_exec gw1 "$FLOWGATE" fleet --config "$work/gw1.toml" | sed 's/^/  /'
echo "\$ birdc show protocols   (on the router)"
birdc_router show protocols | sed 's/^/  /'
echo "\$ ip route show $VIP   (on the router)"
fleet_exec router ip route show "$VIP/32" | sed 's/^/  /'
for g in 1 2; do
  echo "\$ flowgatectl stats   (on gw$g)"
  "$FLOWGATECTL" --socket "$work/control-$g.sock" stats | sed '/^$/d; s/^/  /'
done

# transfers ROUND: starts $TRANSFERS long downloads of /big from web, two
# from each client address, in the background; each writes one line to
# $work/ROUND.N: "HTTP_CODE BYTES BACKEND", or its curl error.
transfer_pids=()
transfers() {
  local round=$1 i
  transfer_pids=()
  for i in $(seq 0 $((TRANSFERS - 1))); do
    fleet_exec client curl -s -o /dev/null --interface "$(fleet_client $((i % 8)))" \
      --connect-timeout 3 --max-time $((DURATION * 4 + 20)) \
      -w '%{http_code} %{size_download} %header{x-backend}\n' "http://$VIP/big" \
      >"$work/$round.$i" 2>&1 &
    transfer_pids+=("$!")
  done
}
# transfers_done ROUND: waits for them; prints the outcome; fails unless
# every one got all its bytes.
transfers_done() {
  local round=$1 pid whole=0 i
  for pid in "${transfer_pids[@]}"; do wait "$pid" || true; done
  for i in $(seq 0 $((TRANSFERS - 1))); do
    if awk -v n="$BYTES" '$1 == 200 && $2 == n { ok = 1 } END { exit !ok }' "$work/$round.$i"; then
      whole=$((whole + 1))
    else
      echo "  transfer $i: $(cat "$work/$round.$i")" >&2
    fi
  done
  echo "$whole of $TRANSFERS transfers complete, every byte ($BYTES each)"
  [ "$whole" -eq "$TRANSFERS" ] || fail "$((TRANSFERS - whole)) transfers did not complete"
}
# running: how many of the round's transfers are still going.
running() {
  local pid n=0
  for pid in "${transfer_pids[@]}"; do kill -0 "$pid" 2>/dev/null && n=$((n + 1)); done
  echo "$n"
}

say "failover: gw1 is killed (SIGKILL) in the middle of $TRANSFERS transfers of ${DURATION} s"
transfers failover
kill_at=$((DURATION / 3))
sleep "$kill_at"
before1=$(metric 1 flowgate_new_flows_total)
before2=$(metric 2 flowgate_new_flows_total)
made1=$((before1 - f1 - n1))
echo "after ${kill_at} s: $(running) transfers running, gw1 carries $made1 of them, gw2 $((before2 - f2 - n2))"
[ "$made1" -gt 0 ] || fail "gw1 carries none of the transfers: nothing to fail over"
killed=$(date +%s.%N)
kill -KILL "${gw_pid[1]}"
echo "kill -9 gw1"
took=$(wait_hops 198.18.62.2 10 "$killed") || fail "gw1's route was not withdrawn within 10 s"
wait "${gw_pid[1]}" 2>/dev/null || true
gw_pid[1]=""
echo "the router withdrew gw1 ${took} s after the kill:"
fleet_exec router ip route show "$VIP/32" | sed 's/^/  /'
awk -v t="$took" -v w="$WITHDRAW_WITHIN" 'BEGIN { exit !(t <= w) }' ||
  fail "withdrawn after $took s, more than $WITHDRAW_WITHIN s"
transfers_done failover
took_over=$(($(metric 2 flowgate_new_flows_total) - before2))
echo "gw2 picked up $took_over connections mid-stream (gw1's $made1); every transfer completed through gw2"
[ "$took_over" -gt 0 ] || fail "gw2 picked up no connection of gw1's"
for _ in $(seq 1 100); do
  ctl_etcd fleet | grep -q '^gw-1 ' || break
  sleep 0.1
done
echo "\$ flowgatectl --etcd $ETCD --etcd-prefix $PREFIX fleet   (gw-1's status key went with its lease)"
ctl_etcd fleet | sed 's/^/  /'
if ctl_etcd fleet | grep -q '^gw-1 '; then fail "gw-1's status key outlived its lease"; fi

say "gw1 comes back in the middle of $TRANSFERS more transfers"
transfers return
sleep 1
restarted=$(date +%s.%N)
start_gateway 1
took=$(wait_hops "$BOTH" 15 "$restarted") || fail "gw1's route did not come back"
left=$(running)
echo "gw1 started again; the router's route is over both gateways ${took} s later, with $left transfers running:"
fleet_exec router ip route show "$VIP/32" | sed 's/^/  /'
[ "$left" -gt 0 ] || fail "the transfers ended before gw1 was back: use a longer --duration"
transfers_done return
picked_up=$(metric 1 flowgate_new_flows_total)
echo "gw1 picked up $picked_up connections mid-stream that ECMP hashed back to it; they completed through it"
[ "$picked_up" -gt 0 ] || fail "no connection came back to gw1"
echo "\$ flowgatectl --etcd $ETCD --etcd-prefix $PREFIX fleet"
ctl_etcd fleet | sed 's/^/  /'

say "stopping the gateways (SIGTERM): each withdraws its route first"
# stop_gateway G LEFT: SIGTERM to gateway G (bounded wait; it must exit 0);
# the router's next hops must become LEFT.
stop_gateway() {
  local g=$1 rc=""
  local since
  since=$(date +%s.%N)
  kill -TERM "${gw_pid[g]}"
  for _ in $(seq 1 100); do
    if ! kill -0 "${gw_pid[g]}" 2>/dev/null; then
      wait "${gw_pid[g]}" && rc=0 || rc=$?
      break
    fi
    sleep 0.1
  done
  gw_pid[g]=""
  [ "$rc" = 0 ] || fail "flowgate on gw$g did not stop cleanly (status ${rc:-none within 10 s})"
  took=$(wait_hops "$2" "$WITHDRAW_WITHIN" "$since") || fail "gw$g's route stayed after SIGTERM"
  echo "gw$g stopped (exit 0); ${took} s after SIGTERM the router's next hops are: ${2:-none}"
}
stop_gateway 2 198.18.61.2
stop_gateway 1 ""
tail -n 3 "$work/gw1.log" | sed 's/^/  | /'

say "done"
