//! Ingress sanity, as a router must (RFC 1812 §5.2.2, §5.3.7; RFC 4291):
//! what the gateway refuses before it looks a frame up, in the order the
//! XDP program checks the same (bpf/flowgate_ingress.h), so that both give
//! every frame the same verdict.
//!
//! Per packet, in front of everything:
//! - the destination MAC: a unicast frame for another host is dropped
//!   (`other_host`); a broadcast or multicast frame is marked;
//! - the IPv4 header checksum (`bad_ip_checksum`): the parser's
//!   (`wire::parse`), so a frame is still read once, and a frame handed
//!   to another worker carries the verdict in its parse.
//!
//! Then a broadcast, multicast or VLAN-tagged frame is dropped
//! (`broadcast_frame`, `multicast_frame`, `vlan_not_configured`) only if
//! the gateway would otherwise forward it — TCP/UDP to a service or from a
//! backend, a fragment to a VIP, an ICMP error about the gateway's
//! traffic — and passed to the kernel otherwise: ARP, neighbour discovery
//! (solicitations to a solicited-node address among them), router
//! advertisements, MLD, DHCP, the kernel's own VLAN devices' traffic. So
//! nothing group-addressed or tagged is ever forwarded, and the kernel
//! still gets all it needs. Whether it would be forwarded is asked only of
//! such frames (a cold path).
//!
//! Per new flow only (a prefix lookup is not for every packet): a source
//! no host can have (`martian_source`: 0.0.0.0/8, 127/8, 224/4,
//! 255.255.255.255, ::, ::1, ff00::/8, or a VIP of the gateway's), or one
//! in a configured bogon prefix (`bogon_source`), never makes a
//! connection.

use super::DropReason;
use crate::table::Snapshot;
use crate::wire::{self, ip_proto, Fragment, PacketMeta, L3};

/// What a frame's destination MAC says, for the interface it came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Destination {
    /// The interface's own MAC (or the interface's MAC is not known).
    Own,
    /// Another host's unicast MAC.
    OtherHost,
    /// A group MAC: refused if the gateway would forward the frame.
    Group(DropReason),
}

/// A MAC as one number (its bytes in memory order), so that a compare
/// is one load of the frame's and one compare, not six bytes
/// gathered: the form [`destination`] takes the interface's MAC in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct MacWord(u64);

impl MacWord {
    /// `mac` as one number.
    #[inline(always)]
    pub(super) fn of(mac: [u8; 6]) -> MacWord {
        let [a, b, c, d, e, f] = mac;
        MacWord(
            u64::from(u32::from_le_bytes([a, b, c, d]))
                | u64::from(u16::from_le_bytes([e, f])) << 32,
        )
    }

    /// Whether the first byte's group bit (I/G) is set.
    #[inline(always)]
    fn is_group(self) -> bool {
        self.0 & 1 != 0
    }
}

/// The broadcast MAC, ff:ff:ff:ff:ff:ff.
const BROADCAST: MacWord = MacWord(0xffff_ffff_ffff);

/// Classifies `frame`'s destination MAC against `own`, the receiving
/// interface's MAC; all zeros (not known) admits every unicast frame.
#[inline(always)]
pub(super) fn destination(frame: &[u8], own: MacWord) -> Destination {
    let Some(&dst) = frame.first_chunk::<6>() else {
        // Too short to hold one: the parser drops it as malformed.
        return Destination::Own;
    };
    let dst = MacWord::of(dst);
    if dst == own {
        return Destination::Own;
    }
    if !dst.is_group() {
        if own == MacWord::default() {
            return Destination::Own;
        }
        return Destination::OtherHost;
    }
    if dst == BROADCAST {
        Destination::Group(DropReason::BroadcastFrame)
    } else {
        Destination::Group(DropReason::MulticastFrame)
    }
}

/// The verdict for a frame the gateway must not forward (group-addressed
/// or tagged, `reason`): dropped for `reason` if the gateway would
/// otherwise forward it, passed to the kernel otherwise. Asks the same
/// questions the XDP program's ownership checks do.
#[cold]
#[inline(never)]
pub(super) fn refuse_if_ours(
    frame: &[u8],
    meta: &PacketMeta,
    snapshot: &Snapshot,
    reason: DropReason,
) -> super::Verdict {
    if would_forward(frame, meta, snapshot) {
        super::Verdict::Drop(reason)
    } else {
        super::Verdict::Pass
    }
}

/// Whether the gateway would take this IP frame from the kernel (the XDP
/// program's "owned"): a fragment to a VIP; TCP/UDP to a service key or
/// from a backend's key; an ICMP error quoting a reply from a service key
/// or a packet to a backend's key.
fn would_forward(frame: &[u8], meta: &PacketMeta, snapshot: &Snapshot) -> bool {
    let t = &meta.tuple;
    if meta.fragment != Fragment::None {
        return snapshot.is_vip(&t.dst);
    }
    match t.protocol {
        ip_proto::TCP | ip_proto::UDP => {
            snapshot
                .lookup_service(t.protocol, &t.dst, t.dst_port)
                .is_some()
                || snapshot
                    .reply_sources()
                    .lookup(t.protocol, &t.src, t.src_port)
                    .is_some()
        }
        _ => wire::quoted::parse_quoted(frame, meta).is_some_and(|quote| {
            let q = &quote.tuple;
            snapshot
                .lookup_service(q.protocol, &q.src, q.src_port)
                .is_some()
                || snapshot
                    .reply_sources()
                    .lookup(q.protocol, &q.dst, q.dst_port)
                    .is_some()
        }),
    }
}

/// Why a new flow from `src` (16 bytes, IPv4-mapped for IPv4) must not
/// make a connection, if it must not.
#[inline]
pub(super) fn refused_source(src: &[u8; 16], l3: L3, snapshot: &Snapshot) -> Option<DropReason> {
    if is_martian(src, l3) || snapshot.is_vip(src) {
        return Some(DropReason::MartianSource);
    }
    let bogons = snapshot.bogons();
    if !bogons.is_empty() && bogons.contains(src) {
        return Some(DropReason::BogonSource);
    }
    None
}

/// Whether `src` is an address no host sends from (RFC 1812 §5.3.7,
/// RFC 4291 §2.5.2, §2.5.3, §2.7).
#[inline]
fn is_martian(src: &[u8; 16], l3: L3) -> bool {
    match l3 {
        L3::Ipv4 => {
            let [a, b, c, d] = [src[12], src[13], src[14], src[15]];
            // 0.0.0.0/8 ("this network"), 127/8 (loopback), 224/4
            // (multicast), 255.255.255.255 (limited broadcast).
            a == 0 || a == 127 || a & 0xf0 == 0xe0 || [a, b, c, d] == [255; 4]
        }
        L3::Ipv6 => {
            let v = u128::from_be_bytes(*src);
            // ::, ::1, ff00::/8.
            v <= 1 || src[0] == 0xff
        }
        L3::Arp => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn mapped(a: &str) -> [u8; 16] {
        match a.parse::<IpAddr>().unwrap() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        }
    }

    #[test]
    fn martians_of_each_family() {
        for a in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "224.0.0.1",
            "239.255.255.255",
            "255.255.255.255",
        ] {
            assert!(is_martian(&mapped(a), L3::Ipv4), "{a}");
        }
        for a in [
            "1.0.0.1",
            "126.255.255.255",
            "128.0.0.1",
            "198.18.0.2",
            "223.255.255.255",
            "255.255.255.254",
        ] {
            assert!(!is_martian(&mapped(a), L3::Ipv4), "{a}");
        }
        for a in ["::", "::1", "ff02::1", "ff05::1:3"] {
            assert!(is_martian(&mapped(a), L3::Ipv6), "{a}");
        }
        for a in ["::2", "2001:2::2", "fe80::1", "fc00::1"] {
            assert!(!is_martian(&mapped(a), L3::Ipv6), "{a}");
        }
    }

    #[test]
    fn destination_macs() {
        let own = [2, 0, 0, 0, 0, 1];
        let frame = |dst: [u8; 6]| {
            let mut f = vec![0u8; 14];
            f[..6].copy_from_slice(&dst);
            f
        };
        assert_eq!(destination(&frame(own), MacWord::of(own)), Destination::Own);
        assert_eq!(
            destination(&frame([2, 0, 0, 0, 0, 2]), MacWord::of(own)),
            Destination::OtherHost
        );
        // Unknown own MAC: every unicast frame is admitted.
        assert_eq!(
            destination(&frame([2, 0, 0, 0, 0, 2]), MacWord::of([0; 6])),
            Destination::Own
        );
        assert_eq!(
            destination(&frame([0xff; 6]), MacWord::of(own)),
            Destination::Group(DropReason::BroadcastFrame)
        );
        for group in [
            [0x33, 0x33, 0xff, 0, 0, 0x10],
            [0x33, 0x33, 0, 0, 0, 1],
            [1, 0, 0x5e, 0, 0, 1],
        ] {
            assert_eq!(
                destination(&frame(group), MacWord::of(own)),
                Destination::Group(DropReason::MulticastFrame)
            );
            assert_eq!(
                destination(&frame(group), MacWord::of([0; 6])),
                Destination::Group(DropReason::MulticastFrame)
            );
        }
        assert_eq!(destination(&[1, 2], MacWord::of(own)), Destination::Own);
    }
}
