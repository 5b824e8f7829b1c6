//! One shard of the path table: an immutable open-addressing hash table in
//! one allocation of `u32` words.
//!
//! Layout, for a family whose addresses take `A` words (1 for IPv4, 4 for
//! IPv6): `cap` slots of `A + 2` words, `[tag, address…, value]`, then the
//! backend lists. The tag is `service << 8 | prefix length` (an empty slot
//! has [`EMPTY_TAG`]); the address is masked to the prefix length; the
//! value is one [`BackendRef`] or, with [`LIST_FLAG`] set, the word offset
//! of a list `[len, ref…]` further down the same allocation.
//!
//! Slots are found by linear probing from `fastrange(hash, cap)`, with
//! `cap ≈ 5/3 n`: a load of 0.6, so a hit reads about 1.75 slots and a
//! miss about 3.6, nearly always one or two adjacent cache lines. A shard
//! is never modified: an update builds a new one sized for its new count,
//! so memory follows the count both ways.

use std::sync::Arc;

use super::super::backend_ref::BackendRef;

/// The tag of an empty slot; no real tag has it (lengths are ≤ 128).
pub(super) const EMPTY_TAG: u32 = u32::MAX;
/// Set in a value word that points at a backend list.
pub(super) const LIST_FLAG: u32 = 1 << 31;
/// The largest service id a path can belong to (24 bits of the tag).
pub(super) const MAX_SERVICE: u32 = (1 << 24) - 1;

/// A path's key in a family of `A` address words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Key<const A: usize> {
    /// `service << 8 | length`.
    pub(super) tag: u32,
    /// The address, masked to the length, most significant word first.
    pub(super) addr: [u32; A],
}

impl<const A: usize> Key<A> {
    /// The key of `service`'s prefix of `len` bits holding `addr` (masked
    /// here).
    #[inline]
    pub(super) fn new(service: u32, len: u8, addr: [u32; A]) -> Key<A> {
        let mut masked = addr;
        for (i, word) in masked.iter_mut().enumerate() {
            let bits = u32::from(len).saturating_sub(32 * i as u32).min(32);
            *word &= u32::MAX.checked_shl(32 - bits).unwrap_or(0);
        }
        Key {
            tag: service << 8 | u32::from(len),
            addr: masked,
        }
    }

    pub(super) fn service(&self) -> u32 {
        self.tag >> 8
    }

    pub(super) fn len(&self) -> u8 {
        // Truncation intended: the low byte is the length.
        self.tag as u8
    }

    /// The key's fixed-seed hash: its top 12 bits choose the shard, its
    /// low 32 the home slot in it.
    #[inline]
    pub(super) fn hash(&self) -> u64 {
        let mut h = HASH_SEED;
        let mut pending = u64::from(self.tag);
        let mut half = true;
        for &word in &self.addr {
            if half {
                pending = pending << 32 | u64::from(word);
                h = fmix64(h ^ pending);
                half = false;
            } else {
                pending = u64::from(word);
                half = true;
            }
        }
        if half {
            // An odd number of words: the last one is still pending.
            h = fmix64(h ^ pending);
        }
        h
    }
}

/// Fixed, so that every gateway builds the same tables.
const HASH_SEED: u64 = 0x6a09_e667_f3bc_c908;

/// MurmurHash3's 64-bit finalizer: every input bit flips about half the
/// output bits.
#[inline]
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// Which of `n` positions a hash's low 32 bits pick (Lemire's multiply
/// and shift, no division).
#[inline]
fn fastrange(hash: u64, n: usize) -> usize {
    // Truncations intended: the low 32 bits of the hash, and a product
    // shifted back under `n`.
    ((hash as u32 as u64 * n as u64) >> 32) as usize
}

/// A shard as the table holds it: its words and its slot count, kept
/// beside the pointer so that a lookup's first read is the slot itself.
#[derive(Clone, Debug)]
pub(super) struct ShardRef {
    words: Arc<[u32]>,
    cap: u32,
}

/// Where a path goes: one backend, or a list to choose from by flow hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathTarget<'a> {
    /// One backend.
    One(BackendRef),
    /// Two or more backends.
    Many(BackendList<'a>),
}

/// A path's backends (at least two), borrowed from the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendList<'a> {
    refs: &'a [u32],
}

impl<'a> PathTarget<'a> {
    /// The backend for a flow: the only one, or the list's entry chosen by
    /// the flow hash (the same flow always gets the same backend, on every
    /// gateway).
    #[inline]
    pub fn pick(&self, flow_hash: u64) -> BackendRef {
        match *self {
            PathTarget::One(backend) => backend,
            PathTarget::Many(list) => {
                // Multiply-high maps the hash onto 0..len, so the index is
                // always in bounds; lists are never empty.
                let i = ((u128::from(flow_hash) * list.refs.len() as u128) >> 64) as usize;
                BackendRef::from_word(list.refs[i])
            }
        }
    }

    /// Every backend, in the order given.
    pub fn backends(&self) -> Vec<BackendRef> {
        match *self {
            PathTarget::One(backend) => vec![backend],
            PathTarget::Many(list) => list.iter().collect(),
        }
    }

    /// How many backends it names.
    pub fn len(&self) -> usize {
        match self {
            PathTarget::One(_) => 1,
            PathTarget::Many(list) => list.refs.len(),
        }
    }

    /// Never: a path names at least one backend (for clippy's sake).
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl<'a> BackendList<'a> {
    /// The backends, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = BackendRef> + 'a {
        self.refs.iter().map(|&r| BackendRef::from_word(r))
    }
}

impl ShardRef {
    /// A shard with no entry (shared by every empty position).
    pub(super) fn empty() -> ShardRef {
        ShardRef {
            words: Arc::from(Vec::new()),
            cap: 0,
        }
    }

    /// A shard of `entries` (hash, key, backend refs as numbers; keys
    /// distinct, every hash in this shard's range, 1..=16 refs each).
    pub(super) fn build<const A: usize>(
        entries: &[(u64, Key<A>, &[u32])],
        empty: &ShardRef,
    ) -> ShardRef {
        if entries.is_empty() {
            return empty.clone();
        }
        let stride = A + 2;
        let n = entries.len();
        let cap = n + n * 2 / 3 + 1;
        let list_words: usize = entries
            .iter()
            .filter(|(_, _, refs)| refs.len() > 1)
            .map(|(_, _, refs)| 1 + refs.len())
            .sum();
        let mut words = vec![0u32; cap * stride + list_words];
        for slot in words[..cap * stride].chunks_exact_mut(stride) {
            slot[0] = EMPTY_TAG;
        }
        let mut next_list = cap * stride;
        for &(hash, key, refs) in entries {
            let mut i = fastrange(hash, cap);
            while words[i * stride] != EMPTY_TAG {
                i = if i + 1 == cap { 0 } else { i + 1 };
            }
            let value = match refs {
                [one] => *one,
                many => {
                    let at = next_list;
                    words[at] = many.len() as u32;
                    words[at + 1..at + 1 + many.len()].copy_from_slice(many);
                    next_list += 1 + many.len();
                    LIST_FLAG | at as u32
                }
            };
            let slot = &mut words[i * stride..(i + 1) * stride];
            slot[0] = key.tag;
            slot[1..=A].copy_from_slice(&key.addr);
            slot[A + 1] = value;
        }
        ShardRef {
            words: Arc::from(words),
            // A shard holds at most a table's worth of paths, far below 2^32.
            cap: cap as u32,
        }
    }

    /// The target of `key` (whose hash is `hash`), if the shard has it.
    #[inline]
    pub(super) fn find<const A: usize>(&self, key: &Key<A>, hash: u64) -> Option<PathTarget<'_>> {
        let cap = self.cap as usize;
        if cap == 0 {
            return None;
        }
        let stride = A + 2;
        let mut i = fastrange(hash, cap);
        // At least one slot is empty, so the probe ends within `cap` steps.
        for _ in 0..cap {
            let slot = self.words.get(i * stride..(i + 1) * stride)?;
            let tag = slot[0];
            if tag == EMPTY_TAG {
                return None;
            }
            if tag == key.tag && slot[1..=A] == key.addr {
                return self.target(slot[A + 1]);
            }
            i = if i + 1 == cap { 0 } else { i + 1 };
        }
        None
    }

    /// Reads the tag of `hash`'s home slot, so that a later [`find`] finds
    /// the line in cache; 0 for an empty shard.
    ///
    /// [`find`]: ShardRef::find
    #[inline]
    pub(super) fn warm<const A: usize>(&self, hash: u64) -> u32 {
        let cap = self.cap as usize;
        if cap == 0 {
            return 0;
        }
        let home = fastrange(hash, cap);
        self.words.get(home * (A + 2)).copied().unwrap_or(0)
    }

    /// The target a value word stands for.
    #[inline]
    fn target(&self, value: u32) -> Option<PathTarget<'_>> {
        if value & LIST_FLAG == 0 {
            return Some(PathTarget::One(BackendRef::from_word(value)));
        }
        let at = (value & !LIST_FLAG) as usize;
        let len = *self.words.get(at)? as usize;
        let refs = self.words.get(at + 1..at + 1 + len)?;
        (refs.len() >= 2).then_some(PathTarget::Many(BackendList { refs }))
    }

    /// Every entry: key and backend refs (as numbers).
    pub(super) fn entries<const A: usize>(&self) -> impl Iterator<Item = (Key<A>, &[u32])> + '_ {
        let stride = A + 2;
        let table = self.words.get(..self.cap as usize * stride).unwrap_or(&[]);
        table.chunks_exact(stride).filter_map(move |slot| {
            if slot[0] == EMPTY_TAG {
                return None;
            }
            let mut addr = [0u32; A];
            addr.copy_from_slice(&slot[1..=A]);
            let value = &slot[A + 1..A + 2];
            let refs = if value[0] & LIST_FLAG == 0 {
                value
            } else {
                let at = (value[0] & !LIST_FLAG) as usize;
                let len = self.words.get(at).copied().unwrap_or(0) as usize;
                self.words.get(at + 1..at + 1 + len).unwrap_or(&[])
            };
            Some((Key { tag: slot[0], addr }, refs))
        })
    }

    /// How many entries it holds (a scan).
    #[cfg(test)]
    pub(super) fn count<const A: usize>(&self) -> usize {
        self.entries::<A>().count()
    }

    /// Whether it is the very allocation of `other`.
    pub(super) fn same_as(&self, other: &ShardRef) -> bool {
        Arc::ptr_eq(&self.words, &other.words)
    }

    /// Bytes of its allocation (Arc counts and words).
    pub(super) fn heap_bytes(&self) -> usize {
        2 * std::mem::size_of::<usize>() + std::mem::size_of_val(&*self.words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_masked_to_their_length() {
        let key = Key::<4>::new(3, 40, [0x2001_0db8, 0xffff_ffff, 1, 2]);
        assert_eq!(key.addr, [0x2001_0db8, 0xff00_0000, 0, 0]);
        assert_eq!((key.service(), key.len()), (3, 40));
        assert_eq!(Key::<1>::new(1, 0, [0xc612_0001]).addr, [0]);
        assert_eq!(Key::<1>::new(1, 32, [0xc612_0001]).addr, [0xc612_0001]);
        assert_eq!(Key::<4>::new(1, 128, [1, 2, 3, 4]).addr, [1, 2, 3, 4]);
    }

    #[test]
    fn hashes_differ_by_service_length_and_address() {
        let base = Key::<1>::new(1, 32, [0xc612_0001]).hash();
        assert_ne!(base, Key::<1>::new(2, 32, [0xc612_0001]).hash());
        assert_ne!(base, Key::<1>::new(1, 31, [0xc612_0000]).hash());
        assert_ne!(base, Key::<1>::new(1, 32, [0xc612_0002]).hash());
        // Pinned, so that a change to the hash (which moves list picks and
        // nothing else) is noticed.
        assert_eq!(Key::<1>::new(0, 0, [0]).hash(), fmix64(HASH_SEED));
    }

    #[test]
    fn a_shard_finds_what_it_holds_and_nothing_else() {
        let empty = ShardRef::empty();
        let keys: Vec<Key<4>> = (0..50u32)
            .map(|i| Key::new(i % 3, 128, [i, 0, 0, i]))
            .collect();
        let lists: Vec<Vec<u32>> = (0..50u32)
            .map(|i| (0..1 + i % 3).map(|j| i * 10 + j).collect())
            .collect();
        let entries: Vec<(u64, Key<4>, &[u32])> = keys
            .iter()
            .zip(&lists)
            .map(|(key, refs)| (key.hash(), *key, refs.as_slice()))
            .collect();
        let shard = ShardRef::build(&entries, &empty);
        assert_eq!(shard.count::<4>(), 50);
        for (hash, key, refs) in &entries {
            let target = shard.find(key, *hash).unwrap();
            let got: Vec<u32> = target.backends().iter().map(|b| b.get()).collect();
            assert_eq!(&got, refs);
        }
        let absent = Key::<4>::new(0, 128, [7, 0, 0, 8]);
        assert_eq!(shard.find(&absent, absent.hash()), None);
        assert!(ShardRef::build::<4>(&[], &empty).same_as(&empty));
        assert_eq!(empty.find(&absent, absent.hash()), None);
    }

    #[test]
    fn a_list_pick_spreads_flows_and_is_stable() {
        let empty = ShardRef::empty();
        let key = Key::<1>::new(1, 32, [5]);
        let refs = [10u32, 11, 12, 13];
        let shard = ShardRef::build(&[(key.hash(), key, &refs[..])], &empty);
        let target = shard.find(&key, key.hash()).unwrap();
        let mut seen = [0usize; 4];
        for flow in 0..4000u64 {
            let hash = fmix64(flow);
            let pick = target.pick(hash);
            assert_eq!(pick, target.pick(hash));
            seen[(pick.get() - 10) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
    }
}
