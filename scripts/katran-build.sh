#!/usr/bin/env bash
# Builds Katran's XDP balancer (balancer.bpf.o) outside the repository, for
# benches/xdp_fastpath.rs, which measures it beside flowgate's XDP program
# (docs/benchmarks.md, "The kernel fast path per packet"). Katran's code and
# object are never part of flowgate: they live under BUILD_DIR only.
#
# Usage: scripts/katran-build.sh SOURCE [BUILD_DIR]
#   SOURCE     a Katran checkout (a directory with katran/lib/bpf/), a bare
#              git directory (its HEAD is exported), or a git URL (cloned
#              shallow), e.g. https://github.com/facebookincubator/katran
#   BUILD_DIR  where to build (default ${TMPDIR:-/tmp}/katran-build); the object is
#              BUILD_DIR/balancer.bpf.o and its source's commit in
#              BUILD_DIR/COMMIT
# Then: KATRAN_OBJ=BUILD_DIR/balancer.bpf.o cargo bench --bench xdp_fastpath
#
# The flags are Katran's own (katran/lib/Makefile-bpf, no extra defines):
# clang -O2 -emit-llvm | llc -march=bpf.
set -euo pipefail

source=${1:?usage: scripts/katran-build.sh SOURCE [BUILD_DIR]}
build=${2:-${TMPDIR:-/tmp}/katran-build}
clang=${CLANG:-clang}
llc=${LLC:-llc}

mkdir -p "$build"
src="$build/src"
rm -rf "$src"
mkdir -p "$src"
if [ -d "$source/katran/lib/bpf" ]; then
    cp -r "$source/katran" "$src/"
    commit=$(git -C "$source" rev-parse HEAD 2>/dev/null || echo unknown)
elif [ -d "$source" ] && git --git-dir="$source" rev-parse HEAD >/dev/null 2>&1; then
    git --git-dir="$source" archive HEAD katran/lib | tar -x -C "$src"
    commit=$(git --git-dir="$source" rev-parse HEAD)
else
    git clone --depth 1 "$source" "$build/clone"
    cp -r "$build/clone/katran" "$src/"
    commit=$(git -C "$build/clone" rev-parse HEAD)
    rm -rf "$build/clone"
fi

mkdir -p "$src/include"
cp "$src"/katran/lib/linux_includes/* "$src/include/"
(
    cd "$src"
    "$clang" -I. -Iinclude -DDEBUG -D__KERNEL__ -Wno-unused-value \
        -Wno-pointer-sign -Wno-compare-distinct-pointer-types \
        -O2 -emit-llvm -c -g katran/lib/bpf/balancer.bpf.c -o - |
        "$llc" -march=bpf -filetype=obj -o "$build/balancer.bpf.o"
)
echo "$commit" >"$build/COMMIT"
echo "built $build/balancer.bpf.o from Katran $commit"
