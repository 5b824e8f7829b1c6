// SPDX-License-Identifier: Apache-2.0
//
// Ingress sanity, as a router must (RFC 1812 5.2.2, 5.3.7; RFC 4291): the
// checks flowgate's XDP program makes of every frame before anything else,
// in the order the userspace pipeline makes them
// (dataplane/src/pipeline/ingress.rs), so that both give a frame the same
// verdict. One call, ingress_check(), near the top of the program:
//
//   - the destination MAC, against the receiving interface's
//     (`ingress_config.mac`, kept equal to it by the daemon; all zeros
//     turns this check off): a unicast frame for another host is dropped
//     (INGRESS_OTHER_HOST). A broadcast or multicast frame is marked, not
//     dropped: ARP, neighbour discovery (a solicitation to the
//     solicited-node multicast address of an announced VIP among them,
//     which flowgate_announce.h answers after this), router
//     advertisements, MLD and DHCP go on to the kernel as before;
//   - a VLAN-tagged frame is marked the same way: the gateway's
//     interfaces are untagged, and the kernel's own VLAN devices still get
//     their traffic;
//   - the IPv4 header checksum of a header without options: wrong,
//     dropped (INGRESS_BAD_IP_CHECKSUM); the kernel would drop it too. A
//     header with options goes up to a worker (it never takes the fast
//     path) whose parser checks it, or to the kernel.
//
// A marked frame is dropped for its mark only where the program would
// otherwise hand it to the gateway (a service's or a backend's traffic, a
// fragment to a VIP, an ICMP error about the gateway's traffic) or
// forward it on the fast path: the program's owned branches test the mark
// (ingress_refused). So nothing group-addressed or tagged is forwarded,
// and the established connections of the fast path get the same checks.
//
// Martian and bogon sources are checked by the workers, on new flows only
// (they cost a prefix lookup): a new flow always goes up to a worker, and
// a connection that was never made has no fast-path entry.

#ifndef FLOWGATE_INGRESS_H
#define FLOWGATE_INGRESS_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// Why a frame is refused; 0: it is not. In the order of the program's
// counters DROPPED_OTHER_HOST.. (flowgate_xdp.c), one after the other.
enum ingress_reason {
	INGRESS_OK = 0,
	INGRESS_OTHER_HOST = 1,
	INGRESS_BROADCAST = 2,
	INGRESS_MULTICAST = 3,
	INGRESS_BAD_IP_CHECKSUM = 4,
	INGRESS_VLAN_NOT_CONFIGURED = 5,
};

// The receiving interface's MAC (all zeros: not known, no MAC check).
struct ingress_config {
	__u8 mac[6];
	__u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ingress_config);
} ingress_config SEC(".maps");

// Whether the option-less IPv4 header at `l3` has a wrong checksum. A
// header with options is not judged here: it never takes the fast path,
// so if it is the gateway's it goes up to a worker, whose parser checks
// it; if not, the kernel does (a bounds check per option word of a length
// read from the packet is more than the verifier follows).
static __always_inline int ingress_ipv4_checksum_bad(void *l3, void *end)
{
	struct iphdr *ip = l3;
	__u16 *word = l3;
	__u32 sum = 0;
	int i;

	if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl != 5)
		return 0;
#pragma unroll
	for (i = 0; i < 10; i++)
		sum += word[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum != 0xffff;
}

// The per-packet checks. Returns the reason to drop the frame now (0: go
// on), and sets *refuse to the reason it must not be forwarded for, if
// any. `proto` is the ethertype after `tags` VLAN tags, `l3` where its
// header starts.
static __always_inline __u32 ingress_check(void *data, void *end, __be16 proto, void *l3,
					   __u32 tags, __u32 *refuse)
{
	struct ethhdr *eth = data;
	struct ingress_config *cfg;
	__u32 zero = 0;
	__u32 own_hi, dst_hi;
	__u16 own_lo, dst_lo;

	*refuse = INGRESS_OK;
	if ((void *)(eth + 1) > end)
		return INGRESS_OK;
	cfg = bpf_map_lookup_elem(&ingress_config, &zero);
	if (!cfg)
		return INGRESS_OK;
	__builtin_memcpy(&dst_hi, eth->h_dest, 4);
	__builtin_memcpy(&dst_lo, eth->h_dest + 4, 2);
	__builtin_memcpy(&own_hi, cfg->mac, 4);
	__builtin_memcpy(&own_lo, cfg->mac + 4, 2);
	if (dst_hi != own_hi || dst_lo != own_lo) {
		if (eth->h_dest[0] & 1)
			*refuse = dst_hi == 0xffffffff && dst_lo == 0xffff ? INGRESS_BROADCAST
									   : INGRESS_MULTICAST;
		else if (own_hi || own_lo)
			return INGRESS_OTHER_HOST;
	}
	if (proto == bpf_htons(ETH_P_IP) && ingress_ipv4_checksum_bad(l3, end))
		return INGRESS_BAD_IP_CHECKSUM;
	if (tags && *refuse == INGRESS_OK)
		*refuse = INGRESS_VLAN_NOT_CONFIGURED;
	return INGRESS_OK;
}

#endif
