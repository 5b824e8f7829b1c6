//! Routing counters per service, from the data path to `stats` and
//! Prometheus: new flows through a worker's pipeline drive each case (a
//! path hit, a path whose backend is down, a SET placed and failing
//! closed, a canary pick, a zone fallback) on one service, others on a
//! second, and the counts read back per service from the pipeline, from a
//! metrics sample (summed on the control side) and from the exposition. A
//! service that routes by nothing has none, and a service id reused by a
//! new service starts from zero.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use common::{config, from_client};
use flowgate_dataplane::control::{ControlState, MemoryDataplane};
use flowgate_dataplane::flow::{FlowTable, FlowTimeouts};
use flowgate_dataplane::metrics::{self, MetricsCollector, MetricsSample, WorkerMetrics};
use flowgate_dataplane::pipeline::{DropReason, Pipeline, RouteCounterValues, Verdict};
use flowgate_dataplane::table::{EndpointId, ServiceId, Snapshot};
use flowgate_dataplane::wire::builder::FrameBuilder;
use flowgate_dataplane::wire::{self, addr_to_bytes, tcp_flags};

/// `svc` (port 80), which routes by everything, and `more` services:
/// [`ZONED`] (port 81) routes by zone only, [`PLAIN`] (port 82) and
/// [`OTHER`] (port 83) by nothing.
fn rules(more: &str) -> String {
    let mut s = String::from(
        "[[interfaces]]\nname = \"c\"\nmac = \"02:66:67:00:00:01\"\n\
         [[interfaces]]\nname = \"b\"\nmac = \"02:66:67:00:01:01\"\n",
    );
    for host in 61..=68 {
        s += &format!(
            "[[neighbours]]\naddress = \"198.18.1.{host}\"\nmac = \"02:66:67:00:01:{host:02x}\"\n\
             interface = \"b\"\n"
        );
    }
    s += r#"
[routing]
zone_priority = ["dc2"]
[[routing.classes]]
prefix = "198.18.10.0/24"
set = "shop.sh.g1"
[[routing.classes]]
prefix = "198.18.20.0/24"
zone = "dc1"

[[services]]
name = "svc"
protocol = "tcp"
vip = "198.18.100.10"
port = 80
maglev_table_size = 1009
[services.canary]
group = "v2"
share = 0
clients = ["198.18.30.0/24"]
[[services.paths]]
client = "198.18.60.5"
backends = ["orders-1"]
[[services.backends]]
address = "198.18.1.61"
port = 8080
name = "orders-1"
[[services.backends]]
address = "198.18.1.62"
port = 8080
set = "shop.sh.g1"
[[services.backends]]
address = "198.18.1.63"
port = 8080
zone = "dc1"
[[services.backends]]
address = "198.18.1.64"
port = 8080
zone = "dc2"
[[services.backends]]
address = "198.18.1.65"
port = 8080
group = "v2"
"#;
    s + more
}

const ZONED: &str = r#"
[[services]]
name = "zoned"
protocol = "tcp"
vip = "198.18.100.10"
port = 81
[[services.backends]]
address = "198.18.1.66"
port = 8080
zone = "dc1"
[[services.backends]]
address = "198.18.1.67"
port = 8080
zone = "dc2"
"#;

const PLAIN: &str = r#"
[[services]]
name = "plain"
protocol = "tcp"
vip = "198.18.100.10"
port = 82
[[services.backends]]
address = "198.18.1.68"
port = 8080
"#;

const OTHER: &str = r#"
[[services]]
name = "other"
protocol = "tcp"
vip = "198.18.100.10"
port = 83
[[services.backends]]
address = "198.18.1.68"
port = 8080
"#;

/// A worker over the control state's data plane.
struct Worker {
    dataplane: Arc<MemoryDataplane>,
    pipeline: Pipeline,
    flows: FlowTable,
}

impl Worker {
    /// A new flow of `client` to VIP port `port`: the backend's host part,
    /// or why it was dropped.
    fn new_flow(&mut self, client: &str, port: u16) -> Result<u8, DropReason> {
        static NEXT: AtomicU16 = AtomicU16::new(40_000);
        let snapshot = self.dataplane.current();
        let src = SocketAddr::new(
            client.parse().unwrap(),
            NEXT.fetch_add(1, Ordering::Relaxed),
        );
        let dst = SocketAddr::new("198.18.100.10".parse().unwrap(), port);
        let mut buf = from_client(FrameBuilder::tcp(src, dst, tcp_flags::SYN)).build();
        let (verdict, len) =
            self.pipeline
                .process_frame_len(&mut buf, 0, &snapshot, &mut self.flows, 1);
        buf.truncate(len);
        match verdict {
            Verdict::Transmit(_) => match wire::parse(&buf).unwrap().tuple.dst_ip() {
                IpAddr::V4(a) => Ok(a.octets()[3]),
                IpAddr::V6(_) => panic!("IPv6 destination"),
            },
            Verdict::Drop(reason) => Err(reason),
            other => panic!("unexpected verdict {other:?}"),
        }
    }

    /// `n` new flows of `client` to `port`, each placed.
    fn placed(&mut self, client: &str, port: u16, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| self.new_flow(client, port).unwrap())
            .collect()
    }

    fn set_up(&self, host: u8, up: bool) {
        let snapshot = self.dataplane.current();
        snapshot
            .liveness()
            .set_up(endpoint(&snapshot, host), up)
            .unwrap();
    }
}

/// The endpoint id of the backend at 198.18.1.`host`.
fn endpoint(s: &Snapshot, host: u8) -> EndpointId {
    let want = addr_to_bytes(IpAddr::from([198, 18, 1, host]));
    s.services()
        .flat_map(|(_, svc)| svc.endpoints().iter().copied())
        .find(|&e| s.endpoint(e).unwrap().address == want)
        .unwrap()
}

fn service_id(s: &Snapshot, name: &str) -> ServiceId {
    s.services().find(|(_, svc)| svc.name() == name).unwrap().0
}

/// A sample's routing totals of `name`.
fn sampled(sample: &MetricsSample, name: &str) -> RouteCounterValues {
    let i = sample.services.iter().position(|s| s.name == name).unwrap();
    sample.route_totals()[i]
}

/// New flows for each case: a path hit and fallback, a SET placed and
/// closed, a canary pick, a zone placed and fallen back on `svc`; one
/// zone's flows on `zoned`; plain flows on `plain`.
fn drive_each_case(w: &mut Worker) {
    // A path hit, then the path's backend down: a fallback.
    assert_eq!(w.placed("198.18.60.5", 80, 3), [61; 3]);
    w.set_up(61, false);
    assert!(w.placed("198.18.60.5", 80, 2).iter().all(|&h| h != 61));
    w.set_up(61, true);
    // A SET's client placed in its SET, then failing closed.
    assert_eq!(w.placed("198.18.10.9", 80, 4), [62; 4]);
    w.set_up(62, false);
    for _ in 0..5 {
        assert_eq!(
            w.new_flow("198.18.10.9", 80),
            Err(DropReason::AllBackendsDown)
        );
    }
    w.set_up(62, true);
    // A canary client: always the canary.
    assert_eq!(w.placed("198.18.30.4", 80, 6), [65; 6]);
    // A dc1 client: its zone, then (dc1 down) the next zone.
    assert_eq!(w.placed("198.18.20.4", 80, 7), [63; 7]);
    w.set_up(63, false);
    assert_eq!(w.placed("198.18.20.4", 80, 8), [64; 8]);
    // The same client on the zone-only service counts there.
    assert_eq!(w.placed("198.18.20.4", 81, 9), [66; 9]);
    // The plain service counts nothing.
    assert_eq!(w.placed("198.18.20.4", 82, 2), [68; 2]);
}

#[test]
fn each_routing_case_is_counted_for_its_own_service_up_to_stats_and_metrics() {
    let first = config(&rules(&format!("{ZONED}{PLAIN}")));
    let dataplane = Arc::new(MemoryDataplane::with_config(&first));
    let state = ControlState::new(first.clone(), "t.toml", dataplane.clone());
    let mut pipeline = Pipeline::new();
    pipeline.set_paths(dataplane.path_reader());
    let mut w = Worker {
        dataplane: dataplane.clone(),
        pipeline,
        flows: FlowTable::new(1 << 14, FlowTimeouts::from(&first.flows)),
    };
    let mut collector =
        MetricsCollector::new(vec![WorkerMetrics::new(0, None, &w.pipeline, &w.flows)]);

    drive_each_case(&mut w);

    let snapshot = dataplane.current();
    let routes = w.pipeline.route_counters();
    let svc = routes.service(service_id(&snapshot, "svc"));
    assert_eq!(svc.path_flows, 3);
    assert_eq!(svc.path_fallbacks, 2);
    assert_eq!(svc.set_flows, 4);
    assert_eq!(svc.set_closed, 5);
    assert_eq!(svc.canary_flows, 6);
    assert_eq!(svc.fallbacks, 8, "{svc:?}");
    // Own zone (7), the SET's (4) and the canary's (6) first steps, and
    // the path fallbacks' own decision (2, no class: the whole service).
    assert_eq!(svc.first_choice, 7 + 4 + 6 + 2, "{svc:?}");
    let zoned = routes.service(service_id(&snapshot, "zoned"));
    assert_eq!(
        zoned,
        RouteCounterValues {
            first_choice: 9,
            ..RouteCounterValues::default()
        }
    );
    assert_eq!(
        routes.service(service_id(&snapshot, "plain")),
        RouteCounterValues::default()
    );

    // Summed on the control side: the sample, the stats entry, /metrics.
    let sample = collector.collect(&snapshot, Vec::new());
    assert_eq!(sampled(&sample, "svc"), svc);
    assert_eq!(sampled(&sample, "zoned"), zoned);
    let stats = |name: &str| {
        let i = sample.services.iter().position(|s| s.name == name).unwrap();
        metrics::route_stats(sample.services[i].routed, sample.route_totals()[i])
    };
    let svc_stats = stats("svc").expect("a routed service has routing stats");
    assert_eq!(
        (
            svc_stats.path_flows,
            svc_stats.set_closed,
            svc_stats.fallbacks
        ),
        (3, 5, 8)
    );
    assert_eq!(stats("plain"), None, "a service that routes by nothing");
    let text = metrics::render(&sample, &snapshot);
    for (family, value) in [
        ("path_flows", 3),
        ("path_fallbacks", 2),
        ("set_closed", 5),
        ("canary_flows", 6),
        ("fallbacks", 8),
    ] {
        let line = format!(
            "flowgate_service_route_{family}_total{{worker=\"0\",service=\"svc\"}} {value}\n"
        );
        assert!(text.contains(&line), "{line} in:\n{text}");
    }
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("flowgate_service_route") && l.contains("\"plain\"")),
        "no routing series for the plain service"
    );

    // The zoned service goes and another takes its id (after a
    // generation, as ids are reused): it starts at zero although the
    // id's slot on the worker holds the old counts.
    let zoned_id = service_id(&snapshot, "zoned");
    assert!(
        state
            .apply_config(&config(&rules(PLAIN)), "t.toml")
            .unwrap()
            .applied
    );
    let next = config(&rules(&format!("{PLAIN}{OTHER}")));
    assert!(state.apply_config(&next, "t.toml").unwrap().applied);
    let snapshot = dataplane.current();
    assert_eq!(service_id(&snapshot, "other"), zoned_id, "the id is reused");
    assert_eq!(w.pipeline.route_counters().service(zoned_id), zoned);
    let sample = collector.collect(&snapshot, Vec::new());
    assert_eq!(sampled(&sample, "other"), RouteCounterValues::default());
    assert_eq!(
        sampled(&sample, "svc"),
        svc,
        "counts of a kept service stay"
    );
}
