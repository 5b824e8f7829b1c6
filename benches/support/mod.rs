//! What the pipeline benches share: a gateway with N services, a connection
//! table filled by real handshakes through the pipeline, and frames stamped
//! into frame memory batch by batch.
//!
//! Both bench binaries use it: `pipeline.rs` (criterion, wall time) and
//! `instructions.rs` (the callgrind driver), so the two measure the same
//! packets against the same state.
//!
//! Addresses are all from 198.18.0.0/15: clients in 198.18.0.0/16, VIPs in
//! 198.19.128.0/18, backends in 198.19.1.0/24.
#![allow(dead_code)] // each bench binary uses its own part

pub mod workers;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use flowgate_dataplane::flow::{FlowTable, FlowTimeouts};
use flowgate_dataplane::hash::table_hash;
use flowgate_dataplane::pipeline::{Pipeline, Verdict};
use flowgate_dataplane::port::{Frame, FrameMemory, MemoryFrames};
use flowgate_dataplane::rules::{
    check, is_prime, Backend, Canary, ClientClass, ClientPrefix, Config, DistributionPath,
    FlowSettings, GatewaySettings, Interface, Neighbour, Protocol, RoutingSettings, Scheduler,
    Service, ServiceRouting, DEFAULT_MAGLEV_TABLE_SIZE,
};
use flowgate_dataplane::table::{MaglevBackend, PathRouting, Snapshot};
use flowgate_dataplane::wire::builder::FrameBuilder;
use flowgate_dataplane::wire::checksum::update_bytes;
use flowgate_dataplane::wire::{self, ip_proto, ipv4, tcp, tcp_flags, v4_mapped, FiveTuple};

/// Frames per `process_batch` call: the worker's (and AF_XDP's) batch.
pub const BATCH: usize = 64;
/// Connections in the table for every flow bench (the 1 000 000).
pub const CONNECTIONS: u64 = 1_000_000;
/// The clock during setup and measurement. It stands still, so nothing
/// expires: every connection the benches rely on stays live.
pub const NOW_NS: u64 = 10_000_000_000;
/// Backends per service in the flow benches.
pub const BACKENDS_PER_SERVICE: usize = 4;
/// Backends of the one service of the Maglev build benches.
pub const MAGLEV_BACKENDS: usize = 100;
/// Per-service Maglev table size above 1 000 services: 100 000 tables of
/// the default 65 537 slots would take 26 GB, more than the machine has.
pub const LARGE_CONFIG_TABLE_SIZE: u32 = 1_031;
/// Frame slot size, as an AF_XDP UMEM chunk.
const FRAME_SIZE: u32 = 2048;
/// Distinct backend addresses (all on the backend interface).
const BACKEND_HOSTS: u32 = 256;

/// The gateway's client-facing interface MAC (port 0).
const GW_CLIENT_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x01];
/// The gateway's backend-facing interface MAC (port 1).
const GW_BACKEND_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0x01, 0x01];
/// The clients' router MAC.
const CLIENT_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x02];
/// Source MAC of backend replies (the value does not matter to the path).
const BACKEND_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0x01, 0, 0x02];

/// The Maglev table size used with `services` services.
pub fn table_size_for(services: usize) -> u32 {
    if services > 1_000 {
        LARGE_CONFIG_TABLE_SIZE
    } else {
        DEFAULT_MAGLEV_TABLE_SIZE
    }
}

/// Backend host `i` (mod 256): 198.19.1.i.
fn backend_host(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, 1, (i % BACKEND_HOSTS) as u8)
}

/// VIP and port of service `k`: 16 ports per VIP.
pub fn service_addr(k: u64) -> SocketAddr {
    let vip = u32::from(Ipv4Addr::new(198, 19, 128, 0)) + (k / 16) as u32;
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(vip)), 1000 + (k % 16) as u16)
}

/// Client `c`'s address and port: unique per client (65 536 addresses
/// times 64 512 ports), so every connection has its own reply tuple.
pub fn client_addr(c: u64) -> SocketAddr {
    let ip = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + (c & 0xffff) as u32;
    let port = 1024 + (c >> 16);
    assert!(
        port <= u64::from(u16::MAX),
        "client counter {c} out of range"
    );
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port as u16)
}

/// The service client `c` connects to: a fixed pseudo-random choice.
pub fn service_of(c: u64, services: usize) -> u64 {
    mix64(c) % services as u64
}

/// SplitMix64's finaliser: a cheap, good bit mixer.
fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A deterministic pseudo-random sequence (SplitMix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A sequence from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A value in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        ((u128::from(mix64(self.0)) * u128::from(n)) >> 64) as u64
    }
}

/// A validated-shape config: two interfaces, 256 backend neighbours, and
/// `services` TCP Maglev services of `BACKENDS_PER_SERVICE` backends.
pub fn gateway_config(services: usize, capacity: usize) -> Config {
    let table_size = table_size_for(services);
    assert!(is_prime(table_size));
    let neighbours = (0..BACKEND_HOSTS)
        .map(|i| Neighbour {
            address: IpAddr::V4(backend_host(i)),
            mac: [0x02, 0x66, 0x67, 0x01, 0x00, i as u8],
            interface: 1,
        })
        .collect();
    let services = (0..services as u64)
        .map(|k| {
            let addr = service_addr(k);
            Service {
                limits: Default::default(),

                announce: Default::default(),
                name: format!("svc{k}"),
                protocol: Protocol::Tcp,
                vip: addr.ip(),
                port: addr.port(),
                scheduler: Scheduler::Maglev,
                maglev_table_size: table_size,
                failover: Default::default(),
                health: Default::default(),
                backends: (0..BACKENDS_PER_SERVICE as u32)
                    .map(|j| {
                        let host = (k as u32).wrapping_mul(BACKENDS_PER_SERVICE as u32) + j;
                        Backend::new(IpAddr::V4(backend_host(host)), 8080)
                    })
                    .collect(),
                routing: Default::default(),
            }
        })
        .collect();
    Config {
        ingress: Default::default(),
        gateway: GatewaySettings {
            maglev_table_size: table_size,
        },
        daemon: Default::default(),
        flows: FlowSettings {
            capacity,
            ..FlowSettings::default()
        },
        health: Default::default(),
        interfaces: vec![
            Interface {
                name: "fg-client".into(),
                mac: Some(GW_CLIENT_MAC),
                vlan: Default::default(),
            },
            Interface {
                name: "fg-backend".into(),
                mac: Some(GW_BACKEND_MAC),
                vlan: Default::default(),
            },
        ],
        neighbours,
        services,
        routing: Default::default(),
    }
}

/// `MAGLEV_BACKENDS` equal-weight backends for the Maglev build benches.
pub fn maglev_backends() -> Vec<MaglevBackend> {
    (0..MAGLEV_BACKENDS as u32)
        .map(|i| MaglevBackend {
            address: v4_mapped(backend_host(i).octets()),
            port: 8080,
            weight: 1,
            id: i,
        })
        .collect()
}

/// A one-service config with `MAGLEV_BACKENDS` backends and a Maglev
/// table of `table_size` slots (for `Snapshot::build`).
pub fn maglev_config(table_size: u32) -> Config {
    let mut config = gateway_config(1, 1024);
    config.gateway.maglev_table_size = table_size;
    if let Some(s) = config.services.first_mut() {
        s.maglev_table_size = table_size;
        s.backends = (0..MAGLEV_BACKENDS as u32)
            .map(|i| Backend::new(IpAddr::V4(backend_host(i)), 8080))
            .collect();
    }
    config
}

/// Client-class prefixes of the routed gateway (the 10 000).
pub const ROUTED_CLASSES: usize = 10_000;
/// Distribution paths of the routed gateway (the 1 000 000).
pub const ROUTED_PATHS: usize = 1_000_000;
/// Of the bench's 65 536 client addresses, every `PATH_EVERY`-th has a
/// path (its new flows go straight to a backend); the others' lookups
/// miss and they walk SET, canary and zone.
pub const PATH_EVERY: u32 = 8;
/// Canary share of the routed service, in basis points (5 %).
pub const ROUTED_CANARY_BP: u32 = 500;

/// The SET and zone of each client profile of the routed gateway, in the
/// order the /28 classes of 198.18.0.0/16 take them: own SET, the area's
/// `*` (no backend of g9), an area-wide client, a client of no SET, and
/// zones whose backends exist, fall back (dc-c has none) or are unknown to
/// the service's backends.
const ROUTED_PROFILES: [(Option<&str>, Option<&str>); 6] = [
    (Some("shop.sh.g1"), Some("dc-a")),
    (Some("shop.sh.g2"), Some("dc-b")),
    (Some("shop.sh.g9"), Some("dc-a")),
    (Some("shop.sh.*"), Some("dc-b")),
    (None, Some("dc-a")),
    (None, Some("dc-c")),
];

/// The routed service's backends: for SETs g1, g2, `shop.sh.*` and none,
/// two in zone dc-a and two in dc-b (16), plus the canary group `v2`: one
/// in g1 (dc-a) and one of no SET (dc-b). Named `r0`… so paths name them.
fn routed_backends(k: u64) -> Vec<Backend> {
    let mut labels: Vec<(Option<&str>, &str, Option<&str>)> = Vec::new();
    for set in [
        Some("shop.sh.g1"),
        Some("shop.sh.g2"),
        Some("shop.sh.*"),
        None,
    ] {
        for zone in ["dc-a", "dc-a", "dc-b", "dc-b"] {
            labels.push((set, zone, None));
        }
    }
    labels.push((Some("shop.sh.g1"), "dc-a", Some("v2")));
    labels.push((None, "dc-b", Some("v2")));
    labels
        .into_iter()
        .enumerate()
        .map(|(j, (set, zone, group))| {
            let host = (k as u32).wrapping_mul(32) + j as u32;
            let mut b = Backend::new(IpAddr::V4(backend_host(host)), 8080);
            b.set = set.map(str::to_owned);
            b.zone = Some(zone.to_owned());
            b.group = group.map(str::to_owned);
            b.name = Some(format!("r{j}"));
            b
        })
        .collect()
}

/// The client prefixes of the routed gateway's classes: the 4 096 /28 of
/// 198.18.0.0/16 (every bench client is in one), then IPv6 prefixes of
/// lengths 48–64 under 2001:2::/48's neighbours, up to `ROUTED_CLASSES`.
fn routed_classes() -> Vec<ClientClass> {
    let mut classes = Vec::with_capacity(ROUTED_CLASSES);
    for i in 0..4_096u32 {
        let (set, zone) = ROUTED_PROFILES[i as usize % ROUTED_PROFILES.len()];
        let address = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + (i << 4));
        classes.push(ClientClass {
            prefix: ClientPrefix::new(IpAddr::V4(address), 28),
            set: set.map(str::to_owned),
            zone: zone.map(str::to_owned),
        });
    }
    let mut i = 0u128;
    while classes.len() < ROUTED_CLASSES {
        let (set, zone) = ROUTED_PROFILES[i as usize % ROUTED_PROFILES.len()];
        // 2001:2:0:N::/64, one per class: no IPv4 client is in any.
        let address = Ipv6Addr::from((0x2001_0002u128 << 96) | ((i + 0x1000) << 64));
        classes.push(ClientClass {
            prefix: ClientPrefix::new(IpAddr::V6(address), 64),
            set: set.map(str::to_owned),
            zone: zone.map(str::to_owned),
        });
        i += 1;
    }
    classes
}

/// `ROUTED_PATHS` distribution paths of the routed service: half IPv4
/// /32, half IPv6 /128. The IPv4 ones are every `PATH_EVERY`-th bench
/// client address (8 192), then addresses of 100.64.0.0/10 no bench
/// client has; each names one of the service's backends.
fn routed_paths(backends: &[Backend]) -> Vec<DistributionPath> {
    let v4 = ROUTED_PATHS / 2;
    let on_clients = 65_536 / PATH_EVERY as usize;
    let name = |i: usize| backends[i % backends.len()].stable_name().into_owned();
    let mut paths = Vec::with_capacity(ROUTED_PATHS);
    for i in 0..v4 {
        let address = if i < on_clients {
            u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i as u32 * PATH_EVERY
        } else {
            u32::from(Ipv4Addr::new(100, 64, 0, 0)) + (i - on_clients) as u32
        };
        paths.push(DistributionPath {
            client: ClientPrefix::host(IpAddr::V4(Ipv4Addr::from(address))),
            backends: vec![name(i)],
        });
    }
    for i in 0..ROUTED_PATHS - v4 {
        let address = Ipv6Addr::from((0x2001_0002u128 << 96) | (1u128 << 64) | i as u128);
        paths.push(DistributionPath {
            client: ClientPrefix::host(IpAddr::V6(address)),
            backends: vec![name(i + 1)],
        });
    }
    paths
}

/// The gateway of `gateway_config(1, capacity)` with every routing policy
/// on its one service: `ROUTED_CLASSES` client classes (SETs and zones),
/// a zone priority, 18 backends labelled with SETs, zones and a canary
/// group, a canary of `ROUTED_CANARY_BP` with a client prefix, and
/// `ROUTED_PATHS` distribution paths. Every bench client has a class.
pub fn routed_config(capacity: usize) -> Config {
    let mut config = gateway_config(1, capacity);
    config.routing = RoutingSettings {
        classes: routed_classes().into(),
        zone_priority: vec!["dc-b".into(), "dc-a".into()],
        ..RoutingSettings::default()
    };
    let service = &mut config.services[0];
    service.backends = routed_backends(0);
    service.routing = ServiceRouting {
        zone_priority: None,
        canary: Some(Canary {
            group: "v2".into(),
            share_bp: ROUTED_CANARY_BP,
            // A pilot office: 198.18.255.0/24.
            clients: vec![ClientPrefix::new(
                IpAddr::V4(Ipv4Addr::new(198, 18, 255, 0)),
                24,
            )],
        }),
        paths: routed_paths(&service.backends).into(),
    };
    config
}

/// A TCP/IPv4 frame to copy and re-address: where its addresses and ports
/// are, so stamping can patch checksums without recomputing them.
struct Template {
    bytes: Vec<u8>,
    /// Source then destination IPv4 address (8 bytes, contiguous).
    addrs: std::ops::Range<usize>,
    /// Source then destination port (4 bytes, contiguous).
    ports: std::ops::Range<usize>,
    ip_checksum: std::ops::Range<usize>,
    tcp_checksum: std::ops::Range<usize>,
}

impl Template {
    fn tcp(src_mac: [u8; 6], dst_mac: [u8; 6], flags: u8) -> Template {
        let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 0)), 1);
        let bytes = FrameBuilder::tcp(any, any, flags)
            .macs(src_mac, dst_mac)
            .build();
        let meta = wire::parse(&bytes).expect("template parses");
        let l3 = usize::from(meta.l3_offset);
        let l4 = usize::from(meta.l4_offset);
        Template {
            addrs: l3 + ipv4::field::SRC_ADDR.start..l3 + ipv4::field::DST_ADDR.end,
            ports: l4 + tcp::field::SRC_PORT.start..l4 + tcp::field::DST_PORT.end,
            ip_checksum: l3 + ipv4::field::CHECKSUM.start..l3 + ipv4::field::CHECKSUM.end,
            tcp_checksum: l4 + tcp::field::CHECKSUM.start..l4 + tcp::field::CHECKSUM.end,
            bytes,
        }
    }

    /// Writes this frame addressed `src` → `dst` (both IPv4) into `out`,
    /// with both checksums patched; returns its length.
    fn stamp(&self, out: &mut [u8], src: SocketAddr, dst: SocketAddr) -> usize {
        let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
            panic!("benches stamp IPv4 frames only");
        };
        let frame = &mut out[..self.bytes.len()];
        frame.copy_from_slice(&self.bytes);
        let mut addrs = [0u8; 8];
        addrs[..4].copy_from_slice(&s.octets());
        addrs[4..].copy_from_slice(&d.octets());
        let mut ports = [0u8; 4];
        ports[..2].copy_from_slice(&src.port().to_be_bytes());
        ports[2..].copy_from_slice(&dst.port().to_be_bytes());
        let old_addrs = &self.bytes[self.addrs.clone()];
        let old_ports = &self.bytes[self.ports.clone()];
        let ip_ck = read_u16(frame, self.ip_checksum.start);
        let ip_ck = update_bytes(ip_ck, old_addrs, &addrs);
        let tcp_ck = read_u16(frame, self.tcp_checksum.start);
        let tcp_ck = update_bytes(update_bytes(tcp_ck, old_addrs, &addrs), old_ports, &ports);
        frame[self.addrs.clone()].copy_from_slice(&addrs);
        frame[self.ports.clone()].copy_from_slice(&ports);
        frame[self.ip_checksum.clone()].copy_from_slice(&ip_ck.to_be_bytes());
        frame[self.tcp_checksum.clone()].copy_from_slice(&tcp_ck.to_be_bytes());
        self.bytes.len()
    }
}

fn read_u16(frame: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([frame[at], frame[at + 1]])
}

/// A gateway's rules for `services` services, compiled once and shared by
/// the worlds that run against it.
pub struct Gateway {
    /// Number of services.
    pub services: usize,
    /// The compiled rules.
    pub snapshot: Arc<Snapshot>,
    /// The distribution paths beside the snapshot, if the rules have any:
    /// every world's pipeline reads them, as the daemon's workers do.
    pub paths: Option<PathRouting>,
}

impl Gateway {
    /// Compiles the rules of `gateway_config(services, ..)`.
    pub fn new(services: usize) -> Gateway {
        let config = gateway_config(services, CONNECTIONS as usize);
        let snapshot = Snapshot::build(&config, None);
        assert_eq!(snapshot.service_count(), services);
        Gateway {
            services,
            snapshot: Arc::new(snapshot),
            paths: None,
        }
    }

    /// Compiles `routed_config` (one service, every routing policy on) and
    /// loads its paths as the daemon does at start: into a path table
    /// beside the snapshot, then a second build so that the paths'
    /// backend names resolve.
    pub fn routed() -> Gateway {
        let config = routed_config(CONNECTIONS as usize);
        check(&config).expect("the routed bench config is valid");
        let first = Snapshot::build(&config, None);
        let mut paths = PathRouting::new(usize::MAX, &first);
        let new_name = paths.load(&config, &first).expect("the paths load");
        let snapshot = if new_name {
            Snapshot::build(&config, Some(&first))
        } else {
            first
        };
        let (_, service) = snapshot.services().next().expect("one service");
        assert!(service.routes().is_some(), "the service routes by client");
        Gateway {
            services: 1,
            snapshot: Arc::new(snapshot),
            paths: Some(paths),
        }
    }
}

impl Gateway {
    /// Marks the first backend (in identity order) of every service down,
    /// without rebuilding: new flows that pick it take the skip rule.
    pub fn first_backends_down(&self) {
        for (_, service) in self.snapshot.services() {
            if let Some(&id) = service.endpoints().first() {
                let _ = self.snapshot.liveness().set_up(id, false);
            }
        }
    }
}

/// One worker's state against a gateway, and frame memory holding
/// `batches` batches of frames to process.
pub struct World {
    services: usize,
    snapshot: Arc<Snapshot>,
    /// The connection table.
    pub flows: FlowTable,
    /// The pipeline (its counters tell what happened).
    pub pipeline: Pipeline,
    memory: MemoryFrames,
    /// Every frame of the memory, in address order.
    frames: Vec<Frame>,
    verdicts: Vec<Verdict>,
    syn: Template,
    syn_ack: Template,
    ack: Template,
    /// The next client never seen before.
    next_client: u64,
    /// The oldest client whose connection is still in the table.
    oldest_client: u64,
    rng: Rng,
}

impl World {
    /// A world with an empty table of `capacity` connections and room for
    /// `batches` batches of frames.
    pub fn new(gateway: &Gateway, capacity: usize, batches: usize) -> World {
        let count = (batches * BATCH) as u32;
        let mut memory = MemoryFrames::new(count, FRAME_SIZE);
        let mut pool = memory.pool();
        let frames: Vec<Frame> = std::iter::from_fn(|| pool.take()).collect();
        let mut pipeline = Pipeline::new();
        if let Some(paths) = &gateway.paths {
            pipeline.set_paths(paths.reader());
        }
        World {
            services: gateway.services,
            snapshot: Arc::clone(&gateway.snapshot),
            // The table is filled with established connections; a new flow
            // into it measures an eviction (the setting operators may choose).
            flows: FlowTable::new(capacity, FlowTimeouts::default())
                .with_established_eviction(true),
            pipeline,
            memory,
            frames,
            verdicts: Vec::with_capacity(BATCH),
            syn: Template::tcp(CLIENT_MAC, GW_CLIENT_MAC, tcp_flags::SYN),
            syn_ack: Template::tcp(BACKEND_MAC, GW_BACKEND_MAC, tcp_flags::SYN | tcp_flags::ACK),
            ack: Template::tcp(CLIENT_MAC, GW_CLIENT_MAC, tcp_flags::ACK),
            next_client: 0,
            oldest_client: 0,
            rng: Rng::new(0x666c_6f77_6265_6e63),
        }
    }

    /// Number of batches the frame memory holds.
    pub fn batches(&self) -> usize {
        self.frames.len() / BATCH
    }

    /// Opens `n` connections (clients `0..n`) with a full handshake through
    /// the pipeline — SYN, the backend's SYN+ACK, the client's ACK — so
    /// they are established as in production. Panics if any packet is not
    /// forwarded or any connection is pushed out.
    pub fn establish(&mut self, n: u64) {
        let mut client = self.next_client;
        let end = client + n;
        while client < end {
            let count = (end - client).min(BATCH as u64) as usize;
            // SYN from each client to its service.
            for (i, c) in (client..client + count as u64).enumerate() {
                let dst = service_addr(service_of(c, self.services));
                self.stamp(i, Kind::Syn, client_addr(c), dst);
            }
            self.process_checked(0, count, 0);
            // The backend's SYN+ACK: from the address the SYN was sent to.
            for (i, c) in (client..client + count as u64).enumerate() {
                let backend = self.destination_of(i);
                self.stamp(i, Kind::SynAck, backend, client_addr(c));
            }
            self.process_checked(0, count, 1);
            // The client's ACK completes the handshake.
            for (i, c) in (client..client + count as u64).enumerate() {
                let dst = service_addr(service_of(c, self.services));
                self.stamp(i, Kind::Ack, client_addr(c), dst);
            }
            self.process_checked(0, count, 0);
            client += count as u64;
        }
        self.next_client = end;
        let stats = self.flows.stats();
        assert_eq!(
            stats.evicted + stats.replaced + stats.reply_conflicts + stats.expired,
            0,
            "setup lost connections: {stats:?}"
        );
    }

    /// Fills the first `batches` batches with ACKs of random established
    /// connections (clients `oldest_client..next_client`): lookups hit
    /// random records, as a busy gateway's do.
    pub fn load_established(&mut self, batches: usize) {
        let live = self.next_client - self.oldest_client;
        for i in 0..batches * BATCH {
            let c = self.oldest_client + self.rng.below(live);
            let dst = service_addr(service_of(c, self.services));
            self.stamp(i, Kind::Ack, client_addr(c), dst);
        }
    }

    /// Fills the first `batches` batches with SYNs of clients never seen
    /// before.
    pub fn load_new(&mut self, batches: usize) {
        for i in 0..batches * BATCH {
            let c = self.next_client;
            self.next_client += 1;
            let dst = service_addr(service_of(c, self.services));
            self.stamp(i, Kind::Syn, client_addr(c), dst);
        }
    }

    /// Ends the `n` oldest connections (as their clients closing would),
    /// so a table of fixed occupancy can take new flows without evicting.
    pub fn retire_oldest(&mut self, n: u64) {
        for c in self.oldest_client..self.oldest_client + n {
            let src = client_addr(c);
            let dst = service_addr(service_of(c, self.services));
            let tuple = FiveTuple::new(src.ip(), dst.ip(), src.port(), dst.port(), ip_proto::TCP);
            let found = self.flows.lookup(&tuple, table_hash(&tuple), NOW_NS);
            let (id, _) = found.expect("retired connection is in the table");
            self.flows.remove(id);
        }
        self.oldest_client += n;
    }

    /// Processes batch `batch` of the frame memory, arriving on port 0.
    #[inline]
    pub fn process(&mut self, batch: usize) {
        let frames = &mut self.frames[batch * BATCH..(batch + 1) * BATCH];
        self.pipeline.process_batch(
            &mut self.memory,
            frames,
            0,
            &self.snapshot,
            &mut self.flows,
            NOW_NS,
            &mut self.verdicts,
        );
    }

    /// Frames forwarded so far (for checking that a measured run forwarded
    /// every frame).
    pub fn forwarded(&self) -> u64 {
        self.pipeline.counters().forwarded.get()
    }

    /// Connections created so far.
    pub fn new_flows(&self) -> u64 {
        self.pipeline.counters().new_flows.get()
    }

    /// Flow-table hits so far.
    pub fn flow_hits(&self) -> u64 {
        self.pipeline.counters().flow_hits.get()
    }

    fn stamp(&mut self, slot: usize, kind: Kind, src: SocketAddr, dst: SocketAddr) {
        let template = match kind {
            Kind::Syn => &self.syn,
            Kind::SynAck => &self.syn_ack,
            Kind::Ack => &self.ack,
        };
        let frame = &mut self.frames[slot];
        frame.set_len(FRAME_SIZE);
        let len = template.stamp(self.memory.frame_mut(frame), src, dst);
        frame.set_len(len as u32);
    }

    /// The destination a (processed) frame in `slot` now has.
    fn destination_of(&self, slot: usize) -> SocketAddr {
        let meta = wire::parse(self.memory.frame(&self.frames[slot])).expect("forwarded frame");
        let t = meta.tuple;
        SocketAddr::new(t.dst_ip(), t.dst_port)
    }

    /// Processes `count` frames from `first` on port `ingress` and panics
    /// unless every one is forwarded.
    fn process_checked(&mut self, first: usize, count: usize, ingress: u16) {
        let frames = &mut self.frames[first..first + count];
        self.pipeline.process_batch(
            &mut self.memory,
            frames,
            ingress,
            &self.snapshot,
            &mut self.flows,
            NOW_NS,
            &mut self.verdicts,
        );
        for v in &self.verdicts {
            assert!(matches!(v, Verdict::Transmit(_)), "setup frame got {v:?}");
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Syn,
    SynAck,
    Ack,
}
