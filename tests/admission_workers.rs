//! Flow control with two workers over in-memory ports, wired as the
//! daemon wires them (`Worker::with_admission` over one set of backend
//! lanes): the service's budget is shared, 90/10 traffic is held to the
//! rate within 10 %, a backend's cap counts both workers' connections, and
//! the refusals reach the Prometheus exposition per service and reason.

mod common;

use std::collections::HashMap;

use common::*;
use flowgate_dataplane::admission::{BackendConnections, ClientRateTable, WorkerAdmission};
use flowgate_dataplane::flow::{FlowTable, FlowTimeouts};
use flowgate_dataplane::metrics::{render, MetricsCollector, WorkerMetrics};
use flowgate_dataplane::port::{MemoryFrames, MemoryPort};
use flowgate_dataplane::table::Snapshot;
use flowgate_dataplane::wire::builder::FrameBuilder;
use flowgate_dataplane::wire::tcp_flags;
use flowgate_dataplane::worker::{CountingKernelPath, Worker};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;

/// One worker over its own two in-memory ports.
struct Lane {
    worker: Worker,
    memory: MemoryFrames,
    ports: Vec<MemoryPort>,
    kernel: CountingKernelPath,
}

impl Lane {
    fn new(admission: WorkerAdmission) -> Lane {
        let mut memory = MemoryFrames::new(4_096, 2_048);
        let pool = memory.pool();
        let flows = FlowTable::new(65_536, FlowTimeouts::default());
        let mut lane = Lane {
            worker: Worker::new(flows, pool, 2, 64).with_admission(admission),
            memory,
            ports: vec![
                MemoryPort::new("fg-client", 256),
                MemoryPort::new("fg-backend", 256),
            ],
            kernel: CountingKernelPath::default(),
        };
        lane.worker.poll(
            &mut lane.ports,
            &mut lane.memory,
            &Snapshot::empty(),
            &mut lane.kernel,
            0,
        );
        lane
    }

    /// Sends `frames` in from the client side at `now_ns`; how many went
    /// out to the backends.
    fn send(&mut self, frames: &[Vec<u8>], snapshot: &Snapshot, now_ns: u64) -> usize {
        for f in frames {
            assert!(self.ports[0].inject(&mut self.memory, f));
        }
        self.worker.poll(
            &mut self.ports,
            &mut self.memory,
            snapshot,
            &mut self.kernel,
            now_ns,
        );
        let mut out = Vec::new();
        self.ports[1].take_transmitted(&self.memory, &mut out);
        let mut back = Vec::new();
        self.ports[0].take_transmitted(&self.memory, &mut back);
        out.len()
    }
}

/// Two workers sharing one set of backend lanes, as `flowgate run` makes
/// them.
fn two_workers() -> Vec<Lane> {
    let (_, lanes) = BackendConnections::new(2, 1 << 16);
    lanes
        .into_iter()
        .enumerate()
        .map(|(w, l)| {
            Lane::new(WorkerAdmission::new(
                ClientRateTable::new(4_096, w as u64),
                l,
            ))
        })
        .collect()
}

fn rules(limits: &str) -> String {
    GOLDEN_RULES.replace(
        "port = 80\n[[services.backends]]\naddress = \"198.18.1.11\"",
        &format!("port = 80\n[services.limits]\n{limits}\n[[services.backends]]\naddress = \"198.18.1.11\""),
    )
}

fn syn(i: u64) -> Vec<u8> {
    let client = sa(&format!(
        "198.18.{}.{}:{}",
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        1024 + (i & 0xff)
    ));
    from_client(FrameBuilder::tcp(
        client,
        sa("198.18.100.10:80"),
        tcp_flags::SYN,
    ))
    .build()
}

/// `name{labels...} value` lines of an exposition whose labels include
/// every one of `labels`, summed.
fn metric(text: &str, name: &str, labels: &[&str]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[test]
fn two_workers_share_the_rate_90_10_and_the_refusals_reach_the_metrics() {
    let config = config(&rules("max_new_flows_per_s = 2000"));
    let snapshot = Snapshot::build(&config, None);
    let mut lanes = two_workers();
    let metrics: Vec<WorkerMetrics> = lanes
        .iter()
        .enumerate()
        .map(|(w, l)| WorkerMetrics::of_worker(w, None, &l.worker))
        .collect();
    // 20 000 SYNs a second for 2 s, in 1 ms batches: 18 to worker 0 and 2
    // to worker 1.
    let (mut admitted, mut offered) = (0, 0);
    for ms in 0..2_000u64 {
        let now = SEC + ms * MS;
        let batch: Vec<Vec<u8>> = (0..20).map(|k| syn(ms * 20 + k)).collect();
        offered += batch.len();
        admitted += lanes[0].send(&batch[..18], &snapshot, now);
        admitted += lanes[1].send(&batch[18..], &snapshot, now);
    }
    let allowed = 2_000 * 2 + 200;
    let error = (admitted as f64 - allowed as f64).abs() / f64::from(allowed);
    eprintln!("90/10 over two workers: {admitted} of {offered} admitted, {allowed} allowed");
    assert!(error <= 0.10, "{admitted} admitted, {allowed} allowed");
    // Both workers took part of the budget.
    let per_worker: Vec<u64> = lanes
        .iter()
        .map(|l| l.worker.pipeline().counters().new_flows.get())
        .collect();
    assert!(per_worker.iter().all(|&n| n > 0), "{per_worker:?}");

    let mut collector = MetricsCollector::new(metrics);
    let text = render(&collector.collect(&snapshot, Vec::new()), &snapshot);
    let refused = (offered - admitted) as u64;
    let by_reason = |reason: &str| {
        metric(
            &text,
            "flowgate_service_new_flows_refused_total",
            &["service=\"web\"", &format!("reason=\"{reason}\"")],
        )
    };
    assert_eq!(by_reason("service_rate"), refused);
    assert_eq!(by_reason("client_rate") + by_reason("backend_cap"), 0);
    assert_eq!(
        metric(
            &text,
            "flowgate_dropped_packets_total",
            &["reason=\"over_limit\""]
        ),
        refused
    );
    assert_eq!(
        metric(
            &text,
            "flowgate_service_new_flows_refused_total",
            &["service=\"web6\""]
        ),
        0
    );
}

#[test]
fn a_backend_cap_counts_both_workers_connections() {
    let config = config(&rules("max_connections = 10\nresume_connections = 5"));
    let snapshot = Snapshot::build(&config, None);
    let mut lanes = two_workers();
    // Alternate workers: together they fill the one backend to 10.
    let mut admitted: HashMap<usize, usize> = HashMap::new();
    for i in 0..30u64 {
        let w = (i % 2) as usize;
        *admitted.entry(w).or_default() += lanes[w].send(&[syn(i)], &snapshot, SEC);
    }
    let total: usize = admitted.values().sum();
    assert_eq!(total, 10, "{admitted:?}");
    assert!(admitted.values().all(|&n| n == 5), "{admitted:?}");
    let refused: u64 = lanes
        .iter()
        .map(|l| {
            l.worker
                .pipeline()
                .admission()
                .counters()
                .snapshot()
                .backend_cap
        })
        .sum();
    assert_eq!(refused, 20);
}
