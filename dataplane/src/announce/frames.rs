//! The frames that announce a VIP to its segment.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::rules::MacAddr;

/// The Ethernet broadcast address.
const BROADCAST: MacAddr = [0xff; 6];
/// ff02::1, all nodes on the link, and its MAC (33:33:00:00:00:01).
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_NODES_MAC: MacAddr = [0x33, 0x33, 0, 0, 0, 1];

/// The frame that announces `vip` as reachable at `mac`: a gratuitous ARP
/// for IPv4, an unsolicited neighbour advertisement for IPv6.
pub fn announcement(vip: IpAddr, mac: MacAddr) -> Vec<u8> {
    match vip {
        IpAddr::V4(v4) => gratuitous_arp(v4, mac),
        IpAddr::V6(v6) => unsolicited_advertisement(v6, mac),
    }
}

/// A gratuitous ARP (RFC 5227's announcement): a broadcast ARP request
/// whose sender and target address are both `vip`, the sender's hardware
/// address `mac`. Neighbours that have an entry for `vip` update it.
pub fn gratuitous_arp(vip: Ipv4Addr, mac: MacAddr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&BROADCAST);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    // Ethernet, IPv4, 6- and 4-byte addresses, a request.
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&vip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&vip.octets());
    f
}

/// An unsolicited neighbour advertisement (RFC 4861, 7.2.6) to all nodes:
/// override set, solicited and router clear, the target link-layer address
/// option carrying `mac`.
pub fn unsolicited_advertisement(vip: Ipv6Addr, mac: MacAddr) -> Vec<u8> {
    let mut message = Vec::with_capacity(32);
    // Type 136, code 0, checksum (below), flags: override.
    message.extend_from_slice(&[136, 0, 0, 0, 0x20, 0, 0, 0]);
    message.extend_from_slice(&vip.octets());
    message.extend_from_slice(&[2, 1]);
    message.extend_from_slice(&mac);
    let sum = icmpv6_checksum(vip, ALL_NODES, &message);
    message[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut f = Vec::with_capacity(14 + 40 + message.len());
    f.extend_from_slice(&ALL_NODES_MAC);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&0x86ddu16.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(message.len() as u16).to_be_bytes());
    // ICMPv6, hop limit 255 (receivers drop neighbour discovery with less).
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&vip.octets());
    f.extend_from_slice(&ALL_NODES.octets());
    f.extend_from_slice(&message);
    f
}

/// The ICMPv6 checksum of `message` from `src` to `dst` (RFC 8200, 8.1).
fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, message: &[u8]) -> u16 {
    let length = u32::try_from(message.len()).unwrap_or(u32::MAX);
    let pseudo = [
        &src.octets()[..],
        &dst.octets()[..],
        &length.to_be_bytes()[..],
        &[0, 0, 0, 58][..],
    ];
    let mut sum: u64 = 0;
    for part in pseudo.into_iter().chain([message]) {
        for pair in part.chunks(2) {
            let hi = pair.first().copied().unwrap_or(0);
            let lo = pair.get(1).copied().unwrap_or(0);
            sum += u64::from(u16::from_be_bytes([hi, lo]));
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = [0x02, 0x66, 0x67, 0, 0, 0x01];

    #[test]
    fn a_gratuitous_arp_is_a_broadcast_request_for_the_vip_from_the_vip() {
        let f = gratuitous_arp(Ipv4Addr::new(198, 18, 0, 50), MAC);
        let expected: Vec<u8> = [
            &[0xff; 6][..],
            &MAC,
            &[0x08, 0x06],
            &[0, 1, 0x08, 0, 6, 4, 0, 1],
            &MAC,
            &[198, 18, 0, 50],
            &[0; 6],
            &[198, 18, 0, 50],
        ]
        .concat();
        assert_eq!(f, expected);
    }

    #[test]
    fn an_unsolicited_advertisement_goes_to_all_nodes_with_a_valid_checksum() {
        let vip: Ipv6Addr = "2001:2::50".parse().unwrap();
        let f = unsolicited_advertisement(vip, MAC);
        assert_eq!(f.len(), 14 + 40 + 32);
        assert_eq!(&f[..6], &ALL_NODES_MAC);
        assert_eq!(&f[6..12], &MAC);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(&f[18..22], &[0, 32, 58, 255]);
        assert_eq!(&f[22..38], &vip.octets());
        assert_eq!(&f[38..54], &ALL_NODES.octets());
        let message = &f[54..];
        assert_eq!(&message[..2], &[136, 0]);
        assert_eq!(message[4], 0x20, "override only");
        assert_eq!(&message[8..24], &vip.octets());
        assert_eq!(&message[24..], &[&[2, 1][..], &MAC].concat()[..]);
        // A receiver's check: the sum over pseudo-header and message,
        // checksum included, is zero.
        assert_eq!(icmpv6_checksum(vip, ALL_NODES, message), 0);
        // And the checksum is the one a known-good implementation gives
        // for a message with the field zeroed.
        let mut zeroed = message.to_vec();
        zeroed[2..4].copy_from_slice(&[0, 0]);
        assert_eq!(
            icmpv6_checksum(vip, ALL_NODES, &zeroed).to_be_bytes(),
            [message[2], message[3]]
        );
    }

    #[test]
    fn each_family_gets_its_own_announcement() {
        assert_eq!(
            announcement("198.18.0.50".parse().unwrap(), MAC)[12..14],
            [0x08, 0x06]
        );
        assert_eq!(
            announcement("2001:2::50".parse().unwrap(), MAC)[12..14],
            [0x86, 0xdd]
        );
    }
}
