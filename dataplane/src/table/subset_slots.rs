//! A subset's Maglev table as packed indices: each slot holds the index of
//! its endpoint in the subset's endpoint list, in as few bits as the list
//! needs (0, 1, 2, 4 or 8), so that the tables of a service's many subsets
//! stay in cache between new flows.
//!
//! A routed service keeps one table per subset, each as long as the
//! service's own (65 537 slots by default). A subset of a platform is a
//! SET's or a zone's few backends: 2 endpoints take 1 bit a slot (8 KiB),
//! 4 take 2 bits, 16 take 4, 256 take a byte (64 KiB), where a slot of
//! the full table takes 4 bytes. A table of one endpoint needs no slots
//! at all. The pick for a slot is the same as the full table's.

use std::sync::Arc;

/// Slot indices, `1 << log_bits` bits each (or none, for one endpoint),
/// 64 bits to a word, the first slot in the lowest bits.
#[derive(Clone, Debug)]
pub struct PackedSlots {
    words: Arc<[u64]>,
    /// Slots in the table (as the full table's size; 0 for an empty one).
    len: usize,
    /// log2 of the bits a slot takes (0 to 3).
    log_bits: u32,
    /// The bits of one slot's index; 0 when every slot holds index 0.
    mask: u64,
}

impl PackedSlots {
    /// Slots holding `indices` (each below `endpoints`, at most 256), in
    /// the fewest bits that hold `endpoints - 1`; `None` for more than 256
    /// endpoints.
    pub fn pack(indices: &[u8], endpoints: usize) -> Option<PackedSlots> {
        let bits: u32 = match endpoints {
            0..=1 => 0,
            2 => 1,
            3..=4 => 2,
            5..=16 => 4,
            17..=256 => 8,
            _ => return None,
        };
        if bits == 0 {
            return Some(PackedSlots {
                words: Arc::from([]),
                len: indices.len(),
                log_bits: 0,
                mask: 0,
            });
        }
        let log_bits = bits.trailing_zeros();
        let per_word = 64 / bits as usize;
        let mut words = vec![0u64; indices.len().div_ceil(per_word)];
        for (slot, &index) in indices.iter().enumerate() {
            let shift = (slot << log_bits) & 63;
            words[slot / per_word] |= u64::from(index) << shift;
        }
        Some(PackedSlots {
            words: Arc::from(words),
            len: indices.len(),
            log_bits,
            mask: (1u64 << bits) - 1,
        })
    }

    /// Slots in the table.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it has no slot (no endpoint took new flows at the build).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The index slot `slot` holds; `None` past the end.
    #[inline]
    pub fn get(&self, slot: usize) -> Option<usize> {
        if slot >= self.len {
            return None;
        }
        if self.mask == 0 {
            return Some(0);
        }
        let word = *self.words.get(slot >> (6 - self.log_bits))?;
        let shift = (slot << self.log_bits) & 63;
        // At most 8 bits: the index fits.
        Some((word >> shift & self.mask) as usize)
    }

    /// Bytes of its words.
    pub fn heap_bytes(&self) -> usize {
        8 * self.words.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_width_gives_back_every_index() {
        for endpoints in [1usize, 2, 3, 4, 5, 16, 17, 255, 256] {
            for len in [0usize, 1, 63, 64, 65, 1_009] {
                let indices: Vec<u8> = (0..len)
                    .map(|i| ((i * 7 + i / 3) % endpoints) as u8)
                    .collect();
                let packed = PackedSlots::pack(&indices, endpoints).expect("at most 256");
                assert_eq!(packed.len(), len);
                for (slot, &index) in indices.iter().enumerate() {
                    assert_eq!(
                        packed.get(slot),
                        Some(usize::from(index)),
                        "{endpoints}: {slot}"
                    );
                }
                assert_eq!(packed.get(len), None);
            }
        }
        assert!(PackedSlots::pack(&[0], 257).is_none());
    }

    #[test]
    fn a_slot_takes_the_fewest_bits_its_endpoints_need() {
        let slots = vec![0u8; 65_536];
        let bytes = |endpoints| PackedSlots::pack(&slots, endpoints).map(|p| p.heap_bytes());
        assert_eq!(bytes(1), Some(0));
        assert_eq!(bytes(2), Some(8_192));
        assert_eq!(bytes(4), Some(16_384));
        assert_eq!(bytes(16), Some(32_768));
        assert_eq!(bytes(256), Some(65_536));
    }
}
