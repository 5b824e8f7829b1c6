# shellcheck shell=bash
# The gateways under test and the three measurements; sourced by
# scripts/bench-e2e.sh after topology.sh.
#
#   kernel    the Linux kernel forwarding, nftables DNAT + conntrack
#             (kernel-nat.nft.in, kube-proxy's nftables shape)
#   flowgate  flowgate run: NAT + Maglev + connection tracking
#   forward   flowgate run --forward-only: AF_XDP in, AF_XDP out, nothing
#             else (the I/O floor)
#   generator no gateway: the XDP sink on fgb-p0 itself, to show what the
#             generator can send (pps only)

FLOWGATE_PID=""

# Counter of a device in a namespace.
counter() { in_ns "$1" cat "/sys/class/net/$2/statistics/$3"; }

has_xdp() { ip -n "$1" -d link show dev "$2" | grep -q 'prog/xdp'; }

# Waits (at most ~10 s) until a UDP round trip through the gateway works.
wait_for_path() {
  local i
  for i in $(seq 20); do
    if in_ns "$NS_GEN" "$E2E_UDP" rtt --to "$VIP:$ECHO_PORT" --count 5 --warmup 0 \
      --timeout-ms 200 --seconds 2 >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.5
  done
  return 1
}

flowgate_config() {
  sed -e "s|@P0@|$DEV_P0|g" -e "s|@P1@|$DEV_P1|g" -e "s|@P0_MAC@|$MAC_P0|g" \
    -e "s|@P1_MAC@|$MAC_P1|g" -e "s|@GEN_MAC@|$MAC_GEN|g" -e "s|@BE_MAC@|$MAC_BE|g" \
    -e "s|@CORE@|$GW_CPU|g" -e "s|@IDLE@|$IDLE|g" -e "s|@RUNDIR@|$RUN|g" \
    "$E2E/flowgate.toml.in" >"$RUN/flowgate.toml"
}

# variant_up NAME RUN_INDEX: makes the gateway NAME forward; fails with a
# message if it does not.
variant_up() {
  local variant=$1 index=$2
  case "$variant" in
    kernel)
      in_ns "$NS_GW" sysctl -qw net.ipv4.ip_forward=1
      in_ns "$NS_GW" nft -f "$E2E/kernel-nat.nft.in"
      ;;
    flowgate | forward)
      local args=(run --config "$RUN/flowgate.toml" --cores "$GW_CPU")
      [ "$variant" = forward ] && args+=(--forward-only)
      local logfile="$RUN/flowgate-$variant-$index.log"
      spawn "$NS_GW" any "$logfile" "$FLOWGATE" "${args[@]}"
      FLOWGATE_PID=$SPAWNED_PID
      local i
      for i in $(seq 100); do
        kill -0 "$FLOWGATE_PID" 2>/dev/null || break
        has_xdp "$NS_GW" "$DEV_P0" && has_xdp "$NS_GW" "$DEV_P1" && break
        sleep 0.1
      done
      if ! kill -0 "$FLOWGATE_PID" 2>/dev/null; then
        local status=0
        wait "$FLOWGATE_PID" 2>/dev/null || status=$?
        FLOWGATE_PID=""
        log "$variant: flowgate exited at start with $status: $(tail -5 "$logfile")"
        return 1
      fi
      ;;
    generator)
      ip -n "$NS_GW" link set dev "$DEV_P0" xdpdrv obj "$RUN/sink.o" sec xdp
      return 0
      ;;
    *)
      log "unknown variant $variant"
      return 1
      ;;
  esac
  if ! wait_for_path; then
    log "$variant: no UDP round trip through the gateway after 10 s"
    [ -n "$FLOWGATE_PID" ] && log "flowgate log: $(tail -5 "$RUN/flowgate-$variant-$index.log")"
    return 1
  fi
}

# variant_down NAME: stops it and checks that nothing is left behind.
variant_down() {
  local variant=$1 ok=0
  case "$variant" in
    kernel)
      in_ns "$NS_GW" nft delete table ip fgb_nat 2>/dev/null || true
      in_ns "$NS_GW" sysctl -qw net.ipv4.ip_forward=0
      ;;
    flowgate | forward)
      if [ -n "$FLOWGATE_PID" ]; then
        kill -INT "$FLOWGATE_PID" 2>/dev/null || true
        local i status=0
        for i in $(seq 100); do
          kill -0 "$FLOWGATE_PID" 2>/dev/null || break
          sleep 0.1
        done
        if kill -0 "$FLOWGATE_PID" 2>/dev/null; then
          log "$variant: flowgate still running 10 s after SIGINT; killing it"
          kill -KILL "$FLOWGATE_PID" 2>/dev/null || true
          ok=1
        fi
        wait "$FLOWGATE_PID" 2>/dev/null || status=$?
        if [ "$status" != 0 ]; then
          log "$variant: flowgate exited with $status after SIGINT"
          ok=1
        fi
        FLOWGATE_PID=""
      fi
      ;;
  esac
  local dev
  for dev in "$DEV_P0" "$DEV_P1"; do
    if has_xdp "$NS_GW" "$dev"; then
      [ "$variant" = generator ] || {
        log "$variant: an XDP program is still attached to $dev after stopping; detaching it"
        ok=1
      }
      ip -n "$NS_GW" link set dev "$dev" xdp off
    fi
  done
  return $ok
}

# Jiffies of GW_CPU from /proc/stat: "user+nice system softirq idle+iowait
# total".
gw_cpu_ticks() {
  awk -v cpu="cpu$GW_CPU" '$1 == cpu {
    total = 0; for (i = 2; i <= NF; i++) total += $i
    print $2 + $3, $4, $8, $5 + $6, total }' /proc/stat
}

# Frames GW_CPU's backlog dropped so far (RPS queue full: the kernel's
# forwarding could not keep up), from /proc/net/softnet_stat (hex).
backlog_drops() {
  local hex
  hex=$(awk -v n=$((GW_CPU + 1)) 'NR == n { print $2 }' /proc/net/softnet_stat)
  echo $((16#${hex:-0}))
}

# flowgate's counters from its Prometheus endpoint (flowgate.toml.in puts
# it on the gateway namespace's loopback), each summed over workers and
# sockets: "idle_polls rx_ring_full rx_dropped" (frames the XDP program
# could not put on a socket's full receive ring; frames a socket dropped
# for want of a free frame), or "nan nan nan" when flowgate is not running.
flowgate_counters() {
  if [ -z "$FLOWGATE_PID" ]; then
    echo "nan nan nan"
    return
  fi
  in_ns "$NS_GW" curl -s --max-time 2 http://127.0.0.1:9187/metrics | awk '
    /^flowgate_idle_polls_total/ { idle += $NF }
    /^flowgate_xsk_rx_ring_full_total/ { full += $NF }
    /^flowgate_xsk_rx_dropped_total/ { dropped += $NF }
    END { printf "%.0f %.0f %.0f\n", idle, full, dropped }'
}

# Jiffies (user system) of flowgate's worker threads, or "0 0".
worker_ticks() {
  local t u=0 s=0
  if [ -n "$FLOWGATE_PID" ]; then
    for t in /proc/"$FLOWGATE_PID"/task/*; do
      case "$(cat "$t/comm" 2>/dev/null)" in
        fg-worker-*)
          read -r tu ts < <(awk '{ print $14, $15 }' "$t/stat")
          u=$((u + tu)) s=$((s + ts))
          ;;
      esac
    done
  fi
  echo "$u $s"
}

# measure_pps VARIANT: floods for WARMUP + PPS_SECONDS and prints
# "offered delivered user sys softirq idle worker_user worker_sys
# backlog_drops idle_polls rx_ring_full rx_dropped":
# offered is what the generator made (packets/s over its whole run),
# delivered what reached the sink (packets/s over the last PPS_SECONDS),
# then how GW_CPU spent those seconds (percent; user and system include
# other processes of the machine), flowgate's workers' share of it, and
# the frames per second GW_CPU's backlog dropped; for flowgate, its
# workers' empty polls per second and the frames per second its sockets
# refused (receive ring full; no free frame).
measure_pps() {
  local variant=$1 sink_ns=$NS_BE sink_dev=$DEV_BE
  if [ "$variant" = generator ]; then
    sink_ns=$NS_GW
    sink_dev=$DEV_P0
  fi
  # The generator at nice 0 (spawn's -20, +20): the gateway's receive
  # softirq on GEN_CPU, when deferred to ksoftirqd (nice 0), then gets its
  # fair half of the core instead of almost none.
  spawn "$NS_GEN" "$GEN_CPU" "$RUN/xdpgen.log" nice -n 20 "$RUN/xdpgen" --obj "$RUN/xdpgen.bpf.o" \
    --dev "$DEV_GEN" --src-mac "$MAC_GEN" --dst-mac "$MAC_P0" --src "${FLOOD_NET%/*}" \
    --dst "$VIP" --dport "$FLOOD_PORT" --flows "$FLOWS" --ports "$FLOOD_PORTS" \
    --seconds "$((WARMUP + PPS_SECONDS + 1))"
  local pid=$SPAWNED_PID
  sleep "$WARMUP"
  local t0 rx0 cpu0 w0 d0 f0 t1 rx1 cpu1 w1 d1 f1
  t0=$(date +%s.%N)
  rx0=$(counter "$sink_ns" "$sink_dev" rx_packets)
  cpu0=$(gw_cpu_ticks)
  w0=$(worker_ticks)
  d0=$(backlog_drops)
  f0=$(flowgate_counters)
  sleep "$PPS_SECONDS"
  t1=$(date +%s.%N)
  rx1=$(counter "$sink_ns" "$sink_dev" rx_packets)
  cpu1=$(gw_cpu_ticks)
  w1=$(worker_ticks)
  d1=$(backlog_drops)
  f1=$(flowgate_counters)
  wait "$pid" || {
    log "xdpgen failed: $(cat "$RUN/xdpgen.log")"
    return 1
  }
  # Let the gateway drain before the next measurement.
  sleep 0.5
  local offered
  offered=$(sed -n 's/.* pps=\([0-9]*\).*/\1/p' "$RUN/xdpgen.log")
  awk -v t0="$t0" -v t1="$t1" -v rx=$((rx1 - rx0)) -v offered="${offered:-0}" \
    -v c0="$cpu0" -v c1="$cpu1" -v w0="$w0" -v w1="$w1" -v drops=$((d1 - d0)) -v f0="$f0" -v f1="$f1" 'BEGIN {
      split(c0, a); split(c1, b); split(w0, x); split(w1, y)
      total = b[5] - a[5]; if (total <= 0) total = 1
      printf "%.0f %.0f", offered, rx / (t1 - t0)
      for (i = 1; i <= 4; i++) printf " %.1f", 100 * (b[i] - a[i]) / total
      printf " %.1f %.1f", 100 * (y[1] - x[1]) / total, 100 * (y[2] - x[2]) / total
      printf " %.0f", drops / (t1 - t0)
      split(f0, p); split(f1, q)
      if (f0 ~ /nan/ || f1 ~ /nan/) printf " nan nan nan\n"
      else printf " %.0f %.0f %.0f\n", (q[1] - p[1]) / (t1 - t0), (q[2] - p[2]) / (t1 - t0),
        (q[3] - p[3]) / (t1 - t0)
    }'
}

# measure_rtt: prints "p50_us p99_us lost".
measure_rtt() {
  local line
  line=$(in_ns "$NS_GEN" nice -n -20 taskset -c "$GEN_CPU" "$E2E_UDP" rtt --to "$VIP:$ECHO_PORT" \
    --count "$RTT_COUNT" --warmup 200 --timeout-ms 100 --seconds 120) || {
    log "rtt failed: $line"
    return 1
  }
  echo "$line" >>"$RUN/rtt.log"
  echo "$line" | awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
    END { print v["p50_us"], v["p99_us"], v["lost"] }'
}

# measure_http: prints requests/s of wrk through the gateway (keep-alive
# connections to nginx behind the VIP).
measure_http() {
  local out
  out=$(in_ns "$NS_GEN" nice -n -20 taskset -c "$GEN_CPU" timeout "$((HTTP_SECONDS + 30))" \
    wrk -t1 -c"$HTTP_CONNECTIONS" -d"${HTTP_SECONDS}s" "http://$VIP/") || {
    log "wrk failed: $out"
    return 1
  }
  echo "$out" >>"$RUN/wrk.log"
  if echo "$out" | grep -q 'Non-2xx'; then
    log "wrk saw non-2xx replies: $out"
    return 1
  fi
  echo "$out" | awk '/^Requests\/sec:/ { printf "%.0f\n", $2 }'
}
