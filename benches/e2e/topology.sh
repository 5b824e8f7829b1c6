# shellcheck shell=bash
# The end-to-end harness's topology and the processes on it; sourced by
# scripts/bench-e2e.sh, which sets RUN (its run directory), GEN_CPU and
# GW_CPU before calling anything here.
#
#   fgb-gen (namespace)      fgb-gw (namespace)              fgb-be (namespace)
#   fgb-gen ------------- fgb-p0  [gateway]  fgb-p1 ------------- fgb-be
#   198.18.0.2/24         198.18.0.1/24      198.18.1.1/24         198.18.1.11-13/24
#   xdpgen, rtt, wrk                                               lo: 198.18.100.10
#                                                                  XDP sink, echo, nginx
#
# Only veth pairs inside our own three namespaces: nothing here touches the
# host's interfaces. The generator's MAC is the same as fgb-p1's and the
# backend host's the same as fgb-p0's: so a forwarder that leaves MACs as
# they are (the forward-only variant) acts as a wire, and both ends accept
# what it delivers. Every neighbour is static: nothing waits for ARP.
#
# CPUs: veth runs a receiver's NAPI (its "driver") in softirq on the CPU
# that sent the frame. So the gateway interfaces' driver half runs where
# their senders run, GEN_CPU: for flowgate that is our XDP program and the
# copy into the UMEM; for the kernel, turning the frame into an skb, GRO,
# and RPS, which hands the skb to GW_CPU. Everything after the driver runs
# on GW_CPU: flowgate's worker (and its transmit, which in copy mode runs
# the veth transmit in the worker's sendto), or the kernel's routing,
# conntrack, NAT and transmit in softirq. The sink's XDP drop runs in
# softirq on GW_CPU too (the gateway sends to it), for every variant
# alike; RPS moves the client's and the backends' own receive processing
# to GEN_CPU, which also runs the generator, the echo server, nginx, wrk
# and the latency client. Softirqs preempt at once:
# no scheduler delay in a round trip. (Threaded NAPI was tried: a NAPI
# thread sharing a core with a busy-polling worker waits for the worker's
# time slice, milliseconds.) Everything of ours runs at nice -20, so the
# machine's other work disturbs the figures less.

NS_GEN=fgb-gen
NS_GW=fgb-gw
NS_BE=fgb-be
DEV_GEN=fgb-gen
DEV_P0=fgb-p0
DEV_P1=fgb-p1
DEV_BE=fgb-be
MAC_P0=02:66:62:00:00:01
MAC_P1=02:66:62:00:01:01
MAC_GEN=$MAC_P1
MAC_BE=$MAC_P0
VIP=198.18.100.10
CLIENT=198.18.0.2
BACKENDS=(198.18.1.11 198.18.1.12 198.18.1.13)
# Flood sources: 198.18.4.0/24, 64 source ports each (xdpgen.c).
FLOOD_NET=198.18.4.0/24
# Flood: VIP udp/7000 -> backends udp/7001; echo 7007 -> 7008; HTTP 80 -> 8080.
FLOOD_PORT=7000
ECHO_PORT=7007
ECHO_BACKEND_PORT=7008

# PIDs of what this harness started, killed by topology_down.
declare -a STARTED_PIDS=()
SPAWNED_PID=""

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }

in_ns() {
  local ns=$1
  shift
  ip netns exec "$ns" "$@"
}

# Deletes our namespaces (and with them the veths), after killing whatever
# still runs in them. Safe to call at any time, any number of times.
topology_down() {
  local pid ns
  for pid in "${STARTED_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${STARTED_PIDS[@]}"; do
    # Give each at most 5 s to exit cleanly (flowgate detaches its XDP
    # program on SIGTERM), then kill it.
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
  STARTED_PIDS=()
  for ns in "$NS_GEN" "$NS_GW" "$NS_BE"; do
    if ip netns list | grep -qx "$ns\( (id: [0-9]*)\)\?"; then
      for pid in $(ip netns pids "$ns" 2>/dev/null); do
        kill -KILL "$pid" 2>/dev/null || true
      done
      ip netns del "$ns" 2>/dev/null || true
    fi
  done
}

# Tunes one interface: transmit checksum offload off (a local socket's
# packet on veth otherwise carries a partial checksum for "hardware" to
# finish, which AF_XDP passes on as it is; a real wire carries complete
# checksums); GRO on (veth then receives through NAPI even without XDP, and
# accepts the generator's XDP frames); RPS to a CPU (the kernel's receive
# processing after the driver, for skbs).
tune_dev() {
  local ns=$1 dev=$2 cpu=$3
  in_ns "$ns" ethtool -K "$dev" gro on tx off >/dev/null
  in_ns "$ns" sh -c "echo $(printf '%x' $((1 << cpu))) > /sys/class/net/$dev/queues/rx-0/rps_cpus"
}

topology_up() {
  local ns
  topology_down
  for ns in "$NS_GEN" "$NS_GW" "$NS_BE"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # Defaults of a new namespace; said here so the host's settings do not
    # matter.
    in_ns "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
      net.ipv4.ip_forward=0
  done
  ip link add "$DEV_GEN" netns "$NS_GEN" numtxqueues 1 numrxqueues 1 address "$MAC_GEN" type veth \
    peer name "$DEV_P0" netns "$NS_GW" numtxqueues 1 numrxqueues 1 address "$MAC_P0"
  ip link add "$DEV_P1" netns "$NS_GW" numtxqueues 1 numrxqueues 1 address "$MAC_P1" type veth \
    peer name "$DEV_BE" netns "$NS_BE" numtxqueues 1 numrxqueues 1 address "$MAC_BE"

  # Generator / client.
  ip -n "$NS_GEN" addr add "$CLIENT/24" dev "$DEV_GEN"
  ip -n "$NS_GEN" link set "$DEV_GEN" up
  ip -n "$NS_GEN" route add "$VIP/32" via 198.18.0.1
  ip -n "$NS_GEN" neigh replace 198.18.0.1 lladdr "$MAC_P0" dev "$DEV_GEN" nud permanent

  # Gateway.
  ip -n "$NS_GW" addr add 198.18.0.1/24 dev "$DEV_P0"
  ip -n "$NS_GW" addr add 198.18.1.1/24 dev "$DEV_P1"
  ip -n "$NS_GW" link set "$DEV_P0" up
  ip -n "$NS_GW" link set "$DEV_P1" up
  ip -n "$NS_GW" route add "$FLOOD_NET" via "$CLIENT"
  ip -n "$NS_GW" neigh replace "$CLIENT" lladdr "$MAC_GEN" dev "$DEV_P0" nud permanent
  local b
  for b in "${BACKENDS[@]}"; do
    ip -n "$NS_GW" neigh replace "$b" lladdr "$MAC_BE" dev "$DEV_P1" nud permanent
  done

  # Backend host: the three backends' addresses, and the VIP itself for the
  # forward-only variant, where nothing translates it.
  for b in "${BACKENDS[@]}"; do
    ip -n "$NS_BE" addr add "$b/24" dev "$DEV_BE"
  done
  ip -n "$NS_BE" addr add "$VIP/32" dev lo
  ip -n "$NS_BE" link set "$DEV_BE" up
  ip -n "$NS_BE" route add 198.18.0.0/22 via 198.18.1.1 src "${BACKENDS[0]}"
  ip -n "$NS_BE" route add "$FLOOD_NET" via 198.18.1.1
  ip -n "$NS_BE" neigh replace 198.18.1.1 lladdr "$MAC_P1" dev "$DEV_BE" nud permanent
  ip -n "$NS_BE" link set dev "$DEV_BE" xdpdrv obj "$RUN/sink.o" sec xdp

  tune_dev "$NS_GEN" "$DEV_GEN" "$GEN_CPU"
  tune_dev "$NS_GW" "$DEV_P0" "$GW_CPU"
  tune_dev "$NS_GW" "$DEV_P1" "$GW_CPU"
  tune_dev "$NS_BE" "$DEV_BE" "$GEN_CPU"
}

# Starts a command in a namespace, in the background, on a CPU ("any": not
# pinned), at nice -20; records its PID for topology_down and leaves it in
# SPAWNED_PID.
# (Not in a $(...): the process must be a child of the harness's shell.)
spawn() {
  local ns=$1 cpu=$2 logfile=$3
  shift 3
  if [ "$cpu" = any ]; then
    ip netns exec "$ns" nice -n -20 "$@" >"$logfile" 2>&1 &
  else
    ip netns exec "$ns" nice -n -20 taskset -c "$cpu" "$@" >"$logfile" 2>&1 &
  fi
  SPAWNED_PID=$!
  STARTED_PIDS+=("$SPAWNED_PID")
}

# The backends' services: the UDP echo and nginx, for the whole run.
backends_up() {
  local binds=("$VIP:$ECHO_PORT") b
  for b in "${BACKENDS[@]}"; do
    binds+=("$b:$ECHO_BACKEND_PORT")
  done
  spawn "$NS_BE" "$GEN_CPU" "$RUN/echo.log" "$E2E_UDP" echo "${binds[@]}" --seconds 7200
  sed -e "s|@RUNDIR@|$RUN|g" "$E2E/nginx.conf.in" >"$RUN/nginx.conf"
  mkdir -p "$RUN"/nginx-{body,proxy,fastcgi,uwsgi,scgi}
  spawn "$NS_BE" "$GEN_CPU" "$RUN/nginx.log" nginx -p "$RUN" -c "$RUN/nginx.conf"
  local i
  for i in $(seq 50); do
    in_ns "$NS_BE" curl -sf --max-time 1 "http://${BACKENDS[0]}:8080/" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  log "nginx did not come up: $(cat "$RUN/nginx.log" "$RUN/nginx-error.log" 2>/dev/null)"
  return 1
}
