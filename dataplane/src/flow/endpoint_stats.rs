//! Per-backend accounting of one worker's connections.
//!
//! For each endpoint id: the packets and bytes of its connections (both
//! directions, counted by the pipeline when it forwards them), the
//! connections opened to it, and the connections live now. The table keeps
//! the live count itself, on insert, backend change and every way a record
//! leaves, so it is exact at every moment and never negative.
//!
//! The worker is the only writer. A value is an `AtomicU64` written with a
//! plain load and store (no locked instruction: the same code as `+= n`), so
//! a scraper on another thread can read it at any time through
//! [`FlowCounters`] and the hot path pays nothing for that.
//!
//! The slots are indexed by endpoint id and sized for the snapshot's
//! highest id; [`EndpointAccounts::reserve`] grows them (off the per-packet
//! path) by copying every value into a larger array and publishing it to
//! the scrapers, so nothing counted is lost. They never shrink: ids are
//! dense and reused.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::admission::WorkerConnections;

/// Adds `n` to a single-writer value.
#[inline(always)]
fn add(v: &AtomicU64, n: u64) {
    v.store(v.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Takes 1 from a single-writer gauge, never below 0.
#[inline(always)]
fn take_one(v: &AtomicU64) {
    let now = v.load(Relaxed);
    debug_assert!(now > 0, "active connection count would go negative");
    v.store(now.saturating_sub(1), Relaxed);
}

/// One endpoint's counters on one worker. Two share a cache line.
#[derive(Debug, Default)]
#[repr(align(32))]
pub struct EndpointStats {
    packets: AtomicU64,
    bytes: AtomicU64,
    new_flows: AtomicU64,
    active_flows: AtomicU64,
}

impl EndpointStats {
    /// A plain copy of the values.
    pub fn values(&self) -> EndpointValues {
        EndpointValues {
            packets: self.packets.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            new_flows: self.new_flows.load(Relaxed),
            active_flows: self.active_flows.load(Relaxed),
        }
    }

    /// A slot holding `v` (when an array grows).
    fn with(v: EndpointValues) -> EndpointStats {
        EndpointStats {
            packets: AtomicU64::new(v.packets),
            bytes: AtomicU64::new(v.bytes),
            new_flows: AtomicU64::new(v.new_flows),
            active_flows: AtomicU64::new(v.active_flows),
        }
    }
}

/// One endpoint's counters at one moment; summable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct EndpointValues {
    /// Packets forwarded on the endpoint's connections, both directions.
    pub packets: u64,
    /// Bytes of those packets (whole frames).
    pub bytes: u64,
    /// Connections opened to the endpoint.
    pub new_flows: u64,
    /// Connections to the endpoint in the table now (a gauge).
    pub active_flows: u64,
}

impl std::ops::AddAssign for EndpointValues {
    fn add_assign(&mut self, o: EndpointValues) {
        self.packets = self.packets.wrapping_add(o.packets);
        self.bytes = self.bytes.wrapping_add(o.bytes);
        self.new_flows = self.new_flows.wrapping_add(o.new_flows);
        self.active_flows = self.active_flows.wrapping_add(o.active_flows);
    }
}

/// What a scraper holds of one worker's connection table: its size, its
/// capacity and the per-endpoint counters. Shared (`Arc`) with the table,
/// which is its only writer.
#[derive(Debug)]
pub struct FlowCounters {
    connections: AtomicU64,
    capacity: u64,
    endpoints: ArcSwap<Arc<[EndpointStats]>>,
    fast: FastTraffic,
    /// Records that left the table, by [`Departure`] (its index).
    departures: [AtomicU64; Departure::ALL.len()],
}

/// What the kernel fast path forwarded for one worker's connections, as
/// the worker took it from the cache's entries (also counted in each
/// backend's packets and bytes).
#[derive(Debug, Default)]
struct FastTraffic {
    packets: AtomicU64,
    bytes: AtomicU64,
    /// Entries the worker has in the caches now (two per connection).
    entries: AtomicU64,
}

/// [`FlowCounters::fast_path`]: one worker's share of the kernel fast path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FastPathValues {
    /// Packets the fast path forwarded on the worker's connections.
    pub packets: u64,
    /// Bytes of those packets (whole frames).
    pub bytes: u64,
    /// Entries the worker has in the caches now (a gauge).
    pub entries: u64,
}

/// Why a record left the connection table (other than being closed and
/// removed by the worker): each is a counter an operator can read.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Departure {
    /// Removed by the worker (closed, its backend removed, taken over).
    Removed,
    /// Idle past its state's timeout.
    Expired,
    /// Pushed out to make room: the table was full.
    Evicted,
    /// Pushed out because both index buckets of a new key were full while
    /// the table had room (should stay near zero).
    EvictedBucketFull,
    /// Replaced by a new connection with the same client tuple.
    Replaced,
    /// Lost its reply tuple to a new connection: one client address and
    /// port reaching the same backend address and port through two VIPs,
    /// which the backend sees as one connection.
    ReplyConflict,
    /// A new connection taken back: its key found no room in the index
    /// without evicting an established connection.
    Refused,
}

impl Departure {
    /// Every departure, in counter order.
    pub const ALL: [Departure; 7] = [
        Departure::Removed,
        Departure::Expired,
        Departure::Evicted,
        Departure::EvictedBucketFull,
        Departure::Replaced,
        Departure::ReplyConflict,
        Departure::Refused,
    ];

    /// Its label value in the metrics.
    pub fn label(self) -> &'static str {
        match self {
            Departure::Removed => "removed",
            Departure::Expired => "expired",
            Departure::Evicted => "evicted",
            Departure::EvictedBucketFull => "evicted_bucket_full",
            Departure::Replaced => "replaced",
            Departure::ReplyConflict => "reply_conflict",
            Departure::Refused => "refused",
        }
    }
}

impl FlowCounters {
    fn new(capacity: usize) -> FlowCounters {
        FlowCounters {
            connections: AtomicU64::new(0),
            capacity: capacity as u64,
            endpoints: ArcSwap::from_pointee(Arc::from(Vec::new())),
            fast: FastTraffic::default(),
            departures: Default::default(),
        }
    }

    /// What the kernel fast path forwarded for this worker's connections
    /// (taken from the cache a bounded step per poll, so it trails the
    /// program by at most a round of the worker's walk).
    pub fn fast_path(&self) -> FastPathValues {
        FastPathValues {
            packets: self.fast.packets.load(Relaxed),
            bytes: self.fast.bytes.load(Relaxed),
            entries: self.fast.entries.load(Relaxed),
        }
    }

    /// Records that have left the table for `why` since it was made.
    pub fn departures(&self, why: Departure) -> u64 {
        self.departures[why as usize].load(Relaxed)
    }

    /// Live connections in the table.
    pub fn connections(&self) -> u64 {
        self.connections.load(Relaxed)
    }

    /// Most connections the table holds.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The per-endpoint counters, indexed by endpoint id (the current
    /// array: one past the highest id the worker has been sized for).
    pub fn endpoints(&self) -> Arc<[EndpointStats]> {
        Arc::clone(&self.endpoints.load())
    }

    /// One endpoint's values; zero for an id the worker has no slot for.
    pub fn endpoint(&self, id: u32) -> EndpointValues {
        self.endpoints
            .load()
            .get(id as usize)
            .map_or_else(EndpointValues::default, EndpointStats::values)
    }
}

/// The writer's side, owned by a [`FlowTable`](super::FlowTable): the
/// current slots (no atomic load to reach them) and the shared block.
pub(super) struct EndpointAccounts {
    slots: Arc<[EndpointStats]>,
    shared: Arc<FlowCounters>,
    /// The worker's lanes of the backends' connection counts, which the
    /// connection caps read across workers: counted with the live count,
    /// so every way a connection leaves takes it off.
    lanes: Option<WorkerConnections>,
}

impl EndpointAccounts {
    pub(super) fn new(capacity: usize) -> EndpointAccounts {
        let shared = Arc::new(FlowCounters::new(capacity));
        EndpointAccounts {
            slots: shared.endpoints(),
            shared,
            lanes: None,
        }
    }

    /// Counts live connections on `lanes` from now on too.
    pub(super) fn set_lanes(&mut self, lanes: WorkerConnections) {
        let limit = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        lanes.table().reserve(limit);
        self.lanes = Some(lanes);
    }

    /// Whether live connections are counted on backend lanes.
    pub(super) fn has_lanes(&self) -> bool {
        self.lanes.is_some()
    }

    pub(super) fn shared(&self) -> &Arc<FlowCounters> {
        &self.shared
    }

    /// How many endpoint ids have a slot.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Makes room for ids below `limit`: allocates a larger array (at
    /// least double, so that growing one id at a time stays cheap), copies
    /// every value across and publishes it. Call off the per-packet path.
    pub(super) fn reserve(&mut self, limit: usize) {
        let old = self.slots.len();
        if limit <= old {
            return;
        }
        if let Some(lanes) = &self.lanes {
            lanes
                .table()
                .reserve(u32::try_from(limit).unwrap_or(u32::MAX));
        }
        let len = limit.max(old.saturating_mul(2));
        let grown: Arc<[EndpointStats]> = (0..len)
            .map(|i| {
                self.slots
                    .get(i)
                    .map_or_else(EndpointStats::default, |s| EndpointStats::with(s.values()))
            })
            .collect();
        // The worker writes nothing between the copy and the swap (it is
        // this thread), so a scraper sees the old array or the new one,
        // never counts that went missing.
        self.shared.endpoints.store(Arc::new(Arc::clone(&grown)));
        self.slots = grown;
    }

    /// Publishes the table's size.
    #[inline]
    pub(super) fn set_connections(&self, n: usize) {
        self.shared.connections.store(n as u64, Relaxed);
    }

    /// Counts a record leaving for `why`. The table is the only writer, so
    /// a load and a store, not a locked add.
    pub(super) fn departed(&self, why: Departure) {
        let counter = &self.shared.departures[why as usize];
        counter.store(counter.load(Relaxed).wrapping_add(1), Relaxed);
    }

    /// A connection to `endpoint` was opened. Returns whether it was
    /// counted (the id has a slot); only counted ones are counted out.
    #[inline]
    pub(super) fn opened(&self, endpoint: u32) -> bool {
        match self.slots.get(endpoint as usize) {
            Some(s) => {
                add(&s.new_flows, 1);
                add(&s.active_flows, 1);
                if let Some(lanes) = &self.lanes {
                    lanes.open(endpoint);
                }
                true
            }
            None => false,
        }
    }

    /// A counted connection to `endpoint` left it.
    #[inline]
    pub(super) fn detached(&self, endpoint: u32) {
        // Slots never shrink, so a counted connection's slot exists.
        if let Some(s) = self.slots.get(endpoint as usize) {
            take_one(&s.active_flows);
            if let Some(lanes) = &self.lanes {
                lanes.close(endpoint);
            }
        }
    }

    /// The kernel fast path forwarded `packets` packets of `bytes` bytes
    /// on connections to `endpoint`: counted for the endpoint as the
    /// worker's own, and in the worker's fast-path totals.
    pub(super) fn fast_traffic(&self, endpoint: u32, packets: u64, bytes: u64) {
        if let Some(s) = self.slots.get(endpoint as usize) {
            add(&s.packets, packets);
            add(&s.bytes, bytes);
        }
        add(&self.shared.fast.packets, packets);
        add(&self.shared.fast.bytes, bytes);
    }

    /// Publishes how many entries the worker has in the caches.
    pub(super) fn set_fast_entries(&self, n: u64) {
        self.shared.fast.entries.store(n, Relaxed);
    }

    /// A packet of `bytes` bytes was forwarded on a connection to
    /// `endpoint`.
    #[inline(always)]
    pub(super) fn traffic(&self, endpoint: u32, bytes: u64) {
        if let Some(s) = self.slots.get(endpoint as usize) {
            add(&s.packets, 1);
            add(&s.bytes, bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growing_keeps_every_value_and_publishes_the_new_array() {
        let mut a = EndpointAccounts::new(8);
        assert_eq!(a.len(), 0);
        assert!(!a.opened(0), "no slot yet: not counted");
        a.reserve(2);
        assert!(a.opened(1));
        a.traffic(1, 60);
        a.traffic(1, 40);
        let scraper = Arc::clone(a.shared());
        a.reserve(5);
        assert!(a.len() >= 5);
        assert!(a.opened(4));
        let one = scraper.endpoint(1);
        assert_eq!(
            one,
            EndpointValues {
                packets: 2,
                bytes: 100,
                new_flows: 1,
                active_flows: 1
            }
        );
        assert_eq!(scraper.endpoint(4).new_flows, 1);
        assert_eq!(scraper.endpoints().len(), a.len());
        // Growing by one id at a time doubles, so it rarely reallocates.
        a.reserve(a.len() + 1);
        assert!(a.len() >= 10);
        assert_eq!(scraper.endpoint(1), one);
    }

    #[test]
    fn a_smaller_limit_never_shrinks() {
        let mut a = EndpointAccounts::new(8);
        a.reserve(6);
        a.reserve(1);
        assert_eq!(a.len(), 6);
        assert_eq!(a.shared().endpoints().len(), 6);
    }

    #[test]
    fn ids_without_a_slot_are_ignored() {
        let a = EndpointAccounts::new(8);
        a.traffic(u32::MAX, 1);
        assert!(!a.opened(3));
        a.detached(3);
        assert_eq!(a.shared().endpoint(3), EndpointValues::default());
    }

    #[test]
    fn values_sum() {
        let mut v = EndpointValues {
            packets: 1,
            bytes: 2,
            new_flows: 3,
            active_flows: 4,
        };
        v += v;
        assert_eq!(
            (v.packets, v.bytes, v.new_flows, v.active_flows),
            (2, 4, 6, 8)
        );
    }
}
