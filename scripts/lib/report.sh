# shellcheck shell=bash
# Printing helpers for scripts/demo.sh.

# A section heading.
say() {
  printf '\n\033[1m== %s\033[0m\n' "$*"
}

# spread TITLE FILE WEIGHTS...: how the answers in FILE (one backend name a
# line; anything else counts as failed) spread over the backends, beside the
# share each one's weight asks for. WEIGHTS are NAME:WEIGHT pairs.
spread() {
  local title=$1 file=$2
  shift 2
  awk -v title="$title" -v weights="$*" '
    { total++; got[$NF]++ }
    END {
      n = split(weights, pairs, " ")
      for (i = 1; i <= n; i++) { split(pairs[i], kv, ":"); name[i] = kv[1]; w[i] = kv[2]; wsum += kv[2] }
      answered = 0
      for (i = 1; i <= n; i++) answered += got[name[i]]
      printf "%s: %d requests, %d answered, %d failed\n", title, total, answered, total - answered
      printf "    %-8s %6s %9s %7s %7s\n", "backend", "weight", "expected", "got", "share"
      for (i = 1; i <= n; i++) {
        share = answered ? 100 * got[name[i]] / answered : 0
        printf "    %-8s %6d %8.1f%% %7d %6.1f%%\n", name[i], w[i], 100 * w[i] / wsum, got[name[i]], share
      }
    }' "$file"
}

# failed FILE NAMES...: how many lines of FILE are not one of NAMES.
failed() {
  local file=$1
  shift
  awk -v names="$*" 'BEGIN { n = split(names, a, " "); for (i = 1; i <= n; i++) ok[a[i]] = 1 }
    !($NF in ok) { bad++ } END { print bad + 0 }' "$file"
}
