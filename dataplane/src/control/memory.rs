//! A data plane in memory: builds and publishes real snapshots, reports
//! what it is given. Tests and benches run the control API against
//! it, with workers reading its snapshots through [`SnapshotReader`]s.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use flowgate_api::{
    FlowEntry, InterfaceInfo, ServiceStats, StatsReport, StatusReport, WorkerInfo, WorkerStats,
};

use super::dataplane::{Applied, ApplyError, Dataplane};
use super::views::{status_report, traffic_counters};
use crate::pipeline::PipelineCounters;
use crate::rules::{format_mac, Config};
use crate::table::{Snapshot, SnapshotPublisher, SnapshotReader};
use crate::xdp::{CapacityError, XdpCapacity};

/// A [`Dataplane`] whose "workers" are whoever holds one of its readers.
#[derive(Debug)]
pub struct MemoryDataplane {
    publisher: SnapshotPublisher,
    started: Instant,
    /// Held by an apply from its check to its publish, so that applies
    /// build on one another; reads never take it.
    applying: Mutex<()>,
    inner: Mutex<Inner>,
}

/// What the data plane was told, and what it reports back.
#[derive(Debug, Default)]
struct Inner {
    workers: Vec<(Option<usize>, Arc<PipelineCounters>)>,
    interfaces: Vec<InterfaceInfo>,
    services: Vec<ServiceStats>,
    flows: Vec<FlowEntry>,
    fail_next: Option<String>,
    applies: u64,
    /// The XDP maps' sizes its checks use (it has no maps).
    capacity: Option<XdpCapacity>,
}

impl Default for MemoryDataplane {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryDataplane {
    /// A data plane running no rules: generation 0.
    pub fn new() -> MemoryDataplane {
        MemoryDataplane {
            publisher: SnapshotPublisher::new(Snapshot::empty()),
            started: Instant::now(),
            applying: Mutex::new(()),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// A data plane already running `config`: generation 1.
    pub fn with_config(config: &Config) -> MemoryDataplane {
        let dataplane = MemoryDataplane::new();
        dataplane.publish(config);
        dataplane
    }

    /// A reader of the published snapshots, for a worker.
    pub fn reader(&self) -> SnapshotReader {
        self.publisher.reader()
    }

    /// The snapshot published last.
    pub fn current(&self) -> Arc<Snapshot> {
        self.publisher.current()
    }

    /// Reports a worker pinned to `core` with these counters.
    pub fn add_worker(&self, core: Option<usize>, counters: Arc<PipelineCounters>) {
        self.lock().workers.push((core, counters));
    }

    /// What `stats` reports per service.
    pub fn set_service_stats(&self, services: Vec<ServiceStats>) {
        self.lock().services = services;
    }

    /// What `flows` lists.
    pub fn set_flows(&self, flows: Vec<FlowEntry>) {
        self.lock().flows = flows;
    }

    /// Makes the next `apply` fail with `reason` (and change nothing).
    pub fn fail_next_apply(&self, reason: impl Into<String>) {
        self.lock().fail_next = Some(reason.into());
    }

    /// Checks rules against maps of `capacity` keys instead of the XDP
    /// program's ([`XdpCapacity::PROGRAM`], the default): small limits
    /// that tests can reach.
    pub fn set_capacity(&self, capacity: XdpCapacity) {
        self.lock().capacity = Some(capacity);
    }

    /// The map sizes its checks use.
    pub fn capacity(&self) -> XdpCapacity {
        self.lock().capacity.unwrap_or(XdpCapacity::PROGRAM)
    }

    /// How many applies succeeded.
    pub fn applies(&self) -> u64 {
        self.lock().applies
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Builds on the current snapshot and publishes; returns the
    /// generation. The snapshot is compiled holding no lock that `status`
    /// or `stats` take, as the daemon's is: a large change holds up no
    /// read. The caller makes sure applies do not overlap.
    fn publish(&self, config: &Config) -> u64 {
        let next = Snapshot::build(config, Some(&self.publisher.current()));
        let generation = next.generation();
        let interfaces = config
            .interfaces
            .iter()
            .enumerate()
            .map(|(port, i)| InterfaceInfo {
                name: i.name.clone(),
                port,
                ifindex: None,
                // In memory there is no kernel to ask: all zeros, as sent.
                mac: format_mac(&i.mac.unwrap_or_default()),
                xdp_mode: "none".into(),
                af_xdp_mode: "memory".into(),
                queues: 1,
                nic_queues: None,
            })
            .collect();
        let mut inner = self.lock();
        self.publisher.publish(next);
        inner.interfaces = interfaces;
        inner.applies += 1;
        generation
    }
}

impl Dataplane for MemoryDataplane {
    fn snapshot(&self) -> Option<Arc<Snapshot>> {
        Some(self.publisher.current())
    }

    fn check(&self, config: &Config) -> Result<(), CapacityError> {
        self.capacity().check(config)
    }

    fn apply(&self, config: &Config) -> Result<Applied, ApplyError> {
        let refused = |reason: String| ApplyError {
            reason,
            generation: self.generation(),
            kernel: "nothing else was changed (an in-memory data plane)".into(),
        };
        let _applying = self.applying.lock().unwrap_or_else(PoisonError::into_inner);
        // As the daemon does: the control state has checked already, but
        // a caller of `apply` alone must not get past the limits.
        self.check(config).map_err(|e| refused(e.to_string()))?;
        if let Some(reason) = self.lock().fail_next.take() {
            return Err(refused(reason));
        }
        Ok(Applied::clean(self.publish(config)))
    }

    fn status(&self) -> StatusReport {
        let inner = self.lock();
        let mut status = status_report(self.generation(), self.started.elapsed().as_secs());
        status.workers = inner
            .workers
            .iter()
            .enumerate()
            .map(|(id, (core, _))| WorkerInfo {
                id,
                core: *core,
                queues: inner
                    .interfaces
                    .iter()
                    .map(|i| format!("{}/{id}", i.name))
                    .collect(),
            })
            .collect();
        status.interfaces = inner.interfaces.clone();
        status
    }

    fn stats(&self) -> StatsReport {
        let inner = self.lock();
        let mut report = StatsReport {
            generation: self.generation(),
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            services: inner.services.clone(),
            workers: inner
                .workers
                .iter()
                .enumerate()
                .map(|(worker, (core, counters))| WorkerStats {
                    worker,
                    core: *core,
                    counters: traffic_counters(&counters.snapshot(), 0),
                })
                .collect(),
            ..StatsReport::default()
        };
        report.sum_workers();
        report
    }

    fn flows(&self, service: Option<&str>, limit: usize) -> Vec<FlowEntry> {
        self.lock()
            .flows
            .iter()
            .filter(|f| service.is_none() || f.service.as_deref() == service)
            .take(limit)
            .cloned()
            .collect()
    }

    fn generation(&self) -> u64 {
        self.publisher.current().generation()
    }
}
