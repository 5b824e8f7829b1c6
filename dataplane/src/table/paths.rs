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

use crate::route::{
    BackendNames, BackendRef, PathEntry, PathErrors, PathReader, PathTable, Prefix,
};
use crate::rules::Config;
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
    /// The refs the loaded config's paths hold, released at the next load.
    held: Vec<BackendRef>,
}

impl PathRouting {
    /// An empty path table of at most `limit` paths, naming backends in
    /// `snapshot`'s register (which every later generation shares).
    pub fn new(limit: usize, snapshot: &Snapshot) -> PathRouting {
        PathRouting {
            table: PathTable::new(limit),
            names: Arc::clone(snapshot.backend_names()),
            held: Vec::new(),
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
            let key = (
                service.protocol.number(),
                addr_to_bytes(service.vip),
                service.port,
            );
            let Some((id, _)) = snapshot.lookup_service(key.0, &key.1, key.2) else {
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
            Ok(()) => (held, std::mem::take(&mut self.held)),
            Err(_) => (std::mem::take(&mut self.held), held),
        };
        for backend in release {
            names.release(backend);
        }
        self.held = keep;
        loaded.map(|()| new_name)
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
