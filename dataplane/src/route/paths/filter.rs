//! A presence filter in front of one middle node's shards: a blocked
//! Bloom filter of one 64-bit word per key, so that a lookup for a client
//! with no path (most clients, on most platforms) reads one word of a
//! small, dense array instead of a slot of the large table: a likely
//! cache and TLB hit in place of a likely miss of both.
//!
//! A key sets three bits of one word, all chosen from its table hash (no
//! second hash): the word from bits 24 and up, the bits from bits 0–17.
//! The top 12 bits, which choose the shard, are the same for all keys of
//! a middle node and are not used. The filter has a power-of-two number of
//! words, at least one per [`KEYS_PER_WORD`] keys, so about 8 to 16 bits
//! per key: a key that is not there passes about 2–4 % of the time, a key
//! that is there always passes.
//!
//! Removing a key leaves its bits (they may be another key's too), so a
//! filter only gains bits until it is rebuilt from its shards' keys:
//! when it holds twice the keys it was sized for, or when removed keys'
//! bits outnumber the live ones'. A rebuild reads one middle node's keys
//! (1/64 of the family's), so no edit pays for the whole table.

use std::sync::Arc;

/// Keys per filter word when a filter is sized: 8 bits per key.
const KEYS_PER_WORD: usize = 8;
/// Bit of the hash where the word index starts (above the bits that
/// choose the three bits, below those that choose the shard).
const WORD_SHIFT: u32 = 24;

/// One middle node's filter; immutable, shared between versions.
#[derive(Clone, Debug)]
pub(super) struct Filter {
    words: Arc<[u64]>,
    /// Keys whose bits are set, removed ones included.
    inserted: u32,
    /// Keys that are in the shards now.
    live: u32,
}

impl Filter {
    /// A filter that holds no key (and passes none).
    pub(super) fn empty() -> Filter {
        Filter {
            words: Arc::from(Vec::new()),
            inserted: 0,
            live: 0,
        }
    }

    /// A filter of exactly the keys whose hashes are `hashes`.
    pub(super) fn build(hashes: impl ExactSizeIterator<Item = u64>) -> Filter {
        let count = hashes.len();
        if count == 0 {
            return Filter::empty();
        }
        let mut words = vec![0u64; count.div_ceil(KEYS_PER_WORD).next_power_of_two()];
        let mask = words.len() - 1;
        for hash in hashes {
            let (word, bits) = position(hash, mask);
            words[word] |= bits;
        }
        // Counts of keys in one middle node, far below 2^32.
        let count = count as u32;
        Filter {
            words: Arc::from(words),
            inserted: count,
            live: count,
        }
    }

    /// Whether a key of hash `hash` may be in the shards: `false` means it
    /// is not.
    #[inline]
    pub(super) fn may_hold(&self, hash: u64) -> bool {
        let Some(mask) = self.words.len().checked_sub(1) else {
            return false;
        };
        let (word, bits) = position(hash, mask);
        self.words.get(word).is_some_and(|&w| w & bits == bits)
    }

    /// Whether this filter, once `added` keys come and `removed` go, is
    /// still fit to keep (then [`Filter::with`] updates it) or must be
    /// rebuilt from the keys.
    pub(super) fn keeps(&self, added: usize, removed: usize) -> bool {
        let inserted = self.inserted as usize + added;
        let live = (self.live as usize + added).saturating_sub(removed);
        let sized_for = self.words.len() * KEYS_PER_WORD;
        live > 0 && live <= 2 * sized_for && inserted - live <= live
    }

    /// This filter with the keys of `added` hashes set and `removed` keys
    /// gone (their bits stay).
    pub(super) fn with(&self, added: &[u64], removed: usize) -> Filter {
        let mut words = self.words.to_vec();
        let mask = words.len() - 1;
        for &hash in added {
            let (word, bits) = position(hash, mask);
            words[word] |= bits;
        }
        let added_count = added.len() as u32;
        Filter {
            words: Arc::from(words),
            inserted: self.inserted + added_count,
            live: (self.live + added_count).saturating_sub(removed as u32),
        }
    }

    /// Bytes of its words (with their `Arc` counts).
    pub(super) fn heap_bytes(&self) -> usize {
        2 * std::mem::size_of::<usize>() + std::mem::size_of_val(&*self.words)
    }
}

/// The word and the three bits of `hash` in a filter of `mask + 1` words.
#[inline]
fn position(hash: u64, mask: usize) -> (usize, u64) {
    // Truncations intended: bit fields of the hash.
    let word = (hash >> WORD_SHIFT) as usize & mask;
    let bits = 1u64 << (hash & 63) | 1u64 << (hash >> 6 & 63) | 1u64 << (hash >> 12 & 63);
    (word, bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mix(i: u64) -> u64 {
        let mut k = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
        k = (k ^ (k >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        k = (k ^ (k >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        k ^ (k >> 31)
    }

    #[test]
    fn every_key_passes_and_few_others_do() {
        let keys: Vec<u64> = (0..10_000).map(mix).collect();
        let filter = Filter::build(keys.iter().copied());
        assert!(keys.iter().all(|&h| filter.may_hold(h)));
        let false_passes = (10_000..110_000)
            .map(mix)
            .filter(|&h| filter.may_hold(h))
            .count();
        // About 2-4 %; well under 6 % whatever the sizing's rounding.
        assert!(false_passes < 6_000, "{false_passes} of 100 000");
        assert!(!Filter::empty().may_hold(mix(1)));
    }

    #[test]
    fn added_keys_pass_and_removed_ones_wait_for_a_rebuild() {
        let keys: Vec<u64> = (0..1_000).map(mix).collect();
        let filter = Filter::build(keys.iter().copied());
        let more: Vec<u64> = (1_000..1_200).map(mix).collect();
        assert!(filter.keeps(more.len(), 0));
        let grown = filter.with(&more, 0);
        assert!(keys.iter().chain(&more).all(|&h| grown.may_hold(h)));
        // The old version is untouched (readers may still hold it).
        assert!(more.iter().any(|&h| !filter.may_hold(h)));
        // Growing to more than twice the sizing, or removing more than
        // half, asks for a rebuild.
        assert!(!filter.keeps(2 * 1024 * KEYS_PER_WORD, 0));
        assert!(!filter.keeps(0, 600));
        assert!(!filter.keeps(0, 1_000), "nothing left");
        assert!(filter.keeps(0, 400));
    }
}
