//! A BPF hash map used as a set of keys, mirrored in userspace.

use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;

use aya::maps::{HashMap as BpfHashMap, MapData, MapError};
use aya::Pod;
use nix::libc::ENOENT;

use super::XdpError;

/// The program's view of a set: a hash map whose keys are the members
/// (values unused), with what it holds mirrored here so updates touch only
/// what changed.
pub(crate) struct KeySet<K, B: Pod> {
    map: BpfHashMap<MapData, B, u8>,
    held: HashSet<K>,
    name: &'static str,
    encode: fn(&K) -> B,
}

impl<K, B> KeySet<K, B>
where
    K: Copy + Eq + Hash + Debug,
    B: Pod,
{
    /// An empty set over `map` (a fresh map, so empty too), whose keys are
    /// `encode`d for the program.
    pub(crate) fn new(
        map: BpfHashMap<MapData, B, u8>,
        name: &'static str,
        encode: fn(&K) -> B,
    ) -> Self {
        KeySet {
            map,
            held: HashSet::new(),
            name,
            encode,
        }
    }

    /// What the map holds.
    pub(crate) fn held(&self) -> &HashSet<K> {
        &self.held
    }

    /// Inserts every member of `wanted` the map lacks.
    pub(crate) fn add_missing(&mut self, wanted: &HashSet<K>) -> Result<(), XdpError> {
        let missing: Vec<K> = wanted.difference(&self.held).copied().collect();
        for key in missing {
            self.map
                .insert((self.encode)(&key), 1u8, 0)
                .map_err(|e| map_error(&format!("adding {key:?} to map {}", self.name), e))?;
            self.held.insert(key);
        }
        Ok(())
    }

    /// Removes every member not in `wanted`.
    pub(crate) fn remove_unwanted(&mut self, wanted: &HashSet<K>) -> Result<(), XdpError> {
        let unwanted: Vec<K> = self.held.difference(wanted).copied().collect();
        for key in unwanted {
            match self.map.remove(&(self.encode)(&key)) {
                Ok(()) => {}
                // Already gone: what was wanted.
                Err(MapError::SyscallError(ref s)) if s.io_error.raw_os_error() == Some(ENOENT) => {
                }
                Err(e) => {
                    return Err(map_error(
                        &format!("removing {key:?} from map {}", self.name),
                        e,
                    ))
                }
            }
            self.held.remove(&key);
        }
        Ok(())
    }
}

/// Classifies a map operation's error, the operation being `what`.
pub(crate) fn map_error(what: &str, error: MapError) -> XdpError {
    match &error {
        MapError::SyscallError(s) => XdpError::from_io(what, &s.io_error),
        MapError::IoError(io) => XdpError::from_io(what, io),
        other => XdpError::Other(format!("{what}: {other}")),
    }
}
