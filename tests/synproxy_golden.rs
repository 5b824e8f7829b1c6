//! The SYN proxy's XDP half (bpf/flowgate_synproxy.h) through
//! BPF_PROG_TEST_RUN, as tests/announce_golden.rs runs the announcements:
//! each frame in is written out here field by field, and the answer the
//! program gives is compared whole against a frame built here too. Two
//! fields only the kernel knows are taken from the answer: the cookie
//! (made with the kernel's secret) and the clock part of the SYN-ACK's
//! timestamp. The checksums of the expected frames are computed here in
//! full, so a wrong one in the answer fails.
//!
//! Needs root (loading a BPF program).

use std::net::IpAddr;

use std::sync::Arc;

use flowgate_dataplane::fastpath::{
    connection_rewrites, CacheGeometry, EntryMemory, FastConfig, FastPath,
};
use flowgate_dataplane::flow::{FlowTable, FlowTimeouts};
use flowgate_dataplane::pipeline::{Pipeline, Verdict};
use flowgate_dataplane::port::{FrameMemory, FramePool, MemoryFrames};
use flowgate_dataplane::rules;
use flowgate_dataplane::synproxy::handshake::{self, CookieAck, HandshakeOptions};
use flowgate_dataplane::synproxy::SynProxy;
use flowgate_dataplane::table::Snapshot;
use flowgate_dataplane::wire::frame_checksums_ok;
use flowgate_dataplane::wire::ip_proto;
use flowgate_dataplane::xdp::test_run::action;
use flowgate_dataplane::xdp::{OwnedTraffic, TrafficKey, XdpTester};

const GW_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x01];
const CLIENT_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x02];
const VIP4: [u8; 4] = [198, 18, 0, 50];
const CLIENT4: [u8; 4] = [198, 18, 0, 2];
const BACKEND4: [u8; 4] = [198, 19, 0, 10];
/// 2001:2::50 and the client 2001:2::2.
const VIP6: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x50];
const CLIENT6: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02];
const PORT: u16 = 80;
const CLIENT_PORT: u16 = 40000;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const PSH: u8 = 0x08;

fn mapped(v4: [u8; 4]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[10] = 0xff;
    a[11] = 0xff;
    a[12..].copy_from_slice(&v4);
    a
}

fn service_key(v6: bool) -> TrafficKey {
    TrafficKey {
        protocol: ip_proto::TCP,
        address: if v6 { VIP6 } else { mapped(VIP4) },
        port: PORT,
    }
}

/// The program owning the IPv4 and IPv6 service (and a backend), both
/// with `mode`.
fn tester(mode: SynProxy) -> XdpTester {
    let mut x =
        XdpTester::load(CacheGeometry::new(1, 1024)).expect("loading the XDP program (needs root)");
    let owned = OwnedTraffic {
        services: [service_key(false), service_key(true)].into(),
        reply_sources: [TrafficKey {
            protocol: ip_proto::TCP,
            address: mapped(BACKEND4),
            port: 8080,
        }]
        .into(),
        ..OwnedTraffic::default()
    };
    x.own(&owned).unwrap();
    x.set_syn_proxy(&service_key(false), mode).unwrap();
    x.set_syn_proxy(&service_key(true), mode).unwrap();
    x
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in bytes.chunks(2) {
        let hi = u32::from(pair[0]) << 8;
        let lo = pair.get(1).map_or(0, |&b| u32::from(b));
        sum += hi | lo;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A TCP segment as its fields say, in a frame.
struct Segment<'a> {
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    options: &'a [u8],
    payload: &'a [u8],
    ttl: u8,
    /// IPv4: identification and flags/fragment word.
    ip_id: u16,
    ip_frag: u16,
    /// Byte 12's low nibble (reserved bits).
    reserved: u8,
}

impl Segment<'_> {
    fn frame(&self) -> Vec<u8> {
        assert_eq!(self.options.len() % 4, 0);
        let mut tcp = Vec::new();
        tcp.extend_from_slice(&self.sport.to_be_bytes());
        tcp.extend_from_slice(&self.dport.to_be_bytes());
        tcp.extend_from_slice(&self.seq.to_be_bytes());
        tcp.extend_from_slice(&self.ack.to_be_bytes());
        tcp.push((((20 + self.options.len()) / 4) as u8) << 4 | self.reserved);
        tcp.push(self.flags);
        tcp.extend_from_slice(&self.window.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0]);
        tcp.extend_from_slice(self.options);
        tcp.extend_from_slice(self.payload);
        let mut pseudo = Vec::new();
        let mut f = Vec::new();
        f.extend_from_slice(&self.eth_dst);
        f.extend_from_slice(&self.eth_src);
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                let mut ip = vec![0x45, 0];
                ip.extend_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
                ip.extend_from_slice(&self.ip_id.to_be_bytes());
                ip.extend_from_slice(&self.ip_frag.to_be_bytes());
                ip.extend_from_slice(&[self.ttl, 6, 0, 0]);
                ip.extend_from_slice(&s.octets());
                ip.extend_from_slice(&d.octets());
                let c = checksum(&ip);
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&ip);
                pseudo.extend_from_slice(&s.octets());
                pseudo.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&[0, 6]);
                pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&0x86ddu16.to_be_bytes());
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
                f.extend_from_slice(&[6, self.ttl]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&s.octets());
                pseudo.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&(tcp.len() as u32).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, 6]);
            }
            _ => panic!("mixed families"),
        }
        pseudo.extend_from_slice(&tcp);
        let c = checksum(&pseudo);
        tcp[16..18].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&tcp);
        f
    }
}

fn addrs(v6: bool) -> (IpAddr, IpAddr) {
    if v6 {
        (IpAddr::from(CLIENT6), IpAddr::from(VIP6))
    } else {
        (IpAddr::from(CLIENT4), IpAddr::from(VIP4))
    }
}

/// A segment from the client to the VIP.
fn from_client<'a>(
    v6: bool,
    seq: u32,
    ack: u32,
    flags: u8,
    options: &'a [u8],
    payload: &'a [u8],
) -> Segment<'a> {
    let (client, vip) = addrs(v6);
    Segment {
        eth_dst: GW_MAC,
        eth_src: CLIENT_MAC,
        src: client,
        dst: vip,
        sport: CLIENT_PORT,
        dport: PORT,
        seq,
        ack,
        flags,
        window: 64240,
        options,
        payload,
        ttl: 63,
        ip_id: 0x1234,
        ip_frag: 0x4000,
        reserved: 0,
    }
}

/// Linux's SYN options: MSS 1460, SACK permitted, timestamps, NOP,
/// window scale 9.
fn linux_syn_options(tsval: u32) -> Vec<u8> {
    let mut o = vec![2, 4, 0x05, 0xb4, 4, 2, 8, 10];
    o.extend_from_slice(&tsval.to_be_bytes());
    o.extend_from_slice(&[0, 0, 0, 0, 1, 3, 3, 9]);
    o
}

/// The TCP header's offset in a frame (no VLAN, no IP options).
fn tcp_at(v6: bool) -> usize {
    14 + if v6 { 40 } else { 20 }
}

fn word(f: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]])
}

/// The SYN-ACK the program must answer a SYN (client ISN `isn`) with,
/// given the cookie and TSval it chose.
fn expected_syn_ack(v6: bool, isn: u32, cookie: u32, options: &[u8]) -> Vec<u8> {
    let (client, vip) = addrs(v6);
    Segment {
        eth_dst: CLIENT_MAC,
        eth_src: GW_MAC,
        src: vip,
        dst: client,
        sport: PORT,
        dport: CLIENT_PORT,
        seq: cookie,
        ack: isn.wrapping_add(1),
        flags: SYN | ACK,
        window: 0,
        options,
        payload: b"",
        ttl: 64,
        ip_id: 0,
        ip_frag: 0x4000,
        reserved: 0,
    }
    .frame()
}

fn syn_ack_and_ack(v6: bool) {
    let x = tester(SynProxy::On);
    let isn = 0xfffffff0u32; // the ACK's sequence wraps
    let syn = from_client(v6, isn, 0, SYN, &linux_syn_options(0x0a0b0c0d), b"").frame();
    let run = x.run(&syn).unwrap();
    assert_eq!(run.action, action::TX, "a SYN to a proxied VIP is answered");
    let at = tcp_at(v6);
    let cookie = word(&run.frame, at + 4);
    let tsval = word(&run.frame, at + 28);
    // TSval's low bits: wscale 9, SACK. The cookie's: MSS index 3 (1460
    // in IPv4's table; IPv6's rounds 1460 down to 1440, index 2).
    let mss_index: u32 = if v6 { 2 } else { 3 };
    assert_eq!(tsval & 0x3f, 9 | 0x10);
    assert_eq!(cookie & 3, mss_index);
    let mss: u16 = if v6 { 1440 } else { 1460 };
    let mut options = vec![2, 4];
    options.extend_from_slice(&mss.to_be_bytes());
    options.extend_from_slice(&[4, 2, 8, 10]);
    options.extend_from_slice(&tsval.to_be_bytes());
    options.extend_from_slice(&0x0a0b0c0du32.to_be_bytes());
    options.extend_from_slice(&[1, 3, 3, 7]);
    assert_eq!(run.frame, expected_syn_ack(v6, isn, cookie, &options));
    assert_eq!(x.syn_proxy_counters().cookies_sent, 1);

    // The client's ACK: valid, marked, up to the worker.
    let mut ts = vec![1, 1, 8, 10];
    ts.extend_from_slice(&0x0a0b0c0eu32.to_be_bytes());
    ts.extend_from_slice(&tsval.to_be_bytes());
    let ack_seg = from_client(
        v6,
        isn.wrapping_add(1),
        cookie.wrapping_add(1),
        ACK,
        &ts,
        b"",
    );
    let run = x.run(&ack_seg.frame()).unwrap();
    // No socket in a test run: redirected to none, so dropped as such.
    assert_eq!(run.action, action::DROP);
    let marked = Segment {
        reserved: handshake::MARK,
        ..from_client(
            v6,
            isn.wrapping_add(1),
            cookie.wrapping_add(1),
            ACK,
            &ts,
            b"",
        )
    }
    .frame();
    assert_eq!(
        run.frame, marked,
        "the valid ACK goes up marked, its checksum right"
    );
    let c = x.syn_proxy_counters();
    assert_eq!((c.cookies_valid, c.cookies_invalid), (1, 0));
    assert_eq!(x.counters().dropped_no_socket, 1);
    let handshake = CookieAck::read(&run.frame[at..], v6).unwrap();
    assert_eq!(handshake.client_isn, isn);
    assert_eq!(handshake.cookie, cookie);
    assert_eq!(
        handshake.options,
        HandshakeOptions {
            mss,
            wscale: Some(9),
            sack: true,
            timestamps: Some((0x0a0b0c0e, tsval)),
        }
    );

    // The connection's next segment is let through as it is.
    let data = from_client(
        v6,
        isn.wrapping_add(1),
        cookie.wrapping_add(1),
        ACK | PSH,
        &ts,
        b"GET /",
    )
    .frame();
    let run = x.run(&data).unwrap();
    assert_eq!(run.frame, data);
    assert_eq!(x.syn_proxy_counters().cookies_invalid, 0);
    assert_eq!(x.counters().dropped_no_socket, 2);

    // A wrong cookie on another port: dropped and counted.
    let mut bad = from_client(v6, 7, cookie.wrapping_add(2), ACK, &ts, b"");
    bad.sport = CLIENT_PORT + 1;
    let run = x.run(&bad.frame()).unwrap();
    assert_eq!(run.action, action::DROP);
    assert_eq!(x.syn_proxy_counters().cookies_invalid, 1);
    assert_eq!(
        x.counters().dropped_no_socket,
        2,
        "never reached the socket"
    );
}

#[test]
fn an_ipv4_syn_is_answered_with_a_cookie_and_its_ack_goes_up_marked() {
    syn_ack_and_ack(false);
}

#[test]
fn an_ipv6_syn_is_answered_with_a_cookie_and_its_ack_goes_up_marked() {
    syn_ack_and_ack(true);
}

#[test]
fn without_timestamps_the_syn_ack_offers_only_the_mss() {
    let x = tester(SynProxy::On);
    let syn = from_client(false, 1000, 0, SYN, &[2, 4, 0x05, 0x78], b"").frame();
    let run = x.run(&syn).unwrap();
    assert_eq!(run.action, action::TX);
    let cookie = word(&run.frame, tcp_at(false) + 4);
    assert_eq!(
        run.frame,
        expected_syn_ack(false, 1000, cookie, &[2, 4, 0x05, 0xb4])
    );
    // Its ACK: the worker gets the MSS (1400 rounded down to 1300), no
    // scaling, no SACK.
    let ack = from_client(false, 1001, cookie.wrapping_add(1), ACK, &[], b"").frame();
    let run = x.run(&ack).unwrap();
    let h = CookieAck::read(&run.frame[tcp_at(false)..], false).unwrap();
    assert_eq!(
        h.options,
        HandshakeOptions {
            mss: 1300,
            wscale: None,
            sack: false,
            timestamps: None
        }
    );
}

#[test]
fn refused_frames_are_dropped_with_their_own_counters() {
    let x = tester(SynProxy::On);
    let syn_fin = from_client(false, 1, 0, SYN | FIN, &[], b"").frame();
    assert_eq!(x.run(&syn_fin).unwrap().action, action::DROP);
    assert_eq!(x.syn_proxy_counters().syn_refused, 1);
    let forged = Segment {
        reserved: handshake::MARK,
        ..from_client(false, 1, 2, ACK, &[], b"")
    }
    .frame();
    assert_eq!(x.run(&forged).unwrap().action, action::DROP);
    assert_eq!(x.syn_proxy_counters().mark_forged, 1);
    let stray = from_client(false, 1, 2, ACK, &[], b"x").frame();
    assert_eq!(x.run(&stray).unwrap().action, action::DROP);
    assert_eq!(x.syn_proxy_counters().cookies_invalid, 1);
    assert_eq!(x.counters().dropped_no_socket, 0);
    // A backend's reply is not the proxy's business.
    let reply = Segment {
        src: IpAddr::from(BACKEND4),
        sport: 8080,
        dst: IpAddr::from(CLIENT4),
        ..from_client(false, 1, 2, ACK, &[], b"")
    }
    .frame();
    x.run(&reply).unwrap();
    assert_eq!(x.counters().dropped_no_socket, 1);
}

#[test]
fn an_off_service_is_untouched_and_auto_answers_above_its_rate() {
    let mut x = tester(SynProxy::Off);
    let syn = from_client(false, 1, 0, SYN, &[], b"").frame();
    let run = x.run(&syn).unwrap();
    assert_eq!((run.action, run.frame.clone()), (action::DROP, syn.clone()));
    assert_eq!(x.syn_proxy_counters().cookies_sent, 0);

    x.set_syn_proxy(&service_key(false), SynProxy::Auto { syns_per_s: 3 })
        .unwrap();
    let mut answered = Vec::new();
    for _ in 0..5 {
        answered.push(x.run(&syn).unwrap().action == action::TX);
    }
    // The first three in the second are under the threshold: up as new flows.
    assert_eq!(answered, [false, false, false, true, true]);
    assert_eq!(x.syn_proxy_counters().cookies_sent, 2);
    // Under `auto`, a segment with no cookie goes up (a connection made
    // while the proxy was off), counted as unchecked.
    let old = from_client(false, 1, 2, ACK, &[], b"x").frame();
    let run = x.run(&old).unwrap();
    assert_eq!(run.frame, old);
    let c = x.syn_proxy_counters();
    assert_eq!((c.ack_unchecked, c.cookies_invalid), (1, 0));
}

/// The handshake's ACK lost ahead of the program (a full receive queue):
/// the client, facing the SYN-ACK's zero window, sends zero-window
/// probes, whose sequence number is its ISN (snd_una - 1). A probe with
/// a valid cookie goes up as the lost ACK (sequence advanced, marked,
/// checksum right); one with data, or with another ISN, does not.
fn a_zero_window_probe_stands_for_a_lost_ack(v6: bool) {
    let x = tester(SynProxy::On);
    let isn = 0xffff_ffffu32; // the ACK's sequence wraps to 0
    let syn = from_client(v6, isn, 0, SYN, &linux_syn_options(0x0a0b0c0d), b"").frame();
    let run = x.run(&syn).unwrap();
    assert_eq!(run.action, action::TX);
    let at = tcp_at(v6);
    let cookie = word(&run.frame, at + 4);
    let tsval = word(&run.frame, at + 28);
    let mut ts = vec![1, 1, 8, 10];
    ts.extend_from_slice(&0x0a0b0c0fu32.to_be_bytes());
    ts.extend_from_slice(&tsval.to_be_bytes());

    // A probe with a byte of data (not what Linux sends, and not an ACK
    // alone) is not taken for the ACK; nor is a bare ACK two back.
    let with_data = from_client(v6, isn, cookie.wrapping_add(1), ACK, &ts, b"x").frame();
    assert_eq!(x.run(&with_data).unwrap().action, action::DROP);
    let two_back = from_client(
        v6,
        isn.wrapping_sub(1),
        cookie.wrapping_add(1),
        ACK,
        &ts,
        b"",
    );
    assert_eq!(x.run(&two_back.frame()).unwrap().action, action::DROP);
    let c = x.syn_proxy_counters();
    assert_eq!(
        (c.cookies_valid, c.cookies_invalid, c.probes_valid),
        (0, 2, 0)
    );
    assert_eq!(x.counters().dropped_no_socket, 0, "none reached the socket");

    let probe = from_client(v6, isn, cookie.wrapping_add(1), ACK, &ts, b"").frame();
    let run = x.run(&probe).unwrap();
    assert_eq!(run.action, action::DROP, "redirected to no socket");
    assert_eq!(x.counters().dropped_no_socket, 1);
    let as_the_ack = Segment {
        reserved: handshake::MARK,
        ..from_client(
            v6,
            isn.wrapping_add(1),
            cookie.wrapping_add(1),
            ACK,
            &ts,
            b"",
        )
    }
    .frame();
    assert_eq!(
        run.frame, as_the_ack,
        "the probe goes up as the lost ACK, marked, its checksum right"
    );
    let c = x.syn_proxy_counters();
    assert_eq!((c.cookies_valid, c.probes_valid), (1, 1));
    let handshake = CookieAck::read(&run.frame[at..], v6).unwrap();
    assert_eq!((handshake.client_isn, handshake.cookie), (isn, cookie));

    // The connection is known now: the next probe passes as it is.
    let run = x.run(&probe).unwrap();
    assert_eq!(run.frame, probe);
    assert_eq!(x.syn_proxy_counters().probes_valid, 1);
}

#[test]
fn an_ipv4_zero_window_probe_stands_for_a_lost_handshake_ack() {
    a_zero_window_probe_stands_for_a_lost_ack(false);
}

#[test]
fn an_ipv6_zero_window_probe_stands_for_a_lost_handshake_ack() {
    a_zero_window_probe_stands_for_a_lost_ack(true);
}

// ---- Proxied connections through the kernel fast path ----
//
// The gateway as the daemon runs it: a program instance on the clients'
// interface (port 0) and one on the backends' (port 1), both with the
// fast path on, and a worker (the pipeline and its connection table, which
// installs entries in the two programs' caches) for what they hand up.
// Beside it, a worker alone, as with the fast path off, is given every
// frame. The handshake is the real one: the client's SYN is answered by
// the program with its cookie, the client's ACK goes up marked, the
// backend's SYN-ACK goes up. Every later segment must leave byte for byte
// the same whichever of the two gateways sent it.

const GW_B_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0x01, 0x01];
const BACKEND_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0x01, 0x0b];
/// 2001:2:1::10.
const BACKEND6: [u8; 16] = [0x20, 0x01, 0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
const BACKEND_PORT: u16 = 8080;

const PROXIED_RULES: &str = r#"
[[interfaces]]
name = "c"
mac = "02:66:67:00:00:01"

[[interfaces]]
name = "b"
mac = "02:66:67:00:01:01"

[[neighbours]]
address = "198.19.0.10"
mac = "02:66:67:00:01:0b"
interface = "b"

[[neighbours]]
address = "2001:2:1::10"
mac = "02:66:67:00:01:0b"
interface = "b"

[[services]]
name = "web"
protocol = "tcp"
vip = "198.18.0.50"
port = 80
syn_proxy = "on"
[[services.backends]]
address = "198.19.0.10"
port = 8080

[[services]]
name = "web6"
protocol = "tcp"
vip = "2001:2::50"
port = 80
syn_proxy = "on"
[[services.backends]]
address = "2001:2:1::10"
port = 8080
"#;

/// A worker: the pipeline, its connection table and frames.
struct Worker {
    pipeline: Pipeline,
    flows: FlowTable,
    memory: MemoryFrames,
    pool: FramePool,
    snapshot: Snapshot,
}

impl Worker {
    fn new() -> Worker {
        let config = rules::load_str(PROXIED_RULES, "proxied.toml").unwrap();
        let mut memory = MemoryFrames::new(8, 2048);
        let pool = memory.pool();
        Worker {
            pipeline: Pipeline::new(),
            flows: FlowTable::new(256, FlowTimeouts::from(&config.flows)),
            memory,
            pool,
            snapshot: Snapshot::build(&config, None),
        }
    }

    /// One frame in on `ingress`, decided as the workers do (a batch, so
    /// a frame may grow); then the fast path brought in step, as after
    /// each poll.
    fn run(&mut self, bytes: &[u8], ingress: u16, now_ns: u64) -> (Verdict, Vec<u8>) {
        let mut frames = vec![self.pool.take().unwrap()];
        assert!(self.memory.write(&mut frames[0], bytes));
        let mut verdicts = Vec::new();
        self.pipeline.process_batch(
            &mut self.memory,
            &mut frames,
            ingress,
            &self.snapshot,
            &mut self.flows,
            now_ns,
            &mut verdicts,
        );
        let out = self.memory.frame(&frames[0]).to_vec();
        self.pool.put(frames.pop().unwrap());
        let snapshot = &self.snapshot;
        self.flows
            .sync_fast_path(snapshot.generation(), |c| connection_rewrites(c, snapshot));
        (verdicts[0], out)
    }
}

/// Where a frame went: out of a port (and as what), or handed up.
#[derive(Debug, PartialEq, Eq)]
enum Way {
    /// Forwarded by the program's fast path.
    Fast,
    /// Decided by the worker.
    Worker,
}

/// The two gateways.
struct Gateways {
    programs: [XdpTester; 2],
    on: Worker,
    off: Worker,
    now: u64,
}

impl Gateways {
    fn new() -> Gateways {
        let on = Worker::new();
        let geometry = CacheGeometry::new(1, 1024);
        let owned = OwnedTraffic::from_snapshot(&on.snapshot);
        let load = |port: u16| {
            let mut x = XdpTester::load(geometry).expect("loading the XDP program (needs root)");
            x.own(&owned).unwrap();
            let mac = on.snapshot.interface_mac(port).unwrap();
            x.set_ingress(mac, on.snapshot.vlans().port(port)).unwrap();
            for p in 0..2 {
                x.set_tx_port(p, 1).unwrap();
            }
            x.set_fast_config(FastConfig {
                partitions: geometry.partitions,
                slot_mask: geometry.slots - 1,
                port_index: u32::from(port),
                egress_ready: u64::MAX,
            })
            .unwrap();
            x.set_syn_proxy(&service_key(false), SynProxy::On).unwrap();
            x.set_syn_proxy(&service_key(true), SynProxy::On).unwrap();
            x
        };
        let programs = [load(0), load(1)];
        let mut on = on;
        let caches = programs
            .iter()
            .map(|x| Some(x.cache() as Arc<dyn EntryMemory>))
            .collect();
        let records = on.flows.capacity();
        on.flows
            .set_fast_path(FastPath::new(geometry, 0, caches, records, 0));
        Gateways {
            programs,
            on,
            off: Worker::new(),
            now: 1_000_000_000,
        }
    }

    /// `input` in on `ingress` through both gateways: the verdict and
    /// frame (which must be the same both ways) and which way the fast
    /// path's gateway took.
    fn run(&mut self, input: &[u8], ingress: u16) -> (Verdict, Vec<u8>, Way) {
        self.now += 1_000;
        let program = &self.programs[usize::from(ingress)];
        let before = program.counters();
        let run = program.run(input).unwrap();
        let after = program.counters();
        // What the program hands up with its fast path off: the frame as
        // it came, or as the proxy's half left it (a cookie-valid ACK
        // marked); it never changes an established connection's segment.
        let (verdict, out, way, up) = if after.fast_forwarded() > before.fast_forwarded() {
            assert!(matches!(run.action, action::TX | action::REDIRECT));
            let port = if run.frame[6..12] == GW_MAC { 0 } else { 1 };
            assert_eq!(
                &run.frame[6..12],
                if port == 0 { &GW_MAC } else { &GW_B_MAC }
            );
            (
                Verdict::Transmit(port),
                run.frame,
                Way::Fast,
                input.to_vec(),
            )
        } else {
            // Handed up: owned, and no socket in a test run.
            assert_eq!(run.action, action::DROP);
            assert_eq!(after.dropped_no_socket, before.dropped_no_socket + 1);
            let (v, out) = self.on.run(&run.frame, ingress, self.now);
            (v, out, Way::Worker, run.frame)
        };
        let (v_off, out_off) = self.off.run(&up, ingress, self.now);
        assert_eq!(verdict, v_off, "verdict, fast path on and off");
        assert!(
            out == out_off,
            "frame, fast path on ({way:?}) and off:\n on:\n{}\n off:\n{}",
            hex(&out),
            hex(&out_off)
        );
        (verdict, out, way)
    }

    /// Handed-up counts of program `port` by reason `syn_proxy`.
    fn up_syn_proxy(&self, port: usize) -> u64 {
        self.programs[port].counters().fast_up.syn_proxy
    }
}

fn hex(b: &[u8]) -> String {
    b.chunks(16)
        .map(|c| {
            c.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One proxied connection's two ends, as their segments carry them.
struct Ends {
    v6: bool,
    client_port: u16,
}

impl Ends {
    fn client(&self) -> IpAddr {
        addrs(self.v6).0
    }

    fn vip(&self) -> IpAddr {
        addrs(self.v6).1
    }

    fn backend(&self) -> IpAddr {
        if self.v6 {
            IpAddr::from(BACKEND6)
        } else {
            IpAddr::from(BACKEND4)
        }
    }

    /// A segment from the client to the VIP.
    fn to_vip<'a>(
        &self,
        seq: u32,
        ack: u32,
        flags: u8,
        options: &'a [u8],
        payload: &'a [u8],
    ) -> Vec<u8> {
        Segment {
            eth_dst: GW_MAC,
            eth_src: CLIENT_MAC,
            src: self.client(),
            dst: self.vip(),
            sport: self.client_port,
            dport: PORT,
            seq,
            ack,
            flags,
            window: 501,
            options,
            payload,
            ttl: 63,
            ip_id: 0x1234,
            ip_frag: 0x4000,
            reserved: 0,
        }
        .frame()
    }

    /// A segment from the backend to the client.
    fn to_client<'a>(
        &self,
        seq: u32,
        ack: u32,
        flags: u8,
        options: &'a [u8],
        payload: &'a [u8],
    ) -> Vec<u8> {
        Segment {
            eth_dst: GW_B_MAC,
            eth_src: BACKEND_MAC,
            src: self.backend(),
            dst: self.client(),
            sport: BACKEND_PORT,
            dport: self.client_port,
            seq,
            ack,
            flags,
            window: 509,
            options,
            payload,
            ttl: 64,
            ip_id: 0x4321,
            ip_frag: 0x4000,
            reserved: 0,
        }
        .frame()
    }
}

fn nop_nop_ts(val: u32, echo: u32) -> Vec<u8> {
    let mut o = vec![1, 1, 8, 10];
    o.extend_from_slice(&val.to_be_bytes());
    o.extend_from_slice(&echo.to_be_bytes());
    o
}

/// What the handshake left to translate.
struct Opened {
    client_isn: u32,
    cookie: u32,
    backend_isn: u32,
    /// The SYN-ACK's TSval as the client echoes it, if timestamps are on.
    our_tsval: Option<u32>,
}

/// The handshake of `ends` through both gateways, the client offering
/// timestamps (with window scale 7 and SACK) or not, the backend
/// answering with window scale `backend_wscale` (with timestamps if the
/// client offered them).
fn open(g: &mut Gateways, ends: &Ends, timestamps: bool, backend_wscale: u8) -> Opened {
    let client_isn = 0x7000_0000u32;
    // Near the top of the space: the translation wraps.
    let backend_isn = 0xffff_ff00u32;
    let mut syn_options = vec![2, 4, 0x05, 0xb4];
    if timestamps {
        syn_options.extend_from_slice(&[4, 2, 8, 10]);
        syn_options.extend_from_slice(&100u32.to_be_bytes());
        syn_options.extend_from_slice(&[0, 0, 0, 0, 1, 3, 3, 7]);
    }
    let syn = ends.to_vip(client_isn, 0, SYN, &syn_options, b"");
    let run = g.programs[0].run(&syn).unwrap();
    assert_eq!(run.action, action::TX, "the program answers the SYN");
    let at = tcp_at(ends.v6);
    let cookie = word(&run.frame, at + 4);
    let our_tsval = timestamps.then(|| word(&run.frame, at + 28));

    let ts = our_tsval.map(|t| nop_nop_ts(101, t)).unwrap_or_default();
    let ack = ends.to_vip(client_isn + 1, cookie.wrapping_add(1), ACK, &ts, b"");
    let (v, _, way) = g.run(&ack, 0);
    assert_eq!(
        (v, way),
        (Verdict::Transmit(1), Way::Worker),
        "the SYN to the backend"
    );

    let mut options = vec![2, 4, 0x05, 0xb4];
    if timestamps {
        options.extend_from_slice(&[4, 2]);
        options.extend_from_slice(&nop_nop_ts(9000, 101)[2..]);
    }
    options.extend_from_slice(&[1, 3, 3, backend_wscale]);
    let syn_ack = ends.to_client(backend_isn, client_isn + 1, SYN | ACK, &options, b"");
    let (v, _, way) = g.run(&syn_ack, 1);
    assert_eq!(
        (v, way),
        (Verdict::Transmit(0), Way::Worker),
        "the ACK that opens the client's window"
    );
    Opened {
        client_isn,
        cookie,
        backend_isn,
        our_tsval,
    }
}

fn proxied_segments_through_the_fast_path(v6: bool) {
    let mut g = Gateways::new();
    let ends = Ends {
        v6,
        client_port: 41000,
    };
    let o = open(&mut g, &ends, true, 7);
    let our_tsval = o.our_tsval.unwrap();
    let at = tcp_at(v6);
    let mut client_seq = o.client_isn + 1;
    let mut backend_seq = o.backend_isn.wrapping_add(1);

    // The client's request, TSecr in the gateway's clock: the fast path
    // carries it, translated into the backend's numbers (and completes
    // the backend's handshake).
    let ts = nop_nop_ts(102, our_tsval);
    let req = ends.to_vip(
        client_seq,
        o.cookie.wrapping_add(1),
        ACK | PSH,
        &ts,
        b"GET / HTTP/1.1\r\n\r\n",
    );
    let (v, out, way) = g.run(&req, 0);
    assert_eq!((v, way), (Verdict::Transmit(1), Way::Fast));
    assert_eq!(word(&out, at + 8), backend_seq, "the backend's own numbers");
    assert_eq!(word(&out, at + 28), 9000, "TSecr in the backend's clock");
    assert!(frame_checksums_ok(&out), "{}", hex(&out));
    client_seq += 18;

    // The backend's answer in several segments, the last across the wrap
    // of its sequence space: all forwarded by the fast path, in the
    // client's numbers.
    for (i, len) in [100usize, 1000, 300].into_iter().enumerate() {
        let payload = vec![b'a' + i as u8; len];
        let ts = nop_nop_ts(9001 + i as u32, 102);
        let data = ends.to_client(backend_seq, client_seq, ACK | PSH, &ts, &payload);
        let (v, out, way) = g.run(&data, 1);
        assert_eq!((v, way), (Verdict::Transmit(0), Way::Fast), "segment {i}");
        let want_seq = backend_seq.wrapping_add(o.cookie.wrapping_sub(o.backend_isn));
        assert_eq!(word(&out, at + 4), want_seq);
        assert_eq!(
            word(&out, at + 24),
            (9001 + i as u32).wrapping_add(our_tsval.wrapping_sub(9000)),
            "TSval in the clock the client was given"
        );
        assert!(frame_checksums_ok(&out), "{}", hex(&out));
        backend_seq = backend_seq.wrapping_add(len as u32);
    }

    // The client acknowledges with SACK blocks (a lost segment): the
    // blocks name backend data, which the program does not translate, so
    // the worker does.
    let ack_to = o.cookie.wrapping_add(1).wrapping_add(100);
    let mut sack = nop_nop_ts(103, our_tsval);
    sack.extend_from_slice(&[1, 1, 5, 10]);
    sack.extend_from_slice(&ack_to.wrapping_add(1000).to_be_bytes());
    sack.extend_from_slice(&ack_to.wrapping_add(1300).to_be_bytes());
    let up_before = g.up_syn_proxy(0);
    let seg = ends.to_vip(client_seq, ack_to, ACK, &sack, b"");
    let (v, out, way) = g.run(&seg, 0);
    assert_eq!(
        (v, way),
        (Verdict::Transmit(1), Way::Worker),
        "SACK: handed up"
    );
    assert_eq!(g.up_syn_proxy(0), up_before + 1);
    assert_eq!(
        word(&out, at + 36),
        o.backend_isn.wrapping_add(1).wrapping_add(1100)
    );

    // A plain ACK again goes fast; a FIN goes up, as for any connection.
    let ts = nop_nop_ts(104, our_tsval);
    let seg = ends.to_vip(client_seq, o.cookie.wrapping_add(1401), ACK, &ts, b"");
    assert_eq!(g.run(&seg, 0).2, Way::Fast);
    let seg = ends.to_vip(client_seq, o.cookie.wrapping_add(1401), ACK | FIN, &ts, b"");
    let (v, _, way) = g.run(&seg, 0);
    assert_eq!(
        (v, way),
        (Verdict::Transmit(1), Way::Worker),
        "FIN: handed up"
    );
}

#[test]
fn proxied_ipv4_segments_go_through_the_fast_path_translated_as_the_worker_would() {
    proxied_segments_through_the_fast_path(false);
}

#[test]
fn proxied_ipv6_segments_go_through_the_fast_path_translated_as_the_worker_would() {
    proxied_segments_through_the_fast_path(true);
}

#[test]
fn a_proxied_connection_without_timestamps_goes_through_the_fast_path() {
    let mut g = Gateways::new();
    let ends = Ends {
        v6: false,
        client_port: 41001,
    };
    // No timestamps: the cookie SYN-ACK offers no window scale, and the
    // backend, asked without one, scales by 0.
    let o = open(&mut g, &ends, false, 0);
    let at = tcp_at(false);
    let client_seq = o.client_isn + 1;
    let req = ends.to_vip(
        client_seq,
        o.cookie.wrapping_add(1),
        ACK | PSH,
        &[],
        b"GET /",
    );
    let (v, out, way) = g.run(&req, 0);
    assert_eq!((v, way), (Verdict::Transmit(1), Way::Fast));
    assert_eq!(word(&out, at + 8), o.backend_isn.wrapping_add(1));
    let data = ends.to_client(
        o.backend_isn.wrapping_add(1),
        client_seq + 5,
        ACK,
        &[],
        &[7u8; 1400],
    );
    let (v, out, way) = g.run(&data, 1);
    assert_eq!((v, way), (Verdict::Transmit(0), Way::Fast));
    assert_eq!(word(&out, at + 4), o.cookie.wrapping_add(1));
    // A segment to the backend without ACK means nothing to translate
    // for the program: the worker's.
    let bare = ends.to_vip(client_seq + 5, 0, PSH, &[], b"x");
    let (_, _, way) = g.run(&bare, 0);
    assert_eq!(way, Way::Worker);
    assert_eq!(g.up_syn_proxy(0), 1);
}

/// A proxied connection whose backend scales windows by `backend_wscale`
/// while the client reads them with the 7 the cookie SYN-ACK offered: the
/// program rescales the backend's windows as the worker does.
fn windows_rescaled(backend_wscale: u8, client_port: u16) {
    let mut g = Gateways::new();
    let ends = Ends {
        v6: false,
        client_port,
    };
    let o = open(&mut g, &ends, true, backend_wscale);
    let our_tsval = o.our_tsval.unwrap();
    let at = tcp_at(false);
    let ts = nop_nop_ts(102, our_tsval);
    let req = ends.to_vip(
        o.client_isn + 1,
        o.cookie.wrapping_add(1),
        ACK | PSH,
        &ts,
        b"GET /",
    );
    let (v, _, way) = g.run(&req, 0);
    assert_eq!((v, way), (Verdict::Transmit(1), Way::Fast));
    // Windows that fit, that saturate at 16 bits, and that lose low bits.
    for (i, window) in [509u16, 0xffff, 3, 0].into_iter().enumerate() {
        let ts = nop_nop_ts(9001 + i as u32, 102);
        let mut seg = Segment {
            window,
            ..Segment {
                eth_dst: GW_B_MAC,
                eth_src: BACKEND_MAC,
                src: ends.backend(),
                dst: ends.client(),
                sport: BACKEND_PORT,
                dport: client_port,
                seq: o.backend_isn.wrapping_add(1),
                ack: o.client_isn + 6,
                flags: ACK,
                window: 0,
                options: &ts,
                payload: b"ok",
                ttl: 64,
                ip_id: 7,
                ip_frag: 0x4000,
                reserved: 0,
            }
        };
        seg.seq = seg.seq.wrapping_add(2 * i as u32);
        let (v, out, way) = g.run(&seg.frame(), 1);
        assert_eq!(
            (v, way),
            (Verdict::Transmit(0), Way::Fast),
            "window {window}"
        );
        let got = u16::from_be_bytes([out[at + 14], out[at + 15]]);
        let want = ((u64::from(window) << backend_wscale) >> 7).min(0xffff) as u16;
        assert_eq!(got, want, "window {window} from scale {backend_wscale}");
        assert!(frame_checksums_ok(&out), "{}", hex(&out));
    }
}

#[test]
fn a_proxied_connection_whose_backend_scales_more_has_its_windows_rescaled_by_the_program() {
    windows_rescaled(9, 41002);
}

#[test]
fn a_proxied_connection_whose_backend_scales_less_has_its_windows_rescaled_by_the_program() {
    windows_rescaled(2, 41003);
}
