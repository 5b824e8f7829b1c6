//! Checking every checksum of a whole frame: for tests and fixtures
//! (feature `testkit`), never the forwarding path, which only patches
//! checksums ([`super::checksum`]).

use super::checksum::{internet_checksum, l4_checksum_v4, l4_checksum_v6};
use super::ipv4::Ipv4Packet;
use super::tuple::ip_proto;
use super::udp::UdpDatagram;
use super::{parse, Fragment, L3};

/// Whether every checksum of `frame` is right: the IPv4 header checksum
/// and the L4 checksum of TCP, UDP (unless 0 over IPv4, "no checksum"),
/// ICMPv4 and ICMPv6. ARP and other protocols have none to check; a
/// fragment's L4 checksum covers the whole datagram, so for fragments only
/// the IPv4 header is checked. A frame [`parse`] rejects is not ok.
///
/// UDP is checked over its
/// length field's bytes; IPv6 pseudo-headers use the IPv6 header's
/// destination (no routing header with segments left).
pub fn frame_checksums_ok(frame: &[u8]) -> bool {
    let Ok(meta) = parse(frame) else {
        return false;
    };
    let l3 = usize::from(meta.l3_offset);
    let l4 = usize::from(meta.l4_offset);
    let end = usize::from(meta.ip_end);
    let (Some(packet), Some(segment)) = (frame.get(l3..end), frame.get(l4..end)) else {
        return false;
    };
    let protocol = meta.tuple.protocol;
    match meta.l3 {
        L3::Arp => true,
        L3::Ipv4 => {
            let Ok(ip) = Ipv4Packet::new_checked(packet) else {
                return false;
            };
            if !ip.verify_checksum() {
                return false;
            }
            if meta.fragment != Fragment::None {
                return true;
            }
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            match protocol {
                ip_proto::TCP => l4_checksum_v4(&src, &dst, protocol, segment) == 0,
                ip_proto::UDP => match UdpDatagram::new_checked(segment) {
                    Ok(udp) if udp.checksum() == 0 => true,
                    Ok(udp) => {
                        let covered = segment.get(..usize::from(udp.len())).unwrap_or_default();
                        l4_checksum_v4(&src, &dst, protocol, covered) == 0
                    }
                    Err(_) => false,
                },
                ip_proto::ICMP => internet_checksum(segment) == 0,
                _ => true,
            }
        }
        L3::Ipv6 => {
            if meta.fragment != Fragment::None {
                return true;
            }
            let (src, dst) = (&meta.tuple.src, &meta.tuple.dst);
            match protocol {
                ip_proto::TCP | ip_proto::ICMPV6 => {
                    l4_checksum_v6(src, dst, protocol, segment) == 0
                }
                ip_proto::UDP => match UdpDatagram::new_checked(segment) {
                    Ok(udp) => {
                        let covered = segment.get(..usize::from(udp.len())).unwrap_or_default();
                        l4_checksum_v6(src, dst, protocol, covered) == 0
                    }
                    Err(_) => false,
                },
                _ => true,
            }
        }
    }
}
