// SPDX-License-Identifier: Apache-2.0
// The harness's packet sink: an XDP program on the backend host's interface
// that checks and drops the flood (UDP to the flood's ports, any address,
// any MAC) and passes everything else (ARP, the echo service, HTTP) to the
// kernel. Dropping in XDP keeps the sink cheap and equal for every variant.
//
// It counts each flood frame into one of three per-CPU counters (the map
// `counts`, which the harness reads with bpftool):
//   COUNT_TRANSLATED    to a backend (BACKEND_FIRST .. + BACKEND_COUNT - 1)
//                       on BACKEND_PORT, from the gateway's MAC (GW_MAC),
//                       with a correct IPv4 header checksum: what a NAT
//                       gateway must deliver;
//   COUNT_UNTRANSLATED  to the VIP on FLOOD_PORT, from GW_MAC, with a
//                       correct checksum: the generator's frame as it was
//                       made, what forward-only delivers (and the
//                       generator alone, where this sink is its ceiling);
//   COUNT_WRONG         any other UDP frame to FLOOD_PORT or BACKEND_PORT:
//                       a wrong address, port, MAC or checksum.
// The harness takes the first (a NAT variant) or the second (forward-only,
// the generator alone) as delivered and reports everything else as an
// error. The generator's MAC is fgb-p1's (topology.sh), so GW_MAC is the
// source MAC of both what the gateway sends and what the generator sends.
//
// Built by scripts/bench-e2e.sh with clang -O2 -target bpf and the
// topology's addresses as -D definitions:
//   -DGW_MAC=0x02,0x66,... (6 bytes) -DVIP_ADDR=0x... -DBACKEND_FIRST=0x...
//   -DBACKEND_COUNT=3 -DFLOOD_PORT=7000 -DBACKEND_PORT=7001
// (addresses in host order).
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#if !defined(GW_MAC) || !defined(VIP_ADDR) || !defined(BACKEND_FIRST) || \
	!defined(BACKEND_COUNT) || !defined(FLOOD_PORT) || !defined(BACKEND_PORT)
#error "build with the topology's -D definitions (see the comment above)"
#endif

#define COUNT_TRANSLATED 0
#define COUNT_UNTRANSLATED 1
#define COUNT_WRONG 2
#define COUNTS 3

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTS);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

static const __u8 gw_mac[ETH_ALEN] = {GW_MAC};

static __always_inline int from_gateway(const struct ethhdr *eth)
{
	int i;
#pragma unroll
	for (i = 0; i < ETH_ALEN; i++)
		if (eth->h_source[i] != gw_mac[i])
			return 0;
	return 1;
}

static __always_inline int checksum_ok(const struct iphdr *ip)
{
	const __u16 *words = (const __u16 *)ip;
	__u32 sum = 0;
	int i;
#pragma unroll
	for (i = 0; i < (int)(sizeof(struct iphdr) / 2); i++)
		sum += words[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum == 0xffff;
}

static __always_inline void count(__u32 which)
{
	__u64 *n = bpf_map_lookup_elem(&counts, &which);
	if (n)
		*n += 1; // per CPU: no other writer
}

SEC("xdp")
int sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct udphdr *udp;
	__u32 daddr;
	__u16 port;

	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_UDP || ip->ihl != 5)
		return XDP_PASS;
	udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end)
		return XDP_PASS;
	port = bpf_ntohs(udp->dest);
	if (port != FLOOD_PORT && port != BACKEND_PORT)
		return XDP_PASS;
	daddr = bpf_ntohl(ip->daddr);
	if (!from_gateway(eth) || !checksum_ok(ip))
		count(COUNT_WRONG);
	else if (port == BACKEND_PORT && daddr - BACKEND_FIRST < BACKEND_COUNT)
		count(COUNT_TRANSLATED);
	else if (port == FLOOD_PORT && daddr == VIP_ADDR)
		count(COUNT_UNTRANSLATED);
	else
		count(COUNT_WRONG);
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
