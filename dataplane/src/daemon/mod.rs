//! `flowgate run`: the gateway daemon.
//!
//! Start-up, in order, each step failing with one clear line and undoing
//! the steps before it: load the config and refuse, as `flowgate check`
//! does, all that needs no kernel ([`load_checked`]); check that the
//! worker cores exist; check every interface (exists, MAC as configured,
//! enough queues); attach our XDP program to each; create the shared UMEM
//! and, per worker, one AF_XDP socket per interface on the worker's queue,
//! each registered in that interface's XSKMAP; read the kernel's neighbour
//! table; build the first snapshot, program the filters with its keys and
//! publish it; start the pinned workers; serve the control socket and, if
//! configured, the metrics endpoint.
//!
//! With an `[etcd]` section, the etcd source starts first (after the
//! config's checks): the gateway starts with its first rules — the file's
//! with etcd's parts, or the saved state's when etcd cannot be reached —
//! and every later good revision goes through the control state as one
//! change (`fleet`).
//!
//! Then the main thread, off the worker cores, loops: signals (SIGHUP
//! reloads, SIGINT/SIGTERM stop), neighbour changes, resolution of
//! backends the kernel does not know yet, and a new process asking to take
//! over ([`takeover`]: `flowgate run --takeover` prepares everything that
//! does not need the interfaces, takes the old process's connections, then
//! attaches and starts its workers; the old one exits, or starts again from
//! its connections if the new one fails). Shutdown stops the workers,
//! closes the sockets and detaches the programs; a crash leaves nothing
//! behind that blocks the next start (the program is attached through a
//! bpf_link, which dies with the process, and a stale program of any kind
//! is replaced at attach).

mod dataplane;
pub mod error;
mod fast_egress;
pub mod first_copy;
pub mod flow_query;
mod gateway;
mod kernel_path;
pub mod notify;
mod owned_keys;
mod start;
pub mod takeover;
mod vip_offer;
pub mod worker_thread;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use error::{DaemonError, EXIT_CONFIG, EXIT_ENVIRONMENT, EXIT_RUNTIME};
pub use gateway::Gateway;
pub use kernel_path::UnreachableKernelPath;

use crate::control::health::HealthMonitor;
use crate::control::{ControlServer, ControlState, StopHandle};
use crate::fleet::gateway::ControlSlot;
use crate::fleet::settings::EtcdSettings;
use crate::fleet::source::{EtcdSource, SourceError, StartedFrom};
use crate::health::heartbeat::{HeartbeatListener, HeartbeatOptions, RateLimit};
use crate::health::ProberOptions;
use crate::metrics::{ListenAddress, MetricsServer, UnixListen};
use crate::neigh::{self, NeighbourChange, NeighbourWatcher};
use crate::port::xsk::{SharedUmem, XskPort};
use crate::rules::{self, Config, DaemonSettings, MetricsAddress};
use crate::xdp::XdpCapacity;
use dataplane::DaemonDataplane;
use worker_thread::{WorkerExit, WorkerHandle};

/// How often the main loop wakes to look at signals and neighbours.
const TICK: Duration = Duration::from_millis(50);
/// How often backends without a next hop are resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(1);
/// How often known backend entries are refreshed (kept REACHABLE).
const REFRESH_EVERY: Duration = Duration::from_secs(15);
/// Frames a worker's inbox holds for hand-over.
const INBOX_FRAMES: usize = 4096;

/// What `flowgate run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The config file.
    pub config: PathBuf,
    /// Worker cores from the command line (overrides `daemon.cores`).
    pub cores: Option<Vec<usize>>,
    /// Forward every frame to the other interface untouched (I/O floor).
    pub forward_only: bool,
    /// Take over from the flowgate running with the same control socket
    /// ([`takeover`]).
    pub takeover: bool,
}

/// Runs the daemon until SIGINT or SIGTERM.
pub fn run(options: &RunOptions) -> Result<(), DaemonError> {
    let started_us = takeover::mono_us();
    let Checked {
        mut file,
        mut running,
        etcd,
    } = load_checked(&options.config, options.cores.as_deref())?;
    check_cores_available(&running)?;
    init_logs(&file)?;
    if options.takeover {
        takeover::mark_at("new: process started", started_us);
        takeover::mark("new: config loaded and checked");
    }
    let signals = Signals::install()?;
    let notifier = notify::Notifier::from_env();
    let fleet = start_fleet(etcd, &options.config, &mut file, &mut running)?;
    // With --takeover, the running flowgate stops forwarding once it has
    // handed its state over: from here on every failure is told to it, so
    // that it forwards again.
    let (handover, restored, prepared) = if options.takeover {
        // Everything that does not need the interfaces to itself is made
        // while the old process still forwards: the dark time is only
        // what must wait for it.
        let mut prepared = Prepared::new(&running, options, false)?;
        let path = takeover::socket_path(&running.daemon.control_socket);
        takeover::mark("new: takeover asked");
        let (mut handover, offer) = takeover::take_over(&path)
            .map_err(|e| DaemonError::Environment(format!("takeover: {e}")))?;
        let (state, links) = match offer {
            takeover::Offer::Whole(state, links) => (state, links),
            takeover::Offer::Copy(copy, keys) => {
                // The old process forwards until the switch: the copy is
                // imported now, and only what changed since crosses then.
                takeover::mark("new: first copy received");
                prepared.take_cookie_keys(&keys);
                tracing::info!(
                    connections = copy.connections.len(),
                    "the running flowgate handed a first copy of its connections over"
                );
                prepared.import_first_copy(&running, &copy);
                drop(copy);
                takeover::mark("new: first copy imported");
                handover
                    .switch()
                    .map_err(|e| DaemonError::Environment(format!("takeover: {e}")))?
            }
        };
        takeover::mark("new: state received");
        prepared.handed = links;
        tracing::info!(
            connections = state.connections.len(),
            freed = state.freed.len(),
            delta = state.delta,
            "the running flowgate handed its connections over"
        );
        (Some(handover), Some(state), Some(prepared))
    } else {
        (None, None, None)
    };
    let started = match prepared {
        Some(prepared) => {
            Daemon::start_prepared(prepared, running, file, options, restored.as_ref())
        }
        None => Daemon::start(running, file, options, None),
    };
    let mut daemon = match started {
        Ok(daemon) => daemon,
        Err(e) => {
            if let Some(handover) = handover {
                handover.failed(&e.to_string());
            }
            return Err(e);
        }
    };
    drop(restored);
    daemon.attach_fleet(fleet);
    tracing::info!(
        workers = daemon.workers.len(),
        generation = daemon.gateway.snapshot().generation(),
        "flowgate is forwarding"
    );
    match handover {
        Some(handover) => {
            takeover::mark("new: serving (control socket, metrics bound)");
            notifier.took_over(&daemon.forwarding_status());
            if let Err(e) = handover.serving() {
                tracing::warn!("{e}");
            }
            daemon.switch_programs();
        }
        None => notifier.ready(&daemon.forwarding_status()),
    }
    loop {
        let request = match daemon.serve(&signals, options, &notifier) {
            Ok(Served::TakeoverAsked(request)) => request,
            result => {
                notifier.stopping();
                daemon.stop();
                return result.map(drop);
            }
        };
        daemon = match hand_over(daemon, request, options) {
            Handed::Over => return Ok(()),
            Handed::Resumed(daemon) => *daemon,
            Handed::Failed(e) => return Err(e),
        };
        notifier.ready(&daemon.forwarding_status());
    }
}

/// How a hand-over to a new process ended.
enum Handed {
    /// The new process forwards: this one exits.
    Over,
    /// The new process failed; this one forwards again.
    Resumed(Box<Daemon>),
    /// The new process failed, and this one could not start again.
    Failed(DaemonError),
}

/// Stops `daemon`, hands its connections to the process that asked
/// (`request`) and, if that process does not take over, starts again from
/// them with the rules it ran.
fn hand_over(
    mut daemon: Daemon,
    mut request: takeover::TakeoverRequest,
    options: &RunOptions,
) -> Handed {
    let pid = request.pid;
    takeover::mark("old: takeover asked");
    tracing::info!(pid, "a new flowgate takes over: handing over");
    let copy = if request.precopy {
        match hand_over_first_copy(&daemon, &mut request) {
            Ok(copy) => copy,
            Err(why) => {
                tracing::error!(
                    pid,
                    "takeover failed before the switch, forwarding on: {why}"
                );
                return Handed::Resumed(Box::new(daemon));
            }
        }
    } else {
        None
    };
    let fleet = daemon.fleet.take();
    let running = daemon.running_config();
    let file = daemon.file_config();
    // The links of the programs, all or none: a new process that gets
    // them keeps the programs attached, and the kernel fast path
    // forwarding, until it replaces them; one that does not attaches its
    // own, once these are detached.
    let links = if request.takes_links {
        hand_over_links(&daemon.gateway)
    } else {
        Vec::new()
    };
    let keep_programs = !links.is_empty();
    let (restart, verdict) = daemon.shut_down(true, keep_programs, |workers, epoch_mono| {
        let exported_mono_ns = start::kernel_epoch_ns(Instant::now());
        let image = match &copy {
            Some(copy) => changes_image(workers, epoch_mono, exported_mono_ns, copy),
            None => {
                let handed = whole_tables(workers, epoch_mono);
                takeover::mark("old: tables collected");
                crate::flow::handover::encode(exported_mono_ns, &handed)
            }
        };
        let verdict = request.hand_over(&image, links);
        takeover::mark("old: verdict received");
        // On a failure this process starts again from its whole state.
        let restart = verdict.is_err().then(|| {
            crate::flow::HandedState::whole(exported_mono_ns, whole_tables(workers, epoch_mono))
        });
        (restart, verdict)
    });
    match verdict {
        Ok(()) => {
            if let Some(mut fleet) = fleet {
                fleet.source.stop();
            }
            tracing::info!(pid, "handed over to the new flowgate; exiting");
            Handed::Over
        }
        Err(why) => {
            tracing::error!(pid, "takeover failed, forwarding again: {why}");
            let state = restart.unwrap_or_default();
            match Daemon::start(running, file, options, Some(&state)) {
                Ok(mut daemon) => {
                    daemon.attach_fleet(fleet);
                    tracing::info!("forwarding again after the failed takeover");
                    Handed::Resumed(Box::new(daemon))
                }
                Err(e) => Handed::Failed(e),
            }
        }
    }
}

/// How long the workers may take to copy their tables for a pre-copy
/// before the whole state is handed over instead.
const FIRST_COPY_TIMEOUT: Duration = Duration::from_secs(5);

/// A pre-copy's first step: the workers copy their tables while they
/// forward, and the new process imports the copy; only what changed since
/// crosses at the switch ([`changes_image`]). The copy, once the new
/// process asks for the switch; `None` if it could not be taken (then the
/// whole state is handed over, as without a pre-copy); the new process's
/// reason if it failed before the switch (nothing was stopped: this
/// process forwards on, as if nothing had been asked).
fn hand_over_first_copy(
    daemon: &Daemon,
    request: &mut takeover::TakeoverRequest,
) -> Result<Option<Vec<Vec<crate::flow::HandedConnection>>>, String> {
    let epoch_mono = start::kernel_epoch_ns(daemon.epoch);
    let deadline = Instant::now() + FIRST_COPY_TIMEOUT;
    let copy = match first_copy::first_copy(&daemon.copies, epoch_mono, deadline) {
        Ok(copy) => copy,
        Err(why) => {
            tracing::warn!(
                "the first copy could not be taken ({why}): handing the whole state over"
            );
            return Ok(None);
        }
    };
    takeover::mark("old: first copy taken");
    let all: Vec<_> = copy.iter().flatten().cloned().collect();
    let image = crate::flow::handover::encode(epoch_mono, &all);
    drop(all);
    let keys: takeover::CookieKeys = daemon.gateway.with_filters(|filters| {
        filters
            .iter()
            .map(|f| (f.interface().to_owned(), f.cookie_key()))
            .collect()
    });
    request.hand_over_copy(&image, &keys)?;
    takeover::mark("old: switch asked");
    Ok(Some(copy))
}

/// Every connection of the stopped `workers`' tables (their clock's 0 at
/// `epoch_mono`).
fn whole_tables(
    workers: &[crate::worker::Worker],
    epoch_mono: u64,
) -> Vec<crate::flow::HandedConnection> {
    let mut handed = Vec::new();
    for worker in workers {
        worker.flows().hand_over(epoch_mono, &mut handed);
    }
    handed
}

/// The image of what changed in the stopped `workers`' tables since the
/// first copy `copy` (per worker): created or changed connections, and
/// the copy's connections gone.
fn changes_image(
    workers: &[crate::worker::Worker],
    epoch_mono: u64,
    exported_mono_ns: u64,
    copy: &[Vec<crate::flow::HandedConnection>],
) -> Vec<u8> {
    let (mut changed, mut freed) = (Vec::new(), Vec::new());
    for (w, worker) in workers.iter().enumerate() {
        let copied = copy.get(w).map_or(&[][..], Vec::as_slice);
        let w = u16::try_from(w).unwrap_or(u16::MAX);
        worker
            .flows()
            .hand_over_changes(w, epoch_mono, copied, &mut changed, &mut freed);
    }
    takeover::mark("old: changes since the first copy collected");
    tracing::info!(
        changed = changed.len(),
        freed = freed.len(),
        "handing the changes since the first copy over"
    );
    crate::flow::handover::encode_delta(exported_mono_ns, &changed, &freed)
}

/// A descriptor of the bpf_link of every interface's program, named by
/// its interface; none if one of them cannot be had (logged).
fn hand_over_links(gateway: &Gateway) -> takeover::HandedLinks {
    let links = gateway.with_filters(|filters| {
        filters
            .iter()
            .map(|f| Ok((f.interface().to_owned(), f.link_descriptor()?)))
            .collect::<Result<takeover::HandedLinks, crate::xdp::XdpError>>()
    });
    links.unwrap_or_else(|e| {
        tracing::warn!(
            "cannot hand the XDP links over ({e}): the programs are detached, and the new \
             process attaches its own"
        );
        Vec::new()
    })
}

/// Why the main loop ended.
enum Served {
    /// A stop signal.
    Stopped,
    /// A new process asks to take over.
    TakeoverAsked(takeover::TakeoverRequest),
}

/// A config that passed every check [`run`] makes before it touches the
/// machine.
#[derive(Debug)]
pub struct Checked {
    /// The rules as the file has them (the control API keeps these).
    pub file: Config,
    /// The rules `run` starts with: the file's, with `--cores` applied.
    pub running: Config,
    /// The `[etcd]` section, if the rules also come from etcd.
    pub etcd: Option<EtcdSettings>,
}

/// Loads the config at `path` and refuses everything `flowgate run` would
/// refuse at start that needs neither the kernel nor this machine, in the
/// order `run` finds it: the file (readable, valid), the XDP maps' room
/// for its rules, its interfaces and worker cores (with `cores` from the
/// command line in place of `daemon.cores`), and the log filter.
///
/// `flowgate check` and `flowgate run` both go through this one function,
/// so a config `check` accepts is refused by `run` only for what the
/// machine lacks (an interface, a core, privileges: exit 3).
pub fn load_checked(path: &Path, cores: Option<&[usize]>) -> Result<Checked, DaemonError> {
    // Parsed once: the `[etcd]` table comes with the rules.
    let (file, etcd) = rules::load_file_with_etcd(path)?;
    check_capacity(path, &file)?;
    // `--cores` overrides the file for this run only: the control state
    // keeps the file's [daemon], so reloading the unchanged file is not
    // mistaken for a change that needs a restart.
    let mut running = file.clone();
    if let Some(cores) = cores {
        running.daemon.cores = cores.to_vec();
    }
    check_cores(&running)?;
    check_log_level(path, &file)?;
    let etcd = check_etcd(path, etcd)?;
    Ok(Checked {
        file,
        running,
        etcd,
    })
}

/// Checks the `[etcd]` table of the file at `path`, if it has one.
fn check_etcd(
    path: &Path,
    table: Option<toml::Table>,
) -> Result<Option<EtcdSettings>, DaemonError> {
    crate::fleet::settings::from_etcd_table(table, &path.display().to_string())
        .map_err(|problems| DaemonError::Usage(problems.join("\n")))
}

/// The etcd source, while the gateway runs.
struct Fleet {
    source: EtcdSource,
    slot: ControlSlot,
}

/// With `[etcd]`: starts the etcd source on the file's rules, and makes
/// its first rules (the file's with etcd's parts) the ones the gateway
/// starts with. A service both in the file and in etcd, or etcd out of
/// reach with no saved state to start from (or `start_without_etcd =
/// false`), stops the start with one message.
fn start_fleet(
    settings: Option<EtcdSettings>,
    path: &Path,
    file: &mut Config,
    running: &mut Config,
) -> Result<Option<Fleet>, DaemonError> {
    let Some(settings) = settings else {
        return Ok(None);
    };
    let slot = ControlSlot::default();
    let started = EtcdSource::start(settings, file.clone(), slot.sink()).map_err(|e| match e {
        SourceError::Settings(_) | SourceError::Conflict(_) => DaemonError::Usage(e.to_string()),
        _ => DaemonError::Environment(e.to_string()),
    })?;
    match &started.from {
        StartedFrom::Etcd { revision } => {
            tracing::info!(revision, "rules loaded from etcd")
        }
        StartedFrom::Saved { revision, why } => {
            tracing::warn!(revision, "{why}: starting from the saved etcd state")
        }
    }
    let cores = std::mem::take(&mut running.daemon.cores);
    *file = Config::clone(&started.rules.config);
    *running = Config::clone(&started.rules.config);
    running.daemon.cores = cores;
    check_capacity(path, running)?;
    Ok(Some(Fleet {
        source: started.source,
        slot,
    }))
}

/// Refuses, before anything is set up, rules the XDP program's maps cannot
/// hold.
/// Warnings about VIPs of `config` that lie inside a connected subnet of
/// the client-facing interface (the first of `[[interfaces]]`, as the
/// kernel of this box has it now) without being announced. None when the
/// interface is not here (a config checked on another machine).
pub fn segment_warnings(config: &Config) -> Vec<String> {
    let Some(interface) = config.interfaces.first() else {
        return Vec::new();
    };
    let Ok(link) = crate::neigh::link_info(&interface.name) else {
        return Vec::new();
    };
    match crate::neigh::connected_subnets(link.ifindex) {
        Ok(subnets) => {
            crate::announce::segment::unannounced_on_segment(config, &interface.name, &subnets)
        }
        Err(e) => {
            tracing::debug!(interface = %interface.name, error = %e, "cannot read its addresses");
            Vec::new()
        }
    }
}

fn check_capacity(path: &Path, config: &Config) -> Result<(), DaemonError> {
    XdpCapacity::PROGRAM.check(config).map_err(|e| {
        let problems: Vec<String> = e
            .problems("the config")
            .into_iter()
            .map(|p| format!("{}: {p}", path.display()))
            .collect();
        DaemonError::TooLarge(problems.join("\n"))
    })
}

/// Refuses a `daemon.log_level` the logger cannot parse, whether or not
/// `RUST_LOG` overrides it today: the next start may run without it.
fn check_log_level(path: &Path, config: &Config) -> Result<(), DaemonError> {
    crate::logging::parse_filter(&config.daemon.log_level)
        .map(drop)
        .map_err(|e| DaemonError::Usage(format!("{}: daemon.log_level: {e}", path.display())))
}

/// Starts logging to stderr as `[daemon]` says (`RUST_LOG` overrides).
fn init_logs(config: &Config) -> Result<(), DaemonError> {
    let format = match config.daemon.log_format {
        rules::LogFormatSetting::Json => crate::logging::LogFormat::Json,
        rules::LogFormatSetting::Human => crate::logging::LogFormat::Human,
    };
    // The netlink crate warns about every attribute newer kernels grew;
    // that is noise to an operator.
    let filter = format!("{},netlink_packet_route=error", config.daemon.log_level);
    crate::logging::init(format, &filter).map_err(|e| DaemonError::Usage(e.to_string()))
}

/// Refuses, before anything is set up, a config without an interface and
/// worker cores that are not a list of distinct cores.
fn check_cores(config: &Config) -> Result<(), DaemonError> {
    if config.interfaces.is_empty() {
        return Err(DaemonError::Usage(
            "the config has no [[interfaces]]: flowgate run needs at least one".into(),
        ));
    }
    let mut seen = HashSet::with_capacity(config.daemon.cores.len());
    for &core in &config.daemon.cores {
        if !seen.insert(core) {
            return Err(DaemonError::Usage(format!("core {core} is listed twice")));
        }
    }
    if config.daemon.cores.is_empty() {
        return Err(DaemonError::Usage("no worker cores given".into()));
    }
    Ok(())
}

/// Rejects cores this machine does not have, before anything is set up.
fn check_cores_available(config: &Config) -> Result<(), DaemonError> {
    let available: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    match config
        .daemon
        .cores
        .iter()
        .find(|core| !available.is_empty() && !available.contains(core))
    {
        Some(core) => Err(DaemonError::Environment(format!(
            "core {core} is not available to this process (available: {})",
            join(&available)
        ))),
        None => Ok(()),
    }
}

/// SIGINT/SIGTERM and SIGHUP as flags the main loop polls.
struct Signals {
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
}

impl Signals {
    fn install() -> Result<Signals, DaemonError> {
        let stop = Arc::new(AtomicBool::new(false));
        let reload = Arc::new(AtomicBool::new(false));
        let register = |signal, flag: &Arc<AtomicBool>| {
            signal_hook::flag::register(signal, Arc::clone(flag))
                .map(drop)
                .map_err(|e| DaemonError::Runtime(format!("installing signal handlers: {e}")))
        };
        register(signal_hook::consts::SIGINT, &stop)?;
        register(signal_hook::consts::SIGTERM, &stop)?;
        register(signal_hook::consts::SIGHUP, &reload)?;
        Ok(Signals { stop, reload })
    }
}

/// What a start makes before it needs the interfaces to itself: the
/// interfaces checked, the XDP programs loaded with their maps (attached
/// or not), the rules compiled and programmed into them, the UMEM and the
/// workers' empty connection tables. A process
/// taking over makes these while the old one still forwards.
struct Prepared {
    links: Vec<neigh::LinkInfo>,
    /// The rules compiled and programmed into the filters.
    gateway: Arc<Gateway>,
    watcher: NeighbourWatcher,
    fast: Option<start::FastCaches>,
    xsk_settings: crate::port::xsk::XskSettings,
    umem: SharedUmem,
    tables: Vec<crate::flow::FlowTable>,
    /// With a pre-copy: the workers' tables holding the first copy, and
    /// where its connections went, for the changes at the switch.
    first_copy: Option<(Vec<start::WorkerTable>, crate::flow::Placements)>,
    /// The XDP links the process this one takes over from handed over:
    /// each interface's program replaces the old one through its link
    /// once the workers run ([`switch_programs`]).
    handed: takeover::HandedLinks,
}

impl Prepared {
    /// Prepares a start with `config`; `attach` attaches the programs too.
    fn new(config: &Config, options: &RunOptions, attach: bool) -> Result<Prepared, DaemonError> {
        // The steps of a takeover's preparation are marked: `attach` is
        // false only there.
        let mark = |step| {
            if !attach {
                takeover::mark(step);
            }
        };
        let links = start::check_links(config)?;
        let (filters, fast) = start::attach_filters(config, options, &links, attach)?;
        mark("new: XDP programs loaded");
        let (gateway, watcher) = start::start_gateway(config, filters, &links)?;
        mark("new: snapshot compiled, maps programmed");
        let xsk_settings = start::xsk_settings(&config.daemon);
        let umem = SharedUmem::new(&xsk_settings).map_err(environment)?;
        mark("new: UMEM made");
        let tables = (0..config.daemon.cores.len())
            .map(|_| crate::flow::FlowTable::from_settings(&config.flows))
            .collect();
        mark("new: connection tables allocated");
        Ok(Prepared {
            links,
            gateway,
            watcher,
            fast,
            xsk_settings,
            umem,
            tables,
            first_copy: None,
            handed: Vec::new(),
        })
    }

    /// The inputs of the workers' tables, holding `restored`.
    fn table_inputs<'a>(
        &'a self,
        config: &'a Config,
        restored: Option<&'a crate::flow::HandedState>,
    ) -> start::TableInputs<'a> {
        start::TableInputs {
            config,
            snapshot: self.gateway.snapshot(),
            fast: self
                .fast
                .as_ref()
                .map(|f| (f.geometry, f.caches.as_slice())),
            epoch: self.gateway.snapshot().liveness().epoch(),
            restored,
        }
    }

    /// Gives each interface's program the SYN cookie key of the old
    /// program on that interface (`keys`), before it replaces it: the
    /// handshakes the old one answered finish with this one. A key that
    /// cannot be set is logged (those handshakes fail, as at a restart).
    fn take_cookie_keys(&self, keys: &takeover::CookieKeys) {
        self.gateway.with_filters(|filters| {
            for filter in filters.iter_mut() {
                let interface = filter.interface().to_owned();
                let Some((_, key)) = keys.iter().find(|(name, _)| *name == interface) else {
                    continue;
                };
                if let Err(e) = filter.set_cookie_key(*key) {
                    tracing::warn!(%interface, "taking the old program's SYN cookie key: {e}");
                }
            }
        });
    }

    /// Makes the workers' tables from a pre-copy's first copy (`copy`),
    /// while the old process still forwards; the changes since are
    /// applied at the switch ([`Self::tables_and_sockets`]).
    fn import_first_copy(&mut self, config: &Config, copy: &crate::flow::HandedState) {
        let tables = std::mem::take(&mut self.tables);
        let imported = start::worker_tables(&self.table_inputs(config, Some(copy)), tables);
        self.first_copy = Some(imported);
    }
    /// Attaches the programs that are not attached yet, then opens the
    /// AF_XDP sockets and registers them with the programs. With links
    /// handed over, the programs are not attached here: the old ones go
    /// on (their fast path forwarding) until [`switch_programs`].
    fn open_sockets(&self, config: &Config) -> Result<start::OpenSockets, DaemonError> {
        let handed = !self.handed.is_empty();
        let sockets = self.gateway.with_filters(|filters| {
            if !handed {
                filters.iter_mut().try_for_each(|filter| {
                    let interface = filter.interface().to_owned();
                    filter.attach_loaded().map_err(|e| {
                        DaemonError::Environment(format!("interface {interface}: {e}"))
                    })
                })?;
            }
            start::open_sockets(config, &self.umem, &self.xsk_settings, filters)
        })?;
        if handed {
            takeover::mark("new: sockets bound");
            self.offer_sockets_to_old_programs(config, &sockets);
        }
        Ok(sockets)
    }

    /// The workers' tables, holding the connections in `restored`, made
    /// while the sockets are opened ([`Self::open_sockets`]): a process
    /// taking over imports the old one's connections while the old one
    /// closes its sockets and the kernel frees their queues.
    fn tables_and_sockets(
        &mut self,
        config: &Config,
        restored: Option<&crate::flow::HandedState>,
    ) -> Result<(Vec<start::WorkerTable>, start::OpenSockets), DaemonError> {
        let tables = std::mem::take(&mut self.tables);
        let first_copy = self.first_copy.take();
        let inputs = self.table_inputs(config, restored);
        let this = &*self;
        let (tables, sockets) = std::thread::scope(|scope| {
            let import = std::thread::Builder::new()
                .name("fg-import".into())
                .spawn_scoped(scope, || match first_copy {
                    // A pre-copy: the tables hold the first copy; `restored`
                    // is what changed since.
                    Some((mut tables, mut placements)) => {
                        if let Some(delta) = restored {
                            start::apply_delta(&inputs, &mut tables, &mut placements, delta);
                        }
                        tables
                    }
                    None => start::worker_tables(&inputs, tables).0,
                });
            let sockets = this.open_sockets(config);
            match import {
                Ok(import) => (import.join().ok(), sockets),
                Err(e) => {
                    tracing::error!("starting the connections' import: {e}");
                    (None, sockets)
                }
            }
        });
        let sockets = sockets?;
        if restored.is_some() && !this.handed.is_empty() {
            takeover::mark("new: connections imported");
        }
        let tables = tables
            .ok_or_else(|| DaemonError::Runtime("the workers' tables could not be made".into()))?;
        Ok((tables, sockets))
    }

    /// Puts the new sockets in the socket maps of the programs the old
    /// process handed over, which stay attached until the new workers run:
    /// what only a worker can answer (new flows) reaches this process's
    /// sockets from here on, without waiting for the programs' switch. A
    /// map that refuses is logged: its interface waits for the switch.
    fn offer_sockets_to_old_programs(&self, config: &Config, sockets: &start::OpenSockets) {
        use std::os::fd::AsRawFd;
        for (queue, ports) in sockets.ports.iter().enumerate() {
            for (interface, port) in config.interfaces.iter().zip(ports) {
                if !self.handed.iter().any(|(name, _)| *name == interface.name) {
                    continue;
                }
                let queue = u32::try_from(queue).unwrap_or(u32::MAX);
                if let Err(e) =
                    crate::xdp::set_attached_socket(&interface.name, queue, port.as_raw_fd())
                {
                    tracing::warn!(interface = %interface.name, queue, "the old program keeps no socket of this process: {e}");
                }
            }
        }
        takeover::mark("new: sockets in the old programs' socket maps");
    }
}

/// Puts each interface's program in place of the old process's through
/// the link that process handed over (`handed`: one atomic switch per
/// interface), once this process serves and the old one has exited: until
/// then the old programs, holding this process's sockets, carry the
/// traffic. An interface it had no program on gets its program attached;
/// links of interfaces these rules do not have are closed (their programs
/// go). Where a switch fails, the handed link is closed (its program
/// detaches) and this process's program attached in its place: the
/// interface is without a program for a moment, and the failure logged.
fn switch_links(gateway: &Gateway, mut handed: takeover::HandedLinks) {
    gateway.with_filters(|filters| {
        for filter in filters.iter_mut() {
            let interface = filter.interface().to_owned();
            let switched = match handed.iter().position(|(name, _)| *name == interface) {
                Some(at) => filter.attach_through(handed.swap_remove(at).1),
                None => filter.attach_loaded(),
            };
            if let Err(e) = switched {
                tracing::error!(%interface, "replacing the old XDP program: {e}; attaching ours in its place");
                if let Err(e) = filter.attach_loaded() {
                    tracing::error!(%interface, "attaching the XDP program: {e}; the interface's traffic goes to the kernel");
                }
            }
        }
    });
}

/// A running gateway.
struct Daemon {
    health: Arc<HealthMonitor>,
    heartbeats: Option<HeartbeatListener>,
    gateway: Arc<Gateway>,
    workers: Vec<WorkerHandle<WorkerExit<XskPort>>>,
    stop_workers: Arc<AtomicBool>,
    watcher: NeighbourWatcher,
    control: Arc<Mutex<ControlState>>,
    control_thread: Option<(StopHandle, std::thread::JoinHandle<()>)>,
    metrics: Option<MetricsServer>,
    /// The etcd source, with `[etcd]`.
    fleet: Option<Fleet>,
    /// With the kernel fast path on: the interfaces it may send out of,
    /// read again every [`RESOLVE_EVERY`].
    fast_egress: Option<fast_egress::FastEgress>,
    /// Where a new process asks to take over (`None` if it could not be
    /// bound, which is logged).
    takeover: Option<takeover::TakeoverListener>,
    /// The XDP links the process this one took over from handed over,
    /// until its programs are replaced through them
    /// ([`Daemon::switch_programs`]).
    handed_links: takeover::HandedLinks,
    /// `announce = "bgp"`: the VIPs' host routes.
    vip_offer: vip_offer::VipOffer,
    /// The workers' clock origin.
    epoch: Instant,
    /// The control side's end of each worker's first copy (a takeover's
    /// pre-copy).
    copies: Vec<first_copy::CopyClient>,
    /// The worker cores this run started with.
    cores: Vec<usize>,
    // Held so the UMEM outlives every socket (dropped after them).
    umem: Option<SharedUmem>,
}

impl Daemon {
    /// Starts the gateway with `config` (the file with command-line
    /// overrides); the control API keeps `file`, the rules as written.
    /// Connections in `restored` are put into the workers' tables.
    fn start(
        config: Config,
        file: Config,
        options: &RunOptions,
        restored: Option<&crate::flow::HandedState>,
    ) -> Result<Daemon, DaemonError> {
        let prepared = Prepared::new(&config, options, true)?;
        Daemon::start_prepared(prepared, config, file, options, restored)
    }

    /// [`Daemon::start`] from what [`Prepared::new`] made: attaches the
    /// programs if they are not yet, then goes on.
    fn start_prepared(
        mut p: Prepared,
        config: Config,
        file: Config,
        options: &RunOptions,
        restored: Option<&crate::flow::HandedState>,
    ) -> Result<Daemon, DaemonError> {
        let (tables, sockets) = p.tables_and_sockets(&config, restored)?;
        let (links, gateway, watcher, fast, umem) = (p.links, p.gateway, p.watcher, p.fast, p.umem);
        let stop_workers = Arc::new(AtomicBool::new(false));
        // The workers' clock is the liveness table's: a heartbeat deadline
        // means the same instant to the workers and the control side.
        let liveness = Arc::clone(gateway.snapshot().liveness());
        let epoch = liveness.epoch();
        let shared = start::WorkerShared {
            config: &config,
            options,
            umem: &umem,
            gateway: &gateway,
            stop: &stop_workers,
            epoch,
            taking_over: !p.handed.is_empty(),
        };
        let workers = start::spawn_workers(&shared, sockets.ports, tables)?;
        pin_control_thread(&config.daemon.cores);
        let interfaces = start::interface_infos(&config, &links, sockets.modes, &gateway);
        // Refused changes: counted by the control state, read by scrapes.
        let changes = Arc::new(crate::metrics::ChangeCounters::default());
        // Started here, on the control core: the prober's thread and the
        // monitor's inherit its affinity, off the worker cores.
        let health = HealthMonitor::new(
            liveness,
            ProberOptions {
                max_in_flight: config.daemon.health_max_in_flight as usize,
                initial_state: config.health.initial,
                ..ProberOptions::default()
            },
        );
        let dataplane = Arc::new(
            DaemonDataplane::new(
                Arc::clone(&gateway),
                epoch,
                workers.views,
                interfaces,
                crate::metrics::MetricsCollector::new(workers.metrics)
                    .with_changes(Arc::clone(&changes)),
                Arc::clone(&health),
            )
            .with_capture(Arc::clone(&workers.capture)),
        );
        dataplane.sync_health(&config);
        let rebuilds = Arc::clone(&gateway);
        health
            .start(Box::new(move || match rebuilds.rebuild() {
                Ok(generation) => {
                    tracing::info!(generation, "backend health changed; tables rebuilt")
                }
                Err(e) => tracing::error!("rebuilding after a health change: {e}"),
            }))
            .map_err(|e| DaemonError::Runtime(format!("starting the health monitor: {e}")))?;
        let heartbeats = match start_heartbeats(&config.daemon, &health) {
            Ok(listener) => listener,
            Err(e) => {
                health.stop();
                return Err(e);
            }
        };
        let control = Arc::new(Mutex::new(
            ControlState::new(
                file,
                options.config.display().to_string(),
                dataplane.clone(),
            )
            .with_change_counters(changes),
        ));
        // `fleet drain` sets it through the control socket; the offer
        // withdraws every VIP while it is set.
        let drain_flag = control
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain_flag();
        let mut daemon = Daemon {
            health,
            heartbeats,
            gateway,
            workers: workers.handles,
            stop_workers,
            watcher,
            control: Arc::clone(&control),
            control_thread: None,
            metrics: None,
            fleet: None,
            fast_egress: fast.map(|f| f.egress),
            takeover: None,
            handed_links: p.handed,
            epoch,
            copies: workers.copies,
            cores: config.daemon.cores.clone(),
            umem: Some(umem),
            vip_offer: vip_offer::VipOffer::new(drain_flag),
        };
        // From here on, a failure must stop the workers: `daemon.stop()`.
        let served = daemon
            .serve_control(&config.daemon, control)
            .and_then(|()| daemon.serve_metrics(&config.daemon, &dataplane));
        if served.is_ok() {
            daemon.listen_for_takeover(&config.daemon);
        }
        match served {
            Ok(()) => Ok(daemon),
            Err(e) => {
                daemon.stop();
                Err(e)
            }
        }
    }

    /// Serves the control socket on a thread of its own.
    fn serve_control(
        &mut self,
        settings: &DaemonSettings,
        control: Arc<Mutex<ControlState>>,
    ) -> Result<(), DaemonError> {
        let server = ControlServer::bind(&settings.control_socket, control).map_err(|e| {
            DaemonError::Environment(format!(
                "control socket {}: {e}",
                settings.control_socket.display()
            ))
        })?;
        let stop_server = server.stop_handle();
        let thread = std::thread::Builder::new()
            .name("fg-control".into())
            .spawn(move || server.serve())
            .map_err(|e| DaemonError::Runtime(format!("starting the control thread: {e}")))?;
        self.control_thread = Some((stop_server, thread));
        tracing::info!(socket = %settings.control_socket.display(), "control API listening");
        Ok(())
    }

    /// Listens beside the control socket for a new process that takes
    /// over; without it the daemon runs as before (a restart loses the
    /// connections), and says so.
    fn listen_for_takeover(&mut self, settings: &DaemonSettings) {
        let path = takeover::socket_path(&settings.control_socket);
        match takeover::TakeoverListener::bind(&path) {
            Ok(listener) => self.takeover = Some(listener),
            Err(e) => tracing::warn!(
                socket = %path.display(),
                "cannot listen for a takeover ({e}): `flowgate run --takeover` will not reach this one"
            ),
        }
    }

    /// Replaces the programs of the process this one took over from with
    /// its own, through the links it handed over ([`switch_links`]): once
    /// this one serves and that one exits, so that a slow switch (the
    /// kernel's network configuration lock, busy with other work) holds up
    /// neither.
    fn switch_programs(&mut self) {
        let handed = std::mem::take(&mut self.handed_links);
        if handed.is_empty() {
            return;
        }
        switch_links(&self.gateway, handed);
        takeover::mark("new: XDP programs switched through the handed links");
    }

    /// Gives the etcd source, if any, this daemon's control state.
    fn attach_fleet(&mut self, fleet: Option<Fleet>) {
        if let Some(fleet) = fleet {
            let control = self
                .control
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            // `status` and the metrics show where the rules from etcd stand.
            control.report_etcd(fleet.source.reporter());
            fleet.slot.fill(control);
            self.fleet = Some(fleet);
        }
    }

    /// The rules running now, on this run's worker cores: what a start
    /// after a failed takeover runs.
    fn running_config(&self) -> Config {
        let mut config = self.gateway.config();
        config.daemon.cores.clone_from(&self.cores);
        config
    }

    /// The rules as the control API keeps them.
    fn file_config(&self) -> Config {
        let control = self
            .control
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Config::clone(&control.config())
    }

    /// Serves `/metrics` if `[daemon] metrics_address` is set.
    fn serve_metrics(
        &mut self,
        settings: &DaemonSettings,
        dataplane: &Arc<DaemonDataplane>,
    ) -> Result<(), DaemonError> {
        let address = match &settings.metrics_address {
            None => return Ok(()),
            Some(MetricsAddress::Tcp(address)) => ListenAddress::Tcp(*address),
            Some(MetricsAddress::Unix(path)) => ListenAddress::Unix(UnixListen {
                path: path.clone(),
                mode: settings.metrics_socket_mode.unwrap_or(0o600),
                group: settings.metrics_socket_group,
            }),
        };
        let source_plane = Arc::clone(dataplane);
        // The rules from etcd, once the etcd source reports to the control
        // state (with `[etcd]`).
        let control = self
            .control
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let gateway = Arc::clone(&self.gateway);
        // The SYN proxy's counters as read last: a scrape during a large
        // change does not wait for the filters.
        let syn_proxy_read = std::sync::Mutex::new(crate::synproxy::SynProxyCounters::default());
        let source: crate::metrics::SampleSource = Arc::new(move || {
            let (mut sample, snapshot) = source_plane.sample();
            sample.etcd = control.etcd_status();
            sample.drained = Some(control.drained());
            let read = gateway.try_with_filters(|filters| {
                filters
                    .iter()
                    .map(crate::xdp::XdpFilter::syn_proxy_counters)
                    .fold(Default::default(), crate::synproxy::SynProxyCounters::plus)
            });
            let mut last = syn_proxy_read
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(now) = read {
                *last = now;
            }
            sample.syn_proxy = Some(*last);
            (sample, snapshot)
        });
        let server = MetricsServer::start(address.clone(), source)
            .map_err(|e| DaemonError::Environment(format!("metrics endpoint: {e}")))?;
        tracing::info!(%address, "metrics served at /metrics");
        self.metrics = Some(server);
        Ok(())
    }

    /// Reads the interfaces' MACs from the kernel: an interface the config
    /// gives no `mac` sends from its new one from the next snapshot on; one
    /// whose configured MAC no longer matches is logged.
    fn follow_link_macs(&mut self) {
        let config = self.gateway.config();
        let before = self.gateway.link_macs();
        let mut macs = Vec::with_capacity(config.interfaces.len());
        for (port, interface) in config.interfaces.iter().enumerate() {
            let link = match neigh::link_info(&interface.name) {
                Ok(link) => link,
                Err(e) => {
                    tracing::warn!(interface = %interface.name, "reading the interface: {e}");
                    return;
                }
            };
            let moved = before.get(port) != Some(&link.mac);
            if moved && interface.mac.is_some_and(|mac| mac != link.mac) {
                tracing::warn!(
                    interface = %interface.name,
                    kernel = %rules::format_mac(&link.mac),
                    "the interface's MAC changed; frames still leave from the configured mac until the config follows"
                );
            }
            macs.push(link.mac);
        }
        match self.gateway.link_macs_changed(macs) {
            Ok(Some(generation)) => {
                tracing::info!(
                    generation,
                    "an interface's MAC changed; new snapshot published"
                )
            }
            Ok(None) => {}
            Err(e) => tracing::error!("applying an interface's new MAC: {e}"),
        }
    }

    /// What `systemctl status` shows while it forwards.
    fn forwarding_status(&self) -> String {
        format!(
            "forwarding: {} workers, generation {}",
            self.workers.len(),
            self.gateway.snapshot().generation()
        )
    }

    /// The main loop: until a stop signal.
    fn serve(
        &mut self,
        signals: &Signals,
        options: &RunOptions,
        notifier: &notify::Notifier,
    ) -> Result<Served, DaemonError> {
        let mut events = Vec::new();
        let mut last_resolve = Instant::now() - RESOLVE_EVERY;
        let mut last_refresh = Instant::now();
        while !signals.stop.load(Ordering::Relaxed) {
            if signals.reload.swap(false, Ordering::Relaxed) {
                notifier.reloading();
                self.reload(options);
                notifier.ready(&self.forwarding_status());
            }
            events.clear();
            match self.watcher.poll_changes(&mut events) {
                Ok(_) => {}
                Err(neigh::NeighError::EventsLost) => {
                    tracing::warn!("neighbour notifications lost; reading the table again");
                    if let Ok(all) = self.watcher.dump() {
                        let _ = self
                            .gateway
                            .neighbours_changed(all.into_iter().map(|n| (n, true)));
                    }
                }
                Err(e) => tracing::warn!("neighbour watch: {e}"),
            }
            if !events.is_empty() {
                let changes = events
                    .drain(..)
                    .map(|e| (e.neighbour, e.change != NeighbourChange::Removed));
                match self.gateway.neighbours_changed(changes) {
                    Ok(Some(generation)) => {
                        tracing::info!(generation, "neighbours changed; new snapshot published")
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!("applying neighbour change: {e}"),
                }
            }
            if last_resolve.elapsed() >= RESOLVE_EVERY {
                last_resolve = Instant::now();
                if let Err(e) = sync_local_addresses(&self.gateway) {
                    tracing::warn!("reading the box's own addresses: {e}");
                }
                for address in self.gateway.unresolved_backends() {
                    provoke_resolution(address);
                }
                if let Some(egress) = self.fast_egress.as_mut() {
                    self.gateway.with_filters(|filters| egress.apply(filters));
                }

                self.follow_link_macs();
            }
            if last_refresh.elapsed() >= REFRESH_EVERY {
                last_refresh = Instant::now();
                for (ifindex, address) in self.gateway.learned_backend_entries() {
                    if let Err(e) = self.watcher.resolve(ifindex, address) {
                        tracing::debug!(%address, "refreshing neighbour: {e}");
                    }
                }
            }
            if let Some(request) = self.takeover.as_ref().and_then(|l| l.poll()) {
                return Ok(Served::TakeoverAsked(request));
            }
            self.vip_offer.follow(&self.gateway.snapshot());
            if self.workers.iter().any(|w| w.is_finished()) {
                return Err(DaemonError::Runtime(
                    "a worker thread stopped unexpectedly".into(),
                ));
            }
            std::thread::sleep(TICK);
        }
        tracing::info!("stop signal received; shutting down");
        Ok(Served::Stopped)
    }

    /// SIGHUP: re-read the config and apply its rules, all or nothing;
    /// an invalid config is logged and the old rules keep running.
    fn reload(&self, options: &RunOptions) {
        if self.fleet.is_some() {
            // A reload would run the file's rules alone, without etcd's,
            // until the next revision; the file's part changes at a
            // restart.
            tracing::error!(
                "reload rejected: with [etcd] the rules come from etcd; restart to change the \
                 file's part"
            );
            return;
        }
        match crate::control::reload(&self.control, &options.config) {
            Ok(report) => tracing::info!(generation = report.generation, "config reloaded"),
            Err(e) => tracing::error!("reload rejected, the old rules keep running: {e}"),
        }
    }

    /// Stops the workers, closes the sockets, then detaches the programs.
    fn stop(self) {
        self.shut_down(false, false, |_, _| ());
    }

    /// [`Daemon::stop`], then `then` with the stopped workers (their
    /// tables to hand over) and the CLOCK_MONOTONIC of their clock's 0, on
    /// a takeover (`collect`: its steps are marked). The sockets and the
    /// UMEM are closed and freed beside it: the queues are free only once
    /// every descriptor of their sockets is closed, the control side's
    /// statistics readers' too. The programs are detached before `then`,
    /// unless `keep_programs` (their links were handed over): then after
    /// it.
    fn shut_down<R>(
        mut self,
        collect: bool,
        keep_programs: bool,
        then: impl FnOnce(&[crate::worker::Worker], u64) -> R,
    ) -> R {
        // No one may ask to take over a daemon on its way out.
        drop(self.takeover.take());
        let epoch_mono = start::kernel_epoch_ns(self.epoch);
        // First the BGP offer: the router moves the VIPs' flows to the
        // other gateways while this one still forwards.
        self.vip_offer.withdraw_all();
        // Then the etcd source: its status key goes with its lease.
        if let Some(mut fleet) = self.fleet.take() {
            fleet.source.stop();
        }
        if let Some((stop, thread)) = self.control_thread.take() {
            stop.stop();
            let _ = thread.join();
        }
        if let Some(metrics) = self.metrics.take() {
            drop(metrics);
        }
        drop(self.heartbeats.take());
        self.health.stop();
        let mark = |step| {
            if collect {
                takeover::mark(step);
            }
        };
        mark("old: endpoints closed, workers told to stop");
        self.stop_workers.store(true, Ordering::Relaxed);
        let mut stopped = Vec::with_capacity(self.workers.len());
        let mut ports = Vec::with_capacity(self.workers.len());
        for handle in std::mem::take(&mut self.workers) {
            let index = handle.index;
            match handle.join() {
                Some(exit) => {
                    stopped.push(exit.worker);
                    ports.push(exit.ports);
                }
                None => tracing::error!(worker = index, "worker thread panicked"),
            }
        }
        mark("old: workers stopped");
        let umem = self.umem.take();
        let filters = self.gateway.take_filters();
        // The sockets are closed, and the rest freed, on a thread of their
        // own beside the tables' hand-over: a queue is free once every
        // descriptor of its socket is closed, the control side's
        // statistics readers' and the UMEM's too (closed first), and a new
        // process binds its sockets as soon as it is (it tries again while
        // a queue is busy) while it imports the tables.
        let rest = std::thread::Builder::new()
            .name("fg-shutdown".into())
            .spawn(move || {
                close_in_parallel(ports.into_iter().flatten());
                // The UMEM next: its first socket's descriptor is the
                // UMEM's, closed only with it.
                drop(umem);
                if collect {
                    takeover::mark("old: sockets closed, UMEM freed");
                }
                drop(self);
                if collect {
                    takeover::mark("old: the rest freed");
                }
            });
        let result = if keep_programs {
            let result = then(&stopped, epoch_mono);
            drop(filters);
            tracing::info!("stopped: sockets closed, XDP programs handed over");
            result
        } else {
            drop(filters);
            mark("old: XDP programs detached");
            tracing::info!("stopped: sockets closed, XDP programs detached");
            then(&stopped, epoch_mono)
        };
        drop(stopped);
        if let Ok(rest) = rest {
            let _ = rest.join();
        }
        result
    }
}

/// Closes `ports`, each on a thread of its own with its statistics
/// readers' descriptors: the kernel waits for a grace period in each
/// socket's close, and these wait at once rather than in turn.
fn close_in_parallel(ports: impl Iterator<Item = XskPort>) {
    let closing: Vec<_> = ports
        .map(|port| {
            port.close_stats_readers();
            std::thread::Builder::new()
                .name("fg-close".into())
                .spawn(move || drop(port))
        })
        .collect();
    for thread in closing.into_iter().flatten() {
        let _ = thread.join();
    }
}

/// The network heartbeat endpoint, if `[daemon] heartbeat_address` is set:
/// on the management address (the validator refused a VIP), rate-limited
/// by source, each heartbeat checked against its service's token.
fn start_heartbeats(
    settings: &DaemonSettings,
    health: &Arc<HealthMonitor>,
) -> Result<Option<HeartbeatListener>, DaemonError> {
    let Some(bind) = settings.heartbeat_address else {
        return Ok(None);
    };
    let options = HeartbeatOptions {
        rate: RateLimit {
            per_second: settings.heartbeat_rate,
            burst: settings.heartbeat_burst,
        },
        ..HeartbeatOptions::new(bind)
    };
    let monitor = Arc::clone(health);
    let listener = HeartbeatListener::start(
        options,
        health.tokens(),
        Box::new(move |heartbeat| monitor.network_heartbeat(heartbeat)),
    )
    .map_err(|e| DaemonError::Environment(format!("heartbeat endpoint {bind}: {e}")))?;
    tracing::info!(address = %listener.local_addr(), "heartbeats taken over UDP");
    Ok(Some(listener))
}

/// Reads the box's own addresses and hands them to the XDP filters.
fn sync_local_addresses(gateway: &Gateway) -> Result<(), String> {
    let addresses: HashSet<[u8; 16]> = neigh::local_addresses()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(_, address)| crate::wire::addr_to_bytes(address))
        .collect();
    if gateway.set_local_addresses(&addresses)? {
        tracing::info!(
            addresses = addresses.len(),
            "the box's own addresses stay with the kernel"
        );
    }
    Ok(())
}

/// Sends one empty UDP datagram to the discard port of `address`: the
/// kernel routes it and, to send it, resolves the next hop on the right
/// interface — which the watcher then sees. Used only for backends the
/// kernel has no entry for at all.
fn provoke_resolution(address: IpAddr) {
    let bind: SocketAddr = match address {
        IpAddr::V4(_) => SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0)),
        IpAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
    };
    if let Ok(socket) = UdpSocket::bind(bind) {
        let _ = socket.send_to(&[], SocketAddr::new(address, 9));
    }
}

/// Keeps the control thread off the worker cores where the machine has
/// another core.
fn pin_control_thread(worker_cores: &[usize]) {
    let spare = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .find(|c| !worker_cores.contains(&c.id));
    match spare {
        Some(core) => {
            core_affinity::set_for_current(core);
        }
        None => tracing::warn!("every core runs a worker; the control thread shares them"),
    }
}

fn environment(e: impl std::fmt::Display) -> DaemonError {
    DaemonError::Environment(e.to_string())
}

fn join(values: &[usize]) -> String {
    values
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
