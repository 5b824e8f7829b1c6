//! Ethernet II frames and 802.1Q / 802.1ad VLAN tags.

use super::bytes::{get_array, get_u16, put_u16, Field, Rest};
use super::ParseError;

/// Ethertype values the data plane knows by name.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// 802.1Q VLAN tag (customer tag, the inner one of QinQ).
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service tag (the outer one of QinQ).
    pub const QINQ: u16 = 0x88a8;
    /// The pre-standard QinQ outer tag some switches still send.
    pub const QINQ_LEGACY: u16 = 0x9100;

    /// Whether `ethertype` announces a VLAN tag.
    #[inline]
    pub const fn is_vlan_tag(ethertype: u16) -> bool {
        matches!(ethertype, VLAN | QINQ | QINQ_LEGACY)
    }
}

/// Byte offsets of the Ethernet header fields.
pub mod field {
    use super::{Field, Rest};
    /// Destination MAC.
    pub const DST: Field = 0..6;
    /// Source MAC.
    pub const SRC: Field = 6..12;
    /// Ethertype (or a VLAN TPID).
    pub const ETHERTYPE: Field = 12..14;
    /// What follows the header.
    pub const PAYLOAD: Rest = 14..;
}

/// Length of the Ethernet II header without VLAN tags.
pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// A view of an Ethernet II frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buffer` without checking it: getters may panic on a short
    /// buffer. Use [`new_checked`](Self::new_checked) for untrusted input.
    pub const fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wraps `buffer` once it is known to hold the header; after this no
    /// getter can panic.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Checks that the buffer holds the 14-byte header.
    #[inline]
    pub fn check_len(&self) -> Result<(), ParseError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(ParseError::TruncatedEthernet);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC.
    #[inline]
    pub fn dst_addr(&self) -> [u8; 6] {
        get_array(self.buffer.as_ref(), field::DST)
    }

    /// Source MAC.
    #[inline]
    pub fn src_addr(&self) -> [u8; 6] {
        get_array(self.buffer.as_ref(), field::SRC)
    }

    /// The ethertype, or the TPID of the first VLAN tag.
    #[inline]
    pub fn ethertype(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ETHERTYPE.start)
    }

    /// Everything after the 14-byte header (VLAN tags included).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: [u8; 6]) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr);
    }

    /// Sets the source MAC.
    #[inline]
    pub fn set_src_addr(&mut self, addr: [u8; 6]) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr);
    }

    /// Sets the ethertype (or first TPID).
    #[inline]
    pub fn set_ethertype(&mut self, ethertype: u16) {
        put_u16(self.buffer.as_mut(), field::ETHERTYPE.start, ethertype);
    }

    /// Everything after the 14-byte header, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// Byte offsets inside a VLAN tag, counted from just after its TPID (which
/// is the ethertype field of what precedes it).
pub mod vlan_field {
    use super::{Field, Rest};
    /// Tag control information: PCP (3 bits), DEI (1), VLAN id (12).
    pub const TCI: Field = 0..2;
    /// The ethertype of what follows (or the next TPID).
    pub const ETHERTYPE: Field = 2..4;
    /// What follows the tag.
    pub const PAYLOAD: Rest = 4..;
}

/// Length of a VLAN tag after its TPID.
pub const VLAN_TAG_LEN: usize = vlan_field::PAYLOAD.start;

/// A view of one VLAN tag: the 4 bytes after a TPID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    /// Wraps `buffer` without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        VlanTag { buffer }
    }

    /// Wraps `buffer` once it is known to hold the tag.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let tag = Self::new_unchecked(buffer);
        tag.check_len()?;
        Ok(tag)
    }

    /// Checks that the buffer holds the 4-byte tag (a short tag is a
    /// truncated Ethernet header).
    #[inline]
    pub fn check_len(&self) -> Result<(), ParseError> {
        if self.buffer.as_ref().len() < VLAN_TAG_LEN {
            return Err(ParseError::TruncatedEthernet);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole tag control information.
    #[inline]
    pub fn tci(&self) -> u16 {
        get_u16(self.buffer.as_ref(), vlan_field::TCI.start)
    }

    /// Priority code point (0..=7).
    #[inline]
    pub fn pcp(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    /// Drop eligible indicator.
    #[inline]
    pub fn dei(&self) -> bool {
        self.tci() & 0x1000 != 0
    }

    /// VLAN id (0..=4095).
    #[inline]
    pub fn vid(&self) -> u16 {
        self.tci() & 0x0fff
    }

    /// The ethertype of what follows the tag.
    #[inline]
    pub fn ethertype(&self) -> u16 {
        get_u16(self.buffer.as_ref(), vlan_field::ETHERTYPE.start)
    }

    /// What follows the tag.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[vlan_field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    /// Sets the tag control information.
    #[inline]
    pub fn set_tci(&mut self, tci: u16) {
        put_u16(self.buffer.as_mut(), vlan_field::TCI.start, tci);
    }

    /// Sets the ethertype of what follows.
    #[inline]
    pub fn set_ethertype(&mut self, ethertype: u16) {
        put_u16(self.buffer.as_mut(), vlan_field::ETHERTYPE.start, ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: [u8; 22] = [
        0x02, 0, 0, 0, 0, 0x02, // dst
        0x02, 0, 0, 0, 0, 0x01, // src
        0x81, 0x00, // TPID
        0xa0, 0x2a, // PCP 5, DEI 0, VID 42
        0x08, 0x00, // IPv4
        0x45, 0, 0, 0,
    ];

    #[test]
    fn reads_the_header_and_a_tag() {
        let eth = EthernetFrame::new_checked(&FRAME[..]).unwrap();
        assert_eq!(eth.dst_addr(), [2, 0, 0, 0, 0, 2]);
        assert_eq!(eth.src_addr(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(eth.ethertype(), ethertype::VLAN);
        assert!(ethertype::is_vlan_tag(eth.ethertype()));
        let tag = VlanTag::new_checked(eth.payload()).unwrap();
        assert_eq!(tag.vid(), 42);
        assert_eq!(tag.pcp(), 5);
        assert!(!tag.dei());
        assert_eq!(tag.ethertype(), ethertype::IPV4);
        assert_eq!(tag.payload(), &[0x45, 0, 0, 0]);
    }

    #[test]
    fn short_buffers_are_truncated_ethernet() {
        assert_eq!(
            EthernetFrame::new_checked(&FRAME[..13]).unwrap_err(),
            ParseError::TruncatedEthernet
        );
        assert_eq!(
            VlanTag::new_checked(&FRAME[14..17]).unwrap_err(),
            ParseError::TruncatedEthernet
        );
        assert!(EthernetFrame::new_checked(&FRAME[..14])
            .unwrap()
            .payload()
            .is_empty());
    }

    #[test]
    fn setters_write_what_getters_read() {
        let mut buf = FRAME;
        let mut eth = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        eth.set_dst_addr([0x02, 9, 9, 9, 9, 9]);
        eth.set_src_addr([0x02, 8, 8, 8, 8, 8]);
        eth.set_ethertype(ethertype::QINQ);
        let mut tag = VlanTag::new_checked(eth.payload_mut()).unwrap();
        tag.set_tci(0x0fff);
        tag.set_ethertype(ethertype::IPV6);
        assert_eq!(tag.vid(), 4095);
        let eth = EthernetFrame::new_checked(&buf[..]).unwrap();
        assert_eq!(eth.dst_addr(), [0x02, 9, 9, 9, 9, 9]);
        assert_eq!(eth.src_addr(), [0x02, 8, 8, 8, 8, 8]);
        assert_eq!(eth.ethertype(), 0x88a8);
        assert_eq!(&buf[16..18], &[0x86, 0xdd]);
    }
}
