//! Recomputing a mutated frame's checksums.
//!
//! Random mutations almost always break a checksum, and the pipeline's
//! checksum property ("a frame whose checksums were right before is right
//! after") only bites on frames whose checksums are right. So the pipeline
//! target can repair a frame first: the fuzzer then explores odd but
//! checksum-clean frames (options, extension headers, VLAN tags, odd
//! lengths) and the property gets tested on them.
//!
//! The repair is full recomputation, independent of the incremental
//! updates under test. It covers what [`wire::frame_checksums_ok`] checks;
//! what it cannot fix (an IPv6 UDP checksum of "none" aside, which it does
//! fix) simply leaves the property's precondition false.

use flowgate_dataplane::wire::checksum::{
    internet_checksum, l4_checksum_v4, l4_checksum_v6, udp_wire_value,
};
use flowgate_dataplane::wire::ethernet::{self, ethertype};
use flowgate_dataplane::wire::{
    self, ip_proto, EthernetFrame, Fragment, Ipv4Packet, VlanTag, L3, MAX_VLAN_TAGS,
};

/// Offsets of the checksum field in each L4 header.
const TCP_CHECKSUM_AT: usize = 16;
const UDP_CHECKSUM_AT: usize = 6;
const ICMP_CHECKSUM_AT: usize = 2;

/// Recomputes the IPv4 header checksum and the TCP, UDP, ICMP or ICMPv6
/// checksum of `frame`, in place. Frames that do not parse are left alone.
pub fn repair_checksums(frame: &mut [u8]) {
    // The parser refuses an IPv4 header whose checksum is wrong, so that
    // one is fixed before the frame is parsed.
    repair_ipv4_header(frame);
    let Ok(meta) = wire::parse(frame) else {
        return;
    };
    let l3 = usize::from(meta.l3_offset);
    let l4 = usize::from(meta.l4_offset);
    let end = usize::from(meta.ip_end);
    match meta.l3 {
        L3::Arp => {}
        L3::Ipv4 => {
            // The header's checksum was repaired before the parse.
            let Some(header) = frame.get(l3..l4) else {
                return;
            };
            let ip = Ipv4Packet::new_unchecked(header);
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            if meta.fragment != Fragment::None {
                return;
            }
            let Some(segment) = frame.get_mut(l4..end) else {
                return;
            };
            let protocol = meta.tuple.protocol;
            match protocol {
                ip_proto::TCP => fill(segment, TCP_CHECKSUM_AT, |s| {
                    l4_checksum_v4(&src, &dst, protocol, s)
                }),
                ip_proto::UDP => fill_udp(segment, |s| {
                    udp_wire_value(l4_checksum_v4(&src, &dst, protocol, s))
                }),
                ip_proto::ICMP => fill(segment, ICMP_CHECKSUM_AT, internet_checksum),
                _ => {}
            }
        }
        L3::Ipv6 => {
            if meta.fragment != Fragment::None {
                return;
            }
            let (src, dst) = (meta.tuple.src, meta.tuple.dst);
            let Some(segment) = frame.get_mut(l4..end) else {
                return;
            };
            let protocol = meta.tuple.protocol;
            let v6 = |s: &[u8]| l4_checksum_v6(&src, &dst, protocol, s);
            match protocol {
                ip_proto::TCP => fill(segment, TCP_CHECKSUM_AT, v6),
                ip_proto::ICMPV6 => fill(segment, ICMP_CHECKSUM_AT, v6),
                ip_proto::UDP => fill_udp(segment, |s| udp_wire_value(v6(s))),
                _ => {}
            }
        }
    }
}

/// Recomputes the IPv4 header checksum of `frame`, walking its VLAN tags
/// as the parser does; anything else is left.
fn repair_ipv4_header(frame: &mut [u8]) {
    let Ok(eth) = EthernetFrame::new_checked(&*frame) else {
        return;
    };
    let mut kind = eth.ethertype();
    let mut l3 = ethernet::HEADER_LEN;
    for _ in 0..MAX_VLAN_TAGS {
        if !ethertype::is_vlan_tag(kind) {
            break;
        }
        let Some(Ok(tag)) = frame.get(l3..).map(VlanTag::new_checked) else {
            return;
        };
        kind = tag.ethertype();
        l3 += ethernet::VLAN_TAG_LEN;
    }
    if kind != ethertype::IPV4 {
        return;
    }
    if let Some(Ok(mut ip)) = frame.get_mut(l3..).map(Ipv4Packet::new_checked) {
        ip.fill_checksum();
    }
}

/// Zeroes the 16-bit checksum at `at` in `covered`, computes it over
/// `covered` and writes it there.
fn fill(covered: &mut [u8], at: usize, checksum: impl Fn(&[u8]) -> u16) {
    let Some(field) = covered.get_mut(at..at + 2) else {
        return;
    };
    field.copy_from_slice(&[0, 0]);
    let value = checksum(covered);
    if let Some(field) = covered.get_mut(at..at + 2) {
        field.copy_from_slice(&value.to_be_bytes());
    }
}

/// Like [`fill`] over the part of `segment` that the UDP length covers.
fn fill_udp(segment: &mut [u8], checksum: impl Fn(&[u8]) -> u16) {
    let Some(len) = segment
        .get(4..6)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    else {
        return;
    };
    if let Some(covered) = segment.get_mut(..len) {
        fill(covered, UDP_CHECKSUM_AT, checksum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeds;

    #[test]
    fn repair_restores_every_seed_frame_after_corruption() {
        let mut repaired = 0;
        for (name, frame) in seeds::frames() {
            let Ok(meta) = wire::parse(&frame) else {
                continue;
            };
            let (l3, end) = (usize::from(meta.l3_offset), usize::from(meta.ip_end));
            // A byte some checksum covers: the TTL in an IPv4 fragment's
            // header, else the packet's last byte (L4 payload).
            let at = match (meta.l3, meta.fragment) {
                (L3::Arp, _) => continue,
                (L3::Ipv6, Fragment::First | Fragment::NonFirst) => continue,
                (L3::Ipv4, Fragment::First | Fragment::NonFirst) => l3 + 8,
                _ => end - 1,
            };
            let mut broken = frame.clone();
            broken[at] ^= 0x5a;
            if wire::frame_checksums_ok(&broken) {
                continue; // UDP over IPv4 without a checksum
            }
            repair_checksums(&mut broken);
            assert!(wire::frame_checksums_ok(&broken), "{name}");
            repaired += 1;
        }
        assert!(repaired > 10, "only {repaired} seed frames were checked");
    }

    #[test]
    fn a_broken_tcp_checksum_is_detected_then_repaired() {
        let mut frame = seeds::frames()
            .into_iter()
            .find(|(name, _)| name == "tcp4-syn-web")
            .unwrap()
            .1;
        let tcp_checksum = 14 + 20 + TCP_CHECKSUM_AT;
        frame[tcp_checksum] ^= 0xff;
        assert!(!wire::frame_checksums_ok(&frame));
        repair_checksums(&mut frame);
        assert!(wire::frame_checksums_ok(&frame));
    }
}
