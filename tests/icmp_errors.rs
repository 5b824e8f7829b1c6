//! ICMP errors about a connection, through the pipeline and a worker over
//! in-memory ports: translated both ways (the golden fixtures pin the
//! bytes), dropped when they are about the gateway's traffic but no
//! connection, and never a panic on any ICMP, however cut or corrupted.

mod common;

use std::net::IpAddr;

use common::*;
use flowgate_dataplane::flow::{FlowTable, FlowTimeouts};
use flowgate_dataplane::pipeline::{DropReason, Verdict};
use flowgate_dataplane::port::{MemoryFrames, MemoryPort};
use flowgate_dataplane::table::Snapshot;
use flowgate_dataplane::wire::builder::FrameBuilder;
use flowgate_dataplane::wire::icmp::{icmpv4_type, icmpv6_type};
use flowgate_dataplane::wire::{self, frame_checksums_ok, tcp_flags};
use flowgate_dataplane::worker::{CountingKernelPath, Worker};
use proptest::prelude::*;

const SEC: u64 = 1_000_000_000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The IP packet of `frame`, cut to `keep` bytes.
fn quote(frame: &[u8], keep: usize) -> Vec<u8> {
    frame[14..].iter().take(keep).copied().collect()
}

/// The source and destination (address, port) of the packet the ICMP
/// error `frame` quotes.
fn quoted_ends(frame: &[u8]) -> ((IpAddr, u16), (IpAddr, u16)) {
    let outer = wire::parse(frame).unwrap();
    let q = &frame[usize::from(outer.l4_offset) + 8..];
    let port = |at: usize| u16::from_be_bytes([q[at], q[at + 1]]);
    if outer.l3 == wire::L3::Ipv4 {
        let l4 = usize::from(q[0] & 0x0f) * 4;
        let addr = |at: usize| IpAddr::from(<[u8; 4]>::try_from(&q[at..at + 4]).unwrap());
        ((addr(12), port(l4)), (addr(16), port(l4 + 2)))
    } else {
        let addr = |at: usize| IpAddr::from(<[u8; 16]>::try_from(&q[at..at + 16]).unwrap());
        ((addr(8), port(40)), (addr(24), port(42)))
    }
}

/// A harness with its connections, the frames sent to their backend and
/// the replies sent to their client (IPv4, then IPv6).
type Connected = (Harness, [Vec<u8>; 2], [Vec<u8>; 2]);

/// A harness with a TCP connection 198.18.0.2:40000 → web (backend
/// 198.18.1.11:8080) and its IPv6 twin; returns the frames the gateway
/// sent the backend (what errors from that side quote) and the replies it
/// sent the client (what errors from the client's side quote).
fn connected() -> Connected {
    let mut h = Harness::new(GOLDEN_RULES);
    let mut sent = Vec::new();
    let mut replies = Vec::new();
    for (client, vip, backend) in [
        ("198.18.0.2:40000", "198.18.100.10:80", "198.18.1.11:8080"),
        (
            "[2001:2::2]:40000",
            "[2001:2:0:100::10]:80",
            "[2001:2:0:1::11]:8080",
        ),
    ] {
        let syn = from_client(FrameBuilder::tcp(sa(client), sa(vip), tcp_flags::SYN))
            .payload(&[1; 1200])
            .build();
        let (v, out) = h.run(&syn, 0, SEC);
        assert_eq!(v, Verdict::Transmit(1));
        sent.push(out);
        let syn_ack = FrameBuilder::tcp(sa(backend), sa(client), 0x12)
            .macs(BACKEND1_MAC, GW_BACKEND_MAC)
            .payload(&[2; 300])
            .build();
        let (v, out) = h.run(&syn_ack, 1, SEC);
        assert_eq!(v, Verdict::Transmit(0));
        replies.push(out);
    }
    let [s4, s6] = <[Vec<u8>; 2]>::try_from(sent).unwrap();
    let [r4, r6] = <[Vec<u8>; 2]>::try_from(replies).unwrap();
    (h, [s4, s6], [r4, r6])
}

#[test]
fn a_router_on_the_backend_side_tells_the_client_its_path_mtu_to_the_vip() {
    let (mut h, [sent4, sent6], _) = connected();
    for (router, client, vip, sent, kind) in [
        (
            "198.18.1.1",
            "198.18.0.2",
            "198.18.100.10",
            &sent4,
            (icmpv4_type::DEST_UNREACHABLE, 4, 1280),
        ),
        (
            "2001:2:0:1::1",
            "2001:2::2",
            "2001:2:0:100::10",
            &sent6,
            (icmpv6_type::PACKET_TOO_BIG, 0, 1280),
        ),
    ] {
        let frame = FrameBuilder::icmp_error(ip(router), ip(client), kind.0, kind.1, kind.2)
            .macs(BACKEND1_MAC, GW_BACKEND_MAC)
            .payload(&quote(sent, 500))
            .build();
        let (v, out) = h.run(&frame, 1, 2 * SEC);
        assert_eq!(v, Verdict::Transmit(0), "{router}");
        assert!(frame_checksums_ok(&out), "{router}: checksums");
        let outer = wire::parse(&out).unwrap();
        assert_eq!(outer.tuple.src_ip(), ip(vip));
        assert_eq!(outer.tuple.dst_ip(), ip(client));
        assert_eq!(outer.ttl, 63);
        assert_eq!(&out[..12], &[CLIENT_MAC, GW_CLIENT_MAC].concat()[..]);
        // The quote now reads client → VIP:80: the client's stack matches
        // it to its socket.
        assert_eq!(quoted_ends(&out), ((ip(client), 40000), (ip(vip), 80)));
        // The MTU the router announced is carried as it was.
        assert_eq!(&out[usize::from(outer.l4_offset) + 4..][..4], &[0, 0, 5, 0]);
    }
    let c = h.pipeline.counters().snapshot();
    assert_eq!(c.icmp_errors_translated, 2);
}

#[test]
fn an_error_about_a_reply_reaches_the_backend_about_its_own_reply() {
    let (mut h, _, [reply4, reply6]) = connected();
    for (from, vip, backend, reply, kind) in [
        (
            "198.18.0.2",
            "198.18.100.10",
            "198.18.1.11",
            &reply4,
            (icmpv4_type::DEST_UNREACHABLE, 3, 0),
        ),
        (
            "2001:2::2",
            "2001:2:0:100::10",
            "2001:2:0:1::11",
            &reply6,
            (icmpv6_type::TIME_EXCEEDED, 0, 0),
        ),
    ] {
        let frame = from_client(FrameBuilder::icmp_error(
            ip(from),
            ip(vip),
            kind.0,
            kind.1,
            kind.2,
        ))
        .payload(&quote(reply, 64))
        .build();
        let (v, out) = h.run(&frame, 0, 2 * SEC);
        assert_eq!(v, Verdict::Transmit(1), "{from}");
        assert!(frame_checksums_ok(&out));
        let outer = wire::parse(&out).unwrap();
        assert_eq!(
            (outer.tuple.src_ip(), outer.tuple.dst_ip()),
            (ip(from), ip(backend))
        );
        assert_eq!(&out[..6], &BACKEND1_MAC);
        assert_eq!(quoted_ends(&out).0, (ip(backend), 8080));
    }
}

#[test]
fn errors_about_the_gateways_traffic_with_no_connection_are_dropped_under_their_own_reason() {
    let (mut h, [sent4, _], _) = connected();
    // The connection ends (its table is lost): the same error is about
    // no connection now.
    h.flows = FlowTable::new(1024, FlowTimeouts::default());
    let frame = FrameBuilder::icmp_error(ip("198.18.1.1"), ip("198.18.0.2"), 3, 4, 1280)
        .macs(BACKEND1_MAC, GW_BACKEND_MAC)
        .payload(&quote(&sent4, 48))
        .build();
    assert_eq!(
        h.run(&frame, 1, 2 * SEC).0,
        Verdict::Drop(DropReason::UnknownIcmpError)
    );
    let c = h.pipeline.counters().snapshot();
    assert_eq!(c.drops.get("unknown_icmp_error"), Some(&1));
}

#[test]
fn a_worker_sends_the_translated_error_out_of_the_clients_port() {
    let cfg = config(GOLDEN_RULES);
    let snapshot = Snapshot::build(&cfg, None);
    let mut memory = MemoryFrames::new(256, 2_048);
    let mut ports = vec![
        MemoryPort::new("fg-client", 64),
        MemoryPort::new("fg-backend", 64),
    ];
    let mut worker = Worker::new(
        FlowTable::new(1_024, FlowTimeouts::from(&cfg.flows)),
        memory.pool(),
        2,
        32,
    );
    let mut kernel = CountingKernelPath::default();
    worker.poll(&mut ports, &mut memory, &snapshot, &mut kernel, 0);
    let syn = from_client(FrameBuilder::tcp(
        sa("198.18.0.2:40000"),
        sa("198.18.100.10:80"),
        tcp_flags::SYN,
    ))
    .build();
    assert!(ports[0].inject(&mut memory, &syn));
    worker.poll(&mut ports, &mut memory, &snapshot, &mut kernel, SEC);
    let mut to_backend = Vec::new();
    ports[1].take_transmitted(&memory, &mut to_backend);
    assert_eq!(to_backend.len(), 1);
    let error = FrameBuilder::icmp_error(ip("198.18.1.1"), ip("198.18.0.2"), 3, 4, 1280)
        .macs(BACKEND1_MAC, GW_BACKEND_MAC)
        .payload(&quote(&to_backend[0], 60))
        .build();
    assert!(ports[1].inject(&mut memory, &error));
    worker.poll(&mut ports, &mut memory, &snapshot, &mut kernel, SEC);
    let mut to_client = Vec::new();
    ports[0].take_transmitted(&memory, &mut to_client);
    assert_eq!(to_client.len(), 1);
    let outer = wire::parse(&to_client[0]).unwrap();
    assert_eq!(outer.tuple.src_ip(), ip("198.18.100.10"));
    assert!(frame_checksums_ok(&to_client[0]));
}

/// An ICMP or ICMPv6 type: mostly the translated errors, sometimes any.
fn icmp_type(v6: bool) -> impl Strategy<Value = u8> {
    if v6 {
        prop_oneof![Just(1u8), Just(2), Just(3), any::<u8>()].boxed()
    } else {
        prop_oneof![Just(3u8), Just(11), any::<u8>()].boxed()
    }
}

thread_local! {
    /// One connected harness per test thread: building one per case would
    /// be most of the run, and ICMP errors change no connection.
    static CONNECTED: std::cell::RefCell<Connected> = std::cell::RefCell::new(connected());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    /// Random errors quoting the connection's packets, corrupted anywhere
    /// and cut anywhere, from either side: the pipeline never panics; a
    /// verdict is one an ICMP error can get; a translated frame whose
    /// checksums were right still has them right.
    #[test]
    fn any_icmp_error_is_decided_without_panic(
        v6 in any::<bool>(),
        msg_type in any::<bool>().prop_flat_map(icmp_type),
        code in any::<u8>(),
        from_backend_side in any::<bool>(),
        keep in 0usize..700,
        noise in prop::collection::vec((0usize..700, any::<u8>()), 0..6),
        cut in 0usize..800,
    ) {
        CONNECTED.with_borrow_mut(|(h, sent, replies)| {
        let family = usize::from(v6);
        let (quoted, from, to, ingress) = match (from_backend_side, v6) {
            (true, false) => (&sent[family], "198.18.1.1", "198.18.0.2", 1),
            (true, true) => (&sent[family], "2001:2:0:1::1", "2001:2::2", 1),
            (false, false) => (&replies[family], "198.18.0.2", "198.18.100.10", 0),
            (false, true) => (&replies[family], "2001:2::2", "2001:2:0:100::10", 0),
        };
        // Addressed to the gateway's MAC on the side it comes in on.
        let macs = if from_backend_side {
            (BACKEND1_MAC, GW_BACKEND_MAC)
        } else {
            (CLIENT_MAC, GW_CLIENT_MAC)
        };
        let mut q = quote(quoted, keep);
        for (at, byte) in noise {
            if let Some(b) = q.get_mut(at) {
                *b = byte;
            }
        }
        let mut frame = FrameBuilder::icmp_error(ip(from), ip(to), msg_type, code, 1280)
            .macs(macs.0, macs.1)
            .payload(&q)
            .build();
        let whole = frame_checksums_ok(&frame);
        let (v, out) = h.run(&frame, ingress, 2 * SEC);
        prop_assert!(matches!(
            v,
            Verdict::Transmit(0 | 1)
                | Verdict::Pass
                | Verdict::Drop(DropReason::UnknownIcmpError)
        ), "{:?}", v);
        if let Verdict::Transmit(_) = v {
            prop_assert_eq!(frame_checksums_ok(&out), whole);
        }
        frame.truncate(cut);
        let _ = h.run(&frame, ingress, 2 * SEC);
        Ok(())
        })?;
    }

    /// Arbitrary bytes after an ICMP header of a translated error type.
    #[test]
    fn arbitrary_quotes_never_panic(
        v6 in any::<bool>(),
        msg_type in any::<bool>().prop_flat_map(icmp_type),
        quote in prop::collection::vec(any::<u8>(), 0..120),
        ingress in 0u16..2,
    ) {
        let (from, to) = if v6 { ("2001:2::9", "2001:2::2") } else { ("198.18.1.1", "198.18.0.2") };
        let frame = FrameBuilder::icmp_error(ip(from), ip(to), msg_type, 0, 0)
            .payload(&quote)
            .build();
        CONNECTED.with_borrow_mut(|(h, _, _)| h.run(&frame, ingress, 2 * SEC));
    }
}
