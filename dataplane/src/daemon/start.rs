//! The steps of `flowgate run`'s start-up, each one function that fails
//! with one clear line: check the interfaces, attach the XDP program, open
//! the AF_XDP sockets, start the gateway's rules, start the pinned workers.
//! [`super::Daemon::start`] runs them in order.

use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use super::dataplane::{queue_name, WorkerView};
use super::worker_thread::{self, WorkerExit, WorkerHandle, WorkerSetup};
use super::{flow_query, sync_local_addresses, DaemonError, Gateway, RunOptions};
use super::{UnreachableKernelPath, INBOX_FRAMES};
use crate::flow::FlowTable;
use crate::handoff::Handoff;
use crate::metrics::WorkerMetrics;
use crate::neigh::{self, LinkInfo, NeighbourWatcher};
use crate::port::xsk::{BindMode, SharedUmem, XskPort, XskSettings};
use crate::rules::{self, BindModeSetting, Config, DaemonSettings, XdpModeSetting};
use crate::worker::Worker;
use crate::xdp::{XdpFilter, XdpMode};
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

/// Our XDP program attached to every interface, in port order.
pub(super) fn attach_filters(
    config: &Config,
    options: &RunOptions,
) -> Result<Vec<XdpFilter>, DaemonError> {
    let mode = match config.daemon.xdp_mode {
        XdpModeSetting::Auto => XdpMode::Auto,
        XdpModeSetting::Native => XdpMode::Native,
        XdpModeSetting::Generic => XdpMode::Generic,
    };
    let mut filters = Vec::with_capacity(config.interfaces.len());
    for interface in &config.interfaces {
        let mut filter = XdpFilter::attach(&interface.name, mode)
            .map_err(|e| DaemonError::Environment(format!("interface {}: {e}", interface.name)))?;
        if options.forward_only {
            filter
                .set_redirect_all(true)
                .map_err(|e| DaemonError::Runtime(format!("interface {}: {e}", interface.name)))?;
        }
        filters.push(filter);
    }
    Ok(filters)
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
            let port = XskPort::open(umem, &interface.name, queue, settings)
                .map_err(|e| DaemonError::Environment(e.to_string()))?;
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
}

/// What every worker shares.
pub(super) struct WorkerShared<'a> {
    pub(super) config: &'a Config,
    pub(super) options: &'a RunOptions,
    pub(super) umem: &'a SharedUmem,
    pub(super) gateway: &'a Gateway,
    pub(super) stop: &'a Arc<AtomicBool>,
    pub(super) epoch: Instant,
}

/// Starts one pinned worker per entry of `ports` (worker w on
/// `daemon.cores[w]`), each with its share of the frames and, with more
/// than one worker, its end of the hand-over.
pub(super) fn spawn_workers(
    shared: &WorkerShared<'_>,
    ports: Vec<Vec<XskPort>>,
) -> Result<StartedWorkers, DaemonError> {
    let workers = ports.len();
    let mut pools = shared.umem.split_pools(workers);
    let mut handoffs = Handoff::set(workers, INBOX_FRAMES, shared.umem.frame_count() as usize);
    let mut started = StartedWorkers {
        handles: Vec::with_capacity(workers),
        views: Vec::with_capacity(workers),
        metrics: Vec::with_capacity(workers),
    };
    for (w, worker_ports) in ports.into_iter().enumerate().rev() {
        let (Some(pool), Some(handoff)) = (pools.pop(), handoffs.pop()) else {
            return Err(DaemonError::Runtime(
                "frame pools do not match workers".into(),
            ));
        };
        let settings = &shared.config.daemon;
        let mut worker = Worker::new(
            FlowTable::from_settings(&shared.config.flows),
            pool,
            worker_ports.len(),
            settings.batch,
        );
        if workers > 1 {
            worker = worker.with_handoff(handoff);
        }
        if shared.options.forward_only {
            worker = worker.forward_only();
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
    }
    started.handles.reverse();
    started.views.reverse();
    started.metrics.reverse();
    Ok(started)
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
