//! Property tests across the whole module: the parser against arbitrary
//! and damaged input, the builder against the parser, and incremental
//! rewrites against full recomputation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;

use super::builder::{ExtensionHeader, FrameBuilder};
use super::ethernet::ethertype;
use super::rewrite::{
    decrement_ttl, forward_rewrite_dst, forward_rewrite_src, rewrite_dst, rewrite_src, set_macs,
    EndpointDeltas,
};
use super::{addr_to_bytes, frame_checksums_ok, ip_proto, parse, Fragment, PacketMeta, L3};

/// What a generated frame carries.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Tcp { flags: u8 },
    Udp { zero_checksum: bool },
    IcmpEcho,
}

/// Everything that determines a builder frame, kept so that the same frame
/// can be built again with rewritten fields (the full-recomputation oracle).
#[derive(Clone, Debug)]
struct Spec {
    kind: Kind,
    src: IpAddr,
    dst: IpAddr,
    src_port: u16,
    dst_port: u16,
    vlans: Vec<u16>,
    ttl: u8,
    payload: Vec<u8>,
    ipv4_options: Vec<u8>,
    extension_headers: Vec<ExtensionHeader>,
    fragment: Option<(u16, bool)>,
    tcp_options: Vec<u8>,
    tcp_seq: u32,
}

impl Spec {
    fn builder(&self) -> FrameBuilder {
        let src = SocketAddr::new(self.src, self.src_port);
        let dst = SocketAddr::new(self.dst, self.dst_port);
        let mut b = match self.kind {
            Kind::Tcp { flags } => FrameBuilder::tcp(src, dst, flags)
                .tcp_options(&self.tcp_options)
                .tcp_seq(self.tcp_seq),
            Kind::Udp { zero_checksum } => {
                let b = FrameBuilder::udp(src, dst);
                if zero_checksum {
                    b.udp_zero_checksum()
                } else {
                    b
                }
            }
            Kind::IcmpEcho => FrameBuilder::icmp_echo_request(self.src, self.dst),
        };
        for tci in &self.vlans {
            b = b.vlan(*tci);
        }
        b = b.ttl(self.ttl).payload(&self.payload);
        if self.src.is_ipv4() {
            b = b.ipv4_options(&self.ipv4_options);
        } else {
            b = b.ipv6_extension_headers(&self.extension_headers);
        }
        if let Some((offset, more)) = self.fragment {
            b = b.fragment(offset, more);
        }
        b
    }

    fn build(&self) -> Vec<u8> {
        self.builder().build()
    }

    fn has_ports(&self) -> bool {
        !matches!(self.kind, Kind::IcmpEcho)
    }
}

/// An address from the benchmarking range 198.18.0.0/15.
fn ipv4_addr() -> impl Strategy<Value = Ipv4Addr> {
    (0u8..2, any::<u8>(), any::<u8>()).prop_map(|(a, b, c)| Ipv4Addr::new(198, 18 + a, b, c))
}

/// An address from the benchmarking range 2001:2::/48.
fn ipv6_addr() -> impl Strategy<Value = Ipv6Addr> {
    any::<[u16; 5]>().prop_map(|w| Ipv6Addr::new(0x2001, 2, 0, w[0], w[1], w[2], w[3], w[4]))
}

fn extension_header() -> impl Strategy<Value = ExtensionHeader> {
    prop_oneof![
        (0u8..4).prop_map(ExtensionHeader::HopByHop),
        (0u8..4).prop_map(ExtensionHeader::DestinationOptions),
        (0u8..4).prop_map(ExtensionHeader::Routing),
        Just(ExtensionHeader::Authentication),
    ]
}

fn fragment() -> impl Strategy<Value = Option<(u16, bool)>> {
    prop_oneof![
        6 => Just(None),
        1 => Just(Some((0, true))),
        1 => (1u16..8192, any::<bool>()).prop_map(|(units, more)| Some((units * 8, more))),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        any::<u8>().prop_map(|flags| Kind::Tcp { flags }),
        any::<bool>().prop_map(|zero_checksum| Kind::Udp { zero_checksum }),
        Just(Kind::IcmpEcho),
    ]
}

/// A random well-formed frame description: TCP, UDP or ICMP echo over IPv4
/// or IPv6, with 0–2 VLAN tags, options, extension headers and fragments.
fn spec() -> impl Strategy<Value = Spec> {
    let addrs = prop_oneof![
        (ipv4_addr(), ipv4_addr()).prop_map(|(s, d)| (IpAddr::V4(s), IpAddr::V4(d))),
        (ipv6_addr(), ipv6_addr()).prop_map(|(s, d)| (IpAddr::V6(s), IpAddr::V6(d))),
    ];
    (
        (kind(), addrs, any::<u16>(), any::<u16>()),
        (
            prop::collection::vec(any::<u16>(), 0..=2),
            any::<u8>(),
            prop::collection::vec(any::<u8>(), 0..64),
        ),
        (
            prop::collection::vec(any::<u8>(), 0..=40),
            prop::collection::vec(extension_header(), 0..=4),
            fragment(),
            prop::collection::vec(any::<u8>(), 0..=40),
            any::<u32>(),
        ),
    )
        .prop_map(
            |(
                (kind, (src, dst), src_port, dst_port),
                (vlans, ttl, payload),
                (ipv4_options, extension_headers, fragment, tcp_options, tcp_seq),
            )| {
                // A zero UDP checksum is "none" only over IPv4.
                let kind = match kind {
                    Kind::Udp { .. } if src.is_ipv6() => Kind::Udp {
                        zero_checksum: false,
                    },
                    k => k,
                };
                Spec {
                    kind,
                    src,
                    dst,
                    src_port,
                    dst_port,
                    vlans,
                    ttl,
                    payload,
                    ipv4_options,
                    extension_headers,
                    fragment,
                    tcp_options,
                    tcp_seq,
                }
            },
        )
}

/// A rewrite the pipeline may apply; addresses for both families, the
/// packet's own is used.
#[derive(Clone, Debug)]
enum Op {
    Dst(Ipv4Addr, Ipv6Addr, u16),
    Src(Ipv4Addr, Ipv6Addr, u16),
    DecrementTtl,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (ipv4_addr(), ipv6_addr(), any::<u16>()).prop_map(|(a, b, p)| Op::Dst(a, b, p)),
        (ipv4_addr(), ipv6_addr(), any::<u16>()).prop_map(|(a, b, p)| Op::Src(a, b, p)),
        Just(Op::DecrementTtl),
    ]
}

/// Offsets the parser returns must lie inside the frame, in order.
fn assert_meta_in_bounds(meta: &PacketMeta, frame: &[u8]) {
    assert!(meta.vlan_tags <= 2);
    assert!(meta.l3_offset <= meta.l4_offset);
    assert!(meta.l4_offset <= meta.ip_end);
    assert!(usize::from(meta.ip_end) <= frame.len());
}

/// Parses `frame` and, where it is accepted, runs every consumer of the
/// result over it: none may panic.
fn parse_and_exercise(frame: &mut [u8]) {
    if let Ok(meta) = parse(frame) {
        assert_meta_in_bounds(&meta, frame);
        let _ = frame_checksums_ok(frame);
        set_macs(frame, [0x02, 0, 0, 0, 0, 9], [0x02, 0, 0, 0, 0, 8]);
        decrement_ttl(frame, &meta);
        let v4 = addr_to_bytes(IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)));
        let v6 = addr_to_bytes("2001:2::1".parse().unwrap());
        let addr = if meta.l3 == L3::Ipv4 { v4 } else { v6 };
        rewrite_dst(frame, &meta, &addr, 1);
        rewrite_src(frame, &meta, &addr, 2);
    }
}

/// A frame starting with an Ethernet header whose ethertype the parser
/// follows, then arbitrary bytes: reaches deeper than uniform noise.
fn plausible_frame() -> impl Strategy<Value = Vec<u8>> {
    let ethertypes = prop::sample::select(vec![
        ethertype::IPV4,
        ethertype::IPV6,
        ethertype::ARP,
        ethertype::VLAN,
        ethertype::QINQ,
    ]);
    let first = prop::sample::select(vec![0x45u8, 0x46, 0x4f, 0x60, 0x00]);
    (
        ethertypes,
        first,
        prop::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(ty, first, rest)| {
            let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
            f.extend_from_slice(&ty.to_be_bytes());
            f.push(first);
            f.extend_from_slice(&rest);
            f
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(mut frame in prop::collection::vec(any::<u8>(), 0..2000)) {
        parse_and_exercise(&mut frame);
    }

    #[test]
    fn parse_never_panics_on_noise_behind_a_real_ethertype(mut frame in plausible_frame()) {
        parse_and_exercise(&mut frame);
    }

    #[test]
    fn parse_never_panics_on_truncated_builder_frames(spec in spec(), cut in any::<prop::sample::Index>()) {
        let frame = spec.build();
        let mut short = frame[..cut.index(frame.len() + 1)].to_vec();
        parse_and_exercise(&mut short);
    }

    #[test]
    fn parse_never_panics_on_damaged_builder_frames(
        spec in spec(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..), 1..8),
    ) {
        let mut frame = spec.build();
        for (at, mask) in flips {
            let i = at.index(frame.len());
            frame[i] ^= mask;
        }
        parse_and_exercise(&mut frame);
    }

    #[test]
    fn every_builder_frame_parses_to_its_spec_and_verifies(spec in spec()) {
        let frame = spec.build();
        let meta = parse(&frame).unwrap();
        assert_meta_in_bounds(&meta, &frame);
        prop_assert!(frame_checksums_ok(&frame));
        prop_assert_eq!(usize::from(meta.ip_end), frame.len());
        prop_assert_eq!(usize::from(meta.vlan_tags), spec.vlans.len());
        prop_assert_eq!(meta.l3, if spec.src.is_ipv4() { L3::Ipv4 } else { L3::Ipv6 });
        prop_assert_eq!(meta.tuple.src, addr_to_bytes(spec.src));
        prop_assert_eq!(meta.tuple.dst, addr_to_bytes(spec.dst));
        prop_assert_eq!(meta.ttl, spec.ttl);
        let expected_fragment = match spec.fragment {
            None | Some((0, false)) => Fragment::None,
            Some((0, true)) => Fragment::First,
            Some(_) => Fragment::NonFirst,
        };
        prop_assert_eq!(meta.fragment, expected_fragment);
        let protocol = match (spec.kind, spec.src.is_ipv4()) {
            (Kind::Tcp { .. }, _) => ip_proto::TCP,
            (Kind::Udp { .. }, _) => ip_proto::UDP,
            (Kind::IcmpEcho, true) => ip_proto::ICMP,
            (Kind::IcmpEcho, false) => ip_proto::ICMPV6,
        };
        prop_assert_eq!(meta.tuple.protocol, protocol);
        let ports = if spec.has_ports() && expected_fragment != Fragment::NonFirst {
            (spec.src_port, spec.dst_port)
        } else {
            (0, 0)
        };
        prop_assert_eq!((meta.tuple.src_port, meta.tuple.dst_port), ports);
        if let (Kind::Tcp { flags }, false) = (spec.kind, expected_fragment == Fragment::NonFirst) {
            prop_assert_eq!(meta.tcp_flags, flags);
        }
    }

    /// Incremental patching must give exactly the bytes a full
    /// recomputation gives: the builder, run again with the rewritten
    /// fields, computes every checksum from scratch.
    #[test]
    fn incremental_rewrites_equal_full_recomputation(
        spec in spec(),
        ops in prop::collection::vec(op(), 1..5),
    ) {
        let mut frame = spec.build();
        let meta = parse(&frame).unwrap();
        let mut model = spec.clone();
        for op in &ops {
            match *op {
                Op::Dst(v4, v6, port) => {
                    let addr = if spec.src.is_ipv4() { IpAddr::V4(v4) } else { IpAddr::V6(v6) };
                    rewrite_dst(&mut frame, &meta, &addr_to_bytes(addr), port);
                    model.dst = addr;
                    if model.has_ports() {
                        model.dst_port = port;
                    }
                }
                Op::Src(v4, v6, port) => {
                    let addr = if spec.src.is_ipv4() { IpAddr::V4(v4) } else { IpAddr::V6(v6) };
                    rewrite_src(&mut frame, &meta, &addr_to_bytes(addr), port);
                    model.src = addr;
                    if model.has_ports() {
                        model.src_port = port;
                    }
                }
                Op::DecrementTtl => {
                    decrement_ttl(&mut frame, &meta);
                    model.ttl = model.ttl.saturating_sub(1);
                }
            }
        }
        prop_assert_eq!(&frame, &model.build());
        prop_assert!(frame_checksums_ok(&frame));
    }

    /// Whatever the fixed-offset reading of the common frame accepts, the
    /// general parser reads alike (built frames of every kind, and
    /// plausible noise), and its key read in place hashes as its tuple.
    #[test]
    fn the_plain_ipv4_parse_agrees_with_the_general_one(
        spec in spec(),
        noise in plausible_frame(),
        cut in 0usize..80,
        flip in (0usize..80, any::<u8>()),
    ) {
        let built = spec.build();
        let mut flipped = built.clone();
        if let Some(b) = flipped.get_mut(flip.0) {
            *b ^= flip.1;
        }
        let short = built[..built.len().saturating_sub(cut)].to_vec();
        for frame in [&built, &flipped, &short, &noise] {
            if let Some(meta) = super::parse::parse_plain_ipv4(frame) {
                // Its key read where it lies hashes as its tuple does.
                let (lo, hi) = super::plain_ipv4_key_words(frame).expect("a plain frame's key");
                prop_assert_eq!(
                    crate::hash::table_hash_v4_words(lo, hi),
                    crate::hash::table_hash(&meta.tuple)
                );
                prop_assert_eq!(Ok(meta), super::parse::parse_any(frame));
                // Read again without the checks, it is the same.
                prop_assert!(super::is_plain_ipv4(frame));
                prop_assert_eq!(super::plain_ipv4_meta(frame), Some(meta));
                prop_assert_eq!(super::plain_ipv4_tuple(frame), Some(meta.tuple));
            } else {
                prop_assert!(!super::is_plain_ipv4(frame));
            }
        }
    }

    /// The lane's view of an accepted frame reads what the parse reads,
    /// and forwarding through it, either end, writes the bytes of the
    /// MACs' copy and the general forwarding rewrite; it takes no frame
    /// whose TTL is below 2.
    #[test]
    fn the_plain_view_forwards_as_the_general_rewrite_does(
        mut spec in spec(),
        ttl in prop::sample::select(vec![0u8, 1, 2, 64, 255]),
        v4 in ipv4_addr(),
        port in any::<u16>(),
        macs in any::<[u8; 12]>(),
        check in prop::sample::select(vec![None, Some(0u16), Some(0xffff), Some(0x0100)]),
    ) {
        // The common frame, mostly: untagged IPv4, no options, no fragment.
        spec.ttl = ttl;
        spec.vlans.clear();
        spec.ipv4_options.clear();
        spec.fragment = None;
        if !spec.dst.is_ipv4() {
            spec.src = IpAddr::V4(v4);
            spec.dst = IpAddr::V4(v4);
        }
        let mut frame = spec.build();
        let Some(meta) = super::parse::parse_plain_ipv4(&frame) else {
            return Ok(());
        };
        if let Some(check) = check {
            // A UDP checksum of zero, or odd ones at the arithmetic's edges.
            let at = usize::from(meta.l4_offset) + if meta.tuple.protocol == 17 { 6 } else { 16 };
            frame[at..at + 2].copy_from_slice(&check.to_be_bytes());
        }
        let addr = addr_to_bytes(IpAddr::V4(v4));
        let deltas = EndpointDeltas::v4(&meta.tuple.dst, meta.tuple.dst_port, &addr, port);
        let mut expected = frame.clone();
        let mut reply = frame.clone();
        let destination: [u8; 6] = frame[..6].try_into().unwrap();
        let Some(view) = super::PlainV4Frame::of(&mut frame) else {
            prop_assert!(meta.ttl < 2);
            return Ok(());
        };
        prop_assert!(meta.ttl >= 2);
        prop_assert_eq!(view.tuple(), meta.tuple);
        prop_assert_eq!(view.tcp_flags(), meta.tcp_flags);
        prop_assert_eq!(view.source_mac(), <[u8; 6]>::try_from(&expected[6..12]).unwrap());
        view.forward_dst(&macs, &addr, port, deltas);
        super::rewrite::set_mac_header(&mut expected, &macs);
        let mut reply_expected = expected.clone();
        forward_rewrite_dst(&mut expected, &meta, &addr, port, deltas);
        prop_assert_eq!(frame, expected);
        // The other end: a backend's reply from the VIP.
        let deltas = EndpointDeltas::v4(&meta.tuple.src, meta.tuple.src_port, &addr, port);
        let Some(view) = super::PlainV4Frame::of(&mut reply) else {
            return Err(TestCaseError::fail("the same frame"));
        };
        prop_assert_eq!(view.destination_mac(), destination);
        view.forward_src(&macs, &addr, port, deltas);
        forward_rewrite_src(&mut reply_expected, &meta, &addr, port, deltas);
        prop_assert_eq!(reply, reply_expected);
    }

    /// A forwarding rewrite with the deltas worked out ahead from the
    /// packet's own address and port writes exactly the bytes of the
    /// rewrite and the TTL decrement done one after the other, whatever
    /// the family, protocol, TTL, fragment or checksum (0xFFFF and 0
    /// among them).
    #[test]
    fn forwarding_with_deltas_writes_what_rewrite_and_ttl_write(
        spec in spec(),
        v4 in ipv4_addr(),
        v6 in ipv6_addr(),
        port in any::<u16>(),
        dst_side in any::<bool>(),
        checksums in prop::sample::select(vec![None, Some(0u16), Some(0xffff), Some(0x0100)]),
    ) {
        let mut frame = spec.build();
        let meta = parse(&frame).unwrap();
        if let Some(check) = checksums {
            // Odd checksums (wrong, but forwarded as they are) reach the
            // edges of the ones'-complement arithmetic.
            let at = usize::from(meta.l3_offset) + 10;
            if meta.l3 == L3::Ipv4 {
                frame[at..at + 2].copy_from_slice(&check.to_be_bytes());
            }
        }
        let addr = if spec.src.is_ipv4() { IpAddr::V4(v4) } else { IpAddr::V6(v6) };
        let addr = addr_to_bytes(addr);
        let mut expected = frame.clone();
        if dst_side {
            let deltas = EndpointDeltas::v4(&meta.tuple.dst, meta.tuple.dst_port, &addr, port);
            rewrite_dst(&mut expected, &meta, &addr, port);
            decrement_ttl(&mut expected, &meta);
            forward_rewrite_dst(&mut frame, &meta, &addr, port, deltas);
        } else {
            let deltas = EndpointDeltas::v4(&meta.tuple.src, meta.tuple.src_port, &addr, port);
            rewrite_src(&mut expected, &meta, &addr, port);
            decrement_ttl(&mut expected, &meta);
            forward_rewrite_src(&mut frame, &meta, &addr, port, deltas);
        }
        prop_assert_eq!(&frame, &expected);
    }

    /// Pick the new port that makes the patched UDP checksum come out as
    /// zero: it must be sent as 0xFFFF, as a full computation would be.
    #[test]
    fn a_patched_udp_checksum_of_zero_goes_out_as_all_ones(
        mut spec in spec(),
        dst_side in any::<bool>(),
    ) {
        spec.kind = Kind::Udp { zero_checksum: false };
        spec.fragment = None;
        let mut frame = spec.build();
        let meta = parse(&frame).unwrap();
        let check_at = usize::from(meta.l4_offset) + 6;
        let check = u16::from_be_bytes([frame[check_at], frame[check_at + 1]]);
        let old_port = if dst_side { spec.dst_port } else { spec.src_port };
        // ~(~C + ~p + p') = 0  ⇔  p' ≡ C + p (mod 0xFFFF).
        let sum = u32::from(check) + u32::from(old_port);
        let new_port = ((sum & 0xffff) + (sum >> 16)) as u16;
        prop_assume!(new_port != old_port);
        if dst_side {
            rewrite_dst(&mut frame, &meta, &meta.tuple.dst, new_port);
            spec.dst_port = new_port;
        } else {
            rewrite_src(&mut frame, &meta, &meta.tuple.src, new_port);
            spec.src_port = new_port;
        }
        prop_assert_eq!(&frame[check_at..check_at + 2], &[0xff, 0xff]);
        prop_assert_eq!(&frame, &spec.build());
        prop_assert!(frame_checksums_ok(&frame));
    }
}
