//! What a running gateway tells about itself without its workers' help:
//! `flowgatectl flows` (raw records from each worker, named and sorted on
//! the control side) and the sockets' statistics on `/metrics` (read on the
//! scraping thread). The real `flowgate` binary, two workers on two queues,
//! in the demo's namespaces (tests/netns/).
//!
//! Run as root; FLOWGATE_SKIP_NETNS=1 skips elsewhere. Needs the binaries
//! built first (scripts/test.sh does it).

mod netns;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use flowgate_api::{ControlClient, FlowEntry, FlowsQuery, Reply, Request};

use netns::*;

const BUDGET: Duration = Duration::from_secs(60);
/// UDP queries sent, each from a new socket (a new connection).
const QUERIES: usize = 200;

fn flows(client: &mut ControlClient, service: Option<&str>, limit: usize) -> Vec<FlowEntry> {
    let request = Request::Flows(FlowsQuery {
        service: service.map(str::to_owned),
        limit: Some(limit),
    });
    match client.call(request) {
        Ok(Reply::Flows(reply)) => reply.flows,
        other => panic!("flows: {other:?}"),
    }
}

/// `GET /metrics` on the gateway's loopback, from inside its namespace
/// (the endpoint starts a little after forwarding does).
fn scrape(topo: &Topology) -> String {
    topo.gateway
        .enter(|| {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut s = loop {
                match TcpStream::connect("127.0.0.1:9464") {
                    Ok(s) => break s,
                    Err(e) if Instant::now() < deadline => {
                        eprintln!("metrics endpoint: {e}; again");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => panic!("metrics endpoint: {e}"),
                }
            };
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n")
                .unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).unwrap();
            text
        })
        .unwrap()
}

#[test]
fn flows_and_socket_statistics_are_answered_by_the_control_side() {
    if !privileged() {
        return;
    }
    let _one = one_gateway_at_a_time();
    let topo = Topology::new(2);
    let config = topo.config(&[0, 1]).replacen(
        "[daemon]\n",
        "[daemon]\nmetrics_address = \"127.0.0.1:9464\"\n",
        1,
    );
    let mut gw = topo.start_gateway(&config);
    let dns = SocketAddr::new(WEB_VIP.into(), 53);
    let web = SocketAddr::new(WEB_VIP.into(), 80);
    let load = udp_load(&topo.client, dns, QUERIES, BUDGET);
    assert_eq!(
        load.answered(),
        QUERIES,
        "{:?}\n{}",
        load.failures,
        gw.log()
    );
    let load = http_load(&topo.client, web, 50, 2, BUDGET);
    assert_eq!(load.answered(), 50, "{:?}\n{}", load.failures, gw.log());

    let mut client = ControlClient::connect(&topo.scratch.path("control.sock")).unwrap();
    let all = flows(&mut client, None, 100_000);
    let keys: Vec<_> = all.iter().map(|f| (f.client, f.vip)).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "sorted by client, then VIP");
    let workers: BTreeSet<usize> = all.iter().map(|f| f.worker).collect();
    assert_eq!(workers, [0, 1].into(), "both workers' tables listed");

    let dns_flows: Vec<&FlowEntry> = all.iter().filter(|f| f.vip == dns).collect();
    // Fresh sockets may reuse a port now and then: that is the same flow.
    assert!(
        dns_flows.len() >= QUERIES * 3 / 4,
        "{} dns flows",
        dns_flows.len()
    );
    for f in &dns_flows {
        assert_eq!(f.service.as_deref(), Some("dns"), "{f:?}");
        assert_eq!((f.protocol.as_str(), f.state.as_str()), ("udp", "udp"));
        assert_eq!(f.client.ip(), std::net::IpAddr::from(CLIENT_V4), "{f:?}");
        assert_eq!(f.backend.port(), 5353, "{f:?}");
        assert!(f.idle_ms < 120_000, "{f:?}");
    }
    let web_flows = all.iter().filter(|f| f.vip == web).count();
    assert!(web_flows >= 40, "{web_flows} web flows");

    // A service's listing is exactly its part of the whole one.
    let only_dns = flows(&mut client, Some("dns"), 100_000);
    let expected: Vec<FlowEntry> = dns_flows.into_iter().cloned().collect();
    let mut got = only_dns.clone();
    for (g, e) in got.iter_mut().zip(&expected) {
        g.idle_ms = e.idle_ms; // time passed between the two listings
    }
    assert_eq!(got, expected);
    // A limit caps the listing (each worker stops at it; the merged,
    // sorted whole is cut to it).
    let first = flows(&mut client, None, 10);
    assert_eq!(first.len(), 10);
    let first_keys: Vec<_> = first.iter().map(|f| (f.client, f.vip)).collect();
    assert!(
        first_keys.windows(2).all(|w| w[0] <= w[1]),
        "{first_keys:?}"
    );
    assert!(first_keys.iter().all(|k| keys.contains(k)));

    // Every socket's statistics, the kernel's and the port's own.
    let text = scrape(&topo);
    for worker in ["0", "1"] {
        for interface in ["fg-client", "fg-backend"] {
            let queue = worker;
            let labels =
                format!("{{worker=\"{worker}\",interface=\"{interface}\",queue=\"{queue}\"}}");
            for family in [
                "flowgate_xsk_rx_dropped_total",
                "flowgate_xsk_tx_wakeups_total",
            ] {
                assert!(
                    text.contains(&format!("{family}{labels} ")),
                    "{family}{labels} missing:\n{text}"
                );
            }
        }
    }
    gw.assert_running();
    gw.stop();
}

#[test]
fn metrics_are_served_on_a_unix_socket_with_the_mode_and_group_asked_for() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use std::os::unix::net::UnixStream;
    if !privileged() {
        return;
    }
    let _one = one_gateway_at_a_time();
    let topo = Topology::new(1);
    let socket = topo.scratch.path("metrics.sock");
    let config = topo.config(&[0]).replacen(
        "[daemon]\n",
        &format!(
            "[daemon]\nmetrics_address = \"unix:{}\"\nmetrics_socket_mode = 0o660\n\
             metrics_socket_group = \"root\"\n",
            socket.display()
        ),
        1,
    );
    let mut gw = topo.start_gateway(&config);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match UnixStream::connect(&socket) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("metrics socket: {e}; again");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("metrics socket: {e}\n{}", gw.log()),
        }
    };
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o777, 0o660, "mode {:o}", meta.mode());
    assert_eq!(meta.gid(), 0, "group root");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("flowgate_polls_total{"), "{text}");
    gw.assert_running();
    gw.stop();
    assert!(!socket.exists(), "the socket file is removed at stop");
}
