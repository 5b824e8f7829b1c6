// SPDX-License-Identifier: Apache-2.0
// The harness's packet sink: an XDP program on the backend host's interface
// that drops the flood (UDP to the sink ports, any address, any MAC) and
// passes everything else (ARP, the echo service, HTTP) to the kernel.
// Dropping in XDP keeps the sink cheap and equal for every variant; the
// frames it drops are still counted in the device's rx_packets.
//
// Also used as the generator's own sink: on the gateway's client-facing
// interface, it measures how fast the generator alone can send.
//
// Built by scripts/bench-e2e.sh with clang -O2 -target bpf.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// UDP destination ports of the flood: the VIP's port (forward-only, where
// nothing is translated) and the backends' port (after DNAT).
#define SINK_PORT_LOW 7000
#define SINK_PORT_HIGH 7001

SEC("xdp")
int sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct udphdr *udp;
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
	if (port >= SINK_PORT_LOW && port <= SINK_PORT_HIGH)
		return XDP_DROP;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
