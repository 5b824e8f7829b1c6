//! flowgate's XDP program loaded but attached nowhere, run on frames
//! through BPF_PROG_TEST_RUN: its maps filled as the daemon fills them,
//! its fast path's cache mapped as a worker maps it. For the golden tests
//! over the program, the fast path's tests, its fuzz target and its
//! per-packet cost.

use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};

use aya::maps::{Array, DevMap, HashMap as BpfHashMap, Map, MapData, PerCpuArray};
use aya::programs::{ProgramError, Xdp};
use aya::{Ebpf, EbpfLoader};

use super::fast_map::MappedEntries;
use super::key_set::map_error;
use super::owned::{OwnedTraffic, TrafficKey};
use super::per_cpu::per_cpu_totals;
use super::prefilter::AddressFilter;
use super::program::{
    counter, load_program, map, service_value, traffic_key, KEY_LEN, OBJECT, PROGRAM,
};
use super::test_run::{action, test_run, TestRun};
use super::verdict_counters::{read_one, VerdictCounters, INGRESS_DROPS};
use super::{XdpCounters, XdpError};
use crate::fastpath::layout::FAST_CONFIG_SIZE;
use crate::fastpath::{CacheGeometry, EntryMemory, FastConfig, FastPath};
use crate::pipeline::Verdict;
use crate::synproxy::xdp::{self as synproxy_xdp, SERVICE_VALUE_LEN};
use crate::synproxy::SynProxy;
use crate::synproxy::SynProxyCounters;
use crate::table::Snapshot;

/// Client connections the SYN proxy remembers in a test run's program
/// (the program's own default is sized for a gateway).
const TEST_SYN_PROXY_CONNECTIONS: u32 = 1024;

/// What the program did with one frame, in the pipeline's terms
/// ([`XdpTester::outcome`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProgramOutcome {
    /// The program decided: the verdict the pipeline gives such a frame,
    /// and the frame as the program left it.
    Decided(Verdict, Vec<u8>),
    /// Handed up to the workers' socket (none in a test run), untouched:
    /// the pipeline decides.
    HandedUp,
}

/// The program, loaded for test runs.
pub struct XdpTester {
    services: BpfHashMap<MapData, [u8; KEY_LEN], u8>,
    vip_filter: AddressFilter,
    reply_sources: BpfHashMap<MapData, [u8; KEY_LEN], u8>,
    backend_filter: AddressFilter,
    vip_addresses: BpfHashMap<MapData, [u8; 16], u8>,
    local_addresses: BpfHashMap<MapData, [u8; 16], u8>,
    announced: BpfHashMap<MapData, [u8; 16], u8>,
    announce_mac: Array<MapData, [u8; 8]>,
    /// The interface's MAC for the ingress checks (`ingress_config`).
    ingress_config: Array<MapData, [u8; super::program::INGRESS_CONFIG_LEN]>,
    fast_config: Array<MapData, [u8; FAST_CONFIG_SIZE]>,
    tx_ports: DevMap<MapData>,
    counters: PerCpuArray<MapData, u64>,
    syn_proxied: BpfHashMap<MapData, [u8; KEY_LEN], [u8; SERVICE_VALUE_LEN]>,
    syn_proxy_counters: PerCpuArray<MapData, u64>,
    cache: Arc<MappedEntries>,
    geometry: CacheGeometry,
    /// The verdict counters as [`Self::outcome`] left them: read once,
    /// then kept up to date from the counters each run's action can have
    /// moved (see [`super::verdict_counters`]); forgotten by any other
    /// run.
    known_counters: Mutex<Option<VerdictCounters>>,
    ebpf: Ebpf,
}

impl XdpTester {
    /// Loads the program with a cache of `geometry`, the fast path off
    /// until [`Self::set_fast_config`] turns it on.
    pub fn load(geometry: CacheGeometry) -> Result<XdpTester, XdpError> {
        Self::load_object(OBJECT, geometry)
    }

    /// As [`Self::load`], from `object`: another build of
    /// bpf/flowgate_xdp.c (the same maps), for benches that measure
    /// variants of the program side by side.
    pub fn load_object(object: &[u8], geometry: CacheGeometry) -> Result<XdpTester, XdpError> {
        let entries = geometry.entries();
        let mut loader = EbpfLoader::new();
        loader.set_max_entries(map::SOCKETS, 1);
        loader.set_max_entries(map::FAST_FLOWS, u32::try_from(entries).unwrap_or(u32::MAX));
        loader.set_max_entries(map::SYN_PROXY_CONNECTIONS, TEST_SYN_PROXY_CONNECTIONS);
        let mut ebpf = loader.load(object).map_err(|e| XdpError::from_load(&e))?;
        load_program(&mut ebpf)?;
        let cache = match ebpf.take_map(map::FAST_FLOWS) {
            Some(Map::Array(data)) => Arc::new(MappedEntries::map(data, entries)?),
            _ => {
                return Err(XdpError::Other(
                    "the XDP object has no fast_flows array".into(),
                ))
            }
        };
        let mut secret: Array<MapData, [u8; 16]> = take(&mut ebpf, synproxy_xdp::map::SECRET)?;
        let key = synproxy_xdp::random_secret()
            .map_err(|e| XdpError::Other(format!("reading a random SYN cookie key: {e}")))?;
        secret
            .set(0, key, 0)
            .map_err(|e| map_error("setting the SYN cookie key", e))?;
        Ok(XdpTester {
            services: take(&mut ebpf, map::SERVICES)?,
            vip_filter: AddressFilter::new(take(&mut ebpf, map::VIP_FILTER)?, map::VIP_FILTER),
            reply_sources: take(&mut ebpf, map::REPLY_SOURCES)?,
            backend_filter: AddressFilter::new(
                take(&mut ebpf, map::BACKEND_FILTER)?,
                map::BACKEND_FILTER,
            ),
            vip_addresses: take(&mut ebpf, map::VIP_ADDRESSES)?,
            local_addresses: take(&mut ebpf, map::LOCAL_ADDRESSES)?,
            announced: take(&mut ebpf, map::ANNOUNCED_ADDRESSES)?,
            announce_mac: take(&mut ebpf, map::ANNOUNCE_MAC)?,
            ingress_config: take(&mut ebpf, map::INGRESS_CONFIG)?,
            fast_config: take(&mut ebpf, map::FAST_CONFIG)?,
            tx_ports: take(&mut ebpf, map::FAST_TX_PORTS)?,
            counters: take(&mut ebpf, map::COUNTERS)?,
            syn_proxied: take(&mut ebpf, synproxy_xdp::map::SERVICES)?,
            syn_proxy_counters: take(&mut ebpf, synproxy_xdp::map::COUNTERS)?,
            cache,
            geometry,
            known_counters: Mutex::new(None),
            ebpf,
        })
    }

    /// Makes the program own `owned` (services, reply sources, VIPs, and
    /// answer for its announced VIPs, as the client-facing interface's
    /// program does), the prefilters' bits set before the keys go in.
    pub fn own(&mut self, owned: &OwnedTraffic) -> Result<(), XdpError> {
        for k in &owned.services {
            let key = traffic_key(k.protocol, &k.address, k.port);
            let proxied = self.syn_proxied.get(&key, 0).is_ok();
            self.vip_filter.admit(&k.address)?;
            self.services
                .insert(key, service_value(proxied), 0)
                .map_err(|e| map_error("adding a service key", e))?;
        }
        for k in &owned.reply_sources {
            self.backend_filter.admit(&k.address)?;
            self.reply_sources
                .insert(traffic_key(k.protocol, &k.address, k.port), 1, 0)
                .map_err(|e| map_error("adding a reply source", e))?;
        }
        for a in owned.vip_addresses() {
            self.vip_addresses
                .insert(a, 1, 0)
                .map_err(|e| map_error("adding a VIP address", e))?;
        }
        for a in &owned.announced {
            self.announced
                .insert(*a, 1, 0)
                .map_err(|e| map_error("adding an announced address", e))?;
        }
        Ok(())
    }

    /// Stops answering for the announced VIP `address`.
    pub fn remove_announced(&mut self, address: [u8; 16]) -> Result<(), XdpError> {
        self.announced
            .remove(&address)
            .map_err(|e| map_error("removing an announced address", e))
    }

    /// Sets the MAC the answers for announced VIPs carry.
    pub fn set_announce_mac(&mut self, mac: [u8; 6]) -> Result<(), XdpError> {
        let mut value = [0u8; 8];
        value[..6].copy_from_slice(&mac);
        self.announce_mac
            .set(0, value, 0)
            .map_err(|e| map_error("setting the announce MAC", e))
    }

    /// Sets the interface's MAC the ingress checks admit unicast frames
    /// to (all zeros: no MAC check).
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
            .map_err(|e| map_error("setting the ingress MAC", e))
    }

    /// Sets the SYN proxy of the service `key` (`Off` removes it), and
    /// the service's `services` value with it, as the daemon does.
    pub fn set_syn_proxy(&mut self, key: &TrafficKey, mode: SynProxy) -> Result<(), XdpError> {
        let k = traffic_key(key.protocol, &key.address, key.port);
        let owned = self.services.get(&k, 0).is_ok();
        match synproxy_xdp::service_value(mode) {
            Some(value) => {
                if owned {
                    self.services
                        .insert(k, service_value(true), 0)
                        .map_err(|e| map_error("marking a service SYN-proxied", e))?;
                }
                self.syn_proxied
                    .insert(k, value, 0)
                    .map_err(|e| map_error("setting a service's SYN proxy", e))
            }
            None if self.syn_proxied.get(&k, 0).is_err() => Ok(()),
            None => {
                self.syn_proxied
                    .remove(&k)
                    .map_err(|e| map_error("removing a service's SYN proxy", e))?;
                if owned {
                    self.services
                        .insert(k, service_value(false), 0)
                        .map_err(|e| map_error("marking a service not SYN-proxied", e))?;
                }
                Ok(())
            }
        }
    }

    /// The SYN proxy's counters, summed over CPUs.
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

    /// Adds one of the box's own addresses.
    pub fn add_local_address(&mut self, address: [u8; 16]) -> Result<(), XdpError> {
        self.local_addresses
            .insert(address, 1, 0)
            .map_err(|e| map_error("adding a local address", e))
    }

    /// Sets the fast path's configuration (`partitions` 0: off).
    pub fn set_fast_config(&mut self, config: FastConfig) -> Result<(), XdpError> {
        self.fast_config
            .set(0, config.to_bytes(), 0)
            .map_err(|e| map_error("setting the fast path's configuration", e))?;
        self.cache.set_forwarding(config.partitions != 0);
        Ok(())
    }

    /// Makes port `port` egress through interface `ifindex`.
    pub fn set_tx_port(&mut self, port: u32, ifindex: u32) -> Result<(), XdpError> {
        self.tx_ports
            .set(port, ifindex, None, 0)
            .map_err(|e| XdpError::Other(format!("setting egress port {port}: {e}")))
    }

    /// The cache, as a worker maps it.
    pub fn cache(&self) -> Arc<MappedEntries> {
        self.cache.clone()
    }

    /// Empties the cache (every entry zero: never used).
    pub fn clear_cache(&self) {
        for w in self.cache.words() {
            w.store(0, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The cache's geometry.
    pub fn geometry(&self) -> CacheGeometry {
        self.geometry
    }

    /// The loaded program's descriptor (for [`super::test_run::test_run`]
    /// in a timing loop).
    pub fn program_fd(&self) -> Result<std::os::fd::OwnedFd, XdpError> {
        let program: &Xdp = self
            .ebpf
            .program(PROGRAM)
            .ok_or_else(|| XdpError::Other(format!("no program {PROGRAM}")))?
            .try_into()
            .map_err(|e: ProgramError| XdpError::from_program("finding the program", &e))?;
        let fd = program
            .fd()
            .map_err(|e| XdpError::from_program("finding the program", &e))?;
        fd.as_fd()
            .try_clone_to_owned()
            .map_err(|e| XdpError::Other(format!("duplicating the program's fd: {e}")))
    }

    /// Runs the program once on `frame`.
    pub fn run(&self, frame: &[u8]) -> Result<TestRun, XdpError> {
        self.run_repeated(frame, 1)
    }

    /// Runs the program `repeat` times on `frame` (each run on the same
    /// input bytes).
    pub fn run_repeated(&self, frame: &[u8], repeat: u32) -> Result<TestRun, XdpError> {
        let _forgotten = self.take_known_counters();
        let program: &Xdp = self
            .ebpf
            .program(PROGRAM)
            .ok_or_else(|| XdpError::Other(format!("no program {PROGRAM}")))?
            .try_into()
            .map_err(|e: ProgramError| XdpError::from_program("finding the program", &e))?;
        let fd = program
            .fd()
            .map_err(|e| XdpError::from_program("finding the program", &e))?;
        test_run(fd.as_fd(), frame, repeat)
            .map_err(|e| XdpError::Other(format!("BPF_PROG_TEST_RUN: {e}")))
    }

    /// A worker's fast path (partition 0, epoch 0) that writes into
    /// `programs`' caches — port `i` into `programs[i]`'s — for a
    /// connection table of `records`; `None` without programs.
    pub fn fast_path(programs: &[XdpTester], records: usize) -> Option<FastPath> {
        let geometry = programs.first()?.geometry();
        let caches = programs
            .iter()
            .map(|x| Some(x.cache() as Arc<dyn EntryMemory>))
            .collect();
        Some(FastPath::new(geometry, 0, caches, records, 0))
    }

    /// Runs the program on `input`, arrived on port `ingress` of `ports`
    /// (their MACs in `snapshot`; `egress_ready` a bit per port that can
    /// take XDP frames), and says what it did in the pipeline's terms.
    ///
    /// It also holds the program to what it must never do — change a frame
    /// it passes, refuses or hands up, fast-forward out of a port that
    /// cannot take the frame or from a MAC that is no interface's, use
    /// XDP_TX for another port — and panics naming the broken rule: a tool
    /// for tests and fuzzers, where that panic is the finding.
    pub fn outcome(
        &self,
        input: &[u8],
        ingress: u16,
        ports: u16,
        egress_ready: u64,
        snapshot: &Snapshot,
    ) -> Result<ProgramOutcome, XdpError> {
        let mut known = self
            .take_known_counters()
            .unwrap_or_else(|| VerdictCounters::read(&self.counters));
        let run = self.run(input)?;
        let outcome = match run.action {
            action::PASS => {
                assert!(run.frame == input, "a passed frame is untouched");
                ProgramOutcome::Decided(Verdict::Pass, run.frame)
            }
            action::TX | action::REDIRECT => {
                let (index, count) = if run.action == action::TX {
                    (counter::FAST_TX, &mut known.fast_tx)
                } else {
                    (counter::FAST_REDIRECT, &mut known.fast_redirect)
                };
                let now = read_one(&self.counters, index)?;
                assert_eq!(
                    now,
                    *count + 1,
                    "XDP action {} not counted as the fast path's",
                    run.action
                );
                *count = now;
                // The egress interface by the source MAC it was given.
                let port = (0..ports)
                    .find(|&p| {
                        snapshot.interface_mac(p).as_ref().map(|m| &m[..]) == run.frame.get(6..12)
                    })
                    .expect("the fast path's source MAC is an interface's");
                assert!(
                    (egress_ready >> port) & 1 == 1,
                    "the fast path sent out of port {port}, which cannot take it"
                );
                assert_eq!(
                    run.action == action::TX,
                    port == ingress,
                    "XDP_TX iff out where it came in"
                );
                ProgramOutcome::Decided(Verdict::Transmit(port), run.frame)
            }
            action::DROP => {
                let no_socket = read_one(&self.counters, counter::DROPPED_NO_SOCKET)?;
                let outcome = if no_socket == known.no_socket + 1 {
                    // Handed up: owned, and no socket in a test run.
                    assert!(run.frame == input, "a frame handed up is untouched");
                    ProgramOutcome::HandedUp
                } else {
                    // Refused by the ingress checks, under exactly one of
                    // their reasons, each the reason the pipeline gives.
                    assert_eq!(
                        no_socket, known.no_socket,
                        "DROPPED_NO_SOCKET moved by other than one"
                    );
                    let mut moved = None;
                    for (i, &(index, reason)) in INGRESS_DROPS.iter().enumerate() {
                        let now = read_one(&self.counters, index)?;
                        if now != known.ingress[i] {
                            assert!(
                                now == known.ingress[i] + 1 && moved.is_none(),
                                "a drop counted other than once under one ingress reason"
                            );
                            moved = Some(reason);
                            known.ingress[i] = now;
                        }
                    }
                    let reason = moved.expect("a drop counted under no reason");
                    assert!(run.frame == input, "a refused frame is untouched");
                    ProgramOutcome::Decided(Verdict::Drop(reason), run.frame)
                };
                known.no_socket = no_socket;
                outcome
            }
            other => panic!("XDP action {other}"),
        };
        self.keep_known_counters(known);
        Ok(outcome)
    }

    /// Reads every verdict counter and panics if one differs from what
    /// the outcomes since the last such check account for: a count a run
    /// made that its action did not explain (say, a passed frame counted
    /// as handed up), which [`Self::outcome`] reads too little to see
    /// frame by frame. Call it after a series of outcomes (a fuzz script,
    /// a golden case).
    pub fn check_counters_accounted(&self) {
        let read = VerdictCounters::read(&self.counters);
        if let Some(known) = self.take_known_counters() {
            assert_eq!(
                read, known,
                "the program moved a verdict counter its outcomes did not account for"
            );
        }
        self.keep_known_counters(read);
    }

    /// The counters' map, for the batch read's test.
    #[cfg(test)]
    pub(super) fn counters_map(&self) -> &PerCpuArray<MapData, u64> {
        &self.counters
    }

    /// Adds one to counter `index` on the first CPU, as a run would:
    /// for the test of [`Self::check_counters_accounted`].
    #[cfg(test)]
    pub(super) fn bump_counter(&self, index: u32) {
        let mut values = self
            .counters
            .get(&index, 0)
            .expect("reading a counter")
            .to_vec();
        values[0] += 1;
        let values = aya::maps::PerCpuValues::try_from(values).expect("per-CPU values");
        // `set` takes `&mut self`; a test handle to the same map is enough.
        use aya::maps::IterableMap;
        let map = aya::maps::MapData::from_id(self.counters.map().info().expect("map info").id())
            .expect("the counters map by id");
        let mut handle: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(aya::maps::Map::PerCpuArray(map)).expect("a per-CPU array");
        handle.set(index, values, 0).expect("writing a counter");
    }

    fn take_known_counters(&self) -> Option<VerdictCounters> {
        self.known_counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    fn keep_known_counters(&self, counters: VerdictCounters) {
        *self
            .known_counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(counters);
    }

    /// The program's counters, summed over CPUs.
    pub fn counters(&self) -> XdpCounters {
        XdpCounters::from_totals(&per_cpu_totals(&self.counters, counter::COUNT))
    }
}

fn take<T>(ebpf: &mut Ebpf, name: &str) -> Result<T, XdpError>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    let m = ebpf
        .take_map(name)
        .ok_or_else(|| XdpError::Other(format!("the XDP object has no map {name}")))?;
    T::try_from(m).map_err(|e| map_error(&format!("opening map {name}"), e))
}
