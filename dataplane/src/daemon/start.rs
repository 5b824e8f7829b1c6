//! The steps of `flowgate run`'s start-up, each one function that fails
//! with one clear line: check the interfaces, attach the XDP program, open
//! the AF_XDP sockets, start the gateway's rules, start the pinned workers.
//! [`super::Daemon::start`] runs them in order.

use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use super::dataplane::{queue_name, WorkerView};
use super::fast_egress::FastEgress;
use super::first_copy::{copy_channel, CopyClient};
use super::worker_thread::{self, WorkerExit, WorkerHandle, WorkerSetup};
use super::{flow_query, sync_local_addresses, DaemonError, Gateway, RunOptions};
use super::{UnreachableKernelPath, INBOX_FRAMES};
use crate::admission::{BackendConnections, ClientRateTable, WorkerAdmission};
use crate::capture::CaptureHub;
use crate::fastpath::{CacheGeometry, EntryMemory, FastPath};
use crate::flow::{FlowTable, HandedConnection, HandedState, Placements};
use crate::handoff::Handoff;
use crate::liveness::MAX_ENDPOINTS;
use crate::metrics::WorkerMetrics;
use crate::neigh::{self, LinkInfo, NeighbourWatcher};
use crate::pipeline::DEFAULT_CLIENT_TABLE_ENTRIES;
use crate::port::xsk::{BindMode, SharedUmem, XskPort, XskSettings};
use crate::rules::{
    self, BindModeSetting, Config, DaemonSettings, FastPathSetting, XdpModeSetting,
};
use crate::table::Snapshot;
use crate::worker::Worker;
use crate::xdp::features::egress_ready;
use crate::xdp::{MappedEntries, XdpFilter, XdpMode};
use flowgate_api::InterfaceInfo;

/// Every configured interface as the kernel has it, in port order: it
/// exists, has the configured MAC, and has a queue for each worker.
pub(super) fn check_links(config: &Config) -> Result<Vec<LinkInfo>, DaemonError> {
    let workers = config.daemon.cores.len();
    let mut links = Vec::with_capacity(config.interfaces.len());
    for interface in &config.interfaces {
        let link = neigh::link_info(&interface.name)
            .map_err(|e| DaemonError::Environment(format!("interface {}: {e}", interface.name)))?;
        if let Some(mac) = interface.mac.filter(|mac| *mac != link.mac) {
            return Err(DaemonError::Environment(format!(
                "interface {} has MAC {} but the config says {}: fix the config's mac \
                 (or leave it out to use the kernel's)",
                interface.name,
                rules::format_mac(&link.mac),
                rules::format_mac(&mac)
            )));
        }
        let queues = link.rx_queues.min(link.tx_queues) as usize;
        if queues < workers {
            return Err(DaemonError::Environment(format!(
                "interface {} has {queues} queue(s) but {workers} workers need one each: \
                 raise its channels (ethtool -L {} combined {workers}) or list fewer cores",
                interface.name, interface.name
            )));
        }
        if !link.up {
            tracing::warn!(interface = %interface.name, "interface is down; forwarding starts when it comes up");
        }
        links.push(link);
    }
    Ok(links)
}

/// The kernel fast path's caches, one per interface in port order, as
/// the workers map them.
pub(super) struct FastCaches {
    pub(super) geometry: CacheGeometry,
    pub(super) caches: Vec<Arc<MappedEntries>>,
    /// Which interfaces the program may send frames out of, followed by
    /// the main loop.
    pub(super) egress: FastEgress,
}

/// Our XDP program attached to every interface, in port order, and with
/// `fast_path = "xdp"` (not in forward-only mode) the fast path's caches.
/// Where the fast path cannot be set up (a kernel that refuses to map the
/// cache, an interface the redirect map refuses), the program runs
/// without it, as with `fast_path = "off"`, and a warning says why.
///
/// Without `attach`, the programs are loaded and programmed but not
/// attached ([`XdpFilter::attach_loaded`] attaches them): what a process
/// taking over prepares while the old one still forwards.
pub(super) fn attach_filters(
    config: &Config,
    options: &RunOptions,
    links: &[LinkInfo],
    attach: bool,
) -> Result<(Vec<XdpFilter>, Option<FastCaches>), DaemonError> {
    let mode = match config.daemon.xdp_mode {
        XdpModeSetting::Auto => XdpMode::Auto,
        XdpModeSetting::Native => XdpMode::Native,
        XdpModeSetting::Generic => XdpMode::Generic,
    };
    let want_fast = config.daemon.fast_path == FastPathSetting::Xdp && !options.forward_only;
    let workers = u32::try_from(config.daemon.cores.len()).unwrap_or(u32::MAX);
    let geometry = CacheGeometry::for_connections(workers, config.flows.capacity);
    let mut filters = Vec::with_capacity(config.interfaces.len());
    let mut fast_ok = want_fast;
    let load = |name: &str, fast: Option<CacheGeometry>| match (attach, fast) {
        (false, fast) => XdpFilter::load(name, mode, fast),
        (true, Some(geometry)) => XdpFilter::attach_with_fast_path(name, mode, geometry),
        (true, None) => XdpFilter::attach(name, mode),
    };
    for interface in &config.interfaces {
        let attached = if fast_ok {
            load(&interface.name, Some(geometry)).or_else(|e| {
                tracing::warn!(interface = %interface.name, error = %e, "kernel fast path unavailable; running without it");
                fast_ok = false;
                load(&interface.name, None)
            })
        } else {
            load(&interface.name, None)
        };
        let mut filter = attached
            .map_err(|e| DaemonError::Environment(format!("interface {}: {e}", interface.name)))?;
        if options.forward_only {
            filter
                .set_redirect_all(true)
                .map_err(|e| DaemonError::Runtime(format!("interface {}: {e}", interface.name)))?;
        }
        filters.push(filter);
    }
    if !fast_ok {
        return Ok((filters, None));
    }
    let mut caches = Vec::with_capacity(filters.len());
    let mut egress = FastEgress::new(links);
    let any_native = filters.iter().any(|f| f.mode() == XdpMode::Native);
    let transmits = egress.read(any_native);
    let enabled = filters
        .iter_mut()
        .enumerate()
        .try_for_each(|(port, filter)| {
            for (egress, link) in links.iter().enumerate() {
                filter.set_fast_egress(egress as u32, link.ifindex)?;
            }
            if let Some((cache, _)) = filter.fast_cache() {
                caches.push(cache);
            }
            filter.enable_fast_path(port as u32, egress_ready(filter.mode(), &transmits))
        });
    match enabled {
        Ok(()) => {
            egress.log_start(&filters);
            tracing::info!(
                slots_per_worker = geometry.slots,
                mib = geometry.bytes() >> 20,
                "kernel fast path on"
            );
            Ok((
                filters,
                Some(FastCaches {
                    geometry,
                    caches,
                    egress,
                }),
            ))
        }
        Err(e) => {
            tracing::warn!(error = %e, "kernel fast path unavailable; running without it");
            Ok((filters, None))
        }
    }
}

/// CLOCK_MONOTONIC (the XDP program's clock) at `epoch`, the workers' time 0.
pub(super) fn kernel_epoch_ns(epoch: Instant) -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
                + u64::try_from(t.tv_nsec()).unwrap_or(0)
        })
        .unwrap_or(0);
    now.saturating_sub(u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX))
}

/// The AF_XDP sockets' settings from `[daemon]`.
pub(super) fn xsk_settings(settings: &DaemonSettings) -> XskSettings {
    XskSettings {
        frame_size: settings.frame_size,
        frame_count: settings.frame_count,
        rx_ring: settings.rx_ring_size,
        tx_ring: settings.tx_ring_size,
        fill_ring: settings.fill_ring_size,
        completion_ring: settings.completion_ring_size,
        bind_mode: match settings.bind_mode {
            BindModeSetting::Auto => BindMode::Auto,
            BindModeSetting::ZeroCopy => BindMode::ZeroCopy,
            BindModeSetting::Copy => BindMode::Copy,
        },
        ..XskSettings::default()
    }
}

/// Each worker's sockets, one per interface on the worker's queue, each
/// registered in its interface's XSKMAP.
pub(super) struct OpenSockets {
    /// Per worker, per interface (port order).
    pub(super) ports: Vec<Vec<XskPort>>,
    /// The AF_XDP mode each interface's sockets got.
    pub(super) modes: Vec<String>,
}

/// Opens one socket per (worker, interface) on `umem`, on queue = worker
/// index, and tells each interface's program about it.
pub(super) fn open_sockets(
    config: &Config,
    umem: &SharedUmem,
    settings: &XskSettings,
    filters: &mut [XdpFilter],
) -> Result<OpenSockets, DaemonError> {
    let workers = config.daemon.cores.len();
    let mut ports: Vec<Vec<XskPort>> = Vec::with_capacity(workers);
    let mut modes = vec![String::new(); config.interfaces.len()];
    for w in 0..workers {
        let queue = w as u32;
        let mut worker_ports = Vec::with_capacity(config.interfaces.len());
        for (i, interface) in config.interfaces.iter().enumerate() {
            let port = open_socket(umem, &interface.name, queue, settings)?;
            if let Some(mode) = modes.get_mut(i) {
                *mode = port.mode().to_string();
            }
            if let Some(filter) = filters.get_mut(i) {
                filter.set_socket(queue, port.as_raw_fd()).map_err(|e| {
                    DaemonError::Runtime(format!("interface {}: {e}", interface.name))
                })?;
            }
            worker_ports.push(port);
        }
        ports.push(worker_ports);
    }
    Ok(OpenSockets { ports, modes })
}

/// How long a socket is tried again while its queue is still bound: the
/// kernel releases a closed socket's queue a moment later, off the
/// closing thread and under the kernel's network configuration lock (the
/// process this one took over from just closed its); a busy lock (other
/// processes making or deleting interfaces) held it past half a second
/// here, and once 7 s. Giving up would not help: the old process, forwarding
/// again, would wait for the same queue.
const QUEUE_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// One socket on `interface`'s `queue`, tried again for up to
/// [`QUEUE_RELEASE_WAIT`] while another socket still holds the queue.
fn open_socket(
    umem: &SharedUmem,
    interface: &str,
    queue: u32,
    settings: &XskSettings,
) -> Result<XskPort, DaemonError> {
    let deadline = Instant::now() + QUEUE_RELEASE_WAIT;
    loop {
        match XskPort::open(umem, interface, queue, settings) {
            Ok(port) => return Ok(port),
            Err(crate::port::xsk::XskError::QueueBusy { .. }) if Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(e) => return Err(DaemonError::Environment(e.to_string())),
        }
    }
}

/// The gateway with its first snapshot, built from `config` and what the
/// kernel's neighbour table already holds, and the watcher of that table.
pub(super) fn start_gateway(
    config: &Config,
    filters: Vec<XdpFilter>,
    links: &[LinkInfo],
) -> Result<(Arc<Gateway>, NeighbourWatcher), DaemonError> {
    let neighbours = |e| DaemonError::Environment(format!("neighbour table: {e}"));
    let mut watcher = NeighbourWatcher::open().map_err(neighbours)?;
    let learned = watcher.dump().map_err(neighbours)?;
    let port_ifindex = links.iter().map(|l| l.ifindex).collect();
    let link_macs = links.iter().map(|l| l.mac).collect();
    let gateway = Arc::new(
        Gateway::start(config.clone(), learned, filters, port_ifindex, link_macs)
            .map_err(DaemonError::Runtime)?,
    );
    sync_local_addresses(&gateway)
        .map_err(|e| DaemonError::Environment(format!("the box's own addresses: {e}")))?;
    Ok((gateway, watcher))
}

/// The running workers, as the daemon, the control API and the metrics
/// see them (each in worker order).
pub(super) struct StartedWorkers {
    pub(super) handles: Vec<WorkerHandle<WorkerExit<XskPort>>>,
    pub(super) views: Vec<WorkerView>,
    pub(super) metrics: Vec<WorkerMetrics>,
    /// The control side's end of every worker's capture ring.
    pub(super) capture: Arc<CaptureHub>,
    /// The control side's end of every worker's first copy (a takeover's).
    pub(super) copies: Vec<CopyClient>,
}

/// What every worker shares.
pub(super) struct WorkerShared<'a> {
    pub(super) config: &'a Config,
    pub(super) options: &'a RunOptions,
    pub(super) umem: &'a SharedUmem,
    pub(super) gateway: &'a Gateway,
    pub(super) stop: &'a Arc<AtomicBool>,
    pub(super) epoch: Instant,
    /// Whether this start takes over from another process (its workers
    /// mark their start on the takeover's timeline).
    pub(super) taking_over: bool,
}

/// A worker's connection table, holding the connections handed over to
/// it, and its admission state, made before its sockets are.
pub(super) struct WorkerTable {
    flows: FlowTable,
    admission: WorkerAdmission,
}

/// What the workers' tables are made with: the rules published, the kernel
/// fast path's caches, the workers' clock origin and the connections
/// handed over, if any.
pub(super) struct TableInputs<'a> {
    pub(super) config: &'a Config,
    pub(super) snapshot: Arc<Snapshot>,
    pub(super) fast: Option<(CacheGeometry, &'a [Arc<MappedEntries>])>,
    pub(super) epoch: Instant,
    pub(super) restored: Option<&'a HandedState>,
}

/// Every worker's table (from `tables`, made empty beforehand: a large one
/// takes a while to allocate), with the fast path's writer when it is on,
/// counted on the backends' lanes, and holding the connections handed over
/// that the worker owns, and where the connections with an origin (a
/// pre-copy's first copy) went. A process taking over makes these while
/// its sockets wait for the old process's queues, or, with a pre-copy,
/// while the old process still forwards.
pub(super) fn worker_tables(
    inputs: &TableInputs<'_>,
    mut tables: Vec<FlowTable>,
) -> (Vec<WorkerTable>, Placements) {
    let workers = inputs.config.daemon.cores.len();
    // The backends' connection counts, one lane per worker, which the
    // connection caps read across workers.
    let (_, lanes) = BackendConnections::new(workers, MAX_ENDPOINTS as u32);
    let mut restored = restored_by_worker(inputs.restored, workers, &inputs.snapshot);
    restored.resize_with(workers, Vec::new);
    tables.truncate(workers);
    while tables.len() < workers {
        tables.push(FlowTable::from_settings(&inputs.config.flows));
    }
    let mut placements = Placements::new();
    let tables = tables
        .into_iter()
        .zip(lanes)
        .zip(restored)
        .enumerate()
        .map(|(w, ((table, lanes), restored))| {
            let clients = ClientRateTable::new(DEFAULT_CLIENT_TABLE_ENTRIES, client_seed(w));
            let admission = WorkerAdmission::new(clients, lanes);
            let flows = worker_flows(inputs, w, table, &admission, restored, &mut placements);
            WorkerTable { flows, admission }
        })
        .collect();
    (tables, placements)
}

/// Applies a pre-copy's delta (`delta`) to the workers' tables made from
/// its first copy ([`worker_tables`], which gave `placements`): each
/// changed connection split to the worker that owns it and numbered by
/// these rules, as the copy's were. Logs what it did.
pub(super) fn apply_delta(
    inputs: &TableInputs<'_>,
    tables: &mut [WorkerTable],
    placements: &mut Placements,
    delta: &HandedState,
) {
    let epoch_mono = kernel_epoch_ns(inputs.epoch);
    let changed = restored_by_worker(Some(delta), tables.len(), &inputs.snapshot);
    let mut flows: Vec<&mut FlowTable> = tables.iter_mut().map(|t| &mut t.flows).collect();
    let done = placements.apply(&mut flows, changed, &delta.freed, epoch_mono);
    if done.refused > 0 {
        tracing::warn!(
            refused = done.refused,
            "the connection table is smaller than what was handed over"
        );
    }
    tracing::info!(
        updated = done.updated,
        inserted = done.inserted,
        removed = done.removed,
        "the changes since the first copy applied"
    );
}

/// Starts one pinned worker per entry of `ports` (worker w on
/// `daemon.cores[w]`), each with its table from `tables`
/// ([`worker_tables`]), its share of the frames and, with more than one
/// worker, its end of the hand-over.
pub(super) fn spawn_workers(
    shared: &WorkerShared<'_>,
    ports: Vec<Vec<XskPort>>,
    mut tables: Vec<WorkerTable>,
) -> Result<StartedWorkers, DaemonError> {
    let workers = ports.len();
    let mut pools = shared.umem.split_pools(workers);
    let mut handoffs = Handoff::set(workers, INBOX_FRAMES, shared.umem.frame_count() as usize);
    let names = shared
        .config
        .interfaces
        .iter()
        .map(|i| i.name.clone())
        .collect();
    let (capture, mut taps) = CaptureHub::new(workers, names, shared.epoch);
    let mut started = StartedWorkers {
        handles: Vec::with_capacity(workers),
        views: Vec::with_capacity(workers),
        metrics: Vec::with_capacity(workers),
        capture,
        copies: Vec::with_capacity(workers),
    };
    for (w, worker_ports) in ports.into_iter().enumerate().rev() {
        let (Some(pool), Some(handoff), Some(WorkerTable { flows, admission })) =
            (pools.pop(), handoffs.pop(), tables.pop())
        else {
            return Err(DaemonError::Runtime(
                "frame pools or tables do not match workers".into(),
            ));
        };
        let settings = &shared.config.daemon;
        let mut worker = Worker::new(flows, pool, worker_ports.len(), settings.batch)
            .with_paths(shared.gateway.path_reader())
            .with_admission(admission);
        if workers > 1 {
            worker = worker.with_handoff(handoff);
        }
        if shared.options.forward_only {
            worker = worker.forward_only();
        }
        if let Some(tap) = taps.pop() {
            worker = worker.with_capture(tap);
        }
        let core = settings.cores.get(w).copied().unwrap_or(0);
        started
            .metrics
            .push(WorkerMetrics::of_worker(w, Some(core), &worker));
        let queues = worker_ports
            .iter()
            .map(|p| queue_name(p.ifname(), p.queue()))
            .collect();
        // The control side reads the sockets' statistics itself.
        let sockets = worker_ports
            .iter()
            .map(XskPort::stats_reader)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| DaemonError::Environment(e.to_string()))?;
        let (flow_queries, flow_query_server) = flow_query::flow_queries();
        let (copies, copy_server) = copy_channel();
        let setup = WorkerSetup {
            index: w,
            core,
            worker,
            ports: worker_ports,
            memory: shared.umem.frames(),
            kernel: UnreachableKernelPath::default(),
            snapshots: shared.gateway.publisher().reader(),
            idle: settings.idle,
            stop: Arc::clone(shared.stop),
            epoch: shared.epoch,
            flow_queries: flow_query_server,
            first_copy: copy_server,
            taking_over: shared.taking_over,
        };
        let handle = worker_thread::spawn(setup)
            .map_err(|e| DaemonError::Runtime(format!("starting worker {w}: {e}")))?;
        tracing::info!(worker = w, core, "worker pinned");
        started.views.push(WorkerView {
            index: w,
            core,
            queues,
            flow_queries,
            sockets,
        });
        started.handles.push(handle);
        started.copies.push(copies);
    }
    started.handles.reverse();
    started.views.reverse();
    started.metrics.reverse();
    started.copies.reverse();
    if shared.taking_over {
        super::takeover::mark("new: workers started");
    }
    Ok(started)
}

/// Worker `w`'s connection table (`flows`, empty): with the fast path's writer when it is
/// on, counted on `admission`'s lanes, holding `restored`.
fn worker_flows(
    inputs: &TableInputs<'_>,
    w: usize,
    mut flows: FlowTable,
    admission: &WorkerAdmission,
    restored: Vec<HandedConnection>,
    placements: &mut Placements,
) -> FlowTable {
    let epoch_mono = kernel_epoch_ns(inputs.epoch);
    if let Some((geometry, caches)) = inputs.fast {
        let caches = caches
            .iter()
            .map(|c| Some(Arc::clone(c) as Arc<dyn EntryMemory>))
            .collect();
        let records = flows.capacity();
        flows.set_fast_path(FastPath::new(
            geometry, w as u32, caches, records, epoch_mono,
        ));
    }
    // Counted on the backends' lanes from the first connection on.
    flows.set_connection_lanes(admission.backends().clone());
    if !restored.is_empty() {
        // Offered to the fast path: the worker's polls install them, a
        // bounded number each, into the caches of its programs (which
        // replace the old ones once the workers run); until then the old
        // programs carry them.
        take_over_connections(&mut flows, w, restored, epoch_mono, placements);
    }
    flows
}

/// The handed-over connections split by the worker that owns each (the
/// hand-over's and the fast path's owner hash of its client end, so a
/// different number of workers is fine), with its endpoint id found again
/// in `snapshot`: by service and backend address, since the rules that
/// run here may number them differently. A connection whose backend the
/// rules no longer have keeps an id that names none, and takes the path
/// of a removed backend at its next packet.
fn restored_by_worker(
    state: Option<&HandedState>,
    workers: usize,
    snapshot: &Snapshot,
) -> Vec<Vec<HandedConnection>> {
    let mut parts = vec![Vec::new(); workers];
    let Some(state) = state else {
        return parts;
    };
    let count = u32::try_from(workers).unwrap_or(u32::MAX);
    for handed in &state.connections {
        let mut handed = handed.clone();
        let c = &mut handed.connection;
        c.endpoint = endpoint_now(snapshot, c).unwrap_or(u32::MAX);
        let owner = match count {
            1 => 0,
            _ => crate::fastpath::owner(&c.client.src, c.client.src_port, count) as usize,
        };
        if let Some(part) = parts.get_mut(owner) {
            part.push(handed);
        }
    }
    parts
}

/// The id `snapshot` gives the backend of `connection` in its service.
fn endpoint_now(snapshot: &Snapshot, connection: &crate::flow::Connection) -> Option<u32> {
    let client = &connection.client;
    let (_, service) = snapshot.lookup_service(client.protocol, &client.dst, client.dst_port)?;
    service.endpoints().iter().copied().find(|&id| {
        snapshot.endpoint(id).is_some_and(|e| {
            e.address == connection.backend_addr && e.port == connection.backend_port
        })
    })
}

/// Puts worker `w`'s handed-over connections into its table, notes in
/// `placements` where those with an origin went, and logs what did not
/// fit.
fn take_over_connections(
    flows: &mut FlowTable,
    w: usize,
    connections: Vec<HandedConnection>,
    epoch_mono: u64,
    placements: &mut Placements,
) {
    let offered = connections.len();
    let mut taken = 0;
    for handed in &connections {
        let id = flows.take_over_at(handed, epoch_mono);
        if id.is_none() {
            continue;
        }
        taken += 1;
        if let Some(origin) = handed.origin {
            placements.note(origin, w, id);
        }
    }
    if taken < offered {
        tracing::warn!(
            worker = w,
            taken,
            refused = offered - taken,
            "the connection table is smaller than what was handed over"
        );
    }
    tracing::info!(worker = w, connections = taken, "connections taken over");
}

/// A secret seed for worker `w`'s per-client table.
fn client_seed(w: usize) -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(w)
}

/// The interfaces as `flowgatectl status` shows them: the queues the
/// workers serve (worker `w` serves queue `w` of each), and separately how
/// many the interface has — a veth or a NIC often has more than are used.
pub(super) fn interface_infos(
    config: &Config,
    links: &[LinkInfo],
    socket_modes: Vec<String>,
    gateway: &Gateway,
) -> Vec<InterfaceInfo> {
    let workers = u32::try_from(config.daemon.cores.len()).unwrap_or(u32::MAX);
    config
        .interfaces
        .iter()
        .zip(links)
        .zip(socket_modes)
        .enumerate()
        .map(|(port, ((interface, link), af_xdp_mode))| InterfaceInfo {
            name: interface.name.clone(),
            port,
            ifindex: Some(link.ifindex),
            mac: rules::format_mac(&link.mac),
            xdp_mode: gateway
                .with_filters(|f| f.get(port).map(|f| f.mode().to_string()))
                .unwrap_or_else(|| "none".into()),
            af_xdp_mode,
            queues: workers,
            nic_queues: Some(link.rx_queues.min(link.tx_queues)),
        })
        .collect()
}
