//! The scrape model, and how it is read from the workers' shared counters.
//!
//! A worker's counters live behind `Arc`s it shares at start-up (its
//! [`PipelineCounters`], its connection table's [`FlowCounters`] and its
//! loop's [`WorkerCounters`]); the daemon keeps one [`WorkerMetrics`] per
//! worker and a [`MetricsCollector`] over them, and asks the collector for a
//! [`MetricsSample`] at each scrape. The control state's
//! [`ChangeCounters`] (refused rule changes) are read alongside, when the
//! collector is given them.
//!
//! Per-endpoint counts are kept by endpoint id, and ids are reused: an id
//! freed when a backend is removed may later name another backend. The
//! collector therefore remembers, per worker and id, which backend its
//! counts belong to. When an id stops naming that backend, the backend's
//! counts so far move into its service's "retired" counts (so the service's
//! totals never go down when a backend leaves) and the next backend to get
//! the id starts from zero. Counts that reach an id between its backend's
//! removal and the next scrape go to that id's next backend; scrape more
//! often than rules change if that matters.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::Serialize;

use super::changes::{ChangeCounters, ChangeValues};
use crate::admission::{AdmissionCounters, AdmissionValues, ServiceRefusals};
use crate::flow::{Departure, EndpointValues, FastPathValues, FlowCounters, FlowTable};
use crate::pipeline::{
    CounterValues, Pipeline, PipelineCounters, RouteCounterValues, RouteCounters,
};
use crate::table::{EndpointId, ServiceId, Snapshot};
use crate::wire::bytes_to_addr;
use crate::worker::{Worker, WorkerCounters};
use crate::xdp::XdpCounters;

/// What the daemon keeps of one worker: `Arc`s to the counters it writes.
#[derive(Clone, Debug)]
pub struct WorkerMetrics {
    /// The worker's index (the `worker` label).
    pub worker: usize,
    /// The core it is pinned to, if any.
    pub core: Option<usize>,
    /// Its pipeline's counters.
    pub pipeline: Arc<PipelineCounters>,
    /// Its connection table's size and per-endpoint counters.
    pub flows: Arc<FlowCounters>,
    /// Its pipeline's routing counters, per service id.
    pub routes: Arc<RouteCounters>,
    /// Its loop's counters (hand-overs, idle polls, generation in use),
    /// when it has them.
    pub loop_counters: Option<Arc<WorkerCounters>>,
    /// Its admission counters (refusals by reason, RSTs, client-table
    /// evictions).
    pub admission: Arc<AdmissionCounters>,
    /// Its refusals per service.
    pub service_refusals: Arc<ServiceRefusals>,
}

impl WorkerMetrics {
    /// Shares the counters of a worker's pipeline and connection table
    /// (take it before the worker moves to its thread).
    pub fn new(worker: usize, core: Option<usize>, pipeline: &Pipeline, flows: &FlowTable) -> Self {
        WorkerMetrics {
            worker,
            core,
            pipeline: Arc::clone(pipeline.counters()),
            flows: Arc::clone(flows.counters()),
            routes: Arc::clone(pipeline.route_counters()),
            loop_counters: None,
            admission: Arc::clone(pipeline.admission().counters()),
            service_refusals: Arc::clone(pipeline.admission().service_refusals()),
        }
    }

    /// Shares every counter of `w`: its pipeline's, its connection
    /// table's and its loop's.
    pub fn of_worker(worker: usize, core: Option<usize>, w: &Worker) -> Self {
        WorkerMetrics {
            loop_counters: Some(Arc::clone(w.counters())),
            ..WorkerMetrics::new(worker, core, w.pipeline(), w.flows())
        }
    }
}

/// A worker loop's counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LoopValues {
    /// Snapshot generation of the worker's latest batch (0 before any).
    pub generation: u64,
    /// Frames handed to the worker that owns their connection.
    pub handed_out: u64,
    /// Frames received from other workers.
    pub handed_in: u64,
    /// Frames dropped because the owner's inbox was full.
    pub handoff_full: u64,
    /// Polls that found no frame.
    pub idle_polls: u64,
    /// Polls, busy or idle.
    pub polls: u64,
}

impl LoopValues {
    fn of(c: &WorkerCounters) -> LoopValues {
        use std::sync::atomic::Ordering::Relaxed;
        LoopValues {
            generation: c.generation.load(Relaxed),
            handed_out: c.handed_out.load(Relaxed),
            handed_in: c.handed_in.load(Relaxed),
            handoff_full: c.handoff_full.load(Relaxed),
            idle_polls: c.idle_polls.load(Relaxed),
            polls: c.polls.load(Relaxed),
        }
    }
}

/// AF_XDP statistics of one socket (one interface queue): the kernel's
/// (`XDP_STATISTICS`) and the port's own counters. The daemon reads them on
/// the scraping thread, through a descriptor of its own and the port's
/// shared counters; the worker running the socket takes no part.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RingStats {
    /// The worker that owns the socket.
    pub worker: usize,
    /// The interface's name.
    pub interface: String,
    /// The queue the socket is bound to.
    pub queue: u32,
    /// Frames the kernel dropped for reasons other than invalid descriptors.
    pub rx_dropped: u64,
    /// Invalid descriptors on the receive side.
    pub rx_invalid_descs: u64,
    /// Invalid descriptors on the transmit side.
    pub tx_invalid_descs: u64,
    /// Frames dropped because the receive ring was full.
    pub rx_ring_full: u64,
    /// Times the fill ring was found empty.
    pub fill_ring_empty: u64,
    /// Times the transmit ring was found empty.
    pub tx_ring_empty: u64,
    /// Frames the port refused to put on the transmit ring (not a frame it
    /// could send).
    pub tx_rejected: u64,
    /// Addresses the port found that are not frames of the UMEM, dropped.
    pub foreign_addrs: u64,
    /// Transmit wakeups (`sendto`) the port made.
    pub tx_wakeups: u64,
    /// Receive wakeups (`poll`) the port made.
    pub rx_wakeups: u64,
    /// Wakeups the kernel answered with an error.
    pub wakeup_errors: u64,
}

/// A service of the snapshot a sample was taken against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceInfo {
    /// Its id in that snapshot.
    pub id: ServiceId,
    /// Its name (the `service` label).
    pub name: String,
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    /// Its VIP and port.
    pub vip: SocketAddr,
    /// Whether it routes by client (SETs, zones or a canary): its routing
    /// counters are reported even while zero.
    pub routed: bool,
}

/// A backend of the snapshot a sample was taken against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendInfo {
    /// Its endpoint id in that snapshot.
    pub id: EndpointId,
    /// Index of its service in [`MetricsSample::services`].
    pub service: usize,
    /// Its address and port (the `backend` label).
    pub address: SocketAddr,
    /// Its weight (0: draining).
    pub weight: u32,
}

/// One worker's counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WorkerSample {
    /// The worker's index.
    pub worker: usize,
    /// The core it is pinned to, if any.
    pub core: Option<usize>,
    /// Its pipeline counters.
    pub counters: CounterValues,
    /// Connections in its table.
    pub connections: u64,
    /// Most connections its table holds.
    pub connection_capacity: u64,
    /// Records that left its table, per [`Departure::ALL`].
    pub departures: [u64; Departure::ALL.len()],
    /// Per service, in the order of [`MetricsSample::services`]: the sums
    /// over the service's backends, plus the counts of backends it had.
    pub services: Vec<EndpointValues>,
    /// Per backend, in the order of [`MetricsSample::backends`].
    pub backends: Vec<EndpointValues>,
    /// Per service, in the order of [`MetricsSample::services`]: what
    /// routing by client decided for its new flows (since the service got
    /// its id).
    pub routes: Vec<RouteCounterValues>,
    /// Its loop's counters, if the worker shared them.
    pub loop_values: Option<LoopValues>,
    /// Its admission counters.
    pub admission: AdmissionValues,
    /// Per service, in the order of [`MetricsSample::services`]: the new
    /// flows its limits refused on this worker, by reason.
    pub refusals: Vec<AdmissionValues>,
    /// What the kernel fast path forwarded for its connections (zero
    /// without one).
    pub fast_path: FastPathValues,
}

/// The kernel fast path's program counters on one interface, read at the
/// scrape (the program's per-CPU counters summed: no work per packet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FastPathInterface {
    /// The interface's name (the `interface` label).
    pub interface: String,
    /// Whether its program instance forwards from the cache now.
    pub on: bool,
    /// The program's counters.
    pub counters: XdpCounters,
}

impl FastPathInterface {
    /// Owned packets handed up to the workers, by reason, every reason
    /// (the names of `flowgatectl stats` and the `reason` label).
    pub fn handed_up(&self) -> [(&'static str, u64); 11] {
        let c = &self.counters;
        let mut out = [("", 0); 11];
        out[0] = ("miss", c.fast_miss);
        out[1] = ("no_egress", c.fast_no_egress);
        for (o, r) in out[2..].iter_mut().zip(c.fast_up.by_reason()) {
            *o = r;
        }
        out
    }
}

/// Everything a scrape reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MetricsSample {
    /// Generation of the snapshot the sample was taken against.
    pub generation: u64,
    /// That snapshot's services, in id order.
    pub services: Vec<ServiceInfo>,
    /// That snapshot's backends, grouped by service.
    pub backends: Vec<BackendInfo>,
    /// One entry per worker.
    pub workers: Vec<WorkerSample>,
    /// One entry per AF_XDP socket (empty over in-memory ports).
    pub rings: Vec<RingStats>,
    /// Refused rule changes, if the collector was given the control
    /// state's counters.
    pub changes: Option<ChangeValues>,
    /// Each backend's health, when the data plane tracks it.
    #[serde(skip)]
    pub health: Vec<crate::control::health::BackendHealthSample>,
    /// Where the rules from etcd stand, on a gateway with `[etcd]`.
    #[serde(skip)]
    pub etcd: Option<flowgate_api::EtcdStatus>,
    /// Whether the operator drained the gateway from the fleet, when the
    /// control state is there to ask.
    #[serde(skip)]
    pub drained: Option<bool>,
    /// The kernel fast path's program counters per interface, when the
    /// daemon runs the fast path.
    #[serde(skip)]
    pub fast_path: Option<Vec<FastPathInterface>>,
    /// The SYN proxy's XDP counters, summed over interfaces, on a gateway
    /// that runs the XDP program.
    #[serde(skip)]
    pub syn_proxy: Option<crate::synproxy::SynProxyCounters>,
}

impl MetricsSample {
    /// The sum over workers of each backend's values, in the order of
    /// [`MetricsSample::backends`].
    pub fn backend_totals(&self) -> Vec<EndpointValues> {
        totals(
            self.backends.len(),
            self.workers.iter().map(|w| &w.backends),
        )
    }

    /// The sum over workers of each service's refusals, in the order of
    /// [`MetricsSample::services`].
    pub fn service_refusals(&self) -> Vec<AdmissionValues> {
        let mut sum = vec![AdmissionValues::default(); self.services.len()];
        for w in &self.workers {
            for (s, v) in sum.iter_mut().zip(&w.refusals) {
                *s += *v;
            }
        }
        sum
    }

    /// The sum over workers of each service's values, in the order of
    /// [`MetricsSample::services`].
    pub fn service_totals(&self) -> Vec<EndpointValues> {
        totals(
            self.services.len(),
            self.workers.iter().map(|w| &w.services),
        )
    }

    /// The sum over workers of each service's routing counters, in the
    /// order of [`MetricsSample::services`].
    pub fn route_totals(&self) -> Vec<RouteCounterValues> {
        let mut sum = vec![RouteCounterValues::default(); self.services.len()];
        for worker in &self.workers {
            for (s, v) in sum.iter_mut().zip(&worker.routes) {
                *s += *v;
            }
        }
        sum
    }
}

fn totals<'a>(
    n: usize,
    rows: impl Iterator<Item = &'a Vec<EndpointValues>>,
) -> Vec<EndpointValues> {
    let mut sum = vec![EndpointValues::default(); n];
    for row in rows {
        for (s, v) in sum.iter_mut().zip(row) {
            *s += *v;
        }
    }
    sum
}

/// What makes a service id the same service: its (protocol, VIP, port).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ServiceKey {
    protocol: u8,
    vip: [u8; 16],
    port: u16,
}

/// What makes an endpoint id the same backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BackendKey {
    service: ServiceId,
    service_key: ServiceKey,
    address: [u8; 16],
    port: u16,
}

fn service_key(snapshot: &Snapshot, id: ServiceId) -> Option<ServiceKey> {
    let s = snapshot.service(id)?;
    Some(ServiceKey {
        protocol: s.protocol(),
        vip: *s.vip(),
        port: s.port(),
    })
}

fn backend_key(snapshot: &Snapshot, id: EndpointId) -> Option<BackendKey> {
    let e = snapshot.endpoint(id)?;
    Some(BackendKey {
        service: e.service,
        service_key: service_key(snapshot, e.service)?,
        address: e.address,
        port: e.port,
    })
}

/// Counters only (no gauge) of `raw` since `baseline`.
fn since(raw: EndpointValues, baseline: EndpointValues) -> EndpointValues {
    EndpointValues {
        packets: raw.packets.wrapping_sub(baseline.packets),
        bytes: raw.bytes.wrapping_sub(baseline.bytes),
        new_flows: raw.new_flows.wrapping_sub(baseline.new_flows),
        active_flows: 0,
    }
}

/// Whose counts an endpoint id's slot holds, on one worker.
#[derive(Clone, Copy, Debug, Default)]
struct SlotOwner {
    owner: Option<BackendKey>,
    /// The slot's values when the owner got it (counters only).
    baseline: EndpointValues,
}

/// Counts of a service's backends that left it, on one worker.
#[derive(Clone, Copy, Debug)]
struct Retired {
    key: ServiceKey,
    values: EndpointValues,
}

/// What the collector remembers of one worker between scrapes.
#[derive(Debug, Default)]
struct Ledger {
    /// Indexed by endpoint id.
    slots: Vec<SlotOwner>,
    retired: RetiredCounts,
    /// Indexed by service id: whose routing counts the id's slot holds,
    /// and its values when that service got it.
    route_owners: Vec<(Option<ServiceKey>, RouteCounterValues)>,
}

/// A worker's routing counts per service of `services`, each since its
/// service got its id (a removed service's counts go with it).
fn route_values(
    w: &WorkerMetrics,
    owners: &mut Vec<(Option<ServiceKey>, RouteCounterValues)>,
    snapshot: &Snapshot,
    services: &[ServiceInfo],
) -> Vec<RouteCounterValues> {
    let raw = w.routes.services();
    let n = raw.len().max(snapshot.service_id_limit());
    if owners.len() < n {
        owners.resize(n, (None, RouteCounterValues::default()));
    }
    for (id, (owner, baseline)) in owners.iter_mut().enumerate() {
        let key = ServiceId::try_from(id)
            .ok()
            .and_then(|id| service_key(snapshot, id));
        if *owner != key {
            // A slot first seen counts from zero; one that changed hands
            // counts from the handover.
            if owner.is_some() {
                *baseline = raw.get(id).copied().unwrap_or_default();
            }
            *owner = key;
        }
    }
    services
        .iter()
        .map(|s| {
            let now = raw.get(s.id as usize).copied().unwrap_or_default();
            let baseline = owners.get(s.id as usize).map(|o| o.1).unwrap_or_default();
            now.since(baseline)
        })
        .collect()
}

/// Per service id: the counts of backends that left it.
#[derive(Debug, Default)]
struct RetiredCounts(Vec<Option<Retired>>);

impl RetiredCounts {
    fn add(&mut self, old: BackendKey, values: EndpointValues) {
        let i = old.service as usize;
        if self.0.len() <= i {
            self.0.resize(i + 1, None);
        }
        if let Some(entry) = self.0.get_mut(i) {
            match entry {
                Some(r) if r.key == old.service_key => r.values += values,
                _ => {
                    *entry = Some(Retired {
                        key: old.service_key,
                        values,
                    })
                }
            }
        }
    }

    /// What service `id` (with key `key`) retired.
    fn of(&self, id: ServiceId, key: ServiceKey) -> EndpointValues {
        match self.0.get(id as usize) {
            Some(Some(r)) if r.key == key => r.values,
            _ => EndpointValues::default(),
        }
    }

    /// Forgets the counts of services that are gone.
    fn forget_gone(&mut self, snapshot: &Snapshot) {
        for (id, entry) in self.0.iter_mut().enumerate() {
            let key = ServiceId::try_from(id)
                .ok()
                .and_then(|id| service_key(snapshot, id));
            if entry.is_some_and(|r| Some(r.key) != key) {
                *entry = None;
            }
        }
    }
}

/// Builds [`MetricsSample`]s from the workers' shared counters; see the
/// module doc for what it remembers between scrapes. Scraping is the
/// control thread's work: the workers are never asked anything.
#[derive(Debug)]
pub struct MetricsCollector {
    workers: Vec<(WorkerMetrics, Ledger)>,
    changes: Option<Arc<ChangeCounters>>,
}

impl MetricsCollector {
    /// A collector over these workers.
    pub fn new(workers: Vec<WorkerMetrics>) -> Self {
        MetricsCollector {
            workers: workers
                .into_iter()
                .map(|w| (w, Ledger::default()))
                .collect(),
            changes: None,
        }
    }

    /// Also reads the control state's counts of refused changes.
    pub fn with_changes(mut self, changes: Arc<ChangeCounters>) -> Self {
        self.changes = Some(changes);
        self
    }

    /// The workers it reads.
    pub fn workers(&self) -> impl Iterator<Item = &WorkerMetrics> {
        self.workers.iter().map(|(w, _)| w)
    }

    /// The workers' entries in the kernel fast path's caches now, summed.
    pub fn fast_path_entries(&self) -> u64 {
        self.workers
            .iter()
            .map(|(w, _)| w.flows.fast_path().entries)
            .sum()
    }

    /// Reads every worker's counters now and names them after `snapshot`
    /// (the one in force); `rings` are the sockets' statistics, passed
    /// through. Costs O(workers × (services + endpoints)).
    pub fn collect(&mut self, snapshot: &Snapshot, rings: Vec<RingStats>) -> MetricsSample {
        let (services, backends) = describe(snapshot);
        let limit = backends
            .iter()
            .map(|b| b.id as usize + 1)
            .max()
            .unwrap_or(0);
        let workers = self
            .workers
            .iter_mut()
            .map(|(w, ledger)| sample_worker(w, ledger, snapshot, limit, &services, &backends))
            .collect();
        MetricsSample {
            generation: snapshot.generation(),
            services,
            backends,
            workers,
            rings,
            changes: self.changes.as_deref().map(ChangeCounters::values),
            health: Vec::new(),
            etcd: None,
            drained: None,
            fast_path: None,
            syn_proxy: None,
        }
    }
}

/// The snapshot's services (id order) and backends (by service).
fn describe(snapshot: &Snapshot) -> (Vec<ServiceInfo>, Vec<BackendInfo>) {
    let mut services = Vec::with_capacity(snapshot.service_count());
    let mut backends = Vec::with_capacity(snapshot.endpoint_count());
    for (id, s) in snapshot.services() {
        let index = services.len();
        services.push(ServiceInfo {
            id,
            name: s.name().to_owned(),
            protocol: protocol_name(s.protocol()),
            vip: SocketAddr::new(bytes_to_addr(s.vip()), s.port()),
            routed: s.routes().is_some(),
        });
        for &e in s.endpoints() {
            if let Some(ep) = snapshot.endpoint(e) {
                backends.push(BackendInfo {
                    id: e,
                    service: index,
                    address: SocketAddr::new(bytes_to_addr(&ep.address), ep.port),
                    weight: ep.weight,
                });
            }
        }
    }
    (services, backends)
}

fn protocol_name(number: u8) -> &'static str {
    match number {
        6 => "tcp",
        17 => "udp",
        _ => "other",
    }
}

/// One worker's sample, updating what its ledger remembers.
fn sample_worker(
    w: &WorkerMetrics,
    ledger: &mut Ledger,
    snapshot: &Snapshot,
    limit: usize,
    services: &[ServiceInfo],
    backends: &[BackendInfo],
) -> WorkerSample {
    let raw = w.flows.endpoints();
    let n = limit.max(raw.len()).max(ledger.slots.len());
    if ledger.slots.len() < n {
        ledger.slots.resize(n, SlotOwner::default());
    }
    // Each slot's values for its current owner.
    let mut own = vec![EndpointValues::default(); limit];
    for id in 0..n {
        let raw_values = raw.get(id).map(|s| s.values()).unwrap_or_default();
        let key = EndpointId::try_from(id)
            .ok()
            .and_then(|e| backend_key(snapshot, e));
        let Some(slot) = ledger.slots.get_mut(id) else {
            continue;
        };
        if slot.owner != key {
            if let Some(old) = slot.owner {
                let counted = since(raw_values, slot.baseline);
                ledger.retired.add(old, counted);
                slot.baseline = raw_values;
            }
            slot.owner = key;
        }
        if key.is_some() {
            if let Some(v) = own.get_mut(id) {
                *v = since(raw_values, slot.baseline);
                v.active_flows = raw_values.active_flows;
            }
        }
    }
    ledger.retired.forget_gone(snapshot);

    let per_backend: Vec<EndpointValues> = backends
        .iter()
        .map(|b| own.get(b.id as usize).copied().unwrap_or_default())
        .collect();
    let mut per_service: Vec<EndpointValues> = services
        .iter()
        .map(|s| match service_key(snapshot, s.id) {
            Some(key) => ledger.retired.of(s.id, key),
            None => EndpointValues::default(),
        })
        .collect();
    for (b, v) in backends.iter().zip(&per_backend) {
        if let Some(s) = per_service.get_mut(b.service) {
            *s += *v;
        }
    }
    let routes = route_values(w, &mut ledger.route_owners, snapshot, services);
    WorkerSample {
        worker: w.worker,
        core: w.core,
        counters: w.pipeline.snapshot(),
        connections: w.flows.connections(),
        connection_capacity: w.flows.capacity(),
        departures: Departure::ALL.map(|why| w.flows.departures(why)),
        services: per_service,
        backends: per_backend,
        routes,
        loop_values: w.loop_counters.as_deref().map(LoopValues::of),
        admission: w.admission.snapshot(),
        refusals: services
            .iter()
            .map(|s| {
                let serial = snapshot.service(s.id).map_or(0, |c| c.serial());
                w.service_refusals.values(s.id, serial)
            })
            .collect(),
        fast_path: w.flows.fast_path(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{Connection, FlowState, FlowTimeouts};
    use crate::hash::table_hash;
    use crate::rules;
    use crate::wire::{ip_proto, FiveTuple};

    /// `web` (tcp/80) with `web` backends, `dns` (udp/53) with one.
    fn rules_text(web: &[&str]) -> String {
        let mut s = String::from(
            "[[services]]\nname = \"web\"\nprotocol = \"tcp\"\nvip = \"198.18.100.10\"\nport = 80\n",
        );
        for b in web {
            s += &format!("[[services.backends]]\naddress = \"{b}\"\nport = 8080\n");
        }
        s += "[[services]]\nname = \"dns\"\nprotocol = \"udp\"\nvip = \"198.18.100.10\"\nport = 53\n\
              [[services.backends]]\naddress = \"198.18.1.20\"\nport = 5353\n";
        s
    }

    fn build(text: &str, previous: Option<&Snapshot>) -> Snapshot {
        Snapshot::build(&rules::load_str(text, "t.toml").unwrap(), previous)
    }

    fn id_of(s: &Snapshot, addr: &str) -> EndpointId {
        let want = crate::wire::addr_to_bytes(addr.parse().unwrap());
        (0..64)
            .find(|&e| s.endpoint(e).is_some_and(|ep| ep.address == want))
            .unwrap()
    }

    /// A worker whose table can be fed directly.
    struct FakeWorker {
        flows: FlowTable,
        pipeline: Pipeline,
        next_port: u16,
    }

    impl FakeWorker {
        fn new() -> Self {
            let mut flows =
                FlowTable::new(256, FlowTimeouts::from(&rules::FlowSettings::default()));
            flows.reserve_endpoints(16);
            FakeWorker {
                flows,
                pipeline: Pipeline::new(),
                next_port: 1,
            }
        }

        fn metrics(&self, worker: usize) -> WorkerMetrics {
            WorkerMetrics::new(worker, Some(worker), &self.pipeline, &self.flows)
        }

        /// Opens a connection to `endpoint` and forwards `packets` frames
        /// of 100 bytes on it.
        fn traffic(&mut self, endpoint: EndpointId, packets: u64) {
            let port = self.next_port;
            self.next_port += 1;
            let client =
                FiveTuple::v4([198, 18, 0, 2], [198, 18, 100, 10], port, 80, ip_proto::TCP);
            let conn = Connection {
                client,
                backend_addr: crate::wire::v4_mapped([198, 18, 1, 11]),
                backend_port: 8080,
                endpoint,
                client_mac: [2, 0, 0, 0, 0, 2],
                client_ingress: 0,
                state: FlowState::TcpEstablished,
                last_seen_ns: 0,
            };
            let reply = table_hash(&conn.reply_tuple());
            self.flows.insert(conn, table_hash(&client), reply, 0);
            for _ in 0..packets {
                self.flows.count_packet(endpoint, 100);
            }
        }
    }

    fn backend<'a>(
        sample: &'a MetricsSample,
        worker: usize,
        addr: &str,
    ) -> Option<&'a EndpointValues> {
        let i = sample
            .backends
            .iter()
            .position(|b| b.address.ip().to_string() == addr)?;
        sample.workers.get(worker)?.backends.get(i)
    }

    fn service<'a>(sample: &'a MetricsSample, worker: usize, name: &str) -> &'a EndpointValues {
        let i = sample.services.iter().position(|s| s.name == name).unwrap();
        &sample.workers[worker].services[i]
    }

    #[test]
    fn services_sum_their_backends_per_worker() {
        let s = build(&rules_text(&["198.18.1.11", "198.18.1.12"]), None);
        let (a, b, d) = (
            id_of(&s, "198.18.1.11"),
            id_of(&s, "198.18.1.12"),
            id_of(&s, "198.18.1.20"),
        );
        let mut w0 = FakeWorker::new();
        let mut w1 = FakeWorker::new();
        w0.traffic(a, 3);
        w0.traffic(b, 5);
        w1.traffic(a, 7);
        w1.traffic(d, 2);
        let mut c = MetricsCollector::new(vec![w0.metrics(0), w1.metrics(1)]);
        let sample = c.collect(&s, Vec::new());
        assert_eq!(sample.generation, 1);
        assert_eq!(sample.services.len(), 2);
        assert_eq!(sample.backends.len(), 3);
        let web0 = service(&sample, 0, "web");
        assert_eq!(
            (web0.packets, web0.bytes, web0.new_flows, web0.active_flows),
            (8, 800, 2, 2)
        );
        let web1 = service(&sample, 1, "web");
        assert_eq!((web1.packets, web1.new_flows), (7, 1));
        assert_eq!(service(&sample, 1, "dns").packets, 2);
        assert_eq!(backend(&sample, 1, "198.18.1.12").unwrap().packets, 0);
        assert_eq!(sample.workers[1].connections, 2);
        assert_eq!(sample.workers[1].connection_capacity, 256);
        assert_eq!(sample.workers[0].core, Some(0));
        let totals = sample.backend_totals();
        assert_eq!(totals.iter().map(|v| v.packets).sum::<u64>(), 17);
        let services: u64 = sample.service_totals().iter().map(|v| v.packets).sum();
        assert_eq!(services, 17);
    }

    #[test]
    fn a_removed_backend_leaves_its_counts_with_its_service() {
        let first = build(&rules_text(&["198.18.1.11", "198.18.1.12"]), None);
        let (a, b) = (id_of(&first, "198.18.1.11"), id_of(&first, "198.18.1.12"));
        let mut w = FakeWorker::new();
        w.traffic(a, 3);
        w.traffic(b, 5);
        let mut c = MetricsCollector::new(vec![w.metrics(0)]);
        assert_eq!(service(&c.collect(&first, Vec::new()), 0, "web").packets, 8);
        // More traffic to b, then b goes before the next scrape.
        w.traffic(b, 1);
        let second = build(&rules_text(&["198.18.1.11"]), Some(&first));
        let sample = c.collect(&second, Vec::new());
        assert!(backend(&sample, 0, "198.18.1.12").is_none());
        let web = service(&sample, 0, "web");
        assert_eq!((web.packets, web.new_flows), (9, 3), "never goes down");
        assert_eq!(web.active_flows, 1, "only a's connection is live under web");
        w.traffic(a, 1);
        assert_eq!(
            service(&c.collect(&second, Vec::new()), 0, "web").packets,
            10
        );
    }

    #[test]
    fn a_backend_that_reuses_an_id_starts_from_zero() {
        let first = build(&rules_text(&["198.18.1.11", "198.18.1.12"]), None);
        let b = id_of(&first, "198.18.1.12");
        let mut w = FakeWorker::new();
        w.traffic(b, 5);
        let mut c = MetricsCollector::new(vec![w.metrics(0)]);
        c.collect(&first, Vec::new());
        // b leaves; a later generation gives its id to a new backend.
        let second = build(&rules_text(&["198.18.1.11"]), Some(&first));
        let third = build(&rules_text(&["198.18.1.11", "198.18.1.13"]), Some(&second));
        assert_eq!(id_of(&third, "198.18.1.13"), b, "the id is reused");
        let sample = c.collect(&third, Vec::new());
        let fresh = backend(&sample, 0, "198.18.1.13").unwrap();
        assert_eq!((fresh.packets, fresh.new_flows), (0, 0));
        assert_eq!(
            service(&sample, 0, "web").packets,
            5,
            "b's packets stay with web"
        );
        w.traffic(b, 2);
        let sample = c.collect(&third, Vec::new());
        assert_eq!(backend(&sample, 0, "198.18.1.13").unwrap().packets, 2);
        assert_eq!(service(&sample, 0, "web").packets, 7);
    }

    #[test]
    fn a_removed_service_forgets_what_its_backends_left() {
        let first = build(&rules_text(&["198.18.1.11", "198.18.1.12"]), None);
        let mut w = FakeWorker::new();
        w.traffic(id_of(&first, "198.18.1.12"), 5);
        let mut c = MetricsCollector::new(vec![w.metrics(0)]);
        c.collect(&first, Vec::new());
        let second = build(&rules_text(&["198.18.1.11"]), Some(&first));
        c.collect(&second, Vec::new());
        // web goes, then comes back (the same key): it starts afresh.
        let only_dns = "[[services]]\nname = \"dns\"\nprotocol = \"udp\"\nvip = \"198.18.100.10\"\nport = 53\n\
                        [[services.backends]]\naddress = \"198.18.1.20\"\nport = 5353\n";
        let third = build(only_dns, Some(&second));
        assert!(c
            .collect(&third, Vec::new())
            .services
            .iter()
            .all(|s| s.name != "web"));
        let fourth = build(&rules_text(&["198.18.1.11"]), Some(&third));
        assert_eq!(
            service(&c.collect(&fourth, Vec::new()), 0, "web").packets,
            0
        );
    }

    #[test]
    fn counts_made_before_the_first_scrape_are_kept() {
        let s = build(&rules_text(&["198.18.1.11"]), None);
        let mut w = FakeWorker::new();
        w.traffic(id_of(&s, "198.18.1.11"), 4);
        let mut c = MetricsCollector::new(vec![w.metrics(3)]);
        let sample = c.collect(
            &s,
            vec![RingStats {
                worker: 3,
                interface: "eth0".into(),
                queue: 1,
                rx_dropped: 9,
                ..RingStats::default()
            }],
        );
        assert_eq!(backend(&sample, 0, "198.18.1.11").unwrap().packets, 4);
        assert_eq!(sample.workers[0].worker, 3);
        assert_eq!(sample.rings[0].rx_dropped, 9);
        assert_eq!(sample.services[0].vip, "198.18.100.10:53".parse().unwrap());
        assert_eq!(sample.services[0].protocol, "udp");
        assert_eq!(sample.changes, None, "no control state, no counts");
    }

    #[test]
    fn refused_changes_are_read_at_each_scrape() {
        use crate::metrics::{ChangeSource, RefusalReason};
        let s = build(&rules_text(&["198.18.1.11"]), None);
        let changes = Arc::new(ChangeCounters::default());
        let mut c = MetricsCollector::new(vec![FakeWorker::new().metrics(0)])
            .with_changes(Arc::clone(&changes));
        let before = c.collect(&s, Vec::new()).changes.unwrap();
        assert_eq!(before, ChangeValues::default());
        changes.refused(ChangeSource::Reload, RefusalReason::RestartRequired);
        let after = c.collect(&s, Vec::new()).changes.unwrap();
        assert_eq!(
            after.refused(ChangeSource::Reload, RefusalReason::RestartRequired),
            1
        );
    }

    #[test]
    fn a_workers_loop_counters_are_read_with_its_polls() {
        use crate::port::{MemoryFrames, MemoryPort};
        use crate::worker::CountingKernelPath;
        let s = build(&rules_text(&["198.18.1.11"]), None);
        let mut memory = MemoryFrames::new(64, 2048);
        let pool = memory.pool();
        let flows = FlowTable::new(64, FlowTimeouts::from(&rules::FlowSettings::default()));
        let mut worker = Worker::new(flows, pool, 1, 8);
        let mut c = MetricsCollector::new(vec![WorkerMetrics::of_worker(0, None, &worker)]);
        let mut ports = vec![MemoryPort::new("p", 8)];
        let mut kernel = CountingKernelPath::default();
        for now in 0..5 {
            worker.poll(&mut ports, &mut memory, &s, &mut kernel, now);
        }
        let l = c.collect(&s, Vec::new()).workers[0].loop_values.unwrap();
        assert_eq!((l.polls, l.idle_polls, l.generation), (5, 5, 1));
    }
}
