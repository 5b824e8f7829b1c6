//! The connection table: a slab of records and the index over it.

use std::sync::Arc;

use super::connection::{ConnId, Connection, RewriteDeltas};
use super::endpoint_stats::{Departure, EndpointAccounts, FlowCounters};
use super::export::{ExportCursor, FlowFilter, FlowRecord, FlowRecords};
use super::handover::{HandedConnection, Origin, SynProxyOffset};
use super::index::{Index, Pos, MAX_BUCKETS, SLOTS};
use super::state::{idle_past, next_state, Direction, FlowState, FlowTimeouts};
use crate::fastpath::{synproxy_rewrites, DirectionRewrite, FastPath};
use crate::hash::table_hash;
use crate::rules::FlowSettings;
use crate::synproxy::ProxiedConnection;
use crate::wire::rewrite::EndpointDeltas;
use crate::wire::tcp_flags::{FIN, RST};
use crate::wire::FiveTuple;

/// Most connections one table holds (33 554 432): keeps every index
/// position within a record's 28-bit position fields.
pub const MAX_CAPACITY: usize = MAX_BUCKETS * SLOTS / 4;

/// Most records a slab-full insert looks at from the clock hand when
/// choosing whom to evict; it stops at the first expired or embryonic one.
const EVICTION_SCAN: usize = 8;

/// Records whose fast-path traffic [`FlowTable::sync_fast_path`] takes
/// per call, round the table: about a microsecond a poll; a table of
/// 2^20 records goes round in 4 096 polls.
const FAST_TRAFFIC_BUDGET: usize = 256;

/// Offered connections [`FlowTable::sync_fast_path`] installs per call at
/// most: as many as a poll of two full batches can offer, so only a burst
/// waits a poll or two, and the connections a takeover hands over are
/// installed over the first polls without holding up their frames.
const FAST_INSTALL_BUDGET: usize = 128;

/// Records the fast path's entries are checked at per
/// [`FlowTable::sync_fast_path`] after a snapshot change.
const FAST_CHECK_BUDGET: usize = 8192;

/// Records at scattered places a slab-full insert looks at before it
/// refuses the new connection, when the records it saw first were all
/// established ones the table keeps. Scattered, because records next to
/// each other in the slab were often set up together (the clock hand can
/// sit in a run of established ones); a few dozen keep a refusal's cost
/// bounded and make a refusal while many records may go improbable.
const EVICTION_PROBES: u64 = 24;

/// The handle of nothing: [`FlowTable::get`] answers it with a scratch
/// record. Beyond every real record (`MAX_CAPACITY` < `u32::MAX`).
const NOWHERE: u32 = u32::MAX;

/// Counters of what happened to records; every record that left the table
/// is in exactly one of `removed`, `expired`, `evicted`, `replaced`,
/// `reply_conflicts`, so `len == inserted - (those)`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct FlowTableStats {
    /// Records inserted.
    pub inserted: u64,
    /// Records removed by [`FlowTable::remove`].
    pub removed: u64,
    /// Records removed because they were idle past their state's timeout:
    /// found by a lookup, by [`FlowTable::expire`], or reclaimed by an
    /// insert that needed their space.
    pub expired: u64,
    /// Live records pushed out to make room: the table or both index
    /// buckets of a new key were full.
    pub evicted: u64,
    /// The part of `evicted` due to full index buckets with room left in the
    /// table (should stay near zero; a sign of hash trouble if not).
    pub evicted_bucket_full: u64,
    /// Live records replaced by an insert of the same client tuple.
    pub replaced: u64,
    /// New connections refused because every record that could make room
    /// was an established connection, which the table keeps (see
    /// [`FlowTable::with_established_eviction`]); not in `inserted`.
    pub refused: u64,
    /// Live records removed because an insert's tuple was already theirs
    /// in another role: usually the same reply tuple (one client address
    /// and port reaching the same backend through two VIPs).
    pub reply_conflicts: u64,
}

/// A connection a lookup found: its handle, which of its tuples the
/// packet had, the record, and whether the SYN proxy is in it.
#[derive(Clone, Copy, Debug)]
pub struct Found<'a> {
    /// Its handle.
    pub id: ConnId,
    /// Which of its two tuples the packet had.
    pub direction: Direction,
    /// The connection.
    pub conn: &'a Connection,
    /// Whether the SYN proxy is in it ([`FlowTable::syn_proxy`] is
    /// `Some`).
    pub syn_proxied: bool,
}

/// Bookkeeping of a record, packed in one word so a record stays 96 bytes:
/// bit 63 live, bit 62 "backend sent SYN+ACK", bit 61 "counted in its
/// endpoint's active connections", bit 60 "proxied by the SYN proxy", bits 28..56 the reply key's index
/// position, bits 0..28 the client key's position (or, for a free record,
/// the next free record).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Links(u64);

const POS_BITS: u32 = 28;
/// "No position" / "no next free record" in a 28-bit field.
const NO_POS: u32 = (1 << POS_BITS) - 1;
const LIVE: u64 = 1 << 63;
const BACKEND_REPLIED: u64 = 1 << 62;
const COUNTED: u64 = 1 << 61;
const SYN_PROXIED: u64 = 1 << 60;

impl Links {
    fn vacant(next_free: u32) -> Links {
        Links(u64::from(next_free & NO_POS))
    }

    fn live() -> Links {
        Links(LIVE | u64::from(NO_POS) << POS_BITS | u64::from(NO_POS))
    }

    fn is_live(self) -> bool {
        self.0 & LIVE != 0
    }

    fn field(self, shift: u32) -> Option<u32> {
        let v = (self.0 >> shift) as u32 & NO_POS;
        (v != NO_POS).then_some(v)
    }

    fn set_field(&mut self, shift: u32, v: Option<u32>) {
        let v = v.map_or(NO_POS, |v| v & NO_POS);
        self.0 = (self.0 & !(u64::from(NO_POS) << shift)) | u64::from(v) << shift;
    }

    fn client_pos(self) -> Option<Pos> {
        self.field(0)
    }

    fn reply_pos(self) -> Option<Pos> {
        self.field(POS_BITS)
    }

    fn next_free(self) -> Option<u32> {
        self.field(0)
    }

    fn pos(self, direction: Direction) -> Option<Pos> {
        match direction {
            Direction::FromClient => self.client_pos(),
            Direction::FromBackend => self.reply_pos(),
        }
    }

    fn set_pos(&mut self, direction: Direction, pos: Option<Pos>) {
        match direction {
            Direction::FromClient => self.set_field(0, pos),
            Direction::FromBackend => self.set_field(POS_BITS, pos),
        }
    }

    fn backend_replied(self) -> bool {
        self.0 & BACKEND_REPLIED != 0
    }

    fn set_backend_replied(&mut self, replied: bool) {
        self.set_flag(BACKEND_REPLIED, replied);
    }

    fn counted(self) -> bool {
        self.0 & COUNTED != 0
    }

    fn set_counted(&mut self, counted: bool) {
        self.set_flag(COUNTED, counted);
    }

    fn syn_proxied(self) -> bool {
        self.0 & SYN_PROXIED != 0
    }

    fn set_flag(&mut self, flag: u64, on: bool) {
        if on {
            self.0 |= flag;
        } else {
            self.0 &= !flag;
        }
    }
}

/// A connection and its bookkeeping: 96 bytes, aligned to 32 so that
/// every record spans exactly two cache lines (an 8-aligned one may span
/// three), which [`FlowTable::warm_record`] brings in with one load each.
#[derive(Clone)]
#[repr(C, align(32))]
struct Record {
    conn: Connection,
    links: Links,
    /// `conn.rewrite_deltas()`, kept from the insert on.
    deltas: RewriteDeltas,
}

/// A field in a record's first 32 bytes and one in its last 32: in its
/// first and its second cache line, whichever 32-byte boundary it starts
/// on.
const _: () = assert!(
    std::mem::size_of::<Record>() == 96
        && std::mem::offset_of!(Record, conn.last_seen_ns) < 32
        && std::mem::offset_of!(Record, links) >= 64
);

/// A per-worker connection table with a fixed capacity; see the module
/// doc for its layout, costs and eviction policy.
pub struct FlowTable {
    records: Vec<Record>,
    index: Index,
    timeouts: FlowTimeouts,
    /// Head of the free-record list threaded through [`Links`]; `NO_POS`
    /// when the table is full.
    free_head: u32,
    /// Records before this one have been used; none after it ever was
    /// (the free list hands records out in order until one is freed), so
    /// a walk over the live records stops here.
    touched: usize,
    len: usize,
    /// Where the next [`FlowTable::expire`] looks.
    sweep_hand: usize,
    /// Where the next slab-full eviction looks.
    evict_hand: usize,
    /// Whether an established connection may be evicted to make room for
    /// a new one (`flows.evict_established`).
    evict_established: bool,
    stats: FlowTableStats,
    /// What [`FlowTable::get`] / [`FlowTable::get_mut`] answer for an id
    /// that names no record.
    scratch: Connection,
    /// Per-endpoint counters and the table's size, shared with scrapers.
    accounts: EndpointAccounts,
    /// The kernel fast path's cache, kept in step with the table.
    fast: Option<FastPath>,
    /// The SYN proxy's state of proxied connections, by record: empty
    /// until [`FlowTable::reserve_syn_proxy`], and valid for a record only
    /// while its `SYN_PROXIED` bit is set (an insert clears it), so that
    /// only proxied connections pay for it.
    syn_proxy: Vec<ProxiedConnection>,
}

/// The key [`FlowTable::warm_record`] found for a hash, which a lookup
/// of that hash will most likely want, for
/// [`FlowTable::lookup_hinted`]: its record and direction. The lookup
/// takes it where that record is live, still has a key in that direction
/// and the tuple is that key's (a tuple has one key in the index), and
/// reads no bucket; anything else, a stale or foreign hint included,
/// costs only the bucket scan it was to spare.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LookupHint(u32);

/// [`LookupHint`]'s bit for [`Direction::FromBackend`]; records number
/// below 2^28 ([`MAX_CAPACITY`]).
const HINT_REPLY: u32 = 1 << 31;

impl LookupHint {
    /// No key: `lookup_hinted` scans as `lookup` does.
    pub const NONE: LookupHint = LookupHint(u32::MAX);

    #[inline(always)]
    fn of(record: u32, direction: Direction) -> LookupHint {
        match direction {
            Direction::FromClient => LookupHint(record & NO_POS),
            Direction::FromBackend => LookupHint(record & NO_POS | HINT_REPLY),
        }
    }

    /// The (record, direction) named; `None` for [`NONE`](Self::NONE).
    #[inline(always)]
    fn key(self) -> Option<(u32, Direction)> {
        if !self.is_some() {
            return None;
        }
        let direction = if self.0 & HINT_REPLY == 0 {
            Direction::FromClient
        } else {
            Direction::FromBackend
        };
        Some((self.0 & !HINT_REPLY, direction))
    }

    /// Whether the warm pass found a key for the hash.
    #[inline]
    pub fn is_some(self) -> bool {
        self != LookupHint::NONE
    }

    /// The direction of the key named ([`Direction::FromClient`] for
    /// [`NONE`](Self::NONE)).
    #[inline(always)]
    pub fn direction(self) -> Direction {
        if self.is_some() && self.0 & HINT_REPLY != 0 {
            Direction::FromBackend
        } else {
            Direction::FromClient
        }
    }
}

/// Whether a connection in `state` may be forwarded by the fast path:
/// established TCP, and UDP from its first packet.
fn fast_eligible(state: FlowState) -> bool {
    matches!(state, FlowState::TcpEstablished | FlowState::Udp)
}

/// Bit 0 of a record's `last_seen_ns` is the clock hand's mark: set when
/// the hand passes the record, cleared by its next packet. Every time the
/// table writes as a packet's is rounded down to even ([`packet_time`]),
/// so the mark costs a packet nothing but the rounding (one `and`) and
/// "not seen since the hand last came by" (the clock algorithm's
/// unreferenced page) is one bit test when the hand comes by again.
const HAND_PASSED: u64 = 1;

/// `now_ns` as the table records a packet's time: bit 0, the hand's mark,
/// clear ([`HAND_PASSED`]). A nanosecond is nothing to a timeout.
#[inline(always)]
fn packet_time(now_ns: u64) -> u64 {
    now_ns & !HAND_PASSED
}

/// How readily a record gives up its place to a new connection, most
/// readily first.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Standing {
    /// Idle past its state's timeout: taken at once.
    Expired = 0,
    /// Embryonic: a TCP handshake not finished, or a datagram flow its
    /// backend has never answered (what a SYN or UDP flood leaves).
    Embryonic = 1,
    /// A closing connection, or an established one where the table may
    /// evict those, not seen since the clock hand last passed it (about a
    /// turn of the hand ago): taken at once.
    Idle = 2,
    /// TCP after a FIN or RST.
    Closing = 3,
    /// Both ends have spoken and it is not closing.
    Established = 4,
}

/// A [`VictimSearch`] candidate as one number, ordered as
/// (standing, last seen, record): the standing in bits 96.., the time in
/// bits 32..96, the record below. Smaller is more readily given up.
type VictimKey = u128;

/// No candidate yet: above every key.
const NO_VICTIM: VictimKey = VictimKey::MAX;

/// Chooses a record to make room: the first expired, embryonic or idle
/// candidate ([`Standing`]), else the least recently seen of the most
/// readily given up; never an established connection unless the table
/// allows it.
struct VictimSearch<'a> {
    records: &'a mut [Record],
    fast: Option<&'a FastPath>,
    timeouts: &'a FlowTimeouts,
    now_ns: u64,
    exclude: u32,
    evict_established: bool,
    /// The best candidate so far, or [`NO_VICTIM`].
    best: VictimKey,
}

impl VictimSearch<'_> {
    /// Weighs `record`; the clock hand (`by_hand`) also marks it passed
    /// ([`HAND_PASSED`]), so that, unless a packet of it comes first, it
    /// is idle the next time the hand comes by.
    #[inline(always)]
    fn consider(&mut self, record: u32, by_hand: bool) {
        if record == self.exclude || self.settled() {
            return;
        }
        let Some(r) = self.records.get_mut(record as usize) else {
            return;
        };
        if !r.links.is_live() {
            return;
        }
        let c = &mut r.conn;
        // The fast path's packets count as seen, and its replies as
        // answers.
        let (seen, replied, fast_seen) = match self.fast {
            None => (c.last_seen_ns, r.links.backend_replied(), 0),
            Some(f) => {
                let fast_seen = f.last_seen(record).map_or(0, packet_time);
                (
                    c.last_seen_ns.max(fast_seen),
                    r.links.backend_replied() || f.reply_forwarded(record),
                    fast_seen,
                )
            }
        };
        // Marked, and no packet since: not even one the program forwarded.
        let idle = c.last_seen_ns & HAND_PASSED != 0 && fast_seen <= c.last_seen_ns;
        if by_hand {
            c.last_seen_ns = seen | HAND_PASSED;
        }
        // One match for the state's timeout and standing.
        let t = self.timeouts;
        let datagram = if replied {
            Standing::Established
        } else {
            Standing::Embryonic
        };
        let (timeout, standing) = match c.state {
            FlowState::TcpSyn => (t.tcp_syn_ns, Standing::Embryonic),
            FlowState::TcpEstablished => (t.tcp_established_ns, Standing::Established),
            FlowState::TcpClosing => (t.tcp_closing_ns, Standing::Closing),
            FlowState::Udp => (t.udp_ns, datagram),
            FlowState::Other => (t.other_ns, datagram),
        };
        debug_assert_eq!(timeout, t.for_state(c.state));
        let standing = if idle_past(timeout, seen, self.now_ns) {
            Standing::Expired
        } else if standing == Standing::Established && !self.evict_established {
            return;
        } else if idle {
            standing.min(Standing::Idle)
        } else {
            standing
        };
        let key = ((standing as VictimKey) << 96)
            | (VictimKey::from(seen) << 32)
            | VictimKey::from(record);
        self.best = self.best.min(key);
    }

    /// Whether a record that may go has been found.
    fn found(&self) -> bool {
        self.best != NO_VICTIM
    }

    /// Whether the search can stop: an expired, embryonic or idle record
    /// found. Among those the clock hand's order stands for age (in a
    /// full table the hand reaches a record about one turn after it was
    /// filled or last passed), which spares a scan for the least recently
    /// seen.
    #[inline(always)]
    fn settled(&self) -> bool {
        self.best >> 96 <= Standing::Idle as VictimKey
    }

    /// The chosen record and whether it had expired.
    fn finish(self) -> Option<(u32, bool)> {
        self.found().then(|| {
            let expired = self.best >> 96 == Standing::Expired as VictimKey;
            (self.best as u32, expired)
        })
    }
}

impl FlowTable {
    /// A table for `capacity` connections (clamped to 1..=[`MAX_CAPACITY`]).
    /// Allocates all its memory here and never again.
    pub fn new(capacity: usize, timeouts: FlowTimeouts) -> Self {
        let capacity = capacity.clamp(1, MAX_CAPACITY);
        let records = (0..capacity)
            .map(|i| {
                let next = i + 1;
                Record {
                    conn: Connection::vacant(),
                    links: Links::vacant(if next < capacity { next as u32 } else { NO_POS }),
                    deltas: RewriteDeltas::default(),
                }
            })
            .collect();
        FlowTable {
            records,
            index: Index::for_keys(2 * capacity),
            timeouts,
            free_head: 0,
            touched: 0,
            len: 0,
            sweep_hand: 0,
            evict_hand: 0,
            evict_established: false,
            stats: FlowTableStats::default(),
            scratch: Connection::vacant(),
            accounts: EndpointAccounts::new(capacity),
            fast: None,
            syn_proxy: Vec::new(),
        }
    }

    /// Gives the table the worker's writer of the kernel fast path's
    /// cache (made for this table's capacity). From now on every
    /// connection that leaves the table leaves the cache at once, expiry
    /// counts the packets the program forwarded, and connections that
    /// become established (TCP) or are created (UDP) are offered to it;
    /// [`FlowTable::sync_fast_path`] installs them.
    pub fn set_fast_path(&mut self, fast: FastPath) {
        self.fast = Some(fast);
    }

    /// The fast path's writer, if the table has one.
    pub fn fast_path(&self) -> Option<&FastPath> {
        self.fast.as_ref()
    }

    /// Brings the fast path's cache in step: installs the connections
    /// offered since the last call with the entries `rewrites` computes
    /// (or removes them where it gives none), and when `generation` is a
    /// snapshot the entries were not yet checked against, checks up to
    /// [`FAST_CHECK_BUDGET`] more records' entries per call the same way —
    /// a removed backend or a changed MAC takes effect there. A
    /// SYN-proxied connection gets its translation added
    /// ([`synproxy_rewrites`]), and no entries before its backend has
    /// answered. Call once per poll; nothing happens without a fast path.
    pub fn sync_fast_path(
        &mut self,
        generation: u64,
        rewrites: impl FnMut(&Connection) -> Option<[DirectionRewrite; 2]>,
    ) {
        self.sync_fast_path_walking(generation, FAST_TRAFFIC_BUDGET, rewrites);
    }

    /// [`sync_fast_path`](Self::sync_fast_path), taking the fast path's
    /// traffic of up to `traffic_budget` records round the table (a worker
    /// paces it by time: [`super::walk_pace::WalkPace`]).
    pub fn sync_fast_path_walking(
        &mut self,
        generation: u64,
        traffic_budget: usize,
        mut rewrites: impl FnMut(&Connection) -> Option<[DirectionRewrite; 2]>,
    ) {
        let Some(fast) = self.fast.as_mut() else {
            return;
        };
        let touched = self.touched;
        let (records, syn_proxy) = (&self.records, &self.syn_proxy);
        let mut sync = |fast: &mut FastPath, record: u32| {
            let Some(r) = records.get(record as usize) else {
                return;
            };
            if !r.links.is_live() || !fast_eligible(r.conn.state) {
                fast.remove(record);
                return;
            }
            // A proxied connection's entries carry its translation, so
            // they wait for its offsets: installed once the backend has
            // answered.
            let proxied = if r.links.syn_proxied() {
                match syn_proxy.get(record as usize) {
                    Some(p) if p.answered => Some(p.offset),
                    _ => {
                        fast.remove(record);
                        return;
                    }
                }
            } else {
                None
            };
            let entries = rewrites(&r.conn).map(|entries| match &proxied {
                Some(offset) => synproxy_rewrites(entries, offset),
                None => entries,
            });
            match entries {
                Some(entries) => {
                    fast.install(record, &entries);
                }
                None => fast.remove(record),
            }
        };
        let pending = fast.take_pending();
        let taken = pending.len().min(FAST_INSTALL_BUDGET);
        for &record in pending.iter().take(taken) {
            sync(fast, record);
        }
        fast.give_back_pending_after(pending, taken);
        if let Some(cursor) = fast.check_position(generation) {
            // Records past the last one ever used hold no entries: the
            // check ends there (one installed later is installed from
            // this snapshot).
            let end = cursor.saturating_add(FAST_CHECK_BUDGET).min(touched);
            for record in cursor..end {
                if fast.is_installed(record as u32) {
                    sync(fast, record as u32);
                }
            }
            fast.set_check_cursor(if end >= touched { usize::MAX } else { end });
        }
        // The program's packets and bytes, into the backends' counters.
        for record in fast.traffic_walk(traffic_budget) {
            let record = record as u32;
            if !fast.has_traffic(record) {
                continue;
            }
            let Some(r) = records.get(record as usize) else {
                continue;
            };
            let (packets, bytes) = fast.take_traffic(record);
            if packets | bytes != 0 {
                self.accounts.fast_traffic(r.conn.endpoint, packets, bytes);
            }
        }
        self.accounts.set_fast_entries(fast.stats().live_entries);
    }

    /// Whether `record` is idle past its timeout at `now_ns`, counting the
    /// packets the fast path forwarded: its last-seen time is brought up
    /// to the program's first.
    #[inline(always)]
    fn idle_past_timeout(&mut self, record: u32, now_ns: u64) -> bool {
        let Some(r) = self.records.get(record as usize) else {
            return false;
        };
        let c = &r.conn;
        if !self.timeouts.is_expired(c.state, c.last_seen_ns, now_ns) {
            return false;
        }
        self.idle_counting_fast_path(record, now_ns)
    }

    /// [`idle_past_timeout`](Self::idle_past_timeout) of a record whose
    /// own last-seen time is past its timeout.
    #[cold]
    #[inline(never)]
    fn idle_counting_fast_path(&mut self, record: u32, now_ns: u64) -> bool {
        let Some(r) = self.records.get_mut(record as usize) else {
            return false;
        };
        let c = &mut r.conn;
        if let Some(seen) = self.fast.as_ref().and_then(|f| f.last_seen(record)) {
            c.last_seen_ns = c.last_seen_ns.max(packet_time(seen));
        }
        self.timeouts.is_expired(c.state, c.last_seen_ns, now_ns)
    }

    /// A table sized and timed by the config's flow settings.
    pub fn from_settings(settings: &FlowSettings) -> Self {
        FlowTable::new(settings.capacity, FlowTimeouts::from(settings))
            .with_established_eviction(settings.evict_established)
    }

    /// Whether an established connection may be evicted to make room for a
    /// new one. By default (`false`) a full table evicts only expired,
    /// embryonic and closing connections, and refuses a new connection when
    /// it finds none of those (`refused`); `true` also evicts established
    /// ones, by the same clock hand (see the module doc's "Eviction").
    pub fn with_established_eviction(mut self, allowed: bool) -> Self {
        self.evict_established = allowed;
        self
    }

    /// The connection `tuple` belongs to, and from which end it came.
    /// `hash` is [`table_hash`](crate::hash::table_hash) of `tuple`. A
    /// connection idle past its timeout is removed (counted as expired) and
    /// reported as a miss.
    #[inline(always)]
    pub fn lookup(
        &mut self,
        tuple: &FiveTuple,
        hash: u64,
        now_ns: u64,
    ) -> Option<(ConnId, Direction)> {
        let (record, direction) = self.find(tuple, hash)?;
        if self.idle_past_timeout(record, now_ns) {
            self.remove_record(record, Departure::Expired);
            return None;
        }
        Some((ConnId(record), direction))
    }

    /// Brings the index bucket of `hash` into cache.
    ///
    /// A batch's lookups each wait on memory (a bucket, then a record), one
    /// after another. Warming every packet's bucket first, then every
    /// record ([`FlowTable::warm_record`]), lets the CPU overlap those
    /// misses. Plain loads, not prefetch instructions: no `unsafe` needed,
    /// and out-of-order execution keeps many of them in flight.
    #[inline]
    pub fn warm_index(&self, hash: u64) {
        std::hint::black_box(self.index.touch(hash));
    }

    /// [`lookup`](Self::lookup), first trying the key `hint` names (from
    /// [`warm_record`](Self::warm_record) of the same hash, any time
    /// before): where that key is still there and is `tuple`'s, the
    /// bucket is not scanned again. The answer is `lookup`'s, whatever
    /// happened to the table since the hint was taken.
    #[inline(always)]
    pub fn lookup_hinted(
        &mut self,
        tuple: &FiveTuple,
        hash: u64,
        hint: LookupHint,
        now_ns: u64,
    ) -> Option<(ConnId, Direction)> {
        self.lookup_found(tuple, hash, hint, now_ns)
            .map(|found| (found.id, found.direction))
    }

    /// [`lookup_hinted`](Self::lookup_hinted), with the connection it
    /// found and whether the SYN proxy is in it: the record is read once,
    /// where a lookup then [`get`](Self::get) and
    /// [`syn_proxy`](Self::syn_proxy) would look it up three times.
    #[inline(always)]
    pub fn lookup_found(
        &mut self,
        tuple: &FiveTuple,
        hash: u64,
        hint: LookupHint,
        now_ns: u64,
    ) -> Option<Found<'_>> {
        let (record, direction) = self.find_hinted(tuple, hash, hint)?;
        if self.idle_past_timeout(record, now_ns) {
            self.remove_record(record, Departure::Expired);
            return None;
        }
        let r = self.records.get(record as usize)?;
        Some(Found {
            id: ConnId(record),
            direction,
            conn: &r.conn,
            syn_proxied: r.links.syn_proxied() && self.syn_proxy.get(record as usize).is_some(),
        })
    }

    /// The connection a packet of flow `tuple` going `direction` belongs
    /// to, taken from the warm pass's `hint` alone where nothing about it
    /// is unusual: the hint names a live record in `direction` with a key
    /// that way whose tuple is `tuple` (as
    /// [`find_hinted`](Self::find_hinted) takes a hint), not idle past its
    /// timeout, with no SYN proxy in it. `None` otherwise, and
    /// [`lookup_found`](Self::lookup_found) decides (it finds the same
    /// connection, with nothing to do on the way). Always inlined: the
    /// callers' `direction` is a constant.
    #[inline(always)]
    pub fn established(
        &self,
        hint: LookupHint,
        direction: Direction,
        tuple: &FiveTuple,
        now_ns: u64,
    ) -> Option<(ConnId, &Connection)> {
        let (record, hinted) = hint.key()?;
        if hinted != direction {
            return None;
        }
        let r = self.records.get(record as usize)?;
        let usual = r.links.is_live()
            && r.links.pos(direction).is_some()
            && !r.links.syn_proxied()
            && r.conn.has_tuple(tuple, direction)
            && !self
                .timeouts
                .is_expired(r.conn.state, r.conn.last_seen_ns, now_ns);
        usual.then_some((ConnId(record), &r.conn))
    }

    /// Brings the record a lookup of `hash` will most likely read into
    /// cache: both of its cache lines, by a field in each. Call after
    /// [`FlowTable::warm_index`] for the whole batch. Returns the key it
    /// found, for [`lookup_hinted`](Self::lookup_hinted), or
    /// [`LookupHint::NONE`] when there was none: a frame with none is
    /// most likely the first of a new flow. Always inlined: the batch
    /// loops that call it are the hottest of the pipeline.
    #[inline(always)]
    pub fn warm_record(&self, hash: u64) -> LookupHint {
        let Some((record, direction)) = self.index.first_candidate(hash) else {
            return LookupHint::NONE;
        };
        if let Some(r) = self.records.get(record as usize) {
            // One value of both: the loads stay, with one store.
            std::hint::black_box(r.conn.last_seen_ns ^ r.links.0);
        }
        LookupHint::of(record, direction)
    }

    /// The connection behind `id`. A stale id reads a dead or reused
    /// record; an id from another table may read a scratch record.
    #[inline]
    pub fn get(&self, id: ConnId) -> &Connection {
        self.records
            .get(id.0 as usize)
            .map_or(&self.scratch, |r| &r.conn)
    }

    /// The checksum changes of the rewrites of connection `id`'s packets
    /// ([`Connection::rewrite_deltas`]). A stale id reads a dead or reused
    /// record's.
    #[inline]
    pub fn rewrite_deltas(&self, id: ConnId) -> RewriteDeltas {
        self.records
            .get(id.0 as usize)
            .map_or_else(|| self.scratch.rewrite_deltas(), |r| r.deltas)
    }

    /// The connection behind `id`, to change its data. Do not change
    /// `client`, `backend_addr`, `backend_port` or `endpoint` here: the
    /// index is keyed by the first three (the connection would no longer be
    /// found) and the per-endpoint counts by the last: a connection that
    /// must move to another backend is removed and inserted afresh.
    #[inline]
    pub fn get_mut(&mut self, id: ConnId) -> &mut Connection {
        match self.records.get_mut(id.0 as usize) {
            Some(r) => &mut r.conn,
            None => &mut self.scratch,
        }
    }

    /// Records `conn`, found from now on by its client tuple (`client_hash`)
    /// and its reply tuple (`reply_hash`). Always succeeds:
    /// - a live record with the same client tuple is replaced (`replaced`);
    /// - a live record that already owns the reply tuple, or owns the
    ///   client tuple as its reply, is removed (`reply_conflicts`): the
    ///   newest connection wins the tuple, as replies can go to one only;
    /// - when the table is full, or both index buckets of a new key are,
    ///   another record is evicted (see the module doc);
    /// - unless the only records that could make room are established
    ///   connections that the table keeps: then the new connection is
    ///   refused (`refused`) and the answer is [`ConnId::NONE`].
    pub fn insert(
        &mut self,
        conn: Connection,
        client_hash: u64,
        reply_hash: u64,
        now_ns: u64,
    ) -> ConnId {
        self.evict_owner(&conn.client, client_hash, true, now_ns);
        self.insert_absent(conn, client_hash, reply_hash, now_ns)
    }

    /// [`FlowTable::insert`] for a connection whose client tuple no live
    /// record owns, in either role: a lookup of it has just missed, or its
    /// record was just removed, with no insert since. Spares the second
    /// look for it that `insert` makes.
    pub fn insert_absent(
        &mut self,
        conn: Connection,
        client_hash: u64,
        reply_hash: u64,
        now_ns: u64,
    ) -> ConnId {
        let deltas = conn.rewrite_deltas();
        self.insert_absent_with(conn, deltas, client_hash, reply_hash, now_ns)
    }

    /// [`insert_absent`](Self::insert_absent) of a connection whose
    /// checksum changes the caller has: `deltas` must be
    /// [`Connection::rewrite_deltas`] (a new flow to a service's VIP takes
    /// them from its endpoint, worked out once per build).
    pub fn insert_absent_with(
        &mut self,
        conn: Connection,
        deltas: RewriteDeltas,
        client_hash: u64,
        reply_hash: u64,
        now_ns: u64,
    ) -> ConnId {
        debug_assert_eq!(
            deltas,
            conn.rewrite_deltas(),
            "deltas of another connection"
        );
        debug_assert!(
            self.find(&conn.client, client_hash).is_none(),
            "insert_absent of a tuple the table holds"
        );
        let reply = conn.reply_tuple();
        // A degenerate connection whose two tuples are equal is indexed once.
        let index_reply = !conn.tuples_coincide();
        if index_reply {
            self.evict_owner(&reply, reply_hash, false, now_ns);
        }
        let Some(record) = self.allocate(client_hash, now_ns) else {
            self.stats.refused += 1;
            return ConnId::NONE;
        };
        let Some(slot) = self.records.get_mut(record as usize) else {
            return ConnId(NOWHERE);
        };
        let counted = self.accounts.opened(conn.endpoint);
        slot.deltas = deltas;
        slot.conn = conn;
        slot.conn.last_seen_ns = packet_time(slot.conn.last_seen_ns);
        slot.links = Links::live();
        slot.links.set_counted(counted);
        self.len += 1;
        self.accounts.set_connections(self.len);
        self.stats.inserted += 1;
        let indexed = self.index_key(record, Direction::FromClient, client_hash, now_ns)
            && (!index_reply || self.index_key(record, Direction::FromBackend, reply_hash, now_ns));
        if !indexed {
            self.remove_record(record, Departure::Refused);
            return ConnId::NONE;
        }
        self.offer_to_fast_path(record);
        ConnId(record)
    }

    /// Notes a packet of connection `id` from `direction` at `now_ns`:
    /// refreshes its idle time and advances its TCP state
    /// ([`next_state`](super::next_state)).
    #[inline(always)]
    pub fn observe(&mut self, id: ConnId, direction: Direction, tcp_flags: u8, now_ns: u64) {
        let plain = self.fast.is_none() && tcp_flags & (FIN | RST) == 0;
        if let Some(r) = self.records.get_mut(id.0 as usize) {
            // Most packets: an established TCP connection's, neither FIN
            // nor RST, with no fast path to tell. Nothing else changes for
            // them (the state stays, a TCP reply marks nothing): in line.
            if plain && r.links.is_live() && r.conn.state == FlowState::TcpEstablished {
                r.conn.last_seen_ns = r.conn.last_seen_ns.max(packet_time(now_ns));
                return;
            }
        }
        self.observe_any(id, direction, tcp_flags, now_ns);
    }

    /// A client's packet of connection `id` on its way to the backend:
    /// [`observe`](Self::observe)s it, keeps `client_mac` as where the
    /// replies go (the client's router may have changed), counts `bytes`
    /// against the connection's endpoint and returns the checksum changes
    /// of its rewrite. The common packet (as `observe`'s) reads and writes
    /// the record once for all of it.
    #[inline(always)]
    pub fn forward_from_client(
        &mut self,
        id: ConnId,
        tcp_flags: u8,
        client_mac: [u8; 6],
        bytes: u64,
        now_ns: u64,
    ) -> EndpointDeltas {
        let plain = self.fast.is_none() && tcp_flags & (FIN | RST) == 0;
        if let Some(r) = self.records.get_mut(id.0 as usize) {
            if plain && r.links.is_live() && r.conn.state == FlowState::TcpEstablished {
                r.conn.last_seen_ns = r.conn.last_seen_ns.max(packet_time(now_ns));
                r.conn.client_mac = client_mac;
                self.accounts.traffic(r.conn.endpoint, bytes);
                return r.deltas.to_backend;
            }
        }
        self.observe_any(id, Direction::FromClient, tcp_flags, now_ns);
        let conn = self.get_mut(id);
        conn.client_mac = client_mac;
        let endpoint = conn.endpoint;
        self.count_packet(endpoint, bytes);
        self.rewrite_deltas(id).to_backend
    }

    /// [`observe`](Self::observe) of any packet, out of line.
    #[inline(never)]
    fn observe_any(&mut self, id: ConnId, direction: Direction, tcp_flags: u8, now_ns: u64) {
        let Some(r) = self.records.get_mut(id.0 as usize) else {
            return;
        };
        if !r.links.is_live() {
            return;
        }
        r.conn.last_seen_ns = r.conn.last_seen_ns.max(packet_time(now_ns));
        // A datagram flow is one-way until its backend answers: until then
        // it is embryonic, the first to go when the table is full. (The
        // callers pass a constant direction: a client's packet pays nothing
        // for this.)
        let datagram = matches!(r.conn.state, FlowState::Udp | FlowState::Other);
        let mut replied =
            r.links.backend_replied() || (direction == Direction::FromBackend && datagram);
        r.conn.state = next_state(r.conn.state, &mut replied, direction, tcp_flags);
        r.links.set_backend_replied(replied);
        if let Some(fast) = self.fast.as_mut() {
            if r.conn.state == FlowState::TcpClosing {
                // The workers see every close: the kernel stops here.
                fast.remove(id.0);
            } else if fast_eligible(r.conn.state) {
                // New, or a packet the program handed up (another client
                // MAC, say): (re)install with what the record says now.
                fast.offer(id.0);
            }
        }
    }

    /// Offers `record` to the fast path if its state is one it carries.
    fn offer_to_fast_path(&mut self, record: u32) {
        let (Some(fast), Some(r)) = (self.fast.as_mut(), self.records.get(record as usize)) else {
            return;
        };
        if fast_eligible(r.conn.state) {
            fast.offer(record);
        }
    }

    /// Removes connection `id` (no-op if it is not live).
    pub fn remove(&mut self, id: ConnId) {
        self.remove_record(id.0, Departure::Removed);
    }

    /// Removes connection `id` because its client began a new connection
    /// on the same tuple (counted `replaced`).
    pub fn remove_replaced(&mut self, id: ConnId) {
        self.remove_record(id.0, Departure::Replaced);
    }

    /// Incremental sweep: looks at up to `budget` records from where the
    /// last sweep stopped, removes the expired ones, and returns how many.
    pub fn expire(&mut self, now_ns: u64, budget: usize) -> usize {
        let n = self.records.len();
        let mut removed = 0;
        for _ in 0..budget.min(n) {
            let record = self.sweep_hand;
            self.sweep_hand = (record + 1) % n;
            let Some(r) = self.records.get(record) else {
                continue;
            };
            if r.links.is_live() && self.idle_past_timeout(record as u32, now_ns) {
                self.remove_record(record as u32, Departure::Expired);
                removed += 1;
            }
        }
        removed
    }

    /// Live connections (some may be expired but not yet swept).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no connection is live.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most connections the table holds.
    pub fn capacity(&self) -> usize {
        self.records.len()
    }

    /// The timeouts the table judges expiry by.
    pub fn timeouts(&self) -> &FlowTimeouts {
        &self.timeouts
    }

    /// What happened to records so far.
    pub fn stats(&self) -> FlowTableStats {
        self.stats
    }

    /// Bytes the table holds (records and index), all allocated in
    /// [`FlowTable::new`].
    pub fn memory_bytes(&self) -> usize {
        self.records.len() * std::mem::size_of::<Record>()
            + self.index.memory_bytes()
            + self.syn_proxy.len() * std::mem::size_of::<ProxiedConnection>()
    }

    /// The live connections, in table order.
    pub fn iter(&self) -> impl Iterator<Item = &Connection> {
        self.records
            .iter()
            .filter(|r| r.links.is_live())
            .map(|r| &r.conn)
    }

    /// One bounded step of a listing: looks at no more than `budget`
    /// record positions from `cursor` on, copies each live connection
    /// `filter` keeps into `out`, and stops early when `out` is full. The
    /// cursor moves past what was looked at, and is done once it passes the
    /// last record. Never allocates; see `export.rs` for what a listing
    /// made of such steps sees while the table changes.
    pub fn export(
        &self,
        cursor: &mut ExportCursor,
        filter: &FlowFilter,
        budget: usize,
        out: &mut FlowRecords,
    ) {
        let end = cursor.next.saturating_add(budget).min(self.records.len());
        let mut at = cursor.next;
        while at < end && !out.is_full() {
            if let Some(r) = self.records.get(at) {
                if r.links.is_live() && filter.keeps(&r.conn) {
                    out.push(FlowRecord::of(&r.conn));
                }
            }
            at += 1;
        }
        cursor.next = at;
        cursor.done = at >= self.records.len();
    }

    /// Every live connection as a process taking over needs it
    /// (`handover.rs`), appended to `out`: times in CLOCK_MONOTONIC, given
    /// that the worker clock's 0 is `epoch_mono_ns`, and brought up to the
    /// kernel fast path's own last-seen time where it carried the
    /// connection. Runs on a stopped worker's table: it allocates.
    pub fn hand_over(&self, epoch_mono_ns: u64, out: &mut Vec<HandedConnection>) {
        out.reserve(self.len);
        for record in 0..self.touched {
            out.extend(self.handed_at(record as u32, epoch_mono_ns, None));
        }
    }

    /// One bounded step of a pre-copy's first copy, taken by a worker that
    /// goes on forwarding: [`hand_over`](Self::hand_over) of no more than
    /// `budget` record positions from `cursor` on, each connection with its
    /// origin (`worker`, its record), stopping early when `out` is at its
    /// capacity (it never allocates). The cursor moves past what was
    /// looked at; whether the table has been looked at to its end.
    pub fn hand_over_step(
        &self,
        worker: u16,
        epoch_mono_ns: u64,
        cursor: &mut usize,
        budget: usize,
        out: &mut Vec<HandedConnection>,
    ) -> bool {
        let end = cursor.saturating_add(budget).min(self.touched);
        while *cursor < end && out.len() < out.capacity() {
            if let Some(handed) = self.handed_at(*cursor as u32, epoch_mono_ns, Some(worker)) {
                out.push(handed);
            }
            *cursor += 1;
        }
        *cursor >= self.touched
    }

    /// What changed since a first copy of this table (`copy`: what
    /// [`hand_over_step`](Self::hand_over_step) gave for `worker`, in record
    /// order), on the stopped worker's table: each connection created or
    /// changed since (all but its last-seen time,
    /// [`HandedConnection::same_but_seen`]) is appended to `changed`, with
    /// its origin, and each origin of the copy whose connection is gone to
    /// `freed`. One walk of the records ever used, comparing; nothing per
    /// packet was kept for it.
    pub fn hand_over_changes(
        &self,
        worker: u16,
        epoch_mono_ns: u64,
        copy: &[HandedConnection],
        changed: &mut Vec<HandedConnection>,
        freed: &mut Vec<Origin>,
    ) {
        let mut copied = copy.iter().peekable();
        let end = copy
            .last()
            .and_then(|c| c.origin)
            .map_or(0, |o| o.record as usize + 1)
            .max(self.touched);
        for record in 0..end {
            let record = record as u32;
            // Entries of the copy before this record (out of order, or not
            // this worker's) name nothing here: they count as gone.
            let mut before = None;
            while let Some(c) = copied.next_if(|c| c.origin.is_none_or(|o| o.record <= record)) {
                match c.origin {
                    Some(o) if o.record == record => before = Some(c),
                    Some(o) => freed.push(o),
                    None => {}
                }
            }
            // Most records are as copied: that is found without making
            // their hand-over record.
            if before.is_some_and(|b| self.unchanged_since(record, b)) {
                continue;
            }
            let now = self.handed_at(record, epoch_mono_ns, Some(worker));
            match (now, before) {
                (Some(now), Some(before)) if now.same_but_seen(before) => {}
                (Some(now), _) => changed.push(now),
                (None, Some(before)) => freed.extend(before.origin),
                (None, None) => {}
            }
        }
    }

    /// Whether `record` holds the connection `before` describes, in the
    /// same condition ([`HandedConnection::same_but_seen`]), read from the
    /// record in place. False when unsure: the caller then compares the
    /// whole hand-over record.
    fn unchanged_since(&self, record: u32, before: &HandedConnection) -> bool {
        let Some(r) = self.records.get(record as usize) else {
            return false;
        };
        let (c, b) = (&r.conn, &before.connection);
        let same = r.links.is_live()
            && !r.links.syn_proxied()
            && before.syn_proxy.is_none()
            && c.same_condition(b);
        if !same {
            return false;
        }
        let replied = r.links.backend_replied()
            || self
                .fast
                .as_ref()
                .is_some_and(|f| f.reply_forwarded(record));
        replied == before.backend_replied
    }

    /// `record`'s connection as handed over, if it is live and has all a
    /// new process needs (a proxied connection waits for its backend's
    /// answer: until then it has no offsets, and its client's
    /// retransmission finds no connection in the new process).
    fn handed_at(
        &self,
        record: u32,
        epoch_mono_ns: u64,
        worker: Option<u16>,
    ) -> Option<HandedConnection> {
        let r = self.records.get(record as usize)?;
        if !r.links.is_live() {
            return None;
        }
        let proxied = self.syn_proxy_at(record);
        if proxied.is_some_and(|p| !p.answered) {
            return None;
        }
        let fast = self.fast.as_ref();
        let kernel_seen = fast.and_then(|f| f.last_seen(record)).unwrap_or(0);
        let last_seen = r.conn.last_seen_ns.max(kernel_seen);
        Some(HandedConnection {
            connection: r.conn.clone(),
            last_seen_mono_ns: epoch_mono_ns.saturating_add(last_seen),
            backend_replied: r.links.backend_replied()
                || fast.is_some_and(|f| f.reply_forwarded(record)),
            fast_path: fast.is_some_and(|f| f.is_installed(record)),
            syn_proxy: proxied.map(|p| p.offset.into()),
            origin: worker.map(|worker| Origin { worker, record }),
        })
    }

    /// Takes in a connection another process handed over; the worker
    /// clock's 0 here is `epoch_mono_ns` (a connection last seen before
    /// it counts as seen at 0). It is inserted as a new connection would
    /// be — it may evict or be refused the same way — and, if the fast path
    /// carries its state, offered to the fast path. Whether it was taken.
    pub fn take_over(&mut self, handed: &HandedConnection, epoch_mono_ns: u64) -> bool {
        !self.take_over_at(handed, epoch_mono_ns).is_none()
    }

    /// [`take_over`](Self::take_over), answering where the connection went
    /// ([`ConnId::NONE`] if it was refused).
    pub fn take_over_at(&mut self, handed: &HandedConnection, epoch_mono_ns: u64) -> ConnId {
        let mut conn = handed.connection.clone();
        conn.last_seen_ns = handed.last_seen_mono_ns.saturating_sub(epoch_mono_ns);
        let now_ns = conn.last_seen_ns;
        let client_hash = table_hash(&conn.client);
        let reply_hash = table_hash(&conn.reply_tuple());
        let id = self.insert(conn, client_hash, reply_hash, now_ns);
        if id.is_none() {
            return id;
        }
        if let Some(r) = self.records.get_mut(id.0 as usize) {
            r.links.set_backend_replied(handed.backend_replied);
        }
        if let Some(offset) = handed.syn_proxy {
            self.set_handed_syn_proxy(id, offset);
        }
        id
    }

    /// Makes handed connection `id` a proxied one whose backend answered,
    /// with the sequence offsets it was handed with.
    fn set_handed_syn_proxy(&mut self, id: ConnId, offset: SynProxyOffset) {
        self.reserve_syn_proxy();
        let proxied = ProxiedConnection {
            answered: true,
            offset: offset.into(),
            ..ProxiedConnection::default()
        };
        self.set_syn_proxy(id, proxied);
    }

    /// Brings connection `id`, taken over from a first copy, to what a
    /// pre-copy's delta says of it (`handed`): its state, whether its
    /// backend answered, its client's MAC and port, its SYN-proxy offsets
    /// and its last-seen time; offered to the fast path again if its state
    /// is one the fast path carries. Nothing changes, and the answer is
    /// false, unless `id` is live and holds the same connection (client
    /// tuple, backend and endpoint): then remove it and take the new one
    /// over instead.
    pub fn refresh_handed(
        &mut self,
        id: ConnId,
        handed: &HandedConnection,
        epoch_mono_ns: u64,
    ) -> bool {
        let Some(r) = self.records.get_mut(id.0 as usize) else {
            return false;
        };
        let (c, h) = (&mut r.conn, &handed.connection);
        let same = r.links.is_live() && c.is_same_as(h);
        if !same {
            return false;
        }
        c.state = h.state;
        c.client_mac = h.client_mac;
        c.client_ingress = h.client_ingress;
        c.last_seen_ns = c.last_seen_ns.max(packet_time(
            handed.last_seen_mono_ns.saturating_sub(epoch_mono_ns),
        ));
        r.links.set_backend_replied(handed.backend_replied);
        let was_proxied = r.links.syn_proxied();
        match handed.syn_proxy {
            Some(offset) => self.set_handed_syn_proxy(id, offset),
            None if was_proxied => {
                if let Some(r) = self.records.get_mut(id.0 as usize) {
                    r.links.set_flag(SYN_PROXIED, false);
                }
            }
            None => {}
        }
        if let Some(fast) = self.fast.as_mut() {
            // Entries made from what the record said before go; the next
            // sync installs what it says now.
            fast.remove(id.0);
        }
        self.offer_to_fast_path(id.0);
        true
    }

    /// Makes room for the SYN proxy's state of every record (allocates
    /// once, the first time: call it off the per-packet path, as the
    /// pipeline does when a snapshot has a proxied service).
    pub fn reserve_syn_proxy(&mut self) {
        if self.syn_proxy.len() < self.records.len() {
            self.syn_proxy
                .resize(self.records.len(), ProxiedConnection::default());
        }
    }

    /// Whether the table has room for proxied connections
    /// ([`reserve_syn_proxy`](Self::reserve_syn_proxy)).
    pub fn has_syn_proxy(&self) -> bool {
        !self.syn_proxy.is_empty()
    }

    /// Makes connection `id` a proxied one, with `state`; false (nothing
    /// changed) if it is not live or the table has no room reserved.
    pub fn set_syn_proxy(&mut self, id: ConnId, state: ProxiedConnection) -> bool {
        let (Some(r), Some(slot)) = (
            self.records.get_mut(id.0 as usize),
            self.syn_proxy.get_mut(id.0 as usize),
        ) else {
            return false;
        };
        if !r.links.is_live() {
            return false;
        }
        r.links.set_flag(SYN_PROXIED, true);
        *slot = state;
        // The fast path may have been offered it at insert.
        if let Some(fast) = self.fast.as_mut() {
            fast.remove(id.0);
        }
        true
    }

    /// The SYN proxy's state of connection `id`, if it is a proxied one.
    /// A connection that is not pays one bit test of its record.
    #[inline(always)]
    pub fn syn_proxy(&self, id: ConnId) -> Option<&ProxiedConnection> {
        self.syn_proxy_at(id.0)
    }

    /// [`syn_proxy`](Self::syn_proxy), to change it.
    #[inline]
    pub fn syn_proxy_mut(&mut self, id: ConnId) -> Option<&mut ProxiedConnection> {
        let r = self.records.get(id.0 as usize)?;
        if !r.links.syn_proxied() {
            return None;
        }
        self.syn_proxy.get_mut(id.0 as usize)
    }

    #[inline(always)]
    fn syn_proxy_at(&self, record: u32) -> Option<&ProxiedConnection> {
        let r = self.records.get(record as usize)?;
        if !r.links.syn_proxied() {
            return None;
        }
        self.syn_proxy.get(record as usize)
    }

    /// Counts a forwarded packet of `bytes` bytes on a connection to
    /// `endpoint` (either direction). Only the plain increments of a
    /// single-writer counter; an id without a slot is not counted (see
    /// [`FlowTable::reserve_endpoints`]).
    #[inline(always)]
    pub fn count_packet(&self, endpoint: u32, bytes: u64) {
        self.accounts.traffic(endpoint, bytes);
    }

    /// Counts the table's live connections on `lanes` too (this worker's
    /// lanes of the backends' connection counts, which connection caps
    /// read across workers): +1 on insert, −1 on every way a record leaves
    /// (removed, closed, expired, evicted, replaced). Set it before the
    /// first insert; connections already in the table are not counted.
    pub fn set_connection_lanes(&mut self, lanes: crate::admission::WorkerConnections) {
        self.accounts.set_lanes(lanes);
    }

    /// Whether the table counts its connections on backend lanes
    /// ([`set_connection_lanes`](Self::set_connection_lanes)).
    pub fn has_connection_lanes(&self) -> bool {
        self.accounts.has_lanes()
    }

    /// Makes the per-endpoint counters hold every endpoint id below
    /// `limit`, keeping every count. Allocates when they grow, so call it
    /// off the per-packet path: the pipeline does when it sees a new
    /// snapshot generation. Connections to an id without a slot are not
    /// counted, then or later.
    pub fn reserve_endpoints(&mut self, limit: usize) {
        self.accounts.reserve(limit);
    }

    /// How many endpoint ids have counters.
    #[inline]
    pub fn endpoint_slots(&self) -> usize {
        self.accounts.len()
    }

    /// The table's size, capacity and per-endpoint counters, for readers
    /// on other threads (share the `Arc`; the table is the only writer).
    pub fn counters(&self) -> &Arc<FlowCounters> {
        self.accounts.shared()
    }

    /// The record that owns `tuple`, in any role.
    #[inline(always)]
    fn find(&self, tuple: &FiveTuple, hash: u64) -> Option<(u32, Direction)> {
        let records = &self.records;
        // Index entries point at live records only, so no liveness check.
        self.index.find(hash, |record, direction| {
            records
                .get(record as usize)
                .is_some_and(|r| r.conn.has_tuple(tuple, direction))
        })
    }

    /// [`find`](Self::find), first at the key `hint` names.
    #[inline(always)]
    fn find_hinted(
        &self,
        tuple: &FiveTuple,
        hash: u64,
        hint: LookupHint,
    ) -> Option<(u32, Direction)> {
        if let Some((record, direction)) = hint.key() {
            // A live record with a key in `direction` whose tuple that is:
            // the index holds that key, and it is the tuple's one key.
            let is_key = self.records.get(record as usize).is_some_and(|r| {
                r.links.is_live()
                    && r.links.pos(direction).is_some()
                    && r.conn.has_tuple(tuple, direction)
            });
            if is_key {
                return Some((record, direction));
            }
        }
        self.find(tuple, hash)
    }

    /// Removes the record owning `tuple`, if any, before an insert takes it.
    fn evict_owner(&mut self, tuple: &FiveTuple, hash: u64, is_client_tuple: bool, now_ns: u64) {
        let Some((record, direction)) = self.find(tuple, hash) else {
            return;
        };
        let why = if self.idle_past_timeout(record, now_ns) {
            Departure::Expired
        } else if is_client_tuple && direction == Direction::FromClient {
            Departure::Replaced
        } else {
            Departure::ReplyConflict
        };
        self.remove_record(record, why);
    }

    /// A search for a record to make room at `now_ns`, never `exclude`,
    /// and the index beside it (the search holds the records).
    fn victim_search(&mut self, now_ns: u64, exclude: u32) -> (VictimSearch<'_>, &Index) {
        let search = VictimSearch {
            records: &mut self.records,
            fast: self.fast.as_ref(),
            timeouts: &self.timeouts,
            now_ns,
            exclude,
            evict_established: self.evict_established,
            best: NO_VICTIM,
        };
        (search, &self.index)
    }

    /// A free record; when there is none, the victim is the first expired,
    /// embryonic or idle record from the clock hand, else the best of the
    /// next [`EVICTION_SCAN`] records by [`Standing`]. The hand marks the
    /// records it passes ([`HAND_PASSED`]).
    fn allocate(&mut self, client_hash: u64, now_ns: u64) -> Option<u32> {
        if let Some(record) = self.pop_free() {
            return Some(record);
        }
        let n = self.records.len();
        // The hand wraps with a compare, not a division per step.
        let mut at = self.evict_hand;
        let (mut search, _) = self.victim_search(now_ns, NOWHERE);
        let mut steps = 0;
        while steps < EVICTION_SCAN.min(n) && !search.settled() {
            search.consider(at as u32, true);
            at += 1;
            if at >= n {
                at = 0;
            }
            steps += 1;
        }
        if !search.found() {
            // Only established connections seen, which the table keeps:
            // look at scattered records before refusing.
            let start = client_hash >> 32;
            for probe in 0..EVICTION_PROBES {
                if search.found() {
                    break;
                }
                let at = start.wrapping_add(probe.wrapping_mul(0x9E37_79B9)) % n as u64;
                search.consider(at as u32, false);
            }
        }
        let victim = search.finish();
        self.evict_hand = at;
        let (record, expired) = victim?;
        self.remove_record(record, departure(expired, false));
        self.pop_free()
    }

    fn pop_free(&mut self) -> Option<u32> {
        let head = self.free_head;
        let r = self.records.get(head as usize)?;
        if r.links.is_live() {
            return None;
        }
        self.free_head = r.links.next_free().unwrap_or(NO_POS);
        self.touched = self.touched.max(head as usize + 1);
        Some(head)
    }

    /// Enters `record`'s key for `direction` in the index; when both its
    /// buckets are full, first moves another key out of them, or failing
    /// that evicts one of their other records. Whether the key found room.
    fn index_key(&mut self, record: u32, direction: Direction, hash: u64, now_ns: u64) -> bool {
        let mut pos = self.index.insert(hash, record, direction);
        if pos.is_none() {
            if let Some((moved, moved_direction, moved_pos)) = self.index.make_room(hash) {
                if let Some(r) = self.records.get_mut(moved as usize) {
                    r.links.set_pos(moved_direction, Some(moved_pos));
                }
                pos = self.index.insert(hash, record, direction);
            }
        }
        if pos.is_none() {
            let (mut search, index) = self.victim_search(now_ns, record);
            index.for_each_in_buckets(hash, |r| search.consider(r, false));
            if let Some((victim, expired)) = search.finish() {
                self.remove_record(victim, departure(expired, true));
                pos = self.index.insert(hash, record, direction);
            }
        }
        if let Some(r) = self.records.get_mut(record as usize) {
            r.links.set_pos(direction, pos);
        }
        pos.is_some()
    }

    fn remove_record(&mut self, record: u32, why: Departure) {
        let Some(r) = self.records.get_mut(record as usize) else {
            return;
        };
        if !r.links.is_live() {
            return;
        }
        let links = r.links;
        if links.counted() {
            self.accounts.detached(r.conn.endpoint);
        }
        // Whatever the reason, a record that leaves leaves the cache, and
        // what the program forwarded for it is counted.
        if let Some(fast) = self.fast.as_mut() {
            fast.remove(record);
            let (packets, bytes) = fast.take_traffic(record);
            if packets | bytes != 0 {
                self.accounts.fast_traffic(r.conn.endpoint, packets, bytes);
            }
        }
        r.links = Links::vacant(self.free_head);
        self.free_head = record;
        for pos in [links.client_pos(), links.reply_pos()]
            .into_iter()
            .flatten()
        {
            self.index.remove(pos);
        }
        self.len -= 1;
        self.accounts.set_connections(self.len);
        self.accounts.departed(why);
        let s = &mut self.stats;
        match why {
            Departure::Removed => s.removed += 1,
            Departure::Expired => s.expired += 1,
            Departure::Evicted => s.evicted += 1,
            Departure::EvictedBucketFull => {
                s.evicted += 1;
                s.evicted_bucket_full += 1;
            }
            Departure::Replaced => s.replaced += 1,
            Departure::ReplyConflict => s.reply_conflicts += 1,
            Departure::Refused => {
                s.inserted -= 1;
                s.refused += 1;
            }
        }
    }

    /// Checks every structural invariant; panics with a message if one is
    /// broken.
    #[cfg(test)]
    pub(super) fn audit(&self) {
        let (keys, counts_match) = self.index.audit();
        assert!(counts_match, "index overflow counts");
        let live = self.records.iter().filter(|r| r.links.is_live()).count();
        assert_eq!(live, self.len, "len");
        assert!(self.len <= self.capacity());
        let mut free = 0;
        let mut at = self.free_head;
        while let Some(r) = self.records.get(at as usize) {
            assert!(!r.links.is_live(), "live record on the free list");
            free += 1;
            assert!(free <= self.capacity(), "free list loops");
            at = r.links.next_free().unwrap_or(NO_POS);
        }
        assert_eq!(free + self.len, self.capacity(), "free list length");
        for &(pos, record, direction) in &keys {
            let r = &self.records[record as usize];
            assert!(r.links.is_live(), "index points at a free record");
            let own = match direction {
                Direction::FromClient => r.links.client_pos(),
                Direction::FromBackend => r.links.reply_pos(),
            };
            assert_eq!(own, Some(pos), "record does not own its index key");
        }
        let indexed = self
            .records
            .iter()
            .filter(|r| r.links.is_live())
            .map(|r| {
                usize::from(r.links.client_pos().is_some())
                    + usize::from(r.links.reply_pos().is_some())
            })
            .sum::<usize>();
        assert_eq!(indexed, keys.len(), "records' positions vs index keys");
        let s = self.stats;
        let left = s.removed + s.expired + s.evicted + s.replaced + s.reply_conflicts;
        assert_eq!(s.inserted - left, self.len as u64, "stats do not add up");
        let shared = self.counters();
        assert_eq!(shared.connections(), self.len as u64, "published size");
        let mut active = vec![0u64; self.accounts.len()];
        for r in self.records.iter().filter(|r| r.links.is_live()) {
            let slot = active.get_mut(r.conn.endpoint as usize);
            match slot {
                Some(n) if r.links.counted() => *n += 1,
                None => assert!(!r.links.counted(), "counted without a slot"),
                Some(_) => {}
            }
        }
        for (id, n) in active.into_iter().enumerate() {
            assert_eq!(
                shared.endpoint(id as u32).active_flows,
                n,
                "active connections of endpoint {id}"
            );
        }
    }
}

fn departure(expired: bool, bucket_full: bool) -> Departure {
    if expired {
        Departure::Expired
    } else if bucket_full {
        Departure::EvictedBucketFull
    } else {
        Departure::Evicted
    }
}

#[cfg(test)]
mod tests;
