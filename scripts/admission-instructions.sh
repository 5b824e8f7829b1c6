#!/usr/bin/env bash
# Instructions per admission decision, counted by callgrind.
#
# Runs benches/admission.rs's driver (`admission count CASE STEPS`) under
# callgrind with collection only inside `measured_decisions` (the warm-up,
# which fills the flood tables, is not counted), and prints instructions
# per decision for each case.
#
#   scripts/admission-instructions.sh                  # every case
#   CASES="client_known worker_new_flow" scripts/admission-instructions.sh
#   CACHE_SIM=1 scripts/admission-instructions.sh      # also simulated L1d / L2 misses
#
# Settings (environment): CASES (all), STEPS (1 000 000 decisions per
# case), CACHE_SIM (0; 1 simulates a 48 KiB L1d and a 2 MiB last level,
# as scripts/instructions.sh does). Output files:
# $CARGO_TARGET_DIR/callgrind/admission-<case>.{out,log}.
set -euo pipefail
cd "$(dirname "$0")/.."

CASES=${CASES:-"service_admitted service_refused service_single_draw client_known client_flood_1mib client_flood_8mib backend_open_close backend_refused reset_ipv4 reset_ipv6 worker_new_flow"}
STEPS=${STEPS:-1000000}
CACHE_SIM=${CACHE_SIM:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT="$CARGO_TARGET_DIR/callgrind"
mkdir -p "$OUT"

command -v valgrind >/dev/null || { echo "valgrind is not installed (scripts/install-deps.sh)" >&2; exit 1; }

exe=$(cargo bench --no-run --bench admission --message-format=json 2>/dev/null |
  grep '"name":"admission"' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[ -x "$exe" ] || { echo "could not build the admission bench" >&2; exit 1; }

cache_flags=()
if [ "$CACHE_SIM" = 1 ]; then
  cache_flags=(--cache-sim=yes --D1=49152,12,64 --LL=2097152,16,64)
fi

per() { python3 -c "print(f'{($1) / $STEPS:.1f}')"; }
printf '%-22s %12s' case instr/decision
[ "$CACHE_SIM" = 1 ] && printf ' %12s %12s' L1d-miss L2-miss
printf '\n'
for c in $CASES; do
  base="$OUT/admission-$c"
  valgrind --tool=callgrind --callgrind-out-file="$base.out" \
    --collect-atstart=no --toggle-collect='*measured_decisions*' "${cache_flags[@]}" \
    "$exe" count "$c" "$STEPS" >"$base.log" 2>&1 ||
    { echo "callgrind failed for $c: see $base.log" >&2; exit 1; }
  # summary: Ir [Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw] (trailing zeros left out)
  read -r -a sum < <(sed -n 's/^summary: //p' "$base.out")
  for i in 0 1 2 3 4 5 6 7 8; do sum[i]=${sum[i]:-0}; done
  printf '%-22s %12s' "$c" "$(per "${sum[0]}")"
  if [ "$CACHE_SIM" = 1 ]; then
    printf ' %12s %12s' "$(per "${sum[4]} + ${sum[5]}")" "$(per "${sum[7]} + ${sum[8]}")"
  fi
  printf '\n'
done
