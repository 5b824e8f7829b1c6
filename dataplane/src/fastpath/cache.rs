//! One worker's writer of the connection cache: it places the two entries
//! of a connection in the worker's own partition, publishes them with the
//! sequence word, frees them, and reads back what the program wrote (the
//! last-seen time and counters).
//!
//! The cache's memory is shared with the XDP program (a memory-mapped BPF
//! array in the daemon, [`HeapEntries`] where there is no kernel) and seen
//! here as 64-bit atomics, because the program writes the counters of the
//! same entries. Nothing here allocates after [`FastPath::new`], takes a
//! lock or makes a system call.

use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;

use super::layout::{
    offset, owner, DirectionRewrite, ENTRY_WORDS, PROBES, STATE_FREED, STATE_LIVE, WRITTEN_END,
};

/// Memory holding a cache's entries, shared with whatever reads them.
pub trait EntryMemory: Send + Sync {
    /// The entries, [`ENTRY_WORDS`] words each, back to back.
    fn words(&self) -> &[AtomicU64];

    /// Whether whatever reads the entries looks them up now: the workers
    /// write entries into a cache only while it does (a program instance
    /// with its fast path off would never read them). Always, by default.
    fn takes_entries(&self) -> bool {
        true
    }
}

/// A cache's entries on the heap: for tests, benches and fuzzing, where
/// no program reads them.
#[derive(Debug)]
pub struct HeapEntries(Box<[AtomicU64]>);

impl HeapEntries {
    /// Zeroed memory for `entries` entries.
    pub fn new(entries: usize) -> HeapEntries {
        HeapEntries(
            (0..entries * ENTRY_WORDS)
                .map(|_| AtomicU64::new(0))
                .collect(),
        )
    }
}

impl EntryMemory for HeapEntries {
    fn words(&self) -> &[AtomicU64] {
        &self.0
    }
}

/// How a cache is cut: partitions (one per worker) of a power-of-two
/// number of slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheGeometry {
    /// Partitions, one per worker (at least 1).
    pub partitions: u32,
    /// Slots per partition (a power of two, at least [`PROBES`]).
    pub slots: u32,
}

/// Most slots per partition: 2^22 entries of 128 bytes, 512 MiB.
pub const MAX_SLOTS: u32 = 1 << 22;

/// Most slots per partition the daemon gives a cache: 2^18 entries, 32 MiB.
pub const DEFAULT_MAX_SLOTS: u32 = 1 << 18;

impl CacheGeometry {
    /// `partitions` partitions of at least `slots` slots (rounded up to a
    /// power of two, between [`PROBES`] and [`MAX_SLOTS`]).
    pub fn new(partitions: u32, slots: u32) -> CacheGeometry {
        CacheGeometry {
            partitions: partitions.max(1),
            slots: slots.clamp(PROBES, MAX_SLOTS).next_power_of_two(),
        }
    }

    /// The daemon's geometry for `partitions` workers each tracking up to
    /// `connections` connections: twice as many slots per partition as
    /// connections (an interface's cache holds one entry per connection
    /// when clients and backends are on different interfaces, two when on
    /// one), at most [`DEFAULT_MAX_SLOTS`] — 32 MiB per worker and
    /// interface. Connections past what fits stay with their worker.
    pub fn for_connections(partitions: u32, connections: usize) -> CacheGeometry {
        let slots = u32::try_from(connections.saturating_mul(2)).unwrap_or(DEFAULT_MAX_SLOTS);
        CacheGeometry::new(partitions, slots.min(DEFAULT_MAX_SLOTS))
    }

    /// Entries in all.
    pub fn entries(&self) -> usize {
        self.partitions as usize * self.slots as usize
    }

    /// Bytes of memory the cache takes.
    pub fn bytes(&self) -> usize {
        self.entries() * ENTRY_WORDS * 8
    }
}

/// Where one entry is: the cache of which port, and which slot of the
/// worker's partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    port: u16,
    index: u32,
}

/// What a worker's fast path did, for metrics. Single writer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FastPathStats {
    /// Connections whose entries were written (new or changed).
    pub installed: u64,
    /// Connections whose entries were taken out.
    pub removed: u64,
    /// Connections that stayed with the worker: no free slot within
    /// [`PROBES`] of their home.
    pub full: u64,
    /// Connections that stayed with the worker: the program would look for
    /// them in another worker's partition, or on a port with no cache.
    pub unplaceable: u64,
    /// Connections ready for the cache that the pending queue could not
    /// take (they are offered again on their next packet here).
    pub pending_dropped: u64,
    /// Directions not written because the program instance of their
    /// ingress port has its fast path off (their packets all go to the
    /// worker, which offers the connection again then).
    pub instance_off: u64,
    /// Entries live now (two per connection).
    pub live_entries: u64,
}

/// Most connections waiting to be installed between two syncs.
pub const PENDING: usize = 4096;

const NO_RECORD: u32 = u32::MAX;

/// Words 1.. of an entry that the workers write: the key and the rewrite.
const FIELD_WORDS: usize = (WRITTEN_END - offset::KEY) / 8;

/// A worker's writer of the cache of every port (see the module doc).
pub struct FastPath {
    geometry: CacheGeometry,
    me: u32,
    caches: Vec<Option<Arc<dyn EntryMemory>>>,
    /// Per port, per slot of this worker's partition: the connection
    /// record whose entry it holds, or `NO_RECORD`.
    owners: Vec<Vec<u32>>,
    /// Per connection record: where its two entries are.
    placed: Vec<[Option<Slot>; 2]>,
    /// Per connection record: the program's packets and bytes not yet
    /// reported are the counters of its live entries plus this (wrapping:
    /// the counts of its freed entries minus what was reported).
    unreported: Vec<[u64; 2]>,
    /// Where the next [`traffic_walk`](Self::traffic_walk) starts.
    walk_cursor: usize,
    pending: Vec<u32>,
    /// CLOCK_MONOTONIC (the program's clock) at the worker's time 0.
    kernel_epoch_ns: u64,
    stats: FastPathStats,
    /// The snapshot generation the entries were last checked against, and
    /// how far that check has got through the records.
    checked: Option<u64>,
    check_cursor: usize,
}

impl std::fmt::Debug for FastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPath")
            .field("geometry", &self.geometry)
            .field("me", &self.me)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl FastPath {
    /// The writer of partition `me` of `caches` (index: port; `None` for a
    /// port without one), for a connection table of `records` records.
    /// The program's clock read `kernel_epoch_ns` at the worker's time 0.
    /// Allocates everything it will use.
    pub fn new(
        geometry: CacheGeometry,
        me: u32,
        caches: Vec<Option<Arc<dyn EntryMemory>>>,
        records: usize,
        kernel_epoch_ns: u64,
    ) -> FastPath {
        let owners = caches
            .iter()
            .map(|c| match c {
                Some(_) => vec![NO_RECORD; geometry.slots as usize],
                None => Vec::new(),
            })
            .collect();
        FastPath {
            geometry,
            me,
            caches,
            owners,
            placed: vec![[None, None]; records],
            unreported: vec![[0, 0]; records],
            walk_cursor: 0,
            pending: Vec::with_capacity(PENDING),
            kernel_epoch_ns,
            stats: FastPathStats::default(),
            checked: None,
            check_cursor: 0,
        }
    }

    /// The cache's geometry.
    pub fn geometry(&self) -> CacheGeometry {
        self.geometry
    }

    /// What it did so far.
    pub fn stats(&self) -> FastPathStats {
        self.stats
    }

    /// Whether connection `record` has entries.
    pub fn is_installed(&self, record: u32) -> bool {
        self.placed
            .get(record as usize)
            .is_some_and(|p| p.iter().any(Option::is_some))
    }

    /// Writes connection `record`'s two entries (client → VIP first, then
    /// backend → client). Entries already in place for the same tuples are
    /// updated where they are, keeping their counters. If either cannot be
    /// placed, the connection gets none and stays with the worker. A
    /// direction whose ingress port's program instance has its fast path
    /// off is not written (nor kept); false if that leaves none.
    pub fn install(&mut self, record: u32, rewrites: &[DirectionRewrite; 2]) -> bool {
        let Some(placed) = self.placed.get(record as usize).copied() else {
            return false;
        };
        let mut changed = false;
        let mut written = false;
        for (direction, rewrite) in rewrites.iter().enumerate() {
            if self.port_is_off(rewrite.ingress_port) {
                self.free(record, direction);
                self.stats.instance_off += 1;
                continue;
            }
            written = true;
            let fields = rewrite.field_words();
            if let Some(slot) = placed[direction] {
                if self.key_at(slot) == Some(rewrite.key.words())
                    && slot.port == rewrite.ingress_port
                {
                    if self.fields_at(slot) != Some(fields) {
                        self.publish(slot, Some(&fields), STATE_LIVE, false);
                        changed = true;
                    }
                    continue;
                }
                self.free(record, direction);
            }
            let Some(slot) = self.find_slot(rewrite) else {
                self.remove(record);
                return false;
            };
            self.publish(slot, Some(&fields), STATE_LIVE, true);
            self.set_owner(slot, record);
            if let Some(p) = self.placed.get_mut(record as usize) {
                p[direction] = Some(slot);
            }
            self.stats.live_entries += 1;
            changed = true;
        }
        if changed {
            self.stats.installed += 1;
        }
        written
    }

    /// Whether `port` has a cache whose program instance does not look
    /// entries up now (a port without a cache is not: its connections
    /// are unplaceable).
    fn port_is_off(&self, port: u16) -> bool {
        self.caches
            .get(usize::from(port))
            .and_then(Option::as_ref)
            .is_some_and(|c| !c.takes_entries())
    }

    /// Takes connection `record`'s entries out (nothing if it has none).
    /// From the moment this returns, the program hands its packets to the
    /// worker.
    pub fn remove(&mut self, record: u32) {
        if !self.is_installed(record) {
            return;
        }
        self.free(record, 0);
        self.free(record, 1);
        self.stats.removed += 1;
    }

    /// When the program last forwarded a packet of connection `record`,
    /// in the worker's time; `None` if it never did.
    pub fn last_seen(&self, record: u32) -> Option<u64> {
        let placed = self.placed.get(record as usize)?;
        let seen = placed
            .iter()
            .flatten()
            .filter_map(|&slot| self.word_at(slot, offset::LAST_SEEN_NS))
            .max()
            .unwrap_or(0);
        (seen != 0).then(|| seen.saturating_sub(self.kernel_epoch_ns))
    }

    /// Whether the program forwarded a packet of connection `record`'s
    /// reply direction (backend → client): its backend has answered.
    pub fn reply_forwarded(&self, record: u32) -> bool {
        self.placed
            .get(record as usize)
            .and_then(|placed| placed[1])
            .and_then(|slot| self.word_at(slot, offset::PACKETS))
            .is_some_and(|packets| packets > 0)
    }

    /// Packets and bytes the program forwarded for connection `record`
    /// since its entries were placed.
    pub fn traffic(&self, record: u32) -> (u64, u64) {
        let Some(placed) = self.placed.get(record as usize) else {
            return (0, 0);
        };
        placed.iter().flatten().fold((0, 0), |(p, b), &slot| {
            (
                p + self.word_at(slot, offset::PACKETS).unwrap_or(0),
                b + self.word_at(slot, offset::BYTES).unwrap_or(0),
            )
        })
    }

    /// Packets and bytes the program forwarded for connection `record`
    /// that were not yet taken: its live entries' counts since the last
    /// call, and the last counts of entries freed since. Each packet is
    /// taken once, so the worker can add them to its per-backend counters.
    pub fn take_traffic(&mut self, record: u32) -> (u64, u64) {
        let Some(placed) = self.placed.get(record as usize).copied() else {
            return (0, 0);
        };
        let live = placed.iter().flatten().fold([0u64; 2], |[p, b], &slot| {
            [
                p.wrapping_add(self.word_at(slot, offset::PACKETS).unwrap_or(0)),
                b.wrapping_add(self.word_at(slot, offset::BYTES).unwrap_or(0)),
            ]
        });
        let any_live = placed.iter().any(Option::is_some);
        let Some(base) = self.unreported.get_mut(record as usize) else {
            return (0, 0);
        };
        let mut taken = [0u64; 2];
        for ((taken, base), live) in taken.iter_mut().zip(base.iter_mut()).zip(live) {
            let since = live.wrapping_add(*base);
            // The program adds to an entry's counters without a lock (a
            // locked add cost more than the rest of the entry's update),
            // so two CPUs forwarding one connection at once can lose an
            // add, and a count read between goes back. A count that went
            // back is no traffic: the base stays, so that only what passes
            // the highest count taken is taken later. With no entry left,
            // nothing more comes.
            if (since as i64) < 0 {
                if !any_live {
                    *base = 0;
                }
                continue;
            }
            *taken = since;
            *base = 0u64.wrapping_sub(live);
        }
        (taken[0], taken[1])
    }

    /// The records whose traffic the next bounded step of a round-robin
    /// walk should take ([`take_traffic`](Self::take_traffic)): up to
    /// `budget` records from where the last step stopped, wrapping round.
    pub fn traffic_walk(&mut self, budget: usize) -> std::ops::Range<usize> {
        let len = self.placed.len();
        if self.walk_cursor >= len {
            self.walk_cursor = 0;
        }
        let start = self.walk_cursor;
        let end = start.saturating_add(budget).min(len);
        self.walk_cursor = end;
        start..end
    }

    /// Whether connection `record` may have traffic to take: it has
    /// entries, or had some whose last counts were not taken.
    #[inline]
    pub fn has_traffic(&self, record: u32) -> bool {
        self.is_installed(record) || self.unreported.get(record as usize) != Some(&[0, 0])
    }

    /// Notes that connection `record` is ready for the cache; the next
    /// [`take_pending`](Self::take_pending) hands it out once.
    #[inline]
    pub fn offer(&mut self, record: u32) {
        if self.pending.last() == Some(&record) || !self.any_takes_entries() {
            return;
        }
        if self.pending.len() < PENDING {
            self.pending.push(record);
        } else {
            self.stats.pending_dropped += 1;
        }
    }

    /// Whether any cache's program instance looks entries up now (with
    /// none, nothing is worth queueing).
    #[inline]
    fn any_takes_entries(&self) -> bool {
        self.caches.iter().flatten().any(|c| c.takes_entries())
    }

    /// The connections offered since the last call (the vector is handed
    /// back with [`give_back_pending`](Self::give_back_pending), so nothing
    /// allocates).
    pub fn take_pending(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.pending)
    }

    /// Returns the vector [`take_pending`](Self::take_pending) gave out.
    pub fn give_back_pending(&mut self, mut pending: Vec<u32>) {
        pending.clear();
        if self.pending.is_empty() {
            self.pending = pending;
        }
    }

    /// Returns the vector [`take_pending`](Self::take_pending) gave out
    /// after taking only its first `taken` offers: the others stay pending,
    /// before any made since, in their order.
    pub fn give_back_pending_after(&mut self, mut pending: Vec<u32>, taken: usize) {
        pending.drain(..taken.min(pending.len()));
        let since = std::mem::take(&mut self.pending);
        pending.extend_from_slice(&since);
        pending.truncate(PENDING);
        self.pending = pending;
    }

    /// Where the check of the entries against a new snapshot generation
    /// stands: `Some(cursor)` while records from `cursor` on remain to be
    /// checked against `generation`, `None` once all are.
    pub fn check_position(&mut self, generation: u64) -> Option<usize> {
        if self.checked != Some(generation) {
            self.checked = Some(generation);
            self.check_cursor = 0;
        }
        (self.check_cursor < self.placed.len()).then_some(self.check_cursor)
    }

    /// Moves the check's cursor to `cursor`.
    pub fn set_check_cursor(&mut self, cursor: usize) {
        self.check_cursor = cursor;
    }

    /// A slot for `rewrite` in this worker's partition of its port's
    /// cache: the first not live within [`PROBES`] of its home.
    fn find_slot(&mut self, rewrite: &DirectionRewrite) -> Option<Slot> {
        let t = &rewrite.key.0;
        let (client, client_port) = if rewrite.rewrite == super::layout::REWRITE_DST {
            (&t.src, t.src_port)
        } else {
            (&t.dst, t.dst_port)
        };
        let has_cache = self
            .caches
            .get(usize::from(rewrite.ingress_port))
            .is_some_and(Option::is_some);
        // One partition owns every connection: no hash to work out.
        let partitions = self.geometry.partitions;
        let owned_by = if partitions > 1 {
            owner(client, client_port, partitions)
        } else {
            0
        };
        if !has_cache || owned_by != self.me {
            self.stats.unplaceable += 1;
            return None;
        }
        let mask = self.geometry.slots - 1;
        let home = (rewrite.key.hash() >> 32) as u32;
        let owners = self.owners.get(usize::from(rewrite.ingress_port))?;
        for i in 0..PROBES {
            let index = home.wrapping_add(i) & mask;
            if owners.get(index as usize) == Some(&NO_RECORD) {
                return Some(Slot {
                    port: rewrite.ingress_port,
                    index,
                });
            }
        }
        self.stats.full += 1;
        None
    }

    fn set_owner(&mut self, slot: Slot, record: u32) {
        if let Some(o) = self
            .owners
            .get_mut(usize::from(slot.port))
            .and_then(|o| o.get_mut(slot.index as usize))
        {
            *o = record;
        }
    }

    /// Frees the entry of `record`'s `direction`, if it has one.
    fn free(&mut self, record: u32, direction: usize) {
        let Some(slot) = self
            .placed
            .get_mut(record as usize)
            .and_then(|p| p.get_mut(direction))
            .and_then(Option::take)
        else {
            return;
        };
        // The entry's last counts stay the record's to take.
        let packets = self.word_at(slot, offset::PACKETS).unwrap_or(0);
        let bytes = self.word_at(slot, offset::BYTES).unwrap_or(0);
        if let Some(base) = self.unreported.get_mut(record as usize) {
            base[0] = base[0].wrapping_add(packets);
            base[1] = base[1].wrapping_add(bytes);
        }
        self.publish(slot, None, STATE_FREED, false);
        self.set_owner(slot, NO_RECORD);
        self.stats.live_entries = self.stats.live_entries.saturating_sub(1);
    }

    /// The words of the entry at `slot`.
    fn entry(&self, slot: Slot) -> Option<&[AtomicU64; ENTRY_WORDS]> {
        let cache = self.caches.get(usize::from(slot.port))?.as_ref()?;
        let index = self.me as usize * self.geometry.slots as usize + slot.index as usize;
        cache
            .words()
            .get(index * ENTRY_WORDS..)?
            .first_chunk::<ENTRY_WORDS>()
    }

    fn word_at(&self, slot: Slot, byte_offset: usize) -> Option<u64> {
        Some(
            self.entry(slot)?
                .get(byte_offset / 8)?
                .load(Ordering::Relaxed),
        )
    }

    fn key_at(&self, slot: Slot) -> Option<[u64; 5]> {
        let e = self.entry(slot)?;
        let mut key = [0u64; 5];
        for (k, w) in key.iter_mut().zip(e.get(1..6)?) {
            *k = w.load(Ordering::Relaxed);
        }
        Some(key)
    }

    fn fields_at(&self, slot: Slot) -> Option<[u64; (WRITTEN_END - offset::KEY) / 8]> {
        let e = self.entry(slot)?;
        let mut fields = [0u64; (WRITTEN_END - offset::KEY) / 8];
        for (f, w) in fields.iter_mut().zip(e.get(1..)?) {
            *f = w.load(Ordering::Relaxed);
        }
        Some(fields)
    }

    /// Writes `fields` (words 1.. of the entry; `None` leaves them) and `state` at `slot`
    /// under the sequence word: odd while the fields change, even again
    /// after, with release ordering, so a reader that saw the same even
    /// value before and after saw one whole version. `fresh` zeroes the
    /// program's counters (a new connection in the slot).
    fn publish(&self, slot: Slot, fields: Option<&[u64; FIELD_WORDS]>, state: u32, fresh: bool) {
        let Some(e) = self.entry(slot) else {
            return;
        };
        // Fixed-size views: every index below is checked at compile time.
        let [head, rest @ ..] = e;
        let (written, counters) = rest.split_at(FIELD_WORDS);
        let (seq, _) = split_head(head.load(Ordering::Relaxed));
        head.store(join_head(seq.wrapping_add(1) | 1, state), Ordering::Relaxed);
        // The odd sequence is visible before any field changes.
        fence(Ordering::Release);
        if let Some(fields) = fields {
            for (w, &value) in written.iter().zip(fields) {
                w.store(value, Ordering::Relaxed);
            }
        }
        if fresh {
            for w in counters {
                w.store(0, Ordering::Relaxed);
            }
        }
        let odd = seq.wrapping_add(1) | 1;
        head.store(join_head(odd.wrapping_add(1), state), Ordering::Release);
    }
}

/// Word 0 of an entry: (`seq`, `state`), as the CPU lays two u32 out.
fn split_head(word: u64) -> (u32, u32) {
    let b = word.to_ne_bytes();
    (
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
    )
}

fn join_head(seq: u32, state: u32) -> u64 {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&seq.to_ne_bytes());
    b[4..].copy_from_slice(&state.to_ne_bytes());
    u64::from_ne_bytes(b)
}

/// Reads one entry the way the program does (sequence, fields, sequence):
/// `Some((state, bytes 8..WRITTEN_END))` for a stable version. For tests
/// and diagnostics.
pub fn read_entry(memory: &dyn EntryMemory, index: usize) -> Option<(u32, Vec<u8>)> {
    let e = memory
        .words()
        .get(index * ENTRY_WORDS..(index + 1) * ENTRY_WORDS)?;
    let before = e.first()?.load(Ordering::Acquire);
    let bytes = e
        .get(1..WRITTEN_END / 8)?
        .iter()
        .flat_map(|w| w.load(Ordering::Relaxed).to_ne_bytes())
        .collect();
    fence(Ordering::Acquire);
    let after = e.first()?.load(Ordering::Relaxed);
    let (seq, state) = split_head(before);
    (before == after && seq % 2 == 0).then_some((state, bytes))
}

#[cfg(test)]
mod tests {
    use super::super::layout::{Direction, FastKey};
    use super::*;
    use crate::wire::{v4_mapped, FiveTuple};

    fn rewrites(client_port: u16) -> [DirectionRewrite; 2] {
        let client = FiveTuple::v4([198, 18, 0, 2], [198, 18, 100, 10], client_port, 80, 6);
        let backend = v4_mapped([198, 18, 1, 11]);
        let reply = FiveTuple {
            src: backend,
            dst: client.src,
            src_port: 8080,
            dst_port: client_port,
            protocol: 6,
        };
        let d = |tuple, rewrite_dst, new_addr, new_port, ingress_port, egress_port| {
            DirectionRewrite::new(&Direction {
                tuple,
                ingress_port,
                rewrite_dst,
                new_addr,
                new_port,
                eth_dst: [2, 0, 0, 0, 0, 1],
                eth_src: [2, 0, 0, 0, 0, 2],
                egress_port,
                client_mac: [0; 6],
            })
        };
        [
            d(client, true, backend, 8080, 0, 1),
            d(reply, false, client.dst, 80, 1, 0),
        ]
    }

    fn fast_path(partitions: u32, me: u32, slots: u32) -> (FastPath, Vec<Arc<HeapEntries>>) {
        let geometry = CacheGeometry::new(partitions, slots);
        let heaps: Vec<Arc<HeapEntries>> = (0..2)
            .map(|_| Arc::new(HeapEntries::new(geometry.entries())))
            .collect();
        let caches = heaps
            .iter()
            .map(|h| Some(h.clone() as Arc<dyn EntryMemory>))
            .collect();
        (FastPath::new(geometry, me, caches, 64, 0), heaps)
    }

    /// The entry holding `key` as the program would find it: its owner's
    /// partition, probing from its home slot.
    fn probe(memory: &HeapEntries, g: CacheGeometry, r: &DirectionRewrite) -> Option<Vec<u8>> {
        let t = &r.key.0;
        let (client, port) = if r.rewrite == super::super::layout::REWRITE_DST {
            (&t.src, t.src_port)
        } else {
            (&t.dst, t.dst_port)
        };
        let part = owner(client, port, g.partitions) as usize;
        let home = (r.key.hash() >> 32) as u32;
        for i in 0..PROBES {
            let index = part * g.slots as usize + (home.wrapping_add(i) & (g.slots - 1)) as usize;
            let (state, bytes) = read_entry(memory, index)?;
            if state == STATE_LIVE && bytes[..40] == r.key.to_bytes() {
                return Some(bytes);
            }
        }
        None
    }

    #[test]
    fn installed_entries_are_found_where_the_program_looks_and_gone_after_removal() {
        let (mut fp, heaps) = fast_path(1, 0, 64);
        let r = rewrites(40000);
        assert!(fp.install(3, &r));
        assert!(fp.is_installed(3));
        let g = fp.geometry();
        assert_eq!(
            probe(&heaps[0], g, &r[0]).unwrap(),
            r[0].field_bytes().to_vec()
        );
        assert_eq!(
            probe(&heaps[1], g, &r[1]).unwrap(),
            r[1].field_bytes().to_vec()
        );
        // Each direction lives in the cache of the port its packets arrive on.
        assert!(probe(&heaps[1], g, &r[0]).is_none());
        assert_eq!(fp.stats().live_entries, 2);
        fp.remove(3);
        assert!(!fp.is_installed(3));
        assert!(probe(&heaps[0], g, &r[0]).is_none());
        assert!(probe(&heaps[1], g, &r[1]).is_none());
        assert_eq!(fp.stats().live_entries, 0);
        assert_eq!(fp.stats().removed, 1);
    }

    #[test]
    fn a_worker_writes_only_connections_its_partition_owns() {
        let r = rewrites(40000);
        let client = &r[0].key.0;
        let mine = owner(&client.src, client.src_port, 2);
        let (mut other, _) = fast_path(2, 1 - mine, 64);
        assert!(!other.install(0, &r));
        assert_eq!(other.stats().unplaceable, 1);
        let (mut owner_fp, heaps) = fast_path(2, mine, 64);
        assert!(owner_fp.install(0, &r));
        let g = owner_fp.geometry();
        assert!(probe(&heaps[0], g, &r[0]).is_some());
        assert!(probe(&heaps[1], g, &r[1]).is_some());
    }

    #[test]
    fn a_full_neighbourhood_leaves_the_connection_with_the_worker() {
        // 8 slots: the ninth connection whose keys all land in one
        // partition finds no free slot within the probes.
        let (mut fp, _) = fast_path(1, 0, 8);
        for record in 0..4 {
            assert!(fp.install(record, &rewrites(40000 + record as u16)));
        }
        // Eight entries per port cache of 8 slots: port 0 holds 4, port 1
        // holds 4; fill until refused.
        let mut refused = None;
        for record in 4..20 {
            if !fp.install(record, &rewrites(40000 + record as u16)) {
                refused = Some(record);
                break;
            }
        }
        let refused = refused.expect("a full cache refuses");
        assert!(!fp.is_installed(refused));
        assert_eq!(fp.stats().full, 1);
        // Removing one makes room again.
        fp.remove(0);
        assert!(fp.install(refused, &rewrites(40000 + refused as u16)));
    }

    #[test]
    fn reinstalling_updates_in_place_and_keeps_the_counters() {
        let (mut fp, heaps) = fast_path(1, 0, 64);
        let mut r = rewrites(40000);
        assert!(fp.install(5, &r));
        let slot = fp.placed[5][0].unwrap();
        // The program counts a packet.
        let e = fp.entry(slot).unwrap();
        e[offset::PACKETS / 8].store(7, Ordering::Relaxed);
        e[offset::LAST_SEEN_NS / 8].store(1_000, Ordering::Relaxed);
        r[0].eth_dst = [2, 9, 9, 9, 9, 9];
        assert!(fp.install(5, &r));
        assert_eq!(fp.placed[5][0], Some(slot));
        assert_eq!(fp.traffic(5).0, 7);
        assert_eq!(fp.last_seen(5), Some(1_000));
        let g = fp.geometry();
        let bytes = probe(&heaps[0], g, &r[0]).unwrap();
        assert_eq!(
            &bytes[offset::ETH_DST - 8..offset::ETH_DST - 8 + 6],
            &[2, 9, 9, 9, 9, 9]
        );
        assert_eq!(fp.stats().installed, 2);
        // Unchanged: nothing written, nothing counted.
        assert!(fp.install(5, &r));
        assert_eq!(fp.stats().installed, 2);
    }

    #[test]
    fn the_sequence_word_is_even_between_writes_and_moves_on_each() {
        let (mut fp, _) = fast_path(1, 0, 64);
        assert!(fp.install(1, &rewrites(1)));
        let slot = fp.placed[1][0].unwrap();
        let (seq1, state) = split_head(fp.entry(slot).unwrap()[0].load(Ordering::Relaxed));
        assert_eq!((seq1 % 2, state), (0, STATE_LIVE));
        fp.remove(1);
        let (seq2, state) = split_head(fp.entry(slot).unwrap()[0].load(Ordering::Relaxed));
        assert_eq!((seq2 % 2, state), (0, STATE_FREED));
        assert!(seq2 > seq1);
        assert!(FastKey(rewrites(1)[0].key.0).hash() != 0);
    }

    #[test]
    fn the_programs_traffic_is_taken_once_including_that_of_freed_entries() {
        let (mut fp, _) = fast_path(1, 0, 64);
        let r = rewrites(40000);
        assert!(fp.install(4, &r));
        assert!(!fp.has_traffic(5));
        let count = |fp: &FastPath, direction: usize, packets: u64, bytes: u64| {
            let e = fp.entry(fp.placed[4][direction].unwrap()).unwrap();
            e[offset::PACKETS / 8].fetch_add(packets, Ordering::Relaxed);
            e[offset::BYTES / 8].fetch_add(bytes, Ordering::Relaxed);
        };
        count(&fp, 0, 3, 300);
        count(&fp, 1, 2, 100);
        assert_eq!(fp.take_traffic(4), (5, 400));
        assert_eq!(fp.take_traffic(4), (0, 0));
        count(&fp, 1, 1, 60);
        assert_eq!(fp.take_traffic(4), (1, 60));
        // Packets counted before the entries are freed are still taken.
        count(&fp, 0, 4, 40);
        fp.remove(4);
        assert!(fp.has_traffic(4));
        assert_eq!(fp.take_traffic(4), (4, 40));
        assert!(!fp.has_traffic(4));
        // The record's next connection starts from zero, in slots whose
        // counters the fresh install zeroed.
        assert!(fp.install(4, &rewrites(40001)));
        assert_eq!(fp.take_traffic(4), (0, 0));
        // The walk goes round every record in bounded steps.
        assert_eq!(fp.traffic_walk(40), 0..40);
        assert_eq!(fp.traffic_walk(40), 40..64);
        assert_eq!(fp.traffic_walk(40), 0..40);
    }

    #[test]
    fn a_count_that_went_back_is_taken_as_no_traffic_and_only_its_excess_later() {
        let (mut fp, _) = fast_path(1, 0, 64);
        assert!(fp.install(4, &rewrites(40000)));
        let set = |fp: &FastPath, packets: u64, bytes: u64| {
            let e = fp.entry(fp.placed[4][0].unwrap()).unwrap();
            e[offset::PACKETS / 8].store(packets, Ordering::Relaxed);
            e[offset::BYTES / 8].store(bytes, Ordering::Relaxed);
        };
        set(&fp, 5, 500);
        assert_eq!(fp.take_traffic(4), (5, 500));
        // Two CPUs raced: an add was lost after the counts were read.
        set(&fp, 4, 440);
        assert_eq!(fp.take_traffic(4), (0, 0));
        set(&fp, 7, 700);
        assert_eq!(fp.take_traffic(4), (2, 200));
        // Packets and bytes are taken each on its own.
        set(&fp, 6, 760);
        assert_eq!(fp.take_traffic(4), (0, 60));
        // Freed below what was taken: nothing is owed, and the record's
        // next connection starts from zero.
        set(&fp, 3, 300);
        fp.remove(4);
        assert_eq!(fp.take_traffic(4), (0, 0));
        assert!(!fp.has_traffic(4));
        assert!(fp.install(4, &rewrites(40001)));
        set(&fp, 2, 120);
        assert_eq!(fp.take_traffic(4), (2, 120));
    }

    /// Heap entries whose reader can be switched off, as a program
    /// instance's fast path is.
    struct Switchable {
        heap: HeapEntries,
        on: std::sync::atomic::AtomicBool,
    }

    impl EntryMemory for Switchable {
        fn words(&self) -> &[AtomicU64] {
            self.heap.words()
        }
        fn takes_entries(&self) -> bool {
            self.on.load(Ordering::Relaxed)
        }
    }

    #[test]
    fn nothing_is_written_into_a_cache_whose_program_instance_is_off() {
        let geometry = CacheGeometry::new(1, 64);
        let caches: Vec<Arc<Switchable>> = (0..2)
            .map(|_| {
                Arc::new(Switchable {
                    heap: HeapEntries::new(geometry.entries()),
                    on: false.into(),
                })
            })
            .collect();
        let memories = caches
            .iter()
            .map(|c| Some(c.clone() as Arc<dyn EntryMemory>))
            .collect();
        let mut fp = FastPath::new(geometry, 0, memories, 64, 0);
        let written = |c: &Switchable| {
            c.heap
                .words()
                .iter()
                .any(|w| w.load(Ordering::Relaxed) != 0)
        };
        // Both off: no offer is even queued, no entry written.
        fp.offer(1);
        assert!(fp.take_pending().is_empty());
        let r = rewrites(40000);
        assert!(!fp.install(1, &r));
        assert!(!written(&caches[0]) && !written(&caches[1]));
        assert_eq!(fp.stats().instance_off, 2);
        // Port 1's instance on: only the direction arriving there.
        caches[1].on.store(true, Ordering::Relaxed);
        fp.offer(1);
        assert_eq!(fp.take_pending(), vec![1]);
        assert!(fp.install(1, &r));
        assert!(!written(&caches[0]));
        assert!(probe(&caches[1].heap, geometry, &r[1]).is_some());
        assert_eq!(fp.stats().live_entries, 1);
        // Both on: the connection gets its two entries.
        caches[0].on.store(true, Ordering::Relaxed);
        assert!(fp.install(1, &r));
        assert!(probe(&caches[0].heap, geometry, &r[0]).is_some());
        assert_eq!(fp.stats().live_entries, 2);
        // Port 0's instance off again: its entry is taken out at the
        // connection's next install.
        caches[0].on.store(false, Ordering::Relaxed);
        assert!(fp.install(1, &r));
        assert!(probe(&caches[0].heap, geometry, &r[0]).is_none());
        assert_eq!(fp.stats().live_entries, 1);
    }

    #[test]
    fn pending_offers_are_bounded_and_deduplicated_in_a_row() {
        let (mut fp, _) = fast_path(1, 0, 64);
        fp.offer(1);
        fp.offer(1);
        fp.offer(2);
        let pending = fp.take_pending();
        assert_eq!(pending, vec![1, 2]);
        fp.give_back_pending(pending);
        for i in 0..PENDING as u32 + 3 {
            fp.offer(i);
        }
        assert_eq!(fp.stats().pending_dropped, 3);
    }
}
