# shellcheck shell=bash
# The demo topology in network namespaces: a client, the gateway box, a
# backend L2 segment and three backend microservices. Sourced by
# scripts/demo.sh; every address and MAC is the one configs/demo.toml names.
#
#   client ─ eth0 ══ fg-client ─ gateway ─ fg-backend ══ gw ┐
#   198.18.0.2                (flowgate)                 br0 (lan) ─ b1 ══ eth0 ─ backend 1 198.18.1.11
#   2001:2::2                                                      ─ b2 ══ eth0 ─ backend 2 198.18.1.12
#                                                                  ─ b3 ══ eth0 ─ backend 3 198.18.1.13
#
# The gateway namespace has IP forwarding off: whatever reaches a VIP or
# comes back from a backend crosses the box only because flowgate moves it.
#
# Namespace names: "$FG_TOPO-client", "-gw", "-lan", "-b1", "-b2", "-b3".

# shellcheck source=scripts/lib/netns.sh
source "$(dirname "${BASH_SOURCE[0]}")/netns.sh"
# shellcheck source=scripts/lib/nginx.sh
source "$(dirname "${BASH_SOURCE[0]}")/nginx.sh"

FG_TOPO=${FG_TOPO:-fgdemo}

readonly TOPO_GW_CLIENT_MAC=02:66:67:00:00:01
readonly TOPO_GW_BACKEND_MAC=02:66:67:00:01:01
readonly TOPO_CLIENT_MAC=02:66:67:00:00:02
# Backend n (1..3): MAC 02:66:67:00:01:1n, 198.18.1.1n, and on backends 1
# and 2 also 2001:2:0:1::1n.

topo_namespaces() {
  local n
  for n in client gw lan b1 b2 b3; do echo "$FG_TOPO-$n"; done
}

# Runs a command inside one of the topology's namespaces: topo_exec gw ip a
topo_exec() {
  local ns=$1
  shift
  ip netns exec "$FG_TOPO-$ns" "$@"
}

# Removes every namespace of the topology, and first the processes running
# in them (the backends' servers, flowgate). Safe to run when nothing or
# only part of the topology exists: it is how a killed run is cleaned up.
topo_down() {
  # shellcheck disable=SC2046 # one word per namespace
  netns_remove $(topo_namespaces)
}

# Senders compute their own checksums and segment in software: a frame that
# flowgate rewrites must carry a complete checksum (with offload on, a veth
# hands over a partial one and 64 KiB super-frames).
_topo_no_offload() {
  topo_exec "$1" ethtool -K "$2" tx off tso off gso off >/dev/null 2>&1 || true
}

# The gateway's XDP fast path sends established flows' frames out of its
# veths as XDP frames, which a veth takes only when its peer receives
# through NAPI: GRO on (or an XDP program) on the peer. Without it flowgate
# sees the interface cannot take them and leaves every flow to its workers.
_topo_takes_xdp_frames() {
  topo_exec "$1" ethtool -K "$2" gro on >/dev/null 2>&1 || true
}

# Creates the whole topology. Fails (set -e) on the first command that does.
topo_up() {
  local ns n
  for ns in $(topo_namespaces); do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # No duplicate-address detection on links we build ourselves: addresses,
    # link-local ones too, are usable at once.
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
  done
  local C=$FG_TOPO-client G=$FG_TOPO-gw L=$FG_TOPO-lan

  # No forwarding by the kernel anywhere; on the gateway that is the point.
  topo_exec gw sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0

  # client ══ gateway
  ip -n "$G" link add fg-client address "$TOPO_GW_CLIENT_MAC" type veth \
    peer name eth0 netns "$C" address "$TOPO_CLIENT_MAC"
  ip -n "$C" addr add 198.18.0.2/24 dev eth0
  ip -n "$C" addr add 2001:2::2/64 dev eth0 nodad
  ip -n "$C" link set eth0 up
  _topo_no_offload client eth0
  _topo_takes_xdp_frames client eth0
  ip -n "$G" addr add 198.18.0.1/24 dev fg-client
  ip -n "$G" addr add 2001:2::1/64 dev fg-client nodad
  ip -n "$G" link set fg-client up
  # The VIPs are reached through the gateway.
  ip -n "$C" route add 198.18.100.0/24 via 198.18.0.1
  ip -n "$C" route add 2001:2:0:100::/64 via 2001:2::1

  # The backend segment: a bridge with the gateway and every backend on it.
  # No multicast snooping: with no querier it can starve neighbour discovery.
  ip -n "$L" link add br0 type bridge stp_state 0 mcast_snooping 0
  ip -n "$L" link set br0 up
  ip -n "$G" link add fg-backend address "$TOPO_GW_BACKEND_MAC" type veth \
    peer name gw netns "$L"
  ip -n "$L" link set gw master br0 up
  _topo_takes_xdp_frames lan gw
  ip -n "$G" addr add 198.18.1.1/24 dev fg-backend
  ip -n "$G" addr add 2001:2:0:1::1/64 dev fg-backend nodad
  ip -n "$G" link set fg-backend up

  for n in 1 2 3; do
    local B=$FG_TOPO-b$n
    ip -n "$L" link add "b$n" type veth peer name eth0 netns "$B" address "02:66:67:00:01:1$n"
    ip -n "$L" link set "b$n" master br0 up
    ip -n "$B" addr add "198.18.1.1$n/24" dev eth0
    if [ "$n" -le 2 ]; then
      ip -n "$B" addr add "2001:2:0:1::1$n/64" dev eth0 nodad
    fi
    ip -n "$B" link set eth0 up
    _topo_no_offload "b$n" eth0
    ip -n "$B" route add default via 198.18.1.1
    if [ "$n" -le 2 ]; then
      ip -n "$B" -6 route add default via 2001:2:0:1::1
    fi
  done
}

# Starts backend n's servers: nginx on :8080 and :8081 (IPv4 and, where the
# backend has it, IPv6) and the UDP name service on :5353. Each answers with
# its own name. Files (config, logs, pid) go under DIR/bn.
topo_start_backend() {
  local n=$1
  local dir=$2/b$n lib
  lib=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  mkdir -p "$dir/tmp"
  chmod 755 "$dir" "$dir/tmp"
  local v6=""
  [ "$n" -le 2 ] && v6="listen [::]:8080 ipv6only=on;"
  local v6b=""
  [ "$n" -le 2 ] && v6b="listen [::]:8081 ipv6only=on;"
  {
    nginx_config_head "$dir"
    cat <<EOF
  server { listen 8080; $v6 return 200 "b$n"; }
  server { listen 8081; $v6b return 200 "b$n"; }
}
EOF
  } >"$dir/nginx.conf"
  topo_exec "b$n" nginx -q -c "$dir/nginx.conf" -e "$dir/error.log"
  topo_exec "b$n" "$(topo_python)" "$lib/udp-name-server.py" "b$n" 5353 \
    >"$dir/udp.log" 2>&1 &
}

# The Python the UDP service runs on: Debian's, else whatever is on PATH.
topo_python() {
  if [ -x /usr/bin/python3 ]; then echo /usr/bin/python3; else command -v python3; fi
}

# Checks every link of the topology with one ping each way that matters
# (client ↔ gateway, gateway ↔ each backend, IPv4 and IPv6). This also
# fills the kernels' neighbour tables, so the first request does not wait
# out a lost first neighbour solicitation. Bounded: 3 tries of 1 s a ping.
topo_warm_up() {
  local from to ok i
  while read -r from to; do
    ok=""
    for i in 1 2 3; do
      if topo_exec "$from" ping -c 1 -W 1 "$to" >/dev/null 2>&1; then ok=1; break; fi
    done
    [ -n "$ok" ] || { echo "topology: $from cannot reach $to" >&2; return 1; }
  done <<'PAIRS'
client 198.18.0.1
client 2001:2::1
gw 198.18.1.11
gw 198.18.1.12
gw 198.18.1.13
gw 2001:2:0:1::11
gw 2001:2:0:1::12
b1 198.18.1.1
b2 198.18.1.1
b3 198.18.1.1
b1 2001:2:0:1::1
b2 2001:2:0:1::1
PAIRS
}
