// SPDX-License-Identifier: Apache-2.0
// The harness's packet generator, kernel half (userspace half: xdpgen.c).
// xdpgen runs `generate` with BPF_PROG_TEST_RUN in live-frames mode: the
// kernel hands it a copy of the template frame again and again, and every
// frame it returns XDP_TX for is sent out of the generator's interface
// (into the veth peer's receive ring, as an XDP frame). No socket, no skb:
// far cheaper per packet than any socket generator, so the generator's core
// is not what limits a gateway on the other core.
//
// Two kinds of frame, both 60 bytes (64 on a wire with the FCS):
// - UDP (the template xdpgen builds for MODE_UDP): 18 bytes of payload.
// - TCP SYN (MODE_SYN): a 24-byte TCP header, the MSS option its only
//   option, as a client's first segment; the sequence number is random.
// Sources either count through flows (source address and port from a
// counter: --flows, --ports), or are random (--random-src): an address
// drawn within a prefix, never within one of the prefixes to avoid (the
// test's real hosts), and a port drawn in 1024..65535. Checksums are
// computed afresh for every frame (frames are recycled, so nothing is
// incremental).
//
// With --even (interval_ps set) frames are spaced evenly by the kernel's
// clock: a turn before the next frame is due sends nothing.
//
// Every frame starts from the template in the config map, copied over
// whatever the page held: live-frames mode recycles its pages, and a page
// comes back as whoever had it last left it (a gateway that rewrote the
// frame in place — an XDP NAT, the kernel's NAT on an skb built on the
// page — returns it with the backend's address in it).
//
// `returns` is the generator's own sink, attached to its interface while
// it runs (--drop-returns): it drops what comes back to the random
// sources (SYN-ACKs, resets, ICMP errors), so that the host the generator
// shares its interface with never sees them.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MODE_UDP 0
#define MODE_SYN 1
// Prefixes the random sources stay out of.
#define MAX_AVOID 4
// Draws of a random source before giving up on the frame.
#define DRAWS 4

struct prefix {
	__u32 net;  // host order, masked
	__u32 mask; // host order
};

// What xdpgen sets before the first run; the counters move.
struct gen_config {
	__u32 flows_mask;  // flows - 1, flows a power of two
	__u32 src_base;    // first source address, host order
	__u32 sport_base;  // first source port
	__u32 ports_shift; // log2 of the source ports per address
	__u64 seq;         // frames made so far
	__u32 mode;        // MODE_UDP or MODE_SYN
	__u32 random_src;  // 1: sources drawn within `random_net`
	struct prefix random_net;
	struct prefix avoid[MAX_AVOID]; // mask 0: unused
	__u64 skipped;     // frames not sent: no source drawn outside `avoid`
	__u64 returned;    // frames `returns` dropped
	__u64 interval_ps; // --even: picoseconds between frames (0: unpaced)
	__u64 next_ps;     // --even: when the next frame is due (kernel clock)
	__u8 template[64]; // the frame (FRAME_LEN bytes), written afresh each time
};

// --even: how far behind the schedule the generator may fall before it
// starts afresh from now instead of catching up in a burst.
#define EVEN_SLACK 256

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_config);
} config SEC(".maps");

// The template is 60 bytes: Ethernet, IPv4 without options, then UDP and
// 18 bytes, or TCP with the MSS option and 2 bytes of Ethernet padding.
#define FRAME_LEN 60
#define UDP_LEN (FRAME_LEN - sizeof(struct ethhdr) - sizeof(struct iphdr))
#define TCP_LEN 24

static __always_inline __u16 fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

static __always_inline int avoided(const struct gen_config *cfg, __u32 addr)
{
	int i;
#pragma unroll
	for (i = 0; i < MAX_AVOID; i++)
		if (cfg->avoid[i].mask && (addr & cfg->avoid[i].mask) == cfg->avoid[i].net)
			return 1;
	return 0;
}

// A random address within the prefix and outside every avoided one, or 0.
static __always_inline __u32 random_source(const struct gen_config *cfg)
{
	int i;
#pragma unroll
	for (i = 0; i < DRAWS; i++) {
		__u32 addr = cfg->random_net.net | (bpf_get_prandom_u32() & ~cfg->random_net.mask);
		if (!avoided(cfg, addr))
			return addr;
	}
	return 0;
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
	struct tcphdr *tcp = (void *)(ip + 1);
	__u16 *words, sport;
	__u32 flow, saddr, sum = 0;
	int i;

	if (!cfg || data + FRAME_LEN > end)
		return XDP_ABORTED;
	__builtin_memcpy(data, cfg->template, FRAME_LEN);
	if (cfg->interval_ps) {
		// Not due yet: this turn sends nothing (the frame is recycled).
		__u64 now = bpf_ktime_get_ns() * 1000;
		if (now < cfg->next_ps)
			return XDP_DROP;
		if (now - cfg->next_ps > EVEN_SLACK * cfg->interval_ps)
			cfg->next_ps = now;
		cfg->next_ps += cfg->interval_ps;
	}
	if (cfg->random_src) {
		saddr = random_source(cfg);
		if (!saddr) {
			__sync_fetch_and_add(&cfg->skipped, 1);
			return XDP_DROP;
		}
		sport = 1024 + bpf_get_prandom_u32() % (65536 - 1024);
	} else {
		flow = (__u32)cfg->seq & cfg->flows_mask;
		saddr = cfg->src_base + (flow >> cfg->ports_shift);
		sport = cfg->sport_base + (flow & ((1u << cfg->ports_shift) - 1));
	}
	cfg->seq++;
	ip->saddr = bpf_htonl(saddr);

	ip->check = 0;
	words = (__u16 *)ip;
#pragma unroll
	for (i = 0; i < (int)(sizeof(struct iphdr) / 2); i++)
		sum += words[i];
	ip->check = fold(sum);

	if (cfg->mode == MODE_SYN) {
		// TCP over the pseudo-header (addresses, protocol, length) and itself.
		tcp->source = bpf_htons(sport);
		tcp->seq = bpf_get_prandom_u32();
		tcp->check = 0;
		sum = (ip->saddr & 0xffff) + (ip->saddr >> 16) + (ip->daddr & 0xffff) +
		      (ip->daddr >> 16) + bpf_htons(IPPROTO_TCP) + bpf_htons(TCP_LEN);
		words = (__u16 *)tcp;
#pragma unroll
		for (i = 0; i < TCP_LEN / 2; i++)
			sum += words[i];
		tcp->check = fold(sum);
		return XDP_TX;
	}

	// UDP over the pseudo-header (addresses, protocol, length) and itself.
	udp->source = bpf_htons(sport);
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

SEC("xdp")
int returns(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	__u32 key = 0, daddr;
	struct gen_config *cfg = bpf_map_lookup_elem(&config, &key);

	if (!cfg || !cfg->random_src || (void *)(ip + 1) > end ||
	    eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	daddr = bpf_ntohl(ip->daddr);
	if ((daddr & cfg->random_net.mask) != cfg->random_net.net || avoided(cfg, daddr))
		return XDP_PASS;
	__sync_fetch_and_add(&cfg->returned, 1);
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
