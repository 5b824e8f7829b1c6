# shellcheck shell=bash
# Network namespaces the demos make, removed with what runs in them.

# Removes each named namespace that exists, first stopping the processes in
# it (SIGTERM, up to 5 s, then SIGKILL). Safe for names that do not exist:
# it is how a killed run is cleaned up.
netns_remove() {
  local ns pids
  for ns in "$@"; do
    [ -e "/run/netns/$ns" ] || continue
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    if [ -n "$pids" ]; then
      # shellcheck disable=SC2086
      kill -TERM $pids 2>/dev/null || true
      for _ in $(seq 1 50); do
        [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && break
        sleep 0.1
      done
      pids=$(ip netns pids "$ns" 2>/dev/null || true)
      # shellcheck disable=SC2086
      [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
    fi
    ip netns del "$ns" 2>/dev/null || true
  done
}
