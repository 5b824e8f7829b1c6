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
//! UDP: a zero checksum ("none") stays zero, and a patched checksum that
//! comes out as zero is sent as 0xFFFF, as RFC 768 asks of a computed one.
//!
//! For IPv6, the L4 pseudo-header is taken to hold the IPv6 header's
//! addresses, which is true unless a routing header still has segments left.

use super::checksum::{apply_folded, udp_wire_value, ChecksumDelta};
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

/// Writes a frame's destination and source MACs from `macs` (destination
/// first, as on the wire): one 12-byte copy.
#[inline(always)]
pub fn set_mac_header(frame: &mut [u8], macs: &[u8; 12]) {
    if let Some(field) = frame.first_chunk_mut::<12>() {
        *field = *macs;
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

/// The rewrite of a forwarded packet toward a connection's backend:
/// [`rewrite_dst`] then [`decrement_ttl`], with the checksum changes
/// `deltas` worked out when the connection was recorded (for an IPv4
/// packet whose destination is what `deltas` was made from). The bytes
/// written are exactly those of the two calls; a frame `deltas` does not
/// fit (IPv6, a TTL below 2, a non-first fragment) gets the two calls.
#[inline]
pub fn forward_rewrite_dst(
    frame: &mut [u8],
    meta: &PacketMeta,
    addr: &[u8; 16],
    port: u16,
    deltas: EndpointDeltas,
) {
    forward_rewrite(
        frame,
        meta,
        Target::new(addr, port, deltas, Side::Destination),
    );
}

/// [`forward_rewrite_dst`] for the source: [`rewrite_src`] then
/// [`decrement_ttl`] (a backend's reply on its way to the client).
#[inline]
pub fn forward_rewrite_src(
    frame: &mut [u8],
    meta: &PacketMeta,
    addr: &[u8; 16],
    port: u16,
    deltas: EndpointDeltas,
) {
    forward_rewrite(frame, meta, Target::new(addr, port, deltas, Side::Source));
}

/// One end of a forwarded packet: its new address and port, the
/// checksum changes of writing them (and of the TTL step), which end.
#[derive(Clone, Copy)]
struct Target<'a> {
    addr: &'a [u8; 16],
    port: u16,
    deltas: EndpointDeltas,
    side: Side,
}

impl<'a> Target<'a> {
    #[inline(always)]
    fn new(addr: &'a [u8; 16], port: u16, deltas: EndpointDeltas, side: Side) -> Self {
        Target {
            addr,
            port,
            deltas,
            side,
        }
    }
}

/// One end's rewrite and the TTL step, from `deltas` where they fit.
#[inline(always)]
fn forward_rewrite(frame: &mut [u8], meta: &PacketMeta, to: Target<'_>) {
    if !forward_v4(frame, meta, to) {
        rewrite_endpoint(frame, meta, to.addr, to.port, to.side);
        decrement_ttl(frame, meta);
    }
}

/// The checksum changes of rewriting one end of an IPv4 flow — address
/// and port — from one endpoint to another and decrementing the TTL,
/// folded to 16 bits each ([`ChecksumDelta::folded`]). A connection works
/// them out once, so that its packets only add them.
///
/// The header's change is the address's plus the TTL's: one patch for
/// two gives the same checksum as two patches one after the other,
/// because the TTL's change (`~(t << 8 | p) + ((t - 1) << 8 | p)`, always
/// 0xFEFF) is never zero (RFC 1624's eqn. 3 then yields the same value
/// either way).
///
/// Each is kept as its bytes in network order and added to a checksum
/// read in the machine's order: ones'-complement sums do not depend on
/// byte order (RFC 1071 §2(B)), so the sum of the two swapped is the sum
/// swapped, and no byte swap is made per packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointDeltas {
    /// The IPv4 header checksum's change: the address and the TTL.
    header: [u8; 2],
    /// The TCP or UDP checksum's change: the address (in its
    /// pseudo-header) and the port.
    l4: [u8; 2],
}

impl EndpointDeltas {
    /// The changes of rewriting address `from` (16-byte form,
    /// IPv4-mapped) and port `from_port` to `to` and `to_port` in an IPv4
    /// packet, with its TTL decremented.
    pub fn v4(from: &[u8; 16], from_port: u16, to: &[u8; 16], to_port: u16) -> Self {
        let address = ChecksumDelta::bytes(&from[12..], &to[12..]);
        let port = ChecksumDelta::word(from_port, to_port);
        // Any TTL of 2 or more (the word holds the protocol too).
        let ttl = ChecksumDelta::word(0x4006, 0x3f06);
        EndpointDeltas {
            header: (address + ttl).folded().to_be_bytes(),
            l4: (address + port).folded().to_be_bytes(),
        }
    }
}

/// [`forward_rewrite_dst`] / [`forward_rewrite_src`] of an IPv4 packet
/// with its deltas: false, writing nothing, for a frame they do not fit
/// or whose fields are not all in bounds.
#[inline(always)]
fn forward_v4(frame: &mut [u8], meta: &PacketMeta, to: Target<'_>) -> bool {
    if meta.l3 != L3::Ipv4 || meta.fragment == Fragment::NonFirst {
        return false;
    }
    let Some(l4_fields) = L4Fields::of(meta.tuple.protocol, to.side) else {
        // No ports: the header's rewrite only.
        // Its parts, not `to`: a `Target` passed out of line would be
        // stored for every packet, this one or not.
        return forward_v4_header_only(frame, meta, to.addr, to.deltas, to.side);
    };
    if let Some(done) = forward_v4_plain(frame, meta, to, l4_fields) {
        return done;
    }
    let l3 = usize::from(meta.l3_offset);
    let l4 = usize::from(meta.l4_offset);
    let l4_end = l4 + l4_fields.check_at + 2;
    if frame.len() < l4_end || l4 < l3 + ipv4::MIN_HEADER_LEN {
        return false;
    }
    let Some(header) = frame
        .get_mut(l3..)
        .and_then(|h| h.first_chunk_mut::<{ ipv4::MIN_HEADER_LEN }>())
    else {
        return false;
    };
    if !patch_v4_header(header, to) {
        return false;
    }
    if let Some(segment) = frame.get_mut(l4..l4_end) {
        l4_fields.patch(segment, to.port, to.deltas.l4);
    }
    true
}

/// [`forward_v4`] of a packet with no ports to change (ICMP, say).
#[inline(never)]
fn forward_v4_header_only(
    frame: &mut [u8],
    meta: &PacketMeta,
    addr: &[u8; 16],
    deltas: EndpointDeltas,
    side: Side,
) -> bool {
    let to = Target::new(addr, 0, deltas, side);
    let l3 = usize::from(meta.l3_offset);
    if usize::from(meta.l4_offset) < l3 + ipv4::MIN_HEADER_LEN {
        return false;
    }
    let header = frame
        .get_mut(l3..)
        .and_then(|h| h.first_chunk_mut::<{ ipv4::MIN_HEADER_LEN }>());
    header.is_some_and(|header| patch_v4_header(header, to))
}

/// Writes one end's address of an IPv4 header and decrements its TTL,
/// patching its checksum by the two changes' sum; false, writing
/// nothing, for a TTL below 2.
#[inline(always)]
fn patch_v4_header(header: &mut [u8; ipv4::MIN_HEADER_LEN], to: Target<'_>) -> bool {
    if header[ipv4::field::TTL] < 2 {
        return false;
    }
    write_v4_header(header, to);
    true
}

/// [`patch_v4_header`] of a header whose TTL the caller has found above
/// 1 (a lower one is not wrapped, but the checksum would then be wrong).
#[inline(always)]
fn write_v4_header(header: &mut [u8; ipv4::MIN_HEADER_LEN], to: Target<'_>) {
    let ttl = header[ipv4::field::TTL];
    let address_at = match to.side {
        Side::Source => ipv4::field::SRC_ADDR.start,
        Side::Destination => ipv4::field::DST_ADDR.start,
    };
    let [_, _, _, _, _, _, _, _, _, _, _, _, a, b, c, d] = *to.addr;
    header[address_at..address_at + 4].copy_from_slice(&[a, b, c, d]);
    header[ipv4::field::TTL] = ttl.saturating_sub(1);
    let check_at = ipv4::field::CHECKSUM.start;
    let check = [header[check_at], header[check_at + 1]];
    let check = apply_in_wire_order(check, to.deltas.header);
    header[check_at..check_at + 2].copy_from_slice(&check);
}

/// Where one end's port and the checksum are in a TCP or UDP header.
#[derive(Clone, Copy)]
struct L4Fields {
    port_at: usize,
    check_at: usize,
    tcp: bool,
}

impl L4Fields {
    /// The fields of `protocol`'s header for `side`; `None` for a
    /// protocol whose ports do not change.
    #[inline(always)]
    fn of(protocol: u8, side: Side) -> Option<L4Fields> {
        let (check_at, tcp) = match protocol {
            ip_proto::TCP => (tcp::field::CHECKSUM.start, true),
            ip_proto::UDP => (udp::field::CHECKSUM.start, false),
            _ => return None,
        };
        let port_at = match side {
            Side::Source => 0,
            Side::Destination => 2,
        };
        Some(L4Fields {
            port_at,
            check_at,
            tcp,
        })
    }

    /// Writes `port` into `segment` (the header, at least to the end of
    /// its checksum: the callers take it so) and patches the checksum by
    /// `delta`: a UDP checksum of zero ("none") stays zero, a patched one
    /// that comes out zero is sent as 0xFFFF.
    #[inline(always)]
    fn patch(self, segment: &mut [u8], port: u16, delta: [u8; 2]) {
        let (port_at, check_at) = (self.port_at, self.check_at);
        segment[port_at..port_at + 2].copy_from_slice(&port.to_be_bytes());
        let check = [segment[check_at], segment[check_at + 1]];
        // Zero and all ones read the same in either byte order.
        let check = if self.tcp {
            apply_in_wire_order(check, delta)
        } else if check != [0, 0] {
            udp_wire_value(u16::from_ne_bytes(apply_in_wire_order(check, delta))).to_ne_bytes()
        } else {
            [0, 0]
        };
        segment[check_at..check_at + 2].copy_from_slice(&check);
    }
}

/// [`apply_folded`] of a checksum and a change both as their bytes on
/// the wire, read and written in the machine's order.
#[inline(always)]
fn apply_in_wire_order(check: [u8; 2], change: [u8; 2]) -> [u8; 2] {
    apply_folded(u16::from_ne_bytes(check), u16::from_ne_bytes(change)).to_ne_bytes()
}

/// Where an untagged IPv4 header with no options puts its fields: the
/// header at 14, the TCP or UDP header at 34; a TCP header's checksum
/// ends at byte 52, a UDP header's at 42.
const PLAIN_L3: usize = 14;
const PLAIN_L4: usize = PLAIN_L3 + ipv4::MIN_HEADER_LEN;
pub(super) const PLAIN_TCP_END: usize = PLAIN_L4 + tcp::field::CHECKSUM.end;

/// [`forward_v4`] of the most common frame (untagged IPv4, no options,
/// TCP or UDP, at least a TCP header's length) at fixed offsets: the
/// same bytes written with one bounds check for them all. `None` for any
/// other frame; `Some(false)`, writing nothing, for a TTL below 2.
#[inline(always)]
fn forward_v4_plain(
    frame: &mut [u8],
    meta: &PacketMeta,
    to: Target<'_>,
    l4_fields: L4Fields,
) -> Option<bool> {
    if usize::from(meta.l3_offset) != PLAIN_L3 || usize::from(meta.l4_offset) != PLAIN_L4 {
        return None;
    }
    let f = frame.first_chunk_mut::<PLAIN_TCP_END>()?;
    if f[PLAIN_L3 + ipv4::field::TTL] < 2 {
        return Some(false);
    }
    write_plain(f, to, l4_fields);
    Some(true)
}

/// The rewrite [`forward_rewrite_dst`] makes of a frame
/// [`PlainV4Frame`](super::PlainV4Frame) holds (whose TTL it found above
/// 1, whose protocol TCP or UDP): the same bytes, from the frame's first
/// [`PLAIN_TCP_END`] bytes alone.
#[inline(always)]
pub(super) fn forward_plain_dst(
    f: &mut [u8; PLAIN_TCP_END],
    protocol: u8,
    addr: &[u8; 16],
    port: u16,
    deltas: EndpointDeltas,
) {
    forward_plain(
        f,
        protocol,
        Target::new(addr, port, deltas, Side::Destination),
    );
}

/// [`forward_plain_dst`] of the source: the bytes
/// [`forward_rewrite_src`] writes.
#[inline(always)]
pub(super) fn forward_plain_src(
    f: &mut [u8; PLAIN_TCP_END],
    protocol: u8,
    addr: &[u8; 16],
    port: u16,
    deltas: EndpointDeltas,
) {
    forward_plain(f, protocol, Target::new(addr, port, deltas, Side::Source));
}

#[inline(always)]
fn forward_plain(f: &mut [u8; PLAIN_TCP_END], protocol: u8, to: Target<'_>) {
    if let Some(l4_fields) = L4Fields::of(protocol, to.side) {
        write_plain(f, to, l4_fields);
    }
}

/// The fixed-offset rewrite of a frame whose TTL the caller has found
/// above 1: one end's address, the TTL and the header checksum, then
/// the port and the L4 checksum. Both fixed-offset paths write through
/// it ([`forward_v4_plain`], [`forward_plain`]).
#[inline(always)]
fn write_plain(f: &mut [u8; PLAIN_TCP_END], to: Target<'_>, l4_fields: L4Fields) {
    let (front, segment) = f.split_at_mut(PLAIN_L4);
    if let Some(header) = front.last_chunk_mut::<{ ipv4::MIN_HEADER_LEN }>() {
        write_v4_header(header, to);
    }
    l4_fields.patch(segment, to.port, to.deltas.l4);
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
/// and stays zero (over IPv6 too, where only tunnels may send it, RFC 6935);
/// a patched value of zero is sent as 0xFFFF.
#[inline(always)]
fn patch_udp_checksum(frame: &mut [u8], at: usize, delta: ChecksumDelta) {
    if let Some(field) = frame.get_mut(at..).and_then(|s| s.first_chunk_mut::<2>()) {
        let check = u16::from_be_bytes(*field);
        if check != 0 {
            *field = udp_wire_value(delta.apply(check)).to_be_bytes();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::builder::FrameBuilder;
    use crate::wire::checksum::{l4_checksum_v4, udp_wire_value};
    use crate::wire::{addr_to_bytes, frame_checksums_ok, parse, tcp_flags};
    use std::net::SocketAddr;

    fn sock(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn bytes(s: &str) -> [u8; 16] {
        addr_to_bytes(s.parse().unwrap())
    }

    fn tcp_v4() -> FrameBuilder {
        FrameBuilder::tcp(
            sock("198.18.0.1:40000"),
            sock("198.18.1.10:80"),
            tcp_flags::ACK,
        )
        .payload(b"GET / HTTP/1.1\r\n")
    }

    fn udp_v6() -> FrameBuilder {
        FrameBuilder::udp(sock("[2001:2::1]:5353"), sock("[2001:2::53]:53")).payload(b"query")
    }

    #[test]
    fn set_macs_writes_both_and_leaves_short_frames_alone() {
        let mut frame = tcp_v4().build();
        set_macs(&mut frame, [0x02, 1, 2, 3, 4, 5], [0x02, 6, 7, 8, 9, 10]);
        assert_eq!(&frame[..12], &[0x02, 6, 7, 8, 9, 10, 0x02, 1, 2, 3, 4, 5]);
        let mut short = [0xee; 11];
        set_macs(&mut short, [0; 6], [0; 6]);
        assert_eq!(short, [0xee; 11]);
    }

    #[test]
    fn dnat_rewrites_address_port_and_checksums() {
        for builder in [tcp_v4(), tcp_v4().vlan(3), tcp_v4().vlan(3).vlan(4)] {
            let mut frame = builder.build();
            let meta = parse(&frame).unwrap();
            rewrite_dst(&mut frame, &meta, &bytes("198.19.7.7"), 8080);
            let after = parse(&frame).unwrap();
            assert_eq!(after.tuple.dst, bytes("198.19.7.7"));
            assert_eq!(after.tuple.dst_port, 8080);
            assert_eq!(
                (after.tuple.src, after.tuple.src_port),
                (meta.tuple.src, 40000)
            );
            assert!(frame_checksums_ok(&frame));
        }
    }

    #[test]
    fn snat_rewrites_ipv6_udp() {
        let mut frame = udp_v6().build();
        let meta = parse(&frame).unwrap();
        rewrite_src(&mut frame, &meta, &bytes("2001:2::ffff:1"), 1024);
        let after = parse(&frame).unwrap();
        assert_eq!(
            (after.tuple.src, after.tuple.src_port),
            (bytes("2001:2::ffff:1"), 1024)
        );
        assert_eq!(
            (after.tuple.dst, after.tuple.dst_port),
            (meta.tuple.dst, 53)
        );
        assert!(frame_checksums_ok(&frame));
    }

    #[test]
    fn decrement_ttl_patches_the_ipv4_header_and_lowers_the_hop_limit() {
        let mut frame = tcp_v4().ttl(64).build();
        let meta = parse(&frame).unwrap();
        decrement_ttl(&mut frame, &meta);
        assert_eq!(parse(&frame).unwrap().ttl, 63);
        assert!(frame_checksums_ok(&frame));

        let mut frame = udp_v6().ttl(2).build();
        let meta = parse(&frame).unwrap();
        decrement_ttl(&mut frame, &meta);
        assert_eq!(parse(&frame).unwrap().ttl, 1);
        assert!(frame_checksums_ok(&frame));
    }

    #[test]
    fn a_ttl_of_zero_is_not_wrapped() {
        let mut frame = tcp_v4().ttl(0).build();
        let before = frame.clone();
        let meta = parse(&frame).unwrap();
        decrement_ttl(&mut frame, &meta);
        assert_eq!(frame, before);
    }

    #[test]
    fn icmpv4_keeps_its_checksum_and_icmpv6_has_it_patched() {
        let src = "198.18.0.1".parse().unwrap();
        let dst = "198.18.1.10".parse().unwrap();
        let mut frame = FrameBuilder::icmp_echo_request(src, dst).build();
        let meta = parse(&frame).unwrap();
        let l4 = usize::from(meta.l4_offset);
        let icmp_before = frame[l4..].to_vec();
        rewrite_dst(&mut frame, &meta, &bytes("198.19.0.9"), 999);
        assert_eq!(&frame[l4..], &icmp_before[..]);
        assert_eq!(parse(&frame).unwrap().tuple.dst, bytes("198.19.0.9"));
        assert!(frame_checksums_ok(&frame));

        let src = "2001:2::1".parse().unwrap();
        let dst = "2001:2::2".parse().unwrap();
        let mut frame = FrameBuilder::icmp_echo_request(src, dst)
            .payload(b"p")
            .build();
        let meta = parse(&frame).unwrap();
        rewrite_dst(&mut frame, &meta, &bytes("2001:2::99"), 999);
        assert_eq!(parse(&frame).unwrap().tuple.dst, bytes("2001:2::99"));
        assert!(frame_checksums_ok(&frame));
    }

    #[test]
    fn a_zero_udp_checksum_stays_zero() {
        let mut frame = FrameBuilder::udp(sock("198.18.0.1:5000"), sock("198.18.0.2:53"))
            .udp_zero_checksum()
            .build();
        let meta = parse(&frame).unwrap();
        rewrite_dst(&mut frame, &meta, &bytes("198.18.9.9"), 5353);
        rewrite_src(&mut frame, &meta, &bytes("198.18.8.8"), 6000);
        let l4 = usize::from(meta.l4_offset);
        assert_eq!(&frame[l4 + 6..l4 + 8], &[0, 0]);
        assert_eq!(parse(&frame).unwrap().tuple.dst_port, 5353);
        assert!(frame_checksums_ok(&frame));
    }

    #[test]
    fn a_patched_udp_checksum_of_zero_is_sent_as_all_ones() {
        let mut frame = FrameBuilder::udp(sock("198.18.0.1:5000"), sock("198.18.0.2:53"))
            .payload(b"x")
            .build();
        let meta = parse(&frame).unwrap();
        let l4 = usize::from(meta.l4_offset);
        let check = u16::from_be_bytes([frame[l4 + 6], frame[l4 + 7]]);
        // Patching port p -> p' gives ~(~C + ~p + p'); it is 0 when
        // p' ≡ C + p (mod 0xFFFF).
        let sum = u32::from(check) + u32::from(meta.tuple.dst_port);
        let new_port = ((sum & 0xffff) + (sum >> 16)) as u16;
        rewrite_dst(&mut frame, &meta, &meta.tuple.dst, new_port);
        assert_eq!(&frame[l4 + 6..l4 + 8], &[0xff, 0xff]);
        // The full computation agrees: it is 0, which goes out as 0xFFFF.
        let mut zeroed = frame[l4..].to_vec();
        zeroed[6..8].copy_from_slice(&[0, 0]);
        let full = l4_checksum_v4(&[198, 18, 0, 1], &[198, 18, 0, 2], 17, &zeroed);
        assert_eq!(full, 0);
        assert_eq!(udp_wire_value(full), 0xffff);
        assert!(frame_checksums_ok(&frame));
    }

    #[test]
    fn non_first_fragments_keep_their_l4_bytes() {
        for (src, dst) in [
            ("198.18.0.1:1", "198.18.0.2:2"),
            ("[2001:2::1]:1", "[2001:2::2]:2"),
        ] {
            let mut frame = FrameBuilder::udp(sock(src), sock(dst))
                .payload(&[0x5a; 24])
                .fragment(8, true)
                .build();
            let meta = parse(&frame).unwrap();
            let l4 = usize::from(meta.l4_offset);
            let new = if meta.l3 == L3::Ipv4 {
                bytes("198.19.1.1")
            } else {
                bytes("2001:2::77")
            };
            rewrite_dst(&mut frame, &meta, &new, 4242);
            rewrite_src(&mut frame, &meta, &new, 4242);
            assert_eq!(&frame[l4..], &[0x5a; 24]);
            let after = parse(&frame).unwrap();
            assert_eq!((after.tuple.dst, after.tuple.src), (new, new));
            assert!(frame_checksums_ok(&frame));
        }
    }

    #[test]
    fn a_first_fragment_has_its_ports_and_checksum_patched() {
        let mut frame = tcp_v4().fragment(0, true).build();
        let meta = parse(&frame).unwrap();
        rewrite_dst(&mut frame, &meta, &bytes("198.19.0.1"), 8443);
        let after = parse(&frame).unwrap();
        assert_eq!(after.tuple.dst_port, 8443);
        // Checked as a whole datagram: the builder's first fragment's
        // checksum covers only its own bytes.
        let l4 = usize::from(after.l4_offset);
        let segment = &frame[l4..usize::from(after.ip_end)];
        assert_eq!(
            l4_checksum_v4(&[198, 18, 0, 1], &[198, 19, 0, 1], 6, segment),
            0
        );
    }

    #[test]
    fn a_meta_from_another_frame_never_panics() {
        let long = FrameBuilder::tcp(sock("[2001:2::1]:1"), sock("[2001:2::2]:2"), 0)
            .payload(&[0; 100])
            .build();
        let meta = parse(&long).unwrap();
        for len in 0..long.len() {
            let mut short = long[..len].to_vec();
            set_macs(&mut short, [1; 6], [2; 6]);
            decrement_ttl(&mut short, &meta);
            rewrite_dst(&mut short, &meta, &[3; 16], 3);
            rewrite_src(&mut short, &meta, &[4; 16], 4);
        }
    }
}
