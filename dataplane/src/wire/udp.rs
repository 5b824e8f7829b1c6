//! UDP datagrams (RFC 768).

use super::bytes::{get_u16, put_u16, Field};
use super::ParseError;

/// Byte offsets of the UDP header fields.
pub mod field {
    use super::Field;
    /// Source port.
    pub const SRC_PORT: Field = 0..2;
    /// Destination port.
    pub const DST_PORT: Field = 2..4;
    /// Length of header and payload.
    pub const LENGTH: Field = 4..6;
    /// Checksum (with the pseudo-header); 0 over IPv4 means "none".
    pub const CHECKSUM: Field = 6..8;
}

/// Length of the header.
pub const HEADER_LEN: usize = field::CHECKSUM.end;

/// A view of a UDP datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpDatagram<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpDatagram<T> {
    /// Wraps `buffer` without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpDatagram { buffer }
    }

    /// Wraps `buffer` (the IP payload) once [`check_len`](Self::check_len)
    /// has passed; after this no getter can panic.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let datagram = Self::new_unchecked(buffer);
        datagram.check_len()?;
        Ok(datagram)
    }

    /// Wraps the first fragment of a fragmented datagram, whose length field
    /// counts bytes that later fragments carry: only the header and a
    /// length of at least 8 are checked. [`payload`](Self::payload) then
    /// stops at the end of the buffer.
    #[inline]
    pub fn new_checked_first_fragment(buffer: T) -> Result<Self, ParseError> {
        let datagram = Self::new_unchecked(buffer);
        datagram.check_header()?;
        Ok(datagram)
    }

    /// Checks that the header is there ([`TruncatedL4`](ParseError::TruncatedL4))
    /// and that the length field is at least 8 and fits in the buffer
    /// ([`BadUdpLength`](ParseError::BadUdpLength)).
    #[inline]
    pub fn check_len(&self) -> Result<(), ParseError> {
        self.check_header()?;
        if usize::from(self.len()) > self.buffer.as_ref().len() {
            return Err(ParseError::BadUdpLength);
        }
        Ok(())
    }

    /// Checks the header is there and its length field is at least 8.
    #[inline]
    fn check_header(&self) -> Result<(), ParseError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(ParseError::TruncatedL4);
        }
        if usize::from(self.len()) < HEADER_LEN {
            return Err(ParseError::BadUdpLength);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::SRC_PORT.start)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::DST_PORT.start)
    }

    /// The length field: header and payload.
    #[inline]
    #[allow(clippy::len_without_is_empty)] // a header field, not a container length
    pub fn len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Checksum as carried.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// The payload, up to the length field (or the end of the buffer, for a
    /// first fragment).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        let end = usize::from(self.len()).min(data.len());
        data.get(HEADER_LEN..end).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpDatagram<T> {
    /// Sets the source port (the checksum is not updated).
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        put_u16(self.buffer.as_mut(), field::SRC_PORT.start, port);
    }

    /// Sets the destination port (the checksum is not updated).
    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        put_u16(self.buffer.as_mut(), field::DST_PORT.start, port);
    }

    /// Sets the length field.
    #[inline]
    pub fn set_len(&mut self, len: u16) {
        put_u16(self.buffer.as_mut(), field::LENGTH.start, len);
    }

    /// Sets the checksum.
    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        put_u16(self.buffer.as_mut(), field::CHECKSUM.start, checksum);
    }

    /// The payload, writable (bounded like [`payload`](Self::payload)).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        let data = self.buffer.as_mut();
        let end = end.min(data.len());
        data.get_mut(HEADER_LEN..end).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setters_write_what_getters_read() {
        let mut buf = [0u8; 12];
        let mut udp = UdpDatagram::new_unchecked(&mut buf[..]);
        udp.set_src_port(5353);
        udp.set_dst_port(53);
        udp.set_len(11);
        udp.set_checksum(0x1234);
        udp.payload_mut().copy_from_slice(&[7, 8, 9]);
        let udp = UdpDatagram::new_checked(&buf[..]).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port()), (5353, 53));
        assert_eq!((udp.len(), udp.checksum()), (11, 0x1234));
        // The length field, not the buffer, bounds the payload.
        assert_eq!(udp.payload(), &[7, 8, 9]);
    }

    #[test]
    fn short_datagrams_and_bad_lengths_are_rejected() {
        let mut buf = [0u8; 10];
        buf[4..6].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(
            UdpDatagram::new_checked(&buf[..7]).unwrap_err(),
            ParseError::TruncatedL4
        );
        assert!(UdpDatagram::new_checked(&buf[..]).is_ok());
        assert_eq!(
            UdpDatagram::new_checked(&buf[..9]).unwrap_err(),
            ParseError::BadUdpLength
        );
        buf[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(
            UdpDatagram::new_checked(&buf[..]).unwrap_err(),
            ParseError::BadUdpLength
        );
    }

    #[test]
    fn a_first_fragment_may_announce_more_than_it_carries() {
        let mut buf = [0u8; 12];
        buf[4..6].copy_from_slice(&3000u16.to_be_bytes());
        assert_eq!(
            UdpDatagram::new_checked(&buf[..]).unwrap_err(),
            ParseError::BadUdpLength
        );
        let udp = UdpDatagram::new_checked_first_fragment(&buf[..]).unwrap();
        assert_eq!(udp.payload().len(), 4);
        buf[4..6].copy_from_slice(&4u16.to_be_bytes());
        assert_eq!(
            UdpDatagram::new_checked_first_fragment(&buf[..]).unwrap_err(),
            ParseError::BadUdpLength
        );
    }
}
