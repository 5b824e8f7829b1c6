//! Shared fixtures of the integration tests: a rule set whose services have
//! one backend each (so every expected output frame is fixed), and helpers
//! to run frames through the pipeline.
#![allow(dead_code)]

use std::net::SocketAddr;

use flowgate_dataplane::flow::{FlowTable, FlowTimeouts};
use flowgate_dataplane::pipeline::{Pipeline, Verdict};
use flowgate_dataplane::rules::{self, Config};
use flowgate_dataplane::table::Snapshot;
use flowgate_dataplane::wire::builder::FrameBuilder;

/// MAC of the gateway's client-facing interface (port 0).
pub const GW_CLIENT_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x01];
/// MAC of the gateway's backend-facing interface (port 1).
pub const GW_BACKEND_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0x01, 0x01];
/// The client's (or its router's) MAC.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x02];
/// Backend 1's MAC.
pub const BACKEND1_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0x01, 0x11];
/// Backend 2's MAC.
pub const BACKEND2_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0x01, 0x12];

/// Rules with one backend per service, so expected frames are fixed.
pub const GOLDEN_RULES: &str = r#"
[ingress]
bogons = ["198.19.250.0/24", "2001:2:bad::/48"]

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
address = "2001:2:0:1::11"
mac = "02:66:67:00:01:11"
interface = "fg-backend"

# Clients the gateway has a neighbour entry for: a backend's reply with no
# connection can reach them.
[[neighbours]]
address = "198.18.0.3"
mac = "02:66:67:00:00:02"
interface = "fg-client"

[[neighbours]]
address = "2001:2::3"
mac = "02:66:67:00:00:02"
interface = "fg-client"

[[services]]
name = "web"
protocol = "tcp"
vip = "198.18.100.10"
port = 80
[[services.backends]]
address = "198.18.1.11"
port = 8080

[[services]]
name = "dns"
protocol = "udp"
vip = "198.18.100.10"
port = 53
[[services.backends]]
address = "198.18.1.11"
port = 5353

[[services]]
name = "web6"
protocol = "tcp"
vip = "2001:2:0:100::10"
port = 80
[[services.backends]]
address = "2001:2:0:1::11"
port = 8080

[[services]]
name = "dns6"
protocol = "udp"
vip = "2001:2:0:100::10"
port = 53
[[services.backends]]
address = "2001:2:0:1::11"
port = 5353

# Two services share one backend: its replies name no single VIP.
[[services]]
name = "shared-a"
protocol = "tcp"
vip = "198.18.100.11"
port = 80
[[services.backends]]
address = "198.18.1.12"
port = 8080

[[services]]
name = "shared-b"
protocol = "tcp"
vip = "198.18.100.12"
port = 80
[[services.backends]]
address = "198.18.1.12"
port = 8080
"#;

/// Parses a rule set or fails the test with the loader's message.
pub fn config(text: &str) -> Config {
    rules::load_str(text, "test.toml").unwrap_or_else(|e| panic!("test rules invalid:\n{e}"))
}

/// Socket address shorthand.
pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A pipeline, its connection table and a snapshot of `rules`, with a
/// helper to push one frame through.
pub struct Harness {
    pub pipeline: Pipeline,
    pub flows: FlowTable,
    pub snapshot: Snapshot,
}

impl Harness {
    pub fn new(rules: &str) -> Self {
        let config = config(rules);
        Harness {
            pipeline: Pipeline::new(),
            flows: FlowTable::new(4096, FlowTimeouts::from(&config.flows)),
            snapshot: Snapshot::build(&config, None),
        }
    }

    /// Runs `frame` (arriving on port `ingress`) at time `now_ns`; returns
    /// the verdict and the frame as the pipeline left it (an answer written
    /// over it, such as a RST, at its own length). The frame has room past
    /// its end for a VLAN tag, as frames in a frame memory have.
    pub fn run(&mut self, frame: &[u8], ingress: u16, now_ns: u64) -> (Verdict, Vec<u8>) {
        let mut buf = frame.to_vec();
        buf.resize(frame.len() + 4, 0);
        let (v, len) = self.pipeline.process_frame_in(
            &mut buf,
            frame.len(),
            ingress,
            &self.snapshot,
            &mut self.flows,
            now_ns,
        );
        buf.truncate(len);
        (v, buf)
    }
}

/// A client frame builder preset: client MAC → gateway's client side.
pub fn from_client(b: FrameBuilder) -> FrameBuilder {
    b.macs(CLIENT_MAC, GW_CLIENT_MAC)
}

/// Hex dump for readable assertion failures.
pub fn hex(b: &[u8]) -> String {
    b.chunks(16)
        .map(|c| {
            c.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}
