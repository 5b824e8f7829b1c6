//! The one-pass frame parser.
//!
//! [`parse`] composes the checked views: each layer's `new_checked` proves
//! its lengths, and the parser only adds offsets. It allocates nothing and
//! copies nothing but the addresses into the tuple.

use super::arp::{self, ArpPacket};
use super::checksum::ipv4_header_checksum_ok;
use super::ethernet::{self, ethertype, EthernetFrame, VlanTag};
use super::icmp::IcmpMessage;
use super::ipv4::{self, Ipv4Packet};
use super::ipv6::{self, walk_extension_headers, Ipv6Packet};
use super::tcp::{self, TcpSegment};
use super::tuple::{ip_proto, v4_mapped, FiveTuple};
use super::udp::{self, UdpDatagram};
use super::{Fragment, PacketMeta, ParseError, L3};

/// The most VLAN tags a frame may carry (802.1ad QinQ: outer and inner).
pub const MAX_VLAN_TAGS: u8 = 2;

/// Parses one Ethernet frame into its [`PacketMeta`].
///
/// See the [module documentation](super) for what is accepted and what each
/// [`ParseError`] means. Never panics and never reads out of bounds, on any
/// input.
#[inline]
pub fn parse(frame: &[u8]) -> Result<PacketMeta, ParseError> {
    match parse_plain_ipv4(frame) {
        Some(meta) => Ok(meta),
        None => parse_any(frame),
    }
}

/// Bytes [`parse_plain_ipv4`] reads at fixed offsets: an Ethernet header,
/// an IPv4 header without options and a TCP header without options (a
/// UDP header is shorter).
pub(super) const PLAIN_LEN: usize =
    ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN + tcp::MIN_HEADER_LEN;

/// The connection table's 13-byte key of a frame [`parse_plain_ipv4`]
/// accepts (the addresses, the ports as on the wire, the protocol) as
/// its little-endian words at bytes 0 and 5, for
/// [`crate::hash::table_hash_v4_words`]: read where they lie in the
/// frame, the addresses and ports one run of bytes (`None` for a frame
/// too short to be one).
#[inline(always)]
pub fn plain_ipv4_key_words(frame: &[u8]) -> Option<(u64, u64)> {
    const SRC: usize = ethernet::HEADER_LEN + ipv4::field::SRC_ADDR.start;
    const PROTOCOL: usize = ethernet::HEADER_LEN + ipv4::field::PROTOCOL;
    let f: &[u8; PLAIN_LEN] = frame.first_chunk()?;
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&f[at..at + 8]);
        u64::from_le_bytes(w)
    };
    // Bytes 5..12 of the key are the frame's 7 from the destination
    // address's second byte on; the protocol is the eighth.
    let hi = word(SRC + 5) & 0x00ff_ffff_ffff_ffff | u64::from(f[PROTOCOL]) << 56;
    Some((word(SRC), hi))
}

/// The common frame read at fixed offsets: untagged IPv4 with no options,
/// not a fragment, TCP or UDP, whose every check passes. `None` for any
/// other frame, and for any check that fails: [`parse_any`] reads those
/// (and would give every frame this accepts the same meta: the tests
/// hold it to that).
#[inline(always)]
pub fn parse_plain_ipv4(frame: &[u8]) -> Option<PacketMeta> {
    let (f, ip_end, tcp_flags) = plain_ipv4_checked(frame)?;
    Some(plain_meta(f, ip_end, tcp_flags))
}

/// The meta [`parse_plain_ipv4`] gives a frame it accepted, read again
/// without its checks (a frame's [`crate::pipeline::Parsed`] says
/// whether it was accepted); `None` for a frame too short to be one.
#[inline(always)]
pub fn plain_ipv4_meta(frame: &[u8]) -> Option<PacketMeta> {
    const IP: usize = ethernet::HEADER_LEN;
    const L4: usize = IP + ipv4::MIN_HEADER_LEN;
    let f: &[u8; PLAIN_LEN] = frame.first_chunk()?;
    let total_len = u16::from_be_bytes([f[IP + 2], f[IP + 3]]);
    let ip_end = total_len.checked_add(IP as u16)?;
    let tcp_flags = match f[IP + ipv4::field::PROTOCOL] {
        ip_proto::TCP => f[L4 + 13],
        _ => 0,
    };
    Some(plain_meta(f, ip_end, tcp_flags))
}

/// The meta of a frame whose checks passed, from its fixed-offset bytes.
#[inline(always)]
fn plain_meta(f: &[u8; PLAIN_LEN], ip_end: u16, tcp_flags: u8) -> PacketMeta {
    const IP: usize = ethernet::HEADER_LEN;
    const L4: usize = IP + ipv4::MIN_HEADER_LEN;
    let protocol = f[IP + ipv4::field::PROTOCOL];
    let addr = |at: usize| v4_mapped([f[at], f[at + 1], f[at + 2], f[at + 3]]);
    PacketMeta {
        l3: L3::Ipv4,
        vlan_tags: 0,
        l3_offset: IP as u16,
        l4_offset: L4 as u16,
        ip_end,
        tuple: FiveTuple {
            src: addr(IP + ipv4::field::SRC_ADDR.start),
            dst: addr(IP + ipv4::field::DST_ADDR.start),
            src_port: u16::from_be_bytes([f[L4], f[L4 + 1]]),
            dst_port: u16::from_be_bytes([f[L4 + 2], f[L4 + 3]]),
            protocol,
        },
        ttl: f[IP + ipv4::field::TTL],
        tcp_flags,
        fragment: Fragment::None,
        icmp_type: 0,
        icmp_code: 0,
    }
}

/// Whether [`parse_plain_ipv4`] accepts `frame`: its checks, without
/// the meta.
#[inline(always)]
pub fn is_plain_ipv4(frame: &[u8]) -> bool {
    plain_ipv4_checked(frame).is_some()
}

/// [`parse_plain_ipv4`]'s checks: the frame's fixed-offset bytes, the
/// end of its IP packet and its TCP flags (0 for UDP) where they all
/// pass.
#[inline(always)]
fn plain_ipv4_checked(frame: &[u8]) -> Option<(&[u8; PLAIN_LEN], u16, u8)> {
    const IP: usize = ethernet::HEADER_LEN;
    const L4: usize = IP + ipv4::MIN_HEADER_LEN;
    let f: &[u8; PLAIN_LEN] = frame.first_chunk()?;
    // IPv4, version 4 and a 20-byte header.
    if [f[12], f[13]] != ethertype::IPV4.to_be_bytes() || f[IP] != 0x45 {
        return None;
    }
    let total_len = usize::from(u16::from_be_bytes([f[IP + 2], f[IP + 3]]));
    let ip_end = IP + total_len;
    if total_len < ipv4::MIN_HEADER_LEN || ip_end > frame.len() {
        return None;
    }
    let ip_end = u16::try_from(ip_end).ok()?;
    // Neither more fragments nor an offset: not a fragment.
    if u16::from_be_bytes([f[IP + 6], f[IP + 7]]) & 0x3fff != 0 {
        return None;
    }
    let header: &[u8; ipv4::MIN_HEADER_LEN] = f[IP..].first_chunk()?;
    if !ipv4_header_checksum_ok(header) {
        return None;
    }
    let protocol = f[IP + ipv4::field::PROTOCOL];
    let segment_len = total_len - ipv4::MIN_HEADER_LEN;
    let tcp_flags = match protocol {
        ip_proto::TCP => {
            let header_len = usize::from(f[L4 + 12] >> 4) * 4;
            if header_len < tcp::MIN_HEADER_LEN || header_len > segment_len {
                return None;
            }
            f[L4 + 13]
        }
        ip_proto::UDP => {
            let length = usize::from(u16::from_be_bytes([f[L4 + 4], f[L4 + 5]]));
            if length < udp::HEADER_LEN || length > segment_len {
                return None;
            }
            0
        }
        _ => return None,
    };
    Some((f, ip_end, tcp_flags))
}

/// [`parse`] of any frame, layer by layer through the checked views.
#[inline]
pub fn parse_any(frame: &[u8]) -> Result<PacketMeta, ParseError> {
    let eth = EthernetFrame::new_checked(frame)?;
    let mut ether_type = eth.ethertype();
    let mut l3_offset = ethernet::HEADER_LEN;
    let mut vlan_tags = 0u8;
    while ethertype::is_vlan_tag(ether_type) {
        if vlan_tags == MAX_VLAN_TAGS {
            return Err(ParseError::TooManyVlanTags);
        }
        let tag = VlanTag::new_checked(tail(frame, l3_offset))?;
        ether_type = tag.ethertype();
        l3_offset += ethernet::VLAN_TAG_LEN;
        vlan_tags += 1;
    }
    let l3 = tail(frame, l3_offset);
    match ether_type {
        ethertype::IPV4 => parse_ipv4(l3, l3_offset, vlan_tags),
        ethertype::IPV6 => parse_ipv6(l3, l3_offset, vlan_tags),
        ethertype::ARP => {
            ArpPacket::new_checked(l3)?;
            let offset = offset_u16(l3_offset)?;
            Ok(PacketMeta {
                l3: L3::Arp,
                vlan_tags,
                l3_offset: offset,
                l4_offset: offset,
                ip_end: offset_u16(l3_offset + arp::PACKET_LEN)?,
                tuple: FiveTuple::default(),
                ttl: 0,
                tcp_flags: 0,
                fragment: Fragment::None,
                icmp_type: 0,
                icmp_code: 0,
            })
        }
        _ => Err(ParseError::UnsupportedEthertype),
    }
}

/// The IPv4 packet at `l3_offset`, whose bytes to the end of the frame are
/// `packet`.
#[inline]
fn parse_ipv4(packet: &[u8], l3_offset: usize, vlan_tags: u8) -> Result<PacketMeta, ParseError> {
    let ip = Ipv4Packet::new_checked(packet)?;
    // Before the transport header, as the XDP program checks it.
    if !ip.verify_checksum() {
        return Err(ParseError::BadIpChecksum);
    }
    let fragment = ip.fragment();
    let protocol = ip.protocol();
    let l4 = if fragment == Fragment::NonFirst {
        L4Fields::default()
    } else {
        parse_l4(protocol, ip.payload(), fragment, ip_proto::ICMP)?
    };
    Ok(PacketMeta {
        l3: L3::Ipv4,
        vlan_tags,
        l3_offset: offset_u16(l3_offset)?,
        l4_offset: offset_u16(l3_offset + ip.header_len())?,
        ip_end: offset_u16(l3_offset + usize::from(ip.total_len()))?,
        tuple: FiveTuple {
            src: v4_mapped(ip.src_addr()),
            dst: v4_mapped(ip.dst_addr()),
            src_port: l4.src_port,
            dst_port: l4.dst_port,
            protocol,
        },
        ttl: ip.ttl(),
        tcp_flags: l4.tcp_flags,
        fragment,
        icmp_type: l4.icmp_type,
        icmp_code: l4.icmp_code,
    })
}

/// The IPv6 packet at `l3_offset`, whose bytes to the end of the frame are
/// `packet`.
#[inline]
fn parse_ipv6(packet: &[u8], l3_offset: usize, vlan_tags: u8) -> Result<PacketMeta, ParseError> {
    let ip = Ipv6Packet::new_checked(packet)?;
    let payload = ip.payload();
    let upper = walk_extension_headers(ip.next_header(), payload)?;
    let l4 = if upper.fragment == Fragment::NonFirst {
        L4Fields::default()
    } else {
        let segment = payload.get(upper.offset..).unwrap_or_default();
        parse_l4(upper.protocol, segment, upper.fragment, ip_proto::ICMPV6)?
    };
    let payload_offset = l3_offset + ipv6::HEADER_LEN;
    Ok(PacketMeta {
        l3: L3::Ipv6,
        vlan_tags,
        l3_offset: offset_u16(l3_offset)?,
        l4_offset: offset_u16(payload_offset + upper.offset)?,
        ip_end: offset_u16(payload_offset + usize::from(ip.payload_len()))?,
        tuple: FiveTuple {
            src: ip.src_addr(),
            dst: ip.dst_addr(),
            src_port: l4.src_port,
            dst_port: l4.dst_port,
            protocol: upper.protocol,
        },
        ttl: ip.hop_limit(),
        tcp_flags: l4.tcp_flags,
        fragment: upper.fragment,
        icmp_type: l4.icmp_type,
        icmp_code: l4.icmp_code,
    })
}

/// What the parser takes from the L4 header.
#[derive(Default)]
struct L4Fields {
    src_port: u16,
    dst_port: u16,
    tcp_flags: u8,
    icmp_type: u8,
    icmp_code: u8,
}

/// Reads the L4 header of `protocol` at the start of `segment` (the IP
/// payload after any extension headers). `icmp` is the ICMP protocol number
/// of the packet's family. Protocols without a header we read are not an
/// error: they have no ports.
#[inline(always)]
fn parse_l4(
    protocol: u8,
    segment: &[u8],
    fragment: Fragment,
    icmp: u8,
) -> Result<L4Fields, ParseError> {
    match protocol {
        ip_proto::TCP => {
            let tcp = TcpSegment::new_checked(segment)?;
            Ok(L4Fields {
                src_port: tcp.src_port(),
                dst_port: tcp.dst_port(),
                tcp_flags: tcp.flags(),
                ..L4Fields::default()
            })
        }
        ip_proto::UDP => {
            let udp = if fragment == Fragment::First {
                UdpDatagram::new_checked_first_fragment(segment)?
            } else {
                UdpDatagram::new_checked(segment)?
            };
            Ok(L4Fields {
                src_port: udp.src_port(),
                dst_port: udp.dst_port(),
                ..L4Fields::default()
            })
        }
        p if p == icmp => {
            let message = IcmpMessage::new_checked(segment)?;
            Ok(L4Fields {
                icmp_type: message.msg_type(),
                icmp_code: message.msg_code(),
                ..L4Fields::default()
            })
        }
        _ => Ok(L4Fields::default()),
    }
}

/// The frame from `at` on (empty past its end).
#[inline(always)]
fn tail(frame: &[u8], at: usize) -> &[u8] {
    frame.get(at..).unwrap_or_default()
}

/// An offset as stored in [`PacketMeta`]; an IP packet ending beyond 64 KiB
/// into the frame cannot be described and is rejected.
#[inline(always)]
fn offset_u16(offset: usize) -> Result<u16, ParseError> {
    u16::try_from(offset).map_err(|_| ParseError::BadIpLength)
}

#[cfg(test)]
mod tests {
    //! Hand-made minimal frames: one per rejection reason, and the layouts
    //! the builder-based tests do not reach. Checksums are irrelevant here.

    use super::*;
    use crate::wire::ipv6::next_header;
    use crate::wire::tcp_flags;

    const MAC_DST: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
    const MAC_SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
    const V4_SRC: [u8; 4] = [198, 18, 0, 1];
    const V4_DST: [u8; 4] = [198, 18, 1, 10];
    const V6_SRC: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const V6_DST: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    /// An Ethernet header with `tpids` (each followed by a TCI) and then
    /// `ethertype`, followed by `payload`.
    fn eth_tagged(tpids: &[u16], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&MAC_DST);
        f.extend_from_slice(&MAC_SRC);
        for (i, tpid) in tpids.iter().enumerate() {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(100 + i as u16).to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        eth_tagged(&[], ethertype, payload)
    }

    /// An IPv4 packet: `options` (a multiple of 4), `flags_frag` as the raw
    /// flags/offset word; its header checksum right.
    fn ipv4(protocol: u8, options: &[u8], flags_frag: u16, payload: &[u8]) -> Vec<u8> {
        let header_len = 20 + options.len();
        let mut p = vec![0x40 | (header_len / 4) as u8, 0];
        p.extend_from_slice(&((header_len + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 1]);
        p.extend_from_slice(&flags_frag.to_be_bytes());
        p.extend_from_slice(&[64, protocol, 0, 0]);
        p.extend_from_slice(&V4_SRC);
        p.extend_from_slice(&V4_DST);
        p.extend_from_slice(options);
        let sum = crate::wire::checksum::internet_checksum(&p);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    fn ipv6(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        p.extend_from_slice(&[next, 32]);
        p.extend_from_slice(&V6_SRC);
        p.extend_from_slice(&V6_DST);
        p.extend_from_slice(payload);
        p
    }

    /// A TCP header with `options` (a multiple of 4) and `payload`.
    fn tcp(flags: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut s = vec![0x9c, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0];
        s.push((((20 + options.len()) / 4) as u8) << 4);
        s.push(flags);
        s.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        s.extend_from_slice(options);
        s.extend_from_slice(payload);
        s
    }

    /// A UDP header (5353 → 53) with `payload` and checksum field `check`.
    fn udp(payload: &[u8], check: u16) -> Vec<u8> {
        let mut d = vec![0x14, 0xe9, 0x00, 0x35];
        d.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        d.extend_from_slice(&check.to_be_bytes());
        d.extend_from_slice(payload);
        d
    }

    fn v4_frame(protocol: u8, l4: &[u8]) -> Vec<u8> {
        eth(ethertype::IPV4, &ipv4(protocol, &[], 0, l4))
    }

    fn v6_frame(next: u8, payload: &[u8]) -> Vec<u8> {
        eth(ethertype::IPV6, &ipv6(next, payload))
    }

    fn err(frame: &[u8]) -> ParseError {
        parse(frame).expect_err("the frame must be rejected")
    }

    #[test]
    fn plain_tcp_and_udp_frames_are_read_at_fixed_offsets_alike() {
        let mut tcp_frame = v4_frame(ip_proto::TCP, &tcp(tcp_flags::ACK, &[], &[0; 6]));
        let udp_frame = v4_frame(ip_proto::UDP, &udp(&[1; 20], 0));
        for frame in [&tcp_frame, &udp_frame] {
            let plain = parse_plain_ipv4(frame).expect("read at fixed offsets");
            assert_eq!(Ok(plain), parse_any(frame));
        }
        // Padding past the IP packet is not part of it.
        tcp_frame.extend_from_slice(&[0; 7]);
        assert_eq!(
            parse_plain_ipv4(&tcp_frame).map(Ok),
            Some(parse_any(&tcp_frame))
        );
        // Options, tags, fragments and errors are the general parser's.
        let options = eth(
            ethertype::IPV4,
            &ipv4(ip_proto::TCP, &[1, 1, 1, 0], 0, &tcp(0, &[], &[])),
        );
        let tagged = eth_tagged(
            &[ethertype::VLAN],
            ethertype::IPV4,
            &ipv4(ip_proto::TCP, &[], 0, &tcp(0, &[], &[])),
        );
        let fragment = eth(
            ethertype::IPV4,
            &ipv4(ip_proto::TCP, &[], 0x2000, &tcp(0, &[], &[])),
        );
        let mut bad_checksum = v4_frame(ip_proto::TCP, &tcp(0, &[], &[]));
        bad_checksum[24] ^= 1;
        for frame in [options, tagged, fragment, bad_checksum] {
            assert_eq!(parse_plain_ipv4(&frame), None);
        }
    }

    #[test]
    fn an_ipv4_tcp_frame_yields_offsets_tuple_and_flags() {
        let frame = v4_frame(ip_proto::TCP, &tcp(tcp_flags::SYN, &[], b"hi"));
        let meta = parse(&frame).unwrap();
        assert_eq!(meta.l3, L3::Ipv4);
        assert_eq!(
            (meta.vlan_tags, meta.l3_offset, meta.l4_offset),
            (0, 14, 34)
        );
        assert_eq!(usize::from(meta.ip_end), frame.len());
        assert_eq!(
            meta.tuple,
            FiveTuple::v4(V4_SRC, V4_DST, 40000, 80, ip_proto::TCP)
        );
        assert_eq!((meta.ttl, meta.tcp_flags), (64, tcp_flags::SYN));
        assert_eq!(meta.fragment, Fragment::None);
        assert_eq!((meta.icmp_type, meta.icmp_code), (0, 0));
    }

    #[test]
    fn vlan_tags_zero_one_and_two_are_counted_and_a_third_is_refused() {
        let ip = ipv4(ip_proto::UDP, &[], 0, &udp(b"x", 0));
        for (tpids, count) in [
            (&[][..], 0u8),
            (&[ethertype::VLAN][..], 1),
            (&[ethertype::QINQ, ethertype::VLAN][..], 2),
            (&[ethertype::QINQ_LEGACY, ethertype::VLAN][..], 2),
        ] {
            let meta = parse(&eth_tagged(tpids, ethertype::IPV4, &ip)).unwrap();
            assert_eq!(meta.vlan_tags, count);
            assert_eq!(usize::from(meta.l3_offset), 14 + 4 * usize::from(count));
            assert_eq!(meta.tuple.dst_port, 53);
        }
        let three = [ethertype::QINQ, ethertype::VLAN, ethertype::VLAN];
        assert_eq!(
            err(&eth_tagged(&three, ethertype::IPV4, &ip)),
            ParseError::TooManyVlanTags
        );
    }

    #[test]
    fn a_short_ethernet_header_or_tag_is_truncated_ethernet() {
        assert_eq!(err(&[]), ParseError::TruncatedEthernet);
        assert_eq!(
            err(&eth(ethertype::IPV4, &[])[..13]),
            ParseError::TruncatedEthernet
        );
        let tagged = eth_tagged(&[ethertype::VLAN], ethertype::IPV4, &[]);
        assert_eq!(err(&tagged[..17]), ParseError::TruncatedEthernet);
    }

    #[test]
    fn unknown_ethertypes_are_unsupported() {
        assert_eq!(
            err(&eth(0x88cc, &[0; 46])),
            ParseError::UnsupportedEthertype
        ); // LLDP
        let tagged = eth_tagged(&[ethertype::VLAN], 0x8847, &[0; 46]); // MPLS
        assert_eq!(err(&tagged), ParseError::UnsupportedEthertype);
    }

    #[test]
    fn arp_needs_its_28_bytes() {
        let meta = parse(&eth(ethertype::ARP, &[0; 28])).unwrap();
        assert_eq!((meta.l3, meta.l3_offset, meta.ip_end), (L3::Arp, 14, 42));
        assert_eq!(meta.tuple, FiveTuple::default());
        let tagged = eth_tagged(&[ethertype::VLAN], ethertype::ARP, &[0; 28]);
        assert_eq!(parse(&tagged).unwrap().l3_offset, 18);
        assert_eq!(
            err(&eth(ethertype::ARP, &[0; 27])),
            ParseError::TruncatedArp
        );
    }

    #[test]
    fn ipv4_header_errors_each_have_their_reason() {
        let good = ipv4(ip_proto::UDP, &[], 0, &udp(&[], 0));
        assert_eq!(
            err(&eth(ethertype::IPV4, &good[..19])),
            ParseError::TruncatedIp
        );
        let mut v = good.clone();
        v[0] = 0x65;
        assert_eq!(err(&eth(ethertype::IPV4, &v)), ParseError::BadIpVersion);
        let mut ihl = good.clone();
        ihl[0] = 0x44;
        assert_eq!(err(&eth(ethertype::IPV4, &ihl)), ParseError::BadIhl);
        ihl[0] = 0x4f; // 60 bytes of header in 28
        assert_eq!(err(&eth(ethertype::IPV4, &ihl)), ParseError::BadIhl);
        let mut len = good.clone();
        len[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(err(&eth(ethertype::IPV4, &len)), ParseError::BadIpLength);
        len[2..4].copy_from_slice(&29u16.to_be_bytes());
        assert_eq!(err(&eth(ethertype::IPV4, &len)), ParseError::BadIpLength);
    }

    #[test]
    fn ipv4_options_are_skipped_by_ihl() {
        let options = [0x94, 0x04, 0, 0, 1, 1, 1, 0]; // router alert, NOPs, EOL
        let frame = eth(
            ethertype::IPV4,
            &ipv4(ip_proto::TCP, &options, 0, &tcp(tcp_flags::ACK, &[], &[])),
        );
        let meta = parse(&frame).unwrap();
        assert_eq!(meta.l4_offset, 14 + 28);
        assert_eq!((meta.tuple.src_port, meta.tuple.dst_port), (40000, 80));
    }

    #[test]
    fn ethernet_padding_after_the_ip_packet_is_ignored() {
        let mut frame = v4_frame(ip_proto::UDP, &udp(&[], 0));
        let ip_len = frame.len();
        frame.resize(60, 0);
        let meta = parse(&frame).unwrap();
        assert_eq!(usize::from(meta.ip_end), ip_len);
        assert_eq!(meta.tuple.dst_port, 53);
    }

    #[test]
    fn ipv4_fragments_are_classified_and_only_the_first_has_ports() {
        const MF: u16 = 0x2000;
        let first = eth(
            ethertype::IPV4,
            &ipv4(ip_proto::UDP, &[], MF, &udp(&[0; 16], 0)[..12]),
        );
        let meta = parse(&first).unwrap();
        assert_eq!(meta.fragment, Fragment::First);
        assert_eq!(meta.tuple.dst_port, 53);

        // Offset 1480 bytes = 185 units; the payload is mid-datagram bytes.
        for flags in [185, MF | 185] {
            let later = eth(
                ethertype::IPV4,
                &ipv4(ip_proto::TCP, &[], flags, &[0xff; 3]),
            );
            let meta = parse(&later).unwrap();
            assert_eq!(meta.fragment, Fragment::NonFirst);
            assert_eq!(
                (meta.tuple.src_port, meta.tuple.dst_port, meta.tcp_flags),
                (0, 0, 0)
            );
            assert_eq!((meta.tuple.protocol, meta.l4_offset), (ip_proto::TCP, 34));
        }
    }

    #[test]
    fn a_tiny_first_fragment_without_a_whole_tcp_header_is_rejected() {
        let frame = eth(
            ethertype::IPV4,
            &ipv4(ip_proto::TCP, &[], 0x2000, &tcp(0, &[], &[])[..8]),
        );
        assert_eq!(err(&frame), ParseError::TruncatedL4);
    }

    #[test]
    fn l4_errors_each_have_their_reason() {
        assert_eq!(
            err(&v4_frame(ip_proto::TCP, &[0; 19])),
            ParseError::TruncatedL4
        );
        assert_eq!(
            err(&v4_frame(ip_proto::UDP, &[0; 7])),
            ParseError::TruncatedL4
        );
        assert_eq!(
            err(&v4_frame(ip_proto::ICMP, &[8, 0, 0, 0, 0, 0, 0])),
            ParseError::TruncatedL4
        );
        assert_eq!(
            err(&v6_frame(ip_proto::ICMPV6, &[128, 0, 0, 0])),
            ParseError::TruncatedL4
        );

        let mut short_offset = tcp(0, &[], &[]);
        short_offset[12] = 0x40;
        assert_eq!(
            err(&v4_frame(ip_proto::TCP, &short_offset)),
            ParseError::BadTcpDataOffset
        );
        let mut long_offset = tcp(0, &[], &[0; 4]);
        long_offset[12] = 0x70;
        assert_eq!(
            err(&v4_frame(ip_proto::TCP, &long_offset)),
            ParseError::BadTcpDataOffset
        );

        let mut udp_short = udp(&[1, 2], 0);
        udp_short[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(
            err(&v4_frame(ip_proto::UDP, &udp_short)),
            ParseError::BadUdpLength
        );
        let mut udp_long = udp(&[1, 2], 0);
        udp_long[4..6].copy_from_slice(&11u16.to_be_bytes());
        assert_eq!(
            err(&v6_frame(ip_proto::UDP, &udp_long)),
            ParseError::BadUdpLength
        );
    }

    #[test]
    fn l4_is_bounded_by_the_ip_packet_not_the_frame() {
        // A whole TCP header, but the IP total length stops 8 bytes into it.
        let mut frame = v4_frame(ip_proto::TCP, &tcp(0, &[], &[]));
        frame[16..18].copy_from_slice(&28u16.to_be_bytes());
        frame[24..26].fill(0);
        let sum = crate::wire::checksum::internet_checksum(&frame[14..34]);
        frame[24..26].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(err(&frame), ParseError::TruncatedL4);
    }

    #[test]
    fn tcp_options_are_skipped_by_data_offset() {
        let options = [2, 4, 0x05, 0xb4, 1, 1, 4, 2]; // MSS, NOP, NOP, SACK-permitted
        let frame = v4_frame(ip_proto::TCP, &tcp(tcp_flags::SYN, &options, &[]));
        let meta = parse(&frame).unwrap();
        assert_eq!(meta.tcp_flags, tcp_flags::SYN);
        assert_eq!(meta.tuple.dst_port, 80);
    }

    #[test]
    fn a_udp_checksum_of_zero_parses() {
        let meta = parse(&v4_frame(ip_proto::UDP, &udp(b"dns?", 0))).unwrap();
        assert_eq!((meta.tuple.src_port, meta.tuple.dst_port), (5353, 53));
    }

    #[test]
    fn icmp_type_and_code_are_read_and_ports_stay_zero() {
        let meta = parse(&v4_frame(ip_proto::ICMP, &[3, 4, 0, 0, 0, 0, 5, 0xdc])).unwrap();
        assert_eq!((meta.icmp_type, meta.icmp_code), (3, 4));
        assert_eq!((meta.tuple.src_port, meta.tuple.dst_port), (0, 0));
        let meta = parse(&v6_frame(ip_proto::ICMPV6, &[128, 0, 0, 0, 0, 1, 0, 1])).unwrap();
        assert_eq!(
            (meta.icmp_type, meta.tuple.protocol),
            (128, ip_proto::ICMPV6)
        );
        // ICMPv6's number means nothing inside IPv4.
        let meta = parse(&v4_frame(ip_proto::ICMPV6, &[128])).unwrap();
        assert_eq!(meta.icmp_type, 0);
    }

    #[test]
    fn other_protocols_are_accepted_without_ports() {
        for protocol in [47u8, 50, 132] {
            let meta = parse(&v4_frame(protocol, &[0xab; 12])).unwrap();
            assert_eq!(meta.tuple.protocol, protocol);
            assert_eq!((meta.tuple.src_port, meta.tuple.dst_port), (0, 0));
        }
    }

    #[test]
    fn an_ipv6_udp_frame_yields_offsets_and_tuple() {
        let frame = v6_frame(ip_proto::UDP, &udp(b"abc", 0x1234));
        let meta = parse(&frame).unwrap();
        assert_eq!(meta.l3, L3::Ipv6);
        assert_eq!((meta.l3_offset, meta.l4_offset), (14, 54));
        assert_eq!(usize::from(meta.ip_end), frame.len());
        assert_eq!(meta.tuple.src, V6_SRC);
        assert_eq!(meta.tuple.dst, V6_DST);
        assert_eq!((meta.tuple.src_port, meta.tuple.dst_port), (5353, 53));
        assert_eq!(meta.ttl, 32);
    }

    #[test]
    fn ipv6_header_errors_each_have_their_reason() {
        let good = ipv6(ip_proto::UDP, &udp(&[], 0));
        assert_eq!(
            err(&eth(ethertype::IPV6, &good[..39])),
            ParseError::TruncatedIp
        );
        let mut v = good.clone();
        v[0] = 0x40;
        assert_eq!(err(&eth(ethertype::IPV6, &v)), ParseError::BadIpVersion);
        assert_eq!(
            err(&eth(ethertype::IPV6, &good[..47])),
            ParseError::BadIpLength
        );
    }

    #[test]
    fn each_ipv6_extension_header_is_skipped() {
        let l4 = tcp(tcp_flags::ACK, &[], &[]);
        let hop = [next_header::DEST_OPTS, 0, 1, 4, 0, 0, 0, 0];
        let mut dest = vec![next_header::ROUTING, 1, 1, 12];
        dest.extend_from_slice(&[0; 12]);
        let routing = [next_header::AUTH, 0, 253, 0, 0, 0, 0, 0];
        let mut ah = vec![ip_proto::TCP, 4, 0, 0];
        ah.extend_from_slice(&[0; 20]);
        let mut payload = Vec::new();
        for header in [&hop[..], &dest, &routing, &ah] {
            payload.extend_from_slice(header);
        }
        let ext_len = payload.len();
        payload.extend_from_slice(&l4);
        let meta = parse(&v6_frame(next_header::HOP_BY_HOP, &payload)).unwrap();
        assert_eq!(usize::from(meta.l4_offset), 14 + 40 + ext_len);
        assert_eq!(meta.tuple.protocol, ip_proto::TCP);
        assert_eq!(meta.tuple.dst_port, 80);
        assert_eq!(meta.fragment, Fragment::None);

        // Each kind on its own.
        for (kind, header) in [
            (next_header::HOP_BY_HOP, &hop[..]),
            (next_header::DEST_OPTS, &dest),
            (next_header::ROUTING, &routing),
            (next_header::AUTH, &ah),
        ] {
            let mut one = header.to_vec();
            one[0] = ip_proto::TCP;
            one.extend_from_slice(&l4);
            let meta = parse(&v6_frame(kind, &one)).unwrap();
            assert_eq!(usize::from(meta.l4_offset), 14 + 40 + header.len());
            assert_eq!(meta.tuple.dst_port, 80);
        }
    }

    #[test]
    fn ipv6_fragments_are_classified_and_only_the_first_has_ports() {
        let mut first = vec![ip_proto::UDP, 0, 0, 1, 0, 0, 0, 9]; // offset 0, M
        first.extend_from_slice(&udp(&[0; 16], 0)[..12]);
        let meta = parse(&v6_frame(next_header::FRAGMENT, &first)).unwrap();
        assert_eq!(meta.fragment, Fragment::First);
        assert_eq!((meta.tuple.dst_port, meta.l4_offset), (53, 14 + 48));

        let mut later = vec![ip_proto::UDP, 0, 0x05, 0xc8, 0, 0, 0, 9]; // offset 1480
        later.extend_from_slice(&[0xee; 10]);
        let meta = parse(&v6_frame(next_header::FRAGMENT, &later)).unwrap();
        assert_eq!(meta.fragment, Fragment::NonFirst);
        assert_eq!(
            (meta.tuple.protocol, meta.tuple.dst_port),
            (ip_proto::UDP, 0)
        );
        assert_eq!(meta.l4_offset, 14 + 48);

        let atomic = [ip_proto::UDP, 0, 0, 0, 0, 0, 0, 9];
        let mut whole = atomic.to_vec();
        whole.extend_from_slice(&udp(&[], 0));
        let meta = parse(&v6_frame(next_header::FRAGMENT, &whole)).unwrap();
        assert_eq!(meta.fragment, Fragment::None);
        assert_eq!(meta.tuple.dst_port, 53);
    }

    #[test]
    fn ipv6_extension_header_errors_each_have_their_reason() {
        let frame = v6_frame(
            next_header::HOP_BY_HOP,
            &[ip_proto::TCP, 2, 0, 0, 0, 0, 0, 0],
        );
        assert_eq!(err(&frame), ParseError::BadExtensionHeader);
        let mut nine = Vec::new();
        for _ in 0..9 {
            nine.extend_from_slice(&[next_header::DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]);
        }
        let frame = v6_frame(next_header::DEST_OPTS, &nine);
        assert_eq!(err(&frame), ParseError::TooManyExtensionHeaders);
    }

    #[test]
    fn no_next_header_ends_the_packet_without_ports() {
        let meta = parse(&v6_frame(next_header::NO_NEXT_HEADER, &[])).unwrap();
        assert_eq!(meta.tuple.protocol, next_header::NO_NEXT_HEADER);
        assert_eq!((meta.tuple.src_port, meta.tuple.dst_port), (0, 0));
        let after_options = [next_header::NO_NEXT_HEADER, 0, 1, 4, 0, 0, 0, 0];
        let meta = parse(&v6_frame(next_header::DEST_OPTS, &after_options)).unwrap();
        assert_eq!(meta.tuple.protocol, next_header::NO_NEXT_HEADER);
        assert_eq!(meta.l4_offset, 14 + 48);
    }

    #[test]
    fn every_reason_is_reachable_from_a_crafted_frame() {
        let bad_ext = v6_frame(next_header::HOP_BY_HOP, &[6, 9, 0, 0, 0, 0, 0, 0]);
        let mut nine = Vec::new();
        for _ in 0..9 {
            nine.extend_from_slice(&[next_header::DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]);
        }
        let mut bad_offset = tcp(0, &[], &[]);
        bad_offset[12] = 0x10;
        let mut bad_udp = udp(&[], 0);
        bad_udp[5] = 3;
        let mut bad_version = v4_frame(ip_proto::UDP, &udp(&[], 0));
        bad_version[14] = 0x55;
        let mut bad_ihl = v4_frame(ip_proto::UDP, &udp(&[], 0));
        bad_ihl[14] = 0x41;
        let mut bad_len = v4_frame(ip_proto::UDP, &udp(&[], 0));
        bad_len[17] = 0xff;
        let mut bad_checksum = v4_frame(ip_proto::TCP, &bad_offset);
        bad_checksum[14 + 10] ^= 0x01;
        let cases: Vec<(Vec<u8>, ParseError)> = vec![
            (vec![0; 5], ParseError::TruncatedEthernet),
            (
                eth_tagged(&[0x8100, 0x8100, 0x8100], 0x0800, &[]),
                ParseError::TooManyVlanTags,
            ),
            (eth(0x0842, &[]), ParseError::UnsupportedEthertype),
            (eth(ethertype::ARP, &[0; 10]), ParseError::TruncatedArp),
            (eth(ethertype::IPV4, &[0x45; 10]), ParseError::TruncatedIp),
            (bad_version, ParseError::BadIpVersion),
            (bad_ihl, ParseError::BadIhl),
            (bad_len, ParseError::BadIpLength),
            (bad_ext, ParseError::BadExtensionHeader),
            (
                v6_frame(next_header::DEST_OPTS, &nine),
                ParseError::TooManyExtensionHeaders,
            ),
            (v4_frame(ip_proto::TCP, &[0; 4]), ParseError::TruncatedL4),
            (
                v4_frame(ip_proto::TCP, &bad_offset),
                ParseError::BadTcpDataOffset,
            ),
            (v4_frame(ip_proto::UDP, &bad_udp), ParseError::BadUdpLength),
            (bad_checksum, ParseError::BadIpChecksum),
        ];
        let mut seen: Vec<ParseError> = cases.iter().map(|(_, e)| *e).collect();
        for (frame, expected) in &cases {
            assert_eq!(parse(frame), Err(*expected));
        }
        seen.sort_by_key(|e| *e as u8);
        assert_eq!(seen, ParseError::ALL.to_vec());
    }
}
