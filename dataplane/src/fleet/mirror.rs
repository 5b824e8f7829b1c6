//! The gateway's mirror of the rules in etcd: what etcd holds under
//! `PREFIX/v1/rules/`, what of it runs (the last good value of each key),
//! and which keys are held back and why.
//!
//! Sans-IO, like the pipeline: the etcd client feeds it the whole prefix
//! ([`Mirror::load`]) or one revision's changes at a time
//! ([`Mirror::apply`]); it answers with the rules to run, or why the
//! revision was refused. So every rule about bad keys is tested without a
//! server, and the client only moves bytes.
//!
//! The rules, in the order they are applied:
//!
//! 1. A revision is applied whole or not at all. A revision whose own
//!    changes hold a key that cannot be read (its name or its value), or
//!    that makes the rules invalid (a duplicate listener, say), is
//!    refused: none of its changes runs, and each bad key is *held*,
//!    with what is wrong with it and the revision its value was written at.
//! 2. A held key stays at its last good value (or absent, if it never had
//!    one) until a later value of it is good. Later revisions are applied
//!    on top of the last good state with the held keys left as they are,
//!    so one bad key does not freeze the fleet; the good changes of a
//!    refused revision run with the next revision that applies.
//! 3. A load (the first read of the prefix, or a reread after the watch's
//!    revision was compacted away) is applied as one change, the
//!    difference from what the mirror held; a bad key in it is held and the
//!    rest runs, since there is no older state of those keys to keep whole.
//!
//! Services from etcd come after the file's in the model, in key order
//! (their names' order); the validator judges the whole and names an etcd
//! part by its key and revision ([`EtcdProvenance`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::rules::{self, Config, GatewaySettings, Location, Service, Unrecorded};

use super::layout::{KeyLayout, PartKind, RuleKey};
use super::provenance::{EtcdProvenance, Origin};
use super::value::{self, ClassEntry, Part, PathEntry};

/// A key's value as etcd holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The value's bytes.
    pub value: Vec<u8>,
    /// The revision the value was written at (etcd's `mod_revision`).
    pub mod_revision: i64,
}

/// One change to one key: its new value, or `None` when it was deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The key, as etcd has it.
    pub key: Vec<u8>,
    /// The new value; `None` for a deletion.
    pub value: Option<Stored>,
}

/// A key held back at its last good value, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HeldKey {
    /// The key (bytes that are not UTF-8 shown as U+FFFD).
    pub key: String,
    /// The revision its refused value was written at; for a refused
    /// deletion, the revision of the deletion.
    pub revision: i64,
    /// What is wrong, one line each.
    pub problems: Vec<String>,
}

impl std::fmt::Display for HeldKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "etcd key {} at revision {}: {}",
            self.key,
            self.revision,
            self.problems.join("; ")
        )
    }
}

/// The rules to run, from one etcd revision.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    /// The whole config: the file's, with etcd's gateway settings and
    /// services. Valid. Shared, so that the gateway can run it as it is.
    pub config: Arc<Config>,
    /// How it differs from the rules the mirror gave before.
    pub change: RulesChange,
    /// The etcd revision it came from.
    pub revision: i64,
    /// How many keys of this revision's change ran (put or deleted).
    pub applied_keys: usize,
    /// Keys held back at their last good value (all of them, not only
    /// this revision's).
    pub held: Vec<HeldKey>,
}

/// How [`Rules::config`] differs from the rules the mirror gave before:
/// what lets a gateway cost a revision what it changes rather than what
/// the whole config holds.
#[derive(Clone, Debug, PartialEq)]
pub enum RulesChange {
    /// Anything may differ: the first rules, a load, or a change of the
    /// gateway settings.
    Whole,
    /// Only etcd's services named here differ from `since` (the config of
    /// the rules given before): each is added, replaced or, if the config
    /// no longer has it, removed. Names in key order; none when only keys
    /// outside the config changed (classes, paths).
    Services {
        /// The config the change is made to.
        since: Arc<Config>,
        /// The services put or deleted.
        names: Vec<String>,
    },
}

impl RulesChange {
    /// The config the change is made to and the services it changes, if
    /// only services change.
    pub fn since(&self) -> Option<(&Arc<Config>, &[String])> {
        match self {
            RulesChange::Whole => None,
            RulesChange::Services { since, names } => Some((since, names)),
        }
    }
}

/// A revision refused whole: nothing of it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The revision.
    pub revision: i64,
    /// The keys of this revision that are at fault, now held.
    pub problems: Vec<HeldKey>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "etcd revision {} refused: ", self.revision)?;
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// What one load or revision did.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// New rules to run.
    Applied(Box<Rules>),
    /// The revision was refused; the running rules stay.
    Refused(Refusal),
}

/// A key's value that runs.
#[derive(Clone, Debug, PartialEq)]
struct Accepted {
    key: RuleKey,
    part: Part,
    stored: Stored,
}

/// The gateway's view of the rules in etcd. See the module's
/// documentation.
#[derive(Clone, Debug)]
pub struct Mirror {
    layout: KeyLayout,
    /// The file's config, which etcd's parts go on top of.
    base: Config,
    /// What etcd holds under the rules prefix, as last read.
    current: BTreeMap<Vec<u8>, Stored>,
    /// The last good value of every key that runs.
    good: BTreeMap<Vec<u8>, Accepted>,
    /// Keys held back, and why.
    held: BTreeMap<Vec<u8>, HeldKey>,
    /// Keys whose value in `current` is not the one in `good`.
    pending: BTreeSet<Vec<u8>>,
    /// The last revision seen, applied or refused.
    revision: i64,
    /// The revision the running rules came from.
    applied: i64,
    /// The config of the rules given last: a revision that changes only
    /// services is made on it, service by service.
    last: Option<Arc<Config>>,
}

impl Mirror {
    /// A mirror of nothing yet: the rules are the file's, `base`.
    pub fn new(layout: KeyLayout, base: Config) -> Mirror {
        Mirror {
            layout,
            base,
            current: BTreeMap::new(),
            good: BTreeMap::new(),
            held: BTreeMap::new(),
            pending: BTreeSet::new(),
            revision: 0,
            applied: 0,
            last: None,
        }
    }

    /// The key layout.
    pub fn layout(&self) -> &KeyLayout {
        &self.layout
    }

    /// The last revision seen (applied or refused): a watch resumes after
    /// it.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The revision the running rules came from.
    pub fn applied_revision(&self) -> i64 {
        self.applied
    }

    /// The keys held back, in key order.
    pub fn held(&self) -> Vec<HeldKey> {
        self.held.values().cloned().collect()
    }

    /// The running keys and their values, in key order (what is saved to
    /// disk).
    pub fn good_entries(&self) -> impl Iterator<Item = (&[u8], &Stored)> {
        self.good.iter().map(|(k, a)| (k.as_slice(), &a.stored))
    }

    /// The client classes that run, in key order. (The model has no place
    /// for them yet: the routing tables will take them from here.)
    pub fn classes(&self) -> impl Iterator<Item = &ClassEntry> {
        self.good.values().filter_map(|a| match &a.part {
            Part::Class(c) => Some(c),
            _ => None,
        })
    }

    /// The distribution paths that run, in key order.
    pub fn paths(&self) -> impl Iterator<Item = &PathEntry> {
        self.good.values().filter_map(|a| match &a.part {
            Part::Path(p) => Some(p),
            _ => None,
        })
    }

    /// How many running keys hold each kind of part.
    pub fn counts(&self) -> BTreeMap<PartKind, usize> {
        let mut counts = BTreeMap::new();
        for accepted in self.good.values() {
            *counts.entry(accepted.key.kind()).or_insert(0) += 1;
        }
        counts
    }

    /// Services defined both in the file and in etcd, one message each:
    /// an error at start, never a silent override.
    pub fn file_conflicts(&self) -> Vec<String> {
        let services = self.layout.services();
        let mut conflicts = Vec::new();
        for key in self.current.keys() {
            let Some(name) = key
                .strip_prefix(services.as_bytes())
                .and_then(|n| std::str::from_utf8(n).ok())
            else {
                continue;
            };
            if self.base.service(name).is_some() {
                conflicts.push(format!(
                    "service {name:?} is defined both in the config file and in etcd \
                     (key {services}{name}): define each service in one place"
                ));
            }
        }
        conflicts
    }

    /// Takes the last good state saved on disk as the running state, at
    /// `revision`: the rules a gateway starts from when etcd cannot be
    /// reached. Each value is read again; one this gateway cannot read is
    /// held (absent). Returns the rules.
    pub fn restore(
        &mut self,
        revision: i64,
        entries: impl IntoIterator<Item = (Vec<u8>, Stored)>,
    ) -> Outcome {
        let changes = entries
            .into_iter()
            .map(|(key, stored)| Change {
                key,
                value: Some(stored),
            })
            .collect();
        self.load(revision, changes)
    }

    /// Everything etcd holds under the rules prefix at `revision`: the
    /// first read, or a reread after compaction. The difference from what
    /// the mirror held is applied as one change; bad keys are held and the
    /// rest runs.
    pub fn load(&mut self, revision: i64, entries: Vec<Change>) -> Outcome {
        let mut next: BTreeMap<Vec<u8>, Stored> = BTreeMap::new();
        for change in entries {
            if let Some(stored) = change.value {
                next.insert(change.key, stored);
            }
        }
        let mut changed = BTreeSet::new();
        for (key, stored) in &next {
            if self.current.get(key) != Some(stored) {
                changed.insert(key.clone());
            }
        }
        for key in self.current.keys() {
            if !next.contains_key(key) {
                changed.insert(key.clone());
            }
        }
        // A key that reads as it ran (a restored state confirmed) changes
        // nothing; everything else is pending.
        for key in next.keys().chain(self.good.keys()) {
            if next.get(key) != self.good.get(key).map(|a| &a.stored) {
                self.pending.insert(key.clone());
            }
        }
        self.current = next;
        self.settle(revision, &changed, false)
    }

    /// The changes of one revision, as a watch delivers them (every event
    /// of one transaction has the same revision). Applied whole or
    /// refused whole.
    pub fn apply(&mut self, revision: i64, changes: Vec<Change>) -> Outcome {
        let mut changed = BTreeSet::new();
        for change in changes {
            match change.value {
                Some(stored) => self.current.insert(change.key.clone(), stored),
                None => self.current.remove(&change.key),
            };
            self.pending.insert(change.key.clone());
            changed.insert(change.key);
        }
        self.settle(revision, &changed, true)
    }

    /// Applies every pending key that is good, holding the rest; with
    /// `refuse_whole`, refuses everything if a key of `changed` is bad.
    fn settle(
        &mut self,
        revision: i64,
        changed: &BTreeSet<Vec<u8>>,
        refuse_whole: bool,
    ) -> Outcome {
        // Each pending key read: Some(part) to put, None to delete.
        let mut overlay: BTreeMap<Vec<u8>, Option<Accepted>> = BTreeMap::new();
        let mut bad: BTreeMap<Vec<u8>, Vec<String>> = BTreeMap::new();
        for key in &self.pending {
            match self.current.get(key) {
                None => {
                    overlay.insert(key.clone(), None);
                }
                Some(stored) => match self.read(key, stored) {
                    Ok(accepted) => {
                        overlay.insert(key.clone(), Some(accepted));
                    }
                    Err(problems) => {
                        bad.insert(key.clone(), problems);
                    }
                },
            }
        }
        if refuse_whole && bad.keys().any(|k| changed.contains(k)) {
            return self.refuse(revision, changed, bad);
        }
        // Each round holds at least one more key back, so this ends.
        for _ in 0..=overlay.len() {
            let blamed = match self.assemble(&overlay) {
                Ok((config, change)) => {
                    return self.install(revision, config, change, overlay, bad)
                }
                Err(blamed) => blamed,
            };
            if refuse_whole && blamed.keys().any(|k| changed.contains(k)) {
                bad.extend(blamed);
                return self.refuse(revision, changed, bad);
            }
            for (key, problems) in blamed {
                overlay.remove(&key);
                bad.insert(key, problems);
            }
        }
        unreachable_state(revision, bad)
    }

    /// Reads one key's value.
    fn read(&self, key: &[u8], stored: &Stored) -> Result<Accepted, Vec<String>> {
        let rule_key = self.layout.parse(key).map_err(|e| vec![e])?;
        let part = value::decode(&rule_key, &stored.value)?;
        Ok(Accepted {
            key: rule_key,
            part,
            stored: stored.clone(),
        })
    }

    /// The whole config with `overlay` on the good state, validated, and
    /// how it differs from the config given last; or the keys of
    /// `overlay` to blame, with what is wrong.
    fn assemble(
        &self,
        overlay: &BTreeMap<Vec<u8>, Option<Accepted>>,
    ) -> Result<(Arc<Config>, RulesChange), Blamed> {
        let (config, change) = match self.patched(overlay) {
            Some((config, change)) => (config, change),
            None => (self.whole(overlay), RulesChange::Whole),
        };
        let gateway_key = self.layout.gateway_key().into_bytes();
        let gateway = match overlay.get(&gateway_key) {
            Some(entry) => entry.as_ref(),
            None => self.good.get(&gateway_key),
        };
        let gateway_origin = gateway.map(|accepted| origin(&gateway_key, &accepted.stored));
        // Located only when the validator reports a problem: building
        // every service's origin up front would cost what the whole
        // config holds.
        let base = self.base.services.len();
        let locate = |i: usize| {
            let name = &config.services.get(i)?.name;
            let key = self.layout.service_key(name).into_bytes();
            let stored = match overlay.get(&key) {
                Some(entry) => &entry.as_ref()?.stored,
                None => &self.good.get(&key)?.stored,
            };
            Some(origin(&key, stored))
        };
        let provenance = EtcdProvenance::looked_up(
            &Unrecorded,
            base,
            gateway_origin.as_ref(),
            config.services.len().saturating_sub(base),
            &locate,
        );
        match rules::validate(&config, &provenance) {
            Ok(()) => Ok((Arc::new(config), change)),
            Err(error) => Err(blame(&error, overlay)),
        }
    }

    /// The config with `overlay` on the good state, put together from
    /// every running part.
    fn whole(&self, overlay: &BTreeMap<Vec<u8>, Option<Accepted>>) -> Config {
        let mut config = self.base.clone();
        let gateway_key = self.layout.gateway_key().into_bytes();
        let gateway = match overlay.get(&gateway_key) {
            Some(entry) => entry.as_ref(),
            None => self.good.get(&gateway_key),
        };
        if let Some(Accepted {
            part: Part::Gateway(settings),
            ..
        }) = gateway
        {
            config.gateway = GatewaySettings::clone(settings);
        }
        let prefix = self.layout.services().into_bytes();
        for (_, accepted) in merged(&self.good, overlay, &prefix) {
            if let Part::Service(part) = &accepted.part {
                config.services.push(service_of(part, &config.gateway));
            }
        }
        config
    }

    /// The config given last with `overlay`'s services put in or taken
    /// out, when the overlay changes nothing else the config holds (no
    /// gateway settings); `None` otherwise. Costs a copy of the config
    /// and what the overlay changes, not a rebuild from every part.
    fn patched(
        &self,
        overlay: &BTreeMap<Vec<u8>, Option<Accepted>>,
    ) -> Option<(Config, RulesChange)> {
        let last = self.last.as_ref()?;
        let gateway_key = self.layout.gateway_key().into_bytes();
        if overlay.contains_key(&gateway_key) {
            return None;
        }
        let prefix = self.layout.services().into_bytes();
        let mut config = Config::clone(last);
        let base = self.base.services.len();
        let mut names = Vec::new();
        for (key, entry) in overlay {
            let Some(name) = key
                .strip_prefix(prefix.as_slice())
                .and_then(|n| std::str::from_utf8(n).ok())
            else {
                continue;
            };
            // etcd's services follow the file's, in key order: their
            // names' order.
            let found = config.services[base..]
                .binary_search_by(|s| s.name.as_bytes().cmp(name.as_bytes()))
                .map(|i| base + i)
                .map_err(|i| base + i);
            match (entry, found) {
                (
                    Some(Accepted {
                        part: Part::Service(part),
                        ..
                    }),
                    Ok(i),
                ) => config.services[i] = service_of(part, &config.gateway),
                (
                    Some(Accepted {
                        part: Part::Service(part),
                        ..
                    }),
                    Err(i),
                ) => config.services.insert(i, service_of(part, &config.gateway)),
                (None, Ok(i)) => {
                    config.services.remove(i);
                }
                // A deleted key that never ran, or (which a key under
                // services/ never reads as) another part.
                _ => continue,
            }
            names.push(name.to_owned());
        }
        let since = Arc::clone(last);
        Some((config, RulesChange::Services { since, names }))
    }

    /// Makes the overlay the running state.
    fn install(
        &mut self,
        revision: i64,
        config: Arc<Config>,
        change: RulesChange,
        overlay: BTreeMap<Vec<u8>, Option<Accepted>>,
        bad: BTreeMap<Vec<u8>, Vec<String>>,
    ) -> Outcome {
        let applied_keys = overlay.len();
        for (key, entry) in overlay {
            self.held.remove(&key);
            match entry {
                Some(accepted) => self.good.insert(key, accepted),
                None => self.good.remove(&key),
            };
        }
        self.pending = bad.keys().cloned().collect();
        for (key, problems) in bad {
            let held = self.held_key(&key, revision, problems);
            self.held.insert(key, held);
        }
        self.revision = revision.max(self.revision);
        self.applied = revision;
        self.last = Some(Arc::clone(&config));
        Outcome::Applied(Box::new(Rules {
            config,
            change,
            revision,
            applied_keys,
            held: self.held(),
        }))
    }

    /// Refuses `revision` whole; the keys of it in `bad` are held.
    fn refuse(
        &mut self,
        revision: i64,
        changed: &BTreeSet<Vec<u8>>,
        bad: BTreeMap<Vec<u8>, Vec<String>>,
    ) -> Outcome {
        let mut problems = Vec::new();
        for (key, why) in bad {
            if changed.contains(&key) {
                let held = self.held_key(&key, revision, why);
                problems.push(held.clone());
                self.held.insert(key, held);
            }
        }
        self.revision = revision.max(self.revision);
        Outcome::Refused(Refusal { revision, problems })
    }

    /// `key` held: at the revision its value was written at, or for a
    /// deletion the revision that deleted it.
    fn held_key(&self, key: &[u8], revision: i64, problems: Vec<String>) -> HeldKey {
        HeldKey {
            key: String::from_utf8_lossy(key).into_owned(),
            revision: self
                .current
                .get(key)
                .map_or(revision, |stored| stored.mod_revision),
            problems,
        }
    }
}

/// The accepted parts under `prefix`: the good state with the overlay on
/// top, in key order.
fn merged<'a>(
    good: &'a BTreeMap<Vec<u8>, Accepted>,
    overlay: &'a BTreeMap<Vec<u8>, Option<Accepted>>,
    prefix: &'a [u8],
) -> impl Iterator<Item = (&'a [u8], &'a Accepted)> {
    let under = |map_key: &Vec<u8>| map_key.starts_with(prefix);
    let from_good = good
        .range(prefix.to_vec()..)
        .take_while(move |(k, _)| under(k))
        .filter(|(k, _)| !overlay.contains_key(*k))
        .map(|(k, a)| (k.as_slice(), a));
    let from_overlay = overlay
        .range(prefix.to_vec()..)
        .take_while(move |(k, _)| under(k))
        .filter_map(|(k, a)| a.as_ref().map(|a| (k.as_slice(), a)));
    let mut all: Vec<_> = from_good.chain(from_overlay).collect();
    all.sort_unstable_by(|a, b| a.0.cmp(b.0));
    all.into_iter()
}

/// Keys to blame for a validation failure, with what is wrong with each.
type Blamed = BTreeMap<Vec<u8>, Vec<String>>;

/// A service from etcd as it runs: with the gateway's table size if its
/// value sets none.
fn service_of(part: &value::ServicePart, gateway: &GatewaySettings) -> Service {
    let mut service = part.service.clone();
    if !part.sets_table_size {
        service.maglev_table_size = gateway.maglev_table_size;
    }
    service
}

/// The origin of a key's value.
fn origin(key: &[u8], stored: &Stored) -> Origin {
    Origin {
        key: String::from_utf8_lossy(key).into_owned(),
        revision: stored.mod_revision,
    }
}

/// The keys of `overlay` a validation failure is blamed on. A problem
/// located at a key of the overlay is that key's; a problem located
/// elsewhere (a running key or the file that a new key collides with) is
/// blamed on every key of the overlay, as one of them caused it: the rules
/// ran valid without them.
fn blame(
    error: &rules::ConfigError,
    overlay: &BTreeMap<Vec<u8>, Option<Accepted>>,
) -> BTreeMap<Vec<u8>, Vec<String>> {
    let mut blamed: BTreeMap<Vec<u8>, Vec<String>> = BTreeMap::new();
    let mut elsewhere = Vec::new();
    for problem in error.problems() {
        match &problem.location {
            Location::Etcd { key, .. } if overlay.contains_key(key.as_bytes()) => {
                blamed
                    .entry(key.as_bytes().to_vec())
                    .or_default()
                    .push(problem.detail());
            }
            _ => elsewhere.push(problem.to_string()),
        }
    }
    if blamed.is_empty() {
        let message = if elsewhere.is_empty() {
            vec![error.to_string()]
        } else {
            elsewhere
        };
        for (key, entry) in overlay {
            let mut problems = message.clone();
            if entry.is_none() {
                problems.insert(0, "deleting this key would leave the rules invalid".into());
            }
            blamed.insert(key.clone(), problems);
        }
    }
    blamed
}

/// The rules ran valid with no pending key applied, so holding every
/// pending key back always settles; reaching here is a fault in this
/// module, reported rather than run.
fn unreachable_state(revision: i64, bad: BTreeMap<Vec<u8>, Vec<String>>) -> Outcome {
    tracing::error!(
        revision,
        "etcd rules did not settle; nothing of the revision runs"
    );
    Outcome::Refused(Refusal {
        revision,
        problems: bad
            .into_iter()
            .map(|(key, problems)| HeldKey {
                key: String::from_utf8_lossy(&key).into_owned(),
                revision,
                problems,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Backend, Failover, Protocol, Scheduler, Service};

    fn layout() -> KeyLayout {
        KeyLayout::new("/fg").unwrap()
    }

    fn service(name: &str, vip: &str, port: u16) -> Service {
        Service {
            limits: Default::default(),

            announce: Default::default(),
            routing: Default::default(),
            health: Default::default(),
            name: name.into(),
            protocol: Protocol::Tcp,
            vip: vip.parse().unwrap(),
            port,
            scheduler: Scheduler::Maglev,
            maglev_table_size: 251,
            failover: Failover::default(),
            backends: vec![Backend::new("198.18.1.11".parse().unwrap(), 8080)],
        }
    }

    fn put(name: &str, value: &str, revision: i64) -> Change {
        Change {
            key: layout().service_key(name).into_bytes(),
            value: Some(Stored {
                value: value.as_bytes().to_vec(),
                mod_revision: revision,
            }),
        }
    }

    fn put_service(s: &Service, revision: i64) -> Change {
        put(&s.name, &value::service_value(s, true), revision)
    }

    fn delete(name: &str) -> Change {
        Change {
            key: layout().service_key(name).into_bytes(),
            value: None,
        }
    }

    fn names(outcome: &Outcome) -> Vec<String> {
        match outcome {
            Outcome::Applied(rules) => rules
                .config
                .services
                .iter()
                .map(|s| s.name.clone())
                .collect(),
            Outcome::Refused(r) => panic!("refused: {r}"),
        }
    }

    fn refusal(outcome: Outcome) -> Refusal {
        match outcome {
            Outcome::Refused(r) => r,
            Outcome::Applied(rules) => panic!("applied revision {}", rules.revision),
        }
    }

    #[test]
    fn a_transaction_is_one_change_after_the_files_services() {
        let mut base = Config::default();
        base.services.push(service("file", "198.18.100.1", 80));
        let mut mirror = Mirror::new(layout(), base);
        let outcome = mirror.load(5, vec![put_service(&service("b", "198.18.100.3", 80), 4)]);
        assert_eq!(names(&outcome), ["file", "b"]);
        let outcome = mirror.apply(
            6,
            vec![
                put_service(&service("a", "198.18.100.2", 80), 6),
                delete("b"),
                put_service(&service("c", "198.18.100.4", 80), 6),
            ],
        );
        assert_eq!(names(&outcome), ["file", "a", "c"]);
        let Outcome::Applied(rules) = outcome else {
            unreachable!()
        };
        assert_eq!((rules.revision, rules.applied_keys), (6, 3));
        assert_eq!((mirror.revision(), mirror.applied_revision()), (6, 6));
    }

    /// The rules a fresh mirror puts together from every key of `mirror`.
    fn rebuilt(mirror: &Mirror, base: Config, revision: i64) -> Arc<Config> {
        let mut fresh = Mirror::new(layout(), base);
        let entries = mirror
            .good_entries()
            .map(|(key, stored)| Change {
                key: key.to_vec(),
                value: Some(stored.clone()),
            })
            .collect();
        match fresh.load(revision, entries) {
            Outcome::Applied(rules) => rules.config,
            Outcome::Refused(r) => panic!("refused: {r}"),
        }
    }

    #[test]
    fn a_revision_of_services_only_is_made_on_the_last_rules_and_names_them() {
        let mut base = Config::default();
        base.services.push(service("file", "198.18.100.1", 80));
        let mut mirror = Mirror::new(layout(), base.clone());
        let Outcome::Applied(first) = mirror.load(
            3,
            vec![
                put_service(&service("b", "198.18.100.3", 80), 2),
                put_service(&service("d", "198.18.100.5", 80), 3),
            ],
        ) else {
            panic!("refused")
        };
        assert_eq!(first.change, RulesChange::Whole);

        // Added before, between and after the others, one replaced, one
        // deleted, and a key outside the config: one change.
        let mut replaced = service("d", "198.18.100.5", 80);
        replaced.backends[0].weight = 7;
        let mut class = put("x", r#"{"format":1,"zone":"dc1"}"#, 4);
        class.key = layout()
            .class_key(&"198.18.0.0/16".parse().unwrap())
            .into_bytes();
        let Outcome::Applied(rules) = mirror.apply(
            4,
            vec![
                put_service(&service("a", "198.18.100.2", 80), 4),
                delete("b"),
                put_service(&service("c", "198.18.100.4", 80), 4),
                put_service(&replaced, 4),
                put_service(&service("e", "198.18.100.6", 80), 4),
                class,
            ],
        ) else {
            panic!("refused")
        };
        let RulesChange::Services { since, names } = &rules.change else {
            panic!("{:?}", rules.change)
        };
        assert!(Arc::ptr_eq(since, &first.config));
        assert_eq!(names, &["a", "b", "c", "d", "e"]);
        assert_eq!(names_of(&rules.config), ["file", "a", "c", "d", "e"]);
        assert_eq!(rules.config.service("d"), Some(&replaced));
        // The same as the rules put together from every key.
        assert_eq!(rules.config, rebuilt(&mirror, base.clone(), 4));

        // The gateway settings change what every service inherits: the
        // whole is put together again.
        let gateway = Change {
            key: layout().gateway_key().into_bytes(),
            value: Some(Stored {
                value: br#"{"format":1,"maglev_table_size":503}"#.to_vec(),
                mod_revision: 5,
            }),
        };
        let Outcome::Applied(rules) = mirror.apply(5, vec![gateway]) else {
            panic!("refused")
        };
        assert_eq!(rules.change, RulesChange::Whole);
        assert_eq!(rules.config, rebuilt(&mirror, base, 5));
    }

    #[test]
    fn a_problem_in_a_patched_service_is_named_at_its_key() {
        let mut mirror = Mirror::new(layout(), Config::default());
        names(&mirror.load(2, vec![put_service(&service("a", "198.18.100.2", 80), 2)]));
        names(&mirror.apply(3, vec![put_service(&service("b", "198.18.100.3", 80), 3)]));
        // c takes a's listener: refused, named at c's key.
        let refused =
            refusal(mirror.apply(4, vec![put_service(&service("c", "198.18.100.2", 80), 4)]));
        assert_eq!(refused.problems.len(), 1);
        assert_eq!(refused.problems[0].key, "/fg/v1/rules/services/c");
        assert_eq!(refused.problems[0].revision, 4);
    }

    fn names_of(config: &Config) -> Vec<&str> {
        config.services.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn a_revision_with_a_bad_key_is_refused_whole_and_later_ones_apply_around_it() {
        let mut mirror = Mirror::new(layout(), Config::default());
        names(&mirror.load(2, vec![put_service(&service("web", "198.18.100.2", 80), 2)]));

        // Revision 3: a good service and a bad one, in one transaction.
        let refused = refusal(mirror.apply(
            3,
            vec![
                put_service(&service("api", "198.18.100.3", 80), 3),
                put(
                    "web",
                    r#"{"format":1,"protocol":"tcp","vip":"198.18.100.2","port":0}"#,
                    3,
                ),
            ],
        ));
        assert_eq!(refused.revision, 3);
        assert_eq!(refused.problems.len(), 1);
        assert_eq!(refused.problems[0].key, "/fg/v1/rules/services/web");
        assert_eq!(refused.problems[0].revision, 3);
        assert!(
            refused.problems[0]
                .problems
                .contains(&"port 0 of service \"web\" is out of range 1..=65535".to_owned()),
            "{refused}"
        );
        assert_eq!((mirror.revision(), mirror.applied_revision()), (3, 2));

        // Revision 4 touches another key: it runs, with revision 3's good
        // change, and web held at its last good value.
        let outcome = mirror.apply(4, vec![put_service(&service("db", "198.18.100.4", 80), 4)]);
        assert_eq!(names(&outcome), ["api", "db", "web"]);
        let Outcome::Applied(rules) = &outcome else {
            unreachable!()
        };
        assert_eq!(rules.config.services[2], service("web", "198.18.100.2", 80));
        assert_eq!(rules.held.len(), 1);
        assert_eq!(rules.held[0].revision, 3);

        // Fixed at revision 5: nothing is held any more.
        let fixed = service("web", "198.18.100.2", 8080);
        let Outcome::Applied(rules) = mirror.apply(5, vec![put_service(&fixed, 5)]) else {
            panic!("refused")
        };
        assert!(rules.held.is_empty());
        assert!(mirror.held().is_empty());
        assert_eq!(rules.config.service("web"), Some(&fixed));
    }

    #[test]
    fn a_key_that_breaks_the_whole_is_named_by_the_validator() {
        let mut mirror = Mirror::new(layout(), Config::default());
        names(&mirror.load(2, vec![put_service(&service("a", "198.18.100.2", 80), 2)]));
        // b takes a's listener: the validator names b, at its key.
        let refused =
            refusal(mirror.apply(3, vec![put_service(&service("b", "198.18.100.2", 80), 3)]));
        assert_eq!(refused.problems.len(), 1);
        assert_eq!(refused.problems[0].key, "/fg/v1/rules/services/b");
        assert!(
            refused.problems[0].problems[0].contains("198.18.100.2"),
            "{refused}"
        );
        // A never-good key is held absent.
        let outcome = mirror.apply(4, vec![put_service(&service("c", "198.18.100.4", 80), 4)]);
        assert_eq!(names(&outcome), ["a", "c"]);
        // Deleting the bad key clears it.
        let Outcome::Applied(rules) = mirror.apply(5, vec![delete("b")]) else {
            panic!("refused")
        };
        assert!(rules.held.is_empty());
    }

    #[test]
    fn a_load_holds_bad_keys_and_runs_the_rest() {
        let mut mirror = Mirror::new(layout(), Config::default());
        let mut unknown = put("x", "{}", 3);
        unknown.key = b"/fg/v1/rules/servers/x".to_vec();
        let outcome = mirror.load(
            9,
            vec![
                put_service(&service("a", "198.18.100.2", 80), 2),
                unknown,
                put("b", "not json", 4),
            ],
        );
        assert_eq!(names(&outcome), ["a"]);
        let held = mirror.held();
        assert_eq!(held.len(), 2);
        assert_eq!(held[0].key, "/fg/v1/rules/servers/x");
        assert!(held[0].problems[0].starts_with("unknown kind of key"));
        assert_eq!(held[1].revision, 4);
        assert!(held[1].problems[0].starts_with("the value is not JSON"));
        assert_eq!(mirror.applied_revision(), 9);
    }

    #[test]
    fn a_reload_applies_the_difference_as_one_change() {
        let mut mirror = Mirror::new(layout(), Config::default());
        names(&mirror.load(
            3,
            vec![
                put_service(&service("a", "198.18.100.2", 80), 2),
                put_service(&service("b", "198.18.100.3", 80), 3),
            ],
        ));
        // Compacted meanwhile: b deleted, c added, a unchanged.
        let outcome = mirror.load(
            20,
            vec![
                put_service(&service("a", "198.18.100.2", 80), 2),
                put_service(&service("c", "198.18.100.4", 80), 17),
            ],
        );
        let Outcome::Applied(rules) = outcome else {
            panic!("refused")
        };
        assert_eq!(rules.applied_keys, 2);
        assert_eq!(rules.config.services.len(), 2);
        assert_eq!(rules.config.services[1].name, "c");
    }

    #[test]
    fn services_take_the_gateway_table_size_unless_they_set_one() {
        let mut mirror = Mirror::new(layout(), Config::default());
        let gateway = Change {
            key: layout().gateway_key().into_bytes(),
            value: Some(Stored {
                value: br#"{"format":1,"maglev_table_size":503}"#.to_vec(),
                mod_revision: 2,
            }),
        };
        let own = service("own", "198.18.100.2", 80);
        let inherits = put(
            "inherits",
            &value::service_value(&service("inherits", "198.18.100.3", 80), false),
            2,
        );
        let Outcome::Applied(rules) = mirror.load(2, vec![gateway, put_service(&own, 2), inherits])
        else {
            panic!("refused")
        };
        assert_eq!(rules.config.gateway.maglev_table_size, 503);
        assert_eq!(rules.config.service("own").unwrap().maglev_table_size, 251);
        assert_eq!(
            rules.config.service("inherits").unwrap().maglev_table_size,
            503
        );
    }

    #[test]
    fn a_service_in_both_the_file_and_etcd_is_named() {
        let mut base = Config::default();
        base.services.push(service("web", "198.18.100.1", 80));
        let mut mirror = Mirror::new(layout(), base);
        let _ = mirror.load(2, vec![put_service(&service("web", "198.18.100.9", 80), 2)]);
        assert_eq!(
            mirror.file_conflicts(),
            [
                "service \"web\" is defined both in the config file and in etcd \
              (key /fg/v1/rules/services/web): define each service in one place"
            ]
        );
    }

    #[test]
    fn classes_and_paths_run_beside_the_services() {
        let mut mirror = Mirror::new(layout(), Config::default());
        let l = layout();
        let prefix = "198.18.0.0/16".parse().unwrap();
        let class = Change {
            key: l.class_key(&prefix).into_bytes(),
            value: Some(Stored {
                value: br#"{"format":1,"zone":"dc1"}"#.to_vec(),
                mod_revision: 2,
            }),
        };
        let path = Change {
            key: l.path_key("web", &prefix).into_bytes(),
            value: Some(Stored {
                value: br#"{"format":1,"backends":["w1"]}"#.to_vec(),
                mod_revision: 2,
            }),
        };
        let _ = mirror.load(2, vec![class, path]);
        assert_eq!(mirror.classes().count(), 1);
        assert_eq!(mirror.paths().next().unwrap().backends, ["w1"]);
        assert_eq!(mirror.counts().get(&PartKind::Path), Some(&1));
    }
}
