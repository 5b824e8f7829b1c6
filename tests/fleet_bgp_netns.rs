//! VIPs announced by BGP and withdrawn on failure (issue 15 point 7): two
//! gateways with `announce = "bgp"` services from one real etcd, each with
//! a real BIRD 2 in its namespace that learns the VIPs' host routes
//! flowgate keeps on its own device and announces them; the router's BIRD
//! builds its multipath route to the VIP from BGP. The route loses a
//! gateway within 3 s when that gateway is killed with SIGKILL or stopped
//! with SIGTERM, and loses the VIP when its services have no backend left
//! to take a flow; it comes back when they do. `flowgatectl fleet drain`
//! on a running gateway withdraws its routes within 3 s too, and `fleet
//! undrain` brings them back. The router's route for the
//! backends' replies follows the VIP's (a BIRD recursive route), so it
//! loses a stopped gateway too.
//!
//! Gateway failover (issue 15 point 8): long transfers through both
//! gateways; one is killed in the middle: the router withdraws it, its
//! connections go on through the other (picked up mid-stream) and every
//! transfer completes whole; started again, the flows ECMP hashes back to
//! it go on through it.
//!
//! Run as root; set FLOWGATE_SKIP_NETNS=1 to skip elsewhere.

#[path = "netns/fleet.rs"]
mod fleet;
mod fleet_support;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use fleet::*;
use fleet_support::Etcd;
use flowgate_dataplane::testnet;

/// Withdrawal (and announcement) must be seen by the router within this.
const WITHIN: Duration = Duration::from_secs(3);
/// The backends' health-check port.
const HEALTH_PORT: u16 = 8090;

/// Waits until the router's route to the VIP goes over `gateways`; how
/// long it took, or a panic naming what it saw and the BIRD logs.
fn route_becomes(
    fleet: &Fleet,
    gateways: &[u8],
    limit: Duration,
    what: &str,
    birds: &[&Bird],
) -> Duration {
    let want: Vec<Ipv4Addr> = gateways.iter().map(|&g| gateway_front(g)).collect();
    let started = Instant::now();
    let vip = format!("{VIP}/32");
    let ok = wait_until(limit, || fleet.router_next_hops(&vip) == want);
    let took = started.elapsed();
    assert!(
        ok,
        "{what}: the router's route to the VIP is over {:?}, not {want:?}, after {took:?}\n{}",
        fleet.router_next_hops(&vip),
        birds
            .iter()
            .map(|b| b.ctl(&["show", "route", "all"]) + &b.log())
            .collect::<Vec<_>>()
            .join("\n---\n")
    );
    eprintln!("{what}: {took:?}");
    took
}

/// Whether a request through the VIP is answered (a few tries).
fn answers(fleet: &Fleet) -> bool {
    fleet
        .client
        .enter(|| {
            (0..5).any(|i| {
                request(
                    client_v4(i),
                    SocketAddrV4::new(VIP, MAGLEV_PORT),
                    0,
                    0,
                    Duration::from_secs(2),
                )
                .is_ok()
            })
        })
        .unwrap()
}

/// One fleet at a time: each one's two gateways poll both cores.
fn one_test_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn bgp_carries_each_gateways_vips_to_the_router_and_withdraws_them_within_3_s() {
    if !testnet::privileged() {
        return;
    }
    let _alone = one_test_at_a_time();
    let fleet = Fleet::new();
    fleet.replies_by_table_100();
    let all_birds = fleet.start_birds();
    let birds: Vec<&Bird> = all_birds.iter().collect();
    let etcd = Etcd::start();
    // Each backend's health port, held by the test: closed, the checks fail.
    let open_health = || -> Vec<std::net::TcpListener> {
        fleet
            .backends
            .iter()
            .map(|ns| {
                ns.enter(|| std::net::TcpListener::bind(("0.0.0.0", HEALTH_PORT)))
                    .unwrap()
                    .unwrap()
            })
            .collect()
    };
    let mut health = open_health();
    fleet.put_services_with(&etcd, "bgp", Some(HEALTH_PORT));
    let forwarders: Vec<fleet_support::Proxy> = fleet
        .gateways
        .iter()
        .map(|ns| forwarder(ns, etcd.address()))
        .collect();
    let configs: Vec<_> = (1..=2u8)
        .map(|g| fleet.gateway_config(g, &forwarders[usize::from(g - 1)].endpoint(), ""))
        .collect();
    assert!(fleet.router_next_hops(&format!("{VIP}/32")).is_empty());
    let mut gw1 = fleet.start_gateway(1, &configs[0]);
    let mut gw2 = fleet.start_gateway(2, &configs[1]);
    // The sessions come up in a few seconds; then both paths.
    route_becomes(
        &fleet,
        &[1, 2],
        Duration::from_secs(30),
        "both gateways announced",
        &birds,
    );
    assert!(
        answers(&fleet),
        "no answer through the VIP over BGP's route"
    );

    // kill -9: its device and routes go with the process.
    gw1.stop_with("KILL");
    let took = route_becomes(
        &fleet,
        &[2],
        WITHIN * 2,
        "gateway 1 killed (SIGKILL)",
        &birds,
    );
    assert!(took <= WITHIN, "withdrawn after {took:?}");
    assert!(answers(&fleet), "gateway 2 alone does not answer");

    // Started again: announced again.
    let mut gw1 = fleet.start_gateway(1, &configs[0]);
    route_becomes(
        &fleet,
        &[1, 2],
        Duration::from_secs(10),
        "gateway 1 back",
        &birds,
    );

    // Every backend fails its checks: both gateways withdraw the VIP
    // (2 failed checks 200 ms apart, then BGP); healthy again, both
    // announce it.
    health.clear();
    let took = route_becomes(&fleet, &[], WITHIN * 2, "every backend down", &birds);
    assert!(took <= WITHIN, "withdrawn after {took:?}");
    health = open_health();
    route_becomes(
        &fleet,
        &[1, 2],
        Duration::from_secs(10),
        "backends back",
        &birds,
    );

    // Drained by the operator: its routes go, the gateway runs on and
    // still forwards what reaches it; undrained, they come back.
    drain_and_undrain(&fleet, &mut gw1, &birds);

    // SIGTERM: withdrawn first, then it stops.
    let status = gw2.stop_with("TERM");
    assert!(status.success(), "{}", gw2.log());
    let took = route_becomes(
        &fleet,
        &[1],
        WITHIN * 2,
        "gateway 2 stopped (SIGTERM)",
        &birds,
    );
    assert!(took <= WITHIN, "withdrawn after {took:?}");
    assert!(
        gw1.log().contains("VIPs offered to the BGP daemon changed"),
        "{}",
        gw1.log()
    );
    drop(gw1);
    drop(forwarders);
    drop(health);
}

/// `flowgatectl ARGS -o json` on gateway `g`'s control socket: the
/// document it writes (exit 0 asserted).
fn ctl_json(fleet: &Fleet, g: u8, args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flowgatectl"))
        .arg("--socket")
        .arg(fleet.control_socket(g))
        .args(args)
        .args(["-o", "json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "flowgatectl {args:?}: {stdout}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// `fleet drain` on gateway 1 withdraws its routes at the router within
/// 3 s while it keeps running (its status and metric say drained), and
/// the fleet still answers; `fleet undrain` brings them back.
fn drain_and_undrain(fleet: &Fleet, gw1: &mut Gateway, birds: &[&Bird]) {
    let drained = ctl_json(fleet, 1, &["fleet", "drain"]);
    assert_eq!(drained["drained"], true, "{drained}");
    assert_eq!(drained["changed"], true, "{drained}");
    let took = route_becomes(fleet, &[2], WITHIN * 2, "gateway 1 drained", birds);
    assert!(took <= WITHIN, "withdrawn after {took:?}");
    assert!(
        gw1.exited().is_none(),
        "drained, it runs on:\n{}",
        gw1.log()
    );
    assert_eq!(ctl_json(fleet, 1, &["status"])["drained"], true);
    assert_eq!(gw1.metric("flowgate_fleet_drained"), 1);
    assert!(answers(fleet), "gateway 2 alone does not answer");

    let undrained = ctl_json(fleet, 1, &["fleet", "undrain"]);
    assert_eq!(undrained["drained"], false, "{undrained}");
    assert_eq!(undrained["changed"], true, "{undrained}");
    let took = route_becomes(fleet, &[1, 2], WITHIN * 2, "gateway 1 undrained", birds);
    assert!(took <= WITHIN, "announced again after {took:?}");
    assert_eq!(gw1.metric("flowgate_fleet_drained"), 0);
}

/// `count` transfers of `bytes` bytes, each over about `millis` ms, one
/// connection each, all at once from the clients; their outcomes.
fn transfers(fleet: &Fleet, count: usize, bytes: u64, millis: u64) -> Vec<Result<Answer, String>> {
    fleet
        .client
        .enter(|| {
            std::thread::scope(|s| {
                let all: Vec<_> = (0..count)
                    .map(|i| {
                        s.spawn(move || {
                            let from = client_v4((i % usize::from(CLIENTS)) as u8);
                            let to = SocketAddrV4::new(VIP, MAGLEV_PORT);
                            request(from, to, bytes, millis, Duration::from_secs(10))
                        })
                    })
                    .collect();
                all.into_iter().map(|t| t.join().unwrap()).collect()
            })
        })
        .unwrap()
}

#[test]
fn a_gateway_killed_mid_transfer_hands_its_connections_to_the_other_and_takes_them_back() {
    if !testnet::privileged() {
        return;
    }
    const COUNT: usize = 32;
    const BYTES: u64 = 1_000_000;
    let _alone = one_test_at_a_time();
    let fleet = Fleet::new();
    fleet.replies_by_table_100();
    let all_birds = fleet.start_birds();
    let birds: Vec<&Bird> = all_birds.iter().collect();
    let etcd = Etcd::start();
    fleet.put_services_with(&etcd, "bgp", None);
    let forwarders: Vec<fleet_support::Proxy> = fleet
        .gateways
        .iter()
        .map(|ns| forwarder(ns, etcd.address()))
        .collect();
    let configs: Vec<_> = (1..=2u8)
        .map(|g| fleet.gateway_config(g, &forwarders[usize::from(g - 1)].endpoint(), ""))
        .collect();
    let mut gw1 = fleet.start_gateway(1, &configs[0]);
    let gw2 = fleet.start_gateway(2, &configs[1]);
    route_becomes(
        &fleet,
        &[1, 2],
        Duration::from_secs(30),
        "both announced",
        &birds,
    );

    std::thread::scope(|s| {
        // 1 MB each over 8 s: the kill and the return fall mid-stream.
        let load = s.spawn(|| transfers(&fleet, COUNT, BYTES, 8_000));
        std::thread::sleep(Duration::from_secs(2));
        let before_kill = gw1.metric("flowgate_new_flows_total");
        assert!(before_kill > 0, "gateway 1 carried none of the transfers");
        let gw2_before = gw2.metric("flowgate_new_flows_total");
        gw1.stop_with("KILL");
        route_becomes(
            &fleet,
            &[2],
            WITHIN,
            "gateway 1 killed mid-transfer",
            &birds,
        );
        std::thread::sleep(Duration::from_secs(2));
        let gw1 = fleet.start_gateway(1, &configs[0]);
        route_becomes(
            &fleet,
            &[1, 2],
            Duration::from_secs(10),
            "gateway 1 back",
            &birds,
        );
        let results = load.join().unwrap();
        let done: Vec<&Answer> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .filter(|a| a.bytes == BYTES)
            .collect();
        let failed: Vec<String> = results
            .iter()
            .filter_map(|r| r.as_ref().err().cloned())
            .collect();
        // Flows hashed back to gateway 1 went on through it: it made
        // connections of them mid-stream (no new connection was started).
        let picked_up = gw1.metric("flowgate_new_flows_total");
        let taken_over = gw2.metric("flowgate_new_flows_total") - gw2_before;
        eprintln!(
            "{} of {COUNT} transfers complete; gateway 1 had {before_kill} connections before \
             the kill and picked up {picked_up} after its return; gateway 2 took over \
             {taken_over}; failures: {failed:?}",
            done.len()
        );
        assert_eq!(
            done.len(),
            COUNT,
            "transfers lost in the failover: {failed:?}\n{}\n---\n{}",
            gw1.log(),
            gw2.log()
        );
        assert!(
            taken_over >= before_kill,
            "gateway 2 picked up {taken_over} of gateway 1's {before_kill} connections"
        );
        assert!(picked_up > 0, "no flow came back to gateway 1");
        drop(gw1);
    });
    drop(forwarders);
}
