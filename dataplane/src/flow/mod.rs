//! Per-worker connection tracking for DNAT.
//!
//! A client sends client → VIP; the gateway rewrites the destination to a
//! backend; the backend replies backend → client and the gateway rewrites
//! the source back to the VIP. One [`Connection`] record serves both
//! directions and is found by either tuple: the client tuple as the client
//! sent it, and the reply tuple (backend → client). Both directions share
//! one state and one idle time, so a backend that is quiet for a while
//! keeps its reply mapping while the client side is alive.
//!
//! # Layout
//!
//! [`FlowTable`] is a slab of records plus a hash index over it, both
//! allocated once in [`FlowTable::new`]; nothing allocates afterwards and
//! every operation does bounded work.
//!
//! - The slab: `capacity` records (the [`Connection`] and one word of
//!   bookkeeping: where its two index keys are, a free-list link, a
//!   handshake bit). Free records form a list threaded through that word.
//! - The index: 64-byte buckets of 8 slots, each slot a 16-bit hash tag
//!   and a record number with a direction bit; two keys per connection,
//!   sized so it is at most half full. A key lives in its primary bucket,
//!   or when that is full in a secondary one (two-choice hashing); a bucket
//!   counts its overflowed keys so lookups read the secondary only when
//!   that count is non-zero. See `index.rs`.
//!
//! The caller hashes tuples with [`crate::hash::table_hash`] and passes the
//! hash in, so nothing is hashed twice.
//!
//! A lookup reads one bucket (one cache line), compares the tags, then
//! confirms against the record (96 bytes: two lines); records keep
//! no copy of the reply tuple, it is compared field by field from the
//! backend address and the client tuple. A miss usually reads one bucket.
//!
//! # Memory per connection
//!
//! A record is 96 bytes (`Connection` is 80, plus 8 of bookkeeping and 8
//! of the checksum changes its two rewrites make, worked out at the insert
//! so that its packets only add them). The index has
//! `next_power_of_two(capacity / 2)` buckets of 64 bytes: 32 bytes per
//! connection at a power-of-two capacity such as the default 1 048 576, up
//! to 64 just above one. So 128 bytes per connection at the default (about
//! 128 MiB per worker), at most 160.
//!
//! # Timeouts
//!
//! Each [`FlowState`] has an idle timeout ([`FlowTimeouts`]); see
//! [`next_state`] for the TCP transitions. Expiry is judged lazily: a
//! lookup that finds an expired connection removes it and misses, and
//! [`FlowTable::expire`] sweeps a bounded number of records per call (the
//! worker calls it between batches), so idle records do not linger.
//!
//! # Eviction
//!
//! When an insert needs room, records give it up in this order: expired,
//! embryonic (a TCP handshake not finished, a datagram flow its backend
//! never answered), idle (below), closing (after FIN or RST), and — only
//! if the table allows it ([`FlowTable::with_established_eviction`],
//! `flows.evict_established`) — established; established connections go
//! only where allowed, idle or not. An insert that finds nothing it may evict is
//! refused (`refused`) and the pipeline drops the packet
//! (`flow_table_full`): a flood never breaks an established connection.
//! - the table is full: the victim is the first record from a clock hand
//!   that is expired, embryonic, or idle — not seen since the hand last
//!   passed it (a closing connection, or an established one where those
//!   may go). This is the clock algorithm: the hand marks every record
//!   it passes, a packet clears the mark, and in a full table the hand
//!   comes back about one turn later, so its order stands for age and the
//!   mark for "used since": an approximate LRU that reads one record in
//!   the common case. The mark is bit 0 of the record's last-seen time
//!   (the table keeps a packet's time to the even nanosecond below), so a
//!   packet pays only that rounding for it. If the next 8 records hold no such
//!   record (on the hand's first turn, or when all of them were used), the
//!   best of them by the order above (least recently seen among equals);
//!   if none of those may go, 24 records at scattered places (the slab
//!   keeps connections set up together next to each other) before the
//!   insert is refused;
//! - both index buckets of a new key are full (rare at half load): first
//!   one key of those buckets moves to its own other bucket if that has
//!   room (one cuckoo step, at most 16 more bucket reads); only if none can
//!   is a record evicted, by the same order, among the records with a key
//!   in those two buckets (or the new connection refused). In a fill of 2^20 connections
//!   at full capacity no record was evicted this way.
//!
//! Evicting a record removes both of its keys. Expired victims count as
//! `expired`, live ones as `evicted` (`evicted_bucket_full` for the second
//! case).
//!
//! # Conflicts
//!
//! An inserted connection owns its tuples: a live record with the same
//! client tuple is replaced (`replaced`), and a live record that already
//! has the new reply tuple — one client address and port reaching the same
//! backend through two VIPs — is removed (`reply_conflicts`), since the
//! backend's replies can be rewritten for one VIP only. The newest wins:
//! it is the one the client is talking to now.

//!
//! # Per-endpoint counters
//!
//! The table counts, per endpoint id, the connections opened and the ones
//! live now (on insert, and whenever a record leaves: removal, expiry, eviction, replacement), and keeps the
//! packets and bytes the pipeline reports with [`FlowTable::count_packet`].
//! They are single-writer counters a scraper reads through
//! [`FlowTable::counters`]; see `endpoint_stats.rs`. A record remembers in
//! a bit of its bookkeeping whether it was counted, so the live counts are
//! exact and never negative even for ids that had no slot yet.

mod connection;
mod endpoint_stats;
mod export;
pub mod handover;
mod index;
pub mod precopy;
mod state;
mod table;
pub mod walk_pace;

pub use connection::{ConnId, Connection, RewriteDeltas};
pub use endpoint_stats::{Departure, EndpointStats, EndpointValues, FastPathValues, FlowCounters};
pub use export::{ExportCursor, FlowFilter, FlowRecord, FlowRecords};
pub use handover::{HandedConnection, HandedState, Origin, StateError, SynProxyOffset};
pub use precopy::{DeltaApplied, Placements};
pub use state::{next_state, Direction, FlowState, FlowTimeouts};
pub use table::{FlowTable, FlowTableStats, Found, LookupHint, MAX_CAPACITY};
