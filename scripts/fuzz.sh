#!/usr/bin/env bash
# Fuzzes the data plane with cargo-fuzz (libFuzzer) on the stable toolchain.
#
#   scripts/fuzz.sh --ci                 bounded run for CI: checks the fuzz
#                                        crate (and replays every kept
#                                        input of each target, xdp_fast_path
#                                        included), then 60 s of parse and
#                                        120 s of pipeline
#   scripts/fuzz.sh                      long run: 3600 s per target
#   scripts/fuzz.sh --long SECONDS       SECONDS per target
#   ... --target NAME                    only that target (parse, pipeline
#                                        or xdp_fast_path)
#
# Seeds are generated into dataplane/fuzz/corpus/<target>/ (gitignored),
# which also keeps what the fuzzer learns between runs. Every run also
# reads dataplane/fuzz/kept/<target>/, the minimised corpus of the last
# long campaign, committed so that CI's short run starts from it. On a
# crash, timeout or out-of-memory the script prints the reproducer and
# exits 1. xdp_fast_path runs the XDP program through BPF_PROG_TEST_RUN:
# without root or BPF it says so and counts as skipped.
# Idempotent; installs cargo-fuzz if it is missing. See docs/fuzzing.md.
set -euo pipefail
self=$(realpath "$0")
cd "$(dirname "$self")/../dataplane"

TARGETS=(parse pipeline xdp_fast_path)
mode=long
long_seconds=3600
only=""

usage() {
  sed -n '2,20p' "$self" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

while (($#)); do
  case "$1" in
    --ci) mode=ci ;;
    --long)
      mode=long
      [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || usage
      long_seconds=$2
      shift
      ;;
    --target)
      [[ ${2:-} =~ ^(parse|pipeline|xdp_fast_path)$ ]] || usage
      only=$2
      shift
      ;;
    -h | --help) usage ;;
    *) usage ;;
  esac
  shift
done
if [[ -n $only ]]; then
  TARGETS=("$only")
elif [[ $mode == ci ]]; then
  # xdp_fast_path's instrumented build compiles the whole data plane with
  # its daemon again (tens of minutes cold): CI replays its kept corpus in
  # the fuzz crate's tests instead, and long runs fuzz it.
  TARGETS=(parse pipeline)
fi

# Seconds of fuzzing per target. CI's three minutes go mostly to the
# pipeline, whose inputs are scripts of many frames.
seconds_for() {
  if [[ $mode == ci ]]; then
    case "$1" in
      parse) echo 60 ;;
      xdp_fast_path) echo 20 ;;
      *) echo 120 ;;
    esac
  else
    echo "$long_seconds"
  fi
}

# Largest input per target: a jumbo frame for parse; several frames for the
# pipeline's scripts.
max_len_for() {
  case "$1" in
    parse) echo 9216 ;;
    *) echo 16384 ;;
  esac
}

# The fuzz crate builds in its own target dir (dataplane/fuzz/target): its
# instrumentation flags would otherwise invalidate the main build's cache.
unset CARGO_TARGET_DIR

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
if ! command -v c++ >/dev/null 2>&1 && ! command -v clang++ >/dev/null 2>&1; then
  echo "fuzz: libFuzzer needs a C++ compiler: run scripts/install-deps.sh" >&2
  exit 1
fi

# The fuzz crate has its own Cargo.lock (it is a workspace of its own).
# No --locked: when the data plane gains a dependency, cargo adds it to
# that lock file, which is then committed with the change.
if [[ $mode == ci ]]; then
  echo "== fuzz crate: format, lints, tests"
  cargo fmt --manifest-path fuzz/Cargo.toml -- --check
  # With the feature `xdp`: the xdp_fast_path target's code and its kept
  # corpus's replay (which skips, saying so, without root and BPF).
  cargo clippy --manifest-path fuzz/Cargo.toml --all-targets --features xdp -- -D warnings
  cargo test --manifest-path fuzz/Cargo.toml --features xdp
fi

echo "== fuzz seeds"
cargo run --manifest-path fuzz/Cargo.toml --quiet --example seeds -- fuzz/corpus

# --sanitizer none: AddressSanitizer needs the nightly-only -Zsanitizer
# flag; the data plane has no unsafe code, and Rust's own bounds and
# overflow checks (debug assertions on, in an optimised build) turn its
# bugs into panics.
FUZZ_FLAGS=(--sanitizer none --debug-assertions)
# xdp_fast_path needs the crate's feature `xdp` (the data plane with its
# XDP program); the others build without it.
flags_for() {
  if [[ $1 == xdp_fast_path ]]; then
    echo --features xdp
  fi
}
echo "== fuzz build"
for target in "${TARGETS[@]}"; do
  # shellcheck disable=SC2046 # flags_for prints words to split
  cargo fuzz build "${FUZZ_FLAGS[@]}" $(flags_for "$target") "$target"
done

export RUST_BACKTRACE=1
log_dir=fuzz/artifacts/logs
mkdir -p "$log_dir"
passed=0
failed=0
skipped=0
for target in "${TARGETS[@]}"; do
  seconds=$(seconds_for "$target")
  log="$log_dir/$target.log"
  echo "== fuzz $target for ${seconds}s (log: dataplane/$log)"
  set +e
  # The first directory takes what this run finds; the kept corpus is read.
  kept=()
  if [[ -d fuzz/kept/$target ]]; then
    kept=("fuzz/kept/$target")
  fi
  # shellcheck disable=SC2046 # flags_for prints words to split
  cargo fuzz run "${FUZZ_FLAGS[@]}" $(flags_for "$target") "$target" "fuzz/corpus/$target" "${kept[@]}" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -max_len="$(max_len_for "$target")" -print_final_stats=1 >"$log" 2>&1
  status=$?
  set -e
  if ((status == 0)) && grep -q "^$target: skipped" "$log"; then
    skipped=$((skipped + 1))
    echo "fuzz: $(grep -m 1 "^$target: skipped" "$log")"
    continue
  fi
  if ((status == 0)); then
    passed=$((passed + 1))
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    echo "fuzz: $target ok: ${runs:-?} inputs in ${seconds}s, no crash"
    continue
  fi
  failed=$((failed + 1))
  echo "fuzz: $target FAILED (exit $status)"
  # The panic and its backtrace if there is one, else the end of the log
  # (timeouts and out-of-memory reports).
  if grep -q 'panicked at' "$log"; then
    sed -n '/panicked at/,/Test unit written/p' "$log" | head -n 80
  else
    grep -v '^"' "$log" | tail -n 40
  fi
  artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
  if [[ -n $artifact ]]; then
    artifact=$(realpath "$artifact")
    echo "fuzz: reproducer: $artifact"
    echo "fuzz: replay it:   (cd dataplane && cargo fuzz run --sanitizer none $target $artifact)"
    echo "fuzz: minimise it: (cd dataplane && cargo fuzz tmin --sanitizer none $target $artifact)"
  fi
done

echo "fuzz: $passed passed, $failed failed, $skipped skipped"
((failed == 0))
