//! Well-formed test frames, for unit and integration tests, benches, replay
//! fixtures and fuzz seeds.
//!
//! A [`FrameBuilder`] starts from a protocol and a pair of endpoints, takes
//! options by chaining, and [`build`](FrameBuilder::build)s a frame whose
//! lengths are consistent and whose checksums are all correct (so it passes
//! [`frame_checksums_ok`](super::frame_checksums_ok)). It is not for the
//! forwarding path: it allocates, and it panics on requests that cannot
//! make a frame (mixed address families, oversized options).
//!
//! ```
//! use flowgate_dataplane::wire::{self, builder::FrameBuilder, tcp_flags};
//!
//! let frame = FrameBuilder::tcp(
//!     "198.18.0.1:40000".parse().unwrap(),
//!     "198.18.1.10:80".parse().unwrap(),
//!     tcp_flags::SYN,
//! )
//! .vlan(100)
//! .payload(b"hello")
//! .build();
//! let meta = wire::parse(&frame).unwrap();
//! assert_eq!((meta.vlan_tags, meta.tuple.dst_port), (1, 80));
//! assert!(wire::frame_checksums_ok(&frame));
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::arp::{self, ArpPacket};
use super::checksum::{internet_checksum, l4_checksum_v4, l4_checksum_v6, udp_wire_value};
use super::ethernet::{self, ethertype, EthernetFrame};
use super::icmp::{self, icmpv4_type, icmpv6_type, IcmpMessage};
use super::ipv4::{self, Ipv4Packet};
use super::ipv6::{self, next_header, Ipv6FragmentHeader, Ipv6Packet};
use super::tcp::{self, TcpSegment};
use super::tuple::ip_proto;
use super::udp::{self, UdpDatagram};

/// Source MAC of a built frame unless [`FrameBuilder::macs`] says otherwise
/// (locally administered).
pub const DEFAULT_SRC_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
/// Destination MAC of a built frame unless [`FrameBuilder::macs`] says
/// otherwise (locally administered).
pub const DEFAULT_DST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
/// TTL / hop limit unless [`FrameBuilder::ttl`] says otherwise.
pub const DEFAULT_TTL: u8 = 64;
/// Identifier of built ICMP echo requests.
pub const ECHO_IDENT: u16 = 0x4647;
/// Sequence number of built ICMP echo requests.
pub const ECHO_SEQ: u16 = 1;
/// IPv4 identification and IPv6 fragment identification of built frames.
pub const IDENT: u16 = 0x0101;
/// TCP window of built segments.
pub const TCP_WINDOW: u16 = 65535;

/// An IPv6 extension header for [`FrameBuilder::ipv6_extension_headers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtensionHeader {
    /// Hop-by-hop options: `8 × (n + 1)` bytes of padding options, where `n`
    /// is the value given (the header's length field).
    HopByHop(u8),
    /// Destination options, sized like [`HopByHop`](Self::HopByHop).
    DestinationOptions(u8),
    /// A routing header of the experimental type 253 (RFC 4727) with no
    /// segments left, `8 × (n + 1)` bytes long.
    Routing(u8),
    /// A fragment header.
    Fragment {
        /// Offset in bytes (a multiple of 8).
        offset: u16,
        /// The M flag: more fragments follow.
        more: bool,
    },
    /// An authentication header with a 12-byte (zero) ICV: 24 bytes.
    Authentication,
}

impl ExtensionHeader {
    /// The next-header value that announces this header.
    pub fn kind(self) -> u8 {
        match self {
            ExtensionHeader::HopByHop(_) => next_header::HOP_BY_HOP,
            ExtensionHeader::DestinationOptions(_) => next_header::DEST_OPTS,
            ExtensionHeader::Routing(_) => next_header::ROUTING,
            ExtensionHeader::Fragment { .. } => next_header::FRAGMENT,
            ExtensionHeader::Authentication => next_header::AUTH,
        }
    }

    /// Appends this header, announcing `next` as what follows, to `out`.
    fn write(self, next: u8, out: &mut Vec<u8>) {
        match self {
            ExtensionHeader::HopByHop(n) | ExtensionHeader::DestinationOptions(n) => {
                out.extend_from_slice(&[next, n]);
                push_padding_options(out, (usize::from(n) + 1) * 8 - 2);
            }
            ExtensionHeader::Routing(n) => {
                out.extend_from_slice(&[next, n, 253, 0]);
                out.resize(out.len() + (usize::from(n) + 1) * 8 - 4, 0);
            }
            ExtensionHeader::Fragment { offset, more } => {
                let start = out.len();
                out.resize(start + ipv6::FRAGMENT_HEADER_LEN, 0);
                let mut frag = Ipv6FragmentHeader::new_unchecked(&mut out[start..]);
                frag.set_next_header(next);
                frag.set_frag_offset_and_more(offset, more);
                frag.set_ident(u32::from(IDENT));
            }
            ExtensionHeader::Authentication => {
                out.extend_from_slice(&[next, 4, 0, 0]);
                out.extend_from_slice(&0x100u32.to_be_bytes()); // SPI
                out.extend_from_slice(&1u32.to_be_bytes()); // sequence number
                out.extend_from_slice(&[0; 12]); // ICV
            }
        }
    }
}

/// Fills `len` bytes with Pad1 / PadN options (RFC 8200 §4.2).
fn push_padding_options(out: &mut Vec<u8>, mut len: usize) {
    while len > 0 {
        if len == 1 {
            out.push(0); // Pad1
            len = 0;
        } else {
            let data = (len - 2).min(255);
            out.extend_from_slice(&[1, data as u8]);
            out.resize(out.len() + data, 0);
            len -= data + 2;
        }
    }
}

/// What the frame carries.
#[derive(Clone, Debug)]
enum Content {
    Tcp {
        src: SocketAddr,
        dst: SocketAddr,
        flags: u8,
    },
    Udp {
        src: SocketAddr,
        dst: SocketAddr,
    },
    IcmpEcho {
        src: IpAddr,
        dst: IpAddr,
    },
    IcmpError {
        src: IpAddr,
        dst: IpAddr,
        msg_type: u8,
        code: u8,
        rest: u32,
    },
    Arp {
        sender_mac: [u8; 6],
        sender_ip: Ipv4Addr,
        target_ip: Ipv4Addr,
    },
}

/// Builds one well-formed Ethernet frame; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct FrameBuilder {
    content: Content,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    vlan_tcis: Vec<u16>,
    ttl: u8,
    payload: Vec<u8>,
    udp_zero_checksum: bool,
    ipv4_options: Vec<u8>,
    extension_headers: Vec<ExtensionHeader>,
    fragment: Option<(u16, bool)>,
    tcp_seq: u32,
    tcp_options: Vec<u8>,
}

impl FrameBuilder {
    fn new(content: Content) -> Self {
        FrameBuilder {
            content,
            src_mac: DEFAULT_SRC_MAC,
            dst_mac: DEFAULT_DST_MAC,
            vlan_tcis: Vec::new(),
            ttl: DEFAULT_TTL,
            payload: Vec::new(),
            udp_zero_checksum: false,
            ipv4_options: Vec::new(),
            extension_headers: Vec::new(),
            fragment: None,
            tcp_seq: 1,
            tcp_options: Vec::new(),
        }
    }

    /// A TCP segment from `src` to `dst` with `flags`
    /// (see [`tcp_flags`](super::tcp_flags)); IPv4 or IPv6 by the
    /// addresses' family.
    ///
    /// # Panics
    /// If `src` and `dst` are of different families.
    pub fn tcp(src: SocketAddr, dst: SocketAddr, flags: u8) -> Self {
        assert_same_family(src.ip(), dst.ip());
        Self::new(Content::Tcp { src, dst, flags })
    }

    /// A UDP datagram from `src` to `dst`.
    ///
    /// # Panics
    /// If `src` and `dst` are of different families.
    pub fn udp(src: SocketAddr, dst: SocketAddr) -> Self {
        assert_same_family(src.ip(), dst.ip());
        Self::new(Content::Udp { src, dst })
    }

    /// An echo request from `src` to `dst`: ICMPv4 or ICMPv6 by family, with
    /// identifier [`ECHO_IDENT`] and sequence number [`ECHO_SEQ`].
    ///
    /// # Panics
    /// If `src` and `dst` are of different families.
    pub fn icmp_echo_request(src: IpAddr, dst: IpAddr) -> Self {
        assert_same_family(src, dst);
        Self::new(Content::IcmpEcho { src, dst })
    }

    /// An ICMP or ICMPv6 error (by family) from `src` to `dst` of
    /// `msg_type` and `code`, whose 4 type-specific bytes are `rest` (the
    /// next-hop MTU of a "fragmentation needed" in its low 16 bits, the MTU
    /// of a "packet too big"); the quoted packet is the
    /// [`payload`](Self::payload).
    ///
    /// # Panics
    /// If `src` and `dst` are of different families.
    pub fn icmp_error(src: IpAddr, dst: IpAddr, msg_type: u8, code: u8, rest: u32) -> Self {
        assert_same_family(src, dst);
        Self::new(Content::IcmpError {
            src,
            dst,
            msg_type,
            code,
            rest,
        })
    }

    /// An ARP request (who has `target_ip`?) from `sender_mac` /
    /// `sender_ip`, broadcast. IP options (TTL, payload …) do not apply.
    pub fn arp_request(sender_mac: [u8; 6], sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Self {
        let mut builder = Self::new(Content::Arp {
            sender_mac,
            sender_ip,
            target_ip,
        });
        builder.src_mac = sender_mac;
        builder.dst_mac = [0xff; 6];
        builder
    }

    /// Sets the Ethernet source and destination MACs.
    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    /// Adds a VLAN tag with this TCI. Call twice for QinQ, outer tag first:
    /// with two or more tags the outer one uses TPID 0x88a8 and the others
    /// 0x8100. A third tag makes a frame the parser refuses.
    pub fn vlan(mut self, tci: u16) -> Self {
        self.vlan_tcis.push(tci);
        self
    }

    /// Sets the IPv4 TTL or IPv6 hop limit.
    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the L4 payload (for a non-first fragment: the fragment data).
    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    /// Sends UDP with checksum 0 ("none"; valid over IPv4 only, so an IPv6
    /// frame built so fails [`frame_checksums_ok`](super::frame_checksums_ok)).
    pub fn udp_zero_checksum(mut self) -> Self {
        self.udp_zero_checksum = true;
        self
    }

    /// Sets IPv4 options, padded with zeros (end of options) to a multiple
    /// of 4 bytes.
    ///
    /// # Panics
    /// At [`build`](Self::build), if they exceed 40 bytes.
    pub fn ipv4_options(mut self, options: &[u8]) -> Self {
        self.ipv4_options = options.to_vec();
        self
    }

    /// Sets the IPv6 extension headers, in order, between the fixed header
    /// and the upper layer (a [`fragment`](Self::fragment) header comes
    /// after them).
    pub fn ipv6_extension_headers(mut self, headers: &[ExtensionHeader]) -> Self {
        self.extension_headers = headers.to_vec();
        self
    }

    /// Makes the packet a fragment: `offset_bytes` (a multiple of 8) into
    /// the datagram, with more fragments to follow if `more`. IPv4 sets the
    /// flags and offset; IPv6 adds a fragment header after the other
    /// extension headers. A fragment with a non-zero offset carries the
    /// payload alone, without an L4 header. A first fragment's L4 checksum
    /// is computed over the bytes it carries.
    pub fn fragment(mut self, offset_bytes: u16, more: bool) -> Self {
        self.fragment = Some((offset_bytes, more));
        self
    }

    /// Sets the TCP sequence number (default 1).
    pub fn tcp_seq(mut self, seq: u32) -> Self {
        self.tcp_seq = seq;
        self
    }

    /// Sets TCP options, padded with zeros (end of options) to a multiple
    /// of 4 bytes.
    ///
    /// # Panics
    /// At [`build`](Self::build), if they exceed 40 bytes.
    pub fn tcp_options(mut self, options: &[u8]) -> Self {
        self.tcp_options = options.to_vec();
        self
    }

    /// The frame, with every length and checksum filled in.
    pub fn build(&self) -> Vec<u8> {
        let mut frame = self.ethernet_header();
        match &self.content {
            Content::Arp {
                sender_mac,
                sender_ip,
                target_ip,
            } => {
                let start = frame.len();
                frame.resize(start + arp::PACKET_LEN, 0);
                let mut arp = ArpPacket::new_unchecked(&mut frame[start..]);
                arp.set_ethernet_ipv4();
                arp.set_operation(arp::operation::REQUEST);
                arp.set_sender_hardware_addr(*sender_mac);
                arp.set_sender_protocol_addr(sender_ip.octets());
                arp.set_target_hardware_addr([0; 6]);
                arp.set_target_protocol_addr(target_ip.octets());
            }
            Content::Tcp { src, dst, .. } | Content::Udp { src, dst } => {
                self.push_ip(&mut frame, src.ip(), dst.ip());
            }
            Content::IcmpEcho { src, dst } | Content::IcmpError { src, dst, .. } => {
                self.push_ip(&mut frame, *src, *dst)
            }
        }
        frame
    }

    /// MACs, VLAN tags and the ethertype.
    fn ethernet_header(&self) -> Vec<u8> {
        let mut frame = vec![0u8; ethernet::HEADER_LEN];
        let inner = match &self.content {
            Content::Arp { .. } => ethertype::ARP,
            Content::Tcp { src, .. } | Content::Udp { src, .. } if src.is_ipv4() => ethertype::IPV4,
            Content::IcmpEcho { src, .. } | Content::IcmpError { src, .. } if src.is_ipv4() => {
                ethertype::IPV4
            }
            _ => ethertype::IPV6,
        };
        let tpid = |i: usize| {
            if i == 0 && self.vlan_tcis.len() > 1 {
                ethertype::QINQ
            } else {
                ethertype::VLAN
            }
        };
        let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
        eth.set_dst_addr(self.dst_mac);
        eth.set_src_addr(self.src_mac);
        eth.set_ethertype(if self.vlan_tcis.is_empty() {
            inner
        } else {
            tpid(0)
        });
        for (i, tci) in self.vlan_tcis.iter().enumerate() {
            let next = if i + 1 < self.vlan_tcis.len() {
                tpid(i + 1)
            } else {
                inner
            };
            frame.extend_from_slice(&tci.to_be_bytes());
            frame.extend_from_slice(&next.to_be_bytes());
        }
        frame
    }

    /// The IP packet, appended to `frame`.
    fn push_ip(&self, frame: &mut Vec<u8>, src: IpAddr, dst: IpAddr) {
        let non_first = matches!(self.fragment, Some((offset, _)) if offset > 0);
        match (src, dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let (src, dst) = (src.octets(), dst.octets());
                let (protocol, l4) = if non_first {
                    (self.protocol(false), self.payload.clone())
                } else {
                    self.l4_segment(false, |protocol, segment| {
                        l4_checksum_v4(&src, &dst, protocol, segment)
                    })
                };
                self.push_ipv4(frame, src, dst, protocol, &l4);
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let (src, dst) = (src.octets(), dst.octets());
                let (protocol, l4) = if non_first {
                    (self.protocol(true), self.payload.clone())
                } else {
                    self.l4_segment(true, |protocol, segment| {
                        l4_checksum_v6(&src, &dst, protocol, segment)
                    })
                };
                self.push_ipv6(frame, src, dst, protocol, &l4);
            }
            _ => unreachable!("the constructors check the families match"),
        }
    }

    fn push_ipv4(&self, frame: &mut Vec<u8>, src: [u8; 4], dst: [u8; 4], protocol: u8, l4: &[u8]) {
        let options = padded(
            &self.ipv4_options,
            ipv4::MAX_HEADER_LEN - ipv4::MIN_HEADER_LEN,
        );
        let header_len = ipv4::MIN_HEADER_LEN + options.len();
        let total = header_len + l4.len();
        let start = frame.len();
        frame.resize(start + header_len, 0);
        frame.extend_from_slice(l4);
        let mut ip = Ipv4Packet::new_unchecked(&mut frame[start..]);
        ip.set_version_and_header_len(header_len);
        ip.set_total_len(u16::try_from(total).expect("an IPv4 packet fits in 64 KiB"));
        ip.set_ident(IDENT);
        let (offset, more) = self.fragment.unwrap_or((0, false));
        ip.set_flags_and_frag_offset(false, more, offset);
        ip.set_ttl(self.ttl);
        ip.set_protocol(protocol);
        ip.set_src_addr(src);
        ip.set_dst_addr(dst);
        ip.options_mut().copy_from_slice(&options);
        ip.fill_checksum();
    }

    fn push_ipv6(
        &self,
        frame: &mut Vec<u8>,
        src: [u8; 16],
        dst: [u8; 16],
        protocol: u8,
        l4: &[u8],
    ) {
        let mut chain = self.extension_headers.clone();
        if let Some((offset, more)) = self.fragment {
            chain.push(ExtensionHeader::Fragment { offset, more });
        }
        let mut payload = Vec::new();
        for (i, header) in chain.iter().enumerate() {
            let next = chain.get(i + 1).map_or(protocol, |h| h.kind());
            header.write(next, &mut payload);
        }
        payload.extend_from_slice(l4);
        let start = frame.len();
        frame.resize(start + ipv6::HEADER_LEN, 0);
        frame.extend_from_slice(&payload);
        let mut ip = Ipv6Packet::new_unchecked(&mut frame[start..]);
        ip.set_version_class_label(0, 0);
        ip.set_payload_len(u16::try_from(payload.len()).expect("an IPv6 payload fits in 64 KiB"));
        ip.set_next_header(chain.first().map_or(protocol, |h| h.kind()));
        ip.set_hop_limit(self.ttl);
        ip.set_src_addr(src);
        ip.set_dst_addr(dst);
    }

    /// The IP protocol number of the content.
    fn protocol(&self, v6: bool) -> u8 {
        match self.content {
            Content::Tcp { .. } => ip_proto::TCP,
            Content::Udp { .. } => ip_proto::UDP,
            Content::IcmpEcho { .. } | Content::IcmpError { .. } if v6 => ip_proto::ICMPV6,
            Content::IcmpEcho { .. } | Content::IcmpError { .. } => ip_proto::ICMP,
            Content::Arp { .. } => 0,
        }
    }

    /// The protocol and its L4 header and payload with the checksum filled
    /// in; `pseudo` computes a checksum with the family's pseudo-header.
    fn l4_segment(&self, v6: bool, pseudo: impl Fn(u8, &[u8]) -> u16) -> (u8, Vec<u8>) {
        let protocol = self.protocol(v6);
        let segment = match &self.content {
            Content::Tcp { src, dst, flags } => {
                let options = padded(&self.tcp_options, 40);
                let header_len = tcp::MIN_HEADER_LEN + options.len();
                let mut seg = vec![0u8; header_len];
                seg.extend_from_slice(&self.payload);
                let mut tcp = TcpSegment::new_unchecked(&mut seg[..]);
                tcp.set_src_port(src.port());
                tcp.set_dst_port(dst.port());
                tcp.set_seq_number(self.tcp_seq);
                tcp.set_header_len(header_len);
                tcp.set_flags(*flags);
                tcp.set_window(TCP_WINDOW);
                tcp.options_mut().copy_from_slice(&options);
                let check = pseudo(protocol, &seg);
                TcpSegment::new_unchecked(&mut seg[..]).set_checksum(check);
                seg
            }
            Content::Udp { src, dst } => {
                let mut seg = vec![0u8; udp::HEADER_LEN];
                seg.extend_from_slice(&self.payload);
                let len = u16::try_from(seg.len()).expect("a UDP datagram fits in 64 KiB");
                let mut udp = UdpDatagram::new_unchecked(&mut seg[..]);
                udp.set_src_port(src.port());
                udp.set_dst_port(dst.port());
                udp.set_len(len);
                if !self.udp_zero_checksum {
                    let check = udp_wire_value(pseudo(protocol, &seg));
                    UdpDatagram::new_unchecked(&mut seg[..]).set_checksum(check);
                }
                seg
            }
            Content::IcmpEcho { .. } => {
                let mut seg = vec![0u8; icmp::HEADER_LEN];
                seg.extend_from_slice(&self.payload);
                let mut message = IcmpMessage::new_unchecked(&mut seg[..]);
                message.set_msg_type(if v6 {
                    icmpv6_type::ECHO_REQUEST
                } else {
                    icmpv4_type::ECHO_REQUEST
                });
                message.set_echo_ident(ECHO_IDENT);
                message.set_echo_seq(ECHO_SEQ);
                let check = if v6 {
                    pseudo(protocol, &seg)
                } else {
                    internet_checksum(&seg)
                };
                IcmpMessage::new_unchecked(&mut seg[..]).set_checksum(check);
                seg
            }
            Content::IcmpError {
                msg_type,
                code,
                rest,
                ..
            } => {
                let mut seg = vec![0u8; icmp::HEADER_LEN];
                seg.extend_from_slice(&self.payload);
                seg[icmp::field::TYPE] = *msg_type;
                seg[icmp::field::CODE] = *code;
                seg[icmp::field::REST_OF_HEADER].copy_from_slice(&rest.to_be_bytes());
                let check = if v6 {
                    pseudo(protocol, &seg)
                } else {
                    internet_checksum(&seg)
                };
                IcmpMessage::new_unchecked(&mut seg[..]).set_checksum(check);
                seg
            }
            Content::Arp { .. } => Vec::new(),
        };
        (protocol, segment)
    }
}

/// `options` zero-padded to a multiple of 4 bytes.
///
/// # Panics
/// If that exceeds `max` bytes.
fn padded(options: &[u8], max: usize) -> Vec<u8> {
    let mut out = options.to_vec();
    out.resize(options.len().div_ceil(4) * 4, 0);
    assert!(out.len() <= max, "options longer than {max} bytes");
    out
}

fn assert_same_family(src: IpAddr, dst: IpAddr) {
    assert_eq!(
        src.is_ipv4(),
        dst.is_ipv4(),
        "source and destination must be of one address family"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{frame_checksums_ok, parse, tcp_flags, Fragment, L3};

    fn sock(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const V4_SRC: &str = "198.18.0.1:40000";
    const V4_DST: &str = "198.18.1.10:80";
    const V6_SRC: &str = "[2001:2::1]:40000";
    const V6_DST: &str = "[2001:2::a]:443";

    #[test]
    fn a_tcp_frame_has_the_requested_fields() {
        let frame = FrameBuilder::tcp(sock(V4_SRC), sock(V4_DST), tcp_flags::SYN)
            .macs([0x02, 1, 1, 1, 1, 1], [0x02, 2, 2, 2, 2, 2])
            .ttl(9)
            .tcp_seq(0xfeed)
            .payload(b"abc")
            .build();
        assert_eq!(frame.len(), 14 + 20 + 20 + 3);
        let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
        assert_eq!(eth.src_addr(), [0x02, 1, 1, 1, 1, 1]);
        assert_eq!(eth.dst_addr(), [0x02, 2, 2, 2, 2, 2]);
        let meta = parse(&frame).unwrap();
        assert_eq!(meta.tuple.src_ip(), sock(V4_SRC).ip());
        assert_eq!(meta.tuple.dst_ip(), sock(V4_DST).ip());
        assert_eq!((meta.tuple.src_port, meta.tuple.dst_port), (40000, 80));
        assert_eq!((meta.ttl, meta.tcp_flags), (9, tcp_flags::SYN));
        let tcp = TcpSegment::new_checked(&frame[34..]).unwrap();
        assert_eq!((tcp.seq_number(), tcp.payload()), (0xfeed, &b"abc"[..]));
        assert!(frame_checksums_ok(&frame));
    }

    #[test]
    fn one_tag_is_8100_and_two_are_88a8_then_8100() {
        let one = FrameBuilder::udp(sock(V4_SRC), sock(V4_DST))
            .vlan(7)
            .build();
        assert_eq!(&one[12..18], &[0x81, 0x00, 0x00, 0x07, 0x08, 0x00]);
        let two = FrameBuilder::udp(sock(V4_SRC), sock(V4_DST))
            .vlan(10)
            .vlan(20)
            .build();
        assert_eq!(
            &two[12..22],
            &[0x88, 0xa8, 0x00, 0x0a, 0x81, 0x00, 0x00, 0x14, 0x08, 0x00]
        );
        assert_eq!(parse(&two).unwrap().vlan_tags, 2);
    }

    #[test]
    fn ipv4_options_are_padded_and_counted_in_ihl() {
        let frame = FrameBuilder::udp(sock(V4_SRC), sock(V4_DST))
            .ipv4_options(&[0x94, 0x04, 0, 0, 1])
            .build();
        let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        assert_eq!(ip.header_len(), 28);
        assert_eq!(ip.options(), &[0x94, 0x04, 0, 0, 1, 0, 0, 0]);
        assert_eq!(parse(&frame).unwrap().l4_offset, 42);
        assert!(frame_checksums_ok(&frame));
    }

    #[test]
    fn tcp_options_are_padded_and_counted_in_the_data_offset() {
        let frame = FrameBuilder::tcp(sock(V4_SRC), sock(V4_DST), tcp_flags::SYN)
            .tcp_options(&[2, 4, 0x05, 0xb4, 1, 3, 3, 7])
            .build();
        let tcp = TcpSegment::new_checked(&frame[34..]).unwrap();
        assert_eq!(tcp.header_len(), 28);
        assert!(frame_checksums_ok(&frame));
    }

    #[test]
    fn udp_zero_checksum_stays_zero() {
        let frame = FrameBuilder::udp(sock(V4_SRC), sock(V4_DST))
            .payload(b"q")
            .udp_zero_checksum()
            .build();
        assert_eq!(&frame[40..42], &[0, 0]);
        assert!(frame_checksums_ok(&frame));
        let v6 = FrameBuilder::udp(sock(V6_SRC), sock(V6_DST))
            .udp_zero_checksum()
            .build();
        assert!(!frame_checksums_ok(&v6));
    }

    #[test]
    fn echo_requests_follow_the_family() {
        let v4f = FrameBuilder::icmp_echo_request(sock(V4_SRC).ip(), sock(V4_DST).ip())
            .payload(b"ping")
            .build();
        let meta = parse(&v4f).unwrap();
        assert_eq!((meta.tuple.protocol, meta.icmp_type), (ip_proto::ICMP, 8));
        assert!(frame_checksums_ok(&v4f));
        let v6f = FrameBuilder::icmp_echo_request(sock(V6_SRC).ip(), sock(V6_DST).ip()).build();
        let meta = parse(&v6f).unwrap();
        assert_eq!(
            (meta.tuple.protocol, meta.icmp_type),
            (ip_proto::ICMPV6, 128)
        );
        assert!(frame_checksums_ok(&v6f));
        let message = IcmpMessage::new_checked(&v6f[54..]).unwrap();
        assert_eq!(
            (message.echo_ident(), message.echo_seq()),
            (ECHO_IDENT, ECHO_SEQ)
        );
    }

    #[test]
    fn an_arp_request_is_broadcast_from_the_sender() {
        let mac = [0x02, 0xaa, 0, 0, 0, 1];
        let frame = FrameBuilder::arp_request(
            mac,
            "198.18.0.1".parse().unwrap(),
            "198.18.0.2".parse().unwrap(),
        )
        .vlan(5)
        .build();
        let meta = parse(&frame).unwrap();
        assert_eq!((meta.l3, meta.vlan_tags), (L3::Arp, 1));
        let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
        assert_eq!((eth.src_addr(), eth.dst_addr()), (mac, [0xff; 6]));
        let arp = ArpPacket::new_checked(&frame[18..]).unwrap();
        assert_eq!(arp.operation(), arp::operation::REQUEST);
        assert_eq!(arp.sender_hardware_addr(), mac);
        assert_eq!(arp.sender_protocol_addr(), [198, 18, 0, 1]);
        assert_eq!(arp.target_protocol_addr(), [198, 18, 0, 2]);
        assert!(frame_checksums_ok(&frame));
    }

    #[test]
    fn extension_headers_are_chained_in_order() {
        let chain = [
            ExtensionHeader::HopByHop(0),
            ExtensionHeader::DestinationOptions(40),
            ExtensionHeader::Routing(1),
            ExtensionHeader::Authentication,
        ];
        let frame = FrameBuilder::tcp(sock(V6_SRC), sock(V6_DST), tcp_flags::ACK)
            .ipv6_extension_headers(&chain)
            .payload(b"data")
            .build();
        let meta = parse(&frame).unwrap();
        let ext_len = 8 + 41 * 8 + 16 + 24;
        assert_eq!(usize::from(meta.l4_offset), 14 + 40 + ext_len);
        assert_eq!(
            (meta.tuple.protocol, meta.tuple.dst_port),
            (ip_proto::TCP, 443)
        );
        assert_eq!(frame[14 + 6], next_header::HOP_BY_HOP);
        assert!(frame_checksums_ok(&frame));
    }

    #[test]
    fn fragments_are_built_for_both_families() {
        for (src, dst) in [(V4_SRC, V4_DST), (V6_SRC, V6_DST)] {
            let first = FrameBuilder::udp(sock(src), sock(dst))
                .payload(&[7; 32])
                .fragment(0, true)
                .build();
            let meta = parse(&first).unwrap();
            assert_eq!(
                (meta.fragment, meta.tuple.dst_port),
                (Fragment::First, dst_port(dst))
            );
            assert!(frame_checksums_ok(&first));

            let later = FrameBuilder::udp(sock(src), sock(dst))
                .payload(&[7; 32])
                .fragment(1480, false)
                .build();
            let meta = parse(&later).unwrap();
            assert_eq!(
                (meta.fragment, meta.tuple.dst_port),
                (Fragment::NonFirst, 0)
            );
            assert_eq!(usize::from(meta.ip_end - meta.l4_offset), 32);
            assert_eq!(meta.tuple.protocol, ip_proto::UDP);
            assert!(frame_checksums_ok(&later));
        }
    }

    fn dst_port(s: &str) -> u16 {
        sock(s).port()
    }

    #[test]
    fn large_option_headers_use_several_padding_options() {
        let mut out = Vec::new();
        push_padding_options(&mut out, 300);
        assert_eq!(out.len(), 300);
        assert_eq!(&out[..2], &[1, 255]);
        assert_eq!(&out[257..259], &[1, 41]);
        let mut one = Vec::new();
        push_padding_options(&mut one, 1);
        assert_eq!(one, [0]);
    }

    #[test]
    #[should_panic(expected = "one address family")]
    fn mixed_families_are_refused() {
        let _ = FrameBuilder::udp(sock(V4_SRC), sock(V6_DST));
    }
}
