// SPDX-License-Identifier: Apache-2.0
//
// Announcement of VIPs on their segment (services with `announce = "arp"`):
// the XDP program answers, for the addresses in `announce_addrs`,
//   - ARP requests (Ethernet, IPv4) whose target is one: the request is
//     rewritten in place into the reply (operation 2, the interface's MAC
//     as the sender's, the requester as the target) and sent back out of
//     the interface with XDP_TX;
//   - IPv6 neighbour solicitations whose target is one, sent to that
//     address or to its solicited-node multicast address (ff02::1:ffXX:XXXX),
//     with hop limit 255 (RFC 4861, 7.1.1) and no extension header: the
//     frame is resized to and rewritten into a solicited neighbour
//     advertisement (flags S and O, the target link-layer address option
//     carrying the interface's MAC), its ICMPv6 checksum computed here, and
//     sent back with XDP_TX.
// The interface's MAC is `announce_mac`, which the daemon keeps equal to
// the MAC the gateway sends from; while it is zero nothing is answered.
//
// Not answered, and passed to the kernel as before (which has no such
// address and ignores them):
//   - an ARP request whose sender address is its target: another host
//     announcing the address (gratuitous ARP), which must not be answered
//     back;
//   - a neighbour solicitation from the unspecified address (duplicate
//     address detection of another host);
//   - anything malformed, or not for an announced address.
// VLAN tags (up to two, as the main program walks them) stay as they came.
//
// The program has one instance per interface: only the client-facing
// interface's instance holds announced addresses.

#ifndef FLOWGATE_ANNOUNCE_H
#define FLOWGATE_ANNOUNCE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "flowgate_limits.h"

#define ANNOUNCE_NOT_MINE (-1)

#define ARP_HW_ETHERNET 1
#define ARP_OP_REQUEST 1
#define ARP_OP_REPLY 2

#define ICMPV6_NEIGHBOUR_SOLICITATION 135
#define ICMPV6_NEIGHBOUR_ADVERTISEMENT 136
#define ND_OPT_TARGET_LINK_ADDRESS 2
#define ND_HOP_LIMIT 255
// Solicited and override (RFC 4861, 4.4), in the flags byte.
#define NA_FLAGS_SOLICITED_OVERRIDE 0x60

// The most bytes of VLAN tags in front of the network header.
#define ANNOUNCE_MAX_L2 (14 + 2 * 4)

// The VIP addresses answered for (16 bytes, IPv4-mapped for IPv4).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FLOWGATE_MAX_ANNOUNCED_ADDRESSES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u8[16]);
	__type(value, __u8);
} announce_addrs SEC(".maps");

// The MAC the answers carry: the interface's, as the gateway sends from.
struct announce_config {
	__u8 mac[6];
	__u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct announce_config);
} announce_mac SEC(".maps");

// An Ethernet/IPv4 ARP packet (RFC 826).
struct arp_eth_ipv4 {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 op;
	__u8 sha[6];
	__u8 spa[4];
	__u8 tha[6];
	__u8 tpa[4];
};

// A neighbour solicitation or advertisement with one 8-byte option (the
// source or target link-layer address).
struct nd_message {
	__u8 type;
	__u8 code;
	__be16 checksum;
	__u8 flags;
	__u8 reserved[3];
	__u8 target[16];
	__u8 opt_type;
	__u8 opt_len;
	__u8 opt_mac[6];
};

// What the advertisement's checksum covers: the IPv6 pseudo-header
// (RFC 8200, 8.1) and the message.
struct na_checksummed {
	__u8 src[16];
	__u8 dst[16];
	__be32 length;
	__u8 zero[3];
	__u8 next_header;
	struct nd_message na;
};

// Whether the `n` bytes at `a` and `b` are the same (BPF has no memcmp).
static __always_inline int same_bytes(const __u8 *a, const __u8 *b, int n)
{
	__u8 diff = 0;
	int i;

#pragma unroll
	for (i = 0; i < n; i++)
		diff |= a[i] ^ b[i];
	return !diff;
}

// The MAC to answer with; 0 while the daemon has set none.
static __always_inline struct announce_config *announce_config(void)
{
	__u32 zero = 0;
	struct announce_config *cfg = bpf_map_lookup_elem(&announce_mac, &zero);
	__u32 hi;
	__u16 lo;

	if (!cfg)
		return 0;
	__builtin_memcpy(&hi, cfg->mac, 4);
	__builtin_memcpy(&lo, cfg->mac + 4, 2);
	return hi || lo ? cfg : 0;
}

// ARP at `off` bytes into the frame: XDP_TX with the reply written over
// the request, or ANNOUNCE_NOT_MINE.
static __always_inline int announce_arp(struct xdp_md *ctx, __u32 off)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct arp_eth_ipv4 *arp;
	struct announce_config *cfg;
	__u8 key[16];
	__u8 vip[4];

	if (off > ANNOUNCE_MAX_L2 || (void *)(eth + 1) > end)
		return ANNOUNCE_NOT_MINE;
	arp = data + off;
	if ((void *)(arp + 1) > end)
		return ANNOUNCE_NOT_MINE;
	if (arp->htype != bpf_htons(ARP_HW_ETHERNET) || arp->ptype != bpf_htons(ETH_P_IP) ||
	    arp->hlen != 6 || arp->plen != 4 || arp->op != bpf_htons(ARP_OP_REQUEST))
		return ANNOUNCE_NOT_MINE;
	// Someone announcing the address itself: not a question.
	if (same_bytes(arp->spa, arp->tpa, 4))
		return ANNOUNCE_NOT_MINE;
	__builtin_memset(key, 0, 10);
	key[10] = 0xff;
	key[11] = 0xff;
	__builtin_memcpy(key + 12, arp->tpa, 4);
	if (!bpf_map_lookup_elem(&announce_addrs, key))
		return ANNOUNCE_NOT_MINE;
	cfg = announce_config();
	if (!cfg)
		return ANNOUNCE_NOT_MINE;

	__builtin_memcpy(vip, arp->tpa, 4);
	arp->op = bpf_htons(ARP_OP_REPLY);
	__builtin_memcpy(arp->tha, arp->sha, 6);
	__builtin_memcpy(arp->tpa, arp->spa, 4);
	__builtin_memcpy(arp->sha, cfg->mac, 6);
	__builtin_memcpy(arp->spa, vip, 4);
	__builtin_memcpy(eth->h_dest, eth->h_source, 6);
	__builtin_memcpy(eth->h_source, cfg->mac, 6);
	return XDP_TX;
}

// The Internet checksum of `msg` (sizeof(struct na_checksummed) bytes).
static __always_inline __u16 na_checksum(struct na_checksummed *msg)
{
	__u16 *words = (__u16 *)msg;
	__u32 sum = 0;
	int i;

#pragma unroll
	for (i = 0; i < (int)(sizeof(*msg) / 2); i++)
		sum += words[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

// IPv6 at `off` bytes into the frame: XDP_TX with the neighbour
// advertisement written over the solicitation, or ANNOUNCE_NOT_MINE.
static __always_inline int announce_ns(struct xdp_md *ctx, __u32 off)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip;
	struct nd_message *ns;
	struct announce_config *cfg;
	struct na_checksummed reply = {};
	__u8 requester_mac[6];
	__u8 mac[6];
	__u8 any = 0;
	__u32 want;
	int delta, i;

	if (off > ANNOUNCE_MAX_L2 || (void *)(eth + 1) > end)
		return ANNOUNCE_NOT_MINE;
	ip = data + off;
	if ((void *)(ip + 1) > end)
		return ANNOUNCE_NOT_MINE;
	if (ip->nexthdr != IPPROTO_ICMPV6 || ip->hop_limit != ND_HOP_LIMIT)
		return ANNOUNCE_NOT_MINE;
	// The message up to the target (24 bytes) at least.
	ns = (void *)(ip + 1);
	if ((void *)ns + 24 > end || bpf_ntohs(ip->payload_len) < 24)
		return ANNOUNCE_NOT_MINE;
	if (ns->type != ICMPV6_NEIGHBOUR_SOLICITATION || ns->code != 0)
		return ANNOUNCE_NOT_MINE;
	if (!bpf_map_lookup_elem(&announce_addrs, ns->target))
		return ANNOUNCE_NOT_MINE;
	// To the target itself, or to its solicited-node multicast address.
	if (!same_bytes((__u8 *)&ip->daddr, ns->target, 16)) {
		__u8 *d = (__u8 *)&ip->daddr;

		if (d[0] != 0xff || d[1] != 0x02 || d[11] != 0x01 || d[12] != 0xff ||
		    d[13] != ns->target[13] || d[14] != ns->target[14] ||
		    d[15] != ns->target[15])
			return ANNOUNCE_NOT_MINE;
#pragma unroll
		for (i = 2; i < 11; i++)
			any |= d[i];
		if (any)
			return ANNOUNCE_NOT_MINE;
	}
	// Duplicate address detection by another host: not answered.
	any = 0;
#pragma unroll
	for (i = 0; i < 16; i++)
		any |= ((__u8 *)&ip->saddr)[i];
	if (!any)
		return ANNOUNCE_NOT_MINE;
	cfg = announce_config();
	if (!cfg)
		return ANNOUNCE_NOT_MINE;

	__builtin_memcpy(mac, cfg->mac, 6);
	__builtin_memcpy(requester_mac, eth->h_source, 6);
	__builtin_memcpy(reply.src, ns->target, 16);
	__builtin_memcpy(reply.dst, &ip->saddr, 16);
	reply.length = bpf_htonl(sizeof(struct nd_message));
	reply.next_header = IPPROTO_ICMPV6;
	reply.na.type = ICMPV6_NEIGHBOUR_ADVERTISEMENT;
	reply.na.flags = NA_FLAGS_SOLICITED_OVERRIDE;
	__builtin_memcpy(reply.na.target, ns->target, 16);
	reply.na.opt_type = ND_OPT_TARGET_LINK_ADDRESS;
	reply.na.opt_len = 1;
	__builtin_memcpy(reply.na.opt_mac, mac, 6);
	reply.na.checksum = na_checksum(&reply);

	// The frame becomes exactly headers + IPv6 + the advertisement.
	delta = (int)(off + sizeof(struct ipv6hdr) + sizeof(struct nd_message)) -
		(int)(end - data);
	if (delta && bpf_xdp_adjust_tail(ctx, delta))
		return ANNOUNCE_NOT_MINE;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = data;
	if (off > ANNOUNCE_MAX_L2 || (void *)(eth + 1) > end)
		return XDP_DROP; // cannot happen: the frame only grew or shrank past the headers
	ip = data + off;
	if ((void *)(ip + 1) + sizeof(struct nd_message) > end)
		return XDP_DROP;

	__builtin_memcpy(eth->h_dest, requester_mac, 6);
	__builtin_memcpy(eth->h_source, mac, 6);
	want = bpf_htonl(0x60000000); // version 6, no traffic class, no flow label
	__builtin_memcpy(ip, &want, 4);
	ip->payload_len = bpf_htons(sizeof(struct nd_message));
	ip->nexthdr = IPPROTO_ICMPV6;
	ip->hop_limit = ND_HOP_LIMIT;
	__builtin_memcpy(&ip->saddr, reply.src, 16);
	__builtin_memcpy(&ip->daddr, reply.dst, 16);
	__builtin_memcpy((void *)(ip + 1), &reply.na, sizeof(struct nd_message));
	return XDP_TX;
}

#endif
