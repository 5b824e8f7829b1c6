# shellcheck shell=bash
# The gateways under test and the three measurements; sourced by
# scripts/bench-e2e.sh after topology.sh.
#
#   kernel    the Linux kernel forwarding, nftables DNAT + conntrack
#             (kernel-nat.nft.in, kube-proxy's nftables shape), with a
#             tuned backlog (kernel_tune)
#   flowgate  flowgate run, fast_path = "xdp": established flows forwarded
#             by its XDP program, the rest by the workers
#   userspace flowgate run, fast_path = "off": every frame through a worker
#             (NAT + Maglev + connection tracking over AF_XDP)
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

# flowgate.toml (fast path on) and flowgate-userspace.toml (off).
flowgate_config() {
  local fast name
  for fast in xdp off; do
    name=flowgate idle=$FAST_IDLE
    [ "$fast" = off ] && name=flowgate-userspace idle=$IDLE
    sed -e "s|@P0@|$DEV_P0|g" -e "s|@P1@|$DEV_P1|g" -e "s|@P0_MAC@|$MAC_P0|g" \
      -e "s|@P1_MAC@|$MAC_P1|g" -e "s|@GEN_MAC@|$MAC_GEN|g" -e "s|@BE_MAC@|$MAC_BE|g" \
      -e "s|@CORE@|$GW_CPU|g" -e "s|@IDLE@|$idle|g" -e "s|@RUNDIR@|$RUN|g" \
      -e "s|@FAST_PATH@|$fast|g" "$E2E/flowgate.toml.in" |
      awk -v extra="$DAEMON_EXTRA" '{ print } /^\[daemon\]$/ && extra != "" { printf "%s", extra }' \
        >"$RUN/$name.toml"
  done
}

# The kernel's receive backlog and budgets, global sysctls (not per
# namespace), raised for the kernel variant so that RPS's backlog on
# GW_CPU, 1000 frames by default, is not what drops its frames, and one
# softirq round may do more; the values before are kept in
# $RUN/sysctl.saved and put back by kernel_untune (and by the harness's
# exit trap). Not net.core.dev_weight: a backlog poll of more than 256
# frames overflows the sink's veth ring (256) before its NAPI runs.
KERNEL_TUNING=(net.core.netdev_max_backlog=32768 net.core.netdev_budget=1000
  net.core.netdev_budget_usecs=8000)
kernel_tune() {
  local kv key
  [ -s "$RUN/sysctl.saved" ] || for kv in "${KERNEL_TUNING[@]}"; do
    key=${kv%%=*}
    echo "$key=$(sysctl -n "$key")"
  done >"$RUN/sysctl.saved"
  sysctl -qw "${KERNEL_TUNING[@]}"
}
kernel_untune() {
  [ -s "${RUN:-}/sysctl.saved" ] || return 0
  # shellcheck disable=SC2046
  sysctl -qw $(cat "$RUN/sysctl.saved")
  rm -f "$RUN/sysctl.saved"
}

# variant_up NAME RUN_INDEX: makes the gateway NAME forward; fails with a
# message if it does not.
variant_up() {
  local variant=$1 index=$2
  case "$variant" in
    kernel)
      kernel_tune
      in_ns "$NS_GW" sysctl -qw net.ipv4.ip_forward=1
      in_ns "$NS_GW" nft -f "$E2E/kernel-nat.nft.in"
      ;;
    flowgate | userspace | forward)
      local config=$RUN/flowgate.toml
      [ "$variant" = userspace ] && config=$RUN/flowgate-userspace.toml
      local args=(run --config "$config" --cores "$GW_CPU")
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
      kernel_untune
      ;;
    flowgate | userspace | forward)
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
# sockets: "idle_polls rx_ring_full rx_dropped tx_wakeups" (frames the
# XDP program could not put on a socket's full receive ring; frames a
# socket dropped for want of a free frame; transmit wakeups, each a
# sendto), or "nan nan nan nan" when flowgate is not running.
flowgate_counters() {
  if [ -z "$FLOWGATE_PID" ]; then
    echo "nan nan nan nan"
    return
  fi
  in_ns "$NS_GW" curl -s --max-time 2 http://127.0.0.1:9187/metrics | awk '
    /^flowgate_idle_polls_total/ { idle += $NF }
    /^flowgate_xsk_rx_ring_full_total/ { full += $NF }
    /^flowgate_xsk_rx_dropped_total/ { dropped += $NF }
    /^flowgate_xsk_tx_wakeups_total/ { wakeups += $NF }
    END { printf "%.0f %.0f %.0f %.0f\n", idle, full, dropped, wakeups }'
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

# Where the flood ends for VARIANT: the sink's NS/DEV.
sink_of() {
  if [ "$1" = generator ]; then echo "$NS_GW/$DEV_P0"; else echo "$NS_BE/$DEV_BE"; fi
}

# snapshot VARIANT: one line of every counter a measurement takes the
# difference of (fields as named in `delta`).
snapshot() {
  local sink bpf
  sink=$(sink_of "$1")
  bpf=$(python3 "$E2E/bpfstat.py" "sink:$sink@$GW_CPU" "prog:$sink" "prog:$NS_GW/$DEV_P0" \
    "prog:$NS_GW/$DEV_P1") || return 1
  echo "$(date +%s.%N) $bpf $(gw_cpu_ticks) $(worker_ticks) $(backlog_drops) $(flowgate_counters)"
}

# delta VARIANT SNAPSHOT0 SNAPSHOT1 SENT: the measurement between two
# snapshots, as name=value pairs:
#   pps          frames/s delivered correctly (translated, or for forward
#                and generator untouched) over the interval
#   wrong_pps    frames/s that reached the sink otherwise (an error)
#   loss_ppm     1e6 x (SENT - delivered) / SENT (when SENT is given)
#   gw_*_pct     how GW_CPU spent the interval (/proc/stat)
#   worker_*_pct flowgate's workers' threads (/proc/PID/task/*/stat)
#   xdp_ns_pp    ns per frame the gateway's XDP programs ran (bpf_stats)
#   sink_ns_pp   ns per frame of the sink's XDP drop
#   core_pct     the gateway's CPU time as % of one core: for flowgate, its
#                workers' threads plus its XDP programs' run time (which
#                runs on the sender's core on veth); for the kernel, GW_CPU's
#                softirq time (its forwarding); in both less the sink's run
#                time on GW_CPU (sink frames counted there x its ns/frame)
#   mpps_per_core  pps / core_pct x 100 / 1e6: Mpps per core-second
#   backlog_drop_pps, idle_polls_ps, xsk_rx_ring_full_pps, xsk_rx_dropped_pps
#   frames_per_tx_wakeup  frames sent by flowgate's workers per sendto
delta() {
  local variant=$1 good=2
  case "$variant" in forward | generator) good=3 ;; esac
  awk -v s0="$2" -v s1="$3" -v sent="${4:-}" -v good="$good" -v variant="$variant" \
    -v hz="$(getconf CLK_TCK)" 'BEGIN {
      n = split(s0, a); split(s1, b)
      dt = b[1] - a[1]; if (dt <= 0) dt = 1e-9
      for (i = 2; i <= n; i++) d[i] = b[i] - a[i]
      delivered = d[good]; wrong = d[2] + d[3] + d[4] - delivered
      printf "pps=%.0f wrong_pps=%.0f", delivered / dt, wrong / dt
      if (sent != "" && sent > 0) printf " loss_ppm=%.1f", 1e6 * (sent - delivered) / sent
      total = d[16]; if (total <= 0) total = 1
      printf " gw_user_pct=%.1f gw_sys_pct=%.1f gw_softirq_pct=%.1f gw_idle_pct=%.1f", \
        100 * d[12] / total, 100 * d[13] / total, 100 * d[14] / total, 100 * d[15] / total
      printf " worker_user_pct=%.1f worker_sys_pct=%.1f", 100 * d[17] / total, 100 * d[18] / total
      sink_pp = d[7] > 0 ? d[6] / d[7] : 0
      printf " sink_ns_pp=%.1f", sink_pp
      if (d[9] + d[11] > 0 && variant != "generator")
        printf " xdp_ns_pp=%.1f xdp_runs_ps=%.0f", (d[8] + d[10]) / (d[9] + d[11]), (d[9] + d[11]) / dt
      printf " backlog_drop_pps=%.0f", d[19] / dt
      if (variant == "kernel") core = d[14] / hz
      else if (variant != "generator") core = (d[17] + d[18]) / hz + (d[8] + d[10]) / 1e9
      else core = 0
      core -= sink_pp * d[5] / 1e9
      if (core > 0) printf " core_pct=%.1f mpps_per_core=%.4f", 100 * core / dt, delivered / core / 1e6
      if (s0 !~ /nan/ && s1 !~ /nan/)
        printf " idle_polls_ps=%.0f xsk_rx_ring_full_pps=%.0f xsk_rx_dropped_pps=%.0f", \
          d[20] / dt, d[21] / dt, d[22] / dt
      if (s0 !~ /nan/ && s1 !~ /nan/ && d[23] > 0)
        printf " frames_per_tx_wakeup=%.1f", delivered / d[23]
      printf "\n"
    }'
}

# xdpgen_args: the generator's flood, without --seconds or pacing.
xdpgen_args() {
  echo --obj "$RUN/xdpgen.bpf.o" --dev "$DEV_GEN" --src-mac "$MAC_GEN" --dst-mac "$MAC_P0" \
    --src "${FLOOD_NET%/*}" --dst "$VIP" --dport "$FLOOD_PORT" --flows "$FLOWS" --ports "$FLOOD_PORTS"
}

# start_generator ARGS...: the generator with xdpgen_args and ARGS, at
# nice 0 (spawn's -20, +20): the gateway's receive softirq on GEN_CPU,
# when deferred to ksoftirqd, then gets its fair half of the core instead
# of almost none.
start_generator() {
  # shellcheck disable=SC2046
  spawn "$NS_GEN" "$GEN_CPU" "$RUN/xdpgen.log" nice -n 20 "$RUN/xdpgen" $(xdpgen_args) "$@"
}

# measure_flood VARIANT: floods (the generator as fast as it can) for
# WARMUP + PPS_SECONDS and prints `delta` over the last PPS_SECONDS, with
# offered_pps= (what the generator made over its whole run) in front.
measure_flood() {
  local variant=$1 s0 s1 pid offered
  start_generator --seconds "$((WARMUP + PPS_SECONDS + 1))"
  pid=$SPAWNED_PID
  sleep "$WARMUP"
  s0=$(snapshot "$variant")
  sleep "$PPS_SECONDS"
  s1=$(snapshot "$variant")
  wait "$pid" || {
    log "xdpgen failed: $(cat "$RUN/xdpgen.log")"
    return 1
  }
  # Let the gateway drain before the next measurement.
  sleep 0.5
  offered=$(sed -n 's/.* pps=\([0-9]*\).*/\1/p' "$RUN/xdpgen.log")
  grep -q 'via=packet' "$RUN/xdpgen.log" &&
    log "the kernel refuses live frames: the generator sent through a packet socket (a lower ceiling)"
  echo "offered_pps=${offered:-0} $(delta "$variant" "$s0" "$s1")"
}

# trial VARIANT PPS: offers PPS for TRIAL_SECONDS, evenly (xdpgen
# --even: each frame at its time), then waits for the gateway to drain, and prints
# "offered_pps=R sent=N " and `delta` over the whole trial (loss_ppm
# against what the generator sent).
trial() {
  local variant=$1 pps=$2 s0 s1 sent seconds
  s0=$(snapshot "$variant") || return 1
  start_generator --seconds "$TRIAL_SECONDS" --pps "$pps" --even
  wait "$SPAWNED_PID" || {
    log "xdpgen failed: $(cat "$RUN/xdpgen.log")"
    return 1
  }
  sleep 0.3
  s1=$(snapshot "$variant") || return 1
  sent=$(sed -n 's/.* sent=\([0-9]*\).*/\1/p' "$RUN/xdpgen.log")
  seconds=$(sed -n 's/.* seconds=\([0-9.]*\).*/\1/p' "$RUN/xdpgen.log")
  awk -v n="${sent:-0}" -v t="${seconds:-1}" 'BEGIN { printf "offered_pps=%.0f sent=%d ", n / t, n }'
  delta "$variant" "$s0" "$s1" "${sent:-0}"
}

# Value of NAME in a line of name=value pairs.
field() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p"; }

# search VARIANT FLOOD_PPS CEILING: the highest offered rate at which at
# most LOSS_PPM per million frames are lost (and none is wrong), by
# binary search (RFC 2544's throughput test) between 0 and CEILING (what
# the generator offered under flood), starting at FLOOD_PPS (what the
# variant delivered under flood), for at most TRIALS trials or until the
# bounds are within 2 % of each other. Each trial is logged; prints the
# passing trial's line with trials= in front, or "trials=N" if none passed.
search() {
  local variant=$1 rate=$2 hi=$3 lo=0 best="" i line loss wrong pass
  ((rate > 0 && rate <= hi)) || rate=$((hi / 2))
  for i in $(seq "$TRIALS"); do
    line=$(trial "$variant" "$rate") || return 1
    loss=$(field loss_ppm "$line")
    wrong=$(field wrong_pps "$line")
    pass=$(awk -v l="${loss:-1e9}" -v w="${wrong:-1}" -v max="$LOSS_PPM" 'BEGIN { print (l <= max && w == 0) ? 1 : 0 }')
    log "    trial $i at $rate/s: $line -> $([ "$pass" = 1 ] && echo pass || echo fail)"
    echo "$variant $rate $pass $line" >>"$RUN/trials.log"
    if [ "$pass" = 1 ]; then
      lo=$rate
      best=$line
    else
      hi=$rate
    fi
    awk -v lo="$lo" -v hi="$hi" 'BEGIN { exit !(hi - lo <= 0.02 * hi) }' && break
    rate=$(((lo + hi) / 2))
  done
  echo "trials=$i rate_pps=$lo $best"
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
