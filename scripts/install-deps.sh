#!/usr/bin/env bash
# Installs what building and testing flowgate needs, and nothing twice.
# Debian packages come from apt; everything else comes from cargo.
set -euo pipefail

# Build and test needs. The AF_XDP build (libxdp, libbpf) needs clang, llvm,
# libelf, zlib, libpcap, pkg-config and m4; the namespace tests need
# iproute2; the instruction-count benches need valgrind.
PACKAGES=(clang llvm libelf-dev zlib1g-dev libpcap-dev pkg-config m4 iproute2 valgrind)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install a Rust toolchain (rustup) first" >&2
  exit 1
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
