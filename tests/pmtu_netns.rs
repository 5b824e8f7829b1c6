//! Path-MTU discovery through the gateway, in namespaces with the real
//! `flowgate` binary:
//!
//! ```text
//! client ══ gateway (flowgate) ══ router ══(MTU 1280)══ backend
//! ```
//!
//! The backend sits behind a router whose link towards it has an MTU of
//! 1280. The client sends a 1400-byte UDP datagram, don't-fragment, to the
//! VIP; the gateway forwards it to the backend through the router, which
//! cannot send it on and answers the client — from its own address, about
//! a packet to the backend — with "fragmentation needed" (IPv6: "packet
//! too big"), MTU 1280. The gateway translates the error into one about
//! the packet to the VIP, and the client's kernel learns the path MTU to
//! the VIP: `ip route get VIP` shows `mtu 1280`, and the socket's `IP_MTU`
//! says 1280. Untranslated, the error would quote a packet to the backend,
//! which the client never sent (it has no route to it): its kernel would
//! match it to no socket and route and learn nothing.

mod echo_gateway;

use std::time::{Duration, Instant};

use echo_gateway::{Daemon, Scratch};
use flowgate_dataplane::testnet::{self, NetNs};

const TAG: &str = "pmtu";
const GW_CLIENT_MAC: &str = "02:66:67:00:70:01";
const GW_BACKEND_MAC: &str = "02:66:67:00:71:01";
const ROUTER_MAC: &str = "02:66:67:00:71:02";
const PORT: u16 = 7009;

/// One family's addresses: the client, the gateway's client and backend
/// sides, the router's sides towards the gateway and the backend, the
/// backend, the VIP; the client's network, the VIPs' and the prefix
/// length of every link.
struct Plan {
    client: &'static str,
    gw_client: &'static str,
    gw_backend: &'static str,
    router_a: &'static str,
    router_b: &'static str,
    backend: &'static str,
    vip: &'static str,
    client_net: &'static str,
    vips: &'static str,
    len: &'static str,
}

const V4: Plan = Plan {
    client: "198.18.70.2",
    gw_client: "198.18.70.1",
    gw_backend: "198.18.71.1",
    router_a: "198.18.71.2",
    router_b: "198.18.72.1",
    backend: "198.18.72.11",
    vip: "198.18.170.10",
    client_net: "198.18.70.0/24",
    vips: "198.18.170.0/24",
    len: "24",
};

const V6: Plan = Plan {
    client: "2001:2:70::2",
    gw_client: "2001:2:70::1",
    gw_backend: "2001:2:71::1",
    router_a: "2001:2:71::2",
    router_b: "2001:2:72::1",
    backend: "2001:2:72::11",
    vip: "2001:2:170::10",
    client_net: "2001:2:70::/64",
    vips: "2001:2:170::/64",
    len: "64",
};

/// The namespaces (deleted on drop, also when the test fails).
struct Topology {
    client: NetNs,
    gateway: NetNs,
    router: NetNs,
    _backend: NetNs,
}

fn topology() -> Topology {
    let client = NetNs::new(TAG).unwrap();
    let gateway = NetNs::new(TAG).unwrap();
    let router = NetNs::new(TAG).unwrap();
    let backend = NetNs::new(TAG).unwrap();
    let (gw_c, gw_b) = (format!("{TAG}-c"), format!("{TAG}-b"));
    testnet::veth_pair(&gateway, &gw_c, &client, "eth0", 1).unwrap();
    testnet::veth_pair(&gateway, &gw_b, &router, "ra", 1).unwrap();
    testnet::veth_pair(&router, "rb", &backend, "eth0", 1).unwrap();
    gateway
        .ip(&["link", "set", &gw_c, "address", GW_CLIENT_MAC])
        .unwrap();
    gateway
        .ip(&["link", "set", &gw_b, "address", GW_BACKEND_MAC])
        .unwrap();
    router
        .ip(&["link", "set", "ra", "address", ROUTER_MAC])
        .unwrap();
    // The small link: the router's side and the backend's.
    router.ip(&["link", "set", "rb", "mtu", "1280"]).unwrap();
    backend.ip(&["link", "set", "eth0", "mtu", "1280"]).unwrap();
    for p in [&V4, &V6] {
        let with_len = |a: &str| format!("{a}/{}", p.len);
        let add = |ns: &NetNs, a: &str, dev: &str| {
            ns.ip(&["addr", "add", &with_len(a), "dev", dev, "nodad"])
                .or_else(|_| ns.ip(&["addr", "add", &with_len(a), "dev", dev]))
                .unwrap();
        };
        add(&client, p.client, "eth0");
        add(&gateway, p.gw_client, &gw_c);
        add(&gateway, p.gw_backend, &gw_b);
        add(&router, p.router_a, "ra");
        add(&router, p.router_b, "rb");
        add(&backend, p.backend, "eth0");
        client
            .ip(&["route", "add", p.vips, "via", p.gw_client])
            .unwrap();
        // The router reaches clients through the gateway, and the backend
        // answers through the router.
        router
            .ip(&["route", "add", p.client_net, "via", p.gw_backend])
            .unwrap();
        backend
            .ip(&["route", "add", "default", "via", p.router_b])
            .unwrap();
    }
    for (key, value) in [
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv6.conf.all.forwarding", "1"),
    ] {
        router
            .exec("sysctl", &["-qw", &format!("{key}={value}")])
            .unwrap();
    }
    // Local senders' veth frames carry partial checksums; have the kernel
    // fill them, as a wire would.
    for (ns, dev) in [(&client, "eth0"), (&router, "ra"), (&router, "rb")] {
        ns.exec("ethtool", &["-K", dev, "tx", "off"]).unwrap();
    }
    Topology {
        client,
        gateway,
        router,
        _backend: backend,
    }
}

fn config(scratch: &Scratch) -> String {
    let mut text = format!(
        r#"
[daemon]
cores = [0]
frame_count = 4096
rx_ring_size = 512
tx_ring_size = 512
fill_ring_size = 1024
completion_ring_size = 1024
control_socket = "{socket}"

[flows]
capacity = 4096

[[interfaces]]
name = "{TAG}-c"
mac = "{GW_CLIENT_MAC}"

[[interfaces]]
name = "{TAG}-b"
mac = "{GW_BACKEND_MAC}"
"#,
        socket = scratch.path("control.sock").display(),
    );
    for (name, p) in [("pmtu4", &V4), ("pmtu6", &V6)] {
        // The backend is routed: its next hop is the router.
        text += &format!(
            r#"
[[neighbours]]
address = "{backend}"
mac = "{ROUTER_MAC}"
interface = "{TAG}-b"

[[services]]
name = "{name}"
protocol = "udp"
vip = "{vip}"
port = {PORT}
[[services.backends]]
address = "{backend}"
port = {PORT}
"#,
            backend = p.backend,
            vip = p.vip,
        );
    }
    text
}

/// Sends don't-fragment 1400-byte datagrams to the VIP from a connected
/// socket in the client's namespace, every 200 ms for at most 10 s, until
/// the socket's path MTU drops below 1400; prints the last one it read.
const SENDER: &str = r#"
import socket, sys, time
family, vip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if family == "4":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO
    mtu_opt = (socket.IPPROTO_IP, 14)       # IP_MTU
else:
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, 23, 2)  # IPV6_MTU_DISCOVER = IPV6_PMTUDISC_DO
    mtu_opt = (socket.IPPROTO_IPV6, 24)       # IPV6_MTU
s.connect((vip, port))
mtu = 0
deadline = time.time() + 10
while time.time() < deadline:
    try:
        s.send(b"x" * 1400)
    except OSError:
        pass  # EMSGSIZE once the path MTU is known
    time.sleep(0.2)
    mtu = s.getsockopt(*mtu_opt)
    if mtu < 1400:
        break
print(mtu)
"#;

/// The path MTU the client's socket learned for the VIP of `p`.
fn learned_mtu(t: &Topology, family: &str, p: &Plan) -> String {
    let out = t
        .client
        .exec("python3", &["-c", SENDER, family, p.vip, &PORT.to_string()])
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// What `ip route get ADDRESS` says in the client's namespace.
fn route_get(t: &Topology, address: &str) -> String {
    let out = t.client.ip(&["route", "get", address]).unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_small_mtu_behind_the_gateway_reaches_the_client_as_the_vips_path_mtu() {
    if !testnet::privileged() {
        return;
    }
    let t = topology();
    let scratch = Scratch::new(TAG);
    let path = scratch.path("flowgate.toml");
    std::fs::write(&path, config(&scratch)).unwrap();
    let daemon = Daemon::start(&t.gateway, &path, scratch.path("flowgate.log"));
    // The daemon attaches within a few seconds; the sender retries.
    let started = Instant::now();
    while !daemon_attached(&t) && started.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        daemon_attached(&t),
        "flowgate did not attach:\n{}",
        daemon.log()
    );

    for (family, p) in [("4", &V4), ("6", &V6)] {
        let mtu = learned_mtu(&t, family, p);
        let route = route_get(&t, p.vip);
        let router_said = t.router.exec("nstat", &["-az"]).map_or_else(
            |e| e.to_string(),
            |o| String::from_utf8_lossy(&o.stdout).into_owned(),
        );
        assert_eq!(
            mtu,
            "1280",
            "IPv{family}: the client's socket did not learn the path MTU to the VIP\n\
             route: {route}\nrouter counters:\n{}\nflowgate:\n{}",
            router_said
                .lines()
                .filter(|l| l.contains("Icmp") && l.contains("Out"))
                .collect::<Vec<_>>()
                .join("\n"),
            daemon.log()
        );
        assert!(
            route.contains("mtu 1280"),
            "IPv{family}: `ip route get {}` shows no learned mtu: {route}",
            p.vip
        );
    }
}

/// Whether flowgate's XDP program is on the gateway's interfaces.
fn daemon_attached(t: &Topology) -> bool {
    let out = t.gateway.ip(&["link", "show"]).unwrap();
    String::from_utf8_lossy(&out.stdout)
        .matches("prog/xdp")
        .count()
        >= 2
}
