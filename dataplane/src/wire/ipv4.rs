//! IPv4 packets (RFC 791).

use super::bytes::{get_array, get_u16, put_u16, Field};
use super::checksum::internet_checksum;
use super::{Fragment, ParseError};

/// Byte offsets of the IPv4 header fields.
pub mod field {
    use super::Field;
    /// Version (high nibble) and IHL (low nibble).
    pub const VER_IHL: usize = 0;
    /// DSCP and ECN.
    pub const DSCP_ECN: usize = 1;
    /// Total length, header included.
    pub const LENGTH: Field = 2..4;
    /// Identification.
    pub const IDENT: Field = 4..6;
    /// Flags (3 bits) and fragment offset (13 bits, in 8-byte units).
    pub const FLAGS_FRAG: Field = 6..8;
    /// Time to live.
    pub const TTL: usize = 8;
    /// Protocol of the payload.
    pub const PROTOCOL: usize = 9;
    /// Header checksum.
    pub const CHECKSUM: Field = 10..12;
    /// Source address.
    pub const SRC_ADDR: Field = 12..16;
    /// Destination address.
    pub const DST_ADDR: Field = 16..20;
}

/// Length of the header without options.
pub const MIN_HEADER_LEN: usize = field::DST_ADDR.end;
/// Length of the longest header (IHL 15).
pub const MAX_HEADER_LEN: usize = 60;

const FLAG_DONT_FRAGMENT: u16 = 0x4000;
const FLAG_MORE_FRAGMENTS: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet.
///
/// The buffer may run past the packet (Ethernet padding): lengths come from
/// the header, and [`payload`](Self::payload) stops at the total length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps `buffer` without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
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
    /// ([`TruncatedIp`](ParseError::TruncatedIp)), the version is 4
    /// ([`BadIpVersion`](ParseError::BadIpVersion)), IHL is at least 5 and
    /// the header fits ([`BadIhl`](ParseError::BadIhl)), and the total length
    /// covers the header and fits ([`BadIpLength`](ParseError::BadIpLength)).
    #[inline]
    pub fn check_len(&self) -> Result<(), ParseError> {
        let len = self.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(ParseError::TruncatedIp);
        }
        if self.version() != 4 {
            return Err(ParseError::BadIpVersion);
        }
        let header_len = self.header_len();
        if header_len < MIN_HEADER_LEN || header_len > len {
            return Err(ParseError::BadIhl);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len || total_len > len {
            return Err(ParseError::BadIpLength);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version field (4 for a checked packet).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// DSCP and ECN bits.
    #[inline]
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// Total length of the packet, header included.
    #[inline]
    pub fn total_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::IDENT.start)
    }

    /// The don't-fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLAGS_FRAG.start) & FLAG_DONT_FRAGMENT != 0
    }

    /// The more-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLAGS_FRAG.start) & FLAG_MORE_FRAGMENTS != 0
    }

    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (get_u16(self.buffer.as_ref(), field::FLAGS_FRAG.start) & FRAG_OFFSET_MASK) << 3
    }

    /// Where this packet sits in a fragmented datagram.
    #[inline]
    pub fn fragment(&self) -> Fragment {
        let flags_frag = get_u16(self.buffer.as_ref(), field::FLAGS_FRAG.start);
        if flags_frag & FRAG_OFFSET_MASK != 0 {
            Fragment::NonFirst
        } else if flags_frag & FLAG_MORE_FRAGMENTS != 0 {
            Fragment::First
        } else {
            Fragment::None
        }
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload.
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum as carried.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> [u8; 4] {
        get_array(self.buffer.as_ref(), field::SRC_ADDR)
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> [u8; 4] {
        get_array(self.buffer.as_ref(), field::DST_ADDR)
    }

    /// Options: the header beyond its first 20 bytes.
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[MIN_HEADER_LEN..self.header_len()]
    }

    /// The payload: from the end of the header to the total length.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }

    /// Whether the header checksum is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        internet_checksum(&self.buffer.as_ref()[..self.header_len()]) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets version 4 and the header length in bytes (a multiple of 4).
    #[inline]
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((header_len / 4) as u8 & 0x0f);
    }

    /// Sets DSCP and ECN.
    #[inline]
    pub fn set_dscp_ecn(&mut self, value: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = value;
    }

    /// Sets the total length.
    #[inline]
    pub fn set_total_len(&mut self, len: u16) {
        put_u16(self.buffer.as_mut(), field::LENGTH.start, len);
    }

    /// Sets the identification.
    #[inline]
    pub fn set_ident(&mut self, ident: u16) {
        put_u16(self.buffer.as_mut(), field::IDENT.start, ident);
    }

    /// Sets the flags and the fragment offset (in bytes, a multiple of 8).
    #[inline]
    pub fn set_flags_and_frag_offset(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let mut value = (offset >> 3) & FRAG_OFFSET_MASK;
        if dont_frag {
            value |= FLAG_DONT_FRAGMENT;
        }
        if more_frags {
            value |= FLAG_MORE_FRAGMENTS;
        }
        put_u16(self.buffer.as_mut(), field::FLAGS_FRAG.start, value);
    }

    /// Sets the time to live (the checksum is not updated).
    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the protocol.
    #[inline]
    pub fn set_protocol(&mut self, protocol: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol;
    }

    /// Sets the header checksum.
    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        put_u16(self.buffer.as_mut(), field::CHECKSUM.start, checksum);
    }

    /// Sets the source address (the checksum is not updated).
    #[inline]
    pub fn set_src_addr(&mut self, addr: [u8; 4]) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr);
    }

    /// Sets the destination address (the checksum is not updated).
    #[inline]
    pub fn set_dst_addr(&mut self, addr: [u8; 4]) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr);
    }

    /// Recomputes the header checksum from scratch.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let header_len = self.header_len();
        let checksum = internet_checksum(&self.buffer.as_ref()[..header_len]);
        self.set_checksum(checksum);
    }

    /// Options, writable.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        &mut self.buffer.as_mut()[MIN_HEADER_LEN..header_len]
    }

    /// The payload, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.header_len(), usize::from(self.total_len()));
        &mut self.buffer.as_mut()[start..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 24-byte header (one 4-byte option) and 4 payload bytes.
    fn packet() -> Vec<u8> {
        let mut buf = vec![0u8; 28];
        let mut ip = Ipv4Packet::new_unchecked(&mut buf[..]);
        ip.set_version_and_header_len(24);
        ip.set_total_len(28);
        ip.set_ident(0x1234);
        ip.set_flags_and_frag_offset(true, false, 0);
        ip.set_ttl(64);
        ip.set_protocol(17);
        ip.set_src_addr([198, 18, 0, 1]);
        ip.set_dst_addr([198, 18, 1, 10]);
        ip.options_mut().copy_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
        ip.payload_mut().copy_from_slice(&[9, 8, 7, 6]);
        ip.fill_checksum();
        buf
    }

    #[test]
    fn setters_write_what_getters_read() {
        let buf = packet();
        let ip = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(ip.version(), 4);
        assert_eq!(ip.header_len(), 24);
        assert_eq!(ip.total_len(), 28);
        assert_eq!(ip.ident(), 0x1234);
        assert!(ip.dont_frag());
        assert!(!ip.more_frags());
        assert_eq!(ip.fragment(), Fragment::None);
        assert_eq!(ip.ttl(), 64);
        assert_eq!(ip.protocol(), 17);
        assert_eq!(ip.src_addr(), [198, 18, 0, 1]);
        assert_eq!(ip.dst_addr(), [198, 18, 1, 10]);
        assert_eq!(ip.options(), &[1, 1, 1, 0]);
        assert_eq!(ip.payload(), &[9, 8, 7, 6]);
        assert!(ip.verify_checksum());
    }

    #[test]
    fn a_changed_byte_breaks_the_header_checksum() {
        let mut buf = packet();
        buf[field::TTL] -= 1;
        assert!(!Ipv4Packet::new_checked(&buf[..]).unwrap().verify_checksum());
    }

    #[test]
    fn fragment_position_comes_from_offset_and_more_fragments() {
        let mut buf = packet();
        let mut ip = Ipv4Packet::new_unchecked(&mut buf[..]);
        ip.set_flags_and_frag_offset(false, true, 0);
        assert_eq!(ip.fragment(), Fragment::First);
        ip.set_flags_and_frag_offset(false, true, 1480);
        assert_eq!(
            (ip.fragment(), ip.frag_offset()),
            (Fragment::NonFirst, 1480)
        );
        ip.set_flags_and_frag_offset(false, false, 8);
        assert_eq!(ip.fragment(), Fragment::NonFirst);
        assert!(!ip.more_frags());
    }

    #[test]
    fn padding_after_the_packet_is_not_payload() {
        let mut buf = packet();
        buf.extend_from_slice(&[0; 18]);
        let ip = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(ip.payload(), &[9, 8, 7, 6]);
    }

    #[test]
    fn checks_run_in_order_and_name_the_broken_field() {
        let good = packet();
        assert_eq!(
            Ipv4Packet::new_checked(&good[..19]).unwrap_err(),
            ParseError::TruncatedIp
        );
        let mut v6 = good.clone();
        v6[0] = 0x66;
        assert_eq!(
            Ipv4Packet::new_checked(&v6[..]).unwrap_err(),
            ParseError::BadIpVersion
        );
        let mut ihl4 = good.clone();
        ihl4[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&ihl4[..]).unwrap_err(),
            ParseError::BadIhl
        );
        let mut ihl_past = good.clone();
        ihl_past[0] = 0x48; // 32-byte header in a 28-byte buffer
        assert_eq!(
            Ipv4Packet::new_checked(&ihl_past[..]).unwrap_err(),
            ParseError::BadIhl
        );
        let mut short_total = good.clone();
        short_total[2..4].copy_from_slice(&20u16.to_be_bytes()); // < 24-byte header
        assert_eq!(
            Ipv4Packet::new_checked(&short_total[..]).unwrap_err(),
            ParseError::BadIpLength
        );
        assert_eq!(
            Ipv4Packet::new_checked(&good[..27]).unwrap_err(),
            ParseError::BadIpLength
        );
    }
}
