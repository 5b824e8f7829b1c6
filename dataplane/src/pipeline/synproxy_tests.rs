//! The SYN proxy's worker half through the pipeline over in-memory
//! frames: a cookie-valid ACK opens the backend's handshake, the
//! backend's SYN-ACK completes it, and every later segment is translated
//! both ways (sequence and acknowledgement numbers, SACK blocks,
//! timestamps, windows), with checksums that hold.

use super::*;
use crate::flow::FlowTimeouts;
use crate::port::MemoryFrames;
use crate::rules;
use crate::synproxy::handshake::{self, find_option, timestamps, MARK};
use crate::wire::builder::FrameBuilder;
use crate::wire::checksum::{l4_checksum_v4, l4_checksum_v6};

const CLIENT_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x02];
const GW_C_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x01];
const GW_B_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0x01, 0x01];
const BACKEND_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0x01, 0x0b];

/// The gateway's ISN toward the client; its low bits name MSS 1460 (v4)
/// or 8940 (v6).
const COOKIE: u32 = 0x5000_0003;
/// The SYN-ACK's TSval as the client echoes it: SACK, window scale 9.
const ECHO: u32 = 0x1234_5600 | 0x10 | 9;
const CLIENT_ISN: u32 = 1000;
const BACKEND_ISN: u32 = 77;

fn rules_text(proxy: &str) -> String {
    format!(
        "[[interfaces]]\nname = \"c\"\nmac = \"02:66:67:00:00:01\"\n\
         [[interfaces]]\nname = \"b\"\nmac = \"02:66:67:00:01:01\"\n\
         [[neighbours]]\naddress = \"198.18.1.11\"\nmac = \"02:66:67:00:01:0b\"\ninterface = \"b\"\n\
         [[neighbours]]\naddress = \"2001:db8:1::11\"\nmac = \"02:66:67:00:01:0b\"\ninterface = \"b\"\n\
         [[services]]\nname = \"web\"\nprotocol = \"tcp\"\nvip = \"198.18.100.10\"\nport = 80\n\
         syn_proxy = \"{proxy}\"\n\
         [[services.backends]]\naddress = \"198.18.1.11\"\nport = 8080\n\
         [[services]]\nname = \"web6\"\nprotocol = \"tcp\"\nvip = \"2001:db8:100::10\"\nport = 80\n\
         syn_proxy = \"{proxy}\"\n\
         [[services.backends]]\naddress = \"2001:db8:1::11\"\nport = 8080\n"
    )
}

/// One TCP segment, every field given; marked if `mark`.
#[allow(clippy::too_many_arguments)]
fn segment(
    (src, dst): (&str, &str),
    macs: ([u8; 6], [u8; 6]),
    (seq, ack): (u32, u32),
    flags: u8,
    window: u16,
    options: &[u8],
    payload: &[u8],
    mark: bool,
) -> Vec<u8> {
    let mut f = FrameBuilder::tcp(src.parse().unwrap(), dst.parse().unwrap(), flags)
        .macs(macs.0, macs.1)
        .tcp_seq(seq)
        .tcp_options(options)
        .payload(payload)
        .build();
    let meta = wire::parse(&f).unwrap();
    let l4 = usize::from(meta.l4_offset);
    f[l4 + 8..l4 + 12].copy_from_slice(&ack.to_be_bytes());
    f[l4 + 14..l4 + 16].copy_from_slice(&window.to_be_bytes());
    if mark {
        f[l4 + 12] |= MARK;
    }
    fix_tcp_checksum(&mut f);
    f
}

fn fix_tcp_checksum(f: &mut [u8]) {
    let meta = wire::parse(f).unwrap();
    let (l3, l4, end) = (
        usize::from(meta.l3_offset),
        usize::from(meta.l4_offset),
        usize::from(meta.ip_end),
    );
    f[l4 + 16..l4 + 18].fill(0);
    let sum = if meta.l3 == L3::Ipv6 {
        let (mut s, mut d) = ([0u8; 16], [0u8; 16]);
        s.copy_from_slice(&f[l3 + 8..l3 + 24]);
        d.copy_from_slice(&f[l3 + 24..l3 + 40]);
        l4_checksum_v6(&s, &d, 6, &f[l4..end])
    } else {
        let (mut s, mut d) = ([0u8; 4], [0u8; 4]);
        s.copy_from_slice(&f[l3 + 12..l3 + 16]);
        d.copy_from_slice(&f[l3 + 16..l3 + 20]);
        l4_checksum_v4(&s, &d, 6, &f[l4..end])
    };
    f[l4 + 16..l4 + 18].copy_from_slice(&sum.to_be_bytes());
}

fn ts(val: u32, echo: u32) -> Vec<u8> {
    let mut o = vec![1, 1, 8, 10];
    o.extend_from_slice(&val.to_be_bytes());
    o.extend_from_slice(&echo.to_be_bytes());
    o
}

/// The pipeline, its table and frames, one frame per batch.
struct Rig {
    pipeline: Pipeline,
    flows: FlowTable,
    memory: MemoryFrames,
    pool: crate::port::FramePool,
    snapshot: Snapshot,
}

impl Rig {
    fn new(proxy: &str) -> Rig {
        let config = rules::load_str(&rules_text(proxy), "t.toml").unwrap();
        let mut memory = MemoryFrames::new(8, 2048);
        let pool = memory.pool();
        Rig {
            pipeline: Pipeline::new(),
            flows: FlowTable::new(64, FlowTimeouts::default()),
            memory,
            pool,
            snapshot: Snapshot::build(&config, None),
        }
    }

    /// `bytes` received on port `ingress`: the verdict and the frame as
    /// it leaves.
    fn run(&mut self, bytes: &[u8], ingress: u16) -> (Verdict, Vec<u8>) {
        let mut frames = vec![self.pool.take().unwrap()];
        assert!(self.memory.write(&mut frames[0], bytes));
        let mut verdicts = Vec::new();
        self.pipeline.process_batch(
            &mut self.memory,
            &mut frames,
            ingress,
            &self.snapshot,
            &mut self.flows,
            1_000,
            &mut verdicts,
        );
        let out = self.memory.frame(&frames[0]).to_vec();
        self.pool.put(frames.pop().unwrap());
        (verdicts[0], out)
    }

    fn counters(&self) -> CounterValues {
        self.pipeline.counters().snapshot()
    }
}

fn tcp(f: &[u8]) -> &[u8] {
    let meta = wire::parse(f).unwrap();
    &f[usize::from(meta.l4_offset)..usize::from(meta.ip_end)]
}

fn word(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The backend's SYN-ACK (ISN 77, TSval 5, window scale 9).
fn syn_ack(client: &str, backend: &str) -> Vec<u8> {
    let mut opts = vec![2, 4, 5, 0xb4];
    opts.extend_from_slice(&ts(5, 777));
    opts.extend_from_slice(&[1, 3, 3, 9]);
    segment(
        (backend, client),
        (BACKEND_MAC, GW_B_MAC),
        (BACKEND_ISN, CLIENT_ISN + 1),
        tcp_flags::SYN | tcp_flags::ACK,
        65535,
        &opts,
        b"",
        false,
    )
}

/// The client's cookie ACK, the backend's SYN-ACK, through the rig;
/// returns the two frames as they left (the SYN to the backend, the ACK
/// that opens the client's window).
fn handshake(rig: &mut Rig, client: &str, vip: &str, backend: &str) -> (Vec<u8>, Vec<u8>) {
    let ack = segment(
        (client, vip),
        (CLIENT_MAC, GW_C_MAC),
        (CLIENT_ISN + 1, COOKIE + 1),
        tcp_flags::ACK,
        502,
        &ts(777, ECHO),
        b"",
        true,
    );
    let (v, syn) = rig.run(&ack, 0);
    assert_eq!(v, Verdict::Transmit(1));
    let (v, done) = rig.run(&syn_ack(client, backend), 1);
    assert_eq!(v, Verdict::Transmit(0), "the client's window opens");
    (syn, done)
}

#[test]
fn a_cookie_ack_opens_the_backend_with_the_clients_options_and_its_syn_ack_opens_the_client() {
    let mut rig = Rig::new("on");
    let (client, backend) = ("198.18.0.2:40000", "198.18.1.11:8080");
    let (syn, open) = handshake(&mut rig, client, "198.18.100.10:80", backend);

    // The SYN to the backend: the client's ISN and every option it
    // offered, from the client's address to the backend's.
    assert!(wire::frame_checksums_ok(&syn), "{syn:02x?}");
    let meta = wire::parse(&syn).unwrap();
    assert_eq!(meta.tcp_flags, tcp_flags::SYN);
    assert_eq!(
        meta.tuple,
        crate::wire::FiveTuple::v4([198, 18, 0, 2], [198, 18, 1, 11], 40000, 8080, 6)
    );
    assert_eq!(&syn[..12], &[BACKEND_MAC, GW_B_MAC].concat()[..]);
    let h = tcp(&syn);
    assert_eq!((word(h, 4), h[12] & MARK), (CLIENT_ISN, 0));
    assert_eq!(find_option(h, 2, 4).map(|at| u16_at(h, at + 2)), Some(1460));
    assert!(find_option(h, 4, 2).is_some(), "SACK permitted");
    assert_eq!(
        find_option(h, 3, 3).map(|at| h[at + 2]),
        Some(9),
        "window scale"
    );
    assert_eq!(timestamps(h), Some((777, 0)));
    assert_eq!(syn.len(), 14 + 20 + 40, "the frame grew for the options");

    // The backend's first SYN-ACK opens the client's window (the cookie
    // SYN-ACK offered 0): from the VIP, the gateway's next number, the
    // backend's 65535 bytes in the client's scale 7, its clock translated.
    assert!(wire::frame_checksums_ok(&open), "{open:02x?}");
    let meta = wire::parse(&open).unwrap();
    assert_eq!(meta.tcp_flags, tcp_flags::ACK);
    assert_eq!(
        meta.tuple,
        crate::wire::FiveTuple::v4([198, 18, 100, 10], [198, 18, 0, 2], 80, 40000, 6)
    );
    assert_eq!(&open[..12], &[CLIENT_MAC, GW_C_MAC].concat()[..]);
    let h = tcp(&open);
    assert_eq!((word(h, 4), word(h, 8)), (COOKIE + 1, CLIENT_ISN + 1));
    assert_eq!(u16_at(h, 14), 65535 >> handshake::OFFERED_WSCALE);
    assert_eq!(timestamps(h), Some((ECHO, 777)));

    // A retransmitted SYN-ACK (the client had nothing to say first) gets
    // the ACK that completes the backend's handshake, in the client's name.
    let (v, ack) = rig.run(&syn_ack(client, backend), 1);
    assert_eq!(v, Verdict::Transmit(1));
    assert!(wire::frame_checksums_ok(&ack), "{ack:02x?}");
    let meta = wire::parse(&ack).unwrap();
    assert_eq!(meta.tcp_flags, tcp_flags::ACK);
    assert_eq!(
        meta.tuple,
        crate::wire::FiveTuple::v4([198, 18, 0, 2], [198, 18, 1, 11], 40000, 8080, 6)
    );
    assert_eq!(&ack[..12], &[BACKEND_MAC, GW_B_MAC].concat()[..]);
    let h = tcp(&ack);
    assert_eq!((word(h, 4), word(h, 8)), (CLIENT_ISN + 1, BACKEND_ISN + 1));
    assert_eq!(u16_at(h, 14), 502, "the client's window, in its own scale");
    assert_eq!(timestamps(h), Some((777, 5)));

    let c = rig.counters();
    assert_eq!((c.synproxy_connections, c.synproxy_established), (1, 1));
    assert_eq!(c.new_flows, 1);
    assert_eq!(rig.flows.len(), 1);
    let conn = rig.flows.iter().next().unwrap();
    assert_eq!(conn.state, FlowState::TcpEstablished);
}

#[test]
fn client_data_before_the_backend_answered_is_dropped_for_the_client_to_resend() {
    let mut rig = Rig::new("on");
    let (client, vip) = ("198.18.0.2:40000", "198.18.100.10:80");
    let ack = segment(
        (client, vip),
        (CLIENT_MAC, GW_C_MAC),
        (CLIENT_ISN + 1, COOKIE + 1),
        tcp_flags::ACK,
        502,
        &ts(777, ECHO),
        b"",
        true,
    );
    assert_eq!(rig.run(&ack, 0).0, Verdict::Transmit(1));
    let early = segment(
        (client, vip),
        (CLIENT_MAC, GW_C_MAC),
        (CLIENT_ISN + 1, COOKIE + 1),
        tcp_flags::ACK | tcp_flags::PSH,
        502,
        &ts(778, ECHO),
        b"GET /",
        false,
    );
    assert_eq!(
        rig.run(&early, 0).0,
        Verdict::Drop(DropReason::SynProxyHandshake)
    );
    assert_eq!(rig.counters().drops.get("synproxy_handshake"), Some(&1));
    // Still embryonic: the first to go when the table is full.
    assert_eq!(rig.flows.iter().next().unwrap().state, FlowState::TcpSyn);
}

#[test]
fn segments_are_translated_both_ways_sack_and_window_scale_included() {
    let mut rig = Rig::new("on");
    let (client, vip, backend) = ("198.18.0.2:40000", "198.18.100.10:80", "198.18.1.11:8080");
    handshake(&mut rig, client, vip, backend);

    // Client → backend: its acknowledgement, SACK blocks and timestamp
    // echo are in the gateway's numbers; the backend sees its own.
    let mut opts = vec![1, 1, 5, 18];
    for edge in [COOKIE + 101, COOKIE + 201, COOKIE + 301, COOKIE + 401] {
        opts.extend_from_slice(&edge.to_be_bytes());
    }
    opts.extend_from_slice(&ts(800, ECHO + 3));
    let data = segment(
        (client, vip),
        (CLIENT_MAC, GW_C_MAC),
        (CLIENT_ISN + 1, COOKIE + 1),
        tcp_flags::ACK | tcp_flags::PSH,
        300,
        &opts,
        b"GET /",
        false,
    );
    let (v, out) = rig.run(&data, 0);
    assert_eq!(v, Verdict::Transmit(1));
    assert!(wire::frame_checksums_ok(&out));
    let meta = wire::parse(&out).unwrap();
    assert_eq!(meta.tuple.dst_port, 8080);
    let h = tcp(&out);
    assert_eq!(word(h, 4), CLIENT_ISN + 1, "the client's own numbers stay");
    assert_eq!(word(h, 8), BACKEND_ISN + 1);
    let sack = find_option(h, 5, 0).unwrap();
    let edges: Vec<u32> = (0..4).map(|i| word(h, sack + 2 + 4 * i)).collect();
    assert_eq!(
        edges,
        [101, 201, 301, 401].map(|d| BACKEND_ISN + d),
        "SACK blocks name the backend's bytes"
    );
    assert_eq!(timestamps(h), Some((800, 5 + 3)));
    assert_eq!(u16_at(h, 14), 300, "the backend reads the client's scale");
    assert!(h.ends_with(b"GET /"));

    // Backend → client: its sequence number and TSval are in the numbers
    // the cookie SYN-ACK gave the client, and its window (scale 9) is
    // rescaled to the scale the client reads with (7).
    let reply = segment(
        (backend, client),
        (BACKEND_MAC, GW_B_MAC),
        (BACKEND_ISN + 1, CLIENT_ISN + 6),
        tcp_flags::ACK | tcp_flags::PSH,
        1000,
        &ts(10, 800),
        b"HTTP/1.1 200 OK",
        false,
    );
    let (v, out) = rig.run(&reply, 1);
    assert_eq!(v, Verdict::Transmit(0));
    assert!(wire::frame_checksums_ok(&out));
    let meta = wire::parse(&out).unwrap();
    assert_eq!(
        meta.tuple,
        crate::wire::FiveTuple::v4([198, 18, 100, 10], [198, 18, 0, 2], 80, 40000, 6)
    );
    assert_eq!(&out[..12], &[CLIENT_MAC, GW_C_MAC].concat()[..]);
    let h = tcp(&out);
    assert_eq!(word(h, 4), COOKIE + 1);
    assert_eq!(word(h, 8), CLIENT_ISN + 6);
    assert_eq!(timestamps(h), Some((ECHO + 5, 800)));
    assert_eq!(
        u32::from(u16_at(h, 14)),
        1000 << 9 >> handshake::OFFERED_WSCALE
    );

    assert_eq!(rig.counters().flow_hits, 2);
}

#[test]
fn ipv6_connections_are_proxied_the_same_way() {
    let mut rig = Rig::new("on");
    let (client, vip, backend) = (
        "[2001:db8::2]:40000",
        "[2001:db8:100::10]:80",
        "[2001:db8:1::11]:8080",
    );
    let (syn, ack) = handshake(&mut rig, client, vip, backend);
    for f in [&syn, &ack] {
        assert!(wire::frame_checksums_ok(f), "{f:02x?}");
    }
    let h = tcp(&syn);
    assert_eq!(
        find_option(h, 2, 4).map(|at| u16_at(h, at + 2)),
        Some(handshake::MSS_TABLE_V6[3])
    );
    let h = tcp(&ack);
    assert_eq!((word(h, 4), word(h, 8)), (COOKIE + 1, CLIENT_ISN + 1));
    assert_eq!(wire::parse(&ack).unwrap().tuple.dst_port, 40000);
    let reply = segment(
        (backend, client),
        (BACKEND_MAC, GW_B_MAC),
        (BACKEND_ISN + 1, CLIENT_ISN + 1),
        tcp_flags::ACK,
        10,
        &ts(6, 777),
        b"x",
        false,
    );
    let (v, out) = rig.run(&reply, 1);
    assert_eq!(v, Verdict::Transmit(0));
    assert!(wire::frame_checksums_ok(&out));
    assert_eq!(word(tcp(&out), 4), COOKIE + 1);
}

#[test]
fn the_mark_means_nothing_to_a_service_that_is_not_proxied() {
    let mut rig = Rig::new("off");
    let ack = segment(
        ("198.18.0.2:40000", "198.18.100.10:80"),
        (CLIENT_MAC, GW_C_MAC),
        (CLIENT_ISN + 1, COOKIE + 1),
        tcp_flags::ACK,
        502,
        &[],
        b"",
        true,
    );
    // Picked up mid-stream (maglev) as any ACK, not made a SYN.
    let (v, out) = rig.run(&ack, 0);
    assert_eq!(v, Verdict::Transmit(1));
    assert_eq!(wire::parse(&out).unwrap().tcp_flags, tcp_flags::ACK);
    assert_eq!(rig.counters().synproxy_connections, 0);
    assert!(!rig.flows.has_syn_proxy(), "no room is made for the proxy");
}

#[test]
fn a_proxied_connection_is_handed_over_with_its_offsets_and_translated_after() {
    let mut rig = Rig::new("on");
    let (client, vip, backend) = ("198.18.0.2:40000", "198.18.100.10:80", "198.18.1.11:8080");
    handshake(&mut rig, client, vip, backend);
    // A second connection whose backend has not answered: not handed over.
    let ack = segment(
        ("198.18.0.2:40001", vip),
        (CLIENT_MAC, GW_C_MAC),
        (CLIENT_ISN + 1, COOKIE + 1),
        tcp_flags::ACK,
        502,
        &ts(777, ECHO),
        b"",
        true,
    );
    assert_eq!(rig.run(&ack, 0).0, Verdict::Transmit(1));

    let mut handed = Vec::new();
    rig.flows.hand_over(0, &mut handed);
    assert_eq!(handed.len(), 1);
    let image = crate::flow::handover::encode(0, &handed);
    let state = crate::flow::handover::decode(&image).unwrap();
    let mut next = Rig::new("on");
    assert!(next.flows.take_over(&state.connections[0], 0));
    let reply = segment(
        (backend, client),
        (BACKEND_MAC, GW_B_MAC),
        (BACKEND_ISN + 1, CLIENT_ISN + 1),
        tcp_flags::ACK,
        1000,
        &ts(10, 777),
        b"x",
        false,
    );
    let (v, out) = next.run(&reply, 1);
    assert_eq!(v, Verdict::Transmit(0));
    let h = tcp(&out);
    assert_eq!(word(h, 4), COOKIE + 1);
    assert_eq!(timestamps(h), Some((ECHO + 5, 777)));
    assert_eq!(u32::from(u16_at(h, 14)), 1000 << 9 >> 7);
}

/// A backend SYN-ACK like [`syn_ack`] with window scale `wscale`, to a
/// client on port `client_port`.
fn syn_ack_scaled(client: &str, backend: &str, wscale: u8) -> Vec<u8> {
    let mut opts = vec![2, 4, 5, 0xb4];
    opts.extend_from_slice(&ts(5, 777));
    opts.extend_from_slice(&[1, 3, 3, wscale]);
    segment(
        (backend, client),
        (BACKEND_MAC, GW_B_MAC),
        (BACKEND_ISN, CLIENT_ISN + 1),
        tcp_flags::SYN | tcp_flags::ACK,
        65535,
        &opts,
        b"",
        false,
    )
}

#[test]
fn the_fast_path_gets_a_proxied_connection_once_its_offsets_are_known_with_its_window_scales() {
    use crate::fastpath::layout::{offset, STATE_LIVE, SYNPROXY_TRANSLATE};
    use crate::fastpath::{
        connection_rewrites, read_entry, CacheGeometry, EntryMemory, FastPath, HeapEntries,
    };
    use std::sync::Arc;

    let mut rig = Rig::new("on");
    let geometry = CacheGeometry::new(1, 64);
    let heaps: Vec<Arc<HeapEntries>> = (0..2)
        .map(|_| Arc::new(HeapEntries::new(geometry.entries())))
        .collect();
    let caches = heaps
        .iter()
        .map(|h| Some(Arc::clone(h) as Arc<dyn EntryMemory>))
        .collect();
    rig.flows
        .set_fast_path(FastPath::new(geometry, 0, caches, 64, 0));
    let sync = |rig: &mut Rig| {
        let snapshot = &rig.snapshot;
        rig.flows
            .sync_fast_path(1, |c| connection_rewrites(c, snapshot));
        rig.flows.fast_path().unwrap().stats().live_entries
    };
    let live = |heap: &HeapEntries| -> Vec<Vec<u8>> {
        (0..geometry.entries())
            .filter_map(|i| match read_entry(heap, i) {
                Some((STATE_LIVE, bytes)) => Some(bytes),
                _ => None,
            })
            .collect()
    };
    // Bytes 8.. of an entry: a field at entry offset `o`.
    let u32_at = |b: &[u8], o: usize| u32::from_ne_bytes(b[o - 8..o - 8 + 4].try_into().unwrap());

    // The backend scales by 7, as the cookie SYN-ACK offered the client.
    let (client, vip, backend) = ("198.18.0.2:40000", "198.18.100.10:80", "198.18.1.11:8080");
    let ack = segment(
        (client, vip),
        (CLIENT_MAC, GW_C_MAC),
        (CLIENT_ISN + 1, COOKIE + 1),
        tcp_flags::ACK,
        502,
        &ts(777, ECHO),
        b"",
        true,
    );
    assert_eq!(rig.run(&ack, 0).0, Verdict::Transmit(1));
    assert_eq!(sync(&mut rig), 0, "no entries before the backend answered");
    let (v, _) = rig.run(&syn_ack_scaled(client, backend, 7), 1);
    assert_eq!(v, Verdict::Transmit(0));
    assert_eq!(
        sync(&mut rig),
        2,
        "both directions once the offsets are known"
    );
    // The cookie less the backend's ISN; the SYN-ACK's TSval (which the
    // client echoes) less the backend's (5). Toward the backend (the
    // client's interface's cache): minus them; toward the client (the
    // backend's): plus them.
    let (seq_off, ts_off) = (COOKIE.wrapping_sub(BACKEND_ISN), ECHO.wrapping_sub(5));
    for (heap, seq_add, ts_add) in [
        (&heaps[0], seq_off.wrapping_neg(), ts_off.wrapping_neg()),
        (&heaps[1], seq_off, ts_off),
    ] {
        let entries = live(heap);
        assert_eq!(entries.len(), 1);
        let e = &entries[0];
        assert_eq!(e[offset::SYNPROXY - 8], SYNPROXY_TRANSLATE);
        assert_eq!(u32_at(e, offset::SEQ_ADD), seq_add);
        assert_eq!(u32_at(e, offset::TS_ADD), ts_add);
        // Both scales 7: no window to rescale.
        assert_eq!(e[offset::WSCALE_BACKEND - 8], e[offset::WSCALE_CLIENT - 8]);
    }

    // Another connection whose backend scales by 9: its entries carry
    // both scales toward the client (the program rescales the window from
    // 9 to the 7 the client reads with), none toward the backend.
    let client2 = "198.18.0.2:40001";
    let ack = segment(
        (client2, vip),
        (CLIENT_MAC, GW_C_MAC),
        (CLIENT_ISN + 1, COOKIE + 1),
        tcp_flags::ACK,
        502,
        &ts(777, ECHO),
        b"",
        true,
    );
    assert_eq!(rig.run(&ack, 0).0, Verdict::Transmit(1));
    assert_eq!(sync(&mut rig), 2, "not before its backend answered");
    let (v, _) = rig.run(&syn_ack_scaled(client2, backend, 9), 1);
    assert_eq!(v, Verdict::Transmit(0));
    assert_eq!(sync(&mut rig), 4);
    let scales = |heap: &HeapEntries| -> Vec<(u8, u8)> {
        let mut v: Vec<(u8, u8)> = live(heap)
            .iter()
            .map(|e| (e[offset::WSCALE_BACKEND - 8], e[offset::WSCALE_CLIENT - 8]))
            .collect();
        v.sort_unstable();
        v
    };
    assert_eq!(scales(&heaps[0]), [(0, 0), (0, 0)]);
    assert_eq!(scales(&heaps[1]), [(7, 7), (9, 7)]);
}

/// A client that reuses its port for a new connection while the old
/// proxied one's record lingers (closed both ways): the new handshake's
/// cookie ACK opens the backend afresh (a SYN with the new ISN), and the
/// old record is counted as replaced; translated with the old offsets it
/// would reach the backend as a stray ACK and the client would be reset.
#[test]
fn a_new_handshake_on_a_lingering_proxied_connections_tuple_opens_the_backend_afresh() {
    let (client, vip, backend) = ("198.18.0.2:40000", "198.18.100.10:80", "198.18.1.11:8080");
    let mut rig = Rig::new("on");
    handshake(&mut rig, client, vip, backend);
    // Both sides close: the record lingers in its closing state.
    let fin = |from_client: bool| {
        if from_client {
            segment(
                (client, vip),
                (CLIENT_MAC, GW_C_MAC),
                (CLIENT_ISN + 1, COOKIE + 1),
                tcp_flags::FIN | tcp_flags::ACK,
                502,
                &ts(778, ECHO),
                b"",
                false,
            )
        } else {
            segment(
                (backend, client),
                (BACKEND_MAC, GW_B_MAC),
                (BACKEND_ISN + 1, CLIENT_ISN + 2),
                tcp_flags::FIN | tcp_flags::ACK,
                1000,
                &ts(6, 778),
                b"",
                false,
            )
        }
    };
    assert_eq!(rig.run(&fin(true), 0).0, Verdict::Transmit(1));
    assert_eq!(rig.run(&fin(false), 1).0, Verdict::Transmit(0));
    assert_eq!(rig.flows.len(), 1, "the closed connection lingers");

    // The same tuple, a new handshake: the client's new ISN, a new cookie.
    let new_isn = CLIENT_ISN + 100_000;
    let ack = segment(
        (client, vip),
        (CLIENT_MAC, GW_C_MAC),
        (new_isn + 1, COOKIE + 1),
        tcp_flags::ACK,
        502,
        &ts(900, ECHO),
        b"",
        true,
    );
    let (v, syn) = rig.run(&ack, 0);
    assert_eq!(v, Verdict::Transmit(1));
    let t = tcp(&syn);
    assert_eq!(
        t[13] & (tcp_flags::SYN | tcp_flags::ACK),
        tcp_flags::SYN,
        "a SYN to the backend"
    );
    assert_eq!(word(t, 4), new_isn, "with the new connection's ISN");
    assert_eq!(t[12] & MARK, 0, "the mark does not leave the gateway");
    assert_eq!(rig.flows.len(), 1, "the old record made room for the new");
    assert_eq!(
        rig.flows
            .counters()
            .departures(crate::flow::Departure::Replaced),
        1
    );
    // The backend's SYN-ACK completes the new handshake.
    let (v, _) = rig.run(&syn_ack(client, backend), 1);
    assert_eq!(v, Verdict::Transmit(0), "the client's window opens");
}
