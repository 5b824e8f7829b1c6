//! The common packet's lane ([`plain`](super::plain)) against the
//! general path: the same frames decided through both give the same
//! verdicts, bytes, counters and connections; and the lane takes what it
//! should and leaves the rest, having changed nothing.

use std::net::SocketAddr;

use proptest::prelude::*;

use super::*;
use crate::flow::FlowTimeouts;
use crate::port::{FramePool, MemoryFrames};
use crate::rules;
use crate::wire::builder::FrameBuilder;

const CLIENT_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x02];
const GW_C_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x01];
const GW_B_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0x01, 0x01];
const BACKEND_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0x01, 0x0b];
const OTHER_MAC: [u8; 6] = [0x02, 0x99, 0, 0, 0, 1];

/// `web` (TCP) with `web_backends` (198.18.1.13 has no neighbour: its
/// MACs are unknown) and `web_options`, `dns` (UDP) and `px` (TCP,
/// SYN-proxied).
fn rules_text(web_backends: &[&str], web_options: &str) -> String {
    let mut s = String::from(
        "[[interfaces]]\nname = \"c\"\nmac = \"02:66:67:00:00:01\"\n\
         [[interfaces]]\nname = \"b\"\nmac = \"02:66:67:00:01:01\"\n\
         [[neighbours]]\naddress = \"198.18.1.11\"\nmac = \"02:66:67:00:01:0b\"\ninterface = \"b\"\n\
         [[neighbours]]\naddress = \"198.18.1.12\"\nmac = \"02:66:67:00:01:0c\"\ninterface = \"b\"\n\
         [[services]]\nname = \"web\"\nprotocol = \"tcp\"\nvip = \"198.18.100.10\"\nport = 80\n",
    );
    s += web_options;
    for b in web_backends {
        s += &format!("[[services.backends]]\naddress = \"{b}\"\nport = 8080\n");
    }
    s += "[[services]]\nname = \"dns\"\nprotocol = \"udp\"\nvip = \"198.18.100.10\"\nport = 53\n\
          [[services.backends]]\naddress = \"198.18.1.12\"\nport = 5353\n\
          [[services]]\nname = \"px\"\nprotocol = \"tcp\"\nvip = \"198.18.100.11\"\nport = 80\n\
          syn_proxy = \"on\"\n\
          [[services.backends]]\naddress = \"198.18.1.11\"\nport = 8080\n";
    s
}

/// Four generations: all of web's backends; one of them (the others'
/// connections find their endpoint gone); all again; all, with a down
/// backend's connections dropped (198.18.1.12, down at the build, is
/// flagged for a look at its liveness).
fn snapshots() -> Vec<Snapshot> {
    let load = |backends: &[&str], options: &str| {
        rules::load_str(&rules_text(backends, options), "t.toml").unwrap()
    };
    let all = ["198.18.1.11", "198.18.1.12", "198.18.1.13"];
    let first = Snapshot::build(&load(&all, ""), None);
    let second = Snapshot::build(&load(&all[..1], ""), Some(&first));
    let third = Snapshot::build(&load(&all, ""), Some(&second));
    // The build flags an endpoint down at the time (the generations
    // share its liveness, set per step by the test).
    let watched = web_endpoint(&third, "198.18.1.12");
    third.liveness().set_up(watched, false).unwrap();
    let drop = "on_backend_down = \"drop\"\n";
    let fourth = Snapshot::build(&load(&all, drop), Some(&third));
    third.liveness().set_up(watched, true).unwrap();
    vec![first, second, third, fourth]
}

/// Where a client sends (service VIP and port) and a backend answers from.
const SERVICES: [&str; 4] = [
    "198.18.100.10:80",
    "198.18.100.10:53",
    "198.18.100.11:80",
    "198.18.100.12:80",
];
const BACKENDS: [&str; 4] = [
    "198.18.1.11:8080",
    "198.18.1.12:8080",
    "198.18.1.13:8080",
    "198.18.1.12:5353",
];

/// One frame of a batch: a client's (ingress 0) or a backend's (ingress
/// 1), with something unusual about it now and then.
#[derive(Clone, Debug)]
struct Packet {
    client_port: u16,
    /// Index into `SERVICES` (client) or `BACKENDS` (reply).
    peer: usize,
    flags: u8,
    ttl: u8,
    oddity: u8,
}

fn packet() -> impl Strategy<Value = Packet> {
    use tcp_flags::{ACK, FIN, PSH, RST, SYN};
    (
        1000u16..1006,
        0usize..4,
        prop::sample::select(vec![SYN, ACK, ACK, PSH | ACK, FIN | ACK, RST, SYN | ACK]),
        prop::sample::select(vec![64u8, 64, 64, 2, 1]),
        0u8..24,
    )
        .prop_map(|(client_port, peer, flags, ttl, oddity)| Packet {
            client_port,
            peer,
            flags,
            ttl,
            oddity,
        })
}

impl Packet {
    fn bytes(&self, ingress: u16) -> Vec<u8> {
        let client: SocketAddr = format!("198.18.0.2:{}", self.client_port).parse().unwrap();
        let (src, dst, macs) = if ingress == 0 {
            let vip = SERVICES[self.peer].parse().unwrap();
            (client, vip, (CLIENT_MAC, GW_C_MAC))
        } else {
            let backend = BACKENDS[self.peer].parse().unwrap();
            (backend, client, (BACKEND_MAC, GW_B_MAC))
        };
        let udp = dst.port() == 53 || src.port() == 5353;
        let mut b = if udp {
            FrameBuilder::udp(src, dst)
        } else {
            FrameBuilder::tcp(src, dst, self.flags)
        };
        b = b.macs(macs.0, macs.1).ttl(self.ttl);
        match self.oddity {
            10 => b = b.ipv4_options(&[1, 1, 1, 0]),
            11 => b = b.vlan(7),
            12 => b = b.macs(macs.0, OTHER_MAC),
            13 => b = b.udp_zero_checksum(),
            _ => {}
        }
        let mut bytes = b.build();
        match self.oddity {
            // A header checksum that does not hold.
            14 => bytes[24] ^= 0x40,
            // An IP length past the frame's end.
            15 => bytes[17] = bytes[17].wrapping_add(9),
            _ => {}
        }
        bytes
    }
}

/// One gateway: a pipeline, its table and its frame memory.
struct Side {
    pipeline: Pipeline,
    flows: FlowTable,
    memory: MemoryFrames,
    pool: FramePool,
}

/// What a batch gave: each frame's verdict and bytes, the counters.
#[derive(Debug, PartialEq)]
struct Outcome {
    verdicts: Vec<Verdict>,
    frames: Vec<Vec<u8>>,
    counters: counters::CounterValues,
    stats: crate::flow::FlowTableStats,
    len: usize,
    endpoints: Vec<crate::flow::EndpointValues>,
}

impl Side {
    fn new() -> Side {
        let mut memory = MemoryFrames::new(16, 2048);
        let pool = memory.pool();
        Side {
            pipeline: Pipeline::new(),
            // Small: an insert often makes room.
            flows: FlowTable::new(16, FlowTimeouts::default()),
            memory,
            pool,
        }
    }

    /// Decides `batch`: by the parse pass's own results (`lean`, the
    /// common frame's meta not kept: the lane's way), or with every
    /// frame's meta kept, which never takes the lane.
    fn run(
        &mut self,
        batch: &[Vec<u8>],
        ingress: u16,
        s: &Snapshot,
        now: u64,
        lean: bool,
    ) -> Outcome {
        let mut frames: Vec<Frame> = batch
            .iter()
            .map(|bytes| {
                let mut frame = self.pool.take().unwrap();
                assert!(self.memory.write(&mut frame, bytes));
                frame
            })
            .collect();
        let mut verdicts = Vec::new();
        if lean {
            let (memory, flows) = (&mut self.memory, &mut self.flows);
            self.pipeline
                .process_batch(memory, &mut frames, ingress, s, flows, now, &mut verdicts);
        } else {
            let parsed: Vec<Parsed> = batch.iter().map(|b| kept(b)).collect();
            let (memory, flows) = (&mut self.memory, &mut self.flows);
            self.pipeline.process_parsed(
                memory,
                &mut frames,
                &parsed,
                ingress,
                s,
                flows,
                now,
                &mut verdicts,
            );
        }
        let out = frames
            .iter()
            .map(|f| self.memory.frame(f).to_vec())
            .collect();
        for frame in frames {
            self.pool.put(frame);
        }
        Outcome {
            verdicts,
            frames: out,
            counters: self.pipeline.counters().snapshot(),
            stats: self.flows.stats(),
            len: self.flows.len(),
            endpoints: (0..8)
                .map(|id| self.flows.counters().endpoint(id))
                .collect(),
        }
    }
}

/// `bytes`' parse with its meta kept, as a hand-over carries it.
fn kept(bytes: &[u8]) -> Parsed {
    let parsed = Parsed::of(bytes);
    match parsed.flow(bytes) {
        Some((meta, hash)) => Parsed::of_flow(meta, hash),
        None => parsed,
    }
}

/// The endpoint id of web's backend at `address`.
fn web_endpoint(s: &Snapshot, address: &str) -> u32 {
    let want = crate::wire::addr_to_bytes(address.parse().unwrap());
    let (_, web) = s.services().find(|(_, x)| x.name() == "web").unwrap();
    let found = web.endpoints().iter().copied();
    found
        .into_iter()
        .find(|&e| s.endpoint(e).unwrap().address == want)
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any run of batches — new flows, established ones, replies, closes,
    /// low TTLs, malformed and foreign frames, SYN-proxied connections,
    /// endpoints gone and back, idle timeouts, a small table that evicts
    /// — decides alike with the lane and without it.
    #[test]
    fn the_lane_decides_as_the_general_path_does(
        steps in prop::collection::vec(
            (0u16..2, prop::collection::vec(packet(), 1..10),
             prop::sample::select(vec![0usize, 0, 1, 2, 3, 3]),
             prop::sample::select(vec![0u64, 1_000_000, 40_000_000_000, 8_000_000_000_000]),
             any::<bool>()),
            1..24,
        )
    ) {
        let snapshots = snapshots();
        // One backend's liveness, which the generations share.
        let watched = web_endpoint(&snapshots[0], "198.18.1.12");
        let (mut lane, mut general) = (Side::new(), Side::new());
        let mut now = 1_000_000_000;
        for (ingress, packets, generation, step, down) in steps {
            now += step;
            snapshots[generation].liveness().set_up(watched, !down).unwrap();
            let batch: Vec<Vec<u8>> = packets.iter().map(|p| p.bytes(ingress)).collect();
            let s = &snapshots[generation];
            let a = lane.run(&batch, ingress, s, now, true);
            let b = general.run(&batch, ingress, s, now, false);
            prop_assert_eq!(a, b);
        }
    }
}

/// A web client's packet from `port`: `flags`, `ttl`, `oddity` as in
/// [`Packet`].
fn web(port: u16, flags: u8, ttl: u8, oddity: u8) -> Vec<u8> {
    let packet = Packet {
        client_port: port,
        peer: 0,
        flags,
        ttl,
        oddity,
    };
    packet.bytes(0)
}

/// Opens web's connection from client port 1000 on `side` (its SYN, then
/// its backend's SYN-ACK) through the lane's way (`lean`) or the general
/// one; returns the backend's address and its index in `BACKENDS`.
fn open(side: &mut Side, s: &Snapshot, lean: bool) -> ([u8; 4], usize) {
    let syn = web(1000, tcp_flags::SYN, 64, 0);
    let first = side.run(std::slice::from_ref(&syn), 0, s, 1, lean);
    assert!(matches!(first.verdicts[..], [Verdict::Transmit(1)]));
    let backend: [u8; 4] = first.frames[0][30..34].try_into().unwrap();
    let peer = BACKENDS
        .iter()
        .position(|b| b.starts_with(&format!("198.18.1.{}:", backend[3])))
        .unwrap();
    let synack = Packet {
        client_port: 1000,
        peer,
        flags: tcp_flags::SYN | tcp_flags::ACK,
        ttl: 64,
        oddity: 0,
    };
    side.run(&[synack.bytes(1)], 1, s, 2, lean);
    (backend, peer)
}

/// The lane's answer to `bytes` on `side` at `now`, with the warm pass's
/// hint if `hinted`, and the frame after it: received on the backends'
/// port if it is sent to the gateway's MAC there, else on the clients'.
fn try_lane(
    side: &mut Side,
    bytes: &[u8],
    s: &Snapshot,
    now: u64,
    hinted: bool,
) -> (Option<u16>, Vec<u8>) {
    let mut frame = bytes.to_vec();
    let hash = Parsed::of(&frame).hash().unwrap();
    let hint = if hinted {
        side.flows.warm_record(hash)
    } else {
        LookupHint::NONE
    };
    let (port, own_mac) = if bytes[..6] == GW_B_MAC {
        (1, GW_B_MAC)
    } else {
        (0, GW_C_MAC)
    };
    let mut cx = Context {
        snapshot: s,
        paths: None,
        flows: &mut side.flows,
        ingress: port,
        refuse_untagged: false,
        own_mac: ingress::MacWord::of(own_mac),
        now_ns: now,
    };
    let port = side.pipeline.plain_established(&mut frame, hint, &mut cx);
    (port, frame)
}

/// The lane leaves `bytes` alone, with nothing changed.
fn left_alone(side: &mut Side, bytes: &[u8], s: &Snapshot, now: u64, hinted: bool) {
    let counters = side.pipeline.counters().snapshot();
    let (stats, len) = (side.flows.stats(), side.flows.len());
    let (port, frame) = try_lane(side, bytes, s, now, hinted);
    assert_eq!(port, None);
    assert_eq!(frame, bytes, "no byte written");
    assert_eq!(side.pipeline.counters().snapshot(), counters);
    assert_eq!((side.flows.stats(), side.flows.len()), (stats, len));
}

/// A packet of an established connection takes the lane, a client's and
/// a backend's, with the same result as the general path; the packets
/// the lane leaves change nothing there.
#[test]
fn the_lane_takes_an_established_connections_packets_and_leaves_the_rest() {
    let snapshots = snapshots();
    let s = &snapshots[0];
    let mut side = Side::new();
    let (backend, peer) = open(&mut side, s, true);
    let ack = web(1000, tcp_flags::ACK, 64, 0);
    let (port, frame) = try_lane(&mut side, &ack, s, 3, true);
    assert_eq!(port, Some(1), "the lane takes it, to the backends' port");
    assert_eq!(frame[30..34], backend, "to the backend");
    assert_eq!(frame[22], 63, "one hop fewer");
    assert!(crate::wire::frame_checksums_ok(&frame));
    // What the general path makes of the same packet.
    let mut general = Side::new();
    open(&mut general, s, false);
    let out = general.run(std::slice::from_ref(&ack), 0, s, 3, false);
    assert_eq!(out.frames[0], frame, "the general path's bytes");
    // The backend's answer, to the client from the VIP.
    let reply = Packet {
        client_port: 1000,
        peer,
        flags: tcp_flags::ACK,
        ttl: 64,
        oddity: 0,
    }
    .bytes(1);
    let (port, frame) = try_lane(&mut side, &reply, s, 4, true);
    assert_eq!(port, Some(0), "the lane takes it, to the clients' port");
    assert_eq!(frame[26..30], [198, 18, 100, 10], "from the VIP");
    assert_eq!(frame[..6], CLIENT_MAC, "to the client's router");
    assert!(crate::wire::frame_checksums_ok(&frame));
    let out = general.run(std::slice::from_ref(&reply), 1, s, 4, false);
    assert_eq!(out.frames[0], frame, "the general path's bytes");

    // Left alone: no hint; a TTL of 1; a frame for another host's MAC;
    // the connection's endpoint gone (the second generation has web's
    // first backend only, and this one is another unless it is that
    // one); a connection idle past its timeout; a new client's SYN.
    left_alone(&mut side, &ack, s, 4, false);
    left_alone(&mut side, &web(1000, tcp_flags::ACK, 1, 0), s, 4, true);
    left_alone(&mut side, &web(1000, tcp_flags::ACK, 64, 12), s, 4, true);
    if backend[3] != 11 {
        left_alone(&mut side, &ack, &snapshots[1], 4, true);
    }
    let idle = 1 + FlowTimeouts::default().for_state(crate::flow::FlowState::TcpEstablished);
    // (The reply at 4 was the connection's last packet.)
    left_alone(&mut side, &ack, s, 4 + idle, true);
    left_alone(&mut side, &web(1001, tcp_flags::SYN, 64, 0), s, 4, true);
}
