//! TCP segments (RFC 9293).

use super::bytes::{get_u16, get_u32, put_u16, put_u32, Field};
use super::ParseError;

/// Byte offsets of the TCP header fields.
pub mod field {
    use super::Field;
    /// Source port.
    pub const SRC_PORT: Field = 0..2;
    /// Destination port.
    pub const DST_PORT: Field = 2..4;
    /// Sequence number.
    pub const SEQ: Field = 4..8;
    /// Acknowledgment number.
    pub const ACK: Field = 8..12;
    /// Data offset (high nibble, in 4-byte words).
    pub const DATA_OFFSET: usize = 12;
    /// Flags (CWR ECE URG ACK PSH RST SYN FIN).
    pub const FLAGS: usize = 13;
    /// Window.
    pub const WINDOW: Field = 14..16;
    /// Checksum (with the pseudo-header).
    pub const CHECKSUM: Field = 16..18;
    /// Urgent pointer.
    pub const URGENT: Field = 18..20;
}

/// Length of the header without options.
pub const MIN_HEADER_LEN: usize = field::URGENT.end;

/// A view of a TCP segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSegment<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpSegment<T> {
    /// Wraps `buffer` without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpSegment { buffer }
    }

    /// Wraps `buffer` once [`check_len`](Self::check_len) has passed; after
    /// this no getter can panic.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let segment = Self::new_unchecked(buffer);
        segment.check_len()?;
        Ok(segment)
    }

    /// Checks that the fixed header is there
    /// ([`TruncatedL4`](ParseError::TruncatedL4)) and that the data offset
    /// is at least 5 words and fits
    /// ([`BadTcpDataOffset`](ParseError::BadTcpDataOffset)).
    #[inline]
    pub fn check_len(&self) -> Result<(), ParseError> {
        let len = self.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(ParseError::TruncatedL4);
        }
        let header_len = self.header_len();
        if header_len < MIN_HEADER_LEN || header_len > len {
            return Err(ParseError::BadTcpDataOffset);
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

    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::SEQ.start)
    }

    /// Acknowledgment number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::ACK.start)
    }

    /// Header length in bytes (data offset × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFFSET] >> 4) * 4
    }

    /// The flags byte (see [`tcp_flags`](super::tcp_flags)).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Window.
    #[inline]
    pub fn window(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::WINDOW.start)
    }

    /// Checksum as carried.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Urgent pointer.
    #[inline]
    pub fn urgent(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::URGENT.start)
    }

    /// Options: the header beyond its first 20 bytes.
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[MIN_HEADER_LEN..self.header_len()]
    }

    /// Everything after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpSegment<T> {
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

    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, seq: u32) {
        put_u32(self.buffer.as_mut(), field::SEQ.start, seq);
    }

    /// Sets the acknowledgment number.
    #[inline]
    pub fn set_ack_number(&mut self, ack: u32) {
        put_u32(self.buffer.as_mut(), field::ACK.start, ack);
    }

    /// Sets the header length in bytes (a multiple of 4); clears the
    /// reserved bits.
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        self.buffer.as_mut()[field::DATA_OFFSET] = ((len / 4) as u8 & 0x0f) << 4;
    }

    /// Sets the flags byte.
    #[inline]
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Sets the window.
    #[inline]
    pub fn set_window(&mut self, window: u16) {
        put_u16(self.buffer.as_mut(), field::WINDOW.start, window);
    }

    /// Sets the checksum.
    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        put_u16(self.buffer.as_mut(), field::CHECKSUM.start, checksum);
    }

    /// Sets the urgent pointer.
    #[inline]
    pub fn set_urgent(&mut self, urgent: u16) {
        put_u16(self.buffer.as_mut(), field::URGENT.start, urgent);
    }

    /// Options, writable.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        &mut self.buffer.as_mut()[MIN_HEADER_LEN..header_len]
    }

    /// Everything after the header, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        &mut self.buffer.as_mut()[header_len..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tcp_flags;

    #[test]
    fn setters_write_what_getters_read() {
        let mut buf = [0u8; 26];
        let mut tcp = TcpSegment::new_unchecked(&mut buf[..]);
        tcp.set_src_port(40000);
        tcp.set_dst_port(443);
        tcp.set_seq_number(0xdead_beef);
        tcp.set_ack_number(7);
        tcp.set_header_len(24);
        tcp.set_flags(tcp_flags::SYN | tcp_flags::ACK);
        tcp.set_window(1024);
        tcp.set_checksum(0xabcd);
        tcp.set_urgent(3);
        tcp.options_mut().copy_from_slice(&[2, 4, 0x05, 0xb4]); // MSS 1460
        tcp.payload_mut().copy_from_slice(&[1, 2]);
        let tcp = TcpSegment::new_checked(&buf[..]).unwrap();
        assert_eq!((tcp.src_port(), tcp.dst_port()), (40000, 443));
        assert_eq!((tcp.seq_number(), tcp.ack_number()), (0xdead_beef, 7));
        assert_eq!(tcp.header_len(), 24);
        assert_eq!(tcp.flags(), 0x12);
        assert_eq!(
            (tcp.window(), tcp.checksum(), tcp.urgent()),
            (1024, 0xabcd, 3)
        );
        assert_eq!(tcp.options(), &[2, 4, 0x05, 0xb4]);
        assert_eq!(tcp.payload(), &[1, 2]);
    }

    #[test]
    fn short_segments_and_bad_offsets_are_rejected() {
        let mut buf = [0u8; 24];
        buf[field::DATA_OFFSET] = 0x50;
        assert_eq!(
            TcpSegment::new_checked(&buf[..19]).unwrap_err(),
            ParseError::TruncatedL4
        );
        assert!(TcpSegment::new_checked(&buf[..20]).is_ok());
        buf[field::DATA_OFFSET] = 0x40;
        assert_eq!(
            TcpSegment::new_checked(&buf[..]).unwrap_err(),
            ParseError::BadTcpDataOffset
        );
        buf[field::DATA_OFFSET] = 0x70; // 28 bytes in 24
        assert_eq!(
            TcpSegment::new_checked(&buf[..]).unwrap_err(),
            ParseError::BadTcpDataOffset
        );
        buf[field::DATA_OFFSET] = 0x60;
        assert_eq!(
            TcpSegment::new_checked(&buf[..]).unwrap().payload(),
            &[] as &[u8]
        );
    }
}
