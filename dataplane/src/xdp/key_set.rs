//! A BPF hash map used as a set of keys, mirrored in userspace.

use std::collections::HashSet;
use std::hash::Hash;

use aya::maps::{HashMap as BpfHashMap, IterableMap, MapData, MapError};
use aya::Pod;
use nix::libc::{E2BIG, ENOENT, ENOMEM};

use super::prefilter::AddressFilter;
use super::{TrafficKey, XdpError};
use crate::wire::bytes_to_addr;

/// A set's prefilter in the program, and where a key's address is.
struct Prefilter<K> {
    filter: AddressFilter,
    address: fn(&K) -> [u8; 16],
}

/// How a member is named in messages.
pub(crate) trait Member: Copy + Eq + Hash {
    /// `tcp 198.18.100.10:80`, `198.18.100.10`.
    fn show(&self) -> String;
}

impl Member for TrafficKey {
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Member for [u8; 16] {
    fn show(&self) -> String {
        bytes_to_addr(self).to_string()
    }
}

/// The program's view of a set: a hash map whose keys are the members
/// (values unused), with what it holds mirrored here so updates touch only
/// what changed.
///
/// The mirror changes only when the kernel took the change: a key is added
/// to it after its insert succeeded and removed after its delete did (or
/// found it gone). So whatever failed, `held` is what the map holds.
///
/// A set with a prefilter ([`Self::with_filter`]) keeps it a superset of
/// its keys' addresses: a key's bit is set before the key goes in and
/// counted out after it left.
pub(crate) struct KeySet<K, B: Pod> {
    map: BpfHashMap<MapData, B, u8>,
    held: HashSet<K>,
    name: &'static str,
    encode: fn(&K) -> B,
    decode: fn(&B) -> K,
    /// The program's prefilter for this map.
    filter: Option<Prefilter<K>>,
    /// Tests only: make every delete fail, as a kernel refusing it would.
    #[cfg(test)]
    refuse_removals: bool,
}

impl<K, B> KeySet<K, B>
where
    K: Member,
    B: Pod,
{
    /// An empty set over `map` (a fresh map, so empty too), whose keys are
    /// `encode`d for the program and `decode`d back.
    pub(crate) fn new(
        map: BpfHashMap<MapData, B, u8>,
        name: &'static str,
        encode: fn(&K) -> B,
        decode: fn(&B) -> K,
    ) -> Self {
        KeySet {
            map,
            held: HashSet::new(),
            name,
            encode,
            decode,
            filter: None,
            #[cfg(test)]
            refuse_removals: false,
        }
    }

    /// The same set, keeping the program's prefilter `filter` (fresh,
    /// like the set) over its keys' `address`es.
    pub(crate) fn with_filter(
        mut self,
        filter: AddressFilter,
        address: fn(&K) -> [u8; 16],
    ) -> Self {
        self.filter = Some(Prefilter { filter, address });
        self
    }

    /// What the map holds.
    pub(crate) fn held(&self) -> &HashSet<K> {
        &self.held
    }

    /// How many keys the kernel lets the map hold (its `max_entries`).
    pub(crate) fn capacity(&self) -> Result<u32, XdpError> {
        self.map
            .map()
            .info()
            .map(|info| info.max_entries())
            .map_err(|e| map_error(&format!("reading the size of map {}", self.name), e))
    }

    /// Inserts every member of `wanted` the map lacks, pushing each key
    /// onto `added` once the kernel took it. On failure `added` holds
    /// exactly the keys this call inserted, for [`Self::remove_keys`] to
    /// take back.
    pub(crate) fn add_missing(
        &mut self,
        wanted: &HashSet<K>,
        added: &mut Vec<K>,
    ) -> Result<(), XdpError> {
        self.add_missing_valued(wanted, added, |_| 1)
    }

    /// As [`Self::add_missing`], each key with the value `value` gives it.
    pub(crate) fn add_missing_valued(
        &mut self,
        wanted: &HashSet<K>,
        added: &mut Vec<K>,
        value: impl Fn(&K) -> u8,
    ) -> Result<(), XdpError> {
        let missing: Vec<K> = wanted.difference(&self.held).copied().collect();
        for key in missing {
            if let Some(p) = &mut self.filter {
                p.filter.admit(&(p.address)(&key))?;
            }
            if let Err(e) = self.map.insert((self.encode)(&key), value(&key), 0) {
                if let Some(p) = &mut self.filter {
                    p.filter.release(&(p.address)(&key));
                }
                return Err(map_error(
                    &format!("adding {} to map {}", key.show(), self.name),
                    e,
                ));
            }
            self.held.insert(key);
            added.push(key);
        }
        Ok(())
    }

    /// Sets the value of `key`, if the set holds it (otherwise nothing).
    pub(crate) fn set_value(&mut self, key: &K, value: u8) -> Result<(), XdpError> {
        if !self.held.contains(key) {
            return Ok(());
        }
        self.map
            .insert((self.encode)(key), value, 0)
            .map_err(|e| map_error(&format!("setting {} in map {}", key.show(), self.name), e))
    }

    /// Removes every member not in `wanted`; see [`Self::remove_keys`].
    pub(crate) fn remove_unwanted(&mut self, wanted: &HashSet<K>) -> Result<(), XdpError> {
        let unwanted: Vec<K> = self.held.difference(wanted).copied().collect();
        self.remove_keys(&unwanted)
    }

    /// Removes each of `keys` from the map. A failure does not stop the
    /// others from being tried (each one removed is one fewer left
    /// behind); the first failure is returned, and the keys that failed
    /// stay in [`Self::held`], as in the map.
    pub(crate) fn remove_keys(&mut self, keys: &[K]) -> Result<(), XdpError> {
        let mut first_error = None;
        for key in keys {
            match self.remove(key) {
                Ok(()) => self.forget(key),
                // Already gone: what was wanted.
                Err(MapError::SyscallError(ref s)) if s.io_error.raw_os_error() == Some(ENOENT) => {
                    self.forget(key)
                }
                Err(e) => {
                    first_error.get_or_insert_with(|| {
                        map_error(
                            &format!("removing {} from map {}", key.show(), self.name),
                            e,
                        )
                    });
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Takes `key`, gone from the map, out of the mirror and the filter.
    fn forget(&mut self, key: &K) {
        if self.held.remove(key) {
            if let Some(p) = &mut self.filter {
                p.filter.release(&(p.address)(key));
            }
        }
    }

    fn remove(&mut self, key: &K) -> Result<(), MapError> {
        #[cfg(test)]
        if self.refuse_removals {
            return Err(MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_delete_elem",
                io_error: std::io::Error::from_raw_os_error(nix::libc::EPERM),
            }));
        }
        self.map.remove(&(self.encode)(key))
    }

    /// Tests only: make every delete fail (`EPERM`) or work again.
    #[cfg(test)]
    pub(crate) fn refuse_removals(&mut self, refuse: bool) {
        self.refuse_removals = refuse;
    }

    /// The keys the kernel's map holds, read from the kernel (not the
    /// mirror).
    pub(crate) fn read(&self) -> Result<HashSet<K>, XdpError> {
        read_keys(&self.map, self.name, self.decode)
    }
}

/// The keys of the hash map `map` (called `name`), each `decode`d.
pub(crate) fn read_keys<K, B>(
    map: &BpfHashMap<MapData, B, u8>,
    name: &str,
    decode: fn(&B) -> K,
) -> Result<HashSet<K>, XdpError>
where
    K: Eq + Hash,
    B: Pod,
{
    map.keys()
        .map(|key| {
            key.map(|k| decode(&k))
                .map_err(|e| map_error(&format!("reading map {name}"), e))
        })
        .collect()
}

/// Classifies a map operation's error, the operation being `what`.
pub(crate) fn map_error(what: &str, error: MapError) -> XdpError {
    match &error {
        // What an insert into a hash map that is full says.
        MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(E2BIG) => {
            XdpError::Other(format!("{what}: the map is full (E2BIG)"))
        }
        MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(ENOMEM) => XdpError::Other(
            format!("{what}: the kernel is out of memory for it (ENOMEM)"),
        ),
        MapError::SyscallError(s) => XdpError::from_io(what, &s.io_error),
        MapError::IoError(io) => XdpError::from_io(what, io),
        other => XdpError::Other(format!("{what}: {other}")),
    }
}
