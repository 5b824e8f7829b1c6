#!/usr/bin/env bash
# End to end: flowgate vs a raw AF_XDP forwarder vs kernel NAT, on one
# namespace/veth topology, with the same generator, in the same run.
#
#   scripts/bench-e2e.sh                 # 5 runs per variant, alternating (about 12 minutes)
#   scripts/bench-e2e.sh --quick         # 1 short run per variant: a smoke test (about 2 minutes)
#   scripts/bench-e2e.sh --update-docs   # ... and write the table and chart into docs/
#
# Options: --runs N, --seconds N (flood time per measurement), --flows N,
# --variants kernel,flowgate,forward (any subset, comma-separated),
# --idle busy|adaptive (flowgate's idle policy), --out DIR.
#
# Variants (docs/benchmarks.md, "End to end"):
#   (a) flowgate   `flowgate run`: DNAT + Maglev + connection tracking
#   (b) forward    `flowgate run --forward-only`: port 0 <-> port 1, nothing else
#   (c) kernel     Linux forwarding with nftables DNAT + conntrack (kube-proxy's way)
# plus, every run, the generator alone into an XDP drop (its own ceiling).
#
# For each: packets/s forwarded (60-byte UDP frames over 16 384 flows from
# an XDP generator, benches/e2e/xdpgen.c, counted at the backend's
# device), the round trip p50/p99 of a UDP echo through the gateway, and
# HTTP requests/s (wrk to nginx). Installs what is missing, builds in
# release, needs root. Everything runs in three
# network namespaces of its own (benches/e2e/topology.sh), removed on exit,
# Ctrl-C or failure. Exit code: 0 if every variant was measured, 1 if one
# could not be, 2 on a usage error.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
E2E=$ROOT/benches/e2e
COMMAND="scripts/bench-e2e.sh $*"

RUNS=5
PPS_SECONDS=10
WARMUP=2
RTT_COUNT=20000
HTTP_SECONDS=10
HTTP_CONNECTIONS=32
FLOWS=16384
VARIANTS=(kernel flowgate forward)
IDLE=busy
UPDATE_DOCS=0
OUT=""
GEN_CPU=0
GW_CPU=1

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
  exit 2
}
while (($#)); do
  case "$1" in
    --quick)
      RUNS=1 PPS_SECONDS=3 WARMUP=1 RTT_COUNT=2000 HTTP_SECONDS=3
      ;;
    --runs) RUNS=${2:?}; shift ;;
    --seconds) PPS_SECONDS=${2:?}; HTTP_SECONDS=$2; shift ;;
    --flows) FLOWS=${2:?}; shift ;;
    --variants) IFS=, read -r -a VARIANTS <<<"${2:?}"; shift ;;
    --idle) IDLE=${2:?}; shift ;;
    --update-docs) UPDATE_DOCS=1 ;;
    --out) OUT=${2:?}; shift ;;
    -h | --help) usage ;;
    *) echo "unknown option: $1" >&2; usage ;;
  esac
  shift
done
for n in "$RUNS" "$PPS_SECONDS" "$FLOWS"; do
  [[ $n =~ ^[0-9]+$ ]] && ((n > 0 && n <= 1048576)) || { echo "not a count: $n" >&2; exit 2; }
done
((FLOWS & (FLOWS - 1))) && { echo "--flows must be a power of two" >&2; exit 2; }
# Flood sources: at most 256 addresses (198.18.4.0/24), so more flows take
# more source ports per address.
FLOOD_PORTS=64
while ((FLOWS / FLOOD_PORTS > 256)); do FLOOD_PORTS=$((FLOOD_PORTS * 2)); done
for v in "${VARIANTS[@]}"; do
  case "$v" in kernel | flowgate | forward) ;; *) echo "unknown variant: $v" >&2; exit 2 ;; esac
done
case "$IDLE" in busy | adaptive) ;; *) echo "--idle busy|adaptive" >&2; exit 2 ;; esac
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
cargo build --release --locked --bin flowgate
FLOWGATE=$CARGO_TARGET_DIR/release/flowgate
E2E_UDP=$(cargo bench --locked --no-run --bench e2e_udp --message-format=json 2>/dev/null |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "e2e_udp" and m.get("executable"):
        print(m["executable"])')
[ -x "$E2E_UDP" ] || { echo "bench-e2e: could not build benches/e2e/udp.rs" >&2; exit 1; }

RUN=${OUT:-$CARGO_TARGET_DIR/bench-e2e/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$RUN"
RUN=$(cd "$RUN" && pwd)
# The sink and the generator (XDP programs, and the generator's loader).
for prog in sink xdpgen; do
  clang -O2 -g -target bpf -I"/usr/include/$(uname -m)-linux-gnu" -c "$E2E/$prog.bpf.c" -o "$RUN/$prog.bpf.o"
done
mv "$RUN/sink.bpf.o" "$RUN/sink.o"
clang -O2 -Wall -o "$RUN/xdpgen" "$E2E/xdpgen.c" -lbpf

# shellcheck source=benches/e2e/topology.sh
. "$E2E/topology.sh"
# shellcheck source=benches/e2e/variants.sh
. "$E2E/variants.sh"

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  [ -n "${FLOWGATE_PID:-}" ] && kill -INT "$FLOWGATE_PID" 2>/dev/null
  topology_down
  exit "$status"
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

machine="$(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p' | head -1), kernel $(uname -r)"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo '+changes')"
echo "== machine: $machine; commit $commit; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== run directory: $RUN"

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

# One variant, one run: up, the three measurements, down.
measure_variant() {
  local run=$1 variant=$2 pps rtt http i
  log "run $run: $variant"
  if ! variant_up "$variant" "$run"; then
    record "$run" "$variant" failed "no-forwarding"
    failures=$((failures + 1))
    variant_down "$variant" || true
    return 0
  fi
  if pps=$(measure_pps "$variant"); then
    local names=(offered_pps delivered_pps gw_user_pct gw_sys_pct gw_softirq_pct gw_idle_pct
      worker_user_pct worker_sys_pct backlog_drop_pps idle_polls_ps xsk_rx_ring_full_pps xsk_rx_dropped_pps) values
    read -r -a values <<<"$pps"
    for i in "${!names[@]}"; do
      record "$run" "$variant" "${names[$i]}" "${values[$i]:-nan}"
    done
    log "  packets/s offered, delivered; GW_CPU % user, sys, softirq, idle; worker % user, sys; backlog drops/s; flowgate idle polls/s, socket refusals/s (ring full, no frame): $pps"
  else
    record "$run" "$variant" failed "pps"
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

echo "== measuring: ${RUNS} run(s) of ${VARIANTS[*]}, flood ${PPS_SECONDS} s, ${RTT_COUNT} round trips, HTTP ${HTTP_SECONDS} s"
for run in $(seq "$RUNS"); do
  # Alternate the order from run to run, so drift does not favour one.
  order=()
  n=${#VARIANTS[@]}
  for i in $(seq 0 $((n - 1))); do
    order+=("${VARIANTS[$(((i + run - 1) % n))]}")
  done
  record "$run" machine load1 "$(cut -d' ' -f1 /proc/loadavg)"
  measure_variant "$run" generator
  for variant in "${order[@]}"; do
    measure_variant "$run" "$variant"
  done
done

echo "== results"
date_now=$(date -u +'%Y-%m-%d %H:%M UTC')
python3 "$E2E/report.py" "$RESULTS" "$RUN/e2e.md" "$RUN/e2e-chart.png" \
  --command "$COMMAND" --machine "$machine, commit $commit" --date "$date_now" \
  --flows "$FLOWS" --runs "$RUNS"
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
