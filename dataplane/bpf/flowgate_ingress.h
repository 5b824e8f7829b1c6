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
//   - VLAN tags, by the interface's setting (`ingress_config.vlans`,
//     `untagged_refused`; the rules' `vlans` and `untagged`, see
//     dataplane/src/pipeline/vlan.rs): a frame with one tag of an accepted
//     id is marked INGRESS_UP: where it is owned it goes up to the workers
//     as it is (never the fast path nor the SYN proxy: the workers take
//     the tag off, and put the egress interface's on), and otherwise on to
//     the kernel. A frame with another id or two tags, or an untagged
//     frame where untagged frames are refused, is marked like a group
//     frame (INGRESS_VLAN_NOT_CONFIGURED): the kernel's own VLAN devices
//     still get their traffic;
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
	// Not a drop: an accepted tag, owned traffic goes up as it is.
	INGRESS_UP = 0x100,
};

// Words of a bitmap of the 4096 VLAN ids.
#define INGRESS_VLAN_WORDS 64

// The receiving interface's MAC (all zeros: not known, no MAC check) and
// VLAN setting: the ids accepted tagged, bit id % 64 of word id / 64, and
// whether untagged frames are refused. Mirrored in
// dataplane/src/xdp/program.rs (ingress_config_value).
struct ingress_config {
	__u8 mac[6];
	__u8 untagged_refused;
	__u8 pad;
	__u64 vlans[INGRESS_VLAN_WORDS];
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
//
// The sum is taken over the header's five 32-bit words and folded to 16
// bits: the same ones'-complement sum as over its ten 16-bit words (RFC
// 1071, 2.(B)), in half the loads and adds.
static __always_inline int ingress_ipv4_checksum_bad(void *l3, void *end)
{
	struct iphdr *ip = l3;
	__u32 *word = l3;
	__u64 sum = 0;
	int i;

	if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl != 5)
		return 0;
#pragma unroll
	for (i = 0; i < 5; i++)
		sum += word[i];
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum != 0xffff;
}

// The per-packet checks. Returns the reason to drop the frame now (0: go
// on), and sets *refuse to the reason it must not be forwarded for, if
// any, or to INGRESS_UP for a frame that goes up as it is if owned.
// `proto` is the ethertype after `tags` VLAN tags, `l3` where its header
// starts, `tci` the first tag's TCI (host order).
static __always_inline __u32 ingress_check(void *data, void *end, __be16 proto, void *l3,
					   __u32 tags, __u16 tci, __u32 *refuse)
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
	if (*refuse == INGRESS_OK) {
		__u32 id = tci & 0xfff;

		if (tags == 1 && (cfg->vlans[(id / 64) & (INGRESS_VLAN_WORDS - 1)] >> (id % 64)) & 1)
			*refuse = INGRESS_UP;
		else if (tags || cfg->untagged_refused)
			*refuse = INGRESS_VLAN_NOT_CONFIGURED;
	}
	return INGRESS_OK;
}

#endif
