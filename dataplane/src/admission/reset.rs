//! The RST that answers a refused TCP new flow (`over_limit = "reset"`).
//!
//! [`RefusedSegment::from_frame`] takes what the answer needs out of the
//! parsed frame; [`write_reset`] writes the answer into a frame buffer (it
//! may be the refused frame's own buffer: the fields are copied out
//! first). Both are pure and allocate nothing.
//!
//! The RST follows RFC 793's reset generation for a connection that does
//! not exist (RFC 9293 §3.10.7.1): if the segment has no ACK (a SYN) the
//! reset is `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`, where `SEG.LEN`
//! counts the payload and one each for SYN and FIN; otherwise it is
//! `<SEQ=SEG.ACK><CTL=RST>`. A RST is never answered. The frame goes back
//! the way the segment came: MACs, addresses and ports swapped, the
//! segment's VLAN tags kept; IPv4 with DF, identification 0 and TTL 64,
//! IPv6 with hop limit 64 and no flow label; window 0, no options; every
//! checksum computed in full.

use crate::wire::checksum::{l4_checksum_v4, l4_checksum_v6};
use crate::wire::ethernet::{self, ethertype};
use crate::wire::{
    ip_proto, ipv4, ipv6, tcp, tcp_flags, v4_octets, EthernetFrame, Fragment, Ipv4Packet,
    Ipv6Packet, PacketMeta, TcpSegment, L3,
};

/// TTL / hop limit of a RST.
pub const RESET_HOP_LIMIT: u8 = 64;

/// The longest RST frame: Ethernet, two VLAN tags, IPv6, TCP.
pub const MAX_RESET_LEN: usize =
    ethernet::HEADER_LEN + 2 * ethernet::VLAN_TAG_LEN + ipv6::HEADER_LEN + tcp::MIN_HEADER_LEN;

/// What a RST needs of the segment it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefusedSegment {
    /// The sender's MAC (the RST's destination).
    pub src_mac: [u8; 6],
    /// The MAC the segment was sent to (the RST's source).
    pub dst_mac: [u8; 6],
    /// The segment's VLAN tags as on the wire (TPID and TCI each), outer
    /// first; `vlan_tags` of them are used.
    pub vlan: [[u8; 4]; 2],
    /// How many VLAN tags (0..=2).
    pub vlan_tags: u8,
    /// IPv6 (else IPv4).
    pub ipv6: bool,
    /// Source address (IPv4-mapped for IPv4).
    pub src: [u8; 16],
    /// Destination address (IPv4-mapped for IPv4).
    pub dst: [u8; 16],
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// TCP flags.
    pub flags: u8,
    /// Payload bytes.
    pub payload_len: u32,
}

impl RefusedSegment {
    /// The fields of the TCP segment in `frame`, which `meta` describes
    /// (from [`crate::wire::parse`]); `None` if it is not an unfragmented
    /// TCP segment.
    pub fn from_frame(frame: &[u8], meta: &PacketMeta) -> Option<RefusedSegment> {
        if meta.tuple.protocol != ip_proto::TCP || meta.fragment != Fragment::None {
            return None;
        }
        let eth = EthernetFrame::new_checked(frame).ok()?;
        let mut vlan = [[0u8; 4]; 2];
        for (i, tag) in vlan
            .iter_mut()
            .enumerate()
            .take(usize::from(meta.vlan_tags))
        {
            let at = ethernet::field::ETHERTYPE.start + i * ethernet::VLAN_TAG_LEN;
            tag.copy_from_slice(frame.get(at..at + ethernet::VLAN_TAG_LEN)?);
        }
        let segment = frame.get(usize::from(meta.l4_offset)..usize::from(meta.ip_end))?;
        let tcp = TcpSegment::new_checked(segment).ok()?;
        Some(RefusedSegment {
            src_mac: eth.src_addr(),
            dst_mac: eth.dst_addr(),
            vlan,
            vlan_tags: meta.vlan_tags.min(2),
            ipv6: meta.l3 == L3::Ipv6,
            src: meta.tuple.src,
            dst: meta.tuple.dst,
            src_port: meta.tuple.src_port,
            dst_port: meta.tuple.dst_port,
            seq: tcp.seq_number(),
            ack: tcp.ack_number(),
            flags: tcp.flags(),
            payload_len: (segment.len() - tcp.header_len()) as u32,
        })
    }

    /// VLAN tags used (at most two, whatever `vlan_tags` says).
    fn tags(&self) -> usize {
        usize::from(self.vlan_tags.min(2))
    }

    /// RFC 793's sequence length: payload, plus one for SYN and for FIN.
    pub fn seg_len(&self) -> u32 {
        self.payload_len
            .wrapping_add(u32::from(self.flags & tcp_flags::SYN != 0))
            .wrapping_add(u32::from(self.flags & tcp_flags::FIN != 0))
    }

    /// The RST's length in bytes.
    pub fn reset_len(&self) -> usize {
        let ip = if self.ipv6 {
            ipv6::HEADER_LEN
        } else {
            ipv4::MIN_HEADER_LEN
        };
        ethernet::HEADER_LEN + self.tags() * ethernet::VLAN_TAG_LEN + ip + tcp::MIN_HEADER_LEN
    }
}

/// Why no RST was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResetError {
    /// The segment is itself a RST, which is never answered.
    #[error("the segment is a RST, and a RST is never answered")]
    AnswersReset,
    /// The buffer cannot hold the RST.
    #[error("a {need}-byte RST does not fit a {have}-byte frame buffer")]
    BufferTooShort {
        /// The RST's length.
        need: usize,
        /// The buffer's length.
        have: usize,
    },
}

/// Writes the RST answering `segment` at the start of `out`, and returns
/// its length.
pub fn write_reset(segment: &RefusedSegment, out: &mut [u8]) -> Result<usize, ResetError> {
    if segment.flags & tcp_flags::RST != 0 {
        return Err(ResetError::AnswersReset);
    }
    let len = segment.reset_len();
    let have = out.len();
    let frame = out
        .get_mut(..len)
        .ok_or(ResetError::BufferTooShort { need: len, have })?;

    // Ethernet and VLAN tags.
    let mut eth = EthernetFrame::new_unchecked(&mut *frame);
    eth.set_dst_addr(segment.src_mac);
    eth.set_src_addr(segment.dst_mac);
    let tags = segment.tags();
    let mut at = ethernet::field::ETHERTYPE.start;
    for tag in &segment.vlan[..tags] {
        frame[at..at + ethernet::VLAN_TAG_LEN].copy_from_slice(tag);
        at += ethernet::VLAN_TAG_LEN;
    }
    let ether_type = if segment.ipv6 {
        ethertype::IPV6
    } else {
        ethertype::IPV4
    };
    frame[at..at + 2].copy_from_slice(&ether_type.to_be_bytes());
    let l3 = at + 2;

    // IP.
    let l4 = if segment.ipv6 {
        let mut ip = Ipv6Packet::new_unchecked(&mut frame[l3..]);
        ip.set_version_class_label(0, 0);
        ip.set_payload_len(tcp::MIN_HEADER_LEN as u16);
        ip.set_next_header(ip_proto::TCP);
        ip.set_hop_limit(RESET_HOP_LIMIT);
        ip.set_src_addr(segment.dst);
        ip.set_dst_addr(segment.src);
        l3 + ipv6::HEADER_LEN
    } else {
        let mut ip = Ipv4Packet::new_unchecked(&mut frame[l3..]);
        ip.set_version_and_header_len(ipv4::MIN_HEADER_LEN);
        ip.set_dscp_ecn(0);
        ip.set_total_len((ipv4::MIN_HEADER_LEN + tcp::MIN_HEADER_LEN) as u16);
        ip.set_ident(0);
        ip.set_flags_and_frag_offset(true, false, 0);
        ip.set_ttl(RESET_HOP_LIMIT);
        ip.set_protocol(ip_proto::TCP);
        ip.set_src_addr(v4_octets(&segment.dst));
        ip.set_dst_addr(v4_octets(&segment.src));
        ip.fill_checksum();
        l3 + ipv4::MIN_HEADER_LEN
    };

    // TCP, by RFC 793's rule for a segment to no connection.
    let (seq, ack, flags) = if segment.flags & tcp_flags::ACK != 0 {
        (segment.ack, 0, tcp_flags::RST)
    } else {
        (
            0,
            segment.seq.wrapping_add(segment.seg_len()),
            tcp_flags::RST | tcp_flags::ACK,
        )
    };
    let mut tcp = TcpSegment::new_unchecked(&mut frame[l4..]);
    tcp.set_src_port(segment.dst_port);
    tcp.set_dst_port(segment.src_port);
    tcp.set_seq_number(seq);
    tcp.set_ack_number(ack);
    tcp.set_header_len(tcp::MIN_HEADER_LEN);
    tcp.set_flags(flags);
    tcp.set_window(0);
    tcp.set_checksum(0);
    tcp.set_urgent(0);
    let checksum = if segment.ipv6 {
        l4_checksum_v6(&segment.dst, &segment.src, ip_proto::TCP, &frame[l4..])
    } else {
        l4_checksum_v4(
            &v4_octets(&segment.dst),
            &v4_octets(&segment.src),
            ip_proto::TCP,
            &frame[l4..],
        )
    };
    TcpSegment::new_unchecked(&mut frame[l4..]).set_checksum(checksum);
    Ok(len)
}

#[cfg(test)]
mod tests;
