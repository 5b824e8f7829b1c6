# shellcheck shell=bash
# The fleet demo's topology in network namespaces (scripts/fleet-demo.sh):
# clients behind a router, two gateway boxes, three backends and an etcd,
# the same shape as tests/netns/fleet.rs.
#
#   client ── router ─┬─ r-g1 ══ fgw-c gw1 fgw-b ══ g1 ┐
#   198.18.60.10-17   ├─ r-g2 ══ fgw-c gw2 fgw-b ══ g2 ┼─ br0 (lan) ─ b1 198.18.63.11
#                     └─ r-b ═══════════════════ r ────┘            ─ b2 198.18.63.12
#                                                                   ─ b3 198.18.63.13
#   gw1 mgmt 198.18.64.11 ┐
#   gw2 mgmt 198.18.64.12 ┴─ br0 (etcd) 198.18.64.1: etcd on :2379
#
# The router forwards with a layer-4 multipath hash; its routes to the
# VIPs, and those of the backends' replies (kernel table 100, for what
# comes in on r-b), come from BGP. The gateways' kernels forward nothing:
# flowgate does. Only 198.18.0.0/15 is used.
#
# Namespace names: "$FG_FLEET-client", "-router", "-gw1", "-gw2", "-lan",
# "-b1", "-b2", "-b3", "-etcd".

# shellcheck source=scripts/lib/netns.sh
source "$(dirname "${BASH_SOURCE[0]}")/netns.sh"
# shellcheck source=scripts/lib/nginx.sh
source "$(dirname "${BASH_SOURCE[0]}")/nginx.sh"

FG_FLEET=${FG_FLEET:-fgfleet}

fleet_namespaces() {
  local n
  for n in client router gw1 gw2 lan b1 b2 b3 etcd; do echo "$FG_FLEET-$n"; done
}

# Runs a command inside one of the topology's namespaces: fleet_exec gw1 ip a
fleet_exec() {
  local ns=$1
  shift
  ip netns exec "$FG_FLEET-$ns" "$@"
}

# Client address i (0..7).
fleet_client() { echo "198.18.60.$((10 + $1))"; }
# Gateway g's (1, 2) address towards the router, and the router's towards it.
fleet_gw_front() { echo "198.18.6$1.2"; }
fleet_router_towards() { echo "198.18.6$1.1"; }

# Removes every namespace of the topology, and first the processes running
# in them (flowgate, BIRD, etcd, nginx). Safe when nothing or only part of
# the topology exists: it is how a killed run is cleaned up.
fleet_down() {
  # shellcheck disable=SC2046 # one word per namespace
  netns_remove $(fleet_namespaces)
}

# Senders compute their own checksums and segment in software (a frame
# flowgate rewrites must carry a complete checksum).
_fleet_no_offload() {
  fleet_exec "$1" ethtool -K "$2" tx off tso off gso off >/dev/null 2>&1 || true
}

# A veth pair: NS1's DEV1 ══ NS2's DEV2, both up.
_fleet_veth() {
  ip -n "$FG_FLEET-$1" link add "$2" type veth peer name "$4" netns "$FG_FLEET-$3"
  ip -n "$FG_FLEET-$1" link set "$2" up
  ip -n "$FG_FLEET-$3" link set "$4" up
}

# A bridge br0 in NS, up, no STP, no multicast snooping.
_fleet_bridge() {
  ip -n "$FG_FLEET-$1" link add br0 type bridge stp_state 0 mcast_snooping 0
  ip -n "$FG_FLEET-$1" link set br0 up
}

# Creates the whole topology. Fails (set -e) on the first command that does.
fleet_up() {
  local ns g n i
  for ns in $(fleet_namespaces); do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 \
      net.ipv6.conf.default.accept_dad=0 net.ipv4.conf.all.rp_filter=0 \
      net.ipv4.conf.default.rp_filter=0
  done
  fleet_exec router sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1

  # clients ══ router
  _fleet_veth router r-c client eth0
  ip -n "$FG_FLEET-router" addr add 198.18.60.1/24 dev r-c
  for i in 0 1 2 3 4 5 6 7; do
    ip -n "$FG_FLEET-client" addr add "$(fleet_client "$i")/24" dev eth0
  done
  ip -n "$FG_FLEET-client" route add default via 198.18.60.1
  _fleet_no_offload client eth0
  _fleet_no_offload router r-c

  # the backends' segment, with the router on it
  _fleet_bridge lan
  _fleet_veth router r-b lan r
  ip -n "$FG_FLEET-lan" link set r master br0
  ip -n "$FG_FLEET-router" addr add 198.18.63.1/24 dev r-b
  _fleet_no_offload router r-b
  # What the backends send the clients is routed by table 100 (BGP's).
  ip -n "$FG_FLEET-router" rule add iif r-b lookup 100 pref 100

  # etcd's segment
  _fleet_bridge etcd
  ip -n "$FG_FLEET-etcd" addr add 198.18.64.1/24 dev br0

  for g in 1 2; do
    fleet_exec "gw$g" sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0
    _fleet_veth "gw$g" fgw-c router "r-g$g"
    ip -n "$FG_FLEET-gw$g" addr add "$(fleet_gw_front "$g")/24" dev fgw-c
    ip -n "$FG_FLEET-router" addr add "$(fleet_router_towards "$g")/24" dev "r-g$g"
    ip -n "$FG_FLEET-gw$g" route add default via "$(fleet_router_towards "$g")"
    _fleet_no_offload router "r-g$g"
    _fleet_veth "gw$g" fgw-b lan "g$g"
    ip -n "$FG_FLEET-lan" link set "g$g" master br0
    ip -n "$FG_FLEET-gw$g" addr add "198.18.63.$((1 + g))/24" dev fgw-b
    _fleet_veth "gw$g" mgmt etcd "g$g"
    ip -n "$FG_FLEET-etcd" link set "g$g" master br0
    ip -n "$FG_FLEET-gw$g" addr add "198.18.64.1$g/24" dev mgmt
  done

  for n in 1 2 3; do
    _fleet_veth lan "b$n" "b$n" eth0
    ip -n "$FG_FLEET-lan" link set "b$n" master br0
    ip -n "$FG_FLEET-b$n" addr add "198.18.63.1$n/24" dev eth0
    ip -n "$FG_FLEET-b$n" route add default via 198.18.63.1
    _fleet_no_offload "b$n" eth0
  done
}

# One ping over every link that matters, which also fills the neighbour
# tables. Bounded: 3 tries of 1 s a ping.
fleet_warm_up() {
  local from to ok
  while read -r from to; do
    ok=""
    for _ in 1 2 3; do
      if fleet_exec "$from" ping -c 1 -W 1 "$to" >/dev/null 2>&1; then ok=1; break; fi
    done
    [ -n "$ok" ] || { echo "topology: $from cannot reach $to" >&2; return 1; }
  done <<'PAIRS'
client 198.18.60.1
router 198.18.61.2
router 198.18.62.2
gw1 198.18.61.1
gw2 198.18.62.1
gw1 198.18.63.11
gw1 198.18.63.12
gw1 198.18.63.13
gw2 198.18.63.11
gw2 198.18.63.12
gw2 198.18.63.13
gw1 198.18.64.1
gw2 198.18.64.1
b1 198.18.63.1
b2 198.18.63.1
b3 198.18.63.1
PAIRS
}

# Starts backend n's nginx: on 8080 and 8081, `/` answers its name and
# `/big` sends a file of BYTES bytes at RATE bytes a second (nginx's
# limit_rate), so that a transfer lasts as long as the demo wants; every
# answer carries `X-Backend: bN`. Files go under DIR/bn.
fleet_start_backend() {
  local n=$1 bytes=$3 rate=$4
  local dir=$2/b$n
  mkdir -p "$dir/tmp" "$dir/www"
  chmod 755 "$dir" "$dir/tmp" "$dir/www"
  head -c "$bytes" /dev/zero | tr '\0' x >"$dir/www/big"
  chmod 644 "$dir/www/big"
  {
    nginx_config_head "$dir"
    cat <<EOF
  server {
    listen 8080;
    listen 8081;
    root $dir/www;
    add_header X-Backend b$n always;
    location = / { return 200 "b$n\n"; }
    location = /big { limit_rate $rate; }
  }
}
EOF
  } >"$dir/nginx.conf"
  fleet_exec "b$n" nginx -q -c "$dir/nginx.conf" -e "$dir/error.log"
}

# BIRD's configs, from the templates beside this file (shared with
# tests/netns/fleet.rs, which fills in the same names).
fleet_lib_dir=$(dirname "${BASH_SOURCE[0]}")

# The router's, for VIP $1: sessions with both gateways, the replies' route.
fleet_router_bird() {
  sed -e "s|@VIP@|$1|g" -e "s|@CLIENT_NET@|198.18.60.0/24|g" \
    -e "s|@ROUTER_TOWARDS_1@|$(fleet_router_towards 1)|g" \
    -e "s|@ROUTER_TOWARDS_2@|$(fleet_router_towards 2)|g" \
    -e "s|@GW_FRONT_1@|$(fleet_gw_front 1)|g" -e "s|@GW_FRONT_2@|$(fleet_gw_front 2)|g" \
    "$fleet_lib_dir/fleet-bird-router.conf"
}

# Gateway $1's: it announces the VIPs flowgate keeps on its device.
fleet_gateway_bird() {
  sed -e "s|@GW_FRONT@|$(fleet_gw_front "$1")|g" \
    -e "s|@ROUTER_TOWARDS@|$(fleet_router_towards "$1")|g" \
    "$fleet_lib_dir/fleet-bird-gateway.conf"
}
