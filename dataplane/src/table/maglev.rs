//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), weighted.
//!
//! A Maglev table has `M` slots (`M` prime). Every backend walks its own
//! permutation of the slots, `offset, offset + skip, offset + 2·skip, …
//! (mod M)`, and on each of its turns claims the first slot of its walk that
//! is still free. Because a backend's permutation depends only on its own
//! identity, adding or removing one backend disturbs few slots of the others
//! (about 1/N of the table moves), and every gateway that builds a table
//! from the same backends gets the same table, so several gateways behind
//! ECMP agree on a flow's backend without talking to each other.
//!
//! Three choices make the table a pure function of the backend set:
//! - the permutation comes from [`bytes_hash`] (fixed seed) of the backend's
//!   identity, its 16-byte address and port, never its position in a list;
//! - backends are sorted by identity before they take turns, so config order
//!   does not matter;
//! - weights become exact slot quotas (largest-remainder apportionment of
//!   `M` by weight, ties to the smaller identity): a backend with weight `w`
//!   takes turns, in round-robin with the others, until it owns its share
//!   `M·w/Σw` of the slots (±1), and weight 0 owns none. With equal weights
//!   this is exactly the paper's algorithm.

use crate::hash::bytes_hash;
use std::borrow::Cow;
use std::sync::Arc;

use super::EndpointId;

/// Salt of the hash that gives a backend's first slot.
const OFFSET_SALT: u64 = 0x6d61_676c_6576_6f66; // "maglevof"
/// Salt of the hash that gives a backend's stride.
const SKIP_SALT: u64 = 0x6d61_676c_6576_736b; // "maglevsk"

/// One backend as Maglev sees it: an identity, a weight and the value its
/// slots hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevBackend {
    /// Address, 16 bytes (IPv4-mapped for IPv4): part of the identity.
    pub address: [u8; 16],
    /// Port: part of the identity.
    pub port: u16,
    /// Relative weight; 0 claims no slot.
    pub weight: u32,
    /// What the backend's slots hold.
    pub id: EndpointId,
}

impl MaglevBackend {
    /// The bytes the permutation is derived from: address then port.
    fn identity_bytes(&self) -> [u8; 18] {
        let mut bytes = [0u8; 18];
        bytes[..16].copy_from_slice(&self.address);
        bytes[16..].copy_from_slice(&self.port.to_be_bytes());
        bytes
    }
}

/// A built Maglev lookup table: slot → endpoint id.
///
/// Cheap to clone (the slots are shared), so an unchanged service's table
/// is carried from one snapshot to the next instead of being rebuilt.
///
/// The table of a single backend holds that backend's id once instead of
/// `size` times: every slot would hold it. A gateway of 100 000 services
/// of one backend each keeps 100 000 ids instead of 400 MB of slots, and
/// builds them without writing a slot.
#[derive(Clone, Debug)]
pub struct MaglevTable {
    /// Every slot, or the one id every slot holds.
    slots: Arc<[EndpointId]>,
    /// Number of slots.
    size: usize,
}

impl MaglevTable {
    /// A table of no slots: every lookup finds nothing.
    pub fn empty() -> MaglevTable {
        MaglevTable {
            slots: Arc::from(Vec::new()),
            size: 0,
        }
    }

    /// Builds the table of `size` slots for `backends`, in any order.
    ///
    /// `size` should be prime (the rules validate it); any other size still
    /// gives a full table because every stride is made coprime with it.
    /// If no backend has a weight above 0 the table is empty.
    pub fn build(backends: &[MaglevBackend], size: u32) -> MaglevTable {
        let mut weighted: Vec<MaglevBackend> =
            backends.iter().copied().filter(|b| b.weight > 0).collect();
        if weighted.is_empty() || size == 0 {
            return MaglevTable::empty();
        }
        if let [only] = weighted[..] {
            // Every slot is the one backend's: no permutation to walk (a
            // service of one backend, the common case of many services).
            return MaglevTable {
                slots: Arc::from([only.id]),
                size: size as usize,
            };
        }
        weighted.sort_unstable_by(|a, b| {
            (a.address, a.port, a.weight, a.id).cmp(&(b.address, b.port, b.weight, b.id))
        });
        let quotas = slot_quotas(&weighted, size);
        // Filled in place (one allocation, no copy of a finished Vec),
        // every slot first holding a value no backend has: "free".
        let free = unused_id(&weighted);
        let mut slots: Arc<[EndpointId]> = std::iter::repeat_n(free, size as usize).collect();
        if let Some(cells) = Arc::get_mut(&mut slots) {
            populate(&weighted, &quotas, Filling { slots: cells, free });
        }
        MaglevTable {
            slots,
            size: size as usize,
        }
    }

    /// The endpoint for a flow hash; `None` only for an empty table.
    #[inline]
    pub fn lookup(&self, hash: u64) -> Option<EndpointId> {
        match self.slots.get(reduce(hash, self.size)) {
            Some(&id) => Some(id),
            // A table of one backend holds its id once.
            None => self.slots.first().copied(),
        }
    }

    /// Number of slots (0 when no backend has weight).
    pub fn size(&self) -> usize {
        self.size
    }

    /// The slots, for inspection and tests (a table of one backend's
    /// written out).
    pub fn slots(&self) -> Cow<'_, [EndpointId]> {
        match *self.slots {
            [only] if self.size != 1 => Cow::Owned(vec![only; self.size]),
            _ => Cow::Borrowed(&self.slots),
        }
    }

    /// Whether two tables are the very same allocation (a reused table).
    pub fn shares_slots_with(&self, other: &MaglevTable) -> bool {
        Arc::ptr_eq(&self.slots, &other.slots)
    }
}

/// Maps a 64-bit hash onto `0..len` by multiply-shift: no division on the
/// per-packet path. Part of the flow → backend mapping: never change it.
#[inline]
pub(super) fn reduce(hash: u64, len: usize) -> usize {
    ((u128::from(hash) * len as u128) >> 64) as usize
}

/// How many slots each (weighted, sorted) backend owns: `size` apportioned
/// by weight, the leftover slots going to the largest remainders (ties to
/// the earlier backend). The quotas sum to `size`.
fn slot_quotas(backends: &[MaglevBackend], size: u32) -> Vec<u32> {
    let total_weight: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    let size64 = u64::from(size);
    let mut quotas = Vec::with_capacity(backends.len());
    let mut remainders = Vec::with_capacity(backends.len());
    let mut assigned: u64 = 0;
    for (index, backend) in backends.iter().enumerate() {
        // In u128: exact for any size and weights.
        let share = u128::from(size64) * u128::from(backend.weight);
        let quota = (share / u128::from(total_weight)) as u64;
        let remainder = share % u128::from(total_weight);
        quotas.push(quota as u32);
        remainders.push((remainder, index));
        assigned += quota;
    }
    let leftover = size64.saturating_sub(assigned) as usize;
    // Largest remainder first; among equal remainders the earlier backend.
    remainders.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, index) in remainders.iter().take(leftover) {
        if let Some(q) = quotas.get_mut(index) {
            *q += 1;
        }
    }
    quotas
}

/// One backend's walk through the slots: 16 bytes, so a round of turns
/// reads the walks in order from a compact array.
struct Walk {
    /// The next slot of its permutation to try.
    next: u32,
    /// Its stride, in `1..size`.
    skip: u32,
    /// Turns left: its quota minus the slots it owns.
    remaining: u32,
    id: EndpointId,
}

/// Fills the table: backends take turns (sorted order) until each owns
/// its quota; a turn claims the first free slot of the backend's
/// permutation.
fn populate(backends: &[MaglevBackend], quotas: &[u32], mut table: Filling<'_>) {
    let size = table.slots.len() as u32;
    let mut walks: Vec<Walk> = backends
        .iter()
        .zip(quotas)
        .filter(|(_, &quota)| quota > 0)
        .map(|(backend, &quota)| {
            let identity = backend.identity_bytes();
            Walk {
                next: (bytes_hash(&identity, OFFSET_SALT) % u64::from(size)) as u32,
                skip: coprime_skip(bytes_hash(&identity, SKIP_SALT), size),
                remaining: quota,
                id: backend.id,
            }
        })
        .collect();

    // Probing costs about size/free tries per turn, so the last few slots
    // would cost most of the build; below √size free slots (where the two
    // costs meet, measured) each turn instead finds its slot among the free
    // ones directly. Where the switch happens does not change the table.
    let endgame = (size as f64).sqrt() as usize;
    let mut free = size as usize;
    // Large tables are probed through a bitmap: 1/32 of the slots' bytes,
    // so probes hit the cache where the slots themselves would not.
    let mut bitmap = (size > OWNER_PROBED_SLOTS).then(|| Bitmap::new(size));
    while free > endgame && !walks.is_empty() {
        // As many rounds as no walk runs out of turns in (and not far past
        // the switch): no bookkeeping per turn.
        let least = walks.iter().map(|w| w.remaining).min().unwrap_or(1);
        let to_endgame = (free - endgame).div_ceil(walks.len());
        let rounds = least.min(u32::try_from(to_endgame).unwrap_or(u32::MAX));
        for _ in 0..rounds {
            match bitmap.as_mut() {
                None => table.round(&mut walks),
                Some(taken) => table.round_with_bitmap(&mut walks, taken),
            }
        }
        for walk in walks.iter_mut() {
            walk.remaining -= rounds;
        }
        free -= rounds as usize * walks.len();
        walks.retain(|w| w.remaining > 0);
    }
    if !walks.is_empty() {
        table.endgame(&mut walks);
    }
}

/// Tables up to this many slots (1 MiB of slots) are probed by reading
/// the slots; larger ones through a bitmap. Either gives the same table.
const OWNER_PROBED_SLOTS: u32 = 1 << 18;

/// One bit per slot, set when the slot is taken. Its length in words is a
/// power of two, so that a word index masked with `mask` needs no bounds
/// check in the probing loop.
struct Bitmap {
    words: Vec<u64>,
    /// `words.len() - 1`.
    mask: usize,
}

impl Bitmap {
    fn new(size: u32) -> Bitmap {
        let words = (size as usize).div_ceil(64).max(1).next_power_of_two();
        Bitmap {
            words: vec![0; words],
            mask: words - 1,
        }
    }
}

/// An id no backend of `backends` has, to mark free slots while the table
/// fills: `EndpointId::MAX` unless a backend has it, else the first gap.
fn unused_id(backends: &[MaglevBackend]) -> EndpointId {
    if backends.iter().all(|b| b.id != EndpointId::MAX) {
        return EndpointId::MAX;
    }
    let mut ids: Vec<EndpointId> = backends.iter().map(|b| b.id).collect();
    ids.sort_unstable();
    ids.dedup();
    // Fewer ids than values: some value below the largest is missing.
    let mut candidate: EndpointId = 0;
    for id in ids {
        if id != candidate {
            break;
        }
        candidate += 1;
    }
    candidate
}

/// A table being filled: each slot holds its backend's id, or `free`.
/// Testing a slot reads the slot itself, so a try is one comparison
/// with memory and claiming a slot one store.
struct Filling<'a> {
    slots: &'a mut [EndpointId],
    free: EndpointId,
}

impl Filling<'_> {
    /// One turn of every walk, in order (the caller counts the turns). A
    /// turn tries the walk's slots in order until a free one: every stride
    /// is coprime with the size, so the walk meets every slot within
    /// `size` steps, and a free slot exists (quotas sum to the size). A
    /// try is an addition, a conditional subtraction and a comparison with
    /// memory: ten instructions, where a build of 65 537 slots makes some
    /// 357 000 tries.
    fn round(&mut self, walks: &mut [Walk]) {
        let free = self.free;
        let slots = &mut self.slots[..];
        let size = slots.len() as u64;
        for walk in walks.iter_mut() {
            let skip = u64::from(walk.skip);
            let mut next = u64::from(walk.next);
            let slot = loop {
                let slot = next;
                next = step(next, skip, size);
                match slots.get(slot as usize) {
                    Some(&owner) if owner != free => continue,
                    _ => break slot,
                }
            };
            walk.next = next as u32;
            if let Some(entry) = slots.get_mut(slot as usize) {
                *entry = walk.id;
            }
        }
    }

    /// [`Filling::round`] for a large table: the tries read the bitmap.
    fn round_with_bitmap(&mut self, walks: &mut [Walk], taken: &mut Bitmap) {
        let slots = &mut self.slots[..];
        let size = slots.len() as u64;
        let (words, mask) = (&mut taken.words[..], taken.mask);
        for walk in walks.iter_mut() {
            let skip = u64::from(walk.skip);
            let mut next = u64::from(walk.next);
            let slot = loop {
                let slot = next;
                next = step(next, skip, size);
                match words.get((slot / 64) as usize & mask) {
                    Some(&word) if (word >> (slot % 64)) & 1 != 0 => continue,
                    _ => break slot,
                }
            };
            walk.next = next as u32;
            if let Some(word) = words.get_mut((slot / 64) as usize & mask) {
                // The same bit as `1 << (slot % 64)`, written so that the
                // compiler does not compute it on every try.
                *word |= 1u64.rotate_left(slot as u32);
            }
            if let Some(entry) = slots.get_mut(slot as usize) {
                *entry = walk.id;
            }
        }
    }

    /// The free slots, in order. Blocks of 16 slots are checked without
    /// an early exit, which the compiler vectorizes.
    fn free_slots(&self) -> Vec<u32> {
        let mut found = Vec::new();
        for (block, chunk) in self.slots.chunks(16).enumerate() {
            if chunk.iter().fold(false, |any, &id| any | (id == self.free)) {
                for (offset, &id) in chunk.iter().enumerate() {
                    if id == self.free {
                        found.push((block * 16 + offset) as u32);
                    }
                }
            }
        }
        found
    }

    /// The remaining turns, with few free slots: a walk's first free slot is
    /// the one that comes earliest in its permutation, which the inverse of
    /// its stride computes directly: step(s) = (s − next) · skip⁻¹ mod size.
    /// Same result as probing, at one multiplication per free slot.
    fn endgame(&mut self, walks: &mut Vec<Walk>) {
        let size = self.slots.len() as u64;
        let mut free = self.free_slots();
        let modulo = Modulo::new(size);
        let mut turns: Vec<(Walk, u64)> = walks
            .drain(..)
            .map(|w| {
                let inverse = mod_inverse(u64::from(w.skip), size);
                (w, inverse)
            })
            .collect();
        while !turns.is_empty() && !free.is_empty() {
            for (walk, inverse) in turns.iter_mut() {
                let Some(index) = first_in_walk(&free, walk.next, *inverse, &modulo) else {
                    return;
                };
                let slot = free.swap_remove(index);
                walk.next = step(u64::from(slot), u64::from(walk.skip), size) as u32;
                if let Some(entry) = self.slots.get_mut(slot as usize) {
                    *entry = walk.id;
                }
                walk.remaining -= 1;
            }
            turns.retain(|(w, _)| w.remaining > 0);
        }
    }
}

/// The slot after `slot` on a walk of stride `skip`: `(slot + skip) mod
/// size` for `slot` and `skip` below `size`, by a conditional subtraction.
#[inline(always)]
fn step(slot: u64, skip: u64, size: u64) -> u64 {
    let next = slot + skip;
    if next >= size {
        next - size
    } else {
        next
    }
}

/// The index in `free` of the slot a walk at `next`, whose stride has the
/// inverse `inverse`, reaches first; `None` when `free` is empty. Steps
/// differ for different slots (the stride is invertible), so there is no
/// tie.
fn first_in_walk(free: &[u32], next: u32, inverse: u64, modulo: &Modulo) -> Option<usize> {
    let size = modulo.divisor;
    // The distance from `next` to a slot is (slot + back) mod size. Below
    // 2^31 slots, (slot + back) · inverse < 2^63: the reduction takes the
    // sum unreduced.
    let back = size - u64::from(next);
    let (mut least, mut found) = (u64::MAX, usize::MAX);
    if size < 1 << 31 {
        for (index, &slot) in free.iter().enumerate() {
            let steps = modulo.reduce((u64::from(slot) + back) * inverse);
            if steps < least {
                (least, found) = (steps, index);
            }
        }
    } else {
        for (index, &slot) in free.iter().enumerate() {
            let steps = modulo.reduce(step(u64::from(slot), back, size) * inverse);
            if steps < least {
                (least, found) = (steps, index);
            }
        }
    }
    (found < free.len()).then_some(found)
}

/// Remainders by a fixed divisor without a division (Barrett reduction):
/// the endgame takes one per free slot per turn.
struct Modulo {
    divisor: u64,
    /// floor((2^64 − 1) / divisor).
    reciprocal: u64,
}

impl Modulo {
    fn new(divisor: u64) -> Modulo {
        let divisor = divisor.max(1);
        Modulo {
            divisor,
            reciprocal: u64::MAX / divisor,
        }
    }

    /// `value % divisor`. The quotient estimate is above value / divisor −
    /// 1, so short by at most one: one correction.
    #[inline]
    fn reduce(&self, value: u64) -> u64 {
        let quotient = ((u128::from(value) * u128::from(self.reciprocal)) >> 64) as u64;
        let rest = value - quotient * self.divisor;
        if rest >= self.divisor {
            rest - self.divisor
        } else {
            rest
        }
    }
}

/// The inverse of `a` modulo `m` (`a` coprime with `m`), by extended Euclid.
///
/// In i64: for `a`, `m` below 2^32 every remainder and coefficient of the
/// algorithm stays below `m` in magnitude.
fn mod_inverse(a: u64, m: u64) -> u64 {
    let (mut old_r, mut r) = (a as i64, m as i64);
    let (mut old_s, mut s) = (1i64, 0i64);
    while r != 0 {
        let q = old_r / r;
        (old_r, r) = (r, old_r - q * r);
        (old_s, s) = (s, old_s - q * s);
    }
    old_s.rem_euclid(m.max(1) as i64) as u64
}

/// A stride in `1..size` coprime with `size` (for a prime size, any stride
/// in that range; other sizes get the next coprime one).
fn coprime_skip(hash: u64, size: u32) -> u32 {
    if size <= 1 {
        return 1;
    }
    let mut skip = (hash % u64::from(size - 1)) as u32 + 1;
    while gcd(skip, size) != 1 {
        skip = if skip + 1 >= size { 1 } else { skip + 1 };
    }
    skip
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::flow_hash;
    use crate::rules::DEFAULT_MAGLEV_TABLE_SIZE;
    use crate::wire::FiveTuple;

    const M: u32 = DEFAULT_MAGLEV_TABLE_SIZE;

    /// Backend `i`: 198.18.x.y (IPv4-mapped), port 8000 + i % 1000.
    fn backend(i: u32, weight: u32) -> MaglevBackend {
        let mut address = [0u8; 16];
        address[10] = 0xff;
        address[11] = 0xff;
        address[12] = 198;
        address[13] = 18 + ((i >> 16) & 1) as u8;
        address[14] = (i >> 8) as u8;
        address[15] = i as u8;
        MaglevBackend {
            address,
            port: 8000 + (i % 1000) as u16,
            weight,
            id: i,
        }
    }

    fn equal(n: u32) -> Vec<MaglevBackend> {
        (0..n).map(|i| backend(i, 1)).collect()
    }

    fn counts(table: &MaglevTable, n: usize) -> Vec<usize> {
        let mut counts = vec![0usize; n];
        for &id in table.slots().iter() {
            counts[id as usize] += 1;
        }
        counts
    }

    /// Largest share over mean share, minus one.
    fn imbalance(counts: &[usize]) -> f64 {
        let total: usize = counts.iter().sum();
        let mean = total as f64 / counts.len() as f64;
        let max = *counts.iter().max().unwrap() as f64;
        max / mean - 1.0
    }

    /// Deterministic pseudo-random 5-tuples (splitmix64).
    fn sample_tuples(n: usize) -> Vec<FiveTuple> {
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        (0..n)
            .map(|_| {
                let r = next();
                FiveTuple::v4(
                    [198, 18 + (r & 1) as u8, (r >> 8) as u8, (r >> 16) as u8],
                    [198, 19, 255, 1],
                    (r >> 32) as u16,
                    80,
                    6,
                )
            })
            .collect()
    }

    /// The paper's population loop, written plainly: backends (sorted) take
    /// turns until each owns its quota; a turn walks the permutation to the
    /// first free slot.
    fn reference_build(backends: &[MaglevBackend], size: u32) -> Vec<EndpointId> {
        let mut sorted: Vec<MaglevBackend> =
            backends.iter().copied().filter(|b| b.weight > 0).collect();
        sorted.sort_by_key(|b| (b.address, b.port, b.weight, b.id));
        let quotas = slot_quotas(&sorted, size);
        let mut owned = vec![0u32; sorted.len()];
        let mut step = vec![0u64; sorted.len()];
        let mut table: Vec<Option<EndpointId>> = vec![None; size as usize];
        let mut filled = 0;
        while filled < size {
            for (i, b) in sorted.iter().enumerate() {
                if owned[i] == quotas[i] {
                    continue;
                }
                let identity = b.identity_bytes();
                let offset = bytes_hash(&identity, OFFSET_SALT) % u64::from(size);
                let skip = u64::from(coprime_skip(bytes_hash(&identity, SKIP_SALT), size));
                loop {
                    let slot = ((offset + step[i] * skip) % u64::from(size)) as usize;
                    step[i] += 1;
                    if table[slot].is_none() {
                        table[slot] = Some(b.id);
                        break;
                    }
                }
                owned[i] += 1;
                filled += 1;
            }
        }
        table.into_iter().map(Option::unwrap).collect()
    }

    #[test]
    fn fast_population_equals_the_plain_algorithm() {
        for (n, size) in [
            (1u32, 7u32),
            (3, 13),
            (10, 251),
            (7, 1009),
            (100, 4099),
            (40, 65_537),
            // Past OWNER_PROBED_SLOTS: probed through the bitmap.
            (30, 262_147),
        ] {
            let backends: Vec<MaglevBackend> = (0..n).map(|i| backend(i, 1 + i % 4)).collect();
            let table = MaglevTable::build(&backends, size);
            assert_eq!(
                table.slots(),
                &reference_build(&backends, size)[..],
                "N = {n}, M = {size}"
            );
        }
    }

    /// FNV-1a (64-bit) over every slot as 4 little-endian bytes: the
    /// digest of a whole table in the pins below.
    fn fnv1a_digest(slots: &[EndpointId]) -> u64 {
        let mut hash = 0xcbf2_9ce4_8422_2325_u64;
        for byte in slots.iter().flat_map(|id| id.to_le_bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash
    }

    #[test]
    fn tables_of_a_fixed_backend_set_are_pinned() {
        // The digests, slot counts and entries were computed by
        // tests/golden/pins.py, a separate implementation of this module's
        // algorithm over the xxh3 of Python's `xxhash` package. They are
        // what makes two gateways (and two releases) with the same backends
        // send a flow to the same one: a change to the permutation hashes,
        // the identity bytes, the sort, the quotas or the turn order fails
        // here, and would move live flows.
        let addr = |s: &str| crate::wire::addr_to_bytes(s.parse().unwrap());
        let b = |address: &str, port, weight, id| MaglevBackend {
            address: addr(address),
            port,
            weight,
            id,
        };
        // Mixed families and weights, deliberately not in sorted order.
        let backends = [
            b("198.18.1.12", 8080, 3, 12),
            b("2001:2:0:1::11", 8080, 1, 13),
            b("198.18.1.11", 8080, 1, 10),
            b("198.18.1.11", 8081, 2, 11),
            b("2001:2:0:1::12", 443, 5, 14),
        ];
        // The pinned flow hashes of hash.rs's tests (IPv4 TCP, IPv4 UDP,
        // IPv6 TCP, IPv6 UDP): the lookup is part of the flow → backend map.
        let flows = [
            0xfac3_1dfc_35b9_d7de_u64,
            0x38d7_4ec5_0e1d_13de,
            0x8580_b626_35fe_8a8e,
            0xd4ea_e05f_e573_d374,
        ];
        type Pin = (
            u32,
            u64,
            [usize; 5],
            [(usize, EndpointId); 6],
            [EndpointId; 4],
        );
        let pins: [Pin; 2] = [
            (
                251,
                0x0b07_249b_914c_ccce,
                [21, 42, 63, 21, 104],
                [(0, 14), (1, 11), (2, 14), (100, 10), (125, 12), (250, 14)],
                [10, 10, 11, 14],
            ),
            (
                65_537,
                0x6f62_c777_7698_1afd,
                [5462, 10923, 16384, 5461, 27307],
                [
                    (0, 12),
                    (1, 14),
                    (2, 14),
                    (100, 10),
                    (32_768, 14),
                    (65_536, 12),
                ],
                [14, 14, 12, 11],
            ),
        ];
        for (size, digest, owned, entries, chosen) in pins {
            let table = MaglevTable::build(&backends, size);
            // Slots owned by ids 10..=14.
            let got: Vec<usize> = (10..15)
                .map(|id| table.slots().iter().filter(|&&s| s == id).count())
                .collect();
            assert_eq!(got, owned, "M = {size}: slots per backend");
            for (slot, id) in entries {
                assert_eq!(table.slots()[slot], id, "M = {size}: slot {slot}");
            }
            assert_eq!(
                fnv1a_digest(&table.slots()),
                digest,
                "M = {size}: digest of the table"
            );
            let got: Vec<Option<EndpointId>> = flows.iter().map(|&h| table.lookup(h)).collect();
            let want: Vec<Option<EndpointId>> = chosen.iter().copied().map(Some).collect();
            assert_eq!(got, want, "M = {size}: backends of the pinned flows");
        }
    }

    #[test]
    fn every_slot_is_filled_with_a_weighted_backend() {
        let mut backends = equal(10);
        backends[3].weight = 0;
        let table = MaglevTable::build(&backends, M);
        assert_eq!(table.size(), M as usize);
        let c = counts(&table, 10);
        assert_eq!(c[3], 0, "weight 0 claims no slot");
        assert_eq!(c.iter().sum::<usize>(), M as usize);
        assert!(c.iter().enumerate().all(|(i, &n)| i == 3 || n > 0));
    }

    #[test]
    fn equal_weights_are_balanced() {
        for n in [3u32, 10, 100, 1000] {
            let table = MaglevTable::build(&equal(n), M);
            let c = counts(&table, n as usize);
            let imb = imbalance(&c);
            let per = f64::from(M) / f64::from(n);
            let bound = per.ceil() / per - 1.0;
            println!(
                "N = {n}: imbalance {:.4} % (bound {:.4} %)",
                imb * 100.0,
                bound * 100.0
            );
            assert!(imb <= bound + 1e-9, "N = {n}: imbalance {imb} over {bound}");
            if n <= 650 {
                assert!(imb <= 0.01, "N = {n}: imbalance {imb}");
            }
        }
    }

    #[test]
    fn weights_set_the_shares() {
        let backends = [backend(0, 1), backend(1, 2), backend(2, 3)];
        let table = MaglevTable::build(&backends, M);
        let c = counts(&table, 3);
        for (i, &n) in c.iter().enumerate() {
            let share = n as f64 / f64::from(M);
            let want = (i + 1) as f64 / 6.0;
            println!("weight {}: share {share:.5} (want {want:.5})", i + 1);
            assert!(
                (share - want).abs() <= 0.01 * want,
                "weight {}: {share}",
                i + 1
            );
        }
    }

    #[test]
    fn removing_one_backend_moves_about_one_nth() {
        let tuples = sample_tuples(100_000);
        let hashes: Vec<u64> = tuples.iter().map(flow_hash).collect();
        for n in [3u32, 10, 100, 1000] {
            let all = equal(n);
            let before = MaglevTable::build(&all, M);
            let removed = n / 2;
            let rest: Vec<MaglevBackend> =
                all.iter().copied().filter(|b| b.id != removed).collect();
            let after = MaglevTable::build(&rest, M);

            let moved_slots = before
                .slots()
                .iter()
                .zip(after.slots().iter())
                .filter(|(a, b)| a != b)
                .count();
            let slot_fraction = moved_slots as f64 / f64::from(M);
            let moved_flows = hashes
                .iter()
                .filter(|&&h| before.lookup(h) != after.lookup(h))
                .count();
            let flow_fraction = moved_flows as f64 / hashes.len() as f64;
            let bound = 1.0 / f64::from(n) + 0.01;
            println!(
                "N = {n}: slots moved {:.3} %, flows moved {:.3} % (bound {:.3} %)",
                slot_fraction * 100.0,
                flow_fraction * 100.0,
                bound * 100.0
            );
            // The removed backend's own slots must move; they are ~1/N.
            assert!(slot_fraction >= 1.0 / f64::from(n) * 0.99);
            assert!(slot_fraction <= bound, "N = {n}: slots {slot_fraction}");
            assert!(flow_fraction <= bound, "N = {n}: flows {flow_fraction}");
            // Flows of surviving backends that moved went to survivors only.
            assert!(after.slots().iter().all(|&id| id != removed));
        }
    }

    #[test]
    fn order_of_backends_does_not_matter() {
        let backends = equal(50);
        let mut reversed = backends.clone();
        reversed.reverse();
        let mut shuffled = backends.clone();
        shuffled.rotate_left(17);
        shuffled.swap(3, 40);
        let a = MaglevTable::build(&backends, M);
        let b = MaglevTable::build(&reversed, M);
        let c = MaglevTable::build(&shuffled, M);
        assert_eq!(a.slots(), b.slots());
        assert_eq!(a.slots(), c.slots());
        for t in sample_tuples(1000) {
            let h = flow_hash(&t);
            assert_eq!(a.lookup(h), c.lookup(h));
        }
    }

    #[test]
    fn permutation_depends_on_identity_not_id() {
        // Same addresses, different ids: the same slots go to the same
        // addresses.
        let a_backends = equal(20);
        let b_backends: Vec<MaglevBackend> = a_backends
            .iter()
            .map(|b| MaglevBackend {
                id: b.id + 100,
                ..*b
            })
            .collect();
        let a = MaglevTable::build(&a_backends, M);
        let b = MaglevTable::build(&b_backends, M);
        assert!(a
            .slots()
            .iter()
            .zip(b.slots().iter())
            .all(|(x, y)| x + 100 == *y));
    }

    #[test]
    fn large_prime_table_builds_full_and_balanced() {
        let size = 655_373;
        let table = MaglevTable::build(&equal(100), size);
        assert_eq!(table.size(), size as usize);
        let c = counts(&table, 100);
        assert_eq!(c.iter().sum::<usize>(), size as usize);
        assert!(imbalance(&c) <= 0.01);
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        assert_eq!(MaglevTable::build(&[], M).lookup(42), None);
        assert_eq!(MaglevTable::build(&[backend(0, 0)], M).lookup(42), None);
        assert_eq!(MaglevTable::build(&equal(3), 0).lookup(42), None);
        // Size 1 and a non-prime size still fill every slot.
        assert_eq!(MaglevTable::build(&equal(3), 1).size(), 1);
        let t = MaglevTable::build(&equal(7), 1000);
        assert_eq!(counts(&t, 7).iter().sum::<usize>(), 1000);
        // More backends than slots: some get none, every slot is filled.
        let t = MaglevTable::build(&equal(20), 7);
        assert_eq!(counts(&t, 20).iter().filter(|&&n| n > 0).count(), 7);
        assert!([0u64, 1, u64::MAX].iter().all(|&h| t.lookup(h).is_some()));
    }

    #[test]
    fn an_id_of_u32_max_does_not_read_as_a_free_slot() {
        // Free slots are marked with an id no backend has; here the usual
        // mark, EndpointId::MAX, is a backend's.
        let mut backends: Vec<MaglevBackend> = (0..5).map(|i| backend(i, 1)).collect();
        backends[2].id = EndpointId::MAX;
        backends[0].id = 1;
        backends[1].id = 0;
        let table = MaglevTable::build(&backends, 1009);
        assert_eq!(table.slots(), &reference_build(&backends, 1009)[..]);
        assert_eq!(unused_id(&backends), 2);
        let ids: std::collections::HashSet<_> = table.slots().iter().copied().collect();
        assert_eq!(ids.len(), 5, "every backend owns slots");
    }

    #[test]
    fn barrett_reduction_matches_the_remainder() {
        for divisor in [1u64, 2, 7, 65_537, 655_373, u64::from(u32::MAX)] {
            let modulo = Modulo::new(divisor);
            for value in [
                0u64,
                1,
                divisor - 1,
                divisor,
                divisor + 1,
                1 << 40,
                u64::MAX - 1,
                u64::MAX,
            ] {
                assert_eq!(modulo.reduce(value), value % divisor, "{value} % {divisor}");
            }
        }
        for (a, m) in [(3u64, 7u64), (65_536, 65_537), (12_345, 655_373), (1, 2)] {
            assert_eq!(a * mod_inverse(a, m) % m, 1);
        }
    }

    #[test]
    fn a_table_of_one_backend_keeps_its_id_once_and_reads_as_full() {
        let one = [backend(7, 3), backend(8, 0)];
        let table = MaglevTable::build(&one, 1021);
        assert_eq!(table.size(), 1021);
        assert_eq!(table.slots(), &reference_build(&one, 1021)[..]);
        assert_eq!(table.slots().len(), 1021);
        for h in [0, 1, u64::MAX / 3, u64::MAX - 1, u64::MAX] {
            assert_eq!(table.lookup(h), Some(7), "hash {h}");
        }
        // A table of one slot is what it is.
        let tiny = MaglevTable::build(&one[..1], 1);
        assert_eq!((tiny.size(), tiny.lookup(u64::MAX)), (1, Some(7)));
        assert_eq!(MaglevTable::empty().lookup(5), None);
    }

    #[test]
    fn lookup_reduces_every_hash_into_the_table() {
        let table = MaglevTable::build(&equal(3), M);
        for h in [0, 1, u64::MAX / 2, u64::MAX - 1, u64::MAX] {
            assert!(table.lookup(h).is_some());
        }
        assert_eq!(reduce(u64::MAX, 65_537), 65_536);
        assert_eq!(reduce(0, 65_537), 0);
    }
}
