//! The validated rule model. Values of these types have passed validation:
//! later stages may rely on every invariant documented here.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use super::health::{BackendHealth, HealthSettings, ServiceHealth};
use super::limits::FlowLimits;
use super::paths::Paths;
use super::shared_list::SharedList;
use crate::admission::ConnectionCap;

/// Default Maglev lookup table size (a prime).
pub const DEFAULT_MAGLEV_TABLE_SIZE: u32 = 65_537;
/// Default connection-table capacity per worker.
pub const DEFAULT_FLOW_CAPACITY: usize = 1_048_576;
/// Largest backend weight accepted.
pub const MAX_WEIGHT: u32 = 10_000;
/// Smallest Maglev table size accepted (the largest prime below 256): a
/// smaller table cannot spread flows evenly over even a few backends.
pub const MIN_MAGLEV_TABLE_SIZE: u32 = 251;
/// Largest Maglev table size accepted: the first prime above 2^24. At four
/// bytes an entry that is already 64 MiB per service, enough for 160 000
/// backends at the recommended 100 entries per backend; a larger table only
/// costs memory and rebuild time.
pub const MAX_MAGLEV_TABLE_SIZE: u32 = 16_777_259;
/// Largest connection-table capacity per worker accepted (2^26): at some 64
/// bytes an entry that is 4 GiB per worker, more than any single box needs.
pub const MAX_FLOW_CAPACITY: usize = 67_108_864;
/// Longest idle timeout accepted, in seconds (one week): a longer timeout
/// only lets dead connections hold table entries.
pub const MAX_TIMEOUT_S: u32 = 604_800;
/// Longest service name and backend label, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest interface name, in bytes (Linux `IFNAMSIZ` less its NUL).
pub const MAX_INTERFACE_NAME_LEN: usize = 15;
/// Default cap on the memory of the routing subsets' scheduler tables,
/// all services together (512 MiB).
pub const DEFAULT_SUBSET_MEMORY_LIMIT: u64 = 512 << 20;
/// The largest canary share, in basis points: 10 000 is every new flow.
pub const MAX_CANARY_SHARE_BP: u32 = 10_000;
/// The most backends one distribution path may name.
pub const MAX_PATH_BACKENDS: usize = 16;

/// A whole, validated gateway configuration.
///
/// The default is an idle gateway: default settings and nothing else.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Config {
    /// Gateway-wide settings.
    pub gateway: GatewaySettings,
    /// How the daemon runs: cores, queues, AF_XDP and XDP modes, control
    /// socket, metrics, logs (`[daemon]`). Tools other than `flowgate run`
    /// ignore it.
    pub daemon: DaemonSettings,
    /// Connection-tracking settings.
    pub flows: FlowSettings,
    /// `[health]`: the check every backend gets unless its service says
    /// otherwise.
    pub health: HealthSettings,
    /// The gateway's interfaces (ports), in port-index order.
    pub interfaces: Vec<Interface>,
    /// Static next-hop MAC addresses (replay; the daemon also learns them).
    pub neighbours: Vec<Neighbour>,
    /// Services, unique by (protocol, VIP, port) and by name. Shared
    /// between config versions: a clone copies a pointer, an edit of one
    /// service copies that service and its chunk's pointers.
    pub services: Services,
    /// Routing by client, gateway-wide: client classes, the zone
    /// priority, the subset memory cap (`[routing]`).
    pub routing: RoutingSettings,
    /// What the gateway refuses at its door besides what a router always
    /// refuses (`[ingress]`).
    pub ingress: IngressSettings,
}

/// A config's services: a list shared between config versions
/// ([`SharedList`]).
pub type Services = SharedList<Service>;

/// `[ingress]`: sources refused beyond the martians every router refuses.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct IngressSettings {
    /// Source prefixes that never create a connection (`bogons`), each
    /// counted as `bogon_source`: address space not routed on the
    /// clients' side (RFC 1918 space on an Internet-facing gateway, say).
    pub bogons: Vec<ClientPrefix>,
}

impl Config {
    /// The index (port number) of the interface called `name`.
    pub fn interface_index(&self, name: &str) -> Option<usize> {
        self.interfaces.iter().position(|i| i.name == name)
    }

    /// The interface called `name`.
    pub fn interface(&self, name: &str) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.name == name)
    }

    /// The static neighbour with this address.
    pub fn neighbour(&self, address: IpAddr) -> Option<&Neighbour> {
        self.neighbours.iter().find(|n| n.address == address)
    }

    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The service listening on (protocol, VIP, port).
    pub fn service_at(&self, protocol: Protocol, vip: IpAddr, port: u16) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| s.protocol == protocol && s.vip == vip && s.port == port)
    }
}

/// Gateway-wide settings.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewaySettings {
    /// Default Maglev table size for services that do not set one (prime).
    pub maglev_table_size: u32,
}

/// Connection-tracking settings (per worker).
#[derive(Clone, Debug, PartialEq)]
pub struct FlowSettings {
    /// Most connections tracked per worker (each is found from both its
    /// client's and its backend's direction).
    pub capacity: usize,
    /// Idle timeout of a TCP flow that has seen only its SYN, in seconds.
    pub tcp_syn_timeout_s: u32,
    /// Idle timeout of an established TCP flow, in seconds.
    pub tcp_established_timeout_s: u32,
    /// Idle timeout of a TCP flow after FIN or RST, in seconds.
    pub tcp_closing_timeout_s: u32,
    /// Idle timeout of a UDP flow, in seconds.
    pub udp_timeout_s: u32,
    /// Whether a full table may evict an established connection to make
    /// room for a new one. Off: only expired, embryonic (SYN-state, or UDP
    /// its backend never answered) and closing connections make room, and
    /// a new flow that finds none is dropped (`flow_table_full`).
    pub evict_established: bool,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            maglev_table_size: DEFAULT_MAGLEV_TABLE_SIZE,
        }
    }
}

impl Default for FlowSettings {
    fn default() -> Self {
        FlowSettings {
            capacity: DEFAULT_FLOW_CAPACITY,
            tcp_syn_timeout_s: 30,
            tcp_established_timeout_s: 900,
            tcp_closing_timeout_s: 60,
            udp_timeout_s: 60,
            evict_established: false,
        }
    }
}

/// A MAC address.
pub type MacAddr = [u8; 6];

/// One of the gateway's interfaces; its index in [`Config::interfaces`] is
/// its port number.
#[derive(Clone, Debug, PartialEq)]
pub struct Interface {
    /// Interface name (e.g. `eth0`), unique.
    pub name: String,
    /// The interface's own MAC: the source MAC of frames sent from it.
    /// `None` (the file gives none): the daemon reads it from the kernel
    /// at start and follows it while it runs; given, the kernel's must
    /// match it.
    pub mac: Option<MacAddr>,
    /// What the interface does with 802.1Q tags.
    pub vlan: InterfaceVlans,
}

/// An interface's VLAN setting (`vlans`, `untagged`, `egress_vlan`).
///
/// A frame tagged with an accepted id is handled as its untagged frame
/// would be; the tag is taken off on the way in, and a frame leaving the
/// interface carries `egress` (or no tag). So a client's tag never
/// reaches another segment: what a backend's segment sees is its own
/// interface's setting. A frame with another id, two tags (QinQ), or no
/// tag where `untagged` is false, is refused where the gateway would
/// forward it (`vlan_not_configured`) and left to the kernel otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceVlans {
    /// VLAN ids accepted tagged (1..=4094), in the file's order.
    pub accepted: Vec<u16>,
    /// Whether untagged frames are accepted.
    pub untagged: bool,
    /// The id frames sent out of this interface are tagged with; `None`:
    /// sent untagged. One of `accepted`.
    pub egress: Option<u16>,
}

impl Default for InterfaceVlans {
    /// Untagged only: no id accepted, untagged frames in and out.
    fn default() -> Self {
        InterfaceVlans {
            accepted: Vec::new(),
            untagged: true,
            egress: None,
        }
    }
}

impl InterfaceVlans {
    /// Whether this is the default (untagged only).
    pub fn is_untagged_only(&self) -> bool {
        *self == InterfaceVlans::default()
    }
}

/// A static neighbour: the MAC to send to for an address, and on which
/// interface it lives.
#[derive(Clone, Debug, PartialEq)]
pub struct Neighbour {
    /// The neighbour's IP address (unique).
    pub address: IpAddr,
    /// Its MAC.
    pub mac: MacAddr,
    /// Index into [`Config::interfaces`].
    pub interface: usize,
}

/// Transport protocol of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    pub const fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }

    /// `tcp` or `udp`.
    pub const fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// The protocol called `name` (`tcp` or `udp`, as in a config).
    pub fn from_name(name: &str) -> Option<Protocol> {
        match name {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a service picks a backend for a new flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Scheduler {
    /// Maglev consistent hash of the 5-tuple (default).
    #[default]
    Maglev,
    /// Weighted round-robin per new flow.
    Wrr,
    /// Source-address hash (consistent, via a Maglev table).
    Sh,
    /// Every datagram to every alive backend (UDP only; see
    /// [`FanoutReplies`] for what comes back).
    Fanout(FanoutReplies),
}

/// Which backends' replies a fan-out service forwards to the client: the
/// key `fanout_replies`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum FanoutReplies {
    /// Every reply of every backend (default).
    #[default]
    All,
    /// The first reply after each datagram of the client; later replies
    /// are dropped (counted) until the client's next datagram.
    First,
}

impl FanoutReplies {
    /// `all` or `first`.
    pub const fn name(self) -> &'static str {
        match self {
            FanoutReplies::All => "all",
            FanoutReplies::First => "first",
        }
    }

    /// The mode called `name` (as in a config).
    pub fn from_name(name: &str) -> Option<FanoutReplies> {
        match name {
            "all" => Some(FanoutReplies::All),
            "first" => Some(FanoutReplies::First),
            _ => None,
        }
    }
}

impl fmt::Display for FanoutReplies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Scheduler {
    /// Whether it places each flow on one backend. The fan-out scheduler
    /// (every alive backend gets each datagram) does not: it obeys SETs
    /// and zones, which narrow who receives, but not distribution paths
    /// or a canary share, which choose one, and the validator refuses
    /// those on it by this test.
    pub const fn picks_one(self) -> bool {
        match self {
            Scheduler::Maglev | Scheduler::Wrr | Scheduler::Sh => true,
            Scheduler::Fanout(_) => false,
        }
    }

    /// How a fan-out service treats replies; `None` for a scheduler that
    /// picks one backend.
    pub const fn fanout(self) -> Option<FanoutReplies> {
        match self {
            Scheduler::Fanout(replies) => Some(replies),
            _ => None,
        }
    }

    /// `maglev`, `wrr`, `sh` or `fanout`.
    pub const fn name(self) -> &'static str {
        match self {
            Scheduler::Maglev => "maglev",
            Scheduler::Wrr => "wrr",
            Scheduler::Sh => "sh",
            Scheduler::Fanout(_) => "fanout",
        }
    }

    /// The scheduler called `name` (`maglev`, `wrr`, `sh` or `fanout`, as
    /// in a config); `fanout` forwards every reply until
    /// `fanout_replies` says otherwise.
    pub fn from_name(name: &str) -> Option<Scheduler> {
        match name {
            "maglev" => Some(Scheduler::Maglev),
            "wrr" => Some(Scheduler::Wrr),
            "sh" => Some(Scheduler::Sh),
            "fanout" => Some(Scheduler::Fanout(FanoutReplies::All)),
            _ => None,
        }
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A virtual service: traffic to (protocol, VIP, port) is spread over its
/// backends.
///
/// Invariants: `name` unique; (protocol, vip, port) unique; port > 0; every
/// backend of the VIP's address family; backends unique by (address, port);
/// at least one backend with weight > 0; `maglev_table_size` prime.
#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    /// Unique name, used by operators and metrics.
    pub name: String,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The virtual IP clients connect to.
    pub vip: IpAddr,
    /// The virtual port clients connect to (> 0).
    pub port: u16,
    /// Backend choice for new flows.
    pub scheduler: Scheduler,
    /// Maglev table size for this service (prime).
    pub maglev_table_size: u32,
    /// What happens when its backends go down.
    pub failover: Failover,
    /// Its health checks and heartbeats.
    pub health: ServiceHealth,
    /// The backends (endpoints).
    pub backends: Vec<Backend>,
    /// Routing by client for this service: its zone priority, canary and
    /// distribution paths.
    pub routing: ServiceRouting,
    /// Its flow control: new-flow rates, connection caps, and what an
    /// over-limit new flow gets (`[services.limits]`).
    pub limits: FlowLimits,

    /// How its VIP is announced on the client-facing interface. Every
    /// service of one VIP address has the same.
    pub announce: Announce,
}

impl Service {
    /// The VIP and port clients connect to.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.vip, self.port)
    }

    /// The backends that take new flows (weight > 0), with their indices in
    /// [`Service::backends`].
    pub fn active_backends(&self) -> impl Iterator<Item = (usize, &Backend)> {
        self.backends
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.is_drained())
    }

    /// Sum of all backend weights (> 0 for a validated service).
    pub fn total_weight(&self) -> u64 {
        self.backends.iter().map(|b| u64::from(b.weight)).sum()
    }

    /// The backend whose stable name ([`Backend::stable_name`]) is `name`.
    pub fn backend_named(&self, name: &str) -> Option<(usize, &Backend)> {
        self.backends
            .iter()
            .enumerate()
            .find(|(_, b)| b.is_named(name))
    }

    /// The zone priority this service falls back by: its own list, or the
    /// gateway's (`gateway`, from [`RoutingSettings::zone_priority`]).
    pub fn zone_priority<'a>(&'a self, gateway: &'a [String]) -> &'a [String] {
        self.routing.zone_priority.as_deref().unwrap_or(gateway)
    }
}

/// Largest `panic_threshold`, in percent.
pub const MAX_PANIC_THRESHOLD: u32 = 100;

/// What a service does when its backends go down: the keys
/// `on_backend_down`, `panic_threshold` and `when_all_down`.
///
/// The defaults are what a careful operator picks: connections to a down
/// backend are kept (a failed check is evidence, not proof: the server may
/// be serving its existing connections while its check port is wedged,
/// and a connection that really is dead ends by itself at the client's own
/// timeout, whereas cutting one cannot be undone); no panic mode, so that
/// new flows never go to a backend known to be down while any is alive;
/// and a service with every backend down fails open, since every check
/// failing at once is more often the checker's fault (a firewall change, a
/// probe address blocked) than every server dying, and failing open costs
/// nothing when they really are dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Failover {
    /// What a down backend's TCP connections get; `None` (unset) keeps
    /// them. UDP services leave it unset: a UDP flow of a down backend is
    /// always rescheduled.
    pub on_backend_down: Option<OnBackendDown>,
    /// Panic mode, in Envoy's sense: when the alive share of the service's
    /// weight is below this many percent (but above 0), health is ignored
    /// and new flows are balanced over every weighted backend, so that the
    /// few left alive are not crushed. 0..=100; 0 turns it off.
    pub panic_threshold: u32,
    /// What a service does when no backend is alive.
    pub when_all_down: WhenAllDown,
}

impl Failover {
    /// What a down backend's TCP connections get (unset: keep).
    pub fn on_backend_down(&self) -> OnBackendDown {
        self.on_backend_down.unwrap_or_default()
    }
}

/// What a down (or expired) backend's established TCP connections get.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum OnBackendDown {
    /// They continue (default).
    #[default]
    Keep,
    /// Their packets are dropped and their records forgotten, so that the
    /// client's next SYN is scheduled afresh.
    Drop,
    /// The client's next segment is answered with a TCP RST, so that it
    /// fails fast instead of retransmitting into a black hole; the record
    /// is forgotten.
    Reset,
}

impl OnBackendDown {
    /// `keep`, `drop` or `reset`.
    pub const fn name(self) -> &'static str {
        match self {
            OnBackendDown::Keep => "keep",
            OnBackendDown::Drop => "drop",
            OnBackendDown::Reset => "reset",
        }
    }

    /// The policy called `name` (as in a config).
    pub fn from_name(name: &str) -> Option<OnBackendDown> {
        match name {
            "keep" => Some(OnBackendDown::Keep),
            "drop" => Some(OnBackendDown::Drop),
            "reset" => Some(OnBackendDown::Reset),
            _ => None,
        }
    }
}

impl fmt::Display for OnBackendDown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the gateway makes a VIP reachable on the client-facing interface
/// (port 0), the `announce` key of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Announce {
    /// Not announced (default): the clients' router sends the VIP's
    /// traffic to the gateway, as in a config without the key.
    #[default]
    None,
    /// The XDP program answers ARP requests (IPv4) and neighbour
    /// solicitations (IPv6) for the VIP with the interface's MAC, and the
    /// gateway sends a gratuitous ARP or unsolicited neighbour
    /// advertisement when the VIP appears.
    Arp,
    /// A host route for the VIP on the gateway's own device, which the
    /// box's BGP daemon announces to the router (`announce::bgp`).
    Bgp,
}

impl Announce {
    /// `none`, `arp` or `bgp`.
    pub const fn name(self) -> &'static str {
        match self {
            Announce::None => "none",
            Announce::Arp => "arp",
            Announce::Bgp => "bgp",
        }
    }

    /// Whether the gateway answers for the VIP on its segment.
    pub const fn is_announced(self) -> bool {
        matches!(self, Announce::Arp)
    }
}

impl fmt::Display for Announce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a service does with a new flow when none of its backends is alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum WhenAllDown {
    /// Balance over every weighted backend as if all were up (default).
    #[default]
    Open,
    /// Drop the new flow (counted: `all_backends_down`).
    Closed,
}

impl WhenAllDown {
    /// `open` or `closed`.
    pub const fn name(self) -> &'static str {
        match self {
            WhenAllDown::Open => "open",
            WhenAllDown::Closed => "closed",
        }
    }

    /// The behaviour called `name` (as in a config).
    pub fn from_name(name: &str) -> Option<WhenAllDown> {
        match name {
            "open" => Some(WhenAllDown::Open),
            "closed" => Some(WhenAllDown::Closed),
            _ => None,
        }
    }
}

impl fmt::Display for WhenAllDown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One backend (endpoint) of a service.
#[derive(Clone, Debug, PartialEq)]
pub struct Backend {
    /// Its address (same family as the VIP).
    pub address: IpAddr,
    /// Its port (> 0).
    pub port: u16,
    /// Relative weight, 0..=[`MAX_WEIGHT`]; 0 drains it (no new flows).
    pub weight: u32,
    /// Optional zone (data-centre group): clients of a zone prefer its
    /// backends (see [`RoutingSettings::zone_priority`]).
    pub zone: Option<String>,
    /// Optional SET: a [`SetName`] `name.area.group`, the group possibly
    /// `*`. A client of a SET only ever reaches its own SET's backends
    /// (or, lacking any, `name.area.*`'s, then backends of no SET).
    pub set: Option<String>,
    /// Optional group label: the canary group of a gated launch
    /// ([`Canary::group`]), later fan-out.
    pub group: Option<String>,
    /// Its own health settings: check kind and port, heartbeat TTL.
    pub health: BackendHealth,
    /// Optional stable name, unique in its service, by which distribution
    /// paths name the backend; unset, the backend is called `ADDR:PORT`
    /// ([`Backend::stable_name`]).
    ///
    /// A path follows a name, not an address. *Moving* a backend (a
    /// container rescheduled to a new address) keeps its name and changes
    /// its address: every path that names it follows at the next snapshot,
    /// while its connections, which were made to the old address, end as
    /// a removed backend's do. *Renaming* one keeps its address (and its
    /// connections), and the paths that named the old name no longer
    /// resolve: their clients fall back to the normal decision, counted,
    /// until the paths are changed. A backend left with the default name
    /// cannot move without its paths being rewritten, so give containers
    /// that move a name.
    pub name: Option<String>,
    /// Its own connection marks (`max_connections`,
    /// `resume_connections`), in place of its service's
    /// [`FlowLimits::max_connections`].
    pub max_connections: Option<ConnectionCap>,
}

impl Backend {
    /// A backend with weight 1 and no labels.
    pub fn new(address: IpAddr, port: u16) -> Backend {
        Backend {
            address,
            port,
            weight: 1,
            zone: None,
            set: None,
            group: None,
            health: BackendHealth::default(),
            name: None,
            max_connections: None,
        }
    }

    /// The name distribution paths know the backend by: its `name`, or
    /// `ADDR:PORT` (`[ADDR]:PORT` for IPv6) without one. An explicit name
    /// cannot contain `:`, so it never equals another backend's default.
    pub fn stable_name(&self) -> std::borrow::Cow<'_, str> {
        match &self.name {
            Some(name) => std::borrow::Cow::Borrowed(name),
            None => std::borrow::Cow::Owned(self.socket_addr().to_string()),
        }
    }

    /// Whether `name` is its stable name, exactly as
    /// [`stable_name`](Self::stable_name) writes it.
    pub fn is_named(&self, name: &str) -> bool {
        match &self.name {
            Some(own) => own == name,
            None => name.contains(':') && self.socket_addr().to_string() == name,
        }
    }

    /// The backend's address and port.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }

    /// Weight 0: existing flows stay, new flows go elsewhere.
    pub fn is_drained(&self) -> bool {
        self.weight == 0
    }
}

/// Routing by client, gateway-wide (`[routing]`): who a client is, and how
/// zones fall back. Each service adds its own part ([`ServiceRouting`]).
///
/// A new flow is decided in this order: the service's distribution paths,
/// then the client's SET, then the service's canary, then the client's
/// zone, then the service's scheduler over what is left.
#[derive(Clone, Debug, PartialEq)]
pub struct RoutingSettings {
    /// Client classes: a client's SET and zone, by the longest of these
    /// prefixes that holds its address. A client no prefix holds has
    /// neither. Prefixes are unique. Shared between config versions, as
    /// services are: a config copied for a change of services copies a
    /// pointer, not a million classes.
    pub classes: SharedList<ClientClass>,
    /// Zones in the order a client falls back through when its own zone
    /// has no backend alive: its own zone first, then these in order, then
    /// backends of no zone, then any. Every zone named here is some
    /// backend's or some class's. A service may set its own.
    pub zone_priority: Vec<String>,
    /// Most bytes the scheduler tables of every service's routing subsets
    /// may take together; a config that needs more is refused.
    pub subset_memory_limit: u64,
}

impl Default for RoutingSettings {
    fn default() -> Self {
        RoutingSettings {
            classes: SharedList::new(),
            zone_priority: Vec::new(),
            subset_memory_limit: DEFAULT_SUBSET_MEMORY_LIMIT,
        }
    }
}

/// A client address prefix: an address and a length in bits, with no host
/// bits set (IPv4 up to /32, IPv6 up to /128, never inside the
/// IPv4-mapped range `::ffff:0:0/96`, which no IPv6 client has).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientPrefix {
    /// The network address.
    pub address: IpAddr,
    /// The length in bits.
    pub len: u8,
}

impl ClientPrefix {
    /// The prefix `address/len` (not checked: the validator judges it).
    pub const fn new(address: IpAddr, len: u8) -> ClientPrefix {
        ClientPrefix { address, len }
    }

    /// The prefix of exactly one address (/32 or /128).
    pub const fn host(address: IpAddr) -> ClientPrefix {
        let len = match address {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        ClientPrefix { address, len }
    }

    /// The longest length of its family: 32 or 128.
    pub const fn max_len(&self) -> u8 {
        match self.address {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        }
    }

    /// Whether `client` lies in it. An IPv4 client (also written
    /// IPv4-mapped) never lies in an IPv6 prefix.
    pub fn contains(&self, client: IpAddr) -> bool {
        let client = match client {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
            v4 => v4,
        };
        let len = u32::from(self.len);
        match (self.address, client) {
            (IpAddr::V4(net), IpAddr::V4(a)) if len <= 32 => {
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                u32::from(a) & mask == u32::from(net) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) if len <= 128 => {
                let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                u128::from(a) & mask == u128::from(net) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for ClientPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.len)
    }
}

/// One client class: the clients of a prefix, with their SET and zone.
/// A class with neither marks its prefix as having no class (inside a
/// shorter prefix that has one).
#[derive(Clone, Debug, PartialEq)]
pub struct ClientClass {
    /// The clients.
    pub prefix: ClientPrefix,
    /// Their SET, a [`SetName`].
    pub set: Option<String>,
    /// Their zone.
    pub zone: Option<String>,
}

/// A service's part of the routing by client.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ServiceRouting {
    /// Zones in fallback order for this service, in place of the
    /// gateway's [`RoutingSettings::zone_priority`]; unset: the gateway's.
    pub zone_priority: Option<Vec<String>>,
    /// A gated launch: a share of new flows to a group of backends.
    pub canary: Option<Canary>,
    /// Distribution paths: clients sent straight to a named backend,
    /// before any other policy. Prefixes are unique in a service. Shared
    /// between config versions: a clone costs nothing, an edit a few
    /// nodes (see [`Paths`]).
    pub paths: Paths,
}

/// A gated launch: new flows to the backends whose `group` is `group`,
/// for `share_bp` basis points of the flows (drawn from flow-hash bits
/// the scheduler does not use, so gateways with the same rules agree) and
/// for every client under `clients`.
#[derive(Clone, Debug, PartialEq)]
pub struct Canary {
    /// The canary group: some backend's `group` label.
    pub group: String,
    /// Share of new flows, in basis points, 0..=[`MAX_CANARY_SHARE_BP`].
    /// Raising it from p to q moves only flows whose draw lies in p..q.
    pub share_bp: u32,
    /// Clients that always go to the canary (testers, a pilot office).
    pub clients: Vec<ClientPrefix>,
}

/// A distribution path: the clients of a prefix go straight to a named
/// backend, or to one of a few chosen by flow hash. A path whose backend
/// is down, draining or gone falls back to the normal decision.
#[derive(Clone, Debug, PartialEq)]
pub struct DistributionPath {
    /// The clients (any length down to /32 and /128; longest match).
    pub client: ClientPrefix,
    /// Stable names ([`Backend::stable_name`]) of backends of the
    /// service: 1 to [`MAX_PATH_BACKENDS`], distinct.
    pub backends: Vec<String>,
}

/// A SET name, `name.area.group`: a deployment unit that may call only
/// itself. The group may be `*` (on a client: every group of its
/// `name.area`; on a backend: serves `name.area`'s clients whose own group
/// has no backend).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SetName<'a> {
    /// First part.
    pub name: &'a str,
    /// Second part.
    pub area: &'a str,
    /// Third part; `None` for `*`.
    pub group: Option<&'a str>,
}

impl<'a> SetName<'a> {
    /// Reads `name.area.group`: three non-empty parts of
    /// `A-Z a-z 0-9 _ -`, the third possibly `*`, at most
    /// [`MAX_NAME_LEN`] bytes in all. `None` if malformed.
    pub fn parse(text: &'a str) -> Option<SetName<'a>> {
        if text.len() > MAX_NAME_LEN {
            return None;
        }
        let mut parts = text.split('.');
        let (Some(name), Some(area), Some(group), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let part = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        };
        let group = match group {
            "*" => None,
            g if part(g) => Some(g),
            _ => return None,
        };
        (part(name) && part(area)).then_some(SetName { name, area, group })
    }

    /// Whether it is `name.area.*`.
    pub const fn is_area_wide(&self) -> bool {
        self.group.is_none()
    }

    /// Whether `other` has the same `name.area`.
    pub fn same_area(&self, other: &SetName<'_>) -> bool {
        self.name == other.name && self.area == other.area
    }
}

impl fmt::Display for SetName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}",
            self.name,
            self.area,
            self.group.unwrap_or("*")
        )
    }
}

/// Default path of the control socket: the API's, which `flowgatectl`
/// connects to unless told otherwise.
pub use flowgate_api::DEFAULT_CONTROL_SOCKET;
/// Most worker cores.
pub const MAX_WORKERS: usize = 64;

/// `[daemon]`: how `flowgate run` runs. Values here take effect at start;
/// a reload that changes them is refused with a message to restart.
#[derive(Clone, Debug, PartialEq)]
pub struct DaemonSettings {
    /// CPU cores the workers are pinned to, one worker per core, no
    /// duplicates. Worker `w` serves queue `w` of every interface, so an
    /// interface should have as many queues (RSS channels) as there are
    /// workers. The control thread avoids these cores.
    pub cores: Vec<usize>,
    /// Most frames taken from one queue per poll.
    pub batch: usize,
    /// What a worker does when its queues are empty.
    pub idle: IdlePolicy,
    /// Bytes per frame of the shared UMEM: 2048 or 4096.
    pub frame_size: u32,
    /// Frames in the shared UMEM (a power of two).
    pub frame_count: u32,
    /// Descriptors in each socket's receive ring (a power of two).
    pub rx_ring_size: u32,
    /// Descriptors in each socket's transmit ring (a power of two).
    pub tx_ring_size: u32,
    /// Descriptors in each fill ring (a power of two).
    pub fill_ring_size: u32,
    /// Descriptors in each completion ring (a power of two).
    pub completion_ring_size: u32,
    /// AF_XDP bind mode.
    pub bind_mode: BindModeSetting,
    /// XDP attach mode.
    pub xdp_mode: XdpModeSetting,
    /// Whether the XDP program forwards established connections itself.
    pub fast_path: FastPathSetting,
    /// Path of the control socket (created with mode 0600).
    pub control_socket: PathBuf,
    /// Seconds a control-socket client may stay connected without sending
    /// a request before it is closed.
    pub control_idle_timeout_s: u32,
    /// Where the Prometheus endpoint listens; none = no endpoint.
    pub metrics_address: Option<MetricsAddress>,
    /// File mode of a Unix metrics socket; `None` = `0o600` (only the
    /// daemon's user may scrape).
    pub metrics_socket_mode: Option<u32>,
    /// Group (id) given to a Unix metrics socket, so that a mode such as
    /// `0o660` lets that group's scraper in; `None` = the daemon's group.
    pub metrics_socket_group: Option<u32>,
    /// Log line format.
    pub log_format: LogFormatSetting,
    /// Log filter, e.g. `info` or `flowgate_dataplane=debug`.
    pub log_level: String,
    /// The management address and UDP port agents send heartbeats to;
    /// none = no network heartbeat endpoint. Never a VIP.
    pub heartbeat_address: Option<SocketAddr>,
    /// Heartbeats a second each source may send, sustained.
    pub heartbeat_rate: u32,
    /// Heartbeats each source may send at once after a quiet spell.
    pub heartbeat_burst: u32,
    /// Most health probes in flight at once (each holds a socket).
    pub health_max_in_flight: u32,
}

/// Default of `[daemon] heartbeat_rate`: an agent heartbeating 100
/// backends every second fits.
pub const DEFAULT_HEARTBEAT_RATE: u32 = 100;
/// Default of `[daemon] heartbeat_burst`.
pub const DEFAULT_HEARTBEAT_BURST: u32 = 200;
/// Default of `[daemon] health_max_in_flight`.
pub const DEFAULT_HEALTH_MAX_IN_FLIGHT: u32 = 1024;

impl Default for DaemonSettings {
    fn default() -> Self {
        DaemonSettings {
            cores: vec![0],
            batch: 64,
            idle: IdlePolicy::Adaptive,
            frame_size: 2048,
            frame_count: 16_384,
            rx_ring_size: 2048,
            tx_ring_size: 2048,
            fill_ring_size: 4096,
            completion_ring_size: 4096,
            bind_mode: BindModeSetting::Auto,
            xdp_mode: XdpModeSetting::Auto,
            fast_path: FastPathSetting::Xdp,
            control_socket: PathBuf::from(DEFAULT_CONTROL_SOCKET),
            control_idle_timeout_s: 3,
            metrics_address: None,
            metrics_socket_mode: None,
            metrics_socket_group: None,
            log_format: LogFormatSetting::Human,
            log_level: "info".to_owned(),
            heartbeat_address: None,
            heartbeat_rate: DEFAULT_HEARTBEAT_RATE,
            heartbeat_burst: DEFAULT_HEARTBEAT_BURST,
            health_max_in_flight: DEFAULT_HEALTH_MAX_IN_FLIGHT,
        }
    }
}

/// Where the Prometheus endpoint listens (`[daemon] metrics_address`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricsAddress {
    /// A loopback address and port (`"127.0.0.1:9464"`).
    Tcp(SocketAddr),
    /// A Unix stream socket at this absolute path (`"unix:/run/flowgate/metrics.sock"`);
    /// its file mode and group are `metrics_socket_mode` and
    /// `metrics_socket_group`.
    Unix(PathBuf),
}

/// What an idle worker does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IdlePolicy {
    /// Spin on its rings: lowest latency, burns its core (dedicated cores).
    Busy,
    /// Spin a while, then sleep in short naps until traffic returns: for
    /// cores shared with other work.
    #[default]
    Adaptive,
}

/// AF_XDP bind mode setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BindModeSetting {
    /// Zero-copy where the driver supports it, else copy.
    #[default]
    Auto,
    /// Zero-copy or fail.
    ZeroCopy,
    /// Copy mode.
    Copy,
}

/// XDP attach mode setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum XdpModeSetting {
    /// Native (driver) mode where supported, else generic.
    #[default]
    Auto,
    /// Native or fail.
    Native,
    /// Generic (skb) mode.
    Generic,
}

/// The kernel fast path setting (`fast_path`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FastPathSetting {
    /// The XDP program forwards the packets of established connections
    /// from a cache the workers keep; the workers see every handshake,
    /// close and new flow. The default: it sends frames only out of the
    /// interfaces the kernel says can transmit XDP frames, and is off,
    /// with a warning that says why, where none can.
    #[default]
    Xdp,
    /// Every owned packet goes to a worker.
    Off,
}

/// Log line format setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormatSetting {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}
