//! A backend's reply whose connection the gateway does not hold — evicted,
//! expired, or made by another gateway of a fleet — is never passed on
//! untranslated: where exactly one service has that backend (protocol,
//! address, port) it comes back from the service's VIP without state;
//! otherwise it is dropped under its own reason.

mod common;

use std::net::SocketAddr;

use common::*;
use flowgate_dataplane::flow::{FlowTable, FlowTimeouts};
use flowgate_dataplane::pipeline::{DropReason, Verdict};
use flowgate_dataplane::port::{MemoryFrames, MemoryPort};
use flowgate_dataplane::table::Snapshot;
use flowgate_dataplane::wire::builder::FrameBuilder;
use flowgate_dataplane::wire::{self, frame_checksums_ok, tcp_flags};
use flowgate_dataplane::worker::{CountingKernelPath, Worker};

const SEC: u64 = 1_000_000_000;

/// Two gateways' rules: "web" (TCP, VIP .10:80) and "dns" (UDP, VIP
/// .10:53) on backend 198.18.1.11, whose port 8080 serves TCP for "web"
/// and UDP for "echo" (VIP .13) — one service per protocol; and port 9000
/// shared by "a" and "b" (VIPs .11 and .12). Clients 198.18.2.x have
/// neighbour entries on the client side.
const RULES: &str = r#"
[[interfaces]]
name = "fg-client"
mac = "02:66:67:00:00:01"
[[interfaces]]
name = "fg-backend"
mac = "02:66:67:00:01:01"

[[neighbours]]
address = "198.18.1.11"
mac = "02:66:67:00:01:11"
interface = "fg-backend"
[[neighbours]]
address = "198.18.2.1"
mac = "02:66:67:00:00:02"
interface = "fg-client"
[[neighbours]]
address = "198.18.2.2"
mac = "02:66:67:00:00:02"
interface = "fg-client"

[[services]]
name = "web"
protocol = "tcp"
vip = "198.18.100.10"
port = 80
[[services.backends]]
address = "198.18.1.11"
port = 8080

[[services]]
name = "echo"
protocol = "udp"
vip = "198.18.100.13"
port = 7
[[services.backends]]
address = "198.18.1.11"
port = 8080

[[services]]
name = "a"
protocol = "tcp"
vip = "198.18.100.11"
port = 443
[[services.backends]]
address = "198.18.1.11"
port = 9000

[[services]]
name = "b"
protocol = "tcp"
vip = "198.18.100.12"
port = 443
[[services.backends]]
address = "198.18.1.11"
port = 9000
"#;

fn reply(from: &str, to: &str, flags: u8) -> Vec<u8> {
    FrameBuilder::tcp(sa(from), sa(to), flags)
        .macs(BACKEND1_MAC, GW_BACKEND_MAC)
        .payload(b"late")
        .build()
}

/// What the client must get: the reply from `vip`, one hop on.
fn from_vip(vip: &str, to: &str, flags: u8) -> Vec<u8> {
    FrameBuilder::tcp(sa(vip), sa(to), flags)
        .macs(GW_CLIENT_MAC, CLIENT_MAC)
        .ttl(63)
        .payload(b"late")
        .build()
}

#[test]
fn a_reply_for_a_connection_another_gateway_made_comes_back_from_the_vip_without_state() {
    // Gateway A takes the SYN; the backend's answer reaches gateway B,
    // which has the same rules and no connection.
    let mut a = Harness::new(RULES);
    let mut b = Harness::new(RULES);
    let client = "198.18.2.1:40000";
    let syn = from_client(FrameBuilder::tcp(
        sa(client),
        sa("198.18.100.10:80"),
        tcp_flags::SYN,
    ))
    .build();
    let (v, out) = a.run(&syn, 0, SEC);
    assert_eq!(v, Verdict::Transmit(1));
    let to_backend = wire::parse(&out).unwrap().tuple;
    let backend = SocketAddr::new(to_backend.dst_ip(), to_backend.dst_port);
    assert_eq!(backend, sa("198.18.1.11:8080"));

    let syn_ack = reply("198.18.1.11:8080", client, tcp_flags::SYN | tcp_flags::ACK);
    let (va, by_a) = a.run(&syn_ack, 1, 2 * SEC);
    let (vb, by_b) = b.run(&syn_ack, 1, 2 * SEC);
    assert_eq!((va, vb), (Verdict::Transmit(0), Verdict::Transmit(0)));
    assert_eq!(
        by_b,
        from_vip("198.18.100.10:80", client, tcp_flags::SYN | tcp_flags::ACK),
        "B's translation:\n{}",
        hex(&by_b)
    );
    assert_eq!(by_a, by_b, "both gateways send the client the same frame");
    assert!(frame_checksums_ok(&by_b));
    assert!(b.flows.is_empty(), "no state is made");
    let c = b.pipeline.counters().snapshot();
    assert_eq!((c.stateless_replies, c.forwarded, c.new_flows), (1, 1, 0));
}

#[test]
fn an_evicted_connections_reply_still_reaches_its_client_from_the_vip() {
    let mut h = Harness::new(RULES);
    let client = "198.18.2.2:5000";
    let query = from_client(FrameBuilder::udp(sa(client), sa("198.18.100.13:7"))).build();
    assert_eq!(h.run(&query, 0, SEC).0, Verdict::Transmit(1));
    // The table is lost (a full table gave the record up, or a restart).
    h.flows = FlowTable::new(4096, FlowTimeouts::default());
    let answer = FrameBuilder::udp(sa("198.18.1.11:8080"), sa(client))
        .macs(BACKEND1_MAC, GW_BACKEND_MAC)
        .payload(b"echo")
        .build();
    let (v, out) = h.run(&answer, 1, 2 * SEC);
    assert_eq!(v, Verdict::Transmit(0));
    let expected = FrameBuilder::udp(sa("198.18.100.13:7"), sa(client))
        .macs(GW_CLIENT_MAC, CLIENT_MAC)
        .ttl(63)
        .payload(b"echo")
        .build();
    assert_eq!(
        out, expected,
        "the UDP service on the same backend port: by protocol"
    );
}

#[test]
fn a_reply_from_a_backend_several_services_share_is_dropped_as_unknown_reply() {
    let mut h = Harness::new(RULES);
    let (v, _) = h.run(&reply("198.18.1.11:9000", "198.18.2.1:40001", 0x10), 1, SEC);
    assert_eq!(v, Verdict::Drop(DropReason::UnknownReply));
    let c = h.pipeline.counters().snapshot();
    assert_eq!(c.drops.get("unknown_reply"), Some(&1));
    assert_eq!((c.passed, c.stateless_replies), (0, 0));

    // With its connection known, the same backend's reply is the
    // connection's, as always.
    let syn = from_client(FrameBuilder::tcp(
        sa("198.18.2.1:40001"),
        sa("198.18.100.12:443"),
        tcp_flags::SYN,
    ))
    .build();
    assert_eq!(h.run(&syn, 0, SEC).0, Verdict::Transmit(1));
    let (v, out) = h.run(&reply("198.18.1.11:9000", "198.18.2.1:40001", 0x10), 1, SEC);
    assert_eq!(v, Verdict::Transmit(0));
    assert_eq!(out, from_vip("198.18.100.12:443", "198.18.2.1:40001", 0x10));
}

#[test]
fn what_is_not_a_backends_reply_is_still_the_kernels_and_a_client_without_a_way_is_not_reached() {
    let mut h = Harness::new(RULES);
    // The backend's other ports are not backends: not ours.
    let (v, _) = h.run(&reply("198.18.1.11:22", "198.18.2.1:40002", 0x10), 1, SEC);
    assert_eq!(v, Verdict::Pass);
    // A client the gateway has no neighbour entry for.
    let (v, _) = h.run(&reply("198.18.1.11:8080", "198.18.3.1:40002", 0x10), 1, SEC);
    assert_eq!(v, Verdict::Drop(DropReason::NoNeighbour));
    // TTL 1 is not forwarded, translated or not.
    let last_hop = FrameBuilder::tcp(sa("198.18.1.11:8080"), sa("198.18.2.1:40002"), 0x10)
        .macs(BACKEND1_MAC, GW_BACKEND_MAC)
        .ttl(1)
        .build();
    assert_eq!(
        h.run(&last_hop, 1, SEC).0,
        Verdict::Drop(DropReason::TtlExpired)
    );
}

#[test]
fn the_worker_sends_a_stateless_reply_out_of_the_clients_port() {
    let cfg = config(RULES);
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
    let frames = [
        reply("198.18.1.11:8080", "198.18.2.1:41000", 0x10),
        reply("198.18.1.11:9000", "198.18.2.1:41001", 0x10),
    ];
    for frame in &frames {
        assert!(ports[1].inject(&mut memory, frame));
    }
    worker.poll(&mut ports, &mut memory, &snapshot, &mut kernel, SEC);
    let mut to_clients = Vec::new();
    ports[0].take_transmitted(&memory, &mut to_clients);
    assert_eq!(
        to_clients,
        vec![from_vip("198.18.100.10:80", "198.18.2.1:41000", 0x10)]
    );
    let c = worker.pipeline().counters().snapshot();
    assert_eq!(c.drops.get("unknown_reply"), Some(&1));
    assert_eq!(
        (kernel.frames, c.passed),
        (0, 0),
        "nothing reaches the kernel"
    );
}

#[test]
fn a_reply_the_clients_router_sends_back_returns_to_that_router_from_the_vip() {
    // A fleet behind a router: the router spreads the backends' replies
    // over the gateways, so a reply comes in on the clients' port, from the
    // router's MAC, for a client that is no neighbour of the gateway.
    const ROUTER_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0x00, 0x00, 0xfe];
    let mut h = Harness::new(RULES);
    let client = "198.18.3.1:40003";
    let from_router = FrameBuilder::tcp(sa("198.18.1.11:8080"), sa(client), 0x10)
        .macs(ROUTER_MAC, GW_CLIENT_MAC)
        .payload(b"late")
        .build();
    let (v, out) = h.run(&from_router, 0, SEC);
    assert_eq!(v, Verdict::Transmit(0));
    let expected = FrameBuilder::tcp(sa("198.18.100.10:80"), sa(client), 0x10)
        .macs(GW_CLIENT_MAC, ROUTER_MAC)
        .ttl(63)
        .payload(b"late")
        .build();
    assert_eq!(out, expected, "back to the router:\n{}", hex(&out));
    assert!(frame_checksums_ok(&out));
    assert!(h.flows.is_empty(), "no state is made");
    // A neighbour entry still wins over the sender.
    let neighbour = FrameBuilder::tcp(sa("198.18.1.11:8080"), sa("198.18.2.1:40003"), 0x10)
        .macs(ROUTER_MAC, GW_CLIENT_MAC)
        .payload(b"late")
        .build();
    let (v, out) = h.run(&neighbour, 0, SEC);
    assert_eq!(v, Verdict::Transmit(0));
    assert_eq!(out, from_vip("198.18.100.10:80", "198.18.2.1:40003", 0x10));
    // The same reply from the backends' side has no way back: dropped.
    let (v, _) = h.run(&reply("198.18.1.11:8080", client, 0x10), 1, SEC);
    assert_eq!(v, Verdict::Drop(DropReason::NoNeighbour));
}
