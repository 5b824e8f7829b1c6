//! Our XDP program on veth pairs in network namespaces: what it takes from
//! the kernel, what it leaves to it, and that it never outstays its filter.
//!
//! ```text
//!  [client ns] c0 ══ g0 [gateway ns: XdpFilter on g0, maybe an XskPort]
//!  198.18.70.1          198.18.70.2 (a VIP's address too), 198.18.70.3
//!  2001:2:0:70::1       2001:2:0:70::2
//! ```
//!
//! The VIPs live on the gateway's own address, so a frame the program
//! wrongly passed would be answered by the gateway's kernel: "not seen by
//! the kernel" is checked with real listeners. Frames with VLAN tags,
//! IPv4 options, IPv6 extension headers and fragments are sent from an
//! AF_XDP socket in the client namespace, byte for byte as built. The
//! client namespace also plays a backend, for the box's own connections to
//! a backend's service port.
//!
//! Needs root (namespaces, XDP, AF_XDP). Set FLOWGATE_SKIP_NETNS=1 to skip.

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use flowgate_dataplane::neigh::{link_info, local_addresses, AttachedXdp};
use flowgate_dataplane::port::{
    FrameMemory, FramePool, Port, SharedUmem, UmemFrames, XskPort, XskSettings,
};
use flowgate_dataplane::testnet::{self, NetNs};
use flowgate_dataplane::wire::builder::{ExtensionHeader, FrameBuilder};
use flowgate_dataplane::wire::{addr_to_bytes, ip_proto};
use flowgate_dataplane::xdp::{
    program_object, read_attached_maps, OwnedTraffic, TrafficKey, XdpCapacity, XdpCounters,
    XdpError, XdpFilter, XdpMode,
};

const CLIENT_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x02];
const GATEWAY_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x01];
/// How long a frame may take to show up (in a counter or a ring).
const FRAME_WAIT: Duration = Duration::from_secs(3);
/// How long a connection attempt the program should swallow is given.
const REFUSED_WAIT: Duration = Duration::from_millis(800);

/// A client and a gateway namespace joined by c0 ══ g0 (one queue). A
/// quiet pair has IPv6 off, so neither kernel sends a frame of its own.
struct Pair {
    client: NetNs,
    gateway: NetNs,
}

fn pair(quiet: bool) -> Pair {
    let client = NetNs::new("fgxc").unwrap();
    let gateway = NetNs::new("fgxw").unwrap();
    if quiet {
        for ns in [&client, &gateway] {
            for key in [
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ] {
                ns.exec("sysctl", &["-qw", key]).unwrap();
            }
        }
    }
    testnet::veth_pair(&client, "c0", &gateway, "g0", 1).unwrap();
    client
        .ip(&["link", "set", "c0", "address", "02:66:67:00:00:02"])
        .unwrap();
    gateway
        .ip(&["link", "set", "g0", "address", "02:66:67:00:00:01"])
        .unwrap();
    client
        .ip(&["addr", "add", "198.18.70.1/24", "dev", "c0"])
        .unwrap();
    for a in ["198.18.70.2/24", "198.18.70.3/24"] {
        gateway.ip(&["addr", "add", a, "dev", "g0"]).unwrap();
    }
    if !quiet {
        client
            .ip(&["addr", "add", "2001:2:0:70::1/64", "dev", "c0", "nodad"])
            .unwrap();
        gateway
            .ip(&["addr", "add", "2001:2:0:70::2/64", "dev", "g0", "nodad"])
            .unwrap();
    }
    Pair { client, gateway }
}

fn key(protocol: u8, addr: &str) -> TrafficKey {
    let addr: SocketAddr = addr.parse().unwrap();
    TrafficKey {
        protocol,
        address: addr_to_bytes(addr.ip()),
        port: addr.port(),
    }
}

/// Services on the gateway's own address 198.18.70.2 (and its IPv6 one),
/// and a backend at the client's 198.18.70.1:9090/udp.
fn owned() -> OwnedTraffic {
    OwnedTraffic {
        announced: Default::default(),
        services: [
            key(ip_proto::TCP, "198.18.70.2:8080"),
            key(ip_proto::UDP, "198.18.70.2:5353"),
            key(ip_proto::TCP, "[2001:2:0:70::2]:8080"),
            key(ip_proto::UDP, "[2001:2:0:70::2]:5353"),
        ]
        .into(),
        reply_sources: [key(ip_proto::UDP, "198.18.70.1:9090")].into(),
    }
}

fn attach(ns: &NetNs, interface: &'static str, mode: XdpMode) -> Result<XdpFilter, XdpError> {
    ns.enter(move || XdpFilter::attach(interface, mode))
        .unwrap()
}

/// `ip link show g0` in the gateway namespace.
fn shown(pair: &Pair) -> String {
    let out = pair.gateway.ip(&["link", "show", "g0"]).unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ping(pair: &Pair, to: &str) -> bool {
    pair.client
        .exec("ping", &["-c", "1", "-W", "2", to])
        .is_ok()
}

/// Whether a TCP connection from the client to `to` is accepted.
fn tcp_connects(pair: &Pair, to: SocketAddr, wait: Duration) -> bool {
    pair.client
        .enter(move || TcpStream::connect_timeout(&to, wait).is_ok())
        .unwrap()
}

/// A listener in the gateway namespace.
fn listen(pair: &Pair, at: &str) -> TcpListener {
    listen_in(&pair.gateway, at)
}

/// A non-blocking listener in `ns`.
fn listen_in(ns: &NetNs, at: &str) -> TcpListener {
    let at: SocketAddr = at.parse().unwrap();
    let listener = ns.enter(move || TcpListener::bind(at)).unwrap().unwrap();
    listener.set_nonblocking(true).unwrap();
    listener
}

/// Whether a datagram of `len` bytes from `from` (client) reaches a
/// socket bound to `to` (gateway).
fn udp_arrives(pair: &Pair, from: &str, to: &str, len: usize, wait: Duration) -> bool {
    let (from, to): (SocketAddr, SocketAddr) = (from.parse().unwrap(), to.parse().unwrap());
    let rx = pair
        .gateway
        .enter(move || UdpSocket::bind(to))
        .unwrap()
        .unwrap();
    let tx = pair
        .client
        .enter(move || UdpSocket::bind(from))
        .unwrap()
        .unwrap();
    tx.send_to(&vec![0x5a; len], to).unwrap();
    let mut buf = vec![0u8; len + 1];
    let start = Instant::now();
    loop {
        let Some(left) = wait.checked_sub(start.elapsed()).filter(|l| !l.is_zero()) else {
            return false;
        };
        rx.set_read_timeout(Some(left)).unwrap();
        match rx.recv_from(&mut buf) {
            Ok((n, sender)) => return n == len && sender == from,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            // A receive with a timeout is not restarted after a signal
            // (or a freeze of the process): wait out the rest.
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
}

/// Polls the filter's counters until `done` holds or [`FRAME_WAIT`]
/// passes; returns the last reading.
fn counters_when(filter: &XdpFilter, done: impl Fn(&XdpCounters) -> bool) -> XdpCounters {
    let start = Instant::now();
    loop {
        let c = filter.counters();
        if done(&c) || start.elapsed() > FRAME_WAIT {
            return c;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether `listener` gets a connection within [`FRAME_WAIT`].
fn accepted(listener: &TcpListener) -> bool {
    accept_within(listener).is_some()
}

/// The next connection `listener` gets within [`FRAME_WAIT`].
fn accept_within(listener: &TcpListener) -> Option<TcpStream> {
    let start = Instant::now();
    while start.elapsed() < FRAME_WAIT {
        match listener.accept() {
            Ok((stream, _)) => return Some(stream),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
    None
}

/// The XDP programs on `interface` once a filter let go of it. Closing
/// the link's descriptor detaches the program when no process holds the
/// descriptor any more, and a child another test is forking holds a copy
/// until it execs: this allows [`FRAME_WAIT`] for that.
fn xdp_after_detach(ns: &NetNs, interface: &'static str) -> AttachedXdp {
    let start = Instant::now();
    loop {
        let xdp = ns.enter(move || link_info(interface)).unwrap().unwrap().xdp;
        if xdp.is_empty() || start.elapsed() > FRAME_WAIT {
            return xdp;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn no_xdp_left(pair: &Pair) {
    let xdp = xdp_after_detach(&pair.gateway, "g0");
    assert!(xdp.is_empty(), "{xdp:?}");
    let text = shown(pair);
    assert!(!text.contains("xdp"), "XDP program left behind:\n{text}");
}

#[test]
fn the_box_stays_reachable_in_native_and_generic_mode() {
    if !testnet::privileged() {
        return;
    }
    for (mode, shown_as) in [(XdpMode::Native, "xdp "), (XdpMode::Generic, "xdpgeneric ")] {
        let pair = pair(false);
        let ssh = listen(&pair, "198.18.70.2:2222");
        let ssh6 = listen(&pair, "[2001:2:0:70::2]:2222");
        let filter = attach(&pair.gateway, "g0", mode).unwrap();
        assert_eq!(filter.mode(), mode);
        let text = shown(&pair);
        assert!(text.contains(shown_as), "{mode}: {text}");
        assert!(text.contains("name flowgate_xdp"), "{mode}: {text}");

        assert!(ping(&pair, "198.18.70.2"), "{mode}: IPv4 ping");
        assert!(ping(&pair, "2001:2:0:70::2"), "{mode}: IPv6 ping");
        assert!(tcp_connects(
            &pair,
            "198.18.70.2:2222".parse().unwrap(),
            FRAME_WAIT
        ));
        assert!(tcp_connects(
            &pair,
            "[2001:2:0:70::2]:2222".parse().unwrap(),
            FRAME_WAIT
        ));
        assert!(accepted(&ssh) && accepted(&ssh6));

        let c = filter.counters();
        assert!(c.passed_not_ip >= 1, "{mode}: ARP {c:?}");
        assert!(c.passed_not_tcp_udp >= 2, "{mode}: ICMP, NDP {c:?}");
        assert!(c.passed_not_owned >= 4, "{mode}: TCP {c:?}");
        assert_eq!(
            (c.redirected(), c.redirect_failed()),
            (0, 0),
            "{mode}: {c:?}"
        );

        drop(filter);
        no_xdp_left(&pair);
        assert!(ping(&pair, "198.18.70.2"));
    }
}

#[test]
fn owned_traffic_never_reaches_the_kernel_when_no_socket_takes_it() {
    if !testnet::privileged() {
        return;
    }
    let pair = pair(false);
    let web = listen(&pair, "198.18.70.2:8080");
    let web6 = listen(&pair, "[2001:2:0:70::2]:8080");
    let ssh = listen(&pair, "198.18.70.2:2222");
    let mut filter = attach(&pair.gateway, "g0", XdpMode::Auto).unwrap();
    filter.update(&owned()).unwrap();
    assert_eq!(filter.owned(), owned());

    // What the gateway does not own still works (this also resolves ARP
    // and NDP, so a datagram lost below is the program's doing).
    assert!(tcp_connects(
        &pair,
        "198.18.70.2:2222".parse().unwrap(),
        FRAME_WAIT
    ));
    assert!(accepted(&ssh));
    assert!(udp_arrives(
        &pair,
        "198.18.70.1:9091",
        "198.18.70.2:7000",
        100,
        FRAME_WAIT
    ));
    assert!(ping(&pair, "2001:2:0:70::2"));
    let before = filter.counters();

    // To a service: dropped, the listener never sees it.
    assert!(!tcp_connects(
        &pair,
        "198.18.70.2:8080".parse().unwrap(),
        REFUSED_WAIT
    ));
    assert!(!tcp_connects(
        &pair,
        "[2001:2:0:70::2]:8080".parse().unwrap(),
        REFUSED_WAIT
    ));
    assert_eq!(web.accept().unwrap_err().kind(), ErrorKind::WouldBlock);
    assert_eq!(web6.accept().unwrap_err().kind(), ErrorKind::WouldBlock);
    assert!(!udp_arrives(
        &pair,
        "198.18.70.1:9092",
        "198.18.70.2:5353",
        100,
        REFUSED_WAIT
    ));
    // From a backend: a reply, dropped too.
    assert!(!udp_arrives(
        &pair,
        "198.18.70.1:9090",
        "198.18.70.2:7000",
        100,
        REFUSED_WAIT
    ));
    // Fragments to a VIP address go up whatever their port; others pass.
    assert!(!udp_arrives(
        &pair,
        "198.18.70.1:9093",
        "198.18.70.2:7001",
        3000,
        REFUSED_WAIT
    ));
    assert!(udp_arrives(
        &pair,
        "198.18.70.1:9094",
        "198.18.70.3:7001",
        3000,
        FRAME_WAIT
    ));

    let c = filter.counters();
    // 2 SYNs at least, 2 datagrams, 3 fragments.
    assert!(c.dropped_no_socket - before.dropped_no_socket >= 7, "{c:?}");
    assert!(c.passed_fragment - before.passed_fragment >= 3, "{c:?}");
    assert_eq!(c.redirected(), 0, "{c:?}");

    // Owning nothing again, all of it reaches the kernel.
    filter.update(&OwnedTraffic::default()).unwrap();
    assert_eq!(filter.owned(), OwnedTraffic::default());
    assert!(tcp_connects(
        &pair,
        "198.18.70.2:8080".parse().unwrap(),
        FRAME_WAIT
    ));
    assert!(accepted(&web));
    assert!(udp_arrives(
        &pair,
        "198.18.70.1:9090",
        "198.18.70.2:7000",
        100,
        FRAME_WAIT
    ));
    assert!(udp_arrives(
        &pair,
        "198.18.70.1:9095",
        "198.18.70.2:7001",
        3000,
        FRAME_WAIT
    ));
}

/// One AF_XDP socket with its own frames.
struct Socket {
    port: XskPort,
    frames: UmemFrames,
    pool: FramePool,
    _umem: SharedUmem,
}

impl Socket {
    fn open(ns: &NetNs, interface: &'static str) -> Socket {
        let settings = XskSettings {
            frame_count: 1024,
            rx_ring: 256,
            tx_ring: 256,
            fill_ring: 256,
            completion_ring: 256,
            huge_pages: false,
            libxdp_default_program: false,
            ..XskSettings::default()
        };
        let (umem, port) = ns
            .enter(move || {
                let umem = SharedUmem::new(&settings).unwrap();
                let port = XskPort::open(&umem, interface, 0, &settings).unwrap();
                (umem, port)
            })
            .unwrap();
        let mut socket = Socket {
            port,
            frames: umem.frames(),
            pool: umem.split_pools(1).pop().unwrap(),
            _umem: umem,
        };
        socket.port.refill(&mut socket.pool);
        socket
    }

    fn send(&mut self, frame: &[u8]) {
        self.port.reclaim(&mut self.pool);
        let mut desc = self.pool.take().unwrap();
        assert!(self.frames.write(&mut desc, frame));
        assert_eq!(self.port.transmit(&mut vec![desc]), 1);
        self.port.flush();
    }

    /// The frames received within `wait` (stops at the first batch).
    fn receive(&mut self, wait: Duration) -> Vec<Vec<u8>> {
        let start = Instant::now();
        let mut descs = Vec::new();
        loop {
            self.port.refill(&mut self.pool);
            if self.port.receive(&mut descs, 64) > 0 || start.elapsed() > wait {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let frames = descs
            .iter()
            .map(|d| self.frames.frame(d).to_vec())
            .collect();
        for d in descs {
            self.pool.put(d);
        }
        frames
    }
}

fn udp(from: &str, to: &str) -> FrameBuilder {
    FrameBuilder::udp(from.parse().unwrap(), to.parse().unwrap())
        .macs(CLIENT_MAC, GATEWAY_MAC)
        .payload(&[0x42; 32])
}

type Expect = fn(&mut XdpCounters);

/// The box's own address in [`cases`].
const LOCAL_FOR_CASES: &str = "198.18.70.3";

/// Frames the client sends, and the one counter each must move. The box's
/// own addresses the program knows are [`LOCAL_FOR_CASES`] alone, so a
/// frame to 198.18.70.2 stands for one to a client.
// A table, one case per entry: it reads as a list, however long.
#[allow(clippy::too_many_lines)]
fn cases() -> Vec<(&'static str, Vec<u8>, Expect)> {
    use ExtensionHeader::*;
    let v4_vip = "198.18.70.2:5353";
    let v6_vip = "[2001:2:0:70::2]:5353";
    let nine: Vec<ExtensionHeader> = std::iter::repeat_n(DestinationOptions(0), 9).collect();
    vec![
        (
            "udp to a service",
            udp("198.18.70.1:40000", v4_vip).build(),
            |c| c.redirected_vip += 1,
        ),
        (
            "tcp syn to a service",
            FrameBuilder::tcp(
                "198.18.70.1:40000".parse().unwrap(),
                "198.18.70.2:8080".parse().unwrap(),
                0x02,
            )
            .macs(CLIENT_MAC, GATEWAY_MAC)
            .build(),
            |c| c.redirected_vip += 1,
        ),
        // Ingress checks on a live interface.
        (
            "broadcast to a vip",
            udp("198.18.70.1:40000", v4_vip)
                .macs(CLIENT_MAC, [0xff; 6])
                .build(),
            |c| c.dropped_broadcast += 1,
        ),
        (
            "bad ipv4 header checksum",
            {
                let mut frame = udp("198.18.70.1:40000", v4_vip).build();
                frame[14 + 10] ^= 0x5a;
                frame
            },
            |c| c.dropped_bad_ip_checksum += 1,
        ),
        // Interfaces are untagged: the gateway's tagged traffic is refused.
        (
            "one vlan tag",
            udp("198.18.70.1:40000", v4_vip).vlan(70).build(),
            |c| c.dropped_vlan_not_configured += 1,
        ),
        (
            "two vlan tags",
            udp("198.18.70.1:40000", v4_vip).vlan(7).vlan(70).build(),
            |c| c.dropped_vlan_not_configured += 1,
        ),
        (
            "three vlan tags",
            udp("198.18.70.1:40000", v4_vip)
                .vlan(1)
                .vlan(7)
                .vlan(70)
                .build(),
            |c| c.passed_unparsed += 1,
        ),
        (
            "ipv4 options",
            udp("198.18.70.1:40000", v4_vip)
                .ipv4_options(&[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0])
                .build(),
            |c| c.redirected_vip += 1,
        ),
        (
            "ipv6 with extension headers",
            udp("[2001:2:0:70::1]:40000", v6_vip)
                .ipv6_extension_headers(&[
                    HopByHop(0),
                    Routing(1),
                    DestinationOptions(2),
                    Authentication,
                ])
                .build(),
            |c| c.redirected_vip += 1,
        ),
        (
            "ipv6 with nine extension headers",
            udp("[2001:2:0:70::1]:40000", v6_vip)
                .ipv6_extension_headers(&nine)
                .build(),
            |c| c.passed_unparsed += 1,
        ),
        (
            "ipv4 first fragment to a vip address, other port",
            udp("198.18.70.1:40000", "198.18.70.2:7000")
                .fragment(0, true)
                .build(),
            |c| c.redirected_vip_fragment += 1,
        ),
        (
            "ipv4 later fragment to a vip address",
            udp("198.18.70.1:40000", v4_vip)
                .fragment(1480, false)
                .build(),
            |c| c.redirected_vip_fragment += 1,
        ),
        (
            "ipv6 later fragment to a vip address",
            udp("[2001:2:0:70::1]:40000", v6_vip)
                .fragment(1232, false)
                .build(),
            |c| c.redirected_vip_fragment += 1,
        ),
        (
            "ipv4 fragment to the box's other address",
            udp("198.18.70.1:40000", "198.18.70.3:5353")
                .fragment(0, true)
                .build(),
            |c| c.passed_fragment += 1,
        ),
        (
            "reply from a backend",
            udp("198.18.70.1:9090", "198.18.70.2:7000").build(),
            |c| c.redirected_reply += 1,
        ),
        (
            "from a backend to the box's own address",
            udp("198.18.70.1:9090", "198.18.70.3:7000").build(),
            |c| c.passed_local += 1,
        ),
        (
            "from a backend's address, other port, to the box's own address",
            udp("198.18.70.1:9091", "198.18.70.3:7000").build(),
            |c| c.passed_not_owned += 1,
        ),
        (
            "udp to an unowned port",
            udp("198.18.70.1:40000", "198.18.70.2:7000").build(),
            |c| c.passed_not_owned += 1,
        ),
        (
            "udp to the service port of another protocol",
            udp("198.18.70.1:40000", "198.18.70.2:8080").build(),
            |c| c.passed_not_owned += 1,
        ),
        (
            "icmp echo to a vip",
            FrameBuilder::icmp_echo_request(
                "198.18.70.1".parse().unwrap(),
                "198.18.70.2".parse().unwrap(),
            )
            .macs(CLIENT_MAC, GATEWAY_MAC)
            .build(),
            |c| c.passed_not_tcp_udp += 1,
        ),
        (
            "arp",
            FrameBuilder::arp_request(
                CLIENT_MAC,
                "198.18.70.1".parse().unwrap(),
                "198.18.70.2".parse().unwrap(),
            )
            .build(),
            |c| c.passed_not_ip += 1,
        ),
        (
            "truncated ipv4",
            udp("198.18.70.1:40000", v4_vip).build()[..14 + 12].to_vec(),
            |c| c.passed_unparsed += 1,
        ),
    ]
}

fn difference(after: &XdpCounters, before: &XdpCounters) -> XdpCounters {
    XdpCounters {
        redirected_vip: after.redirected_vip - before.redirected_vip,
        redirected_vip_fragment: after.redirected_vip_fragment - before.redirected_vip_fragment,
        redirected_reply: after.redirected_reply - before.redirected_reply,
        redirected_all: after.redirected_all - before.redirected_all,
        dropped_no_socket: after.dropped_no_socket - before.dropped_no_socket,
        passed_no_socket: after.passed_no_socket - before.passed_no_socket,
        passed_not_ip: after.passed_not_ip - before.passed_not_ip,
        passed_not_tcp_udp: after.passed_not_tcp_udp - before.passed_not_tcp_udp,
        passed_not_owned: after.passed_not_owned - before.passed_not_owned,
        passed_fragment: after.passed_fragment - before.passed_fragment,
        passed_unparsed: after.passed_unparsed - before.passed_unparsed,
        passed_local: after.passed_local - before.passed_local,
        fast_tx: after.fast_tx - before.fast_tx,
        fast_redirect: after.fast_redirect - before.fast_redirect,
        fast_miss: after.fast_miss - before.fast_miss,
        fast_handed_up: after.fast_handed_up - before.fast_handed_up,
        fast_no_egress: after.fast_no_egress - before.fast_no_egress,
        answered_arp: after.answered_arp - before.answered_arp,
        answered_ns: after.answered_ns - before.answered_ns,
        dropped_other_host: after.dropped_other_host - before.dropped_other_host,
        dropped_broadcast: after.dropped_broadcast - before.dropped_broadcast,
        dropped_multicast: after.dropped_multicast - before.dropped_multicast,
        dropped_bad_ip_checksum: after.dropped_bad_ip_checksum - before.dropped_bad_ip_checksum,
        dropped_vlan_not_configured: after.dropped_vlan_not_configured
            - before.dropped_vlan_not_configured,
        fast_bytes: after.fast_bytes - before.fast_bytes,
        fast_up: flowgate_dataplane::xdp::FastHandUps {
            syn: after.fast_up.syn - before.fast_up.syn,
            fin_rst: after.fast_up.fin_rst - before.fast_up.fin_rst,
            options: after.fast_up.options - before.fast_up.options,
            ttl: after.fast_up.ttl - before.fast_up.ttl,
            length: after.fast_up.length - before.fast_up.length,
            client_mac: after.fast_up.client_mac - before.fast_up.client_mac,
            fragment: after.fast_up.fragment - before.fast_up.fragment,
            icmp: after.fast_up.icmp - before.fast_up.icmp,
            syn_proxy: after.fast_up.syn_proxy - before.fast_up.syn_proxy,
        },
    }
}

/// Sends `frame` from the client's socket; checks it moved exactly the
/// `expect`ed counter, and that the gateway's socket got it byte for byte
/// exactly when it was redirected.
fn send_and_check(
    name: &str,
    mode: XdpMode,
    frame: &[u8],
    expect: Expect,
    client: &mut Socket,
    gateway: &mut Socket,
    filter: &XdpFilter,
) {
    let before = filter.counters();
    let mut expected = XdpCounters::default();
    expect(&mut expected);
    client.send(frame);
    let after = counters_when(filter, |c| c != &before);
    let moved = difference(&after, &before);
    assert_eq!(moved, expected, "{mode}, {name}");
    let redirected = expected.redirected() > 0;
    let wait = if redirected {
        FRAME_WAIT
    } else {
        Duration::from_millis(50)
    };
    let got = gateway.receive(wait);
    if redirected {
        assert_eq!(
            got,
            vec![frame.to_vec()],
            "{mode}, {name}: not on the socket as sent"
        );
    } else {
        assert!(got.is_empty(), "{mode}, {name}: passed, yet on the socket");
    }
}

fn frames_go_where_the_program_says(mode: XdpMode) {
    let pair = pair(true);
    // The gateway's kernel answers some frames (ICMP); knowing the client
    // already, it sends no ARP request whose reply would move a counter.
    pair.gateway
        .ip(&[
            "neigh",
            "replace",
            "198.18.70.1",
            "lladdr",
            "02:66:67:00:00:02",
            "dev",
            "g0",
            "nud",
            "permanent",
        ])
        .unwrap();
    let mut filter = attach(&pair.gateway, "g0", mode).unwrap();
    let mut gateway = Socket::open(&pair.gateway, "g0");
    filter.set_socket(0, gateway.port.as_raw_fd()).unwrap();
    filter.update(&owned()).unwrap();
    let local = addr_to_bytes(LOCAL_FOR_CASES.parse().unwrap());
    filter.set_local_addresses(&[local].into()).unwrap();
    let mut client = Socket::open(&pair.client, "c0");

    for (name, frame, expect) in cases() {
        send_and_check(
            name,
            mode,
            &frame,
            expect,
            &mut client,
            &mut gateway,
            &filter,
        );
    }

    // Forward-only mode: every IP frame, owned or not, but not NDP.
    filter.set_redirect_all(true).unwrap();
    let unowned = udp("198.18.70.1:40000", "198.18.70.2:7000").build();
    send_and_check(
        "redirect all: udp",
        mode,
        &unowned,
        |c| c.redirected_all += 1,
        &mut client,
        &mut gateway,
        &filter,
    );
    let icmp = FrameBuilder::icmp_echo_request(
        "198.18.70.1".parse().unwrap(),
        "198.18.70.2".parse().unwrap(),
    )
    .macs(CLIENT_MAC, GATEWAY_MAC)
    .build();
    send_and_check(
        "redirect all: icmp",
        mode,
        &icmp,
        |c| c.redirected_all += 1,
        &mut client,
        &mut gateway,
        &filter,
    );
    let ping6: IpAddr = "2001:2:0:70::1".parse().unwrap();
    let icmp6 = FrameBuilder::icmp_echo_request(ping6, "2001:2:0:70::2".parse().unwrap())
        .macs(CLIENT_MAC, GATEWAY_MAC)
        .build();
    send_and_check(
        "redirect all: icmpv6",
        mode,
        &icmp6,
        |c| c.passed_not_tcp_udp += 1,
        &mut client,
        &mut gateway,
        &filter,
    );
    let arp = FrameBuilder::arp_request(
        CLIENT_MAC,
        "198.18.70.1".parse().unwrap(),
        "198.18.70.2".parse().unwrap(),
    )
    .build();
    send_and_check(
        "redirect all: arp",
        mode,
        &arp,
        |c| c.passed_not_ip += 1,
        &mut client,
        &mut gateway,
        &filter,
    );
    filter.set_redirect_all(false).unwrap();
    send_and_check(
        "redirect all off",
        mode,
        &unowned,
        |c| c.passed_not_owned += 1,
        &mut client,
        &mut gateway,
        &filter,
    );
}

#[test]
fn frames_go_where_the_program_says_in_native_mode() {
    if !testnet::privileged() {
        return;
    }
    frames_go_where_the_program_says(XdpMode::Native);
}

#[test]
fn frames_go_where_the_program_says_in_generic_mode() {
    if !testnet::privileged() {
        return;
    }
    frames_go_where_the_program_says(XdpMode::Generic);
}

/// Whether a TCP connection the gateway box itself opens to `to` (a
/// backend's port in the client namespace, where `backend` listens) is
/// established and carries the backend's answer back to the box.
fn box_reaches(pair: &Pair, backend: &TcpListener, to: SocketAddr, wait: Duration) -> bool {
    let connected = pair
        .gateway
        .enter(move || TcpStream::connect_timeout(&to, wait))
        .unwrap();
    let Ok(mut stream) = connected else {
        return false;
    };
    let mut answering = accept_within(backend).expect("connected, yet never accepted");
    answering.write_all(b"b1").unwrap();
    stream.set_read_timeout(Some(FRAME_WAIT)).unwrap();
    let mut answer = [0u8; 2];
    stream.read_exact(&mut answer).is_ok() && &answer == b"b1"
}

/// Receives on `socket` until `frame` comes or [`FRAME_WAIT`] passes;
/// whether it came.
fn receives(socket: &mut Socket, frame: &[u8]) -> bool {
    let start = Instant::now();
    while start.elapsed() < FRAME_WAIT {
        if socket
            .receive(Duration::from_millis(50))
            .iter()
            .any(|f| f == frame)
        {
            return true;
        }
    }
    false
}

#[test]
fn the_box_reaches_a_backends_port_while_replies_to_clients_still_go_up() {
    if !testnet::privileged() {
        return;
    }
    // The client namespace plays a backend at 198.18.70.1:9090 and
    // [2001:2:0:70::1]:9090, whose replies the gateway owns.
    let pair = pair(false);
    let backend_v4: SocketAddr = "198.18.70.1:9090".parse().unwrap();
    let backend_v6: SocketAddr = "[2001:2:0:70::1]:9090".parse().unwrap();
    let listener_v4 = listen_in(&pair.client, "198.18.70.1:9090");
    let listener_v6 = listen_in(&pair.client, "[2001:2:0:70::1]:9090");
    let owned = OwnedTraffic {
        announced: Default::default(),
        services: [key(ip_proto::TCP, "198.18.100.10:80")].into(),
        reply_sources: [
            key(ip_proto::TCP, "198.18.70.1:9090"),
            key(ip_proto::TCP, "[2001:2:0:70::1]:9090"),
        ]
        .into(),
    };
    let mut filter = attach(&pair.gateway, "g0", XdpMode::Auto).unwrap();
    let mut gateway = Socket::open(&pair.gateway, "g0");
    filter.set_socket(0, gateway.port.as_raw_fd()).unwrap();
    filter.update(&owned).unwrap();

    // Knowing none of the box's addresses, the program takes the
    // backend's SYN-ACK for a reply of the gateway's: the box cannot
    // connect, and the SYN-ACK lands on the AF_XDP socket.
    let before = filter.counters();
    assert!(!box_reaches(&pair, &listener_v4, backend_v4, REFUSED_WAIT));
    let c = filter.counters();
    assert!(c.redirected_reply > before.redirected_reply, "{c:?}");
    assert_eq!(c.passed_local, 0, "{c:?}");

    // The box's own addresses, as the daemon reads them.
    let local: HashSet<[u8; 16]> = pair
        .gateway
        .enter(|| local_addresses().unwrap())
        .unwrap()
        .into_iter()
        .map(|(_, address)| addr_to_bytes(address))
        .collect();
    for own in ["198.18.70.2", "198.18.70.3", "2001:2:0:70::2", "127.0.0.1"] {
        let own = addr_to_bytes(own.parse().unwrap());
        assert!(local.contains(&own), "{own:?} not in {local:?}");
    }
    filter.set_local_addresses(&local).unwrap();
    assert_eq!(filter.local_addresses(), &local);
    // Setting the same set again changes nothing.
    filter.set_local_addresses(&local).unwrap();
    assert_eq!(filter.local_addresses(), &local);

    let before = filter.counters();
    assert!(box_reaches(&pair, &listener_v4, backend_v4, FRAME_WAIT));
    assert!(box_reaches(&pair, &listener_v6, backend_v6, FRAME_WAIT));
    let c = counters_when(&filter, |c| c.passed_local - before.passed_local >= 4);
    // At least the SYN-ACK and the answer, on each connection.
    assert!(c.passed_local - before.passed_local >= 4, "{c:?}");

    // A reply to a client (not one of the box's addresses) still goes up,
    // as sent, and moves the reply counter. SYN-ACKs retransmitted for the
    // connection that failed above now go to the box: they cannot add to
    // it.
    let mut client = Socket::open(&pair.client, "c0");
    for (from, to) in [
        ("198.18.70.1:9090", "198.18.70.50:40000"),
        ("[2001:2:0:70::1]:9090", "[2001:2:0:70::50]:40000"),
    ] {
        let reply = FrameBuilder::tcp(from.parse().unwrap(), to.parse().unwrap(), 0x12)
            .macs(CLIENT_MAC, GATEWAY_MAC)
            .build();
        let before = filter.counters();
        client.send(&reply);
        assert!(receives(&mut gateway, &reply), "{from} -> {to}");
        let c = counters_when(&filter, |c| c.redirected_reply > before.redirected_reply);
        assert_eq!(
            c.redirected_reply - before.redirected_reply,
            1,
            "{from} -> {to}: {c:?}"
        );
        assert_eq!(c.dropped_no_socket, before.dropped_no_socket, "{c:?}");
    }

    // Forgetting the box's IPv4 addresses forgets only them: IPv4 is
    // taken again, IPv6 still reaches the backend.
    let v6_only: HashSet<[u8; 16]> = local
        .iter()
        .copied()
        .filter(|a| !a.starts_with(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]))
        .collect();
    assert!(v6_only.len() < local.len() && !v6_only.is_empty());
    filter.set_local_addresses(&v6_only).unwrap();
    assert_eq!(filter.local_addresses(), &v6_only);
    assert!(!box_reaches(&pair, &listener_v4, backend_v4, REFUSED_WAIT));
    assert!(box_reaches(&pair, &listener_v6, backend_v6, FRAME_WAIT));
}

#[test]
fn a_program_left_by_someone_else_is_replaced_and_ours_leaves_nothing() {
    if !testnet::privileged() {
        return;
    }
    let object = std::env::temp_dir().join(format!("flowgate-xdp-test-{}.o", std::process::id()));
    std::fs::write(&object, program_object()).unwrap();
    let object_path = object.to_str().unwrap();
    // Attached through netlink, as a crashed netlink loader or libxdp's
    // dispatcher would leave it: in generic mode, then in native mode.
    for (stale_mode, ours) in [
        ("xdpgeneric", XdpMode::Native),
        ("xdpdrv", XdpMode::Generic),
    ] {
        let pair = pair(false);
        pair.gateway
            .ip(&[
                "link",
                "set",
                "dev",
                "g0",
                stale_mode,
                "obj",
                object_path,
                "sec",
                "xdp",
            ])
            .unwrap();
        let stale = pair.gateway.enter(|| link_info("g0")).unwrap().unwrap().xdp;
        let stale_id = stale.generic.or(stale.native).unwrap();

        let filter = attach(&pair.gateway, "g0", ours).unwrap();
        assert_eq!(filter.mode(), ours);
        let now = pair.gateway.enter(|| link_info("g0")).unwrap().unwrap().xdp;
        let ours_id = match ours {
            XdpMode::Native => {
                assert_eq!(now.generic, None, "{stale_mode}: {now:?}");
                now.native
            }
            _ => {
                assert_eq!(now.native, None, "{stale_mode}: {now:?}");
                now.generic
            }
        };
        assert!(
            ours_id.is_some_and(|id| id != stale_id),
            "{stale_mode}: {now:?}"
        );
        assert!(ping(&pair, "198.18.70.2"));
        drop(filter);
        no_xdp_left(&pair);
    }
    std::fs::remove_file(&object).unwrap();
}

#[test]
fn a_live_filter_is_not_pulled_from_under_its_owner() {
    if !testnet::privileged() {
        return;
    }
    let pair = pair(false);
    let first = attach(&pair.gateway, "g0", XdpMode::Native).unwrap();
    let id = pair
        .gateway
        .enter(|| link_info("g0"))
        .unwrap()
        .unwrap()
        .xdp
        .native
        .unwrap();
    match attach(&pair.gateway, "g0", XdpMode::Auto) {
        Err(XdpError::Busy { interface, program }) => {
            assert_eq!((interface.as_str(), program), ("g0", id));
        }
        other => panic!("second filter on g0: {other:?}"),
    }
    // Its owner still has it.
    assert_eq!(
        pair.gateway
            .enter(|| link_info("g0"))
            .unwrap()
            .unwrap()
            .xdp
            .native,
        Some(id)
    );
    first.detach().unwrap();
    no_xdp_left(&pair);
    let second = attach(&pair.gateway, "g0", XdpMode::Auto).unwrap();
    assert_eq!(second.mode(), XdpMode::Native);
}

#[test]
fn attaching_to_a_missing_interface_says_so() {
    if !testnet::privileged() {
        return;
    }
    let ns = NetNs::new("fgxm").unwrap();
    match attach(&ns, "nonexistent0", XdpMode::Auto) {
        Err(e @ XdpError::NoSuchInterface(_)) => {
            assert_eq!(e.to_string(), "no such network interface: nonexistent0")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn auto_falls_back_to_generic_where_the_driver_has_no_xdp() {
    if !testnet::privileged() {
        return;
    }
    // The loopback: no native XDP in its driver.
    let ns = NetNs::new("fgxd").unwrap();
    match attach(&ns, "lo", XdpMode::Native) {
        Err(e @ XdpError::Unsupported(_)) => assert!(e.to_string().contains("native"), "{e}"),
        other => panic!("native XDP on the loopback: {other:?}"),
    }
    let filter = attach(&ns, "lo", XdpMode::Auto).unwrap();
    assert_eq!(filter.mode(), XdpMode::Generic);
    let xdp = ns.enter(|| link_info("lo")).unwrap().unwrap().xdp;
    assert!(xdp.generic.is_some() && xdp.native.is_none(), "{xdp:?}");
    drop(filter);
    let xdp = xdp_after_detach(&ns, "lo");
    assert!(xdp.is_empty(), "{xdp:?}");
    assert!(ns
        .exec("ping", &["-c", "1", "-W", "2", "127.0.0.1"])
        .is_ok());
}

/// `n` TCP service keys on 198.18.70.2 and .3 (ports from `first`), and
/// `m` UDP reply sources at 198.18.70.1.
fn keys(first: u16, n: u16, m: u16) -> OwnedTraffic {
    OwnedTraffic {
        announced: Default::default(),
        services: (0..n)
            .map(|i| {
                let vip = if i % 2 == 0 {
                    "198.18.70.2"
                } else {
                    "198.18.70.3"
                };
                key(ip_proto::TCP, &format!("{vip}:{}", first + i))
            })
            .collect(),
        reply_sources: (0..m)
            .map(|i| key(ip_proto::UDP, &format!("198.18.70.1:{}", 9000 + i)))
            .collect(),
    }
}

#[test]
fn a_map_holds_exactly_its_size_and_a_refused_key_takes_its_change_back() {
    if !testnet::privileged() {
        return;
    }
    let pair = pair(true);
    let small = XdpCapacity {
        service_keys: 4,
        reply_sources: 3,
        vip_addresses: 2,
        ..XdpCapacity::PROGRAM
    };
    for wrong in [
        XdpCapacity {
            service_keys: 0,
            ..small
        },
        XdpCapacity {
            reply_sources: XdpCapacity::PROGRAM.reply_sources + 1,
            ..small
        },
    ] {
        let e = pair
            .gateway
            .enter(move || XdpFilter::attach_with_capacity("g0", XdpMode::Generic, wrong))
            .unwrap()
            .unwrap_err();
        assert!(e.to_string().contains("keys: from 1 to "), "{e}");
    }
    let mut filter = pair
        .gateway
        .enter(move || XdpFilter::attach_with_capacity("g0", XdpMode::Generic, small))
        .unwrap()
        .unwrap();
    assert_eq!(filter.capacity(), small);
    let in_kernel = |filter: &XdpFilter| {
        let own = filter.read_maps().unwrap();
        // Read through the interface too, as for another process's program.
        let attached = pair
            .gateway
            .enter(|| read_attached_maps("g0"))
            .unwrap()
            .unwrap();
        assert_eq!(own, attached);
        own
    };

    // Every map full to its size: the kernel takes it.
    let full = keys(8000, 4, 3);
    filter.update(&full).unwrap();
    assert!(in_kernel(&filter).hold_exactly(&full));
    // One key more in any map: refused, and the maps hold what they held.
    for more in [keys(8000, 5, 3), keys(8000, 4, 4)] {
        let e = filter.widen(&more).unwrap_err();
        assert!(e.to_string().ends_with("the map is full (E2BIG)"), "{e}");
        assert!(in_kernel(&filter).hold_exactly(&full));
        assert_eq!(filter.owned(), full);
    }

    // Two free slots, three new keys: the third is refused, and the two
    // added before it are taken out again.
    let half = keys(8000, 2, 1);
    filter.update(&half).unwrap();
    assert!(in_kernel(&filter).hold_exactly(&half));
    let wider = keys(8000, 5, 1);
    let e = filter.widen(&wider).unwrap_err();
    assert!(
        e.to_string().starts_with("adding tcp 198.18.70.")
            && e.to_string().contains("to map services"),
        "{e}"
    );
    assert!(in_kernel(&filter).hold_exactly(&half));
    assert!(filter.drift(&half).is_exact());

    // Widen, then undo: as before; widen, then narrow: the new keys only.
    let other = keys(8100, 2, 2);
    let widening = filter.widen(&other).unwrap();
    assert_eq!(widening.len(), 2 + 1);
    let both = in_kernel(&filter);
    assert_eq!(both.services.len(), 4);
    // Beyond `other`'s keys: `half`'s two services (its reply source is
    // one of `other`'s).
    assert_eq!(filter.drift(&other).extra, 2);
    filter.undo(&widening).unwrap();
    assert!(in_kernel(&filter).hold_exactly(&half));
    let _kept = filter.widen(&other).unwrap();
    filter.narrow(&other).unwrap();
    assert!(in_kernel(&filter).hold_exactly(&other));
}
