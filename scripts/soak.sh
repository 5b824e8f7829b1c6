#!/usr/bin/env bash
# The soak: flowgate under mixed traffic, rule changes every second and
# backend flaps for a long time (one hour by default), on the demo's
# topology in its own namespaces. Part of the harness, not of CI.
#
#   scripts/soak.sh [--seconds N] [--out FILE]
#
# Traffic (scripts/lib/soak-client.py, in the client namespace): 16
# keep-alive HTTP connections (8 through web by maglev, 8 through web-wrr
# by wrr) each making a request a second, 20 new HTTP connections a second,
# a UDP query a second, and a new connection a second to `flap`, a service
# whose backends' listeners stop and start in turn every 10 s under TCP
# health checks. Every second one change through flowgatectl: a weight of
# web-wrr or web, or a service `churn` added or removed.
#
# It samples flowgate's resident memory and open descriptors every 60 s
# (after a 10 s warm-up, the start) and prints a report: the commit the
# binaries were built from, what flowgate said of its kernel fast path,
# memory and descriptors at the start and the end, and the failures with
# their first reasons. It exits 1 unless every established connection
# lasted, every change was taken, memory ended within 5 % (+1 MiB) of the
# start, and the descriptors within 2. With --out FILE the report is also
# written there.
# Needs root; sends traffic only between its namespaces; tears everything
# down at the end, also on Ctrl-C or failure.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=3600
out=""
while (($#)); do
  case "$1" in
    --seconds)
      [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || { echo "--seconds needs a whole number above 0" >&2; exit 2; }
      seconds=$2
      shift
      ;;
    --out)
      [ -n "${2:-}" ] || { echo "--out needs a file" >&2; exit 2; }
      out=$2
      shift
      ;;
    -h | --help)
      # The comment block at the top, whatever its length.
      awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
      exit 0
      ;;
    *)
      echo "unknown argument: $1 (see --help)" >&2
      exit 2
      ;;
  esac
  shift
done

if [ "$(id -u)" -ne 0 ]; then
  echo "the soak creates network namespaces and attaches XDP programs: it needs root" >&2
  exit 1
fi

export FG_TOPO=fgsoak
# shellcheck source=lib/topology.sh
source scripts/lib/topology.sh
# shellcheck source=lib/report.sh
source scripts/lib/report.sh

say "installing what is missing, building (release)"
scripts/install-deps.sh
cargo build --release --locked --bins
# What the binaries were built from (the tree may move on during the soak).
built_from="$(git rev-parse --short HEAD 2>/dev/null || echo '?')"
git diff --quiet HEAD -- . ':!docs' ':!scripts' ':!tests' ':!benches' ':!*.md' 2>/dev/null ||
  built_from="$built_from (with uncommitted changes)"
bin=${CARGO_TARGET_DIR:-target}/release
FLOWGATE=$(realpath "$bin/flowgate")
FLOWGATECTL=$(realpath "$bin/flowgatectl")

work=$(mktemp -d /tmp/flowgate-soak.XXXXXX)
chmod 755 "$work"
fg_pid=""
client_pid=""
flap_pids=("" "" "" "")

teardown() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  [ -n "$client_pid" ] && kill "$client_pid" 2>/dev/null
  if [ -n "$fg_pid" ] && kill -0 "$fg_pid" 2>/dev/null; then
    kill -TERM "$fg_pid"
    for _ in $(seq 1 100); do kill -0 "$fg_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$fg_pid" 2>/dev/null
  fi
  if [ "$rc" -ne 0 ] && [ -s "$work/flowgate.log" ]; then
    echo "-- flowgate's log (last 20 lines):" >&2
    tail -n 20 "$work/flowgate.log" >&2
  fi
  topo_down
  rm -rf "$work"
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "topology (namespaces $FG_TOPO-*)"
topo_down
topo_up
topo_warm_up
for n in 1 2 3; do topo_start_backend "$n" "$work"; done

# The flapping service's listener on backend n: a static HTTP server on
# :9090, started and stopped by the flap loop below.
flap_start() {
  local n=$1
  mkdir -p "$work/flap$n"
  echo "b$n" >"$work/flap$n/index.html"
  topo_exec "b$n" "$(topo_python)" -m http.server 9090 --bind 0.0.0.0 \
    --directory "$work/flap$n" >/dev/null 2>&1 &
  flap_pids[n]=$!
}
flap_stop() {
  local n=$1
  if [ -n "${flap_pids[n]}" ]; then
    kill "${flap_pids[n]}" 2>/dev/null || true
    wait "${flap_pids[n]}" 2>/dev/null || true
  fi
  flap_pids[n]=""
}
for n in 1 2 3; do flap_start "$n"; done

config=$work/soak.toml
{
  sed "s|^metrics_address = .*|&\ncontrol_socket = \"$work/control.sock\"|" configs/demo.toml
  cat <<'EOF'

# The soak's flapping service: its listeners come and go.
[[services]]
name = "flap"
protocol = "tcp"
vip = "198.18.100.20"
port = 80
scheduler = "maglev"

[services.health]
kind = "tcp"
interval = "500ms"
timeout = "200ms"
rise = 2
fall = 2

[[services.backends]]
address = "198.18.1.11"
port = 9090

[[services.backends]]
address = "198.18.1.12"
port = 9090

[[services.backends]]
address = "198.18.1.13"
port = 9090
EOF
} >"$config"
"$FLOWGATE" check --config "$config" >/dev/null

say "flowgate run (soak of ${seconds} s)"
ip netns exec "$FG_TOPO-gw" "$FLOWGATE" run --config "$config" >"$work/flowgate.log" 2>&1 &
fg_pid=$!
for i in $(seq 1 120); do
  kill -0 "$fg_pid" 2>/dev/null || { echo "flowgate exited before it was ready" >&2; exit 1; }
  topo_exec client "$(topo_python)" scripts/lib/udp-query.py 198.18.100.10 53 1 0.25 | grep -q '^198' && break
  [ "$i" -lt 120 ] || { echo "flowgate did not forward within 30 s" >&2; exit 1; }
done
ctl() { "$FLOWGATECTL" --socket "$work/control.sock" "$@"; }

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$fg_pid/status"; }
fds() { find "/proc/$fg_pid/fd" -mindepth 1 -maxdepth 1 | wc -l; }

report_file=$work/client.jsonl
topo_exec client "$(topo_python)" scripts/lib/soak-client.py "$seconds" "$report_file" \
  >"$work/client.log" 2>&1 &
client_pid=$!

sleep 10
rss_start=$(rss_kib)
fds_start=$(fds)
rss_max=$rss_start
echo "start (after 10 s): RSS ${rss_start} KiB, ${fds_start} descriptors"
samples=$work/samples
echo "elapsed_s rss_kib fds" >"$samples"

changes=0
change_failures=0
t0=$(date +%s)
tick=0
while kill -0 "$client_pid" 2>/dev/null; do
  # One change a second.
  case $((tick % 4)) in
    0) args=(backend edit web-wrr 198.18.1.13:8081 --weight $((1 + tick % 5))) ;;
    1) args=(service add churn --tcp 198.18.100.21:80 --backend 198.18.1.11:8080 --backend 198.18.1.12:8080) ;;
    2) args=(backend edit web 198.18.1.13:8080 --weight $((1 + tick % 3))) ;;
    3) args=(service del churn) ;;
  esac
  changes=$((changes + 1))
  if ! ctl "${args[@]}" >/dev/null 2>>"$work/ctl.err"; then
    change_failures=$((change_failures + 1))
  fi
  # A flap every 10 s: backend n's listener goes, and comes back 10 s later.
  if [ $((tick % 10)) -eq 0 ]; then
    n=$((tick / 10 % 3 + 1))
    if [ -n "${flap_pids[n]}" ]; then flap_stop "$n"; else flap_start "$n"; fi
  fi
  if [ $((tick % 60)) -eq 59 ]; then
    rss=$(rss_kib)
    [ "$rss" -gt "$rss_max" ] && rss_max=$rss
    echo "$(($(date +%s) - t0)) $rss $(fds)" >>"$samples"
    tail -n 1 "$report_file" 2>/dev/null | sed 's/^/  client: /'
  fi
  tick=$((tick + 1))
  sleep 1
done
wait "$client_pid" || { echo "the soak's client failed:" >&2; cat "$work/client.log" >&2; exit 1; }
client_pid=""
kill -0 "$fg_pid" 2>/dev/null || { echo "flowgate died during the soak" >&2; exit 1; }
rss_end=$(rss_kib)
fds_end=$(fds)
[ "$rss_end" -gt "$rss_max" ] && rss_max=$rss_end
totals=$(tail -n 1 "$report_file")
field() { "$(topo_python)" -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$totals" "$1"; }

{
  echo "soak: ${seconds} s, ended $(date -u +%Y-%m-%dT%H:%MZ), flowgate built at ${built_from}"
  echo "flowgate said: $(grep -o 'kernel fast path.*' "$work/flowgate.log" | head -n 3 | paste -sd ';' - | sed 's/;/; /g')"
  echo "machine: $(nproc) cores, $(uname -r), load at the end $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "flowgate RSS: start ${rss_start} KiB, end ${rss_end} KiB, max ${rss_max} KiB"
  echo "descriptors: start ${fds_start}, end ${fds_end}"
  echo "established connections: $(field established_connections), requests $(field established_requests), failures $(field established_failures) $(field established_failure_reasons)"
  echo "new flows: $(field new_flows), failed $(field new_flow_failures) $(field new_flow_failure_reasons); UDP queries $(field udp_queries), failed $(field udp_failures); flap service flows $(field flap_flows), failed $(field flap_failures) (its backends come and go)"
  echo "rule changes: ${changes}, refused or failed ${change_failures}"
  echo "samples (elapsed s, RSS KiB, descriptors):"
  sed 's/^/  /' "$samples"
} | tee "$work/report"
[ -n "$out" ] && cp "$work/report" "$out"

ok=1
[ "$(field established_failures)" -eq 0 ] || { echo "FAIL: established connections broke" >&2; ok=""; }
[ "$change_failures" -eq 0 ] || { echo "FAIL: changes refused: $(head -n 3 "$work/ctl.err")" >&2; ok=""; }
[ "$rss_end" -le $((rss_start * 105 / 100 + 1024)) ] || { echo "FAIL: memory grew" >&2; ok=""; }
[ "$fds_end" -le $((fds_start + 2)) ] || { echo "FAIL: descriptors grew" >&2; ok=""; }
[ -n "$ok" ] || exit 1
say "soak passed"
