//! Distribution paths on the real gateway: the `flowgate` binary on real
//! AF_XDP sockets in the demo's namespaces (tests/netns/). A path in the
//! config sends the client's new connections straight to one backend; a
//! change through the control API that removes it gives them back to the
//! scheduler, `explain` shows the path stage while it is there, and a path
//! added by an edit steers the next connections.
//!
//! SETs and zones on the real gateway: two client namespaces behind the
//! topology's client (its router), one in SET `shop.sh.g1` and zone
//! dc-a, the other in `shop.sh.g2` and dc-b, reach the same VIP and land
//! on their own backends; when dc-a's backends stop, the first client
//! falls back through the zone priority in order, and neither client ever
//! reaches the other SET's backends.
//!
//! Run as root; FLOWGATE_SKIP_NETNS=1 skips elsewhere. Needs the binaries
//! built first (scripts/test.sh does it).

mod health_support;
mod netns;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use flowgate_dataplane::testnet::{self, NetNs};
use health_support::{state, within};

use flowgate_api::{
    ApplyConfig, Batch, ControlClient, Edit, ExplainQuery, PathSpec, Reply, Request,
};
use netns::*;

/// Time allowed for one batch of requests; far more than they need.
const BUDGET: Duration = Duration::from_secs(60);

/// The topology's rules with, if `path`, web's clients at 198.18.0.2
/// (the client namespace) sent to its second backend.
fn rules(topo: &Topology, path: bool) -> String {
    let config = topo.config(&[0]);
    if !path {
        return config;
    }
    // Before web-wrr's header: the path is the service above's, web's.
    let at = config.find("[[services]]\nname = \"web-wrr\"").unwrap();
    format!(
        "{}[[services.paths]]\nclient = \"198.18.0.2\"\nbackends = [\"198.18.1.12:8080\"]\n\n{}",
        &config[..at],
        &config[at..]
    )
}

fn explain(client: &mut ControlClient) -> flowgate_api::ExplainReply {
    let query = ExplainQuery {
        from: "198.18.0.2:40000".into(),
        to: "198.18.100.10:80".into(),
        protocol: None,
    };
    match client.call(Request::Explain(query)).unwrap() {
        Reply::Explain(reply) => reply,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_path_in_the_config_steers_live_connections_until_a_change_removes_it() {
    if !privileged() {
        return;
    }
    let _one = one_gateway_at_a_time();
    let topo = Topology::new(1);
    let mut gw = topo.start_gateway(&rules(&topo, true));
    let web = SocketAddr::new(WEB_VIP.into(), 80);
    let socket = topo.scratch.path("control.sock");
    let mut client = ControlClient::connect(&socket).unwrap();

    let load = http_load(&topo.client, web, 200, 4, BUDGET);
    assert_eq!(load.answered(), 200, "{:?}\n{}", load.failures, gw.log());
    let only_b2: Vec<_> = load.by_backend.keys().cloned().collect();
    assert_eq!(only_b2, ["b2"], "every connection on the path's backend");
    let reply = explain(&mut client);
    let path = reply.path.as_ref().expect("explain shows the path");
    assert_eq!(path.chosen.as_deref(), Some("198.18.1.12:8080"));

    // The same rules without the path, through the control API.
    let apply = ApplyConfig {
        config: rules(&topo, false),
        origin: Some("no-path.toml".into()),
        dry_run: false,
    };
    match client.call(Request::Apply(apply)).unwrap() {
        Reply::Changed(report) => assert!(report.applied, "{report:?}"),
        other => panic!("{other:?}"),
    }
    let load = http_load(&topo.client, web, 200, 4, BUDGET);
    assert_eq!(load.answered(), 200, "{:?}\n{}", load.failures, gw.log());
    assert_spread("web", &load.by_backend, &[("b1", 1), ("b2", 1), ("b3", 2)]);
    assert_eq!(explain(&mut client).path, None);

    // One path added through the API: the next connections follow it.
    let add = Edit::PathAdd(PathSpec {
        service: "web".into(),
        client: "198.18.0.2".into(),
        backends: vec!["198.18.1.13:8080".into()],
    });
    let batch = Batch {
        edits: vec![add],
        dry_run: false,
    };
    match client.call(Request::Batch(batch)).unwrap() {
        Reply::Changed(report) => assert!(report.applied, "{report:?}"),
        other => panic!("{other:?}"),
    }
    let load = http_load(&topo.client, web, 100, 4, BUDGET);
    assert_eq!(load.answered(), 100, "{:?}\n{}", load.failures, gw.log());
    let only_b3: Vec<_> = load.by_backend.keys().cloned().collect();
    assert_eq!(
        only_b3,
        ["b3"],
        "every connection on the added path's backend"
    );

    gw.assert_running();
    gw.stop();
}

/// Client A: SET shop.sh.g1, zone dc-a.
const CLIENT_A: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
/// Client B: SET shop.sh.g2, zone dc-b.
const CLIENT_B: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 2);
/// Health checks of `web`: a stopped backend is down within
/// fall × interval plus a probe's timeout.
const INTERVAL_MS: u64 = 200;
const FALL: u64 = 2;

/// The topology's rules with `web` routed by client: its backends are
/// every backend host on both HTTP ports, the host giving the zone (b1
/// dc-a, b2 dc-b, b3 dc-c) and the port the SET (8080 shop.sh.g1, 8081
/// shop.sh.g2), checked over TCP; clients of 198.18.2.0/24 are g1 in
/// dc-a, of 198.18.3.0/24 g2 in dc-b; zones fall back dc-c, then dc-b.
fn set_zone_rules(topo: &Topology) -> String {
    let config = topo.config(&[0]);
    let start = config.find("[[services]]\nname = \"web\"\n").unwrap();
    let end = config.find("[[services]]\nname = \"web-wrr\"").unwrap();
    let mut web = String::from(
        "[[services]]\nname = \"web\"\nprotocol = \"tcp\"\nvip = \"198.18.100.10\"\nport = 80\n\
         scheduler = \"maglev\"\n\n[services.health]\nkind = \"tcp\"\n",
    );
    for (b, zone) in [(1, "dc-a"), (2, "dc-b"), (3, "dc-c")] {
        for (port, set) in [(8080, "shop.sh.g1"), (8081, "shop.sh.g2")] {
            web += &format!(
                "\n[[services.backends]]\naddress = \"{}\"\nport = {port}\nzone = \"{zone}\"\nset = \"{set}\"\n",
                backend_v4(b)
            );
        }
    }
    format!(
        "{}{web}\n{}\n[health]\nkind = \"none\"\ninterval = \"{INTERVAL_MS}ms\"\ntimeout = \"100ms\"\n\
         rise = 2\nfall = {FALL}\n\n[routing]\nzone_priority = [\"dc-c\", \"dc-b\"]\n\n\
         [[routing.classes]]\nprefix = \"198.18.2.0/24\"\nset = \"shop.sh.g1\"\nzone = \"dc-a\"\n\n\
         [[routing.classes]]\nprefix = \"198.18.3.0/24\"\nset = \"shop.sh.g2\"\nzone = \"dc-b\"\n",
        &config[..start],
        &config[end..]
    )
}

/// A client namespace behind the topology's client, which routes for it:
/// `address`/24 on its `eth0`, the router at .1 of that /24 on the
/// client's `link`. Offloads off, as the topology's own client has them,
/// so that the gateway gets whole frames with full checksums.
fn client_behind(topo: &Topology, link: &str, address: Ipv4Addr) -> NetNs {
    let ns = NetNs::new("fgr").unwrap();
    testnet::veth_pair(&topo.client, link, &ns, "eth0", 1).unwrap();
    let [a, b, c, _] = address.octets();
    let router = Ipv4Addr::new(a, b, c, 1);
    topo.client
        .ip(&["addr", "add", &format!("{router}/24"), "dev", link])
        .unwrap();
    ns.ip(&["addr", "add", &format!("{address}/24"), "dev", "eth0"])
        .unwrap();
    ns.ip(&["route", "add", "default", "via", &router.to_string()])
        .unwrap();
    for (side, dev) in [(&topo.client, link), (&ns, "eth0")] {
        side.exec(
            "ethtool",
            &["-K", dev, "tx", "off", "tso", "off", "gso", "off"],
        )
        .unwrap();
    }
    let reached = (0..3).any(|_| ping(&ns, "198.18.0.2"));
    assert!(reached, "{address} cannot reach its router");
    ns
}

/// Stops backend host `b`'s HTTP servers as a dead server's kernel does:
/// an nftables rule in its namespace answers every SYN to 8080 and 8081
/// with a RST. The table goes with the namespace.
fn stop_backend(topo: &Topology, b: u8) {
    let ns = &topo.backends[usize::from(b - 1)];
    ns.exec("nft", &["add", "table", "inet", "fgstop"]).unwrap();
    ns.exec(
        "nft",
        &[
            "add",
            "chain",
            "inet",
            "fgstop",
            "input",
            "{ type filter hook input priority 0 ; policy accept ; }",
        ],
    )
    .unwrap();
    ns.exec(
        "nft",
        &[
            "add",
            "rule",
            "inet",
            "fgstop",
            "input",
            "tcp",
            "dport",
            "{ 8080, 8081 }",
            "reject",
            "with",
            "tcp",
            "reset",
        ],
    )
    .unwrap();
}

/// Waits (bounded) until `web`'s backend `b` on both ports is `wanted`
/// by the daemon's checks.
fn await_state(client: &mut ControlClient, b: u8, wanted: &str) {
    let limit = Duration::from_millis(FALL * INTERVAL_MS + 2_000);
    let reached = within(limit, || {
        [8080, 8081]
            .iter()
            .all(|&port| state(client, "web", b, port).0 == wanted)
    });
    assert!(
        reached.is_some(),
        "b{b} not {wanted} within {limit:?}: {:?} {:?}",
        state(client, "web", b, 8080),
        state(client, "web", b, 8081)
    );
}

/// `count` requests from `ns` to web, every one answered; the backends
/// (host, port) that served them, as the backends recorded them.
fn served_from(
    topo: &Topology,
    gw: &netns::Gateway,
    ns: &NetNs,
    address: Ipv4Addr,
) -> BTreeSet<(u8, u16)> {
    let web = SocketAddr::new(WEB_VIP.into(), 80);
    let count = 40;
    let load = http_load(ns, web, count, 2, BUDGET);
    assert_eq!(
        load.answered(),
        count,
        "from {address}: {:?}\n{}",
        load.failures,
        gw.log()
    );
    let served: Vec<(u8, u16)> = topo
        .served()
        .into_iter()
        .filter(|s| s.proto == Proto::Tcp && s.peer.ip() == IpAddr::V4(address))
        .map(|s| (s.backend, s.port))
        .collect();
    assert_eq!(served.len(), count, "every request recorded by a backend");
    served.into_iter().collect()
}

#[test]
fn two_sets_in_two_zones_land_on_their_own_backends_and_a_stopped_zone_falls_back_in_order() {
    if !privileged() {
        return;
    }
    let _one = one_gateway_at_a_time();
    let topo = Topology::new(1);
    topo.client
        .exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    let a = client_behind(&topo, "ca", CLIENT_A);
    let b = client_behind(&topo, "cb", CLIENT_B);
    let mut gw = topo.start_gateway(&set_zone_rules(&topo));
    let socket = topo.scratch.path("control.sock");
    let mut client = ControlClient::connect(&socket).unwrap();
    for host in 1..=3 {
        await_state(&mut client, host, "up");
    }

    // Their own SET in their own zone: b1:8080 (g1, dc-a), b2:8081 (g2, dc-b).
    topo.clear_served();
    assert_eq!(
        served_from(&topo, &gw, &a, CLIENT_A),
        BTreeSet::from([(1, 8080)])
    );
    assert_eq!(
        served_from(&topo, &gw, &b, CLIENT_B),
        BTreeSet::from([(2, 8081)])
    );

    // dc-a's backends stop: A falls back to the priority's first zone,
    // dc-c (b3), in its own SET; B stays where it was.
    stop_backend(&topo, 1);
    await_state(&mut client, 1, "down");
    topo.clear_served();
    assert_eq!(
        served_from(&topo, &gw, &a, CLIENT_A),
        BTreeSet::from([(3, 8080)]),
        "dc-a down: dc-c next"
    );
    assert_eq!(
        served_from(&topo, &gw, &b, CLIENT_B),
        BTreeSet::from([(2, 8081)])
    );

    // dc-c stops too: the next zone of the priority, dc-b, still in g1.
    stop_backend(&topo, 3);
    await_state(&mut client, 3, "down");
    topo.clear_served();
    assert_eq!(
        served_from(&topo, &gw, &a, CLIENT_A),
        BTreeSet::from([(2, 8080)]),
        "dc-a and dc-c down: dc-b next"
    );
    assert_eq!(
        served_from(&topo, &gw, &b, CLIENT_B),
        BTreeSet::from([(2, 8081)]),
        "B never leaves g2, though g1's b2:8080 is alive beside it"
    );

    gw.assert_running();
    gw.stop();
    drop((a, b));
}
