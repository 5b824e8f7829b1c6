//! The data plane's own types as the control API shows them.
//!
//! The API's types live in `flowgate-api`, which knows nothing of the data
//! plane (so that `flowgatectl` builds without it); the conversions live
//! here. A `From` impl where one value makes one view (a rule's service
//! or backend), a function where more goes in (a connection record with
//! the snapshot that names its service and the workers' clock; a worker's
//! counters with its table's size; this build's version).

use std::net::SocketAddr;

use flowgate_api::{
    BackendCheck, BackendView, FlowEntry, ServiceView, StatusReport, SynProxyStats,
    SynProxySummary, TrafficCounters,
};

use crate::flow::{FlowRecord, FlowState};
use crate::pipeline::CounterValues;
use crate::rules::{Backend, Service};
use crate::synproxy::SynProxyCounters;
use crate::table::Snapshot;
use crate::wire::bytes_to_addr;

impl From<&Service> for ServiceView {
    fn from(s: &Service) -> ServiceView {
        ServiceView {
            name: s.name.clone(),
            protocol: s.protocol.name().to_owned(),
            vip: s.vip,
            port: s.port,
            scheduler: s.scheduler.name().to_owned(),
            maglev_table_size: s.maglev_table_size,
            backends: s
                .backends
                .iter()
                .map(|b| BackendView {
                    heartbeat_ttl: crate::rules::heartbeat_ttl_of(s, b)
                        .map(crate::rules::format_duration),
                    ..BackendView::from(b)
                })
                .collect(),
        }
    }
}

impl From<&Backend> for BackendView {
    fn from(b: &Backend) -> BackendView {
        BackendView {
            address: b.address,
            port: b.port,
            weight: b.weight,
            zone: b.zone.clone(),
            set: b.set.clone(),
            group: b.group.clone(),
            check: b.health.overrides_check().then(|| BackendCheck {
                kind: b.health.kind.map(|k| k.to_string()),
                port: b.health.port,
            }),
            health: None,
            heartbeat_ttl: b.health.heartbeat_ttl.map(crate::rules::format_duration),
        }
    }
}

/// A status report of this build's version with no workers or interfaces
/// yet.
pub fn status_report(generation: u64, uptime_s: u64) -> StatusReport {
    StatusReport {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        generation,
        uptime_s,
        workers: Vec::new(),
        interfaces: Vec::new(),
        fast_path: None,
        syn_proxy: None,
    }
}

/// A worker's pipeline counters and the size of its connection table.
pub fn traffic_counters(values: &CounterValues, active_flows: u64) -> TrafficCounters {
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

/// `stats`' SYN proxy figures: the XDP half's counters (summed over the
/// interfaces' programs) and the workers' counters, summed.
pub fn syn_proxy_stats<'a>(
    xdp: &SynProxyCounters,
    workers: impl IntoIterator<Item = &'a CounterValues>,
) -> SynProxyStats {
    let mut stats = SynProxyStats {
        cookies_sent: xdp.cookies_sent,
        cookies_valid: xdp.cookies_valid,
        cookies_invalid: xdp.cookies_invalid,
        syns_refused: xdp.syn_refused,
        marks_forged: xdp.mark_forged,
        acks_unchecked: xdp.ack_unchecked,
        probes_valid: xdp.probes_valid,
        ..SynProxyStats::default()
    };
    for w in workers {
        stats.connections += w.synproxy_connections;
        stats.established += w.synproxy_established;
    }
    stats
}

/// `status`' SYN proxy line: the services `snapshot` proxies and a few
/// of `stats`' figures.
pub fn syn_proxy_summary(snapshot: &Snapshot, stats: &SynProxyStats) -> SynProxySummary {
    SynProxySummary {
        services: snapshot
            .services()
            .filter(|(_, s)| s.syn_proxy().is_enabled())
            .map(|(_, s)| format!("{} ({})", s.name(), s.syn_proxy().name()))
            .collect(),
        cookies_sent: stats.cookies_sent,
        refused: stats.refused(),
        connections: stats.connections,
    }
}

/// A worker's connection record as a listing entry, made on the control
/// side: the service is looked up in `snapshot` by the connection's
/// protocol, VIP and port, and `now_ns` is on the workers' clock.
pub fn flow_entry(
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
        client: flow_client(record),
        vip: flow_vip(record),
        backend: SocketAddr::new(bytes_to_addr(&record.backend_addr), record.backend_port),
        state: state_name(record.state).to_owned(),
        idle_ms: now_ns.saturating_sub(record.last_seen_ns) / 1_000_000,
    }
}

/// The `client` a record lists as.
pub fn flow_client(record: &FlowRecord) -> SocketAddr {
    SocketAddr::new(record.client.src_ip(), record.client.src_port)
}

/// The `vip` a record lists as.
pub fn flow_vip(record: &FlowRecord) -> SocketAddr {
    SocketAddr::new(record.client.dst_ip(), record.client.dst_port)
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
    use flowgate_api::{StatsReport, WorkerStats};

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
                    counters: traffic_counters(&a.snapshot(), 7),
                    fast_path: None,
                },
                WorkerStats {
                    worker: 1,
                    core: Some(1),
                    counters: traffic_counters(&b.snapshot(), 3),
                    fast_path: None,
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
    fn the_syn_proxy_shows_its_xdp_counters_and_the_workers_sum() {
        let xdp = SynProxyCounters {
            cookies_sent: 1000,
            cookies_valid: 12,
            cookies_invalid: 5,
            syn_refused: 3,
            mark_forged: 2,
            ack_unchecked: 1,
            probes_valid: 4,
        };
        let a = PipelineCounters::default();
        a.synproxy_connections.add(7);
        a.synproxy_established.add(6);
        let b = PipelineCounters::default();
        b.synproxy_connections.add(5);
        b.synproxy_established.add(5);
        let stats = syn_proxy_stats(&xdp, [&a.snapshot(), &b.snapshot()]);
        assert_eq!(
            stats,
            SynProxyStats {
                cookies_sent: 1000,
                cookies_valid: 12,
                cookies_invalid: 5,
                syns_refused: 3,
                marks_forged: 2,
                acks_unchecked: 1,
                probes_valid: 4,
                connections: 12,
                established: 11,
            }
        );
        assert_eq!(stats.refused(), 10);
        // As JSON: every counter under its name, nothing else.
        let json = serde_json::to_value(stats).unwrap();
        assert_eq!(json.as_object().unwrap().len(), 9);
        assert_eq!(json["probes_valid"], 4);
    }

    #[test]
    fn status_names_the_proxied_services_with_their_mode() {
        let config = load_str(
            "[[services]]\nname = \"web\"\nprotocol = \"tcp\"\nvip = \"198.18.100.10\"\nport = 80\n\
             syn_proxy = \"on\"\n\
             [[services.backends]]\naddress = \"198.18.1.11\"\nport = 8080\n\
             [[services]]\nname = \"api\"\nprotocol = \"tcp\"\nvip = \"198.18.100.11\"\nport = 80\n\
             syn_proxy = \"auto\"\n\
             [[services.backends]]\naddress = \"198.18.1.11\"\nport = 8080\n\
             [[services]]\nname = \"plain\"\nprotocol = \"tcp\"\nvip = \"198.18.100.12\"\nport = 80\n\
             [[services.backends]]\naddress = \"198.18.1.11\"\nport = 8080\n",
            "t.toml",
        )
        .unwrap();
        let snapshot = Snapshot::build(&config, None);
        let stats = SynProxyStats {
            cookies_sent: 50,
            cookies_invalid: 3,
            syns_refused: 1,
            connections: 9,
            ..SynProxyStats::default()
        };
        let summary = syn_proxy_summary(&snapshot, &stats);
        let mut services = summary.services.clone();
        services.sort();
        assert_eq!(services, ["api (auto)", "web (on)"]);
        assert_eq!(
            (summary.cookies_sent, summary.refused, summary.connections),
            (50, 4, 9)
        );
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
        let entry = flow_entry(1, &FlowRecord::of(&connection), &snapshot, 3_500_000_000);
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
        let gone = flow_entry(0, &FlowRecord::of(&connection), &snapshot, 0);
        assert_eq!(gone.service, None);
        assert_eq!(gone.idle_ms, 0);
    }

    #[test]
    fn a_rule_shows_as_its_view_with_its_backends_in_order() {
        let config = load_str(
            "[[services]]\nname = \"dns\"\nprotocol = \"udp\"\nvip = \"2001:2::53\"\nport = 53\n\
             scheduler = \"sh\"\n\
             [[services.backends]]\naddress = \"2001:2::12\"\nport = 5353\nweight = 0\nzone = \"b\"\n\
             [[services.backends]]\naddress = \"2001:2::11\"\nport = 5353\n",
            "t.toml",
        )
        .unwrap();
        let view = ServiceView::from(&config.services[0]);
        assert_eq!(
            serde_json::to_string(&view).unwrap(),
            r#"{"name":"dns","protocol":"udp","vip":"2001:2::53","port":53,"scheduler":"sh","maglev_table_size":65537,"backends":[{"address":"2001:2::12","port":5353,"weight":0,"zone":"b"},{"address":"2001:2::11","port":5353,"weight":1}]}"#
        );
        assert_eq!(status_report(7, 9).version, env!("CARGO_PKG_VERSION"));
    }
}
