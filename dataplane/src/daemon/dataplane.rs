//! The running daemon as the control API and the metrics endpoint see it.
//!
//! Counters are read from the workers' shared counters (the workers are
//! never asked); live connections are asked for, through each worker's
//! query queue, and answered between its polls.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam::channel::Sender;

use super::gateway::Gateway;
use super::worker_thread::WorkerQuery;
use crate::control::{
    Applied, ApplyError, BackendStats, Dataplane, FlowEntry, InterfaceInfo, ServiceStats,
    StatsReport, StatusReport, TrafficCounters, WorkerInfo, WorkerStats,
};
use crate::metrics::{MetricsCollector, MetricsSample, RingStats};
use crate::rules::Config;
use crate::table::Snapshot;
use crate::xdp::CapacityError;

/// How long `flows` waits for each worker's answer.
const FLOWS_TIMEOUT: Duration = Duration::from_secs(1);

/// A worker as the control side knows it.
pub struct WorkerView {
    /// Worker index.
    pub index: usize,
    /// Core it is pinned to.
    pub core: usize,
    /// Its queues, as `interface/qN`.
    pub queues: Vec<String>,
    /// Its query queue.
    pub queries: Sender<WorkerQuery>,
}

/// The daemon behind the control API and the metrics endpoint.
pub struct DaemonDataplane {
    gateway: Arc<Gateway>,
    started: Instant,
    /// The workers' clock origin (connection times are counted from it).
    epoch: Instant,
    workers: Vec<WorkerView>,
    interfaces: Vec<InterfaceInfo>,
    collector: Mutex<MetricsCollector>,
    rings: Arc<Mutex<Vec<RingStats>>>,
}

impl DaemonDataplane {
    /// Joins what the control side needs to know about a running daemon.
    pub fn new(
        gateway: Arc<Gateway>,
        epoch: Instant,
        workers: Vec<WorkerView>,
        interfaces: Vec<InterfaceInfo>,
        collector: MetricsCollector,
        rings: Arc<Mutex<Vec<RingStats>>>,
    ) -> DaemonDataplane {
        DaemonDataplane {
            gateway,
            started: Instant::now(),
            epoch,
            workers,
            interfaces,
            collector: Mutex::new(collector),
            rings,
        }
    }

    /// A metrics sample now, with the snapshot it names.
    pub fn sample(&self) -> (MetricsSample, Arc<Snapshot>) {
        let snapshot = self.gateway.snapshot();
        let rings = lock(&self.rings).clone();
        let sample = lock(&self.collector).collect(&snapshot, rings);
        (sample, snapshot)
    }
}

impl Dataplane for DaemonDataplane {
    fn check(&self, config: &Config) -> Result<(), CapacityError> {
        self.gateway.check(config)
    }

    fn apply(&self, config: &Config) -> Result<Applied, ApplyError> {
        // The control state has already refused changes to restart-only
        // sections ([daemon], [[interfaces]], [flows]).
        self.gateway.apply(config.clone())
    }

    fn generation(&self) -> u64 {
        self.gateway.snapshot().generation()
    }

    fn status(&self) -> StatusReport {
        let mut report = StatusReport::new(
            self.gateway.snapshot().generation(),
            self.started.elapsed().as_secs(),
        );
        report.workers = self
            .workers
            .iter()
            .map(|w| WorkerInfo {
                id: w.index,
                core: Some(w.core),
                queues: w.queues.clone(),
            })
            .collect();
        report.interfaces = self.interfaces.clone();
        report
    }

    fn stats(&self) -> StatsReport {
        let (sample, _snapshot) = self.sample();
        let mut report = StatsReport {
            generation: sample.generation,
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            ..StatsReport::default()
        };
        report.workers = sample
            .workers
            .iter()
            .map(|w| WorkerStats {
                worker: w.worker,
                core: w.core,
                counters: TrafficCounters::from_values(&w.counters, w.connections),
            })
            .collect();
        report.sum_workers();
        let backend_totals = sample.backend_totals();
        let service_totals = sample.service_totals();
        report.services = sample
            .services
            .iter()
            .enumerate()
            .map(|(i, service)| {
                let total = service_totals.get(i).copied().unwrap_or_default();
                ServiceStats {
                    name: service.name.clone(),
                    packets: total.packets,
                    bytes: total.bytes,
                    active_flows: total.active_flows,
                    new_flows: total.new_flows,
                    backends: sample
                        .backends
                        .iter()
                        .zip(&backend_totals)
                        .filter(|(b, _)| b.service == i)
                        .map(|(b, v)| BackendStats {
                            address: b.address.ip(),
                            port: b.address.port(),
                            packets: v.packets,
                            bytes: v.bytes,
                            active_flows: v.active_flows,
                            new_flows: v.new_flows,
                        })
                        .collect(),
                }
            })
            .collect();
        report
    }

    fn flows(&self, service: Option<&str>, limit: usize) -> Vec<FlowEntry> {
        let mut answers = Vec::new();
        for worker in &self.workers {
            let (tx, rx) = crossbeam::channel::bounded(1);
            let wanted = service.map(str::to_owned);
            let index = worker.index;
            let epoch = self.epoch;
            let query: WorkerQuery = Box::new(move |flows, snapshot| {
                let now_ns = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
                let entries: Vec<FlowEntry> = flows
                    .iter()
                    .filter_map(|conn| {
                        let entry = FlowEntry::from_connection(index, conn, snapshot, now_ns);
                        match &wanted {
                            Some(name) if entry.service.as_deref() != Some(name) => None,
                            _ => Some(entry),
                        }
                    })
                    .take(limit)
                    .collect();
                let _ = tx.send(entries);
            });
            if worker.queries.try_send(query).is_ok() {
                answers.push(rx);
            }
        }
        let deadline = Instant::now() + FLOWS_TIMEOUT;
        let mut entries = Vec::new();
        for rx in answers {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Ok(mut part) = rx.recv_timeout(left) {
                entries.append(&mut part);
            }
        }
        entries.sort_by_key(|e| (e.client, e.vip));
        entries.truncate(limit);
        entries
    }
}

/// A queue as shown to operators.
pub fn queue_name(interface: &str, queue: u32) -> String {
    format!("{interface}/q{queue}")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
