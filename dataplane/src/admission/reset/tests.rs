//! The RST: RFC 793's numbers, swapped ends, kept VLAN tags, checksums
//! that verify. Frames made independently (scapy) are checked in
//! tests/admission_reset.rs.

use std::net::SocketAddr;

use proptest::prelude::*;

use super::*;
use crate::wire::builder::FrameBuilder;
use crate::wire::{frame_checksums_ok, parse};

const CLIENT_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x02];
const GATEWAY_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x01];

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn segment_of(frame: &[u8]) -> RefusedSegment {
    RefusedSegment::from_frame(frame, &parse(frame).unwrap()).unwrap()
}

fn reset_of(frame: &[u8]) -> Vec<u8> {
    let mut out = [0u8; 256];
    let len = write_reset(&segment_of(frame), &mut out).unwrap();
    out[..len].to_vec()
}

fn tcp_header(frame: &[u8]) -> TcpSegment<&[u8]> {
    let meta = parse(frame).unwrap();
    TcpSegment::new_checked(&frame[usize::from(meta.l4_offset)..]).unwrap()
}

#[test]
fn a_syn_is_answered_with_rst_ack_from_the_other_end() {
    for (client, vip) in [
        ("198.18.0.2:40000", "198.18.100.10:80"),
        ("[2001:2::2]:40000", "[2001:2:0:100::10]:80"),
    ] {
        let syn = FrameBuilder::tcp(sock(client), sock(vip), tcp_flags::SYN)
            .macs(CLIENT_MAC, GATEWAY_MAC)
            .tcp_seq(0x1234_5678)
            .build();
        let rst = reset_of(&syn);
        assert!(frame_checksums_ok(&rst), "{client}");
        let meta = parse(&rst).unwrap();
        let syn_meta = parse(&syn).unwrap();
        assert_eq!(meta.tuple.src, syn_meta.tuple.dst);
        assert_eq!(meta.tuple.dst, syn_meta.tuple.src);
        assert_eq!(meta.tuple.src_port, 80);
        assert_eq!(meta.tuple.dst_port, 40000);
        assert_eq!(meta.ttl, RESET_HOP_LIMIT);
        assert_eq!(&rst[0..6], &CLIENT_MAC);
        assert_eq!(&rst[6..12], &GATEWAY_MAC);
        let tcp = tcp_header(&rst);
        assert_eq!(tcp.flags(), tcp_flags::RST | tcp_flags::ACK);
        assert_eq!(tcp.seq_number(), 0);
        assert_eq!(tcp.ack_number(), 0x1234_5679);
        assert_eq!(tcp.window(), 0);
        assert_eq!(tcp.header_len(), 20);
        assert_eq!(rst.len(), segment_of(&syn).reset_len());
    }
}

#[test]
fn the_ack_counts_the_syn_and_the_payload_and_wraps() {
    let syn = FrameBuilder::tcp(
        sock("198.18.0.2:1"),
        sock("198.18.100.10:80"),
        tcp_flags::SYN,
    )
    .tcp_seq(u32::MAX - 2)
    .payload(b"fast open data")
    .build();
    assert_eq!(segment_of(&syn).seg_len(), 15);
    assert_eq!(tcp_header(&reset_of(&syn)).ack_number(), 12);
    // FIN counts too.
    let syn_fin = FrameBuilder::tcp(
        sock("198.18.0.2:1"),
        sock("198.18.100.10:80"),
        tcp_flags::SYN | tcp_flags::FIN,
    )
    .tcp_seq(100)
    .build();
    assert_eq!(tcp_header(&reset_of(&syn_fin)).ack_number(), 102);
}

#[test]
fn a_segment_with_ack_is_answered_from_its_ack_number() {
    let mut seg = segment_of(
        &FrameBuilder::tcp(
            sock("198.18.0.2:1"),
            sock("198.18.100.10:80"),
            tcp_flags::ACK,
        )
        .build(),
    );
    seg.ack = 0xdead_beef;
    let mut out = [0u8; 128];
    let len = write_reset(&seg, &mut out).unwrap();
    let tcp = tcp_header(&out[..len]);
    assert_eq!(tcp.flags(), tcp_flags::RST);
    assert_eq!(tcp.seq_number(), 0xdead_beef);
    assert_eq!(tcp.ack_number(), 0);
    assert!(frame_checksums_ok(&out[..len]));
}

#[test]
fn vlan_tags_are_kept() {
    let syn = FrameBuilder::tcp(
        sock("198.18.0.2:1"),
        sock("198.18.100.10:80"),
        tcp_flags::SYN,
    )
    .vlan(100)
    .build();
    let rst = reset_of(&syn);
    let meta = parse(&rst).unwrap();
    assert_eq!(meta.vlan_tags, 1);
    assert_eq!(&rst[12..16], &syn[12..16]);
    assert!(frame_checksums_ok(&rst));
}

#[test]
fn a_rst_is_never_answered_and_a_short_buffer_is_refused() {
    let rst = FrameBuilder::tcp(
        sock("198.18.0.2:1"),
        sock("198.18.100.10:80"),
        tcp_flags::RST,
    )
    .build();
    let mut out = [0u8; 128];
    assert_eq!(
        write_reset(&segment_of(&rst), &mut out),
        Err(ResetError::AnswersReset)
    );
    let syn = FrameBuilder::tcp(
        sock("[2001:2::2]:1"),
        sock("[2001:2::10]:80"),
        tcp_flags::SYN,
    )
    .build();
    let mut short = [0u8; 73];
    assert_eq!(
        write_reset(&segment_of(&syn), &mut short),
        Err(ResetError::BufferTooShort { need: 74, have: 73 })
    );
    assert_eq!(
        ResetError::BufferTooShort { need: 74, have: 73 }.to_string(),
        "a 74-byte RST does not fit a 73-byte frame buffer"
    );
}

#[test]
fn only_unfragmented_tcp_is_answered() {
    let udp = FrameBuilder::udp(sock("198.18.0.2:1"), sock("198.18.100.10:53")).build();
    assert_eq!(
        RefusedSegment::from_frame(&udp, &parse(&udp).unwrap()),
        None
    );
    let fragment = FrameBuilder::tcp(
        sock("198.18.0.2:1"),
        sock("198.18.100.10:80"),
        tcp_flags::SYN,
    )
    .fragment(0, true)
    .build();
    assert_eq!(
        RefusedSegment::from_frame(&fragment, &parse(&fragment).unwrap()),
        None
    );
}

#[test]
fn the_reset_may_be_written_over_the_refused_frame() {
    let syn = FrameBuilder::tcp(
        sock("198.18.0.2:40000"),
        sock("198.18.100.10:80"),
        tcp_flags::SYN,
    )
    .tcp_options(&[2, 4, 0x05, 0xb4])
    .build();
    let expected = reset_of(&syn);
    let mut frame = syn.clone();
    let seg = segment_of(&frame);
    let len = write_reset(&seg, &mut frame).unwrap();
    assert_eq!(&frame[..len], &expected[..]);
}

proptest! {
    /// Any SYN: the RST parses, verifies, and mirrors the SYN.
    #[test]
    fn any_syn_gets_a_valid_mirrored_rst(
        v6 in any::<bool>(),
        a in any::<[u8; 16]>(),
        b in any::<[u8; 16]>(),
        sport in 1u16..,
        dport in 1u16..,
        seq in any::<u32>(),
        payload in proptest::collection::vec(any::<u8>(), 0..40),
        vlan in proptest::option::of(1u16..4095),
    ) {
        let (src, dst) = if v6 {
            (SocketAddr::from((a, sport)), SocketAddr::from((b, dport)))
        } else {
            let (a4, b4) = ([a[0], a[1], a[2], a[3]], [b[0], b[1], b[2], b[3]]);
            (SocketAddr::from((a4, sport)), SocketAddr::from((b4, dport)))
        };
        let mut builder = FrameBuilder::tcp(src, dst, tcp_flags::SYN).tcp_seq(seq).payload(&payload);
        if let Some(tci) = vlan {
            builder = builder.vlan(tci);
        }
        let syn = builder.build();
        let rst = reset_of(&syn);
        prop_assert!(frame_checksums_ok(&rst));
        let (m, s) = (parse(&rst).unwrap(), parse(&syn).unwrap());
        prop_assert_eq!(m.tuple.src, s.tuple.dst);
        prop_assert_eq!(m.tuple.dst, s.tuple.src);
        prop_assert_eq!((m.tuple.src_port, m.tuple.dst_port), (dport, sport));
        prop_assert_eq!(m.vlan_tags, s.vlan_tags);
        let tcp = tcp_header(&rst);
        prop_assert_eq!(tcp.ack_number(), seq.wrapping_add(1 + payload.len() as u32));
        prop_assert_eq!(tcp.seq_number(), 0);
    }
}
