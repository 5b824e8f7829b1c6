//! ICMP (RFC 792) and ICMPv6 (RFC 4443) messages.
//!
//! Both share the first 8 bytes' layout: type, code, checksum, and 4 bytes
//! whose meaning depends on the type (identifier and sequence number for
//! echo). ICMPv4's checksum covers the message alone; ICMPv6's also covers
//! the IPv6 pseudo-header.
//!
//! A message must hold those 8 bytes, in both families: RFC 792 defines the
//! ICMP header as 8 bytes, and every ICMPv6 message RFC 4443 and its
//! successors define carries at least 4 bytes after the 4-byte type, code
//! and checksum.

use super::bytes::{get_u16, put_u16, Field, Rest};
use super::ParseError;

/// ICMPv4 message types the data plane names.
pub mod icmpv4_type {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
}

/// ICMPv6 message types the data plane names.
pub mod icmpv6_type {
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 1;
    /// Packet too big.
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 3;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// Neighbor solicitation (NDP).
    pub const NEIGHBOR_SOLICITATION: u8 = 135;
    /// Neighbor advertisement (NDP).
    pub const NEIGHBOR_ADVERTISEMENT: u8 = 136;
}

/// Byte offsets of the ICMP / ICMPv6 header fields.
pub mod field {
    use super::{Field, Rest};
    /// Message type.
    pub const TYPE: usize = 0;
    /// Message code.
    pub const CODE: usize = 1;
    /// Checksum.
    pub const CHECKSUM: Field = 2..4;
    /// Echo identifier.
    pub const ECHO_IDENT: Field = 4..6;
    /// Echo sequence number.
    pub const ECHO_SEQ: Field = 6..8;
    /// The type-specific 4 bytes, as a whole.
    pub const REST_OF_HEADER: Field = 4..8;
    /// What follows the 8-byte header.
    pub const PAYLOAD: Rest = 8..;
}

/// Length of the header both families share.
pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// A view of an ICMP or ICMPv6 message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpMessage<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpMessage<T> {
    /// Wraps `buffer` without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        IcmpMessage { buffer }
    }

    /// Wraps `buffer` once it is known to hold the 8-byte header
    /// ([`TruncatedL4`](ParseError::TruncatedL4) otherwise); after this no
    /// getter can panic.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let message = Self::new_unchecked(buffer);
        message.check_len()?;
        Ok(message)
    }

    /// Checks that the buffer holds the 8-byte header.
    #[inline]
    pub fn check_len(&self) -> Result<(), ParseError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(ParseError::TruncatedL4);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type.
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Message code.
    #[inline]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum as carried.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Echo identifier (meaningful for echo request and reply).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ECHO_IDENT.start)
    }

    /// Echo sequence number (meaningful for echo request and reply).
    #[inline]
    pub fn echo_seq(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ECHO_SEQ.start)
    }

    /// What follows the 8-byte header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpMessage<T> {
    /// Sets the message type.
    #[inline]
    pub fn set_msg_type(&mut self, value: u8) {
        self.buffer.as_mut()[field::TYPE] = value;
    }

    /// Sets the message code.
    #[inline]
    pub fn set_msg_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value;
    }

    /// Sets the checksum.
    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        put_u16(self.buffer.as_mut(), field::CHECKSUM.start, checksum);
    }

    /// Sets the echo identifier.
    #[inline]
    pub fn set_echo_ident(&mut self, ident: u16) {
        put_u16(self.buffer.as_mut(), field::ECHO_IDENT.start, ident);
    }

    /// Sets the echo sequence number.
    #[inline]
    pub fn set_echo_seq(&mut self, seq: u16) {
        put_u16(self.buffer.as_mut(), field::ECHO_SEQ.start, seq);
    }

    /// What follows the header, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::internet_checksum;

    #[test]
    fn an_echo_request_reads_back_and_checksums_to_zero() {
        let mut buf = [0u8; 12];
        let mut icmp = IcmpMessage::new_checked(&mut buf[..]).unwrap();
        icmp.set_msg_type(icmpv4_type::ECHO_REQUEST);
        icmp.set_msg_code(0);
        icmp.set_echo_ident(0x4242);
        icmp.set_echo_seq(9);
        icmp.payload_mut().copy_from_slice(b"ping");
        icmp.set_checksum(0);
        let c = internet_checksum(&buf);
        IcmpMessage::new_unchecked(&mut buf[..]).set_checksum(c);
        let icmp = IcmpMessage::new_checked(&buf[..]).unwrap();
        assert_eq!((icmp.msg_type(), icmp.msg_code()), (8, 0));
        assert_eq!((icmp.echo_ident(), icmp.echo_seq()), (0x4242, 9));
        assert_eq!(icmp.checksum(), c);
        assert_eq!(icmp.payload(), b"ping");
        assert_eq!(internet_checksum(&buf), 0);
    }

    #[test]
    fn fewer_than_eight_bytes_are_truncated() {
        let buf = [0u8; 8];
        assert_eq!(
            IcmpMessage::new_checked(&buf[..7]).unwrap_err(),
            ParseError::TruncatedL4
        );
        assert!(IcmpMessage::new_checked(&buf[..])
            .unwrap()
            .payload()
            .is_empty());
    }
}
