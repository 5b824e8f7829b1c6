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
//   - IP fragments, first or not, whose destination address is in
//     `vip_addrs`: a non-first fragment has no ports to match, and the
//     userspace pipeline counts and drops fragments to a VIP, so they go up
//     to be counted there rather than vanish into the kernel.
// Everything else is XDP_PASS: ARP, NDP and all ICMP, other IP protocols,
// TCP/UDP to the box's own addresses (SSH, and the answers to the box's
// own connections to a backend), fragments not to a VIP, and frames this
// program cannot parse, so the box stays reachable and the kernel keeps
// resolving neighbours. Malformed frames go to the kernel, which has its
// own checks; the program never drops a frame it does not own.
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
//     userspace parser) are looked through. A third tag: XDP_PASS. A NIC
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
	COUNTER_COUNT = 12,
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

// What the L3 parse found: the keys' addresses and protocol, where the
// transport header starts, and whether this is a fragment.
struct l3_result {
	struct traffic_key dst;
	struct traffic_key src;
	void *l4;
	int fragment;
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
	r->l4 = l3 + header_len;
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
	r->l4 = cursor;
	return 0;
}

SEC("xdp")
int flowgate_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct l3_result r = {};
	struct ports *ports;
	void *l3;
	__be16 proto;
	__u32 why;
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
		proto = tag->proto;
		l3 = tag + 1;
	}
	if (is_vlan(proto))
		return pass(PASSED_UNPARSED);

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
		if (bpf_map_lookup_elem(&vip_addrs, r.dst.addr))
			return redirect_owned(ctx, REDIRECTED_VIP_FRAGMENT);
		return pass(PASSED_FRAGMENT);
	}
	if (r.dst.protocol != IPPROTO_TCP && r.dst.protocol != IPPROTO_UDP)
		return pass(PASSED_NOT_TCP_UDP);

	ports = r.l4;
	if ((void *)(ports + 1) > end)
		return pass(PASSED_UNPARSED);
	r.dst.port = ports->dst;
	r.src.port = ports->src;

	if (bpf_map_lookup_elem(&services, &r.dst))
		return redirect_owned(ctx, REDIRECTED_VIP);
	if (bpf_map_lookup_elem(&reply_sources, &r.src)) {
		// From a backend to the box itself: the box's own connection.
		if (bpf_map_lookup_elem(&local_addrs, r.dst.addr))
			return pass(PASSED_LOCAL);
		return redirect_owned(ctx, REDIRECTED_REPLY);
	}
	return pass(PASSED_NOT_OWNED);
}

char LICENSE[] SEC("license") = "Apache-2.0";
