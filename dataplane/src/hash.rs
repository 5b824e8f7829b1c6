//! The flow hash and the connection table's hash.
//!
//! [`flow_hash`], a fixed-seed hash of the 5-tuple's 37 bytes, chooses
//! backends. The seed is a constant, never random, so that two gateway
//! processes with the same rules pick the same backend for the same flow
//! (several gateways behind ECMP agree without talking to each other): its
//! values are pinned.
//!
//! [`table_hash`] keys the connection table (and the fan-out table). An
//! IPv4 flow's is XXH3 of its 13-byte key, one 128-bit multiply where the
//! 37 bytes take four: every established packet pays it, and only a new
//! flow also pays `flow_hash`. Nothing outside one process depends on its
//! values (a table handed over is hashed again by the process that takes
//! it), so they are not pinned.

use crate::wire::{is_v4_mapped, FiveTuple, FIVE_TUPLE_BYTES};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// The fixed seed of every flow hash. Changing it changes which backend
/// every existing flow maps to on a restarted gateway: never change it.
pub const FLOW_HASH_SEED: u64 = 0x666c_6f77_6761_7465; // "flowgate"

/// Hash of a 5-tuple, stable across processes, machines and releases:
/// XXH3-64 with [`FLOW_HASH_SEED`] of [`FiveTuple::to_bytes`], computed
/// from the tuple's fields in place (see [`xxh3_of_tuple_bytes`]).
#[inline]
pub fn flow_hash(tuple: &FiveTuple) -> u64 {
    xxh3_of_tuple_bytes(tuple)
}

/// XXH3's default secret, its first 64 bytes as little-endian words: all
/// that its 17- to 128-byte case reads for a 37-byte input.
const SECRET: [u64; 8] = [
    0xbe4b_a423_396c_feb8,
    0x1cad_21f7_2c81_017c,
    0xdb97_9083_e96d_d4de,
    0x1f67_b3b7_a4a4_4072,
    0x78e5_c0cc_4ee6_79cb,
    0x2172_ffcc_7dd0_5a82,
    0x8e24_43f7_7446_08b8,
    0x4c26_3a81_e690_35e0,
];

/// XXH64's first prime, which XXH3 scales the input length by.
const PRIME64_1: u64 = 0x9e37_79b1_85eb_ca87;

/// One 16-byte step of XXH3 (`mix16B`): the input's two words, each
/// mixed with a secret word and the seed, multiplied to 128 bits and
/// folded.
#[inline(always)]
fn mix16(lo: u64, hi: u64, secret: usize) -> u64 {
    let lo = lo ^ SECRET[secret].wrapping_add(FLOW_HASH_SEED);
    let hi = hi ^ SECRET[secret + 1].wrapping_sub(FLOW_HASH_SEED);
    let product = u128::from(lo) * u128::from(hi);
    (product as u64) ^ ((product >> 64) as u64)
}

/// `xxh3_64_with_seed(&tuple.to_bytes(), FLOW_HASH_SEED)` without laying
/// the 37 bytes out: XXH3's 17- to 128-byte case reads the input as four
/// 16-byte pieces (bytes 0, 16, 5 and 21 on), here shifted together from
/// the addresses' words and the ports. The tests hold it to the crate's
/// value for every kind of tuple.
#[inline(always)]
fn xxh3_of_tuple_bytes(t: &FiveTuple) -> u64 {
    let word = |bytes: &[u8; 16], half: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[8 * half..8 * half + 8]);
        u64::from_le_bytes(w)
    };
    let (src_lo, src_hi) = (word(&t.src, 0), word(&t.src, 1));
    let (dst_lo, dst_hi) = (word(&t.dst, 0), word(&t.dst, 1));
    // Bytes 32..37: the ports big-endian, then the protocol.
    let tail = u64::from(t.src_port.swap_bytes())
        | u64::from(t.dst_port.swap_bytes()) << 16
        | u64::from(t.protocol) << 32;
    // Bytes 5..21 and 21..37 straddle the words.
    let at5 = (src_lo >> 40 | src_hi << 24, src_hi >> 40 | dst_lo << 24);
    let at21 = (dst_lo >> 40 | dst_hi << 24, dst_hi >> 40 | tail << 24);
    let mut acc = (FIVE_TUPLE_BYTES as u64).wrapping_mul(PRIME64_1);
    acc = acc.wrapping_add(mix16(dst_lo, dst_hi, 4));
    acc = acc.wrapping_add(mix16(at5.0, at5.1, 6));
    acc = acc.wrapping_add(mix16(src_lo, src_hi, 0));
    acc = acc.wrapping_add(mix16(at21.0, at21.1, 2));
    // XXH3's avalanche.
    acc ^= acc >> 37;
    acc = acc.wrapping_mul(0x1656_6791_9e37_79f9);
    acc ^ acc >> 32
}

/// The connection table's hash of a tuple: [`table_hash_v4`] for an
/// IPv4 tuple (both addresses IPv4-mapped), [`flow_hash`] for any other.
/// Every lookup, insert and removal of a table key hashes with this.
#[inline]
pub fn table_hash(tuple: &FiveTuple) -> u64 {
    if is_v4_mapped(&tuple.src) && is_v4_mapped(&tuple.dst) {
        table_hash_v4(tuple)
    } else {
        flow_hash(tuple)
    }
}

/// Bytes of an IPv4 key: the two addresses, the ports, the protocol.
pub const V4_KEY_BYTES: usize = 13;

/// [`table_hash`] of a tuple whose addresses are IPv4-mapped (the caller
/// knows: the parse of an IPv4 packet): XXH3-64 with [`FLOW_HASH_SEED`]
/// of the 13-byte key (source and destination addresses, the ports
/// big-endian, the protocol), computed from the fields in place: XXH3's
/// 9- to 16-byte case reads it as the words at bytes 0 and 5. The tests
/// hold it to the crate's value.
#[inline(always)]
pub fn table_hash_v4(t: &FiveTuple) -> u64 {
    let v4 = |a: &[u8; 16]| u64::from(u32::from_le_bytes([a[12], a[13], a[14], a[15]]));
    let (src, dst) = (v4(&t.src), v4(&t.dst));
    // The key's words at bytes 0 and 5 (little-endian).
    let lo = src | dst << 32;
    let hi = dst >> 8
        | u64::from(t.src_port.swap_bytes()) << 24
        | u64::from(t.dst_port.swap_bytes()) << 40
        | u64::from(t.protocol) << 56;
    table_hash_v4_words(lo, hi)
}

/// [`table_hash_v4`] of the 13-byte key given as its little-endian words
/// at bytes 0 and 5 (`lo`, `hi`): for a caller that reads them as they
/// lie in a frame ([`crate::wire::plain_ipv4_key_words`]), not
/// gathered from a tuple's fields.
#[inline(always)]
pub fn table_hash_v4_words(lo: u64, hi: u64) -> u64 {
    let lo = lo ^ (SECRET[3] ^ SECRET[4]).wrapping_add(FLOW_HASH_SEED);
    let hi = hi ^ (SECRET[5] ^ SECRET[6]).wrapping_sub(FLOW_HASH_SEED);
    let product = u128::from(lo) * u128::from(hi);
    let acc = (V4_KEY_BYTES as u64)
        .wrapping_add(lo.swap_bytes())
        .wrapping_add(hi)
        .wrapping_add((product as u64) ^ ((product >> 64) as u64));
    // XXH3's avalanche.
    let acc = (acc ^ acc >> 37).wrapping_mul(0x1656_6791_9e37_79f9);
    acc ^ acc >> 32
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

    /// A xorshift64 sequence from `seed`: the tests' varied tuples.
    fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    #[test]
    fn flow_hash_is_xxh3_of_the_tuple_bytes() {
        // Tuples of both families, with every byte varied (IPv6 addresses
        // with any bytes, IPv4-mapped ones, ports and protocols at their
        // edges), against the crate's XXH3 of the laid-out bytes.
        let mut next = xorshift(0x1234_5678_9abc_def0);
        for i in 0..20_000u32 {
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src[..8].copy_from_slice(&next().to_le_bytes());
            src[8..].copy_from_slice(&next().to_le_bytes());
            dst[..8].copy_from_slice(&next().to_le_bytes());
            dst[8..].copy_from_slice(&next().to_le_bytes());
            let r = next();
            let mut t = FiveTuple {
                src,
                dst,
                src_port: r as u16,
                dst_port: (r >> 16) as u16,
                protocol: (r >> 32) as u8,
            };
            if i % 2 == 0 {
                t = FiveTuple::v4(
                    [src[0], src[1], src[2], src[3]],
                    [dst[0], dst[1], dst[2], dst[3]],
                    t.src_port,
                    t.dst_port,
                    t.protocol,
                );
            }
            if i % 7 == 0 {
                t.src_port = u16::MAX;
                t.protocol = u8::MAX;
            }
            let expected = xxh3_64_with_seed(&t.to_bytes(), FLOW_HASH_SEED);
            assert_eq!(flow_hash(&t), expected, "{t:?}");
        }
        assert_eq!(
            flow_hash(&FiveTuple::default()),
            xxh3_64_with_seed(&[0; FIVE_TUPLE_BYTES], FLOW_HASH_SEED)
        );
    }

    #[test]
    fn table_hash_is_xxh3_of_the_v4_key_and_flow_hash_otherwise() {
        let mut next = xorshift(0x0fed_cba9_8765_4321);
        for i in 0..20_000u32 {
            let (a, b) = (next(), next());
            let mut t = FiveTuple::v4(
                (a as u32).to_be_bytes(),
                ((a >> 32) as u32).to_be_bytes(),
                b as u16,
                (b >> 16) as u16,
                (b >> 32) as u8,
            );
            if i % 7 == 0 {
                t.src_port = u16::MAX;
                t.dst_port = 0;
                t.protocol = u8::MAX;
            }
            let mut key = [0u8; V4_KEY_BYTES];
            key[..4].copy_from_slice(&t.src[12..]);
            key[4..8].copy_from_slice(&t.dst[12..]);
            key[8..10].copy_from_slice(&t.src_port.to_be_bytes());
            key[10..12].copy_from_slice(&t.dst_port.to_be_bytes());
            key[12] = t.protocol;
            let expected = xxh3_64_with_seed(&key, FLOW_HASH_SEED);
            assert_eq!(table_hash_v4(&t), expected, "{t:?}");
            assert_eq!(table_hash(&t), expected, "{t:?}");
            // Either address not IPv4-mapped: the 37-byte hash.
            let mut v6 = t;
            v6.src[0] = 0x20;
            assert_eq!(table_hash(&v6), flow_hash(&v6), "{v6:?}");
            let mut v6 = t;
            v6.dst[10] = 0;
            assert_eq!(table_hash(&v6), flow_hash(&v6), "{v6:?}");
        }
    }

    #[test]
    fn table_hash_spreads_one_client_s_ports_over_buckets_and_tags() {
        // One client, one VIP, 65 536 source ports: the index takes the
        // bucket from the low bits and the tag from the top 16; each must
        // be near uniform (a 2^12-bucket index: 16 keys a bucket on
        // average).
        let mut buckets = vec![0u32; 1 << 12];
        let mut tags = vec![0u32; 1 << 12];
        for port in 0..=u16::MAX {
            let t = FiveTuple::v4([198, 18, 0, 1], [198, 18, 1, 10], port, 80, 6);
            let h = table_hash(&t);
            buckets[(h & 0xfff) as usize] += 1;
            tags[(h >> 52) as usize] += 1;
        }
        for counts in [&buckets, &tags] {
            let max = *counts.iter().max().unwrap();
            let min = *counts.iter().min().unwrap();
            assert!(max <= 40 && min >= 2, "min {min} max {max}");
        }
    }

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
