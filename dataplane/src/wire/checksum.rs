//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Every full computation follows one convention: the checksum is computed
//! over the bytes exactly as given. To *fill* a checksum field, zero it first
//! and store the result; to *verify* one, compute over the bytes with the
//! field in place and expect 0.
//!
//! The data plane never recomputes a checksum on the forwarding path: it
//! patches it with a [`ChecksumDelta`] for the words it changed (RFC 1624,
//! eqn. 3: `HC' = ~(~HC + ~m + m')`). That result is bit-identical to a full
//! recomputation, which the tests check.

/// Adds `data` to a ones'-complement accumulator, as big-endian 16-bit
/// words; an odd trailing byte is padded with a zero byte.
///
/// The accumulator is not folded: pass it to [`fold`] at the end. Summing
/// 32-bit words is equivalent, because 2^16 ≡ 1 in ones'-complement
/// arithmetic (modulo 0xFFFF).
#[inline]
pub fn accumulate(mut acc: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    match *words.remainder() {
        [a] => acc += u64::from(a) << 8,
        [a, b] => acc += u64::from(u16::from_be_bytes([a, b])),
        [a, b, c] => acc += u64::from(u16::from_be_bytes([a, b])) + (u64::from(c) << 8),
        _ => {}
    }
    acc
}

/// Folds an accumulator into 16 bits with end-around carry.
///
/// The result is 0 only when the accumulator is 0 (all-zero data).
#[inline]
pub fn fold(acc: u64) -> u16 {
    // Fixed steps, no loop: 64 → 33 bits → 18 bits → 17 bits → 16 bits.
    let acc = (acc & 0xffff_ffff) + (acc >> 32);
    let acc = (acc & 0xffff) + (acc >> 16);
    let acc = (acc & 0xffff) + (acc >> 16);
    let acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// The Internet checksum of `data`: the complement of its folded sum.
#[inline]
pub fn internet_checksum(data: &[u8]) -> u16 {
    !fold(accumulate(0, data))
}

/// Whether an IPv4 header without options checksums right:
/// [`internet_checksum`] of it is 0. Its words are summed little-endian,
/// as they load: a word's byte swap is 256 times it modulo 0xFFFF, and
/// 256 is invertible there, so the swapped sum folds to 0xFFFF exactly
/// when the big-endian sum does (RFC 1071 §2(B)). An all-zero header
/// checksums wrong either way.
#[inline(always)]
pub fn ipv4_header_checksum_ok(header: &[u8; 20]) -> bool {
    let word = |at: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&header[at..at + 4]);
        u64::from(u32::from_le_bytes(w))
    };
    // `fold` keeps the sum modulo 0xFFFF and gives 0 only for 0: it
    // folds to 0xFFFF exactly when the sum is a non-zero multiple of
    // 0xFFFF, which a multiply by a constant tells in fewer steps.
    let sum = word(0) + word(4) + word(8) + word(12) + word(16);
    sum != 0 && sum % 0xffff == 0
}

/// The accumulated IPv4 pseudo-header (RFC 793 / RFC 768): addresses,
/// protocol and the upper-layer length.
#[inline]
pub fn pseudo_header_v4(src: &[u8; 4], dst: &[u8; 4], protocol: u8, len: u32) -> u64 {
    let acc = accumulate(accumulate(0, src), dst);
    acc + u64::from(protocol) + u64::from(len)
}

/// The accumulated IPv6 pseudo-header (RFC 8200 §8.1): addresses, the
/// upper-layer length and the next-header value.
#[inline]
pub fn pseudo_header_v6(src: &[u8; 16], dst: &[u8; 16], protocol: u8, len: u32) -> u64 {
    let acc = accumulate(accumulate(0, src), dst);
    acc + u64::from(protocol) + u64::from(len)
}

/// The TCP / UDP checksum of `segment` (header and payload) over IPv4.
///
/// For UDP, a result of 0 must be sent as 0xFFFF (see [`udp_wire_value`]).
#[inline]
pub fn l4_checksum_v4(src: &[u8; 4], dst: &[u8; 4], protocol: u8, segment: &[u8]) -> u16 {
    let len = u32::try_from(segment.len()).unwrap_or(u32::MAX);
    !fold(accumulate(
        pseudo_header_v4(src, dst, protocol, len),
        segment,
    ))
}

/// The TCP / UDP / ICMPv6 checksum of `segment` over IPv6.
///
/// For UDP, a result of 0 must be sent as 0xFFFF (see [`udp_wire_value`]).
#[inline]
pub fn l4_checksum_v6(src: &[u8; 16], dst: &[u8; 16], protocol: u8, segment: &[u8]) -> u16 {
    let len = u32::try_from(segment.len()).unwrap_or(u32::MAX);
    !fold(accumulate(
        pseudo_header_v6(src, dst, protocol, len),
        segment,
    ))
}

/// The value a UDP checksum field carries for a computed checksum: 0 means
/// "no checksum" on the wire, so a computed 0 is sent as 0xFFFF (RFC 768;
/// RFC 8200 §8.1 for IPv6).
#[inline]
pub const fn udp_wire_value(computed: u16) -> u16 {
    if computed == 0 {
        0xffff
    } else {
        computed
    }
}

/// The ones'-complement difference made by replacing some 16-bit words:
/// the `Σ(~m + m')` part of RFC 1624 eqn. 3.
///
/// One delta built from an address change patches both the IPv4 header
/// checksum and the L4 checksum (whose pseudo-header holds the same
/// address), so the changed words are summed once. The sum is kept
/// unfolded and folded once, in [`apply`](Self::apply): on the forwarding
/// path the folds are most of the work.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChecksumDelta(u64);

impl ChecksumDelta {
    /// No change.
    pub const NONE: ChecksumDelta = ChecksumDelta(0);

    /// The change of one 16-bit word from `old` to `new`.
    #[inline]
    pub fn word(old: u16, new: u16) -> Self {
        ChecksumDelta(u64::from(!old) + u64::from(new))
    }

    /// The change of a run of big-endian words from `old` to `new`.
    ///
    /// Both must start at an even offset from the start of the checksummed
    /// data (true of every address and port field), and be of equal, even
    /// length (otherwise the result is meaningless, though nothing panics).
    #[inline]
    pub fn bytes(old: &[u8], new: &[u8]) -> Self {
        // 32 bits at a time: a 32-bit word is worth its two halves modulo
        // 0xFFFF, and so is its 32-bit complement (0xFFFF_FFFF ≡ 0).
        let mut acc = 0u64;
        let mut old_words = old.chunks_exact(4);
        let mut new_words = new.chunks_exact(4);
        for (o, n) in (&mut old_words).zip(&mut new_words) {
            acc += u64::from(!u32::from_be_bytes([o[0], o[1], o[2], o[3]]));
            acc += u64::from(u32::from_be_bytes([n[0], n[1], n[2], n[3]]));
        }
        let old_rest = old_words.remainder().chunks_exact(2);
        let new_rest = new_words.remainder().chunks_exact(2);
        for (o, n) in old_rest.zip(new_rest) {
            acc += u64::from(!u16::from_be_bytes([o[0], o[1]]));
            acc += u64::from(u16::from_be_bytes([n[0], n[1]]));
        }
        ChecksumDelta(acc)
    }

    /// `checksum` patched for this change.
    #[inline]
    #[must_use]
    pub fn apply(self, checksum: u16) -> u16 {
        !fold(u64::from(!checksum) + self.0)
    }

    /// This change in 16 bits, to keep: [`from_folded`](Self::from_folded)
    /// of it patches every checksum to exactly what this delta does.
    /// ([`fold`] keeps the value modulo 0xFFFF, and gives 0 only for 0,
    /// and `apply` depends on nothing else.)
    #[inline]
    pub fn folded(self) -> u16 {
        fold(self.0)
    }

    /// The change [`folded`](Self::folded) returned.
    #[inline]
    pub const fn from_folded(folded: u16) -> Self {
        ChecksumDelta(folded as u64)
    }
}

/// `checksum` patched for the change `folded` ([`ChecksumDelta::folded`]):
/// `ChecksumDelta::from_folded(folded).apply(checksum)`, with one fold
/// step, as two 16-bit values sum to at most 0x1FFFE, whose one step of
/// end-around carry is already at most 0xFFFF.
#[inline(always)]
pub fn apply_folded(checksum: u16, folded: u16) -> u16 {
    let sum = u32::from(!checksum) + u32::from(folded);
    !(((sum & 0xffff) + (sum >> 16)) as u16)
}

impl std::ops::Add for ChecksumDelta {
    type Output = ChecksumDelta;

    /// The combined change of both.
    #[inline]
    fn add(self, other: ChecksumDelta) -> ChecksumDelta {
        ChecksumDelta(self.0 + other.0)
    }
}

/// `checksum` patched for one 16-bit word changing from `old` to `new`.
#[inline]
pub fn update_word(checksum: u16, old: u16, new: u16) -> u16 {
    ChecksumDelta::word(old, new).apply(checksum)
}

/// `checksum` patched for a run of words changing from `old` to `new`
/// (see [`ChecksumDelta::bytes`]).
#[inline]
pub fn update_bytes(checksum: u16, old: &[u8], new: &[u8]) -> u16 {
    ChecksumDelta::bytes(old, new).apply(checksum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The little-endian check agrees with the full checksum, on any
        /// header and on one whose checksum field was filled in.
        #[test]
        fn the_header_check_agrees_with_the_full_checksum(
            mut header in prop::array::uniform20(any::<u8>()),
            fill in any::<bool>(),
        ) {
            if fill {
                header[10..12].copy_from_slice(&[0, 0]);
                let sum = internet_checksum(&header);
                header[10..12].copy_from_slice(&sum.to_be_bytes());
            }
            prop_assert_eq!(ipv4_header_checksum_ok(&header), internet_checksum(&header) == 0);
        }
    }

    #[test]
    fn the_header_check_refuses_an_all_zero_header_as_the_full_one_does() {
        assert!(!ipv4_header_checksum_ok(&[0; 20]));
        assert_ne!(internet_checksum(&[0; 20]), 0);
    }

    #[test]
    fn a_folded_delta_patches_as_the_delta_it_came_from() {
        // Every checksum against deltas at the edges and in between, and
        // a folded delta against its unfolded self.
        let deltas = [0u16, 1, 0xfeff, 0xfffe, 0xffff, 0x8000, 0x1234];
        for checksum in 0..=u16::MAX {
            for &d in &deltas {
                let expected = ChecksumDelta::from_folded(d).apply(checksum);
                assert_eq!(apply_folded(checksum, d), expected);
            }
        }
        for (old, new) in [
            ([0u8; 4], [0u8; 4]),
            ([0xff; 4], [0; 4]),
            ([198, 18, 1, 10], [198, 19, 7, 7]),
        ] {
            let delta = ChecksumDelta::bytes(&old, &new);
            for checksum in [0u16, 1, 0xffff, 0xabcd] {
                assert_eq!(
                    apply_folded(checksum, delta.folded()),
                    delta.apply(checksum)
                );
            }
        }
    }

    /// The IPv4 header from RFC 1071's worked style: a known-good header
    /// must verify to zero, and refilling it must reproduce its checksum.
    fn sample_ipv4_header() -> [u8; 20] {
        [
            0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 198, 18, 0, 1,
            198, 18, 1, 10,
        ]
    }

    fn filled(mut header: [u8; 20]) -> [u8; 20] {
        header[10..12].copy_from_slice(&[0, 0]);
        let c = internet_checksum(&header);
        header[10..12].copy_from_slice(&c.to_be_bytes());
        header
    }

    #[test]
    fn a_filled_header_verifies_to_zero() {
        let h = filled(sample_ipv4_header());
        assert_ne!(u16::from_be_bytes([h[10], h[11]]), 0);
        assert_eq!(internet_checksum(&h), 0);
        let mut broken = h;
        broken[15] ^= 1;
        assert_ne!(internet_checksum(&broken), 0);
    }

    #[test]
    fn accumulate_matches_a_plain_16_bit_sum_for_every_tail_length() {
        let data: Vec<u8> = (0u8..=40)
            .map(|i| i.wrapping_mul(37).wrapping_add(11))
            .collect();
        for len in 0..data.len() {
            let part = &data[..len];
            let mut plain = 0u64;
            for pair in part.chunks(2) {
                let hi = u64::from(pair[0]) << 8;
                let lo = pair.get(1).copied().map(u64::from).unwrap_or(0);
                plain += hi | lo;
            }
            assert_eq!(fold(accumulate(0, part)), fold(plain), "len {len}");
        }
    }

    #[test]
    fn accumulating_in_pieces_of_even_length_is_the_same_as_at_once() {
        let data: Vec<u8> = (0u8..64).map(|i| i.wrapping_mul(91)).collect();
        let whole = fold(accumulate(0, &data));
        let pieces = fold(accumulate(accumulate(0, &data[..22]), &data[22..]));
        assert_eq!(whole, pieces);
    }

    #[test]
    fn word_update_equals_recomputation() {
        let mut h = filled(sample_ipv4_header());
        let old = u16::from_be_bytes([h[8], h[9]]);
        let before = u16::from_be_bytes([h[10], h[11]]);
        h[8] -= 1; // TTL
        let new = u16::from_be_bytes([h[8], h[9]]);
        let patched = update_word(before, old, new);
        assert_eq!(
            patched,
            u16::from_be_bytes(filled(h)[10..12].try_into().unwrap())
        );
    }

    #[test]
    fn byte_range_update_equals_recomputation() {
        let mut h = filled(sample_ipv4_header());
        let before = u16::from_be_bytes([h[10], h[11]]);
        let old: [u8; 4] = h[16..20].try_into().unwrap();
        let new = [198, 19, 255, 254];
        h[16..20].copy_from_slice(&new);
        let patched = update_bytes(before, &old, &new);
        assert_eq!(
            patched,
            u16::from_be_bytes(filled(h)[10..12].try_into().unwrap())
        );
    }

    #[test]
    fn byte_deltas_equal_word_by_word_deltas_for_every_even_length() {
        let old: Vec<u8> = (0u8..18)
            .map(|i| i.wrapping_mul(53).wrapping_add(7))
            .collect();
        let new: Vec<u8> = (0u8..18).map(|i| i.wrapping_mul(29) ^ 0xa5).collect();
        for len in (0..=18).step_by(2) {
            let mut by_words = ChecksumDelta::NONE;
            for (o, n) in old[..len].chunks(2).zip(new[..len].chunks(2)) {
                let o = u16::from_be_bytes([o[0], o[1]]);
                let n = u16::from_be_bytes([n[0], n[1]]);
                by_words = by_words + ChecksumDelta::word(o, n);
            }
            let at_once = ChecksumDelta::bytes(&old[..len], &new[..len]);
            for check in [0u16, 1, 0x1234, 0xfffe, 0xffff] {
                assert_eq!(at_once.apply(check), by_words.apply(check), "len {len}");
            }
        }
    }

    #[test]
    fn deltas_compose() {
        let a = ChecksumDelta::word(0x1234, 0xfedc);
        let b = ChecksumDelta::bytes(&[1, 2, 3, 4], &[9, 8, 7, 6]);
        let c = 0x5a5a;
        assert_eq!((a + b).apply(c), b.apply(a.apply(c)));
        assert_eq!(ChecksumDelta::NONE.apply(c), c);
        assert_eq!(ChecksumDelta::word(7, 7).apply(c), c);
    }

    #[test]
    fn pseudo_header_checksums_verify_to_zero_once_filled() {
        let src = [198, 18, 0, 1];
        let dst = [198, 18, 1, 10];
        // A UDP header (ports 1000 -> 53, length 10, checksum 0) and 2 bytes.
        let mut seg = [0x03, 0xe8, 0x00, 0x35, 0x00, 0x0a, 0, 0, 0xab, 0xcd];
        let c = udp_wire_value(l4_checksum_v4(&src, &dst, 17, &seg));
        seg[6..8].copy_from_slice(&c.to_be_bytes());
        assert_eq!(l4_checksum_v4(&src, &dst, 17, &seg), 0);
        assert_ne!(l4_checksum_v4(&src, &[198, 18, 1, 11], 17, &seg), 0);

        let src6 = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let dst6 = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        seg[6..8].copy_from_slice(&[0, 0]);
        let c = udp_wire_value(l4_checksum_v6(&src6, &dst6, 17, &seg));
        seg[6..8].copy_from_slice(&c.to_be_bytes());
        assert_eq!(l4_checksum_v6(&src6, &dst6, 17, &seg), 0);
    }

    #[test]
    fn a_computed_zero_goes_on_the_wire_as_all_ones_and_still_verifies() {
        assert_eq!(udp_wire_value(0), 0xffff);
        assert_eq!(udp_wire_value(0x1234), 0x1234);
        // Data whose sum is 0xFFFF has checksum 0; with 0xFFFF stored in an
        // extra checksum word the whole still verifies to zero.
        let data = [0xff, 0x00, 0x00, 0xff];
        assert_eq!(internet_checksum(&data), 0);
        let with_field = [0xff, 0x00, 0x00, 0xff, 0xff, 0xff];
        assert_eq!(internet_checksum(&with_field), 0);
    }
}
