//! The running daemon as the control API and the metrics endpoint see it.
//!
//! Everything is read on the calling (control or scrape) thread: counters
//! from the workers' shared single-writer counters, socket statistics
//! through descriptors of the control side's own. The one thing workers
//! are asked for is live connections: raw records, a bounded chunk per
//! poll ([`super::flow_query`]), which are sorted, named and formatted
//! here.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use flowgate_api::{
    BackendStats, FastPathStats, FastPathSummary, FlowEntry, InterfaceInfo, ServiceStats,
    StatsReport, StatusReport, WorkerFastPath, WorkerInfo, WorkerStats,
};

use super::flow_query::{self, FlowQueryClient};
use super::gateway::Gateway;
use crate::capture::CaptureHub;
use crate::control::health::HealthMonitor;
use crate::control::{
    flow_client, flow_entry, flow_vip, status_report, syn_proxy_stats, syn_proxy_summary,
    traffic_counters, Applied, ApplyError, Dataplane, ServiceChanges,
};
use crate::flow::{FlowFilter, FlowRecord};
use crate::metrics::{FastPathInterface, MetricsCollector, MetricsSample, RingStats};
use crate::port::xsk::XskStatsReader;
use crate::rules::Config;
use crate::synproxy::SynProxyCounters;
use crate::table::Snapshot;
use crate::xdp::CapacityError;

/// How long `flows` waits for the workers' answers, all together.
const FLOWS_TIMEOUT: Duration = Duration::from_secs(2);

/// A worker as the control side knows it.
pub struct WorkerView {
    /// Worker index.
    pub index: usize,
    /// Core it is pinned to.
    pub core: usize,
    /// Its queues, as `interface/qN`.
    pub queues: Vec<String>,
    /// The control side's end of its `flows` listings.
    pub flow_queries: FlowQueryClient,
    /// Readers of its sockets' statistics.
    pub sockets: Vec<XskStatsReader>,
}

/// A worker as `status` shows it.
struct WorkerLabel {
    index: usize,
    core: usize,
    queues: Vec<String>,
}

/// The daemon behind the control API and the metrics endpoint.
pub struct DaemonDataplane {
    gateway: Arc<Gateway>,
    started: Instant,
    /// The workers' clock origin (connection times are counted from it).
    epoch: Instant,
    workers: Vec<WorkerLabel>,
    /// One per worker, in worker order; one listing at a time.
    flow_queries: Mutex<Vec<FlowQueryClient>>,
    /// Every socket, with its worker's index.
    sockets: Vec<(usize, XskStatsReader)>,
    interfaces: Vec<InterfaceInfo>,
    collector: Mutex<MetricsCollector>,
    health: Arc<HealthMonitor>,
    /// The workers' capture rings (`flowgatectl capture`).
    capture: Option<Arc<CaptureHub>>,
    /// The fast path's figures as last read, answered while a change holds
    /// the filters.
    fast_path_read: Mutex<Option<Vec<FastPathInterface>>>,
    /// The SYN proxy's XDP counters as last read (`None`: no XDP program
    /// runs), answered while a change holds the filters.
    syn_proxy_read: Mutex<Option<SynProxyCounters>>,
}

impl DaemonDataplane {
    /// Joins what the control side needs to know about a running daemon.
    pub fn new(
        gateway: Arc<Gateway>,
        epoch: Instant,
        workers: Vec<WorkerView>,
        interfaces: Vec<InterfaceInfo>,
        collector: MetricsCollector,
        health: Arc<HealthMonitor>,
    ) -> DaemonDataplane {
        let mut labels = Vec::with_capacity(workers.len());
        let mut flow_queries = Vec::with_capacity(workers.len());
        let mut sockets = Vec::new();
        for worker in workers {
            labels.push(WorkerLabel {
                index: worker.index,
                core: worker.core,
                queues: worker.queues,
            });
            flow_queries.push(worker.flow_queries);
            sockets.extend(worker.sockets.into_iter().map(|s| (worker.index, s)));
        }
        DaemonDataplane {
            gateway,
            started: Instant::now(),
            epoch,
            workers: labels,
            flow_queries: Mutex::new(flow_queries),
            sockets,
            interfaces,
            collector: Mutex::new(collector),
            fast_path_read: Mutex::new(None),
            syn_proxy_read: Mutex::new(None),
            health,
            capture: None,
        }
    }

    /// Lets `capture` reach the workers' capture rings through `hub`.
    pub fn with_capture(mut self, hub: Arc<CaptureHub>) -> DaemonDataplane {
        self.capture = Some(hub);
        self
    }

    /// Brings the health checks in line with `config`, the rules now
    /// published, and rebuilds if that changed whether a backend is alive.
    pub fn sync_health(&self, config: &Config) {
        match self.health.sync(config, &self.gateway.snapshot()) {
            Ok(false) => {}
            Ok(true) => {
                if let Err(e) = self.gateway.rebuild() {
                    tracing::error!("rebuilding after a health change: {e}");
                }
            }
            Err(e) => tracing::error!("health checks: {e}"),
        }
    }

    /// [`DaemonDataplane::sync_health`] after a change that touched only
    /// the services `changed` names: the plan is patched for them.
    fn sync_health_changed(&self, config: &Config, changed: &[String]) {
        match self
            .health
            .sync_changed(config, &self.gateway.snapshot(), changed)
        {
            Ok(false) => {}
            Ok(true) => {
                if let Err(e) = self.gateway.rebuild() {
                    tracing::error!("rebuilding after a health change: {e}");
                }
            }
            Err(e) => tracing::error!("health checks: {e}"),
        }
    }

    /// A metrics sample now, with the snapshot it names. The sockets'
    /// statistics are read here, on the calling thread.
    pub fn sample(&self) -> (MetricsSample, Arc<Snapshot>) {
        let snapshot = self.gateway.snapshot();
        let rings = self
            .sockets
            .iter()
            .filter_map(|(worker, socket)| ring_stats(*worker, socket))
            .collect();
        let mut sample = lock(&self.collector).collect(&snapshot, rings);
        sample.health = self.health.samples();
        sample.fast_path = self.fast_path_interfaces();
        (sample, snapshot)
    }

    /// The XDP program's fast-path counters per interface (per-CPU
    /// counters summed here, one map read per counter); `None` when the
    /// daemon runs without the fast path. While a change holds the
    /// filters, the figures read last (a large change must not hold up
    /// `status` or a scrape).
    fn fast_path_interfaces(&self) -> Option<Vec<FastPathInterface>> {
        let read = self.gateway.try_with_filters(|filters| {
            let interfaces: Vec<FastPathInterface> = filters
                .iter()
                .filter_map(|f| {
                    let config = f.fast_config()?;
                    Some(FastPathInterface {
                        interface: f.interface().to_owned(),
                        on: config.egress_ready != 0,
                        counters: f.counters(),
                    })
                })
                .collect();
            (!interfaces.is_empty()).then_some(interfaces)
        });
        let mut last = lock(&self.fast_path_read);
        match read {
            Some(now) => {
                last.clone_from(&now);
                now
            }
            // A change is being installed: what was read last.
            None => last.clone(),
        }
    }
}

impl DaemonDataplane {
    /// The SYN proxy's XDP counters summed over the interfaces' programs;
    /// `None` when no XDP program runs. While a change holds the filters,
    /// the figures read last.
    fn syn_proxy_counters(&self) -> Option<SynProxyCounters> {
        let read = self.gateway.try_with_filters(|filters| {
            (!filters.is_empty()).then(|| {
                filters
                    .iter()
                    .map(crate::xdp::XdpFilter::syn_proxy_counters)
                    .fold(SynProxyCounters::default(), SynProxyCounters::plus)
            })
        });
        let mut last = lock(&self.syn_proxy_read);
        if let Some(now) = read {
            *last = now;
        }
        *last
    }
}

/// `stats`' fast-path figures: the program's counters summed over the
/// interfaces, and the workers' entries.
fn fast_path_stats(interfaces: &[FastPathInterface], entries: u64) -> FastPathStats {
    let mut stats = FastPathStats {
        entries,
        ..FastPathStats::default()
    };
    for i in interfaces {
        stats.forwarded_packets += i.counters.fast_forwarded();
        stats.forwarded_bytes += i.counters.fast_bytes;
        for (reason, n) in i.handed_up() {
            *stats.handed_up.entry(reason.to_owned()).or_default() += n;
        }
    }
    stats
}

/// One socket's statistics; none if the kernel would not give them.
fn ring_stats(worker: usize, socket: &XskStatsReader) -> Option<RingStats> {
    let kernel = match socket.kernel() {
        Ok(kernel) => kernel,
        Err(e) => {
            tracing::debug!(
                interface = socket.ifname(),
                queue = socket.queue(),
                "XDP_STATISTICS: {e}"
            );
            return None;
        }
    };
    let port = socket.port();
    Some(RingStats {
        worker,
        interface: socket.ifname().to_owned(),
        queue: socket.queue(),
        rx_dropped: kernel.rx_dropped,
        rx_invalid_descs: kernel.rx_invalid_descs,
        tx_invalid_descs: kernel.tx_invalid_descs,
        rx_ring_full: kernel.rx_ring_full,
        fill_ring_empty: kernel.fill_ring_empty,
        tx_ring_empty: kernel.tx_ring_empty,
        tx_rejected: port.tx_rejected,
        foreign_addrs: port.foreign_addrs,
        tx_wakeups: port.tx_wakeups,
        rx_wakeups: port.rx_wakeups,
        wakeup_errors: port.wakeup_errors,
    })
}

impl Dataplane for DaemonDataplane {
    fn check(&self, config: &Config) -> Result<(), CapacityError> {
        self.gateway.check(config)
    }

    fn apply(&self, config: &Config) -> Result<Applied, ApplyError> {
        // The control state has already refused changes to restart-only
        // sections ([daemon], [[interfaces]], [flows]).
        let applied = self.gateway.apply(config.clone())?;
        self.sync_health(config);
        Ok(applied)
    }

    fn apply_shared(
        &self,
        config: &Arc<Config>,
        changes: Option<ServiceChanges<'_>>,
    ) -> Result<Applied, ApplyError> {
        // Health was last brought in line with the rules that run: a
        // change made from them patches it for the changed services.
        let running = self.gateway.running_config();
        let changed = changes
            .filter(|c| c.made_from(&running))
            .map(|c| c.services);
        drop(running);
        let applied = self.gateway.apply_shared(Arc::clone(config), changes)?;
        match changed {
            Some(names) => self.sync_health_changed(config, names),
            None => self.sync_health(config),
        }
        Ok(applied)
    }

    fn apply_paths(&self, config: &Config) -> Result<Applied, ApplyError> {
        self.gateway.apply_paths(config.clone())
    }

    fn apply_path_updates(
        &self,
        config: &Config,
        updates: &[crate::table::PathUpdate],
    ) -> Result<Applied, ApplyError> {
        self.gateway.apply_path_updates(config.clone(), updates)
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
        ttl: Duration,
    ) -> Result<Duration, String> {
        self.health.heartbeat(service, backend, ttl)
    }

    fn set_reported_health(
        &self,
        reports: crate::fleet::health::Reported,
    ) -> Result<usize, String> {
        Ok(self.health.set_reported(reports))
    }

    fn snapshot(&self) -> Option<Arc<Snapshot>> {
        Some(self.gateway.snapshot())
    }

    fn paths(&self) -> Option<crate::route::PathReader> {
        Some(self.gateway.path_reader())
    }

    fn generation(&self) -> u64 {
        self.gateway.snapshot().generation()
    }

    fn capture_hub(&self) -> Option<Arc<CaptureHub>> {
        self.capture.clone()
    }

    fn status(&self) -> StatusReport {
        let snapshot = self.gateway.snapshot();
        let fast_path = self.fast_path_interfaces().map(|interfaces| {
            let entries = lock(&self.collector).fast_path_entries();
            let stats = fast_path_stats(&interfaces, entries);
            FastPathSummary {
                forwarding_on: interfaces
                    .iter()
                    .filter(|i| i.on)
                    .map(|i| i.interface.clone())
                    .collect(),
                entries,
                forwarded_packets: stats.forwarded_packets,
                handed_up: stats.handed_up_total(),
            }
        });
        let mut report = status_report(snapshot.generation(), self.started.elapsed().as_secs());
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
        report.fast_path = fast_path;
        // The workers' pipeline counters alone: a whole metrics sample
        // costs O(backends), which status must not pay.
        report.syn_proxy = self.syn_proxy_counters().map(|xdp| {
            let workers: Vec<_> = lock(&self.collector)
                .workers()
                .map(|w| w.pipeline.snapshot())
                .collect();
            let stats = syn_proxy_stats(&xdp, &workers);
            syn_proxy_summary(&snapshot, &stats)
        });
        // The MAC each interface sends from now (the kernel's, followed
        // while running, where the config gives none).
        for (port, info) in report.interfaces.iter_mut().enumerate() {
            if let Some(mac) = u16::try_from(port)
                .ok()
                .and_then(|p| snapshot.interface_mac(p))
            {
                info.mac = crate::rules::format_mac(&mac);
            }
        }
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
                counters: traffic_counters(&w.counters, w.connections),
                fast_path: sample.fast_path.as_ref().map(|_| WorkerFastPath {
                    packets: w.fast_path.packets,
                    bytes: w.fast_path.bytes,
                    entries: w.fast_path.entries,
                }),
            })
            .collect();
        report.fast_path = sample.fast_path.as_deref().map(|interfaces| {
            let entries = sample.workers.iter().map(|w| w.fast_path.entries).sum();
            fast_path_stats(interfaces, entries)
        });
        report.syn_proxy = self
            .syn_proxy_counters()
            .map(|xdp| syn_proxy_stats(&xdp, sample.workers.iter().map(|w| &w.counters)));
        report.sum_workers();
        let backend_totals = sample.backend_totals();
        let service_totals = sample.service_totals();
        let refusals = sample.service_refusals();

        let route_totals = sample.route_totals();
        report.services = sample
            .services
            .iter()
            .enumerate()
            .map(|(i, service)| {
                let total = service_totals.get(i).copied().unwrap_or_default();
                let refused = refusals.get(i).copied().unwrap_or_default();

                let routes = route_totals.get(i).copied().unwrap_or_default();
                ServiceStats {
                    routing: crate::metrics::route_stats(service.routed, routes),
                    name: service.name.clone(),
                    packets: total.packets,
                    bytes: total.bytes,
                    active_flows: total.active_flows,
                    new_flows: total.new_flows,
                    refused: flowgate_api::Refusals {
                        service_rate: refused.service_rate,
                        client_rate: refused.client_rate,
                        backend_cap: refused.backend_cap,
                        resets_sent: refused.resets_sent,
                    },
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
        let snapshot = self.gateway.snapshot();
        let filter = match service {
            None => FlowFilter::All,
            Some(name) => match snapshot.services().find(|(_, s)| s.name() == name) {
                Some((_, s)) => FlowFilter::To {
                    protocol: s.protocol(),
                    address: *s.vip(),
                    port: s.port(),
                },
                None => return Vec::new(),
            },
        };
        let deadline = Instant::now() + FLOWS_TIMEOUT;
        let listed = flow_query::list(&mut lock(&self.flow_queries), filter, limit, deadline);
        let mut records: Vec<(usize, FlowRecord)> = Vec::new();
        for (worker, part) in self.workers.iter().zip(listed) {
            if !part.complete {
                tracing::warn!(
                    worker = worker.index,
                    listed = part.records.len(),
                    "flows: the worker's listing did not finish in time; the reply has what it got"
                );
            }
            records.extend(part.records.into_iter().map(|r| (worker.index, r)));
        }
        records.sort_by_key(|(_, r)| (flow_client(r), flow_vip(r)));
        records.truncate(limit);
        let now_ns = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        records
            .iter()
            .map(|(worker, r)| flow_entry(*worker, r, &snapshot, now_ns))
            .collect()
    }
}

/// A queue as shown to operators.
pub fn queue_name(interface: &str, queue: u32) -> String {
    format!("{interface}/q{queue}")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
