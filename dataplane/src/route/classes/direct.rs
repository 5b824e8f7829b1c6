//! The IPv4 client classes as a 16-8-8 multibit trie: at most three
//! dependent loads a lookup, built from the same intervals as the tree.
//!
//! An entry is either an answer (a class id, or the "no class" marker) or,
//! with [`CHUNK`] set, the index of a chunk of 256 entries one level down.
//! The top level has one entry per /16; a /16 holding an interval boundary
//! inside it gets a chunk of its /24s; a /24 holding one gets a chunk of
//! its 256 addresses, answers only. A table of 10 000 prefixes within a
//! few /16s (a platform's client ranges) takes the 256 KiB top level, a
//! few KiB of /24 chunks and 1 KiB per /24 that prefixes longer than /24
//! cut; a lookup reads one line of each level it goes through.

use super::NO_CLASS;

/// Tables with fewer IPv4 intervals than this keep the tree alone: its
/// descent is short, and the 256 KiB top level would outweigh it.
pub(super) const MIN_INTERVALS: usize = 64;
/// The most entries (4 bytes each: 4 MiB) the trie may take; more (long
/// prefixes scattered over many /24s) and the tree answers alone.
pub(super) const MAX_ENTRIES: usize = 1 << 20;

/// Set in an entry that refers to a chunk of the next level.
const CHUNK: u32 = 1 << 31;
/// The entry of "no class" (class ids of the trie are below it).
const NONE: u32 = CHUNK - 1;
/// Entries of a chunk.
const CHUNK_LEN: usize = 256;

/// The trie; immutable.
#[derive(Clone, Debug)]
pub(crate) struct DirectV4 {
    /// By the address's top 16 bits.
    top: Box<[u32]>,
    /// Chunks of 256, by bits 8–15.
    mid: Box<[u32]>,
    /// Chunks of 256, by bits 0–7: answers only.
    low: Box<[u32]>,
}

impl DirectV4 {
    /// The trie of `bounds` ((start, answer) pairs strictly increasing in
    /// start, the first at address 0); `None` when the table is small,
    /// would take more than [`MAX_ENTRIES`], or has a class id the entries
    /// cannot hold.
    pub(super) fn build(bounds: &[(u32, u32)]) -> Option<DirectV4> {
        if bounds.len() < MIN_INTERVALS
            || bounds.first().map(|b| b.0) != Some(0)
            || bounds.iter().any(|&(_, a)| a != NO_CLASS && a >= NONE)
        {
            return None;
        }
        let mut builder = Builder {
            bounds,
            at: 0,
            entries: 1 << 16,
        };
        let mut top = Vec::with_capacity(1 << 16);
        let mut mid = Vec::new();
        let mut low = Vec::new();
        for t in 0..1u32 << 16 {
            let start = t << 16;
            if let Some(answer) = builder.uniform(start, start | 0xFFFF) {
                top.push(encode(answer));
                continue;
            }
            top.push(CHUNK | builder.chunk_index(mid.len())?);
            for m in 0..CHUNK_LEN as u32 {
                let start = start | m << 8;
                if let Some(answer) = builder.uniform(start, start | 0xFF) {
                    mid.push(encode(answer));
                    continue;
                }
                mid.push(CHUNK | builder.chunk_index(low.len())?);
                for l in 0..CHUNK_LEN as u32 {
                    low.push(encode(builder.answer_at(start | l)));
                }
            }
        }
        Some(DirectV4 {
            top: top.into_boxed_slice(),
            mid: mid.into_boxed_slice(),
            low: low.into_boxed_slice(),
        })
    }

    /// The answer (class id or `NO_CLASS`) of `addr`.
    #[inline(always)]
    pub(super) fn lookup(&self, addr: u32) -> u32 {
        let entry = self.top.get((addr >> 16) as usize).copied().unwrap_or(NONE);
        if entry & CHUNK == 0 {
            return decode(entry);
        }
        let at = (entry & !CHUNK) as usize * CHUNK_LEN + (addr >> 8 & 0xFF) as usize;
        let entry = self.mid.get(at).copied().unwrap_or(NONE);
        if entry & CHUNK == 0 {
            return decode(entry);
        }
        let at = (entry & !CHUNK) as usize * CHUNK_LEN + (addr & 0xFF) as usize;
        decode(self.low.get(at).copied().unwrap_or(NONE))
    }

    /// Bytes of its three levels.
    pub(super) fn heap_bytes(&self) -> usize {
        4 * (self.top.len() + self.mid.len() + self.low.len())
    }
}

/// Walks the boundaries once, in address order, while the levels are
/// filled.
struct Builder<'a> {
    bounds: &'a [(u32, u32)],
    /// The interval holding the last address asked about.
    at: usize,
    /// Entries made or about to be, against [`MAX_ENTRIES`].
    entries: usize,
}

impl Builder<'_> {
    /// The answer at `addr` (not below the last address asked about).
    fn answer_at(&mut self, addr: u32) -> u32 {
        while self.bounds.get(self.at + 1).is_some_and(|b| b.0 <= addr) {
            self.at += 1;
        }
        self.bounds.get(self.at).map_or(NO_CLASS, |b| b.1)
    }

    /// The one answer of `start..=end`, or `None` if a boundary lies
    /// inside.
    fn uniform(&mut self, start: u32, end: u32) -> Option<u32> {
        let answer = self.answer_at(start);
        match self.bounds.get(self.at + 1) {
            Some(next) if next.0 <= end => None,
            _ => Some(answer),
        }
    }

    /// The index of a new chunk of a level now `len` entries long, counted
    /// against the limit; `None` past it.
    fn chunk_index(&mut self, len: usize) -> Option<u32> {
        self.entries += CHUNK_LEN;
        if self.entries > MAX_ENTRIES {
            return None;
        }
        // Below MAX_ENTRIES / CHUNK_LEN, far below CHUNK.
        u32::try_from(len / CHUNK_LEN).ok()
    }
}

#[inline]
fn encode(answer: u32) -> u32 {
    if answer == NO_CLASS {
        NONE
    } else {
        answer
    }
}

#[inline]
fn decode(entry: u32) -> u32 {
    if entry == NONE {
        NO_CLASS
    } else {
        entry
    }
}

#[cfg(test)]
mod tests {
    use super::super::{boundaries, IntervalMap, Span};
    use super::*;
    use crate::route::prefix::v4_mask;

    /// Intervals of `(addr, len, class)` prefixes, as `ClientClasses`
    /// makes them.
    fn bounds_of(prefixes: &[(u32, u8, u32)]) -> Vec<(u32, u32)> {
        let mut spans: Vec<Span<u32>> = prefixes
            .iter()
            .enumerate()
            .map(|(index, &(addr, len, class))| Span {
                start: addr & v4_mask(len),
                end: addr | !v4_mask(len),
                len,
                class,
                index,
            })
            .collect();
        spans.sort_by_key(|s| (s.start, s.len, s.index));
        spans.dedup_by_key(|s| (s.start, s.len));
        boundaries(&spans)
    }

    fn mix(mut x: u64) -> u64 {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    /// Every boundary, its neighbours and random addresses answer as the
    /// tree does.
    fn assert_same_as_tree(bounds: &[(u32, u32)], direct: &DirectV4, seed: u64) {
        let tree = IntervalMap::from_boundaries(bounds);
        let mut probes: Vec<u32> = vec![0, u32::MAX];
        for &(start, _) in bounds {
            probes.extend([start, start.wrapping_sub(1), start.wrapping_add(1)]);
        }
        probes.extend((0..20_000).map(|i| mix(seed + i) as u32));
        for addr in probes {
            assert_eq!(direct.lookup(addr), tree.lookup(addr), "{addr:#x}");
        }
    }

    #[test]
    fn nested_prefixes_of_every_length_answer_as_the_tree() {
        for seed in 0..20u64 {
            // Near one base so that they nest; lengths 0..=32.
            let prefixes: Vec<(u32, u8, u32)> = (0..400u64)
                .map(|i| {
                    let r = mix(seed * 1_000 + i);
                    let addr =
                        0xC612_0000 ^ (r as u32 & 0x000F_FFFF) ^ ((r >> 40) as u32 & 0x0300_0000);
                    (addr, (r >> 32) as u8 % 33, (i % 7) as u32)
                })
                .collect();
            let bounds = bounds_of(&prefixes);
            let direct = DirectV4::build(&bounds).expect("a trie of 400 prefixes");
            assert_same_as_tree(&bounds, &direct, seed);
        }
    }

    #[test]
    fn the_bench_layout_of_4096_slash_28_fits() {
        let prefixes: Vec<(u32, u8, u32)> = (0..4_096u32)
            .map(|i| (0xC612_0000 + (i << 4), 28, i % 6))
            .collect();
        let bounds = bounds_of(&prefixes);
        let direct = DirectV4::build(&bounds).expect("fits");
        // One /16 cut into 256 /24s, each cut into /28s.
        assert_eq!(direct.mid.len(), CHUNK_LEN);
        assert_eq!(direct.low.len(), CHUNK_LEN * CHUNK_LEN);
        assert_same_as_tree(&bounds, &direct, 7);
        assert_eq!(direct.lookup(0xC612_0010), 1);
        assert_eq!(direct.lookup(0xC613_0000), NO_CLASS);
    }

    #[test]
    fn small_large_and_unencodable_tables_keep_the_tree() {
        let few: Vec<(u32, u8, u32)> = (0..10u32).map(|i| (i << 24, 8, i)).collect();
        assert!(DirectV4::build(&bounds_of(&few)).is_none());
        // A /32 in each of 5 000 /24s: a chunk each, over the limit.
        let scattered: Vec<(u32, u8, u32)> =
            (0..5_000u32).map(|i| ((i << 12) | 5, 32, 1)).collect();
        assert!(DirectV4::build(&bounds_of(&scattered)).is_none());
        let mut high: Vec<(u32, u8, u32)> = (0..100u32).map(|i| (i << 24, 8, i)).collect();
        high[3].2 = NONE;
        assert!(DirectV4::build(&bounds_of(&high)).is_none());
        high[3].2 = NONE - 1;
        let bounds = bounds_of(&high);
        let direct = DirectV4::build(&bounds).expect("ids below NONE fit");
        assert_same_as_tree(&bounds, &direct, 3);
    }
}
