// SPDX-License-Identifier: Apache-2.0
// xdpgen: the harness's packet generator, userspace half. Builds a 60-byte
// IPv4/UDP template frame (64 bytes on a wire with the FCS), loads
// xdpgen.bpf.o and runs it with BPF_PROG_TEST_RUN in live-frames mode on
// the generator's interface, in chunks, until the time is up. Every frame
// goes out of that interface as an XDP frame, each of the next flow.
//
//   xdpgen --obj xdpgen.bpf.o --dev IF --src-mac M --dst-mac M --src IP
//          --dst IP --dport N [--flows N] [--ports N] [--seconds N]
//
// Flow i comes from source address src + i / ports, port 10000 + i % ports
// (flows and ports powers of two). Prints one line when done:
//   xdpgen sent=N seconds=S pps=R
// "sent" counts frames made; frames the receiver had no room for are
// dropped by veth, so compare with what arrives. Stops at --seconds, or on
// SIGINT/SIGTERM at the end of the current chunk (a few ms).
//
// Built by scripts/bench-e2e.sh: clang -O2 xdpgen.c -lbpf.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <getopt.h>
#include <linux/if_ether.h>
#include <net/if.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FRAME_LEN 60
// Frames per BPF_PROG_TEST_RUN call: long enough to amortise the call,
// short enough to stop on time.
#define CHUNK 262144

struct gen_config {
	uint32_t flows_mask;
	uint32_t src_base;
	uint32_t sport_base;
	uint32_t ports_shift;
	uint64_t seq;
};

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

static void die(const char *what)
{
	fprintf(stderr, "xdpgen: %s\n", what);
	exit(2);
}

static void parse_mac(const char *text, uint8_t *mac)
{
	if (sscanf(text, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0], &mac[1], &mac[2], &mac[3],
		   &mac[4], &mac[5]) != 6)
		die("bad MAC address");
}

static uint16_t checksum(const uint8_t *p, size_t len, uint32_t sum)
{
	for (size_t i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)(p[i] << 8 | p[i + 1]);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static int log2_exact(unsigned long n)
{
	int shift = 0;
	if (n == 0 || (n & (n - 1)))
		return -1;
	while ((1ul << shift) != n)
		shift++;
	return shift;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	const char *obj_path = NULL, *dev = NULL;
	uint8_t src_mac[6], dst_mac[6], frame[FRAME_LEN] = {0};
	struct in_addr src = {0}, dst = {0};
	unsigned long flows = 16384, ports = 64, dport = 0, seconds = 10;
	int have = 0;
	static const struct option options[] = {
		{"obj", required_argument, 0, 'o'},     {"dev", required_argument, 0, 'd'},
		{"src-mac", required_argument, 0, 'm'}, {"dst-mac", required_argument, 0, 'M'},
		{"src", required_argument, 0, 's'},     {"dst", required_argument, 0, 'D'},
		{"dport", required_argument, 0, 'p'},   {"flows", required_argument, 0, 'f'},
		{"ports", required_argument, 0, 'P'},   {"seconds", required_argument, 0, 't'},
		{0, 0, 0, 0},
	};
	int c;
	while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (c) {
		case 'o': obj_path = optarg; break;
		case 'd': dev = optarg; break;
		case 'm': parse_mac(optarg, src_mac); have |= 1; break;
		case 'M': parse_mac(optarg, dst_mac); have |= 2; break;
		case 's': if (inet_pton(AF_INET, optarg, &src) != 1) die("bad --src"); have |= 4; break;
		case 'D': if (inet_pton(AF_INET, optarg, &dst) != 1) die("bad --dst"); have |= 8; break;
		case 'p': dport = strtoul(optarg, NULL, 10); break;
		case 'f': flows = strtoul(optarg, NULL, 10); break;
		case 'P': ports = strtoul(optarg, NULL, 10); break;
		case 't': seconds = strtoul(optarg, NULL, 10); break;
		default: die("usage: see the comment at the top of benches/e2e/xdpgen.c");
		}
	}
	if (!obj_path || !dev || have != 15 || dport == 0 || dport > 65535)
		die("needs --obj, --dev, --src-mac, --dst-mac, --src, --dst, --dport");
	if (log2_exact(flows) < 0 || log2_exact(ports) < 0 || ports > 4096 || flows > (1ul << 24))
		die("--flows and --ports must be powers of two (ports at most 4096)");
	if (seconds == 0 || seconds > 3600)
		die("--seconds must be 1..3600");
	unsigned ifindex = if_nametoindex(dev);
	if (!ifindex)
		die("no such interface");

	// The template: flow 0. The program rewrites source and checksums.
	uint8_t *ip = frame + 14, *udp = ip + 20;
	uint16_t udp_len = FRAME_LEN - 14 - 20;
	memcpy(frame, dst_mac, 6);
	memcpy(frame + 6, src_mac, 6);
	frame[12] = ETH_P_IP >> 8;
	frame[13] = ETH_P_IP & 0xff;
	ip[0] = 0x45;
	ip[2] = (20 + udp_len) >> 8;
	ip[3] = (20 + udp_len) & 0xff;
	ip[6] = 0x40; // don't fragment
	ip[8] = 64;   // TTL
	ip[9] = 17;   // UDP
	memcpy(ip + 12, &src, 4);
	memcpy(ip + 16, &dst, 4);
	uint16_t ip_sum = checksum(ip, 20, 0);
	ip[10] = ip_sum >> 8;
	ip[11] = ip_sum & 0xff;
	udp[0] = 10000 >> 8;
	udp[1] = 10000 & 0xff;
	udp[2] = dport >> 8;
	udp[3] = dport & 0xff;
	udp[4] = udp_len >> 8;
	udp[5] = udp_len & 0xff;

	libbpf_set_print(NULL);
	struct bpf_object *obj = bpf_object__open_file(obj_path, NULL);
	if (!obj || libbpf_get_error(obj))
		die("cannot open the BPF object");
	struct bpf_program *prog = bpf_object__find_program_by_name(obj, "generate");
	if (!prog)
		die("no program 'generate' in the object");
	bpf_program__set_type(prog, BPF_PROG_TYPE_XDP);
	if (bpf_object__load(obj))
		die("cannot load the BPF program (root? BPF enabled?)");
	int map_fd = bpf_object__find_map_fd_by_name(obj, "config");
	if (map_fd < 0)
		die("no map 'config' in the object");
	struct gen_config cfg = {
		.flows_mask = (uint32_t)flows - 1,
		.src_base = ntohl(src.s_addr),
		.sport_base = 10000,
		.ports_shift = (uint32_t)log2_exact(ports),
		.seq = 0,
	};
	uint32_t key = 0;
	if (bpf_map_update_elem(map_fd, &key, &cfg, BPF_ANY))
		die("cannot set the generator's config map");

	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	struct xdp_md ctx_in = {.data_end = FRAME_LEN, .ingress_ifindex = ifindex};
	uint64_t sent = 0;
	double start = now(), deadline = start + (double)seconds;
	while (!stopping && now() < deadline) {
		LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame, .data_size_in = FRAME_LEN,
			    .ctx_in = &ctx_in, .ctx_size_in = sizeof(ctx_in), .repeat = CHUNK,
			    .flags = BPF_F_TEST_XDP_LIVE_FRAMES, .batch_size = 64);
		if (bpf_prog_test_run_opts(bpf_program__fd(prog), &opts)) {
			fprintf(stderr, "xdpgen: BPF_PROG_TEST_RUN: %s\n", strerror(errno));
			return 2;
		}
		sent += CHUNK;
	}
	double took = now() - start;
	printf("xdpgen sent=%llu seconds=%.3f pps=%.0f\n", (unsigned long long)sent, took,
	       took > 0 ? (double)sent / took : 0.0);
	bpf_object__close(obj);
	return 0;
}
