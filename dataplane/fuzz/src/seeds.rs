//! Seed inputs for both targets, made with the wire builder: valid frames
//! of every kind the parser knows, and scripts of whole connections for
//! the pipeline. Generated at run time (`cargo run --example seeds`), never
//! committed.

use std::net::{IpAddr, SocketAddr};

use flowgate_dataplane::flow::FlowTable;
use flowgate_dataplane::pipeline::{Pipeline, Verdict};
use flowgate_dataplane::wire::builder::{ExtensionHeader, FrameBuilder};
use flowgate_dataplane::wire::{self, tcp_flags};

use crate::fixture::{Fixture, CLIENT_MAC, FLOW_CAPACITY, GW_BACKEND_MAC, GW_CLIENT_MAC};
use crate::script::{encode, Step};

/// The client of every seed connection (IPv4).
const CLIENT4: &str = "198.18.0.2";
/// The client of every seed connection (IPv6).
const CLIENT6: &str = "2001:2::2";

fn sock(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("a seed address"), port)
}

fn ip(ip: &str) -> IpAddr {
    ip.parse().expect("a seed address")
}

/// A frame from the client towards the gateway.
fn from_client(builder: FrameBuilder) -> FrameBuilder {
    builder.macs(CLIENT_MAC, GW_CLIENT_MAC)
}

/// A client TCP segment to `vip:port` from source port `sport`.
fn tcp(v6: bool, vip: &str, port: u16, sport: u16, flags: u8) -> FrameBuilder {
    let client = if v6 { CLIENT6 } else { CLIENT4 };
    from_client(FrameBuilder::tcp(
        sock(client, sport),
        sock(vip, port),
        flags,
    ))
}

/// A client UDP datagram to `vip:port` from source port `sport`.
fn udp(v6: bool, vip: &str, port: u16, sport: u16) -> FrameBuilder {
    let client = if v6 { CLIENT6 } else { CLIENT4 };
    from_client(FrameBuilder::udp(sock(client, sport), sock(vip, port)))
}

const VIP4: &str = "198.18.100.10";
const VIP4_WRR: &str = "198.18.100.11";
const VIP4_NTP: &str = "198.18.100.12";
const VIP6: &str = "2001:2:0:100::10";
const VIP6_SSH: &str = "2001:2:0:100::11";

/// Single frames, named: the `parse` corpus, and the client side of the
/// pipeline scripts.
pub fn frames() -> Vec<(String, Vec<u8>)> {
    let mut list = ipv4_frames();
    list.extend(ipv6_frames());
    list.extend(other_frames());
    list.into_iter()
        .map(|(name, builder)| (name.to_string(), builder.build()))
        .collect()
}

/// TCP and UDP over IPv4: services, VLAN tags, IP options, fragments.
fn ipv4_frames() -> Vec<(&'static str, FrameBuilder)> {
    use tcp_flags::{ACK, FIN, PSH, RST, SYN};
    let mss_ws_sack = [2, 4, 0x05, 0xb4, 3, 3, 7, 4, 2, 1];
    vec![
        ("tcp4-syn-web", tcp(false, VIP4, 80, 40000, SYN)),
        (
            "tcp4-syn-options-web",
            tcp(false, VIP4, 80, 40001, SYN).tcp_options(&mss_ws_sack),
        ),
        (
            "tcp4-ack-web",
            tcp(false, VIP4, 80, 40002, ACK).payload(b"GET / HTTP/1.1\r\n\r\n"),
        ),
        ("tcp4-fin-web", tcp(false, VIP4, 80, 40003, FIN | ACK)),
        ("tcp4-rst-web", tcp(false, VIP4, 80, 40004, RST)),
        ("tcp4-syn-wrr", tcp(false, VIP4_WRR, 80, 40005, SYN)),
        (
            "tcp4-ack-wrr",
            tcp(false, VIP4_WRR, 80, 40006, ACK | PSH).payload(b"x"),
        ),
        ("tcp4-syn-ttl1", tcp(false, VIP4, 80, 40007, SYN).ttl(1)),
        (
            "tcp4-syn-ipv4-options",
            tcp(false, VIP4, 80, 40008, SYN).ipv4_options(&[0x94, 4, 0, 0]),
        ),
        ("tcp4-syn-vlan", tcp(false, VIP4, 80, 40009, SYN).vlan(100)),
        (
            "tcp4-syn-no-service",
            tcp(false, "198.18.5.5", 80, 40010, SYN),
        ),
        (
            "tcp4-syn-three-tags",
            tcp(false, VIP4, 80, 40011, SYN).vlan(1).vlan(2).vlan(3),
        ),
        ("udp4-dns", udp(false, VIP4, 53, 50000).payload(&[0xab; 29])),
        (
            "udp4-dns-no-checksum",
            udp(false, VIP4, 53, 50001).udp_zero_checksum(),
        ),
        (
            "udp4-dns-qinq",
            udp(false, VIP4, 53, 50002).vlan(10).vlan(20).payload(b"q"),
        ),
        (
            "udp4-ntp",
            udp(false, VIP4_NTP, 123, 50003).payload(&[0x1b; 48]),
        ),
        (
            "udp4-frag-first-vip",
            udp(false, VIP4, 53, 50004)
                .payload(&[1; 24])
                .fragment(0, true),
        ),
        (
            "udp4-frag-later-vip",
            udp(false, VIP4, 53, 50004)
                .payload(&[2; 24])
                .fragment(32, false),
        ),
        (
            "udp4-frag-other",
            udp(false, "198.18.5.5", 53, 50005)
                .payload(&[3; 8])
                .fragment(8, true),
        ),
    ]
}

/// TCP and UDP over IPv6: services, extension headers, fragments.
fn ipv6_frames() -> Vec<(&'static str, FrameBuilder)> {
    use tcp_flags::{ACK, SYN};
    let ext_chain = [
        ExtensionHeader::HopByHop(0),
        ExtensionHeader::DestinationOptions(1),
        ExtensionHeader::Routing(0),
        ExtensionHeader::Authentication,
    ];
    vec![
        ("tcp6-syn-web6", tcp(true, VIP6, 80, 40100, SYN)),
        (
            "tcp6-ack-web6",
            tcp(true, VIP6, 80, 40101, ACK).payload(b"hello"),
        ),
        ("tcp6-syn-ssh6", tcp(true, VIP6_SSH, 22, 40102, SYN)),
        (
            "tcp6-syn-ext-headers",
            tcp(true, VIP6, 80, 40103, SYN).ipv6_extension_headers(&ext_chain),
        ),
        ("tcp6-syn-vlan", tcp(true, VIP6, 80, 40104, SYN).vlan(7)),
        (
            "tcp6-syn-hop-limit1",
            tcp(true, VIP6, 80, 40105, SYN).ttl(1),
        ),
        ("udp6-dns6", udp(true, VIP6, 53, 50100).payload(&[0xcd; 17])),
        (
            "udp6-dns6-no-checksum",
            udp(true, VIP6, 53, 50101).udp_zero_checksum(),
        ),
        (
            "udp6-frag-first-vip",
            udp(true, VIP6, 53, 50102)
                .payload(&[4; 16])
                .fragment(0, true),
        ),
        (
            "udp6-frag-later-vip",
            udp(true, VIP6, 53, 50102)
                .payload(&[5; 16])
                .fragment(24, false),
        ),
    ]
}

/// Neither TCP nor UDP: ICMP echo requests to a VIP, and ARP.
fn other_frames() -> Vec<(&'static str, FrameBuilder)> {
    vec![
        (
            "icmp4-echo-vip",
            from_client(FrameBuilder::icmp_echo_request(ip(CLIENT4), ip(VIP4))).payload(b"ping"),
        ),
        (
            "icmp6-echo-vip",
            from_client(FrameBuilder::icmp_echo_request(ip(CLIENT6), ip(VIP6))),
        ),
        (
            "arp-request",
            FrameBuilder::arp_request(
                CLIENT_MAC,
                CLIENT4.parse().expect("v4"),
                "198.18.0.1".parse().expect("v4"),
            ),
        ),
    ]
}

/// The frame `frames()` names `name`.
fn frame(name: &str) -> Vec<u8> {
    frames()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, f)| f)
        .unwrap_or_else(|| panic!("no seed frame {name}"))
}

/// Where the first snapshot's pipeline sends a client's frame: the
/// backend's socket address and MAC. `None` if it is not forwarded.
fn backend_of(frame: &[u8]) -> Option<(SocketAddr, [u8; 6])> {
    let fixture = Fixture::get();
    let mut pipeline = Pipeline::new();
    let mut flows = FlowTable::new(FLOW_CAPACITY, fixture.timeouts);
    let mut out = frame.to_vec();
    let verdict = pipeline.process_frame(&mut out, 0, &fixture.snapshots[0], &mut flows, 1);
    if !matches!(verdict, Verdict::Transmit(_)) {
        return None;
    }
    let meta = wire::parse(&out).ok()?;
    let mut mac = [0u8; 6];
    mac.copy_from_slice(out.get(..6)?);
    Some((
        SocketAddr::new(meta.tuple.dst_ip(), meta.tuple.dst_port),
        mac,
    ))
}

/// The backend's answer to a client's `frame`, as it reaches the gateway.
fn reply(frame: &[u8], flags: Option<u8>, payload: &[u8]) -> Vec<u8> {
    let meta = wire::parse(frame).expect("a seed frame parses");
    let client = SocketAddr::new(meta.tuple.src_ip(), meta.tuple.src_port);
    let Some((backend, backend_mac)) = backend_of(frame) else {
        panic!("seed frame is not forwarded: {meta:?}");
    };
    let builder = match flags {
        Some(flags) => FrameBuilder::tcp(backend, client, flags),
        None => FrameBuilder::udp(backend, client),
    };
    builder
        .macs(backend_mac, GW_BACKEND_MAC)
        .payload(payload)
        .build()
}

/// A client step (port 0).
fn client(frame: &[u8]) -> Step<'_> {
    Step::new(frame)
}

/// A backend step (port 1), a millisecond later.
fn backend(frame: &[u8]) -> Step<'_> {
    Step {
        ingress: 1,
        advance_ns: 1_000_000,
        ..Step::new(frame)
    }
}

/// The first source port from `start` on whose SYN the first snapshot
/// forwards (the scheduler may pick a backend without a neighbour).
fn forwarded_port(v6: bool, vip: &str, port: u16, start: u16) -> u16 {
    (start..start + 64)
        .find(|&sport| backend_of(&tcp(v6, vip, port, sport, tcp_flags::SYN).build()).is_some())
        .unwrap_or_else(|| panic!("no source port from {start} reaches a backend of {vip}"))
}

/// A TCP connection through a service, opened, used and closed.
fn tcp_connection(v6: bool, vip: &str, port: u16, sport: u16) -> Vec<u8> {
    use tcp_flags::{ACK, FIN, PSH, SYN};
    let sport = forwarded_port(v6, vip, port, sport);
    let syn = tcp(v6, vip, port, sport, SYN).build();
    let ack = tcp(v6, vip, port, sport, ACK).tcp_seq(2).build();
    let data = tcp(v6, vip, port, sport, ACK | PSH)
        .tcp_seq(2)
        .payload(b"GET /")
        .build();
    let fin = tcp(v6, vip, port, sport, FIN | ACK).tcp_seq(7).build();
    let last_ack = tcp(v6, vip, port, sport, ACK).tcp_seq(8).build();
    let syn_ack = reply(&syn, Some(SYN | ACK), b"");
    let answer = reply(&syn, Some(ACK | PSH), b"200 OK");
    let fin_ack = reply(&syn, Some(FIN | ACK), b"");
    encode(&[
        client(&syn),
        backend(&syn_ack),
        client(&ack),
        client(&data),
        backend(&answer),
        client(&fin),
        backend(&fin_ack),
        client(&last_ack),
    ])
}

/// A UDP request and its answer, then the same again after the flow has
/// timed out.
fn udp_exchange(v6: bool, vip: &str, port: u16, sport: u16) -> Vec<u8> {
    let request = udp(v6, vip, port, sport).payload(b"question").build();
    let answer = reply(&request, None, b"answer");
    encode(&[
        client(&request),
        backend(&answer),
        Step {
            advance_ns: 5_000_000_000,
            expire: true,
            ..client(&request)
        },
        backend(&answer),
    ])
}

/// A connection that outlives a rule change: established under the first
/// snapshot, continued under the second (whose backends differ).
fn across_rule_change() -> Vec<u8> {
    use tcp_flags::{ACK, PSH, SYN};
    let sport = forwarded_port(false, VIP4, 80, 41000);
    let syn = tcp(false, VIP4, 80, sport, SYN).build();
    let data = tcp(false, VIP4, 80, sport, ACK | PSH)
        .tcp_seq(2)
        .payload(b"more")
        .build();
    let syn_ack = reply(&syn, Some(SYN | ACK), b"");
    let request = udp(false, VIP4, 53, 51000).build();
    let answer = reply(&request, None, b"a");
    encode(&[
        client(&syn),
        backend(&syn_ack),
        client(&request),
        backend(&answer),
        Step {
            switch_snapshot: true,
            ..client(&data)
        },
        backend(&syn_ack),
        client(&request),
        backend(&answer),
        Step {
            switch_snapshot: true,
            ..client(&data)
        },
    ])
}

/// More new connections than the table holds, to force evictions.
fn many_connections() -> Vec<u8> {
    let frames: Vec<Vec<u8>> = (0..(FLOW_CAPACITY as u16 + 16))
        .map(|i| {
            if i % 2 == 0 {
                tcp(false, VIP4, 80, 42000 + i, tcp_flags::SYN).build()
            } else {
                udp(true, VIP6, 53, 52000 + i).build()
            }
        })
        .collect();
    let steps: Vec<Step<'_>> = frames.iter().map(|f| client(f)).collect();
    encode(&steps)
}

/// Every single frame once, each with its checksums repaired first (so a
/// mutated copy is repaired too), alternating ingress ports.
fn every_frame() -> Vec<u8> {
    let frames = frames();
    let steps: Vec<Step<'_>> = frames
        .iter()
        .enumerate()
        .map(|(i, (_, f))| Step {
            ingress: (i % 2) as u16,
            repair_checksums: true,
            advance_ns: 100_000_000,
            ..Step::new(f)
        })
        .collect();
    encode(&steps)
}

/// The pipeline corpus: scripts, named.
pub fn scripts() -> Vec<(String, Vec<u8>)> {
    let mut out = vec![
        (
            "tcp4-web-maglev".to_string(),
            tcp_connection(false, VIP4, 80, 43000),
        ),
        (
            "tcp4-web-wrr".to_string(),
            tcp_connection(false, VIP4_WRR, 80, 43001),
        ),
        (
            "tcp6-web6-maglev".to_string(),
            tcp_connection(true, VIP6, 80, 43002),
        ),
        (
            "tcp6-ssh6-sh".to_string(),
            tcp_connection(true, VIP6_SSH, 22, 43003),
        ),
        (
            "udp4-dns-sh".to_string(),
            udp_exchange(false, VIP4, 53, 53000),
        ),
        (
            "udp6-dns6-wrr".to_string(),
            udp_exchange(true, VIP6, 53, 53001),
        ),
        ("rule-change".to_string(), across_rule_change()),
        ("many-connections".to_string(), many_connections()),
        ("every-frame".to_string(), every_frame()),
    ];
    for (name, f) in frames() {
        out.push((format!("single-{name}"), encode(&[client(&f)])));
    }
    // A lone backend packet with no connection, and one mid-stream ACK
    // before and after a rule change.
    let ack = frame("tcp4-ack-web");
    out.push((
        "midstream-across-change".to_string(),
        encode(&[
            client(&ack),
            Step {
                switch_snapshot: true,
                ..client(&ack)
            },
        ]),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check;

    #[test]
    fn every_seed_frame_parses_except_the_triple_tagged_one() {
        for (name, f) in frames() {
            let parsed = wire::parse(&f);
            if name == "tcp4-syn-three-tags" {
                assert!(parsed.is_err());
            } else {
                let meta = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
                check::check_meta(&meta, &f);
            }
        }
    }

    #[test]
    fn seed_connections_are_forwarded_both_ways() {
        // The reply of a seed connection must be recognised as the
        // connection's: run the web handshake and see both directions
        // transmitted.
        let script = tcp_connection(false, VIP4, 80, 43000);
        let fixture = Fixture::get();
        let mut pipeline = Pipeline::new();
        let mut flows = FlowTable::new(FLOW_CAPACITY, fixture.timeouts);
        let mut now = 1;
        let mut ports = Vec::new();
        for step in crate::script::steps(&script) {
            now += step.advance_ns;
            let mut f = step.frame.to_vec();
            let v = pipeline.process_frame(
                &mut f,
                step.ingress,
                &fixture.snapshots[0],
                &mut flows,
                now,
            );
            ports.push(v);
        }
        assert_eq!(ports[0], Verdict::Transmit(1), "SYN to the backend side");
        assert_eq!(ports[1], Verdict::Transmit(0), "SYN+ACK back to the client");
        assert!(pipeline.counters().snapshot().flow_hits >= 6);
    }

    #[test]
    fn every_script_runs_clean_through_the_target() {
        let all = scripts();
        assert!(all.len() > 30);
        for (_, script) in all {
            check::pipeline_script(&script);
        }
        for (_, f) in frames() {
            check::parse_frame(&f);
        }
    }
}
