//! A proxied connection's translation. The client was given the cookie
//! as the gateway's initial sequence number, the backend chose its own;
//! the SYN-ACK's timestamp was the gateway's, the backend's clock is its
//! own; the client reads windows with the window scale the SYN-ACK
//! offered, the backend scales with its own. So for the connection's
//! life:
//!
//! - backend → client: sequence + offset; TSval + timestamp offset;
//!   window rescaled from the backend's scale to the offered one;
//! - client → backend: acknowledgement − offset; SACK blocks (which name
//!   backend data) − offset; TSecr − timestamp offset.
//!
//! Every change patches the TCP checksum in place (RFC 1624), so it
//! composes with the address rewrite's own patch. Nothing here allocates
//! or panics on any input: a segment too short for a field is left as it
//! is.

use crate::wire::checksum::ChecksumDelta;

use super::handshake::{find_option, timestamp_offset};

const OPT_SACK: u8 = 5;
const CHECK: usize = 16;

/// What a proxied connection's segments need, kept in its record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqOffset {
    /// The gateway's initial sequence number toward the client (the
    /// cookie) minus the backend's, modulo 2³².
    pub seq: u32,
    /// The SYN-ACK's TSval minus the backend's, modulo 2³² (0 without
    /// timestamps).
    pub ts: u32,
    /// The backend's window scale (0 without scaling).
    pub backend_wscale: u8,
    /// The scale the client reads windows with (0 without scaling).
    pub client_wscale: u8,
}

impl SeqOffset {
    /// The offsets of a connection whose client got `cookie` (and the
    /// TSval `our_tsval`) and whose backend answered with `backend_isn`
    /// (and `backend_tsval`).
    pub fn new(cookie: u32, backend_isn: u32, our_tsval: u32, backend_tsval: u32) -> SeqOffset {
        SeqOffset {
            seq: cookie.wrapping_sub(backend_isn),
            ts: our_tsval.wrapping_sub(backend_tsval),
            backend_wscale: 0,
            client_wscale: 0,
        }
    }

    /// With window rescaling from `backend` to `client` shifts.
    #[must_use]
    pub fn with_window_scales(mut self, backend: u8, client: u8) -> SeqOffset {
        self.backend_wscale = backend.min(14);
        self.client_wscale = client.min(14);
        self
    }

    /// A backend → client segment whose TCP header (with options) is
    /// `tcp`, translated in place.
    pub fn to_client(&self, tcp: &mut [u8]) {
        if tcp.len() < 20 {
            return;
        }
        let mut delta = ChecksumDelta::NONE;
        delta = delta + add_word(tcp, 4, self.seq);
        if self.backend_wscale != self.client_wscale {
            let old = u16::from_be_bytes([tcp[14], tcp[15]]);
            let bytes = u64::from(old) << self.backend_wscale;
            let new = u16::try_from(bytes >> self.client_wscale).unwrap_or(u16::MAX);
            tcp[14..16].copy_from_slice(&new.to_be_bytes());
            delta = delta + ChecksumDelta::word(old, new);
        }
        if let Some(at) = timestamp_offset(tcp) {
            delta = delta + add_word(tcp, at + 2, self.ts);
        }
        patch(tcp, delta);
    }

    /// A client → backend segment whose TCP header (with options) is
    /// `tcp`, translated in place.
    pub fn to_backend(&self, tcp: &mut [u8]) {
        if tcp.len() < 20 {
            return;
        }
        let mut delta = ChecksumDelta::NONE;
        // Only an ACK's acknowledgement number means anything.
        if tcp[13] & 0x10 != 0 {
            delta = delta + add_word(tcp, 8, self.seq.wrapping_neg());
        }
        if let Some(at) = find_option(tcp, OPT_SACK, 0) {
            let size = usize::from(tcp[at + 1]);
            let mut edge = at + 2;
            while edge + 4 <= at + size {
                delta = delta + add_word(tcp, edge, self.seq.wrapping_neg());
                edge += 4;
            }
        }
        if let Some(at) = timestamp_offset(tcp) {
            delta = delta + add_word(tcp, at + 6, self.ts.wrapping_neg());
        }
        patch(tcp, delta);
    }
}

/// Adds `add` to the big-endian word at `at` of `tcp`; the checksum
/// change (the word may start at an odd offset: the change is taken over
/// the even-aligned bytes around it).
fn add_word(tcp: &mut [u8], at: usize, add: u32) -> ChecksumDelta {
    let start = at & !1;
    let end = (at + 4 + 1) & !1;
    let Some(old_bytes) = tcp.get(start..end) else {
        return ChecksumDelta::NONE;
    };
    let mut old = [0u8; 6];
    old[..end - start].copy_from_slice(old_bytes);
    let value = u32::from_be_bytes([tcp[at], tcp[at + 1], tcp[at + 2], tcp[at + 3]]);
    tcp[at..at + 4].copy_from_slice(&value.wrapping_add(add).to_be_bytes());
    ChecksumDelta::bytes(&old[..end - start], &tcp[start..end])
}

fn patch(tcp: &mut [u8], delta: ChecksumDelta) {
    let check = u16::from_be_bytes([tcp[CHECK], tcp[CHECK + 1]]);
    tcp[CHECK..CHECK + 2].copy_from_slice(&delta.apply(check).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::l4_checksum_v4;

    const SRC: [u8; 4] = [198, 18, 0, 1];
    const DST: [u8; 4] = [198, 18, 0, 2];

    /// A TCP segment (header with `options`, then `payload`) with a
    /// correct checksum over SRC → DST.
    fn segment(
        seq: u32,
        ack: u32,
        flags: u8,
        window: u16,
        options: &[u8],
        payload: &[u8],
    ) -> Vec<u8> {
        let mut s = vec![0u8; 20];
        s[0..2].copy_from_slice(&80u16.to_be_bytes());
        s[2..4].copy_from_slice(&40000u16.to_be_bytes());
        s[4..8].copy_from_slice(&seq.to_be_bytes());
        s[8..12].copy_from_slice(&ack.to_be_bytes());
        s.extend_from_slice(options);
        s[12] = ((s.len() / 4) as u8) << 4;
        s[13] = flags;
        s[14..16].copy_from_slice(&window.to_be_bytes());
        s.extend_from_slice(payload);
        let c = l4_checksum_v4(&SRC, &DST, 6, &s);
        s[16..18].copy_from_slice(&c.to_be_bytes());
        s
    }

    fn checksum_holds(s: &[u8]) -> bool {
        let mut zeroed = s.to_vec();
        zeroed[16..18].copy_from_slice(&[0, 0]);
        l4_checksum_v4(&SRC, &DST, 6, &zeroed) == u16::from_be_bytes([s[16], s[17]])
    }

    fn word(s: &[u8], at: usize) -> u32 {
        u32::from_be_bytes([s[at], s[at + 1], s[at + 2], s[at + 3]])
    }

    #[test]
    fn sequence_and_timestamp_shift_toward_the_client_and_back_across_the_wrap() {
        // Cookie near the top of the space, backend's ISN low: wraps.
        let off = SeqOffset::new(0xffff_fff0, 0x10, 5000, 9000);
        let mut ts = vec![1, 1, 8, 10];
        ts.extend_from_slice(&9100u32.to_be_bytes());
        ts.extend_from_slice(&300u32.to_be_bytes());
        let mut s = segment(0x11, 0x2000, 0x18, 512, &ts, b"hello");
        off.to_client(&mut s);
        assert_eq!(word(&s, 4), 0xffff_fff1);
        assert_eq!(
            word(&s, 8),
            0x2000,
            "the backend's ack is the client's own numbers"
        );
        assert_eq!(word(&s, 24), 5100);
        assert_eq!(word(&s, 28), 300);
        assert!(checksum_holds(&s));

        // The client acknowledges the gateway's number; the backend sees its own.
        let mut ts = vec![1, 1, 8, 10];
        ts.extend_from_slice(&400u32.to_be_bytes());
        ts.extend_from_slice(&5100u32.to_be_bytes());
        let mut c = segment(0x2000, 0xffff_fff6, 0x10, 100, &ts, b"");
        off.to_backend(&mut c);
        assert_eq!(word(&c, 8), 0x16);
        assert_eq!(word(&c, 4), 0x2000);
        assert_eq!(word(&c, 28), 9100);
        assert_eq!(word(&c, 24), 400);
        assert!(checksum_holds(&c));
    }

    #[test]
    fn sack_blocks_are_shifted_into_the_backends_numbers() {
        let off = SeqOffset::new(1_000_000, 10, 0, 0);
        // NOP NOP SACK with two blocks.
        let mut opts = vec![1, 1, 5, 18];
        for edge in [1_000_500u32, 1_000_600, 1_000_800, 1_000_900] {
            opts.extend_from_slice(&edge.to_be_bytes());
        }
        let mut c = segment(7, 1_000_100, 0x10, 100, &opts, b"");
        off.to_backend(&mut c);
        let edges: Vec<u32> = (0..4).map(|i| word(&c, 24 + 4 * i)).collect();
        assert_eq!(edges, [510, 610, 810, 910]);
        assert_eq!(word(&c, 8), 110);
        assert!(checksum_holds(&c));
    }

    #[test]
    fn an_option_at_an_odd_offset_still_leaves_a_correct_checksum() {
        let off = SeqOffset::new(77, 7, 1000, 1);
        // One NOP, then the timestamps at offset 21, then padding.
        let mut opts = vec![1, 8, 10];
        opts.extend_from_slice(&5u32.to_be_bytes());
        opts.extend_from_slice(&6u32.to_be_bytes());
        opts.push(0);
        let mut s = segment(100, 0, 0x10, 1, &opts, b"xyz");
        off.to_client(&mut s);
        assert_eq!(word(&s, 23), 5 + 999);
        assert_eq!(word(&s, 4), 170);
        assert!(checksum_holds(&s));
    }

    #[test]
    fn windows_are_rescaled_to_the_scale_the_client_reads_with() {
        let off = SeqOffset::new(0, 0, 0, 0).with_window_scales(9, 7);
        let mut s = segment(0, 0, 0x10, 1000, &[], b"");
        off.to_client(&mut s);
        assert_eq!(u16::from_be_bytes([s[14], s[15]]), 4000);
        assert!(checksum_holds(&s));
        // A larger window than 16 bits can say at the client's scale: the most it can.
        let off = SeqOffset::new(0, 0, 0, 0).with_window_scales(14, 0);
        let mut s = segment(0, 0, 0x10, 1000, &[], b"");
        off.to_client(&mut s);
        assert_eq!(u16::from_be_bytes([s[14], s[15]]), u16::MAX);
        assert!(checksum_holds(&s));
    }

    #[test]
    fn translating_there_and_back_is_the_identity_on_the_numbers() {
        let off = SeqOffset::new(0x8000_0000, 0x7fff_ffff, 3, 4);
        for seq in [0u32, 1, u32::MAX, 0x1234_5678] {
            let mut s = segment(seq, 0, 0x10, 1, &[], b"");
            off.to_client(&mut s);
            // The client acknowledging exactly that number maps back to it.
            let mut c = segment(0, word(&s, 4), 0x10, 1, &[], b"");
            off.to_backend(&mut c);
            assert_eq!(word(&c, 8), seq);
        }
    }

    #[test]
    fn short_segments_are_left_alone() {
        let off = SeqOffset::new(1, 2, 3, 4);
        let mut short = vec![0u8; 19];
        off.to_client(&mut short);
        off.to_backend(&mut short);
        assert_eq!(short, vec![0u8; 19]);
    }
}
