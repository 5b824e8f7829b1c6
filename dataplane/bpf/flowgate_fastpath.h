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
//
// A connection of the SYN proxy (bpf/flowgate_synproxy.h) also has its
// numbers translated (`synproxy` set): the client was given the cookie as
// the gateway's initial sequence number, the SYN-ACK's timestamp as the
// gateway's clock and its window scale as the one to read windows with,
// so toward the client the sequence number and TSval get the entry's
// additions and the window is rescaled from the backend's scale to the
// client's, and toward the backend the acknowledgement number and TSecr
// get theirs (dataplane/src/synproxy/seq.rs is the worker's same
// translation). The program translates only what it can exactly: options
// that are none, or NOP NOP TIMESTAMP alone (Linux's layout on every
// segment after the handshake when timestamps are on). Any other layout
// (SACK blocks, which name backend data and would need translating too;
// a timestamp elsewhere) and a segment to the backend without ACK go up
// to the worker (FAST_UP_SYNPROXY).

#ifndef FLOWGATE_FASTPATH_H
#define FLOWGATE_FASTPATH_H

#include <linux/bpf.h>
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

// entry.synproxy
#define FAST_SYNPROXY_NONE 0	 // not proxied: nothing more
#define FAST_SYNPROXY_TRANSLATE 1 // a SYN-proxied connection: translate

// The TCP options of a proxied segment the program translates: the
// timestamps option, after two NOPs, at the start of the options.
#define FAST_TCP_ACK 0x10
#define FAST_TCP_NOP 1
#define FAST_TCP_TIMESTAMP 8
#define FAST_TCP_TIMESTAMP_LEN 10
#define FAST_TS_AT 22 // where that option starts in the TCP header

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
	__u8 synproxy;		// 71: FAST_SYNPROXY_NONE / FAST_SYNPROXY_TRANSLATE
	__u8 eth_dst[6];	// 72: the next hop
	__u8 eth_src[6];	// 78: the egress interface's MAC
	__u16 egress_port;	// 84: port index; key of `fast_tx_ports`
	// 86: to a backend, the client's source MAC the entry was made with:
	// a frame from another MAC (the client's router changed) goes up, so
	// that the worker follows it as the pipeline does. Zero: not checked.
	__u8 client_mac[6];
	// 92: a proxied connection: added (modulo 2^32) to the sequence
	// number toward the client, to the acknowledgement number toward the
	// backend. Host byte order.
	__u32 seq_add;
	// 96: added to TSval toward the client, to TSecr toward the backend.
	__u32 ts_add;
	// 100: toward the client, the window is rescaled from the backend's
	// scale to the client's when they differ (each at most 14).
	__u8 wscale_backend;
	__u8 wscale_client;	// 101
	__u16 pad2;		// 102
	__u64 last_seen_ns;	// 104: bpf_ktime_get_coarse_ns() of the last packet
	__u64 packets;		// 112
	__u64 bytes;		// 120: whole frames, as the workers count
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
	// The owner hash's seed: drawn at random by each daemon process, so
	// that no client can choose addresses and ports that all land on
	// one worker.
	__u64 owner_seed;
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
// address (two 64-bit words) and port (as loaded from the packet), from
// the instance's `owner_seed`.
static inline __u32 fast_owner(const __u64 *addr, __be16 port, __u32 partitions, __u64 seed)
{
	__u64 h = seed;

	h = fast_mix(h, addr[0]);
	h = fast_mix(h, addr[1]);
	h = fast_mix(h, (__u64)port);
	return (__u32)(((h >> 32) * (__u64)partitions) >> 32);
}

// Where a proxied segment's timestamps option starts (FAST_TS_AT), 0 if
// it has no options, or -1 if the program cannot translate it exactly
// (the worker will). `tcp` is the TCP header, whose length the caller
// checked against the packet; `to_backend` the entry's direction.
static __always_inline int fast_synproxy_layout(__u8 *tcp, void *end, int to_backend)
{
	__u32 header_len;

	if ((void *)(tcp + 20) > end)
		return -1;
	// Only an ACK's acknowledgement number is translated (seq.rs); a
	// segment without ACK is the worker's.
	if (to_backend && !(tcp[13] & FAST_TCP_ACK))
		return -1;
	header_len = (tcp[12] >> 4) * 4;
	if (header_len == 20)
		return 0;
	if (header_len != 32 || (void *)(tcp + 32) > end)
		return -1;
	if (tcp[20] != FAST_TCP_NOP || tcp[21] != FAST_TCP_NOP ||
	    tcp[FAST_TS_AT] != FAST_TCP_TIMESTAMP ||
	    tcp[FAST_TS_AT + 1] != FAST_TCP_TIMESTAMP_LEN)
		return -1;
	return FAST_TS_AT;
}

// Adds `add` to the big-endian 32-bit word at `p`; its share of the
// checksum change, Σ(~m + m') over the word as one 32-bit value, as the
// worker sums it (wire::checksum::ChecksumDelta::bytes).
static __always_inline __u64 fast_add_be32(__u8 *p, __u32 add)
{
	__u32 old = ((__u32)p[0] << 24) | ((__u32)p[1] << 16) | ((__u32)p[2] << 8) | p[3];
	__u32 new = old + add;

	p[0] = new >> 24;
	p[1] = new >> 16;
	p[2] = new >> 8;
	p[3] = new;
	return (__u64)(__u32)~old + new;
}

// A window of `old` in scale `from` said in scale `to`: as many bytes, or
// the most 16 bits can say (seq.rs's rescale).
static __always_inline __u32 fast_rescale(__u32 old, __u32 from, __u32 to)
{
	__u64 bytes = (__u64)old << (from & 15);
	__u64 window = bytes >> (to & 15);

	return window > 0xffff ? 0xffff : (__u32)window;
}

// The flags word of fast_synproxy(): the direction and the window scales.
#define FAST_SYNPROXY_TO_BACKEND 0x1
#define FAST_SYNPROXY_WSCALE_BACKEND_SHIFT 8
#define FAST_SYNPROXY_WSCALE_CLIENT_SHIFT 16

// Translates a proxied segment whose options fast_synproxy_layout() found
// at `ts_at`, in place; returns the TCP checksum's change folded to 16
// bits (0 only when nothing changed at all). The terms are the worker's:
// each 32-bit number as one 32-bit word, the window as a 16-bit one.
static __always_inline __u16 fast_synproxy_translate(__u8 *tcp, void *end, int ts_at,
						     __u32 flags, __u32 seq_add, __u32 ts_add)
{
	int to_backend = flags & FAST_SYNPROXY_TO_BACKEND;
	__u32 from = (flags >> FAST_SYNPROXY_WSCALE_BACKEND_SHIFT) & 0xff;
	__u32 to = (flags >> FAST_SYNPROXY_WSCALE_CLIENT_SHIFT) & 0xff;
	__u64 sum;

	if ((void *)(tcp + 20) > end)
		return 0;
	// Toward the backend: the acknowledgement (bytes 8..12) and TSecr
	// (the option's second word); toward the client: the sequence number
	// (4..8), the window (14..16) and TSval (the first).
	sum = fast_add_be32(tcp + (to_backend ? 8 : 4), seq_add);
	if (!to_backend && from != to) {
		__u32 old = ((__u32)tcp[14] << 8) | tcp[15];
		__u32 window = fast_rescale(old, from, to);

		tcp[14] = window >> 8;
		tcp[15] = window;
		sum += (__u64)((~old) & 0xffff) + window;
	}
	if (ts_at == FAST_TS_AT) {
		if ((void *)(tcp + 32) > end)
			return 0;
		sum += fast_add_be32(tcp + FAST_TS_AT + (to_backend ? 6 : 2), ts_add);
	}
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

// A proxied segment to forward, whose TCP header starts `l4_off` bytes
// into the frame, in the direction and with the window scales of `flags`
// (FAST_SYNPROXY_*): translated in place with its checksum patched (0), or
// -1 and the frame untouched when the program cannot translate it exactly
// (the worker will). A global function: the verifier checks it once on
// its own rather than along every path of the fast path (inlined, the
// program no longer verified within the kernel's 1 000 000
// instructions), and it calls no helper that changes the frame, so the
// caller's packet pointers stay good after it. The order of the two
// checksum patches (this one before the address rewrite's) does not
// change the result: both are ones'-complement additions, and the sum is
// zero only if nothing changed at all.
__attribute__((noinline)) int fast_synproxy(struct xdp_md *ctx, __u32 l4_off, __u32 flags,
					    __u32 seq_add, __u32 ts_add)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u8 *tcp;
	__u32 check, sum;
	int ts_at;

	if (!ctx || l4_off > 127)
		return -1;
	// A mask the verifier sees (the compiler would fold the test away).
	asm volatile("%0 &= 127" : "+r"(l4_off));
	tcp = data + l4_off;
	if ((void *)(tcp + 20) > end)
		return -1;
	ts_at = fast_synproxy_layout(tcp, end, flags & FAST_SYNPROXY_TO_BACKEND);
	if (ts_at < 0)
		return -1;
	sum = fast_synproxy_translate(tcp, end, ts_at, flags, seq_add, ts_add);
	// RFC 1624 eqn. 3, as csum_patch: ~(~HC + Σ(~m + m')).
	check = ((__u32)tcp[16] << 8) | tcp[17];
	sum += (~check) & 0xffff;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	check = ~sum & 0xffff;
	tcp[16] = check >> 8;
	tcp[17] = check;
	return 0;
}

#endif
