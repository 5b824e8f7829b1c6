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

#[path = "netns/flood.rs"]
mod flood;
#[allow(dead_code)] // the schema checker's listing is not used here
mod json_schema;
mod netns;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flood::{with_metrics, Scrape};
use flowgate_dataplane::testnet;
use flowgate_dataplane::xdp::{read_attached_counters, XdpCounters};
use netns::*;
use serde_json::Value;

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

/// `flowgatectl --socket … ARGS` against the gateway: its stdout (the
/// command must succeed).
fn flowgatectl(topo: &Topology, args: &[&str]) -> String {
    let bin = testnet::workspace_binary("flowgatectl").unwrap();
    let out = Command::new(bin)
        .arg("--socket")
        .arg(topo.scratch.path("control.sock"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "flowgatectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `flowgatectl -o json ARGS`, checked against its schema in docs/schemas/.
fn flowgatectl_json(topo: &Topology, args: &[&str], schema: &str) -> Value {
    let mut all = vec!["-o", "json"];
    all.extend_from_slice(args);
    let text = flowgatectl(topo, &all);
    let value: Value = serde_json::from_str(&text).unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schemas");
    let schemas = json_schema::Schemas::load(&dir).unwrap();
    let errors = schemas.validate(schema, &value);
    assert!(errors.is_empty(), "{schema}: {errors:?}\n{text}");
    value
}

/// A scrape once the workers have taken every packet the program
/// forwarded (they take the program's counts a bounded step per poll:
/// waits, bounded, until they have all of them).
fn all_taken(topo: &Topology) -> Scrape {
    let program = sent(&counters(topo)) as f64;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let scrape = Scrape::take(&topo.gateway);
        let taken = scrape.sum("flowgate_fast_path_packets_total", &[]);
        if taken >= program || Instant::now() > deadline {
            return scrape;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The dns service's packets in a scrape, summed over its backends and
/// the workers.
fn dns_packets(scrape: &Scrape) -> f64 {
    scrape.sum("flowgate_backend_packets_total", &["service=\"dns\""])
}

#[test]
fn the_fast_paths_packets_show_in_metrics_stats_and_status_and_in_the_backends_counts() {
    if !privileged() {
        return;
    }
    let _one = one_gateway_at_a_time();
    let topo = Topology::new(1);
    topo.set_peer_gro(true, true);
    let mut gw = topo.start_gateway(&with_metrics(&fast_config(&topo)));
    // The start's probes (and any late answer to them) are done and
    // counted before the first sample.
    std::thread::sleep(Duration::from_millis(500));
    let before = all_taken(&topo);
    let stats_before = flowgatectl_json(&topo, &["stats"], "stats.json");

    // One long UDP connection: after the first exchange its packets, both
    // ways, are the fast path's; all 2 × QUERIES are the dns backend's.
    one_udp_connection(&topo, &gw);
    let program = counters(&topo);
    assert!(sent(&program) >= QUERIES as u64, "{program:?}");
    let after = all_taken(&topo);
    let moved = after.moved(&before);
    let forwarded = after.sum("flowgate_fast_path_forwarded_packets_total", &[]);
    assert_eq!(forwarded, sent(&program) as f64, "{moved:#?}");
    assert_eq!(
        after.sum("flowgate_fast_path_packets_total", &[]),
        forwarded,
        "every packet the program forwarded is a worker's: {moved:#?}"
    );
    assert!(after.sum("flowgate_fast_path_forwarded_bytes_total", &[]) >= 42.0 * forwarded);
    assert_eq!(
        after.sum("flowgate_fast_path_bytes_total", &[]),
        after.sum("flowgate_fast_path_forwarded_bytes_total", &[]),
    );
    assert_eq!(after.sum("flowgate_fast_path_on", &[]), 2.0, "{moved:#?}");
    // The backend's figures count the connection's every packet, whoever
    // forwarded it: they do not drop with the fast path on.
    assert_eq!(
        dns_packets(&after) - dns_packets(&before),
        2.0 * QUERIES as f64,
        "{moved:#?}"
    );
    // A connection from its first packet is a miss, then entries.
    assert!(after.sum("flowgate_fast_path_handed_up_total", &["reason=\"miss\""]) >= 1.0);
    assert!(
        after.sum("flowgate_fast_path_entries", &[]) >= 2.0,
        "{moved:#?}"
    );

    // TCP: the handshake and the close go up, by reason.
    let load = http_load(&topo.client, web(), 20, 2, BUDGET);
    assert_eq!(load.answered(), 20, "{:?}\n{}", load.failures, gw.log());
    let tcp = Scrape::take(&topo.gateway);
    let up = |reason: &str| {
        tcp.sum(
            "flowgate_fast_path_handed_up_total",
            &[&format!("reason=\"{reason}\"")],
        )
    };
    assert!(up("syn") >= 20.0, "{:#?}", tcp.moved(&after));
    assert!(up("fin_rst") >= 20.0, "{:#?}", tcp.moved(&after));

    control_api_shows_the_fast_path(&topo, forwarded as u64, &stats_before);
    gw.assert_running();
    gw.stop();
}

/// The fast path's figures through the control API, as JSON its schema
/// takes and as text: at least `forwarded` packets, and the dns service's
/// 2 × [`QUERIES`] since `stats_before`.
fn control_api_shows_the_fast_path(topo: &Topology, forwarded: u64, stats_before: &Value) {
    let stats = flowgatectl_json(topo, &["stats"], "stats.json");
    let fast = &stats["fast_path"];
    let program = counters(topo);
    assert!(
        fast["forwarded_packets"].as_u64().unwrap() >= forwarded,
        "{stats}"
    );
    assert!(
        fast["forwarded_packets"].as_u64().unwrap() <= sent(&program),
        "{stats}"
    );
    assert!(fast["handed_up"]["syn"].as_u64().unwrap() >= 20, "{stats}");
    let workers: u64 = stats["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["fast_path"]["packets"].as_u64().unwrap())
        .sum();
    assert!(workers >= forwarded, "{stats}");
    let dns = |s: &Value| {
        s["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "dns")
            .unwrap()["packets"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(
        dns(&stats) - dns(stats_before),
        2 * QUERIES as u64,
        "{stats}"
    );
    let status = flowgatectl_json(topo, &["status"], "status.json");
    let summary = &status["dataplane"]["fast_path"];
    assert_eq!(
        summary["forwarding_on"],
        serde_json::json!(["fg-client", "fg-backend"]),
        "{status}"
    );
    assert!(summary["forwarded_packets"].as_u64().unwrap() >= forwarded);
    let text = flowgatectl(topo, &["stats"]);
    assert!(text.contains("bytes forwarded by XDP"), "{text}");
    assert!(text.contains("FAST PKTS"), "{text}");
    let text = flowgatectl(topo, &["status"]);
    assert!(
        text.contains("fast path   xdp on fg-client fg-backend"),
        "{text}"
    );
}

#[test]
fn with_the_fast_path_off_the_workers_write_no_entry_and_nothing_shows_one() {
    if !privileged() {
        return;
    }
    let _one = one_gateway_at_a_time();
    let topo = Topology::new(1);
    topo.set_peer_gro(true, true);
    let config = with_metrics(&topo.config(&[0])).replacen(
        "[daemon]\n",
        "[daemon]\nfast_path = \"off\"\n",
        1,
    );
    let mut gw = topo.start_gateway(&config);
    let before = Scrape::take(&topo.gateway);
    one_udp_connection(&topo, &gw);
    let load = http_load(&topo.client, web(), 20, 2, BUDGET);
    assert_eq!(load.answered(), 20, "{:?}\n{}", load.failures, gw.log());
    let after = Scrape::take(&topo.gateway);
    let moved = after.moved(&before);
    // No entry written, nothing forwarded or handed up by the program,
    // and the backends count every packet the workers forwarded.
    assert_eq!(
        after.sum("flowgate_fast_path_entries", &[]),
        0.0,
        "{moved:#?}"
    );
    assert_eq!(after.sum("flowgate_fast_path_packets_total", &[]), 0.0);
    assert!(
        !after
            .0
            .keys()
            .any(|k| k.starts_with("flowgate_fast_path_on")),
        "{moved:#?}"
    );
    let program = counters(&topo);
    assert_eq!(
        sent(&program) + program.fast_miss + program.fast_handed_up,
        0,
        "{program:?}"
    );
    assert!(dns_packets(&after) - dns_packets(&before) >= 2.0 * QUERIES as f64);
    let stats = flowgatectl_json(&topo, &["stats"], "stats.json");
    assert!(stats.get("fast_path").is_none(), "{stats}");
    assert!(stats["workers"][0].get("fast_path").is_none(), "{stats}");
    let status = flowgatectl_json(&topo, &["status"], "status.json");
    assert!(status["dataplane"].get("fast_path").is_none(), "{status}");
    assert!(flowgatectl(&topo, &["status"]).contains("fast path   off"));
    gw.assert_running();
    gw.stop();
}
