// SPDX-License-Identifier: Apache-2.0
//
// The layouts flowgate's XDP program shares with userspace for the kernel
// fast path: the entry of the connection cache, its key, the cache's
// configuration, and the two hashes both sides compute. Rust mirrors every
// offset in dataplane/src/fastpath/layout.rs, and tests check both agree
// (offsets read from this file; entries written from Rust, found by the
// program through BPF_PROG_TEST_RUN). Change both together.
//
// The cache (`fast_flows`) is a BPF_F_MMAPABLE array of entries used as an
// open-addressing hash table, cut into one partition per worker. A worker
// maps it into its memory and writes only its own partition, so no two
// writers ever race; the program only reads it, and adds to the counters.
//
// - Partition: the owner of the connection, `owner_hash(client address,
//   client port)` scaled to the partition count. The client end is the
//   source of a packet to a service and the destination of a reply, as the
//   program's ownership check already tells.
// - Slot: the high 32 bits of `key_hash(key)` masked to the partition's
//   slots (a power of two), then linear probing, at most
//   FLOWGATE_FAST_PROBES slots.
// - Publication: a seqlock. The writer makes `seq` odd, writes the fields,
//   then makes `seq` even with release ordering; the program reads `seq`,
//   the fields it needs, then `seq` again, and takes the entry only if
//   both reads are the same even number. x86's ordering of loads makes
//   compiler barriers enough on the reader's side.
//
// One entry serves one direction of a connection: client → VIP (rewrite
// the destination to the backend) or backend → client (rewrite the source
// back to the VIP). A connection has two.

#ifndef FLOWGATE_FASTPATH_H
#define FLOWGATE_FASTPATH_H

#include <linux/types.h>

// Slots probed from a key's home slot, at most.
#define FLOWGATE_FAST_PROBES 8

// Bytes per entry: two cache lines.
#define FLOWGATE_FAST_ENTRY_SIZE 128

// entry.state
#define FAST_EMPTY 0 // never used
#define FAST_LIVE 1  // holds a connection's direction
#define FAST_FREED 2 // held one; free for reuse, probing goes on past it

// entry.rewrite
#define FAST_REWRITE_SRC 0 // backend → client: source becomes VIP:port
#define FAST_REWRITE_DST 1 // client → VIP: destination becomes backend:port

// A direction of a connection, as the packet carries it. Addresses are
// 16 bytes, IPv4-mapped for IPv4, like `struct traffic_key`; ports in
// network byte order. 40 bytes, the padding always zero.
struct fast_key {
	__u8 src[16];
	__u8 dst[16];
	__be16 sport;
	__be16 dport;
	__u8 protocol;
	__u8 pad[3];
};

// One direction of one connection. Offsets are in the comments; userspace
// writes everything up to `last_seen_ns`, the program writes
// `last_seen_ns`, `packets` and `bytes`.
struct fast_entry {
	__u32 seq;		// 0: odd while being written
	__u32 state;		// 4: FAST_EMPTY / FAST_LIVE / FAST_FREED
	struct fast_key key;	// 8
	__u8 new_addr[16];	// 48: written over the source or destination
	__be16 new_port;	// 64
	// Ones'-complement sums, folded to 16 bits, host byte order:
	// RFC 1624's Σ(~m + m') for the words this rewrite changes.
	__u16 l3_delta;		// 66: IPv4 header: the address and the TTL
	__u16 l4_delta;		// 68: TCP/UDP: the address and the port
	__u8 rewrite;		// 70: FAST_REWRITE_SRC / FAST_REWRITE_DST
	__u8 pad0;		// 71
	__u8 eth_dst[6];	// 72: the next hop
	__u8 eth_src[6];	// 78: the egress interface's MAC
	__u16 egress_port;	// 84: port index; key of `fast_tx_ports`
	// 86: to a backend, the client's source MAC the entry was made with:
	// a frame from another MAC (the client's router changed) goes up, so
	// that the worker follows it as the pipeline does. Zero: not checked.
	__u8 client_mac[6];
	__u32 pad2;		// 92
	__u64 last_seen_ns;	// 96: bpf_ktime_get_ns() of the last packet
	__u64 packets;		// 104
	__u64 bytes;		// 112: whole frames, as the workers count
	__u64 pad4;		// 120
};

// The fast path's settings, one per program instance (`fast_config`).
// `partitions` 0: the fast path is off, and the program does exactly what
// it does without one.
//
// `egress_ready`: bit p set when a frame this instance sends out of port p
// (XDP_TX when p is this interface, bpf_redirect_map otherwise) really
// leaves. In native mode the kernel drops, and counts only in the driver's
// receive drops, a frame redirected to a device that cannot transmit XDP
// frames (no NETDEV_XDP_ACT_NDO_XMIT: a veth whose peer has neither an XDP
// program nor GRO, for instance, which also fails XDP_TX); the daemon asks
// the kernel which devices can and keeps these bits equal to the answer.
// A packet whose entry names a port without its bit goes to the worker
// (FAST_NO_EGRESS).
struct fast_config {
	__u32 partitions;	// one per worker
	__u32 slot_mask;	// slots per partition - 1 (a power of two - 1)
	__u32 port_index;	// this interface's port index: XDP_TX to it
	__u32 pad;
	__u64 egress_ready;	// bit per port index (ports 0..63)
};

#define FAST_MIX 0x9E3779B97F4A7C15ULL

// One step of both hashes: fold a 64-bit word in.
static inline __u64 fast_mix(__u64 h, __u64 word)
{
	h = (h ^ word) * FAST_MIX;
	return h ^ (h >> 29);
}

// The hash of a key: its five 64-bit words, as the CPU loads them.
static inline __u64 fast_key_hash(const __u64 *words)
{
	__u64 h = 0x666c6f7767617465ULL; // "flowgate"

	h = fast_mix(h, words[0]);
	h = fast_mix(h, words[1]);
	h = fast_mix(h, words[2]);
	h = fast_mix(h, words[3]);
	h = fast_mix(h, words[4]);
	return h;
}

// The partition (worker) owning a connection: a hash of the client's
// address (two 64-bit words) and port (as loaded from the packet).
static inline __u32 fast_owner(const __u64 *addr, __be16 port, __u32 partitions)
{
	__u64 h = 0x6f776e6572736869ULL; // "ownershi"

	h = fast_mix(h, addr[0]);
	h = fast_mix(h, addr[1]);
	h = fast_mix(h, (__u64)port);
	return (__u32)(((h >> 32) * (__u64)partitions) >> 32);
}

#endif
