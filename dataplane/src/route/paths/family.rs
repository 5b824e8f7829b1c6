//! One address family's paths: 4 096 shards under a two-level index, a
//! presence filter per middle node, the lengths present, and which
//! services have paths at all.
//!
//! A key's hash picks its shard (top 6 bits: one of 64 middle nodes; next
//! 6 bits: one of its 64 shards). Every level is shared between versions
//! through `Arc`s, so a version that changes one shard shares everything
//! else with the one before: an update copies that shard (about n / 4 096
//! entries), its middle node (64 pointers and its filter, about n / 512
//! bytes) and the top node (64 of them).

use std::sync::Arc;

use super::filter::Filter;
use super::shard::{Key, PathTarget, ShardRef};

/// Middle nodes under the top node, and shards under each middle node.
const FANOUT: usize = 64;
/// Shards of one family.
pub(super) const SHARDS: usize = FANOUT * FANOUT;
/// Bits of the hash that choose the shard (its top 12).
const SHARD_SHIFT: u32 = 64 - 12;

/// The shard a hash belongs to, 0..[`SHARDS`].
#[inline]
pub(super) fn shard_index(hash: u64) -> usize {
    // Truncation intended: 12 bits.
    (hash >> SHARD_SHIFT) as usize
}

/// A middle node: [`FANOUT`] shards and the filter of their keys.
#[derive(Clone, Debug)]
pub(super) struct Mid {
    shards: Arc<[ShardRef]>,
    filter: Filter,
}

impl Mid {
    /// A middle node of these shards, its filter built from their keys.
    fn of<const A: usize>(shards: Arc<[ShardRef]>) -> Mid {
        let hashes: Vec<u64> = shards
            .iter()
            .flat_map(|shard| shard.entries::<A>().map(|(key, _)| key.hash()))
            .collect();
        Mid {
            filter: Filter::build(hashes.into_iter()),
            shards,
        }
    }
}

/// One family's published paths; immutable.
#[derive(Clone, Debug)]
pub(super) struct Family<const A: usize> {
    /// [`FANOUT`] middle nodes of [`FANOUT`] shards each.
    mids: Arc<[Mid]>,
    /// The prefix lengths some path has, longest first.
    lengths: [u8; 129],
    /// How many of `lengths` are used.
    length_count: u8,
    /// Bit `s` is set when service `s` has a path in this family.
    services: Arc<[u64]>,
}

impl<const A: usize> Family<A> {
    /// A family with no path; every position holds `empty`.
    pub(super) fn empty(empty: &ShardRef) -> Family<A> {
        let mid = Mid {
            shards: Arc::from(vec![empty.clone(); FANOUT]),
            filter: Filter::empty(),
        };
        Family {
            mids: Arc::from(vec![mid; FANOUT]),
            lengths: [0; 129],
            length_count: 0,
            services: Arc::from(Vec::new()),
        }
    }

    /// The longest-prefix path of `service` for a client at `addr`.
    #[inline]
    pub(super) fn lookup(&self, service: u32, addr: [u32; A]) -> Option<PathTarget<'_>> {
        if !self.has_service(service) {
            return None;
        }
        let lengths = self.lengths.get(..usize::from(self.length_count))?;
        for &len in lengths {
            let key = Key::new(service, len, addr);
            let hash = key.hash();
            let index = shard_index(hash);
            let mid = self.mids.get(index / FANOUT)?;
            if !mid.filter.may_hold(hash) {
                continue;
            }
            if let Some(target) = mid.shards.get(index % FANOUT)?.find(&key, hash) {
                return Some(target);
            }
        }
        None
    }

    /// Whether `service` has a path in this family.
    #[inline]
    fn has_service(&self, service: u32) -> bool {
        self.services
            .get((service / 64) as usize)
            .is_some_and(|word| word >> (service % 64) & 1 == 1)
    }

    /// Touches what the first probe of [`Family::lookup`] reads (the
    /// longest length present): the filter's word, and the slot if the
    /// filter passes. Returns the slot's tag, or 0 when it was not read.
    #[inline]
    pub(super) fn warm(&self, service: u32, addr: [u32; A]) -> u32 {
        if self.length_count == 0 || !self.has_service(service) {
            return 0;
        }
        let len = self.lengths[0];
        let key = Key::new(service, len, addr);
        let hash = key.hash();
        let index = shard_index(hash);
        let Some(mid) = self.mids.get(index / FANOUT) else {
            return 0;
        };
        if !mid.filter.may_hold(hash) {
            return 0;
        }
        mid.shards
            .get(index % FANOUT)
            .map_or(0, |shard| shard.warm::<A>(hash))
    }

    /// The path with exactly this key.
    pub(super) fn get(&self, key: &Key<A>) -> Option<PathTarget<'_>> {
        let hash = key.hash();
        self.shard(shard_index(hash))?.find(key, hash)
    }

    /// Shard `index`.
    #[inline]
    pub(super) fn shard(&self, index: usize) -> Option<&ShardRef> {
        self.mids.get(index / FANOUT)?.shards.get(index % FANOUT)
    }

    /// A new version: this one with `edits` applied (key, `Some(refs)` to
    /// put, `None` to remove; keys distinct, removals of present keys), the
    /// given lengths (longest first) and service bits.
    pub(super) fn edited(
        &self,
        edits: &[(Key<A>, Option<&[u32]>)],
        lengths: &[u8],
        services: Arc<[u64]>,
        empty: &ShardRef,
    ) -> Family<A> {
        let mut order: Vec<(usize, usize)> = edits
            .iter()
            .enumerate()
            .map(|(i, (key, _))| (shard_index(key.hash()), i))
            .collect();
        order.sort_unstable();
        let mut mids: Vec<Mid> = self.mids.to_vec();
        let mut copied: Vec<Option<Vec<ShardRef>>> = vec![None; FANOUT];
        // Per middle node: the hashes of keys added, and how many removed.
        let mut added: Vec<Vec<u64>> = vec![Vec::new(); FANOUT];
        let mut removed = [0usize; FANOUT];
        for group in order.chunk_by(|a, b| a.0 == b.0) {
            let index = group[0].0;
            let Some(old) = self.shard(index) else {
                continue;
            };
            let m = index / FANOUT;
            let mut entries: Vec<(Key<A>, &[u32])> = old.entries().collect();
            for &(_, i) in group {
                let (key, value) = &edits[i];
                let at = entries.iter().position(|(k, _)| k == key);
                match (at, value) {
                    (Some(at), Some(refs)) => entries[at].1 = refs,
                    (None, Some(refs)) => {
                        entries.push((*key, refs));
                        added[m].push(key.hash());
                    }
                    (Some(at), None) => {
                        entries.swap_remove(at);
                        removed[m] += 1;
                    }
                    (None, None) => {}
                }
            }
            let hashed: Vec<(u64, Key<A>, &[u32])> = entries
                .into_iter()
                .map(|(key, refs)| (key.hash(), key, refs))
                .collect();
            let shard = ShardRef::build(&hashed, empty);
            let mid = copied[m].get_or_insert_with(|| mids[m].shards.to_vec());
            mid[index % FANOUT] = shard;
        }
        for (m, shards) in copied.into_iter().enumerate() {
            if let Some(shards) = shards {
                let shards: Arc<[ShardRef]> = Arc::from(shards);
                let filter = &mids[m].filter;
                mids[m] = if filter.keeps(added[m].len(), removed[m]) {
                    Mid {
                        filter: filter.with(&added[m], removed[m]),
                        shards,
                    }
                } else {
                    Mid::of::<A>(shards)
                };
            }
        }
        Family::assemble(mids, lengths, services)
    }

    /// A family of exactly these shards (in index order; [`SHARDS`] of
    /// them).
    pub(super) fn from_shards(
        shards: Vec<ShardRef>,
        lengths: &[u8],
        services: Arc<[u64]>,
    ) -> Family<A> {
        let mids = shards
            .chunks(FANOUT)
            .map(|mid| Mid::of::<A>(Arc::from(mid.to_vec())))
            .collect();
        Family::assemble(mids, lengths, services)
    }

    fn assemble(mids: Vec<Mid>, lengths: &[u8], services: Arc<[u64]>) -> Family<A> {
        let mut table = [0u8; 129];
        let count = lengths.len().min(129);
        table[..count].copy_from_slice(&lengths[..count]);
        Family {
            mids: Arc::from(mids),
            lengths: table,
            length_count: count as u8,
            services,
        }
    }

    /// The service bits, to reuse when they do not change.
    pub(super) fn services(&self) -> &Arc<[u64]> {
        &self.services
    }

    /// Every shard, in index order.
    pub(super) fn shards(&self) -> impl Iterator<Item = &ShardRef> {
        self.mids.iter().flat_map(|mid| mid.shards.iter())
    }

    /// Bytes of its allocations, each counted once (`empty` is counted by
    /// the caller).
    pub(super) fn heap_bytes(&self, empty: &ShardRef) -> usize {
        let arc_header = 2 * std::mem::size_of::<usize>();
        let mut bytes = arc_header + std::mem::size_of_val(&*self.mids);
        bytes += arc_header + std::mem::size_of_val(&*self.services);
        let mut seen_mids: Vec<*const ShardRef> = Vec::with_capacity(FANOUT);
        for mid in self.mids.iter() {
            let ptr = mid.shards.as_ptr();
            if seen_mids.contains(&ptr) {
                continue;
            }
            seen_mids.push(ptr);
            bytes += mid.filter.heap_bytes();
            bytes += arc_header + std::mem::size_of_val(&*mid.shards);
            bytes += mid
                .shards
                .iter()
                .filter(|shard| !shard.same_as(empty))
                .map(ShardRef::heap_bytes)
                .sum::<usize>();
        }
        bytes
    }
}
