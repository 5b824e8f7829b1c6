//! Per-client new-flow rate limits: a fixed-size, set-associative table of
//! GCRA buckets per worker, keyed by (service, source prefix).
//!
//! # Structure
//!
//! [`ClientRateTable`] is allocated once and never grows: sets of four
//! entries, each set one 64-byte cache line (four 64-bit fingerprints,
//! then four bucket times), so 16 bytes per entry whatever the number of
//! sources, and one cache line per decision. One table per worker serves
//! every service with a client limit. A client is the source address
//! masked to the service's prefix length (IPv4 addresses are IPv4-mapped,
//! and only their last 32 bits are masked); its fingerprint is a 64-bit
//! hash (xxh3) of that key under the table's seed, varied by service id,
//! and the fingerprint's low bits choose the set. The seed is the
//! process's own (random in the daemon), so a remote sender can neither
//! aim at one set nor make two clients' fingerprints meet.
//!
//! Each entry holds the client's GCRA time `tat` (the bucket is full when
//! `tat ≤ now`; a flow is admitted while `max(tat, now) − now ≤
//! (burst−1)·T`, and moves `tat` on by `T`). A full bucket carries no
//! information, so an entry whose `tat` has passed is free: nothing needs
//! sweeping, and a client is really tracked only while it owes.
//!
//! A new client takes the entry of its set that owes least: a free one if
//! there is one; otherwise the client closest to a full bucket is
//! forgotten (an *eviction*, counted).
//!
//! # Error
//!
//! - No client is charged for another's flow unless their 64-bit
//!   fingerprints are equal: 2⁻⁶⁴ per pair of clients, so a legitimate
//!   client among a flood of 10⁷ other sources shares its bucket with one
//!   of them with probability about 5·10⁻¹³. Unlike a count-min sketch,
//!   whose counters every source adds to, a flood cannot raise a
//!   legitimate client's count.
//! - The table errs by forgetting: an evicted client's next flow finds a
//!   full bucket, so it gains at most `burst` flows per eviction: it is
//!   under-limited, never over-limited. Evictions happen only when all
//!   four clients of a set owe at once, i.e. when the distinct sources of
//!   the last `burst·T` (per worker) approach the table's size; the victim
//!   is the one that owes least, so a client hammering its limit (owing
//!   the most) is the last to go. Size the table for the owing clients to
//!   stay under about half its entries and evictions stay rare.
//! - Per worker, not shared: a client's connections are spread over the
//!   workers by the owner hash of its address *and port* (see `handoff`),
//!   so each worker enforces `rate / W` with the full burst. Over time the
//!   client gets its rate (each worker's share is exact); its bursts may
//!   reach `W·burst` when they happen to spread. A client running steadily
//!   at a fraction `ρ` of its limit can meet a refusal only when its flows
//!   happen to bunch on one worker, with a probability of about
//!   `exp(−2(1−ρ)·burst / (ρ(1−1/W)))` per excursion (ρ = 0.8, burst 10,
//!   two workers: 5·10⁻⁵). Sharing one table between workers would need an
//!   atomic read-modify-write per new flow on a line both workers write;
//!   per-worker tables need none.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::limits::ClientRateLimit;

/// Entries per set.
pub const WAYS: usize = 4;

/// One service's per-client limit, compiled for a number of workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientRateParams {
    /// One flow's share of time on one worker: `W / rate`, nanoseconds.
    interval_ns: u64,
    /// How far a bucket's `tat` may be ahead of now for a flow to be
    /// admitted: `(burst − 1) · interval`.
    tolerance_ns: u64,
    /// Mask of an IPv4-mapped address (keeps the mapping prefix).
    mask_v4: u128,
    /// Mask of an IPv6 address.
    mask_v6: u128,
    limit: ClientRateLimit,
}

impl ClientRateParams {
    /// `limit` as each of `workers` workers enforces it: the rate divided
    /// between them, the full burst on each.
    pub fn new(limit: ClientRateLimit, workers: usize) -> ClientRateParams {
        let rate = limit.rate();
        let workers = workers.max(1) as u128;
        let per_s = u128::from(rate.per_s().max(1));
        let interval = (workers * 1_000_000_000 + per_s / 2) / per_s;
        let interval_ns = u64::try_from(interval).unwrap_or(u64::MAX);
        let prefix = limit.prefix();
        let v4_host = u32::MAX
            .checked_shl(32 - u32::from(prefix.v4()))
            .unwrap_or(0);
        ClientRateParams {
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(rate.burst().saturating_sub(1)),
            mask_v4: (!0u128 << 32) | u128::from(v4_host),
            mask_v6: u128::MAX
                .checked_shl(128 - u32::from(prefix.v6()))
                .unwrap_or(0),
            limit,
        }
    }

    /// The limit.
    pub fn limit(&self) -> ClientRateLimit {
        self.limit
    }

    /// The client an address belongs to: the address masked to its
    /// family's prefix length.
    #[inline]
    pub fn client_key(&self, addr: &[u8; 16]) -> u128 {
        let a = u128::from_be_bytes(*addr);
        if a >> 32 == 0xffff {
            a & self.mask_v4
        } else {
            a & self.mask_v6
        }
    }
}

/// What the table decided for one new flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientOutcome {
    /// Within the client's limit.
    Admitted,
    /// Within the limit; to make room for this client, another that still
    /// owed was forgotten (it will be under-limited by what it owed).
    AdmittedEvicting,
    /// Over the client's limit.
    Refused,
}

impl ClientOutcome {
    /// Whether the flow may go on.
    #[inline]
    pub fn admitted(self) -> bool {
        !matches!(self, ClientOutcome::Refused)
    }
}

/// Four entries in one cache line: fingerprints, then bucket times.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(64))]
struct ClientSet {
    fingerprints: [u64; WAYS],
    tats: [u64; WAYS],
}

impl ClientSet {
    /// The way holding `fingerprint`.
    #[inline(always)]
    fn find(&self, fingerprint: u64) -> Option<usize> {
        (0..WAYS).find(|&w| self.fingerprints[w] == fingerprint)
    }

    /// Gives the way that owes least to `fingerprint` with a full bucket;
    /// says whether the client there still owed.
    #[inline(always)]
    fn claim(&mut self, fingerprint: u64, now_ns: u64) -> (usize, bool) {
        let mut victim = 0;
        for w in 1..WAYS {
            if self.tats[w] < self.tats[victim] {
                victim = w;
            }
        }
        let owed = self.tats[victim] > now_ns;
        self.fingerprints[victim] = fingerprint;
        self.tats[victim] = 0;
        (victim, owed)
    }
}

/// One worker's per-client buckets for every service (see the module
/// documentation). Never grows; never allocates after [`new`](Self::new).
#[derive(Debug)]
pub struct ClientRateTable {
    sets: Box<[ClientSet]>,
    set_mask: u64,
    seed: u64,
}

impl ClientRateTable {
    /// A table of at least `entries` entries (rounded up to a power of two
    /// of at least one set), choosing sets with `seed`.
    pub fn new(entries: usize, seed: u64) -> ClientRateTable {
        let sets = entries.div_ceil(WAYS).max(1).next_power_of_two();
        ClientRateTable {
            sets: vec![ClientSet::default(); sets].into_boxed_slice(),
            set_mask: sets as u64 - 1,
            seed,
        }
    }

    /// Entries the table holds.
    pub fn capacity(&self) -> usize {
        self.sets.len() * WAYS
    }

    /// The table's memory, which is all it will ever use.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val::<[ClientSet]>(&self.sets)
    }

    /// Clients that owe (whose bucket is not full) at `now_ns`.
    pub fn owing(&self, now_ns: u64) -> usize {
        self.sets
            .iter()
            .map(|s| s.tats.iter().filter(|&&t| t > now_ns).count())
            .sum()
    }

    /// The fingerprint of a client of `service`: a 64-bit hash of its key
    /// under this table's seed, a function of the service. Its low bits
    /// choose the set.
    #[inline(always)]
    fn fingerprint(&self, key: u128, service: u32) -> u64 {
        let seed = self.seed ^ u64::from(service).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        xxh3_64_with_seed(&key.to_ne_bytes(), seed)
    }

    /// Decides one new flow of `service` from `src` at `now_ns`, charging
    /// the client's bucket when admitted.
    #[inline]
    pub fn admit(
        &mut self,
        service: u32,
        src: &[u8; 16],
        params: &ClientRateParams,
        now_ns: u64,
    ) -> ClientOutcome {
        let fingerprint = self.fingerprint(params.client_key(src), service);
        let Some(set) = self.sets.get_mut((fingerprint & self.set_mask) as usize) else {
            return ClientOutcome::Admitted;
        };
        let (way, evicted) = match set.find(fingerprint) {
            Some(way) => (way, false),
            None => set.claim(fingerprint, now_ns),
        };
        let way = way & (WAYS - 1);
        let tat = set.tats[way].max(now_ns);
        if tat - now_ns > params.tolerance_ns {
            return ClientOutcome::Refused;
        }
        set.tats[way] = tat.saturating_add(params.interval_ns);
        if evicted {
            ClientOutcome::AdmittedEvicting
        } else {
            ClientOutcome::Admitted
        }
    }

    /// Gives back the charge of a flow admitted by [`admit`](Self::admit)
    /// and then refused by a later check, so that the refusal costs the
    /// client nothing. Does nothing if the client was forgotten since.
    #[inline]
    pub fn refund(&mut self, service: u32, src: &[u8; 16], params: &ClientRateParams) {
        let fingerprint = self.fingerprint(params.client_key(src), service);
        if let Some(set) = self.sets.get_mut((fingerprint & self.set_mask) as usize) {
            if let Some(way) = set.find(fingerprint) {
                let way = way & (WAYS - 1);
                set.tats[way] = set.tats[way].saturating_sub(params.interval_ns);
            }
        }
    }
}

#[cfg(test)]
mod tests;
