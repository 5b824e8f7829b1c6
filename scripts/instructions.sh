#!/usr/bin/env bash
# Instructions per packet of the core pipeline and of whole workers,
# counted by callgrind.
#
# Wall time on shared 2-core machines is noisy; instruction counts are not.
# For each pipeline case this runs benches/instructions.rs under callgrind
# with collection only inside `measured_batches` (the batches through
# Pipeline::process_batch; setup and frame stamping are not counted). For
# each worker case it collects inside `measured_polls`: one poll of every
# worker (Worker::poll over in-memory ports: rings, pipeline, hand-over
# between workers, transmit, expiry sweep) after a batch of 64 frames was
# put on every worker's client port, untimed. With two workers about half
# of each worker's frames belong to the other. It prints instructions per
# packet and, per source file, where they go.
#
#   scripts/instructions.sh                 # every case: 3 modes x 3 service counts, workers
#   MODES=established SERVICES=1 WORKERS= scripts/instructions.sh
#   MODES= WORKERS=2 WORKER_MODES=established scripts/instructions.sh
#   CACHE_SIM=1 scripts/instructions.sh     # also count data-cache misses
#   MODES= WORKERS=1 CAPTURE=100 scripts/instructions.sh  # workers with a capture armed
#
# Settings (environment): MODES ("established new-full new-half"; also
# new-dead: new-full with one backend of four down, before any rebuild),
# SERVICES ("1 1000 100000"), WORKERS ("1 2": worker counts of the worker
# cases; empty skips them), WORKER_MODES ("established new"),
# WORKER_SERVICES ("1"), BATCHES (1000 batches of 64 packets, or steps of a
# batch per worker),
# TOP (15 lines of breakdown per case), CACHE_SIM (0; 1 simulates a 48 KiB
# L1d and, as "L2", a 2 MiB last level: misses there go to L3 or DRAM),
# REPORT_ONLY (0; 1 reports on the output files of an earlier run, with
# the same BATCHES and CACHE_SIM), CAPTURE (unset: no capture armed in the
# worker cases; `drops`: armed for drops only, which no forwarded frame
# matches; N: every frame matches, one in N is copied), MAGLEV (1: also count the instructions
# of a Maglev table build of 65 537 and 655 373 slots; 0 skips it).
# Output files: $CARGO_TARGET_DIR/callgrind/<mode>-<services>.{out,log} and
# workers<n>-<mode>-<services>.{out,log};
# open one with `callgrind_annotate --auto=yes FILE` for line-level detail.
# Takes one to three minutes per case (the setup fills 1 000 000
# connections under valgrind; CACHE_SIM=1 is the slower end).
set -euo pipefail
cd "$(dirname "$0")/.."

MODES=${MODES-"established new-full new-half"}
SERVICES=${SERVICES:-"1 1000 100000"}
WORKERS=${WORKERS-"1 2"}
WORKER_MODES=${WORKER_MODES:-"established new"}
WORKER_SERVICES=${WORKER_SERVICES:-"1"}
BATCHES=${BATCHES:-1000}
TOP=${TOP:-15}
CACHE_SIM=${CACHE_SIM:-0}
REPORT_ONLY=${REPORT_ONLY:-0}
MAGLEV=${MAGLEV:-1}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT="$CARGO_TARGET_DIR/callgrind"
mkdir -p "$OUT"

command -v valgrind >/dev/null || { echo "valgrind is not installed (scripts/install-deps.sh)" >&2; exit 1; }

# Build with the bench profile (release + thin LTO, codegen-units 1, line
# debug info) and find the binary.
[ "$REPORT_ONLY" = 1 ] || exe=$(cargo bench --no-run --bench instructions --message-format=json 2>/dev/null |
  grep '"name":"instructions"' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[ "$REPORT_ONLY" = 1 ] || [ -x "$exe" ] || { echo "could not build the instructions bench" >&2; exit 1; }

cache_flags=()
if [ "$CACHE_SIM" = 1 ]; then
  cache_flags=(--cache-sim=yes --D1=49152,12,64 --LL=2097152,16,64)
fi

packets=$((BATCHES * 64))
per_packet() { python3 -c "print(($1) / $packets)"; }
printf '%-12s %9s %10s' mode services instr/pkt
[ "$CACHE_SIM" = 1 ] && printf ' %10s %10s' L1d-miss/pkt L2-miss/pkt
printf '\n'
for mode in $MODES; do
  for services in $SERVICES; do
    base="$OUT/$mode-$services"
    [ "$REPORT_ONLY" = 1 ] || valgrind --tool=callgrind --callgrind-out-file="$base.out" \
      --collect-atstart=no --toggle-collect='*measured_batches*' "${cache_flags[@]}" \
      "$exe" "$mode" "$services" "$BATCHES" >"$base.log" 2>&1 ||
      { echo "callgrind failed for $mode $services: see $base.log" >&2; exit 1; }
    # summary: Ir [Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw]
    read -r -a sum < <(sed -n 's/^summary: //p' "$base.out")
    printf '%-12s %9s %10.1f' "$mode" "$services" "$(per_packet "${sum[0]}")"
    if [ "$CACHE_SIM" = 1 ]; then
      printf ' %10.2f %10.2f' "$(per_packet "${sum[4]} + ${sum[5]}")" \
        "$(per_packet "${sum[7]} + ${sum[8]}")"
    fi
    printf '\n'
  done
done

# Worker cases: packets are steps x 64 x workers.
for workers in $WORKERS; do
  for mode in $WORKER_MODES; do
    for services in $WORKER_SERVICES; do
      base="$OUT/workers$workers-$mode-$services${CAPTURE:+-capture$CAPTURE}"
      [ "$REPORT_ONLY" = 1 ] || valgrind --tool=callgrind --callgrind-out-file="$base.out" \
        --collect-atstart=no --toggle-collect='*measured_polls*' "${cache_flags[@]}" \
        "$exe" workers "$workers" "$mode" "$services" "$BATCHES" >"$base.log" 2>&1 ||
        { echo "callgrind failed for $workers workers $mode $services: see $base.log" >&2; exit 1; }
      read -r -a sum < <(sed -n 's/^summary: //p' "$base.out")
      wpackets=$((packets * workers))
      printf '%-12s %9s %10.1f' "w$workers-$mode" "$services" \
        "$(python3 -c "print((${sum[0]}) / $wpackets)")"
      if [ "$CACHE_SIM" = 1 ]; then
        printf ' %10.2f %10.2f' "$(python3 -c "print((${sum[4]} + ${sum[5]}) / $wpackets)")" \
          "$(python3 -c "print((${sum[7]} + ${sum[8]}) / $wpackets)")"
      fi
      printf '\n'
    done
  done
done

if [ "$MAGLEV" = 1 ]; then
  # Maglev table builds for 100 backends: instructions per build.
  for spec in "65537 5" "655373 1"; do
    read -r size builds <<<"$spec"
    base="$OUT/maglev-$size"
    [ "$REPORT_ONLY" = 1 ] || valgrind --tool=callgrind --callgrind-out-file="$base.out" \
      --collect-atstart=no --toggle-collect='*measured_maglev_builds*' \
      "$exe" maglev "$size" "$builds" >"$base.log" 2>&1 ||
      { echo "callgrind failed for maglev $size: see $base.log" >&2; exit 1; }
    read -r -a sum < <(sed -n 's/^summary: //p' "$base.out")
    printf 'maglev build, %s slots: %s instructions\n' "$size" \
      "$(python3 -c "print(round(${sum[0]} / $builds))")"
  done
fi

cases=()
for mode in $MODES; do
  for services in $SERVICES; do
    cases+=("$mode-$services:$packets:$mode, $services services")
  done
done
for workers in $WORKERS; do
  for mode in $WORKER_MODES; do
    for services in $WORKER_SERVICES; do
      cases+=("workers$workers-$mode-$services${CAPTURE:+-capture$CAPTURE}:$((packets * workers)):$workers workers, $mode, $services services")
    done
  done
done

echo
echo "Where the instructions go (self cost per packet, by source file; std"
echo "code is named by the function it was inlined into):"
for case in "${cases[@]}"; do
    IFS=: read -r name case_packets title <<<"$case"
    echo "-- $title"
    callgrind_annotate --auto=no --show=Ir --threshold=100 "$OUT/$name.out" 2>/dev/null |
      sed -n '/file:function/,$p' | tail -n +3 |
      python3 -c '
import re, sys, collections
packets, top = int(sys.argv[1]), int(sys.argv[2])
cost = collections.Counter()
for line in sys.stdin:
    m = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\S+?):(\S+)", line)
    if not m:
        continue
    ir, path, func = int(m[1].replace(",", "")), m[2], m[3]
    if "dataplane/src/" in path:
        key = path.split("dataplane/src/")[1]
    elif "benches/" in path:
        key = "benches/" + path.split("benches/")[1]
    else:
        crate = re.search(r"/(xxhash-rust|hashbrown|crossbeam[a-z-]*)[^/]*/", path)
        lib = re.search(r"/library/(?:core|alloc|std)/src/(.*)", path)
        where = lib[1] if lib else path
        caller = func.split("::")[-1]
        key = crate[1] if crate else f"std {where} in {caller}"
    cost[key] += ir
for key, ir in cost.most_common(top):
    print(f"   {ir / packets:8.1f}  {key}")
' "$case_packets" "$TOP"
done
