use std::net::{IpAddr, SocketAddr};

use proptest::prelude::*;

use super::*;
use crate::wire::builder::FrameBuilder;
use crate::wire::{addr_to_bytes, frame_checksums_ok, parse, rewrite, tcp_flags};

const ETH: usize = 14;

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The IP packet of `frame` (from the end of its Ethernet header), cut
/// to `keep` bytes.
fn quote(frame: &[u8], keep: usize) -> Vec<u8> {
    let packet = &frame[ETH..];
    packet[..keep.min(packet.len())].to_vec()
}

/// An error from `from` to `to` of (type, code, rest) quoting `quoted`.
fn error(from: &str, to: &str, kind: (u8, u8, u32), quoted: &[u8]) -> Vec<u8> {
    FrameBuilder::icmp_error(ip(from), ip(to), kind.0, kind.1, kind.2)
        .payload(quoted)
        .build()
}

const FRAG_NEEDED: (u8, u8, u32) = (icmpv4_type::DEST_UNREACHABLE, 4, 1400);
const PACKET_TOO_BIG: (u8, u8, u32) = (icmpv6_type::PACKET_TOO_BIG, 0, 1400);

/// Translates an error about a packet to a backend into one about the
/// packet to the VIP: the quote's destination and the outer source.
fn to_client(frame: &mut [u8], vip: &str) {
    let meta = parse(frame).unwrap();
    let quoted = parse_quoted(frame, &meta).unwrap();
    let vip = sock(vip);
    let vip_addr = addr_to_bytes(vip.ip());
    let icmp_at = usize::from(meta.l4_offset);
    rewrite_quoted(
        frame,
        icmp_at,
        &quoted,
        QuotedEnd::Destination,
        &vip_addr,
        vip.port(),
    );
    rewrite::rewrite_src(frame, &meta, &vip_addr, 0);
}

#[test]
fn a_frag_needed_about_a_tcp_segment_to_a_backend_reads_as_one_about_the_segment_to_the_vip() {
    let sent = FrameBuilder::tcp(sock("198.18.0.1:40000"), sock("198.18.1.10:8080"), 0x10)
        .payload(&[7; 100])
        .build();
    let asked = FrameBuilder::tcp(sock("198.18.0.1:40000"), sock("198.18.0.100:80"), 0x10)
        .payload(&[7; 100])
        .build();
    for keep in [28, 36, 38, 40, 60, 140] {
        let mut frame = error(
            "198.18.1.10",
            "198.18.0.1",
            FRAG_NEEDED,
            &quote(&sent, keep),
        );
        let meta = parse(&frame).unwrap();
        let quoted = parse_quoted(&frame, &meta).unwrap();
        assert_eq!(
            quoted.tuple,
            FiveTuple::new(
                ip("198.18.0.1"),
                ip("198.18.1.10"),
                40000,
                8080,
                ip_proto::TCP
            )
        );
        to_client(&mut frame, "198.18.0.100:80");
        let expected = error(
            "198.18.0.100",
            "198.18.0.1",
            FRAG_NEEDED,
            &quote(&asked, keep),
        );
        assert_eq!(frame, expected, "quoting {keep} bytes");
        assert!(frame_checksums_ok(&frame));
    }
}

#[test]
fn a_udp_quote_keeps_a_zero_checksum_and_patches_one_it_carries() {
    for zero in [false, true] {
        let build = |dst: &str| {
            let b = FrameBuilder::udp(sock("198.18.0.1:5353"), sock(dst)).payload(b"query");
            if zero { b.udp_zero_checksum() } else { b }.build()
        };
        let (sent, asked) = (build("198.18.1.10:53"), build("198.18.0.100:53"));
        let unreachable = (icmpv4_type::DEST_UNREACHABLE, 3, 0);
        let mut frame = error("198.18.1.10", "198.18.0.1", unreachable, &quote(&sent, 28));
        to_client(&mut frame, "198.18.0.100:53");
        let expected = error(
            "198.18.0.100",
            "198.18.0.1",
            unreachable,
            &quote(&asked, 28),
        );
        assert_eq!(frame, expected, "zero checksum: {zero}");
    }
}

#[test]
fn a_packet_too_big_about_an_ipv6_segment_reads_as_one_about_the_segment_to_the_vip() {
    let sent = FrameBuilder::tcp(
        sock("[2001:2:0:1::1]:40000"),
        sock("[2001:2:0:2::10]:8080"),
        tcp_flags::ACK,
    )
    .payload(&[9; 1300])
    .build();
    let asked = FrameBuilder::tcp(
        sock("[2001:2:0:1::1]:40000"),
        sock("[2001:2:0:1::100]:80"),
        tcp_flags::ACK,
    )
    .payload(&[9; 1300])
    .build();
    for keep in [48, 58, 60, 1232] {
        let mut frame = error(
            "2001:2:0:2::10",
            "2001:2:0:1::1",
            PACKET_TOO_BIG,
            &quote(&sent, keep),
        );
        to_client(&mut frame, "[2001:2:0:1::100]:80");
        let expected = error(
            "2001:2:0:1::100",
            "2001:2:0:1::1",
            PACKET_TOO_BIG,
            &quote(&asked, keep),
        );
        assert_eq!(frame, expected, "quoting {keep} bytes");
        assert!(frame_checksums_ok(&frame));
    }
}

#[test]
fn an_error_about_a_reply_reads_as_one_about_the_backends_reply() {
    // The client's side reports a reply from the VIP; the backend must
    // hear of its own reply: the quote's source, the outer destination.
    let sent = FrameBuilder::udp(sock("198.18.0.100:53"), sock("198.18.0.1:5353"))
        .payload(b"answer")
        .build();
    let backends = FrameBuilder::udp(sock("198.18.1.10:5300"), sock("198.18.0.1:5353"))
        .payload(b"answer")
        .build();
    let unreachable = (icmpv4_type::DEST_UNREACHABLE, 3, 0);
    let mut frame = error(
        "198.18.0.1",
        "198.18.0.100",
        unreachable,
        &quote(&sent, 200),
    );
    let meta = parse(&frame).unwrap();
    let quoted = parse_quoted(&frame, &meta).unwrap();
    let backend = addr_to_bytes(ip("198.18.1.10"));
    let at = usize::from(meta.l4_offset);
    rewrite_quoted(&mut frame, at, &quoted, QuotedEnd::Source, &backend, 5300);
    rewrite::rewrite_dst(&mut frame, &meta, &backend, 0);
    let expected = error(
        "198.18.0.1",
        "198.18.1.10",
        unreachable,
        &quote(&backends, 200),
    );
    assert_eq!(frame, expected);
}

#[test]
fn what_is_not_a_translated_error_or_quotes_too_little_has_no_quote() {
    let sent = FrameBuilder::tcp(sock("198.18.0.1:40000"), sock("198.18.1.10:8080"), 0x10).build();
    let cases = [
        // An echo request is no error.
        FrameBuilder::icmp_echo_request(ip("198.18.0.1"), ip("198.18.1.10")).build(),
        // A redirect (5) is not translated.
        error("198.18.1.10", "198.18.0.1", (5, 0, 0), &quote(&sent, 40)),
        // Three bytes of ports.
        error("198.18.1.10", "198.18.0.1", FRAG_NEEDED, &quote(&sent, 23)),
        // The quoted header cut short.
        error("198.18.1.10", "198.18.0.1", FRAG_NEEDED, &quote(&sent, 19)),
        // An ICMP packet quoted.
        error(
            "198.18.1.10",
            "198.18.0.1",
            FRAG_NEEDED,
            &FrameBuilder::icmp_echo_request(ip("198.18.0.1"), ip("198.18.1.10")).build()[ETH..],
        ),
        // A later fragment quoted: no ports.
        error(
            "198.18.1.10",
            "198.18.0.1",
            FRAG_NEEDED,
            &quote(
                &FrameBuilder::udp(sock("198.18.0.1:1"), sock("198.18.1.10:2"))
                    .payload(&[0; 64])
                    .fragment(8, false)
                    .build(),
                40,
            ),
        ),
        // An IPv6 packet quoted in ICMPv4.
        error(
            "198.18.1.10",
            "198.18.0.1",
            FRAG_NEEDED,
            &quote(
                &FrameBuilder::tcp(sock("[2001:2::1]:1"), sock("[2001:2::2]:2"), 0).build(),
                60,
            ),
        ),
    ];
    for (i, frame) in cases.iter().enumerate() {
        let meta = parse(frame).unwrap();
        assert_eq!(parse_quoted(frame, &meta), None, "case {i}");
    }
}

fn any_error() -> impl Strategy<Value = (bool, u8, u8)> {
    (
        any::<bool>(),
        prop_oneof![Just(1u8), Just(2), Just(3), Just(11), any::<u8>()],
        any::<u8>(),
    )
}

proptest! {
    /// Any quote, truncated anywhere, with any rewrite: nothing panics,
    /// and a frame whose checksums were right still has them right.
    #[test]
    fn any_quote_is_read_and_rewritten_without_panic_and_keeps_checksums_right(
        (v6, msg_type, code) in any_error(),
        head in prop::collection::vec(any::<u8>(), 0..80),
        inner_is_tcp in any::<bool>(),
        keep in 0usize..200,
        cut in 0usize..300,
        new_addr in any::<[u8; 4]>(),
        new_port in any::<u16>(),
        source in any::<bool>(),
    ) {
        // A plausible quoted packet with random bytes over part of it.
        let inner = if inner_is_tcp {
            FrameBuilder::tcp(sock("198.18.0.1:40000"), sock("198.18.1.10:8080"), 0x10)
        } else {
            FrameBuilder::udp(sock("198.18.0.1:40000"), sock("198.18.1.10:8080"))
        };
        let inner = if v6 {
            if inner_is_tcp {
                FrameBuilder::tcp(sock("[2001:2::1]:40000"), sock("[2001:2::10]:8080"), 0x10)
            } else {
                FrameBuilder::udp(sock("[2001:2::1]:40000"), sock("[2001:2::10]:8080"))
            }
        } else {
            inner
        };
        let mut quoted = quote(&inner.payload(&[3; 120]).build(), keep);
        for (i, b) in head.iter().enumerate() {
            if let Some(q) = quoted.get_mut(i * 3 % 200) {
                *q = *b;
            }
        }
        let (from, to) = if v6 { ("2001:2::10", "2001:2::1") } else { ("198.18.1.10", "198.18.0.1") };
        let mut frame = error(from, to, (msg_type, code, 0), &quoted);
        let whole_ok = frame_checksums_ok(&frame);
        let Ok(meta) = parse(&frame) else { return Ok(()); };
        if let Some(q) = parse_quoted(&frame, &meta) {
            let addr = if v6 {
                let mut a = [0x20, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                a[12..].copy_from_slice(&new_addr);
                a
            } else {
                v4_mapped(new_addr)
            };
            let end = if source { QuotedEnd::Source } else { QuotedEnd::Destination };
            rewrite_quoted(&mut frame, usize::from(meta.l4_offset), &q, end, &addr, new_port);
            prop_assert_eq!(frame_checksums_ok(&frame), whole_ok);
        }
        // Cut anywhere: the parse and the rewrite still never panic.
        frame.truncate(cut.min(frame.len()));
        if let Ok(meta) = parse(&frame) {
            if let Some(q) = parse_quoted(&frame, &meta) {
                let end = if source { QuotedEnd::Source } else { QuotedEnd::Destination };
                rewrite_quoted(&mut frame, usize::from(meta.l4_offset), &q, end, &[0; 16], new_port);
            }
        }
    }

    /// Arbitrary bytes as a frame: never a panic.
    #[test]
    fn arbitrary_frames_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut frame = bytes;
        if let Ok(meta) = parse(&frame) {
            if let Some(q) = parse_quoted(&frame, &meta) {
                let at = usize::from(meta.l4_offset);
                rewrite_quoted(&mut frame, at, &q, QuotedEnd::Source, &[1; 16], 1);
                // A meta that lies about the offsets does no harm either.
                rewrite_quoted(&mut frame, usize::MAX - 1, &q, QuotedEnd::Destination, &[1; 16], 1);
            }
        }
    }
}
