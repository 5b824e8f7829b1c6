//! The hash index from a tuple to its connection record.
//!
//! An open-addressed table of 64-byte buckets (one cache line each), each
//! with [`SLOTS`] slots: a 16-bit tag from the hash's top bits, and an entry
//! (record number, direction bit, "lives in its secondary bucket" bit). The
//! index stores no tuples: the caller confirms a tag match against the
//! record, so a lookup reads one bucket line and then the record.
//!
//! Two-choice placement: a key goes to its primary bucket (`hash & mask`)
//! and only when that is full to its secondary bucket (`primary ^ f(tag)`).
//! Each bucket counts its keys that overflowed; a lookup reads the
//! secondary bucket only when that count is non-zero, so almost every
//! lookup, hit or miss, is one bucket read. The secondary is derived from
//! the bucket and the tag alone (XOR is its own inverse), so removing an
//! overflowed key finds its primary's count without the hash.
//!
//! Sized at most half full: with a mean of at most 4 keys per 8-slot bucket
//! a key rarely finds both its buckets full. When it does, one key of those
//! buckets moves to its own other bucket if that has room ([`Index::make_room`],
//! one cuckoo step); only if none can does the table evict one of their
//! occupants (see the table's eviction policy).

use super::state::Direction;

/// Slots per bucket.
pub(super) const SLOTS: usize = 8;

/// Mean keys per bucket the index is sized for, at most.
const KEYS_PER_BUCKET: usize = SLOTS / 2;

/// A key's place in the index: `bucket * SLOTS + slot`.
pub(super) type Pos = u32;

const EMPTY: u32 = u32::MAX;
const REPLY_BIT: u32 = 1 << 31;
const SECONDARY_BIT: u32 = 1 << 30;
const RECORD_MASK: u32 = SECONDARY_BIT - 1;

/// Most buckets an index may have, so that every [`Pos`] fits the table's
/// 28-bit position fields with one value to spare.
pub(super) const MAX_BUCKETS: usize = 1 << 24;

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket {
    tags: [u16; SLOTS],
    entries: [u32; SLOTS],
    /// Keys whose primary bucket is this one but that live in their
    /// secondary bucket.
    overflow: u32,
}

impl Bucket {
    const EMPTY: Bucket = Bucket {
        tags: [0; SLOTS],
        entries: [EMPTY; SLOTS],
        overflow: 0,
    };

    /// A record in this bucket with `tag` for which `is_key` holds, the
    /// first in [`TaggedSlots`]' order (a tuple has one key in the index,
    /// so for a lookup at most one holds).
    #[inline(always)]
    fn scan(
        &self,
        tag: u16,
        is_key: &mut impl FnMut(u32, Direction) -> bool,
    ) -> Option<(u32, Direction)> {
        for slot in self.slots_tagged(tag) {
            let Some(&entry) = self.entries.get(slot) else {
                break;
            };
            if entry != EMPTY {
                let (record, direction) = decode(entry);
                if is_key(record, direction) {
                    return Some((record, direction));
                }
            }
        }
        None
    }

    /// The slots whose tag is `tag`. The tags are compared four to a
    /// word, as SWAR does, where a slot-by-slot loop takes five
    /// instructions a slot: most scans are of a whole bucket (a new
    /// flow's lookup that misses and its reply key's owner search), and
    /// most find no slot, which costs the two compares and one test.
    #[inline(always)]
    fn slots_tagged(&self, tag: u16) -> TaggedSlots {
        let t = &self.tags;
        let word = |i: usize| {
            u64::from(t[i])
                | u64::from(t[i + 1]) << 16
                | u64::from(t[i + 2]) << 32
                | u64::from(t[i + 3]) << 48
        };
        let probe = u64::from(tag).wrapping_mul(LANE_ONES);
        TaggedSlots(zero_lane_tops(word(0) ^ probe) >> 1 | zero_lane_tops(word(4) ^ probe))
    }

    fn free_slot(&self) -> Option<usize> {
        self.entries.iter().position(|&e| e == EMPTY)
    }

    fn for_each_record(&self, f: &mut impl FnMut(u32)) {
        for &entry in &self.entries {
            if entry != EMPTY {
                f(decode(entry).0);
            }
        }
    }
}

/// 1 in each 16-bit lane of a word.
const LANE_ONES: u64 = 0x0001_0001_0001_0001;
/// The top bit of each 16-bit lane.
const LANE_TOPS: u64 = 0x8000_8000_8000_8000;

/// The lanes of `x` that are zero, as their top bits (bit 15 for lane 0,
/// 31, 47, 63). Exact: a lane's top bit is set by adding 0x7FFF to its
/// low 15 bits (no carry crosses lanes) or by its own top bit, so it
/// stays clear only for zero.
#[inline(always)]
fn zero_lane_tops(x: u64) -> u64 {
    let nonzero = ((x & !LANE_TOPS).wrapping_add(!LANE_TOPS) | x) & LANE_TOPS;
    !nonzero & LANE_TOPS
}

/// Slots of a bucket, as an iterator, lane by lane: slot `i` (0..4) is
/// bit `16 i + 14`, slot `4 + i` bit `16 i + 15` — the two words' lane
/// tops, one shifted down by one, so that both fit in one word and none
/// needs gathering into a bit per slot.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct TaggedSlots(u64);

impl Iterator for TaggedSlots {
    type Item = usize;

    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let bit = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some((bit >> 4) + 4 * (bit & 1))
    }
}

#[inline(always)]
fn decode(entry: u32) -> (u32, Direction) {
    let direction = if entry & REPLY_BIT == 0 {
        Direction::FromClient
    } else {
        Direction::FromBackend
    };
    (entry & RECORD_MASK, direction)
}

fn encode(record: u32, direction: Direction, secondary: bool) -> u32 {
    let mut entry = record & RECORD_MASK;
    if direction == Direction::FromBackend {
        entry |= REPLY_BIT;
    }
    if secondary {
        entry |= SECONDARY_BIT;
    }
    entry
}

/// Where a hash may live.
struct Probe {
    primary: usize,
    secondary: usize,
    tag: u16,
}

/// The bucketized index; see the module doc.
pub(super) struct Index {
    buckets: Vec<Bucket>,
    mask: usize,
}

impl Index {
    /// An index for at most `max_keys` keys, at most half full then.
    pub(super) fn for_keys(max_keys: usize) -> Index {
        let buckets = max_keys
            .div_ceil(KEYS_PER_BUCKET)
            .next_power_of_two()
            .clamp(2, MAX_BUCKETS);
        Index {
            buckets: vec![Bucket::EMPTY; buckets],
            mask: buckets - 1,
        }
    }

    /// Number of buckets.
    #[cfg(test)]
    pub(super) fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Bytes the index holds.
    pub(super) fn memory_bytes(&self) -> usize {
        self.buckets.len() * std::mem::size_of::<Bucket>()
    }

    #[inline(always)]
    fn probe(&self, hash: u64) -> Probe {
        let primary = hash as usize & self.mask;
        let tag = (hash >> 48) as u16;
        Probe {
            primary,
            secondary: self.alternate(primary, tag),
            tag,
        }
    }

    /// The other bucket of a key with `tag` that lives in `bucket`. Never
    /// `bucket` itself (the XOR keeps bit 0 set and there are ≥ 2 buckets).
    #[inline(always)]
    fn alternate(&self, bucket: usize, tag: u16) -> usize {
        let spread = (u64::from(tag).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize | 1;
        (bucket ^ spread) & self.mask
    }

    /// Reads the primary bucket of `hash` (to bring it into cache); returns
    /// a value of it so the read cannot be optimised away.
    #[inline]
    pub(super) fn touch(&self, hash: u64) -> u32 {
        let probe = self.probe(hash);
        self.buckets.get(probe.primary).map_or(0, |b| b.overflow)
    }

    /// The first key in the primary bucket of `hash` whose tag matches,
    /// as (record, direction): the record a lookup of `hash` will most
    /// likely read.
    #[inline(always)]
    pub(super) fn first_candidate(&self, hash: u64) -> Option<(u32, Direction)> {
        let probe = self.probe(hash);
        let bucket = self.buckets.get(probe.primary)?;
        // Slot by slot, not `slots_tagged`: an established key is most
        // often in the first slots, where this loop stops early; the word
        // compare cost an established packet 8 instructions more.
        let slot = bucket
            .tags
            .iter()
            .zip(bucket.entries.iter())
            .position(|(&t, &e)| t == probe.tag && e != EMPTY)?;
        Some(decode(*bucket.entries.get(slot)?))
    }

    /// The first (record, direction) stored under `hash` for which `is_key`
    /// holds.
    #[inline(always)]
    pub(super) fn find(
        &self,
        hash: u64,
        mut is_key: impl FnMut(u32, Direction) -> bool,
    ) -> Option<(u32, Direction)> {
        let probe = self.probe(hash);
        let primary = self.buckets.get(probe.primary)?;
        if let Some(hit) = primary.scan(probe.tag, &mut is_key) {
            return Some(hit);
        }
        if primary.overflow == 0 {
            return None;
        }
        self.buckets
            .get(probe.secondary)?
            .scan(probe.tag, &mut is_key)
    }

    /// Stores (record, direction) under `hash`: in the primary bucket, else
    /// the secondary; `None` when both are full.
    pub(super) fn insert(&mut self, hash: u64, record: u32, direction: Direction) -> Option<Pos> {
        let probe = self.probe(hash);
        let primary = self.buckets.get_mut(probe.primary)?;
        if let Some(slot) = primary.free_slot() {
            return place(
                primary,
                probe.primary,
                slot,
                probe.tag,
                encode(record, direction, false),
            );
        }
        let secondary = self.buckets.get_mut(probe.secondary)?;
        let slot = secondary.free_slot()?;
        let pos = place(
            secondary,
            probe.secondary,
            slot,
            probe.tag,
            encode(record, direction, true),
        )?;
        if let Some(primary) = self.buckets.get_mut(probe.primary) {
            primary.overflow += 1;
        }
        Some(pos)
    }

    /// Frees a slot in one of the buckets of `hash` by moving one of their
    /// keys to that key's other bucket, where one has room (one step of
    /// cuckoo hashing). Returns the moved key as (record, direction, new
    /// position), or `None` when no key can move. Reads at most 2 + 16
    /// buckets; used only when both buckets of a new key are full.
    pub(super) fn make_room(&mut self, hash: u64) -> Option<(u32, Direction, Pos)> {
        let probe = self.probe(hash);
        for from in [probe.primary, probe.secondary] {
            let bucket = self.buckets.get(from)?;
            let slots = bucket.tags.iter().zip(bucket.entries.iter()).enumerate();
            let movable =
                slots
                    .filter(|(_, (_, &e))| e != EMPTY)
                    .find_map(|(slot, (&tag, &entry))| {
                        let to = self.alternate(from, tag);
                        let free = self.buckets.get(to)?.free_slot()?;
                        Some((slot, tag, entry, to, free))
                    });
            let Some((slot, tag, entry, to, free)) = movable else {
                continue;
            };
            // From its primary to its secondary, or back.
            let to_secondary = entry & SECONDARY_BIT == 0;
            let (primary, moved) = if to_secondary {
                (from, entry | SECONDARY_BIT)
            } else {
                (to, entry & !SECONDARY_BIT)
            };
            *self.buckets.get_mut(from)?.entries.get_mut(slot)? = EMPTY;
            let pos = place(self.buckets.get_mut(to)?, to, free, tag, moved)?;
            let p = self.buckets.get_mut(primary)?;
            p.overflow = if to_secondary {
                p.overflow + 1
            } else {
                p.overflow.saturating_sub(1)
            };
            let (record, direction) = decode(moved);
            return Some((record, direction, pos));
        }
        None
    }

    /// Clears the key at `pos` (no-op if it is empty or out of range).
    pub(super) fn remove(&mut self, pos: Pos) {
        let bucket = pos as usize / SLOTS;
        let slot = pos as usize % SLOTS;
        let Some(b) = self.buckets.get_mut(bucket) else {
            return;
        };
        let (Some(entry), Some(&tag)) = (b.entries.get_mut(slot), b.tags.get(slot)) else {
            return;
        };
        let was = std::mem::replace(entry, EMPTY);
        if was != EMPTY && was & SECONDARY_BIT != 0 {
            let primary = self.alternate(bucket, tag);
            if let Some(p) = self.buckets.get_mut(primary) {
                p.overflow = p.overflow.saturating_sub(1);
            }
        }
    }

    /// Calls `f` with the record of every key in both buckets of `hash`.
    pub(super) fn for_each_in_buckets(&self, hash: u64, mut f: impl FnMut(u32)) {
        let probe = self.probe(hash);
        for bucket in [probe.primary, probe.secondary] {
            if let Some(b) = self.buckets.get(bucket) {
                b.for_each_record(&mut f);
            }
        }
    }

    /// Every stored key as (pos, record, direction), and whether every
    /// bucket's overflow count equals the keys that overflowed from it.
    #[cfg(test)]
    pub(super) fn audit(&self) -> (Vec<(Pos, u32, Direction)>, bool) {
        let mut keys = Vec::new();
        let mut overflowed = vec![0u32; self.buckets.len()];
        for (b, bucket) in self.buckets.iter().enumerate() {
            for (s, (&tag, &entry)) in bucket.tags.iter().zip(&bucket.entries).enumerate() {
                if entry == EMPTY {
                    continue;
                }
                let (record, direction) = decode(entry);
                keys.push(((b * SLOTS + s) as Pos, record, direction));
                if entry & SECONDARY_BIT != 0 {
                    overflowed[self.alternate(b, tag)] += 1;
                }
            }
        }
        let counts_match = self
            .buckets
            .iter()
            .zip(&overflowed)
            .all(|(b, &n)| b.overflow == n);
        (keys, counts_match)
    }
}

fn place(bucket: &mut Bucket, index: usize, slot: usize, tag: u16, entry: u32) -> Option<Pos> {
    *bucket.tags.get_mut(slot)? = tag;
    *bucket.entries.get_mut(slot)? = entry;
    Some((index * SLOTS + slot) as Pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-at-a-time tag compare finds exactly the slots a
    /// slot-by-slot compare finds, for tags that differ in one bit, in
    /// the top bit, or not at all, and for random ones.
    #[test]
    fn slots_tagged_are_exactly_the_slots_with_the_tag() {
        let mut bucket = Bucket::EMPTY;
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..20_000 {
            let tag = next() as u16;
            for slot in 0..SLOTS {
                let r = next();
                bucket.tags[slot] = match r % 6 {
                    0 => tag,
                    1 => tag ^ (1 << ((r >> 8) % 16)),
                    2 => tag ^ 0x8000,
                    3 => 0,
                    4 => 0xffff,
                    _ => (r >> 16) as u16,
                };
            }
            let expected = (0..SLOTS)
                .filter(|&s| bucket.tags[s] == tag)
                .fold(0u32, |m, s| m | 1 << s);
            let found = bucket.slots_tagged(tag).fold(0u32, |m, s| m | 1 << s);
            assert_eq!(
                found, expected,
                "round {round}: {:?} for {tag:#x}",
                bucket.tags
            );
        }
        bucket.tags = [7; SLOTS];
        let all: Vec<usize> = bucket.slots_tagged(7).collect();
        assert_eq!(
            all,
            [0, 4, 1, 5, 2, 6, 3, 7],
            "lane by lane, each slot once"
        );
        assert_eq!(bucket.slots_tagged(0).next(), None);
    }

    #[test]
    fn a_bucket_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
        assert_eq!(std::mem::align_of::<Bucket>(), 64);
    }

    #[test]
    fn sized_at_most_half_full() {
        assert_eq!(Index::for_keys(2 * 1_048_576).bucket_count(), 1 << 19);
        assert_eq!(Index::for_keys(0).bucket_count(), 2);
        let idx = Index::for_keys(2 * 100_000);
        assert!(idx.bucket_count() * SLOTS >= 4 * 100_000);
    }

    #[test]
    fn alternate_is_its_own_inverse_and_never_the_same_bucket() {
        let idx = Index::for_keys(1000);
        for bucket in 0..idx.bucket_count() {
            for tag in [0u16, 1, 77, 40000, u16::MAX] {
                let alt = idx.alternate(bucket, tag);
                assert_ne!(alt, bucket);
                assert_eq!(idx.alternate(alt, tag), bucket);
            }
        }
    }

    #[test]
    fn overflow_goes_to_the_secondary_and_is_found_there() {
        let mut idx = Index::for_keys(64);
        let hash = 0xabcd_0000_0000_0005u64;
        let mut positions = Vec::new();
        for r in 0..(2 * SLOTS as u32) {
            positions.push(idx.insert(hash, r, Direction::FromClient).unwrap());
        }
        assert_eq!(idx.insert(hash, 99, Direction::FromClient), None);
        for r in 0..(2 * SLOTS as u32) {
            assert_eq!(
                idx.find(hash, |rec, _| rec == r),
                Some((r, Direction::FromClient))
            );
        }
        let (keys, counts_match) = idx.audit();
        assert_eq!(keys.len(), 2 * SLOTS);
        assert!(counts_match);
        // Removing the overflowed keys brings the count back to zero, and
        // then a miss reads only the primary.
        for &pos in &positions[SLOTS..] {
            idx.remove(pos);
        }
        let (_, counts_match) = idx.audit();
        assert!(counts_match);
        assert_eq!(idx.find(hash, |rec, _| rec == 12), None);
    }

    #[test]
    fn make_room_moves_a_key_to_its_other_bucket() {
        let mut idx = Index::for_keys(64);
        let hash = 0xabcd_0000_0000_0005u64;
        for r in 0..(2 * SLOTS as u32) {
            idx.insert(hash, r, Direction::FromBackend).unwrap();
        }
        // Every key shares one bucket pair: nothing can move.
        assert_eq!(idx.make_room(hash), None);
        // A key of another tag in the primary can move to its own secondary.
        let mut idx = Index::for_keys(64);
        let secondary = idx.probe(hash).secondary;
        let other = (1..=u16::MAX)
            .map(|tag| u64::from(tag) << 48 | 5)
            .find(|&h| idx.probe(h).secondary != secondary)
            .unwrap();
        idx.insert(other, 100, Direction::FromClient).unwrap();
        for r in 0..(2 * SLOTS as u32 - 1) {
            idx.insert(hash, r, Direction::FromClient).unwrap();
        }
        assert_eq!(idx.insert(hash, 98, Direction::FromClient), None);
        let (record, direction, pos) = idx.make_room(hash).unwrap();
        assert_eq!((record, direction), (100, Direction::FromClient));
        assert_eq!(
            idx.find(other, |r, _| r == 100),
            Some((100, Direction::FromClient))
        );
        let placed = idx.insert(hash, 99, Direction::FromClient).unwrap();
        assert_ne!(placed, pos);
        assert_eq!(
            idx.find(hash, |r, _| r == 99),
            Some((99, Direction::FromClient))
        );
        let (keys, counts_match) = idx.audit();
        assert!(counts_match);
        assert!(keys.contains(&(pos, 100, Direction::FromClient)));
        // A key in its secondary moves back once its primary has room.
        idx.remove(placed);
        let (record, _, pos) = idx.make_room(hash).unwrap();
        assert_eq!(pos as usize / SLOTS, idx.probe(hash).primary);
        assert!(idx.audit().1);
        assert_eq!(
            idx.find(hash, |r, _| r == record),
            Some((record, Direction::FromClient))
        );
    }

    #[test]
    fn remove_out_of_range_is_a_no_op() {
        let mut idx = Index::for_keys(16);
        idx.remove(Pos::MAX);
        idx.remove((idx.bucket_count() * SLOTS) as Pos);
        assert!(idx.audit().0.is_empty());
    }
}
