#!/usr/bin/env bash
# Reproduces the figures of docs/benchmarks.md: the criterion wall-time
# benches (benches/pipeline.rs), a summary of their medians, then the
# callgrind instruction counts (scripts/instructions.sh).
#
#   scripts/bench.sh                       # everything (about 20 minutes)
#   scripts/bench.sh --no-instructions     # wall time only (under 2 minutes)
#   scripts/bench.sh established           # criterion filter (a regex on ids)
#
# Builds with the `bench` profile of the root Cargo.toml: release, thin LTO,
# codegen-units 1, line debug info. Run it on a quiet machine: the load
# average is printed first, and wall time on a busy 2-core box is not a
# measurement. Criterion's results stay in $CARGO_TARGET_DIR/criterion.
set -euo pipefail
cd "$(dirname "$0")/.."

instructions=1
args=()
for a in "$@"; do
  case "$a" in
    --no-instructions) instructions=0 ;;
    *) args+=("$a") ;;
  esac
done
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}

echo "== machine"
echo "cores: $(nproc)"
lscpu | grep 'Model name' || true
echo "kernel: $(uname -r)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' (uncommitted changes)')"
echo "load: $(uptime | sed 's/.*load average: //')"

echo "== criterion (wall time)"
started=$(date +%s)
cargo bench --bench pipeline -- "${args[@]}"

echo "== medians"
python3 - "$CARGO_TARGET_DIR/criterion" "$started" <<'EOF'
import json, pathlib, sys
root, started = pathlib.Path(sys.argv[1]), float(sys.argv[2])
BATCH = 64
rows = []
for est in sorted(root.glob("**/new/estimates.json")):
    if est.stat().st_mtime < started:
        continue  # from an earlier run
    bench = json.loads((est.parent / "benchmark.json").read_text())
    median_ns = json.loads(est.read_text())["median"]["point_estimate"]
    rows.append((bench["full_id"], median_ns))
print(f"{'bench':40} {'ns/packet':>10} {'Mpps':>7} {'median':>12}")
for full_id, ns in rows:
    if full_id.startswith(("established", "new_flows")):
        per_packet = ns / BATCH
        print(f"{full_id:40} {per_packet:10.1f} {1e3 / per_packet:7.2f} {ns / 1e3:9.1f} us")
    else:
        print(f"{full_id:40} {'':10} {'':7} {ns / 1e6:9.3f} ms")
EOF

if [ "$instructions" = 1 ]; then
  echo "== callgrind (instructions per packet)"
  scripts/instructions.sh
fi
