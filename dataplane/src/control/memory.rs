//! A data plane in memory: builds and publishes real snapshots, reports
//! what it is given. Tests and benches run the control API against
//! it, with workers reading its snapshots through [`SnapshotReader`]s.
//! Backend health is real too: a [`HealthMonitor`] probes the backends the
//! rules check, takes heartbeats, and rebuilds the tables after a
//! transition, as the daemon's does.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use flowgate_api::{
    FlowEntry, InterfaceInfo, ServiceStats, StatsReport, StatusReport, WorkerInfo, WorkerStats,
};

use super::dataplane::{Applied, ApplyError, Dataplane, ServiceChanges};
use super::health::{initial_word, HealthMonitor};
use super::views::{status_report, syn_proxy_stats, syn_proxy_summary, traffic_counters};
use crate::capture::{CaptureHub, CaptureTap};
use crate::health::ProberOptions;
use crate::liveness::Liveness;
use crate::pipeline::PipelineCounters;
use crate::route::{PathErrors, PathReader};
use crate::rules::{format_mac, Config};
use crate::synproxy::SynProxyCounters;
use crate::table::{LivenessInput, PathRouting, PathUpdate};
use crate::table::{Snapshot, SnapshotPublisher, SnapshotReader};
use crate::xdp::{CapacityError, XdpCapacity};

/// A [`Dataplane`] whose "workers" are whoever holds one of its readers.
#[derive(Debug)]
pub struct MemoryDataplane {
    /// What an apply and a rebuild after a health transition share.
    build: Arc<Builds>,
    started: Instant,
    inner: Mutex<Inner>,
    health: Arc<HealthMonitor>,
}

/// The publisher and the rules it runs.
#[derive(Debug)]
struct Builds {
    publisher: SnapshotPublisher,
    /// The rules published last. Held by an apply from its check to its
    /// publish, and by a rebuild, so that they build on one another; reads
    /// never take it.
    running: Mutex<Option<Arc<Config>>>,
    /// The distribution paths of the rules published last, loaded after
    /// each publish (as the daemon's gateway does).
    paths: Mutex<PathRouting>,
}

impl Builds {
    /// Compiles `config` on the current snapshot, new endpoints starting
    /// as their health settings say.
    fn build(&self, config: &Config) -> Snapshot {
        self.build_changed(config, None)
    }

    /// [`Builds::build`], compiling only the services `changed` names
    /// when given (the rest differs in nothing from the current
    /// snapshot's rules).
    fn build_changed(&self, config: &Config, changed: Option<&[String]>) -> Snapshot {
        let previous = self.publisher.current();
        let table = Arc::clone(previous.liveness());
        let now_ns = table.now_ns();
        let initial = |s: &crate::rules::Service, b: &crate::rules::Backend| {
            initial_word(config, s, b, now_ns)
        };
        let input = LivenessInput {
            table: &table,
            now_ns,
            initial: &initial,
        };
        match changed {
            Some(names) => Snapshot::build_changed(config, &previous, input, names),
            None => Snapshot::build_with(config, Some(&previous), input),
        }
    }
}

/// What the data plane was told, and what it reports back.
#[derive(Debug, Default)]
struct Inner {
    workers: Vec<(Option<usize>, Arc<PipelineCounters>)>,
    interfaces: Vec<InterfaceInfo>,
    services: Vec<ServiceStats>,
    /// The SYN proxy's XDP counters, as if its program ran.
    syn_proxy: Option<SynProxyCounters>,
    flows: Vec<FlowEntry>,
    fail_next: Option<String>,
    applies: u64,
    /// The XDP maps' sizes its checks use (it has no maps).
    capacity: Option<XdpCapacity>,
    /// Capture rings of workers a test runs, once it asked for taps.
    capture: Option<Arc<CaptureHub>>,
}

impl Default for MemoryDataplane {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryDataplane {
    /// A data plane running no rules: generation 0.
    pub fn new() -> MemoryDataplane {
        let liveness = Arc::new(Liveness::new(Instant::now()));
        let empty = Snapshot::empty_with(Arc::clone(&liveness));
        let paths = Mutex::new(PathRouting::new(usize::MAX, &empty));
        let build = Arc::new(Builds {
            publisher: SnapshotPublisher::new(empty),
            running: Mutex::new(None),
            paths,
        });
        let health = HealthMonitor::new(liveness, ProberOptions::default());
        let rebuilds = Arc::clone(&build);
        // Without its thread the monitor still takes heartbeats and
        // reports; transitions and expiries then wait for the next apply.
        // A rebuild keeps the rules and every endpoint id, so the
        // monitor's plan stays right.
        let _ = health.start(Box::new(move || {
            let running = rebuilds
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(config) = running.as_ref() {
                let next = rebuilds.build(config);
                rebuilds.publisher.publish(next);
            }
        }));
        MemoryDataplane {
            build,
            started: Instant::now(),
            inner: Mutex::new(Inner::default()),
            health,
        }
    }

    /// Its health monitor.
    pub fn health(&self) -> &Arc<HealthMonitor> {
        &self.health
    }

    /// A data plane already running `config`: generation 1.
    pub fn with_config(config: &Config) -> MemoryDataplane {
        let dataplane = MemoryDataplane::new();
        let mut running = dataplane
            .build
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        dataplane.publish(&Arc::new(config.clone()), None, &mut running);
        drop(running);
        dataplane
    }

    /// A reader of the published snapshots, for a worker.
    pub fn reader(&self) -> SnapshotReader {
        self.build.publisher.reader()
    }

    /// A reader of the distribution paths, for a worker's pipeline.
    pub fn path_reader(&self) -> PathReader {
        self.build
            .paths
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .reader()
    }

    /// The snapshot published last.
    pub fn current(&self) -> Arc<Snapshot> {
        self.build.publisher.current()
    }

    /// Reports a worker pinned to `core` with these counters.
    pub fn add_worker(&self, core: Option<usize>, counters: Arc<PipelineCounters>) {
        self.lock().workers.push((core, counters));
    }

    /// What `stats` reports per service.
    pub fn set_service_stats(&self, services: Vec<ServiceStats>) {
        self.lock().services = services;
    }

    /// What `stats` reports of the SYN proxy's XDP half (as a daemon
    /// whose XDP programs run; the workers' half is their counters').
    pub fn set_syn_proxy(&self, counters: SynProxyCounters) {
        self.lock().syn_proxy = Some(counters);
    }

    /// Taps for `workers` workers a test runs over ports named
    /// `interfaces` (clock from `epoch`): `capture` then records what
    /// those workers decide.
    pub fn capture_taps(
        &self,
        workers: usize,
        interfaces: Vec<String>,
        epoch: Instant,
    ) -> Vec<CaptureTap> {
        let (hub, taps) = CaptureHub::new(workers, interfaces, epoch);
        self.lock().capture = Some(hub);
        taps
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

    /// Makes `config`, which differs from the running rules only in
    /// distribution paths, run: `edit` changes the path table (given the
    /// running rules and the current snapshot) and says whether a backend
    /// name got its first ref, which then takes a build so that it
    /// resolves.
    fn edit_paths(
        &self,
        config: &Config,
        edit: impl FnOnce(&mut PathRouting, &Config, &Snapshot) -> Result<bool, PathErrors>,
    ) -> Result<Applied, ApplyError> {
        let mut running = self
            .build
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(old) = running.as_ref() else {
            drop(running);
            return self.apply(config);
        };
        let current = self.build.publisher.current();
        let edited = edit(
            &mut self
                .build
                .paths
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            old,
            &current,
        );
        match edited {
            Ok(false) => {
                *running = Some(Arc::new(config.clone()));
                Ok(Applied::clean(current.generation()))
            }
            Ok(true) => {
                // A name no path held: build so that it resolves.
                let next = self.build.build(config);
                let generation = next.generation();
                self.build.publisher.publish(next);
                *running = Some(Arc::new(config.clone()));
                Ok(Applied::clean(generation))
            }
            Err(e) => Err(ApplyError {
                reason: format!("the path table refused the change: {e}"),
                generation: current.generation(),
                kernel: "nothing else was changed (an in-memory data plane)".into(),
            }),
        }
    }

    /// Builds on the current snapshot and publishes; returns the
    /// generation. The snapshot is compiled holding no lock that `status`
    /// or `stats` take, as the daemon's is: a large change holds up no
    /// read. The caller makes sure applies do not overlap.
    ///
    /// With `changes` made from the rules that run, only the services it
    /// names are compiled, and the health plan is patched for them alone.
    fn publish(
        &self,
        config: &Arc<Config>,
        changes: Option<ServiceChanges<'_>>,
        running: &mut Option<Arc<Config>>,
    ) -> u64 {
        let made_from_running =
            changes.filter(|c| running.as_ref().is_some_and(|r| c.made_from(r)));
        let changed = made_from_running.map(|c| c.services);
        // Services without paths, before and after: the path table stays.
        let paths_kept = made_from_running.is_some_and(|c| {
            !super::paths_in(c.since, c.services) && !super::paths_in(config, c.services)
        });
        let next = self.build.build_changed(config, changed);
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
        self.build.publisher.publish(next);
        inner.interfaces = interfaces;
        inner.applies += 1;
        drop(inner);
        *running = Some(Arc::clone(config));
        let mut generation = generation;
        let loaded = if paths_kept {
            Ok(false)
        } else {
            self.build
                .paths
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .load(config, &self.build.publisher.current())
        };
        match loaded {
            // A backend no path named before: build again so that the
            // snapshot resolves its name.
            Ok(true) => {
                let next = self.build.build(config);
                generation = next.generation();
                self.build.publisher.publish(next);
            }
            Ok(false) => {}
            Err(e) => tracing::warn!("the distribution paths were not changed: {e}"),
        }
        let current = self.build.publisher.current();
        let synced = match changed {
            Some(names) => self.health.sync_changed(config, &current, names),
            None => self.health.sync(config, &current),
        };
        match synced {
            // A word the rules changed (a check or a TTL taken away):
            // the tables are built again over the backends alive.
            Ok(true) => {
                let next = self.build.build(config);
                generation = next.generation();
                self.build.publisher.publish(next);
            }
            Ok(false) => {}
            Err(e) => tracing::warn!("health checks: {e}"),
        }
        generation
    }
}

impl Dataplane for MemoryDataplane {
    fn snapshot(&self) -> Option<Arc<Snapshot>> {
        Some(self.build.publisher.current())
    }

    fn paths(&self) -> Option<PathReader> {
        Some(self.path_reader())
    }

    fn check(&self, config: &Config) -> Result<(), CapacityError> {
        self.capacity().check(config)
    }

    fn apply(&self, config: &Config) -> Result<Applied, ApplyError> {
        self.apply_shared(&Arc::new(config.clone()), None)
    }

    fn apply_shared(
        &self,
        config: &Arc<Config>,
        changes: Option<ServiceChanges<'_>>,
    ) -> Result<Applied, ApplyError> {
        let refused = |reason: String| ApplyError {
            reason,
            generation: self.generation(),
            kernel: "nothing else was changed (an in-memory data plane)".into(),
        };
        let mut running = self
            .build
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // As the daemon does: the control state has checked already, but
        // a caller of `apply` alone must not get past the limits.
        self.check(config).map_err(|e| refused(e.to_string()))?;
        if let Some(reason) = self.lock().fail_next.take() {
            return Err(refused(reason));
        }
        Ok(Applied::clean(self.publish(config, changes, &mut running)))
    }

    fn apply_paths(&self, config: &Config) -> Result<Applied, ApplyError> {
        self.edit_paths(config, |paths, old, current| {
            paths.edit(old, config, current)
        })
    }

    fn apply_path_updates(
        &self,
        config: &Config,
        updates: &[PathUpdate],
    ) -> Result<Applied, ApplyError> {
        self.edit_paths(config, |paths, _, current| {
            paths.update(config, updates, current)
        })
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
        status.syn_proxy = inner.syn_proxy.map(|xdp| {
            let workers: Vec<_> = inner.workers.iter().map(|(_, c)| c.snapshot()).collect();
            syn_proxy_summary(&self.current(), &syn_proxy_stats(&xdp, &workers))
        });
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
                    fast_path: None,
                })
                .collect(),
            syn_proxy: inner.syn_proxy.map(|xdp| {
                let workers: Vec<_> = inner.workers.iter().map(|(_, c)| c.snapshot()).collect();
                syn_proxy_stats(&xdp, &workers)
            }),
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

    fn capture_hub(&self) -> Option<Arc<CaptureHub>> {
        self.lock().capture.clone()
    }

    fn generation(&self) -> u64 {
        self.build.publisher.current().generation()
    }

    fn backend_health(&self, service: &crate::rules::Service) -> Vec<flowgate_api::BackendHealth> {
        self.health.backend_health(service)
    }

    fn health_summary(&self, config: &Config) -> Option<flowgate_api::HealthSummary> {
        Some(self.health.summary(config))
    }

    fn heartbeat(
        &self,
        service: &str,
        backend: std::net::SocketAddr,
        ttl: std::time::Duration,
    ) -> Result<std::time::Duration, String> {
        self.health.heartbeat(service, backend, ttl)
    }

    fn set_reported_health(
        &self,
        reports: crate::fleet::health::Reported,
    ) -> Result<usize, String> {
        Ok(self.health.set_reported(reports))
    }
}

impl Drop for MemoryDataplane {
    fn drop(&mut self) {
        self.health.stop();
    }
}
