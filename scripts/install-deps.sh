#!/usr/bin/env bash
# Installs what building and testing flowgate needs, and nothing twice.
# Debian packages come from apt; everything else comes from cargo.
set -euo pipefail

# Build and test needs:
# - the AF_XDP build (libxdp, libbpf inside xsk-rs) needs clang, llvm,
#   libelf, zlib, libpcap, pkg-config and m4;
# - our XDP program is compiled with clang against libbpf's and the
#   kernel's UAPI headers (libbpf-dev, linux-libc-dev);
# - the namespace tests, the demo and the end-to-end harness need iproute2,
#   ethtool, nftables (the kernel-NAT baseline), ping, curl, wrk, nginx
#   (real HTTP backends), python3 (the UDP service; with scapy, which
#   tests/vlan_netns.rs sends tagged frames with) and trafgen
#   (netsniff-ng, the packet generator);
# - the instruction-count benches need valgrind; the XDP bench loads
#   Katran's balancer beside flowgate's program with bpftool;
# - tests/dashboards.rs checks the alerting rules with promtool (`check rules`,
#   `test rules`), which Debian ships in the prometheus package (on a box
#   that runs systemd the package also enables its server:
#   `systemctl disable --now prometheus` if that is not wanted);
# - tests/systemd.rs checks configs/flowgate.service with systemd-analyze
#   (the systemd package; nothing is started), and tests/conventions.rs
#   renders the man pages with groff (groff-base);
# - rules from etcd: the etcd-client crate's build runs protoc
#   (protobuf-compiler) on protos that import protobuf's own
#   descriptor.proto and struct.proto (libprotobuf-dev: protoc only
#   recommends it, and recommends are not installed here), and tests/fleet_*.rs start a real etcd server on
#   loopback (etcd-server; etcd-client gives etcdctl, to look at the store
#   by hand);
# - VIPs announced by BGP: tests/fleet_bgp_netns.rs runs a real BIRD 2
#   (bird2) in each namespace, with its own config, socket and pid file
#   (on a box that runs systemd the package also enables its server:
#   `systemctl disable --now bird` if that is not wanted).
PACKAGES=(clang llvm libelf-dev zlib1g-dev libpcap-dev pkg-config m4 libbpf-dev linux-libc-dev
  iproute2 ethtool nftables iputils-ping curl wrk nginx-light python3 python3-scapy netsniff-ng tcpdump valgrind bpftool
  prometheus systemd groff-base protobuf-compiler libprotobuf-dev etcd-server etcd-client bird2)

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

# libxdp and our loader want a BPF filesystem for pinned objects.
if ! mountpoint -q /sys/fs/bpf 2>/dev/null && [ "$(id -u)" -eq 0 ]; then
  mount -t bpf bpf /sys/fs/bpf 2>/dev/null || echo "note: could not mount bpffs at /sys/fs/bpf" >&2
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install a Rust toolchain (rustup) first" >&2
  exit 1
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
