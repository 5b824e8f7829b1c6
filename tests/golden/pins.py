#!/usr/bin/python3
"""Computes the pinned flow-hash values and Maglev tables independently of
the Rust code, from the specification of each written out here.

The unit tests `hash::tests::flow_hash_values_are_pinned` (and its
neighbours) and `table::maglev::tests::tables_of_a_fixed_backend_set_are_pinned`
compare the crate against the literals this script prints. They are what
makes two gateways (or two releases) agree on a flow's backend: if a change
to the hash, its seed, its key layout or the Maglev population makes a test
fail, that change moves live flows between backends.

Needs xxh3 from the `xxhash` package (Debian: python3-xxhash), which wraps
the reference C implementation, not the Rust crate the data plane uses.

    /usr/bin/python3 tests/golden/pins.py
"""

import ipaddress
import math

import xxhash

# "flowgate" as ASCII, big-endian: the fixed seed of every flow hash.
FLOW_HASH_SEED = 0x666C6F7767617465
# Salts of the Maglev permutation hashes: "maglevof", "maglevsk".
OFFSET_SALT = 0x6D61676C65766F66
SKIP_SALT = 0x6D61676C6576736B

TCP, UDP = 6, 17


def addr16(text):
    """16-byte address; IPv4 as IPv4-mapped (::ffff:a.b.c.d)."""
    a = ipaddress.ip_address(text)
    if a.version == 4:
        return b"\x00" * 10 + b"\xff\xff" + a.packed
    return a.packed


def hash_with_seed(data, seed):
    return xxhash.xxh3_64_intdigest(data, seed=seed)


def tuple_bytes(src, dst, sport, dport, proto):
    """The flow hash's key: src (16), dst (16), ports big-endian, protocol."""
    return (
        addr16(src)
        + addr16(dst)
        + sport.to_bytes(2, "big")
        + dport.to_bytes(2, "big")
        + bytes([proto])
    )


def flow_hash(*t):
    return hash_with_seed(tuple_bytes(*t), FLOW_HASH_SEED)


def bytes_hash(data, salt):
    return hash_with_seed(data, FLOW_HASH_SEED ^ salt)


# The tuples of the flow-hash pins (hash.rs keeps the same list).
FLOW_TUPLES = [
    ("198.18.0.1", "198.18.1.10", 40000, 80, TCP),
    ("198.18.0.2", "198.18.100.10", 5000, 53, UDP),
    ("2001:2::2", "2001:2:0:100::10", 40000, 80, TCP),
    ("2001:2::2", "2001:2:0:100::10", 5000, 53, UDP),
]
SOURCE_ADDRS = ["198.18.0.2", "2001:2::2"]
BYTES_HASHES = [(b"flowgate", 0), (b"flowgate", 0x0123456789ABCDEF)]


# --- Maglev (see dataplane/src/table/maglev.rs's module doc) ---------------

# (address, port, weight, id), deliberately not in sorted order.
MAGLEV_BACKENDS = [
    ("198.18.1.12", 8080, 3, 12),
    ("2001:2:0:1::11", 8080, 1, 13),
    ("198.18.1.11", 8080, 1, 10),
    ("198.18.1.11", 8081, 2, 11),
    ("2001:2:0:1::12", 443, 5, 14),
]
MAGLEV_SIZES = [251, 65537]
MAGLEV_SLOTS = [0, 1, 2, 100]


def coprime_skip(h, size):
    if size <= 1:
        return 1
    skip = h % (size - 1) + 1
    while math.gcd(skip, size) != 1:
        skip = 1 if skip + 1 >= size else skip + 1
    return skip


def maglev(backends, size):
    """Sorted by identity; quotas by largest remainder (ties to the earlier
    backend); turns in sorted order, each claiming the first free slot of
    the backend's permutation offset + k * skip (mod size)."""
    bs = sorted(
        ((addr16(a), p, w, i) for a, p, w, i in backends if w > 0),
        key=lambda b: b,
    )
    total = sum(b[2] for b in bs)
    quotas = [size * b[2] // total for b in bs]
    rems = sorted(
        ((size * b[2] % total, k) for k, b in enumerate(bs)),
        key=lambda r: (-r[0], r[1]),
    )
    for _, k in rems[: size - sum(quotas)]:
        quotas[k] += 1
    perms = []
    for a, p, _, _ in bs:
        ident = a + p.to_bytes(2, "big")
        perms.append(
            (
                bytes_hash(ident, OFFSET_SALT) % size,
                coprime_skip(bytes_hash(ident, SKIP_SALT), size),
            )
        )
    table = [None] * size
    steps = [0] * len(bs)
    owned = [0] * len(bs)
    filled = 0
    while filled < size:
        for k, b in enumerate(bs):
            if owned[k] == quotas[k]:
                continue
            offset, skip = perms[k]
            while True:
                slot = (offset + steps[k] * skip) % size
                steps[k] += 1
                if table[slot] is None:
                    table[slot] = b[3]
                    break
            owned[k] += 1
            filled += 1
    return table


def fnv1a64_le_u32(values):
    """FNV-1a (64-bit) over each value as 4 little-endian bytes."""
    h = 0xCBF29CE484222325
    for v in values:
        for byte in v.to_bytes(4, "little"):
            h ^= byte
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def main():
    print("flow_hash:")
    for t in FLOW_TUPLES:
        print(f"  {t}: {flow_hash(*t):#018x}")
    print("source_hash:")
    for a in SOURCE_ADDRS:
        print(f"  {a}: {hash_with_seed(addr16(a), FLOW_HASH_SEED):#018x}")
    print("bytes_hash:")
    for data, salt in BYTES_HASHES:
        print(f"  {data!r} salt {salt:#x}: {bytes_hash(data, salt):#018x}")
    print("maglev:")
    for size in MAGLEV_SIZES:
        table = maglev(MAGLEV_BACKENDS, size)
        ids = sorted(b[3] for b in MAGLEV_BACKENDS)
        counts = {i: table.count(i) for i in ids}
        slots = [(s, table[s]) for s in MAGLEV_SLOTS + [size // 2, size - 1]]
        print(f"  size {size}: digest {fnv1a64_le_u32(table):#018x}")
        print(f"    slots owned by id: {counts}")
        print(f"    entries (slot, id): {slots}")
        # A flow's slot: (hash * size) >> 64 (multiply-shift).
        chosen = [table[(flow_hash(*t) * size) >> 64] for t in FLOW_TUPLES]
        print(f"    backend id of each flow_hash tuple: {chosen}")


if __name__ == "__main__":
    main()
