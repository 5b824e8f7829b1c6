//! The compiled, immutable lookup snapshot the workers read.
//!
//! A [`Snapshot`] is everything a worker needs to place a new flow, compiled
//! from a validated [`Config`] into the shapes the per-packet path wants:
//!
//! - a service index: (protocol, VIP, port) → [`ServiceId`], a hash map with
//!   a fast non-cryptographic hasher (the keys are operator rules, not
//!   attacker-chosen, and the lookup runs for every new flow);
//! - the [`CompiledService`]s, a vector indexed by [`ServiceId`], each with
//!   its endpoint ids, its Maglev table and its weighted round-robin
//!   schedule, both holding endpoint ids;
//! - the endpoint table, a vector indexed by [`EndpointId`]: address, port,
//!   weight, owning service, next-hop MAC and egress port. Rules point at
//!   endpoint ids, never at addresses (two-level tables): moving an endpoint
//!   touches one entry;
//! - the set of VIPs and the interfaces' own MACs;
//! - the endpoints' liveness: an `Arc` to the one [`Liveness`] table, shared
//!   by every generation, so that a health change or an expiry is seen by
//!   the workers' next poll whatever snapshot they run. A build reads it to
//!   schedule over the alive endpoints (see [`super::failover`]).
//!
//! A snapshot is never modified once built. The control thread builds the
//! next one beside it and publishes it with one pointer swap
//! ([`super::SnapshotPublisher`]); a worker loads the current one once per
//! batch and reads it with no lock and no atomic operation per packet, and
//! every packet of a batch sees one consistent set of rules. Old snapshots
//! are freed when the last worker lets go of them.
//!
//! Ids are stable across builds: a service keeps its id while its
//! (protocol, VIP, port) is unchanged, and a backend keeps its endpoint id
//! while its service and (address, port) are unchanged, so established
//! connections can hold an endpoint id and check that
//! [`Snapshot::endpoint`] still names the same backend. A service whose
//! scheduled backends (the alive weighted ones, or all weighted ones in
//! panic mode) and table size are unchanged shares its Maglev table and
//! schedule with the previous snapshot instead of rebuilding them; so a
//! rebuild after a health transition rebuilds the affected services' tables
//! only.

use std::sync::Arc;
use std::time::Instant;

use hashbrown::{HashMap, HashSet};

use super::failover::{if_dead, AliveCount, IfDead, Mode};
use super::ids::IdAllocator;
use super::limits::CompiledLimits;
use super::maglev::{MaglevBackend, MaglevTable};
use super::skip::{next_alive, Lookup};
use super::subset::{compile_routes, ClientRouting, Member, ServiceRoutes};
use super::tables::{build_all, TableJob};
use super::vip_set::VipSet;
use crate::admission::ConnectionCap;
use crate::liveness::{Liveness, Word};
use crate::rules::{
    Announce, Backend, Config, Failover, MacAddr, Scheduler, Service, DEFAULT_MAGLEV_TABLE_SIZE,
};
use crate::wire::addr_to_bytes;
use crate::wire::rewrite::EndpointDeltas;

/// Index of a service in a snapshot; stable while its (protocol, VIP, port)
/// is unchanged.
pub type ServiceId = u32;
/// Index of an endpoint (backend) in a snapshot; stable while its service
/// and (address, port) are unchanged.
pub type EndpointId = u32;

/// One backend of one service, resolved for forwarding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Backend address, 16 bytes (IPv4-mapped for IPv4).
    pub address: [u8; 16],
    /// Backend port.
    pub port: u16,
    /// Weight (0: draining, no new flows).
    pub weight: u32,
    /// The service it belongs to.
    pub service: ServiceId,
    /// MAC of the static neighbour with this address, if any.
    pub next_hop_mac: Option<[u8; 6]>,
    /// Index of the interface that neighbour lives on (0 without one).
    pub egress_port: u16,
    /// The MAC of that interface, the source of every frame sent to this
    /// endpoint ([`Snapshot::interface_mac`] of `egress_port`, looked up
    /// once per build, not per packet); `None` where the config has no
    /// such interface.
    pub egress_mac: Option<[u8; 6]>,
    /// The first 12 bytes of every frame sent to this endpoint (the next
    /// hop's MAC, then `egress_mac`), where both are known: one copy per
    /// packet.
    pub egress_macs: Option<[u8; 12]>,
    /// What an established connection's packet does if the endpoint is not
    /// alive; `None` (the default policy, any endpoint alive without a TTL
    /// at the build, every endpoint of a service that ignores health in its
    /// mode) means the established path does not look at its liveness.
    pub if_dead: Option<IfDead>,
    /// `port`, with bit 16 set when `if_dead` is `Some`: the established
    /// path tests the port and the flag in one compare
    /// ([`Endpoint::is_plain`]).
    port_key: u32,
    /// The checksum changes (to the backend, to the client) of a
    /// connection to its service's VIP and port, worked out once per
    /// build for every new flow to it.
    vip_deltas: (EndpointDeltas, EndpointDeltas),
}

impl Endpoint {
    /// Whether this is the backend at `address` and `port` and its
    /// established connections need no look at its liveness: the
    /// established path's test, the flag folded into the port compare it
    /// makes anyway, so the default policy costs it nothing.
    #[inline(always)]
    pub fn is_plain(&self, address: &[u8; 16], port: u16) -> bool {
        self.address == *address && self.port_key == u32::from(port)
    }

    /// `port` and the watch flag, as [`Endpoint::is_plain`] compares them.
    fn port_key(port: u16, if_dead: Option<IfDead>) -> u32 {
        u32::from(port) | u32::from(if_dead.is_some()) << 16
    }

    /// The checksum changes (to the backend, to the client) of a
    /// connection to this endpoint from its service's VIP and port (the
    /// service [`service`](Self::service) names), as
    /// [`EndpointDeltas::v4`] works them out.
    #[inline(always)]
    pub fn vip_deltas(&self) -> (EndpointDeltas, EndpointDeltas) {
        self.vip_deltas
    }
}

/// The checksum changes of rewriting `vip`:`vip_port` to
/// `address`:`port` and back ([`Endpoint::vip_deltas`]).
fn deltas_both_ways(
    vip: &[u8; 16],
    vip_port: u16,
    address: &[u8; 16],
    port: u16,
) -> (EndpointDeltas, EndpointDeltas) {
    (
        EndpointDeltas::v4(vip, vip_port, address, port),
        EndpointDeltas::v4(address, port, vip, vip_port),
    )
}

/// A service compiled for lookups.
#[derive(Clone, Debug)]
pub struct CompiledService {
    name: String,
    protocol: u8,
    vip: [u8; 16],
    port: u16,
    scheduler: Scheduler,
    /// The configured Maglev table size (the table itself is empty when no
    /// backend has weight).
    table_size: u32,
    /// Every backend, weight 0 included, in identity order.
    endpoints: Vec<EndpointId>,
    /// The backends with weight > 0, in identity order: the skip rule's
    /// walk.
    weighted: Arc<[EndpointId]>,
    /// The (endpoint, weight) pairs the tables were built over.
    scheduled: Arc<[(EndpointId, u32)]>,
    maglev: MaglevTable,
    wrr: Arc<[EndpointId]>,
    failover: Failover,
    /// How its VIP is announced on the client-facing interface.
    announce: Announce,
    alive: AliveCount,
    mode: Mode,
    /// Routing by client, for a service that routes by client
    /// ([`crate::rules::routing::routes_by_client`]).
    routes: Option<Arc<ServiceRoutes>>,
    /// Its backends named by distribution paths, by ref: what a path's
    /// backend is in this generation.
    path_backends: crate::route::BackendIndex,
    /// Names this service across generations while its (protocol, VIP,
    /// port) stays: per-service counters follow it, not the id.
    serial: u64,
    /// Its flow control, if it has any limit.
    limits: Option<Arc<CompiledLimits>>,
    /// Whether the XDP program answers its SYNs with cookies.
    syn_proxy: crate::synproxy::SynProxy,
}

/// Serials of services, from 1.
static NEXT_SERVICE_SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl CompiledService {
    /// The serial that names this service across generations.
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// Whether the XDP program answers its SYNs with cookies
    /// (`syn_proxy`).
    pub fn syn_proxy(&self) -> crate::synproxy::SynProxy {
        self.syn_proxy
    }

    /// Its flow control; `None` for a service without limits.
    #[inline]
    pub fn limits(&self) -> Option<&CompiledLimits> {
        self.limits.as_deref()
    }

    /// The endpoint a distribution path's backend `backend` is in this
    /// generation, if it is one of the service's.
    #[inline]
    pub fn path_backend(&self, backend: crate::route::BackendRef) -> Option<EndpointId> {
        self.path_backends.resolve(backend)
    }

    /// Its routing by client: subsets, plans, canary; `None` when every
    /// new flow is its scheduler's over the whole service.
    #[inline]
    pub fn routes(&self) -> Option<&ServiceRoutes> {
        self.routes.as_deref()
    }

    /// The service's unique name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How it picks a backend for a new flow.
    pub fn scheduler(&self) -> Scheduler {
        self.scheduler
    }

    /// Its VIP, 16 bytes (IPv4-mapped for IPv4).
    pub fn vip(&self) -> &[u8; 16] {
        &self.vip
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its IP protocol number.
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// How its VIP is announced on the client-facing interface.
    pub fn announce(&self) -> Announce {
        self.announce
    }

    /// The Maglev choice for a hash; `None` only if no backend has weight.
    #[inline]
    pub fn maglev_lookup(&self, hash: u64) -> Option<EndpointId> {
        self.maglev.lookup(hash)
    }

    /// The Maglev table itself.
    pub fn maglev_table(&self) -> &MaglevTable {
        &self.maglev
    }

    /// The configured Maglev table size.
    pub fn maglev_table_size(&self) -> u32 {
        self.table_size
    }

    /// One cycle of the weighted round-robin schedule; empty if no backend
    /// has weight.
    #[inline]
    pub fn wrr_schedule(&self) -> &[EndpointId] {
        &self.wrr
    }

    /// Every endpoint of the service (weight 0 included), in identity order.
    pub fn endpoints(&self) -> &[EndpointId] {
        &self.endpoints
    }

    /// The endpoints with weight > 0, in identity order.
    pub fn weighted(&self) -> &[EndpointId] {
        &self.weighted
    }

    /// The endpoints the scheduler tables were built over, with their
    /// weights: the alive weighted ones in [`Mode::Healthy`], every
    /// weighted one in panic mode or failing open, none failing closed.
    pub fn scheduled(&self) -> &[(EndpointId, u32)] {
        &self.scheduled
    }

    /// What the service does when its backends go down.
    pub fn failover(&self) -> &Failover {
        &self.failover
    }

    /// How many of its weighted endpoints were alive at the build.
    pub fn alive(&self) -> &AliveCount {
        &self.alive
    }

    /// How it places new flows, as decided at the build.
    #[inline]
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The skip rule ([`super::skip`]) for a flow whose pick by `hash` (the
    /// hash the scheduler used) is not alive: the first alive endpoint by
    /// `alive`, or `None`.
    pub fn next_alive(
        &self,
        hash: u64,
        alive: impl FnMut(EndpointId) -> bool,
    ) -> Option<EndpointId> {
        let table = match self.scheduler {
            Scheduler::Maglev | Scheduler::Sh | Scheduler::Fanout(_) => {
                Lookup::Maglev(&self.maglev)
            }
            Scheduler::Wrr => Lookup::Schedule(&self.wrr),
        };
        next_alive(table, &self.weighted, hash, alive)
    }
}

/// The exact-match key of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct ServiceKey {
    vip: u128,
    port: u16,
    protocol: u8,
}

impl ServiceKey {
    #[inline]
    fn new(protocol: u8, vip: &[u8; 16], port: u16) -> ServiceKey {
        ServiceKey {
            vip: u128::from_be_bytes(*vip),
            port,
            protocol,
        }
    }

    fn of(service: &Service) -> ServiceKey {
        ServiceKey::new(
            service.protocol.number(),
            &addr_to_bytes(service.vip),
            service.port,
        )
    }
}

/// Where a backend address's frames go: the static neighbour's MAC and
/// interface.
#[derive(Clone, Copy)]
struct NextHop {
    mac: MacAddr,
    port: u16,
}

/// How a build reads and starts the endpoints' liveness.
#[derive(Clone, Copy)]
pub struct LivenessInput<'a> {
    /// The table: the previous snapshot's, so that every generation shares
    /// one.
    pub table: &'a Arc<Liveness>,
    /// When alive-ness is judged: ns after the table's epoch.
    pub now_ns: u64,
    /// The word a backend given a new endpoint id starts with (up; down for
    /// a backend whose checks start failed; up until a deadline for one
    /// registered with a TTL). Kept ids keep their word.
    pub initial: &'a dyn Fn(&Service, &Backend) -> Word,
}

impl std::fmt::Debug for LivenessInput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LivenessInput")
            .field("now_ns", &self.now_ns)
            .finish_non_exhaustive()
    }
}

/// New endpoints start up, without a TTL.
fn start_up(_: &Service, _: &Backend) -> Word {
    Word::UP
}

/// Compiled, immutable lookup tables for one generation of the rules.
#[derive(Debug)]
pub struct Snapshot {
    generation: u64,
    service_index: HashMap<ServiceKey, ServiceId>,
    /// Indexed by [`ServiceId`]; `None` marks a free id. Each compiled
    /// service is shared, so that a build that carries it from the
    /// previous generation copies a pointer, not the service.
    services: Vec<Option<Arc<CompiledService>>>,
    /// Indexed by [`EndpointId`]; `None` marks a free id.
    endpoints: Vec<Option<Endpoint>>,
    vips: VipSet,
    interface_macs: Vec<MacAddr>,
    endpoint_count: usize,
    liveness: Arc<Liveness>,
    client_routing: Arc<ClientRouting>,
    /// The register of backend names distribution paths use, shared by
    /// every generation (see [`super::PathRouting`]).
    backend_names: super::SharedNames,
    /// Backends by (protocol, address, port), for replies with no
    /// connection.
    reply_sources: super::ReplySources,
    /// The fan-out services' backends, for their replies.
    pub(super) fanout: super::fanout::FanoutIndex,
    /// Each capped endpoint's connection marks, by [`EndpointId`] (empty
    /// while no backend is capped).
    endpoint_caps: Vec<Option<ConnectionCap>>,
    /// `[ingress] bogons`: sources that never make a connection.
    bogons: super::Bogons,
    /// The interfaces' VLAN settings, by port.
    vlans: super::PortVlans,
}

impl Snapshot {
    /// The register of backend names, shared by every generation.
    pub fn backend_names(&self) -> &super::SharedNames {
        &self.backend_names
    }

    /// The client classes, for routing by client.
    #[inline]
    pub fn client_routing(&self) -> &ClientRouting {
        &self.client_routing
    }

    /// A snapshot with no services: generation 0, what workers hold before
    /// the first config is applied. It has a liveness table of its own,
    /// counting from now.
    pub fn empty() -> Snapshot {
        Snapshot::empty_with(Arc::new(Liveness::new(Instant::now())))
    }

    /// A snapshot with no services, over the liveness table `liveness`
    /// (the daemon's, whose epoch is the workers' clock).
    pub fn empty_with(liveness: Arc<Liveness>) -> Snapshot {
        Snapshot {
            generation: 0,
            service_index: HashMap::new(),
            services: Vec::new(),
            endpoints: Vec::new(),
            vips: VipSet::default(),
            interface_macs: Vec::new(),
            endpoint_count: 0,
            liveness,
            client_routing: Arc::default(),
            backend_names: Arc::default(),
            reply_sources: super::ReplySources::default(),
            fanout: Default::default(),
            endpoint_caps: Vec::new(),
            bogons: super::Bogons::default(),
            vlans: super::PortVlans::default(),
        }
    }

    /// Compiles `config`. With `previous`, ids of unchanged services and
    /// backends are kept, unchanged services share their tables, the
    /// liveness table is the previous one's, and the generation is the
    /// previous one plus 1; without, the liveness table is new and the
    /// generation is 1. Liveness is judged now, by the system's clock, and
    /// new endpoints start up without a TTL; [`Snapshot::build_with`] says
    /// otherwise.
    ///
    /// Never panics. A validated config has no duplicate services or
    /// backends; should one appear anyway, the first in config order wins.
    pub fn build(config: &Config, previous: Option<&Snapshot>) -> Snapshot {
        let table = match previous {
            Some(p) => Arc::clone(&p.liveness),
            None => Arc::new(Liveness::new(Instant::now())),
        };
        let input = LivenessInput {
            table: &table,
            now_ns: table.now_ns(),
            initial: &start_up,
        };
        Snapshot::build_with(config, previous, input)
    }

    /// [`Snapshot::build`] with the liveness table, the time and the
    /// new endpoints' words given. Each service's scheduler tables are
    /// built over its endpoints alive at `liveness.now_ns` (or, in panic
    /// mode or failing open, over all its weighted endpoints); the
    /// established path is told which endpoints to watch. Called again
    /// after a health transition with the same config, it rebuilds only
    /// the tables of the services whose alive set changed.
    pub fn build_with(
        config: &Config,
        previous: Option<&Snapshot>,
        liveness: LivenessInput<'_>,
    ) -> Snapshot {
        let empty = Snapshot::empty_with(Arc::clone(liveness.table));
        let prev = previous.unwrap_or(&empty);
        let mut builder = Builder {
            prev,
            next_hops: next_hops(config),
            default_table_size: config.gateway.maglev_table_size,
            service_ids: IdAllocator::after(prev.services.iter().map(Option::is_some)),
            endpoint_ids: IdAllocator::after(prev.endpoints.iter().map(Option::is_some)),
            liveness,
            profiles: crate::rules::routing::profiles(config).list,
            zone_priority: &config.routing.zone_priority,
            jobs: Vec::new(),
            next: Snapshot {
                generation: previous.map_or(1, |p| p.generation.saturating_add(1)),
                // An interface without a MAC (the daemon fills in the
                // kernel's before it compiles) sends from all zeros.
                interface_macs: config
                    .interfaces
                    .iter()
                    .map(|i| i.mac.unwrap_or_default())
                    .collect(),
                client_routing: Arc::new(ClientRouting::build(config)),
                bogons: super::Bogons::new(&config.ingress.bogons),
                vlans: super::PortVlans::new(&config.interfaces),
                backend_names: previous
                    .map(|p| Arc::clone(&p.backend_names))
                    .unwrap_or_default(),
                ..Snapshot::empty_with(Arc::clone(liveness.table))
            },
        };

        // Canonical order (by key, config order among duplicates), so that
        // fresh ids do not depend on how the config lists services.
        let mut services: Vec<(ServiceKey, &Service)> = config
            .services
            .iter()
            .map(|s| (ServiceKey::of(s), s))
            .collect();
        services.sort_by_key(|&(key, _)| key);
        services.dedup_by_key(|&mut (key, _)| key);
        let backends: usize = services.iter().map(|(_, s)| s.backends.len()).sum();
        builder.next.service_index.reserve(services.len());
        builder.next.vips.reserve(services.len());
        builder.next.services.reserve(services.len());
        builder.next.endpoints.reserve(backends);
        for (key, service) in services {
            builder.add_service(key, service);
        }
        builder.finish()
    }

    /// [`Snapshot::build_with`] for a `config` that differs from the one
    /// `previous` was built from only in the services named in `changed`
    /// (added, replaced or removed, by name): the unchanged services are
    /// carried from `previous` as they are (their ids, endpoints, Maglev
    /// tables, schedules, subsets and limits shared), and only the named
    /// ones are taken out and compiled again. What it builds is what
    /// [`Snapshot::build_with`] builds from the same inputs (the same
    /// ids, tables and endpoints); it costs what the change names, plus
    /// copying the previous snapshot's vectors and rebuilding the reply
    /// sources (a pass over the endpoints).
    ///
    /// Everything outside the services (interfaces, neighbours, client
    /// classes, bogons) must be as `previous` was built with it: the
    /// caller knows, from the change, that only services differ.
    pub fn build_changed(
        config: &Config,
        previous: &Snapshot,
        liveness: LivenessInput<'_>,
        changed: &[String],
    ) -> Snapshot {
        Snapshot::build_changed_over(config, &config.neighbours, previous, liveness, changed)
    }

    /// [`Snapshot::build_changed`] with the neighbours taken from
    /// `neighbours` instead of `config` (the daemon's: the static ones
    /// with those the kernel learned merged in), so that no config has to
    /// be copied to carry them. What it builds is what
    /// [`Snapshot::build_with`] builds from `config` with `neighbours` in
    /// it.
    pub fn build_changed_over(
        config: &Config,
        neighbours: &[crate::rules::Neighbour],
        previous: &Snapshot,
        liveness: LivenessInput<'_>,
        changed: &[String],
    ) -> Snapshot {
        let names: HashSet<&str> = changed.iter().map(String::as_str).collect();
        let mut builder = Builder {
            prev: previous,
            next_hops: next_hops_of(neighbours, config.interfaces.len()),
            default_table_size: config.gateway.maglev_table_size,
            service_ids: IdAllocator::after(previous.services.iter().map(Option::is_some)),
            endpoint_ids: IdAllocator::after(previous.endpoints.iter().map(Option::is_some)),
            liveness,
            profiles: crate::rules::routing::profiles(config).list,
            zone_priority: &config.routing.zone_priority,
            jobs: Vec::new(),
            next: previous.carried(Arc::clone(liveness.table)),
        };
        // Take the named services out (their keys, endpoints and caps)...
        let mut freed_vips: HashSet<u128> = HashSet::new();
        let leaving: Vec<(ServiceId, ServiceKey)> = previous
            .services()
            .filter(|(_, s)| names.contains(s.name()))
            .map(|(id, s)| (id, ServiceKey::new(s.protocol, &s.vip, s.port)))
            .collect();
        let mut touches_fanout = false;
        // Their endpoints as they were, for the reply sources.
        let mut gone: Vec<(EndpointId, u8, [u8; 16], u16)> = Vec::new();
        for &(id, key) in &leaving {
            if let Some(service) = previous.service(id) {
                touches_fanout |= service.scheduler.fanout().is_some();
                gone.extend(service.endpoints.iter().filter_map(|&e| {
                    let endpoint = previous.endpoint(e)?;
                    Some((e, service.protocol, endpoint.address, endpoint.port))
                }));
            }
            builder.next.take_out(id, key);
            freed_vips.insert(key.vip);
        }
        // ...and compile them again, in the canonical order the full build
        // uses, so that new ids come out the same.
        let mut services: Vec<(ServiceKey, &Service)> = config
            .services
            .iter()
            .filter(|s| names.contains(s.name.as_str()))
            .map(|s| (ServiceKey::of(s), s))
            .collect();
        services.sort_by_key(|&(key, _)| key);
        services.dedup_by_key(|&mut (key, _)| key);
        let mut compiled: Vec<ServiceKey> = Vec::with_capacity(services.len());
        for (key, service) in services {
            if !builder.next.service_index.contains_key(&key) {
                touches_fanout |= service.scheduler.fanout().is_some();
                builder.add_service(key, service);
                compiled.push(key);
            }
        }
        // A VIP stays while another service (any protocol or port) has it.
        if !freed_vips.is_empty() {
            for key in builder.next.service_index.keys() {
                freed_vips.remove(&key.vip);
            }
            for vip in &freed_vips {
                builder.next.vips.remove(vip);
            }
        }
        builder.finish_changed(previous, &gone, &compiled, touches_fanout)
    }

    /// The next generation's start for [`Snapshot::build_changed`]: a copy
    /// of this one's services, endpoints and indexes (the compiled parts
    /// shared), over the liveness table `liveness`.
    fn carried(&self, liveness: Arc<Liveness>) -> Snapshot {
        Snapshot {
            generation: self.generation.saturating_add(1),
            service_index: self.service_index.clone(),
            services: self.services.clone(),
            endpoints: self.endpoints.clone(),
            vips: self.vips.clone(),
            interface_macs: self.interface_macs.clone(),
            endpoint_count: self.endpoint_count,
            liveness,
            client_routing: Arc::clone(&self.client_routing),
            backend_names: Arc::clone(&self.backend_names),
            // Patched by the build from the change.
            reply_sources: super::ReplySources::default(),
            fanout: Default::default(),
            endpoint_caps: self.endpoint_caps.clone(),
            bogons: self.bogons.clone(),
            vlans: self.vlans.clone(),
        }
    }

    /// Frees service `id` (at `key`) and its endpoints and caps, for a
    /// build that compiles it again or drops it. Its VIP is left to the
    /// caller (another service may have it).
    fn take_out(&mut self, id: ServiceId, key: ServiceKey) {
        if self.service_index.get(&key) == Some(&id) {
            self.service_index.remove(&key);
        }
        let Some(service) = self.services.get_mut(id as usize).and_then(Option::take) else {
            return;
        };
        for &endpoint in &service.endpoints {
            if let Some(slot) = self.endpoints.get_mut(endpoint as usize) {
                if slot.take().is_some() {
                    self.endpoint_count = self.endpoint_count.saturating_sub(1);
                }
            }
            if let Some(slot) = self.endpoint_caps.get_mut(endpoint as usize) {
                *slot = None;
            }
        }
    }

    /// The generation: 0 for [`Snapshot::empty`], then 1, 2, … per build.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The connection marks of endpoint `id`, if it is capped.
    #[inline]
    pub fn endpoint_cap(&self, id: EndpointId) -> Option<&ConnectionCap> {
        self.endpoint_caps.get(id as usize)?.as_ref()
    }

    /// The endpoints' liveness, shared with every other generation.
    #[inline]
    pub fn liveness(&self) -> &Arc<Liveness> {
        &self.liveness
    }

    /// The service at exactly (protocol, VIP, port).
    #[inline]
    pub fn lookup_service(
        &self,
        protocol: u8,
        vip: &[u8; 16],
        port: u16,
    ) -> Option<(ServiceId, &CompiledService)> {
        let id = *self
            .service_index
            .get(&ServiceKey::new(protocol, vip, port))?;
        Some((id, self.service(id)?))
    }

    /// The service with this id.
    #[inline]
    pub fn service(&self, id: ServiceId) -> Option<&CompiledService> {
        self.services.get(id as usize)?.as_deref()
    }

    /// The endpoint with this id.
    #[inline]
    pub fn endpoint(&self, id: EndpointId) -> Option<&Endpoint> {
        self.endpoints.get(id as usize)?.as_ref()
    }

    /// Backends by (protocol, address, port), and next hops by address:
    /// what a reply with no connection may be translated by.
    #[inline]
    pub fn reply_sources(&self) -> &super::ReplySources {
        &self.reply_sources
    }

    /// Whether any service has this VIP (on any protocol or port).
    #[inline]
    pub fn is_vip(&self, addr: &[u8; 16]) -> bool {
        self.vips.contains(u128::from_be_bytes(*addr))
    }

    /// The configured bogon prefixes (`[ingress] bogons`).
    #[inline]
    pub fn bogons(&self) -> &super::Bogons {
        &self.bogons
    }

    /// The interfaces' VLAN settings.
    #[inline]
    pub fn vlans(&self) -> &super::PortVlans {
        &self.vlans
    }

    /// The own MAC of interface `port` (its index in the config).
    #[inline]
    pub fn interface_mac(&self, port: u16) -> Option<[u8; 6]> {
        self.interface_macs.get(usize::from(port)).copied()
    }

    /// Every service with its id, in id order.
    pub fn services(&self) -> impl Iterator<Item = (ServiceId, &CompiledService)> {
        self.services
            .iter()
            .enumerate()
            .filter_map(|(id, s)| Some((ServiceId::try_from(id).ok()?, s.as_deref()?)))
    }

    /// One past the largest service id: per-service state indexed by
    /// [`ServiceId`] needs this many slots.
    pub fn service_id_limit(&self) -> usize {
        self.services.len()
    }

    /// Number of services.
    pub fn service_count(&self) -> usize {
        self.service_index.len()
    }

    /// Number of endpoints, over all services.
    pub fn endpoint_count(&self) -> usize {
        self.endpoint_count
    }

    /// One past the largest endpoint id in use: per-endpoint arrays of
    /// this length have a slot for every endpoint. O(1).
    pub fn endpoint_id_limit(&self) -> usize {
        // Ids are placed by growing `endpoints` only as far as needed, so
        // its length is the limit (trailing slots may be free, which only
        // costs a few slots).
        self.endpoints.len()
    }

    #[cfg(test)]
    /// What a snapshot's rules are, with each service's serial left out
    /// (a service new in a build takes the next serial there is, so two
    /// builds of it differ) and free slots at the end dropped.
    pub(crate) fn rules_text(&self) -> String {
        let s = self;
        let trim = |v: &mut Vec<String>| {
            while v.last().is_some_and(|x| x == "None") {
                v.pop();
            }
        };
        let mut index: Vec<_> = s.service_index.iter().collect();
        index.sort();
        let mut services: Vec<String> = s
            .services
            .iter()
            .map(|c| match c {
                Some(c) => {
                    let text = format!("{c:?}");
                    let at = text.find("serial:").unwrap();
                    let end = at + text[at..].find(',').unwrap();
                    format!("{}{}", &text[..at], &text[end..])
                }
                None => "None".into(),
            })
            .collect();
        trim(&mut services);
        let mut endpoints: Vec<String> = s.endpoints.iter().map(|e| format!("{e:?}")).collect();
        trim(&mut endpoints);
        let mut caps: Vec<String> = s.endpoint_caps.iter().map(|c| format!("{c:?}")).collect();
        trim(&mut caps);
        let mut vips: Vec<_> = s.vips.iter().collect();
        vips.sort();
        let replies: Vec<_> = s
            .endpoints
            .iter()
            .flatten()
            .map(|e| s.reply_sources.lookup(6, &e.address, e.port))
            .collect();
        format!(
            "{index:?}\n{services:?}\n{endpoints:?}\n{caps:?}\n{vips:?}\n{} {} {replies:?}\n{:?}",
            s.endpoint_count,
            s.reply_sources.len(),
            s.interface_macs
        )
    }

    /// Tests: whether service `id` is the very compiled service (not a
    /// copy) `other` has at `id`: carried, not compiled again.
    #[cfg(test)]
    pub(crate) fn carries_service_of(&self, other: &Snapshot, id: ServiceId) -> bool {
        match (
            self.services.get(id as usize),
            other.services.get(id as usize),
        ) {
            (Some(Some(a)), Some(Some(b))) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// The static neighbours by address; the first entry for an address wins.
/// A neighbour on an interface that does not exist is ignored.
fn next_hops(config: &Config) -> HashMap<[u8; 16], NextHop> {
    next_hops_of(&config.neighbours, config.interfaces.len())
}

/// [`next_hops`] of `neighbours`, over `interfaces` interfaces.
fn next_hops_of(
    neighbours: &[crate::rules::Neighbour],
    interfaces: usize,
) -> HashMap<[u8; 16], NextHop> {
    let mut map = HashMap::with_capacity(neighbours.len());
    for n in neighbours {
        let Ok(port) = u16::try_from(n.interface) else {
            continue;
        };
        if n.interface < interfaces {
            map.entry(addr_to_bytes(n.address))
                .or_insert(NextHop { mac: n.mac, port });
        }
    }
    map
}

/// One backend of the service being compiled.
struct BackendEntry {
    address: [u8; 16],
    port: u16,
    weight: u32,
    id: EndpointId,
    /// Its liveness word at the build.
    word: Word,
}

/// State of one [`Snapshot::build_with`].
struct Builder<'a> {
    prev: &'a Snapshot,
    next_hops: HashMap<[u8; 16], NextHop>,
    default_table_size: u32,
    service_ids: IdAllocator,
    endpoint_ids: IdAllocator,
    liveness: LivenessInput<'a>,
    /// The client profiles of routing by client.
    profiles: Vec<crate::rules::routing::Profile<'a>>,
    /// The gateway's zone priority.
    zone_priority: &'a [String],
    /// The services whose tables are to be built, once every id is known.
    jobs: Vec<TableJob>,
    next: Snapshot,
}

impl Builder<'_> {
    /// The Maglev table size of `service`: its own, else the gateway's.
    fn table_size(&self, service: &Service) -> u32 {
        [
            service.maglev_table_size,
            self.default_table_size,
            DEFAULT_MAGLEV_TABLE_SIZE,
        ]
        .into_iter()
        .find(|&size| size > 0)
        .unwrap_or(DEFAULT_MAGLEV_TABLE_SIZE)
    }

    /// The snapshot built: its reply sources and fan-out index made from
    /// its endpoints.
    fn finish(self) -> Snapshot {
        let mut next = self.next;
        // The tables that could not be carried over, built all at once
        // (on several cores when there are many slots to fill).
        for built in build_all(self.jobs) {
            if let Some(Some(service)) = next.services.get_mut(built.service as usize) {
                // Compiled in this build: not shared yet, so no copy.
                let service = Arc::make_mut(service);
                service.maglev = built.maglev;
                service.wrr = built.wrr;
            }
        }
        next.reply_sources = super::ReplySources::build(
            next.endpoints
                .iter()
                .enumerate()
                .filter_map(|(id, e)| Some((EndpointId::try_from(id).ok()?, e.as_ref()?))),
            |service| Some(next.services.get(service as usize)?.as_deref()?.protocol),
            self.next_hops.iter().map(|(a, h)| (*a, h.mac, h.port)),
        );
        next.fanout = super::fanout::FanoutIndex::of(&next);
        next
    }

    /// [`Builder::finish`] for [`Snapshot::build_changed`]: the reply
    /// sources patched from `previous`'s for the endpoints `gone` (of the
    /// services taken out) and those of the services `compiled` again,
    /// and the fan-out index carried unless the change `touches_fanout`.
    fn finish_changed(
        self,
        previous: &Snapshot,
        gone: &[(EndpointId, u8, [u8; 16], u16)],
        compiled: &[ServiceKey],
        touches_fanout: bool,
    ) -> Snapshot {
        let mut next = self.next;
        for built in build_all(self.jobs) {
            if let Some(Some(service)) = next.services.get_mut(built.service as usize) {
                // Compiled in this build: not shared yet, so no copy.
                let service = Arc::make_mut(service);
                service.maglev = built.maglev;
                service.wrr = built.wrr;
            }
        }
        let added: Vec<(EndpointId, u8, [u8; 16], u16)> = compiled
            .iter()
            .filter_map(|key| next.service(*next.service_index.get(key)?))
            .flat_map(|service| {
                let next = &next;
                service.endpoints.iter().filter_map(move |&e| {
                    let endpoint = next.endpoint(e)?;
                    Some((e, service.protocol, endpoint.address, endpoint.port))
                })
            })
            .collect();
        let all = || {
            next.endpoints
                .iter()
                .enumerate()
                .filter_map(|(id, e)| {
                    let e = e.as_ref()?;
                    let protocol = next.service(e.service)?.protocol;
                    Some((EndpointId::try_from(id).ok()?, protocol, e))
                })
                .collect()
        };
        let reply_sources = previous.reply_sources.patched(
            gone.iter().copied(),
            added.into_iter(),
            all,
            self.next_hops.iter().map(|(a, h)| (*a, h.mac, h.port)),
        );
        next.reply_sources = reply_sources;
        next.fanout = if touches_fanout {
            super::fanout::FanoutIndex::of(&next)
        } else {
            previous.fanout.clone()
        };
        next
    }

    fn add_service(&mut self, key: ServiceKey, service: &Service) {
        let prev = self.prev;
        let previous = prev
            .service_index
            .get(&key)
            .and_then(|&id| Some((id, prev.service(id)?)));
        let Some(id) = previous
            .map(|(id, _)| id)
            .or_else(|| self.service_ids.allocate())
        else {
            return;
        };
        let previous = previous.map(|(_, s)| s);
        let backends = self.assign_endpoint_ids(service, previous);
        let table_size = self.table_size(service);

        // Who takes new flows: the alive weighted backends, unless too few
        // of them are alive for the service's failover settings.
        let now_ns = self.liveness.now_ns;
        let alive = AliveCount::of_words(backends.iter().map(|b| (b.weight, b.word)), now_ns);
        let (mode, reported) = table_mode(service, &alive);
        let scheduled: Vec<&BackendEntry> = backends
            .iter()
            .filter(|b| b.weight > 0)
            .filter(|b| match mode {
                Mode::Healthy => reported || b.word.is_alive(now_ns),
                Mode::Panic | Mode::AllDownOpen => true,
                Mode::AllDownClosed => false,
            })
            .collect();
        let scheduled_ids: Arc<[(EndpointId, u32)]> =
            scheduled.iter().map(|b| (b.id, b.weight)).collect();

        let reused =
            previous.filter(|p| p.table_size == table_size && p.scheduled == scheduled_ids);
        let (maglev, wrr, scheduled_ids) = match reused {
            Some(p) => (
                p.maglev.clone(),
                Arc::clone(&p.wrr),
                Arc::clone(&p.scheduled),
            ),
            None => {
                // Built after the walk (see `build_with`); empty until then.
                self.jobs.push(table_job(id, &scheduled, table_size));
                (MaglevTable::empty(), Arc::from([]), scheduled_ids)
            }
        };

        // A service that ignores health (panic mode, failing open) leaves
        // its dead backends' connections alone too.
        let acts_on_health = matches!(mode, Mode::Healthy | Mode::AllDownClosed);
        let vip = addr_to_bytes(service.vip);
        for b in &backends {
            let if_dead = if_dead(service.protocol, &service.failover, b.word, now_ns)
                .filter(|_| acts_on_health);
            let endpoint = self.endpoint(b, id, if_dead, &vip, service.port);
            place(&mut self.next.endpoints, b.id, endpoint);
        }
        self.next.endpoint_count += backends.len();
        let weighted = backends
            .iter()
            .filter(|b| b.weight > 0)
            .map(|b| b.id)
            .collect();
        let routes = self.routes(service, &backends, mode, table_size, previous);
        let path_backends = self.path_backends(service, &backends);
        let (serial, limits) = self.flow_control(service, &backends, previous);
        place(
            &mut self.next.services,
            id,
            Arc::new(CompiledService {
                name: service.name.clone(),
                protocol: key.protocol,
                vip: key.vip.to_be_bytes(),
                port: key.port,
                scheduler: service.scheduler,
                table_size,
                endpoints: backends.iter().map(|b| b.id).collect(),
                weighted,
                scheduled: scheduled_ids,
                maglev,
                wrr,
                failover: service.failover,
                announce: service.announce,
                alive,
                mode,
                routes,
                path_backends,
                serial,
                limits,
                syn_proxy: service.limits.syn_proxy,
            }),
        );
        self.next.service_index.insert(key, id);
        self.next.vips.insert(key.vip);
    }
    /// Backend `b` of service `service` (at `vip`, `vip_port`) as an
    /// endpoint: its next hop, egress interface and that interface's MAC,
    /// and the checksum changes of its connections, all looked up or
    /// worked out here once.
    fn endpoint(
        &self,
        b: &BackendEntry,
        service: ServiceId,
        if_dead: Option<IfDead>,
        vip: &[u8; 16],
        vip_port: u16,
    ) -> Endpoint {
        let hop = self.next_hops.get(&b.address);
        let egress_port = hop.map_or(0, |h| h.port);
        let egress_mac = self.next.interface_mac(egress_port);
        let egress_macs = hop.zip(egress_mac).map(|(hop, src)| {
            let mut macs = [0; 12];
            macs[..6].copy_from_slice(&hop.mac);
            macs[6..].copy_from_slice(&src);
            macs
        });
        Endpoint {
            address: b.address,
            port: b.port,
            weight: b.weight,
            service,
            next_hop_mac: hop.map(|h| h.mac),
            egress_port,
            egress_mac,
            egress_macs,
            if_dead,
            port_key: Endpoint::port_key(b.port, if_dead),
            vip_deltas: deltas_both_ways(vip, vip_port, &b.address, b.port),
        }
    }

    /// The service's serial (its previous one, or a new one) and its
    /// compiled flow control, its backends' caps recorded.
    fn flow_control(
        &mut self,
        service: &Service,
        backends: &[BackendEntry],
        previous: Option<&CompiledService>,
    ) -> (u64, Option<Arc<CompiledLimits>>) {
        let capped = self.place_caps(service, backends);
        let limits = CompiledLimits::compile(
            &service.limits,
            capped,
            previous.and_then(|p| p.limits.as_ref()),
        );
        let serial = previous.map_or_else(
            || NEXT_SERVICE_SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            |p| p.serial,
        );
        (serial, limits)
    }

    /// Records the connection marks of the service's capped backends (a
    /// backend's own, else the service's); whether any is capped.
    fn place_caps(&mut self, service: &Service, backends: &[BackendEntry]) -> bool {
        let default = service.limits.max_connections;
        if default.is_none() && service.backends.iter().all(|b| b.max_connections.is_none()) {
            return false;
        }
        let caps: HashMap<([u8; 16], u16), ConnectionCap> = service
            .backends
            .iter()
            .filter_map(|b| {
                let cap = b.max_connections.or(default)?;
                Some(((addr_to_bytes(b.address), b.port), cap))
            })
            .collect();
        for b in backends {
            if let Some(cap) = caps.get(&(b.address, b.port)) {
                place(&mut self.next.endpoint_caps, b.id, *cap);
            }
        }
        !caps.is_empty()
    }

    /// The service's backends that some distribution path names, by ref.
    fn path_backends(
        &self,
        service: &Service,
        backends: &[BackendEntry],
    ) -> crate::route::BackendIndex {
        let names = self
            .next
            .backend_names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if names.is_empty() {
            return crate::route::BackendIndex::default();
        }
        let ids: HashMap<([u8; 16], u16), EndpointId> = backends
            .iter()
            .map(|b| ((b.address, b.port), b.id))
            .collect();
        let pairs = service.backends.iter().filter_map(|backend| {
            let backend_ref = names.get(&backend.stable_name())?;
            let id = ids.get(&(addr_to_bytes(backend.address), backend.port))?;
            Some((backend_ref, *id))
        });
        // A validated config names each backend once.
        crate::route::BackendIndex::build(pairs).unwrap_or_default()
    }

    /// The service's routing by client, compiled over its endpoints, if it
    /// routes by client.
    fn routes(
        &self,
        service: &Service,
        backends: &[BackendEntry],
        mode: Mode,
        table_size: u32,
        previous: Option<&CompiledService>,
    ) -> Option<Arc<ServiceRoutes>> {
        let spec =
            crate::rules::routing::service_subsets(service, &self.profiles, self.zone_priority)?;
        let now_ns = self.liveness.now_ns;
        // As in the service's own tables: every weighted backend.
        let (_, reported) = table_mode(service, &AliveCount::default());
        let by_identity: HashMap<([u8; 16], u16), &BackendEntry> =
            backends.iter().map(|b| ((b.address, b.port), b)).collect();
        let members: Vec<Option<Member>> = service
            .backends
            .iter()
            .map(|backend| {
                let b = by_identity.get(&(addr_to_bytes(backend.address), backend.port))?;
                Some(Member {
                    address: b.address,
                    port: b.port,
                    weight: b.weight,
                    id: b.id,
                    scheduled: match mode {
                        Mode::Healthy => reported || b.word.is_alive(now_ns),
                        Mode::Panic | Mode::AllDownOpen => true,
                        Mode::AllDownClosed => false,
                    },
                })
            })
            .collect();
        let previous = previous.and_then(|p| p.routes.as_deref());
        Some(Arc::new(compile_routes(
            &spec,
            &members,
            service.scheduler,
            table_size,
            service.routing.canary.as_ref(),
            service.zone_priority(self.zone_priority),
            previous,
        )))
    }

    /// The service's backends in identity order (duplicates dropped), each
    /// with the endpoint id it had in `previous` or a new one, and its
    /// liveness word. A new id's word is reset to what the backend starts
    /// with, so that it does not inherit its previous holder's.
    fn assign_endpoint_ids(
        &mut self,
        service: &Service,
        previous: Option<&CompiledService>,
    ) -> Vec<BackendEntry> {
        let mut known: Vec<([u8; 16], u16, EndpointId)> = previous
            .map(|p| {
                p.endpoints
                    .iter()
                    .filter_map(|&id| {
                        let e = self.prev.endpoint(id)?;
                        Some((e.address, e.port, id))
                    })
                    .collect()
            })
            .unwrap_or_default();
        known.sort_unstable();

        let mut configured: Vec<([u8; 16], u16, &Backend)> = service
            .backends
            .iter()
            .map(|b| (addr_to_bytes(b.address), b.port, b))
            .collect();
        configured.sort_by_key(|&(address, port, _)| (address, port));
        configured.dedup_by_key(|&mut (address, port, _)| (address, port));

        let table = self.liveness.table;
        let mut backends = Vec::with_capacity(configured.len());
        for (address, port, backend) in configured {
            let kept = known
                .binary_search_by_key(&(address, port), |&(a, p, _)| (a, p))
                .ok()
                .and_then(|i| known.get(i))
                .map(|&(_, _, id)| id);
            let word = match kept {
                Some(id) => table.word(id),
                None => (self.liveness.initial)(service, backend),
            };
            let Some(id) = kept.or_else(|| self.endpoint_ids.allocate()) else {
                continue;
            };
            if kept.is_none() {
                // Beyond the table's ids the endpoint simply reads as up.
                let _ = table.reset(id, word);
            }
            backends.push(BackendEntry {
                address,
                port,
                weight: backend.weight,
                id,
                word,
            });
        }
        backends
    }
}

/// The mode `service`'s tables are built in, given `alive`, and whether
/// its liveness is reported in etcd. Such liveness is not built into
/// tables: they hold every weighted backend, and a dead pick moves to the
/// next alive in the table, so that two gateways with the same rules and
/// the same reports pick alike whenever each built its tables.
fn table_mode(service: &Service, alive: &AliveCount) -> (Mode, bool) {
    if service.health.source == crate::rules::HealthSource::Etcd {
        (Mode::Healthy, true)
    } else {
        (Mode::of(alive, &service.failover), false)
    }
}

/// The job of building `service`'s tables over its `scheduled` backends.
fn table_job(service: ServiceId, scheduled: &[&BackendEntry], table_size: u32) -> TableJob {
    TableJob {
        service,
        backends: scheduled
            .iter()
            .map(|b| MaglevBackend {
                address: b.address,
                port: b.port,
                weight: b.weight,
                id: b.id,
            })
            .collect(),
        table_size,
    }
}

/// Stores `value` at index `id`, growing the vector with free slots.
fn place<T>(slots: &mut Vec<Option<T>>, id: u32, value: T) {
    let index = id as usize;
    if slots.len() <= index {
        slots.resize_with(index + 1, || None);
    }
    if let Some(slot) = slots.get_mut(index) {
        *slot = Some(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::flow_hash;
    use crate::rules::{Interface, Neighbour, OnBackendDown, Protocol, WhenAllDown};
    use crate::wire::FiveTuple;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn backend(address: &str, port: u16, weight: u32) -> Backend {
        Backend {
            max_connections: None,
            address: ip(address),
            port,
            weight,
            zone: None,
            set: None,
            group: None,
            health: Default::default(),
            name: None,
        }
    }

    fn service(name: &str, vip: &str, port: u16, backends: Vec<Backend>) -> Service {
        Service {
            limits: Default::default(),

            announce: Default::default(),
            name: name.into(),
            protocol: Protocol::Tcp,
            vip: ip(vip),
            port,
            scheduler: Scheduler::Maglev,
            maglev_table_size: 251,
            failover: Default::default(),
            health: Default::default(),
            backends,
            routing: Default::default(),
        }
    }

    fn config(services: Vec<Service>) -> Config {
        Config {
            ingress: Default::default(),
            gateway: Default::default(),
            daemon: Default::default(),
            flows: Default::default(),
            health: Default::default(),
            interfaces: vec![
                Interface {
                    name: "eth0".into(),
                    mac: Some([2, 0, 0, 0, 0, 1]),
                    vlan: Default::default(),
                },
                Interface {
                    name: "eth1".into(),
                    mac: Some([2, 0, 0, 0, 0, 2]),
                    vlan: Default::default(),
                },
            ],
            neighbours: vec![Neighbour {
                address: ip("198.18.0.11"),
                mac: [2, 0, 0, 0, 1, 11],
                interface: 1,
            }],
            services: services.into(),
            routing: Default::default(),
        }
    }

    fn web() -> Service {
        service(
            "web",
            "198.19.0.1",
            80,
            vec![
                backend("198.18.0.10", 8080, 1),
                backend("198.18.0.11", 8080, 2),
                backend("198.18.0.12", 8080, 0),
            ],
        )
    }

    fn dns() -> Service {
        let mut dns = service(
            "dns",
            "2001:2::53",
            53,
            vec![backend("2001:2::1:1", 53, 1), backend("2001:2::1:2", 53, 1)],
        );
        dns.protocol = Protocol::Udp;
        dns.scheduler = Scheduler::Wrr;
        dns
    }

    fn vip(s: &str) -> [u8; 16] {
        addr_to_bytes(ip(s))
    }

    /// The endpoint id of backend `address:port` of the service at `key`.
    fn endpoint_id(snapshot: &Snapshot, svc: (u8, &str, u16), address: &str, port: u16) -> u32 {
        let (_, s) = snapshot.lookup_service(svc.0, &vip(svc.1), svc.2).unwrap();
        *s.endpoints()
            .iter()
            .find(|&&id| {
                let e = snapshot.endpoint(id).unwrap();
                e.address == vip(address) && e.port == port
            })
            .unwrap()
    }

    const WEB: (u8, &str, u16) = (6, "198.19.0.1", 80);

    /// Every endpoint carries the checksum changes of a flow to its
    /// service's VIP and port, the ones a connection would work out.
    #[test]
    fn endpoints_carry_their_services_checksum_changes() {
        let s = Snapshot::build(&config(vec![web(), dns()]), None);
        for (svc, backends) in [
            (
                WEB,
                vec![
                    ("198.18.0.10", 8080),
                    ("198.18.0.11", 8080),
                    ("198.18.0.12", 8080),
                ],
            ),
            (
                (17, "2001:2::53", 53),
                vec![("2001:2::1:1", 53), ("2001:2::1:2", 53)],
            ),
        ] {
            for (address, port) in backends {
                let e = s.endpoint(endpoint_id(&s, svc, address, port)).unwrap();
                let (vip_bytes, vip_port) = (vip(svc.1), svc.2);
                let expected = (
                    EndpointDeltas::v4(&vip_bytes, vip_port, &vip(address), port),
                    EndpointDeltas::v4(&vip(address), port, &vip_bytes, vip_port),
                );
                assert_eq!(e.vip_deltas(), expected);
            }
        }
    }

    #[test]
    fn empty_snapshot_has_nothing() {
        let s = Snapshot::empty();
        assert_eq!(s.generation(), 0);
        assert_eq!(s.service_count(), 0);
        assert_eq!(s.endpoint_count(), 0);
        assert!(s.lookup_service(6, &vip("198.19.0.1"), 80).is_none());
        assert!(s.endpoint(0).is_none());
        assert!(s.service(0).is_none());
        assert!(s.interface_mac(0).is_none());
        assert_eq!(s.services().count(), 0);
    }

    #[test]
    fn services_are_found_by_exact_protocol_vip_and_port() {
        let s = Snapshot::build(&config(vec![web(), dns()]), None);
        assert_eq!(s.generation(), 1);
        assert_eq!(s.service_count(), 2);
        assert_eq!(s.endpoint_count(), 5);

        let (id, web) = s.lookup_service(6, &vip("198.19.0.1"), 80).unwrap();
        assert_eq!(web.name(), "web");
        assert_eq!(web.protocol(), 6);
        assert_eq!(web.port(), 80);
        assert_eq!(web.vip(), &vip("198.19.0.1"));
        assert_eq!(web.scheduler(), Scheduler::Maglev);
        assert_eq!(s.service(id).unwrap().name(), "web");
        let (_, dns) = s.lookup_service(17, &vip("2001:2::53"), 53).unwrap();
        assert_eq!(dns.name(), "dns");
        assert_eq!(dns.scheduler(), Scheduler::Wrr);

        assert!(s.lookup_service(17, &vip("198.19.0.1"), 80).is_none());
        assert!(s.lookup_service(6, &vip("198.19.0.1"), 81).is_none());
        assert!(s.lookup_service(6, &vip("198.19.0.2"), 80).is_none());
        assert!(s.is_vip(&vip("198.19.0.1")));
        assert!(s.is_vip(&vip("2001:2::53")));
        assert!(!s.is_vip(&vip("198.18.0.10")));
        let names: Vec<&str> = s.services().map(|(_, svc)| svc.name()).collect();
        assert_eq!(names.len(), 2);
        assert!(names.contains(&"web") && names.contains(&"dns"));
    }

    #[test]
    fn endpoints_carry_their_backend_service_and_next_hop() {
        let s = Snapshot::build(&config(vec![web()]), None);
        let (service_id, web) = s.lookup_service(6, &vip("198.19.0.1"), 80).unwrap();
        assert_eq!(web.endpoints().len(), 3);
        for &id in web.endpoints() {
            assert_eq!(s.endpoint(id).unwrap().service, service_id);
        }
        let with_neighbour = s
            .endpoint(endpoint_id(&s, WEB, "198.18.0.11", 8080))
            .unwrap();
        assert_eq!(with_neighbour.weight, 2);
        assert_eq!(with_neighbour.next_hop_mac, Some([2, 0, 0, 0, 1, 11]));
        assert_eq!(with_neighbour.egress_port, 1);
        let without = s
            .endpoint(endpoint_id(&s, WEB, "198.18.0.10", 8080))
            .unwrap();
        assert_eq!(without.next_hop_mac, None);
        assert_eq!(without.egress_port, 0);
        assert_eq!(s.interface_mac(1), Some([2, 0, 0, 0, 0, 2]));
        // Each endpoint's frames leave with its egress interface's MAC.
        assert_eq!(with_neighbour.egress_mac, s.interface_mac(1));
        assert_eq!(without.egress_mac, s.interface_mac(0));
        assert_ne!(s.interface_mac(0), s.interface_mac(1));
        // The frame's first 12 bytes: the next hop's MAC, then the
        // interface's; none without a neighbour.
        let mut macs = [0; 12];
        macs[..6].copy_from_slice(&[2, 0, 0, 0, 1, 11]);
        macs[6..].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        assert_eq!(with_neighbour.egress_macs, Some(macs));
        assert_eq!(without.egress_macs, None);
        assert_eq!(s.interface_mac(2), None);
    }

    #[test]
    fn schedulers_only_pick_weighted_backends_of_the_service() {
        let s = Snapshot::build(&config(vec![web(), dns()]), None);
        let (id, web) = s.lookup_service(6, &vip("198.19.0.1"), 80).unwrap();
        let drained = endpoint_id(&s, WEB, "198.18.0.12", 8080);
        assert_eq!(web.maglev_table().size(), 251);
        assert!(web.maglev_table().slots().iter().all(|&e| e != drained));
        assert!(web
            .maglev_table()
            .slots()
            .iter()
            .all(|&e| s.endpoint(e).unwrap().service == id));
        // Weights 1 and 2: a schedule of 3 with the heavy one twice.
        let heavy = endpoint_id(&s, WEB, "198.18.0.11", 8080);
        assert_eq!(web.wrr_schedule().len(), 3);
        assert_eq!(
            web.wrr_schedule().iter().filter(|&&e| e == heavy).count(),
            2
        );
        let tuple = FiveTuple::v4([198, 18, 5, 5], [198, 19, 0, 1], 40000, 80, 6);
        let chosen = web.maglev_lookup(flow_hash(&tuple)).unwrap();
        assert_ne!(chosen, drained);
    }

    #[test]
    fn a_service_without_weight_has_empty_tables() {
        let mut all_drained = web();
        for b in &mut all_drained.backends {
            b.weight = 0;
        }
        let s = Snapshot::build(&config(vec![all_drained]), None);
        let (_, web) = s.lookup_service(6, &vip("198.19.0.1"), 80).unwrap();
        assert_eq!(web.maglev_lookup(7), None);
        assert!(web.wrr_schedule().is_empty());
        assert_eq!(web.endpoints().len(), 3);
    }

    #[test]
    fn generations_count_builds() {
        let c = config(vec![web()]);
        let one = Snapshot::build(&c, None);
        let two = Snapshot::build(&c, Some(&one));
        let three = Snapshot::build(&c, Some(&two));
        assert_eq!(
            [one.generation(), two.generation(), three.generation()],
            [1, 2, 3]
        );
        assert_eq!(
            Snapshot::build(&c, Some(&Snapshot::empty())).generation(),
            1
        );
    }

    #[test]
    fn endpoint_ids_survive_rebuilds_and_removed_ids_are_not_reused_at_once() {
        let first = Snapshot::build(&config(vec![web(), dns()]), None);
        let kept = endpoint_id(&first, WEB, "198.18.0.11", 8080);
        let removed = endpoint_id(&first, WEB, "198.18.0.10", 8080);
        let dns_id = first.lookup_service(17, &vip("2001:2::53"), 53).unwrap().0;

        // Remove .10, add .13 and a new service listed first.
        let mut web2 = web();
        web2.backends.remove(0);
        web2.backends.push(backend("198.18.0.13", 8080, 1));
        let api = service(
            "api",
            "198.19.0.2",
            443,
            vec![backend("198.18.0.20", 443, 1)],
        );
        let second = Snapshot::build(
            &config(vec![api.clone(), dns(), web2.clone()]),
            Some(&first),
        );

        assert_eq!(endpoint_id(&second, WEB, "198.18.0.11", 8080), kept);
        assert_eq!(
            second.lookup_service(17, &vip("2001:2::53"), 53).unwrap().0,
            dns_id,
            "service ids are stable too"
        );
        assert!(
            second.endpoint(removed).is_none(),
            "a removed backend's id is free"
        );
        let added = endpoint_id(&second, WEB, "198.18.0.13", 8080);
        assert_ne!(added, removed, "not reused in the build that freed it");
        assert_eq!(second.endpoint_count(), 6);

        // The next build may reuse it, for a backend of any service.
        let mut api3 = api;
        api3.backends.push(backend("198.18.0.21", 443, 1));
        let third = Snapshot::build(&config(vec![api3, dns(), web2]), Some(&second));
        assert_eq!(
            endpoint_id(&third, (6, "198.19.0.2", 443), "198.18.0.21", 443),
            removed
        );
        assert_eq!(endpoint_id(&third, WEB, "198.18.0.13", 8080), added);
    }

    #[test]
    fn a_moved_service_gets_new_endpoint_ids() {
        // Same backend, different service identity: a flow holding the old
        // id must see it gone.
        let first = Snapshot::build(&config(vec![web()]), None);
        let old = endpoint_id(&first, WEB, "198.18.0.10", 8080);
        let mut moved = web();
        moved.port = 8080;
        let second = Snapshot::build(&config(vec![moved]), Some(&first));
        assert!(second.endpoint(old).is_none());
        assert!(second.lookup_service(6, &vip("198.19.0.1"), 80).is_none());
    }

    #[test]
    fn unchanged_services_share_their_tables() {
        let first = Snapshot::build(&config(vec![web(), dns()]), None);
        // web: renamed, rescheduled and given a drained backend — its weighted
        // backends are unchanged. dns: a weight changes.
        let mut web2 = web();
        web2.name = "www".into();
        web2.scheduler = Scheduler::Sh;
        web2.backends.push(backend("198.18.0.14", 8080, 0));
        let mut dns2 = dns();
        dns2.backends[1].weight = 3;
        let second = Snapshot::build(&config(vec![dns2, web2]), Some(&first));

        let (_, web_before) = first.lookup_service(6, &vip("198.19.0.1"), 80).unwrap();
        let (_, web_after) = second.lookup_service(6, &vip("198.19.0.1"), 80).unwrap();
        assert!(web_after
            .maglev_table()
            .shares_slots_with(web_before.maglev_table()));
        assert!(Arc::ptr_eq(&web_after.wrr, &web_before.wrr));
        assert_eq!(web_after.name(), "www");
        assert_eq!(web_after.scheduler(), Scheduler::Sh);
        assert_eq!(web_after.endpoints().len(), 4);

        let (_, dns_before) = first.lookup_service(17, &vip("2001:2::53"), 53).unwrap();
        let (_, dns_after) = second.lookup_service(17, &vip("2001:2::53"), 53).unwrap();
        assert!(!dns_after
            .maglev_table()
            .shares_slots_with(dns_before.maglev_table()));
        assert!(!Arc::ptr_eq(&dns_after.wrr, &dns_before.wrr));
        assert_eq!(dns_after.wrr_schedule().len(), 4);

        // A new table size rebuilds too.
        let mut web3 = web();
        web3.maglev_table_size = 257;
        let third = Snapshot::build(&config(vec![web3]), Some(&second));
        let (_, web3) = third.lookup_service(6, &vip("198.19.0.1"), 80).unwrap();
        assert!(!web3
            .maglev_table()
            .shares_slots_with(web_after.maglev_table()));
        assert_eq!(web3.maglev_table().size(), 257);
    }

    #[test]
    fn endpoint_id_limit_covers_every_endpoint_as_services_come_and_go() {
        let first = Snapshot::build(&config(vec![web(), dns()]), None);
        let second = Snapshot::build(&config(vec![dns()]), Some(&first));
        let mut web2 = web();
        web2.backends.push(backend("198.18.0.14", 8080, 1));
        let third = Snapshot::build(&config(vec![dns(), web2]), Some(&second));
        for snap in [&first, &second, &third] {
            let max = snap
                .services()
                .flat_map(|(_, s)| s.endpoints().iter().copied())
                .max()
                .unwrap();
            assert!(snap.endpoint_id_limit() > max as usize);
            assert!(snap.endpoint_id_limit() >= snap.endpoint_count());
        }
    }

    #[test]
    fn independent_builds_agree_whatever_the_config_order() {
        let many = |reverse: bool| {
            let mut backends: Vec<Backend> = (1..=40)
                .map(|i| backend(&format!("198.18.1.{i}"), 8000 + i as u16, 1 + i % 3))
                .collect();
            let mut services = vec![
                service("a", "198.19.0.1", 80, backends.clone()),
                service("b", "198.19.0.2", 80, backends.split_off(20)),
                dns(),
            ];
            if reverse {
                services.reverse();
                for s in &mut services {
                    s.backends.reverse();
                }
            }
            for s in &mut services {
                s.maglev_table_size = DEFAULT_MAGLEV_TABLE_SIZE;
            }
            config(services)
        };
        let a = Snapshot::build(&many(false), None);
        let b = Snapshot::build(&many(true), None);
        assert_eq!(a.service_count(), 3);
        for ((ia, sa), (ib, sb)) in a.services().zip(b.services()) {
            assert_eq!((ia, sa.name()), (ib, sb.name()));
            assert_eq!(sa.endpoints(), sb.endpoints());
            assert_eq!(sa.maglev_table().slots(), sb.maglev_table().slots());
            assert_eq!(sa.wrr_schedule(), sb.wrr_schedule());
        }
        for i in 0..2000u16 {
            let t = FiveTuple::v4([198, 18, 9, (i % 251) as u8], [198, 19, 0, 1], i, 80, 6);
            let (_, sa) = a.lookup_service(6, &t.dst, 80).unwrap();
            let (_, sb) = b.lookup_service(6, &t.dst, 80).unwrap();
            let ea = a
                .endpoint(sa.maglev_lookup(flow_hash(&t)).unwrap())
                .unwrap();
            let eb = b
                .endpoint(sb.maglev_lookup(flow_hash(&t)).unwrap())
                .unwrap();
            assert_eq!((ea.address, ea.port), (eb.address, eb.port));
        }
    }

    #[test]
    fn duplicates_and_dangling_neighbours_do_not_panic() {
        let mut c = config(vec![web(), web(), dns()]);
        c.services[0].backends.push(backend("198.18.0.10", 8080, 5));
        c.neighbours.push(Neighbour {
            address: ip("198.18.0.10"),
            mac: [2, 0, 0, 0, 9, 9],
            interface: 7,
        });
        c.services[2].maglev_table_size = 0;
        c.gateway.maglev_table_size = 0;
        let s = Snapshot::build(&c, None);
        assert_eq!(s.service_count(), 2);
        let (_, web) = s.lookup_service(6, &vip("198.19.0.1"), 80).unwrap();
        assert_eq!(web.endpoints().len(), 3, "duplicate backend dropped");
        let first = s
            .endpoint(endpoint_id(&s, WEB, "198.18.0.10", 8080))
            .unwrap();
        assert_eq!(first.weight, 1, "the first listed wins");
        assert_eq!(first.next_hop_mac, None, "neighbour on a missing interface");
        let (_, dns) = s.lookup_service(17, &vip("2001:2::53"), 53).unwrap();
        assert_eq!(dns.maglev_table_size(), DEFAULT_MAGLEV_TABLE_SIZE);
    }

    /// `config` built again with `liveness` judged at `now_ns`.
    fn rebuild(config: &Config, previous: &Snapshot, now_ns: u64) -> Snapshot {
        let input = LivenessInput {
            table: previous.liveness(),
            now_ns,
            initial: &start_up,
        };
        Snapshot::build_with(config, Some(previous), input)
    }

    #[test]
    fn a_down_endpoint_leaves_the_tables_and_comes_back_with_the_same_ids() {
        let c = config(vec![web(), dns()]);
        let first = Snapshot::build(&c, None);
        let dead = endpoint_id(&first, WEB, "198.18.0.11", 8080);
        let alive = endpoint_id(&first, WEB, "198.18.0.10", 8080);
        first.liveness().set_up(dead, false).unwrap();

        let second = rebuild(&c, &first, 0);
        assert!(
            Arc::ptr_eq(first.liveness(), second.liveness()),
            "one table"
        );
        let (_, web2) = second.lookup_service(6, &vip("198.19.0.1"), 80).unwrap();
        assert_eq!(web2.mode(), Mode::Healthy);
        assert_eq!(web2.scheduled(), &[(alive, 1)]);
        assert!(web2.maglev_table().slots().iter().all(|&e| e == alive));
        assert_eq!(web2.wrr_schedule(), &[alive]);
        // Ids and the endpoint table are unchanged; the drained backend
        // stays out; the dead one is still an endpoint (its connections
        // keep it).
        assert_eq!(endpoint_id(&second, WEB, "198.18.0.11", 8080), dead);
        assert_eq!(second.endpoint(dead), first.endpoint(dead));
        assert_eq!(web2.weighted().len(), 2);
        assert_eq!(
            *web2.alive(),
            AliveCount {
                weighted: 2,
                alive: 1,
                total_weight: 3,
                alive_weight: 1
            }
        );
        // The other service's tables are shared, not rebuilt.
        let (_, dns1) = first.lookup_service(17, &vip("2001:2::53"), 53).unwrap();
        let (_, dns2) = second.lookup_service(17, &vip("2001:2::53"), 53).unwrap();
        assert!(dns2.maglev_table().shares_slots_with(dns1.maglev_table()));

        // Readmitted: the tables are those of the start again.
        first.liveness().set_up(dead, true).unwrap();
        let third = rebuild(&c, &second, 0);
        let (_, web1) = first.lookup_service(6, &vip("198.19.0.1"), 80).unwrap();
        let (_, web3) = third.lookup_service(6, &vip("198.19.0.1"), 80).unwrap();
        assert_eq!(web3.maglev_table().slots(), web1.maglev_table().slots());
        assert_eq!(web3.wrr_schedule(), web1.wrr_schedule());
    }

    #[test]
    fn an_expired_endpoint_leaves_the_tables_at_a_build_after_its_deadline() {
        let c = config(vec![web()]);
        let first = Snapshot::build(&c, None);
        let ttl = endpoint_id(&first, WEB, "198.18.0.10", 8080);
        first.liveness().set_deadline(ttl, Some(1_000)).unwrap();
        let before = rebuild(&c, &first, 999);
        let (_, web) = before.lookup_service(6, &vip("198.19.0.1"), 80).unwrap();
        assert_eq!(web.scheduled().len(), 2);
        let after = rebuild(&c, &before, 1_000);
        let (_, web) = after.lookup_service(6, &vip("198.19.0.1"), 80).unwrap();
        assert!(web.scheduled().iter().all(|&(id, _)| id != ttl));
    }

    #[test]
    fn maglev_moves_about_one_in_n_flows_when_one_of_n_goes_down() {
        const N: usize = 10;
        let backends = (1..=N as u32)
            .map(|i| backend(&format!("198.18.1.{i}"), 8080, 1))
            .collect();
        let mut svc = service("big", "198.19.0.9", 80, backends);
        svc.maglev_table_size = DEFAULT_MAGLEV_TABLE_SIZE;
        let c = config(vec![svc]);
        let all = Snapshot::build(&c, None);
        let (_, before) = all.lookup_service(6, &vip("198.19.0.9"), 80).unwrap();
        let dead = before.endpoints()[3];
        all.liveness().set_up(dead, false).unwrap();
        let fewer = rebuild(&c, &all, 0);
        let (_, after) = fewer.lookup_service(6, &vip("198.19.0.9"), 80).unwrap();

        let flows = 200_000u64;
        let (mut moved, mut moved_live, mut on_dead) = (0u64, 0u64, 0u64);
        for i in 0..flows {
            let h = flow_hash(&FiveTuple::v4(
                [198, 18, (i >> 16) as u8, (i >> 8) as u8],
                [198, 19, 0, 9],
                (i & 0xff) as u16 + 1024,
                80,
                6,
            ));
            let (b, a) = (
                before.maglev_lookup(h).unwrap(),
                after.maglev_lookup(h).unwrap(),
            );
            assert_ne!(a, dead);
            on_dead += u64::from(b == dead);
            if a != b {
                moved += 1;
                moved_live += u64::from(b != dead);
            }
        }
        let share = moved as f64 / flows as f64;
        let live_share = moved_live as f64 / flows as f64;
        // Every flow of the dead backend moves (about 1/N); of the live
        // backends' flows Maglev moves only a few (measured: 10.2 % of all
        // flows moved, 0.24 % of them from live backends, with 10 backends
        // and 65 537 slots).
        assert_eq!(moved - moved_live, on_dead);
        assert!((share - 1.0 / N as f64).abs() < 0.02, "moved {share}");
        assert!(
            live_share < 0.01,
            "live backends' flows moved: {live_share}"
        );
    }

    #[test]
    fn too_few_alive_puts_a_service_in_panic_mode_and_none_fails_open_or_closed() {
        let backends: Vec<Backend> = (1..=4)
            .map(|i| backend(&format!("198.18.1.{i}"), 8080, 1))
            .collect();
        let mut svc = service("p", "198.19.0.9", 80, backends);
        svc.failover.panic_threshold = 50;
        let mut closed = svc.clone();
        closed.name = "q".into();
        closed.port = 81;
        closed.failover.when_all_down = WhenAllDown::Closed;
        closed.failover.panic_threshold = 0;
        let c = config(vec![svc, closed]);
        let first = Snapshot::build(&c, None);
        let ids = |s: &Snapshot, port| {
            s.lookup_service(6, &vip("198.19.0.9"), port)
                .unwrap()
                .1
                .endpoints()
                .to_vec()
        };
        let (p_ids, q_ids) = (ids(&first, 80), ids(&first, 81));
        let mode = |s: &Snapshot, port| {
            let (_, svc) = s.lookup_service(6, &vip("198.19.0.9"), port).unwrap();
            (svc.mode(), svc.scheduled().len(), svc.maglev_table().size())
        };
        // Two of four down: 50 % alive is not below 50.
        for &id in p_ids.iter().chain(&q_ids).take(2) {
            first.liveness().set_up(id, false).unwrap();
        }
        first.liveness().set_up(q_ids[0], false).unwrap();
        first.liveness().set_up(q_ids[1], false).unwrap();
        let s = rebuild(&c, &first, 0);
        assert_eq!(mode(&s, 80), (Mode::Healthy, 2, 251));
        // Three down: 25 % < 50 %: panic, tables over all four.
        first.liveness().set_up(p_ids[2], false).unwrap();
        let s = rebuild(&c, &s, 0);
        assert_eq!(mode(&s, 80), (Mode::Panic, 4, 251));
        // All down: open, tables over all four.
        first.liveness().set_up(p_ids[3], false).unwrap();
        let s = rebuild(&c, &s, 0);
        assert_eq!(mode(&s, 80), (Mode::AllDownOpen, 4, 251));
        // Without panic mode, one of four alive is still healthy; none is
        // closed, with empty tables.
        first.liveness().set_up(q_ids[2], false).unwrap();
        let s = rebuild(&c, &s, 0);
        assert_eq!(mode(&s, 81), (Mode::Healthy, 1, 251));
        first.liveness().set_up(q_ids[3], false).unwrap();
        let s = rebuild(&c, &s, 0);
        assert_eq!(mode(&s, 81), (Mode::AllDownClosed, 0, 0));
        let (_, q) = s.lookup_service(6, &vip("198.19.0.9"), 81).unwrap();
        assert_eq!(q.maglev_lookup(1), None);
    }

    #[test]
    fn new_endpoints_start_as_told_and_reused_ids_start_afresh() {
        let c = config(vec![web()]);
        let first = Snapshot::build(&c, None);
        let old = endpoint_id(&first, WEB, "198.18.0.10", 8080);
        first.liveness().set_up(old, false).unwrap();
        // Remove .10; next build, add .13, which may take its id.
        let mut fewer = web();
        fewer.backends.remove(0);
        let second = Snapshot::build(&config(vec![fewer.clone()]), Some(&first));
        let mut more = fewer;
        more.backends.push(backend("198.18.0.13", 8080, 1));
        let down_if_13 = |_: &Service, b: &Backend| {
            if b.address == ip("198.18.0.13") {
                Word::up_until(5_000)
            } else {
                Word::UP
            }
        };
        let input = LivenessInput {
            table: second.liveness(),
            now_ns: 0,
            initial: &down_if_13,
        };
        let third = Snapshot::build_with(&config(vec![more]), Some(&second), input);
        let new = endpoint_id(&third, WEB, "198.18.0.13", 8080);
        assert_eq!(new, old, "the freed id is reused");
        assert_eq!(third.liveness().word(new), Word::up_until(5_000));
        assert!(
            third.liveness().is_alive(new, 0),
            "not the old holder's down"
        );
    }

    #[test]
    fn the_established_path_watches_only_what_its_policy_acts_on() {
        let mut reset = web();
        reset.failover.on_backend_down = Some(OnBackendDown::Reset);
        let c = config(vec![reset, dns()]);
        let first = Snapshot::build(&c, None);
        let down = endpoint_id(&first, WEB, "198.18.0.10", 8080);
        let ttl = endpoint_id(&first, WEB, "198.18.0.11", 8080);
        let udp = endpoint_id(&first, (17, "2001:2::53", 53), "2001:2::1:1", 53);
        for id in [down, udp] {
            first.liveness().set_up(id, false).unwrap();
        }
        first
            .liveness()
            .set_deadline(ttl, Some(u64::MAX >> 2))
            .unwrap();
        let s = rebuild(&c, &first, 0);
        let watch = |id| s.endpoint(id).unwrap().if_dead;
        assert_eq!(watch(down), Some(IfDead::Reset));
        assert_eq!(
            watch(ttl),
            Some(IfDead::Reset),
            "a TTL can run out any time"
        );
        assert_eq!(watch(endpoint_id(&s, WEB, "198.18.0.12", 8080)), None);
        assert_eq!(watch(udp), Some(IfDead::Reschedule));
        assert_eq!(
            watch(endpoint_id(&s, (17, "2001:2::53", 53), "2001:2::1:2", 53)),
            None
        );
        // The default policy never watches.
        let keep = Snapshot::build(&config(vec![web()]), Some(&s));
        assert_eq!(keep.endpoint(down).unwrap().if_dead, None);
    }

    mod chains {
        use super::*;
        use proptest::prelude::*;

        /// Small random configs over a few VIPs and backends, so that
        /// rebuilds keep, drop and add services and backends.
        fn arb_config() -> impl Strategy<Value = Config> {
            let arb_backend = (0u8..6, 1u16..3, 0u32..4).prop_map(|(host, port, weight)| {
                backend(&format!("198.18.0.{host}"), port, weight)
            });
            let arb_service = (
                0u8..3,
                1u16..3,
                prop::collection::vec(arb_backend, 0..6),
                any::<bool>(),
            )
                .prop_map(|(host, port, backends, udp)| {
                    let mut s = service("s", &format!("198.19.0.{host}"), port, backends);
                    s.maglev_table_size = 13;
                    if udp {
                        s.protocol = Protocol::Udp;
                    }
                    s
                });
            prop::collection::vec(arb_service, 0..5).prop_map(config)
        }

        proptest! {
            #[test]
            fn builds_stay_consistent_and_keep_ids(configs in prop::collection::vec(arb_config(), 1..5)) {
                let mut prev: Option<Snapshot> = None;
                for c in &configs {
                    let next = Snapshot::build(c, prev.as_ref());
                    let mut seen = HashSet::new();
                    let mut endpoints = 0;
                    for (id, s) in next.services() {
                        let found = next.lookup_service(s.protocol(), s.vip(), s.port());
                        prop_assert_eq!(found.map(|(i, _)| i), Some(id));
                        for &e in s.endpoints() {
                            prop_assert!(seen.insert(e), "endpoint id shared");
                            prop_assert_eq!(next.endpoint(e).map(|x| x.service), Some(id));
                            endpoints += 1;
                        }
                        let weighted = s.endpoints().iter().any(|&e| next.endpoint(e).unwrap().weight > 0);
                        prop_assert_eq!(s.maglev_lookup(12345).is_some(), weighted);
                        prop_assert_eq!(!s.wrr_schedule().is_empty(), weighted);
                        for &e in s.maglev_table().slots().iter().chain(s.wrr_schedule()) {
                            prop_assert!(s.endpoints().contains(&e));
                            prop_assert!(next.endpoint(e).unwrap().weight > 0);
                        }
                        // Ids carried over from the previous build.
                        if let Some(p) = &prev {
                            if let Some((pid, ps)) = p.lookup_service(s.protocol(), s.vip(), s.port()) {
                                prop_assert_eq!(pid, id);
                                for &e in ps.endpoints() {
                                    let old = p.endpoint(e).unwrap();
                                    let still = s.endpoints().iter().any(|&n| {
                                        let x = next.endpoint(n).unwrap();
                                        (x.address, x.port) == (old.address, old.port)
                                    });
                                    if still {
                                        prop_assert!(s.endpoints().contains(&e));
                                    } else {
                                        // Freed in this build: not reused in it.
                                        prop_assert!(next.endpoint(e).is_none());
                                    }
                                }
                            }
                        }
                    }
                    prop_assert_eq!(endpoints, next.endpoint_count());
                    prev = Some(next);
                }
            }
        }
    }
}

/// [`Snapshot::build_changed`] against [`Snapshot::build_with`]: from the
/// same previous snapshot, both give the same rules.
#[cfg(test)]
mod changed_tests {
    use super::*;
    use crate::admission::ConnectionCap;
    use crate::rules::{Interface, Neighbour, Protocol};
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn service(name: &str, vip: u8, port: u16, backends: &[(u8, u32)]) -> Service {
        Service {
            limits: Default::default(),
            announce: Default::default(),
            name: name.into(),
            protocol: Protocol::Tcp,
            vip: ip(&format!("198.18.1.{vip}")),
            port,
            scheduler: Scheduler::Maglev,
            maglev_table_size: 251,
            failover: Default::default(),
            health: Default::default(),
            backends: backends
                .iter()
                .map(|&(host, weight)| Backend {
                    weight,
                    ..Backend::new(ip(&format!("198.18.0.{host}")), 8080)
                })
                .collect(),
            routing: Default::default(),
        }
    }

    fn config(services: Vec<Service>) -> Config {
        Config {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: Some([2, 0, 0, 0, 0, 1]),
                vlan: Default::default(),
            }],
            neighbours: vec![Neighbour {
                address: ip("198.18.0.11"),
                mac: [2, 0, 0, 0, 1, 11],
                interface: 0,
            }],
            services: services.into(),
            ..Config::default()
        }
    }

    /// Builds `next` from `previous` both ways, checks they agree, and
    /// returns the one built from the change.
    fn both(previous: &Snapshot, next: &Config, changed: &[&str]) -> Snapshot {
        let changed: Vec<String> = changed.iter().map(|&n| n.to_owned()).collect();
        let input = LivenessInput {
            table: previous.liveness(),
            now_ns: previous.liveness().now_ns(),
            initial: &start_up,
        };
        let full = Snapshot::build_with(next, Some(previous), input);
        let patched = Snapshot::build_changed(next, previous, input, &changed);
        assert_eq!(
            patched.rules_text(),
            full.rules_text(),
            "after changing {changed:?}"
        );
        assert_eq!(patched.generation(), previous.generation() + 1);
        // Unchanged services share their Maglev tables with the previous
        // generation.
        for (id, s) in patched.services() {
            if !changed.iter().any(|n| n == s.name()) {
                let before = previous.service(id).unwrap();
                assert!(s.maglev_table().shares_slots_with(before.maglev_table()));
            }
        }
        patched
    }

    #[test]
    fn a_change_builds_what_a_full_build_builds() {
        let mut services: Vec<Service> = (0..40u8)
            .map(|i| {
                service(
                    &format!("s{i:02}"),
                    i / 2,
                    80 + u16::from(i % 2),
                    &[(i, 1), (11, 2), (i + 100, 1)],
                )
            })
            .collect();
        services[5].backends[1].max_connections = Some(ConnectionCap::new(100, None).unwrap());
        let mut cfg = config(services);
        let mut snapshot = Snapshot::build(&cfg, None);

        // A weight.
        cfg.services[3].backends[0].weight = 7;
        snapshot = both(&snapshot, &cfg, &["s03"]);
        // A backend added to one service and taken from another, the
        // capped one replaced.
        cfg.services[4]
            .backends
            .push(Backend::new(ip("198.18.0.200"), 9090));
        cfg.services[6].backends.remove(0);
        cfg.services[5].backends[1].max_connections = None;
        snapshot = both(&snapshot, &cfg, &["s04", "s06", "s05"]);
        // A service removed (its VIP stays: s09 has it too), another
        // removed with the last service of its VIP.
        cfg.services
            .retain(|s| s.name != "s08" && s.name != "s38" && s.name != "s39");
        snapshot = both(&snapshot, &cfg, &["s08", "s38", "s39"]);
        assert!(!snapshot.is_vip(&crate::wire::addr_to_bytes(ip("198.18.1.19"))));
        assert!(snapshot.is_vip(&crate::wire::addr_to_bytes(ip("198.18.1.4"))));
        // New services, one of them on a removed one's key and one at a
        // new VIP; the ids freed one generation ago are taken again.
        cfg.services.push(service("n1", 19, 80, &[(1, 1), (2, 1)]));
        cfg.services.push(service("n2", 60, 80, &[(3, 1)]));
        snapshot = both(&snapshot, &cfg, &["n1", "n2"]);
        // A rename on the same key, a move to another port, and a name
        // that is in neither config.
        cfg.services[0].name = "r0".into();
        cfg.services[1].port = 443;
        snapshot = both(&snapshot, &cfg, &["s00", "r0", "s01", "gone"]);
        // Nothing named: the same rules, one generation on.
        snapshot = both(&snapshot, &cfg, &[]);
        assert_eq!(snapshot.service_count(), cfg.services.len());
    }
}
