//! Turns a config file's raw TOML shape into the model.
//!
//! Decoding does only what must happen before a model exists: it reads each
//! value into the model's type — an address, a MAC, a protocol or scheduler
//! name, an interface name resolved to its index, a number into an integer
//! type that can hold it — and reports each value that cannot be read at
//! its place. All of them are collected. A value that could not be read is
//! replaced by a stand-in and recorded as one, so that the validator skips
//! whatever depends on it. Every rule about values that *can* be read
//! (ranges, duplicates, families, weights, table sizes...) is the
//! validator's.
//!
//! Model indices are raw indices: `services[i]` of the model is the `i`-th
//! `[[services]]` of the file. That is what lets the file's provenance find
//! the text of any place.

mod health;
mod routing;

use hashbrown::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use toml::Spanned;

use super::limits::{backend_cap, limits_key};
use super::parse;
use super::place::{Item, Place};
use super::raw::{
    RawBackend, RawConfig, RawDaemon, RawFlows, RawIngress, RawInterface, RawNeighbour, RawService,
};
use super::validate::{
    of_backend, of_backend_address, of_service, Range, BATCH, CONTROL_IDLE_TIMEOUT, CORE,
    FLOW_CAPACITY, FRAME_COUNT, FRAME_SIZE, PANIC_THRESHOLD, PORT, RING_SIZE, SOCKET_MODE,
    TABLE_SIZE, TIMEOUT, VLAN_ID, WEIGHT,
};
use super::{
    Backend, BindModeSetting, ClientPrefix, Config, DaemonSettings, Failover, FastPathSetting,
    FlowLimits, FlowSettings, GatewaySettings, IdlePolicy, IngressSettings, Interface,
    InterfaceVlans, LogFormatSetting, MetricsAddress, Neighbour, Protocol, Scheduler, Service,
    XdpModeSetting, DEFAULT_MAGLEV_TABLE_SIZE,
};
use crate::synproxy::mode::DEFAULT_AUTO_SYNS_PER_S;
use crate::synproxy::SynProxy;

/// A decoded config: the model, with stand-ins where values could not be
/// read, and the problems that say why.
pub(super) struct Decoded {
    /// The model.
    pub config: Config,
    /// The places holding a stand-in, with the text as written.
    pub stand_ins: HashMap<Place, String>,
    /// What could not be read, where, in the order found.
    pub problems: Vec<(Place, String)>,
}

/// Decodes `raw` into the model.
pub(super) fn decode(raw: &RawConfig) -> Decoded {
    let mut d = Decoder {
        stand_ins: HashMap::new(),
        problems: Vec::new(),
    };
    let gateway_size = match &raw.gateway.maglev_table_size {
        None => Ok(DEFAULT_MAGLEV_TABLE_SIZE),
        Some(size) => {
            let place = Place::field(Item::Gateway, "maglev_table_size");
            let key = "gateway.maglev_table_size";
            d.int(size, place, TABLE_SIZE, key, String::new)
                .ok_or_else(|| size.get_ref().to_string())
        }
    };
    let config = Config {
        gateway: GatewaySettings {
            maglev_table_size: gateway_size
                .as_ref()
                .map_or(DEFAULT_MAGLEV_TABLE_SIZE, |s| *s),
        },
        daemon: d.daemon(&raw.daemon),
        flows: d.flows(&raw.flows),
        health: d.health(&raw.health),
        interfaces: raw
            .interfaces
            .iter()
            .enumerate()
            .map(|(i, interface)| {
                let name = interface.name.get_ref();
                let mac = interface.mac.as_ref().map(|mac| {
                    d.read(Place::field(Item::Interface(i), "mac"), mac, |text| {
                        parse::mac(text, &format!("interface {name:?}"))
                    })
                    .unwrap_or_default()
                });
                Interface {
                    name: name.clone(),
                    mac,
                    vlan: d.interface_vlans(i, interface),
                }
            })
            .collect(),
        neighbours: d.neighbours(raw),
        services: raw
            .services
            .iter()
            .enumerate()
            .map(|(i, service)| d.service(i, service, &gateway_size))
            .collect(),
        routing: d.routing(&raw.routing),
        ingress: d.ingress(&raw.ingress),
    };
    Decoded {
        config,
        stand_ins: d.stand_ins,
        problems: d.problems,
    }
}

/// What decoding has found so far.
struct Decoder {
    stand_ins: HashMap<Place, String>,
    problems: Vec<(Place, String)>,
}

impl Decoder {
    /// Records that the value at `place`, written as `written`, could not be
    /// read, and why.
    fn fail(&mut self, place: Place, message: String, written: String) {
        self.problems.push((place, message));
        self.stand_ins.insert(place, written);
    }

    /// Reads the text at `place` with `parse`.
    fn read<T>(
        &mut self,
        place: Place,
        value: &Spanned<String>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match parse(value.get_ref()) {
            Ok(v) => Some(v),
            Err(message) => {
                self.fail(place, message, value.get_ref().clone());
                None
            }
        }
    }

    /// Reads a number into the model's integer type. One that type cannot
    /// hold is out of `range` too; it is reported in the validator's words.
    fn int<T: TryFrom<i64>>(
        &mut self,
        value: &Spanned<i64>,
        place: Place,
        range: Range,
        key: &str,
        context: impl FnOnce() -> String,
    ) -> Option<T> {
        let v = *value.get_ref();
        match T::try_from(v) {
            Ok(n) => Some(n),
            Err(_) => {
                debug_assert!(!range.contains(v), "{key}: a range wider than its type");
                self.fail(place, range.problem(key, v, &context()), v.to_string());
                None
            }
        }
    }

    /// One of a fixed set of names.
    fn choice<T: Copy>(
        &mut self,
        value: &Option<Spanned<String>>,
        field: &'static str,
        options: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(value) = value else {
            return default;
        };
        if let Some((_, v)) = options.iter().find(|(name, _)| name == value.get_ref()) {
            return *v;
        }
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        let message = format!(
            "daemon.{field} {:?} is not one of: {}",
            value.get_ref(),
            names.join(", ")
        );
        let place = Place::field(Item::Daemon, field);
        self.fail(place, message, value.get_ref().clone());
        default
    }

    /// An interface's VLAN setting; an id no `u16` holds stands in as 0
    /// (refused by the validator already).
    fn interface_vlans(&mut self, i: usize, raw: &RawInterface) -> InterfaceVlans {
        let item = Item::Interface(i);
        let key = "interfaces.vlans entry";
        let accepted = raw.vlans.as_ref().map_or_else(Vec::new, |list| {
            list.get_ref()
                .iter()
                .enumerate()
                .map(|(k, id)| {
                    let place = Place::element(item, "vlans", k);
                    self.int(id, place, VLAN_ID, key, String::new).unwrap_or(0)
                })
                .collect()
        });
        let egress = raw.egress_vlan.as_ref().map(|id| {
            let place = Place::field(item, "egress_vlan");
            let key = "interfaces.egress_vlan";
            self.int(id, place, VLAN_ID, key, String::new).unwrap_or(0)
        });
        InterfaceVlans {
            accepted,
            untagged: raw.untagged.as_ref().is_none_or(|u| *u.get_ref()),
            egress,
        }
    }

    /// `[ingress]`; a bogon prefix that cannot be read stands in as
    /// 0.0.0.0/32 (a martian already).
    fn ingress(&mut self, raw: &RawIngress) -> IngressSettings {
        let bogons = raw.bogons.as_ref().map_or_else(Vec::new, |list| {
            list.get_ref()
                .iter()
                .enumerate()
                .map(|(k, text)| {
                    let place = Place::element(Item::Ingress, "bogons", k);
                    self.read(place, text, |t| {
                        parse::client_prefix(t, "ingress bogon prefix")
                    })
                    .unwrap_or_else(|| ClientPrefix::host([0, 0, 0, 0].into()))
                })
                .collect()
        });
        IngressSettings { bogons }
    }

    /// `[daemon]`; a value that cannot be read is replaced by its default.
    fn daemon(&mut self, raw: &RawDaemon) -> DaemonSettings {
        let mut d = DaemonSettings::default();
        let at = |key| Place::field(Item::Daemon, key);
        if let Some(list) = &raw.cores {
            d.cores = list
                .get_ref()
                .iter()
                .enumerate()
                .map(|(i, core)| {
                    let place = Place::element(Item::Daemon, "cores", i);
                    let key = "daemon.cores entry";
                    self.int(core, place, CORE, key, String::new).unwrap_or(0)
                })
                .collect();
        }
        if let Some(batch) = &raw.batch {
            let key = "daemon.batch";
            if let Some(n) = self.int(batch, at("batch"), BATCH, key, String::new) {
                d.batch = n;
            }
        }
        for (value, field, range, slot) in [
            (&raw.frame_size, "frame_size", FRAME_SIZE, &mut d.frame_size),
            (
                &raw.frame_count,
                "frame_count",
                FRAME_COUNT,
                &mut d.frame_count,
            ),
            (
                &raw.rx_ring_size,
                "rx_ring_size",
                RING_SIZE,
                &mut d.rx_ring_size,
            ),
            (
                &raw.tx_ring_size,
                "tx_ring_size",
                RING_SIZE,
                &mut d.tx_ring_size,
            ),
            (
                &raw.fill_ring_size,
                "fill_ring_size",
                RING_SIZE,
                &mut d.fill_ring_size,
            ),
            (
                &raw.completion_ring_size,
                "completion_ring_size",
                RING_SIZE,
                &mut d.completion_ring_size,
            ),
            (
                &raw.control_idle_timeout,
                "control_idle_timeout",
                CONTROL_IDLE_TIMEOUT,
                &mut d.control_idle_timeout_s,
            ),
        ] {
            let key = format!("daemon.{field}");
            if let Some(n) = value
                .as_ref()
                .and_then(|v| self.int(v, at(field), range, &key, String::new))
            {
                *slot = n;
            }
        }
        self.daemon_modes(raw, &mut d);
        self.metrics_endpoint(raw, &mut d);
        if let Some(path) = &raw.control_socket {
            d.control_socket = PathBuf::from(path.get_ref());
        }
        if let Some(level) = &raw.log_level {
            d.log_level = level.get_ref().clone();
        }
        self.daemon_health(raw, &mut d);
        d
    }

    /// `metrics_address` and the Unix socket's mode and group.
    fn metrics_endpoint(&mut self, raw: &RawDaemon, d: &mut DaemonSettings) {
        let at = |key| Place::field(Item::Daemon, key);
        d.metrics_address = raw
            .metrics_address
            .as_ref()
            .and_then(|value| self.read(at("metrics_address"), value, parse_metrics_address));
        if let Some(mode) = &raw.metrics_socket_mode {
            let key = "daemon.metrics_socket_mode";
            d.metrics_socket_mode = self.int(
                mode,
                at("metrics_socket_mode"),
                SOCKET_MODE,
                key,
                String::new,
            );
        }
        d.metrics_socket_group = raw
            .metrics_socket_group
            .as_ref()
            .and_then(|value| self.read(at("metrics_socket_group"), value, group_id));
    }

    /// The `[daemon]` settings that name one of a fixed set of modes.
    fn daemon_modes(&mut self, raw: &RawDaemon, d: &mut DaemonSettings) {
        d.idle = self.choice(
            &raw.idle,
            "idle",
            &[
                ("busy", IdlePolicy::Busy),
                ("adaptive", IdlePolicy::Adaptive),
            ],
            d.idle,
        );
        d.bind_mode = self.choice(
            &raw.bind_mode,
            "bind_mode",
            &[
                ("auto", BindModeSetting::Auto),
                ("zero-copy", BindModeSetting::ZeroCopy),
                ("copy", BindModeSetting::Copy),
            ],
            d.bind_mode,
        );
        d.xdp_mode = self.choice(
            &raw.xdp_mode,
            "xdp_mode",
            &[
                ("auto", XdpModeSetting::Auto),
                ("native", XdpModeSetting::Native),
                ("generic", XdpModeSetting::Generic),
            ],
            d.xdp_mode,
        );
        d.fast_path = self.choice(
            &raw.fast_path,
            "fast_path",
            &[("xdp", FastPathSetting::Xdp), ("off", FastPathSetting::Off)],
            d.fast_path,
        );
        d.log_format = self.choice(
            &raw.log_format,
            "log_format",
            &[
                ("human", LogFormatSetting::Human),
                ("json", LogFormatSetting::Json),
            ],
            d.log_format,
        );
    }

    /// `[flows]`; a value that cannot be read is replaced by its default.
    fn flows(&mut self, raw: &RawFlows) -> FlowSettings {
        let default = FlowSettings::default();
        let at = |key| Place::field(Item::Flows, key);
        let capacity = raw.capacity.as_ref().and_then(|v| {
            self.int(
                v,
                at("capacity"),
                FLOW_CAPACITY,
                "flows.capacity",
                String::new,
            )
        });
        let mut timeout = |value: &Option<Spanned<i64>>, field: &'static str, default: u32| {
            let key = format!("flows.{field}");
            value
                .as_ref()
                .and_then(|v| self.int(v, at(field), TIMEOUT, &key, String::new))
                .unwrap_or(default)
        };
        FlowSettings {
            capacity: capacity.unwrap_or(default.capacity),
            tcp_syn_timeout_s: timeout(
                &raw.tcp_syn_timeout,
                "tcp_syn_timeout",
                default.tcp_syn_timeout_s,
            ),
            tcp_established_timeout_s: timeout(
                &raw.tcp_established_timeout,
                "tcp_established_timeout",
                default.tcp_established_timeout_s,
            ),
            tcp_closing_timeout_s: timeout(
                &raw.tcp_closing_timeout,
                "tcp_closing_timeout",
                default.tcp_closing_timeout_s,
            ),
            udp_timeout_s: timeout(&raw.udp_timeout, "udp_timeout", default.udp_timeout_s),
            evict_established: raw
                .evict_established
                .as_ref()
                .map_or(default.evict_established, |v| *v.get_ref()),
        }
    }

    /// `[[neighbours]]`, with each one's interface resolved to its index.
    fn neighbours(&mut self, raw: &RawConfig) -> Vec<Neighbour> {
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(raw.interfaces.len());
        for (i, interface) in raw.interfaces.iter().enumerate().rev() {
            // Reversed, so that a name listed twice resolves to its first.
            index.insert(interface.name.get_ref(), i);
        }
        raw.neighbours
            .iter()
            .enumerate()
            .map(|(i, neighbour)| {
                let item = Item::Neighbour(i);
                let text = neighbour.address.get_ref();
                let address = self.read(Place::field(item, "address"), &neighbour.address, |t| {
                    parse::neighbour_address(t)
                });
                let mac = self.read(Place::field(item, "mac"), &neighbour.mac, |t| {
                    parse::mac(t, &format!("neighbour {text}"))
                });
                let interface = self.neighbour_interface(i, neighbour, raw, &index);
                Neighbour {
                    address: address.unwrap_or(IpAddr::from([0, 0, 0, 0])),
                    mac: mac.unwrap_or_default(),
                    interface: interface.unwrap_or_default(),
                }
            })
            .collect()
    }

    /// The index of a neighbour's interface: the one it names, or the only
    /// one there is.
    fn neighbour_interface(
        &mut self,
        i: usize,
        neighbour: &RawNeighbour,
        raw: &RawConfig,
        index: &HashMap<&str, usize>,
    ) -> Option<usize> {
        let text = neighbour.address.get_ref();
        let place = Place::field(Item::Neighbour(i), "interface");
        let names = || {
            let names: Vec<&str> = raw
                .interfaces
                .iter()
                .map(|i| i.name.get_ref().as_str())
                .collect();
            names.join(", ")
        };
        let (message, written) = match &neighbour.interface {
            Some(name) => {
                if let Some(&i) = index.get(name.get_ref().as_str()) {
                    return Some(i);
                }
                let message = if raw.interfaces.is_empty() {
                    format!(
                        "neighbour {text} names interface {:?}, but no [[interfaces]] are configured",
                        name.get_ref()
                    )
                } else {
                    format!(
                        "neighbour {text} names unknown interface {:?} (interfaces: {})",
                        name.get_ref(),
                        names()
                    )
                };
                (message, name.get_ref().clone())
            }
            None => match raw.interfaces.len() {
                1 => return Some(0),
                0 => (
                    format!("neighbour {text} has no interface: no [[interfaces]] are configured"),
                    String::new(),
                ),
                n => (
                    format!(
                        "neighbour {text} must name its interface: there are {n} ({})",
                        names()
                    ),
                    String::new(),
                ),
            },
        };
        self.fail(place, message, written);
        None
    }

    /// One `[[services]]` entry and its backends. `gateway_size` is the
    /// gateway's table size, or its text when it could not be read.
    fn service(
        &mut self,
        i: usize,
        raw: &RawService,
        gateway_size: &Result<u32, String>,
    ) -> Service {
        let name = raw.name.get_ref();
        let protocol = self.read(Place::service(i, "protocol"), &raw.protocol, |t| {
            parse::protocol(t, name)
        });
        let vip = self.read(Place::service(i, "vip"), &raw.vip, |t| parse::vip(t, name));
        let port = self.int(&raw.port, Place::service(i, "port"), PORT, "port", || {
            of_service(name)
        });
        let scheduler = raw.scheduler.as_ref().and_then(|s| {
            self.read(Place::service(i, "scheduler"), s, |t| {
                parse::scheduler(t, name)
            })
        });
        let scheduler = self.fanout_replies(i, raw, scheduler);
        let place = Place::service(i, "maglev_table_size");
        let maglev_table_size = match (&raw.maglev_table_size, gateway_size) {
            (Some(size), _) => self.int(size, place, TABLE_SIZE, "maglev_table_size", || {
                of_service(name)
            }),
            (None, Ok(size)) => Some(*size),
            (None, Err(written)) => {
                // Inherited from a gateway value that could not be read.
                self.stand_ins.insert(place, written.clone());
                None
            }
        };
        let failover = self.failover(i, raw);
        let announce = raw.announce.as_ref().and_then(|value| {
            self.read(Place::service(i, "announce"), value, |t| {
                parse::announce(t, name)
            })
        });
        let health = self.service_health(i, raw);
        let backends = raw
            .backends
            .iter()
            .enumerate()
            .map(|(j, backend)| self.backend(i, j, name, backend))
            .collect();
        Service {
            name: name.clone(),
            protocol: protocol.unwrap_or(Protocol::Tcp),
            vip: vip.unwrap_or(IpAddr::from([0, 0, 0, 0])),
            port: port.unwrap_or_default(),
            scheduler: scheduler.unwrap_or_default(),
            maglev_table_size: maglev_table_size
                .unwrap_or(*gateway_size.as_ref().unwrap_or(&DEFAULT_MAGLEV_TABLE_SIZE)),
            failover,
            health,
            backends,
            routing: self.service_routing(i, raw),
            limits: FlowLimits {
                syn_proxy: self.syn_proxy(i, raw, protocol),
                ..self.limits(i, raw)
            },

            announce: announce.unwrap_or_default(),
        }
    }

    /// Service `i`'s `syn_proxy` and `syn_proxy_auto_syns_per_s`; a value
    /// that is refused is reported at its place and the proxy left off.
    fn syn_proxy(&mut self, i: usize, raw: &RawService, protocol: Option<Protocol>) -> SynProxy {
        let name = raw.name.get_ref();
        let threshold_place = Place::service(i, "syn_proxy_auto_syns_per_s");
        let threshold = match &raw.syn_proxy_auto_syns_per_s {
            None => Some(DEFAULT_AUTO_SYNS_PER_S),
            Some(v) => {
                let n = *v.get_ref();
                let t = u32::try_from(n).ok().filter(|&t| t > 0);
                if t.is_none() {
                    let message = format!(
                        "syn_proxy_auto_syns_per_s of service {name:?} must be 1 to {} (it is {n})",
                        u32::MAX
                    );
                    self.fail(threshold_place, message, n.to_string());
                }
                t
            }
        };
        let Some(value) = &raw.syn_proxy else {
            if let Some(v) = &raw.syn_proxy_auto_syns_per_s {
                let message = format!(
                    "syn_proxy_auto_syns_per_s of service {name:?} needs syn_proxy = \"auto\" \
                     (syn_proxy is not set)"
                );
                self.fail(threshold_place, message, v.get_ref().to_string());
            }
            return SynProxy::Off;
        };
        let place = Place::service(i, "syn_proxy");
        let Some(mode) = SynProxy::from_name(
            value.get_ref(),
            threshold.unwrap_or(DEFAULT_AUTO_SYNS_PER_S),
        ) else {
            let message = format!(
                "unknown syn_proxy {:?} in service {name:?} (expected \"off\", \"on\" or \"auto\")",
                value.get_ref()
            );
            self.fail(place, message, value.get_ref().clone());
            return SynProxy::Off;
        };
        if let (Some(v), false) = (
            &raw.syn_proxy_auto_syns_per_s,
            matches!(mode, SynProxy::Auto { .. }),
        ) {
            let message = format!(
                "syn_proxy_auto_syns_per_s of service {name:?} needs syn_proxy = \"auto\" (it is {:?})",
                mode.name()
            );
            self.fail(threshold_place, message, v.get_ref().to_string());
            return SynProxy::Off;
        }
        if mode.is_enabled() && protocol == Some(Protocol::Udp) {
            let message = format!(
                "syn_proxy of service {name:?} needs protocol \"tcp\": the proxy answers TCP handshakes"
            );
            self.fail(place, message, value.get_ref().clone());
            return SynProxy::Off;
        }
        if threshold.is_none() {
            // The threshold was refused (and reported) above.
            return SynProxy::Off;
        }
        mode
    }

    /// Service `i`'s `[services.limits]`; a setting that is refused is
    /// reported at its value and left out.
    fn limits(&mut self, i: usize, raw: &RawService) -> FlowLimits {
        let Some(limits) = &raw.limits else {
            return FlowLimits::default();
        };
        let name = raw.name.get_ref();
        let (read, problems) = limits.read();
        for (setting, problem) in problems {
            let key = limits_key(setting).unwrap_or("limits");
            let message = format!("{problem}{}", of_service(name));
            self.fail(Place::service(i, key), message, String::new());
        }
        read
    }

    /// Service `i`'s `on_backend_down`, `panic_threshold` and
    /// `when_all_down`; a value that cannot be read is replaced by its
    /// default.
    /// `scheduler` with the service's `fanout_replies`, which only a
    /// fan-out service has.
    fn fanout_replies(
        &mut self,
        i: usize,
        raw: &RawService,
        scheduler: Option<Scheduler>,
    ) -> Option<Scheduler> {
        let name = raw.name.get_ref();
        let Some(value) = &raw.fanout_replies else {
            return scheduler;
        };
        let place = Place::service(i, "fanout_replies");
        let replies = self.read(place, value, |t| parse::fanout_replies(t, name))?;
        match scheduler {
            Some(Scheduler::Fanout(_)) => Some(Scheduler::Fanout(replies)),
            // An unreadable scheduler was reported already.
            None if raw.scheduler.is_some() => None,
            other => {
                let shown = other.unwrap_or_default();
                let message = format!(
                    "fanout_replies of service {name:?} needs scheduler \"fanout\" (it has \"{shown}\")"
                );
                self.fail(place, message, value.get_ref().clone());
                scheduler
            }
        }
    }

    fn failover(&mut self, i: usize, raw: &RawService) -> Failover {
        let name = raw.name.get_ref();
        let on_backend_down = raw.on_backend_down.as_ref().and_then(|value| {
            self.read(Place::service(i, "on_backend_down"), value, |t| {
                parse::on_backend_down(t, name)
            })
        });
        let panic_threshold = raw.panic_threshold.as_ref().and_then(|value| {
            let place = Place::service(i, "panic_threshold");
            let key = "panic_threshold";
            self.int(value, place, PANIC_THRESHOLD, key, || of_service(name))
        });
        let when_all_down = raw.when_all_down.as_ref().and_then(|value| {
            self.read(Place::service(i, "when_all_down"), value, |t| {
                parse::when_all_down(t, name)
            })
        });
        Failover {
            on_backend_down,
            panic_threshold: panic_threshold.unwrap_or_default(),
            when_all_down: when_all_down.unwrap_or_default(),
        }
    }

    /// One `[[services.backends]]` entry of service `i`, called `service`.
    fn backend(&mut self, i: usize, j: usize, service: &str, raw: &RawBackend) -> Backend {
        let address = self.read(Place::backend(i, j, "address"), &raw.address, |t| {
            parse::backend_address(t, service)
        });
        // As the validator shows it: as read, or as written if it could not be.
        let shown_address =
            || address.map_or_else(|| raw.address.get_ref().clone(), |a| a.to_string());
        let port = self.int(
            &raw.port,
            Place::backend(i, j, "port"),
            PORT,
            "port",
            || of_backend_address(&shown_address(), service),
        );
        let weight = raw.weight.as_ref().and_then(|w| {
            let context = || of_backend(&shown_address(), &raw.port.get_ref().to_string(), service);
            self.int(w, Place::backend(i, j, "weight"), WEIGHT, "weight", context)
        });
        let label = |value: &Option<Spanned<String>>| value.as_ref().map(|v| v.get_ref().clone());
        let context = of_backend(&shown_address(), &raw.port.get_ref().to_string(), service);
        let health = self.backend_health((i, j), raw, &context);
        let max_connections = match backend_cap(&raw.max_connections, &raw.resume_connections) {
            Ok(cap) => cap,
            Err((setting, problem)) => {
                let place = Place::backend(i, j, setting);
                self.fail(place, format!("{problem}{context}"), String::new());
                None
            }
        };
        Backend {
            address: address.unwrap_or(IpAddr::from([0, 0, 0, 0])),
            port: port.unwrap_or_default(),
            // A weight that could not be read stands in as the default.
            weight: weight.unwrap_or(1),
            zone: label(&raw.zone),
            set: label(&raw.set),
            group: label(&raw.group),
            health,
            name: label(&raw.name),
            max_connections,
        }
    }
}

/// `"unix:/ABSOLUTE/PATH"` or an address and port.
fn parse_metrics_address(text: &str) -> Result<MetricsAddress, String> {
    if let Some(path) = text.strip_prefix("unix:") {
        return Ok(MetricsAddress::Unix(PathBuf::from(path)));
    }
    text.parse::<SocketAddr>().map(MetricsAddress::Tcp).map_err(|_| {
        format!(
            "daemon.metrics_address {text:?} is neither an address and port such as \"127.0.0.1:9464\" \
             nor a Unix socket such as \"unix:/run/flowgate/metrics.sock\""
        )
    })
}

/// A group's id, from its name in this host's group database or a number.
fn group_id(text: &str) -> Result<u32, String> {
    if let Ok(id) = text.parse::<u32>() {
        return Ok(id);
    }
    match nix::unistd::Group::from_name(text) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(format!(
            "daemon.metrics_socket_group {text:?} is not a group on this host"
        )),
        Err(e) => Err(format!(
            "daemon.metrics_socket_group {text:?}: the group database could not be read: {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(text: &str) -> Decoded {
        decode(&toml::from_str(text).unwrap())
    }

    #[test]
    fn values_that_cannot_be_read_stand_in_and_say_why() {
        let d = decoded(
            "[[services]]\nname = \"web\"\nprotocol = \"tcp\"\nvip = \"::g\"\nport = 70000\n\
             [[services.backends]]\naddress = \"198.18.1.11\"\nport = 0\nweight = -1\n",
        );
        let places: Vec<String> = d.problems.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(
            places,
            [
                "services[0].vip",
                "services[0].port",
                "services[0].backends[0].weight"
            ]
        );
        assert_eq!(
            d.problems[1].1,
            "port 70000 of service \"web\" is out of range 1..=65535"
        );
        assert_eq!(
            d.stand_ins
                .get(&Place::backend(0, 0, "weight"))
                .map(String::as_str),
            Some("-1")
        );
        // A port of 0 fits the model's type: it is for the validator.
        assert_eq!(d.config.services[0].backends[0].port, 0);
        assert!(!d.stand_ins.contains_key(&Place::backend(0, 0, "port")));
    }

    #[test]
    fn an_inherited_table_size_that_could_not_be_read_is_a_stand_in() {
        let d = decoded(
            "[gateway]\nmaglev_table_size = -5\n[[services]]\nname = \"web\"\n\
             protocol = \"tcp\"\nvip = \"198.18.100.10\"\nport = 80\n",
        );
        assert_eq!(d.problems.len(), 1);
        let place = Place::service(0, "maglev_table_size");
        assert_eq!(d.stand_ins.get(&place).map(String::as_str), Some("-5"));
    }
}
