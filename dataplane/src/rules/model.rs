//! The validated rule model. Values of these types have passed validation:
//! later stages may rely on every invariant documented here.

use std::net::IpAddr;

/// Default Maglev lookup table size (a prime).
pub const DEFAULT_MAGLEV_TABLE_SIZE: u32 = 65_537;
/// Default connection-table capacity per worker.
pub const DEFAULT_FLOW_CAPACITY: usize = 1_048_576;
/// Largest backend weight accepted.
pub const MAX_WEIGHT: u32 = 10_000;

/// A whole, validated gateway configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Gateway-wide settings.
    pub gateway: GatewaySettings,
    /// Connection-tracking settings.
    pub flows: FlowSettings,
    /// The gateway's interfaces (ports), in port-index order.
    pub interfaces: Vec<Interface>,
    /// Static next-hop MAC addresses (replay; the daemon also learns them).
    pub neighbours: Vec<Neighbour>,
    /// Services, unique by (protocol, VIP, port) and by name.
    pub services: Vec<Service>,
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
    /// Most connection-table entries per worker (each connection takes two:
    /// the client's direction and the backend's reply direction).
    pub capacity: usize,
    /// Idle timeout of a TCP flow that has seen only its SYN, in seconds.
    pub tcp_syn_timeout_s: u32,
    /// Idle timeout of an established TCP flow, in seconds.
    pub tcp_established_timeout_s: u32,
    /// Idle timeout of a TCP flow after FIN or RST, in seconds.
    pub tcp_closing_timeout_s: u32,
    /// Idle timeout of a UDP flow, in seconds.
    pub udp_timeout_s: u32,
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
    pub mac: MacAddr,
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
}

impl Scheduler {
    /// `maglev`, `wrr` or `sh`.
    pub const fn name(self) -> &'static str {
        match self {
            Scheduler::Maglev => "maglev",
            Scheduler::Wrr => "wrr",
            Scheduler::Sh => "sh",
        }
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
    /// The backends (endpoints).
    pub backends: Vec<Backend>,
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
    /// Optional zone label (zone-aware routing).
    pub zone: Option<String>,
    /// Optional SET isolation group label.
    pub set: Option<String>,
    /// Optional group label (fan-out, canary).
    pub group: Option<String>,
}
