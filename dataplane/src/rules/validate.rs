//! Checks a raw config in full and builds the validated model.
//!
//! Every check runs, whatever failed before it, and every failure is
//! recorded at the position of the value at fault; a [`Config`] is built
//! only when there are none. A value that failed is replaced by a stand-in
//! so that later checks can go on, and checks that would only repeat an
//! earlier failure (a duplicate of an address that did not parse) are
//! skipped.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;

use toml::Spanned;

use super::error::{line_column, ConfigProblem};
use super::mac::{format_mac, is_unicast_mac, parse_mac};
use super::prime::{is_prime, next_prime, prev_prime};
use super::raw::{
    RawBackend, RawConfig, RawDaemon, RawFlows, RawInterface, RawNeighbour, RawService,
};
use super::{
    Backend, BindModeSetting, Config, DaemonSettings, FlowSettings, GatewaySettings, IdlePolicy,
    Interface, LogFormatSetting, MacAddr, Neighbour, Protocol, Scheduler, Service, XdpModeSetting,
    DEFAULT_MAGLEV_TABLE_SIZE, MAX_FLOW_CAPACITY, MAX_INTERFACE_NAME_LEN, MAX_MAGLEV_TABLE_SIZE,
    MAX_NAME_LEN, MAX_TIMEOUT_S, MAX_WEIGHT, MAX_WORKERS, MIN_MAGLEV_TABLE_SIZE,
};

/// Validates `raw`, read from `text` (named `file`), into a [`Config`], or
/// returns every problem found, in the order found.
pub(super) fn validate(
    raw: &RawConfig,
    text: &str,
    file: &str,
) -> Result<Config, Vec<ConfigProblem>> {
    let mut problems = Problems {
        text,
        file,
        found: Vec::new(),
    };
    let p = &mut problems;
    let default_table_size = match &raw.gateway.maglev_table_size {
        None => Some(DEFAULT_MAGLEV_TABLE_SIZE),
        Some(size) => table_size(size, "gateway.maglev_table_size", "", p),
    };
    let gateway = GatewaySettings {
        maglev_table_size: default_table_size.unwrap_or(DEFAULT_MAGLEV_TABLE_SIZE),
    };
    let daemon = daemon(&raw.daemon, p);
    let flows = flows(&raw.flows, p);
    let interfaces = interfaces(&raw.interfaces, p);
    let neighbours = neighbours(&raw.neighbours, &raw.interfaces, p);
    let services = services(&raw.services, default_table_size, p);
    if problems.found.is_empty() {
        Ok(Config {
            gateway,
            daemon,
            flows,
            interfaces,
            neighbours,
            services,
        })
    } else {
        Err(problems.found)
    }
}

/// The problems found so far, each at a position in the text.
struct Problems<'a> {
    text: &'a str,
    file: &'a str,
    found: Vec<ConfigProblem>,
}

impl Problems<'_> {
    /// Records a problem with `value`.
    fn at<T>(&mut self, value: &Spanned<T>, message: String) {
        let (line, column) = line_column(self.text, value.span().start);
        self.found.push(ConfigProblem {
            file: self.file.to_owned(),
            line,
            column,
            message,
        });
    }

    /// The line `value` is on (to name the first of two duplicates).
    fn line_of<T>(&self, value: &Spanned<T>) -> usize {
        line_column(self.text, value.span().start).0
    }
}

/// `[daemon]`; a value at fault is replaced by its default.
fn daemon(raw: &RawDaemon, p: &mut Problems) -> DaemonSettings {
    let default = DaemonSettings::default();
    let cores = match &raw.cores {
        None => default.cores.clone(),
        Some(list) => cores(list, p).unwrap_or_else(|| default.cores.clone()),
    };
    let mut number = |value: &Option<Spanned<i64>>, key: &str, range: RangeInclusive<i64>| {
        value.as_ref().and_then(|v| in_range(v, range, key, "", p))
    };
    let batch = number(&raw.batch, "daemon.batch", 1..=256).map_or(default.batch, |v| v as usize);
    let frame_size = number(&raw.frame_size, "daemon.frame_size", 2048..=4096);
    let frame_count = number(&raw.frame_count, "daemon.frame_count", 1024..=1 << 20);
    let rx = number(&raw.rx_ring_size, "daemon.rx_ring_size", 64..=16384);
    let tx = number(&raw.tx_ring_size, "daemon.tx_ring_size", 64..=16384);
    let fill = number(&raw.fill_ring_size, "daemon.fill_ring_size", 64..=16384);
    let completion = number(
        &raw.completion_ring_size,
        "daemon.completion_ring_size",
        64..=16384,
    );
    let frame_size = match (&raw.frame_size, frame_size) {
        (Some(value), Some(size)) if size != 2048 && size != 4096 => {
            p.at(
                value,
                format!("daemon.frame_size {size} must be 2048 or 4096"),
            );
            None
        }
        (_, size) => size,
    };
    let mut power_of_two = |value: &Option<Spanned<i64>>,
                            checked: Option<i64>,
                            key: &str,
                            default: u32| match (value, checked) {
        (Some(value), Some(v)) if !(v as u64).is_power_of_two() => {
            p.at(value, format!("{key} {v} is not a power of two"));
            default
        }
        (_, Some(v)) => v as u32,
        (_, None) => default,
    };
    let frame_count = power_of_two(
        &raw.frame_count,
        frame_count,
        "daemon.frame_count",
        default.frame_count,
    );
    let rx_ring_size = power_of_two(
        &raw.rx_ring_size,
        rx,
        "daemon.rx_ring_size",
        default.rx_ring_size,
    );
    let tx_ring_size = power_of_two(
        &raw.tx_ring_size,
        tx,
        "daemon.tx_ring_size",
        default.tx_ring_size,
    );
    let fill_ring_size = power_of_two(
        &raw.fill_ring_size,
        fill,
        "daemon.fill_ring_size",
        default.fill_ring_size,
    );
    let completion_ring_size = power_of_two(
        &raw.completion_ring_size,
        completion,
        "daemon.completion_ring_size",
        default.completion_ring_size,
    );
    let idle = choice(
        &raw.idle,
        "daemon.idle",
        &[
            ("busy", IdlePolicy::Busy),
            ("adaptive", IdlePolicy::Adaptive),
        ],
        p,
    )
    .unwrap_or(default.idle);
    let bind_mode = choice(
        &raw.bind_mode,
        "daemon.bind_mode",
        &[
            ("auto", BindModeSetting::Auto),
            ("zero-copy", BindModeSetting::ZeroCopy),
            ("copy", BindModeSetting::Copy),
        ],
        p,
    )
    .unwrap_or(default.bind_mode);
    let xdp_mode = choice(
        &raw.xdp_mode,
        "daemon.xdp_mode",
        &[
            ("auto", XdpModeSetting::Auto),
            ("native", XdpModeSetting::Native),
            ("generic", XdpModeSetting::Generic),
        ],
        p,
    )
    .unwrap_or(default.xdp_mode);
    let log_format = choice(
        &raw.log_format,
        "daemon.log_format",
        &[
            ("human", LogFormatSetting::Human),
            ("json", LogFormatSetting::Json),
        ],
        p,
    )
    .unwrap_or(default.log_format);
    let control_socket = match &raw.control_socket {
        None => default.control_socket.clone(),
        Some(value) if value.get_ref().is_empty() || value.get_ref().contains('\0') => {
            p.at(
                value,
                "daemon.control_socket must be a non-empty path".to_owned(),
            );
            default.control_socket.clone()
        }
        // sun_path holds 108 bytes including the terminating NUL.
        Some(value) if value.get_ref().len() > 107 => {
            p.at(
                value,
                format!(
                    "daemon.control_socket is {} bytes long; a Unix socket path holds at most 107",
                    value.get_ref().len()
                ),
            );
            default.control_socket.clone()
        }
        Some(value) => value.get_ref().into(),
    };
    let metrics_address = raw.metrics_address.as_ref().and_then(|value| {
        match value.get_ref().parse::<SocketAddr>() {
            Ok(address) if address.ip().is_loopback() => Some(address),
            Ok(address) => {
                p.at(value, format!("daemon.metrics_address {address} is not a loopback address: metrics are served on loopback only (put a proxy in front to expose them)"));
                None
            }
            Err(_) => {
                p.at(value, format!("daemon.metrics_address {:?} is not an address and port such as \"127.0.0.1:9464\"", value.get_ref()));
                None
            }
        }
    });
    let log_level = match &raw.log_level {
        None => default.log_level.clone(),
        Some(value) if value.get_ref().trim().is_empty() => {
            p.at(
                value,
                "daemon.log_level must not be empty (e.g. \"info\")".to_owned(),
            );
            default.log_level.clone()
        }
        Some(value) => value.get_ref().clone(),
    };
    DaemonSettings {
        cores,
        batch,
        idle,
        frame_size: frame_size.map_or(default.frame_size, |v| v as u32),
        frame_count,
        rx_ring_size,
        tx_ring_size,
        fill_ring_size,
        completion_ring_size,
        bind_mode,
        xdp_mode,
        control_socket,
        metrics_address,
        log_format,
        log_level,
    }
}

/// `daemon.cores`: a non-empty list of distinct core numbers.
fn cores(list: &Spanned<Vec<Spanned<i64>>>, p: &mut Problems) -> Option<Vec<usize>> {
    if list.get_ref().is_empty() {
        p.at(
            list,
            "daemon.cores is empty: list at least one core".to_owned(),
        );
        return None;
    }
    if list.get_ref().len() > MAX_WORKERS {
        p.at(
            list,
            format!(
                "daemon.cores lists {} cores; at most {MAX_WORKERS} workers are supported",
                list.get_ref().len()
            ),
        );
        return None;
    }
    let mut seen = Vec::new();
    let mut ok = true;
    for core in list.get_ref() {
        match in_range(core, 0..=4095, "daemon.cores entry", "", p) {
            Some(c) if seen.contains(&(c as usize)) => {
                p.at(core, format!("daemon.cores lists core {c} twice"));
                ok = false;
            }
            Some(c) => seen.push(c as usize),
            None => ok = false,
        }
    }
    ok.then_some(seen)
}

/// One of a fixed set of names.
fn choice<T: Copy>(
    value: &Option<Spanned<String>>,
    key: &str,
    options: &[(&str, T)],
    p: &mut Problems,
) -> Option<T> {
    let value = value.as_ref()?;
    match options.iter().find(|(name, _)| name == value.get_ref()) {
        Some((_, v)) => Some(*v),
        None => {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            p.at(
                value,
                format!(
                    "{key} {:?} is not one of: {}",
                    value.get_ref(),
                    names.join(", ")
                ),
            );
            None
        }
    }
}

/// `[flows]`; a value at fault is replaced by its default.
fn flows(raw: &RawFlows, p: &mut Problems) -> FlowSettings {
    let default = FlowSettings::default();
    let capacity_range = 1..=i64::try_from(MAX_FLOW_CAPACITY).unwrap_or(i64::MAX);
    let capacity = raw
        .capacity
        .as_ref()
        .and_then(|v| in_range(v, capacity_range, "flows.capacity", "", p))
        .and_then(|v| usize::try_from(v).ok())
        .unwrap_or(default.capacity);
    let mut timeout = |value: &Option<Spanned<i64>>, key: &str, default: u32| {
        value
            .as_ref()
            .and_then(|v| in_range(v, 1..=i64::from(MAX_TIMEOUT_S), key, "", p))
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(default)
    };
    FlowSettings {
        capacity,
        tcp_syn_timeout_s: timeout(
            &raw.tcp_syn_timeout,
            "flows.tcp_syn_timeout",
            default.tcp_syn_timeout_s,
        ),
        tcp_established_timeout_s: timeout(
            &raw.tcp_established_timeout,
            "flows.tcp_established_timeout",
            default.tcp_established_timeout_s,
        ),
        tcp_closing_timeout_s: timeout(
            &raw.tcp_closing_timeout,
            "flows.tcp_closing_timeout",
            default.tcp_closing_timeout_s,
        ),
        udp_timeout_s: timeout(&raw.udp_timeout, "flows.udp_timeout", default.udp_timeout_s),
    }
}

/// `[[interfaces]]`: valid unique names, unicast MACs.
fn interfaces(raw: &[RawInterface], p: &mut Problems) -> Vec<Interface> {
    let mut first_line: HashMap<&str, usize> = HashMap::new();
    let mut interfaces = Vec::with_capacity(raw.len());
    for interface in raw {
        let name = interface.name.get_ref();
        if let Err(why) = check_interface_name(name) {
            p.at(&interface.name, format!("interface name {name:?} {why}"));
        } else if let Some(first) = first_line.get(name.as_str()) {
            let message = format!("interface {name:?} is listed twice (first at line {first})");
            p.at(&interface.name, message);
        } else {
            first_line.insert(name, p.line_of(&interface.name));
        }
        let mac = mac(&interface.mac, &format!("interface {name:?}"), p);
        if let Some(mac) = mac {
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
                p.at(&interface.mac, message);
            }
        }
        interfaces.push(Interface {
            name: name.clone(),
            mac: mac.unwrap_or_default(),
        });
    }
    interfaces
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

/// `[[neighbours]]`: unique usable addresses, station MACs, a known
/// interface (implied when there is only one).
fn neighbours(
    raw: &[RawNeighbour],
    raw_interfaces: &[RawInterface],
    p: &mut Problems,
) -> Vec<Neighbour> {
    let mut first_line: HashMap<IpAddr, usize> = HashMap::new();
    let mut neighbours = Vec::with_capacity(raw.len());
    for neighbour in raw {
        let text = neighbour.address.get_ref();
        let address = address(&neighbour.address, |a| format!("neighbour address {a}"), p);
        if let Some(address) = address {
            if let Some(first) = first_line.get(&address) {
                let message =
                    format!("neighbour {address} is listed twice (first at line {first})");
                p.at(&neighbour.address, message);
            } else {
                first_line.insert(address, p.line_of(&neighbour.address));
            }
        }
        let mac = mac(&neighbour.mac, &format!("neighbour {text}"), p);
        if let Some(mac) = mac {
            let problem = if mac == [0xff; 6] {
                Some("is the broadcast address")
            } else if mac == [0; 6] {
                Some("is all zeros")
            } else {
                None
            };
            if let Some(problem) = problem {
                let message = format!("MAC {} of neighbour {text} {problem}", format_mac(&mac));
                p.at(&neighbour.mac, message);
            }
        }
        let interface = neighbour_interface(neighbour, raw_interfaces, p);
        neighbours.push(Neighbour {
            address: address.unwrap_or(IpAddr::from([0, 0, 0, 0])),
            mac: mac.unwrap_or_default(),
            interface: interface.unwrap_or_default(),
        });
    }
    neighbours
}

/// The index of a neighbour's interface: named, or the only one.
fn neighbour_interface(
    neighbour: &RawNeighbour,
    interfaces: &[RawInterface],
    p: &mut Problems,
) -> Option<usize> {
    let text = neighbour.address.get_ref();
    let names = || {
        let names: Vec<&str> = interfaces
            .iter()
            .map(|i| i.name.get_ref().as_str())
            .collect();
        names.join(", ")
    };
    match &neighbour.interface {
        Some(name) => {
            let index = interfaces
                .iter()
                .position(|i| i.name.get_ref() == name.get_ref());
            if index.is_none() {
                let message = if interfaces.is_empty() {
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
                p.at(name, message);
            }
            index
        }
        None => match interfaces.len() {
            1 => Some(0),
            0 => {
                let message =
                    format!("neighbour {text} has no interface: no [[interfaces]] are configured");
                p.at(&neighbour.address, message);
                None
            }
            n => {
                let message = format!(
                    "neighbour {text} must name its interface: there are {n} ({})",
                    names()
                );
                p.at(&neighbour.address, message);
                None
            }
        },
    }
}

/// `[[services]]` and their backends. `default_table_size` is `None` when
/// `[gateway]` has a bad one (already reported).
fn services(raw: &[RawService], default_table_size: Option<u32>, p: &mut Problems) -> Vec<Service> {
    let mut name_line: HashMap<&str, usize> = HashMap::new();
    let mut listener: HashMap<(Protocol, IpAddr, u16), (&str, usize)> = HashMap::new();
    let mut services = Vec::with_capacity(raw.len());
    for service in raw {
        let name = service.name.get_ref();
        let quoted = format!("{name:?}");
        if !is_valid_name(name) {
            p.at(
                &service.name,
                format!("service name {quoted} {}", name_rule()),
            );
        } else if let Some(first) = name_line.get(name.as_str()) {
            let message = format!("service {quoted} is defined twice (first at line {first})");
            p.at(&service.name, message);
        } else {
            name_line.insert(name, p.line_of(&service.name));
        }

        let protocol = Protocol::from_name(service.protocol.get_ref());
        if protocol.is_none() {
            let message = format!(
                "unknown protocol {:?} in service {quoted} (expected \"tcp\" or \"udp\")",
                service.protocol.get_ref()
            );
            p.at(&service.protocol, message);
        }
        let vip = address(&service.vip, |a| format!("VIP {a} of service {quoted}"), p);
        let port = port(&service.port, &format!(" of service {quoted}"), p);
        if let (Some(protocol), Some(vip), Some(port)) = (protocol, vip, port) {
            let key = (protocol, vip, port);
            if let Some((other, line)) = listener.get(&key) {
                let message = format!(
                    "{protocol} {} of service {quoted} is already used by service {other:?} (line {line})",
                    SocketAddr::new(vip, port)
                );
                p.at(&service.vip, message);
            } else {
                listener.insert(key, (name, p.line_of(&service.vip)));
            }
        }

        let scheduler = match &service.scheduler {
            None => Scheduler::default(),
            Some(text) => Scheduler::from_name(text.get_ref()).unwrap_or_else(|| {
                let message = format!(
                    "unknown scheduler {:?} in service {quoted} (expected \"maglev\", \"wrr\" or \"sh\")",
                    text.get_ref()
                );
                p.at(text, message);
                Scheduler::default()
            }),
        };

        let backends = backends(service, vip, p);
        check_weights(service, p);

        let own_table_size = service.maglev_table_size.as_ref().map(|size| {
            table_size(
                size,
                "maglev_table_size",
                &format!(" of service {quoted}"),
                p,
            )
        });
        let table_size = match own_table_size {
            Some(own) => own,
            None => default_table_size,
        };
        if let Some(size) = table_size {
            check_table_fits(service, size, p);
        }

        services.push(Service {
            name: name.clone(),
            protocol: protocol.unwrap_or(Protocol::Tcp),
            vip: vip.unwrap_or(IpAddr::from([0, 0, 0, 0])),
            port: port.unwrap_or_default(),
            scheduler,
            maglev_table_size: table_size.unwrap_or(DEFAULT_MAGLEV_TABLE_SIZE),
            backends,
        });
    }
    services
}

/// A service's backends: usable addresses of the VIP's family, valid
/// ports, weights and labels, unique by (address, port).
fn backends(service: &RawService, vip: Option<IpAddr>, p: &mut Problems) -> Vec<Backend> {
    let service_name = format!("{:?}", service.name.get_ref());
    let mut first_line: HashMap<(IpAddr, u16), usize> = HashMap::new();
    let mut backends = Vec::with_capacity(service.backends.len());
    for backend in &service.backends {
        let label = endpoint_label(backend.address.get_ref(), *backend.port.get_ref());
        let address = address(
            &backend.address,
            |a| format!("backend {a} of service {service_name}"),
            p,
        );
        if let (Some(address), Some(vip)) = (address, vip) {
            if address.is_ipv4() != vip.is_ipv4() {
                let message = format!(
                    "backend {address} of service {service_name} is {} but its VIP {vip} is {}",
                    family(address),
                    family(vip)
                );
                p.at(&backend.address, message);
            }
        }
        let context = format!(
            " of backend {} in service {service_name}",
            backend.address.get_ref()
        );
        let port = port(&backend.port, &context, p);
        if let (Some(address), Some(port)) = (address, port) {
            if let Some(first) = first_line.get(&(address, port)) {
                let message = format!(
                    "backend {} is listed twice in service {service_name} (first at line {first})",
                    SocketAddr::new(address, port)
                );
                p.at(&backend.address, message);
            } else {
                first_line.insert((address, port), p.line_of(&backend.address));
            }
        }
        let context = format!(" of backend {label} in service {service_name}");
        let weight = match &backend.weight {
            None => Some(1),
            Some(weight) => in_range(weight, 0..=i64::from(MAX_WEIGHT), "weight", &context, p),
        };
        backends.push(Backend {
            address: address.unwrap_or(IpAddr::from([0, 0, 0, 0])),
            port: port.unwrap_or_default(),
            weight: weight.and_then(|w| u32::try_from(w).ok()).unwrap_or(1),
            zone: label_value(&backend.zone, "zone", &context, p),
            set: label_value(&backend.set, "set", &context, p),
            group: label_value(&backend.group, "group", &context, p),
        });
    }
    backends
}

/// A service needs backends, and at least one that takes new flows.
fn check_weights(service: &RawService, p: &mut Problems) {
    let name = service.name.get_ref();
    if service.backends.is_empty() {
        p.at(&service.name, format!("service {name:?} has no backends"));
        return;
    }
    let weights: Vec<i64> = service.backends.iter().map(raw_weight).collect();
    let all_valid = weights
        .iter()
        .all(|w| (0..=i64::from(MAX_WEIGHT)).contains(w));
    if all_valid && weights.iter().all(|&w| w == 0) {
        let message = format!(
            "service {name:?} has no backend with weight > 0 (all {} are drained)",
            weights.len()
        );
        p.at(&service.name, message);
    }
}

/// A backend's weight as written, or its default.
fn raw_weight(backend: &RawBackend) -> i64 {
    backend.weight.as_ref().map_or(1, |w| *w.get_ref())
}

/// The Maglev table must have more entries than the service has backends.
fn check_table_fits(service: &RawService, size: u32, p: &mut Problems) {
    let name = service.name.get_ref();
    let count = service.backends.len();
    if u64::try_from(count).unwrap_or(u64::MAX) < u64::from(size) {
        return;
    }
    match &service.maglev_table_size {
        Some(own) => {
            let message = format!(
                "maglev_table_size {size} of service {name:?} must be larger than its {count} \
                 backends (100 times larger is recommended)"
            );
            p.at(own, message);
        }
        None => {
            let message = format!(
                "service {name:?} has {count} backends, not fewer than gateway.maglev_table_size \
                 {size}: set a larger maglev_table_size (100 times the backends is recommended)"
            );
            p.at(&service.name, message);
        }
    }
}

/// A Maglev table size: in range and prime.
fn table_size(value: &Spanned<i64>, key: &str, context: &str, p: &mut Problems) -> Option<u32> {
    let range = i64::from(MIN_MAGLEV_TABLE_SIZE)..=i64::from(MAX_MAGLEV_TABLE_SIZE);
    let size = u32::try_from(in_range(value, range, key, context, p)?).ok()?;
    if is_prime(size) {
        return Some(size);
    }
    // Both bounds are prime, so both neighbours of an in-range size are in
    // range too.
    let nearest: Vec<String> = [prev_prime(size), next_prime(size)]
        .into_iter()
        .flatten()
        .map(|n| n.to_string())
        .collect();
    let message = format!(
        "{key} {size}{context} is not prime (nearest primes: {})",
        nearest.join(", ")
    );
    p.at(value, message);
    None
}

/// A port, 1..=65535.
fn port(value: &Spanned<i64>, context: &str, p: &mut Problems) -> Option<u16> {
    let port = in_range(value, 1..=i64::from(u16::MAX), "port", context, p)?;
    u16::try_from(port).ok()
}

/// `value` if it lies in `range`; otherwise records
/// `KEY VALUE CONTEXT is out of range LO..=HI`.
fn in_range(
    value: &Spanned<i64>,
    range: RangeInclusive<i64>,
    key: &str,
    context: &str,
    p: &mut Problems,
) -> Option<i64> {
    let v = *value.get_ref();
    if range.contains(&v) {
        return Some(v);
    }
    let message = format!(
        "{key} {v}{context} is out of range {}..={}",
        range.start(),
        range.end()
    );
    p.at(value, message);
    None
}

/// An IP address a packet can be sent to or received on: not unspecified,
/// multicast, broadcast, loopback, or IPv4-mapped (the data plane keys
/// IPv4 as IPv4-mapped, so the two spellings would be the same address).
/// `describe` names the value, given its text.
fn address(
    value: &Spanned<String>,
    describe: impl Fn(&str) -> String,
    p: &mut Problems,
) -> Option<IpAddr> {
    let text = value.get_ref();
    let Ok(address) = text.parse::<IpAddr>() else {
        let message = format!("{} is not an IP address", describe(&format!("{text:?}")));
        p.at(value, message);
        return None;
    };
    match address_problem(address) {
        Some(problem) => {
            let message = format!("{} {problem}", describe(&address.to_string()));
            p.at(value, message);
            None
        }
        None => Some(address),
    }
}

/// Why `address` cannot be a packet's destination or source here, if it
/// cannot: unspecified, multicast, broadcast, loopback or IPv4-mapped.
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

/// A MAC address as text; `owner` names whose it is.
fn mac(value: &Spanned<String>, owner: &str, p: &mut Problems) -> Option<MacAddr> {
    let text = value.get_ref();
    let mac = parse_mac(text);
    if mac.is_none() {
        let message = format!(
            "MAC {text:?} of {owner} is not a MAC address (expected six hex octets such as 02:00:00:00:00:01)"
        );
        p.at(value, message);
    }
    mac
}

/// An optional backend label (`zone`, `set`, `group`).
fn label_value(
    value: &Option<Spanned<String>>,
    key: &str,
    context: &str,
    p: &mut Problems,
) -> Option<String> {
    let value = value.as_ref()?;
    let text = value.get_ref();
    if !is_valid_name(text) {
        p.at(value, format!("{key} {text:?}{context} {}", name_rule()));
    }
    Some(text.clone())
}

/// What [`is_valid_name`] demands, as the end of an error message.
pub(super) fn name_rule() -> String {
    format!("is not valid: use 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 _ . -")
}

/// Service names and backend labels: `[A-Za-z0-9_.-]{1,64}`.
pub(super) fn is_valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `IPv4` or `IPv6`.
pub(super) fn family(address: IpAddr) -> &'static str {
    match address {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

/// `address:port` as written, bracketing an IPv6 address.
fn endpoint_label(address: &str, port: i64) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}
