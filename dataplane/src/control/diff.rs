//! What changes between two configs, as an operator reads it: services
//! added, removed or changed; backends added, removed, reweighted or
//! relabelled; other sections that differ. The types it is reported in
//! are the API's ([`flowgate_api::diff`]).
//!
//! Services are matched by name and backends by (address, port) within
//! their service. The backends of an added (removed) service count as
//! added (removed). Entries come in config order: added and changed ones in
//! the new config's, removed ones in the old config's. Order alone is no
//! change: the compiled tables do not depend on it.

mod health;

use hashbrown::HashMap;
use std::net::IpAddr;

use flowgate_api::{
    BackendSummary, ClassView, ConfigDiff, Relabel, Reweight, ServiceChange, ServiceSummary,
};

use crate::rules::{self, Backend, Config, Service};

impl From<&Service> for ServiceSummary {
    fn from(s: &Service) -> ServiceSummary {
        ServiceSummary {
            name: s.name.clone(),
            protocol: s.protocol.name().to_owned(),
            vip: s.vip,
            port: s.port,
            scheduler: s.scheduler.name().to_owned(),
            backends: s.backends.len(),
        }
    }
}

/// `b`, a backend of `service`, as added or removed.
fn backend_summary(service: &str, b: &Backend) -> BackendSummary {
    BackendSummary {
        service: service.to_owned(),
        address: b.address,
        port: b.port,
        weight: b.weight,
    }
}

/// What changes from `old` to `new`.
pub fn diff(old: &Config, new: &Config) -> ConfigDiff {
    let mut d = ConfigDiff::default();
    for (section, differs) in [
        ("gateway", old.gateway != new.gateway),
        ("daemon", old.daemon != new.daemon),
        ("flows", old.flows != new.flows),
        ("health", old.health != new.health),
        ("interfaces", old.interfaces != new.interfaces),
        ("neighbours", !same_neighbours(old, new)),
        ("routing", !same_routing_settings(old, new)),
        ("ingress", old.ingress != new.ingress),
    ] {
        if differs {
            d.settings_changed.push(section.to_owned());
        }
    }
    class_changes(old, new, &mut d);

    let old_by_name: HashMap<&str, &Service> =
        old.services.iter().map(|s| (s.name.as_str(), s)).collect();
    let new_by_name: HashMap<&str, &Service> =
        new.services.iter().map(|s| (s.name.as_str(), s)).collect();
    for service in &new.services {
        match old_by_name.get(service.name.as_str()) {
            None => {
                d.services_added.push(ServiceSummary::from(service));
                d.backends_added.extend(
                    service
                        .backends
                        .iter()
                        .map(|b| backend_summary(&service.name, b)),
                );
            }
            Some(before) => service_changes(before, service, &mut d),
        }
    }
    for service in &old.services {
        if !new_by_name.contains_key(service.name.as_str()) {
            d.services_removed.push(ServiceSummary::from(service));
            d.backends_removed.extend(
                service
                    .backends
                    .iter()
                    .map(|b| backend_summary(&service.name, b)),
            );
        }
    }
    d
}

/// Whether `[routing]` is the same apart from its client classes (which
/// [`class_changes`] lists).
fn same_routing_settings(old: &Config, new: &Config) -> bool {
    let (a, b) = (&old.routing, &new.routing);
    a.zone_priority == b.zone_priority && a.subset_memory_limit == b.subset_memory_limit
}

/// A client class as the API shows it.
pub(crate) fn class_view(class: &rules::ClientClass) -> ClassView {
    ClassView {
        prefix: class.prefix.to_string(),
        set: class.set.clone(),
        zone: class.zone.clone(),
    }
}

/// Client classes added and removed, by prefix (a class whose SET or zone
/// changed is both). Order is no change: the longest match does not
/// depend on it.
fn class_changes(old: &Config, new: &Config, d: &mut ConfigDiff) {
    let (old, new) = (&old.routing.classes, &new.routing.classes);
    if old == new {
        return;
    }
    let before: HashMap<_, _> = old.iter().map(|c| (c.prefix, c)).collect();
    let after: HashMap<_, _> = new.iter().map(|c| (c.prefix, c)).collect();
    d.classes_removed.extend(
        old.iter()
            .filter(|c| after.get(&c.prefix) != Some(c))
            .map(class_view),
    );
    d.classes_added.extend(
        new.iter()
            .filter(|c| before.get(&c.prefix) != Some(c))
            .map(class_view),
    );
}

/// Whether `new` is `old` with only services' distribution paths
/// changed (services in the same order): what the path table can take
/// path by path, beside the snapshot, with nothing else to compile.
pub(crate) fn only_paths_differ(old: &Config, new: &Config) -> bool {
    let Config {
        gateway,
        daemon,
        flows,
        health,
        interfaces,
        neighbours,
        services,
        routing,
        ingress,
    } = old;
    *gateway == new.gateway
        && *ingress == new.ingress
        && *daemon == new.daemon
        && *flows == new.flows
        && *health == new.health
        && *interfaces == new.interfaces
        && *neighbours == new.neighbours
        && *routing == new.routing
        && services.len() == new.services.len()
        && services
            .iter()
            .zip(&new.services)
            .all(|(a, b)| same_but_paths(a, b))
}

/// Whether `b` is `a` with at most its distribution paths changed.
fn same_but_paths(a: &Service, b: &Service) -> bool {
    let Service {
        name,
        protocol,
        vip,
        port,
        scheduler,
        maglev_table_size,
        failover,
        health,
        backends,
        routing,
        limits,

        announce,
    } = a;
    *name == b.name
        && *protocol == b.protocol
        && *vip == b.vip
        && *port == b.port
        && *scheduler == b.scheduler
        && *maglev_table_size == b.maglev_table_size
        && *failover == b.failover
        && *health == b.health
        && *backends == b.backends
        && *limits == b.limits
        && *announce == b.announce
        && routing.zone_priority == b.routing.zone_priority
        && routing.canary == b.routing.canary
}

/// Up to how many named services [`diff_services`] and
/// [`only_paths_differ_in`] find one by one (a scan of the config each);
/// more are compared in full, which then costs about what they change.
const FEW_SERVICES: usize = 16;

/// Where the service called `name` is in `config`.
fn position(config: &Config, name: &str) -> Option<usize> {
    config.services.iter().position(|s| s.name == name)
}

/// [`diff`] for `new` known to be `old` with only the services named in
/// `names` added, replaced or removed (and nothing else changed, in
/// services or settings): it compares those services alone.
pub fn diff_services(old: &Config, new: &Config, names: &[String]) -> ConfigDiff {
    if names.len() > FEW_SERVICES {
        return diff(old, new);
    }
    let mut d = ConfigDiff::default();
    let mut removed = Vec::new();
    for name in names {
        let before = position(old, name).map(|i| &old.services[i]);
        let after = position(new, name).map(|i| &new.services[i]);
        match (before, after) {
            (None, Some(service)) => {
                d.services_added.push(ServiceSummary::from(service));
                d.backends_added.extend(
                    service
                        .backends
                        .iter()
                        .map(|b| backend_summary(&service.name, b)),
                );
            }
            (Some(before), Some(after)) => service_changes(before, after, &mut d),
            (Some(service), None) => removed.push(service),
            (None, None) => {}
        }
    }
    for service in removed {
        d.services_removed.push(ServiceSummary::from(service));
        d.backends_removed.extend(
            service
                .backends
                .iter()
                .map(|b| backend_summary(&service.name, b)),
        );
    }
    d
}

/// [`only_paths_differ`] for `new` known to be `old` with only the
/// services named in `names` changed (see [`diff_services`]).
pub(crate) fn only_paths_differ_in(old: &Config, new: &Config, names: &[String]) -> bool {
    if names.len() > FEW_SERVICES {
        return only_paths_differ(old, new);
    }
    old.services.len() == new.services.len()
        && names
            .iter()
            .all(|name| match (position(old, name), position(new, name)) {
                (Some(i), Some(j)) => i == j && same_but_paths(&old.services[i], &new.services[j]),
                _ => false,
            })
}

/// Static neighbours are a set: the same entries in another order are
/// the same.
fn same_neighbours(old: &Config, new: &Config) -> bool {
    if old.neighbours.len() != new.neighbours.len() {
        return false;
    }
    let before: HashMap<IpAddr, _> = old
        .neighbours
        .iter()
        .map(|n| (n.address, (n.mac, n.interface)))
        .collect();
    new.neighbours
        .iter()
        .all(|n| before.get(&n.address) == Some(&(n.mac, n.interface)))
}

/// The differences of a service present in both configs.
fn service_changes(before: &Service, after: &Service, d: &mut ConfigDiff) {
    let name = &after.name;
    let mut field = |field: &str, from: String, to: String| {
        if from != to {
            d.services_changed.push(ServiceChange {
                service: name.clone(),
                field: field.to_owned(),
                from,
                to,
            });
        }
    };
    field(
        "protocol",
        before.protocol.to_string(),
        after.protocol.to_string(),
    );
    field("vip", before.vip.to_string(), after.vip.to_string());
    field("port", before.port.to_string(), after.port.to_string());
    field(
        "scheduler",
        before.scheduler.to_string(),
        after.scheduler.to_string(),
    );
    field(
        "maglev_table_size",
        before.maglev_table_size.to_string(),
        after.maglev_table_size.to_string(),
    );
    field(
        "limits",
        before.limits.to_string(),
        after.limits.to_string(),
    );
    field(
        "announce",
        before.announce.to_string(),
        after.announce.to_string(),
    );

    routing_changes(before, after, d);
    health::service_health_changes(before, after, d);
    if before.backends != after.backends {
        backend_changes(name, before, after, d);
    }
}

/// The backends of a service present in both configs that were added,
/// removed, reweighted or relabelled.
fn backend_changes(name: &str, before: &Service, after: &Service, d: &mut ConfigDiff) {
    let old_backends: HashMap<(IpAddr, u16), &Backend> = before
        .backends
        .iter()
        .map(|b| ((b.address, b.port), b))
        .collect();
    let mut kept = 0;
    for backend in &after.backends {
        let Some(old) = old_backends.get(&(backend.address, backend.port)) else {
            d.backends_added.push(backend_summary(name, backend));
            continue;
        };
        kept += 1;
        if old.weight != backend.weight {
            d.backends_reweighted.push(Reweight {
                service: name.to_owned(),
                address: backend.address,
                port: backend.port,
                from: old.weight,
                to: backend.weight,
            });
        }
        let cap = |b: &Backend| {
            b.max_connections
                .map(|c| format!("{}/{}", c.upper(), c.lower()))
        };
        let caps = (cap(old), cap(backend));
        for (label, from, to) in [
            ("zone", &old.zone, &backend.zone),
            ("set", &old.set, &backend.set),
            ("group", &old.group, &backend.group),
            ("name", &old.name, &backend.name),
            ("max_connections", &caps.0, &caps.1),
        ] {
            if from != to {
                d.backends_relabelled.push(Relabel {
                    service: name.to_owned(),
                    address: backend.address,
                    port: backend.port,
                    label: label.to_owned(),
                    from: from.clone(),
                    to: to.clone(),
                });
            }
        }
    }
    if kept < before.backends.len() {
        let new_backends: HashMap<(IpAddr, u16), ()> = after
            .backends
            .iter()
            .map(|b| ((b.address, b.port), ()))
            .collect();
        d.backends_removed.extend(
            before
                .backends
                .iter()
                .filter(|b| !new_backends.contains_key(&(b.address, b.port)))
                .map(|b| backend_summary(name, b)),
        );
    }
}

/// The differences of a service's routing by client: its zone order, its
/// canary, and its paths (counted, not listed: a service may have a
/// million).
fn routing_changes(before: &Service, after: &Service, d: &mut ConfigDiff) {
    let (old, new) = (&before.routing, &after.routing);
    let mut push = |field: &str, from: String, to: String| {
        d.services_changed.push(ServiceChange {
            service: after.name.clone(),
            field: field.to_owned(),
            from,
            to,
        });
    };
    if old.zone_priority != new.zone_priority {
        let shown = |z: &Option<Vec<String>>| match z {
            Some(zones) => zones.join(","),
            None => "(the gateway's)".into(),
        };
        push(
            "zone_priority",
            shown(&old.zone_priority),
            shown(&new.zone_priority),
        );
    }
    if old.canary != new.canary {
        let shown = |c: &Option<rules::Canary>| match c {
            Some(c) => format!(
                "group {} share {} bp, {} client prefixes",
                c.group,
                c.share_bp,
                c.clients.len()
            ),
            None => "none".into(),
        };
        push("canary", shown(&old.canary), shown(&new.canary));
    }
    if old.paths != new.paths {
        let before: HashMap<_, _> = old.paths.iter().map(|p| (p.client, &p.backends)).collect();
        let (mut added, mut changed) = (0, 0);
        for path in &new.paths {
            match before.get(&path.client) {
                None => added += 1,
                Some(backends) if **backends != path.backends => changed += 1,
                Some(_) => {}
            }
        }
        let kept = new.paths.len() - added;
        let counts = PathCounts {
            before: old.paths.len(),
            after: new.paths.len(),
            added,
            removed: old.paths.len() - kept,
            changed,
        };
        d.services_changed.extend(counts.change(&after.name));
    }
}

/// How a service's paths changed, as the diff counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PathCounts {
    /// Paths before.
    pub before: usize,
    /// Paths after.
    pub after: usize,
    /// Prefixes that had no path.
    pub added: usize,
    /// Prefixes that lost theirs.
    pub removed: usize,
    /// Paths whose backends changed.
    pub changed: usize,
}

impl PathCounts {
    /// The diff's line for service `service`, unless nothing changed.
    pub(crate) fn change(&self, service: &str) -> Option<ServiceChange> {
        let PathCounts {
            before,
            after,
            added,
            removed,
            changed,
        } = *self;
        (added + changed + removed > 0).then(|| ServiceChange {
            service: service.to_owned(),
            field: "paths".to_owned(),
            from: format!("{before} paths"),
            to: format!("{after} paths ({added} added, {removed} removed, {changed} changed)"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{load_str, Scheduler, SharedList};

    const RULES: &str = r#"
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
name = "dns"
protocol = "udp"
vip = "198.18.100.10"
port = 53
[[services.backends]]
address = "198.18.1.11"
port = 5353
"#;

    fn rules() -> Config {
        load_str(RULES, "t.toml").unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_same_rules_in_another_order_differ_in_nothing() {
        let old = rules();
        assert!(diff(&old, &old).is_empty());
        let mut new = old.clone();
        new.services.reverse();
        new.services[1].backends.reverse();
        assert!(diff(&old, &new).is_empty());
    }

    #[test]
    fn a_change_of_the_bogons_is_a_change_of_ingress() {
        let old = rules();
        let mut new = old.clone();
        new.ingress.bogons = vec![crate::rules::parse::client_prefix("10.0.0.0/8", "t").unwrap()];
        let d = diff(&old, &new);
        assert_eq!(d.settings_changed, ["ingress"]);
        assert!(!d.is_empty(), "a reload publishes it");
    }

    #[test]
    fn a_change_of_announcement_is_a_change_of_the_service() {
        let old = rules();
        let mut new = old.clone();
        new.services[0].announce = crate::rules::Announce::Arp;
        assert_eq!(
            diff(&old, &new).services_changed,
            [ServiceChange {
                service: "web".into(),
                field: "announce".into(),
                from: "none".into(),
                to: "arp".into()
            }]
        );
    }

    #[test]
    fn reports_each_kind_of_change() {
        let old = rules();
        let mut new = old.clone();
        let web = &mut new.services[0];
        web.scheduler = Scheduler::Wrr;
        web.backends[0].weight = 0;
        web.backends[1].zone = Some("a".into());
        web.backends.remove(0);
        let mut added = Backend::new(ip("198.18.1.13"), 8080);
        added.weight = 3;
        web.backends.push(added);
        new.services.remove(1);
        let mut dns6 = old.services[1].clone();
        dns6.name = "dns6".into();
        dns6.vip = ip("2001:2:0:100::10");
        dns6.backends = vec![Backend::new(ip("2001:2:0:1::11"), 5353)];
        new.services.push(dns6);

        let d = diff(&old, &new);
        assert_eq!(
            d.services_changed,
            [ServiceChange {
                service: "web".into(),
                field: "scheduler".into(),
                from: "maglev".into(),
                to: "wrr".into()
            }]
        );
        assert_eq!(d.services_added.len(), 1);
        assert_eq!(d.services_added[0].name, "dns6");
        assert_eq!(d.services_removed.len(), 1);
        assert_eq!(d.services_removed[0].name, "dns");
        let added: Vec<_> = d
            .backends_added
            .iter()
            .map(|b| (b.service.as_str(), b.address, b.port, b.weight))
            .collect();
        assert_eq!(
            added,
            [
                ("web", ip("198.18.1.13"), 8080, 3),
                ("dns6", ip("2001:2:0:1::11"), 5353, 1)
            ]
        );
        let removed: Vec<_> = d
            .backends_removed
            .iter()
            .map(|b| (b.service.as_str(), b.address, b.port))
            .collect();
        assert_eq!(
            removed,
            [
                ("web", ip("198.18.1.11"), 8080),
                ("dns", ip("198.18.1.11"), 5353)
            ]
        );
        assert!(
            d.backends_reweighted.is_empty(),
            "the drained one was removed"
        );
        assert_eq!(d.backends_relabelled.len(), 1);
        assert_eq!(d.backends_relabelled[0].label, "zone");
        assert_eq!(d.backends_relabelled[0].to.as_deref(), Some("a"));
        assert!(d.settings_changed.is_empty());
        assert_eq!(d.change_count(), 8);
    }

    #[test]
    fn reweights_and_settings() {
        let old = rules();
        let mut new = old.clone();
        new.services[0].backends[1].weight = 7;
        new.services[1].port = 5300;
        new.flows.udp_timeout_s = 5;
        new.neighbours.push(crate::rules::Neighbour {
            address: ip("198.18.1.11"),
            mac: [2, 0, 0, 0, 0, 0x11],
            interface: 0,
        });
        let d = diff(&old, &new);
        assert_eq!(
            d.backends_reweighted,
            [Reweight {
                service: "web".into(),
                address: ip("198.18.1.12"),
                port: 8080,
                from: 2,
                to: 7
            }]
        );
        assert_eq!(d.services_changed.len(), 1);
        assert_eq!(d.services_changed[0].field, "port");
        assert_eq!(d.settings_changed, ["flows", "neighbours"]);
    }

    #[test]
    fn serialises_only_what_changed() {
        let old = rules();
        let mut new = old.clone();
        new.services[0].backends[0].weight = 4;
        let json = serde_json::to_string(&diff(&old, &new)).unwrap();
        assert_eq!(
            json,
            r#"{"backends_reweighted":[{"service":"web","address":"198.18.1.11","port":8080,"from":1,"to":4}]}"#
        );
        let back: ConfigDiff = serde_json::from_str(&json).unwrap();
        assert_eq!(back, diff(&old, &new));
    }

    #[test]
    fn a_path_added_changed_or_removed_is_a_change() {
        let with = |paths: &str| {
            let text = RULES.replacen("port = 80\n", &format!("port = 80\n{paths}"), 1);
            load_str(&text, "t.toml").unwrap()
        };
        let path = |client: &str, backend: &str| {
            format!("[[services.paths]]\nclient = \"{client}\"\nbackends = [\"{backend}\"]\n")
        };
        let old = with(
            &(path("198.18.60.5", "198.18.1.11:8080")
                + &path("198.18.61.0/24", "198.18.1.11:8080")),
        );
        let new = with(
            &(path("198.18.60.5", "198.18.1.12:8080")
                + &path("198.18.62.0/24", "198.18.1.11:8080")),
        );
        let d = diff(&old, &new);
        assert_eq!(d.change_count(), 1, "{d:?}");
        let change = &d.services_changed[0];
        assert_eq!(
            (change.service.as_str(), change.field.as_str()),
            ("web", "paths")
        );
        assert_eq!(change.from, "2 paths");
        assert_eq!(change.to, "2 paths (1 added, 1 removed, 1 changed)");
        assert!(diff(&rules(), &old)
            .services_changed
            .iter()
            .any(|c| c.field == "paths"));
        assert!(diff(&new, &new).is_empty());
    }

    #[test]
    fn client_classes_added_changed_or_removed_are_listed_and_order_is_no_change() {
        use crate::rules::{ClientClass, ClientPrefix};
        let class = |prefix: &str, set: Option<&str>, zone: Option<&str>| {
            let (address, len) = prefix.split_once('/').unwrap();
            ClientClass {
                prefix: ClientPrefix::new(ip(address), len.parse().unwrap()),
                set: set.map(str::to_owned),
                zone: zone.map(str::to_owned),
            }
        };
        let mut old = rules();
        old.routing.classes = SharedList::from(vec![
            class("198.18.10.0/24", Some("shop.sh.g1"), None),
            class("198.18.11.0/24", None, Some("dc1")),
            class("198.18.12.0/24", None, Some("dc2")),
        ]);
        let mut new = old.clone();
        new.routing.classes.reverse();
        assert!(diff(&old, &new).is_empty(), "order alone");
        new.routing
            .classes
            .retain(|c| c.zone.as_deref() != Some("dc2"));
        new.routing.classes[0].zone = Some("dc3".into());
        new.routing
            .classes
            .push(class("2001:2::/32", None, Some("dc1")));
        let d = diff(&old, &new);
        let prefixes = |v: &[ClassView]| -> Vec<String> {
            v.iter()
                .map(|c| format!("{} {:?} {:?}", c.prefix, c.set, c.zone))
                .collect()
        };
        assert_eq!(
            prefixes(&d.classes_removed),
            [
                "198.18.11.0/24 None Some(\"dc1\")",
                "198.18.12.0/24 None Some(\"dc2\")"
            ]
        );
        assert_eq!(
            prefixes(&d.classes_added),
            [
                "198.18.11.0/24 None Some(\"dc3\")",
                "2001:2::/32 None Some(\"dc1\")"
            ]
        );
        assert!(d.settings_changed.is_empty(), "{:?}", d.settings_changed);
        new.routing.zone_priority = vec!["dc1".into()];
        assert_eq!(diff(&old, &new).settings_changed, ["routing"]);
    }
}
