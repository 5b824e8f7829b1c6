//! Zero-copy packet views, the frame parser, checksums and in-place
//! rewrites.
//!
//! `wire` knows packets and nothing of rules. [`parse`] walks a frame once
//! and returns a [`PacketMeta`]: offsets and the 5-tuple, so that later
//! stages never parse again. Every rejection is a [`ParseError`], a fieldless
//! enum the pipeline counts per reason. Parsing never panics and never reads
//! out of bounds, on any input.
//!
//! # Layout
//!
//! - One typed view per protocol, smoltcp-style: [`EthernetFrame`] and
//!   [`VlanTag`], [`ArpPacket`], [`Ipv4Packet`], [`Ipv6Packet`] with
//!   [`Ipv6ExtHeader`] and [`Ipv6FragmentHeader`], [`TcpSegment`],
//!   [`UdpDatagram`], [`IcmpMessage`]. Getters need `AsRef<[u8]>`, setters
//!   `AsMut<[u8]>`; offsets are named in each module's `field`; once
//!   `new_checked` has passed, no getter can panic.
//! - [`parse`]: the views composed into one pass over a frame.
//! - [`checksum`]: full and incremental (RFC 1624) Internet checksums.
//! - `verify` (feature `testkit`): `frame_checksums_ok`, every checksum of
//!   a frame checked, for tests and fixtures.
//! - [`rewrite`]: the per-packet NAT primitives, patching checksums
//!   incrementally.
//! - [`quoted`]: the packet an ICMP error quotes, found and rewritten
//!   through the NAT with every checksum it touches.
//! - `builder` (feature `testkit`): well-formed test frames for tests,
//!   benches and fixtures.
//!
//! # What the parser accepts, and what the pipeline then does
//!
//! `wire` only classifies; the decisions are the pipeline's (see
//! `pipeline`), summarised here so the two read together:
//!
//! | Frame | `parse` returns | Pipeline |
//! |---|---|---|
//! | Ethernet II, 0–2 VLAN tags (TPID 0x8100, 0x88a8 or 0x9100) | offsets past the tags, `vlan_tags` | forwards per its rules |
//! | a third VLAN tag | [`ParseError::TooManyVlanTags`] | drops, counted |
//! | ARP (at least the 28-byte Ethernet/IPv4 body) | `l3: L3::Arp` | passes to the kernel |
//! | any other ethertype | [`ParseError::UnsupportedEthertype`] | passes to the kernel |
//! | IPv4 / IPv6 with TCP, UDP, ICMP | tuple with ports (ICMP: type and code) | looks up flows and services |
//! | other IP protocols (GRE, ESP, SCTP, IPv6 "no next header" …) | tuple with ports 0 | looks up services by protocol; usually passes |
//! | fragments | [`Fragment::First`] (L4 parsed) or [`Fragment::NonFirst`] (ports 0, `l4_offset` = fragment data) | does not reassemble: drops fragments to a VIP, passes the rest |
//! | malformed (any other [`ParseError`]) | the reason | drops, counted per reason |
//!
//! Lengths come from the headers, not the frame: IPv4's total length and
//! IPv6's payload length bound the packet (`ip_end`; Ethernet padding may
//! follow), and L4 headers must fit in the IP packet. IPv4 options are
//! skipped by IHL and TCP options by data offset. IPv6 extension headers
//! (hop-by-hop, routing, destination options, fragment, AH) are walked, at
//! most [`ipv6::MAX_EXTENSION_HEADERS`]; ESP ends the walk as an upper-layer
//! protocol. The parser does not verify checksums: receivers do, and the
//! gateway only patches them.

pub mod arp;
#[cfg(any(test, feature = "testkit"))]
pub mod builder;
mod bytes;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
mod parse;
mod plain;
#[cfg(test)]
mod proptests;
pub mod quoted;
pub mod rewrite;
pub mod tcp;
mod tuple;
pub mod udp;
#[cfg(any(test, feature = "testkit"))]
mod verify;

pub use arp::ArpPacket;
pub use ethernet::{EthernetFrame, VlanTag};
pub use icmp::IcmpMessage;
pub use ipv4::Ipv4Packet;
pub use ipv6::{Ipv6ExtHeader, Ipv6FragmentHeader, Ipv6Packet};

pub use parse::{
    is_plain_ipv4, parse, parse_any, parse_plain_ipv4, plain_ipv4_key_words, plain_ipv4_meta,
    MAX_VLAN_TAGS,
};
pub use plain::{plain_ipv4_tuple, PlainV4Frame};
pub use tcp::TcpSegment;
pub use tuple::{
    addr_to_bytes, bytes_to_addr, ip_proto, is_v4_mapped, v4_mapped, v4_octets, FiveTuple,
    FIVE_TUPLE_BYTES,
};
pub use udp::UdpDatagram;
#[cfg(any(test, feature = "testkit"))]
pub use verify::frame_checksums_ok;

/// What a frame carries at layer 3.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum L3 {
    /// ARP (always handed to the kernel).
    Arp,
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

/// Where a packet sits in a fragmented datagram.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fragment {
    /// Not fragmented.
    None,
    /// The first fragment: carries the L4 header and so the ports.
    First,
    /// A later fragment: no L4 header, ports are 0.
    NonFirst,
}

/// Everything later stages need to know about a parsed frame.
///
/// Offsets are from the start of the frame. For ARP only `l3`, `l3_offset`
/// and `vlan_tags` mean anything.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PacketMeta {
    /// Layer-3 protocol.
    pub l3: L3,
    /// Number of 802.1Q / 802.1ad tags (0..=2).
    pub vlan_tags: u8,
    /// Offset of the IP (or ARP) header.
    pub l3_offset: u16,
    /// Offset of the L4 header (for a non-first fragment: of its payload).
    pub l4_offset: u16,
    /// Offset one past the IP packet's last byte, by the IP length fields
    /// (a frame may be longer: Ethernet padding).
    pub ip_end: u16,
    /// The flow's identity; ports 0 where there are none.
    pub tuple: FiveTuple,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// TCP flags byte (FIN=0x01 SYN=0x02 RST=0x04 PSH=0x08 ACK=0x10); 0 if not TCP.
    pub tcp_flags: u8,
    /// Fragment position.
    pub fragment: Fragment,
    /// ICMP / ICMPv6 type and code; (0, 0) if not ICMP.
    pub icmp_type: u8,
    /// ICMP / ICMPv6 code.
    pub icmp_code: u8,
}

/// TCP flag bits in [`PacketMeta::tcp_flags`].
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// Why a frame was rejected by the parser. Each is one counter.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[repr(u8)]
pub enum ParseError {
    /// Shorter than the Ethernet header (with its VLAN tags).
    TruncatedEthernet,
    /// More than two VLAN tags.
    TooManyVlanTags,
    /// An ethertype the gateway does not process (it is passed to the kernel).
    UnsupportedEthertype,
    /// Shorter than an ARP packet for Ethernet/IPv4.
    TruncatedArp,
    /// Shorter than the fixed IP header.
    TruncatedIp,
    /// The IP version field does not match the ethertype.
    BadIpVersion,
    /// IPv4 header length below 5 words or beyond the frame.
    BadIhl,
    /// IP total / payload length smaller than the header or beyond the
    /// frame (or ending more than 64 KiB into it, past what
    /// [`PacketMeta`]'s offsets can hold).
    BadIpLength,
    /// An IPv6 extension header runs past the packet.
    BadExtensionHeader,
    /// More IPv6 extension headers than the gateway walks.
    TooManyExtensionHeaders,
    /// Shorter than the L4 header (TCP, UDP, ICMP).
    TruncatedL4,
    /// TCP data offset below 5 words or beyond the packet.
    BadTcpDataOffset,
    /// UDP length field smaller than 8 or beyond the packet.
    BadUdpLength,
    /// An IPv4 header whose checksum is wrong (RFC 1812, 5.2.2): a router
    /// drops it rather than forward a header it cannot trust.
    BadIpChecksum,
}

impl ParseError {
    /// Every reason, in counter order.
    pub const ALL: [ParseError; 14] = [
        ParseError::TruncatedEthernet,
        ParseError::TooManyVlanTags,
        ParseError::UnsupportedEthertype,
        ParseError::TruncatedArp,
        ParseError::TruncatedIp,
        ParseError::BadIpVersion,
        ParseError::BadIhl,
        ParseError::BadIpLength,
        ParseError::BadExtensionHeader,
        ParseError::TooManyExtensionHeaders,
        ParseError::TruncatedL4,
        ParseError::BadTcpDataOffset,
        ParseError::BadUdpLength,
        ParseError::BadIpChecksum,
    ];

    /// A stable snake_case name for counters and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            ParseError::TruncatedEthernet => "truncated_ethernet",
            ParseError::TooManyVlanTags => "too_many_vlan_tags",
            ParseError::UnsupportedEthertype => "unsupported_ethertype",
            ParseError::TruncatedArp => "truncated_arp",
            ParseError::TruncatedIp => "truncated_ip",
            ParseError::BadIpVersion => "bad_ip_version",
            ParseError::BadIhl => "bad_ihl",
            ParseError::BadIpLength => "bad_ip_length",
            ParseError::BadExtensionHeader => "bad_extension_header",
            ParseError::TooManyExtensionHeaders => "too_many_extension_headers",
            ParseError::TruncatedL4 => "truncated_l4",
            ParseError::BadTcpDataOffset => "bad_tcp_data_offset",
            ParseError::BadUdpLength => "bad_udp_length",
            ParseError::BadIpChecksum => "bad_ip_checksum",
        }
    }
}

impl std::error::Error for ParseError {}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
