//! The kernel fast path's userspace half: the connection cache the
//! workers keep for flowgate's XDP program, which forwards the packets of
//! established connections without waking a worker.
//!
//! - [`layout`]: the entry, key and configuration layouts and the two
//!   hashes, mirrored from dataplane/bpf/flowgate_fastpath.h.
//! - [`FastPath`]: one worker's writer. Each worker writes only its own
//!   partition of each interface's cache (memory-mapped, so installing or
//!   removing a connection is a few stores, no system call), publishes
//!   entries under a sequence word, and reads back the last-seen time and
//!   counters the program keeps.
//! - [`connection_rewrites`]: a connection's two entries, computed from its
//!   record and the snapshot exactly as the pipeline rewrites its packets;
//!   [`synproxy_rewrites`] adds a SYN-proxied connection's translation of
//!   its sequence numbers and timestamps.
//!
//! The connection table ([`crate::flow::FlowTable`]) owns the worker's
//! `FastPath` so that no connection ever leaves the table without leaving
//! the cache: removal, close, expiry, eviction and replacement all go
//! through it, and expiry reads the program's last-seen time first. The
//! worker installs what became ready after each poll
//! ([`crate::flow::FlowTable::sync_fast_path`]) and checks the installed
//! entries against each new snapshot (removed backends, changed MACs).
//! docs/architecture.md has the whole design.

mod cache;
pub mod layout;
mod rewrite;

pub use cache::{
    read_entry, CacheGeometry, EntryMemory, FastPath, FastPathStats, HeapEntries,
    DEFAULT_MAX_SLOTS, MAX_SLOTS, PENDING,
};
pub use layout::{
    owner, owner_seed, Direction, DirectionRewrite, FastConfig, FastKey, SeqTranslation,
};
pub use rewrite::{connection_rewrites, synproxy_rewrites};
