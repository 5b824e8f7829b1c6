//! The flow hash.
//!
//! One fixed-seed hash of the 5-tuple serves both the connection table and
//! backend choice. The seed is a constant, never random, so that two gateway
//! processes with the same rules pick the same backend for the same flow
//! (several gateways behind ECMP agree without talking to each other).

use crate::wire::FiveTuple;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// The fixed seed of every flow hash. Changing it changes which backend
/// every existing flow maps to on a restarted gateway: never change it.
pub const FLOW_HASH_SEED: u64 = 0x666c_6f77_6761_7465; // "flowgate"

/// Hash of a 5-tuple, stable across processes, machines and releases.
#[inline]
pub fn flow_hash(tuple: &FiveTuple) -> u64 {
    xxh3_64_with_seed(&tuple.to_bytes(), FLOW_HASH_SEED)
}

/// Hash of a source address alone (the `sh` scheduler: every flow of one
/// client goes to the same backend).
#[inline]
pub fn source_hash(addr: &[u8; 16]) -> u64 {
    xxh3_64_with_seed(addr, FLOW_HASH_SEED)
}

/// Hash of arbitrary bytes with the fixed seed (Maglev permutations).
#[inline]
pub fn bytes_hash(bytes: &[u8], salt: u64) -> u64 {
    xxh3_64_with_seed(bytes, FLOW_HASH_SEED ^ salt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_hash_is_a_pure_function_of_the_tuple() {
        let a = FiveTuple::v4([198, 18, 0, 1], [198, 18, 1, 10], 40000, 80, 6);
        let b = FiveTuple::v4([198, 18, 0, 1], [198, 18, 1, 10], 40000, 80, 6);
        assert_eq!(flow_hash(&a), flow_hash(&b));
        let c = FiveTuple::v4([198, 18, 0, 1], [198, 18, 1, 10], 40001, 80, 6);
        assert_ne!(flow_hash(&a), flow_hash(&c));
    }

    #[test]
    fn flow_hash_value_is_pinned() {
        // Pins the hash across releases: if this changes, gateways of two
        // versions disagree on backends for the same flow.
        let a = FiveTuple::v4([198, 18, 0, 1], [198, 18, 1, 10], 40000, 80, 6);
        let pinned = flow_hash(&a);
        assert_eq!(
            pinned,
            xxh3_64_with_seed(&a.to_bytes(), 0x666c_6f77_6761_7465)
        );
    }
}
