//! Distribution paths beside the snapshot: the path table
//! ([`crate::route::PathTable`]) and the register of backend names its
//! paths use ([`BackendNames`]), shared with every snapshot generation so
//! that a build can resolve each service's named backends to endpoints
//! ([`crate::route::BackendIndex`], per service).
//!
//! The workers read the table through a [`crate::route::PathReader`]
//! (one per worker, loaded once per batch) and a new flow of a service
//! with paths looks its client up before any other policy. A path whose
//! backends are all down, draining or not (or no longer) in the service
//! falls back to the rest of the decision, counted.

use std::sync::{Arc, Mutex, PoisonError};

use hashbrown::HashMap;

use crate::route::{
    BackendNames, BackendRef, PathEdit, PathEntry, PathErrors, PathReader, PathTable, Prefix,
};
use crate::rules::{ClientPrefix, Config, Service};
use crate::wire::addr_to_bytes;

use super::subset::table_prefix;
use super::Snapshot;

/// The register of backend names, shared by every snapshot generation and
/// the path table's owner. Only the control side locks it.
pub type SharedNames = Arc<Mutex<BackendNames>>;

/// The path table and its names, owned by the control side.
#[derive(Debug)]
pub struct PathRouting {
    table: PathTable,
    names: SharedNames,
    /// The refs the table's paths hold (how many times each), released
    /// when their paths go.
    held: HashMap<BackendRef, usize>,
}

impl PathRouting {
    /// An empty path table of at most `limit` paths, naming backends in
    /// `snapshot`'s register (which every later generation shares).
    pub fn new(limit: usize, snapshot: &Snapshot) -> PathRouting {
        PathRouting {
            table: PathTable::new(limit),
            names: Arc::clone(snapshot.backend_names()),
            held: HashMap::new(),
        }
    }

    /// A reader for a worker.
    pub fn reader(&self) -> PathReader {
        self.table.reader()
    }

    /// The table.
    pub fn table(&self) -> &PathTable {
        &self.table
    }

    /// Replaces every path with `config`'s, keyed by `snapshot`'s service
    /// ids. Returns whether a backend name got its first ref: then
    /// `snapshot` cannot resolve it yet, and the caller builds the next
    /// generation (on this one) before the paths are in full effect.
    pub fn load(&mut self, config: &Config, snapshot: &Snapshot) -> Result<bool, PathErrors> {
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        let mut entries = Vec::new();
        let mut held = Vec::new();
        let mut new_name = false;
        for service in &config.services {
            let Some(id) = service_id(service, snapshot) else {
                continue;
            };
            for path in &service.routing.paths {
                let Some(prefix) = table_prefix(path.client) else {
                    continue;
                };
                let mut backends = Vec::with_capacity(path.backends.len());
                for name in &path.backends {
                    new_name |= names.get(name).is_none();
                    if let Ok(backend) = names.acquire(name) {
                        backends.push(backend);
                        held.push(backend);
                    }
                }
                entries.push(PathEntry {
                    service: id,
                    prefix,
                    backends,
                });
            }
        }
        let loaded = self.table.load(&entries);
        let (keep, release) = match loaded {
            Ok(()) => (counted(held), std::mem::take(&mut self.held)),
            Err(_) => (std::mem::take(&mut self.held), counted(held)),
        };
        for (backend, count) in release {
            for _ in 0..count {
                names.release(backend);
            }
        }
        self.held = keep;
        loaded.map(|()| new_name)
    }

    /// Changes the table from `old`'s paths to `new`'s, path by path: one
    /// published version that rebuilds only the shards the changed paths
    /// hash to, not the whole table. Keyed by `snapshot`'s service ids,
    /// and for rules whose services are `old`'s (only paths changed).
    /// A service whose paths are the very ones `old` has (shared, see
    /// [`crate::rules::Paths`]) is skipped unread; the others are compared
    /// in full. Returns whether a backend name got its first ref (as
    /// [`PathRouting::load`]); refused whole, nothing changed.
    pub fn edit(
        &mut self,
        old: &Config,
        new: &Config,
        snapshot: &Snapshot,
    ) -> Result<bool, PathErrors> {
        let names = Arc::clone(&self.names);
        let mut names = names.lock().unwrap_or_else(PoisonError::into_inner);
        let mut edits = Vec::new();
        let mut acquired = Vec::new();
        let mut new_name = false;
        for service in &new.services {
            let Some(id) = service_id(service, snapshot) else {
                continue;
            };
            let old_service = old.service(&service.name);
            if old_service.is_some_and(|s| s.routing.paths.ptr_eq(&service.routing.paths)) {
                continue;
            }
            let before: HashMap<_, _> = old_service
                .map(|s| {
                    s.routing
                        .paths
                        .iter()
                        .map(|p| (p.client, &p.backends))
                        .collect()
                })
                .unwrap_or_default();
            let mut kept = 0;
            for path in &service.routing.paths {
                if let Some(backends) = before.get(&path.client) {
                    kept += 1;
                    if **backends == path.backends {
                        continue;
                    }
                }
                let Some(prefix) = table_prefix(path.client) else {
                    continue;
                };
                let backends = acquire(&mut names, &path.backends, &mut acquired, &mut new_name);
                edits.push(PathEdit::Put {
                    service: id,
                    prefix,
                    backends,
                });
            }
            if kept < before.len() {
                let now: HashMap<_, _> = service
                    .routing
                    .paths
                    .iter()
                    .map(|p| (p.client, ()))
                    .collect();
                edits.extend(
                    before
                        .keys()
                        .filter(|client| !now.contains_key(*client))
                        .filter_map(|client| table_prefix(*client))
                        .map(|prefix| PathEdit::Remove {
                            service: id,
                            prefix,
                        }),
                );
            }
        }
        self.commit(&mut names, &edits, acquired)?;
        Ok(new_name)
    }

    /// Makes each path of `updates` what it says, in rules `config` (whose
    /// other paths the table holds already): what the control API's path
    /// verbs do, in time proportional to the paths they touch. Keyed by
    /// `snapshot`'s service ids; a path of a service that does not run
    /// there is skipped, as by [`PathRouting::load`]. Returns whether a
    /// backend name got its first ref (as [`PathRouting::load`]); refused
    /// whole, nothing changed.
    pub fn update(
        &mut self,
        config: &Config,
        updates: &[PathUpdate],
        snapshot: &Snapshot,
    ) -> Result<bool, PathErrors> {
        let names = Arc::clone(&self.names);
        let mut names = names.lock().unwrap_or_else(PoisonError::into_inner);
        let mut edits = Vec::with_capacity(updates.len());
        let mut acquired = Vec::new();
        let mut new_name = false;
        for update in updates {
            let Some(id) = config
                .services
                .get(update.service)
                .and_then(|s| service_id(s, snapshot))
            else {
                continue;
            };
            let Some(prefix) = table_prefix(update.client) else {
                continue;
            };
            edits.push(match &update.backends {
                Some(backends) => PathEdit::Put {
                    service: id,
                    prefix,
                    backends: acquire(&mut names, backends, &mut acquired, &mut new_name),
                },
                None => PathEdit::Remove {
                    service: id,
                    prefix,
                },
            });
        }
        self.commit(&mut names, &edits, acquired)?;
        Ok(new_name)
    }

    /// Applies `edits`, whose new refs are `acquired`, as one version, and
    /// releases the refs of the paths they replaced or removed; on a
    /// refusal releases `acquired` instead.
    fn commit(
        &mut self,
        names: &mut BackendNames,
        edits: &[PathEdit],
        acquired: Vec<BackendRef>,
    ) -> Result<(), PathErrors> {
        // The refs of the paths replaced or removed, read before the edit.
        let view = self.table.view();
        let released: Vec<BackendRef> = edits
            .iter()
            .filter_map(|edit| match edit {
                PathEdit::Put {
                    service, prefix, ..
                }
                | PathEdit::Remove { service, prefix } => view.get(*service, *prefix),
            })
            .flat_map(|target| target.backends())
            .collect();
        if let Err(e) = self.table.apply(edits) {
            for backend in acquired {
                names.release(backend);
            }
            return Err(e);
        }
        for backend in acquired {
            *self.held.entry(backend).or_default() += 1;
        }
        for backend in released {
            if let Some(count) = self.held.get_mut(&backend) {
                *count -= 1;
                if *count == 0 {
                    self.held.remove(&backend);
                }
                names.release(backend);
            }
        }
        Ok(())
    }

    /// The path of `service` at exactly `prefix`, as names.
    pub fn get(&self, service: u32, prefix: Prefix) -> Option<Vec<String>> {
        let names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        let target = self.table.view().get(service, prefix)?;
        Some(
            target
                .backends()
                .into_iter()
                .map(|r| names.name(r).unwrap_or("?").to_owned())
                .collect(),
        )
    }
}

/// A change to one path, as a control API edit leaves it: see
/// [`PathRouting::update`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathUpdate {
    /// The service's position in the rules the change makes.
    pub service: usize,
    /// The path's clients.
    pub client: ClientPrefix,
    /// Its backends by name; `None`: the path is removed.
    pub backends: Option<Vec<String>>,
}

/// Refs for the backends called `names_of`, each one acquired (and noted
/// in `acquired`); `new_name` set if one had no ref before.
fn acquire(
    names: &mut BackendNames,
    names_of: &[String],
    acquired: &mut Vec<BackendRef>,
    new_name: &mut bool,
) -> Vec<BackendRef> {
    let mut backends = Vec::with_capacity(names_of.len());
    for name in names_of {
        *new_name |= names.get(name).is_none();
        if let Ok(backend) = names.acquire(name) {
            backends.push(backend);
            acquired.push(backend);
        }
    }
    backends
}

/// `service`'s id in `snapshot`, if it runs there.
fn service_id(service: &Service, snapshot: &Snapshot) -> Option<u32> {
    let vip = addr_to_bytes(service.vip);
    snapshot
        .lookup_service(service.protocol.number(), &vip, service.port)
        .map(|(id, _)| id)
}

/// Refs as counts.
fn counted(refs: Vec<BackendRef>) -> HashMap<BackendRef, usize> {
    let mut counts = HashMap::new();
    for backend in refs {
        *counts.entry(backend).or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::ClientAddr;
    use crate::rules::load_str;

    fn rules(paths: &[(&str, &str)]) -> Config {
        let mut text = String::from(
            "[[services]]\nname = \"web\"\nprotocol = \"tcp\"\nvip = \"198.18.100.10\"\nport = 80\n",
        );
        for (client, backend) in paths {
            text +=
                &format!("[[services.paths]]\nclient = \"{client}\"\nbackends = [\"{backend}\"]\n");
        }
        for (host, name) in [(11, "web-1"), (12, "web-2")] {
            text += &format!(
                "[[services.backends]]\naddress = \"198.18.1.{host}\"\nport = 8080\nname = \"{name}\"\n"
            );
        }
        load_str(&text, "t.toml").unwrap()
    }

    #[test]
    fn an_edit_changes_only_the_changed_paths_and_releases_the_names_they_held() {
        let first = rules(&[("198.18.60.5", "web-1"), ("198.18.61.0/24", "web-1")]);
        let snapshot = Snapshot::build(&first, None);
        let mut paths = PathRouting::new(1 << 10, &snapshot);
        assert!(paths.load(&first, &snapshot).unwrap());
        let mut reader = paths.reader();
        let client =
            |a: &str| ClientAddr::from_bytes(&crate::wire::addr_to_bytes(a.parse().unwrap()));
        let names = Arc::clone(snapshot.backend_names());
        let known = |name: &str| names.lock().unwrap().get(name).is_some();

        // One path moves to web-2 (a new name), one stays, one is added.
        let next = rules(&[
            ("198.18.60.5", "web-2"),
            ("198.18.61.0/24", "web-1"),
            ("198.18.62.1", "web-1"),
        ]);
        let version = paths.table().view().generation();
        assert!(
            paths.edit(&first, &next, &snapshot).unwrap(),
            "web-2 is new"
        );
        assert_eq!(
            paths.table().view().generation(),
            version + 1,
            "one version"
        );
        assert_eq!(paths.table().len(), 3);
        assert!(reader.load().lookup(0, client("198.18.62.1")).is_some());
        let at = |p: &str| paths.get(0, p.parse().unwrap());
        assert_eq!(at("198.18.60.5/32"), Some(vec!["web-2".to_owned()]));
        assert_eq!(at("198.18.61.0/24"), Some(vec!["web-1".to_owned()]));

        // Every path to web-1 gone: its name is released.
        let last = rules(&[("198.18.60.5", "web-2")]);
        assert!(!paths.edit(&next, &last, &snapshot).unwrap());
        assert_eq!(paths.table().len(), 1);
        assert!(!known("web-1") && known("web-2"));
        assert!(reader.load().lookup(0, client("198.18.61.9")).is_none());
        // And a load of no paths releases the rest.
        assert!(!paths.load(&rules(&[]), &snapshot).unwrap());
        assert!(!known("web-2"));
    }
}
