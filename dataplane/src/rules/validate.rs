//! The one validator: every rule a config must follow, checked over the
//! model, whatever source the model came from.
//!
//! A source (a file, the control API's edits) first turns what it reads
//! into a [`Config`] and a [`Provenance`]; that step rejects only what
//! cannot be put in the model at all (TOML syntax, unknown keys, a
//! malformed address, a number the model's type cannot hold). Everything
//! else — ranges, duplicates, address families, weights, Maglev table
//! sizes, interfaces, neighbours, labels — is judged here, once, and each
//! problem is located through the provenance. So a file and an API edit
//! that make the same fault get the same message, each at its own kind of
//! location.
//!
//! Every check runs and every problem is reported, in model order. A value
//! the source could not read is a stand-in ([`Provenance::stand_in`]): it
//! is not judged, and neither is anything that depends on it, since that
//! would only repeat the source's report. Duplicates are found through hash
//! maps, so validation is linear in the size of the config.

mod changed;
mod health;
mod ingress;
mod routing;

pub use changed::{ServiceEdit, ServiceIndex};

pub(crate) use routing::path_is_valid;

pub(super) use routing::{CANARY_SHARE, SUBSET_MEMORY};

use hashbrown::{HashMap, HashSet};
use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::ffi::OsStrExt;

use super::error::{ConfigError, ConfigProblem};
use super::mac::{format_mac, is_unicast_mac};
use super::place::{Item, Place};
use super::prime::{is_prime, next_prime, prev_prime};
use super::provenance::Provenance;
use super::{
    Backend, Config, DaemonSettings, FlowLimits, MetricsAddress, Protocol, Service, SetName,
    MAX_FLOW_CAPACITY, MAX_INTERFACE_NAME_LEN, MAX_MAGLEV_TABLE_SIZE, MAX_NAME_LEN,
    MAX_PANIC_THRESHOLD, MAX_TIMEOUT_S, MAX_WEIGHT, MAX_WORKERS, MIN_MAGLEV_TABLE_SIZE,
};

/// Checks `config` in full. `Ok` if it follows every rule; otherwise every
/// problem, in model order, located through `provenance`.
pub fn validate(config: &Config, provenance: &dyn Provenance) -> Result<(), ConfigError> {
    let problems = problems(config, provenance);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Invalid { problems })
    }
}

/// Every problem of `config`, in model order, located through
/// `provenance`.
pub(super) fn problems(config: &Config, provenance: &dyn Provenance) -> Vec<ConfigProblem> {
    let mut v = Validator {
        config,
        provenance,
        found: Vec::new(),
    };
    let gateway_ok = v.gateway();
    v.daemon();
    v.flows();
    let health_known = v.health_defaults();
    v.interfaces();
    v.neighbours();
    v.services(gateway_ok, health_known);
    v.routing();
    v.ingress();
    v.found
}

/// An inclusive range an integer value must lie in.
///
/// A source that reads a number too large or too small for the model's type
/// to hold (a port of 65 536, a weight of -1) reports it with the same
/// rule, so that it reads exactly as the validator would word it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Range {
    min: i64,
    max: i64,
}

impl Range {
    const fn new(min: i64, max: i64) -> Range {
        Range { min, max }
    }

    /// Whether `value` lies in the range.
    pub(super) fn contains(self, value: i64) -> bool {
        (self.min..=self.max).contains(&value)
    }

    /// `KEY VALUE CONTEXT is out of range MIN..=MAX`.
    pub(super) fn problem(self, key: &str, value: impl Display, context: &str) -> String {
        format!(
            "{key} {value}{context} is out of range {}..={}",
            self.min, self.max
        )
    }
}

/// Service and backend ports.
pub(super) const PORT: Range = Range::new(1, u16::MAX as i64);
/// Backend weights.
pub(super) const WEIGHT: Range = Range::new(0, MAX_WEIGHT as i64);
/// Maglev table sizes (also prime).
pub(super) const TABLE_SIZE: Range =
    Range::new(MIN_MAGLEV_TABLE_SIZE as i64, MAX_MAGLEV_TABLE_SIZE as i64);
/// A service's `panic_threshold`, in percent.
pub(super) const PANIC_THRESHOLD: Range = Range::new(0, MAX_PANIC_THRESHOLD as i64);
/// `flows.capacity`.
pub(super) const FLOW_CAPACITY: Range = Range::new(1, MAX_FLOW_CAPACITY as i64);
/// `flows.*_timeout`, in seconds.
pub(super) const TIMEOUT: Range = Range::new(1, MAX_TIMEOUT_S as i64);
/// One entry of `daemon.cores`.
pub(super) const CORE: Range = Range::new(0, 4095);
/// A VLAN id: 0 (priority tag) and 4095 are reserved (IEEE 802.1Q).
pub(super) const VLAN_ID: Range = Range::new(1, 4094);
/// `daemon.batch`.
pub(super) const BATCH: Range = Range::new(1, 256);
/// `daemon.frame_size` (also 2048 or 4096).
pub(super) const FRAME_SIZE: Range = Range::new(2048, 4096);
/// `daemon.frame_count` (also a power of two).
pub(super) const FRAME_COUNT: Range = Range::new(1024, 1 << 20);
/// `daemon.*_ring_size` (also a power of two).
pub(super) const RING_SIZE: Range = Range::new(64, 16384);
/// `daemon.control_idle_timeout`, in seconds.
pub(super) const CONTROL_IDLE_TIMEOUT: Range = Range::new(1, 600);
/// `daemon.heartbeat_rate`, heartbeats a second per source.
pub(super) const HEARTBEAT_RATE: Range = Range::new(1, 1_000_000);
/// `daemon.heartbeat_burst`.
pub(super) const HEARTBEAT_BURST: Range = Range::new(1, 1_000_000);
/// `daemon.health_max_in_flight`: each probe in flight holds a socket.
pub(super) const HEALTH_MAX_IN_FLIGHT: Range = Range::new(1, 65_536);
/// `daemon.metrics_socket_mode`: permission bits (`0o777` is 511).
pub(super) const SOCKET_MODE: Range = Range::new(0, 0o777);
/// The longest path a Unix socket address holds (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// ` of service "NAME"`: the context of a service's value in a message.
pub(super) fn of_service(name: &str) -> String {
    format!(" of service {name:?}")
}

/// ` of backend ADDRESS in service "NAME"`: the context of a backend's
/// port, which cannot name the backend by a port that is at fault.
pub(super) fn of_backend_address(address: &str, service: &str) -> String {
    format!(" of backend {address} in service {service:?}")
}

/// ` of backend ADDRESS:PORT in service "NAME"`, bracketing an IPv6
/// address: the context of a backend's weight or label.
pub(super) fn of_backend(address: &str, port: &str, service: &str) -> String {
    if address.contains(':') {
        format!(" of backend [{address}]:{port} in service {service:?}")
    } else {
        format!(" of backend {address}:{port} in service {service:?}")
    }
}

/// The validator's state: the model, where it came from, what was found.
struct Validator<'a> {
    config: &'a Config,
    provenance: &'a dyn Provenance,
    found: Vec<ConfigProblem>,
}

impl Validator<'_> {
    /// Records `message` at `place`.
    fn report(&mut self, place: Place, message: String) {
        let location = self.provenance.locate(place);
        self.found.push(ConfigProblem::new(location, message));
    }

    /// Records a duplicate at `place`, whose first occurrence is at `first`.
    fn report_duplicate(&mut self, place: Place, first: Place, message: String) {
        let mut problem = ConfigProblem::new(self.provenance.locate(place), message);
        problem.first = Some(self.provenance.locate(first));
        self.found.push(problem);
    }

    /// Whether the value at `place` was read (it is no stand-in).
    fn known(&self, place: Place) -> bool {
        self.provenance.stand_in(place).is_none()
    }

    /// Whether `value`, at `place`, was read and lies in `range`; reports
    /// `KEY VALUE CONTEXT is out of range` if it does not.
    fn in_range(
        &mut self,
        place: Place,
        value: i64,
        range: Range,
        key: &str,
        context: impl FnOnce() -> String,
    ) -> bool {
        if !self.known(place) {
            return false;
        }
        if range.contains(value) {
            return true;
        }
        let message = range.problem(key, value, &context());
        self.report(place, message);
        false
    }

    /// A Maglev table size: in range and prime. Whether it is.
    fn table_size(
        &mut self,
        place: Place,
        size: u32,
        key: &str,
        context: impl Fn() -> String,
    ) -> bool {
        if !self.in_range(place, i64::from(size), TABLE_SIZE, key, &context) {
            return false;
        }
        if is_prime(size) {
            return true;
        }
        // Both bounds are prime, so both neighbours of an in-range size are
        // in range too.
        let nearest: Vec<String> = [prev_prime(size), next_prime(size)]
            .into_iter()
            .flatten()
            .map(|n| n.to_string())
            .collect();
        let message = format!(
            "{key} {size}{} is not prime (nearest primes: {})",
            context(),
            nearest.join(", ")
        );
        self.report(place, message);
        false
    }

    /// `[gateway]`. Whether its table size is valid.
    fn gateway(&mut self) -> bool {
        let place = Place::field(Item::Gateway, "maglev_table_size");
        let size = self.config.gateway.maglev_table_size;
        self.table_size(place, size, "gateway.maglev_table_size", String::new)
    }

    /// `[daemon]`.
    fn daemon(&mut self) {
        let daemon = &self.config.daemon;
        let at = |key| Place::field(Item::Daemon, key);
        self.cores(&daemon.cores);
        let batch = i64::try_from(daemon.batch).unwrap_or(i64::MAX);
        self.in_range(at("batch"), batch, BATCH, "daemon.batch", String::new);
        let size = daemon.frame_size;
        let key = "daemon.frame_size";
        if self.in_range(at("frame_size"), size.into(), FRAME_SIZE, key, String::new)
            && size != 2048
            && size != 4096
        {
            self.report(
                at("frame_size"),
                format!("{key} {size} must be 2048 or 4096"),
            );
        }
        for (value, field, range) in [
            (daemon.frame_count, "frame_count", FRAME_COUNT),
            (daemon.rx_ring_size, "rx_ring_size", RING_SIZE),
            (daemon.tx_ring_size, "tx_ring_size", RING_SIZE),
            (daemon.fill_ring_size, "fill_ring_size", RING_SIZE),
            (
                daemon.completion_ring_size,
                "completion_ring_size",
                RING_SIZE,
            ),
        ] {
            let key = format!("daemon.{field}");
            if self.in_range(at(field), value.into(), range, &key, String::new)
                && !value.is_power_of_two()
            {
                self.report(at(field), format!("{key} {value} is not a power of two"));
            }
        }
        let socket = daemon.control_socket.as_os_str().as_bytes();
        if socket.is_empty() || socket.contains(&0) {
            let message = "daemon.control_socket must be a non-empty path".to_owned();
            self.report(at("control_socket"), message);
        } else if socket.len() > MAX_SOCKET_PATH {
            let message = format!(
                "daemon.control_socket is {} bytes long; a Unix socket path holds at most {MAX_SOCKET_PATH}",
                socket.len()
            );
            self.report(at("control_socket"), message);
        }
        let idle = daemon.control_idle_timeout_s.into();
        let key = "daemon.control_idle_timeout";
        let place = at("control_idle_timeout");
        self.in_range(place, idle, CONTROL_IDLE_TIMEOUT, key, String::new);
        self.metrics_endpoint(daemon);
        if daemon.log_level.trim().is_empty() {
            let message = "daemon.log_level must not be empty (e.g. \"info\")".to_owned();
            self.report(at("log_level"), message);
        }
        self.daemon_health();
    }

    /// `daemon.metrics_address` on loopback or a Unix socket path; the
    /// socket's mode and group only with a Unix socket.
    fn metrics_endpoint(&mut self, daemon: &DaemonSettings) {
        let at = |key| Place::field(Item::Daemon, key);
        match &daemon.metrics_address {
            Some(MetricsAddress::Tcp(address)) if !address.ip().is_loopback() => {
                self.report(at("metrics_address"), format!("daemon.metrics_address {address} is not a loopback address: metrics are served on loopback only (put a proxy in front to expose them, or use a Unix socket)"));
            }
            Some(MetricsAddress::Unix(path)) => {
                let bytes = path.as_os_str().as_bytes();
                if !path.is_absolute() || bytes.contains(&0) {
                    let message = format!(
                        "daemon.metrics_address unix:{} is not an absolute path",
                        path.display()
                    );
                    self.report(at("metrics_address"), message);
                } else if bytes.len() > MAX_SOCKET_PATH {
                    let message = format!("daemon.metrics_address unix:{} is {} bytes long; a Unix socket path holds at most {MAX_SOCKET_PATH}", path.display(), bytes.len());
                    self.report(at("metrics_address"), message);
                } else if path == &daemon.control_socket {
                    let message = format!(
                        "daemon.metrics_address unix:{} is the control socket's path",
                        path.display()
                    );
                    self.report(at("metrics_address"), message);
                }
            }
            _ => {}
        }
        let unix = matches!(daemon.metrics_address, Some(MetricsAddress::Unix(_)));
        for (key, set) in [
            ("metrics_socket_mode", daemon.metrics_socket_mode.is_some()),
            (
                "metrics_socket_group",
                daemon.metrics_socket_group.is_some(),
            ),
        ] {
            if set && !unix && self.known(at(key)) {
                let message = format!("daemon.{key} applies to a Unix metrics socket only: set metrics_address = \"unix:/PATH\" or remove it");
                self.report(at(key), message);
            }
        }
        if let Some(mode) = daemon.metrics_socket_mode {
            let key = "daemon.metrics_socket_mode";
            self.in_range(
                at("metrics_socket_mode"),
                mode.into(),
                SOCKET_MODE,
                key,
                || format!(" (0o{mode:o}; permission bits are at most 0o777)"),
            );
        }
    }

    /// `daemon.cores`: a non-empty list of distinct core numbers.
    fn cores(&mut self, cores: &[usize]) {
        let list = Place::field(Item::Daemon, "cores");
        if cores.is_empty() {
            let message = "daemon.cores is empty: list at least one core".to_owned();
            self.report(list, message);
            return;
        }
        if cores.len() > MAX_WORKERS {
            let message = format!(
                "daemon.cores lists {} cores; at most {MAX_WORKERS} workers are supported",
                cores.len()
            );
            self.report(list, message);
            return;
        }
        let mut seen = HashSet::with_capacity(cores.len());
        for (i, &core) in cores.iter().enumerate() {
            let place = Place::element(Item::Daemon, "cores", i);
            let value = i64::try_from(core).unwrap_or(i64::MAX);
            if self.in_range(place, value, CORE, "daemon.cores entry", String::new)
                && !seen.insert(core)
            {
                self.report(place, format!("daemon.cores lists core {core} twice"));
            }
        }
    }

    /// `[flows]`: capacity and timeouts in range.
    fn flows(&mut self) {
        let flows = &self.config.flows;
        let at = |key| Place::field(Item::Flows, key);
        let capacity = i64::try_from(flows.capacity).unwrap_or(i64::MAX);
        let key = "flows.capacity";
        self.in_range(at("capacity"), capacity, FLOW_CAPACITY, key, String::new);
        for (value, field) in [
            (flows.tcp_syn_timeout_s, "tcp_syn_timeout"),
            (flows.tcp_established_timeout_s, "tcp_established_timeout"),
            (flows.tcp_closing_timeout_s, "tcp_closing_timeout"),
            (flows.udp_timeout_s, "udp_timeout"),
        ] {
            let key = format!("flows.{field}");
            self.in_range(at(field), value.into(), TIMEOUT, &key, String::new);
        }
    }

    /// Interfaces: valid unique names, unicast MACs.
    fn interfaces(&mut self) {
        let interfaces = &self.config.interfaces;
        let mut first: HashMap<&str, usize> = HashMap::with_capacity(interfaces.len());
        for (i, interface) in interfaces.iter().enumerate() {
            let name = interface.name.as_str();
            let place = Place::field(Item::Interface(i), "name");
            if let Err(why) = check_interface_name(name) {
                self.report(place, format!("interface name {name:?} {why}"));
            } else if let Some(&j) = first.get(name) {
                let earlier = Place::field(Item::Interface(j), "name");
                let message = format!("interface {name:?} is listed twice");
                self.report_duplicate(place, earlier, message);
            } else {
                first.insert(name, i);
            }
            self.interface_vlans(i);
            let place = Place::field(Item::Interface(i), "mac");
            let Some(mac) = interface.mac else {
                continue;
            };
            if !self.known(place) {
                continue;
            }
            let problem = if mac == [0xff; 6] {
                Some("is the broadcast address")
            } else if !is_unicast_mac(&mac) {
                Some("is a multicast address")
            } else if mac == [0; 6] {
                Some("is all zeros")
            } else {
                None
            };
            if let Some(problem) = problem {
                let message = format!(
                    "MAC {} of interface {name:?} {problem}; an interface needs a unicast MAC",
                    format_mac(&mac)
                );
                self.report(place, message);
            }
        }
    }

    /// Interface `i`'s VLAN setting: ids in range, each listed once; an
    /// `egress_vlan` among the accepted ids; and something to send with
    /// when untagged frames are refused.
    fn interface_vlans(&mut self, i: usize) {
        let interface = &self.config.interfaces[i];
        let (name, vlan) = (&interface.name, &interface.vlan);
        let item = Item::Interface(i);
        let key = "interfaces.vlans entry";
        let mut first: HashMap<u16, usize> = HashMap::with_capacity(vlan.accepted.len());
        for (k, &id) in vlan.accepted.iter().enumerate() {
            let place = Place::element(item, "vlans", k);
            if !self.in_range(place, id.into(), VLAN_ID, key, String::new) {
                continue;
            }
            if let Some(&j) = first.get(&id) {
                let earlier = Place::element(item, "vlans", j);
                let message = format!("interface {name:?} lists VLAN {id} twice");
                self.report_duplicate(place, earlier, message);
            } else {
                first.insert(id, k);
            }
        }
        let place = Place::field(item, "egress_vlan");
        if let Some(id) = vlan.egress {
            let key = "interfaces.egress_vlan";
            if self.in_range(place, id.into(), VLAN_ID, key, String::new)
                && !vlan.accepted.contains(&id)
            {
                let message = format!(
                    "egress_vlan {id} of interface {name:?} is not one of its vlans; \
                     add it to vlans (replies on it must be accepted too)"
                );
                self.report(place, message);
            }
        } else if !vlan.untagged {
            let message = format!(
                "interface {name:?} refuses untagged frames (untagged = false) \
                 but has no egress_vlan to tag what it sends"
            );
            self.report(Place::field(item, "untagged"), message);
        }
    }

    /// Static neighbours: unique usable addresses, station MACs, an
    /// interface that exists. (A neighbour may have a multicast MAC: some
    /// clusters answer a unicast address with one.)
    fn neighbours(&mut self) {
        let config = self.config;
        let mut first: HashMap<IpAddr, usize> = HashMap::with_capacity(config.neighbours.len());
        for (i, neighbour) in config.neighbours.iter().enumerate() {
            let item = Item::Neighbour(i);
            let address = neighbour.address;
            let address_place = Place::field(item, "address");
            if self.known(address_place) {
                if let Some(problem) = address_problem(address) {
                    let message = format!("neighbour address {address} {problem}");
                    self.report(address_place, message);
                } else if let Some(&j) = first.get(&address) {
                    let earlier = Place::field(Item::Neighbour(j), "address");
                    let message = format!("neighbour {address} is listed twice");
                    self.report_duplicate(address_place, earlier, message);
                } else {
                    first.insert(address, i);
                }
            }
            let shown_address = || shown(self.provenance, address_place, &address);
            let place = Place::field(item, "mac");
            let mac = neighbour.mac;
            let problem = if !self.known(place) {
                None
            } else if mac == [0xff; 6] {
                Some("is the broadcast address")
            } else if mac == [0; 6] {
                Some("is all zeros")
            } else {
                None
            };
            if let Some(problem) = problem {
                let message = format!(
                    "MAC {} of neighbour {} {problem}",
                    format_mac(&mac),
                    shown_address()
                );
                self.report(place, message);
            }
            let place = Place::field(item, "interface");
            if self.known(place) && neighbour.interface >= config.interfaces.len() {
                let message = format!(
                    "neighbour {} is on interface #{}, but there are only {} interfaces",
                    shown_address(),
                    neighbour.interface,
                    config.interfaces.len()
                );
                self.report(place, message);
            }
        }
    }

    /// Services and their backends. `gateway_ok`: the gateway's table
    /// size, which services inherit, is valid; `health_known`: `[health]`,
    /// which their checks inherit, could be judged.
    fn services(&mut self, gateway_ok: bool, health_known: bool) {
        let services = &self.config.services;
        let mut names: HashMap<&str, usize> = HashMap::with_capacity(services.len());
        let mut listeners: HashMap<_, usize> = HashMap::with_capacity(services.len());
        // The first service of each VIP address: the others must announce
        // it the same way.
        let mut announcers: HashMap<IpAddr, usize> = HashMap::with_capacity(services.len());
        for (i, service) in services.iter().enumerate() {
            let name = service.name.as_str();
            let place = Place::service(i, "name");
            if !is_valid_name(name) {
                self.report(place, format!("service name {name:?} {}", name_rule()));
            } else if let Some(&j) = names.get(name) {
                let message = format!("service {name:?} is defined twice");
                self.report_duplicate(place, Place::service(j, "name"), message);
            } else {
                names.insert(name, i);
            }

            let vip = Place::service(i, "vip");
            let vip_ok = self.known(vip)
                && self.usable(vip, service.vip, || {
                    format!("VIP {} of service {name:?}", service.vip)
                });
            let port = i64::from(service.port);
            let port_ok = self.in_range(Place::service(i, "port"), port, PORT, "port", || {
                of_service(name)
            });
            if vip_ok && port_ok && self.known(Place::service(i, "protocol")) {
                let key = (service.protocol, service.vip, service.port);
                if let Some(&j) = listeners.get(&key) {
                    let message = format!(
                        "{} {} of service {name:?} is already used by service {:?}",
                        service.protocol,
                        service.socket_addr(),
                        services[j].name
                    );
                    self.report_duplicate(vip, Place::service(j, "vip"), message);
                } else {
                    listeners.insert(key, i);
                }
            }
            if vip_ok {
                self.announce_agrees(i, service, &mut announcers);
            }

            self.backends(i, service, vip_ok);
            self.weights(i, service);
            self.service_table(i, service, gateway_ok);
            self.failover(i, service);
            self.fanout(i, service);
            self.over_limit(i, service);
            self.service_health(i, service, health_known);
        }
    }

    /// A fan-out service is UDP: a byte stream cannot be split at L4.
    /// Flow limits count and cap new connections, which fan-out does not
    /// make: on a fan-out service they would be silently ignored.
    fn fanout(&mut self, i: usize, service: &Service) {
        if service.scheduler.fanout().is_none() {
            return;
        }
        let capped = service.backends.iter().any(|b| b.max_connections.is_some());
        if service.limits != FlowLimits::default() || capped {
            let message = format!(
                "service {:?} fans out: flow limits and connection caps apply to new \
                 connections, which a fan-out service does not make; remove them",
                service.name
            );
            self.report(Place::service(i, "scheduler"), message);
        }
        if service.protocol != Protocol::Tcp || !self.known(Place::service(i, "protocol")) {
            return;
        }
        let message = format!(
            "scheduler \"fanout\" of service {:?} needs protocol \"udp\": \
             a TCP byte stream cannot be copied to several backends",
            service.name
        );
        self.report(Place::service(i, "scheduler"), message);
    }

    /// A VIP address is announced one way only: service `i` must announce
    /// its VIP as the first service of that address does (`first`), so
    /// that one gateway never answers ARP for a VIP another path routes.
    fn announce_agrees(&mut self, i: usize, service: &Service, first: &mut HashMap<IpAddr, usize>) {
        let services = &self.config.services;
        match first.get(&service.vip) {
            None => {
                first.insert(service.vip, i);
            }
            Some(&j) => {
                let other = &services[j];
                if other.announce != service.announce {
                    let message = format!(
                        "service {:?} announces VIP {} by {}, but service {:?} of the same VIP by {}: \
                         a VIP address is announced one way, so every service of it must set the \
                         same announce",
                        service.name, service.vip, service.announce, other.name, other.announce
                    );
                    self.report_duplicate(
                        Place::service(i, "announce"),
                        Place::service(j, "announce"),
                        message,
                    );
                }
            }
        }
    }

    /// A service's `panic_threshold` in range, and `on_backend_down` only
    /// on TCP.
    fn failover(&mut self, i: usize, service: &Service) {
        let name = service.name.as_str();
        let failover = &service.failover;
        let place = Place::service(i, "panic_threshold");
        let threshold = i64::from(failover.panic_threshold);
        let key = "panic_threshold";
        self.in_range(place, threshold, PANIC_THRESHOLD, key, || of_service(name));
        let place = Place::service(i, "on_backend_down");
        if let Some(policy) = failover.on_backend_down {
            if service.protocol == Protocol::Udp && self.known(Place::service(i, "protocol")) {
                let message = format!(
                    "on_backend_down \"{policy}\" of service {name:?} applies to TCP only: \
                     a UDP flow of a down backend is always rescheduled"
                );
                self.report(place, message);
            }
        }
    }

    /// `over_limit = "reset"` only on a TCP service: a RST exists only in
    /// TCP.
    fn over_limit(&mut self, i: usize, service: &Service) {
        let action = service.limits.over_limit;
        if !self.known(Place::service(i, "protocol")) {
            return;
        }
        if let Err(e) = action.check_protocol(service.protocol.number()) {
            let message = format!("{e}{}", of_service(&service.name));
            self.report(Place::service(i, "limits.over_limit"), message);
        }
    }

    /// Whether `address` can be a packet's destination or source here;
    /// reports `DESCRIPTION PROBLEM` at `place` if not.
    fn usable(&mut self, place: Place, address: IpAddr, describe: impl FnOnce() -> String) -> bool {
        match address_problem(address) {
            Some(problem) => {
                let message = format!("{} {problem}", describe());
                self.report(place, message);
                false
            }
            None => true,
        }
    }

    /// A service's backends: usable addresses of the VIP's family, ports in
    /// range, no duplicates, weights in range, valid labels.
    fn backends(&mut self, i: usize, service: &Service, vip_ok: bool) {
        let name = service.name.as_str();
        let mut first: HashMap<(IpAddr, u16), usize> =
            HashMap::with_capacity(service.backends.len());
        for (j, backend) in service.backends.iter().enumerate() {
            let address = backend.address;
            let address_place = Place::backend(i, j, "address");
            let address_ok = self.known(address_place)
                && self.usable(address_place, address, || {
                    format!("backend {address} of service {name:?}")
                });
            if address_ok && vip_ok && address.is_ipv4() != service.vip.is_ipv4() {
                let message = format!(
                    "backend {address} of service {name:?} is {} but its VIP {} is {}",
                    family(address),
                    service.vip,
                    family(service.vip)
                );
                self.report(address_place, message);
            }
            let port_place = Place::backend(i, j, "port");
            let provenance = self.provenance;
            let port_ok = self.in_range(port_place, backend.port.into(), PORT, "port", || {
                of_backend_address(&shown(provenance, address_place, &address), name)
            });
            if address_ok && port_ok {
                if let Some(&k) = first.get(&(address, backend.port)) {
                    let message = format!(
                        "backend {} is listed twice in service {name:?}",
                        SocketAddr::new(address, backend.port)
                    );
                    let earlier = Place::backend(i, k, "address");
                    self.report_duplicate(address_place, earlier, message);
                } else {
                    first.insert((address, backend.port), j);
                }
            }
            self.backend_weight_and_labels(i, j, backend, name);
        }
    }

    /// Backend `j` of service `i` (called `service`): its weight in range
    /// and its labels valid.
    fn backend_weight_and_labels(&mut self, i: usize, j: usize, backend: &Backend, service: &str) {
        let provenance = self.provenance;
        let context = || {
            let address = shown(
                provenance,
                Place::backend(i, j, "address"),
                &backend.address,
            );
            let port = shown(provenance, Place::backend(i, j, "port"), &backend.port);
            of_backend(&address, &port, service)
        };
        let place = Place::backend(i, j, "weight");
        self.in_range(place, backend.weight.into(), WEIGHT, "weight", context);
        for (key, label) in [("zone", &backend.zone), ("group", &backend.group)] {
            if let Some(label) = label {
                if !is_valid_name(label) {
                    let message = format!("{key} {label:?}{} {}", context(), name_rule());
                    self.report(Place::backend(i, j, key), message);
                }
            }
        }
        if let Some(set) = &backend.set {
            if SetName::parse(set).is_none() {
                let message = format!("set {set:?}{} {}", context(), set_rule());
                self.report(Place::backend(i, j, "set"), message);
            }
        }
    }

    /// A service needs backends, and at least one that takes new flows.
    fn weights(&mut self, i: usize, service: &Service) {
        let place = Place::item(Item::Service(i));
        let name = &service.name;
        if service.backends.is_empty() {
            self.report(place, format!("service {name:?} has no backends"));
            return;
        }
        // A weight that could not be read is not known to be 0.
        let all_drained = service.backends.iter().all(|b| b.weight == 0)
            && (0..service.backends.len()).all(|j| self.known(Place::backend(i, j, "weight")));
        if all_drained {
            let message = format!(
                "service {name:?} has no backend with weight > 0 (all {} are drained)",
                service.backends.len()
            );
            self.report(place, message);
        }
    }

    /// A service's Maglev table size: valid, and larger than its number of
    /// backends. A size equal to the gateway's is the gateway's (or the
    /// same value), which is checked once, under `[gateway]`.
    fn service_table(&mut self, i: usize, service: &Service, gateway_ok: bool) {
        let place = Place::service(i, "maglev_table_size");
        let size = service.maglev_table_size;
        let name = &service.name;
        let inherited = size == self.config.gateway.maglev_table_size;
        let valid = if inherited {
            gateway_ok && self.known(place)
        } else {
            self.table_size(place, size, "maglev_table_size", || of_service(name))
        };
        let count = service.backends.len();
        if !valid || u64::try_from(count).unwrap_or(u64::MAX) < u64::from(size) {
            return;
        }
        let message = if inherited {
            format!(
                "service {name:?} has {count} backends, not fewer than gateway.maglev_table_size \
                 {size}: set a larger maglev_table_size (100 times the backends is recommended)"
            )
        } else {
            format!(
                "maglev_table_size {size} of service {name:?} must be larger than its {count} \
                 backends (100 times larger is recommended)"
            )
        };
        self.report(place, message);
    }
}

/// The value at `place` for a message: as written, for a stand-in.
pub(super) fn shown(provenance: &dyn Provenance, place: Place, value: &dyn Display) -> String {
    match provenance.stand_in(place) {
        Some(text) => text.to_owned(),
        None => value.to_string(),
    }
}

/// Why Linux would refuse `name` as an interface name, if it would.
pub(super) fn check_interface_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("is empty".into())
    } else if name.len() > MAX_INTERFACE_NAME_LEN {
        Err(format!(
            "is longer than {MAX_INTERFACE_NAME_LEN} bytes (the kernel's IFNAMSIZ limit)"
        ))
    } else if name == "." || name == ".." {
        Err("is reserved".into())
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        Err("may not contain '/', ':', whitespace or control characters".into())
    } else {
        Ok(())
    }
}

/// Why `address` cannot be a packet's destination or source here, if it
/// cannot: unspecified, multicast, broadcast, loopback, or IPv4-mapped
/// (the data plane keys IPv4 as IPv4-mapped, so the two spellings would be
/// the same address).
pub(super) fn address_problem(address: IpAddr) -> Option<&'static str> {
    match address {
        _ if address.is_unspecified() => Some("is the unspecified address"),
        _ if address.is_multicast() => Some("is a multicast address"),
        _ if address.is_loopback() => Some("is a loopback address"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("is the broadcast address"),
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            Some("is an IPv4-mapped IPv6 address: write the IPv4 address")
        }
        _ => None,
    }
}

/// What [`is_valid_name`] demands, as the end of an error message.
pub(super) fn name_rule() -> String {
    format!("is not valid: use 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 _ . -")
}

/// What [`SetName::parse`] demands, as the end of an error message.
pub(super) fn set_rule() -> String {
    format!(
        "is not a SET name: write name.area.group, three parts of A-Z a-z 0-9 _ - \
         (the group may be *), at most {MAX_NAME_LEN} bytes"
    )
}

/// Service names, backend names and labels: `[A-Za-z0-9_.-]{1,64}`.
pub(super) fn is_valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `IPv4` or `IPv6`.
fn family(address: IpAddr) -> &'static str {
    match address {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{check, load_file, load_str, Announce, Backend, Neighbour, Protocol};
    use std::path::Path;

    /// A valid config with every section, as text.
    const BASE: &str = r#"
[gateway]
maglev_table_size = 251

[[interfaces]]
name = "eth0"
mac = "02:00:00:00:00:01"

[[interfaces]]
name = "eth1"
mac = "02:00:00:00:00:02"

[[neighbours]]
address = "198.18.1.11"
mac = "02:00:00:00:01:11"
interface = "eth1"

[[services]]
name = "web"
protocol = "tcp"
vip = "198.18.100.10"
port = 80
[[services.backends]]
address = "198.18.1.11"
port = 8080
[[services.backends]]
address = "198.18.1.12"
port = 8080
weight = 2

[[services]]
name = "web6"
protocol = "tcp"
vip = "2001:2:0:100::10"
port = 80
[[services.backends]]
address = "2001:2:0:1::11"
port = 8080
"#;

    fn base() -> Config {
        load_str(BASE, "t.toml").unwrap()
    }

    /// The messages of `problems`, without their locations.
    fn messages(problems: &[ConfigProblem]) -> Vec<String> {
        problems.iter().map(|p| p.message.clone()).collect()
    }

    /// The loader's messages for `text`.
    fn loader_messages(text: &str) -> Vec<String> {
        messages(
            load_str(text, "t.toml")
                .expect_err("text was accepted")
                .problems(),
        )
    }

    /// The validator's messages for a model built in code.
    fn check_messages(config: &Config) -> Vec<String> {
        messages(check(config).expect_err("model was accepted").problems())
    }

    /// The same problem, written in a file and made in the model, reads the
    /// same: one validator judges both.
    fn same(edit_text: impl Fn(&str) -> String, edit_model: impl Fn(&mut Config)) {
        let text = edit_text(BASE);
        assert_ne!(text, BASE, "the text edit did nothing");
        let mut model = base();
        edit_model(&mut model);
        assert_eq!(check_messages(&model), loader_messages(&text), "{text}");
    }

    fn replace(from: &'static str, to: &'static str) -> impl Fn(&str) -> String {
        move |t: &str| t.replacen(from, to, 1)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn valid_configs_pass() {
        assert!(check(&base()).is_ok());
        assert!(check(&Config::default()).is_ok());
        let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        for name in ["demo.toml", "example.toml", "routing.toml"] {
            let config = load_file(&configs.join(name)).unwrap();
            if let Err(e) = check(&config) {
                panic!("{name}: {e}");
            }
        }
    }

    #[test]
    fn duplicate_service_name_and_listener() {
        same(replace("name = \"web6\"", "name = \"web\""), |c| {
            c.services[1].name = "web".into()
        });
        same(
            replace("vip = \"2001:2:0:100::10\"", "vip = \"198.18.100.10\""),
            |c| {
                c.services[1].vip = ip("198.18.100.10");
                // The backend's family now differs from the VIP's too.
            },
        );
    }

    #[test]
    fn services_of_one_vip_announce_it_the_same_way() {
        let two = |a: &str, b: &str| {
            format!(
                "[[services]]\nname = \"web\"\nprotocol = \"tcp\"\nvip = \"198.18.0.50\"\nport = 80\n{a}\
                 [[services.backends]]\naddress = \"198.18.1.11\"\nport = 8080\n\
                 [[services]]\nname = \"dns\"\nprotocol = \"udp\"\nvip = \"198.18.0.50\"\nport = 53\n{b}\
                 [[services.backends]]\naddress = \"198.18.1.11\"\nport = 53\n"
            )
        };
        // Agreeing, or the default on both: accepted.
        let config = load_str(
            &two("announce = \"arp\"\n", "announce = \"arp\"\n"),
            "t.toml",
        )
        .unwrap();
        assert!(config.services.iter().all(|s| s.announce == Announce::Arp));
        let config = load_str(&two("", "announce = \"none\"\n"), "t.toml").unwrap();
        assert!(config.services.iter().all(|s| s.announce == Announce::None));

        // Disagreeing: one problem, at the second service's key, naming
        // the first.
        let e = load_str(&two("", "announce = \"arp\"\n"), "t.toml").unwrap_err();
        let [problem] = e.problems() else {
            panic!("{e}")
        };
        assert_eq!(
            problem.message,
            "service \"dns\" announces VIP 198.18.0.50 by arp, but service \"web\" of the same VIP \
             by none: a VIP address is announced one way, so every service of it must set the \
             same announce"
        );
        assert_eq!(problem.location.to_string(), "t.toml:14:12");
        // The first service gave no key: its name is where it is.
        assert_eq!(problem.first.as_ref().unwrap().to_string(), "t.toml:2:8");

        // The same fault made in the model reads the same.
        let mut model = load_str(&two("", ""), "t.toml").unwrap();
        model.services[1].announce = Announce::Arp;
        assert_eq!(
            check_messages(&model),
            std::slice::from_ref(&problem.message)
        );

        // bgp on both: accepted; bgp against arp: the same problem.
        let config = load_str(
            &two("announce = \"bgp\"\n", "announce = \"bgp\"\n"),
            "t.toml",
        )
        .unwrap();
        assert!(config.services.iter().all(|s| s.announce == Announce::Bgp));
        let e = load_str(
            &two("announce = \"bgp\"\n", "announce = \"arp\"\n"),
            "t.toml",
        )
        .unwrap_err();
        assert_eq!(e.problems().len(), 1, "{e}");
    }

    #[test]
    fn backend_family_duplicate_weight_and_labels() {
        same(
            replace("address = \"2001:2:0:1::11\"", "address = \"198.18.1.11\""),
            |c| c.services[1].backends[0].address = ip("198.18.1.11"),
        );
        same(
            replace("address = \"198.18.1.12\"", "address = \"198.18.1.11\""),
            |c| c.services[0].backends[1].address = ip("198.18.1.11"),
        );
        same(replace("weight = 2", "weight = 10001"), |c| {
            c.services[0].backends[1].weight = 10_001
        });
        same(replace("weight = 2", "weight = 2\nzone = \"a b\""), |c| {
            c.services[0].backends[1].zone = Some("a b".into())
        });
        same(
            replace(
                "port = 8080\n[[services.backends]]",
                "port = 0\n[[services.backends]]",
            ),
            |c| c.services[0].backends[0].port = 0,
        );
        same(
            replace(
                "address = \"2001:2:0:1::11\"",
                "address = \"::ffff:198.18.1.11\"",
            ),
            |c| c.services[1].backends[0].address = ip("::ffff:198.18.1.11"),
        );
    }

    #[test]
    fn services_need_weighted_backends() {
        same(
            |t| {
                t.replacen("weight = 2", "weight = 0", 1).replacen(
                    "port = 8080\n[[services.backends]]",
                    "port = 8080\nweight = 0\n[[services.backends]]",
                    1,
                )
            },
            |c| {
                for b in &mut c.services[0].backends {
                    b.weight = 0;
                }
            },
        );
        let text = BASE.split("[[services]]\nname = \"web6\"").next().unwrap().to_owned()
            + "[[services]]\nname = \"none\"\nprotocol = \"udp\"\nvip = \"198.18.100.11\"\nport = 53\n";
        let mut model = base();
        model.services[1] = Service {
            limits: Default::default(),

            announce: Default::default(),
            name: "none".into(),
            protocol: Protocol::Udp,
            vip: ip("198.18.100.11"),
            port: 53,
            scheduler: Default::default(),
            maglev_table_size: 251,
            failover: Default::default(),
            health: Default::default(),
            backends: Vec::new(),
            routing: Default::default(),
        };
        assert_eq!(check_messages(&model), loader_messages(&text));
    }

    #[test]
    fn names_ports_and_addresses() {
        same(replace("name = \"web\"", "name = \"w b\""), |c| {
            c.services[0].name = "w b".into()
        });
        same(replace("port = 80\n", "port = 0\n"), |c| {
            c.services[0].port = 0
        });
        same(
            replace("vip = \"198.18.100.10\"", "vip = \"127.0.0.1\""),
            |c| c.services[0].vip = ip("127.0.0.1"),
        );
        same(replace("name = \"eth0\"", "name = \"eth1\""), |c| {
            c.interfaces[0].name = "eth1".into();
        });
    }

    #[test]
    fn table_sizes() {
        same(
            replace("maglev_table_size = 251", "maglev_table_size = 252"),
            |c| {
                // The loader resolves every service's size from the gateway's.
                c.gateway.maglev_table_size = 252;
            },
        );
        same(
            replace("port = 80\n", "port = 80\nmaglev_table_size = 256\n"),
            |c| c.services[0].maglev_table_size = 256,
        );
        same(
            replace("port = 80\n", "port = 80\nmaglev_table_size = 13\n"),
            |c| c.services[0].maglev_table_size = 13,
        );
        // More backends than table entries.
        let mut text = BASE.replacen("port = 80\n", "port = 80\nmaglev_table_size = 257\n", 1);
        let mut model = base();
        model.services[0].maglev_table_size = 257;
        let extra = (0..256u32).map(|i| (format!("198.18.2.{}", i % 256), 9000 + i as u16));
        let mut block = String::new();
        for (address, port) in extra {
            block.push_str(&format!(
                "[[services.backends]]\naddress = \"{address}\"\nport = {port}\n"
            ));
            model.services[0]
                .backends
                .push(Backend::new(ip(&address), port));
        }
        text = text.replacen(
            "\n[[services]]\nname = \"web6\"",
            &format!("\n{block}[[services]]\nname = \"web6\""),
            1,
        );
        assert_eq!(check_messages(&model), loader_messages(&text));
    }

    #[test]
    fn settings_interfaces_and_neighbours() {
        let mut model = base();
        model.flows.capacity = 0;
        model.flows.udp_timeout_s = 0;
        model.interfaces[0].mac = Some([0x01, 0, 0x5e, 0, 0, 1]);
        model.neighbours.push(model.neighbours[0].clone());
        model.neighbours[1].mac = [0xff; 6];
        model.neighbours.push(Neighbour {
            address: ip("198.18.1.12"),
            mac: [2, 0, 0, 0, 1, 0x12],
            interface: 2,
        });
        assert_eq!(
            check_messages(&model),
            [
                "flows.capacity 0 is out of range 1..=67108864",
                "flows.udp_timeout 0 is out of range 1..=604800",
                "MAC 01:00:5e:00:00:01 of interface \"eth0\" is a multicast address; an interface needs a unicast MAC",
                "neighbour 198.18.1.11 is listed twice",
                "MAC ff:ff:ff:ff:ff:ff of neighbour 198.18.1.11 is the broadcast address",
                "neighbour 198.18.1.12 is on interface #2, but there are only 2 interfaces",
            ]
        );
    }

    #[test]
    fn reports_every_problem_in_config_order() {
        let mut model = base();
        model.services[0].backends[0].weight = 20_000;
        model.services[1].name = "web".into();
        model.services[1].backends[0].port = 0;
        let problems = check_messages(&model);
        assert_eq!(problems.len(), 3, "{problems:?}");
        // Built in code: no location, so each displays as its message.
        assert!(problems[0].starts_with("weight 20000 of backend 198.18.1.11:8080"));
        assert_eq!(problems[1], "service \"web\" is defined twice");
        assert!(problems[2].starts_with("port 0 of backend 2001:2:0:1::11"));
        let error = check(&model).unwrap_err();
        assert_eq!(error.to_string().lines().count(), 3);
    }

    proptest::proptest! {
        /// Whatever the loader accepts, the validator accepts in memory too
        /// (as the control API re-validates the running rules it edits).
        #[test]
        fn accepts_what_the_loader_accepts(
            services in proptest::collection::vec(
                (0u8..4, 0u16..3, proptest::collection::vec((0u8..5, 0u16..3, 0u32..3), 0..4)),
                0..4,
            )
        ) {
            let mut text = String::from("[gateway]\nmaglev_table_size = 251\n");
            for (i, (vip, port, backends)) in services.iter().enumerate() {
                text.push_str(&format!(
                    "[[services]]\nname = \"s{i}\"\nprotocol = \"tcp\"\nvip = \"198.19.0.{vip}\"\nport = {port}\n"
                ));
                for (host, bport, weight) in backends {
                    text.push_str(&format!(
                        "[[services.backends]]\naddress = \"198.18.0.{host}\"\nport = {bport}\nweight = {weight}\n"
                    ));
                }
            }
            if let Ok(config) = load_str(&text, "p.toml") {
                proptest::prop_assert!(check(&config).is_ok());
            }
        }
    }
}
