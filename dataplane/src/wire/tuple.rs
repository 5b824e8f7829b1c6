//! The 5-tuple that identifies a flow.

use std::net::{IpAddr, Ipv6Addr};

/// IP protocol numbers the data plane knows by name.
pub mod ip_proto {
    /// ICMP for IPv4.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMP for IPv6.
    pub const ICMPV6: u8 = 58;
}

/// A flow's identity: protocol, addresses and ports.
///
/// Addresses are always 16 bytes: an IPv4 address is stored IPv4-mapped
/// (`::ffff:a.b.c.d`), so one key type and one hash serve both families.
/// Ports are 0 for protocols without ports and for non-first fragments.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct FiveTuple {
    /// Source address (IPv4-mapped for IPv4).
    pub src: [u8; 16],
    /// Destination address (IPv4-mapped for IPv4).
    pub dst: [u8; 16],
    /// Source port (0 where the protocol has none).
    pub src_port: u16,
    /// Destination port (0 where the protocol has none).
    pub dst_port: u16,
    /// IP protocol number (see [`ip_proto`]).
    pub protocol: u8,
}

/// Length of [`FiveTuple::to_bytes`].
pub const FIVE_TUPLE_BYTES: usize = 37;

impl FiveTuple {
    /// An IPv4 tuple.
    pub fn v4(src: [u8; 4], dst: [u8; 4], src_port: u16, dst_port: u16, protocol: u8) -> Self {
        FiveTuple {
            src: v4_mapped(src),
            dst: v4_mapped(dst),
            src_port,
            dst_port,
            protocol,
        }
    }

    /// A tuple from std addresses (both of one family).
    pub fn new(src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16, protocol: u8) -> Self {
        FiveTuple {
            src: addr_to_bytes(src),
            dst: addr_to_bytes(dst),
            src_port,
            dst_port,
            protocol,
        }
    }

    /// The same flow seen from the other end.
    #[inline]
    pub fn reversed(&self) -> Self {
        FiveTuple {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            protocol: self.protocol,
        }
    }

    /// A fixed byte layout, the input of the flow hash.
    #[inline]
    pub fn to_bytes(&self) -> [u8; FIVE_TUPLE_BYTES] {
        let mut b = [0u8; FIVE_TUPLE_BYTES];
        b[0..16].copy_from_slice(&self.src);
        b[16..32].copy_from_slice(&self.dst);
        b[32..34].copy_from_slice(&self.src_port.to_be_bytes());
        b[34..36].copy_from_slice(&self.dst_port.to_be_bytes());
        b[36] = self.protocol;
        b
    }

    /// Source address as a std address.
    pub fn src_ip(&self) -> IpAddr {
        bytes_to_addr(&self.src)
    }

    /// Destination address as a std address.
    pub fn dst_ip(&self) -> IpAddr {
        bytes_to_addr(&self.dst)
    }
}

/// `::ffff:a.b.c.d` for an IPv4 address.
#[inline]
pub const fn v4_mapped(a: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
    ]
}

/// The 16-byte form of an address (IPv4-mapped for IPv4).
pub fn addr_to_bytes(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => v4_mapped(a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
}

/// The std address for a 16-byte form (IPv4-mapped becomes IPv4).
pub fn bytes_to_addr(b: &[u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(*b);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// Whether a 16-byte address is an IPv4-mapped one.
#[inline]
pub fn is_v4_mapped(b: &[u8; 16]) -> bool {
    b[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]
}

/// The IPv4 octets of an IPv4-mapped address.
#[inline]
pub fn v4_octets(b: &[u8; 16]) -> [u8; 4] {
    [b[12], b[13], b[14], b[15]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_addresses_round_trip_through_the_mapped_form() {
        let a: IpAddr = "198.18.0.7".parse().unwrap();
        assert_eq!(bytes_to_addr(&addr_to_bytes(a)), a);
        let b: IpAddr = "2001:2::7".parse().unwrap();
        assert_eq!(bytes_to_addr(&addr_to_bytes(b)), b);
        assert!(is_v4_mapped(&addr_to_bytes(a)));
        assert!(!is_v4_mapped(&addr_to_bytes(b)));
    }

    #[test]
    fn reversed_swaps_ends() {
        let t = FiveTuple::v4([198, 18, 0, 1], [198, 18, 1, 10], 40000, 80, 6);
        let r = t.reversed();
        assert_eq!(r.src, t.dst);
        assert_eq!(r.dst_port, 40000);
        assert_eq!(r.reversed(), t);
    }
}
