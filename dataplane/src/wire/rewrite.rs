//! In-place rewrites of a parsed frame, with incremental checksums.
//!
//! These run for every forwarded packet, so they patch checksums with a
//! [`ChecksumDelta`] (RFC 1624) instead of recomputing them, and touch only
//! the bytes they change. They take the [`PacketMeta`] that
//! [`parse`](super::parse) returned for the same frame and trust its
//! offsets, yet every access is bounds-checked: a wrong `meta` makes them do
//! less, never panic.
//!
//! Non-first fragments carry no L4 header, so their L4 bytes are never
//! touched. A first fragment's L4 checksum covers the whole datagram; the
//! incremental patch is still right for it, because only pseudo-header
//! words and ports change.
//!
//! For IPv6, the L4 pseudo-header is taken to hold the IPv6 header's
//! addresses, which is true unless a routing header still has segments left.

use super::checksum::{udp_wire_value, ChecksumDelta};
use super::tuple::ip_proto;
use super::{ipv4, ipv6, tcp, udp, Fragment, PacketMeta, L3};

/// Offset of the ICMP / ICMPv6 checksum in its header.
const ICMP_CHECKSUM: usize = 2;

/// Writes the Ethernet source and destination MACs.
///
/// Does nothing to a frame shorter than the two addresses.
#[inline]
pub fn set_macs(frame: &mut [u8], src: [u8; 6], dst: [u8; 6]) {
    if let Some((dst_field, rest)) = frame.split_first_chunk_mut::<6>() {
        if let Some(src_field) = rest.first_chunk_mut::<6>() {
            *dst_field = dst;
            *src_field = src;
        }
    }
}

/// Decrements the IPv4 TTL (patching the header checksum) or the IPv6 hop
/// limit. The caller has checked that it is above 1; a TTL of 0 is left
/// alone rather than wrapped.
#[inline]
pub fn decrement_ttl(frame: &mut [u8], meta: &PacketMeta) {
    let l3 = usize::from(meta.l3_offset);
    match meta.l3 {
        L3::Ipv4 => {
            // TTL and protocol share one checksummed word; the checksum word follows.
            let at = l3 + ipv4::field::TTL;
            let Some(&mut [ttl, protocol, ck_hi, ck_lo]) = frame.get_mut(at..at + 4) else {
                return;
            };
            if ttl == 0 {
                return;
            }
            let old = u16::from_be_bytes([ttl, protocol]);
            let new = u16::from_be_bytes([ttl - 1, protocol]);
            let check = ChecksumDelta::word(old, new).apply(u16::from_be_bytes([ck_hi, ck_lo]));
            if let Some(bytes) = frame.get_mut(at..at + 4) {
                bytes[0] = ttl - 1;
                bytes[2..4].copy_from_slice(&check.to_be_bytes());
            }
        }
        L3::Ipv6 => {
            if let Some(hop_limit) = frame.get_mut(l3 + ipv6::field::HOP_LIMIT) {
                *hop_limit = hop_limit.saturating_sub(1);
            }
        }
        L3::Arp => {}
    }
}

/// Rewrites the destination address and, for TCP and UDP, the destination
/// port (DNAT), patching the IPv4 header checksum and the L4 checksum.
///
/// `addr` is in the 16-byte form of [`FiveTuple`](super::FiveTuple) and of
/// the packet's family (IPv4-mapped for IPv4). `port` is ignored for
/// protocols without ports and for non-first fragments.
#[inline]
pub fn rewrite_dst(frame: &mut [u8], meta: &PacketMeta, addr: &[u8; 16], port: u16) {
    rewrite_endpoint(frame, meta, addr, port, Side::Destination);
}

/// Rewrites the source address and, for TCP and UDP, the source port (SNAT,
/// or the reverse of a DNAT on reply traffic); see [`rewrite_dst`].
#[inline]
pub fn rewrite_src(frame: &mut [u8], meta: &PacketMeta, addr: &[u8; 16], port: u16) {
    rewrite_endpoint(frame, meta, addr, port, Side::Source);
}

/// Which end of the flow a rewrite changes.
#[derive(Clone, Copy)]
enum Side {
    Source,
    Destination,
}

#[inline(always)]
fn rewrite_endpoint(frame: &mut [u8], meta: &PacketMeta, addr: &[u8; 16], port: u16, side: Side) {
    let l3 = usize::from(meta.l3_offset);
    let address_delta = match meta.l3 {
        L3::Ipv4 => {
            let field = match side {
                Side::Source => ipv4::field::SRC_ADDR,
                Side::Destination => ipv4::field::DST_ADDR,
            };
            let [_, _, _, _, _, _, _, _, _, _, _, _, a, b, c, d] = *addr;
            let Some(delta) = replace_bytes(frame, l3 + field.start, &[a, b, c, d]) else {
                return;
            };
            patch_checksum(frame, l3 + ipv4::field::CHECKSUM.start, delta);
            delta
        }
        L3::Ipv6 => {
            let field = match side {
                Side::Source => ipv6::field::SRC_ADDR,
                Side::Destination => ipv6::field::DST_ADDR,
            };
            let Some(delta) = replace_bytes(frame, l3 + field.start, addr) else {
                return;
            };
            delta
        }
        L3::Arp => return,
    };
    if meta.fragment == Fragment::NonFirst {
        return;
    }
    let l4 = usize::from(meta.l4_offset);
    let port_at = match side {
        Side::Source => 0,
        Side::Destination => 2,
    };
    match (meta.tuple.protocol, meta.l3) {
        (ip_proto::TCP, _) => {
            let Some(port_delta) = replace_bytes(frame, l4 + port_at, &port.to_be_bytes()) else {
                return;
            };
            let check_at = l4 + tcp::field::CHECKSUM.start;
            patch_checksum(frame, check_at, address_delta + port_delta);
        }
        (ip_proto::UDP, _) => {
            let Some(port_delta) = replace_bytes(frame, l4 + port_at, &port.to_be_bytes()) else {
                return;
            };
            let check_at = l4 + udp::field::CHECKSUM.start;
            patch_udp_checksum(frame, check_at, address_delta + port_delta);
        }
        (ip_proto::ICMPV6, L3::Ipv6) => {
            patch_checksum(frame, l4 + ICMP_CHECKSUM, address_delta);
        }
        // ICMPv4 has no pseudo-header; other protocols are not ours to patch.
        _ => {}
    }
}

/// Writes `new` at `at` and returns the checksum change, or `None` (writing
/// nothing) if the field is out of bounds.
#[inline(always)]
fn replace_bytes<const N: usize>(
    frame: &mut [u8],
    at: usize,
    new: &[u8; N],
) -> Option<ChecksumDelta> {
    let field = frame.get_mut(at..)?.first_chunk_mut::<N>()?;
    let delta = ChecksumDelta::bytes(field.as_slice(), new);
    *field = *new;
    Some(delta)
}

/// Applies `delta` to the checksum word at `at`, if it is in bounds.
#[inline(always)]
fn patch_checksum(frame: &mut [u8], at: usize, delta: ChecksumDelta) {
    if let Some(field) = frame.get_mut(at..).and_then(|s| s.first_chunk_mut::<2>()) {
        *field = delta.apply(u16::from_be_bytes(*field)).to_be_bytes();
    }
}

/// Like [`patch_checksum`], with UDP's rules: a zero checksum means "none"
/// and stays zero; a patched value of zero is sent as 0xFFFF.
#[inline(always)]
fn patch_udp_checksum(frame: &mut [u8], at: usize, delta: ChecksumDelta) {
    if let Some(field) = frame.get_mut(at..).and_then(|s| s.first_chunk_mut::<2>()) {
        let check = u16::from_be_bytes(*field);
        if check != 0 {
            *field = udp_wire_value(delta.apply(check)).to_be_bytes();
        }
    }
}
