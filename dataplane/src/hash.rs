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

    // The literals below were computed by tests/golden/pins.py with the
    // xxh3 of Python's `xxhash` package (the reference C implementation),
    // from the key layout written out there: source and destination as 16
    // bytes (IPv4-mapped for IPv4), ports big-endian, protocol. They are
    // what makes two gateways, and two releases of one, pick the same
    // backend for a flow: a change to the hash, its seed or the key layout
    // that fails these tests moves every live flow on a restart.

    #[test]
    fn flow_hash_values_are_pinned() {
        let v4 = |s: &str| -> [u8; 4] { s.parse::<std::net::Ipv4Addr>().unwrap().octets() };
        let v6 = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let cases = [
            (
                FiveTuple::v4(v4("198.18.0.1"), v4("198.18.1.10"), 40000, 80, 6),
                0xfac3_1dfc_35b9_d7de_u64,
            ),
            (
                FiveTuple::v4(v4("198.18.0.2"), v4("198.18.100.10"), 5000, 53, 17),
                0x38d7_4ec5_0e1d_13de,
            ),
            (
                FiveTuple::new(v6("2001:2::2"), v6("2001:2:0:100::10"), 40000, 80, 6),
                0x8580_b626_35fe_8a8e,
            ),
            (
                FiveTuple::new(v6("2001:2::2"), v6("2001:2:0:100::10"), 5000, 53, 17),
                0xd4ea_e05f_e573_d374,
            ),
        ];
        for (tuple, pinned) in cases {
            assert_eq!(flow_hash(&tuple), pinned, "{tuple:?}");
        }
    }

    #[test]
    fn source_and_bytes_hash_values_are_pinned() {
        let addr = |s: &str| crate::wire::addr_to_bytes(s.parse().unwrap());
        assert_eq!(source_hash(&addr("198.18.0.2")), 0xf6c0_dfbf_9c72_c45f);
        assert_eq!(source_hash(&addr("2001:2::2")), 0xf52c_c350_3db8_ba70);
        // The salt is mixed into the seed (Maglev's permutations and the
        // workers' owner hash use salts).
        assert_eq!(bytes_hash(b"flowgate", 0), 0xdb37_f8f1_8bfb_d322);
        assert_eq!(
            bytes_hash(b"flowgate", 0x0123_4567_89ab_cdef),
            0xd4e6_38e5_0d8e_4081
        );
    }
}
