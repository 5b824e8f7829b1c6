//! `flowgatectl class add|del` against a control server, end to end: the
//! edit becomes a new snapshot generation, the next new flow of a client
//! under the added prefix is routed by its class (its zone), a flow
//! established before stays on its backend, a dry run changes nothing, and
//! removing the class gives the client back to the scheduler.

mod common;
mod ctl_support;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};

use common::{from_client, sa};
use ctl_support::Daemon;
use flowgate_dataplane::flow::{FlowTable, FlowTimeouts};
use flowgate_dataplane::pipeline::{Pipeline, Verdict};
use flowgate_dataplane::wire::builder::FrameBuilder;
use flowgate_dataplane::wire::{self, tcp_flags};

/// One service over four backends: .61 in zone dc1, the rest in dc2.
const RULES: &str = r#"
[[interfaces]]
name = "c"
mac = "02:66:67:00:00:01"
[[interfaces]]
name = "b"
mac = "02:66:67:00:01:01"
[[neighbours]]
address = "198.18.1.61"
mac = "02:66:67:00:01:61"
interface = "b"
[[neighbours]]
address = "198.18.1.62"
mac = "02:66:67:00:01:62"
interface = "b"
[[neighbours]]
address = "198.18.1.63"
mac = "02:66:67:00:01:63"
interface = "b"
[[neighbours]]
address = "198.18.1.64"
mac = "02:66:67:00:01:64"
interface = "b"

[[services]]
name = "svc"
protocol = "tcp"
vip = "198.18.100.10"
port = 80
maglev_table_size = 1009
[[services.backends]]
address = "198.18.1.61"
port = 8080
zone = "dc1"
[[services.backends]]
address = "198.18.1.62"
port = 8080
zone = "dc2"
[[services.backends]]
address = "198.18.1.63"
port = 8080
zone = "dc2"
[[services.backends]]
address = "198.18.1.64"
port = 8080
zone = "dc2"
"#;

/// A worker's pipeline and flow table over the control server's data
/// plane.
struct Worker<'d> {
    daemon: &'d Daemon,
    pipeline: Pipeline,
    flows: FlowTable,
}

impl Worker<'_> {
    /// The host part of the backend a segment of `client`:`port` goes to.
    fn send(&mut self, client: &str, port: u16, flags: u8) -> u8 {
        let snapshot = self.daemon.dataplane.current();
        let src = SocketAddr::new(client.parse().unwrap(), port);
        let mut buf = from_client(FrameBuilder::tcp(src, sa("198.18.100.10:80"), flags)).build();
        let (verdict, len) =
            self.pipeline
                .process_frame_len(&mut buf, 0, &snapshot, &mut self.flows, 1);
        buf.truncate(len);
        assert!(matches!(verdict, Verdict::Transmit(_)), "{verdict:?}");
        match wire::parse(&buf).unwrap().tuple.dst_ip() {
            IpAddr::V4(a) => a.octets()[3],
            IpAddr::V6(_) => panic!("IPv6 destination"),
        }
    }

    /// The hosts 32 new flows of `client` land on, sorted, deduplicated.
    fn new_flows(&mut self, client: &str) -> Vec<u8> {
        static NEXT: AtomicU16 = AtomicU16::new(30_000);
        let mut seen: Vec<u8> = (0..32)
            .map(|_| self.send(client, NEXT.fetch_add(1, Ordering::Relaxed), tcp_flags::SYN))
            .collect();
        seen.sort_unstable();
        seen.dedup();
        seen
    }
}

fn generation(daemon: &Daemon) -> u64 {
    let status = daemon.ctl(&["status", "-o", "json"]).ok();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    status["dataplane"]["generation"].as_u64().unwrap()
}

#[test]
fn a_class_added_by_flowgatectl_routes_the_next_new_flow_and_spares_established_ones() {
    let daemon = Daemon::start_rules(RULES);
    let config = flowgate_dataplane::rules::load_str(RULES, "gw.toml").unwrap();
    let mut worker = Worker {
        daemon: &daemon,
        pipeline: Pipeline::new(),
        flows: FlowTable::new(4096, FlowTimeouts::from(&config.flows)),
    };
    let client = "198.18.20.5";
    let spread = worker.new_flows(client);
    assert!(
        spread.len() > 1,
        "no class: the scheduler spreads {spread:?}"
    );
    // A connection established before the class, on a dc2 backend.
    let port = (1..2000)
        .find(|&p| worker.send(client, p, tcp_flags::SYN) != 61)
        .expect("some flow lands outside dc1");
    let established = worker.send(client, port, tcp_flags::ACK);
    assert_ne!(established, 61);

    let before = generation(&daemon);
    let dry = daemon
        .ctl(&[
            "class",
            "add",
            "198.18.20.0/24",
            "--zone",
            "dc1",
            "--dry-run",
        ])
        .ok();
    assert!(
        dry.contains("+ class 198.18.20.0/24 set - zone dc1"),
        "{dry}"
    );
    assert_eq!(generation(&daemon), before, "a dry run builds nothing");
    assert!(worker.new_flows(client).len() > 1);

    let added = daemon
        .ctl(&["class", "add", "198.18.20.0/24", "--zone", "dc1"])
        .ok();
    assert!(
        added.contains("+ class 198.18.20.0/24 set - zone dc1"),
        "{added}"
    );
    assert_eq!(
        generation(&daemon),
        before + 1,
        "a class edit is a snapshot"
    );
    // The next new flows of the class's clients go to their zone; other
    // clients keep the scheduler; the established flow stays.
    assert_eq!(worker.new_flows(client), [61]);
    assert!(worker.new_flows("198.18.21.5").len() > 1);
    assert_eq!(worker.send(client, port, tcp_flags::ACK), established);

    let listed = daemon.ctl(&["class", "list"]).ok();
    assert_eq!(
        listed,
        "PREFIX          SET  ZONE\n198.18.20.0/24  -    dc1\n"
    );
    // A typo'd zone is refused and changes nothing.
    let refused = daemon
        .ctl(&["class", "add", "198.18.22.0/24", "--zone", "dc-1"])
        .failed(1);
    assert!(refused.contains("zone \"dc-1\""), "{refused}");
    assert_eq!(generation(&daemon), before + 1);

    let removed = daemon.ctl(&["class", "del", "198.18.20.0/24"]).ok();
    assert!(removed.contains("- class 198.18.20.0/24"), "{removed}");
    assert!(worker.new_flows(client).len() > 1, "back to the scheduler");
}
