//! The address prefilters in front of the XDP program's `services` and
//! `reply_sources` maps (`vip_filter`, `backend_filter` in
//! bpf/flowgate_xdp.c): a bit per hash of an address, set while some key
//! of the map behind has an address with that hash. The program looks a
//! key up only when its address's bit is set, so a packet that is no
//! service's and no backend's costs two bit tests instead of two hash
//! lookups.
//!
//! A filter must never say "no" for an address a key of its map has: the
//! bit goes in before the first such key, and comes out only once the
//! last one is gone ([`AddressFilter::admit`], [`AddressFilter::release`]).
//! A bit left set by mistake costs a lookup, never a decision.

use std::collections::HashMap;

use aya::maps::{Array, MapData};

use super::key_set::map_error;
use super::XdpError;

/// log2 of the bits per filter (`FLOWGATE_FILTER_BITS_LOG2`).
pub(crate) const BITS_LOG2: u32 = 20;
/// 64-bit words per filter (`FLOWGATE_FILTER_WORDS`).
pub(crate) const WORDS: u32 = 1 << (BITS_LOG2 - 6);
/// The hash's multiplier (`FLOWGATE_FILTER_MULTIPLIER`).
const MULTIPLIER: u32 = 0x9E37_79B1;

/// The filter bit of a 16-byte address (IPv4-mapped for IPv4), as the
/// program computes it (`address_filter_bit`): its four 32-bit words as
/// the CPU loads them, XORed, times a Fibonacci multiplier, the high
/// [`BITS_LOG2`] bits.
pub(crate) fn address_bit(address: &[u8; 16]) -> u32 {
    let word =
        |i: usize| u32::from_ne_bytes([address[i], address[i + 1], address[i + 2], address[i + 3]]);
    (word(0) ^ word(4) ^ word(8) ^ word(12)).wrapping_mul(MULTIPLIER) >> (32 - BITS_LOG2)
}

/// How many addresses hold each bit, and the words the bits make: what a
/// filter map must hold, without the map.
#[derive(Debug, Default)]
pub(crate) struct BitCounts {
    counts: HashMap<u32, u32>,
    words: HashMap<u32, u64>,
}

impl BitCounts {
    /// Counts one more address at `bit`; the word (index, value) to write
    /// when that set the bit.
    pub(crate) fn add(&mut self, bit: u32) -> Option<(u32, u64)> {
        let count = self.counts.entry(bit).or_insert(0);
        *count += 1;
        (*count == 1).then(|| self.flip(bit, true))
    }

    /// Counts one address fewer at `bit`; the word to write when that
    /// cleared the bit (the last address with it gone).
    pub(crate) fn remove(&mut self, bit: u32) -> Option<(u32, u64)> {
        let count = self.counts.get_mut(&bit)?;
        *count -= 1;
        if *count > 0 {
            return None;
        }
        self.counts.remove(&bit);
        Some(self.flip(bit, false))
    }

    /// Whether `bit` is set.
    #[cfg(test)]
    pub(crate) fn is_set(&self, bit: u32) -> bool {
        self.counts.contains_key(&bit)
    }

    fn flip(&mut self, bit: u32, on: bool) -> (u32, u64) {
        let index = bit / 64;
        debug_assert!(index < WORDS, "bit {bit} past the filter");
        let word = self.words.entry(index).or_insert(0);
        if on {
            *word |= 1 << (bit % 64);
        } else {
            *word &= !(1 << (bit % 64));
        }
        let value = *word;
        if value == 0 {
            self.words.remove(&index);
        }
        (index, value)
    }
}

/// One of the program's filters, kept by the writer of the map it guards.
pub(crate) struct AddressFilter {
    map: Array<MapData, u64>,
    bits: BitCounts,
    name: &'static str,
}

impl AddressFilter {
    /// The filter `map` (a fresh one: every bit clear), called `name`.
    pub(crate) fn new(map: Array<MapData, u64>, name: &'static str) -> AddressFilter {
        AddressFilter {
            map,
            bits: BitCounts::default(),
            name,
        }
    }

    /// Counts a key with `address` about to go into the map behind: its
    /// bit is set in the program's filter before this returns. On an
    /// error nothing is counted, and the key must not go in.
    pub(crate) fn admit(&mut self, address: &[u8; 16]) -> Result<(), XdpError> {
        let bit = address_bit(address);
        if let Some((index, value)) = self.bits.add(bit) {
            if let Err(e) = self.map.set(index, value, 0) {
                self.bits.remove(bit);
                return Err(map_error(&format!("setting a bit of map {}", self.name), e));
            }
        }
        Ok(())
    }

    /// Counts out a key with `address` that left the map behind (or never
    /// went in after [`Self::admit`]): the bit is cleared once no key has
    /// it. A bit the kernel does not let clear stays set, which costs the
    /// program a lookup, never a decision.
    pub(crate) fn release(&mut self, address: &[u8; 16]) {
        if let Some((index, value)) = self.bits.remove(address_bit(address)) {
            if let Err(e) = self.map.set(index, value, 0) {
                tracing::debug!(map = self.name, error = %e, "an XDP filter bit stays set");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::v4_mapped;

    const SOURCE: &str = include_str!("../../bpf/flowgate_xdp.c");

    fn define(name: &str) -> String {
        SOURCE
            .lines()
            .find_map(|line| {
                let mut w = line.split_whitespace();
                (w.next()? == "#define" && w.next()? == name).then(|| w.next())?
            })
            .unwrap_or_else(|| panic!("no #define {name}"))
            .to_string()
    }

    #[test]
    fn constants_match_the_program() {
        assert_eq!(define("FLOWGATE_FILTER_BITS_LOG2"), BITS_LOG2.to_string());
        assert_eq!(define("FLOWGATE_FILTER_WORDS"), WORDS.to_string());
        assert_eq!(
            define("FLOWGATE_FILTER_MULTIPLIER"),
            format!("0x{MULTIPLIER:X}U")
        );
    }

    #[test]
    fn bits_stay_within_the_filter_and_spread() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..4096u32 {
            let [a, b, c, d] = (0xC612_0000 | i).to_be_bytes();
            let bit = address_bit(&v4_mapped([a, b, c, d]));
            assert!(bit < WORDS * 64);
            seen.insert(bit);
        }
        // 4 096 neighbouring addresses over 2^20 bits: next to no sharing.
        assert!(seen.len() > 4_000, "{}", seen.len());
    }

    #[test]
    fn a_bit_clears_only_when_its_last_address_leaves() {
        let mut bits = BitCounts::default();
        assert_eq!(bits.add(130), Some((2, 1 << 2)));
        assert_eq!(bits.add(131), Some((2, 0b1100)));
        // A second address with bit 130: nothing to write.
        assert_eq!(bits.add(130), None);
        assert_eq!(bits.remove(130), None);
        assert!(bits.is_set(130));
        assert_eq!(bits.remove(130), Some((2, 0b1000)));
        assert!(!bits.is_set(130));
        assert_eq!(bits.remove(131), Some((2, 0)));
        // Never counted: nothing to clear.
        assert_eq!(bits.remove(131), None);
        assert_eq!(bits.remove(7), None);
    }
}
