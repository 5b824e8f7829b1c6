//! The frame most packets are, read and rewritten in place: untagged
//! IPv4 with a 20-byte header, TCP or UDP, not a fragment — what
//! [`parse_plain_ipv4`](super::parse_plain_ipv4) accepts. An established
//! connection's packet of that kind needs no parse result: its tuple,
//! flags and MAC are at fixed offsets, and so is everything its
//! forwarding writes.

use super::ethernet;
use super::ipv4;
use super::parse::PLAIN_LEN;
use super::rewrite::{forward_plain_dst, forward_plain_src, EndpointDeltas, PLAIN_TCP_END};
use super::tuple::{ip_proto, FiveTuple};

const IP: usize = ethernet::HEADER_LEN;
const L4: usize = IP + ipv4::MIN_HEADER_LEN;
/// The TCP header's flags byte.
const TCP_FLAGS: usize = L4 + 13;

/// A frame [`parse_plain_ipv4`](super::parse_plain_ipv4) accepted, to
/// forward in place: its first bytes, with its TTL found above 1 and its
/// protocol TCP or UDP, so that forwarding it writes every field where
/// the general rewrite would and never fails.
///
/// The parse's other checks (the header checksum, the lengths) are the
/// caller's to have made: this reads only what it needs.
pub struct PlainV4Frame<'a> {
    bytes: &'a mut [u8; PLAIN_LEN],
}

impl<'a> PlainV4Frame<'a> {
    /// The view of `frame`; `None` for a frame shorter than the
    /// fixed-offset fields, of a protocol other than TCP and UDP, or
    /// whose TTL is below 2 (the general path drops or refuses those).
    #[inline(always)]
    pub fn of(frame: &'a mut [u8]) -> Option<Self> {
        let bytes: &mut [u8; PLAIN_LEN] = frame.first_chunk_mut()?;
        let protocol = bytes[IP + ipv4::field::PROTOCOL];
        let usual = bytes[IP + ipv4::field::TTL] >= 2
            && (protocol == ip_proto::TCP || protocol == ip_proto::UDP);
        usual.then_some(PlainV4Frame { bytes })
    }

    /// The frame's flow, as the parse gives it.
    #[inline(always)]
    pub fn tuple(&self) -> FiveTuple {
        tuple_at(self.bytes)
    }

    /// The TCP flags; 0 for UDP, as the parse gives them.
    #[inline(always)]
    pub fn tcp_flags(&self) -> u8 {
        if self.protocol() == ip_proto::TCP {
            self.bytes[TCP_FLAGS]
        } else {
            0
        }
    }

    /// The frame's source MAC.
    #[inline(always)]
    pub fn source_mac(&self) -> [u8; 6] {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&self.bytes[6..12]);
        mac
    }

    /// The frame's destination MAC.
    #[inline(always)]
    pub fn destination_mac(&self) -> [u8; 6] {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&self.bytes[..6]);
        mac
    }

    /// Forwards the frame to `addr` (16-byte form) and `port`: writes
    /// `macs` (destination first, as on the wire), the destination
    /// address and port, the TTL one lower and both checksums patched by
    /// `deltas` — the bytes [`set_mac_header`](super::rewrite::set_mac_header)
    /// and [`forward_rewrite_dst`](super::rewrite::forward_rewrite_dst)
    /// write.
    #[inline(always)]
    pub fn forward_dst(self, macs: &[u8; 12], addr: &[u8; 16], port: u16, deltas: EndpointDeltas) {
        let protocol = self.protocol();
        if let Some(f) = self.bytes.first_chunk_mut::<PLAIN_TCP_END>() {
            f[..12].copy_from_slice(macs);
            forward_plain_dst(f, protocol, addr, port, deltas);
        }
    }

    /// [`forward_dst`](Self::forward_dst) of the source (a backend's reply
    /// on its way to the client): the bytes of
    /// [`set_mac_header`](super::rewrite::set_mac_header) and
    /// [`forward_rewrite_src`](super::rewrite::forward_rewrite_src).
    #[inline(always)]
    pub fn forward_src(self, macs: &[u8; 12], addr: &[u8; 16], port: u16, deltas: EndpointDeltas) {
        let protocol = self.protocol();
        if let Some(f) = self.bytes.first_chunk_mut::<PLAIN_TCP_END>() {
            f[..12].copy_from_slice(macs);
            forward_plain_src(f, protocol, addr, port, deltas);
        }
    }

    #[inline(always)]
    fn protocol(&self) -> u8 {
        self.bytes[IP + ipv4::field::PROTOCOL]
    }
}

/// The flow of a frame [`parse_plain_ipv4`](super::parse_plain_ipv4)
/// accepted, as the parse gives it, read without its checks; `None` for
/// a frame too short to be one.
#[inline]
pub fn plain_ipv4_tuple(frame: &[u8]) -> Option<FiveTuple> {
    frame.first_chunk().map(tuple_at)
}

#[inline(always)]
fn tuple_at(f: &[u8; PLAIN_LEN]) -> FiveTuple {
    let addr = |at: usize| [f[at], f[at + 1], f[at + 2], f[at + 3]];
    FiveTuple::v4(
        addr(IP + ipv4::field::SRC_ADDR.start),
        addr(IP + ipv4::field::DST_ADDR.start),
        u16::from_be_bytes([f[L4], f[L4 + 1]]),
        u16::from_be_bytes([f[L4 + 2], f[L4 + 3]]),
        f[IP + ipv4::field::PROTOCOL],
    )
}
