//! What the data plane reports to the control API: status, counters and
//! live connections. The daemon fills these from its workers; the helpers
//! here turn the pipeline's own types into them, on the control side.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::flow::{FlowRecord, FlowState};
use crate::pipeline::CounterValues;
use crate::table::Snapshot;
use crate::wire::bytes_to_addr;

/// `status`: what runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    /// flowgate's version.
    pub version: String,
    /// The snapshot generation the workers are given.
    pub generation: u64,
    /// Seconds since the daemon started.
    pub uptime_s: u64,
    /// The worker threads.
    pub workers: Vec<WorkerInfo>,
    /// The interfaces, in port order.
    pub interfaces: Vec<InterfaceInfo>,
}

impl StatusReport {
    /// A report for this build's version with no workers or interfaces yet.
    pub fn new(generation: u64, uptime_s: u64) -> StatusReport {
        StatusReport {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            generation,
            uptime_s,
            workers: Vec::new(),
            interfaces: Vec::new(),
        }
    }
}

/// One worker thread.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerInfo {
    /// Worker number, from 0.
    pub id: usize,
    /// The CPU core it is pinned to (none: not pinned).
    pub core: Option<usize>,
    /// The queues it serves, as `interface/queue`.
    pub queues: Vec<String>,
}

/// One interface and how the gateway got hold of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceInfo {
    /// Its name.
    pub name: String,
    /// Its port index (position in the config).
    pub port: usize,
    /// The kernel's interface index, if known.
    pub ifindex: Option<u32>,
    /// Its MAC, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// The XDP attach mode it got: `native`, `generic`, or `none`.
    pub xdp_mode: String,
    /// The AF_XDP bind mode its sockets got: `zero-copy`, `copy`, or
    /// `memory` (no socket: the in-memory port).
    pub af_xdp_mode: String,
    /// Queues served.
    pub queues: u32,
}

/// `stats`: counters since start. Rates are computed by the client between
/// two samples, using `uptime_ms`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsReport {
    /// The snapshot generation when sampled.
    pub generation: u64,
    /// When sampled: milliseconds since the daemon started.
    pub uptime_ms: u64,
    /// The sum over workers.
    pub totals: TrafficCounters,
    /// Per service, with its backends.
    pub services: Vec<ServiceStats>,
    /// Per worker.
    pub workers: Vec<WorkerStats>,
}

impl StatsReport {
    /// Sets `totals` to the sum of the workers' counters.
    pub fn sum_workers(&mut self) {
        let mut totals = TrafficCounters::default();
        for w in &self.workers {
            totals.add(&w.counters);
        }
        self.totals = totals;
    }
}

/// Counters of a worker, or of all of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficCounters {
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Frames handed to the kernel.
    pub passed: u64,
    /// Connections tracked now.
    pub active_flows: u64,
    /// Connections created since start.
    pub new_flows: u64,
    /// Frames dropped, by reason (only reasons that occurred).
    pub drops: BTreeMap<String, u64>,
}

impl TrafficCounters {
    /// A worker's pipeline counters and the size of its connection table.
    pub fn from_values(values: &CounterValues, active_flows: u64) -> TrafficCounters {
        TrafficCounters {
            rx_packets: values.rx_packets,
            rx_bytes: values.rx_bytes,
            tx_packets: values.tx_packets,
            tx_bytes: values.tx_bytes,
            passed: values.passed,
            active_flows,
            new_flows: values.new_flows,
            drops: values
                .drops
                .iter()
                .map(|(reason, n)| ((*reason).to_owned(), *n))
                .collect(),
        }
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &TrafficCounters) {
        self.rx_packets += other.rx_packets;
        self.rx_bytes += other.rx_bytes;
        self.tx_packets += other.tx_packets;
        self.tx_bytes += other.tx_bytes;
        self.passed += other.passed;
        self.active_flows += other.active_flows;
        self.new_flows += other.new_flows;
        for (reason, n) in &other.drops {
            *self.drops.entry(reason.clone()).or_default() += n;
        }
    }

    /// Frames dropped for any reason.
    pub fn dropped(&self) -> u64 {
        self.drops.values().sum()
    }
}

/// One worker's counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerStats {
    /// Worker number.
    pub worker: usize,
    /// Its core.
    pub core: Option<usize>,
    /// Its counters.
    pub counters: TrafficCounters,
}

/// One service's traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceStats {
    /// Its name.
    pub name: String,
    /// Frames forwarded to its backends.
    pub packets: u64,
    /// Bytes forwarded to its backends.
    pub bytes: u64,
    /// Connections tracked now.
    pub active_flows: u64,
    /// Connections created since start.
    pub new_flows: u64,
    /// Per backend.
    pub backends: Vec<BackendStats>,
}

/// One backend's traffic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendStats {
    /// Its address.
    pub address: IpAddr,
    /// Its port.
    pub port: u16,
    /// Frames forwarded to it.
    pub packets: u64,
    /// Bytes forwarded to it.
    pub bytes: u64,
    /// Connections to it tracked now.
    pub active_flows: u64,
    /// Connections to it created since start.
    pub new_flows: u64,
}

/// One live connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowEntry {
    /// The worker tracking it.
    pub worker: usize,
    /// The service it was sent to (none: that service is gone).
    pub service: Option<String>,
    /// `tcp`, `udp`, or the protocol number.
    pub protocol: String,
    /// The client's address and port.
    pub client: SocketAddr,
    /// The VIP and port the client sent to.
    pub vip: SocketAddr,
    /// The backend it was given.
    pub backend: SocketAddr,
    /// `syn`, `established`, `closing`, `udp` or `other`.
    pub state: String,
    /// Milliseconds since its last packet.
    pub idle_ms: u64,
}

impl FlowEntry {
    /// A worker's connection record as a listing entry, made on the control
    /// side: the service is looked up in `snapshot` by the connection's
    /// protocol, VIP and port, and `now_ns` is on the workers' clock.
    pub fn from_record(
        worker: usize,
        record: &FlowRecord,
        snapshot: &Snapshot,
        now_ns: u64,
    ) -> FlowEntry {
        let client = &record.client;
        let service = snapshot
            .lookup_service(client.protocol, &client.dst, client.dst_port)
            .map(|(_, s)| s.name().to_owned());
        FlowEntry {
            worker,
            service,
            protocol: protocol_name(client.protocol),
            client: FlowEntry::client_of(record),
            vip: FlowEntry::vip_of(record),
            backend: SocketAddr::new(bytes_to_addr(&record.backend_addr), record.backend_port),
            state: state_name(record.state).to_owned(),
            idle_ms: now_ns.saturating_sub(record.last_seen_ns) / 1_000_000,
        }
    }

    /// The `client` a record lists as.
    pub fn client_of(record: &FlowRecord) -> SocketAddr {
        SocketAddr::new(record.client.src_ip(), record.client.src_port)
    }

    /// The `vip` a record lists as.
    pub fn vip_of(record: &FlowRecord) -> SocketAddr {
        SocketAddr::new(record.client.dst_ip(), record.client.dst_port)
    }
}

/// `tcp`, `udp`, `icmp`, `ipv6-icmp`, or the number.
fn protocol_name(protocol: u8) -> String {
    match protocol {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "ipv6-icmp".into(),
        n => n.to_string(),
    }
}

/// The short name of a connection state.
fn state_name(state: FlowState) -> &'static str {
    match state {
        FlowState::TcpSyn => "syn",
        FlowState::TcpEstablished => "established",
        FlowState::TcpClosing => "closing",
        FlowState::Udp => "udp",
        FlowState::Other => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Connection;
    use crate::pipeline::{DropReason, PipelineCounters};
    use crate::rules::load_str;
    use crate::wire::FiveTuple;

    #[test]
    fn worker_counters_sum_into_totals() {
        let a = PipelineCounters::default();
        a.rx_packets.add(10);
        a.new_flows.add(2);
        a.drop_for(DropReason::TtlExpired);
        let b = PipelineCounters::default();
        b.rx_packets.add(5);
        b.drop_for(DropReason::TtlExpired);
        b.drop_for(DropReason::NoEgressPort);
        let mut report = StatsReport {
            workers: vec![
                WorkerStats {
                    worker: 0,
                    core: Some(0),
                    counters: TrafficCounters::from_values(&a.snapshot(), 7),
                },
                WorkerStats {
                    worker: 1,
                    core: Some(1),
                    counters: TrafficCounters::from_values(&b.snapshot(), 3),
                },
            ],
            ..StatsReport::default()
        };
        report.sum_workers();
        assert_eq!(report.totals.rx_packets, 15);
        assert_eq!(report.totals.new_flows, 2);
        assert_eq!(report.totals.active_flows, 10);
        assert_eq!(report.totals.drops.get("ttl_expired"), Some(&2));
        assert_eq!(report.totals.dropped(), 3);
    }

    #[test]
    fn a_connection_lists_with_its_service_and_backend() {
        let config = load_str(
            "[[services]]\nname = \"web\"\nprotocol = \"tcp\"\nvip = \"198.18.100.10\"\nport = 80\n\
             [[services.backends]]\naddress = \"198.18.1.11\"\nport = 8080\n",
            "t.toml",
        )
        .unwrap();
        let snapshot = Snapshot::build(&config, None);
        let mut connection = Connection {
            client: FiveTuple::v4([198, 18, 0, 2], [198, 18, 100, 10], 40_000, 80, 6),
            backend_addr: crate::wire::addr_to_bytes("198.18.1.11".parse().unwrap()),
            backend_port: 8080,
            endpoint: 0,
            client_mac: [2, 0, 0, 0, 0, 2],
            client_ingress: 0,
            state: FlowState::TcpEstablished,
            last_seen_ns: 1_000_000_000,
        };
        let entry =
            FlowEntry::from_record(1, &FlowRecord::of(&connection), &snapshot, 3_500_000_000);
        assert_eq!(entry.service.as_deref(), Some("web"));
        assert_eq!(entry.client, "198.18.0.2:40000".parse().unwrap());
        assert_eq!(entry.vip, "198.18.100.10:80".parse().unwrap());
        assert_eq!(entry.backend, "198.18.1.11:8080".parse().unwrap());
        assert_eq!(
            (entry.protocol.as_str(), entry.state.as_str()),
            ("tcp", "established")
        );
        assert_eq!(entry.idle_ms, 2_500);
        assert_eq!(entry.worker, 1);

        connection.client.dst_port = 81;
        let gone = FlowEntry::from_record(0, &FlowRecord::of(&connection), &snapshot, 0);
        assert_eq!(gone.service, None);
        assert_eq!(gone.idle_ms, 0);
    }
}
