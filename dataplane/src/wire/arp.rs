//! ARP for Ethernet and IPv4 (RFC 826).
//!
//! The data plane hands ARP to the kernel; this view exists so that tests,
//! fixtures and neighbour resolution can read and build it.

use super::bytes::{get_array, get_u16, put_u16, Field};
use super::ParseError;

/// ARP operation codes.
pub mod operation {
    /// Request: who has the target IP?
    pub const REQUEST: u16 = 1;
    /// Reply: the sender has the sender IP.
    pub const REPLY: u16 = 2;
}

/// Hardware type for Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;

/// Byte offsets of the ARP fields (Ethernet / IPv4 sizes).
pub mod field {
    use super::Field;
    /// Hardware type.
    pub const HTYPE: Field = 0..2;
    /// Protocol type (an ethertype).
    pub const PTYPE: Field = 2..4;
    /// Hardware address length.
    pub const HLEN: usize = 4;
    /// Protocol address length.
    pub const PLEN: usize = 5;
    /// Operation.
    pub const OPER: Field = 6..8;
    /// Sender hardware address.
    pub const SHA: Field = 8..14;
    /// Sender protocol address.
    pub const SPA: Field = 14..18;
    /// Target hardware address.
    pub const THA: Field = 18..24;
    /// Target protocol address.
    pub const TPA: Field = 24..28;
}

/// Length of an ARP packet for Ethernet and IPv4.
pub const PACKET_LEN: usize = field::TPA.end;

/// A view of an ARP packet for Ethernet and IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps `buffer` without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        ArpPacket { buffer }
    }

    /// Wraps `buffer` once it is known to hold 28 bytes; after this no
    /// getter can panic. The hardware and protocol types are not checked.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds an Ethernet/IPv4 ARP packet.
    #[inline]
    pub fn check_len(&self) -> Result<(), ParseError> {
        if self.buffer.as_ref().len() < PACKET_LEN {
            return Err(ParseError::TruncatedArp);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Hardware type (1 for Ethernet).
    #[inline]
    pub fn hardware_type(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::HTYPE.start)
    }

    /// Protocol type (0x0800 for IPv4).
    #[inline]
    pub fn protocol_type(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::PTYPE.start)
    }

    /// Hardware address length (6 for Ethernet).
    #[inline]
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// Protocol address length (4 for IPv4).
    #[inline]
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// Operation (see [`operation`]).
    #[inline]
    pub fn operation(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::OPER.start)
    }

    /// Sender MAC.
    #[inline]
    pub fn sender_hardware_addr(&self) -> [u8; 6] {
        get_array(self.buffer.as_ref(), field::SHA)
    }

    /// Sender IPv4 address.
    #[inline]
    pub fn sender_protocol_addr(&self) -> [u8; 4] {
        get_array(self.buffer.as_ref(), field::SPA)
    }

    /// Target MAC.
    #[inline]
    pub fn target_hardware_addr(&self) -> [u8; 6] {
        get_array(self.buffer.as_ref(), field::THA)
    }

    /// Target IPv4 address.
    #[inline]
    pub fn target_protocol_addr(&self) -> [u8; 4] {
        get_array(self.buffer.as_ref(), field::TPA)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Sets the hardware and protocol types and lengths for Ethernet/IPv4.
    #[inline]
    pub fn set_ethernet_ipv4(&mut self) {
        let data = self.buffer.as_mut();
        put_u16(data, field::HTYPE.start, HTYPE_ETHERNET);
        put_u16(data, field::PTYPE.start, super::ethernet::ethertype::IPV4);
        data[field::HLEN] = 6;
        data[field::PLEN] = 4;
    }

    /// Sets the operation.
    #[inline]
    pub fn set_operation(&mut self, op: u16) {
        put_u16(self.buffer.as_mut(), field::OPER.start, op);
    }

    /// Sets the sender MAC.
    #[inline]
    pub fn set_sender_hardware_addr(&mut self, addr: [u8; 6]) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&addr);
    }

    /// Sets the sender IPv4 address.
    #[inline]
    pub fn set_sender_protocol_addr(&mut self, addr: [u8; 4]) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&addr);
    }

    /// Sets the target MAC.
    #[inline]
    pub fn set_target_hardware_addr(&mut self, addr: [u8; 6]) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&addr);
    }

    /// Sets the target IPv4 address.
    #[inline]
    pub fn set_target_protocol_addr(&mut self, addr: [u8; 4]) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setters_write_what_getters_read() {
        let mut buf = [0u8; PACKET_LEN];
        let mut arp = ArpPacket::new_checked(&mut buf[..]).unwrap();
        arp.set_ethernet_ipv4();
        arp.set_operation(operation::REQUEST);
        arp.set_sender_hardware_addr([0x02, 0, 0, 0, 0, 1]);
        arp.set_sender_protocol_addr([198, 18, 0, 1]);
        arp.set_target_hardware_addr([0; 6]);
        arp.set_target_protocol_addr([198, 18, 0, 2]);
        assert_eq!(&buf[..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
        let arp = ArpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(arp.hardware_type(), HTYPE_ETHERNET);
        assert_eq!(arp.protocol_type(), 0x0800);
        assert_eq!((arp.hardware_len(), arp.protocol_len()), (6, 4));
        assert_eq!(arp.operation(), operation::REQUEST);
        assert_eq!(arp.sender_hardware_addr(), [0x02, 0, 0, 0, 0, 1]);
        assert_eq!(arp.sender_protocol_addr(), [198, 18, 0, 1]);
        assert_eq!(arp.target_hardware_addr(), [0; 6]);
        assert_eq!(arp.target_protocol_addr(), [198, 18, 0, 2]);
    }

    #[test]
    fn a_short_packet_is_truncated_arp() {
        let buf = [0u8; PACKET_LEN];
        assert_eq!(
            ArpPacket::new_checked(&buf[..PACKET_LEN - 1]).unwrap_err(),
            ParseError::TruncatedArp
        );
        assert!(ArpPacket::new_checked(&buf[..]).is_ok());
    }
}
