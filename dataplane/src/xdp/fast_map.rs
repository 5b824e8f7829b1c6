//! The fast path's cache as the workers see it: the program's
//! `fast_flows` array (BPF_F_MMAPABLE) mapped into the process, so that
//! installing and removing a connection is a few stores, with no system
//! call. The one `unsafe` of the fast path is here, behind
//! [`EntryMemory::words`].

use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use aya::maps::MapData;
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

use super::XdpError;
use crate::fastpath::layout::ENTRY_SIZE;
use crate::fastpath::EntryMemory;

/// The `fast_flows` map of one program instance, mapped read-write and
/// shared with the kernel.
pub struct MappedEntries {
    base: NonNull<AtomicU64>,
    words: usize,
    mapped_len: NonZeroUsize,
    /// Whether the program instance using this cache forwards from it now
    /// (`fast_config.partitions` not 0): the workers write entries only
    /// then.
    forwarding: AtomicBool,
    /// Keeps the map (and so the memory) alive as long as the mapping.
    _map: MapData,
}

// SAFETY: the mapping is plain shared memory that lives until `drop`; every
// access goes through `words()`, i.e. through atomics, so sharing and
// sending it between threads cannot make a data race.
unsafe impl Send for MappedEntries {}
// SAFETY: as above: `&MappedEntries` only ever yields `&[AtomicU64]`.
unsafe impl Sync for MappedEntries {}

impl std::fmt::Debug for MappedEntries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedEntries")
            .field("entries", &(self.words * 8 / ENTRY_SIZE))
            .finish_non_exhaustive()
    }
}

impl MappedEntries {
    /// Maps `map`, an array of `entries` entries made with BPF_F_MMAPABLE.
    pub(crate) fn map(map: MapData, entries: usize) -> Result<MappedEntries, XdpError> {
        let bytes = entries
            .checked_mul(ENTRY_SIZE)
            .and_then(NonZeroUsize::new)
            .ok_or_else(|| XdpError::Other(format!("a cache of {entries} entries")))?;
        // SAFETY: a fresh shared mapping of the map's fd at offset 0, of no
        // more than its `entries * ENTRY_SIZE` bytes (the kernel refuses a
        // longer one); it aliases no Rust object, and the kernel keeps the
        // memory alive while it is mapped.
        let ptr = unsafe {
            mmap(
                None,
                bytes,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                map.fd().as_fd(),
                0,
            )
        }
        .map_err(|e| XdpError::Other(format!("mapping the fast path's cache: {e}")))?;
        Ok(MappedEntries {
            base: ptr.cast(),
            words: bytes.get() / 8,
            mapped_len: bytes,
            forwarding: AtomicBool::new(false),
            _map: map,
        })
    }

    /// Notes whether the program instance forwards from this cache now
    /// (its loader calls this whenever it sets `fast_config`).
    pub(crate) fn set_forwarding(&self, on: bool) {
        self.forwarding.store(on, Ordering::Relaxed);
    }
}

impl EntryMemory for MappedEntries {
    fn takes_entries(&self) -> bool {
        self.forwarding.load(Ordering::Relaxed)
    }

    fn words(&self) -> &[AtomicU64] {
        // SAFETY: `base` is the start of a live, page-aligned mapping of
        // `words * 8` bytes (unmapped only in `drop`, which needs `&mut
        // self`); AtomicU64 has u64's size and needs 8-byte alignment,
        // which a page gives; atomics make the kernel's concurrent writes
        // to the same memory well defined.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), self.words) }
    }
}

impl Drop for MappedEntries {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, of that length; no reference
        // from `words()` outlives `&self`, so none is left.
        if let Err(e) = unsafe { munmap(self.base.cast(), self.mapped_len.get()) } {
            tracing::warn!(error = %e, "unmapping the fast path's cache");
        }
    }
}
