//! The packet an ICMP error quotes, and its rewrite through the NAT.
//!
//! An ICMP error (destination unreachable — fragmentation needed among
//! them —, time exceeded; ICMPv6 destination unreachable, packet too big,
//! time exceeded) carries, after its 8-byte header, the start of the packet
//! that caused it: its IP header and at least the first 8 bytes of its
//! transport header (RFC 792; RFC 1812 §4.3.2.3 and RFC 4443 §2.4(c) ask for
//! as much as fits, but only those 8 are guaranteed). Those 8 bytes hold
//! both ports, and UDP's checksum; TCP's checksum, at bytes 16–17, may be
//! cut off.
//!
//! [`parse_quoted`] finds the quoted packet's tuple; [`rewrite_quoted`]
//! changes its source or destination address and port as a NAT must, and
//! patches every checksum the change touches: the quoted IPv4 header's, the
//! quoted TCP/UDP checksum where it was quoted, and the outer ICMP/ICMPv6
//! checksum, which covers the quoted bytes. (The outer addresses, and with
//! them ICMPv6's pseudo-header, are [`super::rewrite`]'s.)
//!
//! Nothing here trusts the quoted bytes: lengths come from the outer
//! packet, every access is bounds-checked, and nothing panics on any input.

use super::checksum::{udp_wire_value, ChecksumDelta};
use super::icmp::{self, icmpv4_type, icmpv6_type};
use super::tuple::{ip_proto, v4_mapped, FiveTuple};
use super::{ipv4, ipv6, tcp, udp, Fragment, PacketMeta, L3};

/// Bytes of the quoted transport header needed to read both ports.
const PORTS_LEN: usize = 4;

/// Whether `meta` is an ICMP error of a kind the gateway translates:
/// ICMPv4 destination unreachable or time exceeded, ICMPv6 destination
/// unreachable, packet too big or time exceeded, unfragmented.
#[inline]
pub fn is_translated_error(meta: &PacketMeta) -> bool {
    if meta.fragment != Fragment::None {
        return false;
    }
    match (meta.l3, meta.tuple.protocol) {
        (L3::Ipv4, ip_proto::ICMP) => matches!(
            meta.icmp_type,
            icmpv4_type::DEST_UNREACHABLE | icmpv4_type::TIME_EXCEEDED
        ),
        (L3::Ipv6, ip_proto::ICMPV6) => matches!(
            meta.icmp_type,
            icmpv6_type::DEST_UNREACHABLE
                | icmpv6_type::PACKET_TOO_BIG
                | icmpv6_type::TIME_EXCEEDED
        ),
        _ => false,
    }
}

/// Where an ICMP error's quoted packet lies in the frame, and its tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotedPacket {
    /// The quoted packet's tuple, in its own direction (as it was sent).
    pub tuple: FiveTuple,
    /// Offset of the quoted IP header in the frame.
    pub l3_offset: usize,
    /// Offset of the quoted transport header in the frame.
    pub l4_offset: usize,
    /// One past the outer packet's last byte: the quote ends there.
    pub end: usize,
    /// The quoted packet's family (always the outer one's).
    pub l3: L3,
}

/// The packet quoted by the ICMP error `meta` describes in `frame`, if it
/// is an error [`is_translated_error`] accepts quoting a TCP or UDP packet
/// of the outer packet's family with both ports: an IPv4 header of at
/// least 20 bytes that is not a later fragment, or an IPv6 header whose
/// next header is TCP or UDP. `None` for anything else.
pub fn parse_quoted(frame: &[u8], meta: &PacketMeta) -> Option<QuotedPacket> {
    if !is_translated_error(meta) {
        return None;
    }
    let l3_offset = usize::from(meta.l4_offset).checked_add(icmp::HEADER_LEN)?;
    let end = usize::from(meta.ip_end).min(frame.len());
    let quote = frame.get(l3_offset..end)?;
    let (tuple, header_len) = match meta.l3 {
        L3::Ipv4 => quoted_v4(quote)?,
        L3::Ipv6 => quoted_v6(quote)?,
        L3::Arp => return None,
    };
    let l4_offset = l3_offset + header_len;
    if end < l4_offset + PORTS_LEN {
        return None;
    }
    Some(QuotedPacket {
        tuple,
        l3_offset,
        l4_offset,
        end,
        l3: meta.l3,
    })
}

/// A quoted IPv4 packet's tuple and header length.
fn quoted_v4(quote: &[u8]) -> Option<(FiveTuple, usize)> {
    let header = quote.get(..ipv4::MIN_HEADER_LEN)?;
    let (version, header_len) = (header[0] >> 4, usize::from(header[0] & 0x0f) * 4);
    if version != 4 || header_len < ipv4::MIN_HEADER_LEN {
        return None;
    }
    let protocol = header[ipv4::field::PROTOCOL];
    let frag_offset = u16::from_be_bytes([header[6], header[7]]) & 0x1fff;
    if frag_offset != 0 || !is_tcp_or_udp(protocol) {
        return None;
    }
    let ports = quote.get(header_len..header_len + PORTS_LEN)?;
    let mut src = [0u8; 4];
    let mut dst = [0u8; 4];
    src.copy_from_slice(&header[ipv4::field::SRC_ADDR]);
    dst.copy_from_slice(&header[ipv4::field::DST_ADDR]);
    let tuple = FiveTuple {
        src: v4_mapped(src),
        dst: v4_mapped(dst),
        src_port: u16::from_be_bytes([ports[0], ports[1]]),
        dst_port: u16::from_be_bytes([ports[2], ports[3]]),
        protocol,
    };
    Some((tuple, header_len))
}

/// A quoted IPv6 packet's tuple and header length (40: extension headers
/// are not walked in a quote).
fn quoted_v6(quote: &[u8]) -> Option<(FiveTuple, usize)> {
    let header = quote.get(..ipv6::HEADER_LEN)?;
    let protocol = header[ipv6::field::NEXT_HEADER];
    if header[0] >> 4 != 6 || !is_tcp_or_udp(protocol) {
        return None;
    }
    let ports = quote.get(ipv6::HEADER_LEN..ipv6::HEADER_LEN + PORTS_LEN)?;
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&header[ipv6::field::SRC_ADDR]);
    dst.copy_from_slice(&header[ipv6::field::DST_ADDR]);
    let tuple = FiveTuple {
        src,
        dst,
        src_port: u16::from_be_bytes([ports[0], ports[1]]),
        dst_port: u16::from_be_bytes([ports[2], ports[3]]),
        protocol,
    };
    Some((tuple, ipv6::HEADER_LEN))
}

fn is_tcp_or_udp(protocol: u8) -> bool {
    protocol == ip_proto::TCP || protocol == ip_proto::UDP
}

/// Which end of the quoted packet a rewrite changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotedEnd {
    /// Its source address and port.
    Source,
    /// Its destination address and port.
    Destination,
}

/// Rewrites the `end` of the quoted packet `quoted` (from
/// [`parse_quoted`] on the same frame, whose ICMP header starts at
/// `icmp_offset`) to `addr` (16-byte form, IPv4-mapped for IPv4) and
/// `port`, patching the quoted IPv4 header checksum, the quoted TCP/UDP
/// checksum if it was quoted (a zero UDP checksum stays zero), and the
/// outer ICMP checksum for every word changed. Out-of-bounds fields are
/// left alone.
pub fn rewrite_quoted(
    frame: &mut [u8],
    icmp_offset: usize,
    quoted: &QuotedPacket,
    end: QuotedEnd,
    addr: &[u8; 16],
    port: u16,
) {
    // Offsets from `parse_quoted` are within the frame; these additions
    // only keep made-up ones from overflowing.
    let l3 = quoted.l3_offset;
    let l4 = quoted.l4_offset;
    let at = |base: usize, offset: usize| base.saturating_add(offset);
    // Every change inside the ICMP message, for its own checksum.
    let mut outer = ChecksumDelta::NONE;
    let address_delta = match quoted.l3 {
        L3::Ipv4 => {
            let field = match end {
                QuotedEnd::Source => ipv4::field::SRC_ADDR,
                QuotedEnd::Destination => ipv4::field::DST_ADDR,
            };
            let [.., a, b, c, d] = *addr;
            let Some(delta) = replace(frame, at(l3, field.start), &[a, b, c, d]) else {
                return;
            };
            outer = outer + delta;
            let check_at = at(l3, ipv4::field::CHECKSUM.start);
            if let Some(check_delta) = patch(frame, check_at, delta, false) {
                outer = outer + check_delta;
            }
            delta
        }
        L3::Ipv6 => {
            let field = match end {
                QuotedEnd::Source => ipv6::field::SRC_ADDR,
                QuotedEnd::Destination => ipv6::field::DST_ADDR,
            };
            let Some(delta) = replace(frame, at(l3, field.start), addr) else {
                return;
            };
            outer = outer + delta;
            delta
        }
        L3::Arp => return,
    };
    let port_at = match end {
        QuotedEnd::Source => tcp::field::SRC_PORT.start,
        QuotedEnd::Destination => tcp::field::DST_PORT.start,
    };
    if let Some(port_delta) = replace(frame, at(l4, port_at), &port.to_be_bytes()) {
        outer = outer + port_delta;
        // The quoted transport checksum, where it was quoted: it covers
        // the pseudo-header's address and the port.
        let (check_at, is_udp) = match quoted.tuple.protocol {
            ip_proto::UDP => (at(l4, udp::field::CHECKSUM.start), true),
            _ => (at(l4, tcp::field::CHECKSUM.start), false),
        };
        if check_at.saturating_add(2) <= quoted.end {
            if let Some(check_delta) = patch(frame, check_at, address_delta + port_delta, is_udp) {
                outer = outer + check_delta;
            }
        }
    }
    if let Some(field) = frame
        .get_mut(at(icmp_offset, icmp::field::CHECKSUM.start)..)
        .and_then(|s| s.first_chunk_mut::<2>())
    {
        *field = outer.apply(u16::from_be_bytes(*field)).to_be_bytes();
    }
}

/// Writes `new` at `at`; the change, or `None` (nothing written) out of
/// bounds.
fn replace<const N: usize>(frame: &mut [u8], at: usize, new: &[u8; N]) -> Option<ChecksumDelta> {
    let field = frame.get_mut(at..)?.first_chunk_mut::<N>()?;
    let delta = ChecksumDelta::bytes(field.as_slice(), new);
    *field = *new;
    Some(delta)
}

/// Patches the checksum word at `at` with `delta` (UDP's rules with
/// `udp`: zero stays zero, a patched zero is sent as 0xFFFF); the change
/// to the word itself, or `None` if nothing changed.
fn patch(frame: &mut [u8], at: usize, delta: ChecksumDelta, udp: bool) -> Option<ChecksumDelta> {
    let field = frame.get_mut(at..)?.first_chunk_mut::<2>()?;
    let old = u16::from_be_bytes(*field);
    if udp && old == 0 {
        return None;
    }
    let new = if udp {
        udp_wire_value(delta.apply(old))
    } else {
        delta.apply(old)
    };
    *field = new.to_be_bytes();
    Some(ChecksumDelta::word(old, new))
}

#[cfg(test)]
mod tests;
