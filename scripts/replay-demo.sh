#!/usr/bin/env bash
# The offline demo: builds flowgate and runs a recorded traffic capture
# through the demo rules (configs/demo.toml), printing what the gateway
# would do with every frame and where each connection would go. Needs no
# root and no namespaces; scripts/demo.sh runs the live gateway instead.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo build --release --locked --bin flowgate

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "== checking configs/demo.toml"
target/release/flowgate check --config configs/demo.toml
echo
echo "== replaying configs/demo-traffic.pcap through it"
target/release/flowgate replay --config configs/demo.toml \
  --in configs/demo-traffic.pcap --out "$out/transmitted.pcap" --passed "$out/passed.pcap"
