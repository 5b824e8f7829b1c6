//! The XDP program's answers for announced VIPs (bpf/flowgate_announce.h),
//! run through BPF_PROG_TEST_RUN as tests/golden.rs runs the rest of the
//! program: each request in, the exact reply frame out, built here by hand
//! (every field written out, the ICMPv6 checksum computed in full), and
//! what must not be answered passed to the kernel untouched.
//!
//! Needs root (loading a BPF program).

use flowgate_dataplane::fastpath::CacheGeometry;
use flowgate_dataplane::xdp::test_run::action;
use flowgate_dataplane::xdp::{OwnedTraffic, XdpTester};

const GW_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x01];
const CLIENT_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x02];
const VIP4: [u8; 4] = [198, 18, 0, 50];
const CLIENT4: [u8; 4] = [198, 18, 0, 2];
const OTHER4: [u8; 4] = [198, 18, 0, 51];
/// 2001:2::50 and the client 2001:2::2.
const VIP6: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x50];
const CLIENT6: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02];

fn mapped(v4: [u8; 4]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[10] = 0xff;
    a[11] = 0xff;
    a[12..].copy_from_slice(&v4);
    a
}

/// The program with 198.18.0.50 and 2001:2::50 announced, answering with
/// `GW_MAC`.
fn tester() -> XdpTester {
    let mut x =
        XdpTester::load(CacheGeometry::new(1, 1024)).expect("loading the XDP program (needs root)");
    let owned = OwnedTraffic {
        announced: [mapped(VIP4), VIP6].into(),
        ..OwnedTraffic::default()
    };
    x.own(&owned).unwrap();
    x.set_announce_mac(GW_MAC).unwrap();
    x
}

/// An Ethernet header, with `vlans` 802.1Q tags.
fn ethernet(dst: [u8; 6], src: [u8; 6], vlans: &[u16], ethertype: u16) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    for &vid in vlans {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// An ARP packet (Ethernet, IPv4).
#[allow(clippy::too_many_arguments)]
fn arp(
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    vlans: &[u16],
    op: u16,
    sha: [u8; 6],
    spa: [u8; 4],
    tha: [u8; 6],
    tpa: [u8; 4],
) -> Vec<u8> {
    let mut f = ethernet(eth_dst, eth_src, vlans, 0x0806);
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa);
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa);
    f
}

/// The Internet checksum of `bytes`, in full.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in bytes.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMPv6 packet in IPv6 in Ethernet, its checksum computed over the
/// pseudo-header.
fn icmpv6(
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    src: [u8; 16],
    dst: [u8; 16],
    hop_limit: u8,
    mut message: Vec<u8>,
) -> Vec<u8> {
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&(message.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(&message);
    let sum = checksum(&pseudo);
    message[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut f = ethernet(eth_dst, eth_src, &[], 0x86dd);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(message.len() as u16).to_be_bytes());
    f.push(58);
    f.push(hop_limit);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&message);
    f
}

/// A neighbour solicitation for `target`, with a source link-layer
/// address option or none.
fn solicitation(target: [u8; 16], with_option: bool) -> Vec<u8> {
    let mut m = vec![135, 0, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&target);
    if with_option {
        m.extend_from_slice(&[1, 1]);
        m.extend_from_slice(&CLIENT_MAC);
    }
    m
}

/// The solicited-node multicast address of `target`, and its MAC.
fn solicited_node(target: [u8; 16]) -> ([u8; 16], [u8; 6]) {
    let mut a = [0u8; 16];
    a[0] = 0xff;
    a[1] = 0x02;
    a[11] = 0x01;
    a[12] = 0xff;
    a[13..].copy_from_slice(&target[13..]);
    (a, [0x33, 0x33, 0xff, target[13], target[14], target[15]])
}

/// The advertisement the program must send: solicited, override, the
/// target link-layer address option with the gateway's MAC.
fn advertisement(target: [u8; 16], to: [u8; 16]) -> Vec<u8> {
    let mut m = vec![136, 0, 0, 0, 0x60, 0, 0, 0];
    m.extend_from_slice(&target);
    m.extend_from_slice(&[2, 1]);
    m.extend_from_slice(&GW_MAC);
    icmpv6(CLIENT_MAC, GW_MAC, target, to, 255, m)
}

#[test]
fn an_arp_request_for_an_announced_vip_becomes_its_reply() {
    let x = tester();
    let request = arp(
        [0xff; 6],
        CLIENT_MAC,
        &[],
        1,
        CLIENT_MAC,
        CLIENT4,
        [0; 6],
        VIP4,
    );
    let run = x.run(&request).unwrap();
    assert_eq!(run.action, action::TX);
    let reply = arp(
        CLIENT_MAC,
        GW_MAC,
        &[],
        2,
        GW_MAC,
        VIP4,
        CLIENT_MAC,
        CLIENT4,
    );
    assert_eq!(run.frame, reply);
    assert_eq!(x.counters().answered_arp, 1);

    // A client refreshing its entry asks by unicast: the same reply.
    let unicast = arp(
        GW_MAC,
        CLIENT_MAC,
        &[],
        1,
        CLIENT_MAC,
        CLIENT4,
        GW_MAC,
        VIP4,
    );
    let run = x.run(&unicast).unwrap();
    assert_eq!((run.action, run.frame), (action::TX, reply));

    // Behind two VLAN tags, which the reply keeps.
    let tagged = arp(
        [0xff; 6],
        CLIENT_MAC,
        &[100, 7],
        1,
        CLIENT_MAC,
        CLIENT4,
        [0; 6],
        VIP4,
    );
    let run = x.run(&tagged).unwrap();
    assert_eq!(run.action, action::TX);
    assert_eq!(
        run.frame,
        arp(
            CLIENT_MAC,
            GW_MAC,
            &[100, 7],
            2,
            GW_MAC,
            VIP4,
            CLIENT_MAC,
            CLIENT4
        )
    );
    assert_eq!(x.counters().answered_arp, 3);
}

#[test]
fn arp_that_is_not_a_question_for_an_announced_vip_passes_untouched() {
    let x = tester();
    let cases = [
        (
            "another address",
            arp(
                [0xff; 6],
                CLIENT_MAC,
                &[],
                1,
                CLIENT_MAC,
                CLIENT4,
                [0; 6],
                OTHER4,
            ),
        ),
        (
            "a reply",
            arp(
                GW_MAC,
                CLIENT_MAC,
                &[],
                2,
                CLIENT_MAC,
                CLIENT4,
                GW_MAC,
                VIP4,
            ),
        ),
        (
            "another host announcing the VIP (gratuitous ARP)",
            arp(
                [0xff; 6],
                CLIENT_MAC,
                &[],
                1,
                CLIENT_MAC,
                VIP4,
                [0; 6],
                VIP4,
            ),
        ),
        ("truncated", {
            let mut f = arp(
                [0xff; 6],
                CLIENT_MAC,
                &[],
                1,
                CLIENT_MAC,
                CLIENT4,
                [0; 6],
                VIP4,
            );
            f.truncate(f.len() - 1);
            f
        }),
    ];
    for (what, frame) in cases {
        let run = x.run(&frame).unwrap();
        assert_eq!(run.action, action::PASS, "{what}");
        assert_eq!(run.frame, frame, "{what}");
    }
    assert_eq!(x.counters().answered_arp, 0);
    assert_eq!(x.counters().passed_not_ip, 4);
}

#[test]
fn a_neighbour_solicitation_for_an_announced_vip_becomes_a_solicited_advertisement() {
    let x = tester();
    let (group, group_mac) = solicited_node(VIP6);
    // To the solicited-node multicast address, with the usual option:
    // the advertisement is as long as the solicitation.
    let ns = icmpv6(
        group_mac,
        CLIENT_MAC,
        CLIENT6,
        group,
        255,
        solicitation(VIP6, true),
    );
    let run = x.run(&ns).unwrap();
    assert_eq!(run.action, action::TX);
    let expected = advertisement(VIP6, CLIENT6);
    assert_eq!(run.frame, expected);
    assert_eq!(run.frame.len(), ns.len());
    // The checksum verifies as a receiver checks it: the sum over the
    // pseudo-header and message is zero.
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&run.frame[22..54]);
    pseudo.extend_from_slice(&32u32.to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(&run.frame[54..]);
    assert_eq!(checksum(&pseudo), 0);

    // To the VIP itself (a client checking reachability), without the
    // option: the frame grows by the option the advertisement carries.
    let ns = icmpv6(
        GW_MAC,
        CLIENT_MAC,
        CLIENT6,
        VIP6,
        255,
        solicitation(VIP6, false),
    );
    let run = x.run(&ns).unwrap();
    assert_eq!(run.action, action::TX);
    assert_eq!(run.frame, expected);
    assert_eq!(x.counters().answered_ns, 2);
}

#[test]
fn neighbour_discovery_that_is_not_a_solicitation_for_an_announced_vip_passes_untouched() {
    let x = tester();
    let (group, group_mac) = solicited_node(VIP6);
    let mut other = VIP6;
    other[15] = 0x51;
    let (other_group, other_mac) = solicited_node(other);
    let mut wrong_group = group;
    wrong_group[5] = 1;
    let cases = [
        (
            "another target",
            icmpv6(
                other_mac,
                CLIENT_MAC,
                CLIENT6,
                other_group,
                255,
                solicitation(other, true),
            ),
        ),
        (
            "hop limit below 255 (routed from elsewhere)",
            icmpv6(
                group_mac,
                CLIENT_MAC,
                CLIENT6,
                group,
                64,
                solicitation(VIP6, true),
            ),
        ),
        (
            "duplicate address detection (from ::)",
            icmpv6(
                group_mac,
                CLIENT_MAC,
                [0; 16],
                group,
                255,
                solicitation(VIP6, false),
            ),
        ),
        (
            "to a multicast group that is not the target's",
            icmpv6(
                group_mac,
                CLIENT_MAC,
                CLIENT6,
                wrong_group,
                255,
                solicitation(VIP6, true),
            ),
        ),
        (
            "an advertisement",
            icmpv6(GW_MAC, CLIENT_MAC, CLIENT6, VIP6, 255, {
                let mut m = solicitation(VIP6, true);
                m[0] = 136;
                m
            }),
        ),
    ];
    for (what, frame) in cases {
        let run = x.run(&frame).unwrap();
        assert_eq!(run.action, action::PASS, "{what}");
        assert_eq!(run.frame, frame, "{what}");
    }
    assert_eq!(x.counters().answered_ns, 0);
}

#[test]
fn a_vip_no_longer_announced_and_a_program_without_a_mac_answer_nothing() {
    let mut x = tester();
    let request = arp(
        [0xff; 6],
        CLIENT_MAC,
        &[],
        1,
        CLIENT_MAC,
        CLIENT4,
        [0; 6],
        VIP4,
    );
    let (group, group_mac) = solicited_node(VIP6);
    let ns = icmpv6(
        group_mac,
        CLIENT_MAC,
        CLIENT6,
        group,
        255,
        solicitation(VIP6, true),
    );
    assert_eq!(x.run(&request).unwrap().action, action::TX);
    assert_eq!(x.run(&ns).unwrap().action, action::TX);

    // No MAC to answer with: nothing is answered.
    x.set_announce_mac([0; 6]).unwrap();
    assert_eq!(x.run(&request).unwrap().action, action::PASS);
    assert_eq!(x.run(&ns).unwrap().action, action::PASS);
    x.set_announce_mac(GW_MAC).unwrap();

    x.remove_announced(mapped(VIP4)).unwrap();
    x.remove_announced(VIP6).unwrap();
    let run = x.run(&request).unwrap();
    assert_eq!((run.action, run.frame), (action::PASS, request));
    let run = x.run(&ns).unwrap();
    assert_eq!((run.action, run.frame), (action::PASS, ns));
}
