// SPDX-License-Identifier: Apache-2.0
//
// flowgate's XDP program: sends to the AF_XDP sockets only the traffic the
// gateway owns, and everything else to the kernel.
//
// Owned traffic, redirected to the socket in `xsks` at the frame's receive
// queue:
//   - TCP/UDP to a service: (protocol, destination address, destination
//     port) is a key of `services`;
//   - TCP/UDP replies from a backend: (protocol, source address, source
//     port) is a key of `reply_sources`, and the destination address is
//     not in `local_addrs`;
//   (each of those two hash maps is looked up only when its address
//   prefilter, `vip_filter` or `backend_filter`, has the address's bit
//   set: a clear bit means no key has the address, so the lookup would
//   miss; and the SYN proxy's check runs only for a service whose
//   `services` value says it is proxied, SERVICE_SYNPROXY)
//   - IP fragments, first or not, whose destination address is in
//     `vip_addrs`: a non-first fragment has no ports to match, and the
//     userspace pipeline counts and drops fragments to a VIP, so they go up
//     to be counted there rather than vanish into the kernel;
//   - ICMP errors about the gateway's traffic (icmp_error_owned): the
//     packet they quote is a reply from a service key or a packet to a
//     reply source, counted with those (REDIRECTED_VIP, REDIRECTED_REPLY);
//     the workers translate them through the NAT.
// ARP requests and IPv6 neighbour solicitations for an announced VIP
// (`announce_addrs`) are answered here with XDP_TX (flowgate_announce.h;
// counted as `answered_arp`, `answered_ns`).
// First of all, the ingress checks (flowgate_ingress.h): a frame for
// another host's MAC, or an option-less IPv4 header with a wrong checksum,
// is dropped (counted as `dropped_other_host`, `dropped_bad_ip_checksum`);
// a broadcast, multicast or VLAN-tagged frame is dropped only where it
// would be owned (`dropped_broadcast`, `dropped_multicast`,
// `dropped_vlan_not_configured`), and otherwise goes on as below.
// Everything else is XDP_PASS: other ARP and NDP, all other ICMP, other IP protocols,
// TCP/UDP to the box's own addresses (SSH, and the answers to the box's
// own connections to a backend), fragments not to a VIP, and frames this
// program cannot parse, so the box stays reachable and the kernel keeps
// resolving neighbours. Malformed frames go to the kernel, which has its
// own checks; apart from the ingress checks above (frames the kernel would
// drop too), the program never drops a frame it does not own.
//
// Edge cases:
//   - The box's own connections to a backend's service port (an operator's
//     curl, a health check run on the box): their answers come from a
//     backend's (protocol, address, port) but are addressed to one of the
//     box's own addresses (`local_addrs`, kept equal to them by the
//     daemon), while the gateway's connections are DNAT only, so their
//     replies always go to a client. Those pass (counted as
//     `passed_local`): the kernel owns that connection, and a frame handed
//     to AF_XDP never comes back to it. The check runs only once the
//     source matched, so traffic to a VIP pays nothing for it.
//   - VLAN: up to two tags (TPID 0x8100, 0x88a8 or 0x9100, like the
//     userspace parser) are looked through; a frame with one tag of an id
//     the interface accepts that is owned goes up to the workers as it is
//     (never the fast path or the SYN proxy), one with another id or two
//     tags that is owned is dropped, others go on (flowgate_ingress.h).
//     A third tag: XDP_PASS. A NIC
//     that strips tags in hardware (rx-vlan-offload) hands XDP untagged
//     frames, so the tag never reaches userspace either: turn it off there.
//   - IPv4 options: skipped by IHL. IHL < 5 is malformed: XDP_PASS.
//   - IPv6 extension headers: hop-by-hop, routing, destination options,
//     fragment and AH are walked, at most 8 (the userspace parser's limit);
//     more, or one running past the frame: XDP_PASS. ESP ends the walk as an
//     upper-layer protocol that is not ours.
//   - Owned traffic with no socket at the queue index: XDP_DROP, counted as
//     `dropped_no_socket`. The kernel cannot serve it: a VIP is not one of
//     its addresses (or, if it is, the kernel would reset the client's
//     connection), and a backend's reply forwarded by the kernel would reach
//     the client un-NATed. A drop is something clients retransmit through,
//     for example while the daemon starts.
//   - "Redirect everything IP" (`config.redirect_all`, the daemon's
//     forward-only mode): every IPv4 and IPv6 frame goes up except IPv6
//     whose first next header is ICMPv6 or hop-by-hop (NDP, MLD), so the
//     peers' neighbour resolution keeps working. With no socket at the
//     queue the frame is passed (counted as `passed_no_socket`): in this
//     mode that is what keeps a queue nobody serves reachable.
// A frame that bpf_redirect_map accepted can still be dropped by the socket
// (full or missing fill ring); the kernel counts those per socket
// (XDP_STATISTICS), not here.
//
// The kernel fast path (on when `fast_config.partitions` is not 0): owned
// TCP/UDP whose connection the workers put in `fast_flows` (one entry per
// direction; flowgate_fastpath.h has the layout, the hashes and the
// publication rule) is rewritten here exactly as the userspace pipeline
// would rewrite it — MACs, the address and port, TTL or hop limit, the
// checksums patched with the entry's precomputed deltas — and sent out:
// XDP_TX when the egress port is this interface, otherwise
// bpf_redirect_map to `fast_tx_ports`. The entry's last-seen time and
// counters are updated. Everything else owned goes up to the socket as
// without the fast path (counted as `fast_miss` or `fast_handed_up`, and
// by reason, FAST_UP_*):
//   - TCP with SYN, FIN or RST: the workers see every handshake and close;
//   - IPv4 options, IPv6 extension headers, fragments (never looked up);
//   - TTL or hop limit of 1 or 0 (the worker drops and counts them);
//   - lengths the userspace parser would refuse (IP total or payload
//     length past the frame, TCP data offset, UDP length): the worker
//     drops them with their reason;
//   - a SYN-proxied connection's segment whose options the program does
//     not translate (flowgate_fastpath.h: anything but none or NOP NOP
//     TIMESTAMP, SACK blocks among them) or to the backend without ACK;
//   - no entry, an entry being written, or an egress port that cannot
//     take the frame (no device in `fast_tx_ports`, or its bit clear in
//     `fast_config.egress_ready`: a device that cannot transmit XDP
//     frames, where the kernel would drop it);
//   - ICMP errors about a connection always go to the workers; other ICMP
//     and everything else is not owned, as before.
//
// The counter indices and the key layout are mirrored in
// dataplane/src/xdp/program.rs; change both together. The maps' sizes come
// from flowgate_limits.h, which Rust reads too.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "flowgate_announce.h"
#include "flowgate_fastpath.h"
#include "flowgate_ingress.h"
#include "flowgate_limits.h"

// A VIP address belongs to at least one service key, so rules that fit
// `services` fit `vip_addrs` too.
_Static_assert(FLOWGATE_MAX_VIP_ADDRESSES >= FLOWGATE_MAX_SERVICE_KEYS,
	       "vip_addrs must hold as many keys as services");

#define MAX_VLAN_TAGS 2
#define MAX_EXTENSION_HEADERS 8

#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8
#define ETH_P_QINQ_LEGACY 0x9100

#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_ICMPV6 58
#define NEXTHDR_DEST 60

// Counter indices (dataplane/src/xdp/program.rs: `counter`).
enum counter {
	REDIRECTED_VIP = 0,
	REDIRECTED_VIP_FRAGMENT = 1,
	REDIRECTED_REPLY = 2,
	REDIRECTED_ALL = 3,
	DROPPED_NO_SOCKET = 4,
	PASSED_NO_SOCKET = 5,
	PASSED_NOT_IP = 6,
	PASSED_NOT_TCP_UDP = 7,
	PASSED_NOT_OWNED = 8,
	PASSED_FRAGMENT = 9,
	PASSED_UNPARSED = 10,
	PASSED_LOCAL = 11,
	FAST_TX = 12,
	FAST_REDIRECT = 13,
	FAST_MISS = 14,
	FAST_HANDED_UP = 15,
	FAST_NO_EGRESS = 16,
	ANSWERED_ARP = 17,
	ANSWERED_NS = 18,
	// Ingress sanity (flowgate_ingress.h), in `enum ingress_reason` order.
	DROPPED_OTHER_HOST = 19,
	DROPPED_BROADCAST = 20,
	DROPPED_MULTICAST = 21,
	DROPPED_BAD_IP_CHECKSUM = 22,
	DROPPED_VLAN_NOT_CONFIGURED = 23,
	// The fast path's bytes forwarded (whole frames), and why owned
	// traffic went up to a worker while the fast path was on: TCP SYN;
	// FIN or RST; IPv4 options or IPv6 extension headers; TTL or hop
	// limit 1 or 0; lengths the userspace parser refuses; a client MAC
	// other than the entry's (these six are in FAST_HANDED_UP too); a
	// fragment to a VIP address; an ICMP error about a connection.
	FAST_BYTES = 24,
	FAST_UP_SYN = 25,
	FAST_UP_FIN_RST = 26,
	FAST_UP_OPTIONS = 27,
	FAST_UP_TTL = 28,
	FAST_UP_LENGTH = 29,
	FAST_UP_CLIENT_MAC = 30,
	FAST_UP_FRAGMENT = 31,
	FAST_UP_ICMP = 32,
	// A SYN-proxied segment the fast path does not translate (in
	// FAST_HANDED_UP too).
	FAST_UP_SYNPROXY = 33,
	COUNTER_COUNT = 34,
};

// A service or a backend: address (IPv4-mapped for IPv4), port in network
// byte order, IP protocol. 20 bytes, the padding always zero.
struct traffic_key {
	__u8 addr[16];
	__be16 port;
	__u8 protocol;
	__u8 pad;
};

struct vlan_tag {
	__be16 tci;
	__be16 proto;
};

struct ports {
	__be16 src;
	__be16 dst;
};

// The fields every extension header the walk follows starts with.
struct ext_header {
	__u8 next;
	__u8 len;
};

struct fragment_header {
	__u8 next;
	__u8 reserved;
	__be16 offset_flags;
	__be32 ident;
};

struct config {
	__u32 redirect_all;
};

// AF_XDP sockets by receive queue; the loader sizes it to the interface's
// receive queue count.
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

// Maps the loader keeps equal to what the gateway owns. Not preallocated,
// so memory follows the rule set rather than the limit. Their sizes are
// limits on the rules: the control side refuses rules that need more.
// `services` values: SERVICE_OWNED always, and SERVICE_SYNPROXY while the
// service has an entry in `synproxy_services` (the loader sets the flag
// before it adds that entry and clears it after it took the entry out), so
// that a packet to a service that is not SYN-proxied skips the proxy's
// check, and its lookup, altogether.
#define SERVICE_OWNED 0x1
#define SERVICE_SYNPROXY 0x2

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FLOWGATE_MAX_SERVICE_KEYS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct traffic_key);
	__type(value, __u8);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FLOWGATE_MAX_REPLY_SOURCES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct traffic_key);
	__type(value, __u8);
} reply_sources SEC(".maps");

// The address prefilters, in front of `services` and `reply_sources`: a
// bit per hash of an address (address_filter_bit), set when some key of
// the map behind has that address. A clear bit means no key has it, so the
// hash lookup would miss: a packet for no VIP costs two bit tests, not two
// hash lookups, the second keyed by the client's address and port (a cold
// bucket per client). Arrays of 64-bit words, so the verifier inlines
// their lookups. The loader keeps each a superset of its map's addresses:
// a bit is set before the first key with it goes in, and cleared once the
// last such key is out (dataplane/src/xdp/prefilter.rs mirrors the hash).
#define FLOWGATE_FILTER_BITS_LOG2 20
#define FLOWGATE_FILTER_WORDS 16384 // 2^20 bits
#define FLOWGATE_FILTER_MULTIPLIER 0x9E3779B1U

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FLOWGATE_FILTER_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} vip_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FLOWGATE_FILTER_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} backend_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FLOWGATE_MAX_VIP_ADDRESSES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u8[16]);
	__type(value, __u8);
} vip_addrs SEC(".maps");

// The box's own addresses (every interface's, loopback's included).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FLOWGATE_MAX_LOCAL_ADDRESSES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u8[16]);
	__type(value, __u8);
} local_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config SEC(".maps");

// The connection cache (flowgate_fastpath.h); the loader sizes it to
// partitions × slots per partition, and each worker maps it.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct fast_entry);
} fast_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fast_config);
} fast_config SEC(".maps");

// Egress interfaces by port index, for bpf_redirect_map.
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} fast_tx_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &index);

	if (value)
		*value += 1;
}

// Adds `n` to counter `index` (a byte count).
static __always_inline void count_n(__u32 index, __u64 n)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &index);

	if (value)
		*value += n;
}

static __always_inline int pass(__u32 reason)
{
	count(reason);
	return XDP_PASS;
}

// Owned traffic: to the socket of this queue, dropped if there is none.
static __always_inline int redirect_owned(struct xdp_md *ctx, __u32 reason)
{
	int action = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_DROP);

	count(action == XDP_REDIRECT ? reason : DROPPED_NO_SOCKET);
	return action;
}

// A frame refused by the ingress checks (flowgate_ingress.h), counted.
static __always_inline int ingress_drop(__u32 reason)
{
	count(DROPPED_OTHER_HOST + reason - INGRESS_OTHER_HOST);
	return XDP_DROP;
}

// Forward-only mode: to the socket of this queue, passed if there is none.
static __always_inline int redirect_any(struct xdp_md *ctx)
{
	int action = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);

	count(action == XDP_REDIRECT ? REDIRECTED_ALL : PASSED_NO_SOCKET);
	return action;
}

static __always_inline int redirect_all_enabled(void)
{
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config, &zero);

	return cfg && cfg->redirect_all;
}

static __always_inline int is_vlan(__be16 proto)
{
	return proto == bpf_htons(ETH_P_8021Q_) ||
	       proto == bpf_htons(ETH_P_8021AD_) ||
	       proto == bpf_htons(ETH_P_QINQ_LEGACY);
}

static __always_inline void v4_mapped(__u8 *out, __be32 addr)
{
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(out + 12, &addr, 4);
}

// The prefilter's bit of a 16-byte address (IPv4-mapped for IPv4): its
// four 32-bit words as loaded, XORed, times a Fibonacci multiplier, the
// high FLOWGATE_FILTER_BITS_LOG2 bits.
static __always_inline __u32 address_filter_bit(const __u8 *addr)
{
	__u32 w0, w1, w2, w3;

	__builtin_memcpy(&w0, addr, 4);
	__builtin_memcpy(&w1, addr + 4, 4);
	__builtin_memcpy(&w2, addr + 8, 4);
	__builtin_memcpy(&w3, addr + 12, 4);
	return ((w0 ^ w1 ^ w2 ^ w3) * FLOWGATE_FILTER_MULTIPLIER) >>
	       (32 - FLOWGATE_FILTER_BITS_LOG2);
}

// Whether `filter` (vip_filter or backend_filter) may hold `addr`: 0 only
// when no key of the map behind it has that address.
static __always_inline int address_maybe_in(void *filter, const __u8 *addr)
{
	__u32 bit = address_filter_bit(addr);
	__u32 word = bit / 64;
	__u64 *bits = bpf_map_lookup_elem(filter, &word);

	return !bits || ((*bits >> (bit % 64)) & 1);
}

// What the L3 parse found: the keys' addresses and protocol, where the
// transport header starts, and whether this is a fragment.
struct l3_result {
	struct traffic_key dst;
	struct traffic_key src;
	void *l3;
	void *l4;
	int fragment;
	int v6;
	// No IPv4 options, no IPv6 extension header: the fast path's case.
	int plain;
};

// 0 when parsed, otherwise the counter of why not (the frame is passed).
static __always_inline __u32 parse_ipv4(void *l3, void *end, struct l3_result *r)
{
	struct iphdr *ip = l3;
	__u32 header_len;

	if ((void *)(ip + 1) > end)
		return PASSED_UNPARSED;
	if (ip->version != 4 || ip->ihl < 5)
		return PASSED_UNPARSED;
	header_len = ip->ihl * 4;
	r->l3 = l3;
	r->l4 = l3 + header_len;
	r->plain = ip->ihl == 5;
	// MF set or a non-zero offset: a fragment.
	r->fragment = (ip->frag_off & bpf_htons(0x3fff)) != 0;
	r->dst.protocol = ip->protocol;
	r->src.protocol = ip->protocol;
	v4_mapped(r->dst.addr, ip->daddr);
	v4_mapped(r->src.addr, ip->saddr);
	return 0;
}

static __always_inline __u32 parse_ipv6(void *l3, void *end, struct l3_result *r)
{
	struct ipv6hdr *ip = l3;
	void *cursor = ip + 1;
	__u8 next;
	int i;

	if ((void *)(ip + 1) > end)
		return PASSED_UNPARSED;
	if (ip->version != 6)
		return PASSED_UNPARSED;
	__builtin_memcpy(r->dst.addr, &ip->daddr, 16);
	__builtin_memcpy(r->src.addr, &ip->saddr, 16);
	next = ip->nexthdr;
	r->fragment = 0;

#pragma unroll
	for (i = 0; i < MAX_EXTENSION_HEADERS; i++) {
		if (next == NEXTHDR_FRAGMENT) {
			struct fragment_header *frag = cursor;

			if ((void *)(frag + 1) > end)
				return PASSED_UNPARSED;
			r->fragment = 1;
			next = frag->next;
			cursor = frag + 1;
			// A non-first fragment carries data, not headers: stop.
			if (frag->offset_flags & bpf_htons(0xfff8))
				break;
		} else if (next == NEXTHDR_HOP || next == NEXTHDR_ROUTING ||
			   next == NEXTHDR_DEST || next == NEXTHDR_AUTH) {
			struct ext_header *ext = cursor;
			__u32 len;

			if ((void *)(ext + 1) > end)
				return PASSED_UNPARSED;
			if (next == NEXTHDR_AUTH)
				len = ((__u32)ext->len + 2) * 4;
			else
				len = ((__u32)ext->len + 1) * 8;
			next = ext->next;
			cursor += len;
		} else {
			break;
		}
	}
	if (i == MAX_EXTENSION_HEADERS &&
	    (next == NEXTHDR_HOP || next == NEXTHDR_ROUTING || next == NEXTHDR_DEST ||
	     next == NEXTHDR_AUTH || next == NEXTHDR_FRAGMENT))
		return PASSED_UNPARSED;
	r->dst.protocol = next;
	r->src.protocol = next;
	r->l3 = l3;
	r->l4 = cursor;
	r->v6 = 1;
	r->plain = cursor == (void *)(ip + 1);
	return 0;
}

// ---- The kernel fast path (flowgate_fastpath.h) ----

#define FAST_UP (-1)

#define barrier() asm volatile("" ::: "memory")
#define READ_ONCE_U32(x) (*(volatile __u32 *)&(x))

struct tcp_head {
	__be16 sport;
	__be16 dport;
	__be32 seq;
	__be32 ack;
	__u8 offset; // data offset in the high nibble
	__u8 flags;
	__be16 window;
	__be16 check;
	__be16 urgent;
};

struct udp_head {
	__be16 sport;
	__be16 dport;
	__be16 len;
	__be16 check;
};

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04

// What a hit in the cache tells the program to do, copied out of the
// entry between the two reads of its sequence word.
struct fast_rewrite {
	__u8 new_addr[16];
	__be16 new_port;
	__u16 l3_delta;
	__u16 l4_delta;
	__u8 rewrite;
	__u8 synproxy;
	__u32 seq_add;
	__u32 ts_add;
	__u8 wscale_backend;
	__u8 wscale_client;
	__u8 eth[12]; // destination, then source: the Ethernet header's order
	__u8 client_mac[6];
	__u16 egress_port;
};

union fast_key_words {
	struct fast_key key;
	__u64 words[5];
};

// `check` (network byte order) patched with a folded delta (RFC 1624,
// eqn. 3: ~(~HC + Σ(~m + m'))).
static __always_inline __be16 csum_patch(__be16 check, __u16 delta)
{
	__u32 sum = (__u16)~bpf_ntohs(check);

	sum += delta;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return bpf_htons((__u16)~sum);
}

static __always_inline int fast_up(__u32 reason)
{
	count(reason);
	return FAST_UP;
}

// Handed up for `reason` (one of FAST_UP_SYN .. FAST_UP_CLIENT_MAC, or
// FAST_UP_SYNPROXY),
// counted under it and under FAST_HANDED_UP.
static __always_inline int fast_up_because(__u32 reason)
{
	count(reason);
	return fast_up(FAST_HANDED_UP);
}

// Whether the fast path of this instance is on (owned traffic that never
// reaches the lookup — fragments, ICMP errors — is counted as handed up
// only then).
static __always_inline int fast_on(void)
{
	__u32 zero = 0;
	struct fast_config *cfg = bpf_map_lookup_elem(&fast_config, &zero);

	return cfg && cfg->partitions;
}

// Whether the headers of this plain (no options, no extension headers)
// TCP/UDP packet are ones the fast path may forward: lengths the
// userspace parser accepts, TTL above 1, and for TCP no SYN, FIN or RST.
// 0 when they are, otherwise the FAST_UP_* counter of why not.
static __always_inline __u32 fast_eligible(struct l3_result *r, void *end)
{
	void *ip_end;
	__u8 ttl;

	if (r->v6) {
		struct ipv6hdr *ip6 = r->l3;

		if ((void *)(ip6 + 1) > end)
			return FAST_UP_LENGTH;
		ip_end = (void *)(ip6 + 1) + bpf_ntohs(ip6->payload_len);
		ttl = ip6->hop_limit;
	} else {
		struct iphdr *ip = r->l3;
		__u16 total;

		if ((void *)(ip + 1) > end)
			return FAST_UP_LENGTH;
		total = bpf_ntohs(ip->tot_len);
		if (total < sizeof(*ip))
			return FAST_UP_LENGTH;
		ip_end = (void *)ip + total;
		ttl = ip->ttl;
	}
	if (ip_end > end)
		return FAST_UP_LENGTH;
	if (ttl <= 1)
		return FAST_UP_TTL;
	if (r->dst.protocol == IPPROTO_TCP) {
		struct tcp_head *tcp = r->l4;
		__u32 header_len;

		if ((void *)(tcp + 1) > end || (void *)(tcp + 1) > ip_end)
			return FAST_UP_LENGTH;
		header_len = (tcp->offset >> 4) * 4;
		if (header_len < sizeof(*tcp) || r->l4 + header_len > ip_end)
			return FAST_UP_LENGTH;
		if (tcp->flags & TCP_SYN)
			return FAST_UP_SYN;
		if (tcp->flags & (TCP_FIN | TCP_RST))
			return FAST_UP_FIN_RST;
		return 0;
	}
	{
		struct udp_head *udp = r->l4;
		__u16 len;

		if ((void *)(udp + 1) > end || (void *)(udp + 1) > ip_end)
			return FAST_UP_LENGTH;
		len = bpf_ntohs(udp->len);
		if (len < sizeof(*udp) || r->l4 + len > ip_end)
			return FAST_UP_LENGTH;
		return 0;
	}
}

// Looks the packet's direction up in its owner's partition; 1 and *out
// filled on a hit, 0 on a miss.
static __always_inline int fast_lookup(struct fast_config *cfg, union fast_key_words *k,
				       int client_is_src, struct fast_rewrite *out,
				       struct fast_entry **hit)
{
	__u32 mask = cfg->slot_mask;
	__u32 part, base, home;
	__u64 hash;
	int i;

	// One partition owns everything: fast_owner() would say 0.
	if (cfg->partitions == 1)
		part = 0;
	else if (client_is_src)
		part = fast_owner(&k->words[0], k->key.sport, cfg->partitions, cfg->owner_seed);
	else
		part = fast_owner(&k->words[2], k->key.dport, cfg->partitions, cfg->owner_seed);
	base = part * (mask + 1);
	hash = fast_key_hash(k->words);
	home = (__u32)(hash >> 32); // the high half: a product's best bits

#pragma unroll
	for (i = 0; i < FLOWGATE_FAST_PROBES; i++) {
		__u32 index = base + ((home + i) & mask);
		struct fast_entry *e = bpf_map_lookup_elem(&fast_flows, &index);
		__u64 *key;
		__u32 seq, state;

		if (!e)
			return 0;
		seq = READ_ONCE_U32(e->seq);
		barrier();
		state = e->state;
		if (state == FAST_EMPTY)
			return 0;
		if (state != FAST_LIVE)
			continue;
		key = (__u64 *)&e->key;
		if (key[0] != k->words[0] || key[1] != k->words[1] ||
		    key[2] != k->words[2] || key[3] != k->words[3] ||
		    key[4] != k->words[4])
			continue;
		if (seq & 1)
			return 0;
		__builtin_memcpy(out->new_addr, e->new_addr, 16);
		out->new_port = e->new_port;
		out->l3_delta = e->l3_delta;
		out->l4_delta = e->l4_delta;
		out->rewrite = e->rewrite;
		out->synproxy = e->synproxy;
		out->seq_add = e->seq_add;
		out->ts_add = e->ts_add;
		out->wscale_backend = e->wscale_backend;
		out->wscale_client = e->wscale_client;
		__builtin_memcpy(out->eth, e->eth_dst, 12);
		out->egress_port = e->egress_port;
		__builtin_memcpy(out->client_mac, e->client_mac, 6);
		barrier();
		if (READ_ONCE_U32(e->seq) != seq)
			return 0;
		*hit = e;
		return 1;
	}
	return 0;
}

// The rewrite the pipeline makes, on a frame fast_eligible() accepted.
static __always_inline void fast_rewrite_frame(void *data, void *end, struct l3_result *r,
					       struct fast_rewrite *w)
{
	__u16 *port_field;
	int udp = r->dst.protocol == IPPROTO_UDP;

	if ((void *)((struct ethhdr *)data + 1) > end)
		return;
	__builtin_memcpy(data, w->eth, 12);

	if (r->v6) {
		struct ipv6hdr *ip6 = r->l3;

		if ((void *)(ip6 + 1) > end)
			return;
		if (w->rewrite == FAST_REWRITE_DST)
			__builtin_memcpy(&ip6->daddr, w->new_addr, 16);
		else
			__builtin_memcpy(&ip6->saddr, w->new_addr, 16);
		ip6->hop_limit -= 1;
	} else {
		struct iphdr *ip = r->l3;

		if ((void *)(ip + 1) > end)
			return;
		if (w->rewrite == FAST_REWRITE_DST)
			__builtin_memcpy(&ip->daddr, w->new_addr + 12, 4);
		else
			__builtin_memcpy(&ip->saddr, w->new_addr + 12, 4);
		ip->ttl -= 1;
		ip->check = csum_patch(ip->check, w->l3_delta);
	}

	if (udp) {
		struct udp_head *h = r->l4;

		if ((void *)(h + 1) > end)
			return;
		port_field = w->rewrite == FAST_REWRITE_DST ? &h->dport : &h->sport;
		*port_field = w->new_port;
		// A zero UDP checksum means none and stays zero; a patched
		// zero goes out as 0xFFFF (RFC 768).
		if (h->check) {
			h->check = csum_patch(h->check, w->l4_delta);
			if (!h->check)
				h->check = 0xffff;
		}
	} else {
		struct tcp_head *h = r->l4;

		if ((void *)(h + 1) > end)
			return;
		port_field = w->rewrite == FAST_REWRITE_DST ? &h->dport : &h->sport;
		*port_field = w->new_port;
		h->check = csum_patch(h->check, w->l4_delta);
	}
}

// Whether the frame comes from the MAC the entry was made with (a zero
// MAC in the entry: not checked).
static __always_inline int fast_client_mac_ok(void *data, void *end, __u8 *mac)
{
	struct ethhdr *eth = data;
	__u32 want_hi, got_hi;
	__u16 want_lo, got_lo;

	if ((void *)(eth + 1) > end)
		return 0;
	__builtin_memcpy(&want_hi, mac, 4);
	__builtin_memcpy(&want_lo, mac + 4, 2);
	if (!want_hi && !want_lo)
		return 1;
	__builtin_memcpy(&got_hi, eth->h_source, 4);
	__builtin_memcpy(&got_lo, eth->h_source + 4, 2);
	return want_hi == got_hi && want_lo == got_lo;
}

// The fast path for an owned TCP/UDP packet: its action when the cache
// forwards it, FAST_UP when it goes to the worker.
static __always_inline int fast_forward(struct xdp_md *ctx, struct l3_result *r,
					int client_is_src)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	union fast_key_words k = {};
	struct fast_rewrite w;
	struct fast_entry *e = 0;
	struct fast_config *cfg;
	struct ports *ports;
	__u32 zero = 0, why;
	int action;

	cfg = bpf_map_lookup_elem(&fast_config, &zero);
	if (!cfg || !cfg->partitions)
		return FAST_UP; // off: not counted, as without a fast path
	if (!r->plain)
		return fast_up_because(FAST_UP_OPTIONS);
	why = fast_eligible(r, end);
	if (why)
		return fast_up_because(why);

	ports = r->l4;
	if ((void *)(ports + 1) > end)
		return fast_up_because(FAST_UP_LENGTH);
	__builtin_memcpy(k.key.src, r->src.addr, 16);
	__builtin_memcpy(k.key.dst, r->dst.addr, 16);
	k.key.sport = ports->src;
	k.key.dport = ports->dst;
	k.key.protocol = r->dst.protocol;
	if (!fast_lookup(cfg, &k, client_is_src, &w, &e) || !e)
		return fast_up(FAST_MISS);
	if (client_is_src && !fast_client_mac_ok(data, end, w.client_mac))
		return fast_up_because(FAST_UP_CLIENT_MAC);

	// A port whose device would drop the frame: to the worker, which
	// sends it through its socket.
	if (w.egress_port >= 64 || !((cfg->egress_ready >> w.egress_port) & 1))
		return fast_up(FAST_NO_EGRESS);
	if (w.egress_port == cfg->port_index) {
		action = XDP_TX;
	} else {
		action = bpf_redirect_map(&fast_tx_ports, w.egress_port, 0);
		if (action != XDP_REDIRECT)
			return fast_up(FAST_NO_EGRESS);
	}
	// A SYN-proxied connection: its numbers are translated too, where
	// the program can do it exactly (flowgate_fastpath.h); otherwise the
	// frame goes up untouched (the redirect just set is replaced by the
	// socket's).
	if (w.synproxy) {
		int done = -1;

		__u32 flags = (w.rewrite == FAST_REWRITE_DST ? FAST_SYNPROXY_TO_BACKEND : 0) |
			      (__u32)w.wscale_backend << FAST_SYNPROXY_WSCALE_BACKEND_SHIFT |
			      (__u32)w.wscale_client << FAST_SYNPROXY_WSCALE_CLIENT_SHIFT;

		if (r->dst.protocol == IPPROTO_TCP)
			done = fast_synproxy(ctx, r->l4 - data, flags, w.seq_add, w.ts_add);
		if (done != 0)
			return fast_up_because(FAST_UP_SYNPROXY);
	}
	fast_rewrite_frame(data, end, r, &w);
	// The clock at the last tick (CLOCK_MONOTONIC_COARSE, at most a tick
	// behind CLOCK_MONOTONIC): the workers age entries in seconds, and
	// reading it costs about 1 ns here where bpf_ktime_get_ns() cost 19.
	e->last_seen_ns = bpf_ktime_get_coarse_ns();
	// Plain adds: a locked add cost more than the rest of the entry's
	// update, and a connection's packets mostly arrive on one CPU. Two
	// CPUs at once can lose an add; the workers take a count that went
	// back as no traffic (FastPath::take_traffic).
	e->packets += 1;
	e->bytes += (__u64)(end - data);
	count(action == XDP_TX ? FAST_TX : FAST_REDIRECT);
	count_n(FAST_BYTES, (__u64)(end - data));
	return action;
}

// ---- ICMP errors about the gateway's traffic ----

#define ICMP_DEST_UNREACH_ 3
#define ICMP_TIME_EXCEEDED_ 11
#define ICMPV6_DEST_UNREACH_ 1
#define ICMPV6_PKT_TOOBIG_ 2
#define ICMPV6_TIME_EXCEED_ 3
#define ICMP_HEADER_LEN 8

// Whether this unfragmented ICMP/ICMPv6 packet is an error the workers
// translate (IPv4: destination unreachable, time exceeded; IPv6: those and
// packet too big) quoting a TCP/UDP packet of the gateway's: a reply from
// a service's (protocol, VIP, port) — the quote's source is a `services`
// key — or a packet to a backend — its destination is a `reply_sources`
// key, and its source not one of the box's own addresses (an error about
// the box's own connection is the kernel's). Returns 1 and sets *counter
// to the one to redirect under (REDIRECTED_VIP or REDIRECTED_REPLY), or 0
// to pass as before. The quote is read as far as its ports: IPv4 options are skipped
// by IHL, IPv6 extension headers are not walked (such a quote passes).
static __always_inline int icmp_error_owned(struct l3_result *r, void *end, __u32 *counter)
{
	struct traffic_key from = {}, to = {};
	__u8 *icmp = r->l4;
	struct ports *ports;
	void *quote;

	if ((void *)(icmp + ICMP_HEADER_LEN) > end)
		return 0;
	quote = icmp + ICMP_HEADER_LEN;
	if (r->v6) {
		struct ipv6hdr *ip6 = quote;

		if (r->dst.protocol != NEXTHDR_ICMPV6 ||
		    (icmp[0] != ICMPV6_DEST_UNREACH_ && icmp[0] != ICMPV6_PKT_TOOBIG_ &&
		     icmp[0] != ICMPV6_TIME_EXCEED_))
			return 0;
		if ((void *)(ip6 + 1) > end || ip6->version != 6)
			return 0;
		if (ip6->nexthdr != IPPROTO_TCP && ip6->nexthdr != IPPROTO_UDP)
			return 0;
		ports = (void *)(ip6 + 1);
		__builtin_memcpy(from.addr, &ip6->saddr, 16);
		__builtin_memcpy(to.addr, &ip6->daddr, 16);
		from.protocol = ip6->nexthdr;
	} else {
		struct iphdr *ip = quote;

		if (r->dst.protocol != IPPROTO_ICMP ||
		    (icmp[0] != ICMP_DEST_UNREACH_ && icmp[0] != ICMP_TIME_EXCEEDED_))
			return 0;
		if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl < 5)
			return 0;
		if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
			return 0;
		// A later fragment quoted carries no ports.
		if (ip->frag_off & bpf_htons(0x1fff))
			return 0;
		ports = quote + ip->ihl * 4;
		v4_mapped(from.addr, ip->saddr);
		v4_mapped(to.addr, ip->daddr);
		from.protocol = ip->protocol;
	}
	if ((void *)(ports + 1) > end)
		return 0;
	from.port = ports->src;
	to.port = ports->dst;
	to.protocol = from.protocol;
	if (bpf_map_lookup_elem(&services, &from)) {
		*counter = REDIRECTED_VIP;
		return 1;
	}
	if (bpf_map_lookup_elem(&reply_sources, &to) &&
	    !bpf_map_lookup_elem(&local_addrs, from.addr)) {
		*counter = REDIRECTED_REPLY;
		return 1;
	}
	return 0;
}

// The SYN proxy (after the helpers it uses).
#include "flowgate_synproxy.h"

SEC("xdp")
int flowgate_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct l3_result r = {};
	struct ports *ports;
	__u8 *service;
	void *l3;
	__be16 proto;
	__u32 l2_len = sizeof(*eth);
	__u32 why, refuse;
	__u16 tci = 0;
	int i;

	if ((void *)(eth + 1) > end)
		return pass(PASSED_UNPARSED);
	proto = eth->h_proto;
	l3 = eth + 1;

#pragma unroll
	for (i = 0; i < MAX_VLAN_TAGS; i++) {
		struct vlan_tag *tag = l3;

		if (!is_vlan(proto))
			break;
		if ((void *)(tag + 1) > end)
			return pass(PASSED_UNPARSED);
		if (i == 0)
			tci = bpf_ntohs(tag->tci);
		proto = tag->proto;
		l3 = tag + 1;
		l2_len += sizeof(*tag);
	}
	if (is_vlan(proto))
		return pass(PASSED_UNPARSED);

	// Ingress sanity (flowgate_ingress.h): another host's frames and bad
	// IPv4 checksums are dropped; what must not be forwarded is marked.
	why = ingress_check(data, end, proto, l3, (l2_len - sizeof(*eth)) / sizeof(struct vlan_tag),
			    tci, &refuse);
	if (why)
		return ingress_drop(why);

	// Neighbour resolution of an announced VIP (flowgate_announce.h).
	if (proto == bpf_htons(ETH_P_ARP)) {
		if (announce_arp(ctx, l2_len) == XDP_TX) {
			count(ANSWERED_ARP);
			return XDP_TX;
		}
		return pass(PASSED_NOT_IP);
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		int action = announce_ns(ctx, l2_len);

		if (action != ANNOUNCE_NOT_MINE) {
			if (action == XDP_TX)
				count(ANSWERED_NS);
			return action;
		}
		// Not answered: the frame is as it came, but announce_ns may
		// have called a helper that can resize frames (and failed), so
		// the verifier wants the bounds read again.
		data = (void *)(long)ctx->data;
		end = (void *)(long)ctx->data_end;
		if (data + l2_len > end || l2_len > ANNOUNCE_MAX_L2)
			return pass(PASSED_UNPARSED);
		l3 = data + l2_len;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		if (redirect_all_enabled())
			return redirect_any(ctx);
		why = parse_ipv4(l3, end, &r);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		if (redirect_all_enabled()) {
			struct ipv6hdr *ip = l3;

			if ((void *)(ip + 1) > end)
				return pass(PASSED_UNPARSED);
			if (ip->nexthdr == NEXTHDR_ICMPV6 || ip->nexthdr == NEXTHDR_HOP)
				return pass(PASSED_NOT_TCP_UDP);
			return redirect_any(ctx);
		}
		why = parse_ipv6(l3, end, &r);
	} else {
		return pass(PASSED_NOT_IP);
	}
	if (why)
		return pass(why);

	if (r.fragment) {
		if (bpf_map_lookup_elem(&vip_addrs, r.dst.addr)) {
			if (refuse && refuse != INGRESS_UP)
				return ingress_drop(refuse);
			if (fast_on())
				count(FAST_UP_FRAGMENT);
			return redirect_owned(ctx, REDIRECTED_VIP_FRAGMENT);
		}
		return pass(PASSED_FRAGMENT);
	}
	if (r.dst.protocol != IPPROTO_TCP && r.dst.protocol != IPPROTO_UDP) {
		__u32 about;

		if (icmp_error_owned(&r, end, &about)) {
			if (refuse && refuse != INGRESS_UP)
				return ingress_drop(refuse);
			if (fast_on())
				count(FAST_UP_ICMP);
			return redirect_owned(ctx, about);
		}
		return pass(PASSED_NOT_TCP_UDP);
	}

	ports = r.l4;
	if ((void *)(ports + 1) > end)
		return pass(PASSED_UNPARSED);
	r.dst.port = ports->dst;
	r.src.port = ports->src;

	service = 0;
	if (address_maybe_in(&vip_filter, r.dst.addr))
		service = bpf_map_lookup_elem(&services, &r.dst);
	if (service) {
		int action;

		if (refuse == INGRESS_UP)
			return redirect_owned(ctx, REDIRECTED_VIP);
		if (refuse)
			return ingress_drop(refuse);
		if (*service & SERVICE_SYNPROXY) {
			action = synproxy_check(ctx, &r);
			if (action == SYNPROXY_UP)
				return redirect_owned(ctx, REDIRECTED_VIP);
			if (action != SYNPROXY_CONTINUE)
				return action;
		}
		action = fast_forward(ctx, &r, 1);

		if (action != FAST_UP)
			return action;
		return redirect_owned(ctx, REDIRECTED_VIP);
	}
	if (address_maybe_in(&backend_filter, r.src.addr) &&
	    bpf_map_lookup_elem(&reply_sources, &r.src)) {
		int action;

		// From a backend to the box itself: the box's own connection.
		if (bpf_map_lookup_elem(&local_addrs, r.dst.addr))
			return pass(PASSED_LOCAL);
		if (refuse == INGRESS_UP)
			return redirect_owned(ctx, REDIRECTED_REPLY);
		if (refuse)
			return ingress_drop(refuse);
		action = fast_forward(ctx, &r, 0);
		if (action != FAST_UP)
			return action;
		return redirect_owned(ctx, REDIRECTED_REPLY);
	}
	return pass(PASSED_NOT_OWNED);
}

char LICENSE[] SEC("license") = "Apache-2.0";
