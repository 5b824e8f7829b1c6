//! The XDP maps' keys of the published generation, each counted by how
//! many of its services own it, so that a change of a few services
//! programs the maps with those services' keys alone.
//!
//! A service key (protocol, VIP, port) has one owner; a reply source
//! (protocol, backend address, port), a VIP address or an announced VIP
//! may have several. A key enters the maps when its count leaves 0 and
//! leaves them when it returns to 0: the keys of a generation are then
//! exactly [`OwnedTraffic::from_snapshot`]'s, without a walk over every
//! service.

use std::collections::HashMap;
use std::hash::Hash;

use crate::rules::Config;
use crate::synproxy::SynProxy;
use crate::table::{CompiledService, Snapshot};
use crate::wire::addr_to_bytes;
use crate::xdp::{OwnedTraffic, TrafficKey, Unowned};

/// The published generation's keys, with how many services own each.
#[derive(Debug, Default)]
pub(super) struct OwnedKeys {
    services: HashMap<TrafficKey, u32>,
    reply_sources: HashMap<TrafficKey, u32>,
    vip_addresses: HashMap<[u8; 16], u32>,
    announced: HashMap<[u8; 16], u32>,
}

/// How a change moves the counts: per key, the services that own it after
/// the change less those before (keys of the changed services only), and
/// the changed services' SYN proxy settings (`None`: none any more).
#[derive(Debug, Default)]
pub(super) struct KeyDelta {
    services: HashMap<TrafficKey, i64>,
    reply_sources: HashMap<TrafficKey, i64>,
    vip_addresses: HashMap<[u8; 16], i64>,
    announced: HashMap<[u8; 16], i64>,
    /// SYN proxy settings of the changed services' keys.
    pub(super) proxies: Vec<(TrafficKey, Option<SynProxy>)>,
}

impl OwnedKeys {
    /// Every key of `snapshot`, counted (a walk over every service).
    pub(super) fn of(snapshot: &Snapshot) -> OwnedKeys {
        let mut delta = KeyDelta::default();
        for (_, service) in snapshot.services() {
            delta.count(snapshot, service, 1);
        }
        let mut keys = OwnedKeys::default();
        keys.commit(delta);
        keys
    }

    /// The keys, as the filters take them.
    pub(super) fn owned(&self) -> OwnedTraffic {
        OwnedTraffic {
            services: self.services.keys().copied().collect(),
            reply_sources: self.reply_sources.keys().copied().collect(),
            announced: self.announced.keys().copied().collect(),
        }
    }

    /// What `delta` adds to the maps (keys no service owned before) and
    /// takes out of them (keys no service owns after). Changes nothing.
    pub(super) fn change(&self, delta: &KeyDelta) -> (OwnedTraffic, Unowned) {
        let mut added = OwnedTraffic::default();
        let mut gone = Unowned::default();
        split(
            &self.services,
            &delta.services,
            &mut added.services,
            &mut gone.services,
        );
        split(
            &self.reply_sources,
            &delta.reply_sources,
            &mut added.reply_sources,
            &mut gone.reply_sources,
        );
        let mut vips_added = std::collections::HashSet::new();
        split(
            &self.vip_addresses,
            &delta.vip_addresses,
            &mut vips_added,
            &mut gone.vip_addresses,
        );
        split(
            &self.announced,
            &delta.announced,
            &mut added.announced,
            &mut gone.announced,
        );
        // A VIP address enters the maps with a service key of its own (the
        // filters take VIP addresses from the service keys they add).
        debug_assert!(vips_added
            .iter()
            .all(|vip| added.services.iter().any(|k| k.address == *vip)));
        (added, gone)
    }

    /// Makes the counts those after `delta`.
    pub(super) fn commit(&mut self, delta: KeyDelta) {
        apply(&mut self.services, delta.services);
        apply(&mut self.reply_sources, delta.reply_sources);
        apply(&mut self.vip_addresses, delta.vip_addresses);
        apply(&mut self.announced, delta.announced);
    }
}

impl KeyDelta {
    /// The change from `previous` (built from `since`) to `next` (built
    /// from `config`), which differ only in the services `changed` names:
    /// their keys before counted off, after counted on.
    pub(super) fn between(
        since: &Config,
        previous: &Snapshot,
        config: &Config,
        next: &Snapshot,
        changed: &[String],
    ) -> KeyDelta {
        let mut delta = KeyDelta::default();
        let mut proxies: HashMap<TrafficKey, Option<SynProxy>> = HashMap::new();
        for name in changed {
            if let Some(compiled) = compiled(since, previous, name) {
                delta.count(previous, compiled, -1);
                if compiled.syn_proxy().is_enabled() {
                    proxies.insert(service_key(compiled), None);
                }
            }
        }
        for name in changed {
            if let Some(compiled) = compiled(config, next, name) {
                delta.count(next, compiled, 1);
                if compiled.syn_proxy().is_enabled() {
                    proxies.insert(service_key(compiled), Some(compiled.syn_proxy()));
                }
            }
        }
        delta.proxies = proxies.into_iter().collect();
        delta
    }

    /// Counts `service`'s keys (compiled into `snapshot`) `by` times.
    fn count(&mut self, snapshot: &Snapshot, service: &CompiledService, by: i64) {
        let key = service_key(service);
        *self.services.entry(key).or_default() += by;
        *self.vip_addresses.entry(key.address).or_default() += by;
        if service.announce().is_announced() {
            *self.announced.entry(key.address).or_default() += by;
        }
        for &id in service.endpoints() {
            if let Some(endpoint) = snapshot.endpoint(id) {
                let source = TrafficKey {
                    protocol: service.protocol(),
                    address: endpoint.address,
                    port: endpoint.port,
                };
                *self.reply_sources.entry(source).or_default() += by;
            }
        }
    }
}

/// The service called `name` in `config`, as compiled into `snapshot`.
fn compiled<'a>(
    config: &Config,
    snapshot: &'a Snapshot,
    name: &str,
) -> Option<&'a CompiledService> {
    let service = config.service(name)?;
    let (_, compiled) = snapshot.lookup_service(
        service.protocol.number(),
        &addr_to_bytes(service.vip),
        service.port,
    )?;
    (compiled.name() == name).then_some(compiled)
}

/// (protocol, VIP, port) of `service`.
fn service_key(service: &CompiledService) -> TrafficKey {
    TrafficKey {
        protocol: service.protocol(),
        address: *service.vip(),
        port: service.port(),
    }
}

/// The keys of `delta` whose count leaves 0 (into `added`) and returns to
/// 0 (into `gone`).
fn split<K: Copy + Eq + Hash>(
    counts: &HashMap<K, u32>,
    delta: &HashMap<K, i64>,
    added: &mut std::collections::HashSet<K>,
    gone: &mut Vec<K>,
) {
    for (key, &by) in delta {
        let before = i64::from(counts.get(key).copied().unwrap_or(0));
        let after = before + by;
        if before == 0 && after > 0 {
            added.insert(*key);
        } else if before > 0 && after <= 0 {
            gone.push(*key);
        }
    }
}

/// Adds `delta` to `counts`, dropping keys that reach 0.
fn apply<K: Eq + Hash>(counts: &mut HashMap<K, u32>, delta: HashMap<K, i64>) {
    for (key, by) in delta {
        let before = i64::from(counts.get(&key).copied().unwrap_or(0));
        let after = u32::try_from((before + by).max(0)).unwrap_or(u32::MAX);
        if after == 0 {
            counts.remove(&key);
        } else {
            counts.insert(key, after);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules;

    fn config(text: &str) -> Config {
        rules::load_str(text, "gw.toml").unwrap()
    }

    const BASE: &str = "[[interfaces]]\nname = \"g0\"\nmac = \"02:66:67:00:20:01\"\n";

    fn service(name: &str, vip: &str, port: u16, backends: &[&str]) -> String {
        let mut text = format!(
            "[[services]]\nname = \"{name}\"\nprotocol = \"tcp\"\nvip = \"{vip}\"\nport = {port}\n"
        );
        for b in backends {
            text.push_str(&format!(
                "[[services.backends]]\naddress = \"{b}\"\nport = 8080\n"
            ));
        }
        text
    }

    #[test]
    fn counted_keys_follow_a_change_as_a_walk_of_every_service_does() {
        let a = config(&format!(
            "{BASE}{}{}{}",
            service("web", "198.18.100.10", 80, &["198.18.1.11", "198.18.1.12"]),
            service("web2", "198.18.100.10", 81, &["198.18.1.12"]),
            service("api", "198.18.100.11", 80, &["198.18.1.13"]),
        ));
        // web2 goes (its VIP stays with web; .12 stays with web), api
        // moves to a new VIP and backend, new comes.
        let b = config(&format!(
            "{BASE}{}{}{}",
            service("web", "198.18.100.10", 80, &["198.18.1.11", "198.18.1.12"]),
            service("api", "198.18.100.12", 80, &["198.18.1.14"]),
            service("new", "198.18.100.10", 82, &["198.18.1.11"]),
        ));
        let first = Snapshot::build(&a, None);
        let second = Snapshot::build(&b, Some(&first));
        let changed: Vec<String> = ["web2", "api", "new"].map(String::from).to_vec();
        let mut keys = OwnedKeys::of(&first);
        let delta = KeyDelta::between(&a, &first, &b, &second, &changed);
        let (added, gone) = keys.change(&delta);
        let before = OwnedTraffic::from_snapshot(&first);
        let after = OwnedTraffic::from_snapshot(&second);
        let expect_added: std::collections::HashSet<TrafficKey> = after
            .services
            .difference(&before.services)
            .copied()
            .collect();
        assert_eq!(added.services, expect_added);
        let mut expect_gone: Vec<TrafficKey> = before
            .services
            .difference(&after.services)
            .copied()
            .collect();
        let mut gone_services = gone.services.clone();
        expect_gone.sort();
        gone_services.sort();
        assert_eq!(gone_services, expect_gone);
        let expect_replies: std::collections::HashSet<TrafficKey> = after
            .reply_sources
            .difference(&before.reply_sources)
            .copied()
            .collect();
        assert_eq!(added.reply_sources, expect_replies);
        let mut gone_replies = gone.reply_sources.clone();
        gone_replies.sort();
        let mut expect: Vec<TrafficKey> = before
            .reply_sources
            .difference(&after.reply_sources)
            .copied()
            .collect();
        expect.sort();
        assert_eq!(gone_replies, expect, "only .13 leaves: .12 stays with web");
        let vips_gone: Vec<[u8; 16]> = gone.vip_addresses.clone();
        assert_eq!(
            vips_gone,
            vec![addr_to_bytes("198.18.100.11".parse().unwrap())]
        );
        keys.commit(delta);
        assert_eq!(keys.owned(), after);
        assert_eq!(OwnedKeys::of(&second).owned(), after);
    }
}
