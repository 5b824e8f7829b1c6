//! The validator's part for routing by client: client classes, zone
//! priorities, backend names, canaries, distribution paths and the subset
//! memory cap. Each problem is located through the provenance like every
//! other, so a file and an API edit get the same message.

use hashbrown::{HashMap, HashSet};
use std::net::IpAddr;

use super::super::place::{Item, Place};
use super::super::routing::{profiles, service_subsets, subset_bytes};
use super::super::{
    ClientPrefix, Config, DistributionPath, Service, SetName, MAX_CANARY_SHARE_BP,
    MAX_PATH_BACKENDS,
};
use super::{is_valid_name, name_rule, of_service, set_rule, Range, Validator};

/// A canary's share, in basis points.
pub(in crate::rules) const CANARY_SHARE: Range = Range::new(0, MAX_CANARY_SHARE_BP as i64);
/// `routing.subset_memory_limit`, in bytes: up to 1 TiB.
pub(in crate::rules) const SUBSET_MEMORY: Range = Range::new(0, 1 << 40);

/// Why `prefix` is not a usable client prefix, if it is not.
pub(in crate::rules) fn prefix_problem(prefix: &ClientPrefix) -> Option<String> {
    let max = prefix.max_len();
    if prefix.len > max {
        return Some(format!("is longer than /{max}"));
    }
    let host_bits = match prefix.address {
        IpAddr::V4(a) => {
            u32::from(a)
                & !u32::MAX
                    .checked_shl(32 - u32::from(prefix.len))
                    .unwrap_or(0)
                != 0
        }
        IpAddr::V6(a) => {
            u128::from(a)
                & !u128::MAX
                    .checked_shl(128 - u32::from(prefix.len))
                    .unwrap_or(0)
                != 0
        }
    };
    if host_bits {
        return Some("has host bits set".to_owned());
    }
    if let IpAddr::V6(a) = prefix.address {
        if a.to_ipv4_mapped().is_some() {
            return Some("lies in the IPv4-mapped range: write the IPv4 prefix".to_owned());
        }
    }
    None
}

/// Whether `path`, one path of `service`, passes every check
/// [`Validator::paths`] makes of one path on its own (the checks of the
/// other paths aside: a prefix no other path of the service has is the
/// caller's to know). A control API edit of a few paths judges only those
/// with it, and has the whole validator word a refusal.
pub(crate) fn path_is_valid(service: &Service, path: &DistributionPath) -> bool {
    let count = path.backends.len();
    let mut seen = HashSet::with_capacity(count);
    service.scheduler.picks_one()
        && prefix_problem(&path.client).is_none()
        && (1..=MAX_PATH_BACKENDS).contains(&count)
        && path
            .backends
            .iter()
            .all(|b| service.backend_named(b).is_some() && seen.insert(b.as_str()))
}

/// Whether `name` may be a backend's stable name: a valid name (which
/// never contains `:`, so never equals another backend's `ADDR:PORT`).
fn backend_name_ok(name: &str) -> bool {
    is_valid_name(name)
}

/// Every zone some backend or client class of `config` has.
fn known_zones(config: &Config) -> HashSet<&str> {
    let backends = config
        .services
        .iter()
        .flat_map(|s| &s.backends)
        .filter_map(|b| b.zone.as_deref());
    let classes = config
        .routing
        .classes
        .iter()
        .filter_map(|c| c.zone.as_deref());
    backends.chain(classes).collect()
}

impl Validator<'_> {
    /// Everything of routing by client.
    pub(super) fn routing(&mut self) {
        let config = self.config;
        let limit = i64::try_from(config.routing.subset_memory_limit).unwrap_or(i64::MAX);
        let key = "routing.subset_memory_limit";
        let place = Place::field(Item::Routing, "subset_memory_limit");
        self.in_range(place, limit, SUBSET_MEMORY, key, String::new);
        let zones = known_zones(config);
        self.classes();
        let gateway = &config.routing.zone_priority;
        self.zone_priority(
            Place::field(Item::Routing, "zone_priority"),
            gateway,
            &zones,
            "",
        );
        for (i, service) in config.services.iter().enumerate() {
            self.service_routing(i, service, &zones);
        }
        if self.found.is_empty() {
            self.subset_memory();
        }
    }

    /// Service `i`'s routing by client: backend names, zone priority
    /// (against `zones`, the zones some backend or class has), canary,
    /// paths.
    pub(super) fn service_routing(&mut self, i: usize, service: &Service, zones: &HashSet<&str>) {
        self.backend_names(i, service);
        if let Some(priority) = &service.routing.zone_priority {
            let context = format!(" of service {:?}", service.name);
            self.zone_priority(
                Place::service(i, "zone_priority"),
                priority,
                zones,
                &context,
            );
        }
        self.canary(i, service);
        self.paths(i, service);
    }

    /// A prefix at `place`: usable, reported with `what` (`client class`).
    pub(super) fn prefix(&mut self, place: Place, prefix: &ClientPrefix, what: &str) -> bool {
        if !self.known(place) {
            return false;
        }
        match prefix_problem(prefix) {
            Some(problem) => {
                self.report(place, format!("{what} prefix {prefix} {problem}"));
                false
            }
            None => true,
        }
    }

    /// `routing.classes`: usable unique prefixes, valid SETs and zones.
    fn classes(&mut self) {
        let classes = &self.config.routing.classes;
        let mut first: HashMap<ClientPrefix, usize> = HashMap::with_capacity(classes.len());
        for (i, class) in classes.iter().enumerate() {
            let place = Place::field(Item::ClientClass(i), "prefix");
            if self.prefix(place, &class.prefix, "client class") {
                if let Some(&j) = first.get(&class.prefix) {
                    let message = format!("client class prefix {} is listed twice", class.prefix);
                    let earlier = Place::field(Item::ClientClass(j), "prefix");
                    self.report_duplicate(place, earlier, message);
                } else {
                    first.insert(class.prefix, i);
                }
            }
            let context = format!(" of client class {}", class.prefix);
            if let Some(set) = &class.set {
                if SetName::parse(set).is_none() {
                    let message = format!("set {set:?}{context} {}", set_rule());
                    self.report(Place::field(Item::ClientClass(i), "set"), message);
                }
            }
            if let Some(zone) = &class.zone {
                if !is_valid_name(zone) {
                    let message = format!("zone {zone:?}{context} {}", name_rule());
                    self.report(Place::field(Item::ClientClass(i), "zone"), message);
                }
            }
        }
    }

    /// A zone priority list: each entry a known zone, none twice.
    fn zone_priority(
        &mut self,
        place: Place,
        priority: &[String],
        zones: &HashSet<&str>,
        context: &str,
    ) {
        let mut seen = HashSet::with_capacity(priority.len());
        for (k, zone) in priority.iter().enumerate() {
            let at = Place::element(place.item, place.key.unwrap_or("zone_priority"), k);
            if !zones.contains(zone.as_str()) {
                let message = format!(
                    "zone_priority{context} names zone {zone:?}, which no backend or client class has"
                );
                self.report(at, message);
            } else if !seen.insert(zone.as_str()) {
                let message = format!("zone_priority{context} lists zone {zone:?} twice");
                self.report(at, message);
            }
        }
    }

    /// Backend names: valid, unique in their service.
    fn backend_names(&mut self, i: usize, service: &Service) {
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (j, backend) in service.backends.iter().enumerate() {
            let Some(name) = backend.name.as_deref() else {
                continue;
            };
            let place = Place::backend(i, j, "name");
            if !backend_name_ok(name) {
                let message = format!(
                    "backend name {name:?} in service {:?} {}",
                    service.name,
                    name_rule()
                );
                self.report(place, message);
            } else if let Some(&k) = first.get(name) {
                let message = format!(
                    "backend name {name:?} is given twice in service {:?}",
                    service.name
                );
                self.report_duplicate(place, Place::backend(i, k, "name"), message);
            } else {
                first.insert(name, j);
            }
        }
    }

    /// A service's canary: a group some backend has, a share in range,
    /// usable unique client prefixes, on a scheduler that picks one.
    fn canary(&mut self, i: usize, service: &Service) {
        let Some(canary) = &service.routing.canary else {
            return;
        };
        let name = &service.name;
        let item = Item::Canary(i);
        if !service.scheduler.picks_one() {
            let message = format!(
                "service {name:?} has a canary, but its scheduler {} sends each flow to every backend",
                service.scheduler.name()
            );
            self.report(Place::item(item), message);
        }
        if !is_valid_name(&canary.group) {
            let message = format!(
                "canary group {:?} of service {name:?} {}",
                canary.group,
                name_rule()
            );
            self.report(Place::field(item, "group"), message);
        } else if !service
            .backends
            .iter()
            .any(|b| b.group.as_deref() == Some(canary.group.as_str()))
        {
            let message = format!(
                "canary group {:?} of service {name:?} is no backend's group",
                canary.group
            );
            self.report(Place::field(item, "group"), message);
        }
        let place = Place::field(item, "share");
        let share = i64::from(canary.share_bp);
        self.in_range(place, share, CANARY_SHARE, "canary.share", || {
            of_service(name)
        });
        let mut seen = HashSet::with_capacity(canary.clients.len());
        for (k, prefix) in canary.clients.iter().enumerate() {
            let place = Place::element(item, "clients", k);
            if self.prefix(place, prefix, "canary client") && !seen.insert(*prefix) {
                let message =
                    format!("canary client prefix {prefix} of service {name:?} is listed twice");
                self.report(place, message);
            }
        }
    }

    /// A service's distribution paths: usable unique prefixes, each naming
    /// 1 to [`MAX_PATH_BACKENDS`] distinct backends of the service.
    fn paths(&mut self, i: usize, service: &Service) {
        let name = &service.name;
        if !service.routing.paths.is_empty() && !service.scheduler.picks_one() {
            let message = format!(
                "service {name:?} has distribution paths, but its scheduler {} sends each flow to every backend",
                service.scheduler.name()
            );
            self.report(Place::service(i, "paths"), message);
        }
        let mut first: HashMap<ClientPrefix, usize> = HashMap::new();
        for (p, path) in service.routing.paths.iter().enumerate() {
            let item = Item::Path {
                service: i,
                path: p,
            };
            let place = Place::field(item, "client");
            if self.prefix(place, &path.client, "path client") {
                if let Some(&q) = first.get(&path.client) {
                    let message = format!(
                        "service {name:?} has two paths for client prefix {}",
                        path.client
                    );
                    let earlier = Place::field(
                        Item::Path {
                            service: i,
                            path: q,
                        },
                        "client",
                    );
                    self.report_duplicate(place, earlier, message);
                } else {
                    first.insert(path.client, p);
                }
            }
            let count = path.backends.len();
            if count == 0 || count > MAX_PATH_BACKENDS {
                let message = format!(
                    "path of client {} in service {name:?} names {count} backends; a path names 1 to {MAX_PATH_BACKENDS}",
                    path.client
                );
                self.report(Place::field(item, "backends"), message);
            }
            let mut seen = HashSet::with_capacity(count);
            for (k, backend) in path.backends.iter().enumerate() {
                let place = Place::element(item, "backends", k);
                if service.backend_named(backend).is_none() {
                    let message = format!(
                        "path of client {} names unknown backend {backend:?} of service {name:?} \
                         (a backend's name, or ADDR:PORT for one without)",
                        path.client
                    );
                    self.report(place, message);
                } else if !seen.insert(backend.as_str()) {
                    let message = format!(
                        "path of client {} in service {name:?} names backend {backend:?} twice",
                        path.client
                    );
                    self.report(place, message);
                }
            }
        }
    }

    /// The routing subsets' scheduler tables fit under the memory cap.
    /// Judged only on an otherwise valid config (the subsets of an
    /// invalid one mean nothing).
    fn subset_memory(&mut self) {
        let config = self.config;
        let limit = config.routing.subset_memory_limit;
        let profiles = profiles(config);
        let mut total: u64 = 0;
        let mut largest: Vec<(usize, u64, Vec<u64>)> = Vec::new();
        for (i, service) in config.services.iter().enumerate() {
            let Some(subsets) =
                service_subsets(service, &profiles.list, &config.routing.zone_priority)
            else {
                continue;
            };
            let sizes: Vec<u64> = subsets
                .subsets
                .iter()
                .map(|members| subset_bytes(service, members))
                .collect();
            let bytes: u64 = sizes.iter().sum();
            total = total.saturating_add(bytes);
            largest.push((i, bytes, sizes));
        }
        if total <= limit {
            return;
        }
        largest.sort_by_key(|s| std::cmp::Reverse(s.1));
        let Some((i, bytes, sizes)) = largest.first() else {
            return;
        };
        let service = &config.services[*i];
        let mut shown: Vec<u64> = sizes.iter().copied().filter(|&s| s > 0).collect();
        shown.sort_unstable_by_key(|&s| std::cmp::Reverse(s));
        let more = shown.len().saturating_sub(8);
        shown.truncate(8);
        let list: Vec<String> = shown.iter().map(|s| s.to_string()).collect();
        let message = format!(
            "routing subsets need {total} bytes over all services, over \
             routing.subset_memory_limit {limit}: service {:?} has {} subsets of {bytes} bytes \
             (largest: {}{}); fewer client profiles, zones or SETs, a smaller maglev_table_size, \
             or a larger limit",
            service.name,
            sizes.len(),
            list.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            },
        );
        self.report(Place::field(Item::Routing, "subset_memory_limit"), message);
    }
}

#[cfg(test)]
mod tests {
    use crate::rules::{check, load_str, ClientClass, ClientPrefix, Config};

    /// A valid config using every part of routing by client.
    const ROUTED: &str = r#"[routing]
zone_priority = ["dc-b", "dc-a"]
subset_memory_limit = 1048576
[[routing.classes]]
prefix = "198.18.0.0/16"
zone = "dc-a"
[[routing.classes]]
prefix = "198.18.7.0/24"
set = "shop.sh.g1"
zone = "dc-b"
[[routing.classes]]
prefix = "2001:2:7::/48"
set = "shop.sh.*"

[[services]]
name = "orders"
protocol = "tcp"
vip = "198.18.100.10"
port = 80
zone_priority = ["dc-a"]
[services.canary]
group = "v2"
share = 500
clients = ["198.18.9.0/24", "198.18.9.7"]
[[services.paths]]
client = "198.18.5.5/32"
backends = ["orders-1"]
[[services.paths]]
client = "198.18.6.0/24"
backends = ["orders-1", "198.18.1.12:8080"]
[[services.backends]]
address = "198.18.1.11"
port = 8080
name = "orders-1"
zone = "dc-a"
set = "shop.sh.g1"
[[services.backends]]
address = "198.18.1.12"
port = 8080
zone = "dc-b"
group = "v2"
"#;

    fn errors(text: &str) -> Vec<String> {
        match load_str(text, "t.toml") {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.problems().iter().map(|p| p.to_string()).collect(),
        }
    }

    fn edited(from: &str, to: &str) -> String {
        assert!(ROUTED.contains(from), "{from}");
        ROUTED.replacen(from, to, 1)
    }

    #[test]
    fn a_config_with_every_routing_table_loads() {
        let config = load_str(ROUTED, "t.toml").unwrap();
        assert_eq!(config.routing.classes.len(), 3);
        assert_eq!(config.routing.subset_memory_limit, 1 << 20);
        let orders = &config.services[0];
        assert_eq!(orders.routing.canary.as_ref().unwrap().share_bp, 500);
        assert_eq!(
            orders.routing.canary.as_ref().unwrap().clients[1],
            ClientPrefix::host("198.18.9.7".parse().unwrap())
        );
        assert_eq!(
            orders.routing.paths.iter().nth(1).unwrap().backends.len(),
            2
        );
        assert_eq!(orders.backends[0].name.as_deref(), Some("orders-1"));
        assert_eq!(
            orders.zone_priority(&config.routing.zone_priority),
            ["dc-a"]
        );
    }

    #[test]
    fn each_bad_routing_entry_is_refused_at_its_line() {
        assert_eq!(
            errors(&edited(
                "prefix = \"198.18.7.0/24\"",
                "prefix = \"198.18.0.0/16\""
            )),
            ["t.toml:8:10: client class prefix 198.18.0.0/16 is listed twice (first at line 5)"]
        );
        assert_eq!(
            errors(&edited(
                "prefix = \"198.18.7.0/24\"",
                "prefix = \"198.18.7.1/24\""
            )),
            ["t.toml:8:10: client class prefix 198.18.7.1/24 has host bits set"]
        );
        assert_eq!(
            errors(&edited(
                "prefix = \"198.18.7.0/24\"",
                "prefix = \"198.18.7.0/33\""
            )),
            ["t.toml:8:10: client class prefix 198.18.7.0/33 is longer than /32"]
        );
        assert_eq!(
            errors(&edited(
                "prefix = \"198.18.7.0/24\"",
                "prefix = \"nowhere/24\""
            )),
            ["t.toml:8:10: client class prefix \"nowhere/24\" is not an address/length prefix"]
        );
        assert_eq!(
            errors(&edited("set = \"shop.sh.g1\"\nzone = \"dc-b\"", "set = \"shop.*.g1\"\nzone = \"dc-b\"")),
            ["t.toml:9:7: set \"shop.*.g1\" of client class 198.18.7.0/24 is not a SET name: write name.area.group, three parts of A-Z a-z 0-9 _ - (the group may be *), at most 64 bytes"]
        );
        assert_eq!(
            errors(&edited("zone_priority = [\"dc-b\", \"dc-a\"]", "zone_priority = [\"dc-b\", \"dc-x\"]")),
            ["t.toml:2:26: zone_priority names zone \"dc-x\", which no backend or client class has"]
        );
        assert_eq!(
            errors(&edited(
                "zone_priority = [\"dc-a\"]",
                "zone_priority = [\"dc-a\", \"dc-a\"]"
            )),
            ["t.toml:20:26: zone_priority of service \"orders\" lists zone \"dc-a\" twice"]
        );
        assert_eq!(
            errors(&edited("share = 500", "share = 10001")),
            ["t.toml:23:9: canary.share 10001 of service \"orders\" is out of range 0..=10000"]
        );
        assert_eq!(
            errors(&edited("group = \"v2\"\nshare", "group = \"v3\"\nshare")),
            ["t.toml:22:9: canary group \"v3\" of service \"orders\" is no backend's group"]
        );
        assert_eq!(
            errors(&edited("backends = [\"orders-1\"]", "backends = [\"orders-9\"]")),
            ["t.toml:27:13: path of client 198.18.5.5/32 names unknown backend \"orders-9\" of service \"orders\" (a backend's name, or ADDR:PORT for one without)"]
        );
        assert_eq!(
            errors(&edited("client = \"198.18.6.0/24\"", "client = \"198.18.5.5\"")),
            ["t.toml:29:10: service \"orders\" has two paths for client prefix 198.18.5.5/32 (first at line 26)"]
        );
        assert_eq!(
            errors(&edited("backends = [\"orders-1\"]", "backends = []")),
            ["t.toml:27:12: path of client 198.18.5.5/32 in service \"orders\" names 0 backends; a path names 1 to 16"]
        );
        assert_eq!(
            errors(&edited("address = \"198.18.1.12\"\nport = 8080", "address = \"198.18.1.12\"\nport = 8080\nname = \"orders-1\"")),
            [
                // Named, the backend is no longer called by its address.
                "t.toml:30:25: path of client 198.18.6.0/24 names unknown backend \"198.18.1.12:8080\" of service \"orders\" (a backend's name, or ADDR:PORT for one without)",
                "t.toml:40:8: backend name \"orders-1\" is given twice in service \"orders\" (first at line 34)",
            ]
        );
    }

    #[test]
    fn subsets_over_the_memory_cap_are_refused_naming_the_service() {
        let text = edited(
            "subset_memory_limit = 1048576",
            "subset_memory_limit = 1000",
        );
        let errors = errors(&text);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("t.toml:3:23: routing subsets need ")
                && errors[0]
                    .contains("over routing.subset_memory_limit 1000: service \"orders\" has ")
                && errors[0].contains("has 2 subsets of 524320 bytes (largest: 262160, 262160)"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn the_model_is_judged_the_same_without_a_file() {
        let mut config = load_str(ROUTED, "t.toml").unwrap();
        config.routing.classes.push(ClientClass {
            prefix: ClientPrefix::new("198.18.0.0".parse().unwrap(), 16),
            set: None,
            zone: None,
        });
        let messages: Vec<String> = check(&config)
            .unwrap_err()
            .problems()
            .iter()
            .map(|p| p.message.clone())
            .collect();
        assert_eq!(
            messages,
            ["client class prefix 198.18.0.0/16 is listed twice"]
        );
        assert!(check(&Config::default()).is_ok());
    }
}
