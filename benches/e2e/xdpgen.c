// SPDX-License-Identifier: Apache-2.0
// xdpgen: the harness's packet generator, userspace half. Builds a 60-byte
// IPv4 template frame (64 bytes on a wire with the FCS), UDP or a TCP SYN,
// loads xdpgen.bpf.o and runs it with BPF_PROG_TEST_RUN in live-frames mode
// on the generator's interface, in chunks, until the time is up. Every
// frame goes out of that interface as an XDP frame, each of the next flow.
//
//   xdpgen --obj xdpgen.bpf.o --dev IF --src-mac M --dst-mac M --src IP
//          --dst IP --dport N [--flows N] [--ports N] [--seconds N]
//          [--syn] [--random-src CIDR [--avoid CIDR]... [--drop-returns]]
//          [--pps N [--even]]
//
// Flow i comes from source address src + i / ports, port 10000 + i % ports
// (flows and ports powers of two). With --random-src every frame comes
// from a random address within CIDR, never within an --avoid prefix (up
// to 4: the test's real hosts), and a random port in 1024..65535; --src
// is then only the template's. --syn sends TCP SYNs (the MSS option, a
// random sequence number) instead of UDP. --drop-returns attaches an XDP
// program to the interface for the run that drops every IPv4 frame to a
// random source (SYN-ACKs, resets, ICMP errors: the flood's returns), and
// passes the rest, so the real host on that interface sees none of them.
// --pps paces the frames at that rate (default: as fast as it can), in
// bursts: each 5 ms, the frames of those 5 ms at once. With --even, every
// frame leaves at its own time instead: the program reads the kernel's
// clock and drops its turn (sends nothing) until the next frame is due,
// so the rate is even down to a frame, as a throughput search wants; the
// generator's core then spins in the kernel for the whole run. If it falls
// more than 256 frames behind (one veth ring; descheduled), it starts afresh from now
// rather than catching up in a burst: "pps" says what it achieved.
//
// Some kernels refuse live-frames mode (EPERM under a lockdown, or a
// kernel without it) while they allow plain test runs. Then xdpgen says so
// on stderr and sends the same frames another way: the same program makes
// each frame in a plain test run (one frame a call) and an AF_PACKET socket
// sends them, 64 a call (sendmmsg, past the qdisc), out of the same
// interface. The frames and the report are the same; the rate is lower
// (about a quarter of live frames'), and veth drops what its peer has no
// room for as before.
//
// Prints one line when done:
//   xdpgen mode=syn sent=N seconds=S pps=R skipped=N returns_dropped=N via=live|packet
// "sent" counts frames made; frames the receiver had no room for are
// dropped by veth, so compare with what arrives. "skipped" counts frames
// for which no source outside the avoided prefixes was drawn (a few per
// billion), "returns_dropped" the frames --drop-returns dropped. Stops at
// --seconds, or on SIGINT/SIGTERM at the end of the current chunk (a few
// ms).
//
// Built by scripts/bench-e2e.sh and by the flood tests
// (tests/netns/flood.rs): clang -O2 xdpgen.c -lbpf.
#define _GNU_SOURCE // sendmmsg
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <getopt.h>
#include <linux/if_ether.h>
#include <linux/if_link.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FRAME_LEN 60
// Frames per BPF_PROG_TEST_RUN call: long enough to amortise the call,
// short enough to stop on time.
#define CHUNK 262144
// Frames per round when sending through a packet socket (a few ms), and
// per sendmmsg call.
#define PACKET_CHUNK 4096
#define PACKET_BATCH 64

#define MODE_UDP 0
#define MODE_SYN 1
#define MAX_AVOID 4
#define TCP_LEN 24

struct prefix {
	uint32_t net;
	uint32_t mask;
};

// Laid out as in xdpgen.bpf.c.
struct gen_config {
	uint32_t flows_mask;
	uint32_t src_base;
	uint32_t sport_base;
	uint32_t ports_shift;
	uint64_t seq;
	uint32_t mode;
	uint32_t random_src;
	struct prefix random_net;
	struct prefix avoid[MAX_AVOID];
	uint64_t skipped;
	uint64_t returned;
	uint64_t interval_ps;
	uint64_t next_ps;
	uint8_t template[64];
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

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

// "a.b.c.d/len" as a host-order prefix.
static struct prefix parse_prefix(const char *text)
{
	char addr[32];
	unsigned len;
	struct in_addr in;
	if (sscanf(text, "%31[0-9.]/%u", addr, &len) != 2 || len > 32 ||
	    inet_pton(AF_INET, addr, &in) != 1)
		die("bad prefix (a.b.c.d/len)");
	uint32_t mask = len ? ~0u << (32 - len) : 0;
	return (struct prefix){.net = ntohl(in.s_addr) & mask, .mask = mask};
}

static void sleep_until(double when)
{
	double left = when - now();
	if (left <= 0)
		return;
	struct timespec ts = {.tv_sec = (time_t)left, .tv_nsec = (long)((left - (time_t)left) * 1e9)};
	nanosleep(&ts, NULL);
}

static uint16_t checksum(const uint8_t *p, size_t len, uint32_t sum)
{
	for (size_t i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)(p[i] << 8 | p[i + 1]);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

// A raw packet socket that sends out of `ifindex` past the qdisc (as the
// live frames do: nothing queues them), or -1.
static int open_packet_socket(unsigned ifindex)
{
	int sock = socket(AF_PACKET, SOCK_RAW, 0), one = 1;
	struct sockaddr_ll at = {.sll_family = AF_PACKET, .sll_ifindex = (int)ifindex};
	if (sock < 0)
		return -1;
	if (setsockopt(sock, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one)) ||
	    bind(sock, (struct sockaddr *)&at, sizeof(at))) {
		close(sock);
		return -1;
	}
	return sock;
}

// Sends the `n` frames of `frames` on `sock`, retrying what a full send
// buffer refused; 0, or -1 with errno set.
static int send_all(int sock, uint8_t (*frames)[FRAME_LEN], unsigned n)
{
	struct iovec iov[PACKET_BATCH];
	struct mmsghdr msgs[PACKET_BATCH];
	unsigned done = 0;
	memset(msgs, 0, sizeof(msgs));
	for (unsigned i = 0; i < n; i++) {
		iov[i] = (struct iovec){.iov_base = frames[i], .iov_len = FRAME_LEN};
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	while (done < n) {
		int sent = sendmmsg(sock, msgs + done, n - done, 0);
		if (sent < 0 && errno != EINTR && errno != ENOBUFS && errno != EAGAIN)
			return -1;
		if (sent > 0)
			done += (unsigned)sent;
	}
	return 0;
}

// `count` turns of the generator without live frames: each turn the
// program makes a frame in a plain test run, and the frames it would send
// (XDP_TX) go out of the packet socket in batches. 0, or -1 with errno set.
static int run_by_packet(int prog_fd, int sock, const uint8_t *frame, struct xdp_md *ctx,
			 unsigned long count)
{
	static uint8_t batch[PACKET_BATCH][FRAME_LEN];
	unsigned ready = 0;
	for (unsigned long turn = 0; turn < count; turn++) {
		LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame, .data_size_in = FRAME_LEN,
			    .data_out = batch[ready], .data_size_out = FRAME_LEN,
			    .ctx_in = ctx, .ctx_size_in = sizeof(*ctx), .repeat = 1);
		if (bpf_prog_test_run_opts(prog_fd, &opts))
			return -1;
		if (opts.retval == XDP_DROP)
			continue; // not due, or no source drawn: as in live mode
		if (opts.retval != XDP_TX || opts.data_size_out != FRAME_LEN) {
			errno = EPROTO;
			return -1;
		}
		if (++ready == PACKET_BATCH) {
			if (send_all(sock, batch, ready))
				return -1;
			ready = 0;
		}
	}
	return ready ? send_all(sock, batch, ready) : 0;
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

int main(int argc, char **argv)
{
	const char *obj_path = NULL, *dev = NULL;
	uint8_t src_mac[6], dst_mac[6], frame[FRAME_LEN] = {0};
	struct in_addr src = {0}, dst = {0};
	unsigned long flows = 16384, ports = 64, dport = 0, seconds = 10, pps = 0;
	int have = 0, syn = 0, drop_returns = 0, avoids = 0, even = 0;
	struct gen_config cfg = {0};
	static const struct option options[] = {
		{"obj", required_argument, 0, 'o'},     {"dev", required_argument, 0, 'd'},
		{"src-mac", required_argument, 0, 'm'}, {"dst-mac", required_argument, 0, 'M'},
		{"src", required_argument, 0, 's'},     {"dst", required_argument, 0, 'D'},
		{"dport", required_argument, 0, 'p'},   {"flows", required_argument, 0, 'f'},
		{"ports", required_argument, 0, 'P'},   {"seconds", required_argument, 0, 't'},
		{"syn", no_argument, 0, 'S'},           {"random-src", required_argument, 0, 'r'},
		{"avoid", required_argument, 0, 'a'},   {"drop-returns", no_argument, 0, 'R'},
		{"pps", required_argument, 0, 'x'},     {"even", no_argument, 0, 'e'},
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
		case 'S': syn = 1; break;
		case 'r': cfg.random_net = parse_prefix(optarg); cfg.random_src = 1; break;
		case 'a':
			if (avoids == MAX_AVOID)
				die("at most 4 --avoid prefixes");
			cfg.avoid[avoids++] = parse_prefix(optarg);
			break;
		case 'R': drop_returns = 1; break;
		case 'x': pps = strtoul(optarg, NULL, 10); break;
		case 'e': even = 1; break;
		default: die("usage: see the comment at the top of benches/e2e/xdpgen.c");
		}
	}
	if (!obj_path || !dev || have != 15 || dport == 0 || dport > 65535)
		die("needs --obj, --dev, --src-mac, --dst-mac, --src, --dst, --dport");
	if (log2_exact(flows) < 0 || log2_exact(ports) < 0 || ports > 4096 || flows > (1ul << 24))
		die("--flows and --ports must be powers of two (ports at most 4096)");
	if (seconds == 0 || seconds > 3600)
		die("--seconds must be 1..3600");
	if ((avoids || drop_returns) && !cfg.random_src)
		die("--avoid and --drop-returns need --random-src");
	if (even && !pps)
		die("--even needs --pps");
	if (cfg.random_src && cfg.random_net.mask == ~0u)
		die("--random-src needs a prefix shorter than /32");
	unsigned ifindex = if_nametoindex(dev);
	if (!ifindex)
		die("no such interface");

	// The template: flow 0. The program rewrites source and checksums.
	uint8_t *ip = frame + 14, *l4 = ip + 20;
	uint16_t l4_len = syn ? TCP_LEN : FRAME_LEN - 14 - 20;
	memcpy(frame, dst_mac, 6);
	memcpy(frame + 6, src_mac, 6);
	frame[12] = ETH_P_IP >> 8;
	frame[13] = ETH_P_IP & 0xff;
	ip[0] = 0x45;
	ip[2] = (20 + l4_len) >> 8;
	ip[3] = (20 + l4_len) & 0xff;
	ip[6] = 0x40; // don't fragment
	ip[8] = 64;   // TTL
	ip[9] = syn ? 6 : 17;
	memcpy(ip + 12, &src, 4);
	memcpy(ip + 16, &dst, 4);
	uint16_t ip_sum = checksum(ip, 20, 0);
	ip[10] = ip_sum >> 8;
	ip[11] = ip_sum & 0xff;
	l4[0] = 10000 >> 8;
	l4[1] = 10000 & 0xff;
	l4[2] = dport >> 8;
	l4[3] = dport & 0xff;
	if (syn) {
		l4[12] = (TCP_LEN / 4) << 4; // data offset
		l4[13] = 0x02;               // SYN
		l4[14] = 64240 >> 8;         // window
		l4[15] = 64240 & 0xff;
		l4[20] = 2; // MSS, 4 bytes, 1460
		l4[21] = 4;
		l4[22] = 1460 >> 8;
		l4[23] = 1460 & 0xff;
	} else {
		l4[4] = l4_len >> 8;
		l4[5] = l4_len & 0xff;
	}

	libbpf_set_print(NULL);
	struct bpf_object *obj = bpf_object__open_file(obj_path, NULL);
	if (!obj || libbpf_get_error(obj))
		die("cannot open the BPF object");
	struct bpf_program *prog = bpf_object__find_program_by_name(obj, "generate");
	struct bpf_program *returns = bpf_object__find_program_by_name(obj, "returns");
	if (!prog || !returns)
		die("no program 'generate' or 'returns' in the object");
	bpf_program__set_type(prog, BPF_PROG_TYPE_XDP);
	bpf_program__set_type(returns, BPF_PROG_TYPE_XDP);
	if (bpf_object__load(obj))
		die("cannot load the BPF programs (root? BPF enabled?)");
	int map_fd = bpf_object__find_map_fd_by_name(obj, "config");
	if (map_fd < 0)
		die("no map 'config' in the object");
	cfg.flows_mask = (uint32_t)flows - 1;
	cfg.src_base = ntohl(src.s_addr);
	cfg.sport_base = 10000;
	cfg.ports_shift = (uint32_t)log2_exact(ports);
	cfg.mode = syn ? MODE_SYN : MODE_UDP;
	memcpy(cfg.template, frame, FRAME_LEN);
	if (even)
		cfg.interval_ps = 1000000000000ull / pps;
	uint32_t key = 0;
	if (bpf_map_update_elem(map_fd, &key, &cfg, BPF_ANY))
		die("cannot set the generator's config map");
	if (drop_returns &&
	    bpf_xdp_attach((int)ifindex, bpf_program__fd(returns), XDP_FLAGS_DRV_MODE, NULL)) {
		fprintf(stderr, "xdpgen: cannot attach the returns' drop to %s: %s\n", dev,
			strerror(errno));
		return 2;
	}

	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	// Paced: chunks of 5 ms at the rate, each sent when the rate says.
	unsigned long chunk = CHUNK;
	if (pps && !even) {
		chunk = pps / 200;
		chunk = chunk < 64 ? 64 : chunk > CHUNK ? CHUNK : chunk;
	}
	struct xdp_md ctx_in = {.data_end = FRAME_LEN, .ingress_ifindex = ifindex};
	uint64_t chunks_sent = 0;
	int failed = 0, sock = -1;
	double start = now(), deadline = start + (double)seconds;
	while (!stopping && now() < deadline) {
		if (pps && !even)
			sleep_until(start + (double)chunks_sent / (double)pps);
		if (sock >= 0) {
			if (run_by_packet(bpf_program__fd(prog), sock, frame, &ctx_in, chunk)) {
				fprintf(stderr, "xdpgen: sending through AF_PACKET: %s\n",
					strerror(errno));
				failed = 1;
				break;
			}
			chunks_sent += chunk;
			continue;
		}
		LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame, .data_size_in = FRAME_LEN,
			    .ctx_in = &ctx_in, .ctx_size_in = sizeof(ctx_in), .repeat = chunk,
			    .flags = BPF_F_TEST_XDP_LIVE_FRAMES, .batch_size = 64);
		if (bpf_prog_test_run_opts(bpf_program__fd(prog), &opts)) {
			int refused = errno;
			if (chunks_sent == 0 &&
			    (refused == EPERM || refused == EINVAL || refused == EOPNOTSUPP)) {
				sock = open_packet_socket(ifindex);
				if (sock >= 0) {
					fprintf(stderr,
						"xdpgen: the kernel refuses live frames (%s); sending "
						"through an AF_PACKET socket instead\n",
						strerror(refused));
					if (!pps || even)
						chunk = PACKET_CHUNK;
					continue;
				}
				fprintf(stderr, "xdpgen: no live frames (%s) and no packet socket: %s\n",
					strerror(refused), strerror(errno));
			} else {
				fprintf(stderr, "xdpgen: BPF_PROG_TEST_RUN: %s\n", strerror(refused));
			}
			failed = 1;
			break;
		}
		chunks_sent += chunk;
	}
	double took = now() - start;
	// Let returns in flight arrive before the drop goes.
	if (drop_returns) {
		sleep_until(now() + 0.2);
		bpf_xdp_detach((int)ifindex, XDP_FLAGS_DRV_MODE, NULL);
	}
	struct gen_config done = {0};
	if (bpf_map_lookup_elem(map_fd, &key, &done))
		die("cannot read the generator's config map");
	printf("xdpgen mode=%s sent=%llu seconds=%.3f pps=%.0f skipped=%llu returns_dropped=%llu "
	       "via=%s\n",
	       syn ? "syn" : "udp", (unsigned long long)done.seq, took,
	       took > 0 ? (double)done.seq / took : 0.0, (unsigned long long)done.skipped,
	       (unsigned long long)done.returned, sock >= 0 ? "packet" : "live");
	if (sock >= 0)
		close(sock);
	bpf_object__close(obj);
	return failed ? 2 : 0;
}
