//! The validator for a change of a few services to a valid config, at a
//! cost that follows the services changed, not the services held.
//!
//! A fleet's etcd revision changes one service of ten thousand; judging
//! the whole config again for it costs what the whole holds. But a valid
//! config stays valid under an edit of a few services unless the edit
//! breaks something of those services alone (their own checks, run as the
//! whole validator runs them) or one of the rules that tie services
//! together. Those are few, and each is a count over every service that
//! can be kept beside the config ([`ServiceIndex`]) and updated with the
//! edit:
//!
//! - service names are unique (a count per name);
//! - listeners, (protocol, VIP, port), are unique (a count per listener);
//! - every service of one VIP address announces it the same way (per VIP:
//!   how many services, and their announce);
//! - the heartbeat endpoint is on no service's VIP (the VIP count);
//! - a zone priority names zones some backend or client class has (a
//!   count of backends per zone, and the classes' zones);
//! - the routing subsets fit under `routing.subset_memory_limit` (their
//!   bytes over all services).
//!
//! A change that passes every one of them is valid: [`validate`] would
//! accept it. Anything else — a problem found, or a zone that only the
//! removed services had (which some zone priority may name) — is judged by
//! the whole validator, so that a refusal reads exactly as [`validate`]
//! words it (every problem, in model order). Refusals are rare and cost
//! what they always did; acceptance costs the change. A property test runs
//! random edits through both and compares.

use hashbrown::{HashMap, HashSet};
use std::net::IpAddr;

use super::super::error::ConfigError;
use super::super::place::Place;
use super::super::provenance::Provenance;
use super::super::routing::{self, routes_by_client, service_subsets, subset_bytes, Profiles};
use super::super::{Announce, Config, Protocol, Service};
use super::{is_valid_name, name_rule, of_service, validate, Validator, PORT};

/// One service changed: how it was in the config the change is made to
/// (`None`: added) and how it is after, with its position in the new
/// config (`None`: removed).
#[derive(Clone, Copy, Debug)]
pub struct ServiceEdit<'a> {
    /// The service before the change.
    pub before: Option<&'a Service>,
    /// The service after it, and its position in the new config.
    pub after: Option<(usize, &'a Service)>,
}

/// Counts over every service of a valid config: what the rules tying
/// services together need, so that a change of a few services is judged
/// without reading the others. Built once from a valid config
/// ([`ServiceIndex::of`]), then kept with it ([`ServiceIndex::apply`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceIndex {
    /// Services per name (1 in a valid config).
    names: HashMap<String, u32>,
    /// Services per listener (1 in a valid config).
    listeners: HashMap<(Protocol, IpAddr, u16), u32>,
    /// Services per VIP address, and how they announce it (one way in a
    /// valid config).
    vips: HashMap<IpAddr, (u32, Announce)>,
    /// Backends per zone.
    zones: HashMap<String, u32>,
    /// The client classes' zones.
    class_zones: HashSet<String>,
    /// The routing subsets' table bytes over all services.
    subset_bytes: u64,
}

impl ServiceIndex {
    /// The index of `config`, which must be valid.
    pub fn of(config: &Config) -> ServiceIndex {
        let mut index = ServiceIndex {
            class_zones: config
                .routing
                .classes
                .iter()
                .filter_map(|c| c.zone.clone())
                .collect(),
            ..ServiceIndex::default()
        };
        let mut profiles = None;
        for service in &config.services {
            index.add(config, &mut profiles, service);
        }
        index
    }

    /// Judges `next`, made from the valid config `since` (whose index
    /// `self` is) by `edits` alone: every other part of the two configs is
    /// the same. `Ok` exactly when [`validate`] accepts `next`; otherwise
    /// [`validate`]'s own refusal, located through `provenance`.
    pub fn validate_change(
        &self,
        since: &Config,
        next: &Config,
        edits: &[ServiceEdit<'_>],
        provenance: &dyn Provenance,
    ) -> Result<(), ConfigError> {
        if self.accepts(since, next, edits, provenance) {
            Ok(())
        } else {
            validate(next, provenance)
        }
    }

    /// Takes `edits`, accepted, into the index: it is then `next`'s.
    pub fn apply(&mut self, since: &Config, next: &Config, edits: &[ServiceEdit<'_>]) {
        let mut profiles = None;
        for edit in edits {
            if let Some(before) = edit.before {
                self.remove(since, &mut profiles, before);
            }
        }
        let mut profiles = None;
        for edit in edits {
            if let Some((_, after)) = edit.after {
                self.add(next, &mut profiles, after);
            }
        }
    }

    /// Whether `next` is surely valid: no problem in the changed services
    /// and none across services. `false` also when it cannot tell cheaply.
    fn accepts(
        &self,
        since: &Config,
        next: &Config,
        edits: &[ServiceEdit<'_>],
        provenance: &dyn Provenance,
    ) -> bool {
        let mut v = Validator {
            config: next,
            provenance,
            found: Vec::new(),
        };
        // The settings the services inherit, judged as the whole
        // validator judges them (valid, as `since` is, but their results
        // say what a service's checks may rely on).
        let gateway_ok = v.gateway();
        let health_known = v.health_defaults();
        if !v.found.is_empty() {
            return false;
        }
        let delta = Delta::of(edits);
        // Cross-service rules, by the counts.
        for edit in edits {
            let Some((_, service)) = edit.after else {
                continue;
            };
            if self.count_after(&self.names, &delta.names, service.name.as_str()) > 1
                || self.count_after(&self.listeners, &delta.listeners, &listener(service)) > 1
                || !self.announce_agrees(&delta, service)
            {
                return false;
            }
            if let Some(heartbeat) = next.daemon.heartbeat_address {
                if heartbeat.ip() == service.vip {
                    return false;
                }
            }
        }
        // A zone only removed backends had may be named by a priority
        // the change did not touch: the whole validator says.
        for (zone, &change) in &delta.zones {
            if change < 0 && !self.class_zones.contains(*zone) && self.zone_after(&delta, zone) == 0
            {
                return false;
            }
        }
        // Each changed service on its own, as the whole validator judges
        // it.
        for edit in edits {
            if let Some((i, service)) = edit.after {
                let known: HashSet<&str> = service
                    .routing
                    .zone_priority
                    .iter()
                    .flatten()
                    .map(|z: &String| z.as_str())
                    .filter(|z| self.class_zones.contains(*z) || self.zone_after(&delta, z) > 0)
                    .collect();
                v.service_alone(i, service, gateway_ok, health_known, &known);
                if !v.found.is_empty() {
                    return false;
                }
            }
        }
        // The subsets' memory, with the changed services' bytes replaced.
        let mut before_profiles = None;
        let mut after_profiles = None;
        let mut total = i128::from(self.subset_bytes);
        for edit in edits {
            if let Some(before) = edit.before {
                total -= i128::from(service_bytes(since, &mut before_profiles, before));
            }
            if let Some((_, after)) = edit.after {
                total += i128::from(service_bytes(next, &mut after_profiles, after));
            }
        }
        total <= i128::from(next.routing.subset_memory_limit)
    }

    /// How many services hold `key` after the change.
    fn count_after<K, D, Q>(
        &self,
        counts: &HashMap<K, u32>,
        delta: &HashMap<D, i64>,
        key: &Q,
    ) -> i64
    where
        K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
        D: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        i64::from(counts.get(key).copied().unwrap_or(0)) + delta.get(key).copied().unwrap_or(0)
    }

    /// How many backends have `zone` after the change.
    fn zone_after(&self, delta: &Delta<'_>, zone: &str) -> i64 {
        self.count_after(&self.zones, &delta.zones, zone)
    }

    /// Whether every service of `service`'s VIP announces it as `service`
    /// does after the change.
    fn announce_agrees(&self, delta: &Delta<'_>, service: &Service) -> bool {
        let (held, announce) = self
            .vips
            .get(&service.vip)
            .copied()
            .unwrap_or((0, service.announce));
        let removed = delta.vips_removed.get(&service.vip).copied().unwrap_or(0);
        let kept = i64::from(held) - removed;
        if kept > 0 && announce != service.announce {
            return false;
        }
        // The added services of this VIP agree among themselves.
        delta
            .vips_added
            .get(&service.vip)
            .is_none_or(|ways| ways.iter().all(|a| *a == service.announce))
    }

    /// Counts `service` of `config` in.
    fn add<'a>(
        &mut self,
        config: &'a Config,
        profiles: &mut Option<Profiles<'a>>,
        service: &Service,
    ) {
        *self.names.entry(service.name.clone()).or_default() += 1;
        *self.listeners.entry(listener(service)).or_default() += 1;
        let vip = self
            .vips
            .entry(service.vip)
            .or_insert((0, service.announce));
        vip.0 += 1;
        for zone in service.backends.iter().filter_map(|b| b.zone.as_ref()) {
            *self.zones.entry(zone.clone()).or_default() += 1;
        }
        self.subset_bytes = self
            .subset_bytes
            .saturating_add(service_bytes(config, profiles, service));
    }

    /// Counts `service` of `config` out.
    fn remove<'a>(
        &mut self,
        config: &'a Config,
        profiles: &mut Option<Profiles<'a>>,
        service: &Service,
    ) {
        fn down<K, Q>(counts: &mut HashMap<K, u32>, key: &Q)
        where
            K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
            Q: std::hash::Hash + Eq + ?Sized,
        {
            if let Some(count) = counts.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(key);
                }
            }
        }
        down(&mut self.names, service.name.as_str());
        down(&mut self.listeners, &listener(service));
        if let Some(vip) = self.vips.get_mut(&service.vip) {
            vip.0 -= 1;
            if vip.0 == 0 {
                self.vips.remove(&service.vip);
            }
        }
        for zone in service.backends.iter().filter_map(|b| b.zone.as_deref()) {
            down(&mut self.zones, zone);
        }
        self.subset_bytes = self
            .subset_bytes
            .saturating_sub(service_bytes(config, profiles, service));
    }
}

/// What a change does to the counts.
#[derive(Default)]
struct Delta<'a> {
    names: HashMap<&'a str, i64>,
    listeners: HashMap<(Protocol, IpAddr, u16), i64>,
    zones: HashMap<&'a str, i64>,
    vips_removed: HashMap<IpAddr, i64>,
    vips_added: HashMap<IpAddr, Vec<Announce>>,
}

impl<'a> Delta<'a> {
    fn of(edits: &[ServiceEdit<'a>]) -> Delta<'a> {
        let mut delta = Delta::default();
        for edit in edits {
            if let Some(before) = edit.before {
                *delta.names.entry(before.name.as_str()).or_default() -= 1;
                *delta.listeners.entry(listener(before)).or_default() -= 1;
                *delta.vips_removed.entry(before.vip).or_default() += 1;
                for zone in before.backends.iter().filter_map(|b| b.zone.as_deref()) {
                    *delta.zones.entry(zone).or_default() -= 1;
                }
            }
            if let Some((_, after)) = edit.after {
                *delta.names.entry(after.name.as_str()).or_default() += 1;
                *delta.listeners.entry(listener(after)).or_default() += 1;
                delta
                    .vips_added
                    .entry(after.vip)
                    .or_default()
                    .push(after.announce);
                for zone in after.backends.iter().filter_map(|b| b.zone.as_deref()) {
                    *delta.zones.entry(zone).or_default() += 1;
                }
            }
        }
        delta
    }
}

/// A service's listener.
fn listener(service: &Service) -> (Protocol, IpAddr, u16) {
    (service.protocol, service.vip, service.port)
}

/// The bytes of `service`'s routing subsets in `config` (the profiles of
/// its classes made once, on the first service that routes by client).
fn service_bytes<'a>(
    config: &'a Config,
    profiles: &mut Option<Profiles<'a>>,
    service: &Service,
) -> u64 {
    if !routes_by_client(service) {
        return 0;
    }
    let profiles = profiles.get_or_insert_with(|| routing::profiles(config));
    let Some(subsets) = service_subsets(service, &profiles.list, &config.routing.zone_priority)
    else {
        return 0;
    };
    subsets
        .subsets
        .iter()
        .map(|members| subset_bytes(service, members))
        .fold(0u64, u64::saturating_add)
}

impl Validator<'_> {
    /// Service `i`'s checks that read no other service: the whole
    /// validator's, for the services and the routing parts, less the
    /// duplicate and agreement checks the index makes. `zones`: the zones
    /// of its priority that some backend or class has.
    fn service_alone(
        &mut self,
        i: usize,
        service: &Service,
        gateway_ok: bool,
        health_known: bool,
        zones: &HashSet<&str>,
    ) {
        let name = service.name.as_str();
        if !is_valid_name(name) {
            let message = format!("service name {name:?} {}", name_rule());
            self.report(Place::service(i, "name"), message);
        }
        let vip = Place::service(i, "vip");
        let vip_ok = self.known(vip)
            && self.usable(vip, service.vip, || {
                format!("VIP {} of service {name:?}", service.vip)
            });
        let port = i64::from(service.port);
        self.in_range(Place::service(i, "port"), port, PORT, "port", || {
            of_service(name)
        });
        self.backends(i, service, vip_ok);
        self.weights(i, service);
        self.service_table(i, service, gateway_ok);
        self.failover(i, service);
        self.fanout(i, service);
        self.over_limit(i, service);
        self.service_health(i, service, health_known);
        self.service_routing(i, service, zones);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::rules::{Backend, ClientClass, ClientPrefix, Scheduler, Unrecorded};

    /// A service drawn from small pools, so that edits collide: names,
    /// listeners, VIPs announced two ways, zones that come and go, bad
    /// values now and then.
    #[derive(Clone, Debug)]
    struct Spec {
        name: u8,
        vip: u8,
        port: u8,
        udp: bool,
        announce: u8,
        backends: Vec<(u8, u8, u8)>,
        priority: u8,
        prime: bool,
    }

    #[derive(Clone, Debug)]
    enum Op {
        Put(usize, Spec),
        Insert(usize, Spec),
        Remove(usize),
    }

    fn spec() -> impl Strategy<Value = Spec> {
        (
            (0..7u8, 0..5u8, 0..3u8, any::<bool>(), 0..3u8),
            (
                proptest::collection::vec((0..4u8, 0..4u8, 0..4u8), 0..4),
                0..5u8,
                proptest::bool::weighted(0.9),
            ),
        )
            .prop_map(
                |((name, vip, port, udp, announce), (backends, priority, prime))| Spec {
                    name,
                    vip,
                    port,
                    udp,
                    announce,
                    backends,
                    priority,
                    prime,
                },
            )
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<usize>(), spec()).prop_map(|(i, s)| Op::Put(i, s)),
            (any::<usize>(), spec()).prop_map(|(i, s)| Op::Insert(i, s)),
            any::<usize>().prop_map(Op::Remove),
        ]
    }

    fn service(spec: &Spec) -> Service {
        let names = ["a", "b", "c", "d", "e", "f", "bad name"];
        let vips = [
            "198.18.0.1",
            "198.18.0.2",
            "198.18.0.3",
            "0.0.0.0",
            "2001:2::1",
        ];
        let zones = [None, Some("z1"), Some("z2"), Some("z3")];
        let priorities: [Option<&[&str]>; 5] = [
            None,
            Some(&["z1"]),
            Some(&["z2", "z1"]),
            Some(&["zc"]),
            Some(&["z9"]),
        ];
        let backends = spec
            .backends
            .iter()
            .map(|&(address, zone, weight)| {
                let mut b = Backend::new(
                    format!("198.19.0.{}", 1 + address % 3).parse().unwrap(),
                    8080,
                );
                if address == 3 {
                    b.address = "2001:2::9".parse().unwrap();
                }
                b.zone = zones[usize::from(zone)].map(str::to_owned);
                b.weight = [0, 1, 5, 2][usize::from(weight)];
                b
            })
            .collect();
        let mut s = Service {
            name: names[usize::from(spec.name)].to_owned(),
            protocol: if spec.udp {
                Protocol::Udp
            } else {
                Protocol::Tcp
            },
            vip: vips[usize::from(spec.vip)].parse().unwrap(),
            port: [80, 443, 0][usize::from(spec.port)],
            scheduler: Scheduler::Maglev,
            maglev_table_size: if spec.prime { 251 } else { 250 },
            failover: Default::default(),
            health: Default::default(),
            backends,
            routing: Default::default(),
            limits: Default::default(),
            announce: [Announce::None, Announce::Arp, Announce::Bgp][usize::from(spec.announce)],
        };
        s.routing.zone_priority = priorities[usize::from(spec.priority)]
            .map(|p| p.iter().map(|z| (*z).to_owned()).collect());
        s
    }

    /// The gateway-wide parts the services meet: a heartbeat endpoint on
    /// a VIP of the pool, a gateway zone priority (of the class's zone), a
    /// class's zone, a small subset memory cap.
    fn base(heartbeat: bool, priority: bool, class: bool, limit: u8) -> Config {
        let mut config = Config::default();
        if heartbeat {
            config.daemon.heartbeat_address = Some("198.18.0.3:7000".parse().unwrap());
        }
        if priority {
            config.routing.zone_priority = vec!["zc".into()];
        }
        if class || priority {
            config.routing.classes.push(ClientClass {
                prefix: ClientPrefix {
                    address: "198.18.64.0".parse().unwrap(),
                    len: 24,
                },
                set: None,
                zone: Some("zc".into()),
            });
        }
        config.routing.subset_memory_limit = [1 << 20, 3_000, 1_100, 0][usize::from(limit)];
        config
    }

    /// The services of `since` that `next` no longer shares, and those of
    /// `next` that are new, with their positions: the edit between them.
    fn edits<'a>(since: &'a Config, next: &'a Config) -> Vec<ServiceEdit<'a>> {
        let old: Vec<&Arc<Service>> = since.services.shared_iter().collect();
        let new: Vec<&Arc<Service>> = next.services.shared_iter().collect();
        let mut edits: Vec<ServiceEdit<'a>> = old
            .iter()
            .filter(|a| !new.iter().any(|b| Arc::ptr_eq(a, b)))
            .map(|a| ServiceEdit {
                before: Some(&***a),
                after: None,
            })
            .collect();
        for (i, b) in new.iter().enumerate() {
            if !old.iter().any(|a| Arc::ptr_eq(a, b)) {
                edits.push(ServiceEdit {
                    before: None,
                    after: Some((i, &***b)),
                });
            }
        }
        edits
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Random revisions of one to three service edits each, on
        /// gateway settings that the services can collide with: the
        /// change's validator accepts exactly what the whole validator
        /// accepts and refuses with the same text, and the index kept
        /// with each accepted revision is the one made from scratch.
        #[test]
        fn a_change_is_judged_as_the_whole_validator_judges_it(
            settings in (any::<bool>(), any::<bool>(), any::<bool>(), 0..4u8),
            revisions in proptest::collection::vec(proptest::collection::vec(op(), 1..4), 1..30),
        ) {
            let (heartbeat, priority, class, limit) = settings;
            let mut since = base(heartbeat, priority, class, limit);
            prop_assert!(validate(&since, &Unrecorded).is_ok());
            let mut index = ServiceIndex::of(&since);
            let (mut accepted, mut refused) = (0, 0);
            for ops in revisions {
                let mut next = since.clone();
                for op in ops {
                    let len = next.services.len();
                    match op {
                        Op::Put(i, spec) if len > 0 => next.services[i % len] = service(&spec),
                        Op::Put(_, spec) | Op::Insert(_, spec) if len == 0 => {
                            next.services.push(service(&spec))
                        }
                        Op::Insert(i, spec) => next.services.insert(i % (len + 1), service(&spec)),
                        Op::Remove(i) if len > 0 => {
                            next.services.remove(i % len);
                        }
                        _ => {}
                    }
                }
                let edits = edits(&since, &next);
                let whole = validate(&next, &Unrecorded).map_err(|e| e.to_string());
                let changed = index
                    .validate_change(&since, &next, &edits, &Unrecorded)
                    .map_err(|e| e.to_string());
                prop_assert_eq!(&changed, &whole);
                if whole.is_ok() {
                    index.apply(&since, &next, &edits);
                    prop_assert_eq!(&index, &ServiceIndex::of(&next));
                    since = next;
                    accepted += 1;
                } else {
                    refused += 1;
                }
            }
            // Both ways are exercised over the cases (not asserted per
            // case: one case may draw only one kind).
            let _ = (accepted, refused);
        }
    }

    /// The fast road is taken: a valid edit of one service of many is
    /// accepted by the counts alone, without falling back on the whole
    /// validator, and a bad one is refused with the whole validator's
    /// words.
    #[test]
    fn a_valid_edit_is_accepted_by_the_counts_and_a_bad_one_worded_in_full() {
        let mut since = Config::default();
        for i in 0..300u32 {
            let mut s = service(&Spec {
                name: 0,
                vip: 0,
                port: 0,
                udp: false,
                announce: 0,
                backends: vec![(0, 0, 1)],
                priority: 0,
                prime: true,
            });
            s.name = format!("svc-{i}");
            s.port = 1 + u16::try_from(i).unwrap();
            since.services.push(s);
        }
        let index = ServiceIndex::of(&since);
        let mut next = since.clone();
        next.services[7].backends[0].weight = 9;
        let edits = edits(&since, &next);
        assert_eq!(edits.len(), 2);
        assert!(index.accepts(&since, &next, &edits, &Unrecorded));
        // A listener another service holds.
        let mut bad = since.clone();
        bad.services[7].port = 9;
        let edits = edits_of(&since, &bad);
        assert!(!index.accepts(&since, &bad, &edits, &Unrecorded));
        let refusal = index
            .validate_change(&since, &bad, &edits, &Unrecorded)
            .unwrap_err();
        assert_eq!(
            refusal.to_string(),
            validate(&bad, &Unrecorded).unwrap_err().to_string()
        );
        assert!(
            refusal.to_string().contains("is already used by service"),
            "{refusal}"
        );
    }

    fn edits_of<'a>(since: &'a Config, next: &'a Config) -> Vec<ServiceEdit<'a>> {
        edits(since, next)
    }
}
