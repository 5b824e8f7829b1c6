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

use flowgate_dataplane::fastpath::CacheGeometry;
use flowgate_dataplane::synproxy::handshake::{self, CookieAck, HandshakeOptions};
use flowgate_dataplane::synproxy::SynProxy;
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
