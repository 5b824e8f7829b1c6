//! IPv6 packets (RFC 8200) and their extension headers.

use super::bytes::{get_array, get_u16, get_u32, put_u16, put_u32, Field, Rest};
use super::{Fragment, ParseError};

/// Byte offsets of the IPv6 header fields.
pub mod field {
    use super::{Field, Rest};
    /// Version (4 bits), traffic class (8) and flow label (20).
    pub const VER_TC_FLOW: Field = 0..4;
    /// Payload length: everything after the fixed header.
    pub const PAYLOAD_LEN: Field = 4..6;
    /// The first next-header value.
    pub const NEXT_HEADER: usize = 6;
    /// Hop limit.
    pub const HOP_LIMIT: usize = 7;
    /// Source address.
    pub const SRC_ADDR: Field = 8..24;
    /// Destination address.
    pub const DST_ADDR: Field = 24..40;
    /// Extension headers and the upper-layer packet.
    pub const PAYLOAD: Rest = 40..;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// Next-header values for the extension headers the parser walks, and the
/// terminal "no next header".
pub mod next_header {
    /// Hop-by-hop options.
    pub const HOP_BY_HOP: u8 = 0;
    /// Routing header.
    pub const ROUTING: u8 = 43;
    /// Fragment header.
    pub const FRAGMENT: u8 = 44;
    /// Authentication header (its length is in 4-byte units, plus 2).
    pub const AUTH: u8 = 51;
    /// No next header: nothing follows.
    pub const NO_NEXT_HEADER: u8 = 59;
    /// Destination options.
    pub const DEST_OPTS: u8 = 60;
}

/// The most extension headers [`walk_extension_headers`] follows; a packet
/// with more is rejected rather than walked at length on the hot path.
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// A view of an IPv6 packet.
///
/// The buffer may run past the packet (Ethernet padding): lengths come from
/// the header, and [`payload`](Self::payload) stops at the payload length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps `buffer` without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps `buffer` once [`check_len`](Self::check_len) has passed; after
    /// this no getter can panic.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks, in this order: the fixed header is there
    /// ([`TruncatedIp`](ParseError::TruncatedIp)), the version is 6
    /// ([`BadIpVersion`](ParseError::BadIpVersion)), and the payload length
    /// fits ([`BadIpLength`](ParseError::BadIpLength)).
    #[inline]
    pub fn check_len(&self) -> Result<(), ParseError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(ParseError::TruncatedIp);
        }
        if self.version() != 6 {
            return Err(ParseError::BadIpVersion);
        }
        if HEADER_LEN + usize::from(self.payload_len()) > len {
            return Err(ParseError::BadIpLength);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version field (6 for a checked packet).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// Traffic class.
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (get_u16(self.buffer.as_ref(), 0) >> 4) as u8
    }

    /// Flow label (20 bits).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::VER_TC_FLOW.start) & 0x000f_ffff
    }

    /// Payload length: extension headers and upper-layer packet.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::PAYLOAD_LEN.start)
    }

    /// The first next-header value.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> [u8; 16] {
        get_array(self.buffer.as_ref(), field::SRC_ADDR)
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> [u8; 16] {
        get_array(self.buffer.as_ref(), field::DST_ADDR)
    }

    /// The payload: extension headers and upper-layer packet, up to the
    /// payload length.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets version 6, the traffic class and the flow label (low 20 bits).
    #[inline]
    pub fn set_version_class_label(&mut self, traffic_class: u8, flow_label: u32) {
        let word = (6 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000f_ffff);
        put_u32(self.buffer.as_mut(), field::VER_TC_FLOW.start, word);
    }

    /// Sets the payload length.
    #[inline]
    pub fn set_payload_len(&mut self, len: u16) {
        put_u16(self.buffer.as_mut(), field::PAYLOAD_LEN.start, len);
    }

    /// Sets the first next-header value.
    #[inline]
    pub fn set_next_header(&mut self, value: u8) {
        self.buffer.as_mut()[field::NEXT_HEADER] = value;
    }

    /// Sets the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hop_limit;
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: [u8; 16]) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr);
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: [u8; 16]) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr);
    }

    /// The payload, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// The length in bytes of an extension header of kind `next_header` whose
/// length byte (its second byte) is `len_field`, or `None` if that kind is
/// not an extension header the parser walks.
#[inline]
pub const fn extension_header_len(next_header: u8, len_field: u8) -> Option<usize> {
    match next_header {
        next_header::HOP_BY_HOP | next_header::ROUTING | next_header::DEST_OPTS => {
            Some((len_field as usize + 1) * 8)
        }
        next_header::FRAGMENT => Some(FRAGMENT_HEADER_LEN),
        next_header::AUTH => Some((len_field as usize + 2) * 4),
        _ => None,
    }
}

/// Byte offsets shared by every extension header.
pub mod ext_field {
    /// The next-header value of what follows.
    pub const NEXT_HEADER: usize = 0;
    /// The length byte (its unit depends on the header kind).
    pub const LENGTH: usize = 1;
}

/// A view of one extension header of a known kind (hop-by-hop, routing,
/// destination options, fragment or AH).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6ExtHeader<T: AsRef<[u8]>> {
    buffer: T,
    kind: u8,
}

impl<T: AsRef<[u8]>> Ipv6ExtHeader<T> {
    /// Wraps `buffer`, which starts with an extension header of kind `kind`
    /// (the next-header value that announced it), once the whole header is
    /// known to fit; otherwise [`BadExtensionHeader`](ParseError::BadExtensionHeader),
    /// also for a kind that is not an extension header.
    #[inline]
    pub fn new_checked(kind: u8, buffer: T) -> Result<Self, ParseError> {
        let data = buffer.as_ref();
        let len_field = *data
            .get(ext_field::LENGTH)
            .ok_or(ParseError::BadExtensionHeader)?;
        let len = extension_header_len(kind, len_field).ok_or(ParseError::BadExtensionHeader)?;
        if data.len() < len {
            return Err(ParseError::BadExtensionHeader);
        }
        Ok(Ipv6ExtHeader { buffer, kind })
    }

    /// The kind of this header (the next-header value that announced it).
    #[inline]
    pub fn kind(&self) -> u8 {
        self.kind
    }

    /// The next-header value of what follows.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[ext_field::NEXT_HEADER]
    }

    /// The header's length in bytes.
    #[inline]
    pub fn header_len(&self) -> usize {
        let len_field = self.buffer.as_ref()[ext_field::LENGTH];
        extension_header_len(self.kind, len_field).unwrap_or(0)
    }

    /// The header's bytes after the next-header and length bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[2..self.header_len()]
    }
}

/// Byte offsets of the fragment header.
pub mod frag_field {
    use super::Field;
    /// The next-header value of the fragmentable part.
    pub const NEXT_HEADER: usize = 0;
    /// Reserved.
    pub const RESERVED: usize = 1;
    /// Fragment offset (13 bits, in 8-byte units), 2 reserved bits, M flag.
    pub const OFFSET_FLAGS: Field = 2..4;
    /// Identification.
    pub const IDENT: Field = 4..8;
}

/// Length of the fragment header.
pub const FRAGMENT_HEADER_LEN: usize = frag_field::IDENT.end;

/// A view of an IPv6 fragment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6FragmentHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6FragmentHeader<T> {
    /// Wraps `buffer` without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6FragmentHeader { buffer }
    }

    /// Wraps `buffer` once it is known to hold the 8-byte header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        if buffer.as_ref().len() < FRAGMENT_HEADER_LEN {
            return Err(ParseError::BadExtensionHeader);
        }
        Ok(Self::new_unchecked(buffer))
    }

    /// The next-header value of the fragmentable part.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[frag_field::NEXT_HEADER]
    }

    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        get_u16(self.buffer.as_ref(), frag_field::OFFSET_FLAGS.start) & !0x7
    }

    /// The more-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        get_u16(self.buffer.as_ref(), frag_field::OFFSET_FLAGS.start) & 1 != 0
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u32 {
        get_u32(self.buffer.as_ref(), frag_field::IDENT.start)
    }

    /// Where this packet sits in a fragmented datagram (offset 0 without
    /// M is an atomic fragment, RFC 6946: a whole datagram).
    #[inline]
    pub fn fragment(&self) -> Fragment {
        if self.frag_offset() != 0 {
            Fragment::NonFirst
        } else if self.more_frags() {
            Fragment::First
        } else {
            Fragment::None
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6FragmentHeader<T> {
    /// Sets the next-header value and clears the reserved byte.
    #[inline]
    pub fn set_next_header(&mut self, value: u8) {
        let data = self.buffer.as_mut();
        data[frag_field::NEXT_HEADER] = value;
        data[frag_field::RESERVED] = 0;
    }

    /// Sets the offset (in bytes, a multiple of 8) and the M flag.
    #[inline]
    pub fn set_frag_offset_and_more(&mut self, offset: u16, more: bool) {
        let value = (offset & !0x7) | u16::from(more);
        put_u16(self.buffer.as_mut(), frag_field::OFFSET_FLAGS.start, value);
    }

    /// Sets the identification.
    #[inline]
    pub fn set_ident(&mut self, ident: u32) {
        put_u32(self.buffer.as_mut(), frag_field::IDENT.start, ident);
    }
}

/// What follows an IPv6 packet's extension headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpperLayer {
    /// The final next-header value: the upper-layer protocol (59 if none).
    pub protocol: u8,
    /// Offset of the upper-layer header from the start of the IPv6
    /// payload (for a non-first fragment: of its fragment data).
    pub offset: usize,
    /// Fragment position, from a fragment header if there is one.
    pub fragment: Fragment,
}

/// Walks the extension headers at the start of an IPv6 `payload`, the first
/// of kind `first` (the fixed header's next-header value).
///
/// Follows hop-by-hop, routing, destination options, fragment and AH
/// headers, at most [`MAX_EXTENSION_HEADERS`] of them
/// ([`TooManyExtensionHeaders`](ParseError::TooManyExtensionHeaders) past
/// that); one that runs past the payload is
/// [`BadExtensionHeader`](ParseError::BadExtensionHeader). The walk stops
/// after the fragment header of a non-first fragment: what follows it is
/// fragment data, not headers.
#[inline]
pub fn walk_extension_headers(first: u8, payload: &[u8]) -> Result<UpperLayer, ParseError> {
    let mut next = first;
    let mut offset = 0usize;
    let mut fragment = Fragment::None;
    let mut walked = 0usize;
    while extension_header_len(next, 0).is_some() {
        if walked == MAX_EXTENSION_HEADERS {
            return Err(ParseError::TooManyExtensionHeaders);
        }
        let rest = payload.get(offset..).unwrap_or_default();
        let header = Ipv6ExtHeader::new_checked(next, rest)?;
        if next == next_header::FRAGMENT {
            let frag = Ipv6FragmentHeader::new_checked(rest)?;
            fragment = frag.fragment();
            if fragment == Fragment::NonFirst {
                return Ok(UpperLayer {
                    protocol: frag.next_header(),
                    offset: offset + FRAGMENT_HEADER_LEN,
                    fragment,
                });
            }
        }
        next = header.next_header();
        offset += header.header_len();
        walked += 1;
    }
    Ok(UpperLayer {
        protocol: next,
        offset,
        fragment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const DST: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    fn packet(payload: &[u8], first: u8) -> Vec<u8> {
        let mut buf = vec![0u8; HEADER_LEN + payload.len()];
        let mut ip = Ipv6Packet::new_unchecked(&mut buf[..]);
        ip.set_version_class_label(0xb8, 0x12345);
        ip.set_payload_len(payload.len() as u16);
        ip.set_next_header(first);
        ip.set_hop_limit(64);
        ip.set_src_addr(SRC);
        ip.set_dst_addr(DST);
        ip.payload_mut().copy_from_slice(payload);
        buf
    }

    #[test]
    fn setters_write_what_getters_read() {
        let buf = packet(&[1, 2, 3, 4, 5, 6, 7, 8], 17);
        let ip = Ipv6Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(ip.version(), 6);
        assert_eq!(ip.traffic_class(), 0xb8);
        assert_eq!(ip.flow_label(), 0x12345);
        assert_eq!(ip.payload_len(), 8);
        assert_eq!(ip.next_header(), 17);
        assert_eq!(ip.hop_limit(), 64);
        assert_eq!(ip.src_addr(), SRC);
        assert_eq!(ip.dst_addr(), DST);
        assert_eq!(ip.payload(), &[1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn checks_run_in_order_and_name_the_broken_field() {
        let good = packet(&[0; 8], 17);
        assert_eq!(
            Ipv6Packet::new_checked(&good[..39]).unwrap_err(),
            ParseError::TruncatedIp
        );
        let mut v4 = good.clone();
        v4[0] = 0x45;
        assert_eq!(
            Ipv6Packet::new_checked(&v4[..]).unwrap_err(),
            ParseError::BadIpVersion
        );
        assert_eq!(
            Ipv6Packet::new_checked(&good[..47]).unwrap_err(),
            ParseError::BadIpLength
        );
    }

    #[test]
    fn extension_header_lengths_follow_their_units() {
        assert_eq!(extension_header_len(next_header::HOP_BY_HOP, 0), Some(8));
        assert_eq!(extension_header_len(next_header::DEST_OPTS, 2), Some(24));
        assert_eq!(extension_header_len(next_header::ROUTING, 1), Some(16));
        assert_eq!(extension_header_len(next_header::FRAGMENT, 9), Some(8));
        assert_eq!(extension_header_len(next_header::AUTH, 4), Some(24));
        assert_eq!(extension_header_len(6, 0), None);
        assert_eq!(extension_header_len(next_header::NO_NEXT_HEADER, 0), None);
    }

    #[test]
    fn walks_every_kind_of_extension_header() {
        let mut chain = Vec::new();
        chain.extend_from_slice(&[next_header::DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]); // hop-by-hop, PadN
        chain.extend_from_slice(&[next_header::ROUTING, 1, 1, 12, 0, 0, 0, 0]); // dest opts, 16 bytes
        chain.extend_from_slice(&[0; 8]);
        chain.extend_from_slice(&[next_header::FRAGMENT, 0, 253, 0, 0, 0, 0, 0]); // routing, 0 left
        chain.extend_from_slice(&[next_header::AUTH, 0, 0, 0, 0, 0, 0, 0]); // atomic fragment
        chain.extend_from_slice(&[6, 4, 0, 0]); // AH: 24 bytes
        chain.extend_from_slice(&[0; 20]);
        let upper = walk_extension_headers(next_header::HOP_BY_HOP, &chain).unwrap();
        assert_eq!(
            upper,
            UpperLayer {
                protocol: 6,
                offset: chain.len(),
                fragment: Fragment::None
            }
        );
    }

    #[test]
    fn a_non_first_fragment_stops_the_walk_at_its_fragment_header() {
        let mut chain = vec![17, 0, 0x05, 0xc8, 0, 0, 0, 7]; // offset 1480, M=0
        chain.extend_from_slice(&[next_header::HOP_BY_HOP, 0xff, 0, 0]); // data, not a header
        let upper = walk_extension_headers(next_header::FRAGMENT, &chain).unwrap();
        assert_eq!(upper.fragment, Fragment::NonFirst);
        assert_eq!((upper.protocol, upper.offset), (17, 8));
        let frag = Ipv6FragmentHeader::new_checked(&chain[..]).unwrap();
        assert_eq!(
            (frag.frag_offset(), frag.more_frags(), frag.ident()),
            (1480, false, 7)
        );
    }

    #[test]
    fn a_first_fragment_is_walked_through() {
        let chain = [
            next_header::DEST_OPTS,
            0,
            0,
            1,
            0,
            0,
            0,
            1,
            58,
            0,
            1,
            4,
            0,
            0,
            0,
            0,
        ];
        let upper = walk_extension_headers(next_header::FRAGMENT, &chain).unwrap();
        assert_eq!(
            upper,
            UpperLayer {
                protocol: 58,
                offset: 16,
                fragment: Fragment::First
            }
        );
    }

    #[test]
    fn a_header_past_the_payload_is_bad() {
        let chain = [6, 1, 1, 4, 0, 0, 0, 0]; // claims 16 bytes
        assert_eq!(
            walk_extension_headers(next_header::HOP_BY_HOP, &chain).unwrap_err(),
            ParseError::BadExtensionHeader
        );
        assert_eq!(
            walk_extension_headers(next_header::ROUTING, &[6]).unwrap_err(),
            ParseError::BadExtensionHeader
        );
        assert_eq!(
            walk_extension_headers(next_header::FRAGMENT, &[6, 0, 0, 0]).unwrap_err(),
            ParseError::BadExtensionHeader
        );
        assert_eq!(
            walk_extension_headers(next_header::DEST_OPTS, &[]).unwrap_err(),
            ParseError::BadExtensionHeader
        );
    }

    #[test]
    fn eight_headers_are_walked_and_a_ninth_is_too_many() {
        let header = |next: u8| [next, 0, 1, 4, 0, 0, 0, 0];
        let mut eight = Vec::new();
        for _ in 0..7 {
            eight.extend_from_slice(&header(next_header::DEST_OPTS));
        }
        eight.extend_from_slice(&header(next_header::NO_NEXT_HEADER));
        let upper = walk_extension_headers(next_header::DEST_OPTS, &eight).unwrap();
        assert_eq!(
            (upper.protocol, upper.offset),
            (next_header::NO_NEXT_HEADER, 64)
        );

        let mut nine = Vec::new();
        for _ in 0..8 {
            nine.extend_from_slice(&header(next_header::DEST_OPTS));
        }
        nine.extend_from_slice(&header(next_header::NO_NEXT_HEADER));
        assert_eq!(
            walk_extension_headers(next_header::DEST_OPTS, &nine).unwrap_err(),
            ParseError::TooManyExtensionHeaders
        );
    }

    #[test]
    fn no_extension_headers_means_the_payload_is_the_upper_layer() {
        let upper = walk_extension_headers(6, &[]).unwrap();
        assert_eq!(
            (upper.protocol, upper.offset, upper.fragment),
            (6, 0, Fragment::None)
        );
    }
}
