#!/usr/bin/python3
"""Reads the harness's XDP counters, in one call.

    bpfstat.py ITEM...

Each ITEM is one of
  sink:NS/DEV@CPU  the sink's counters (benches/e2e/sink.bpf.c) on DEV in
                namespace NS, summed over CPUs: "translated untranslated
                wrong", then the frames of all three it counted on CPU
  prog:NS/DEV   the kernel's run-time statistics of the XDP program on
                DEV (kernel.bpf_stats_enabled=1): "run_time_ns run_cnt",
                or "0 0" when DEV has no XDP program
through the bpf(2) system call (x86_64), as bpftool would read them.
and the answer is one line, the items' numbers in order, space-separated.
"""
import ctypes
import json
import os
import subprocess
import sys

# The bpf(2) system call, directly: bpftool's `prog show` walks every
# process's descriptors for its "pids" field and takes seconds on a busy
# machine, too slow between two trials.
_libc = ctypes.CDLL(None, use_errno=True)
_NR_BPF = 321  # x86_64
BPF_MAP_LOOKUP_ELEM = 1
BPF_PROG_GET_FD_BY_ID = 13
BPF_MAP_GET_FD_BY_ID = 14
BPF_OBJ_GET_INFO_BY_FD = 15
# Offsets in struct bpf_prog_info and struct bpf_map_info (uapi/linux/bpf.h).
PROG_INFO_NR_MAP_IDS = 52
PROG_INFO_MAP_IDS = 56
PROG_INFO_RUN_TIME_NS = 192
PROG_INFO_RUN_CNT = 200
PROG_INFO_SIZE = 232
MAP_INFO_NAME = 24
MAP_INFO_SIZE = 96


def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(bytes(attr), 128)
    ret = _libc.syscall(_NR_BPF, cmd, buf, 128)
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf({cmd}): {os.strerror(err)}")
    return ret


def fd_by_id(cmd, obj_id):
    return bpf(cmd, obj_id.to_bytes(4, "little"))


def info(fd, size):
    out = ctypes.create_string_buffer(size)
    attr = fd.to_bytes(4, "little") + size.to_bytes(4, "little") + ctypes.addressof(out).to_bytes(8, "little")
    bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return out


def u32(buf, at):
    return int.from_bytes(buf.raw[at : at + 4], "little")


def u64(buf, at):
    return int.from_bytes(buf.raw[at : at + 8], "little")


def possible_cpus():
    count = 0
    for part in open("/sys/devices/system/cpu/possible").read().strip().split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


def run_json(args):
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def xdp_prog_id(ns, dev):
    links = run_json(["ip", "-n", ns, "-j", "-d", "link", "show", "dev", dev])
    for link in links:
        xdp = link.get("xdp") or {}
        prog = xdp.get("prog") or {}
        if "id" in prog:
            return prog["id"]
        # Several programs attached (generic and native): take the first.
        for attached in xdp.get("attached", []):
            if "prog" in attached:
                return attached["prog"]["id"]
    return None


def prog_stats(ns, dev):
    prog = xdp_prog_id(ns, dev)
    if prog is None:
        return [0, 0]
    fd = fd_by_id(BPF_PROG_GET_FD_BY_ID, prog)
    try:
        i = info(fd, PROG_INFO_SIZE)
        return [u64(i, PROG_INFO_RUN_TIME_NS), u64(i, PROG_INFO_RUN_CNT)]
    finally:
        os.close(fd)


def map_ids(prog):
    fd = fd_by_id(BPF_PROG_GET_FD_BY_ID, prog)
    try:
        n = u32(info(fd, PROG_INFO_SIZE), PROG_INFO_NR_MAP_IDS)
        ids = (ctypes.c_uint32 * max(n, 1))()
        attr_info = bytearray(PROG_INFO_SIZE)
        attr_info[PROG_INFO_NR_MAP_IDS : PROG_INFO_NR_MAP_IDS + 4] = n.to_bytes(4, "little")
        attr_info[PROG_INFO_MAP_IDS : PROG_INFO_MAP_IDS + 8] = ctypes.addressof(ids).to_bytes(8, "little")
        out = ctypes.create_string_buffer(bytes(attr_info), PROG_INFO_SIZE)
        attr = fd.to_bytes(4, "little") + PROG_INFO_SIZE.to_bytes(4, "little") + ctypes.addressof(out).to_bytes(8, "little")
        bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
        return list(ids)[:n]
    finally:
        os.close(fd)


def per_cpu_u64(map_fd, key, cpus):
    value = (ctypes.c_uint64 * cpus)()
    k = ctypes.c_uint32(key)
    attr = (
        map_fd.to_bytes(4, "little")
        + bytes(4)
        + ctypes.addressof(k).to_bytes(8, "little")
        + ctypes.addressof(value).to_bytes(8, "little")
        + bytes(8)
    )
    bpf(BPF_MAP_LOOKUP_ELEM, attr)
    return list(value)


def sink_counts(ns, dev, cpu):
    prog = xdp_prog_id(ns, dev)
    if prog is None:
        sys.exit(f"bpfstat: no XDP program on {ns}/{dev}")
    cpus = possible_cpus()
    for map_id in map_ids(prog):
        fd = fd_by_id(BPF_MAP_GET_FD_BY_ID, map_id)
        try:
            name = info(fd, MAP_INFO_SIZE).raw[MAP_INFO_NAME : MAP_INFO_NAME + 16].split(b"\0")[0]
            if name != b"counts":
                continue
            values = [per_cpu_u64(fd, key, cpus) for key in range(3)]
        finally:
            os.close(fd)
        totals = [sum(v) for v in values]
        on_cpu = sum(v[cpu] for v in values if cpu < len(v))
        return totals + [on_cpu]
    sys.exit(f"bpfstat: the program on {ns}/{dev} has no map 'counts'")


def main():
    numbers = []
    for item in sys.argv[1:]:
        kind, _, where = item.partition(":")
        ns, _, dev = where.partition("/")
        if kind == "sink":
            dev, _, cpu = dev.partition("@")
            numbers += sink_counts(ns, dev, int(cpu or 0))
        elif kind == "prog":
            numbers += prog_stats(ns, dev)
        else:
            sys.exit(__doc__)
    print(" ".join(str(n) for n in numbers))


if __name__ == "__main__":
    main()
