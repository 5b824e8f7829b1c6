//! Golden fixtures of what the NAT translates besides a connection's own
//! packets: ICMP errors about a connection, both ways and both families,
//! and a backend's reply with no connection (tests/golden.rs runs them
//! with its other fixtures: through the pipeline, pcap replay and the XDP
//! program, with scapy's frames for the steps marked independent).

use super::*;
use flowgate_dataplane::wire::icmp::{icmpv4_type, icmpv6_type};

/// IPv4 destination unreachable, fragmentation needed, next-hop MTU 1400.
const FRAG_NEEDED: (u8, u8, u32) = (icmpv4_type::DEST_UNREACHABLE, 4, 1400);
/// IPv4 time exceeded in transit.
const TIME_EXCEEDED: (u8, u8, u32) = (icmpv4_type::TIME_EXCEEDED, 0, 0);
/// ICMPv6 packet too big, MTU 1400.
const PACKET_TOO_BIG: (u8, u8, u32) = (icmpv6_type::PACKET_TOO_BIG, 0, 1400);
/// ICMPv6 destination unreachable, port unreachable.
const PORT_UNREACHABLE6: (u8, u8, u32) = (icmpv6_type::DEST_UNREACHABLE, 4, 0);

/// The IP packet of `b`'s frame, cut to its first `keep` bytes: what an
/// ICMP error quotes.
fn quote(b: FrameBuilder, keep: usize) -> Vec<u8> {
    b.build().into_iter().skip(14).take(keep).collect()
}

/// An ICMP error from `from` to `to` of (type, code, rest) quoting `quoted`.
fn error(from: &str, to: &str, kind: (u8, u8, u32), quoted: &[u8]) -> FrameBuilder {
    FrameBuilder::icmp_error(
        from.parse().unwrap(),
        to.parse().unwrap(),
        kind.0,
        kind.1,
        kind.2,
    )
    .payload(quoted)
}

/// From the backend side (port 1), by its MAC.
fn on_backend_side(b: FrameBuilder) -> FrameBuilder {
    b.macs(BACKEND1_MAC, GW_BACKEND_MAC).ttl(64)
}

/// To the client, as the connection's replies go.
fn to_the_client(b: FrameBuilder) -> FrameBuilder {
    b.macs(GW_CLIENT_MAC, CLIENT_MAC).ttl(63)
}

/// To backend 1.
fn to_backend1(b: FrameBuilder) -> FrameBuilder {
    b.macs(GW_BACKEND_MAC, BACKEND1_MAC).ttl(63)
}

// A table, one fixture per entry: it reads as a list, however long.
#[allow(clippy::too_many_lines)]
pub fn fixtures() -> Vec<Fixture> {
    let mut f = Vec::new();

    // IPv4: a router on the backend side cannot forward a segment the
    // gateway sent to the backend (fragmentation needed); a router on the
    // client side lets a reply's TTL run out. Each hears of its VIP.
    let client = "198.18.0.2:40010";
    let (syn_in, syn_out) = tcp_pair(client, "198.18.100.10:80", "198.18.1.11:8080", SYN);
    let sent = FrameBuilder::tcp(sa(client), sa("198.18.1.11:8080"), ACK)
        .ttl(63)
        .payload(&[0x42; 1400]);
    let asked = FrameBuilder::tcp(sa(client), sa("198.18.100.10:80"), ACK)
        .ttl(63)
        .payload(&[0x42; 1400]);
    let reply = FrameBuilder::tcp(sa("198.18.100.10:80"), sa(client), SYN_ACK).ttl(62);
    let backends_reply = FrameBuilder::tcp(sa("198.18.1.11:8080"), sa(client), SYN_ACK).ttl(62);
    f.push(Fixture {
        name: "icmp errors about an ipv4 connection are translated both ways",
        steps: vec![
            forwarded("client SYN", syn_in, 0, 1, syn_out),
            forwarded(
                "fragmentation needed from the backend side reaches the client about its VIP",
                on_backend_side(error(
                    "198.18.1.1",
                    "198.18.0.2",
                    FRAG_NEEDED,
                    &quote(sent.clone(), 576 - 28),
                )),
                1,
                0,
                to_the_client(error(
                    "198.18.100.10",
                    "198.18.0.2",
                    FRAG_NEEDED,
                    &quote(asked.clone(), 576 - 28),
                )),
            )
            .independent("ipv4_frag_needed_to_client"),
            forwarded(
                "a quote cut to 8 bytes of TCP is translated as far as it goes",
                on_backend_side(error(
                    "198.18.1.1",
                    "198.18.0.2",
                    TIME_EXCEEDED,
                    &quote(sent, 28),
                )),
                1,
                0,
                to_the_client(error(
                    "198.18.100.10",
                    "198.18.0.2",
                    TIME_EXCEEDED,
                    &quote(asked, 28),
                )),
            )
            .independent("ipv4_time_exceeded_short_quote_to_client"),
            forwarded(
                "time exceeded from the client side reaches the backend about its reply",
                from_client(error(
                    "198.18.0.254",
                    "198.18.100.10",
                    TIME_EXCEEDED,
                    &quote(reply, 40),
                ))
                .ttl(64),
                0,
                1,
                to_backend1(error(
                    "198.18.0.254",
                    "198.18.1.11",
                    TIME_EXCEEDED,
                    &quote(backends_reply, 40),
                )),
            )
            .independent("ipv4_time_exceeded_to_backend"),
        ],
    });

    // IPv6: packet too big from the backend side (path-MTU discovery), and
    // port unreachable from the client about a UDP answer.
    let client = "[2001:2::2]:40010";
    let (syn_in, syn_out) = tcp_pair(
        client,
        "[2001:2:0:100::10]:80",
        "[2001:2:0:1::11]:8080",
        SYN,
    );
    let sent = FrameBuilder::tcp(sa(client), sa("[2001:2:0:1::11]:8080"), ACK)
        .ttl(63)
        .payload(&[0x42; 1400]);
    let asked = FrameBuilder::tcp(sa(client), sa("[2001:2:0:100::10]:80"), ACK)
        .ttl(63)
        .payload(&[0x42; 1400]);
    let (q_in, q_out) = udp_pair(
        "[2001:2::2]:5010",
        "[2001:2:0:100::10]:53",
        "[2001:2:0:1::11]:5353",
    );
    let answer = FrameBuilder::udp(sa("[2001:2:0:100::10]:53"), sa("[2001:2::2]:5010"))
        .ttl(63)
        .payload(b"answer");
    let backends_answer = FrameBuilder::udp(sa("[2001:2:0:1::11]:5353"), sa("[2001:2::2]:5010"))
        .ttl(63)
        .payload(b"answer");
    f.push(Fixture {
        name: "icmpv6 errors about a connection are translated both ways",
        steps: vec![
            forwarded("client SYN", syn_in, 0, 1, syn_out),
            forwarded(
                "packet too big from the backend side reaches the client about its VIP",
                on_backend_side(error(
                    "2001:2:0:1::1",
                    "2001:2::2",
                    PACKET_TOO_BIG,
                    &quote(sent, 1280 - 48),
                )),
                1,
                0,
                to_the_client(error(
                    "2001:2:0:100::10",
                    "2001:2::2",
                    PACKET_TOO_BIG,
                    &quote(asked, 1280 - 48),
                )),
            )
            .independent("ipv6_packet_too_big_to_client"),
            forwarded("query", q_in.payload(b"q"), 0, 1, q_out.payload(b"q")),
            forwarded(
                "port unreachable from the client reaches the backend about its answer",
                from_client(error(
                    "2001:2::2",
                    "2001:2:0:100::10",
                    PORT_UNREACHABLE6,
                    &quote(answer, 200),
                ))
                .ttl(64),
                0,
                1,
                to_backend1(error(
                    "2001:2::2",
                    "2001:2:0:1::11",
                    PORT_UNREACHABLE6,
                    &quote(backends_answer, 200),
                )),
            )
            .independent("ipv6_port_unreachable_to_backend"),
        ],
    });

    // Errors about the gateway's traffic with no connection are dropped;
    // errors about anything else are the kernel's.
    let stray = FrameBuilder::tcp(sa("198.18.0.9:1000"), sa("198.18.1.11:8080"), ACK).ttl(63);
    let stray_reply = FrameBuilder::udp(sa("198.18.100.10:53"), sa("198.18.0.9:1000")).ttl(63);
    let elsewhere = FrameBuilder::tcp(sa("198.18.0.9:1000"), sa("198.18.0.50:22"), ACK);
    f.push(Fixture {
        name: "icmp errors about no connection",
        steps: vec![
            step(
                "about a packet to a backend",
                on_backend_side(error(
                    "198.18.1.1",
                    "198.18.0.9",
                    FRAG_NEEDED,
                    &quote(stray, 48),
                )),
                1,
                Verdict::Drop(DropReason::UnknownIcmpError),
            ),
            step(
                "about a reply from a VIP",
                from_client(error(
                    "198.18.0.9",
                    "198.18.100.10",
                    (icmpv4_type::DEST_UNREACHABLE, 3, 0),
                    &quote(stray_reply, 48),
                )),
                0,
                Verdict::Drop(DropReason::UnknownIcmpError),
            ),
            step(
                "about another host's traffic",
                from_client(error(
                    "198.18.0.50",
                    "198.18.0.9",
                    FRAG_NEEDED,
                    &quote(elsewhere, 48),
                )),
                0,
                Verdict::Pass,
            ),
        ],
    });

    // A backend's reply with no connection (evicted, or made by another
    // gateway): back from the VIP where one service has the backend, to
    // the client's neighbour; dropped where the backend is shared, or the
    // way to the client is unknown.
    f.push(Fixture {
        name: "a backend's reply with no connection",
        steps: vec![
            forwarded(
                "from a backend one service has: from its VIP, without state",
                FrameBuilder::tcp(sa("198.18.1.11:8080"), sa("198.18.0.3:40020"), SYN_ACK)
                    .macs(BACKEND1_MAC, GW_BACKEND_MAC)
                    .ttl(64),
                1,
                0,
                FrameBuilder::tcp(sa("198.18.100.10:80"), sa("198.18.0.3:40020"), SYN_ACK)
                    .macs(GW_CLIENT_MAC, CLIENT_MAC)
                    .ttl(63),
            )
            .independent("ipv4_stateless_reply"),
            forwarded(
                "over ipv6 and udp",
                FrameBuilder::udp(sa("[2001:2:0:1::11]:5353"), sa("[2001:2::3]:5000"))
                    .macs(BACKEND1_MAC, GW_BACKEND_MAC)
                    .ttl(64)
                    .payload(b"late"),
                1,
                0,
                FrameBuilder::udp(sa("[2001:2:0:100::10]:53"), sa("[2001:2::3]:5000"))
                    .macs(GW_CLIENT_MAC, CLIENT_MAC)
                    .ttl(63)
                    .payload(b"late"),
            )
            .independent("ipv6_stateless_reply"),
            step(
                "from a backend two services share",
                FrameBuilder::tcp(sa("198.18.1.12:8080"), sa("198.18.0.3:40021"), ACK)
                    .macs(BACKEND2_MAC, GW_BACKEND_MAC),
                1,
                Verdict::Drop(DropReason::UnknownReply),
            ),
            step(
                "to a client with no neighbour entry",
                FrameBuilder::tcp(sa("198.18.1.11:8080"), sa("198.18.0.4:40022"), ACK)
                    .macs(BACKEND1_MAC, GW_BACKEND_MAC),
                1,
                Verdict::Drop(DropReason::NoNeighbour),
            ),
        ],
    });

    f
}
