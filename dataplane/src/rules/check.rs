//! Checks a [`Config`] built or edited in memory — by the control API, not
//! read from a file — against the rules a file must follow.
//!
//! Loading a file validates its text (`validate.rs`) and yields a
//! [`Config`] that holds every invariant the model documents. An edit made
//! through the API (add a backend, change a weight) produces a new
//! [`Config`] without text, so it is checked here instead: the same rules,
//! with the same wording, minus the positions (there is no file) and the
//! "first at line N" of duplicates. That way an API edit is exactly as safe
//! as editing the file and reloading it.
//!
//! Every check runs and every problem is reported, in config order.
//! `[daemon]` is not checked here: it is read only from the file at start,
//! and the control API cannot change it.

use hashbrown::{HashMap, HashSet};
use std::fmt::Display;
use std::net::IpAddr;
use std::ops::RangeInclusive;

use super::mac::{format_mac, is_unicast_mac};
use super::prime::{is_prime, next_prime, prev_prime};
use super::validate::{address_problem, check_interface_name, family, is_valid_name, name_rule};
use super::{
    Config, FlowSettings, Interface, Neighbour, Protocol, Service, MAX_FLOW_CAPACITY,
    MAX_MAGLEV_TABLE_SIZE, MAX_TIMEOUT_S, MAX_WEIGHT, MIN_MAGLEV_TABLE_SIZE,
};

/// Why a config is not valid: every problem found, one line each, in
/// config order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct CheckError {
    /// One message per problem (never empty).
    pub problems: Vec<String>,
}

/// Checks `config` in full: `Ok` if a config file describing it would load,
/// otherwise every problem, worded as the file loader words it.
pub fn check(config: &Config) -> Result<(), CheckError> {
    let mut problems = Vec::new();
    let p = &mut problems;
    table_size(
        config.gateway.maglev_table_size,
        "gateway.maglev_table_size",
        "",
        p,
    );
    flows(&config.flows, p);
    interfaces(&config.interfaces, p);
    neighbours(&config.neighbours, &config.interfaces, p);
    services(&config.services, p);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CheckError { problems })
    }
}

/// `[flows]`: capacity and timeouts in range.
fn flows(flows: &FlowSettings, p: &mut Vec<String>) {
    let capacity_range = 1..=u64::try_from(MAX_FLOW_CAPACITY).unwrap_or(u64::MAX);
    let capacity = u64::try_from(flows.capacity).unwrap_or(u64::MAX);
    in_range(capacity, capacity_range, "flows.capacity", "", p);
    for (value, key) in [
        (flows.tcp_syn_timeout_s, "flows.tcp_syn_timeout"),
        (
            flows.tcp_established_timeout_s,
            "flows.tcp_established_timeout",
        ),
        (flows.tcp_closing_timeout_s, "flows.tcp_closing_timeout"),
        (flows.udp_timeout_s, "flows.udp_timeout"),
    ] {
        in_range(value, 1..=MAX_TIMEOUT_S, key, "", p);
    }
}

/// Interfaces: valid unique names, unicast MACs.
fn interfaces(interfaces: &[Interface], p: &mut Vec<String>) {
    let mut seen: HashSet<&str> = HashSet::new();
    for interface in interfaces {
        let name = interface.name.as_str();
        if let Err(why) = check_interface_name(name) {
            p.push(format!("interface name {name:?} {why}"));
        } else if !seen.insert(name) {
            p.push(format!("interface {name:?} is listed twice"));
        }
        let mac = interface.mac;
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
            p.push(format!(
                "MAC {} of interface {name:?} {problem}; an interface needs a unicast MAC",
                format_mac(&mac)
            ));
        }
    }
}

/// Static neighbours: unique usable addresses, station MACs, an interface
/// that exists.
fn neighbours(neighbours: &[Neighbour], interfaces: &[Interface], p: &mut Vec<String>) {
    let mut seen: HashSet<IpAddr> = HashSet::new();
    for neighbour in neighbours {
        let address = neighbour.address;
        if usable_address(address, || format!("neighbour address {address}"), p)
            && !seen.insert(address)
        {
            p.push(format!("neighbour {address} is listed twice"));
        }
        let problem = if neighbour.mac == [0xff; 6] {
            Some("is the broadcast address")
        } else if neighbour.mac == [0; 6] {
            Some("is all zeros")
        } else {
            None
        };
        if let Some(problem) = problem {
            p.push(format!(
                "MAC {} of neighbour {address} {problem}",
                format_mac(&neighbour.mac)
            ));
        }
        if neighbour.interface >= interfaces.len() {
            p.push(format!(
                "neighbour {address} is on interface #{}, but there are only {} interfaces",
                neighbour.interface,
                interfaces.len()
            ));
        }
    }
}

/// Services and their backends.
fn services(services: &[Service], p: &mut Vec<String>) {
    let mut names: HashSet<&str> = HashSet::with_capacity(services.len());
    let mut listeners: HashMap<(Protocol, IpAddr, u16), &str> =
        HashMap::with_capacity(services.len());
    for service in services {
        let name = service.name.as_str();
        let quoted = format!("{name:?}");
        if !is_valid_name(name) {
            p.push(format!("service name {quoted} {}", name_rule()));
        } else if !names.insert(name) {
            p.push(format!("service {quoted} is defined twice"));
        }
        let vip_ok = usable_address(
            service.vip,
            || format!("VIP {} of service {quoted}", service.vip),
            p,
        );
        let port_ok = in_range(
            service.port,
            1..=u16::MAX,
            "port",
            &format!(" of service {quoted}"),
            p,
        );
        if vip_ok && port_ok {
            let key = (service.protocol, service.vip, service.port);
            if let Some(other) = listeners.get(&key) {
                p.push(format!(
                    "{} {} of service {quoted} is already used by service {other:?}",
                    service.protocol,
                    service.socket_addr()
                ));
            } else {
                listeners.insert(key, name);
            }
        }
        backends(service, &quoted, vip_ok, p);
        weights(service, &quoted, p);
        let size = service.maglev_table_size;
        let size_ok = table_size(
            size,
            "maglev_table_size",
            &format!(" of service {quoted}"),
            p,
        );
        let count = service.backends.len();
        if size_ok && u64::try_from(count).unwrap_or(u64::MAX) >= u64::from(size) {
            p.push(format!(
                "maglev_table_size {size} of service {quoted} must be larger than its {count} \
                 backends (100 times larger is recommended)"
            ));
        }
    }
}

/// A service's backends: usable addresses of the VIP's family, ports in
/// range, no duplicates, weights in range, valid labels.
fn backends(service: &Service, quoted: &str, vip_ok: bool, p: &mut Vec<String>) {
    let mut seen: HashSet<(IpAddr, u16)> = HashSet::with_capacity(service.backends.len());
    for backend in &service.backends {
        let address = backend.address;
        let address_ok = usable_address(
            address,
            || format!("backend {address} of service {quoted}"),
            p,
        );
        if address_ok && vip_ok && address.is_ipv4() != service.vip.is_ipv4() {
            p.push(format!(
                "backend {address} of service {quoted} is {} but its VIP {} is {}",
                family(address),
                service.vip,
                family(service.vip)
            ));
        }
        let port_ok = in_range(
            backend.port,
            1..=u16::MAX,
            "port",
            &format!(" of backend {address} in service {quoted}"),
            p,
        );
        if address_ok && port_ok && !seen.insert((address, backend.port)) {
            p.push(format!(
                "backend {} is listed twice in service {quoted}",
                backend.socket_addr()
            ));
        }
        // Only build the context string when something is wrong with it.
        let context = || format!(" of backend {} in service {quoted}", backend.socket_addr());
        if backend.weight > MAX_WEIGHT {
            in_range(backend.weight, 0..=MAX_WEIGHT, "weight", &context(), p);
        }
        for (key, label) in [
            ("zone", &backend.zone),
            ("set", &backend.set),
            ("group", &backend.group),
        ] {
            if let Some(label) = label {
                if !is_valid_name(label) {
                    p.push(format!("{key} {label:?}{} {}", context(), name_rule()));
                }
            }
        }
    }
}

/// A service needs backends, and at least one that takes new flows.
fn weights(service: &Service, quoted: &str, p: &mut Vec<String>) {
    if service.backends.is_empty() {
        p.push(format!("service {quoted} has no backends"));
        return;
    }
    let all_valid = service.backends.iter().all(|b| b.weight <= MAX_WEIGHT);
    if all_valid && service.backends.iter().all(|b| b.weight == 0) {
        p.push(format!(
            "service {quoted} has no backend with weight > 0 (all {} are drained)",
            service.backends.len()
        ));
    }
}

/// A Maglev table size in range and prime; records why not and returns
/// false otherwise.
fn table_size(size: u32, key: &str, context: &str, p: &mut Vec<String>) -> bool {
    if !in_range(
        size,
        MIN_MAGLEV_TABLE_SIZE..=MAX_MAGLEV_TABLE_SIZE,
        key,
        context,
        p,
    ) {
        return false;
    }
    if is_prime(size) {
        return true;
    }
    // Both bounds are prime, so both neighbours of an in-range size are in
    // range too.
    let nearest: Vec<String> = [prev_prime(size), next_prime(size)]
        .into_iter()
        .flatten()
        .map(|n| n.to_string())
        .collect();
    p.push(format!(
        "{key} {size}{context} is not prime (nearest primes: {})",
        nearest.join(", ")
    ));
    false
}

/// Whether `value` lies in `range`; otherwise records
/// `KEY VALUE CONTEXT is out of range LO..=HI` and returns false.
fn in_range<T: PartialOrd + Display>(
    value: T,
    range: RangeInclusive<T>,
    key: &str,
    context: &str,
    p: &mut Vec<String>,
) -> bool {
    if range.contains(&value) {
        return true;
    }
    p.push(format!(
        "{key} {value}{context} is out of range {}..={}",
        range.start(),
        range.end()
    ));
    false
}

/// Whether `address` can be a packet's destination or source here: not
/// unspecified, multicast, broadcast, loopback or IPv4-mapped. Records why
/// not (after `describe()`), and returns false, otherwise.
fn usable_address(address: IpAddr, describe: impl Fn() -> String, p: &mut Vec<String>) -> bool {
    match address_problem(address) {
        Some(problem) => {
            p.push(format!("{} {problem}", describe()));
            false
        }
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{load_file, load_str, Backend};
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

    /// The loader's messages for `text`, without position and without the
    /// line references a model has no use for.
    fn loader_messages(text: &str) -> Vec<String> {
        let error = load_str(text, "t.toml").expect_err("text was accepted");
        error
            .problems()
            .iter()
            .map(|p| {
                let m = p.message.as_str();
                let cut = m.find(" (first at line ").or_else(|| m.find(" (line "));
                cut.map_or(m, |i| &m[..i]).to_owned()
            })
            .collect()
    }

    fn check_messages(config: &Config) -> Vec<String> {
        check(config).expect_err("model was accepted").problems
    }

    /// The same problem, written in a file and made in the model, reads the
    /// same.
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
        assert_eq!(check(&base()), Ok(()));
        assert_eq!(check(&Config::default()), Ok(()));
        let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        for name in ["demo.toml", "example.toml"] {
            let config = load_file(&configs.join(name)).unwrap();
            assert_eq!(check(&config), Ok(()), "{name}");
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
            name: "none".into(),
            protocol: Protocol::Udp,
            vip: ip("198.18.100.11"),
            port: 53,
            scheduler: Default::default(),
            maglev_table_size: 251,
            backends: Vec::new(),
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
        model.interfaces[0].mac = [0x01, 0, 0x5e, 0, 0, 1];
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
        assert!(problems[0].starts_with("weight 20000 of backend 198.18.1.11:8080"));
        assert_eq!(problems[1], "service \"web\" is defined twice");
        assert!(problems[2].starts_with("port 0 of backend 2001:2:0:1::11"));
        let error = check(&model).unwrap_err();
        assert_eq!(error.to_string().lines().count(), 3);
    }

    proptest::proptest! {
        /// Whatever the loader accepts, the model check accepts too.
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
                proptest::prop_assert_eq!(check(&config), Ok(()));
            }
        }
    }
}
