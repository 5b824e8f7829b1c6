//! One instance of the XDP program on one interface, and its maps.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::os::fd::{AsFd, OwnedFd, RawFd};

use std::sync::Arc;

use aya::maps::{
    Array, DevMap, HashMap as BpfHashMap, Map, MapData, MapError, PerCpuArray, XskMap,
};
use aya::programs::xdp::XdpLink;
use aya::programs::{ProgramError, Xdp, XdpFlags};
use aya::{Ebpf, EbpfLoader};

use super::fast_map::MappedEntries;
use super::key_set::{map_error, KeySet};
use super::owned::{OwnedTraffic, TrafficKey};
use super::per_cpu::per_cpu_totals;
use super::prefilter::AddressFilter;
use super::program::{
    counter, load_program, map, service_value, traffic_key, traffic_key_parts, KEY_LEN, OBJECT,
    PROGRAM,
};
use super::stale::remove_stale_programs;
use super::{XdpCapacity, XdpCounters, XdpError, XdpMapKeys};
use crate::fastpath::layout::FAST_CONFIG_SIZE;
use crate::fastpath::{CacheGeometry, FastConfig};
use crate::neigh::{self, NeighError};
use crate::synproxy::xdp::{self as synproxy_xdp, SERVICE_VALUE_LEN};
use crate::synproxy::SynProxy;
use crate::synproxy::SynProxyCounters;

/// How to attach the program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum XdpMode {
    /// Native if the driver supports it, generic otherwise.
    #[default]
    Auto,
    /// In the driver (`XDP_FLAGS_DRV_MODE`): fast; veth and most NICs.
    Native,
    /// On the kernel's socket buffers (`XDP_FLAGS_SKB_MODE`): works on
    /// every interface, slower.
    Generic,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        })
    }
}

/// Our XDP program attached to one interface, with its maps.
///
/// Attached through a bpf_link: if the process dies, the kernel detaches
/// the program with it. Dropping the filter (or [`XdpFilter::detach`])
/// detaches it too and leaves the interface with no XDP program.
pub struct XdpFilter {
    interface: String,
    mode: XdpMode,
    capacity: XdpCapacity,
    /// Declared before `ebpf`: dropped (detached) before the program.
    link: Option<XdpLink>,
    /// The link of a process this one took over from, once it attaches
    /// this program ([`Self::attach_through`]); dropped before `ebpf` too.
    handed_link: Option<OwnedFd>,
    sockets: XskMap<MapData>,
    services: KeySet<TrafficKey, [u8; KEY_LEN]>,
    reply_sources: KeySet<TrafficKey, [u8; KEY_LEN]>,
    vip_addresses: KeySet<[u8; 16], [u8; 16]>,
    local_addresses: KeySet<[u8; 16], [u8; 16]>,
    announced: KeySet<[u8; 16], [u8; 16]>,
    /// Whether this interface announces VIPs (the client-facing one):
    /// only then does `announced` follow the rules' announced VIPs.
    announces: bool,
    announce_mac: Array<MapData, [u8; 8]>,
    /// The interface's MAC for the ingress checks (`ingress_config`).
    ingress_config: Array<MapData, [u8; super::program::INGRESS_CONFIG_LEN]>,
    config: Array<MapData, u32>,
    counters: PerCpuArray<MapData, u64>,
    /// The fast path's cache, mapped, and its geometry (`None`: loaded
    /// without a fast path).
    fast: Option<(Arc<MappedEntries>, CacheGeometry)>,
    fast_config: Array<MapData, [u8; FAST_CONFIG_SIZE]>,
    /// What `fast_config` holds since the fast path was turned on.
    fast_on: Option<FastConfig>,
    fast_tx_ports: DevMap<MapData>,
    /// The SYN proxy's proxied services (`synproxy_services`), its
    /// counters, and what the first holds.
    syn_proxy_services: BpfHashMap<MapData, [u8; KEY_LEN], [u8; SERVICE_VALUE_LEN]>,
    syn_proxy_counters: PerCpuArray<MapData, u64>,
    syn_proxies: HashMap<TrafficKey, SynProxy>,
    /// The SYN cookies' key (`synproxy_secret`) and what it holds.
    cookie_secret: Array<MapData, [u8; 16]>,
    cookie_key: [u8; 16],
    /// Holds the loaded program.
    ebpf: Ebpf,
}

impl fmt::Debug for XdpFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdpFilter")
            .field("interface", &self.interface)
            .field("mode", &self.mode)
            .field("services", &self.services.held().len())
            .field("reply_sources", &self.reply_sources.held().len())
            .field("local_addresses", &self.local_addresses.held().len())
            .finish_non_exhaustive()
    }
}

/// Keys a change stopped owning, that no key of the generation after it
/// owns: what [`XdpFilter::remove_unowned`] takes out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unowned {
    /// (protocol, VIP, port) of services.
    pub services: Vec<TrafficKey>,
    /// (protocol, backend address, backend port).
    pub reply_sources: Vec<TrafficKey>,
    /// VIP addresses no service has any more.
    pub vip_addresses: Vec<[u8; 16]>,
    /// VIP addresses no longer announced.
    pub announced: Vec<[u8; 16]>,
}

impl Unowned {
    /// Whether it names no key.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.reply_sources.is_empty()
            && self.vip_addresses.is_empty()
            && self.announced.is_empty()
    }
}

/// The keys one [`XdpFilter::widen`] inserted, map by map: exactly what
/// [`XdpFilter::undo`] takes back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use = "a widening is undone with it, or dropped once the change is kept"]
pub struct Widening {
    services: Vec<TrafficKey>,
    reply_sources: Vec<TrafficKey>,
    vip_addresses: Vec<[u8; 16]>,
    announced: Vec<[u8; 16]>,
}

impl Widening {
    /// How many keys it inserted, over all maps.
    pub fn len(&self) -> usize {
        self.services.len()
            + self.reply_sources.len()
            + self.vip_addresses.len()
            + self.announced.len()
    }

    /// The VIP addresses it began announcing: those to announce to the
    /// segment (gratuitous ARP, unsolicited neighbour advertisement)
    /// once the change is published.
    pub fn announced(&self) -> &[[u8; 16]] {
        &self.announced
    }

    /// Whether it inserted nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How a filter's maps differ from the keys of some rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyDrift {
    /// Keys the maps hold that the rules do not own.
    pub extra: usize,
    /// Keys the rules own that the maps lack.
    pub missing: usize,
}

impl KeyDrift {
    /// Whether the maps hold exactly the rules' keys.
    pub fn is_exact(&self) -> bool {
        self.extra == 0 && self.missing == 0
    }
}

impl XdpFilter {
    /// Loads an instance of the program for `interface` (in the calling
    /// thread's network namespace) and attaches it in `mode`. With
    /// [`XdpMode::Auto`] it tries native first and falls back to generic,
    /// logging which it got. A program someone else attached through
    /// netlink (a crashed loader, `ip link`, libxdp's dispatcher) is
    /// replaced, with a warning.
    ///
    /// The maps are read back from the kernel once created: a map whose
    /// size is not [`XdpCapacity::PROGRAM`]'s, the size rules are checked
    /// against, is refused before anything is attached.
    ///
    /// The new program owns no traffic yet: everything passes to the
    /// kernel until [`Self::update`] or [`Self::set_redirect_all`].
    pub fn attach(interface: &str, mode: XdpMode) -> Result<XdpFilter, XdpError> {
        Self::attach_sized(interface, mode, XdpCapacity::PROGRAM, None)
    }

    /// As [`Self::attach`], with a fast path cache of `geometry` mapped
    /// into the process ([`Self::fast_cache`]). The fast path stays off
    /// until [`Self::enable_fast_path`].
    pub fn attach_with_fast_path(
        interface: &str,
        mode: XdpMode,
        geometry: CacheGeometry,
    ) -> Result<XdpFilter, XdpError> {
        Self::attach_sized(interface, mode, XdpCapacity::PROGRAM, Some(geometry))
    }

    /// As [`Self::attach`], with maps that hold only `capacity` keys (each
    /// from 1 to [`XdpCapacity::PROGRAM`]'s).
    ///
    /// For tests that need the kernel to refuse a key part-way through a
    /// change: the gateway checks rules against [`XdpCapacity::PROGRAM`],
    /// so it cannot see such a failure coming and must undo what it began,
    /// as it must when the kernel runs out of memory for a key. Feature
    /// `testkit`.
    #[cfg(any(test, feature = "testkit"))]
    pub fn attach_with_capacity(
        interface: &str,
        mode: XdpMode,
        capacity: XdpCapacity,
    ) -> Result<XdpFilter, XdpError> {
        let program = XdpCapacity::PROGRAM;
        for (name, size, limit) in [
            (map::SERVICES, capacity.service_keys, program.service_keys),
            (
                map::REPLY_SOURCES,
                capacity.reply_sources,
                program.reply_sources,
            ),
            (
                map::VIP_ADDRESSES,
                capacity.vip_addresses,
                program.vip_addresses,
            ),
            (
                map::LOCAL_ADDRESSES,
                capacity.local_addresses,
                program.local_addresses,
            ),
            (
                map::ANNOUNCED_ADDRESSES,
                capacity.announced_addresses,
                program.announced_addresses,
            ),
        ] {
            if !(1..=limit).contains(&size) {
                return Err(XdpError::Other(format!(
                    "map {name} cannot hold {size} keys: from 1 to {limit}"
                )));
            }
        }
        Self::attach_sized(interface, mode, capacity, None)
    }

    /// As [`Self::attach_with_fast_path`] (without a fast path if
    /// `fast` is `None`), but not attached: the program and its maps are
    /// loaded and can be programmed, and [`Self::attach_loaded`] attaches
    /// it. A process taking over loads its programs while the old one
    /// still forwards, and attaches them once it has stopped.
    pub fn load(
        interface: &str,
        mode: XdpMode,
        fast: Option<CacheGeometry>,
    ) -> Result<XdpFilter, XdpError> {
        Self::load_sized(interface, mode, XdpCapacity::PROGRAM, fast)
    }

    /// Attaches a program [`Self::load`] loaded (a no-op if attached),
    /// replacing a stale program on the interface.
    pub fn attach_loaded(&mut self) -> Result<(), XdpError> {
        if self.link.is_some() || self.handed_link.is_some() {
            return Ok(());
        }
        let link = neigh::link_info(&self.interface).map_err(|e| match e {
            NeighError::NoSuchInterface(name) => XdpError::NoSuchInterface(name),
            other => XdpError::Other(format!("reading {}: {other}", self.interface)),
        })?;
        let program: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| XdpError::Other(format!("the XDP object has no program {PROGRAM}")))?
            .try_into()
            .map_err(|e: ProgramError| XdpError::from_program("the XDP program", &e))?;
        if !link.xdp.is_empty() {
            remove_stale_programs(&link)?;
        }
        let (xdp_link, attached) = attach_program(program, &link, self.mode)?;
        self.link = Some(xdp_link);
        self.mode = attached;
        Ok(())
    }

    /// A new descriptor of the bpf_link this program is attached through,
    /// to hand to a process that takes over: while that descriptor lives,
    /// the program stays attached, with its maps, even once this filter
    /// is dropped or this process is gone, until the holder replaces the
    /// program ([`Self::attach_through`]) or closes it.
    pub fn link_descriptor(&self) -> Result<OwnedFd, XdpError> {
        // A program attached through a link another process handed over
        // holds that link: a duplicate of it needs no search, whose link
        // information waits for the kernel's network configuration lock
        // (held for seconds while namespaces are made and deleted).
        if let Some(link) = &self.handed_link {
            return link
                .try_clone()
                .map_err(|e| XdpError::Other(format!("duplicating the XDP link: {e}")));
        }
        let program: &Xdp = self
            .ebpf
            .program(PROGRAM)
            .ok_or_else(|| XdpError::Other(format!("the XDP object has no program {PROGRAM}")))?
            .try_into()
            .map_err(|e: ProgramError| XdpError::from_program("the XDP program", &e))?;
        let id = program
            .info()
            .map_err(|e| XdpError::from_program("the XDP program", &e))?
            .id();
        let ifindex = neigh::link_info(&self.interface)
            .map_err(|e| XdpError::Other(format!("reading {}: {e}", self.interface)))?
            .ifindex;
        super::link::link_of(ifindex, id)
    }

    /// Attaches this program (loaded, not attached) through `link`, the
    /// bpf_link another flowgate's program on this interface is attached
    /// through ([`Self::link_descriptor`]): the kernel replaces that
    /// program with this one in one step, so the interface is never
    /// without a program. The filter then holds the link (dropping it
    /// detaches the program, as for [`Self::attach_loaded`]); the mode is
    /// the one that program was attached in.
    pub fn attach_through(&mut self, link: OwnedFd) -> Result<(), XdpError> {
        if self.link.is_some() || self.handed_link.is_some() {
            return Err(XdpError::Other(format!(
                "the XDP program on {} is attached already",
                self.interface
            )));
        }
        let program: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| XdpError::Other(format!("the XDP object has no program {PROGRAM}")))?
            .try_into()
            .map_err(|e: ProgramError| XdpError::from_program("the XDP program", &e))?;
        let fd = program
            .fd()
            .map_err(|e| XdpError::from_program("the XDP program", &e))?;
        super::link::update(link.as_fd(), fd.as_fd())?;
        self.handed_link = Some(link);
        // The mode is the link's: whichever mode now runs our program.
        if let Ok(info) = neigh::link_info(&self.interface) {
            self.mode = if info.xdp.native.is_some() {
                XdpMode::Native
            } else {
                XdpMode::Generic
            };
        }
        Ok(())
    }

    fn attach_sized(
        interface: &str,
        mode: XdpMode,
        capacity: XdpCapacity,
        fast: Option<CacheGeometry>,
    ) -> Result<XdpFilter, XdpError> {
        let mut filter = Self::load_sized(interface, mode, capacity, fast)?;
        filter.attach_loaded()?;
        Ok(filter)
    }

    fn load_sized(
        interface: &str,
        mode: XdpMode,
        capacity: XdpCapacity,
        fast: Option<CacheGeometry>,
    ) -> Result<XdpFilter, XdpError> {
        let link = neigh::link_info(interface).map_err(|e| match e {
            NeighError::NoSuchInterface(name) => XdpError::NoSuchInterface(name),
            other => XdpError::Other(format!("reading {interface}: {other}")),
        })?;
        let sizes = map_sizes(&capacity);
        let mut loader = EbpfLoader::new();
        loader.set_max_entries(map::SOCKETS, link.rx_queues.max(1));
        for &(name, size) in &sizes {
            loader.set_max_entries(name, size);
        }
        let fast_entries = fast.map_or(1, |g| g.entries());
        loader.set_max_entries(
            map::FAST_FLOWS,
            u32::try_from(fast_entries).map_err(|_| {
                XdpError::Other(format!("a fast path cache of {fast_entries} entries"))
            })?,
        );
        let mut ebpf = loader.load(OBJECT).map_err(|e| XdpError::from_load(&e))?;
        // Without a fast path the map stays with `ebpf`: a map taken and
        // dropped here would close its descriptor before the program,
        // which refers to it, is loaded.
        let fast = match fast {
            None => None,
            Some(geometry) => match ebpf.take_map(map::FAST_FLOWS) {
                Some(Map::Array(data)) => {
                    Some((Arc::new(MappedEntries::map(data, fast_entries)?), geometry))
                }
                _ => {
                    return Err(XdpError::Other(
                        "the XDP object has no fast_flows array".into(),
                    ))
                }
            },
        };
        let fast_config = take_map(&mut ebpf, map::FAST_CONFIG)?;
        let fast_tx_ports = take_map(&mut ebpf, map::FAST_TX_PORTS)?;

        let sets = KeySets::take(&mut ebpf, &sizes)?;
        let sockets = take_map(&mut ebpf, map::SOCKETS)?;
        let config = take_map(&mut ebpf, map::CONFIG)?;
        let counters = take_map(&mut ebpf, map::COUNTERS)?;
        let announce_mac = take_map(&mut ebpf, map::ANNOUNCE_MAC)?;
        let ingress_config = take_map(&mut ebpf, map::INGRESS_CONFIG)?;
        let syn_proxy_services = take_map(&mut ebpf, synproxy_xdp::map::SERVICES)?;
        let syn_proxy_counters = take_map(&mut ebpf, synproxy_xdp::map::COUNTERS)?;
        // The cookies' key: random for each program this process loads
        // (a new one on every start, never on a reload: cookies given
        // out must stay valid while their handshakes finish).
        let mut secret: Array<MapData, [u8; 16]> = take_map(&mut ebpf, synproxy_xdp::map::SECRET)?;
        let key = synproxy_xdp::random_secret()
            .map_err(|e| XdpError::Other(format!("reading a random SYN cookie key: {e}")))?;
        secret
            .set(0, key, 0)
            .map_err(|e| map_error("setting the SYN cookie key", e))?;

        load_program(&mut ebpf)?;

        Ok(XdpFilter {
            interface: interface.to_string(),
            mode,
            capacity,
            link: None,
            handed_link: None,
            sockets,
            services: sets.services,
            reply_sources: sets.reply_sources,
            vip_addresses: sets.vip_addresses,
            local_addresses: sets.local_addresses,
            announced: sets.announced,
            announces: false,
            announce_mac,
            ingress_config,
            config,
            counters,
            fast,
            fast_config,
            fast_on: None,
            fast_tx_ports,
            syn_proxy_services,
            syn_proxy_counters,
            syn_proxies: HashMap::new(),
            cookie_secret: secret,
            cookie_key: key,
            ebpf,
        })
    }

    /// The key the program makes and checks SYN cookies with: handed over
    /// at a takeover, so that the cookies this program gave out are still
    /// good once the new process's program replaces it.
    pub fn cookie_key(&self) -> [u8; 16] {
        self.cookie_key
    }

    /// Makes the program make and check SYN cookies with `key` (the
    /// program of the process this one takes over from: the handshakes it
    /// answered finish with this one).
    pub fn set_cookie_key(&mut self, key: [u8; 16]) -> Result<(), XdpError> {
        self.cookie_secret
            .set(0, key, 0)
            .map_err(|e| map_error("setting the SYN cookie key", e))?;
        self.cookie_key = key;
        Ok(())
    }

    /// Makes the program answer the SYNs of exactly the services in
    /// `wanted` with cookies, each as its setting says. A service whose
    /// setting is unchanged keeps its entry (and the SYN rate `auto`
    /// measures); on an error the map holds what it held before the
    /// failing key and the next call tries again.
    pub fn set_syn_proxies(
        &mut self,
        wanted: &HashMap<TrafficKey, SynProxy>,
    ) -> Result<(), XdpError> {
        let gone: Vec<TrafficKey> = self
            .syn_proxies
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        for k in gone {
            self.remove_syn_proxy(&k)?;
        }
        for (k, &mode) in wanted {
            self.insert_syn_proxy(k, mode)?;
        }
        Ok(())
    }

    /// Makes the program answer the SYNs of service `k` as `mode` says
    /// (nothing if it does so already, or if `mode` is off). The service's
    /// `services` value says it is proxied before its entry goes in.
    fn insert_syn_proxy(&mut self, k: &TrafficKey, mode: SynProxy) -> Result<(), XdpError> {
        if self.syn_proxies.get(k) == Some(&mode) {
            return Ok(());
        }
        let Some(value) = synproxy_xdp::service_value(mode) else {
            return Ok(());
        };
        self.services.set_value(k, service_value(true))?;
        self.syn_proxy_services
            .insert(traffic_key(k.protocol, &k.address, k.port), value, 0)
            .map_err(|e| map_error("setting a service's SYN proxy", e))?;
        self.syn_proxies.insert(*k, mode);
        Ok(())
    }

    /// Stops the SYN proxy of service `k` (nothing if it has none); its
    /// `services` value stops saying it is proxied once its entry is out.
    fn remove_syn_proxy(&mut self, k: &TrafficKey) -> Result<(), XdpError> {
        if !self.syn_proxies.contains_key(k) {
            return Ok(());
        }
        match self
            .syn_proxy_services
            .remove(&traffic_key(k.protocol, &k.address, k.port))
        {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_error("removing a service's SYN proxy", e)),
        }
        self.syn_proxies.remove(k);
        self.services.set_value(k, service_value(false))
    }

    /// The SYN proxy's counters, summed over CPUs (a counter that cannot
    /// be read reads as 0).
    pub fn syn_proxy_counters(&self) -> SynProxyCounters {
        let totals: Vec<u64> = (0..synproxy_xdp::counter::COUNT)
            .map(|i| {
                self.syn_proxy_counters
                    .get(&i, 0)
                    .map(|per_cpu| per_cpu.iter().fold(0u64, |s, &v| s.saturating_add(v)))
                    .unwrap_or(0)
            })
            .collect();
        SynProxyCounters::from_totals(&totals)
    }

    /// The fast path's cache as this process maps it, and its geometry;
    /// `None` if the program was loaded without one.
    pub fn fast_cache(&self) -> Option<(Arc<MappedEntries>, CacheGeometry)> {
        self.fast.clone()
    }

    /// Makes port `port`'s packets leave through interface `ifindex` when
    /// the fast path forwards them there from this interface.
    pub fn set_fast_egress(&mut self, port: u32, ifindex: u32) -> Result<(), XdpError> {
        self.fast_tx_ports
            .set(port, ifindex, None, 0)
            .map_err(|e| XdpError::Other(format!("fast path egress port {port}: {e}")))
    }

    /// Turns the fast path on, this interface being port `port_index`
    /// (entries that leave there use XDP_TX), frames leaving only through
    /// the ports whose bit `egress_ready` sets (see
    /// [`FastConfig::egress_ready`]). Without a cache: an error.
    pub fn enable_fast_path(&mut self, port_index: u32, egress_ready: u64) -> Result<(), XdpError> {
        let Some((_, geometry)) = &self.fast else {
            return Err(XdpError::Other(
                "the XDP program was loaded without a fast path cache".into(),
            ));
        };
        let config = FastConfig {
            partitions: geometry.partitions,
            slot_mask: geometry.slots - 1,
            port_index,
            egress_ready,
        };
        self.fast_config
            .set(0, in_program(config).to_bytes(), 0)
            .map_err(|e| map_error("turning the fast path on", e))?;
        self.fast_on = Some(config);
        self.note_forwarding(config);
        Ok(())
    }

    /// The fast path's settings, once it is on (with no egress port
    /// ready the program holds them with `partitions` 0: off).
    pub fn fast_config(&self) -> Option<FastConfig> {
        self.fast_on
    }

    /// Lets the fast path send frames out of the ports of `egress_ready`
    /// only; `Ok(true)` when that changed what the program holds. Nothing
    /// while the fast path is off.
    pub fn set_fast_egress_ready(&mut self, egress_ready: u64) -> Result<bool, XdpError> {
        let Some(config) = self.fast_on else {
            return Ok(false);
        };
        if config.egress_ready == egress_ready {
            return Ok(false);
        }
        let config = FastConfig {
            egress_ready,
            ..config
        };
        self.fast_config
            .set(0, in_program(config).to_bytes(), 0)
            .map_err(|e| map_error("setting the fast path's egress ports", e))?;
        self.fast_on = Some(config);
        self.note_forwarding(config);
        Ok(true)
    }

    /// Tells the workers, through the cache, whether this instance
    /// forwards from it now: they write entries into it only then.
    fn note_forwarding(&self, config: FastConfig) {
        if let Some((cache, _)) = &self.fast {
            cache.set_forwarding(in_program(config).partitions != 0);
        }
    }

    /// The mode the program is attached in: [`XdpMode::Native`] or
    /// [`XdpMode::Generic`], never `Auto`.
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// The interface it is attached to.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// How many keys its maps hold, as the kernel made them.
    pub fn capacity(&self) -> XdpCapacity {
        self.capacity
    }

    /// Puts the AF_XDP socket `fd` (bound to `queue` of this interface) in
    /// the program's socket map: frames the gateway owns that arrive on
    /// `queue` go to it. The map holds its own reference to the socket.
    pub fn set_socket(&mut self, queue: u32, fd: RawFd) -> Result<(), XdpError> {
        let queues = self.sockets.len();
        self.sockets.set(queue, fd, 0).map_err(|e| match e {
            MapError::OutOfBounds { .. } => XdpError::Other(format!(
                "queue {queue} is past {}'s {queues} receive queues",
                self.interface
            )),
            e => map_error(
                &format!("putting the socket of queue {queue} in the XSKMAP"),
                e,
            ),
        })
    }

    /// Makes the program own exactly `owned`: [`Self::widen`], then
    /// [`Self::narrow`], so a key owned before and after is never missing,
    /// not even for a moment. A failure while widening leaves the maps as
    /// they were (as far as the kernel allows, see [`Self::widen`]).
    pub fn update(&mut self, owned: &OwnedTraffic) -> Result<(), XdpError> {
        let _kept = self.widen(owned)?;
        self.narrow(owned)
    }

    /// Adds every key of `owned` the maps lack (services, reply sources,
    /// VIP addresses) and removes none; returns what it added, for
    /// [`Self::undo`].
    ///
    /// If the kernel refuses a key, the keys this call had added are
    /// removed again before the error is returned, so the maps hold what
    /// they held before. Should a removal fail too (which the kernel has
    /// no reason to do), the key stays, in the maps and in what
    /// [`Self::drift`] counts, and is logged.
    pub fn widen(&mut self, owned: &OwnedTraffic) -> Result<Widening, XdpError> {
        let vips = owned.vip_addresses();
        let announced = announced_of(self.announces, owned);
        let mut added = Widening::default();
        let proxied = &self.syn_proxies;
        let result = self
            .services
            .add_missing_valued(&owned.services, &mut added.services, |k| {
                service_value(proxied.contains_key(k))
            })
            .and_then(|()| {
                self.reply_sources
                    .add_missing(&owned.reply_sources, &mut added.reply_sources)
            })
            .and_then(|()| {
                self.vip_addresses
                    .add_missing(&vips, &mut added.vip_addresses)
            })
            .and_then(|()| self.announced.add_missing(announced, &mut added.announced));
        match result {
            Ok(()) => Ok(added),
            Err(e) => {
                if let Err(undo) = self.undo(&added) {
                    tracing::warn!(
                        interface = %self.interface,
                        error = %undo,
                        "keys of a failed change could not be taken out of the XDP maps"
                    );
                }
                Err(e)
            }
        }
    }

    /// Removes the keys `widening` added. Every key is tried, whatever
    /// fails; the first failure is returned, and keys that could not be
    /// removed stay (see [`Self::drift`]).
    pub fn undo(&mut self, widening: &Widening) -> Result<(), XdpError> {
        let services = self.services.remove_keys(&widening.services);
        let replies = self.reply_sources.remove_keys(&widening.reply_sources);
        let vips = self.vip_addresses.remove_keys(&widening.vip_addresses);
        let announced = self.announced.remove_keys(&widening.announced);
        services.and(replies).and(vips).and(announced)
    }

    /// Removes every key the maps hold that `owned` does not. Every key is
    /// tried, whatever fails; the first failure is returned, and keys that
    /// could not be removed stay, to be tried again by the next
    /// [`Self::narrow`] (see [`Self::drift`]).
    pub fn narrow(&mut self, owned: &OwnedTraffic) -> Result<(), XdpError> {
        let vips = owned.vip_addresses();
        let services = self.services.remove_unwanted(&owned.services);
        let replies = self.reply_sources.remove_unwanted(&owned.reply_sources);
        let vips = self.vip_addresses.remove_unwanted(&vips);
        let announced = self
            .announced
            .remove_unwanted(announced_of(self.announces, owned));
        services.and(replies).and(vips).and(announced)
    }

    /// Removes exactly `gone`'s keys (a change's, that no key of the
    /// generation after it owns), as [`Self::narrow`] does but at a cost
    /// that follows the change, not the maps. Every key is tried; the
    /// first failure is returned, and keys that could not be removed stay
    /// (see [`Self::drift`]; a later [`Self::narrow`] tries them again).
    pub fn remove_unowned(&mut self, gone: &Unowned) -> Result<(), XdpError> {
        let services = self.services.remove_keys(&gone.services);
        let replies = self.reply_sources.remove_keys(&gone.reply_sources);
        let vips = self.vip_addresses.remove_keys(&gone.vip_addresses);
        let announced = if self.announces {
            self.announced.remove_keys(&gone.announced)
        } else {
            Ok(())
        };
        services.and(replies).and(vips).and(announced)
    }

    /// Sets or (with `None`) removes the SYN proxy of each service in
    /// `changes` alone, as [`Self::set_syn_proxies`] does for all.
    pub fn change_syn_proxies(
        &mut self,
        changes: &[(TrafficKey, Option<SynProxy>)],
    ) -> Result<(), XdpError> {
        for &(k, mode) in changes {
            match mode.filter(|&m| synproxy_xdp::service_value(m).is_some()) {
                Some(mode) => self.insert_syn_proxy(&k, mode)?,
                None => self.remove_syn_proxy(&k)?,
            }
        }
        Ok(())
    }

    /// Makes this the interface that announces VIPs (the client-facing
    /// one), or not. The announced addresses follow at the next
    /// [`Self::widen`] and [`Self::narrow`].
    pub fn set_announces(&mut self, announces: bool) {
        self.announces = announces;
    }

    /// Whether this interface announces VIPs.
    pub fn announces(&self) -> bool {
        self.announces
    }

    /// Sets the MAC the program answers ARP and neighbour solicitations
    /// with: the one the gateway sends from on this interface. All zeros
    /// makes it answer nothing.
    pub fn set_announce_mac(&mut self, mac: [u8; 6]) -> Result<(), XdpError> {
        let mut value = [0u8; 8];
        value[..6].copy_from_slice(&mac);
        self.announce_mac
            .set(0, value, 0)
            .map_err(|e| map_error("setting the MAC VIPs are announced with", e))
    }

    /// Sets this interface's MAC for the ingress checks: unicast frames to
    /// any other MAC are dropped (`dropped_other_host`). All zeros turns
    /// the MAC check off.
    pub fn set_ingress_mac(&mut self, mac: [u8; 6]) -> Result<(), XdpError> {
        self.set_ingress(mac, &crate::table::PortVlan::default())
    }

    /// Sets this interface's MAC (as [`set_ingress_mac`](Self::set_ingress_mac))
    /// and its VLAN setting for the ingress checks: a frame tagged with an
    /// accepted id goes up to the workers if it is owned; one with another
    /// id, or untagged where `vlan` refuses untagged frames, is dropped if
    /// owned (`dropped_vlan_not_configured`).
    pub fn set_ingress(
        &mut self,
        mac: [u8; 6],
        vlan: &crate::table::PortVlan,
    ) -> Result<(), XdpError> {
        let value = super::program::ingress_config_value(mac, vlan);
        self.ingress_config
            .set(0, value, 0)
            .map_err(|e| map_error("setting the interface MAC for the ingress checks", e))
    }

    /// The VIP addresses the program answers for now.
    pub fn announced(&self) -> &HashSet<[u8; 16]> {
        self.announced.held()
    }

    /// How the maps differ from `owned`'s keys (0 and 0 when they hold
    /// exactly those).
    pub fn drift(&self, owned: &OwnedTraffic) -> KeyDrift {
        let vips = owned.vip_addresses();
        let mut drift = KeyDrift::default();
        let mut count = |held_not_wanted: usize, wanted_not_held: usize| {
            drift.extra += held_not_wanted;
            drift.missing += wanted_not_held;
        };
        count(
            self.services.held().difference(&owned.services).count(),
            owned.services.difference(self.services.held()).count(),
        );
        count(
            self.reply_sources
                .held()
                .difference(&owned.reply_sources)
                .count(),
            owned
                .reply_sources
                .difference(self.reply_sources.held())
                .count(),
        );
        count(
            self.vip_addresses.held().difference(&vips).count(),
            vips.difference(self.vip_addresses.held()).count(),
        );
        let announced = announced_of(self.announces, owned);
        count(
            self.announced.held().difference(announced).count(),
            announced.difference(self.announced.held()).count(),
        );
        drift
    }

    /// What the program owns now.
    pub fn owned(&self) -> OwnedTraffic {
        OwnedTraffic {
            services: self.services.held().clone(),
            reply_sources: self.reply_sources.held().clone(),
            announced: self.announced.held().clone(),
        }
    }

    /// Every key the kernel's maps hold, read from the kernel.
    pub fn read_maps(&self) -> Result<XdpMapKeys, XdpError> {
        Ok(XdpMapKeys {
            services: self.services.read()?,
            reply_sources: self.reply_sources.read()?,
            vip_addresses: self.vip_addresses.read()?,
            local_addresses: self.local_addresses.read()?,
            announced_addresses: self.announced.read()?,
        })
    }

    /// Tests only: make every delete from the rule maps fail (`EPERM`),
    /// or work again.
    #[cfg(test)]
    pub(crate) fn refuse_removals(&mut self, refuse: bool) {
        self.services.refuse_removals(refuse);
        self.reply_sources.refuse_removals(refuse);
        self.vip_addresses.refuse_removals(refuse);
        self.announced.refuse_removals(refuse);
    }

    /// Makes the program's set of the box's own addresses (16 bytes each,
    /// IPv4-mapped for IPv4; see [`crate::wire::addr_to_bytes`]) exactly
    /// `addresses`: new ones are added before gone ones are removed. A
    /// frame from a backend's (protocol, address, port) to one of them is
    /// the box's own connection, not a reply of the gateway's, and passes
    /// to the kernel. Only the difference with the last call touches the
    /// map, so calling it often with the same set is cheap.
    pub fn set_local_addresses(&mut self, addresses: &HashSet<[u8; 16]>) -> Result<(), XdpError> {
        self.local_addresses
            .add_missing(addresses, &mut Vec::new())?;
        self.local_addresses.remove_unwanted(addresses)
    }

    /// The box's own addresses the program knows now.
    pub fn local_addresses(&self) -> &HashSet<[u8; 16]> {
        self.local_addresses.held()
    }

    /// Forward-only mode: with `true` every IPv4 and IPv6 frame (except
    /// NDP and MLD) is redirected, owned or not; with `false` only owned
    /// traffic is.
    pub fn set_redirect_all(&mut self, on: bool) -> Result<(), XdpError> {
        self.config
            .set(0, u32::from(on), 0)
            .map_err(|e| map_error("setting redirect-all", e))
    }

    /// The program's counters, summed over CPUs. A counter that cannot be
    /// read (which the kernel has no reason to refuse) reads as 0.
    pub fn counters(&self) -> XdpCounters {
        XdpCounters::from_totals(&per_cpu_totals(&self.counters, counter::COUNT))
    }

    /// Detaches the program now (dropping the filter does the same,
    /// ignoring errors).
    pub fn detach(mut self) -> Result<(), XdpError> {
        // Closing the link's descriptor detaches the program.
        drop(self.link.take());
        drop(self.handed_link.take());
        Ok(())
    }
}

/// The VIP addresses a filter answers for: `owned`'s announced ones on
/// the client-facing interface (`announces`), none elsewhere.
fn announced_of(announces: bool, owned: &OwnedTraffic) -> &HashSet<[u8; 16]> {
    static NONE: std::sync::OnceLock<HashSet<[u8; 16]>> = std::sync::OnceLock::new();
    if announces {
        &owned.announced
    } else {
        NONE.get_or_init(HashSet::new)
    }
}

/// Attaches `program` to `link` in `mode`; returns the link and the mode
/// it got.
fn attach_program(
    program: &mut Xdp,
    link: &neigh::LinkInfo,
    mode: XdpMode,
) -> Result<(XdpLink, XdpMode), XdpError> {
    let mut attach_in = |mode: XdpMode| -> Result<XdpLink, ProgramError> {
        let flags = match mode {
            XdpMode::Generic => XdpFlags::SKB_MODE,
            XdpMode::Native | XdpMode::Auto => XdpFlags::DRV_MODE,
        };
        let id = program.attach_to_if_index(link.ifindex, flags)?;
        program.take_link(id)
    };
    let described = |mode: XdpMode, e: &ProgramError| {
        if XdpError::is_attach_conflict(e) {
            XdpError::Other(format!(
                "attaching in {mode} mode to {}: another XDP program was attached meanwhile",
                link.name
            ))
        } else {
            XdpError::from_program(&format!("attaching in {mode} mode to {}", link.name), e)
        }
    };
    match mode {
        XdpMode::Native | XdpMode::Generic => attach_in(mode)
            .map(|l| (l, mode))
            .map_err(|e| described(mode, &e)),
        XdpMode::Auto => match attach_in(XdpMode::Native) {
            Ok(l) => {
                tracing::info!(interface = %link.name, "XDP program attached in native mode");
                Ok((l, XdpMode::Native))
            }
            Err(native) => {
                let why = described(XdpMode::Native, &native);
                if matches!(why, XdpError::Permission(_)) {
                    return Err(why);
                }
                let l = attach_in(XdpMode::Generic).map_err(|e| described(XdpMode::Generic, &e))?;
                tracing::info!(
                    interface = %link.name,
                    native_error = %why,
                    "XDP program attached in generic mode (native failed)"
                );
                Ok((l, XdpMode::Generic))
            }
        },
    }
}

/// What the program holds for `config`: with no port to send out of, the
/// fast path off (`partitions` 0), so packets skip a lookup that could
/// only hand them up.
fn in_program(config: FastConfig) -> FastConfig {
    if config.egress_ready == 0 {
        FastConfig {
            partitions: 0,
            ..config
        }
    } else {
        config
    }
}

fn take_map<T>(ebpf: &mut Ebpf, name: &str) -> Result<T, XdpError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| XdpError::Other(format!("the XDP object has no map {name}")))?;
    T::try_from(map).map_err(|e| map_error(&format!("opening map {name}"), e))
}

/// The program's hash maps used as sets of keys.
struct KeySets {
    services: KeySet<TrafficKey, [u8; KEY_LEN]>,
    reply_sources: KeySet<TrafficKey, [u8; KEY_LEN]>,
    vip_addresses: KeySet<[u8; 16], [u8; 16]>,
    local_addresses: KeySet<[u8; 16], [u8; 16]>,
    announced: KeySet<[u8; 16], [u8; 16]>,
}

impl KeySets {
    /// Takes the sets' maps out of the loaded `ebpf`, and checks that the
    /// kernel made each the size [`map_sizes`] asked for: rules are
    /// checked against those sizes, so the two must agree.
    fn take(ebpf: &mut Ebpf, sizes: &[(&'static str, u32); 5]) -> Result<KeySets, XdpError> {
        let sets = KeySets {
            services: KeySet::new(
                take_map(ebpf, map::SERVICES)?,
                map::SERVICES,
                key_bytes,
                key_of_bytes,
            )
            .with_filter(
                AddressFilter::new(take_map(ebpf, map::VIP_FILTER)?, map::VIP_FILTER),
                |k| k.address,
            ),
            reply_sources: KeySet::new(
                take_map(ebpf, map::REPLY_SOURCES)?,
                map::REPLY_SOURCES,
                key_bytes,
                key_of_bytes,
            )
            .with_filter(
                AddressFilter::new(take_map(ebpf, map::BACKEND_FILTER)?, map::BACKEND_FILTER),
                |k| k.address,
            ),
            vip_addresses: KeySet::new(
                take_map(ebpf, map::VIP_ADDRESSES)?,
                map::VIP_ADDRESSES,
                |address| *address,
                |address| *address,
            ),
            local_addresses: KeySet::new(
                take_map(ebpf, map::LOCAL_ADDRESSES)?,
                map::LOCAL_ADDRESSES,
                |address| *address,
                |address| *address,
            ),
            announced: KeySet::new(
                take_map(ebpf, map::ANNOUNCED_ADDRESSES)?,
                map::ANNOUNCED_ADDRESSES,
                |address| *address,
                |address| *address,
            ),
        };
        let made = [
            sets.services.capacity()?,
            sets.reply_sources.capacity()?,
            sets.vip_addresses.capacity()?,
            sets.local_addresses.capacity()?,
            sets.announced.capacity()?,
        ];
        for (&(name, asked), made) in sizes.iter().zip(made) {
            if made != asked {
                return Err(XdpError::Other(format!(
                    "map {name} of the loaded XDP program holds {made} keys, \
                     not the {asked} rules are checked against"
                )));
            }
        }
        Ok(sets)
    }
}

/// The maps sized from a capacity, with their sizes, in the order
/// services, reply sources, VIP addresses, local addresses, announced
/// addresses.
fn map_sizes(capacity: &XdpCapacity) -> [(&'static str, u32); 5] {
    let size = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    [
        (map::SERVICES, size(capacity.service_keys)),
        (map::REPLY_SOURCES, size(capacity.reply_sources)),
        (map::VIP_ADDRESSES, size(capacity.vip_addresses)),
        (map::LOCAL_ADDRESSES, size(capacity.local_addresses)),
        (map::ANNOUNCED_ADDRESSES, size(capacity.announced_addresses)),
    ]
}

pub(crate) fn key_bytes(key: &TrafficKey) -> [u8; KEY_LEN] {
    traffic_key(key.protocol, &key.address, key.port)
}

pub(crate) fn key_of_bytes(bytes: &[u8; KEY_LEN]) -> TrafficKey {
    let (protocol, address, port) = traffic_key_parts(bytes);
    TrafficKey {
        protocol,
        address,
        port,
    }
}
