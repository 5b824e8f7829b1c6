//! Golden-packet tests: each fixture is an input frame, the rules in
//! `common::GOLDEN_RULES`, the expected verdict and the expected output
//! frame, byte for byte. Expected frames are built independently with every
//! checksum computed in full, so they also check the pipeline's incremental
//! checksum patching. The same fixtures run through `flowgate replay`'s
//! pcap-in/pcap-out path.
//!
//! The builder and the parser are both the crate's own, so a mistake they
//! share could cancel out. Steps marked [`Step::independent`] are therefore
//! also checked against frames made by scapy (tests/golden/make_frames.py,
//! committed in tests/golden/frames/): the builder must make the same
//! bytes, and the pipeline must turn scapy's input into scapy's output.
//!
//! What a down backend's connections get on the wire under each
//! `on_backend_down` policy (the RST included) is checked the same way,
//! against tests/golden/make_dead_backend.py's frames.
//!
//! Every fixture also runs through the XDP program (BPF_PROG_TEST_RUN)
//! in front of the pipeline with the kernel fast path off, on, and on with
//! one port unable to take XDP frames; and random changes to the fixtures'
//! frames, sent once their connections are established, must give the
//! same verdict and frame all three ways.

mod common;
mod golden_translation;
mod golden_vlan;

use common::*;
use proptest::prelude::*;

use flowgate_dataplane::fastpath::{connection_rewrites, CacheGeometry, FastConfig};
use flowgate_dataplane::pipeline::{DropReason, Verdict};
use flowgate_dataplane::replay::{pcap, replay, ReplayOptions};
use flowgate_dataplane::wire::builder::{ExtensionHeader, FrameBuilder};
use flowgate_dataplane::wire::{frame_checksums_ok, tcp_flags, ParseError};
use flowgate_dataplane::xdp::{OwnedTraffic, ProgramOutcome, XdpTester};

const SYN: u8 = tcp_flags::SYN;
const SYN_ACK: u8 = tcp_flags::SYN | tcp_flags::ACK;
const ACK: u8 = tcp_flags::ACK;

/// One step: a frame in, what must come out.
struct Step {
    what: &'static str,
    input: Vec<u8>,
    ingress: u16,
    verdict: Verdict,
    /// The frame after the pipeline; `None`: unchanged.
    output: Option<Vec<u8>>,
    /// The name of the same step's frames in tests/golden/frames/, made
    /// independently of the crate (see [`independent_frames`]).
    independent: Option<&'static str>,
}

impl Step {
    /// Marks this step as the one tests/golden/frames/`name`.*.hex
    /// describes.
    fn independent(mut self, name: &'static str) -> Step {
        self.independent = Some(name);
        self
    }
}

/// A fixture: steps run in order through one pipeline and connection table.
struct Fixture {
    name: &'static str,
    steps: Vec<Step>,
}

fn step(what: &'static str, input: FrameBuilder, ingress: u16, verdict: Verdict) -> Step {
    Step {
        what,
        input: input.build(),
        ingress,
        verdict,
        output: None,
        independent: None,
    }
}

fn forwarded(
    what: &'static str,
    input: FrameBuilder,
    ingress: u16,
    port: u16,
    out: FrameBuilder,
) -> Step {
    Step {
        what,
        input: input.build(),
        ingress,
        verdict: Verdict::Transmit(port),
        output: Some(out.build()),
        independent: None,
    }
}

/// The client → VIP frame and the expected backend-bound frame for `proto`
/// traffic, with common modifiers applied to both.
fn tcp_pair(client: &str, vip: &str, backend: &str, flags: u8) -> (FrameBuilder, FrameBuilder) {
    (
        from_client(FrameBuilder::tcp(sa(client), sa(vip), flags)).ttl(64),
        FrameBuilder::tcp(sa(client), sa(backend), flags)
            .macs(GW_BACKEND_MAC, BACKEND1_MAC)
            .ttl(63),
    )
}

fn udp_pair(client: &str, vip: &str, backend: &str) -> (FrameBuilder, FrameBuilder) {
    (
        from_client(FrameBuilder::udp(sa(client), sa(vip))).ttl(64),
        FrameBuilder::udp(sa(client), sa(backend))
            .macs(GW_BACKEND_MAC, BACKEND1_MAC)
            .ttl(63),
    )
}

/// The golden fixtures, each under a comment saying what it covers.
// A table, one fixture per entry: it reads as a list, however long.
#[allow(clippy::too_many_lines)]
fn fixtures() -> Vec<Fixture> {
    let payload = b"GET / HTTP/1.1\r\nHost: web\r\n\r\n";
    let mut f = Vec::new();

    // TCP over IPv4: SYN, the backend's SYN-ACK back from the VIP, data.
    let (syn_in, syn_out) = tcp_pair(
        "198.18.0.2:40000",
        "198.18.100.10:80",
        "198.18.1.11:8080",
        SYN,
    );
    let (ack_in, ack_out) = tcp_pair(
        "198.18.0.2:40000",
        "198.18.100.10:80",
        "198.18.1.11:8080",
        ACK,
    );
    f.push(Fixture {
        name: "tcp over ipv4: handshake, reply and data",
        steps: vec![
            forwarded(
                "client SYN to the VIP goes to the backend",
                syn_in,
                0,
                1,
                syn_out,
            )
            .independent("ipv4_tcp_syn"),
            forwarded(
                "backend SYN-ACK comes back from the VIP",
                FrameBuilder::tcp(sa("198.18.1.11:8080"), sa("198.18.0.2:40000"), SYN_ACK)
                    .macs(BACKEND1_MAC, GW_BACKEND_MAC)
                    .ttl(64),
                1,
                0,
                FrameBuilder::tcp(sa("198.18.100.10:80"), sa("198.18.0.2:40000"), SYN_ACK)
                    .macs(GW_CLIENT_MAC, CLIENT_MAC)
                    .ttl(63),
            )
            .independent("ipv4_tcp_syn_ack_reply"),
            forwarded(
                "client data follows the connection",
                ack_in.payload(payload),
                0,
                1,
                ack_out.payload(payload),
            ),
        ],
    });

    // TCP over IPv6.
    let (syn_in, syn_out) = tcp_pair(
        "[2001:2::2]:40000",
        "[2001:2:0:100::10]:80",
        "[2001:2:0:1::11]:8080",
        SYN,
    );
    f.push(Fixture {
        name: "tcp over ipv6: SYN and reply",
        steps: vec![
            forwarded("client SYN", syn_in, 0, 1, syn_out).independent("ipv6_tcp_syn"),
            forwarded(
                "backend SYN-ACK",
                FrameBuilder::tcp(
                    sa("[2001:2:0:1::11]:8080"),
                    sa("[2001:2::2]:40000"),
                    SYN_ACK,
                )
                .macs(BACKEND1_MAC, GW_BACKEND_MAC)
                .ttl(64),
                1,
                0,
                FrameBuilder::tcp(
                    sa("[2001:2:0:100::10]:80"),
                    sa("[2001:2::2]:40000"),
                    SYN_ACK,
                )
                .macs(GW_CLIENT_MAC, CLIENT_MAC)
                .ttl(63),
            ),
        ],
    });

    // UDP over IPv4 and IPv6, with a reply.
    let (q_in, q_out) = udp_pair("198.18.0.2:5000", "198.18.100.10:53", "198.18.1.11:5353");
    f.push(Fixture {
        name: "udp over ipv4: query and answer",
        steps: vec![
            forwarded(
                "query",
                q_in.payload(b"query"),
                0,
                1,
                q_out.payload(b"query"),
            )
            .independent("ipv4_udp"),
            forwarded(
                "answer",
                FrameBuilder::udp(sa("198.18.1.11:5353"), sa("198.18.0.2:5000"))
                    .macs(BACKEND1_MAC, GW_BACKEND_MAC)
                    .ttl(64)
                    .payload(b"answer"),
                1,
                0,
                FrameBuilder::udp(sa("198.18.100.10:53"), sa("198.18.0.2:5000"))
                    .macs(GW_CLIENT_MAC, CLIENT_MAC)
                    .ttl(63)
                    .payload(b"answer"),
            ),
        ],
    });
    let (q_in, q_out) = udp_pair(
        "[2001:2::2]:5000",
        "[2001:2:0:100::10]:53",
        "[2001:2:0:1::11]:5353",
    );
    f.push(Fixture {
        name: "udp over ipv6",
        steps: vec![
            forwarded("query", q_in.payload(b"q6"), 0, 1, q_out.payload(b"q6"))
                .independent("ipv6_udp"),
        ],
    });
    let (q_in, q_out) = udp_pair("198.18.0.2:5001", "198.18.100.10:53", "198.18.1.11:5353");
    f.push(Fixture {
        name: "udp over ipv4 without checksum keeps checksum 0",
        steps: vec![forwarded(
            "query",
            q_in.payload(b"nocsum").udp_zero_checksum(),
            0,
            1,
            q_out.payload(b"nocsum").udp_zero_checksum(),
        )],
    });

    // The interfaces are untagged: a tagged frame the gateway would
    // forward is refused, so a client's tag never reaches the backends'
    // segment; tagged traffic that is the kernel's (its VLAN devices)
    // passes.
    let (syn_in, _) = tcp_pair(
        "198.18.0.2:40001",
        "198.18.100.10:80",
        "198.18.1.11:8080",
        SYN,
    );
    let (q_in, _) = udp_pair(
        "[2001:2::2]:5002",
        "[2001:2:0:100::10]:53",
        "[2001:2:0:1::11]:5353",
    );
    f.push(Fixture {
        name: "vlan-tagged frames on untagged interfaces",
        steps: vec![
            step(
                "802.1Q tagged SYN",
                syn_in.vlan(100),
                0,
                Verdict::Drop(DropReason::VlanNotConfigured),
            )
            .independent("vlan_ipv4_tcp_syn"),
            step(
                "802.1ad double-tagged query over ipv6",
                q_in.vlan(10).vlan(20).payload(b"qq"),
                0,
                Verdict::Drop(DropReason::VlanNotConfigured),
            )
            .independent("qinq_ipv6_udp"),
            step(
                "tagged ssh to the gateway",
                from_client(FrameBuilder::tcp(
                    sa("198.18.0.2:40020"),
                    sa("198.18.0.1:22"),
                    SYN,
                ))
                .vlan(100),
                0,
                Verdict::Pass,
            ),
        ],
    });
    f.extend(ingress_fixtures());

    // IPv4 options and IPv6 extension headers travel with the packet.
    let router_alert = [0x94, 0x04, 0, 0];
    let (syn_in, syn_out) = tcp_pair(
        "198.18.0.2:40006",
        "198.18.100.10:80",
        "198.18.1.11:8080",
        SYN,
    );
    f.push(Fixture {
        name: "ipv4 options are kept",
        steps: vec![forwarded(
            "SYN with a router alert option",
            syn_in.ipv4_options(&router_alert),
            0,
            1,
            syn_out.ipv4_options(&router_alert),
        )
        .independent("ipv4_options_tcp_syn")],
    });
    let hop_by_hop = [ExtensionHeader::HopByHop(0)];
    let (q_in, q_out) = udp_pair(
        "[2001:2::2]:5005",
        "[2001:2:0:100::10]:53",
        "[2001:2:0:1::11]:5353",
    );
    f.push(Fixture {
        name: "ipv6 extension headers are kept",
        steps: vec![forwarded(
            "query behind a hop-by-hop header",
            q_in.ipv6_extension_headers(&hop_by_hop).payload(b"ext"),
            0,
            1,
            q_out.ipv6_extension_headers(&hop_by_hop).payload(b"ext"),
        )
        .independent("ipv6_hop_by_hop_udp")],
    });

    // ICMP to a VIP is not a service: the kernel gets it.
    f.push(Fixture {
        name: "icmp echo to a vip is passed",
        steps: vec![
            step(
                "ping v4",
                from_client(FrameBuilder::icmp_echo_request(
                    "198.18.0.2".parse().unwrap(),
                    "198.18.100.10".parse().unwrap(),
                )),
                0,
                Verdict::Pass,
            ),
            step(
                "ping v6",
                from_client(FrameBuilder::icmp_echo_request(
                    "2001:2::2".parse().unwrap(),
                    "2001:2:0:100::10".parse().unwrap(),
                )),
                0,
                Verdict::Pass,
            ),
        ],
    });

    // TTL 1 cannot be forwarded.
    f.push(Fixture {
        name: "ttl 1 is dropped",
        steps: vec![
            step(
                "v4",
                from_client(FrameBuilder::tcp(
                    sa("198.18.0.2:40002"),
                    sa("198.18.100.10:80"),
                    SYN,
                ))
                .ttl(1),
                0,
                Verdict::Drop(DropReason::TtlExpired),
            )
            .independent("ipv4_ttl_1"),
            step(
                "v6",
                from_client(FrameBuilder::udp(
                    sa("[2001:2::2]:5003"),
                    sa("[2001:2:0:100::10]:53"),
                ))
                .ttl(1),
                0,
                Verdict::Drop(DropReason::TtlExpired),
            ),
        ],
    });

    // Not for any service: passed, untouched.
    f.push(Fixture {
        name: "traffic for no service reaches the kernel",
        steps: vec![
            step(
                "ssh to the gateway",
                from_client(FrameBuilder::tcp(
                    sa("198.18.0.2:40003"),
                    sa("198.18.0.1:22"),
                    SYN,
                )),
                0,
                Verdict::Pass,
            ),
            step(
                "vip on a port with no service",
                from_client(FrameBuilder::tcp(
                    sa("198.18.0.2:40004"),
                    sa("198.18.100.10:443"),
                    SYN,
                )),
                0,
                Verdict::Pass,
            ),
            step(
                "arp",
                FrameBuilder::arp_request(
                    CLIENT_MAC,
                    "198.18.0.2".parse().unwrap(),
                    "198.18.0.1".parse().unwrap(),
                ),
                0,
                Verdict::Pass,
            )
            .independent("arp_request"),
        ],
    });

    // Fragments are not reassembled.
    f.push(Fixture {
        name: "fragments",
        steps: vec![
            step(
                "first fragment to a vip",
                from_client(FrameBuilder::udp(
                    sa("198.18.0.2:5004"),
                    sa("198.18.100.10:53"),
                ))
                .payload(&[7; 64])
                .fragment(0, true),
                0,
                Verdict::Drop(DropReason::FragmentToVip),
            ),
            step(
                "later fragment to a vip",
                from_client(FrameBuilder::udp(
                    sa("198.18.0.2:5004"),
                    sa("198.18.100.10:53"),
                ))
                .payload(&[7; 64])
                .fragment(64, false),
                0,
                Verdict::Drop(DropReason::FragmentToVip),
            ),
            step(
                "fragment to another host",
                from_client(FrameBuilder::udp(
                    sa("198.18.0.2:5004"),
                    sa("198.18.0.1:53"),
                ))
                .payload(&[7; 64])
                .fragment(64, false),
                0,
                Verdict::Pass,
            ),
        ],
    });

    f.extend(golden_translation::fixtures());
    f
}

/// A step whose frame only scapy makes (tests/golden/frames/`name`.in.hex):
/// its input is scapy's.
fn scapy_step(what: &'static str, name: &'static str, ingress: u16, verdict: Verdict) -> Step {
    Step {
        what,
        input: independent_frames(name).0,
        ingress,
        verdict,
        output: None,
        independent: Some(name),
    }
}

/// Ingress sanity, as a router must (RFC 1812 5.2.2, 5.3.7): frames for
/// another host, group-addressed frames the gateway would forward, bad
/// IPv4 header checksums, martian and bogon sources. The multicast the
/// kernel needs (neighbour discovery, router advertisements) and broadcast
/// that is not the gateway's still pass.
// A table, one step per check: it reads as a list, however long.
#[allow(clippy::too_many_lines)]
fn ingress_fixtures() -> Vec<Fixture> {
    let drop = Verdict::Drop;
    let to_vip = |src: &str| from_client(FrameBuilder::tcp(sa(src), sa("198.18.100.10:80"), SYN));
    let to_vip6 =
        |src: &str| from_client(FrameBuilder::tcp(sa(src), sa("[2001:2:0:100::10]:80"), SYN));
    vec![
        Fixture {
            name: "ingress: frames not addressed to the interface",
            steps: vec![
                scapy_step(
                    "ipv4 to another host's mac",
                    "ingress_ipv4_other_host",
                    0,
                    drop(DropReason::OtherHost),
                ),
                scapy_step(
                    "ipv6 to another host's mac",
                    "ingress_ipv6_other_host",
                    0,
                    drop(DropReason::OtherHost),
                ),
                step(
                    "a backend's reply to another host's mac",
                    FrameBuilder::tcp(sa("198.18.1.11:8080"), sa("198.18.0.2:40030"), SYN_ACK)
                        .macs(BACKEND1_MAC, BACKEND2_MAC),
                    1,
                    drop(DropReason::OtherHost),
                ),
                scapy_step(
                    "broadcast udp to the vip",
                    "ingress_ipv4_broadcast",
                    0,
                    drop(DropReason::BroadcastFrame),
                ),
                scapy_step(
                    "multicast tcp to the ipv6 vip",
                    "ingress_ipv6_multicast",
                    0,
                    drop(DropReason::MulticastFrame),
                ),
                step(
                    "broadcast dhcp discover: the kernel's",
                    FrameBuilder::udp(sa("0.0.0.0:68"), sa("255.255.255.255:67"))
                        .macs(CLIENT_MAC, [0xff; 6]),
                    0,
                    Verdict::Pass,
                ),
                scapy_step(
                    "neighbour solicitation to the vip's solicited-node address",
                    "ingress_ipv6_ns_solicited_node",
                    0,
                    Verdict::Pass,
                ),
                scapy_step(
                    "router advertisement to all nodes",
                    "ingress_ipv6_router_advertisement",
                    0,
                    Verdict::Pass,
                ),
            ],
        },
        Fixture {
            name: "ingress: bad ipv4 header checksum",
            steps: vec![scapy_step(
                "syn to the vip",
                "ingress_ipv4_bad_checksum",
                0,
                drop(DropReason::Malformed(ParseError::BadIpChecksum)),
            )],
        },
        Fixture {
            name: "ingress: martian and bogon sources make no connection",
            steps: vec![
                scapy_step(
                    "from 127.0.0.1",
                    "ingress_ipv4_martian_loopback",
                    0,
                    drop(DropReason::MartianSource),
                ),
                step(
                    "from 0.0.0.0/8",
                    to_vip("0.1.2.3:40031"),
                    0,
                    drop(DropReason::MartianSource),
                ),
                step(
                    "from 224/4",
                    to_vip("224.0.0.5:40031"),
                    0,
                    drop(DropReason::MartianSource),
                ),
                step(
                    "from 255.255.255.255",
                    to_vip("255.255.255.255:40031"),
                    0,
                    drop(DropReason::MartianSource),
                ),
                step(
                    "from the vip itself",
                    to_vip("198.18.100.10:40031"),
                    0,
                    drop(DropReason::MartianSource),
                ),
                scapy_step(
                    "from ff02::1",
                    "ingress_ipv6_martian_multicast",
                    0,
                    drop(DropReason::MartianSource),
                ),
                step(
                    "from ::1",
                    to_vip6("[::1]:40031"),
                    0,
                    drop(DropReason::MartianSource),
                ),
                step(
                    "from ::",
                    to_vip6("[::]:40031"),
                    0,
                    drop(DropReason::MartianSource),
                ),
                step(
                    "from the ipv6 vip itself",
                    to_vip6("[2001:2:0:100::10]:40031"),
                    0,
                    drop(DropReason::MartianSource),
                ),
                scapy_step(
                    "from a configured ipv4 bogon",
                    "ingress_ipv4_bogon",
                    0,
                    drop(DropReason::BogonSource),
                ),
                step(
                    "from a configured ipv6 bogon",
                    to_vip6("[2001:2:bad::7]:40031"),
                    0,
                    drop(DropReason::BogonSource),
                ),
                // The same client from a good address still connects.
                forwarded(
                    "a good client",
                    to_vip("198.18.0.2:40031"),
                    0,
                    1,
                    FrameBuilder::tcp(sa("198.18.0.2:40031"), sa("198.18.1.11:8080"), SYN)
                        .macs(GW_BACKEND_MAC, BACKEND1_MAC)
                        .ttl(63),
                ),
            ],
        },
    ]
}

/// Malformed frames: (what, bytes, reason).
fn malformed() -> Vec<(&'static str, Vec<u8>, DropReason)> {
    let good = from_client(FrameBuilder::tcp(
        sa("198.18.0.2:40005"),
        sa("198.18.100.10:80"),
        SYN,
    ))
    .build();
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x44; // IHL 4 words
    let mut bad_len = good.clone();
    bad_len[16] = 0xff; // total length far past the frame
    let mut bad_version = good.clone();
    bad_version[14] = 0x65;
    let mut bad_doff = good.clone();
    bad_doff[14 + 20 + 12] = 0x20; // data offset 2 words
    let m = |e| DropReason::Malformed(e);
    vec![
        ("empty frame", vec![], m(ParseError::TruncatedEthernet)),
        (
            "half an ethernet header",
            good[..10].to_vec(),
            m(ParseError::TruncatedEthernet),
        ),
        (
            "ip header cut",
            good[..14 + 12].to_vec(),
            m(ParseError::TruncatedIp),
        ),
        ("ihl below 5", bad_ihl, m(ParseError::BadIhl)),
        (
            "total length past the frame",
            bad_len,
            m(ParseError::BadIpLength),
        ),
        (
            "version 6 in an ipv4 ethertype",
            bad_version,
            m(ParseError::BadIpVersion),
        ),
        (
            "tcp data offset below 5",
            bad_doff,
            m(ParseError::BadTcpDataOffset),
        ),
    ]
}

/// Runs every fixture, each through a fresh pipeline and connection table,
/// and checks each step's verdict and frame; `frames` gives a step's input
/// frame and the frame expected after the pipeline.
fn check_fixtures(frames: impl Fn(&Step) -> (Vec<u8>, Vec<u8>)) {
    for fixture in fixtures() {
        let mut h = Harness::new(GOLDEN_RULES);
        for (i, s) in fixture.steps.iter().enumerate() {
            let (input, expected) = frames(s);
            let (verdict, out) = h.run(&input, s.ingress, 1_000_000_000 + i as u64);
            assert_eq!(verdict, s.verdict, "{} / {}: verdict", fixture.name, s.what);
            assert!(
                out == expected,
                "{} / {}: frame differs\n got:\n{}\n want:\n{}",
                fixture.name,
                s.what,
                hex(&out),
                hex(&expected)
            );
            if matches!(verdict, Verdict::Transmit(_)) {
                assert!(
                    frame_checksums_ok(&out),
                    "{} / {}: bad checksum",
                    fixture.name,
                    s.what
                );
            }
        }
    }
}

/// A step's frames as the crate's builder makes them.
fn built_frames(s: &Step) -> (Vec<u8>, Vec<u8>) {
    let expected = s.output.clone().unwrap_or_else(|| s.input.clone());
    (s.input.clone(), expected)
}

#[test]
fn fixtures_give_the_expected_frames_and_verdicts() {
    check_fixtures(built_frames);
}

/// Where make_frames.py writes the independent frames.
fn frames_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/frames")
}

/// tests/golden/frames/`file`: hex bytes, `#` lines are comments. `None`
/// if there is no such file.
fn read_hex_frame(file: &str) -> Option<Vec<u8>> {
    hex_frame_in(&frames_dir(), file)
}

/// `dir`/`file`, read as [`read_hex_frame`] reads frames.
fn hex_frame_in(dir: &std::path::Path, file: &str) -> Option<Vec<u8>> {
    let path = dir.join(file);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("{}: {e}", path.display()),
    };
    let bytes = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .flat_map(str::split_whitespace)
        .map(|byte| {
            u8::from_str_radix(byte, 16)
                .unwrap_or_else(|e| panic!("{}: {byte:?}: {e}", path.display()))
        })
        .collect();
    Some(bytes)
}

/// tests/golden/`sub`/`file`, as [`read_hex_frame`] reads frames.
fn golden_frame(sub: &str, file: &str) -> Option<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(sub);
    hex_frame_in(&dir, file)
}

/// The independent frames of step `name`: its input, and its output if the
/// gateway sends it on.
fn independent_frames(name: &str) -> (Vec<u8>, Option<Vec<u8>>) {
    let input = read_hex_frame(&format!("{name}.in.hex")).unwrap_or_else(|| {
        panic!("tests/golden/frames/{name}.in.hex is missing: run tests/golden/make_frames.py")
    });
    (input, read_hex_frame(&format!("{name}.out.hex")))
}

#[test]
fn the_builder_makes_the_independent_frames_byte_for_byte() {
    let mut names = Vec::new();
    for fixture in fixtures() {
        for s in &fixture.steps {
            let Some(name) = s.independent else { continue };
            let (input, output) = independent_frames(name);
            assert!(
                s.input == input,
                "{name}: the builder's input frame differs from scapy's\n builder:\n{}\n scapy:\n{}",
                hex(&s.input),
                hex(&input)
            );
            match (&s.verdict, &output) {
                (Verdict::Transmit(_), Some(output)) => {
                    let built = s.output.as_ref().unwrap_or(&s.input);
                    assert!(
                        built == output,
                        "{name}: the builder's output frame differs from scapy's\n builder:\n{}\n scapy:\n{}",
                        hex(built),
                        hex(output)
                    );
                }
                (Verdict::Transmit(_), None) => panic!("{name}: no .out.hex for a sent frame"),
                (_, Some(_)) => panic!("{name}: an .out.hex for a frame that is not sent"),
                (_, None) => {}
            }
            names.push(name);
        }
    }
    // Every committed frame belongs to a step, so none is silently unused.
    let mut files: Vec<String> = std::fs::read_dir(frames_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    let mut expected: Vec<String> = names
        .iter()
        .flat_map(|n| [format!("{n}.in.hex"), format!("{n}.out.hex")])
        .filter(|f| frames_dir().join(f).exists())
        .collect();
    expected.sort();
    assert_eq!(
        files, expected,
        "files in tests/golden/frames/ without a step"
    );
    // At least: TCP and UDP over both families, tags, IPv4 options, IPv6
    // extension headers, ARP.
    for required in [
        "ipv4_tcp_syn",
        "ipv4_udp",
        "ipv6_tcp_syn",
        "ipv6_udp",
        "vlan_ipv4_tcp_syn",
        "ipv4_options_tcp_syn",
        "ipv6_hop_by_hop_udp",
        "arp_request",
    ] {
        assert!(names.contains(&required), "{required}: no step");
    }
}

#[test]
fn fixtures_hold_for_the_independent_frames() {
    // Where a step has independent frames, they replace the builder's:
    // scapy's input must become scapy's output, with the same verdict.
    check_fixtures(|s| match s.independent {
        Some(name) => {
            let (input, output) = independent_frames(name);
            let expected = output.unwrap_or_else(|| input.clone());
            (input, expected)
        }
        None => built_frames(s),
    });
}

#[test]
fn malformed_frames_are_dropped_with_their_reason() {
    let mut h = Harness::new(GOLDEN_RULES);
    for (what, frame, reason) in malformed() {
        let (verdict, _) = h.run(&frame, 0, 1);
        assert_eq!(verdict, Verdict::Drop(reason), "{what}");
    }
    let counters = h.pipeline.counters().snapshot();
    assert_eq!(counters.dropped(), malformed().len() as u64);
}

#[test]
fn the_same_fixtures_hold_through_pcap_replay() {
    // Every fixture's input frames in one capture. Replay sends each frame
    // in on the interface whose MAC it is addressed to, as on the wire.
    let config = common::config(GOLDEN_RULES);
    let mut input = pcap::PcapWriter::new(Vec::new()).unwrap();
    let mut expected_out = Vec::new();
    let mut expected_passed = 0;
    for (fi, fixture) in fixtures().into_iter().enumerate() {
        for (si, s) in fixture.steps.into_iter().enumerate() {
            input
                .write((fi * 100 + si) as u64 * 1_000, &s.input)
                .unwrap();
            match s.verdict {
                Verdict::Transmit(_) => expected_out.push(s.output.unwrap_or(s.input)),
                Verdict::Pass => expected_passed += 1,
                Verdict::Drop(_) => {}
            }
        }
    }
    let input = input.finish().unwrap();
    let mut out = Vec::new();
    let mut passed = Vec::new();
    let report = replay(
        &config,
        &input[..],
        &mut out,
        Some(&mut passed),
        &ReplayOptions::default(),
    )
    .unwrap();
    let mut reader = pcap::PcapReader::new(&out[..]).unwrap();
    let mut got = Vec::new();
    while let Some(r) = reader.next_record().unwrap() {
        got.push(r.data);
    }
    assert_eq!(got.len(), expected_out.len());
    for (i, (g, e)) in got.iter().zip(&expected_out).enumerate() {
        assert!(
            g == e,
            "transmitted frame {i} differs\n got:\n{}\n want:\n{}",
            hex(g),
            hex(e)
        );
    }
    assert_eq!(report.counters.passed, expected_passed);
    let mut reader = pcap::PcapReader::new(&passed[..]).unwrap();
    let mut n = 0;
    while reader.next_record().unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, expected_passed);
}

#[test]
fn replay_skips_records_the_capture_cut_short_and_says_so() {
    let config = common::config(GOLDEN_RULES);
    let whole = from_client(FrameBuilder::tcp(
        sa("198.18.0.2:40010"),
        sa("198.18.100.10:80"),
        SYN,
    ))
    .build();
    let mut w = pcap::PcapWriter::new(Vec::new()).unwrap();
    w.write(1, &whole).unwrap();
    w.write(2, &whole[..40]).unwrap();
    let mut input = w.finish().unwrap();
    // Second record: claim the wire carried the whole frame (snap length 40).
    let second = 24 + 16 + whole.len();
    input[second + 12..second + 16].copy_from_slice(&(whole.len() as u32).to_le_bytes());
    let mut out = Vec::new();
    let r = replay(
        &config,
        &input[..],
        &mut out,
        None,
        &ReplayOptions::default(),
    )
    .unwrap();
    assert_eq!(r.frames_in, 2);
    assert_eq!(r.skipped_truncated, 1);
    assert_eq!(r.counters.rx_packets, 1);
    assert_eq!(
        r.counters.dropped(),
        0,
        "a capture artefact is not a malformed frame"
    );
    assert_eq!(r.counters.tx_packets, 1);
}

/// One case of tests/golden/make_dead_backend.py.
struct DeadBackendCase {
    name: &'static str,
    /// `on_backend_down` of `web` and `web6`.
    policy: &'static str,
    /// The connection's client and VIP, and its VLAN tag.
    client: &'static str,
    vip: &'static str,
    vlan: Option<u16>,
    /// The verdict for scapy's segment once the backend is down.
    verdict: Verdict,
}

const DEAD_BACKEND_CASES: [DeadBackendCase; 5] = [
    DeadBackendCase {
        name: "ipv4_reset",
        policy: "reset",
        client: "198.18.0.2:40010",
        vip: "198.18.100.10:80",
        vlan: None,
        verdict: Verdict::Transmit(0),
    },
    DeadBackendCase {
        name: "ipv6_fin_reset",
        policy: "reset",
        client: "[2001:2::2]:40011",
        vip: "[2001:2:0:100::10]:80",
        vlan: None,
        verdict: Verdict::Transmit(0),
    },
    DeadBackendCase {
        name: "vlan_ipv4_reset",
        policy: "reset",
        client: "198.18.0.2:40012",
        vip: "198.18.100.10:80",
        vlan: Some(100),
        verdict: Verdict::Transmit(0),
    },
    DeadBackendCase {
        name: "ipv4_drop",
        policy: "drop",
        client: "198.18.0.2:40013",
        vip: "198.18.100.10:80",
        vlan: None,
        verdict: Verdict::Drop(DropReason::BackendDown),
    },
    DeadBackendCase {
        name: "ipv4_keep",
        policy: "keep",
        client: "198.18.0.2:40014",
        vip: "198.18.100.10:80",
        vlan: None,
        verdict: Verdict::Transmit(1),
    },
];

fn dead_backend_frame(file: &str) -> Option<Vec<u8>> {
    golden_frame("dead_backend", file)
}

#[test]
fn a_dead_backends_connections_on_the_wire_follow_the_policy() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/dead_backend");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".in.hex").map(str::to_owned)
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<&str> = DEAD_BACKEND_CASES.iter().map(|c| c.name).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "every committed case is tested");

    for case in DEAD_BACKEND_CASES {
        let DeadBackendCase {
            name,
            policy,
            client,
            vip,
            vlan,
            verdict,
        } = case;
        // The backend is the service's only one: failing open, the service
        // would ignore its health, connections included; so it fails closed.
        let keys = format!("on_backend_down = \"{policy}\"\nwhen_all_down = \"closed\"");
        let rules = GOLDEN_RULES
            .replace(
                "name = \"web\"\nprotocol = \"tcp\"",
                &format!("name = \"web\"\nprotocol = \"tcp\"\n{keys}"),
            )
            .replace(
                "name = \"web6\"\nprotocol = \"tcp\"",
                &format!("name = \"web6\"\nprotocol = \"tcp\"\n{keys}"),
            );
        let mut h = Harness::new(&rules);
        let mut syn = from_client(FrameBuilder::tcp(sa(client), sa(vip), SYN));
        if let Some(tci) = vlan {
            syn = syn.vlan(tci);
        }
        let (v, _) = h.run(&syn.build(), 0, 1);
        if vlan.is_some() {
            // The interfaces are untagged: a tagged connection never opens,
            // and its later segments are refused the same way.
            let vlan_refused = Verdict::Drop(DropReason::VlanNotConfigured);
            assert_eq!(v, vlan_refused, "{name}: a tagged SYN");
            let input = dead_backend_frame(&format!("{name}.in.hex")).unwrap();
            assert_eq!(h.run(&input, 0, 2).0, vlan_refused, "{name}");
            continue;
        }
        assert_eq!(v, Verdict::Transmit(1), "{name}: the connection opens");
        // Its backend goes down; the control side rebuilds.
        let (_, service) = h
            .snapshot
            .lookup_service(
                6,
                &flowgate_dataplane::wire::addr_to_bytes(sa(vip).ip()),
                80,
            )
            .unwrap();
        let backend = service.endpoints()[0];
        h.snapshot.liveness().set_up(backend, false).unwrap();
        h.snapshot = flowgate_dataplane::table::Snapshot::build(&config(&rules), Some(&h.snapshot));

        let input = dead_backend_frame(&format!("{name}.in.hex")).unwrap();
        let expected = dead_backend_frame(&format!("{name}.out.hex"));
        assert!(frame_checksums_ok(&input), "{name}: scapy's input");
        let (v, out) = h.run(&input, 0, 2);
        assert_eq!(v, verdict, "{name}");
        match expected {
            Some(expected) => {
                assert!(frame_checksums_ok(&expected), "{name}: scapy's output");
                assert!(
                    out == expected,
                    "{name}:\n got:\n{}\n want:\n{}",
                    hex(&out),
                    hex(&expected)
                );
            }
            None => assert!(!matches!(v, Verdict::Transmit(_)), "{name}: sent"),
        }
        // Reset and drop forget the connection; keep does not.
        let again = h.run(&input, 0, 3).0;
        let forgotten = policy != "keep";
        let remembered = h.pipeline.counters().snapshot().flow_hits == 2;
        assert_eq!(
            (again, remembered),
            if forgotten {
                // A new flow now, refused: no backend is alive.
                (Verdict::Drop(DropReason::AllBackendsDown), false)
            } else {
                (Verdict::Transmit(1), true)
            },
            "{name}"
        );
    }
}

/// The gateway as it runs with the XDP program in front of the pipeline:
/// one program instance per port (as on each interface), run through
/// BPF_PROG_TEST_RUN, and the pipeline for what the program hands up. With
/// the fast path on, the connection table keeps the program's caches in
/// step as the daemon's workers do.
struct WithXdp {
    h: Harness,
    /// The rules the pipeline runs, and how many interfaces they name.
    rules: &'static str,
    ports: u16,
    programs: Vec<XdpTester>,
    /// The ports the fast path may send out of (`FastConfig::egress_ready`).
    egress_ready: u64,
    /// Frames the fast path forwarded.
    fast: usize,
}

impl WithXdp {
    /// Loads the two program instances (once per test: verifying the
    /// program takes a while); the fast path, if on, sends only out of the
    /// ports of `egress_ready`.
    fn new(fast_path: bool, egress_ready: u64) -> WithXdp {
        WithXdp::with_rules(GOLDEN_RULES, 2, fast_path, egress_ready)
    }

    /// [`new`](Self::new) for `rules`, whose interfaces are `ports`.
    fn with_rules(rules: &'static str, ports: u16, fast_path: bool, egress_ready: u64) -> WithXdp {
        let h = Harness::new(rules);
        let geometry = CacheGeometry::new(1, 1024);
        let owned = OwnedTraffic::from_snapshot(&h.snapshot);
        let mut programs = Vec::new();
        for port in 0..u32::from(ports) {
            let mut x = XdpTester::load(geometry).expect("loading the XDP program (needs root)");
            x.own(&owned).unwrap();
            let mac = h.snapshot.interface_mac(port as u16).unwrap();
            x.set_ingress(mac, h.snapshot.vlans().port(port as u16))
                .unwrap();
            // Loopback stands in for every interface: a test run
            // redirects nothing, it only reports the action.
            for p in 0..u32::from(ports) {
                x.set_tx_port(p, 1).unwrap();
            }
            let partitions = if fast_path { geometry.partitions } else { 0 };
            x.set_fast_config(FastConfig {
                partitions,
                slot_mask: geometry.slots - 1,
                port_index: port,
                egress_ready,
            })
            .unwrap();
            programs.push(x);
        }
        let mut sys = WithXdp {
            h,
            rules,
            ports,
            programs,
            egress_ready,
            fast: 0,
        };
        sys.reset(fast_path);
        sys
    }

    /// A fresh pipeline and connection table, and empty caches.
    fn reset(&mut self, fast_path: bool) {
        self.h = Harness::new(self.rules);
        self.fast = 0;
        for x in &self.programs {
            x.clear_cache();
        }
        if fast_path {
            if let Some(fast) = XdpTester::fast_path(&self.programs, self.h.flows.capacity()) {
                self.h.flows.set_fast_path(fast);
            }
        }
    }

    /// One frame in on `ingress`: the verdict and frame of whichever of
    /// the program and the pipeline decided it.
    fn run(&mut self, input: &[u8], ingress: u16, now_ns: u64) -> (Verdict, Vec<u8>) {
        let program = &self.programs[usize::from(ingress)];
        let outcome = program
            .outcome(
                input,
                ingress,
                self.ports,
                self.egress_ready,
                &self.h.snapshot,
            )
            .unwrap();
        match outcome {
            ProgramOutcome::Decided(verdict, frame) => {
                if matches!(verdict, Verdict::Transmit(_)) {
                    self.fast += 1;
                }
                (verdict, frame)
            }
            ProgramOutcome::HandedUp => {
                let result = self.h.run(input, ingress, now_ns);
                let generation = self.h.snapshot.generation();
                let snapshot = &self.h.snapshot;
                self.h
                    .flows
                    .sync_fast_path(generation, |c| connection_rewrites(c, snapshot));
                result
            }
        }
    }
}

/// Runs every fixture (frames from `frames`) through the program and the
/// pipeline with the fast path off, on, and on with port 1 unable to take
/// XDP frames (its packets handed up): each step gives the fixture's
/// verdict and frame every way; then every step's input is sent again (an
/// established connection's next packets) and all ways must still agree.
/// Returns how many frames the fast path forwarded, on and half on.
fn check_fixtures_with_xdp(frames: impl Fn(&Step) -> (Vec<u8>, Vec<u8>)) -> (usize, usize) {
    let (mut fast, mut fast_half) = (0, 0);
    let mut off = WithXdp::new(false, u64::MAX);
    let mut on = WithXdp::new(true, u64::MAX);
    let mut half = WithXdp::new(true, 0b01);
    for fixture in fixtures() {
        off.reset(false);
        on.reset(true);
        half.reset(true);
        let mut now = 1_000_000_000;
        for s in &fixture.steps {
            let (input, expected) = frames(s);
            now += 1_000;
            let systems = [
                ("off", &mut off),
                ("on", &mut on),
                ("on, port 1 not ready", &mut half),
            ];
            for (which, sys) in systems {
                let (verdict, out) = sys.run(&input, s.ingress, now);
                assert_eq!(
                    verdict, s.verdict,
                    "{} / {} (fast path {which}): verdict",
                    fixture.name, s.what
                );
                assert!(
                    out == expected,
                    "{} / {} (fast path {which}): frame differs\n got:\n{}\n want:\n{}",
                    fixture.name,
                    s.what,
                    hex(&out),
                    hex(&expected)
                );
            }
        }
        for round in 0..2 {
            for s in &fixture.steps {
                let (input, _) = frames(s);
                now += 1_000;
                let a = off.run(&input, s.ingress, now);
                for (which, sys) in [("on", &mut on), ("on, port 1 not ready", &mut half)] {
                    let b = sys.run(&input, s.ingress, now);
                    assert_eq!(
                        a.0, b.0,
                        "{} / {} again ({round}, {which}): verdict",
                        fixture.name, s.what
                    );
                    assert!(
                        a.1 == b.1,
                        "{} / {} again ({round}, {which}): frame differs\n off:\n{}\n on:\n{}",
                        fixture.name,
                        s.what,
                        hex(&a.1),
                        hex(&b.1)
                    );
                }
            }
        }
        assert_eq!(
            off.fast, 0,
            "{}: the fast path forwarded while off",
            fixture.name
        );
        for sys in [&off, &on, &half] {
            for x in &sys.programs {
                x.check_counters_accounted();
            }
        }
        fast += on.fast;
        fast_half += half.fast;
    }
    (fast, fast_half)
}

#[test]
fn fixtures_hold_through_the_xdp_program_with_the_fast_path_on_and_off() {
    let (fast, half) = check_fixtures_with_xdp(built_frames);
    // UDP answers and queries, and established TCP data both ways, at least.
    assert!(fast >= 10, "the fast path forwarded only {fast} frames");
    // With port 1 not ready, only what leaves through port 0 (replies to
    // clients, and a one-armed service's frames) goes fast.
    assert!(
        half > 0 && half < fast,
        "half ready: {half} of {fast} frames"
    );
}

#[test]
fn independent_frames_hold_through_the_xdp_program_with_the_fast_path_on_and_off() {
    let (fast, half) = check_fixtures_with_xdp(|s| match s.independent {
        Some(name) => {
            let (input, output) = independent_frames(name);
            let expected = output.unwrap_or_else(|| input.clone());
            (input, expected)
        }
        None => built_frames(s),
    });
    assert!(fast >= 10, "the fast path forwarded only {fast} frames");
    assert!(
        half > 0 && half < fast,
        "half ready: {half} of {fast} frames"
    );
}

/// How one frame of a fixture is changed: byte `at` (modulo the frame's
/// length) XORed with `mask` or set to `value`, or the frame cut to a
/// length.
#[derive(Clone, Debug)]
enum Mutation {
    Xor { at: usize, mask: u8 },
    Set { at: usize, value: u8 },
    Cut(usize),
}

/// Offsets the program and the pipeline decide on, untagged and with one
/// VLAN tag: IPv4 version and header length, total length, fragment
/// field, TTL, protocol; TCP data offset and flags, UDP length; IPv6
/// payload length, next header and hop limit.
const DECISIVE: [usize; 16] = [
    14, 16, 17, 20, 21, 22, 23, 46, 47, 38, 39, 18, 19, 26, 51, 42,
];
/// Values that cross the checks: 0, 1, flags, header lengths, all ones.
const VALUES: [u8; 12] = [
    0, 1, 2, 0x01, 0x04, 0x10, 0x12, 0x45, 0x46, 0x50, 0x80, 0xff,
];

fn mutation() -> impl Strategy<Value = Mutation> {
    let decisive = prop::sample::select(DECISIVE.to_vec());
    let value = prop::sample::select(VALUES.to_vec());
    prop_oneof![
        3 => (0..80usize, 1..=255u8).prop_map(|(at, mask)| Mutation::Xor { at, mask }),
        1 => (80..1600usize, 1..=255u8).prop_map(|(at, mask)| Mutation::Xor { at, mask }),
        4 => (decisive, value).prop_map(|(at, value)| Mutation::Set { at, value }),
        // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header.
        1 => (14..100usize).prop_map(Mutation::Cut),
    ]
}

impl Mutation {
    fn apply(&self, frame: &[u8]) -> Vec<u8> {
        let mut f = frame.to_vec();
        let len = f.len().max(1);
        match *self {
            Mutation::Xor { at, mask } => {
                if let Some(b) = f.get_mut(at % len) {
                    *b ^= mask;
                }
            }
            Mutation::Set { at, value } => {
                if let Some(b) = f.get_mut(at % len) {
                    *b = value;
                }
            }
            Mutation::Cut(len) => f.truncate(len),
        }
        f
    }
}

/// Random changes to the golden fixtures' frames, sent after each
/// fixture's own steps (which set its connections up, so that the fast
/// path has entries to use), must give the same verdict and the same
/// frame with the fast path off, on, and on with port 1 unable to take XDP
/// frames: whatever the program forwards itself, the pipeline would have
/// forwarded the same way, and whatever it hands up reaches the pipeline
/// untouched. The program runs through BPF_PROG_TEST_RUN; the three
/// systems are loaded once and reset for each case.
#[test]
fn mutated_frames_of_established_connections_give_the_same_output_with_the_fast_path_on_and_off() {
    use proptest::test_runner::{Config, TestRunner};
    use std::cell::RefCell;

    let fixtures = fixtures();
    let systems = RefCell::new((
        WithXdp::new(false, u64::MAX),
        WithXdp::new(true, u64::MAX),
        WithXdp::new(true, 0b01),
    ));
    let fast = RefCell::new(0usize);
    // 128 cases: with fixtures the fast path does not carry (VLANs,
    // ingress drops, fan-out), 64 left the fast path about 60 frames.
    let mut runner = TestRunner::new(Config {
        cases: 128,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        0..fixtures.len(),
        prop::collection::vec((0..16usize, mutation()), 1..24),
    );
    runner
        .run(&strategy, |(which, changes)| {
            let fixture = &fixtures[which];
            let (off, on, half) = &mut *systems.borrow_mut();
            off.reset(false);
            on.reset(true);
            half.reset(true);
            let mut now = 1_000_000_000;
            for s in &fixture.steps {
                now += 1_000;
                for sys in [&mut *off, &mut *on, &mut *half] {
                    sys.run(&s.input, s.ingress, now);
                }
            }
            for (i, (index, change)) in changes.iter().enumerate() {
                let s = &fixture.steps[index % fixture.steps.len()];
                // Every other change is the step's frame as it is: the
                // connection's next packet, which the fast path forwards.
                let input = if i % 2 == 0 {
                    change.apply(&s.input)
                } else {
                    s.input.clone()
                };
                now += 1_000;
                let a = off.run(&input, s.ingress, now);
                for (name, sys) in [("on", &mut *on), ("on, port 1 not ready", &mut *half)] {
                    let b = sys.run(&input, s.ingress, now);
                    prop_assert_eq!(
                        &a.0,
                        &b.0,
                        "{} / {} {:?} ({}): verdict",
                        fixture.name,
                        s.what,
                        change,
                        name
                    );
                    prop_assert!(
                        a.1 == b.1,
                        "{} / {} {:?} ({}): frame differs\n off:\n{}\n on:\n{}",
                        fixture.name,
                        s.what,
                        change,
                        name,
                        hex(&a.1),
                        hex(&b.1)
                    );
                }
            }
            *fast.borrow_mut() += on.fast;
            prop_assert_eq!(off.fast, 0);
            Ok(())
        })
        .unwrap();
    let fast = fast.into_inner();
    assert!(fast > 64, "the fast path forwarded only {fast} frames");
}

/// Rules of tests/golden/make_fanout.py's cases: fan-out services over
/// three backends, IPv4 and IPv6, replies `REPLIES`.
const FANOUT_RULES: &str = r#"
[[interfaces]]
name = "fg-client"
mac = "02:66:67:00:00:01"
[[interfaces]]
name = "fg-backend"
mac = "02:66:67:00:01:01"

[[neighbours]]
address = "198.18.1.11"
mac = "02:66:67:00:01:11"
interface = "fg-backend"
[[neighbours]]
address = "198.18.1.12"
mac = "02:66:67:00:01:12"
interface = "fg-backend"
[[neighbours]]
address = "198.18.1.13"
mac = "02:66:67:00:01:13"
interface = "fg-backend"
[[neighbours]]
address = "2001:2:0:1::11"
mac = "02:66:67:00:01:11"
interface = "fg-backend"
[[neighbours]]
address = "2001:2:0:1::12"
mac = "02:66:67:00:01:12"
interface = "fg-backend"
[[neighbours]]
address = "2001:2:0:1::13"
mac = "02:66:67:00:01:13"
interface = "fg-backend"

[[services]]
name = "publish"
protocol = "udp"
vip = "198.18.100.20"
port = 9000
scheduler = "fanout"
fanout_replies = "REPLIES"
[[services.backends]]
address = "198.18.1.11"
port = 7000
[[services.backends]]
address = "198.18.1.12"
port = 7000
[[services.backends]]
address = "198.18.1.13"
port = 7000

[[services]]
name = "publish6"
protocol = "udp"
vip = "2001:2:0:100::20"
port = 9000
scheduler = "fanout"
fanout_replies = "REPLIES"
[[services.backends]]
address = "2001:2:0:1::11"
port = 7000
[[services.backends]]
address = "2001:2:0:1::12"
port = 7000
[[services.backends]]
address = "2001:2:0:1::13"
port = 7000
"#;

fn fanout_frame(file: &str) -> Option<Vec<u8>> {
    golden_frame("fanout", file)
}

/// Each case of tests/golden/make_fanout.py through `flowgate replay`: the
/// client's datagram comes out once per backend, and the backends'
/// replies come out from the VIP — all three, or only the first.
#[test]
fn fanout_datagrams_and_replies_replay_to_the_independent_frames() {
    for (name, replies) in [
        ("ipv4_all", "all"),
        ("ipv4_first", "first"),
        ("ipv6_all", "all"),
        ("ipv6_first", "first"),
    ] {
        let config = common::config(&FANOUT_RULES.replace("REPLIES", replies));
        let file = |part: &str| fanout_frame(&format!("{name}.{part}.hex"));
        let mut inputs = vec![file("request.in").unwrap()];
        let mut expected: Vec<Vec<u8>> = (1..=3)
            .map(|k| file(&format!("request.out.{k}")).unwrap())
            .collect();
        for k in 1..=3 {
            inputs.push(file(&format!("reply.{k}.in")).unwrap());
            expected.extend(file(&format!("reply.{k}.out")));
        }
        let want_replies = if replies == "all" { 3 } else { 1 };
        assert_eq!(expected.len(), 3 + want_replies, "{name}: fixture files");
        for f in inputs.iter().chain(&expected) {
            assert!(frame_checksums_ok(f), "{name}: scapy's frame\n{}", hex(f));
        }

        let mut input = pcap::PcapWriter::new(Vec::new()).unwrap();
        for (i, f) in inputs.iter().enumerate() {
            input.write((i as u64 + 1) * 1_000, f).unwrap();
        }
        let input = input.finish().unwrap();
        let mut out = Vec::new();
        let report = replay(
            &config,
            &input[..],
            &mut out,
            None,
            &ReplayOptions::default(),
        )
        .unwrap();
        let mut reader = pcap::PcapReader::new(&out[..]).unwrap();
        let mut got = Vec::new();
        while let Some(r) = reader.next_record().unwrap() {
            got.push(r.data);
        }
        got.sort();
        expected.sort();
        assert_eq!(got.len(), expected.len(), "{name}: frames out");
        for (g, e) in got.iter().zip(&expected) {
            assert!(
                g == e,
                "{name}: a frame differs\n got:\n{}\n want:\n{}",
                hex(g),
                hex(e)
            );
        }
        let c = &report.counters;
        assert_eq!((c.fanout_datagrams, c.fanout_copies), (1, 2), "{name}");
        let suppressed = c.drops.get("fanout_reply_after_first").copied();
        assert_eq!(suppressed.unwrap_or(0), 3 - want_replies as u64, "{name}");
        assert_eq!(
            report.active_connections, 0,
            "{name}: not in the connection table"
        );
    }
}

/// The rules of the routing golden cases (tests/golden/make_routing.py):
/// `web` and `web6` over six backends each (hosts 11–16, the same labels
/// in both families), client classes with SETs and zones for both
/// families, a zone priority, distribution paths and a canary given by
/// client prefixes (share 0, so that no flow's draw is involved).
///
/// | host | name | SET | zone | group |
/// |---|---|---|---|---|
/// | 11 | a1 | shop.sh.g1 | dc-a | |
/// | 12 | b1 | shop.sh.g1 | dc-b | |
/// | 13 | a2 | shop.sh.g2 | dc-a | |
/// | 14 | c0 | | dc-c | |
/// | 15 | v2 | | | v2 (the canary) |
/// | 16 | d0 | | dc-d | |
fn routing_rules() -> String {
    let mut s = String::from(
        "[[interfaces]]\nname = \"fg-client\"\nmac = \"02:66:67:00:00:01\"\n\n\
         [[interfaces]]\nname = \"fg-backend\"\nmac = \"02:66:67:00:01:01\"\n",
    );
    for host in ROUTING_HOSTS {
        for address in [format!("198.18.1.{host}"), format!("2001:2:0:1::{host}")] {
            s += &format!(
                "\n[[neighbours]]\naddress = \"{address}\"\nmac = \"02:66:67:00:01:{host}\"\n\
                 interface = \"fg-backend\"\n"
            );
        }
    }
    s += "\n[routing]\nzone_priority = [\"dc-c\", \"dc-b\"]\n";
    for (net4, net6, labels) in [
        (
            "198.18.10.0/24",
            "2001:2:0:10::/64",
            "set = \"shop.sh.g1\"\nzone = \"dc-a\"",
        ),
        (
            "198.18.11.0/24",
            "2001:2:0:11::/64",
            "set = \"shop.sh.g2\"\nzone = \"dc-b\"",
        ),
        ("198.18.12.0/24", "2001:2:0:12::/64", "zone = \"dc-d\""),
        ("198.18.61.0/24", "2001:2:0:61::/64", "zone = \"dc-d\""),
    ] {
        for prefix in [net4, net6] {
            s += &format!("\n[[routing.classes]]\nprefix = \"{prefix}\"\n{labels}\n");
        }
    }
    let services = [
        (
            "web",
            "198.18.100.10",
            "198.18.1.",
            &[
                ("198.18.50.5", "b1"),
                ("198.18.10.50", "c0"),
                ("198.18.10.51", "d0"),
            ][..],
            "\"198.18.60.0/24\", \"198.18.61.0/24\"",
        ),
        (
            "web6",
            "2001:2:0:100::10",
            "2001:2:0:1::",
            &[("2001:2:0:50::5", "b1")][..],
            "\"2001:2:0:60::/64\"",
        ),
    ];
    for (name, vip, net, paths, canary) in services {
        s += &format!(
            "\n[[services]]\nname = \"{name}\"\nprotocol = \"tcp\"\nvip = \"{vip}\"\nport = 80\n\
             maglev_table_size = 1009\n\n[services.canary]\ngroup = \"v2\"\nshare = 0\n\
             clients = [{canary}]\n"
        );
        for (client, backend) in paths {
            s += &format!(
                "\n[[services.paths]]\nclient = \"{client}\"\nbackends = [\"{backend}\"]\n"
            );
        }
        for (host, backend, labels) in [
            (11, "a1", "set = \"shop.sh.g1\"\nzone = \"dc-a\""),
            (12, "b1", "set = \"shop.sh.g1\"\nzone = \"dc-b\""),
            (13, "a2", "set = \"shop.sh.g2\"\nzone = \"dc-a\""),
            (14, "c0", "zone = \"dc-c\""),
            (15, "v2", "group = \"v2\""),
            (16, "d0", "zone = \"dc-d\""),
        ] {
            s += &format!(
                "\n[[services.backends]]\naddress = \"{net}{host}\"\nport = 8080\nname = \"{backend}\"\n{labels}\n"
            );
        }
    }
    s
}

/// The backend hosts of [`routing_rules`].
const ROUTING_HOSTS: [u8; 6] = [11, 12, 13, 14, 15, 16];

/// The stage of the decision a routing case is about, as the pipeline's
/// routing counters count it.
#[derive(Clone, Copy, Debug)]
enum Stage {
    /// A distribution path placed it.
    Path,
    /// Its path's backends were down: counted, and the rest decided.
    PathFallback,
    /// Its SET placed it, on the plan's first step.
    Set,
    /// Its SET had nothing alive: dropped.
    SetClosed,
    /// Its own zone placed it (a client of no SET).
    Zone,
    /// A later step of the plan: the zone priority.
    ZoneFallback,
    /// The canary took it.
    Canary,
}

/// One case of tests/golden/make_routing.py.
struct RoutingCase {
    name: &'static str,
    /// The client's address and port; the VIP is the service of its family.
    client: &'static str,
    /// Hosts whose backends (of the case's service) are down.
    down: &'static [u8],
    /// The host that gets the SYN; `None`: dropped.
    backend: Option<u8>,
    stage: Stage,
}

const fn rc(
    name: &'static str,
    client: &'static str,
    down: &'static [u8],
    backend: Option<u8>,
    stage: Stage,
) -> RoutingCase {
    RoutingCase {
        name,
        client,
        down,
        backend,
        stage,
    }
}

const ROUTING_CASES: [RoutingCase; 15] = [
    rc("path_ipv4", "198.18.50.5:41000", &[], Some(12), Stage::Path),
    rc(
        "path_ipv6",
        "[2001:2:0:50::5]:41001",
        &[],
        Some(12),
        Stage::Path,
    ),
    rc("set_ipv4", "198.18.11.7:41002", &[], Some(13), Stage::Set),
    rc(
        "set_ipv6",
        "[2001:2:0:11::7]:41003",
        &[],
        Some(13),
        Stage::Set,
    ),
    rc(
        "set_fails_closed_ipv4",
        "198.18.11.8:41004",
        &[13],
        None,
        Stage::SetClosed,
    ),
    rc("zone_ipv4", "198.18.12.7:41005", &[], Some(16), Stage::Zone),
    rc(
        "zone_fallback_ipv4",
        "198.18.12.8:41006",
        &[16],
        Some(14),
        Stage::ZoneFallback,
    ),
    rc(
        "zone_fallback_ipv6",
        "[2001:2:0:12::8]:41007",
        &[16],
        Some(14),
        Stage::ZoneFallback,
    ),
    rc(
        "canary_ipv4",
        "198.18.60.9:41008",
        &[],
        Some(15),
        Stage::Canary,
    ),
    rc(
        "canary_ipv6",
        "[2001:2:0:60::9]:41009",
        &[],
        Some(15),
        Stage::Canary,
    ),
    rc(
        "path_before_set_ipv4",
        "198.18.10.50:41010",
        &[],
        Some(14),
        Stage::Path,
    ),
    rc(
        "path_down_falls_to_set_and_zone_ipv4",
        "198.18.10.51:41011",
        &[16],
        Some(11),
        Stage::PathFallback,
    ),
    rc(
        "set_zone_fallback_ipv4",
        "198.18.10.7:41012",
        &[11],
        Some(12),
        Stage::ZoneFallback,
    ),
    rc(
        "canary_before_zone_ipv4",
        "198.18.61.7:41013",
        &[],
        Some(15),
        Stage::Canary,
    ),
    rc(
        "set_zone_fallback_ipv6",
        "[2001:2:0:10::7]:41014",
        &[11],
        Some(12),
        Stage::ZoneFallback,
    ),
];

/// tests/golden/routing/`file`, as [`read_hex_frame`] reads frames.
fn routing_frame(file: &str) -> Option<Vec<u8>> {
    golden_frame("routing", file)
}

/// A harness running [`routing_rules`] as the daemon does: the paths in a
/// path table beside the snapshot, which the pipeline reads, and the
/// snapshot built again so that the paths' backend names resolve.
fn routing_harness(rules: &str) -> Harness {
    use flowgate_dataplane::table::{PathRouting, Snapshot};
    let mut h = Harness::new(rules);
    let config = config(rules);
    let mut paths = PathRouting::new(1 << 10, &h.snapshot);
    if paths.load(&config, &h.snapshot).unwrap() {
        h.snapshot = Snapshot::build(&config, Some(&h.snapshot));
    }
    h.pipeline.set_paths(paths.reader());
    h
}

/// Marks the backends on `hosts` of the service at `vip`:80 down, then
/// rebuilds the snapshot, as the control side does after a transition.
fn routing_down(h: &mut Harness, rules: &str, vip: std::net::IpAddr, hosts: &[u8]) {
    use flowgate_dataplane::wire::addr_to_bytes;
    let (_, service) = h
        .snapshot
        .lookup_service(6, &addr_to_bytes(vip), 80)
        .unwrap();
    for &host in hosts {
        let want = addr_to_bytes(match vip {
            std::net::IpAddr::V4(_) => format!("198.18.1.{host}").parse().unwrap(),
            std::net::IpAddr::V6(_) => format!("2001:2:0:1::{host}").parse().unwrap(),
        });
        let id = *service
            .endpoints()
            .iter()
            .find(|&&e| h.snapshot.endpoint(e).unwrap().address == want)
            .unwrap();
        h.snapshot.liveness().set_up(id, false).unwrap();
    }
    h.snapshot = flowgate_dataplane::table::Snapshot::build(&config(rules), Some(&h.snapshot));
}

#[test]
fn each_routing_policy_and_their_combinations_give_the_golden_frames() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/routing");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".in.hex").map(str::to_owned)
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<&str> = ROUTING_CASES.iter().map(|c| c.name).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "every committed case is tested");

    let rules = routing_rules();
    for case in ROUTING_CASES {
        let RoutingCase {
            name,
            client,
            down,
            backend,
            stage,
        } = case;
        let client = sa(client);
        let vip = if client.is_ipv4() {
            sa("198.18.100.10:80")
        } else {
            sa("[2001:2:0:100::10]:80")
        };
        let mut h = routing_harness(&rules);
        routing_down(&mut h, &rules, vip.ip(), down);

        let input = routing_frame(&format!("{name}.in.hex")).unwrap();
        let expected = routing_frame(&format!("{name}.out.hex"));
        assert!(frame_checksums_ok(&input), "{name}: scapy's input");
        let built = from_client(FrameBuilder::tcp(client, vip, SYN))
            .ttl(64)
            .build();
        assert!(
            built == input,
            "{name}: the builder's input differs from scapy's\n builder:\n{}\n scapy:\n{}",
            hex(&built),
            hex(&input)
        );
        let (verdict, out) = h.run(&input, 0, 1);
        match (backend, expected) {
            (Some(host), Some(expected)) => {
                assert_eq!(verdict, Verdict::Transmit(1), "{name}");
                assert!(frame_checksums_ok(&expected), "{name}: scapy's output");
                let to = match vip.ip() {
                    std::net::IpAddr::V4(_) => format!("198.18.1.{host}:8080"),
                    std::net::IpAddr::V6(_) => format!("[2001:2:0:1::{host}]:8080"),
                };
                let mac = [
                    0x02,
                    0x66,
                    0x67,
                    0,
                    0x01,
                    u8::from_str_radix(&host.to_string(), 16).unwrap(),
                ];
                let built = FrameBuilder::tcp(client, sa(&to), SYN)
                    .macs(GW_BACKEND_MAC, mac)
                    .ttl(63)
                    .build();
                assert!(
                    built == expected,
                    "{name}: the builder's output differs from scapy's"
                );
                assert!(
                    out == expected,
                    "{name}:\n got:\n{}\n want:\n{}",
                    hex(&out),
                    hex(&expected)
                );
            }
            (None, None) => assert_eq!(
                verdict,
                Verdict::Drop(DropReason::AllBackendsDown),
                "{name}: a SET fails closed"
            ),
            (want, file) => panic!("{name}: case says {want:?}, files say {}", file.is_some()),
        }
        let c = h.pipeline.route_counters().snapshot();
        let decided = match stage {
            Stage::Path => c.path_flows,
            Stage::PathFallback => c.path_fallbacks.min(c.set_flows),
            Stage::Set => c.set_flows,
            Stage::SetClosed => c.set_closed,
            Stage::Zone => c.first_choice,
            Stage::ZoneFallback => c.fallbacks,
            Stage::Canary => c.canary_flows,
        };
        assert_eq!(decided, 1, "{name}: {stage:?} did not decide: {c:?}");
    }
}

/// A frame of tests/golden/resets/ (tests/golden/make_resets.py: a refused
/// segment, `.in.hex`, and the RST RFC 793 gives for it, `.out.hex`).
fn reset_frame(file: &str) -> Vec<u8> {
    golden_frame("resets", file).unwrap_or_else(|| panic!("tests/golden/resets/{file}: missing"))
}

/// Each limit of `[services.limits]`, with each `over_limit`, on scapy's
/// segments to web and web6 (tests/golden/resets/, the cases whose port is
/// a service's): the limit is used up by a first SYN, then the segment is a
/// new flow over it, dropped, or answered with scapy's RST byte for byte
/// and sent back out of the port it came in on.
#[test]
fn each_limit_refuses_a_new_flow_with_a_drop_or_scapys_rst() {
    // (limit, its keys, the client of the SYN that uses it up: v4, v6).
    let limits = [
        (
            "service_rate",
            "max_new_flows_per_s = 1\nnew_flows_burst = 1",
            ("198.18.7.7:1000", "[2001:2:7::7]:1000"),
        ),
        (
            // Another host of the client's /24 or /64: the same client.
            "client_rate",
            "client_max_new_flows_per_s = 1\nclient_new_flows_burst = 1\n\
             client_prefix_v4 = 24\nclient_prefix_v6 = 64",
            ("198.18.0.200:1000", "[2001:2::200]:1000"),
        ),
        (
            "backend_cap",
            "max_connections = 1",
            ("198.18.7.7:1000", "[2001:2:7::7]:1000"),
        ),
    ];
    let cases = [
        ("ipv4_syn", false),
        ("ipv6_syn", true),
        ("ipv4_options_syn", false),
        ("vlan_ipv4_syn", false),
        ("qinq_ipv6_syn", true),
        ("ipv4_ack_midstream", false),
        ("ipv6_fin_ack", true),
    ];
    for (limit, keys, (prime4, prime6)) in limits {
        for action in ["drop", "reset"] {
            let table = format!("[services.limits]\n{keys}\nover_limit = \"{action}\"\n");
            let rules = GOLDEN_RULES
                .replace(
                    "port = 80\n[[services.backends]]\naddress = \"198.18.1.11\"",
                    &format!("port = 80\n{table}[[services.backends]]\naddress = \"198.18.1.11\""),
                )
                .replace(
                    "port = 80\n[[services.backends]]\naddress = \"2001:2:0:1::11\"",
                    &format!(
                        "port = 80\n{table}[[services.backends]]\naddress = \"2001:2:0:1::11\""
                    ),
                );
            for (case, v6) in cases {
                let what = format!("{limit} {action} {case}");
                let mut h = Harness::new(&rules);
                let (prime, vip) = if v6 {
                    (prime6, "[2001:2:0:100::10]:80")
                } else {
                    (prime4, "198.18.100.10:80")
                };
                let first = from_client(FrameBuilder::tcp(sa(prime), sa(vip), SYN)).build();
                assert_eq!(h.run(&first, 0, 1).0, Verdict::Transmit(1), "{what}: first");
                let input = reset_frame(&format!("{case}.in.hex"));
                let (v, out) = h.run(&input, 0, 1);
                if case.starts_with("vlan_") || case.starts_with("qinq_") {
                    // The interfaces are untagged: refused before any limit.
                    let vlan_refused = Verdict::Drop(DropReason::VlanNotConfigured);
                    assert_eq!(v, vlan_refused, "{what}");
                    continue;
                }
                if action == "drop" {
                    assert_eq!(v, Verdict::Drop(DropReason::OverLimit), "{what}");
                    continue;
                }
                let expected = reset_frame(&format!("{case}.out.hex"));
                assert_eq!(v, Verdict::Transmit(0), "{what}");
                assert!(
                    out == expected,
                    "{what}:\n got\n{}\n want\n{}",
                    hex(&out),
                    hex(&expected)
                );
                assert!(frame_checksums_ok(&out), "{what}");
                let counters = h.pipeline.admission().counters().snapshot();
                assert_eq!(counters.refused(), 1, "{what}");
                let reason = flowgate_dataplane::admission::Refusal::ALL
                    .into_iter()
                    .find(|r| r.name() == limit)
                    .unwrap();
                assert_eq!(counters.refused_for(reason), 1, "{what}");
                assert_eq!(counters.resets_sent, 1, "{what}");
            }
        }
    }
}
