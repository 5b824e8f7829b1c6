//! Routing by client through the in-memory pipeline, policy by policy:
//! SET isolation (own SET, area, no SET, failing closed), zone groups with
//! their fallback order, gated launch (share, client prefixes, raising the
//! share), and their combination; each new flow decided once, established
//! flows left where they are.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};

use common::*;
use flowgate_dataplane::pipeline::{DropReason, Verdict};
use flowgate_dataplane::table::{EndpointId, Snapshot};
use flowgate_dataplane::wire::builder::FrameBuilder;
use flowgate_dataplane::wire::{self, addr_to_bytes, tcp_flags};

const SYN: u8 = tcp_flags::SYN;
const ACK: u8 = tcp_flags::ACK;

/// A backend: host part of 198.18.1.x and its labels as TOML lines.
struct B(u8, &'static str);

/// Rules with one service `svc` (198.18.100.10:80, maglev) over `backends`,
/// and `routing` (the `[routing]` tables) and `service_keys` (more keys
/// of the service, e.g. its canary) added.
fn rules(routing: &str, service_keys: &str, backends: &[B]) -> String {
    let mut s = String::from(
        "[[interfaces]]\nname = \"c\"\nmac = \"02:66:67:00:00:01\"\n\
         [[interfaces]]\nname = \"b\"\nmac = \"02:66:67:00:01:01\"\n",
    );
    for b in backends {
        s += &format!(
            "[[neighbours]]\naddress = \"198.18.1.{}\"\nmac = \"02:66:67:00:01:{:02x}\"\ninterface = \"b\"\n",
            b.0, b.0
        );
    }
    s += routing;
    s += "\n[[services]]\nname = \"svc\"\nprotocol = \"tcp\"\nvip = \"198.18.100.10\"\nport = 80\n\
          maglev_table_size = 1009\n";
    s += service_keys;
    for b in backends {
        s += &format!(
            "\n[[services.backends]]\naddress = \"198.18.1.{}\"\nport = 8080\n{}\n",
            b.0, b.1
        );
    }
    s
}

/// A TCP segment from `client`:`port` to the VIP.
fn packet(client: &str, port: u16, flags: u8) -> Vec<u8> {
    let src = SocketAddr::new(client.parse().unwrap(), port);
    from_client(FrameBuilder::tcp(src, sa("198.18.100.10:80"), flags)).build()
}

/// The host part of the backend a forwarded frame goes to.
fn host(frame: &[u8]) -> u8 {
    let meta = wire::parse(frame).unwrap();
    match meta.tuple.dst_ip() {
        IpAddr::V4(a) => a.octets()[3],
        IpAddr::V6(_) => panic!("IPv6 destination"),
    }
}

/// Where a new flow of `client`:`port` goes: the backend's host part, or
/// the drop reason.
fn place(h: &mut Harness, client: &str, port: u16, now: u64) -> Result<u8, DropReason> {
    match h.run(&packet(client, port, SYN), 0, now) {
        (Verdict::Transmit(_), out) => Ok(host(&out)),
        (Verdict::Drop(reason), _) => Err(reason),
        (other, _) => panic!("unexpected verdict {other:?}"),
    }
}

/// The next unused client port: each call of [`hosts`] makes new flows.
fn fresh_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(20_000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The hosts `n` new flows of `client` land on, sorted and deduplicated.
fn hosts(h: &mut Harness, client: &str, n: u16, now: u64) -> Vec<u8> {
    let mut seen: Vec<u8> = (0..n)
        .map(|_| place(h, client, fresh_port(), now).expect("placed"))
        .collect();
    seen.sort_unstable();
    seen.dedup();
    seen
}

/// The endpoint id of the backend at 198.18.1.`host`.
fn endpoint(s: &Snapshot, host: u8) -> EndpointId {
    let want = addr_to_bytes(IpAddr::from([198, 18, 1, host]));
    let (_, svc) = s.services().next().unwrap();
    *svc.endpoints()
        .iter()
        .find(|&&e| s.endpoint(e).unwrap().address == want)
        .unwrap()
}

fn set_up(h: &Harness, host: u8, up: bool) {
    h.snapshot
        .liveness()
        .set_up(endpoint(&h.snapshot, host), up)
        .unwrap();
}

const SET_CLASSES: &str = r#"
[[routing.classes]]
prefix = "198.18.10.0/24"
set = "shop.sh.g1"
[[routing.classes]]
prefix = "198.18.11.0/24"
set = "shop.sh.g9"
[[routing.classes]]
prefix = "198.18.12.0/24"
set = "shop.sh.*"
[[routing.classes]]
prefix = "198.18.13.0/24"
set = "bank.bj.g1"
"#;

fn set_backends() -> Vec<B> {
    vec![
        B(11, "set = \"shop.sh.g1\""),
        B(12, "set = \"shop.sh.g1\""),
        B(13, "set = \"shop.sh.g2\""),
        B(14, "set = \"shop.sh.*\""),
        B(15, ""),
        B(16, "set = \"pay.gz.g1\""),
    ]
}

#[test]
fn set_clients_stay_in_their_set_then_area_then_no_set() {
    let mut h = Harness::new(&rules(SET_CLASSES, "", &set_backends()));
    assert_eq!(hosts(&mut h, "198.18.10.5", 64, 1), [11, 12], "own SET");
    assert_eq!(
        hosts(&mut h, "198.18.11.5", 32, 1),
        [14],
        "no g9: the area's *"
    );
    assert_eq!(
        hosts(&mut h, "198.18.12.5", 96, 1),
        [11, 12, 13, 14],
        "an area-wide client: every group of its area"
    );
    assert_eq!(
        hosts(&mut h, "198.18.13.5", 32, 1),
        [15],
        "other area: no SET"
    );
    assert_eq!(
        hosts(&mut h, "198.18.99.5", 200, 1),
        [11, 12, 13, 14, 15, 16],
        "no class: every backend"
    );
    let c = h.pipeline.route_counters().snapshot();
    assert_eq!(c.set_flows, 64 + 32 + 96 + 32);
    assert_eq!(c.set_closed, 0);
}

#[test]
fn a_set_whose_backends_are_all_down_fails_closed_and_never_leaves() {
    let mut h = Harness::new(&rules(SET_CLASSES, "", &set_backends()));
    set_up(&h, 11, false);
    assert_eq!(hosts(&mut h, "198.18.10.5", 32, 1), [12], "the alive one");
    set_up(&h, 12, false);
    for port in 0..32 {
        assert_eq!(
            place(&mut h, "198.18.10.5", 30_000 + port, 1),
            Err(DropReason::AllBackendsDown),
            "no other SET's backend, however many are up"
        );
    }
    assert_eq!(h.pipeline.route_counters().snapshot().set_closed, 32);
    // After a rebuild (the tables leave the dead out) the same.
    let config = config(&rules(SET_CLASSES, "", &set_backends()));
    let next = Snapshot::build(&config, Some(&h.snapshot));
    h.snapshot = next;
    assert_eq!(
        place(&mut h, "198.18.10.5", 31_000, 1),
        Err(DropReason::AllBackendsDown)
    );
    // Back up: from the next rebuild, as for any service whose tables
    // were built with nothing alive.
    set_up(&h, 12, true);
    h.snapshot = Snapshot::build(&config, Some(&h.snapshot));
    assert_eq!(place(&mut h, "198.18.10.5", 31_001, 1), Ok(12), "back up");
}

const ZONES: &str = r#"
[routing]
zone_priority = ["dc-c", "dc-b"]
[[routing.classes]]
prefix = "198.18.20.0/24"
zone = "dc-a"
[[routing.classes]]
prefix = "198.18.21.0/24"
zone = "dc-b"
"#;

fn zone_backends() -> Vec<B> {
    vec![
        B(21, "zone = \"dc-a\""),
        B(22, "zone = \"dc-a\""),
        B(23, "zone = \"dc-b\""),
        B(24, "zone = \"dc-c\""),
        B(25, ""),
    ]
}

#[test]
fn zone_clients_fall_back_in_the_configured_order() {
    let mut h = Harness::new(&rules(ZONES, "", &zone_backends()));
    assert_eq!(hosts(&mut h, "198.18.20.7", 64, 1), [21, 22], "own zone");
    assert_eq!(hosts(&mut h, "198.18.21.7", 32, 1), [23]);
    assert_eq!(
        hosts(&mut h, "198.18.99.7", 200, 1),
        [21, 22, 23, 24, 25],
        "no zone"
    );
    let first = h.pipeline.route_counters().snapshot();
    // The classless client's flows are the scheduler's, not counted.
    assert_eq!((first.first_choice, first.fallbacks), (64 + 32, 0));
    // dc-a down (no rebuild yet): the priority list's first zone, dc-c.
    set_up(&h, 21, false);
    set_up(&h, 22, false);
    assert_eq!(hosts(&mut h, "198.18.20.7", 32, 1), [24]);
    // dc-c down too: dc-b, then the backends of no zone, then any.
    set_up(&h, 24, false);
    assert_eq!(hosts(&mut h, "198.18.20.7", 32, 1), [23]);
    set_up(&h, 23, false);
    assert_eq!(hosts(&mut h, "198.18.20.7", 32, 1), [25]);
    let c = h.pipeline.route_counters().snapshot();
    assert_eq!(c.fallbacks, 96);
    // A rebuild with dc-a down gives the same answers from the tables.
    let config = config(&rules(ZONES, "", &zone_backends()));
    h.snapshot = Snapshot::build(&config, Some(&h.snapshot));
    assert_eq!(hosts(&mut h, "198.18.20.7", 32, 1), [25]);
    // A zone that was wholly down at the build is back from the rebuild
    // its health transition starts.
    set_up(&h, 22, true);
    h.snapshot = Snapshot::build(&config, Some(&h.snapshot));
    assert_eq!(hosts(&mut h, "198.18.20.7", 32, 1), [22], "own zone back");
}

#[test]
fn a_dead_zone_leaves_established_connections_alone_and_moves_new_ones() {
    let mut h = Harness::new(&rules(ZONES, "", &zone_backends()));
    assert!(matches!(place(&mut h, "198.18.21.7", 4000, 1), Ok(23)));
    set_up(&h, 23, false);
    // The established connection keeps its backend (the default `keep`).
    let (verdict, out) = h.run(&packet("198.18.21.7", 4000, ACK), 0, 2);
    assert!(matches!(verdict, Verdict::Transmit(_)));
    assert_eq!(host(&out), 23);
    // A new one of the same client goes to the next zone (dc-c).
    assert_eq!(place(&mut h, "198.18.21.7", 4001, 2), Ok(24));
}

fn canary_rules(share: u32, clients: &str) -> String {
    rules(
        "",
        &format!("[services.canary]\ngroup = \"v2\"\nshare = {share}\nclients = [{clients}]\n"),
        &[B(31, ""), B(32, ""), B(33, "group = \"v2\"")],
    )
}

/// For each of `n` flows of one client, whether it went to the canary.
fn canary_flows(share: u32, n: u16) -> Vec<bool> {
    let mut h = Harness::new(&canary_rules(share, ""));
    (0..n)
        .map(|i| place(&mut h, "198.18.40.1", 10_000 + i, 1).unwrap() == 33)
        .collect()
}

#[test]
fn a_canary_takes_its_share_and_raising_it_moves_only_the_flows_in_between() {
    let n = 4000;
    let none = canary_flows(0, n);
    assert!(none.iter().all(|&c| !c), "share 0: no flow");
    let all = canary_flows(10_000, n);
    assert!(all.iter().all(|&c| c), "share 10 000: every flow");
    let at_10 = canary_flows(1_000, n);
    let at_30 = canary_flows(3_000, n);
    let count = |v: &[bool]| v.iter().filter(|&&c| c).count();
    // 10 % and 30 % of 4 000, within a generous binomial margin.
    assert!((300..=500).contains(&count(&at_10)), "{}", count(&at_10));
    assert!(
        (1_050..=1_350).contains(&count(&at_30)),
        "{}",
        count(&at_30)
    );
    // Raising the share only adds flows: none of 10 %'s canary flows left.
    for (i, (&low, &high)) in at_10.iter().zip(&at_30).enumerate() {
        assert!(!low || high, "flow {i} left the canary when the share rose");
    }
    // The non-canary flows stay where they were (the stable side's table
    // is the same whatever the share).
    let mut a = Harness::new(&canary_rules(1_000, ""));
    let mut b = Harness::new(&canary_rules(3_000, ""));
    for i in 0..n {
        let (x, y) = (
            place(&mut a, "198.18.40.1", 10_000 + i, 1).unwrap(),
            place(&mut b, "198.18.40.1", 10_000 + i, 1).unwrap(),
        );
        if x != 33 {
            assert!(y == x || y == 33, "flow {i} moved from {x} to {y}");
        }
    }
}

#[test]
fn canary_clients_always_go_to_the_canary_and_a_share_change_spares_established_flows() {
    let mut h = Harness::new(&canary_rules(0, "\"198.18.41.0/24\""));
    assert_eq!(hosts(&mut h, "198.18.41.9", 32, 1), [33]);
    assert_eq!(hosts(&mut h, "198.18.42.9", 64, 1), [31, 32]);
    assert_eq!(h.pipeline.route_counters().snapshot().canary_flows, 32);
    // An established flow stays on the stable side when the share goes
    // to 100 %: the change is for new flows only.
    assert!(matches!(place(&mut h, "198.18.42.9", 5000, 1), Ok(31 | 32)));
    let before = host(&h.run(&packet("198.18.42.9", 5000, ACK), 0, 2).1);
    h.snapshot = Snapshot::build(
        &config(&canary_rules(10_000, "\"198.18.41.0/24\"")),
        Some(&h.snapshot),
    );
    assert_eq!(
        host(&h.run(&packet("198.18.42.9", 5000, ACK), 0, 3).1),
        before
    );
    assert_eq!(place(&mut h, "198.18.42.9", 5001, 3), Ok(33));
}

#[test]
fn sets_zones_and_a_canary_combine_in_that_order() {
    let routing = r#"
[routing]
zone_priority = ["dc-b"]
[[routing.classes]]
prefix = "198.18.50.0/24"
set = "shop.sh.g1"
zone = "dc-a"
"#;
    let backends = [
        B(51, "set = \"shop.sh.g1\"\nzone = \"dc-a\""),
        B(52, "set = \"shop.sh.g1\"\nzone = \"dc-b\""),
        B(53, "set = \"shop.sh.g1\"\nzone = \"dc-a\"\ngroup = \"v2\""),
        B(54, "set = \"pay.gz.g1\"\nzone = \"dc-a\""),
        B(55, "zone = \"dc-a\""),
    ];
    let text = rules(
        routing,
        "[services.canary]\ngroup = \"v2\"\nshare = 0\nclients = [\"198.18.50.128/25\"]\n",
        &backends,
    );
    let mut h = Harness::new(&text);
    // SET, then not the canary, then zone dc-a.
    assert_eq!(hosts(&mut h, "198.18.50.9", 64, 1), [51]);
    // A canary client of the SET: the SET's canary backend.
    assert_eq!(hosts(&mut h, "198.18.50.200", 32, 1), [53]);
    // dc-a's stable backend down: dc-b's, still in the SET, still stable.
    set_up(&h, 51, false);
    assert_eq!(hosts(&mut h, "198.18.50.9", 32, 1), [52]);
    // The whole stable side down: the canary side before leaving the SET.
    set_up(&h, 52, false);
    assert_eq!(hosts(&mut h, "198.18.50.9", 32, 1), [53]);
    set_up(&h, 53, false);
    assert_eq!(
        place(&mut h, "198.18.50.9", 1, 1),
        Err(DropReason::AllBackendsDown),
        "never 54 (another SET) nor 55 (no SET, but the SET has backends)"
    );
}

#[test]
fn ipv6_client_classes_match_by_longest_prefix() {
    let routing = r#"
[[routing.classes]]
prefix = "2001:2:60::/48"
zone = "dc-a"
[[routing.classes]]
prefix = "2001:2:60:1::/64"
zone = "dc-b"
"#;
    let mut s = rules(routing, "", &[]);
    s = s.replace("vip = \"198.18.100.10\"", "vip = \"2001:2:0:100::10\"");
    for (i, zone) in [(1, "dc-a"), (2, "dc-b")] {
        s += &format!(
            "[[neighbours]]\naddress = \"2001:2:0:1::{i}\"\nmac = \"02:66:67:00:01:{i:02x}\"\ninterface = \"b\"\n"
        );
        s = s.replacen(
            "maglev_table_size = 1009\n",
            &format!(
                "maglev_table_size = 1009\n[[services.backends]]\naddress = \"2001:2:0:1::{i}\"\nport = 8080\nzone = \"{zone}\"\n"
            ),
            1,
        );
    }
    // TOML tables after [[services.backends]] would attach to the backend:
    // the neighbours were appended at the end, which TOML allows.
    let mut h = Harness::new(&s);
    let to = |h: &mut Harness, client: &str, port| {
        let src = SocketAddr::new(client.parse().unwrap(), port);
        let frame = from_client(FrameBuilder::tcp(src, sa("[2001:2:0:100::10]:80"), SYN)).build();
        let (verdict, out) = h.run(&frame, 0, 1);
        assert!(matches!(verdict, Verdict::Transmit(_)), "{verdict:?}");
        wire::parse(&out).unwrap().tuple.dst_ip()
    };
    let a: IpAddr = "2001:2:0:1::1".parse().unwrap();
    let b: IpAddr = "2001:2:0:1::2".parse().unwrap();
    for port in 0..16 {
        assert_eq!(to(&mut h, "2001:2:60::9", 100 + port), a);
        assert_eq!(to(&mut h, "2001:2:60:1::9", 100 + port), b);
    }
}

#[test]
fn explain_says_what_the_data_path_does() {
    use flowgate_api::ExplainQuery;
    use flowgate_dataplane::control::explain::explain;
    let routing = format!("{ZONES}{}", SET_CLASSES.replace("198.18.1", "198.18.3"));
    let mut backends = zone_backends();
    backends.push(B(
        26,
        "zone = \"dc-a\"\nset = \"shop.sh.g1\"\ngroup = \"v2\"",
    ));
    let text = rules(
        &routing,
        "[services.canary]\ngroup = \"v2\"\nshare = 2500\n",
        &backends,
    );
    let mut h = Harness::new(&text);
    set_up(&h, 21, false);
    for (client, port) in [
        ("198.18.20.7", 1u16),
        ("198.18.21.7", 2),
        ("198.18.30.5", 3),
        ("198.18.99.1", 4),
    ] {
        for k in 0..50 {
            let port = port * 1000 + k;
            let reply = explain(
                &h.snapshot,
                None,
                &ExplainQuery {
                    from: format!("{client}:{port}"),
                    to: "198.18.100.10:80".into(),
                    protocol: None,
                },
            )
            .unwrap();
            let placed = place(&mut h, client, port, 1).unwrap();
            assert_eq!(
                reply.backend,
                Some(format!("198.18.1.{placed}:8080")),
                "{client}:{port}: {reply}"
            );
            assert!(reply.routed);
            assert_eq!(reply.outcome, "placed");
        }
    }
    let reply = explain(
        &h.snapshot,
        None,
        &ExplainQuery {
            from: "198.18.20.7:1".into(),
            to: "198.18.100.10:80".into(),
            protocol: Some("tcp".into()),
        },
    )
    .unwrap();
    let class = reply.class.as_ref().unwrap();
    assert_eq!(
        (class.prefix.as_str(), class.zone.as_deref()),
        ("198.18.20.0/24", Some("dc-a"))
    );
    assert!(reply.canary.is_some());
    // dc-a's first step saw 21 down and took the skip rule's pick, or the
    // canary side's: the text names each step tried.
    assert!(reply.to_string().contains("step 1"), "{reply}");
}

fn path_rules(orders_1: u8) -> String {
    let text = rules(
        "",
        "[[services.paths]]\nclient = \"198.18.60.5\"\nbackends = [\"orders-1\"]\n\
         [[services.paths]]\nclient = \"198.18.61.0/24\"\nbackends = [\"198.18.1.62:8080\", \"orders-3\"]\n",
        &[
            B(orders_1, "name = \"orders-1\""),
            B(62, ""),
            B(63, "name = \"orders-3\""),
            B(65, ""),
        ],
    );
    // A neighbour for the address orders-1 moves to.
    if orders_1 == 64 {
        return text;
    }
    text + "\n[[neighbours]]\naddress = \"198.18.1.64\"\nmac = \"02:66:67:00:01:40\"\ninterface = \"b\"\n"
}

#[test]
fn distribution_paths_go_first_fall_back_when_down_and_follow_a_moved_backend() {
    use flowgate_dataplane::table::PathRouting;
    let mut h = Harness::new(&path_rules(61));
    let mut paths = PathRouting::new(1 << 20, &h.snapshot);
    let first = config(&path_rules(61));
    assert!(
        paths.load(&first, &h.snapshot).unwrap(),
        "new names: rebuild"
    );
    h.snapshot = Snapshot::build(&first, Some(&h.snapshot));
    h.pipeline.set_paths(paths.reader());

    assert_eq!(hosts(&mut h, "198.18.60.5", 32, 1), [61]);
    assert_eq!(
        hosts(&mut h, "198.18.61.9", 64, 1),
        [62, 63],
        "a list, by flow hash"
    );
    assert_eq!(
        hosts(&mut h, "198.18.70.1", 200, 1),
        [61, 62, 63, 65],
        "no path: the scheduler"
    );
    assert_eq!(h.pipeline.route_counters().snapshot().path_flows, 96);

    // The path's backend down: the normal decision, counted.
    set_up(&h, 61, false);
    let fell_back = hosts(&mut h, "198.18.60.5", 32, 1);
    assert!(!fell_back.contains(&61), "{fell_back:?}");
    assert_eq!(h.pipeline.route_counters().snapshot().path_fallbacks, 32);
    // One of a list's backends down: its others.
    set_up(&h, 62, false);
    assert_eq!(hosts(&mut h, "198.18.61.9", 32, 1), [63]);
    set_up(&h, 61, true);
    set_up(&h, 62, true);

    // orders-1 moves to 198.18.1.64: one endpoint changes, the path
    // table is not touched, and the path follows the name.
    let moved = config(&path_rules(64));
    let generation = paths.table().view().generation();
    h.snapshot = Snapshot::build(&moved, Some(&h.snapshot));
    assert_eq!(hosts(&mut h, "198.18.60.5", 32, 1), [64]);
    assert_eq!(paths.table().view().generation(), generation);

    // explain shows the path, and where it went.
    let query = |from: &str| flowgate_api::ExplainQuery {
        from: from.into(),
        to: "198.18.100.10:80".into(),
        protocol: None,
    };
    let explain = flowgate_dataplane::control::explain::explain;
    let view = Some(paths.table().view());
    let reply = explain(&h.snapshot, view, &query("198.18.60.5:7")).unwrap();
    let path = reply.path.as_ref().unwrap();
    assert_eq!(path.backends, ["orders-1"]);
    assert_eq!(path.chosen.as_deref(), Some("198.18.1.64:8080"));
    assert_eq!(reply.backend.as_deref(), Some("198.18.1.64:8080"));
    set_up(&h, 64, false);
    let reply = explain(&h.snapshot, view, &query("198.18.60.5:7")).unwrap();
    assert_eq!(reply.path.as_ref().unwrap().chosen, None, "{reply}");
    assert_ne!(reply.backend.as_deref(), Some("198.18.1.64:8080"));
    assert!(reply.to_string().contains("falls back"), "{reply}");
    set_up(&h, 64, true);

    // Reloading the same paths names nothing new.
    assert!(!paths.load(&moved, &h.snapshot).unwrap());
    assert_eq!(
        paths.get(0, "198.18.60.5/32".parse().unwrap()),
        Some(vec!["orders-1".to_string()])
    );
}

#[test]
fn flowgate_explain_reads_a_config_file_with_its_paths() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/routing.toml");
    let run = |from: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flowgate"))
            .args(["explain", "-c", config, "--from", from])
            .args(["--to", "198.18.100.10:80/tcp", "-o", "json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        reply
    };
    let path = run("198.18.50.7:1000");
    assert_eq!(path["path"]["backends"][0], "orders-a1");
    assert_eq!(path["backend"], "198.18.1.51:8080");
    let pilot = run("198.18.50.200:1000");
    assert_eq!(pilot["canary"]["drawn"], "client");
    assert_eq!(pilot["backend"], "198.18.1.53:8080");
    let set = run("198.18.50.9:1000");
    assert_eq!(set["class"]["set"], "shop.sh.g1");
    assert_eq!(set["set"], "own");
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_flowgate"))
        .args(["explain", "-c", config, "--from", "198.18.50.9"])
        .args(["--to", "198.18.100.10:81"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no service at tcp 198.18.100.10:81"));
}

/// Where a new flow of `client`:`port` goes through `pipeline` on the
/// data plane's published snapshot: the backend's host part.
fn place_live(
    pipeline: &mut flowgate_dataplane::pipeline::Pipeline,
    flows: &mut flowgate_dataplane::flow::FlowTable,
    dataplane: &flowgate_dataplane::control::MemoryDataplane,
    client: &str,
) -> Vec<u8> {
    let snapshot = dataplane.current();
    let mut seen: Vec<u8> = (0..32)
        .map(|_| {
            let mut buf = packet(client, fresh_port(), SYN);
            let (verdict, len) = pipeline.process_frame_len(&mut buf, 0, &snapshot, flows, 1);
            buf.truncate(len);
            assert!(matches!(verdict, Verdict::Transmit(_)), "{verdict:?}");
            host(&buf)
        })
        .collect();
    seen.sort_unstable();
    seen.dedup();
    seen
}

#[test]
fn a_reload_adding_or_removing_a_path_steers_new_flows_and_explain_shows_it() {
    use flowgate_api::{ExplainQuery, Reply, Request};
    use flowgate_dataplane::control::{ControlState, MemoryDataplane};
    use flowgate_dataplane::flow::{FlowTable, FlowTimeouts};
    use std::sync::Arc;

    let backends = [
        B(61, "name = \"orders-1\""),
        B(62, ""),
        B(63, "name = \"orders-3\""),
        B(65, ""),
    ];
    let without = rules("", "", &backends);
    let with = rules(
        "",
        "[[services.paths]]\nclient = \"198.18.60.5\"\nbackends = [\"orders-1\"]\n",
        &backends,
    );
    let dir = std::env::temp_dir().join(format!("flowgate-path-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rules.toml");
    std::fs::write(&file, &without).unwrap();

    let first = config(&without);
    let dataplane = Arc::new(MemoryDataplane::with_config(&first));
    let mut state = ControlState::new(first.clone(), file.display().to_string(), dataplane.clone());
    // A worker: its pipeline reads the data plane's path table.
    let mut pipeline = flowgate_dataplane::pipeline::Pipeline::new();
    pipeline.set_paths(dataplane.path_reader());
    let mut flows = FlowTable::new(4096, FlowTimeouts::from(&first.flows));
    let explain = |state: &mut ControlState| match state
        .handle(Request::Explain(ExplainQuery {
            from: "198.18.60.5:7".into(),
            to: "198.18.100.10:80".into(),
            protocol: None,
        }))
        .unwrap()
    {
        Reply::Explain(reply) => reply,
        other => panic!("{other:?}"),
    };

    let spread = place_live(&mut pipeline, &mut flows, &dataplane, "198.18.60.5");
    assert!(
        spread.len() > 1,
        "no path: the scheduler spreads {spread:?}"
    );
    assert_eq!(explain(&mut state).path, None);

    // A reload adds the path: new flows of that client go to orders-1.
    std::fs::write(&file, &with).unwrap();
    let report = state.reload(&file).unwrap();
    assert!(report.applied);
    assert_eq!(
        place_live(&mut pipeline, &mut flows, &dataplane, "198.18.60.5"),
        [61]
    );
    let others = place_live(&mut pipeline, &mut flows, &dataplane, "198.18.70.1");
    assert!(
        others.len() > 1,
        "other clients keep the scheduler: {others:?}"
    );
    let reply = explain(&mut state);
    let path = reply
        .path
        .as_ref()
        .expect("API explain shows the path stage");
    assert_eq!(path.backends, ["orders-1"]);
    assert_eq!(path.chosen.as_deref(), Some("198.18.1.61:8080"));
    assert_eq!(reply.backend.as_deref(), Some("198.18.1.61:8080"));

    // A reload removes it: the scheduler decides again.
    std::fs::write(&file, &without).unwrap();
    assert!(state.reload(&file).unwrap().applied);
    let again = place_live(&mut pipeline, &mut flows, &dataplane, "198.18.60.5");
    assert!(again.len() > 1, "the path is gone: {again:?}");
    assert_eq!(explain(&mut state).path, None);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_path_edit_reaches_the_workers_reader_at_the_reply_without_a_snapshot() {
    use flowgate_api::{Batch, Edit, PathKey, PathSpec, Reply, Request};
    use flowgate_dataplane::control::{ControlState, Dataplane, MemoryDataplane};
    use flowgate_dataplane::flow::{FlowTable, FlowTimeouts};
    use flowgate_dataplane::route::ClientAddr;
    use std::sync::Arc;

    let backends = [
        B(61, "name = \"orders-1\""),
        B(62, ""),
        B(63, "name = \"orders-3\""),
        B(65, ""),
    ];
    let text = rules(
        "",
        "[[services.paths]]\nclient = \"198.18.60.5\"\nbackends = [\"orders-1\"]\n",
        &backends,
    );
    let first = config(&text);
    let dataplane = Arc::new(MemoryDataplane::with_config(&first));
    let state = ControlState::new(first.clone(), "t.toml", dataplane.clone());
    let mut reader = dataplane.path_reader();
    let mut pipeline = flowgate_dataplane::pipeline::Pipeline::new();
    pipeline.set_paths(dataplane.path_reader());
    let mut flows = FlowTable::new(4096, FlowTimeouts::from(&first.flows));
    let change = |edit: Edit| match state
        .clone()
        .handle(Request::Batch(Batch {
            edits: vec![edit],
            dry_run: false,
        }))
        .unwrap()
    {
        Reply::Changed(report) => report,
        other => panic!("{other:?}"),
    };
    let add = |client: &str, backend: &str| {
        Edit::PathAdd(PathSpec {
            service: "svc".into(),
            client: client.into(),
            backends: vec![backend.into()],
        })
    };
    let client = |a: &str| ClientAddr::from_bytes(&addr_to_bytes(a.parse().unwrap()));
    let generation = dataplane.generation();

    // A path to a backend another path names: the table is edited, no
    // snapshot is built, and the worker's reader sees it at the reply.
    let report = change(add("198.18.61.7", "orders-1"));
    assert!(report.applied, "{report:?}");
    assert_eq!(report.generation, generation, "no snapshot built");
    assert_eq!(dataplane.generation(), generation);
    assert!(reader.load().lookup(0, client("198.18.61.7")).is_some());
    assert_eq!(
        place_live(&mut pipeline, &mut flows, &dataplane, "198.18.61.7"),
        [61]
    );

    // Removed: gone from the reader at the reply, again without a build.
    let report = change(Edit::PathDel(PathKey {
        service: "svc".into(),
        client: "198.18.61.7".into(),
    }));
    assert_eq!(report.generation, generation);
    assert!(reader.load().lookup(0, client("198.18.61.7")).is_none());
    assert!(place_live(&mut pipeline, &mut flows, &dataplane, "198.18.61.7").len() > 1);

    // A backend no path named: one build, so that the snapshot resolves it.
    let report = change(add("198.18.61.7", "orders-3"));
    assert_eq!(report.generation, generation + 1);
    assert_eq!(
        place_live(&mut pipeline, &mut flows, &dataplane, "198.18.61.7"),
        [63]
    );
    // The other path never moved.
    assert_eq!(
        place_live(&mut pipeline, &mut flows, &dataplane, "198.18.60.5"),
        [61]
    );
    // A reload of the file's rules drops the edited path again.
    let report = state.apply_config(&first, "t.toml").unwrap();
    assert!(report.applied);
    assert!(reader.load().lookup(0, client("198.18.61.7")).is_none());
}
