//! Writes `configs/demo-traffic.pcap`: recorded traffic for the demo rules.
//!
//! It emulates the demo topology of `configs/demo.toml`: a client opening
//! HTTP connections to the `web`, `web-wrr` and `web6` services and sending
//! DNS queries to `dns`, the backends answering (each reply comes from the
//! backend the gateway picked, so a model gateway runs the rules to learn
//! which), and the background noise every gateway sees: ARP, a ping and an
//! SSH connection to the gateway itself, a packet with TTL 1, a fragment to
//! a VIP and a truncated frame.
//!
//! Usage: `cargo run -p flowgate-dataplane --features testkit --example demo_traffic -- OUT.pcap`
//! (the frame builder is a test helper, behind the feature `testkit`).
//! The output is deterministic; a test checks the shipped file matches.

use std::net::{IpAddr, SocketAddr};

use flowgate_dataplane::flow::{FlowTable, FlowTimeouts};
use flowgate_dataplane::pipeline::{Pipeline, Verdict};
use flowgate_dataplane::replay::pcap::PcapWriter;
use flowgate_dataplane::rules::{self, Config};
use flowgate_dataplane::table::Snapshot;
use flowgate_dataplane::wire::builder::FrameBuilder;
use flowgate_dataplane::wire::{self, tcp_flags};

const GW_CLIENT_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x01];
const GW_BACKEND_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0x01, 0x01];
const CLIENT_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x02];
/// 2026-11-21 00:00:00 UTC, in nanoseconds.
const START_NS: u64 = 1_795_219_200 * 1_000_000_000;

/// The demo capture, built from the rules in `config_text`.
pub fn demo_capture(config_text: &str) -> Vec<u8> {
    let config = rules::load_str(config_text, "configs/demo.toml").expect("demo rules are valid");
    let mut cap = Capture::new(&config);
    let web: SocketAddr = "198.18.100.10:80".parse().unwrap();
    let web_wrr: SocketAddr = "198.18.100.11:80".parse().unwrap();
    let web6: SocketAddr = "[2001:2:0:100::10]:80".parse().unwrap();
    let dns: SocketAddr = "198.18.100.10:53".parse().unwrap();
    let client4: IpAddr = "198.18.0.2".parse().unwrap();
    let client6: IpAddr = "2001:2::2".parse().unwrap();

    cap.push(
        FrameBuilder::arp_request(
            CLIENT_MAC,
            "198.18.0.2".parse().unwrap(),
            "198.18.0.1".parse().unwrap(),
        )
        .build(),
    );
    for i in 0..200u16 {
        cap.http(SocketAddr::new(client4, 20_000 + i), web);
    }
    for i in 0..60u16 {
        cap.http(SocketAddr::new(client4, 30_000 + i), web_wrr);
    }
    for i in 0..50u16 {
        cap.http(SocketAddr::new(client6, 40_000 + i), web6);
    }
    for i in 0..100u16 {
        cap.dns(SocketAddr::new(client4, 50_000 + i), dns);
    }
    // Background: the gateway's own traffic goes to its kernel.
    cap.push(
        client(FrameBuilder::icmp_echo_request(
            client4,
            "198.18.0.1".parse().unwrap(),
        ))
        .build(),
    );
    cap.push(
        client(FrameBuilder::tcp(
            SocketAddr::new(client4, 60_000),
            "198.18.0.1:22".parse().unwrap(),
            tcp_flags::SYN,
        ))
        .build(),
    );
    // And what it must refuse.
    cap.push(
        client(FrameBuilder::tcp(
            SocketAddr::new(client4, 60_001),
            web,
            tcp_flags::SYN,
        ))
        .ttl(1)
        .build(),
    );
    cap.push(
        client(FrameBuilder::udp(SocketAddr::new(client4, 60_002), dns))
            .payload(&[0; 64])
            .fragment(0, true)
            .build(),
    );
    let truncated = client(FrameBuilder::tcp(
        SocketAddr::new(client4, 60_003),
        web,
        tcp_flags::SYN,
    ))
    .build();
    cap.push(truncated[..30].to_vec());
    cap.finish()
}

fn client(b: FrameBuilder) -> FrameBuilder {
    b.macs(CLIENT_MAC, GW_CLIENT_MAC).ttl(64)
}

/// The capture being written, and a model gateway that tells which backend
/// each connection reaches (so the backend's replies come from it).
struct Capture {
    out: PcapWriter<Vec<u8>>,
    now_ns: u64,
    model: Pipeline,
    flows: FlowTable,
    snapshot: Snapshot,
    config: Config,
}

impl Capture {
    fn new(config: &Config) -> Self {
        Capture {
            out: PcapWriter::new(Vec::new()).unwrap(),
            now_ns: START_NS,
            model: Pipeline::new(),
            flows: FlowTable::new(4_096, FlowTimeouts::default()),
            snapshot: Snapshot::build(config, None),
            config: config.clone(),
        }
    }

    fn push(&mut self, frame: Vec<u8>) {
        self.out.write(self.now_ns, &frame).unwrap();
        self.now_ns += 100_000; // 100 µs apart
    }

    /// Where the gateway sends this client frame: the backend's address
    /// and MAC.
    fn backend_of(&mut self, frame: &[u8]) -> (SocketAddr, [u8; 6]) {
        let mut f = frame.to_vec();
        let v = self
            .model
            .process_frame(&mut f, 0, &self.snapshot, &mut self.flows, self.now_ns);
        assert!(
            matches!(v, Verdict::Transmit(_)),
            "demo traffic must be forwarded"
        );
        let t = wire::parse(&f).unwrap().tuple;
        let backend = SocketAddr::new(t.dst_ip(), t.dst_port);
        let mac = self
            .config
            .neighbour(backend.ip())
            .expect("backend has a neighbour")
            .mac;
        (backend, mac)
    }

    /// One HTTP exchange: handshake, request, response, close.
    fn http(&mut self, from: SocketAddr, vip: SocketAddr) {
        use tcp_flags::{ACK, FIN, PSH, SYN};
        let c = |flags| client(FrameBuilder::tcp(from, vip, flags));
        let syn = c(SYN).build();
        let (backend, mac) = self.backend_of(&syn);
        let b = |flags| {
            FrameBuilder::tcp(backend, from, flags)
                .macs(mac, GW_BACKEND_MAC)
                .ttl(64)
        };
        let request = format!("GET / HTTP/1.1\r\nHost: {vip}\r\n\r\n");
        let response =
            format!("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Served-By: {backend}\r\n\r\n");
        self.push(syn);
        self.push(b(SYN | ACK).build());
        self.push(c(ACK).build());
        self.push(c(PSH | ACK).payload(request.as_bytes()).build());
        self.push(b(PSH | ACK).payload(response.as_bytes()).build());
        self.push(c(FIN | ACK).build());
        self.push(b(FIN | ACK).build());
        self.push(c(ACK).build());
    }

    /// One DNS-like query and its answer.
    fn dns(&mut self, from: SocketAddr, vip: SocketAddr) {
        let query = client(FrameBuilder::udp(from, vip))
            .payload(b"query demo.example A")
            .build();
        let (backend, mac) = self.backend_of(&query);
        self.push(query);
        self.push(
            FrameBuilder::udp(backend, from)
                .macs(mac, GW_BACKEND_MAC)
                .ttl(64)
                .payload(format!("answer from {backend}").as_bytes())
                .build(),
        );
    }

    fn finish(self) -> Vec<u8> {
        self.out.finish().unwrap()
    }
}

#[allow(dead_code)]
fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "configs/demo-traffic.pcap".into());
    let config_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/demo.toml");
    let text = std::fs::read_to_string(config_path).expect("read configs/demo.toml");
    std::fs::write(&path, demo_capture(&text)).expect("write the capture");
    println!("wrote {path}");
}
