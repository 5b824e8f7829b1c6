#!/usr/bin/env bash
# End to end: flowgate (with and without its XDP fast path) vs a raw AF_XDP
# forwarder vs kernel NAT, on one namespace/veth topology, with the same
# generator, in the same run: each one's capacity (the highest rate it
# forwards with at most 0.1 % loss, found by a search) and its rate under
# flood, per second and per core-second, its latency and HTTP rate.
#
#   scripts/bench-e2e.sh                 # 3 runs, alternating (about 25 minutes)
#   scripts/bench-e2e.sh --quick         # 1 short run: a smoke test (about 5 minutes)
#   scripts/bench-e2e.sh --update-docs   # ... and write the table and chart into docs/
#
# Options: --runs N, --seconds N (flood time per measurement), --trial-seconds N
# (time per trial of the search), --trials N (most trials per search),
# --flows N,
# --variants kernel,flowgate,userspace,forward (any subset, comma-separated),
# --idle busy|adaptive (the idle policy of flowgate's workers in the
# userspace and forward-only variants), --fast-idle busy|adaptive (the fast
# path variant's, by default `adaptive`, flowgate's own default: its
# workers have nothing to do for established flows), --out DIR, --flowgate PATH
# (measure that flowgate binary instead of building one: before/after),
# --daemon 'KEY = VALUE' (a line added to flowgate's [daemon] section, e.g.
# 'rx_ring_size = 8192'; repeatable).
#
# Variants (docs/benchmarks.md, "End to end"):
#   flowgate   `flowgate run`, fast_path = "xdp": established flows in XDP
#   userspace  `flowgate run`, fast_path = "off": DNAT + Maglev + connection
#              tracking in the workers, over copy-mode AF_XDP
#   forward    `flowgate run --forward-only`: port 0 <-> port 1, nothing else
#   kernel     Linux forwarding with nftables DNAT + conntrack (kube-proxy's
#              way), its backlog and budgets raised for the run
# plus, every run, the generator alone into an XDP drop (its own ceiling).
#
# Frames: 60-byte UDP (64 on a wire) over 16 384 flows from an XDP
# generator (benches/e2e/xdpgen.c), counted by an XDP sink on the backend
# host (benches/e2e/sink.bpf.c) only when correctly translated (a backend's
# address and port, the gateway's MAC, a good checksum); anything else that
# arrives is an error. Then the round trip p50/p99 of a UDP echo through
# the gateway and HTTP requests/s (wrk to nginx). Installs what is
# missing, builds in release, needs root. Everything runs in three network
# namespaces of its own (benches/e2e/topology.sh), removed on exit, Ctrl-C
# or failure; the global sysctls it changes (kernel.bpf_stats_enabled, the
# kernel variant's backlog) are put back. Exit code: 0 if every variant
# was measured, 1 if one could not be (or delivered a wrong frame), 2 on a
# usage error.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
E2E=$ROOT/benches/e2e
COMMAND="scripts/bench-e2e.sh $*"

RUNS=3
PPS_SECONDS=10
TRIAL_SECONDS=5
TRIALS=8
LOSS_PPM=1000
WARMUP=2
RTT_COUNT=20000
HTTP_SECONDS=10
HTTP_CONNECTIONS=32
FLOWS=16384
VARIANTS=(kernel flowgate userspace forward)
IDLE=busy
FAST_IDLE=adaptive
UPDATE_DOCS=0
OUT=""
FLOWGATE=""
DAEMON_EXTRA=""
GEN_CPU=0
GW_CPU=1

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
  exit 2
}
while (($#)); do
  case "$1" in
    --quick)
      RUNS=1 PPS_SECONDS=3 WARMUP=1 RTT_COUNT=2000 HTTP_SECONDS=3 TRIAL_SECONDS=2 TRIALS=6
      ;;
    --trial-seconds) TRIAL_SECONDS=${2:?}; shift ;;
    --trials) TRIALS=${2:?}; shift ;;
    --runs) RUNS=${2:?}; shift ;;
    --seconds) PPS_SECONDS=${2:?}; HTTP_SECONDS=$2; shift ;;
    --flows) FLOWS=${2:?}; shift ;;
    --variants) IFS=, read -r -a VARIANTS <<<"${2:?}"; shift ;;
    --idle) IDLE=${2:?}; shift ;;
    --fast-idle) FAST_IDLE=${2:?}; shift ;;
    --update-docs) UPDATE_DOCS=1 ;;
    --out) OUT=${2:?}; shift ;;
    --flowgate) FLOWGATE=${2:?}; shift ;;
    --daemon) DAEMON_EXTRA+="${2:?}"$'\n'; shift ;;
    -h | --help) usage ;;
    *) echo "unknown option: $1" >&2; usage ;;
  esac
  shift
done
for n in "$RUNS" "$PPS_SECONDS" "$FLOWS" "$TRIAL_SECONDS" "$TRIALS"; do
  [[ $n =~ ^[0-9]+$ ]] && ((n > 0 && n <= 1048576)) || { echo "not a count: $n" >&2; exit 2; }
done
((FLOWS & (FLOWS - 1))) && { echo "--flows must be a power of two" >&2; exit 2; }
# Flood sources: at most 256 addresses (198.18.4.0/24), so more flows take
# more source ports per address.
FLOOD_PORTS=64
while ((FLOWS / FLOOD_PORTS > 256)); do FLOOD_PORTS=$((FLOOD_PORTS * 2)); done
for v in "${VARIANTS[@]}"; do
  case "$v" in kernel | flowgate | userspace | forward) ;; *) echo "unknown variant: $v" >&2; exit 2 ;; esac
done
case "$IDLE" in busy | adaptive) ;; *) echo "--idle busy|adaptive" >&2; exit 2 ;; esac
case "$FAST_IDLE" in busy | adaptive) ;; *) echo "--fast-idle busy|adaptive" >&2; exit 2 ;; esac
if [ "$(id -u)" -ne 0 ]; then
  echo "bench-e2e: needs root (network namespaces, XDP, nftables)" >&2
  exit 2
fi
if (($(nproc) < 2)); then
  echo "bench-e2e: needs 2 CPUs (one for the gateway, one for the load)" >&2
  exit 2
fi

echo "== dependencies"
scripts/install-deps.sh
# The chart.
if ! command -v gnuplot >/dev/null 2>&1; then
  echo "installing: gnuplot-nox"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends gnuplot-nox >/dev/null
fi

echo "== build (release)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [ -z "$FLOWGATE" ]; then
  cargo build --release --locked --bin flowgate
  FLOWGATE=$CARGO_TARGET_DIR/release/flowgate
fi
[ -x "$FLOWGATE" ] || { echo "bench-e2e: no flowgate binary at $FLOWGATE" >&2; exit 2; }
RUN=${OUT:-$CARGO_TARGET_DIR/bench-e2e/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$RUN"
RUN=$(cd "$RUN" && pwd)
# The echo server and latency client: std only, so rustc alone builds it
# (not the whole package in the bench profile).
E2E_UDP=$RUN/e2e_udp
rustc --edition 2021 -O benches/e2e/udp.rs -o "$E2E_UDP"
[ -x "$E2E_UDP" ] || { echo "bench-e2e: could not build benches/e2e/udp.rs" >&2; exit 1; }
# shellcheck source=benches/e2e/topology.sh
. "$E2E/topology.sh"
# shellcheck source=benches/e2e/variants.sh
. "$E2E/variants.sh"

# The sink (with the topology's addresses) and the generator (XDP
# programs, and the generator's loader).
hex_ip() { printf '0x%02x%02x%02x%02x' ${1//./ }; }
BPF_CFLAGS=(-O2 -g -target bpf -I"/usr/include/$(uname -m)-linux-gnu")
clang "${BPF_CFLAGS[@]}" -DGW_MAC="0x${MAC_P1//:/,0x}" -DVIP_ADDR="$(hex_ip "$VIP")" \
  -DBACKEND_FIRST="$(hex_ip "${BACKENDS[0]}")" -DBACKEND_COUNT="${#BACKENDS[@]}" \
  -DFLOOD_PORT="$FLOOD_PORT" -DBACKEND_PORT="$((FLOOD_PORT + 1))" \
  -c "$E2E/sink.bpf.c" -o "$RUN/sink.o"
clang "${BPF_CFLAGS[@]}" -c "$E2E/xdpgen.bpf.c" -o "$RUN/xdpgen.bpf.o"
clang -O2 -Wall -o "$RUN/xdpgen" "$E2E/xdpgen.c" -lbpf

# The kernel's run-time statistics of BPF programs, for the gateway's XDP
# time: on for the run, put back after.
BPF_STATS_BEFORE=$(sysctl -n kernel.bpf_stats_enabled)
# The scheduler's share. With autogroups (kernel.sched_autogroup_enabled),
# nice counts only within a session: a busy-polling worker at nice -20
# shares its core equally with every other session that has work, and on a
# shared machine gets a fraction of it. So the harness's session gets the
# autogroup weight of nice -20 for the run, and so do the softirq threads
# of its two CPUs (the receive and forwarding work of every variant when
# the kernel defers it), so that they keep their share next to it; all
# put back after.
AUTOGROUP_BEFORE=""
if [ -w /proc/$$/autogroup ]; then
  AUTOGROUP_BEFORE=$(sed -n 's/.* nice \(-\{0,1\}[0-9]*\)$/\1/p' /proc/$$/autogroup)
  echo -20 >/proc/$$/autogroup
fi
SOFTIRQ_THREADS=()
for cpu in "$GEN_CPU" "$GW_CPU"; do
  pid=$(pgrep -x "ksoftirqd/$cpu" || true)
  [ -n "$pid" ] && SOFTIRQ_THREADS+=("$pid:$(ps -o ni= -p "$pid" | tr -d ' ')")
done
for entry in "${SOFTIRQ_THREADS[@]}"; do
  renice -n -20 -p "${entry%%:*}" >/dev/null
done
cleanup() {
  local status=$? entry
  trap - EXIT INT TERM
  [ -n "${FLOWGATE_PID:-}" ] && kill -INT "$FLOWGATE_PID" 2>/dev/null
  topology_down
  kernel_untune
  sysctl -qw kernel.bpf_stats_enabled="$BPF_STATS_BEFORE"
  for entry in "${SOFTIRQ_THREADS[@]}"; do
    renice -n "${entry#*:}" -p "${entry%%:*}" >/dev/null || true
  done
  [ -n "$AUTOGROUP_BEFORE" ] && echo "$AUTOGROUP_BEFORE" >/proc/$$/autogroup
  exit "$status"
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

machine="$(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p' | head -1), kernel $(uname -r)"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo '+changes')"
[ "$FLOWGATE" = "$CARGO_TARGET_DIR/release/flowgate" ] || commit="$commit (flowgate binary: $FLOWGATE)"
echo "== machine: $machine; commit $commit; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== run directory: $RUN"

sysctl -qw kernel.bpf_stats_enabled=1
echo "== topology"
topology_up
backends_up
flowgate_config
if ! "$FLOWGATE" run --help 2>/dev/null | grep -q -- --forward-only; then
  echo "note: $FLOWGATE has no 'run --forward-only' yet; flowgate variants will fail" >&2
fi

RESULTS=$RUN/results.tsv
: >"$RESULTS"
failures=0
record() { echo "$1 $2 $3 $4" >>"$RESULTS"; }

# record_pairs RUN VARIANT PREFIX "name=value ...": one line per pair.
record_pairs() {
  local kv
  for kv in $4; do
    record "$1" "$2" "$3${kv%%=*}" "${kv#*=}"
  done
}

# One variant, one run: up, the flood, the search, latency and HTTP, down.
measure_variant() {
  local run=$1 variant=$2 flood found rtt http
  log "run $run: $variant"
  if ! variant_up "$variant" "$run"; then
    record "$run" "$variant" failed "no-forwarding"
    failures=$((failures + 1))
    variant_down "$variant" || true
    return 0
  fi
  if flood=$(measure_flood "$variant"); then
    record_pairs "$run" "$variant" flood_ "$flood"
    log "  flood: $flood"
    if [ "$(field wrong_pps "$flood")" != 0 ]; then
      log "  ERROR: $variant delivered wrongly translated frames under flood"
      record "$run" "$variant" failed "wrong-frames"
      failures=$((failures + 1))
    fi
    local ceiling
    ceiling=$(field offered_pps "$flood")
    [ "$variant" = generator ] || ceiling=$(awk -v a="$ceiling" -v b="${GEN_CEILING:-0}" 'BEGIN { print (b > a ? b : a) }')
    if found=$(search "$variant" "$(field pps "$flood")" "$ceiling"); then
      record_pairs "$run" "$variant" capacity_ "$found"
      log "  capacity: $found"
      [ "$variant" = generator ] && GEN_CEILING=$(field offered_pps "$flood")
    else
      record "$run" "$variant" failed "search"
      failures=$((failures + 1))
    fi
  else
    record "$run" "$variant" failed "flood"
    failures=$((failures + 1))
  fi
  if [ "$variant" != generator ]; then
    if rtt=$(measure_rtt); then
      read -r p50 p99 lost <<<"$rtt"
      record "$run" "$variant" rtt_p50_us "$p50"
      record "$run" "$variant" rtt_p99_us "$p99"
      record "$run" "$variant" rtt_lost "$lost"
      log "  round trip p50/p99 us, lost: $rtt"
    else
      record "$run" "$variant" failed "rtt"
      failures=$((failures + 1))
    fi
    if http=$(measure_http) && [ -n "$http" ]; then
      record "$run" "$variant" http_rps "$http"
      log "  HTTP requests/s: $http"
    else
      record "$run" "$variant" failed "http"
      failures=$((failures + 1))
    fi
  fi
  if ! variant_down "$variant"; then
    record "$run" "$variant" failed "unclean-stop"
    failures=$((failures + 1))
  fi
}

echo "== measuring: ${RUNS} run(s) of ${VARIANTS[*]}, flood ${PPS_SECONDS} s, search of up to ${TRIALS} trials of ${TRIAL_SECONDS} s (even rates, at most ${LOSS_PPM} ppm lost), ${RTT_COUNT} round trips, HTTP ${HTTP_SECONDS} s; flowgate idle = ${IDLE}, with the fast path ${FAST_IDLE}"
for run in $(seq "$RUNS"); do
  # Alternate the order from run to run, so drift does not favour one.
  order=()
  n=${#VARIANTS[@]}
  for i in $(seq 0 $((n - 1))); do
    order+=("${VARIANTS[$(((i + run - 1) % n))]}")
  done
  record "$run" machine load1 "$(cut -d' ' -f1 /proc/loadavg)"
  GEN_CEILING=0
  measure_variant "$run" generator
  for variant in "${order[@]}"; do
    measure_variant "$run" "$variant"
  done
done

echo "== results"
date_now=$(date -u +'%Y-%m-%d %H:%M UTC')
python3 "$E2E/report.py" "$RESULTS" "$RUN/e2e.md" "$RUN/e2e-chart.png" \
  --command "$COMMAND" --machine "$machine, commit $commit" --date "$date_now" \
  --flows "$FLOWS" --runs "$RUNS" --idle "$IDLE" --fast-idle "$FAST_IDLE" --loss-ppm "$LOSS_PPM" \
  --trial-seconds "$TRIAL_SECONDS" --load-end "$(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "raw results: $RESULTS; table: $RUN/e2e.md; chart: $RUN/e2e-chart.png"

if [ "$UPDATE_DOCS" = 1 ]; then
  cp "$RUN/e2e-chart.png" docs/e2e-chart.png
  python3 - "$RUN/e2e.md" docs/benchmarks.md <<'EOF'
import sys
begin, end = "<!-- e2e-results:begin -->", "<!-- e2e-results:end -->"
table = open(sys.argv[1]).read().strip()
doc = open(sys.argv[2]).read()
if begin not in doc or end not in doc:
    sys.exit("docs/benchmarks.md has no e2e-results markers; table left in the run directory")
head, rest = doc.split(begin, 1)
_, tail = rest.split(end, 1)
open(sys.argv[2], "w").write(f"{head}{begin}\n{table}\n{end}{tail}")
print("updated docs/benchmarks.md and docs/e2e-chart.png")
EOF
fi
((failures == 0)) || { echo "bench-e2e: $failures measurement(s) failed (see above)" >&2; exit 1; }
