// SPDX-License-Identifier: Apache-2.0
//
// The SYN proxy's XDP half: SYNs to a proxied service are answered here
// with a SYN cookie SYN-ACK from the VIP (XDP_TX), and the client's ACK is
// checked here, so a SYN flood never reaches the AF_XDP rings.
//
// A service is proxied when its `synproxy_services` entry says `on`, or
// `auto` while the SYN rate the program measures for it is above the
// entry's threshold (see synproxy_active). Per packet to such a service:
//
//   - SYN alone: answered with a cookie SYN-ACK (counted `cookies_sent`).
//     The cookie is the gateway's own (synproxy_cookie), not the
//     kernel's: its helpers (bpf_tcp_raw_*_syncookie_*) may be called
//     only from GPL-licensed programs, and this one is Apache-2.0. Bits
//     0-1: the index of the client's MSS, rounded down, in the kernel's
//     cookie MSS tables; bits 2-3: the low bits of the 64-second time
//     slot it was made in; bits 4-31: SipHash-2-4, keyed with the
//     daemon's random `synproxy_secret`, of the 4-tuple, the client's
//     initial sequence number and the slot. An ACK is valid in the slot
//     of its cookie and the next one (64 to 128 s). When the client
//     offers timestamps, the SYN-ACK's TSval carries what the cookie
//     cannot (Linux's idea): bits 0-3 the client's window scale (15:
//     none), bit 4 SACK permitted; the rest is the clock in
//     milliseconds. Without timestamps the SYN-ACK offers no window
//     scaling and no SACK (nowhere to keep them); the MSS survives. The SYN-ACK's window is 0: the
//     client sends its ACK and nothing more until the worker, once the
//     backend has answered, opens the window with the backend's.
//   - SYN with FIN, RST or ACK, or a SYN with IPv4 options or IPv6
//     extension headers: dropped (`syn_refused`).
//   - Anything else from a connection this program let through before
//     (`synproxy_conns`, an LRU of client 4-tuples): on, as usual.
//   - An ACK that is none of those: its cookie is checked. Valid: the 4-tuple is remembered,
//     the frame is marked (SYNPROXY_MARK in the TCP header's reserved
//     bits, checksum patched) and goes up to the worker, which opens the
//     backend side (counted `cookies_valid`). Invalid: dropped
//     (`cookies_invalid`), except for an `auto` service, where it goes up
//     as it is: a connection made while the proxy was off is not in
//     `synproxy_conns` and has no cookie, and the worker's flow table
//     knows it (the worker drops one it does not know).
//   - A bare ACK (no payload) whose cookie is valid one sequence number
//     back: a zero-window probe (seq = snd_una - 1, the ISN) from a
//     client whose handshake ACK was lost ahead of this program, e.g. in
//     a receive queue a flood keeps full. Its sequence number is advanced
//     by one and it goes up as the ACK it stands for (counted
//     `cookies_valid` and `probes_valid`); without this the connection
//     would hang, every probe failing the check, until the client gives
//     up. A forged bare ACK thus gets two tries at the cookie's 28 hash
//     bits instead of one (1 in 2^27 per guess, within its slot).
//   - A frame that comes in with SYNPROXY_MARK set: dropped
//     (`mark_forged`), so that a marked frame a worker sees is one this
//     program marked.
//
// The marks, the TSval layout and the counters are mirrored in
// dataplane/src/synproxy/ (Rust); change both together.

#ifndef FLOWGATE_SYNPROXY_H
#define FLOWGATE_SYNPROXY_H

#include <linux/types.h>

// TCP option kinds and lengths (include/net/tcp.h, not in the UAPI).
#define SYNPROXY_OPT_EOL 0
#define SYNPROXY_OPT_NOP 1
#define SYNPROXY_OPT_MSS 2
#define SYNPROXY_OPT_WINDOW 3
#define SYNPROXY_OPT_SACK_PERM 4
#define SYNPROXY_OPT_TIMESTAMP 8
#define SYNPROXY_OPTLEN_MSS 4
#define SYNPROXY_OPTLEN_WINDOW 3
#define SYNPROXY_OPTLEN_SACK_PERM 2
#define SYNPROXY_OPTLEN_TIMESTAMP 10
#define SYNPROXY_TCP_ACK 0x10

// Client connections `synproxy_conns` remembers (an LRU, preallocated).
#define FLOWGATE_MAX_SYNPROXY_CONNECTIONS 262144

// synproxy_service.mode
#define SYNPROXY_OFF 0
#define SYNPROXY_ON 1
#define SYNPROXY_AUTO 2

// What synproxy_decide and synproxy_check tell their callers.
#define SYNPROXY_CONTINUE (-1) // not the proxy's: as without it
#define SYNPROXY_UP (-2)       // a marked, cookie-valid ACK: to the socket
#define SYNPROXY_ANSWER (-3)   // a SYN to answer with a cookie
// A zero-window probe standing for a lost handshake ACK: its sequence
// number to advance by one, then as SYNPROXY_UP.
#define SYNPROXY_UP_PROBE (-4)

// The bit of TCP header byte 12 (the low nibble is reserved, its lowest
// bit AccECN's) that marks a cookie-valid ACK.
#define SYNPROXY_MARK 0x04

// The SYN-ACK's TSval low byte.
#define SYNPROXY_TS_WSCALE_MASK 0x0f
#define SYNPROXY_TS_NO_WSCALE 0x0f
#define SYNPROXY_TS_SACK 0x10
#define SYNPROXY_TS_BITS 6

// What the SYN-ACK offers the client.
#define SYNPROXY_MSS4 1460
#define SYNPROXY_MSS6 1440
#define SYNPROXY_WSCALE 7
#define SYNPROXY_TTL 64

// A cookie's time slot, and how long an `auto` service checks ACKs after
// its last cookie (two slots).
#define SYNPROXY_SLOT_SHIFT 36 // 2^36 ns: 68.7 s
#define SYNPROXY_COOKIE_LIFE_NS (2ULL << SYNPROXY_SLOT_SHIFT)
#define SYNPROXY_WINDOW_NS 1000000000ULL

// Counter indices of `synproxy_counters` (dataplane/src/synproxy/xdp.rs).
enum synproxy_counter {
	SYNPROXY_COOKIES_SENT = 0,
	SYNPROXY_COOKIES_VALID = 1,
	SYNPROXY_COOKIES_INVALID = 2,
	SYNPROXY_SYN_REFUSED = 3,
	SYNPROXY_MARK_FORGED = 4,
	SYNPROXY_ACK_UNCHECKED = 5,
	SYNPROXY_PROBES_VALID = 6,
	SYNPROXY_COUNTER_COUNT = 7,
};

// A proxied service: its mode and `auto`'s threshold (written by the
// loader), and the SYN rate measure (written here). 40 bytes.
struct synproxy_service {
	__u32 mode;
	__u32 auto_syns_per_s;
	__u64 window_start_ns;
	__u64 window_syns;
	__u64 last_window_syns;
	__u64 last_cookie_ns;
};

// The cookies' key (written by the daemon, random).
struct synproxy_secret {
	__u64 k0;
	__u64 k1;
};

// A client 4-tuple (addresses IPv4-mapped for IPv4), 36 bytes.
struct synproxy_conn_key {
	__u8 src[16];
	__u8 dst[16];
	__be16 sport;
	__be16 dport;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FLOWGATE_MAX_SERVICE_KEYS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct traffic_key);
	__type(value, struct synproxy_service);
} synproxy_services SEC(".maps");

// Connections whose ACK was valid. Preallocated, fixed size: a flood of
// valid handshakes evicts the least recently seen, memory never grows.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FLOWGATE_MAX_SYNPROXY_CONNECTIONS);
	__type(key, struct synproxy_conn_key);
	__type(value, __u8);
} synproxy_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct synproxy_secret);
} synproxy_secret SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SYNPROXY_COUNTER_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} synproxy_counters SEC(".maps");

static __always_inline void synproxy_count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&synproxy_counters, &index);

	if (value)
		*value += 1;
}

static __always_inline int synproxy_drop(__u32 reason)
{
	synproxy_count(reason);
	return XDP_DROP;
}

// The kernel's cookie MSS tables (net/ipv4/syncookies.c,
// net/ipv6/syncookies.c): the index of `mss` in them.
static __always_inline __u32 synproxy_mss_index(__u32 mss, int v6)
{
	if (v6)
		return mss >= 8940 ? 3 : mss >= 1440 ? 2 : mss >= 1420 ? 1 : 0;
	return mss >= 1460 ? 3 : mss >= 1440 ? 2 : mss >= 1300 ? 1 : 0;
}

#define SYNPROXY_ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SYNPROXY_SIPROUND                                                                  \
	do {                                                                               \
		v0 += v1;                                                                  \
		v1 = SYNPROXY_ROTL(v1, 13);                                                \
		v1 ^= v0;                                                                  \
		v0 = SYNPROXY_ROTL(v0, 32);                                                \
		v2 += v3;                                                                  \
		v3 = SYNPROXY_ROTL(v3, 16);                                                \
		v3 ^= v2;                                                                  \
		v0 += v3;                                                                  \
		v3 = SYNPROXY_ROTL(v3, 21);                                                \
		v3 ^= v0;                                                                  \
		v2 += v1;                                                                  \
		v1 = SYNPROXY_ROTL(v1, 17);                                                \
		v1 ^= v2;                                                                  \
		v2 = SYNPROXY_ROTL(v2, 32);                                                \
	} while (0)

#define SYNPROXY_WORDS 6

// SipHash-2-4 of SYNPROXY_WORDS 64-bit words.
static __always_inline __u64 synproxy_siphash(struct synproxy_secret *key, __u64 *m)
{
	__u64 v0 = key->k0 ^ 0x736f6d6570736575ULL;
	__u64 v1 = key->k1 ^ 0x646f72616e646f6dULL;
	__u64 v2 = key->k0 ^ 0x6c7967656e657261ULL;
	__u64 v3 = key->k1 ^ 0x7465646279746573ULL;
	__u64 last = (__u64)(SYNPROXY_WORDS * 8) << 56;
	int i;

#pragma unroll
	for (i = 0; i < SYNPROXY_WORDS; i++) {
		v3 ^= m[i];
		SYNPROXY_SIPROUND;
		SYNPROXY_SIPROUND;
		v0 ^= m[i];
	}
	v3 ^= last;
	SYNPROXY_SIPROUND;
	SYNPROXY_SIPROUND;
	v0 ^= last;
	v2 ^= 0xff;
	SYNPROXY_SIPROUND;
	SYNPROXY_SIPROUND;
	SYNPROXY_SIPROUND;
	SYNPROXY_SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

// The cookie of (4-tuple in `key`, the client's initial sequence `isn`)
// in time slot `slot` with MSS index `mss_index`; 0 and *ok 0 without a
// secret.
static __always_inline __u32 synproxy_cookie(struct synproxy_conn_key *key, __u32 isn,
					     __u64 slot, __u32 mss_index, __u64 *m, int *ok)
{
	__u32 zero = 0;
	struct synproxy_secret *secret = bpf_map_lookup_elem(&synproxy_secret, &zero);
	__u64 h;

	*ok = 0;
	if (!secret || (!secret->k0 && !secret->k1))
		return 0;
	__builtin_memcpy(&m[0], key->src, 16);
	__builtin_memcpy(&m[2], key->dst, 16);
	m[4] = (__u64)key->sport | ((__u64)key->dport << 16) | ((__u64)isn << 32);
	m[5] = slot;
	h = synproxy_siphash(secret, m);
	*ok = 1;
	return ((__u32)h & ~0xfU) | (((__u32)slot & 3) << 2) | (mss_index & 3);
}

// Whether `cookie` is one this program made for (4-tuple, `isn`) in the
// current time slot or the one before.
static __always_inline int synproxy_cookie_valid(struct synproxy_conn_key *key, __u32 isn,
						 __u32 cookie, __u64 now)
{
	__u64 slot = now >> SYNPROXY_SLOT_SHIFT;
	__u64 m[SYNPROXY_WORDS];
	int ok;

	if ((slot & 3) != ((cookie >> 2) & 3)) {
		slot -= 1;
		if ((slot & 3) != ((cookie >> 2) & 3))
			return 0;
	}
	return synproxy_cookie(key, isn, slot, cookie & 3, m, &ok) == cookie && ok;
}

// Whether SYNs to `svc` are answered now. Counts this SYN for `auto`:
// a one-second window, compared with the threshold together with the
// window before it, so the proxy stays on about a second after the rate
// falls. Updates race between CPUs; a lost update only blurs the rate.
static __always_inline int synproxy_active(struct synproxy_service *svc, __u64 now)
{
	__u64 syns;

	if (svc->mode == SYNPROXY_ON)
		return 1;
	if (now - svc->window_start_ns >= SYNPROXY_WINDOW_NS) {
		svc->last_window_syns = now - svc->window_start_ns < 2 * SYNPROXY_WINDOW_NS
						? svc->window_syns
						: 0;
		svc->window_syns = 0;
		svc->window_start_ns = now;
	}
	syns = __sync_fetch_and_add(&svc->window_syns, 1) + 1;
	return syns > svc->auto_syns_per_s || svc->last_window_syns > svc->auto_syns_per_s;
}

// The client's SYN options.
struct synproxy_options {
	__u32 mss;     // 0: none
	__u32 wscale;  // SYNPROXY_TS_NO_WSCALE: none
	__u32 sack;
	__u32 ts;      // a timestamp option was present
	__be32 tsval;
};

#define SYNPROXY_OPT_BUF 40

// Byte `i` of the 64-byte stack buffer `buf`. The empty asm hides `i`'s
// bounds from the compiler, so the mask stays and the verifier sees an
// index below 64.
static __always_inline __u8 synproxy_byte(__u8 *buf, __u32 i)
{
	asm volatile("" : "+r"(i));
	return buf[i & 63];
}

// The option walk's state, for bpf_loop: one option per step.
struct synproxy_walk {
	__u8 buf[64];
	__u32 len;
	__u32 at;
	struct synproxy_options o;
};

// What the decision needs of a TCP frame to a service, copied out of
// it: the decision runs without the frame (see synproxy_decide).
struct synproxy_input {
	struct synproxy_conn_key key;
	struct traffic_key service;
	__u32 seq;
	__u32 ack;
	__u32 flags;  // TCP flags byte
	__u32 marked; // SYNPROXY_MARK was set
	__u32 plain;
	// An ACK alone with no payload (what a zero-window probe is).
	__u32 bare_ack;
};

// Where an answered SYN's headers are.
struct synproxy_frame_ptrs {
	void *l3;
	void *l4;
	int v6;
};

// The answer's working memory, too large for the program's stack.
struct synproxy_scratch {
	struct synproxy_walk walk;
	__u8 out[64];
	__u8 tmp[64];
	struct synproxy_conn_key key;
	struct traffic_key service;
	__u64 m[SYNPROXY_WORDS];
	struct synproxy_input in;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct synproxy_scratch);
} synproxy_scratch SEC(".maps");

// bpf_loop's context must live on the stack: it points at the walk.
struct synproxy_walk_ref {
	struct synproxy_walk *w;
};

static long synproxy_option_step(__u32 index, void *ctx)
{
	struct synproxy_walk *w = ((struct synproxy_walk_ref *)ctx)->w;
	__u32 i = w->at;
	__u8 kind, size;

	if (i >= w->len || i >= SYNPROXY_OPT_BUF)
		return 1;
	kind = synproxy_byte(w->buf, i);
	if (kind == SYNPROXY_OPT_EOL)
		return 1;
	if (kind == SYNPROXY_OPT_NOP) {
		w->at = i + 1;
		return 0;
	}
	if (i + 1 >= w->len)
		return 1;
	size = synproxy_byte(w->buf, i + 1);
	if (size < 2 || i + size > w->len)
		return 1;
	if (kind == SYNPROXY_OPT_MSS && size == SYNPROXY_OPTLEN_MSS) {
		w->o.mss = ((__u32)synproxy_byte(w->buf, i + 2) << 8) | synproxy_byte(w->buf, i + 3);
	} else if (kind == SYNPROXY_OPT_WINDOW && size == SYNPROXY_OPTLEN_WINDOW) {
		__u8 scale = synproxy_byte(w->buf, i + 2);

		w->o.wscale = scale > 14 ? 14 : scale;
	} else if (kind == SYNPROXY_OPT_SACK_PERM && size == SYNPROXY_OPTLEN_SACK_PERM) {
		w->o.sack = 1;
	} else if (kind == SYNPROXY_OPT_TIMESTAMP && size == SYNPROXY_OPTLEN_TIMESTAMP) {
		__u32 v = ((__u32)synproxy_byte(w->buf, i + 2) << 24) |
			  ((__u32)synproxy_byte(w->buf, i + 3) << 16) |
			  ((__u32)synproxy_byte(w->buf, i + 4) << 8) | synproxy_byte(w->buf, i + 5);

		w->o.ts = 1;
		w->o.tsval = bpf_htonl(v);
	}
	w->at = i + size;
	return 0;
}

// One's complement sum of `len` bytes (even, at most 60) of `buf`.
static __always_inline __u32 synproxy_sum(__u8 *buf, __u32 len, __u32 sum)
{
	int i;

	for (i = 0; i < 60; i += 2) {
		if (i >= len)
			break;
		sum += ((__u32)synproxy_byte(buf, i) << 8) | synproxy_byte(buf, i + 1);
	}
	return sum;
}

static __always_inline __u16 synproxy_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

// Answers the SYN in `r` (plain, TCP, SYN alone) with a cookie SYN-ACK.
static __always_inline int synproxy_answer(struct xdp_md *ctx, struct synproxy_frame_ptrs *r,
					   struct synproxy_scratch *scratch,
					   struct synproxy_service *svc, __u64 now)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct tcp_head *tcp = r->l4;
	struct synproxy_walk_ref ref;
	__u8 *out;
	struct synproxy_options *o;
	__u32 l4_off, opt_len, tcp_len, new_len, tsval = 0, sum;
	__u32 client_seq, mss_index;
	__u32 cookie;
	int delta, ok;

	if ((void *)(tcp + 1) > end)
		return synproxy_drop(SYNPROXY_SYN_REFUSED);
	tcp_len = (tcp->offset >> 4) * 4;
	if (tcp_len < sizeof(*tcp))
		return synproxy_drop(SYNPROXY_SYN_REFUSED);
	opt_len = tcp_len - sizeof(*tcp);
	l4_off = (void *)tcp - data;
	if (l4_off > 256 || opt_len > SYNPROXY_OPT_BUF)
		return synproxy_drop(SYNPROXY_SYN_REFUSED);
	__builtin_memset(scratch, 0, offsetof(struct synproxy_scratch, key));
	out = scratch->out;
	if (opt_len && bpf_xdp_load_bytes(ctx, l4_off + sizeof(*tcp), scratch->walk.buf, opt_len))
		return synproxy_drop(SYNPROXY_SYN_REFUSED);
	scratch->walk.len = opt_len;
	scratch->walk.o.wscale = SYNPROXY_TS_NO_WSCALE;
	ref.w = &scratch->walk;
	bpf_loop(SYNPROXY_OPT_BUF, synproxy_option_step, &ref, 0);
	o = &scratch->walk.o;

	client_seq = bpf_ntohl(tcp->seq);
	mss_index = synproxy_mss_index(o->mss ? o->mss : 536, r->v6);
	cookie = synproxy_cookie(&scratch->key, client_seq, now >> SYNPROXY_SLOT_SHIFT, mss_index,
				 scratch->m, &ok);
	if (!ok)
		return synproxy_drop(SYNPROXY_SYN_REFUSED);

	// The SYN-ACK's TCP header, built in `out`.
	{
		struct tcp_head *h = (struct tcp_head *)out;
		__u32 n = sizeof(*h);
		__u32 our_mss = r->v6 ? SYNPROXY_MSS6 : SYNPROXY_MSS4;

		h->sport = tcp->dport;
		h->dport = tcp->sport;
		h->seq = bpf_htonl(cookie);
		h->ack = bpf_htonl(client_seq + 1);
		h->flags = TCP_SYN | SYNPROXY_TCP_ACK;
		h->window = 0;
		out[20] = SYNPROXY_OPT_MSS;
		out[21] = SYNPROXY_OPTLEN_MSS;
		out[22] = our_mss >> 8;
		out[23] = our_mss & 0xff;
		n = 24;
		if (o->ts) {
			tsval = (__u32)(now / 1000000) & ~((1U << SYNPROXY_TS_BITS) - 1);
			tsval |= o->wscale & SYNPROXY_TS_WSCALE_MASK;
			if (o->sack)
				tsval |= SYNPROXY_TS_SACK;
			out[24] = o->sack ? SYNPROXY_OPT_SACK_PERM : SYNPROXY_OPT_NOP;
			out[25] = o->sack ? SYNPROXY_OPTLEN_SACK_PERM : SYNPROXY_OPT_NOP;
			out[26] = SYNPROXY_OPT_TIMESTAMP;
			out[27] = SYNPROXY_OPTLEN_TIMESTAMP;
			out[28] = tsval >> 24;
			out[29] = tsval >> 16;
			out[30] = tsval >> 8;
			out[31] = tsval;
			__builtin_memcpy(&out[32], &o->tsval, 4);
			n = 36;
			if (o->wscale != SYNPROXY_TS_NO_WSCALE) {
				out[36] = SYNPROXY_OPT_NOP;
				out[37] = SYNPROXY_OPT_WINDOW;
				out[38] = SYNPROXY_OPTLEN_WINDOW;
				out[39] = SYNPROXY_WSCALE;
				n = 40;
			}
		}
		h->offset = (n / 4) << 4;
		tcp_len = n;
	}

	// Addresses and the IP header, in place; the pseudo-header's sum.
	{
		struct ethhdr *eth = data;
		__u8 mac[6];

		if ((void *)(eth + 1) > end)
			return synproxy_drop(SYNPROXY_SYN_REFUSED);
		__builtin_memcpy(mac, eth->h_dest, 6);
		__builtin_memcpy(eth->h_dest, eth->h_source, 6);
		__builtin_memcpy(eth->h_source, mac, 6);
	}
	sum = IPPROTO_TCP + tcp_len;
	if (r->v6) {
		struct ipv6hdr *ip6 = r->l3;
		struct in6_addr a;

		if ((void *)(ip6 + 1) > end)
			return synproxy_drop(SYNPROXY_SYN_REFUSED);
		a = ip6->saddr;
		ip6->saddr = ip6->daddr;
		ip6->daddr = a;
		*(__be32 *)ip6 = bpf_htonl(0x60000000);
		ip6->payload_len = bpf_htons(tcp_len);
		ip6->hop_limit = SYNPROXY_TTL;
		__builtin_memcpy(scratch->tmp, &ip6->saddr, 32);
		sum = synproxy_sum(scratch->tmp, 32, sum);
	} else {
		struct iphdr *ip = r->l3;
		__be32 a;

		if ((void *)(ip + 1) > end)
			return synproxy_drop(SYNPROXY_SYN_REFUSED);
		a = ip->saddr;
		ip->saddr = ip->daddr;
		ip->daddr = a;
		ip->tos = 0;
		ip->tot_len = bpf_htons(sizeof(*ip) + tcp_len);
		ip->id = 0;
		ip->frag_off = bpf_htons(0x4000); // DF
		ip->ttl = SYNPROXY_TTL;
		ip->check = 0;
		__builtin_memcpy(scratch->tmp, ip, sizeof(*ip));
		ip->check = bpf_htons(synproxy_fold(synproxy_sum(scratch->tmp, sizeof(*ip), 0)));
		__builtin_memcpy(scratch->tmp, &ip->saddr, 8);
		sum = synproxy_sum(scratch->tmp, 8, sum);
	}
	sum = synproxy_sum(out, tcp_len, sum);
	((struct tcp_head *)out)->check = bpf_htons(synproxy_fold(sum));

	new_len = l4_off + tcp_len;
	delta = (int)new_len - (int)(end - data);
	if (delta && bpf_xdp_adjust_tail(ctx, delta))
		return synproxy_drop(SYNPROXY_SYN_REFUSED);
	if (tcp_len > SYNPROXY_OPT_BUF || tcp_len < sizeof(struct tcp_head) ||
	    bpf_xdp_store_bytes(ctx, l4_off, out, tcp_len))
		return synproxy_drop(SYNPROXY_SYN_REFUSED);
	svc->last_cookie_ns = now;
	synproxy_count(SYNPROXY_COOKIES_SENT);
	return XDP_TX;
}

// A segment with no valid cookie and no connection: up unmarked for an
// `auto` service (a connection made while the proxy was off), dropped
// for `on`.
static __always_inline int synproxy_unchecked(struct synproxy_service *svc)
{
	if (svc->mode == SYNPROXY_AUTO) {
		synproxy_count(SYNPROXY_ACK_UNCHECKED);
		return SYNPROXY_CONTINUE;
	}
	return synproxy_drop(SYNPROXY_COOKIES_INVALID);
}

// The proxy's decision for a TCP frame to a service: an XDP action
// (XDP_DROP, counted), SYNPROXY_ANSWER, SYNPROXY_UP (mark it and send it
// up), or SYNPROXY_CONTINUE. A global function that never sees the frame:
// the verifier checks it once on its own, instead of along every path of
// the caller, and the caller's packet pointers stay good after it.
__attribute__((noinline)) int synproxy_decide(struct synproxy_input *in)
{
	struct synproxy_service *svc;
	__u64 now;
	__u8 one = 1;

	if (!in)
		return SYNPROXY_CONTINUE;
	svc = bpf_map_lookup_elem(&synproxy_services, &in->service);
	if (!svc || svc->mode == SYNPROXY_OFF)
		return SYNPROXY_CONTINUE;
	if (in->marked)
		return synproxy_drop(SYNPROXY_MARK_FORGED);
	now = bpf_ktime_get_ns();

	if (in->flags & TCP_SYN) {
		if (!synproxy_active(svc, now))
			return SYNPROXY_CONTINUE;
		if (in->flags & (TCP_FIN | TCP_RST | SYNPROXY_TCP_ACK) || !in->plain)
			return synproxy_drop(SYNPROXY_SYN_REFUSED);
		// A new connection on this 4-tuple: the old one is over.
		bpf_map_delete_elem(&synproxy_conns, &in->key);
		return SYNPROXY_ANSWER;
	}
	if (bpf_map_lookup_elem(&synproxy_conns, &in->key))
		return SYNPROXY_CONTINUE;
	if (svc->mode == SYNPROXY_AUTO && now - svc->last_cookie_ns > SYNPROXY_COOKIE_LIFE_NS)
		return SYNPROXY_CONTINUE;
	if ((in->flags & TCP_RST) || !(in->flags & SYNPROXY_TCP_ACK))
		return synproxy_unchecked(svc);
	if (synproxy_cookie_valid(&in->key, in->seq - 1, in->ack - 1, now)) {
		bpf_map_update_elem(&synproxy_conns, &in->key, &one, BPF_ANY);
		synproxy_count(SYNPROXY_COOKIES_VALID);
		return SYNPROXY_UP;
	}
	// The handshake's ACK was lost (a full receive queue drops it before
	// this program runs): the client, facing the SYN-ACK's zero window,
	// sends zero-window probes, whose sequence number is one before the
	// ACK's (snd_una - 1: the ISN itself). Without this every probe
	// would fail the check and the connection would hang until the
	// client gives up. The probe goes up as the ACK it stands for.
	if (in->bare_ack && synproxy_cookie_valid(&in->key, in->seq, in->ack - 1, now)) {
		bpf_map_update_elem(&synproxy_conns, &in->key, &one, BPF_ANY);
		synproxy_count(SYNPROXY_COOKIES_VALID);
		synproxy_count(SYNPROXY_PROBES_VALID);
		return SYNPROXY_UP_PROBE;
	}
	return synproxy_unchecked(svc);
}

// `r` of the TCP frame whose IP header is at `l3_off` and TCP header at
// `l4_off` (IPv6 if `v6`), its 4-tuple in scratch->key and its service in
// scratch->service; 0 if they do not fit the frame.
static __always_inline int synproxy_frame(struct xdp_md *ctx, __u32 l3_off, __u32 l4_off,
					  __u32 v6, struct synproxy_frame_ptrs *r,
					  struct synproxy_scratch *scratch)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct synproxy_conn_key *key = &scratch->key;
	struct ports *ports;

	if (l3_off > 64 || l4_off > 511)
		return 0;
	// Masks the verifier sees (the compiler would fold the test away).
	asm volatile("%0 &= 127" : "+r"(l3_off));
	asm volatile("%0 &= 511" : "+r"(l4_off));
	r->l3 = data + l3_off;
	r->l4 = data + l4_off;
	r->v6 = v6 != 0;
	if (r->v6) {
		struct ipv6hdr *ip6 = r->l3;

		if ((void *)(ip6 + 1) > end)
			return 0;
		__builtin_memcpy(key->dst, &ip6->daddr, 16);
		__builtin_memcpy(key->src, &ip6->saddr, 16);
	} else {
		struct iphdr *ip = r->l3;

		if ((void *)(ip + 1) > end)
			return 0;
		v4_mapped(key->dst, ip->daddr);
		v4_mapped(key->src, ip->saddr);
	}
	ports = r->l4;
	if ((void *)(ports + 1) > end)
		return 0;
	key->sport = ports->src;
	key->dport = ports->dst;
	__builtin_memcpy(scratch->service.addr, key->dst, 16);
	scratch->service.port = key->dport;
	scratch->service.protocol = IPPROTO_TCP;
	scratch->service.pad = 0;
	return 1;
}

// The cookie SYN-ACK for the SYN synproxy_decide said to answer; a
// global function too (it resizes the frame: its caller returns its
// action at once).
__attribute__((noinline)) int synproxy_answer_syn(struct xdp_md *ctx, __u32 l3_off, __u32 l4_off,
						  __u32 v6)
{
	struct synproxy_frame_ptrs r = {};
	struct synproxy_scratch *scratch;
	struct synproxy_service *svc;
	__u32 zero = 0;

	scratch = bpf_map_lookup_elem(&synproxy_scratch, &zero);
	if (!ctx || !scratch || !synproxy_frame(ctx, l3_off, l4_off, v6, &r, scratch))
		return synproxy_drop(SYNPROXY_SYN_REFUSED);
	svc = bpf_map_lookup_elem(&synproxy_services, &scratch->service);
	if (!svc)
		return synproxy_drop(SYNPROXY_SYN_REFUSED);
	return synproxy_answer(ctx, &r, scratch, svc, bpf_ktime_get_ns());
}

// Sets SYNPROXY_MARK on the TCP header `tcp`, its checksum patched.
static __always_inline void synproxy_mark(struct tcp_head *tcp)
{
	__u16 before = bpf_ntohs(*(__be16 *)&tcp->offset);
	__u16 after;
	__u32 diff;

	tcp->offset |= SYNPROXY_MARK;
	after = bpf_ntohs(*(__be16 *)&tcp->offset);
	diff = (__u16)~before + (__u32)after;
	diff = (diff & 0xffff) + (diff >> 16);
	tcp->check = csum_patch(tcp->check, (__u16)diff);
}

// Whether the TCP segment `tcp` (of the plain IPv4 or IPv6 packet in `r`)
// carries no payload, by the IP header's length (a short frame's
// Ethernet padding is not payload).
static __always_inline int synproxy_no_payload(struct l3_result *r, struct tcp_head *tcp,
					       void *end)
{
	__u32 tcp_len = (tcp->offset >> 4) * 4;

	if (!r->plain)
		return 0;
	if (r->v6) {
		struct ipv6hdr *ip6 = r->l3;

		if ((void *)(ip6 + 1) > end)
			return 0;
		return bpf_ntohs(ip6->payload_len) == tcp_len;
	} else {
		struct iphdr *ip = r->l3;

		if ((void *)(ip + 1) > end)
			return 0;
		return bpf_ntohs(ip->tot_len) == sizeof(*ip) + tcp_len;
	}
}

// Advances the sequence number of `tcp` by one, its checksum patched: a
// zero-window probe (the client's ISN) made into the handshake's ACK.
static __always_inline void synproxy_advance_seq(struct tcp_head *tcp)
{
	__u32 before = bpf_ntohl(tcp->seq);
	__u32 after = before + 1;
	__u32 diff = (__u16)~(before >> 16) + (__u16)~before + (after >> 16) + (after & 0xffff);

	diff = (diff & 0xffff) + (diff >> 16);
	diff = (diff & 0xffff) + (diff >> 16);
	tcp->seq = bpf_htonl(after);
	tcp->check = csum_patch(tcp->check, (__u16)diff);
}

// What flowgate_xdp calls for TCP/UDP to a service: an XDP action to
// return, SYNPROXY_UP (to the socket, marked), or SYNPROXY_CONTINUE.
static __always_inline int synproxy_check(struct xdp_md *ctx, struct l3_result *r)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct tcp_head *tcp = r->l4;
	struct synproxy_scratch *scratch;
	struct synproxy_input *in;
	__u32 zero = 0;
	int action;

	if (r->dst.protocol != IPPROTO_TCP)
		return SYNPROXY_CONTINUE;
	if ((void *)(tcp + 1) > end)
		return SYNPROXY_CONTINUE; // the worker counts it malformed
	// Off the stack, which the caller has little of left.
	scratch = bpf_map_lookup_elem(&synproxy_scratch, &zero);
	if (!scratch)
		return SYNPROXY_CONTINUE;
	in = &scratch->in;
	__builtin_memcpy(in->key.src, r->src.addr, 16);
	__builtin_memcpy(in->key.dst, r->dst.addr, 16);
	in->key.sport = r->src.port;
	in->key.dport = r->dst.port;
	in->service = r->dst;
	in->seq = bpf_ntohl(tcp->seq);
	in->ack = bpf_ntohl(tcp->ack);
	in->flags = tcp->flags;
	in->marked = (tcp->offset & SYNPROXY_MARK) != 0;
	in->plain = r->plain;
	in->bare_ack = tcp->flags == SYNPROXY_TCP_ACK && synproxy_no_payload(r, tcp, end);
	action = synproxy_decide(in);
	if (action == SYNPROXY_UP_PROBE) {
		synproxy_advance_seq(tcp);
		action = SYNPROXY_UP;
	}
	if (action == SYNPROXY_UP)
		synproxy_mark(tcp);
	else if (action == SYNPROXY_ANSWER) {
		// An XDP action, never one of ours (the verifier must see it:
		// the frame's pointers are gone after it).
		// (The empty asm keeps the compiler, which knows the callee,
		// from folding the test away.)
		action = synproxy_answer_syn(ctx, r->l3 - data, r->l4 - data, r->v6);
		asm volatile("" : "+r"(action));
		return action == XDP_TX ? XDP_TX : XDP_DROP;
	}
	return action;
}

#endif
