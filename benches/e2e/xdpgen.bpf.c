// SPDX-License-Identifier: Apache-2.0
// The harness's packet generator, kernel half (userspace half: xdpgen.c).
// xdpgen runs this program with BPF_PROG_TEST_RUN in live-frames mode: the
// kernel hands it a copy of the template frame again and again, and every
// frame it returns XDP_TX for is sent out of the generator's interface
// (into the veth peer's receive ring, as an XDP frame). No socket, no skb:
// far cheaper per packet than any socket generator, so the generator's core
// is not what limits a gateway on the other core.
//
// Each frame gets the next flow: source address and port from a counter,
// then both checksums afresh (frames are recycled, so nothing is
// incremental).
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// What xdpgen sets before the first run; the counter moves.
struct gen_config {
	__u32 flows_mask;  // flows - 1, flows a power of two
	__u32 src_base;    // first source address, host order
	__u32 sport_base;  // first source port
	__u32 ports_shift; // log2 of the source ports per address
	__u64 seq;         // frames made so far
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_config);
} config SEC(".maps");

// The template is 60 bytes: Ethernet, IPv4 without options, UDP, 18 bytes.
#define FRAME_LEN 60
#define UDP_LEN (FRAME_LEN - sizeof(struct ethhdr) - sizeof(struct iphdr))

static __always_inline __u16 fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

SEC("xdp")
int generate(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 key = 0;
	struct gen_config *cfg = bpf_map_lookup_elem(&config, &key);
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct udphdr *udp = (void *)(ip + 1);
	__u16 *words;
	__u32 flow, sum = 0;
	int i;

	if (!cfg || data + FRAME_LEN > end)
		return XDP_ABORTED;
	flow = (__u32)cfg->seq & cfg->flows_mask;
	cfg->seq++;
	ip->saddr = bpf_htonl(cfg->src_base + (flow >> cfg->ports_shift));
	udp->source = bpf_htons(cfg->sport_base + (flow & ((1u << cfg->ports_shift) - 1)));

	ip->check = 0;
	words = (__u16 *)ip;
#pragma unroll
	for (i = 0; i < (int)(sizeof(struct iphdr) / 2); i++)
		sum += words[i];
	ip->check = fold(sum);

	// UDP over the pseudo-header (addresses, protocol, length) and itself.
	udp->check = 0;
	sum = (ip->saddr & 0xffff) + (ip->saddr >> 16) + (ip->daddr & 0xffff) + (ip->daddr >> 16) +
	      bpf_htons(IPPROTO_UDP) + udp->len;
	words = (__u16 *)udp;
#pragma unroll
	for (i = 0; i < (int)(UDP_LEN / 2); i++)
		sum += words[i];
	udp->check = fold(sum) ?: 0xffff;
	return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
