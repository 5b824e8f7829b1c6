//! The kernel fast path in the real gateway (`fast_path = "xdp"`), end to
//! end in the demo's namespaces (tests/netns/): every connection is
//! answered whether or not the gateway's veths can take the frames the
//! XDP program sends, the program forwards established packets itself
//! where they can (its counters say so), and sends nothing where they
//! cannot — a frame redirected to such a device is dropped by the kernel
//! after the program counted it forwarded, which lost the connections
//! whose request came after their entry was installed.
//!
//! A veth takes XDP frames only while its peer has GRO on (or an XDP
//! program); the topology is built with GRO off, and
//! [`Topology::set_peer_gro`] turns it on. Run as root;
//! FLOWGATE_SKIP_NETNS=1 skips elsewhere. Needs the binaries built first.

mod netns;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use flowgate_dataplane::xdp::{read_attached_counters, XdpCounters};
use netns::*;

/// Time allowed for one batch of requests; far more than they need.
const BUDGET: Duration = Duration::from_secs(60);
/// HTTP connections per round (connect, one request, close).
const CONNECTIONS: usize = 1000;
/// UDP queries sent one after another from one socket: one connection.
const QUERIES: usize = 50;

fn web() -> SocketAddr {
    SocketAddr::new(WEB_VIP.into(), 80)
}

fn dns() -> SocketAddr {
    SocketAddr::new(WEB_VIP.into(), 53)
}

/// The topology's config with the fast path asked for explicitly.
fn fast_config(topo: &Topology) -> String {
    topo.config(&[0])
        .replacen("[daemon]\n", "[daemon]\nfast_path = \"xdp\"\n", 1)
}

/// The program's counters on the gateway's two interfaces, summed.
fn counters(topo: &Topology) -> XdpCounters {
    let read = |dev: &'static str| {
        topo.gateway
            .enter(move || read_attached_counters(dev))
            .unwrap()
            .unwrap()
    };
    let (a, b) = (read("fg-client"), read("fg-backend"));
    XdpCounters {
        fast_tx: a.fast_tx + b.fast_tx,
        fast_redirect: a.fast_redirect + b.fast_redirect,
        fast_miss: a.fast_miss + b.fast_miss,
        fast_handed_up: a.fast_handed_up + b.fast_handed_up,
        fast_no_egress: a.fast_no_egress + b.fast_no_egress,
        ..XdpCounters::default()
    }
}

/// Frames the fast path sent out of an interface itself.
fn sent(c: &XdpCounters) -> u64 {
    c.fast_tx + c.fast_redirect
}

/// `rounds` rounds of [`CONNECTIONS`] HTTP connections, each answered.
fn every_connection_answered(topo: &Topology, gw: &Gateway, rounds: usize, what: &str) {
    for round in 1..=rounds {
        let load = http_load(&topo.client, web(), CONNECTIONS, 4, BUDGET);
        assert!(
            load.answered() == CONNECTIONS && load.failed == 0 && load.not_tried == 0,
            "{what}, round {round}: {} of {CONNECTIONS} answered, {} failed, {} not tried \
             in {:?}; first failures: {:?}\ncounters: {:?}\nflowgate's log:\n{}",
            load.answered(),
            load.failed,
            load.not_tried,
            load.elapsed,
            load.failures,
            counters(topo),
            gw.log()
        );
    }
}

/// [`QUERIES`] queries from one client socket, one after another, each
/// answered from the VIP.
fn one_udp_connection(topo: &Topology, gw: &Gateway) {
    let socket = topo
        .client
        .enter(|| UdpSocket::bind("0.0.0.0:0"))
        .unwrap()
        .unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 256];
    for i in 0..QUERIES {
        socket.send_to(b"who are you?", dns()).unwrap();
        let answer = socket.recv_from(&mut buf);
        assert!(
            matches!(answer, Ok((_, from)) if from == dns()),
            "query {i} of one UDP connection: {answer:?}\ncounters: {:?}\nflowgate's log:\n{}",
            counters(topo),
            gw.log()
        );
    }
}

/// Waits (at most 5 s: the daemon reads the devices every second) until
/// flowgate's log holds `line`.
fn wait_for_log(gw: &Gateway, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gw.log().contains(line) {
        assert!(
            Instant::now() < deadline,
            "flowgate did not log {line:?} within 5 s:\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn where_the_veths_take_xdp_frames_the_fast_path_forwards_and_every_connection_is_answered() {
    if !privileged() {
        return;
    }
    let _one = one_gateway_at_a_time();
    let topo = Topology::new(1);
    topo.set_peer_gro(true, true);
    let mut gw = topo.start_gateway(&fast_config(&topo));
    assert!(
        gw.log()
            .contains("kernel fast path sends through every interface"),
        "{}",
        gw.log()
    );

    // Short connections: most of their packets pass before the entries
    // are installed, but a request that comes after must not be lost.
    let before = counters(&topo);
    every_connection_answered(&topo, &gw, 3, "GRO on the peers");
    let after_http = counters(&topo);

    // One long UDP connection: after the first exchange its packets, both
    // ways, are the fast path's.
    one_udp_connection(&topo, &gw);
    let after_udp = counters(&topo);
    let forwarded = sent(&after_udp) - sent(&after_http);
    assert!(
        forwarded >= QUERIES as u64,
        "the fast path sent {forwarded} frames of {} in one UDP connection: {after_udp:?}",
        2 * QUERIES
    );
    assert_eq!(after_udp.fast_no_egress, before.fast_no_egress);
    gw.assert_running();
    gw.stop();
}

#[test]
fn where_the_veths_cannot_take_xdp_frames_the_fast_path_sends_none_and_follows_the_devices() {
    if !privileged() {
        return;
    }
    let _one = one_gateway_at_a_time();
    let topo = Topology::new(1);
    topo.set_peer_gro(false, false);
    let mut gw = topo.start_gateway(&fast_config(&topo));
    assert!(
        gw.log()
            .contains("kernel fast path off: no interface can transmit XDP frames"),
        "{}",
        gw.log()
    );

    // Off: the program does not even look packets up.
    every_connection_answered(&topo, &gw, 2, "GRO off on the peers");
    one_udp_connection(&topo, &gw);
    let off = counters(&topo);
    assert_eq!(sent(&off), 0, "{off:?}");
    assert_eq!(off.fast_miss + off.fast_handed_up, 0, "{off:?}");

    // The peers gain GRO: within about a second the fast path sends
    // through both interfaces.
    topo.set_peer_gro(true, true);
    wait_for_log(&gw, "interface transmits XDP frames now");
    std::thread::sleep(Duration::from_millis(1500));
    one_udp_connection(&topo, &gw);
    let on = counters(&topo);
    assert!(sent(&on) >= QUERIES as u64, "{on:?}");

    // The backend side loses it: packets to the backends go to the
    // workers again, replies to the client stay with the kernel.
    topo.set_peer_gro(true, false);
    wait_for_log(&gw, "cannot transmit XDP frames any more");
    std::thread::sleep(Duration::from_millis(1500));
    let before = counters(&topo);
    every_connection_answered(&topo, &gw, 2, "GRO on the client's side only");
    one_udp_connection(&topo, &gw);
    let half = counters(&topo);
    assert!(
        half.fast_no_egress > before.fast_no_egress,
        "packets to the backends handed up: {half:?}"
    );
    assert!(
        sent(&half) > sent(&before),
        "replies to the client still sent by the program: {half:?}"
    );
    gw.assert_running();
    gw.stop();
}
