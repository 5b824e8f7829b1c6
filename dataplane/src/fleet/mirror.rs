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
//! (their names' order); so do client classes (`[[routing.classes]]`) and,
//! in each service, its distribution paths (`[[services.paths]]`, on a
//! service of the file or of etcd). The validator judges the whole and
//! names an etcd part by its key and revision ([`EtcdProvenance`]). Two
//! rules hold for paths, which live apart from their service:
//!
//! 4. A path key whose service is in neither the file nor etcd, or whose
//!    client the file gives that service a path for already, is bad (held).
//! 5. Deleting a service whose path keys stay is refused (the service key
//!    held): delete `paths/NAME/` in the same transaction.
//!
//! A revision of path keys alone is made on the rules given last path by
//! path, each path checked as the validator checks it
//! ([`RulesChange::Paths`]): a million paths cost nothing until they
//! change.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::route::Prefix;
use crate::rules::{
    self, ClientClass, ClientPrefix, Config, DistributionPath, GatewaySettings, Item, Location,
    Service, ServiceEdit, ServiceIndex, Unrecorded,
};
use crate::table::PathUpdate;

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
    /// no longer has it, removed (their distribution paths with them).
    /// Names in key order; none when only keys outside the config
    /// changed.
    Services {
        /// The config the change is made to.
        since: Arc<Config>,
        /// The services put or deleted.
        names: Vec<String>,
    },
    /// Only distribution paths differ from `since`, each as `updates`
    /// says: what the path table takes path by path, at a cost that
    /// follows the paths changed, not the paths held.
    Paths {
        /// The config the change is made to.
        since: Arc<Config>,
        /// The services whose paths changed, in key order.
        names: Vec<String>,
        /// Each path changed, as it leaves it (services by position,
        /// the same in both configs).
        updates: Vec<PathUpdate>,
    },
}

impl RulesChange {
    /// The config the change is made to and the services it changes, if
    /// only services change (paths being part of a service).
    pub fn since(&self) -> Option<(&Arc<Config>, &[String])> {
        match self {
            RulesChange::Whole => None,
            RulesChange::Services { since, names } | RulesChange::Paths { since, names, .. } => {
                Some((since, names))
            }
        }
    }

    /// The config the change is made to and the paths it changes, if
    /// only paths change.
    pub fn path_updates(&self) -> Option<(&Arc<Config>, &[PathUpdate])> {
        match self {
            RulesChange::Paths { since, updates, .. } => Some((since, updates)),
            _ => None,
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
    /// The counts over `last`'s services that let a revision of a few
    /// services be validated by what it changes
    /// ([`ServiceIndex::validate_change`]); made again with a whole
    /// config, updated with a revision of services.
    index: Option<ServiceIndex>,
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
            index: None,
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

    /// The client classes from etcd that run, in key order (in the rules
    /// given, after the file's `routing.classes`).
    pub fn classes(&self) -> impl Iterator<Item = &ClassEntry> {
        self.good.values().filter_map(|a| match &a.part {
            Part::Class(c) => Some(c),
            _ => None,
        })
    }

    /// The distribution paths from etcd that run, in key order (in the
    /// rules given, in their services' `routing.paths`).
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
        let homeless = self.homeless_paths(&config, overlay);
        if !homeless.is_empty() {
            return Err(homeless);
        }
        // Paths alone: each checked as the validator checks a path; the
        // rest ran valid and is the same.
        if let RulesChange::Paths { updates, .. } = &change {
            let valid = |u: &PathUpdate| {
                let service = &config.services[u.service];
                u.backends.is_none()
                    || service
                        .routing
                        .paths
                        .get(&u.client)
                        .is_some_and(|path| rules::path_is_valid(service, path))
            };
            if updates.iter().all(valid) {
                return Ok((Arc::new(config), change));
            }
        }
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
        let stored = |key: &[u8]| -> Option<Origin> {
            let stored = match overlay.get(key) {
                Some(entry) => &entry.as_ref()?.stored,
                None => &self.good.get(key)?.stored,
            };
            Some(origin(key, stored))
        };
        let locate = |i: usize| {
            let name = &config.services.get(i)?.name;
            stored(self.layout.service_key(name).as_bytes())
        };
        let base_classes = self.base.routing.classes.len();
        let classes_prefix = self.layout.classes().into_bytes();
        let parts = |item: Item| -> Option<Origin> {
            match item {
                Item::ClientClass(i) => {
                    let n = i.checked_sub(base_classes)?;
                    let (key, _) = merged(&self.good, overlay, &classes_prefix).nth(n)?;
                    stored(key)
                }
                Item::Path { service, path } => {
                    let service = config.services.get(service)?;
                    let client = service.routing.paths.iter().nth(path)?.client;
                    let prefix = key_prefix(client)?;
                    stored(self.layout.path_key(&service.name, &prefix).as_bytes())
                }
                _ => None,
            }
        };
        let provenance = EtcdProvenance::looked_up(
            &Unrecorded,
            base,
            gateway_origin.as_ref(),
            config.services.len().saturating_sub(base),
            &locate,
        )
        .with_parts(&parts);
        let judged = match (&change, &self.index) {
            // Services alone, on the rules given last: judged by what
            // changes, against the counts kept over the rest.
            (RulesChange::Services { since, names }, Some(index)) => {
                let edits = service_edits(since, &config, base, names);
                index.validate_change(since, &config, &edits, &provenance)
            }
            _ => rules::validate(&config, &provenance),
        };
        match judged {
            Ok(()) => Ok((Arc::new(config), change)),
            Err(error) => Err(blame(&error, overlay)),
        }
    }

    /// The keys of `overlay` to blame for distribution paths without a
    /// home in `config`: a path key put for a service the config lacks,
    /// or for a client the file gives that service a path for already;
    /// a service key deleted while path keys of the service stay.
    fn homeless_paths(
        &self,
        config: &Config,
        overlay: &BTreeMap<Vec<u8>, Option<Accepted>>,
    ) -> Blamed {
        let mut blamed = Blamed::new();
        let services = self.layout.services().into_bytes();
        for (key, entry) in overlay {
            match entry {
                Some(Accepted {
                    part: Part::Path(path),
                    ..
                }) => {
                    let why =
                        if config.service(&path.service).is_none() {
                            format!(
                                "service {:?} is in neither the config file nor etcd ({}): \
                             a path needs its service",
                                path.service,
                                self.layout.service_key(&path.service)
                            )
                        } else if self.base.service(&path.service).is_some_and(|s| {
                            s.routing.paths.get(&client_prefix(path.prefix)).is_some()
                        }) {
                            format!(
                                "the config file gives service {:?} a path for client {} already",
                                path.service, path.prefix
                            )
                        } else {
                            continue;
                        };
                    blamed.insert(key.clone(), vec![why]);
                }
                None => {
                    let Some(name) = key
                        .strip_prefix(services.as_slice())
                        .and_then(|n| std::str::from_utf8(n).ok())
                    else {
                        continue;
                    };
                    if config.service(name).is_some() {
                        continue;
                    }
                    let paths = self.layout.paths_of(name).into_bytes();
                    let left = merged(&self.good, overlay, &paths).count();
                    if left > 0 {
                        blamed.insert(
                            key.clone(),
                            vec![format!(
                                "deleting service {name:?} would leave its {left} distribution \
                                 path key(s) under {} without it: delete them in the same \
                                 transaction",
                                self.layout.paths_of(name)
                            )],
                        );
                    }
                }
                _ => {}
            }
        }
        blamed
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
        let prefix = self.layout.classes().into_bytes();
        for (_, accepted) in merged(&self.good, overlay, &prefix) {
            if let Part::Class(class) = &accepted.part {
                config.routing.classes.push(client_class(class));
            }
        }
        // Paths come grouped by service, in key order.
        let prefix = self.layout.paths().into_bytes();
        let mut at: Option<(&str, Option<usize>)> = None;
        for (_, accepted) in merged(&self.good, overlay, &prefix) {
            let Part::Path(path) = &accepted.part else {
                continue;
            };
            let i = match at {
                Some((name, i)) if name == path.service => i,
                _ => {
                    let i = position(&config, self.base.services.len(), &path.service);
                    at = Some((path.service.as_str(), i));
                    i
                }
            };
            // A path without its service is blamed by `homeless_paths`.
            if let Some(i) = i {
                config.services[i]
                    .routing
                    .paths
                    .push(distribution_path(path));
            }
        }
        config
    }

    /// The config given last with `overlay`'s services and paths put in
    /// or taken out, when the overlay changes nothing else the config
    /// holds (no gateway settings, no classes); `None` otherwise. Costs a
    /// copy of the config and what the overlay changes, not a rebuild
    /// from every part.
    fn patched(
        &self,
        overlay: &BTreeMap<Vec<u8>, Option<Accepted>>,
    ) -> Option<(Config, RulesChange)> {
        let last = self.last.as_ref()?;
        let gateway_key = self.layout.gateway_key().into_bytes();
        if overlay.contains_key(&gateway_key) {
            return None;
        }
        let classes = self.layout.classes().into_bytes();
        if overlay.keys().any(|k| k.starts_with(&classes)) {
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
            let found = config
                .services
                .binary_search_in(base..config.services.len(), |s| {
                    s.name.as_bytes().cmp(name.as_bytes())
                });
            match (entry, found) {
                (
                    Some(Accepted {
                        part: Part::Service(part),
                        ..
                    }),
                    Ok(i),
                ) => {
                    // Its paths are keys of their own: they stay.
                    let paths = config.services[i].routing.paths.clone();
                    config.services[i] = service_of(part, &config.gateway);
                    config.services[i].routing.paths = paths;
                }
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
        let services_changed = !names.is_empty();
        let updates = self.patch_paths(&mut config, overlay);
        for (i, _) in &updates {
            let name = &config.services[*i].name;
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        let since = Arc::clone(last);
        if services_changed || updates.is_empty() {
            return Some((config, RulesChange::Services { since, names }));
        }
        let updates = updates
            .into_iter()
            .map(|(service, client)| PathUpdate {
                service,
                client,
                backends: config.services[service]
                    .routing
                    .paths
                    .get(&client)
                    .map(|p| p.backends.clone()),
            })
            .collect();
        Some((
            config,
            RulesChange::Paths {
                since,
                names,
                updates,
            },
        ))
    }

    /// `overlay`'s path keys put into `config`'s services or taken out
    /// of them; the paths changed (service position, client).
    fn patch_paths(
        &self,
        config: &mut Config,
        overlay: &BTreeMap<Vec<u8>, Option<Accepted>>,
    ) -> Vec<(usize, ClientPrefix)> {
        let base = self.base.services.len();
        let mut updates = Vec::new();
        for entry in overlay.values() {
            let path = match entry {
                Some(Accepted {
                    part: Part::Path(path),
                    ..
                }) => path,
                _ => continue,
            };
            let Some(i) = position(config, base, &path.service) else {
                continue;
            };
            config.services[i]
                .routing
                .paths
                .put(distribution_path(path));
            updates.push((i, client_prefix(path.prefix)));
        }
        // Deleted path keys, by their key (the overlay holds no part).
        let paths_prefix = self.layout.paths().into_bytes();
        for (key, entry) in overlay {
            if entry.is_some() || !key.starts_with(&paths_prefix) {
                continue;
            }
            let Some(Accepted {
                part: Part::Path(path),
                ..
            }) = self.good.get(key)
            else {
                continue;
            };
            let Some(i) = position(config, base, &path.service) else {
                continue;
            };
            let client = client_prefix(path.prefix);
            if config.services[i].routing.paths.remove(&client).is_some() {
                updates.push((i, client));
            }
        }
        updates
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
        match (&change, self.index.as_mut()) {
            // Paths weigh in none of the counts.
            (RulesChange::Paths { .. }, Some(_)) => {}
            (RulesChange::Services { since, names }, Some(index)) => {
                let base = self.base.services.len();
                index.apply(since, &config, &service_edits(since, &config, base, names));
            }
            _ => self.index = Some(ServiceIndex::of(&config)),
        }
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

/// Where the service called `name` is in `config`, whose services from
/// `base` on are etcd's, in their names' order.
fn position(config: &Config, base: usize, name: &str) -> Option<usize> {
    let services = &config.services;
    if base > services.len() {
        return None;
    }
    match services.binary_search_in(base..services.len(), |s| {
        s.name.as_bytes().cmp(name.as_bytes())
    }) {
        Ok(i) => Some(i),
        Err(_) => services.iter().take(base).position(|s| s.name == name),
    }
}

/// Where etcd's service called `name` is in `config`, whose services
/// from `base` on are etcd's, in their names' order (a service of the
/// file with that name is not it).
fn etcd_position(config: &Config, base: usize, name: &str) -> Option<usize> {
    let services = &config.services;
    if base > services.len() {
        return None;
    }
    services
        .binary_search_in(base..services.len(), |s| {
            s.name.as_bytes().cmp(name.as_bytes())
        })
        .ok()
}

/// The services named, as they were in `since` and are in `next`: the
/// edit a revision of services made.
fn service_edits<'a>(
    since: &'a Config,
    next: &'a Config,
    base: usize,
    names: &[String],
) -> Vec<ServiceEdit<'a>> {
    names
        .iter()
        .map(|name| {
            let before = etcd_position(since, base, name);
            let after = etcd_position(next, base, name);
            if before.is_none() && after.is_none() {
                // A service of the file whose paths from etcd changed:
                // at the same place in both.
                let j = since
                    .services
                    .iter()
                    .take(base)
                    .position(|s| s.name == *name);
                return ServiceEdit {
                    before: j.map(|j| &since.services[j]),
                    after: j.map(|j| (j, &next.services[j])),
                };
            }
            ServiceEdit {
                before: before.map(|i| &since.services[i]),
                after: after.map(|i| (i, &next.services[i])),
            }
        })
        .filter(|edit| match (edit.before, edit.after) {
            // Shared: the same service in both (no change to judge).
            (Some(before), Some((_, after))) => !std::ptr::eq(before, after),
            (None, None) => false,
            _ => true,
        })
        .collect()
}

/// A client class from etcd as the model holds it.
fn client_class(class: &ClassEntry) -> ClientClass {
    ClientClass {
        prefix: client_prefix(class.prefix),
        set: class.set.clone(),
        zone: class.zone.clone(),
    }
}

/// A distribution path from etcd as the model holds it.
fn distribution_path(path: &PathEntry) -> DistributionPath {
    DistributionPath {
        client: client_prefix(path.prefix),
        backends: path.backends.clone(),
    }
}

/// A key's prefix as the model's.
fn client_prefix(prefix: Prefix) -> ClientPrefix {
    ClientPrefix {
        address: prefix.network(),
        len: prefix.length(),
    }
}

/// The model's prefix as a key's, if it is one a key can name.
fn key_prefix(prefix: ClientPrefix) -> Option<Prefix> {
    Prefix::new(prefix.address, prefix.len).ok()
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
        // deleted: one change.
        let mut replaced = service("d", "198.18.100.5", 80);
        replaced.backends[0].weight = 7;
        let Outcome::Applied(rules) = mirror.apply(
            4,
            vec![
                put_service(&service("a", "198.18.100.2", 80), 4),
                delete("b"),
                put_service(&service("c", "198.18.100.4", 80), 4),
                put_service(&replaced, 4),
                put_service(&service("e", "198.18.100.6", 80), 4),
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
        // Judged by the change: the counts kept are those of the whole.
        assert_eq!(mirror.index, Some(ServiceIndex::of(&rules.config)));

        // One that takes a running service's listener is refused as the
        // whole validator words it, and the counts stay.
        let Outcome::Refused(refusal) =
            mirror.apply(5, vec![put_service(&service("f", "198.18.100.6", 80), 5)])
        else {
            panic!("a listener taken twice was applied")
        };
        assert!(
            refusal.problems[0].problems[0].contains("is already used by service \"e\""),
            "{refusal}"
        );
        assert_eq!(mirror.index, Some(ServiceIndex::of(&rules.config)));
        let Outcome::Applied(rules) = mirror.apply(6, vec![delete("f")]) else {
            panic!("refused")
        };
        assert_eq!(mirror.index, Some(ServiceIndex::of(&rules.config)));

        // The gateway settings change what every service inherits: the
        // whole is put together again.
        let gateway = Change {
            key: layout().gateway_key().into_bytes(),
            value: Some(Stored {
                value: br#"{"format":1,"maglev_table_size":503}"#.to_vec(),
                mod_revision: 7,
            }),
        };
        let Outcome::Applied(rules) = mirror.apply(7, vec![gateway]) else {
            panic!("refused")
        };
        assert_eq!(rules.change, RulesChange::Whole);
        assert_eq!(rules.config, rebuilt(&mirror, base, 7));
        assert_eq!(mirror.index, Some(ServiceIndex::of(&rules.config)));
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

    fn key_put(key: String, value: &str, revision: i64) -> Change {
        Change {
            key: key.into_bytes(),
            value: Some(Stored {
                value: value.as_bytes().to_vec(),
                mod_revision: revision,
            }),
        }
    }

    fn key_delete(key: String) -> Change {
        Change {
            key: key.into_bytes(),
            value: None,
        }
    }

    fn path_key(service: &str, prefix: &str) -> String {
        layout().path_key(service, &prefix.parse().unwrap())
    }

    fn class_key(prefix: &str) -> String {
        layout().class_key(&prefix.parse().unwrap())
    }

    /// `web` on sh with backends named w1 and w2.
    fn named_web() -> Service {
        let mut web = service("web", "198.18.100.2", 80);
        web.scheduler = Scheduler::Sh;
        web.backends[0].name = Some("w1".into());
        let mut w2 = Backend::new("198.18.1.12".parse().unwrap(), 8080);
        w2.name = Some("w2".into());
        w2.zone = Some("dc1".into());
        web.backends.push(w2);
        web
    }

    fn applied(outcome: Outcome) -> Box<Rules> {
        match outcome {
            Outcome::Applied(rules) => rules,
            Outcome::Refused(r) => panic!("refused: {r}"),
        }
    }

    /// `config` with every service's paths in their keys' order.
    fn in_key_order(config: &Config) -> Config {
        let mut config = config.clone();
        for service in config.services.iter_mut() {
            let mut paths: Vec<DistributionPath> = service.routing.paths.iter().cloned().collect();
            paths.sort_by_key(|p| p.client.to_string());
            service.routing.paths = paths.into_iter().collect();
        }
        config
    }

    fn paths_of(config: &Config, service: &str) -> Vec<(String, Vec<String>)> {
        config
            .service(service)
            .unwrap()
            .routing
            .paths
            .iter()
            .map(|p| (p.client.to_string(), p.backends.clone()))
            .collect()
    }

    #[test]
    fn classes_and_paths_from_etcd_are_the_models_classes_and_paths() {
        let mut base = Config::default();
        base.routing.classes.push(ClientClass {
            prefix: rules::parse::client_prefix("198.19.0.0/16", "t").unwrap(),
            set: None,
            zone: Some("dc1".into()),
        });
        let mut mirror = Mirror::new(layout(), base.clone());
        let rules = applied(mirror.load(
            2,
            vec![
                put_service(&named_web(), 2),
                key_put(
                    class_key("198.18.0.0/16"),
                    r#"{"format":1,"zone":"dc1"}"#,
                    2,
                ),
                key_put(
                    path_key("web", "198.18.0.7/32"),
                    r#"{"format":1,"backends":["w2"]}"#,
                    2,
                ),
                key_put(
                    path_key("web", "198.18.0.8/32"),
                    r#"{"format":1,"backends":["w1","w2"]}"#,
                    2,
                ),
            ],
        ));
        // The file's class first, then etcd's, in key order.
        let classes: Vec<String> = rules
            .config
            .routing
            .classes
            .iter()
            .map(|c| c.prefix.to_string())
            .collect();
        assert_eq!(classes, ["198.19.0.0/16", "198.18.0.0/16"]);
        assert_eq!(
            paths_of(&rules.config, "web"),
            [
                ("198.18.0.7/32".to_owned(), vec!["w2".to_owned()]),
                (
                    "198.18.0.8/32".to_owned(),
                    vec!["w1".to_owned(), "w2".to_owned()]
                ),
            ]
        );
        assert_eq!(mirror.classes().count(), 1);
        assert_eq!(mirror.counts().get(&PartKind::Path), Some(&2));

        // Paths alone: made on the last rules, path by path.
        let first = Arc::clone(&rules.config);
        let rules = applied(mirror.apply(
            3,
            vec![
                key_put(
                    path_key("web", "198.18.0.7/32"),
                    r#"{"format":1,"backends":["w1"]}"#,
                    3,
                ),
                key_delete(path_key("web", "198.18.0.8/32")),
                key_put(
                    path_key("web", "198.18.0.0/24"),
                    r#"{"format":1,"backends":["w2"]}"#,
                    3,
                ),
            ],
        ));
        let RulesChange::Paths {
            since,
            names,
            updates,
        } = &rules.change
        else {
            panic!("{:?}", rules.change)
        };
        assert!(Arc::ptr_eq(since, &first));
        assert_eq!(names, &["web"]);
        let updates: Vec<(String, Option<Vec<String>>)> = updates
            .iter()
            .map(|u| (u.client.to_string(), u.backends.clone()))
            .collect();
        assert_eq!(
            updates,
            [
                ("198.18.0.0/24".to_owned(), Some(vec!["w2".to_owned()])),
                ("198.18.0.7/32".to_owned(), Some(vec!["w1".to_owned()])),
                ("198.18.0.8/32".to_owned(), None),
            ]
        );
        // The same as the rules put together from every key (where new
        // paths are appended, as the path verbs append them).
        let whole = rebuilt(&mirror, base.clone(), 3);
        assert_eq!(in_key_order(&rules.config), in_key_order(&whole));

        // A service's value replaced: its paths stay.
        let mut web = named_web();
        web.backends[0].weight = 5;
        let rules = applied(mirror.apply(4, vec![put_service(&web, 4)]));
        assert!(matches!(rules.change, RulesChange::Services { .. }));
        assert_eq!(paths_of(&rules.config, "web").len(), 2);
        let whole = rebuilt(&mirror, base.clone(), 4);
        assert_eq!(in_key_order(&rules.config), in_key_order(&whole));

        // A class: the whole is put together again.
        let rules = applied(mirror.apply(5, vec![key_delete(class_key("198.18.0.0/16"))]));
        assert_eq!(rules.change, RulesChange::Whole);
        assert_eq!(rules.config.routing.classes.len(), 1);
    }

    #[test]
    fn a_path_revision_shares_every_path_it_does_not_change() {
        let mut api = named_web();
        api.name = "api".into();
        api.vip = "198.18.100.3".parse().unwrap();
        let mut changes = vec![put_service(&named_web(), 2), put_service(&api, 2)];
        for service in ["api", "web"] {
            for i in 0..2000u32 {
                let client = format!("198.18.{}.{}/32", i / 250, i % 250);
                changes.push(key_put(
                    path_key(service, &client),
                    r#"{"format":1,"backends":["w1"]}"#,
                    2,
                ));
            }
        }
        let mut mirror = Mirror::new(layout(), Config::default());
        let first = applied(mirror.load(2, changes)).config;
        assert_eq!(paths_of(&first, "api").len(), 2000);
        let rules = applied(mirror.apply(
            3,
            vec![key_put(
                path_key("web", "198.18.1.1/32"),
                r#"{"format":1,"backends":["w2"]}"#,
                3,
            )],
        ));
        let Some((since, updates)) = rules.change.path_updates() else {
            panic!("{:?}", rules.change)
        };
        assert!(Arc::ptr_eq(since, &first));
        assert_eq!(updates.len(), 1);
        // The other service's paths are the very ones it had: nothing was
        // put together again.
        let api_paths = |c: &Config| c.service("api").unwrap().routing.paths.clone();
        assert!(api_paths(&rules.config).ptr_eq(&api_paths(&first)));
        let web = rules.config.service("web").unwrap();
        assert_eq!(web.routing.paths.len(), 2000);
        assert_eq!(
            web.routing
                .paths
                .get(&rules::parse::client_prefix("198.18.1.1/32", "t").unwrap())
                .unwrap()
                .backends,
            ["w2"]
        );
    }

    #[test]
    fn bad_paths_and_classes_are_held_by_their_keys_and_the_rest_applies() {
        let mut mirror = Mirror::new(layout(), Config::default());
        applied(mirror.load(
            2,
            vec![
                put_service(&named_web(), 2),
                key_put(
                    path_key("web", "198.18.0.7/32"),
                    r#"{"format":1,"backends":["w2"]}"#,
                    2,
                ),
            ],
        ));
        // An unknown backend: the validator's words, at the path's key.
        let refused = refusal(mirror.apply(
            3,
            vec![key_put(
                path_key("web", "198.18.0.9/32"),
                r#"{"format":1,"backends":["w9"]}"#,
                3,
            )],
        ));
        assert_eq!(refused.problems.len(), 1);
        assert_eq!(
            refused.problems[0].key,
            "/fg/v1/rules/paths/web/198.18.0.9/32"
        );
        assert_eq!(refused.problems[0].revision, 3);
        assert_eq!(
            refused.problems[0].problems,
            [
                "path of client 198.18.0.9/32 names unknown backend \"w9\" of service \"web\" \
              (a backend's name, or ADDR:PORT for one without)"
            ]
        );
        // A path of a service there is not.
        let refused = refusal(mirror.apply(
            4,
            vec![key_put(
                path_key("api", "198.18.0.9/32"),
                r#"{"format":1,"backends":["a1"]}"#,
                4,
            )],
        ));
        assert_eq!(
            refused.problems[0].key,
            "/fg/v1/rules/paths/api/198.18.0.9/32"
        );
        assert_eq!(
            refused.problems[0].problems,
            ["service \"api\" is in neither the config file nor etcd \
              (/fg/v1/rules/services/api): a path needs its service"]
        );
        // A bad class: the validator's words, at the class's key.
        let refused = refusal(mirror.apply(
            5,
            vec![key_put(
                class_key("198.18.0.0/16"),
                r#"{"format":1,"set":"orders"}"#,
                5,
            )],
        ));
        assert_eq!(
            refused.problems[0].key,
            "/fg/v1/rules/classes/198.18.0.0/16"
        );
        assert!(
            refused.problems[0].problems[0]
                .starts_with("set \"orders\" of client class 198.18.0.0/16"),
            "{refused}"
        );
        // Later revisions apply around them; the good path still runs.
        let rules = applied(mirror.apply(
            6,
            vec![key_put(
                path_key("web", "198.18.0.8/32"),
                r#"{"format":1,"backends":["w1"]}"#,
                6,
            )],
        ));
        assert_eq!(rules.held.len(), 3);
        assert_eq!(paths_of(&rules.config, "web").len(), 2);
        assert!(rules.config.routing.classes.is_empty());

        // A service deleted while its paths stay: refused, the service held.
        let refused = refusal(mirror.apply(7, vec![delete("web")]));
        assert_eq!(refused.problems[0].key, "/fg/v1/rules/services/web");
        assert_eq!(
            refused.problems[0].problems,
            [
                "deleting service \"web\" would leave its 3 distribution path key(s) under \
              /fg/v1/rules/paths/web/ without it: delete them in the same transaction"
            ]
        );
        // With its paths, in one transaction: applied, and the path held
        // for want of its service is cleared by its own deletion.
        let rules = applied(mirror.apply(
            8,
            vec![
                delete("web"),
                key_delete(path_key("web", "198.18.0.7/32")),
                key_delete(path_key("web", "198.18.0.8/32")),
                key_delete(path_key("web", "198.18.0.9/32")),
            ],
        ));
        assert!(rules.config.services.is_empty());
        assert_eq!(rules.held.len(), 2, "{:?}", rules.held);
    }

    #[test]
    fn a_path_of_a_file_service_is_added_to_the_files_paths() {
        let mut base = Config::default();
        let mut web = named_web();
        web.routing.paths.push(DistributionPath {
            client: rules::parse::client_prefix("198.18.0.7/32", "t").unwrap(),
            backends: vec!["w1".into()],
        });
        base.services.push(web);
        let mut mirror = Mirror::new(layout(), base);
        let rules = applied(mirror.load(
            2,
            vec![key_put(
                path_key("web", "198.18.0.8/32"),
                r#"{"format":1,"backends":["w2"]}"#,
                2,
            )],
        ));
        assert_eq!(paths_of(&rules.config, "web").len(), 2);
        // The file's own client: refused, not overridden.
        let refused = refusal(mirror.apply(
            3,
            vec![key_put(
                path_key("web", "198.18.0.7/32"),
                r#"{"format":1,"backends":["w2"]}"#,
                3,
            )],
        ));
        assert_eq!(
            refused.problems[0].problems,
            ["the config file gives service \"web\" a path for client 198.18.0.7/32 already"]
        );
    }
}

#[cfg(test)]
mod docs_tests {
    use super::*;

    /// The worked example of docs/operations.md ("What each key holds"):
    /// the etcd keys give the very rules the config file's table gives.
    #[test]
    fn the_worked_example_in_the_docs_is_the_files_table() {
        let doc = include_str!("../../../docs/operations.md");
        let from = doc.find("A worked example").expect("the worked example");
        let example = &doc[from..];
        let toml_start = example.find("```toml\n").unwrap() + "```toml\n".len();
        let toml_len = example[toml_start..].find("```").unwrap();
        let file = rules::load_str(&example[toml_start..toml_start + toml_len], "doc.toml")
            .expect("the file's table");

        let sh_start = example.find("```sh\n").unwrap();
        let sh_len = example[sh_start..].find("\n```\n").unwrap();
        let layout = KeyLayout::new("/flowgate/prod").unwrap();
        let mut changes = Vec::new();
        for put in example[sh_start..sh_start + sh_len]
            .split("etcdctl put $P/")
            .skip(1)
        {
            let (key, rest) = put.split_once(' ').unwrap();
            let value = rest.trim().trim_matches('\'');
            changes.push(Change {
                key: format!("{}{key}", layout.rules()).into_bytes(),
                value: Some(Stored {
                    value: value.as_bytes().to_vec(),
                    mod_revision: 2,
                }),
            });
        }
        assert_eq!(changes.len(), 3);
        let mut mirror = Mirror::new(layout, Config::default());
        let Outcome::Applied(rules) = mirror.load(2, changes) else {
            panic!("refused: {:?}", mirror.held())
        };
        assert!(rules.held.is_empty(), "{:?}", rules.held);
        assert_eq!(rules.config.services, file.services);
        assert_eq!(rules.config.routing.classes, file.routing.classes);
    }
}
