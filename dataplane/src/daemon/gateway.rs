//! The gateway's control-side state: the operator's rules, the neighbours
//! the kernel taught us, the published snapshot and the XDP filters — and
//! the one place that turns them into a new generation.
//!
//! Two threads change it: the control API (rule changes, reloads) and the
//! daemon's main loop (neighbour changes). A mutex orders them; workers
//! never take it — they only load the published snapshot.
//!
//! A new generation is made in three steps, so that every key of the
//! published rules is always in every interface's XDP maps, and a change
//! the kernel refuses is taken back whole (docs/architecture.md, "The
//! running gateway", says why in full):
//!
//! 1. widen: every interface's maps get the keys the new rules own that
//!    they lack. If the kernel refuses one, the keys this change added are
//!    removed again from every interface, nothing is published, and the old
//!    generation runs with its own keys;
//! 2. publish the new snapshot;
//! 3. narrow: every interface's maps drop the keys the new rules no longer
//!    own. A key the kernel will not drop stays (harmless: its traffic
//!    reaches the workers, which forward none of it), is reported with the
//!    change, and is tried again at the next one.
//!
//! The lock is held to program the maps and publish, in that order, and
//! not to compile: [`Gateway::apply`] builds the snapshot of a change
//! (100 000 backends take a good part of a second) without it, then takes
//! it, and installs what it built if nothing that went into it moved
//! meanwhile — the published snapshot (which it builds on) and the learned
//! neighbours. If something did, it compiles again; after
//! [`COMPILE_TRIES`] tries it compiles holding the lock, so a busy
//! neighbour table cannot keep a change out. The main loop's neighbour
//! changes compile under the lock: they are what the others wait for.
//!
//! The distribution paths ([`PathRouting`]) live beside the snapshot, not
//! in it: the gateway loads the config's paths into the path table after
//! each accepted change is published (keyed by the service ids of what
//! runs), and every worker reads that table through its own
//! [`PathReader`]. A change whose paths name a backend no path named
//! before is published a second time, so that the snapshot resolves the
//! new name (the register of names is shared by every generation).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use std::time::Instant;

use super::owned_keys::{KeyDelta, OwnedKeys};
use crate::announce::Announcer;
use crate::control::health::initial_word;
use crate::control::{Applied, ApplyError, ServiceChanges};
use crate::liveness::Liveness;
use crate::neigh::{merge_neighbours, KernelNeighbour};
use crate::route::PathReader;
use crate::rules::{Backend, Config, MacAddr, Service};
use crate::table::{LivenessInput, PathRouting, Snapshot, SnapshotPublisher};
use crate::wire::bytes_to_addr;
use crate::xdp::{CapacityError, OwnedTraffic, XdpCapacity, XdpFilter};

/// How many times [`Gateway::apply`] compiles a change without the lock
/// before it compiles one holding it.
const COMPILE_TRIES: u32 = 3;

/// What the control API and the main loop share.
pub struct Gateway {
    inner: Mutex<Inner>,
    publisher: SnapshotPublisher,
    /// ifindex of each configured interface, in port order.
    port_ifindex: Vec<u32>,
}

struct Inner {
    /// The rules as the operator wrote them (no learned neighbours),
    /// shared with the control state that gave them.
    config: Arc<Config>,
    /// What the kernel's neighbour table holds for our interfaces, by
    /// (ifindex, address).
    learned: HashMap<(u32, IpAddr), KernelNeighbour>,
    /// Moves whenever an entry of `learned` is added, removed or changes
    /// its MAC or usability: a snapshot compiled outside the lock is
    /// installed only if this has not moved since it was read.
    learned_version: u64,
    /// Moves whenever the next hop of a backend of the rules moves (a
    /// learned neighbour of a backend, an interface's MAC): what the
    /// published snapshot's endpoints were resolved with.
    hops_version: u64,
    /// [`Inner::hops_version`] when the published snapshot was compiled:
    /// a change of a few services may carry the others' endpoints from it
    /// only while the two agree.
    published_hops: u64,
    /// The published generation's XDP keys, counted by owner.
    keys: OwnedKeys,
    /// Whether a filter still holds keys the published generation does
    /// not own (a removal the kernel refused): the next change narrows
    /// every filter in full, which tries them again.
    narrow_pending: bool,
    /// One per interface, in port order.
    filters: Vec<XdpFilter>,
    /// Each interface's MAC as the kernel has it, in port order: what an
    /// interface the config gives no `mac` sends from. A change moves
    /// `learned_version` too.
    link_macs: Vec<MacAddr>,
    /// The distribution paths of `config`, which the workers read.
    paths: PathRouting,
    /// Sends the announcements of VIPs that appear on the client-facing
    /// interface (port 0); `None` without interfaces, or if the packet
    /// socket could not be opened (logged: the XDP program still answers).
    announcer: Option<Announcer>,
}

impl Inner {
    /// The MAC the client-facing interface sends from: the config's, else
    /// the kernel's.
    fn announce_mac(&self) -> Option<MacAddr> {
        self.config
            .interfaces
            .first()
            .and_then(|i| i.mac)
            .or_else(|| self.link_macs.first().copied())
    }

    /// The MAC of interface `port` as the gateway sends from it: the
    /// config's, else the kernel's.
    fn interface_mac(&self, port: usize) -> Option<MacAddr> {
        self.config
            .interfaces
            .get(port)
            .and_then(|i| i.mac)
            .or_else(|| self.link_macs.get(port).copied())
    }

    /// Gives every interface's XDP program its MAC and VLAN setting for
    /// the ingress checks (frames to another host's MAC, or with a tag it
    /// does not accept, are dropped there).
    fn set_ingress_macs(&mut self) -> Result<(), String> {
        let macs: Vec<Option<MacAddr>> = (0..self.filters.len())
            .map(|port| self.interface_mac(port))
            .collect();
        let vlans = crate::table::PortVlans::new(&self.config.interfaces);
        for (port, (filter, mac)) in self.filters.iter_mut().zip(macs).enumerate() {
            if let Some(mac) = mac {
                let vlan = vlans.port(u16::try_from(port).unwrap_or(u16::MAX));
                filter.set_ingress(mac, vlan).map_err(|e| {
                    format!("programming the XDP filter of {}: {e}", filter.interface())
                })?;
            }
        }
        Ok(())
    }

    /// Sends a gratuitous ARP or unsolicited neighbour advertisement for
    /// each of `vips` (16-byte addresses) out of the client-facing
    /// interface.
    fn announce<'a>(&self, vips: impl IntoIterator<Item = &'a [u8; 16]>) {
        let (Some(announcer), Some(mac)) = (&self.announcer, self.announce_mac()) else {
            return;
        };
        let vips: Vec<IpAddr> = vips.into_iter().map(bytes_to_addr).collect();
        if !vips.is_empty() {
            let sent = announcer.announce(vips.iter().copied(), mac);
            tracing::info!(
                sent,
                vips = ?vips,
                "VIPs announced to the client segment (gratuitous ARP, unsolicited NA)"
            );
        }
    }
}

/// A snapshot compiled for installation, and what it was built on.
struct Compiled {
    snapshot: Snapshot,
    /// Its XDP keys: all of them, or how they moved.
    keys: CompiledKeys,
    /// The snapshot it was built on: the one published at the time.
    previous: Arc<Snapshot>,
    /// [`Inner::learned_version`] at the time.
    learned_version: u64,
    /// [`Inner::hops_version`] at the time.
    hops_version: u64,
}

/// The XDP keys of a compiled snapshot, gathered outside the lock.
enum CompiledKeys {
    /// Every key (a walk over every service): the maps are made to hold
    /// exactly these.
    Whole {
        owned: OwnedTraffic,
        counted: OwnedKeys,
        /// The SYN proxy settings of its services.
        proxies: std::collections::HashMap<crate::xdp::TrafficKey, crate::synproxy::SynProxy>,
    },
    /// Only the changed services' keys, and how their owners moved.
    Changed(KeyDelta),
}

/// What a compile starts from, read under the lock.
struct CompileInput {
    learned: Vec<KernelNeighbour>,
    link_macs: Vec<MacAddr>,
    learned_version: u64,
    hops_version: u64,
    previous: Arc<Snapshot>,
    /// The running config and the changed services, when the change was
    /// made from exactly what the published snapshot was compiled from.
    since: Option<Arc<Config>>,
}

impl Compiled {
    /// Compiles `config`, with what the kernel says merged in, on
    /// `input.previous`: only the services `changed` names when
    /// `input.since` says the rest runs as it is, else in full.
    fn new(
        config: &Config,
        port_ifindex: &[u32],
        input: CompileInput,
        changed: Option<&[String]>,
    ) -> Compiled {
        let CompileInput {
            learned,
            link_macs,
            learned_version,
            hops_version,
            previous,
            since,
        } = input;
        let kernel = KernelView {
            learned: &learned,
            port_ifindex,
            link_macs: &link_macs,
        };
        let (snapshot, keys) = match (since, changed) {
            (Some(since), Some(names)) => {
                let neighbours = merge_neighbours(config, &learned, port_ifindex);
                let snapshot = build_changed(config, &neighbours, &previous, names);
                let delta = KeyDelta::between(&since, &previous, config, &snapshot, names);
                (snapshot, CompiledKeys::Changed(delta))
            }
            _ => {
                let effective = kernel.effective(config);
                let snapshot = build(&effective, Some(&previous));
                let keys = CompiledKeys::Whole {
                    owned: OwnedTraffic::from_snapshot(&snapshot),
                    counted: OwnedKeys::of(&snapshot),
                    proxies: crate::xdp::syn_proxies_of(&snapshot),
                };
                (snapshot, keys)
            }
        };
        Compiled {
            snapshot,
            keys,
            previous,
            learned_version,
            hops_version,
        }
    }

    /// Whether it was built on what runs now (`inner` is locked).
    fn is_current(&self, inner: &Inner, publisher: &SnapshotPublisher) -> bool {
        self.learned_version == inner.learned_version
            && Arc::ptr_eq(&self.previous, &publisher.current())
    }
}

impl Gateway {
    /// Builds the first snapshot from `config` and what the kernel already
    /// knows, programs the filters with its keys and publishes it. Rules
    /// the XDP maps cannot hold are refused first, with their counts.
    /// `link_macs` are the interfaces' MACs as the kernel has them, in
    /// port order (interfaces the config gives no `mac` send from these).
    pub fn start(
        config: Config,
        learned: Vec<KernelNeighbour>,
        filters: Vec<XdpFilter>,
        port_ifindex: Vec<u32>,
        link_macs: Vec<MacAddr>,
    ) -> Result<Gateway, String> {
        XdpCapacity::PROGRAM
            .check(&config)
            .map_err(|e| e.problems("the config").join("; "))?;
        let learned: HashMap<(u32, IpAddr), KernelNeighbour> = learned
            .into_iter()
            .map(|n| ((n.ifindex, n.address), n))
            .collect();
        let effective = {
            let learned: Vec<KernelNeighbour> = learned.values().cloned().collect();
            KernelView {
                learned: &learned,
                port_ifindex: &port_ifindex,
                link_macs: &link_macs,
            }
            .effective(&config)
        };
        let mut snapshot = build(&effective, None);
        let mut paths = PathRouting::new(usize::MAX, &snapshot);
        let new_name = paths
            .load(&config, &snapshot)
            .map_err(|e| format!("the distribution paths: {e}"))?;
        if new_name {
            // Nothing runs yet: build again so that the paths' backend
            // names resolve.
            snapshot = build(&effective, Some(&snapshot));
        }
        let announcer = port_ifindex.first().and_then(|&ifindex| {
            Announcer::open(ifindex)
                .map_err(|e| {
                    tracing::warn!(
                        error = %e,
                        "cannot open a packet socket to announce VIPs; the XDP program still \
                         answers ARP and neighbour solicitations for them"
                    )
                })
                .ok()
        });
        let keys = OwnedKeys::of(&snapshot);
        let mut inner = Inner {
            config: Arc::new(config),
            learned,
            learned_version: 0,
            hops_version: 0,
            published_hops: 0,
            keys,
            narrow_pending: false,
            filters,
            link_macs,
            paths,
            announcer,
        };
        inner.set_ingress_macs()?;
        // The client-facing interface (port 0) answers for announced VIPs.
        let mac = inner.announce_mac();
        if let (Some(first), Some(mac)) = (inner.filters.first_mut(), mac) {
            first.set_announces(true);
            first
                .set_announce_mac(mac)
                .map_err(|e| format!("programming the XDP filter of {}: {e}", first.interface()))?;
        }
        let owned = OwnedTraffic::from_snapshot(&snapshot);
        // Nothing runs yet: a failure here stops the daemon, and dropping
        // the filters detaches them.
        let proxies = crate::xdp::syn_proxies_of(&snapshot);
        for filter in inner.filters.iter_mut() {
            filter.update(&owned).map_err(|e| {
                format!("programming the XDP filter of {}: {e}", filter.interface())
            })?;
            filter
                .set_syn_proxies(&proxies)
                .map_err(|e| format!("programming the SYN proxy of {}: {e}", filter.interface()))?;
        }
        inner.announce(&owned.announced);
        for warning in super::segment_warnings(&inner.config) {
            tracing::warn!("{warning}");
        }
        Ok(Gateway {
            inner: Mutex::new(inner),
            publisher: SnapshotPublisher::new(snapshot),
            port_ifindex,
        })
    }

    /// The publisher, for readers.
    pub fn publisher(&self) -> &SnapshotPublisher {
        &self.publisher
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.publisher.current()
    }

    /// A reader of the distribution paths, for a worker or `explain`.
    pub fn path_reader(&self) -> PathReader {
        self.lock().paths.reader()
    }

    /// ifindex of each configured interface, in port order.
    pub fn port_ifindex(&self) -> &[u32] {
        &self.port_ifindex
    }

    /// The operator's rules now running.
    pub fn config(&self) -> Config {
        Config::clone(&self.lock().config)
    }

    /// The operator's rules now running, as shared.
    pub fn running_config(&self) -> Arc<Config> {
        Arc::clone(&self.lock().config)
    }

    /// Whether the XDP maps can hold `config`'s rules: the sizes of
    /// [`XdpCapacity::PROGRAM`], which [`XdpFilter::attach`] made sure the
    /// kernel gave every filter.
    pub fn check(&self, config: &Config) -> Result<(), CapacityError> {
        XdpCapacity::PROGRAM.check(config)
    }

    /// Makes `config` (already validated) the running rules: all of it, or
    /// none of it, with the error saying what runs then. The snapshot is
    /// compiled without the lock (see the module's documentation).
    pub fn apply(&self, config: Config) -> Result<Applied, ApplyError> {
        self.apply_shared(Arc::new(config), None)
    }

    /// [`Gateway::apply`] for a config that is shared (it runs as it is)
    /// and, with `changes`, differs from `changes.since` only in the
    /// services `changes.services` names. When `changes.since` runs and
    /// the published snapshot was compiled from it with the backends'
    /// next hops of now, only those services are compiled (the others
    /// carried with their tables shared) and the XDP maps are given and
    /// relieved of their keys alone, all or nothing as ever; otherwise
    /// the whole config is compiled and the maps are made to hold exactly
    /// its keys.
    pub fn apply_shared(
        &self,
        config: Arc<Config>,
        changes: Option<ServiceChanges<'_>>,
    ) -> Result<Applied, ApplyError> {
        if let Err(e) = self.check(&config) {
            let inner = self.lock();
            let running = self.publisher.current();
            return Err(ApplyError {
                reason: e.to_string(),
                generation: running.generation(),
                kernel: maps_state(&inner.filters, &OwnedTraffic::from_snapshot(&running)),
            });
        }
        let mut compiled = self.compile_unlocked(&config, changes);
        let mut inner = self.lock();
        let mut tries = 1;
        while !compiled.is_current(&inner, &self.publisher) {
            if tries == COMPILE_TRIES {
                compiled = self.compile_changed(&inner, &config, changes);
                break;
            }
            drop(inner);
            compiled = self.compile_unlocked(&config, changes);
            inner = self.lock();
            tries += 1;
        }
        // The path table is keyed by what runs: a change of services
        // that have no paths, before or after, leaves it as it is.
        let paths_kept = changes.is_some_and(|c| {
            c.made_from(&inner.config)
                && !crate::control::paths_in(c.since, c.services)
                && !crate::control::paths_in(&config, c.services)
        });
        let previous = std::mem::replace(&mut inner.config, config);
        match self.install(&mut inner, compiled) {
            Ok(mut applied) => {
                applied
                    .warnings
                    .extend(super::segment_warnings(&inner.config));
                if paths_kept {
                    return Ok(applied);
                }
                Ok(self.load_paths(&mut inner, applied))
            }
            Err(e) => {
                inner.config = previous;
                Err(e)
            }
        }
    }

    /// Makes `config`, which differs from the running rules only in
    /// services' distribution paths, run: the path table is edited path
    /// by path and published, with no new snapshot unless a path names a
    /// backend no path named before (then one is built, so that it
    /// resolves). Refused whole by the path table, nothing changed.
    pub fn apply_paths(&self, config: Config) -> Result<Applied, ApplyError> {
        let mut inner = self.lock();
        let running = self.publisher.current();
        let inner = &mut *inner;
        let new_name = inner
            .paths
            .edit(&inner.config, &config, &running)
            .map_err(|e| ApplyError {
                reason: format!("the path table refused the change: {e}"),
                generation: running.generation(),
                kernel: "the XDP maps were not touched".into(),
            })?;
        inner.config = Arc::new(config);
        if !new_name {
            return Ok(Applied::clean(running.generation()));
        }
        let compiled = self.compile(inner, &inner.config);
        self.install(inner, compiled)
    }

    /// Makes `config`, which differs from the running rules only in the
    /// paths `updates` name (a control API request of path verbs), run:
    /// those paths alone are edited in the path table and published, as
    /// [`Gateway::apply_paths`] does. Refused whole by the path table,
    /// nothing changed.
    pub fn apply_path_updates(
        &self,
        config: Config,
        updates: &[crate::table::PathUpdate],
    ) -> Result<Applied, ApplyError> {
        let mut inner = self.lock();
        let running = self.publisher.current();
        let inner = &mut *inner;
        let new_name = inner
            .paths
            .update(&config, updates, &running)
            .map_err(|e| ApplyError {
                reason: format!("the path table refused the change: {e}"),
                generation: running.generation(),
                kernel: "the XDP maps were not touched".into(),
            })?;
        inner.config = Arc::new(config);
        if !new_name {
            return Ok(Applied::clean(running.generation()));
        }
        let compiled = self.compile(inner, &inner.config);
        self.install(inner, compiled)
    }

    /// After `applied` was published: loads the running rules' paths,
    /// keyed by what runs, and if they name a backend no path named
    /// before, publishes once more so that the snapshot resolves it.
    /// A path table that refuses the paths keeps its old ones, and the
    /// change says so (the rules' checks make that an internal fault).
    fn load_paths(&self, inner: &mut Inner, mut applied: Applied) -> Applied {
        let running = self.publisher.current();
        match inner.paths.load(&inner.config, &running) {
            Ok(false) => applied,
            Ok(true) => {
                let compiled = self.compile(inner, &inner.config);
                match self.install(inner, compiled) {
                    Ok(again) => {
                        applied.generation = again.generation;
                        applied.warnings.extend(again.warnings);
                    }
                    Err(e) => applied.warnings.push(format!(
                        "paths to a newly named backend fall back to the other policies \
                         until the next change: {e}"
                    )),
                }
                applied
            }
            Err(e) => {
                applied
                    .warnings
                    .push(format!("the distribution paths were not changed: {e}"));
                applied
            }
        }
    }

    /// Compiles `config` (changed from the running rules as `changes`
    /// says, if given) on what runs now, holding the lock only to read
    /// what the compile starts from.
    fn compile_unlocked(&self, config: &Config, changes: Option<ServiceChanges<'_>>) -> Compiled {
        let input = self.compile_input(&self.lock(), changes);
        Compiled::new(
            config,
            &self.port_ifindex,
            input,
            changes.map(|c| c.services),
        )
    }

    /// What a compile on what runs now starts from (`inner` is locked).
    fn compile_input(&self, inner: &Inner, changes: Option<ServiceChanges<'_>>) -> CompileInput {
        let since = changes
            .filter(|c| c.made_from(&inner.config) && inner.published_hops == inner.hops_version)
            .map(|_| Arc::clone(&inner.config));
        CompileInput {
            learned: inner.learned.values().cloned().collect(),
            link_macs: inner.link_macs.clone(),
            learned_version: inner.learned_version,
            hops_version: inner.hops_version,
            previous: self.publisher.current(),
            since,
        }
    }

    /// Compiles `config` in full on what runs now, with the lock held
    /// (`inner`).
    fn compile(&self, inner: &Inner, config: &Config) -> Compiled {
        self.compile_changed(inner, config, None)
    }

    /// [`Gateway::compile`] of a change `changes` describes, if given.
    fn compile_changed(
        &self,
        inner: &Inner,
        config: &Config,
        changes: Option<ServiceChanges<'_>>,
    ) -> Compiled {
        let input = self.compile_input(inner, changes);
        Compiled::new(
            config,
            &self.port_ifindex,
            input,
            changes.map(|c| c.services),
        )
    }

    /// Records neighbour changes; rebuilds if any changed a backend's
    /// next hop (clients' entries come and go with their traffic and are
    /// kept, but change nothing the snapshot uses). Returns the new
    /// generation, if any.
    pub fn neighbours_changed(
        &self,
        changes: impl IntoIterator<Item = (KernelNeighbour, bool)>,
    ) -> Result<Option<u64>, String> {
        let mut inner = self.lock();
        let backends: HashSet<IpAddr> = backend_addresses(&inner.config).collect();
        let mut changed = false;
        for (neighbour, present) in changes {
            if !self.port_ifindex.contains(&neighbour.ifindex) {
                continue;
            }
            let key = (neighbour.ifindex, neighbour.address);
            let is_backend = backends.contains(&neighbour.address);
            let before = inner.learned.get(&key).map(|n| (n.mac, n.is_usable()));
            if present {
                let after = Some((neighbour.mac, neighbour.is_usable()));
                if before != after {
                    changed |= is_backend;
                    inner.learned_version += 1;
                }
                inner.learned.insert(key, neighbour);
            } else if inner.learned.remove(&key).is_some() {
                changed |= is_backend;
                inner.learned_version += 1;
            }
        }
        if !changed {
            return Ok(None);
        }
        inner.hops_version += 1;
        let compiled = self.compile(&inner, &inner.config);
        let applied = self
            .install(&mut inner, compiled)
            .map_err(|e| e.to_string())?;
        for warning in &applied.warnings {
            tracing::warn!(generation = applied.generation, "{warning}");
        }
        Ok(Some(applied.generation))
    }

    /// Builds the running rules again, so that each service's tables
    /// spread its flows over its backends alive now (after a health
    /// transition: only the services whose alive set changed get new
    /// tables). Returns the new generation.
    pub fn rebuild(&self) -> Result<u64, String> {
        let mut inner = self.lock();
        let compiled = self.compile(&inner, &inner.config);
        let applied = self
            .install(&mut inner, compiled)
            .map_err(|e| e.to_string())?;
        for warning in &applied.warnings {
            tracing::warn!(generation = applied.generation, "{warning}");
        }
        Ok(applied.generation)
    }

    /// The interfaces' MACs as last read from the kernel, in port order.
    pub fn link_macs(&self) -> Vec<MacAddr> {
        self.lock().link_macs.clone()
    }

    /// Records the interfaces' MACs as the kernel has them now (port
    /// order); rebuilds if one changed that an interface without a
    /// configured `mac` sends from. Returns the new generation, if any.
    pub fn link_macs_changed(&self, macs: Vec<MacAddr>) -> Result<Option<u64>, String> {
        let mut inner = self.lock();
        if inner.link_macs == macs {
            return Ok(None);
        }
        let used = |i: usize| {
            inner
                .config
                .interfaces
                .get(i)
                .is_some_and(|c| c.mac.is_none())
        };
        let changed = (0..macs.len()).any(|i| used(i) && inner.link_macs.get(i) != macs.get(i));
        let port0_moved = used(0) && inner.link_macs.first() != macs.first();
        inner.link_macs = macs;
        inner.learned_version += 1;
        if !changed {
            return Ok(None);
        }
        inner.hops_version += 1;
        inner.set_ingress_macs()?;
        // The client-facing interface's MAC moved: answer with the new one,
        // and tell the segment.
        if port0_moved {
            if let Some(mac) = inner.announce_mac() {
                if let Some(first) = inner.filters.first_mut() {
                    first.set_announce_mac(mac).map_err(|e| {
                        format!("programming the XDP filter of {}: {e}", first.interface())
                    })?;
                    let announced = first.announced().clone();
                    inner.announce(&announced);
                }
            }
        }
        let compiled = self.compile(&inner, &inner.config);
        let applied = self
            .install(&mut inner, compiled)
            .map_err(|e| e.to_string())?;
        Ok(Some(applied.generation))
    }

    /// Backend addresses with no static or usable learned next hop.
    pub fn unresolved_backends(&self) -> Vec<IpAddr> {
        let inner = self.lock();
        let usable: HashSet<IpAddr> = inner
            .learned
            .values()
            .filter(|n| n.is_usable())
            .map(|n| n.address)
            .collect();
        let mut missing: Vec<IpAddr> = backend_addresses(&inner.config)
            .filter(|addr| inner.config.neighbour(*addr).is_none() && !usable.contains(addr))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        missing
    }

    /// Learned entries for backend addresses (to keep them fresh).
    pub fn learned_backend_entries(&self) -> Vec<(u32, IpAddr)> {
        let inner = self.lock();
        let backends: HashSet<IpAddr> = backend_addresses(&inner.config).collect();
        inner
            .learned
            .keys()
            .filter(|(_, address)| backends.contains(address))
            .copied()
            .collect()
    }

    /// Tells every filter the box's own addresses (replies from a backend
    /// to one of them are the box's own connections: the kernel's).
    /// Returns whether anything changed.
    pub fn set_local_addresses(&self, addresses: &HashSet<[u8; 16]>) -> Result<bool, String> {
        let mut inner = self.lock();
        let mut changed = false;
        for filter in inner.filters.iter_mut() {
            if filter.local_addresses() != addresses {
                filter
                    .set_local_addresses(addresses)
                    .map_err(|e| format!("updating the box's own addresses: {e}"))?;
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Runs `f` with the XDP filters (e.g. to read their counters).
    pub fn with_filters<T>(&self, f: impl FnOnce(&mut [XdpFilter]) -> T) -> T {
        f(&mut self.lock().filters)
    }

    /// [`Gateway::with_filters`] if no change holds them now; `None`
    /// while one is being installed (readers that answer people, such as
    /// `status`, must not wait for a large change).
    pub fn try_with_filters<T>(&self, f: impl FnOnce(&mut [XdpFilter]) -> T) -> Option<T> {
        match self.inner.try_lock() {
            Ok(mut inner) => Some(f(&mut inner.filters)),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(f(&mut p.into_inner().filters)),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Takes the filters out (at shutdown, to detach them in order).
    pub fn take_filters(&self) -> Vec<XdpFilter> {
        std::mem::take(&mut self.lock().filters)
    }

    /// Makes `compiled` (built on what runs: the caller checked, holding
    /// the lock, `inner`) the next generation: widen every filter,
    /// publish, narrow every filter (the module's documentation says why
    /// in this order). A change compiled for a few services widens with
    /// the keys that no service owned before and narrows by those no
    /// service owns after, so the maps end as a whole change leaves them.
    fn install(&self, inner: &mut Inner, compiled: Compiled) -> Result<Applied, ApplyError> {
        let Compiled {
            snapshot,
            keys,
            previous,
            hops_version,
            ..
        } = compiled;
        // What the filters are widened with: every key, or the new ones.
        let (wanted, gone) = match &keys {
            CompiledKeys::Whole { owned, .. } => (std::borrow::Cow::Borrowed(owned), None),
            CompiledKeys::Changed(delta) => {
                let (added, gone) = inner.keys.change(delta);
                (std::borrow::Cow::Owned(added), Some(gone))
            }
        };

        let mut widenings = Vec::with_capacity(inner.filters.len());
        for i in 0..inner.filters.len() {
            let Some(filter) = inner.filters.get_mut(i) else {
                break;
            };
            match filter.widen(&wanted) {
                Ok(widening) => widenings.push(widening),
                Err(e) => {
                    // This filter took back its own keys; take back those
                    // the change gave the filters before it.
                    let reason =
                        format!("the XDP maps of {} refused a key: {e}", filter.interface());
                    for (filter, widening) in inner.filters.iter_mut().zip(&widenings) {
                        if let Err(e) = filter.undo(widening) {
                            tracing::warn!(
                                interface = filter.interface(),
                                error = %e,
                                "keys of a failed change could not be taken out of the XDP maps"
                            );
                        }
                    }
                    return Err(ApplyError {
                        reason,
                        generation: previous.generation(),
                        kernel: maps_state(&inner.filters, &OwnedTraffic::from_snapshot(&previous)),
                    });
                }
            }
        }

        let generation = snapshot.generation();
        // The SYN proxy follows the published rules: a worker honours the
        // program's mark only for a service its snapshot proxies.
        let full_proxies = match (&keys, inner.narrow_pending) {
            (CompiledKeys::Whole { .. }, _) => None,
            (CompiledKeys::Changed(_), true) => Some(crate::xdp::syn_proxies_of(&snapshot)),
            (CompiledKeys::Changed(_), false) => None,
        };
        self.publisher.publish(snapshot);
        inner.published_hops = hops_version;
        // VIPs now answered for: tell the segment.
        inner.announce(widenings.iter().flat_map(|w| w.announced()));

        // The counts follow what runs now; a change that could not narrow
        // (nor, below, set the SYN proxy) leaves the next one to do it in
        // full.
        let narrow_in_full = inner.narrow_pending;
        let (owned, proxies, changed_proxies) = match keys {
            CompiledKeys::Whole {
                owned,
                counted,
                proxies,
            } => {
                inner.keys = counted;
                (Some(owned), Some(proxies), Vec::new())
            }
            CompiledKeys::Changed(mut delta) => {
                let changed_proxies = std::mem::take(&mut delta.proxies);
                inner.keys.commit(delta);
                let owned = narrow_in_full.then(|| inner.keys.owned());
                (owned, full_proxies, changed_proxies)
            }
        };
        let (warnings, pending) = narrow_filters(
            inner,
            generation,
            owned.as_ref(),
            gone.as_ref(),
            proxies.as_ref(),
            &changed_proxies,
        );
        inner.narrow_pending = pending;
        Ok(Applied {
            generation,
            warnings,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every
        // change is a whole replacement), so a poisoned lock is still
        // usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// After `generation` is published: sets every filter's SYN proxies (all
/// of `proxies`, or the `changed_proxies` alone) and takes out the keys no
/// longer owned (all but `owned`, or `gone` alone). Returns the warnings,
/// and whether a filter was left with more than it should hold (the next
/// change then does both in full).
fn narrow_filters(
    inner: &mut Inner,
    generation: u64,
    owned: Option<&OwnedTraffic>,
    gone: Option<&crate::xdp::Unowned>,
    proxies: Option<&std::collections::HashMap<crate::xdp::TrafficKey, crate::synproxy::SynProxy>>,
    changed_proxies: &[(crate::xdp::TrafficKey, Option<crate::synproxy::SynProxy>)],
) -> (Vec<String>, bool) {
    let mut warnings = Vec::new();
    let mut pending = false;
    for filter in inner.filters.iter_mut() {
        let proxied = match proxies {
            Some(all) => filter.set_syn_proxies(all),
            None => filter.change_syn_proxies(changed_proxies),
        };
        if let Err(e) = proxied {
            pending = true;
            warnings.push(format!(
                "the SYN proxy settings of generation {generation} could not all be written \
                 to the XDP program of {} ({e}); the next change tries again",
                filter.interface()
            ));
        }
        let narrowed = match (owned, gone) {
            (Some(owned), _) => filter.narrow(owned),
            (None, Some(gone)) => filter.remove_unowned(gone),
            (None, None) => Ok(()),
        };
        if let Err(e) = narrowed {
            pending = true;
            let extra = match owned {
                Some(owned) => filter.drift(owned).extra,
                None => filter.drift(&inner.keys.owned()).extra,
            };
            warnings.push(format!(
                "the XDP maps of {} still hold {extra} {} that generation {generation} no longer \
                 owns ({e}); traffic matching them reaches the workers, which forward none of \
                 it, until a later change removes them",
                filter.interface(),
                if extra == 1 { "key" } else { "keys" }
            ));
        }
    }
    (warnings, pending)
}

/// Compiles `config` on `previous` (without: over a new liveness table),
/// a backend given a new endpoint id starting as its health settings say.
fn build(config: &Config, previous: Option<&Snapshot>) -> Snapshot {
    let table = match previous {
        Some(p) => Arc::clone(p.liveness()),
        None => Arc::new(Liveness::new(Instant::now())),
    };
    let now_ns = table.now_ns();
    let initial = |s: &Service, b: &Backend| initial_word(config, s, b, now_ns);
    let input = LivenessInput {
        table: &table,
        now_ns,
        initial: &initial,
    };
    Snapshot::build_with(config, previous, input)
}

/// Compiles the services `changed` names of `config` on `previous`, which
/// was compiled from the same rules but for them, with `neighbours` (the
/// static and learned ones merged); the other services are carried.
fn build_changed(
    config: &Config,
    neighbours: &[crate::rules::Neighbour],
    previous: &Snapshot,
    changed: &[String],
) -> Snapshot {
    let table = Arc::clone(previous.liveness());
    let now_ns = table.now_ns();
    let initial = |s: &Service, b: &Backend| initial_word(config, s, b, now_ns);
    let input = LivenessInput {
        table: &table,
        now_ns,
        initial: &initial,
    };
    Snapshot::build_changed_over(config, neighbours, previous, input, changed)
}

/// What the kernel says that the rules leave to it: learned neighbours,
/// and the MACs of interfaces the config gives none.
struct KernelView<'a> {
    learned: &'a [KernelNeighbour],
    port_ifindex: &'a [u32],
    link_macs: &'a [MacAddr],
}

impl KernelView<'_> {
    /// The rules the data path runs: `config` with the learned neighbours
    /// merged in and every interface's MAC filled in.
    fn effective(&self, config: &Config) -> Config {
        let mut effective = config.clone();
        effective.neighbours = merge_neighbours(config, self.learned, self.port_ifindex);
        for (interface, link) in effective.interfaces.iter_mut().zip(self.link_macs) {
            interface.mac.get_or_insert(*link);
        }
        effective
    }
}

/// What the filters' maps hold compared with `owned`, the keys of the
/// generation that runs, as one clause of an [`ApplyError`].
fn maps_state(filters: &[XdpFilter], owned: &OwnedTraffic) -> String {
    let differ: Vec<String> = filters
        .iter()
        .filter_map(|filter| {
            let drift = filter.drift(owned);
            let name = filter.interface();
            match (drift.extra, drift.missing) {
                (0, 0) => None,
                (extra, 0) => Some(format!("{name}'s hold {extra} more")),
                (0, missing) => Some(format!("{name}'s lack {missing} of them")),
                (extra, missing) => Some(format!(
                    "{name}'s hold {extra} more and lack {missing} of them"
                )),
            }
        })
        .collect();
    if differ.is_empty() {
        return "every interface's XDP maps hold exactly its keys".into();
    }
    format!(
        "the XDP maps hold its keys, except that {} (the kernel would not take them out or \
         put them back; traffic to keys it does not own reaches the workers, which forward none \
         of it; the next change tries again)",
        differ.join(", ")
    )
}

/// Every backend address of every service (with repeats).
fn backend_addresses(config: &Config) -> impl Iterator<Item = IpAddr> + '_ {
    config
        .services
        .iter()
        .flat_map(|s| s.backends.iter().map(|b| b.address))
}

#[cfg(test)]
mod tests {
    //! Failures the kernel has no reason to produce (a delete refused), so
    //! they are made here through the key sets' test-only switch, on real
    //! XDP filters in a network namespace. Failures the kernel does produce
    //! (a full map) are in tests/xdp_rollback.rs.

    use super::*;
    use crate::rules;
    use crate::testnet::{self, NetNs};
    use crate::xdp::{XdpMapKeys, XdpMode};

    /// A gateway namespace with g0 and g1, each a veth to a peer
    /// namespace.
    struct TwoInterfaces {
        gateway: NetNs,
        _peer: NetNs,
    }

    impl TwoInterfaces {
        fn new() -> TwoInterfaces {
            let gateway = NetNs::new("fggw").unwrap();
            let peer = NetNs::new("fggp").unwrap();
            testnet::veth_pair(&gateway, "g0", &peer, "p0", 1).unwrap();
            testnet::veth_pair(&gateway, "g1", &peer, "p1", 1).unwrap();
            TwoInterfaces {
                gateway,
                _peer: peer,
            }
        }

        fn attach(&self, interface: &'static str, capacity: Option<XdpCapacity>) -> XdpFilter {
            self.gateway
                .enter(move || match capacity {
                    None => XdpFilter::attach(interface, XdpMode::Generic),
                    Some(c) => XdpFilter::attach_with_capacity(interface, XdpMode::Generic, c),
                })
                .unwrap()
                .unwrap()
        }
    }

    /// A service: name, protocol, VIP, port, backends (address, port).
    type ServiceRow<'a> = (&'a str, &'a str, &'a str, u16, &'a [(&'a str, u16)]);

    /// Rules of `services` on interfaces g0 and g1.
    fn rules(services: &[ServiceRow<'_>]) -> Config {
        let mut text = String::from(
            "[[interfaces]]\nname = \"g0\"\nmac = \"02:66:67:00:20:01\"\n\
             [[interfaces]]\nname = \"g1\"\nmac = \"02:66:67:00:21:01\"\n",
        );
        for (name, protocol, vip, port, backends) in services {
            text.push_str(&format!(
                "[[services]]\nname = \"{name}\"\nprotocol = \"{protocol}\"\nvip = \"{vip}\"\nport = {port}\n"
            ));
            for (address, port) in *backends {
                text.push_str(&format!(
                    "[[services.backends]]\naddress = \"{address}\"\nport = {port}\n"
                ));
            }
        }
        rules::load_str(&text, "gw.toml").unwrap()
    }

    fn start(
        interfaces: &TwoInterfaces,
        config: &Config,
        small_g1: Option<XdpCapacity>,
    ) -> Gateway {
        let filters = vec![
            interfaces.attach("g0", None),
            interfaces.attach("g1", small_g1),
        ];
        Gateway::start(config.clone(), Vec::new(), filters, vec![0, 0], Vec::new()).unwrap()
    }

    /// What each filter's maps hold, read from the kernel.
    fn in_kernel(gateway: &Gateway) -> Vec<XdpMapKeys> {
        gateway.with_filters(|filters| filters.iter().map(|f| f.read_maps().unwrap()).collect())
    }

    const WEB: &[(&str, u16)] = &[("198.18.1.11", 8080), ("198.18.1.12", 8080)];

    #[test]
    fn a_key_the_kernel_will_not_drop_is_reported_with_the_change_and_dropped_by_the_next() {
        if !testnet::privileged() {
            return;
        }
        let interfaces = TwoInterfaces::new();
        let a = rules(&[("web", "tcp", "198.18.100.10", 80, WEB)]);
        let gateway = start(&interfaces, &a, None);

        // Backend .12 goes; g1 will not drop its key.
        let b = rules(&[("web", "tcp", "198.18.100.10", 80, &[("198.18.1.11", 8080)])]);
        gateway.with_filters(|f| f[1].refuse_removals(true));
        let applied = gateway.apply(b.clone()).unwrap();
        assert_eq!(applied.generation, 2);
        assert_eq!(gateway.snapshot().generation(), 2);
        let [warning] = applied.warnings.as_slice() else {
            panic!("{applied:?}")
        };
        assert!(
            warning.starts_with(
                "the XDP maps of g1 still hold 1 key that generation 2 no longer owns \
                 (removing tcp 198.18.1.12:8080 from map reply_sources: "
            ),
            "{warning}"
        );
        let owned_b = OwnedTraffic::from_config(&b);
        let [g0, g1] = in_kernel(&gateway).try_into().unwrap();
        assert!(g0.hold_exactly(&owned_b), "{g0:?}");
        assert!(!g1.hold_exactly(&owned_b));
        assert_eq!(g1.owned(), OwnedTraffic::from_config(&a), "g1 kept .12");

        // The next change drops it.
        gateway.with_filters(|f| f[1].refuse_removals(false));
        let c = rules(&[
            ("web", "tcp", "198.18.100.10", 80, &[("198.18.1.11", 8080)]),
            ("dns", "udp", "198.18.100.10", 53, &[("198.18.1.11", 5353)]),
        ]);
        let applied = gateway.apply(c.clone()).unwrap();
        assert_eq!((applied.generation, applied.warnings.len()), (3, 0));
        let owned_c = OwnedTraffic::from_config(&c);
        for maps in in_kernel(&gateway) {
            assert!(maps.hold_exactly(&owned_c), "{maps:?}");
        }
    }

    #[test]
    fn a_rollback_the_kernel_will_not_finish_says_what_the_maps_hold() {
        if !testnet::privileged() {
            return;
        }
        let interfaces = TwoInterfaces::new();
        let a = rules(&[("web", "tcp", "198.18.100.10", 80, WEB)]);
        // g1's services map holds 2 keys: the second new service is refused.
        let small = XdpCapacity {
            service_keys: 2,
            ..XdpCapacity::PROGRAM
        };
        let gateway = start(&interfaces, &a, Some(small));
        let b = rules(&[
            ("web", "tcp", "198.18.100.10", 80, WEB),
            ("dns", "udp", "198.18.100.10", 53, &[("198.18.1.11", 5353)]),
            ("web2", "tcp", "198.18.100.11", 80, &[("198.18.1.13", 8080)]),
        ]);
        // g0 took all 5 new keys (2 services, 2 reply sources, 1 VIP) and
        // will not give them back.
        gateway.with_filters(|f| f[0].refuse_removals(true));
        let e = gateway.apply(b).unwrap_err();
        assert_eq!(e.generation, 1);
        assert!(
            e.reason
                .starts_with("the XDP maps of g1 refused a key: adding ")
                && e.reason
                    .ends_with("to map services: the map is full (E2BIG)"),
            "{e}"
        );
        assert!(
            e.kernel
                .starts_with("the XDP maps hold its keys, except that g0's hold 5 more ("),
            "{e}"
        );
        assert_eq!(gateway.snapshot().generation(), 1);
        assert_eq!(gateway.config(), a);
        let owned_a = OwnedTraffic::from_config(&a);
        let [g0, g1] = in_kernel(&gateway).try_into().unwrap();
        assert!(g1.hold_exactly(&owned_a), "{g1:?}");
        assert_eq!(g0.services.len(), 3, "{g0:?}");
        assert_eq!(g0.reply_sources.len(), 4, "{g0:?}");
        assert_eq!(g0.vip_addresses.len(), 2, "{g0:?}");

        // Once the kernel lets go, the next change cleans up.
        gateway.with_filters(|f| f[0].refuse_removals(false));
        let c = rules(&[("web", "tcp", "198.18.100.10", 80, &[("198.18.1.11", 8080)])]);
        let applied = gateway.apply(c.clone()).unwrap();
        assert_eq!((applied.generation, applied.warnings.len()), (2, 0));
        for maps in in_kernel(&gateway) {
            assert!(
                maps.hold_exactly(&OwnedTraffic::from_config(&c)),
                "{maps:?}"
            );
        }
    }

    /// `web` and 200 services of 1 000 backends each: a change whose
    /// compile takes a while (Maglev tables of 65 537 slots each).
    fn large(base: &Config) -> Config {
        let mut config = base.clone();
        let web = config.services[0].clone();
        config.services.extend((0..200u16).map(|i| {
            let mut s = web.clone();
            s.name = format!("s{i}");
            s.port = 1000 + i;
            s.maglev_table_size = 65_537;
            s.backends = (0..1000u16)
                .map(|b| {
                    let address = [198, 19, u8::try_from(b / 250).unwrap(), 1 + (b % 250) as u8];
                    rules::Backend::new(address.into(), 10_000 + i)
                })
                .collect();
            s
        }));
        config
    }

    /// A learned neighbour on the backend side (ifindex 12).
    fn learned(address: &str, last: u8) -> KernelNeighbour {
        KernelNeighbour {
            ifindex: 12,
            address: address.parse().unwrap(),
            mac: [0x02, 0x66, 0x67, 0, 0x02, last],
            state: crate::neigh::NeighbourState::Reachable,
        }
    }

    /// The next-hop MAC of `address`'s endpoint in `web`.
    fn next_hop(snapshot: &Snapshot, address: &str) -> Option<[u8; 6]> {
        let address = crate::wire::addr_to_bytes(address.parse().unwrap());
        let (_, web) = snapshot.services().find(|(_, s)| s.name() == "web")?;
        web.endpoints()
            .iter()
            .filter_map(|&id| snapshot.endpoint(id))
            .find(|e| e.address == address)
            .and_then(|e| e.next_hop_mac)
    }

    #[test]
    fn an_interface_without_a_configured_mac_sends_from_the_kernels_and_follows_it() {
        // g0 has no mac in the config; g1 has one.
        let mut config = rules(&[("web", "tcp", "198.18.100.10", 80, WEB)]);
        config.interfaces[0].mac = None;
        let kernel = |last: u8| {
            vec![
                [0x02, 0x66, 0x67, 0, 0x30, last],
                [0x02, 0x66, 0x67, 0, 0x31, last],
            ]
        };
        let gateway = Gateway::start(
            config.clone(),
            Vec::new(),
            Vec::new(),
            vec![11, 12],
            kernel(1),
        )
        .unwrap();
        let running = gateway.snapshot();
        assert_eq!(running.interface_mac(0), Some(kernel(1)[0]), "the kernel's");
        assert_eq!(
            running.interface_mac(1),
            Some([0x02, 0x66, 0x67, 0, 0x21, 0x01]),
            "the configured one"
        );
        // Nothing moved: no new snapshot.
        assert_eq!(gateway.link_macs_changed(kernel(1)), Ok(None));
        // The kernel's MACs change: g0 follows in a new snapshot, g1 keeps
        // its configured MAC.
        let generation = gateway.link_macs_changed(kernel(2)).unwrap();
        assert_eq!(generation, Some(running.generation() + 1));
        let running = gateway.snapshot();
        assert_eq!(running.interface_mac(0), Some(kernel(2)[0]));
        assert_eq!(
            running.interface_mac(1),
            Some([0x02, 0x66, 0x67, 0, 0x21, 0x01])
        );
        // The operator's rules still say nothing of g0's MAC, so a reload
        // of the same file changes nothing.
        assert_eq!(gateway.config(), config);
        // Only g1 moves (its MAC is configured): nothing to rebuild.
        let mut only_g1 = kernel(2);
        only_g1[1] = [0x02, 0x66, 0x67, 0, 0x31, 9];
        assert_eq!(gateway.link_macs_changed(only_g1.clone()), Ok(None));
        assert_eq!(gateway.link_macs(), only_g1);
    }

    #[test]
    fn a_change_compiles_without_the_lock_and_installs_what_runs_now() {
        // No filters: what is tested is the lock and the snapshot.
        let small = rules(&[("web", "tcp", "198.18.100.10", 80, WEB)]);
        let gateway = Arc::new(
            Gateway::start(
                small.clone(),
                Vec::new(),
                Vec::new(),
                vec![11, 12],
                Vec::new(),
            )
            .unwrap(),
        );
        let big = large(&small);
        let apply_started = std::time::Instant::now();
        let applying = {
            let (gateway, big) = (Arc::clone(&gateway), big.clone());
            std::thread::spawn(move || gateway.apply(big))
        };
        // While it compiles, the lock answers at once, and a backend's
        // next hop changes again and again (each change of a running
        // backend is a generation of its own, published at once).
        let mut waits = Vec::new();
        let mut last = 0u8;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !applying.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "the change never ended"
            );
            let t = std::time::Instant::now();
            assert!(gateway
                .unresolved_backends()
                .contains(&"198.18.1.12".parse().unwrap()));
            waits.push(t.elapsed());
            if last < 3 {
                last += 1;
                let changed = gateway
                    .neighbours_changed([(learned("198.18.1.11", last), true)])
                    .unwrap();
                assert!(changed.is_some(), "a running backend's next hop moved");
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let applied = applying.join().unwrap().unwrap();
        assert!(
            waits.len() >= 10,
            "the compile was too quick to tell: {waits:?}"
        );
        // Held through the compile, a wait would last about as long as the
        // whole change; a wait of a third of it at most, or of 100 ms,
        // shows it was not (the test shares a loaded machine with others).
        let whole = apply_started.elapsed();
        let longest = waits.iter().max().unwrap();
        assert!(
            *longest < std::time::Duration::from_millis(100) || *longest * 3 < whole,
            "the lock was held for {longest:?} while the change compiled (in {whole:?})"
        );
        // It was built on the neighbours of the moment it was installed,
        // and on the generations published meanwhile.
        let running = gateway.snapshot();
        assert_eq!(applied.generation, running.generation());
        assert_eq!(running.generation(), 1 + u64::from(last) + 1);
        assert_eq!(
            next_hop(&running, "198.18.1.11"),
            Some([0x02, 0x66, 0x67, 0, 0x02, last])
        );
        assert_eq!(running.services().count(), 201);
        assert_eq!(gateway.config(), big);
    }

    /// A TCP service: name, VIP, port, backends (address, port).
    type Row = (String, String, u16, Vec<(String, u16)>);

    /// Rules of `services` on interfaces g0 and g1, as [`rules`] writes
    /// them.
    fn fleet(services: &[Row]) -> Config {
        let backends: Vec<Vec<(&str, u16)>> = services
            .iter()
            .map(|s| s.3.iter().map(|(a, p)| (a.as_str(), *p)).collect())
            .collect();
        let rows: Vec<ServiceRow<'_>> = services
            .iter()
            .zip(&backends)
            .map(|(s, b)| (s.0.as_str(), "tcp", s.1.as_str(), s.2, b.as_slice()))
            .collect();
        rules(&rows)
    }

    /// A gateway on `config`, with filters on `net`'s interfaces if given,
    /// and a learned neighbour for backend .11 and for a client.
    fn open(net: Option<&TwoInterfaces>, config: &Config) -> Gateway {
        let filters = match net {
            Some(net) => vec![net.attach("g0", None), net.attach("g1", None)],
            None => Vec::new(),
        };
        let learned = vec![learned("198.18.1.11", 1), learned("198.18.60.5", 2)];
        Gateway::start(config.clone(), learned, filters, vec![11, 12], Vec::new()).unwrap()
    }

    /// Applies `services` to `by_change` as the change of `changed` and
    /// to `whole` in full; checks that both run the same snapshot and
    /// XDP keys (read from the kernel when `privileged`), and that
    /// `by_change` compiled the changed services alone.
    fn both(
        by_change: &Gateway,
        whole: &Gateway,
        services: &[Row],
        changed: &[&str],
        privileged: bool,
    ) {
        let next = Arc::new(fleet(services));
        let names: Vec<String> = changed.iter().map(|&n| n.to_owned()).collect();
        let since = by_change.running_config();
        let before = by_change.snapshot();
        let applied = by_change
            .apply_shared(
                Arc::clone(&next),
                Some(ServiceChanges {
                    since: &since,
                    services: &names,
                }),
            )
            .unwrap();
        let full = whole.apply(Config::clone(&next)).unwrap();
        assert_eq!(applied.generation, full.generation);
        assert!(applied.warnings.is_empty(), "{applied:?}");
        let (a, b) = (by_change.snapshot(), whole.snapshot());
        assert_eq!(a.rules_text(), b.rules_text(), "after changing {names:?}");
        // Only the changed services were compiled: the others are the
        // very services the generation before ran.
        for (id, s) in a.services() {
            if !names.iter().any(|n| n == s.name()) {
                assert!(
                    a.carries_service_of(&before, id),
                    "{} compiled again",
                    s.name()
                );
            }
        }
        if privileged {
            let owned = OwnedTraffic::from_config(&next);
            for maps in in_kernel(by_change).into_iter().chain(in_kernel(whole)) {
                assert!(
                    maps.hold_exactly(&owned),
                    "after changing {names:?}: {maps:?}"
                );
            }
            assert_eq!(in_kernel(by_change), in_kernel(whole));
        }
    }

    #[test]
    fn a_change_of_a_few_services_compiles_and_programs_what_a_whole_apply_does() {
        // Two gateways on the same rules: one takes each change as the
        // changed services (etcd's revisions), the other in full.
        let mut services: Vec<Row> = (0..30u16)
            .map(|i| {
                (
                    format!("s{i:02}"),
                    format!("198.18.100.{}", 10 + i / 3),
                    80 + i % 3,
                    // Backends .11 to .20: most are shared by several
                    // services, so reply sources have several owners.
                    (0..3u16)
                        .map(|b| (format!("198.18.1.{}", 11 + (i + b) % 10), 8080))
                        .collect(),
                )
            })
            .collect();
        let first = fleet(&services);
        let privileged = testnet::privileged();
        let nets = privileged.then(|| (TwoInterfaces::new(), TwoInterfaces::new()));
        let by_change = open(nets.as_ref().map(|n| &n.0), &first);
        let whole = open(nets.as_ref().map(|n| &n.1), &first);
        let step = |services: &[Row], changed: &[&str]| {
            both(&by_change, &whole, services, changed, privileged);
        };

        // A backend less: a reply source others share stays.
        services[3].3.truncate(2);
        step(&services, &["s03"]);
        // A service goes (its VIP stays with others, its backends too), one
        // comes on a VIP and a backend of its own, one moves to a new VIP.
        services.remove(7);
        services.push((
            "t00".into(),
            "198.18.101.1".into(),
            443,
            vec![("198.18.2.1".into(), 8443)],
        ));
        services[12].1 = "198.18.101.2".into();
        let moved = services[12].0.clone();
        step(&services, &["s07", "t00", moved.as_str()]);
        // The last services of a VIP go: the VIP address leaves the maps.
        let (gone, mut kept): (Vec<Row>, Vec<Row>) =
            services.into_iter().partition(|s| s.1 == "198.18.100.19");
        let gone: Vec<&str> = gone.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(gone.len(), 3);
        step(&kept, &gone);
        // A backend's next hop moves (a full compile), then a change is
        // taken by its services again.
        for g in [&by_change, &whole] {
            g.neighbours_changed([(learned("198.18.1.12", 9), true)])
                .unwrap()
                .unwrap();
        }
        kept[0].3.push(("198.18.2.2".into(), 9000));
        let changed = kept[0].0.clone();
        step(&kept, &[changed.as_str()]);
    }

    #[test]
    fn rules_the_maps_cannot_hold_are_refused_before_any_filter_is_touched() {
        // One service more than the services map holds, on two VIPs.
        let mut config = rules(&[("web", "tcp", "198.18.100.10", 80, WEB)]);
        let web = config.services[0].clone();
        config.services = (0..=XdpCapacity::PROGRAM.service_keys)
            .map(|i| {
                let mut s = web.clone();
                s.name = format!("s{i}");
                s.port = u16::try_from(i % 65_535 + 1).unwrap();
                if i / 65_535 % 2 == 1 {
                    s.protocol = rules::Protocol::Udp;
                }
                s.vip = [198, 18, 100, 10 + u8::try_from(i / 131_070).unwrap()].into();
                s
            })
            .collect();
        // No filters: a start that got as far as programming them would
        // have nothing to fail on.
        match Gateway::start(config, Vec::new(), Vec::new(), Vec::new(), Vec::new()) {
            Err(e) => assert_eq!(
                e,
                "the config needs 131 073 service keys (protocol, VIP, port); \
                 the XDP program holds at most 131 072"
            ),
            Ok(_) => panic!("started with more services than the XDP maps hold"),
        }
    }

    #[test]
    fn the_workers_path_table_follows_every_accepted_change() {
        let with_path = |backend: &str| {
            let text = format!(
                "[[interfaces]]\nname = \"g0\"\nmac = \"02:66:67:00:20:01\"\n\
                 [[services]]\nname = \"web\"\nprotocol = \"tcp\"\nvip = \"198.18.100.10\"\nport = 80\n\
                 [[services.paths]]\nclient = \"198.18.60.5\"\nbackends = [\"{backend}\"]\n\
                 [[services.backends]]\naddress = \"198.18.1.11\"\nport = 8080\nname = \"web-1\"\n\
                 [[services.backends]]\naddress = \"198.18.1.12\"\nport = 8080\nname = \"web-2\"\n"
            );
            rules::load_str(&text, "gw.toml").unwrap()
        };
        let mut without = with_path("web-1");
        without.services[0].routing.paths.clear();
        let gateway = Gateway::start(
            with_path("web-1"),
            Vec::new(),
            Vec::new(),
            vec![11],
            Vec::new(),
        )
        .unwrap();
        // A worker's reader, taken at start as spawn_workers takes it.
        let mut reader = gateway.path_reader();
        let chosen = |gateway: &Gateway, reader: &mut PathReader| {
            let query = flowgate_api::ExplainQuery {
                from: "198.18.60.5:7".into(),
                to: "198.18.100.10:80".into(),
                protocol: None,
            };
            let reply =
                crate::control::explain::explain(&gateway.snapshot(), Some(reader.load()), &query)
                    .unwrap();
            reply.path.map(|p| (p.backends, p.chosen))
        };
        let path = |name: &str, at: &str| Some((vec![name.to_owned()], Some(at.to_owned())));
        assert_eq!(
            chosen(&gateway, &mut reader),
            path("web-1", "198.18.1.11:8080")
        );

        gateway.apply(without).unwrap();
        assert_eq!(chosen(&gateway, &mut reader), None, "the path is gone");

        // A name no path held before: published again so that it resolves.
        let before = gateway.snapshot().generation();
        let applied = gateway.apply(with_path("web-2")).unwrap();
        assert_eq!(applied.generation, before + 2, "{applied:?}");
        assert_eq!(gateway.snapshot().generation(), applied.generation);
        assert_eq!(
            chosen(&gateway, &mut reader),
            path("web-2", "198.18.1.12:8080")
        );
    }
}
